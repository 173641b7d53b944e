"""Norm-based generalization bounds for feed-forward networks f(x) = W_Lᵀ σ(… σ(W_1ᵀ x)), computed from
trained weights. Every function takes stacked weights (a list over layers of [M, in, out] tensors, as
`MLP.weight(params, i)` returns them) and gives one value per ensemble member.

Both bounds are shown as their leading complexity terms — absolute constants, the margin (or the loss's
Lipschitz constant) and logarithmic factors are left out — so what can be read from them is how they
change with the weights and the ranks, and their relative size; not whether they are below the gap.

* Product of spectral norms (Bartlett, Foster & Telgarsky 2017, "Spectrally-normalized margin bounds"):

      B_spec = ‖X‖_F / n · ∏_ℓ ‖W_ℓ‖₂ · ( Σ_ℓ (‖W_ℓ‖_{2,1} / ‖W_ℓ‖₂)^{2/3} )^{3/2}

  with ‖W‖_{2,1} the sum over a layer's output units of the ℓ₂ norms of their incoming weights.

* Rank-aware bound (after Pinto, Rangamani & Poggio, "On generalization bounds for neural networks with
  low rank layers", which applies Maurer's chain rule for Gaussian complexity). A layer class
  {y ↦ Wᵀy : ‖W‖₂ ≤ s, rank W ≤ r} with d outputs has Gaussian complexity at most s·√(r·d)·‖Y‖_F on
  inputs Y; the chain rule adds these per-layer terms, each multiplied by the Lipschitz constants (spectral
  norms) of the other layers, instead of multiplying rank or dimension factors across layers:

      B_rank = ‖X‖_F / n · ∏_ℓ ‖W_ℓ‖₂ · Σ_ℓ √(r_ℓ · d_ℓ)

  where r_ℓ is layer ℓ's rank constraint (min(d_{ℓ−1}, d_ℓ) for an unconstrained layer) and d_ℓ its
  number of outputs. This is our simplified reading, constants and the chain rule's diameter terms
  dropped; it is not the paper's exact theorem.

Biases are not covered by either formula: use bias-free networks when comparing with them.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from . import singular_values


def spectral_norms(weights: Sequence[torch.Tensor]) -> list:
    """‖W_ℓ‖₂ of every layer: a list of [M] tensors."""
    return [singular_values(w)[..., 0] for w in weights]


def norm_21(weight: torch.Tensor) -> torch.Tensor:
    """‖W‖_{2,1} of [M, in, out] weights: Σ over outputs j of ‖W[:, j]‖₂. [M]"""
    return weight.detach().norm(dim=-2).sum(-1)


def _product(values: list) -> torch.Tensor:
    out = torch.ones_like(values[0])
    for v in values:
        out = out * v
    return out


def _data_factor(x: torch.Tensor) -> float:
    """‖X‖_F / n for inputs x [n, d]."""
    return float(x.detach().double().norm()) / len(x)


def spectral_complexity(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """∏ ‖W_ℓ‖₂ · (Σ (‖W_ℓ‖_{2,1}/‖W_ℓ‖₂)^{2/3})^{3/2}  (Bartlett et al. 2017, reference matrices 0). [M]"""
    s = spectral_norms(weights)
    ratios = sum((norm_21(w) / si.clamp_min(1e-30)) ** (2 / 3) for w, si in zip(weights, s))
    return _product(s) * ratios ** 1.5


def rank_factor(dims_out: Sequence[int], ranks: Sequence[int]) -> float:
    """Σ_ℓ √(r_ℓ · d_ℓ): the chain rule's sum of per-layer rank terms."""
    return sum(math.sqrt(r * d) for r, d in zip(ranks, dims_out))


def layer_ranks(weights: Sequence[torch.Tensor], constraints: Sequence[int | None] | None = None) -> list:
    """Each layer's rank constraint: the given one, capped at min(in, out); None means unconstrained."""
    constraints = constraints or [None] * len(weights)
    if len(constraints) != len(weights):
        raise ValueError(f"{len(constraints)} rank constraints for {len(weights)} layers.")
    return [min(w.shape[-2], w.shape[-1]) if r is None else min(int(r), w.shape[-2], w.shape[-1])
            for w, r in zip(weights, constraints)]


def rank_complexity(weights: Sequence[torch.Tensor], constraints: Sequence[int | None] | None = None) -> torch.Tensor:
    """∏ ‖W_ℓ‖₂ · Σ_ℓ √(r_ℓ d_ℓ) with r_ℓ the layers' rank constraints (see `layer_ranks`). [M]"""
    ranks = layer_ranks(weights, constraints)
    return _product(spectral_norms(weights)) * rank_factor([w.shape[-1] for w in weights], ranks)


def spectral_bound(weights: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """B_spec = ‖X‖_F/n · spectral_complexity (constants, margin and log factors omitted). [M]"""
    return _data_factor(x) * spectral_complexity(weights)


def rank_bound(weights: Sequence[torch.Tensor], x: torch.Tensor,
               constraints: Sequence[int | None] | None = None) -> torch.Tensor:
    """B_rank = ‖X‖_F/n · ∏‖W_ℓ‖₂ · Σ √(r_ℓ d_ℓ) (constants and log factors omitted). [M]"""
    return _data_factor(x) * rank_complexity(weights, constraints)


def model_weights(model, params) -> list:
    """The weight matrices of a reglab MLP, input layer first ([M, in, out] each; factorized ones multiplied out)."""
    return [model.weight(params, i).detach() for i in range(len(model.dims) - 1)]


def model_rank_constraints(model, params) -> list:
    """Rank constraint of each layer of a reglab MLP: the inner dimension of a factorized U Vᵀ, else None."""
    return [params[f"U{i}"].shape[-1] if f"U{i}" in params else None for i in range(len(model.dims) - 1)]

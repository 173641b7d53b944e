"""Generalization measures of trained networks and their rank correlation with the generalization gap.

Every measure takes stacked parameters ([M, ...] tensors, one row per ensemble member) and returns one
value per member ([M]); each is a *complexity* measure: a larger value is meant to predict a larger gap.
They follow Jiang et al. 2020, "Fantastic generalization measures and where to find them" (their
names in brackets), written for a bias-free MLP f(x) = W_Lᵀ σ(… σ(W_1ᵀ x)) whose weights are given as a
list of [M, in, out] matrices (a factorized layer U V multiplied out; `bounds.model_weights`):

* parameter norm [params]        ‖θ‖₂: the Euclidean (Frobenius) norm of all trained parameters
* spectral-norm product [prod.of.spec]   ∏_ℓ ‖W_ℓ‖₂ (the Lipschitz constant of Bartlett et al.'s bound)
* path norm [path.norm]          √( Σ_paths ∏_ℓ w²_edge ) = √( 1ᵀ (W_1∘W_1) … (W_L∘W_L) 1 )
* distance from initialization [dist.init]   ‖θ − θ₀‖₂
* sharpness                      λ_max of the training-loss Hessian (Lanczos, `reglab.curvature`)
* PAC-Bayes flatness [pacbayes.flatness]     1/σ*², σ* the largest σ with
                                 E_{u∼N(0, σ²I)} L(θ + u) − L(θ) ≤ ε on the training set
* inverse margin [inverse.margin]  1/γ², γ the 10th percentile over training examples of
                                 f_y(x) − max_{j≠y} f_j(x)
* the rank-aware bound of `bounds.rank_bound` and 1/(steps to the training-loss criterion) are
  computed by the theme from those helpers and the training history.

Correlation with the gap: Kendall's τ over a set of networks, and Jiang et al.'s granulated coefficient
Ψ = mean_i ψ_i, with ψ_i the mean of τ over every sub-sweep in which only hyperparameter i varies (all
the others, seed included, fixed).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from . import singular_values

MARGIN_QUANTILE = 0.1  # Jiang et al.'s margin: the 10th percentile over the training set


# ---------------------------------------------------------------------------------------------
# norm-based measures


def _flat(params: dict) -> torch.Tensor:
    return torch.cat([p.detach().reshape(p.shape[0], -1).double() for p in params.values()], dim=1)


def parameter_norm(params: dict) -> torch.Tensor:
    """‖θ‖₂ over every parameter tensor of each member: [M]."""
    return _flat(params).norm(dim=1)


def distance_from_init(params: dict, initial: dict) -> torch.Tensor:
    """‖θ − θ₀‖₂ over every parameter tensor of each member (θ₀: its parameters at initialization): [M]."""
    return (_flat(params) - _flat({k: initial[k] for k in params})).norm(dim=1)


def spectral_product(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """∏_ℓ ‖W_ℓ‖₂ of [M, in, out] weight matrices: [M]."""
    out = None
    for w in weights:
        s = singular_values(w.double())[..., 0]
        out = s if out is None else out * s
    return out


def path_norm(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """√(Σ over input→output paths of the product of the squared weights on the path) of a bias-free
    network: the network with squared weights and identity activations applied to all-ones, summed: [M]."""
    h = torch.ones(weights[0].shape[0], 1, weights[0].shape[1], dtype=torch.float64, device=weights[0].device)
    for w in weights:
        h = h @ w.detach().double().pow(2)
    return h.sum(dim=(1, 2)).sqrt()


# ---------------------------------------------------------------------------------------------
# margin


def output_margins(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """f_y(x) − max_{j≠y} f_j(x) of every example: outputs [M, n, C], labels [n] → [M, n]."""
    outputs = outputs.detach().double()
    idx = y.view(1, -1, 1).expand(outputs.shape[0], -1, 1)
    true = outputs.gather(-1, idx).squeeze(-1)
    others = outputs.scatter(-1, idx, -math.inf).amax(-1)
    return true - others


def inverse_margin(outputs: torch.Tensor, y: torch.Tensor, quantile: float = MARGIN_QUANTILE) -> torch.Tensor:
    """1/γ² with γ the `quantile` of the output margins over the examples ([M]); NaN where γ ≤ 0 (more than
    that fraction of the examples misclassified: the margin is undefined)."""
    gamma = torch.quantile(output_margins(outputs, y), quantile, dim=1)
    return torch.where(gamma > 0, 1 / gamma.clamp_min(1e-300) ** 2, torch.full_like(gamma, math.nan))


# ---------------------------------------------------------------------------------------------
# curvature and flatness


def sharpness(loss_fn: Callable, params: dict, tol: float = 1e-3, seed: int = 0,
              active: torch.Tensor | None = None) -> torch.Tensor:
    """λ_max of the Hessian of `loss_fn(params) -> [M]` for every member (Lanczos, reglab.curvature): [M]."""
    from ..curvature import top_eigenvalues

    return top_eigenvalues(loss_fn, params, k=1, tol=tol, active=active,
                           generator=torch.Generator().manual_seed(seed)).eigenvalues[:, 0]


def pac_bayes_sigma(loss_fn: Callable, params: dict, epsilon: float = 0.1, samples: int = 10, seed: int = 0,
                    low: float = 1e-5, high: float = 10.0, iterations: int = 24) -> torch.Tensor:
    """σ* of every member: the largest σ such that the mean over `samples` Gaussian draws u ∼ N(0, I) of
    loss_fn(θ + σu) − loss_fn(θ) stays ≤ `epsilon` (bisection on log σ in [low, high]; the same draws at
    every σ, so the estimate is a smooth function of σ). NaN where the loss at θ is not finite. [M]

    For a quadratic loss ½ θᵀAθ at θ = 0 the mean increase is ½σ² tr(A) in expectation: σ* = √(2ε / tr A)."""
    with torch.no_grad():
        names = list(params)
        base = loss_fn(params).detach()
        M = base.shape[0]
        g = torch.Generator().manual_seed(seed)
        draws = [{k: torch.randn(params[k].shape, generator=g, dtype=params[k].dtype).to(params[k].device)
                  for k in names} for _ in range(samples)]
        per_member = lambda s, t: s.view(M, *([1] * (t.dim() - 1))).to(t.dtype)

        def increase(sigma: torch.Tensor) -> torch.Tensor:
            total = torch.zeros_like(base)
            for u in draws:
                total = total + loss_fn({k: params[k] + per_member(sigma, params[k]) * u[k] for k in names})
            return torch.nan_to_num(total / samples - base, nan=math.inf)

        lo = torch.full((M,), math.log(low), dtype=torch.float64)
        hi = torch.full((M,), math.log(high), dtype=torch.float64)
        for _ in range(iterations):
            mid = (lo + hi) / 2
            ok = (increase(mid.exp().to(base.device)) <= epsilon).cpu()
            lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
        sigma = lo.exp()
        return torch.where(torch.isfinite(base.cpu()), sigma, torch.full_like(sigma, math.nan))


def pac_bayes_flatness(sigma: torch.Tensor) -> torch.Tensor:
    """1/σ*²: flatter minima (a larger σ*) give a smaller value. [M]"""
    return 1 / sigma.double() ** 2


# ---------------------------------------------------------------------------------------------
# rank correlation with the gap


def kendall_tau(measure, gap) -> float:
    """Kendall's τ-b between a measure and the gap over networks: Σ_{i<j} sign(Δm)·sign(Δg) divided by
    √(pairs not tied in m · pairs not tied in g). Pairs with a missing value are dropped; NaN with fewer
    than two networks or when either side is constant."""
    m, g = np.asarray(measure, dtype=float), np.asarray(gap, dtype=float)
    keep = np.isfinite(m) & np.isfinite(g)
    m, g = m[keep], g[keep]
    if len(m) < 2 or np.ptp(m) == 0 or np.ptp(g) == 0:
        return math.nan
    if len(m) > 2000:  # O(n log n) instead of the n² pairs below
        from scipy.stats import kendalltau

        return float(kendalltau(m, g).statistic)
    i, j = np.triu_indices(len(m), 1)
    sm, sg = np.sign(m[i] - m[j]), np.sign(g[i] - g[j])
    return float((sm * sg).sum() / math.sqrt(np.abs(sm).sum() * np.abs(sg).sum()))


def sub_sweep_taus(frame: pd.DataFrame, measure: str, gap: str, hyperparameters: Sequence[str],
                   fixed: Sequence[str] = ("seed",)) -> pd.DataFrame:
    """τ between `measure` and `gap` in every sub-sweep where exactly one hyperparameter varies: one row per
    (hyperparameter, setting of all the others and of `fixed`), columns hyperparameter, tau, networks."""
    rows = []
    for h in hyperparameters:
        others = [c for c in [*hyperparameters, *fixed] if c != h and c in frame.columns]
        groups = frame.groupby(others, dropna=False) if others else [((), frame)]
        for _, group in groups:
            if group[h].nunique(dropna=False) > 1:
                rows.append({"hyperparameter": h, "tau": kendall_tau(group[measure], group[gap]), "networks": len(group)})
    return pd.DataFrame(rows, columns=["hyperparameter", "tau", "networks"])


def granulated_tau(frame: pd.DataFrame, measure: str, gap: str, hyperparameters: Sequence[str],
                   fixed: Sequence[str] = ("seed",)) -> tuple:
    """Jiang et al.'s granulated Kendall coefficient: ({hyperparameter: ψ_i}, Ψ = mean of the ψ_i). ψ_i is
    the mean τ over the sub-sweeps where only hyperparameter i varies (undefined τ left out); NaN where
    no sub-sweep has a defined τ."""
    return psi_of(sub_sweep_taus(frame, measure, gap, hyperparameters, fixed), hyperparameters)


def psi_of(taus: pd.DataFrame, hyperparameters: Sequence[str]) -> tuple:
    """({hyperparameter: ψ_i}, Ψ) from the sub-sweep τ of `sub_sweep_taus`."""
    psi = {h: float(taus.tau[taus.hyperparameter == h].mean()) if (taus.hyperparameter == h).any() else math.nan
           for h in hyperparameters}
    finite = [v for v in psi.values() if math.isfinite(v)]
    return psi, (float(np.mean(finite)) if finite else math.nan)


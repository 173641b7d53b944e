"""Metrics on trained parameters and features. Each works on stacked parameters ([M, ...] tensors)
and returns one value per member, so the same call serves a single run and a sweep.

Theme-specific families live in submodules (collapse, tokens, margins, generalization…)."""
from __future__ import annotations

import torch


def weight_norms(params: dict) -> dict:
    """Frobenius norm of every parameter tensor: name -> [M]."""
    return {k: p.detach().flatten(1).norm(dim=1) for k, p in params.items()}


def singular_values(matrix: torch.Tensor) -> torch.Tensor:
    """Singular values of each member's matrix, descending: [M, min(rows, cols)]."""
    return torch.linalg.svdvals(matrix.detach().to(torch.float64)).to(matrix.dtype)


def stable_rank(matrix: torch.Tensor) -> torch.Tensor:
    """‖W‖_F² / ‖W‖_2²: a continuous, noise-robust count of significant directions. [M]"""
    s = singular_values(matrix)
    return s.pow(2).sum(-1) / s[..., 0].pow(2).clamp_min(1e-30)


def effective_rank(matrix: torch.Tensor) -> torch.Tensor:
    """Roy & Vetterli's entropy rank exp(H(σ/Σσ)). [M]"""
    s = singular_values(matrix)
    p = s / s.sum(-1, keepdim=True).clamp_min(1e-30)
    return torch.exp(-(p * torch.log(p.clamp_min(1e-30))).sum(-1))


def numerical_rank(matrix: torch.Tensor, energy: float = 0.99) -> torch.Tensor:
    """Number of singular values needed to keep `energy` of Σσ² (the SAM low-rank-features code counts
    uncentred features at energy 0.9999). [M] int"""
    s2 = singular_values(matrix).pow(2)
    cum = s2.cumsum(-1) / s2.sum(-1, keepdim=True).clamp_min(1e-30)
    return (cum < energy).sum(-1) + 1


def nuclear_norm(matrix: torch.Tensor) -> torch.Tensor:
    return singular_values(matrix).sum(-1)

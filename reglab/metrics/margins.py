"""Margins of linear classifiers and the hard-margin SVM they are measured against.

Every metric takes the weights of a whole ensemble, `w: [M, d]` (or a linear model's single-output
weight, `W0: [M, d, 1]` as reglab stores it, or `[M, 1, d]`; a `[d]` vector is read as M = 1), inputs `x: [n, d]` and ±1 labels `y: [n]` (or `[n, 1]`), and
returns one value per member ([M]). Everything is computed in float64.

* margins            y_i ⟨w, x_i⟩                                  [M, n]
* normalized_margin  min_i y_i ⟨w, x_i⟩ / ‖w‖  (the geometric margin; > 0 iff w separates)
* one_minus_cos      1 − cos(w, w_ref)   (~ θ²/2 for a small angle θ)
* angle_degrees      the angle itself

The reference, `svm(x, y)`, is the hard-margin SVM through the origin (the model has no bias):
    minimize ½‖w‖²  subject to  y_i ⟨w, x_i⟩ ≥ 1,
solved exactly as a least-distance problem by non-negative least squares (Lawson & Hanson 1974,
ch. 23: with G = diag(y) X, u = argmin_{u ≥ 0} ‖[Gᵀ; 1ᵀ] u − e_{d+1}‖ and r its residual,
w = −r[:d] / r[d], dual variables α = u / (1 − Σu)). Separability is decided first by a linear
program (is there a w with y_i ⟨w, x_i⟩ ≥ 1 for all i?); for data that are not separable `svm`
returns `separable=False` and a sentence saying why, never a meaningless "SVM" direction.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


def _weights(w) -> torch.Tensor:
    w = torch.as_tensor(w).detach().to(torch.float64)
    if w.dim() == 3:  # one output's weights, [M, 1, d] or [M, d, 1]
        w = w.reshape(w.shape[0], -1)
    return w.unsqueeze(0) if w.dim() == 1 else w


def _labels(y) -> torch.Tensor:
    y = torch.as_tensor(y).detach().to(torch.float64).reshape(-1)
    if not bool(((y == 1) | (y == -1)).all()):
        raise ValueError("margins need ±1 labels (a binary task); got other values.")
    return y


def margins(w, x, y) -> torch.Tensor:
    """y_i ⟨w, x_i⟩ for every member and example: [M, n]."""
    x = torch.as_tensor(x).detach().to(torch.float64)
    return (_weights(w) @ x.T) * _labels(y)


def normalized_margin(w, x, y) -> torch.Tensor:
    """The geometric margin min_i y_i ⟨w, x_i⟩ / ‖w‖ of every member: [M] (negative: misclassifies)."""
    w = _weights(w)
    return margins(w, x, y).min(dim=1).values / w.norm(dim=1).clamp_min(1e-300)


def cosine(w, ref) -> torch.Tensor:
    w, ref = _weights(w), _weights(ref)
    return (w * ref).sum(1) / (w.norm(dim=1) * ref.norm(dim=1)).clamp_min(1e-300)


def one_minus_cos(w, ref) -> torch.Tensor:
    """1 − cos(w, ref) per member, computed as ‖ŵ − r̂‖²/2 (no cancellation when the angle is tiny)."""
    w, ref = _weights(w), _weights(ref)
    unit = lambda v: v / v.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return 0.5 * (unit(w) - unit(ref)).pow(2).sum(1)


def angle_degrees(w, ref) -> torch.Tensor:
    """The angle between each member's w and ref, in degrees: [M]."""
    w, ref = _weights(w), _weights(ref)
    unit = lambda v: v / v.norm(dim=1, keepdim=True).clamp_min(1e-300)
    chord = (unit(w) - unit(ref)).norm(dim=1)
    return torch.rad2deg(2 * torch.asin((chord / 2).clamp(max=1.0)))


@dataclass
class SVM:
    """The hard-margin SVM through the origin, or why there is none."""

    separable: bool
    w: torch.Tensor | None = None  # [d], the canonical solution: min_i y_i ⟨w, x_i⟩ = 1
    margin: float | None = None  # 1 / ‖w‖: the largest achievable normalized margin
    alpha: torch.Tensor | None = None  # [n] dual variables, w = Σ α_i y_i x_i
    support: list = field(default_factory=list)  # indices of the support vectors (α_i > 0)
    message: str = ""

    @property
    def direction(self) -> torch.Tensor | None:
        return None if self.w is None else self.w / self.w.norm()


def separable(x, y) -> tuple[bool, torch.Tensor | None]:
    """Is there a w with y_i ⟨w, x_i⟩ ≥ 1 for all i (strictly separable through the origin)? A linear
    program (scipy's HiGHS) decides; returns (answer, a separating w or None)."""
    from scipy.optimize import linprog

    x = np.asarray(torch.as_tensor(x).detach().to(torch.float64))
    G = np.asarray(_labels(y))[:, None] * x
    n, d = G.shape
    res = linprog(np.zeros(d), A_ub=-G, b_ub=-np.ones(n), bounds=[(None, None)] * d, method="highs")
    if res.status == 0:
        return True, torch.from_numpy(res.x)
    return False, None


def svm(x, y) -> SVM:
    """The hard-margin SVM through the origin, exactly (see the module docstring)."""
    from scipy.optimize import nnls

    x64 = torch.as_tensor(x).detach().to(torch.float64)
    yv = _labels(y)
    n, d = x64.shape
    ok, _ = separable(x64, yv)
    if not ok:
        return SVM(False, message=(
            f"These {n} points are not linearly separable by a hyperplane through the origin: no w puts every "
            f"y_i ⟨w, x_i⟩ above 0 (a linear program found none). Logistic-loss GD then keeps a finite-norm "
            f"component along the directions where the classes overlap, and there is no max-margin direction to "
            f"converge to — remove the label noise or use your own separable data."))
    G = (yv[:, None] * x64).numpy()
    E = np.vstack([G.T, np.ones((1, n))])
    f = np.zeros(d + 1)
    f[-1] = 1.0
    u, _ = nnls(E, f, maxiter=50 * n)
    r = E @ u - f
    w = torch.from_numpy(-r[:d] / r[d])
    alpha = torch.from_numpy(u / (1 - u.sum()))
    m = margins(w, x64, yv)[0]
    if not bool(torch.isfinite(w).all()) or float(m.min()) < 1 - 1e-6:  # the LP said feasible: NNLS should agree
        return SVM(False, message="The SVM solver did not converge on these points (nearly non-separable?); "
                                  "no reference direction is drawn.")
    support = torch.nonzero(alpha > 1e-9 * float(alpha.max())).flatten().tolist()
    return SVM(True, w, float(1 / w.norm()), alpha, support,
               f"Separable: the max-margin direction has margin {float(1 / w.norm()):.4g} with {len(support)} support vectors.")

"""Neural-collapse metrics (Papyan, Han & Donoho 2020) on stacked features.

Every function takes features of a whole ensemble, `features: [M, n, d]` (M members, n examples, d
feature dimensions; a single model is M = 1, a `[n, d]` tensor is read as M = 1), integer labels
`[n]` shared by all members, and returns one value per member ([M]). They work on any model's
features: the penultimate layer for NC1–NC4, any hidden layer for NC1.

With class means μ_c, the global mean μ_G (mean over all examples), centred means M̃ = [μ_c − μ_G]
(C × d), Σ_W = 1/n Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ and Σ_B = 1/C Σ_c (μ_c − μ_G)(μ_c − μ_G)ᵀ:

* NC1  within-class variability  tr(Σ_W Σ_B⁺) / C                         → 0
* NC2  centred means form a simplex ETF: equal norms (coefficient of variation of ‖μ_c − μ_G‖ → 0)
       and equal angles (pairwise cosines → −1/(C−1): their spread and mean distance from it → 0)
* NC3  self-duality  ‖ W/‖W‖_F − M̃/‖M̃‖_F ‖²_F  with W the classifier rows (C × d)   → 0
* NC4  the network's decision vs the nearest-class-centre rule: fraction of examples where they differ → 0

Work on the n examples stays in the features' dtype (matmuls); everything C × C is float64.
tr(Σ_W Σ_B⁺) never forms a d × d pseudo-inverse: with G = M̃ M̃ᵀ (C × C), Σ_B⁺ = C · M̃ᵀ (G⁺)² M̃,
so tr(Σ_W Σ_B⁺) = C · tr((M̃ Σ_W M̃ᵀ)(G⁺)²) — cost n·d·C.
Reference metric definitions: tding1/Neural-Collapse (validate_NC.py) and Papyan et al. 2020, Figs. 2–7.
"""
from __future__ import annotations

import torch

from ..config import ConfigError

MIN_PER_CLASS = 2  # within-class variability needs two examples of a class


def _stacked(features: torch.Tensor) -> torch.Tensor:
    if features.dim() == 2:
        features = features.unsqueeze(0)
    if features.dim() != 3:
        raise ConfigError(f"Collapse metrics need features of shape [M, n, d] (or [n, d]); got {tuple(features.shape)}.")
    features = features.detach()
    return features if features.dtype in (torch.float32, torch.float64) else features.float()


def check_labels(labels: torch.Tensor, n_classes: int | None = None, n: int | None = None) -> torch.Tensor:
    """Counts per class [C]; a ConfigError naming the class when one has fewer than 2 examples."""
    labels = labels.detach().long().reshape(-1).cpu()
    if n is not None and len(labels) != n:
        raise ConfigError(f"Collapse metrics got {len(labels)} labels for {n} feature rows; they must match.")
    if len(labels) and int(labels.min()) < 0:
        raise ConfigError("Collapse metrics need class ids 0 … C−1; got a negative label.")
    C = int(n_classes) if n_classes is not None else (int(labels.max()) + 1 if len(labels) else 0)
    if C < 2:
        raise ConfigError(f"Collapse metrics need at least 2 classes; got {C}.")
    if len(labels) and int(labels.max()) >= C:
        raise ConfigError(f"Collapse metrics got label {int(labels.max())} but n_classes = {C}.")
    counts = torch.bincount(labels, minlength=C)
    few = [(c, int(k)) for c, k in enumerate(counts.tolist()) if k < MIN_PER_CLASS]
    if few:
        shown = ", ".join(f"class {c} has {k}" for c, k in few[:5]) + (f" and {len(few) - 5} more" if len(few) > 5 else "")
        raise ConfigError(f"Neural-collapse metrics need at least {MIN_PER_CLASS} examples of every class "
                          f"(within-class variability is undefined otherwise): {shown}.")
    return counts


class _Stats:
    """Class means, global mean and within-class deviations of one feature tensor, computed once.
    The n-sized work stays in the features' dtype (matmuls); everything C × C is float64."""

    def __init__(self, features, labels, n_classes=None):
        h = _stacked(features)
        self.counts = check_labels(labels, n_classes, h.shape[1])
        self.labels = labels.detach().long().reshape(-1).to(h.device)
        self.C, self.n = len(self.counts), h.shape[1]
        onehot = torch.nn.functional.one_hot(self.labels, self.C).to(h.dtype)  # [n, C]
        self.h = h
        self.means = (onehot.T @ h) / self.counts.to(h.device, h.dtype)[:, None]  # [M, C, d]
        self.mu_g = h.mean(1)  # [M, d]
        self.mt = self.means - self.mu_g[:, None, :]  # centred class means M̃ [M, C, d]

    @property
    def deviations(self):
        return self.h - self.means[:, self.labels]  # h_i − μ_{y_i}  [M, n, d]


def class_means(features: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None):
    """(means [M, C, d], global mean [M, d], counts [C]); the global mean is over examples."""
    st = _Stats(features, labels, n_classes)
    return st.means, st.mu_g, st.counts


def centred_class_means(features: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None) -> torch.Tensor:
    """M̃ = [μ_c − μ_G] per member, [M, C, d]."""
    return _Stats(features, labels, n_classes).mt


def _pinv_sym(g: torch.Tensor, rtol: float = 1e-10) -> torch.Tensor:
    """Pseudo-inverse of symmetric PSD matrices [M, k, k]: eigenvalues below rtol·max are treated as 0."""
    evals, evecs = torch.linalg.eigh(g)
    cutoff = rtol * evals.abs().amax(-1, keepdim=True).clamp_min(1e-300)
    inv = torch.where(evals > cutoff, 1.0 / evals.clamp_min(1e-300), torch.zeros_like(evals))
    return (evecs * inv.unsqueeze(-2)) @ evecs.transpose(-1, -2)


def within_between(features: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None):
    """Σ_W [M, d, d] and Σ_B [M, d, d] in float64 as defined above (for tests and small d; nc1 avoids them)."""
    st = _Stats(_stacked(features).double(), labels, n_classes)
    dev = st.deviations
    return dev.transpose(1, 2) @ dev / st.n, st.mt.transpose(1, 2) @ st.mt / st.C


def _nc1(st: _Stats) -> torch.Tensor:
    # M̃ (h_i − μ_y) = M̃ h_i − (M̃ μ_c)[y_i]  [M, C, n]: no [M, n, d] deviations tensor
    proj = st.mt @ st.h.transpose(1, 2) - (st.mt @ st.means.transpose(1, 2))[:, :, st.labels]
    a = (proj @ proj.transpose(1, 2)).double() / st.n  # M̃ Σ_W M̃ᵀ  [M, C, C]
    mt = st.mt.double()
    g_pinv = _pinv_sym(mt @ mt.transpose(1, 2))  # (M̃ M̃ᵀ)⁺
    # tr(Σ_W Σ_B⁺) = C·tr(A G⁺²), and NC1 divides it by C
    return (a * (g_pinv @ g_pinv)).sum((1, 2)).to(torch.float32)


def nc1(features: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None) -> torch.Tensor:
    """tr(Σ_W Σ_B⁺)/C per member [M]: within-class spread measured in units of the between-class spread."""
    return _nc1(_Stats(features, labels, n_classes))


def nc2(features: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None) -> dict:
    """Geometry of the centred class means vs the simplex ETF, each [M]:
    `equinorm` std/mean of ‖μ_c − μ_G‖; `equiangular` std of the pairwise cosines (c ≠ c');
    `maxangle` mean |cos + 1/(C−1)|; `cos_mean` the mean pairwise cosine (ETF: −1/(C−1));
    `etf_distance` ‖G/‖G‖_F − (I − 11ᵀ/C)/√(C−1)‖_F with G = M̃M̃ᵀ (tding1's ETF metric)."""
    st = _Stats(features, labels, n_classes)
    return _frame_geometry(st.mt.double(), st.C)


def _frame_geometry(mt: torch.Tensor, C: int) -> dict:
    norms = mt.norm(dim=-1)  # [M, C]
    cos = pairwise_cosines(mt)
    off = ~torch.eye(C, dtype=torch.bool, device=mt.device)
    pairs = cos[:, off]  # [M, C(C−1)]
    g = mt @ mt.transpose(1, 2)
    etf = (torch.eye(C, dtype=mt.dtype, device=mt.device) - 1.0 / C) / (C - 1) ** 0.5
    out = {
        "equinorm": norms.std(-1) / norms.mean(-1).clamp_min(1e-300),
        "equiangular": pairs.std(-1),
        "maxangle": (pairs + 1.0 / (C - 1)).abs().mean(-1),
        "cos_mean": pairs.mean(-1),
        "etf_distance": (g / g.flatten(1).norm(dim=1).clamp_min(1e-300)[:, None, None] - etf).flatten(1).norm(dim=1),
    }
    return {k: v.to(torch.float32) for k, v in out.items()}


def pairwise_cosines(rows: torch.Tensor) -> torch.Tensor:
    """Cosines between the rows of each member's matrix [M, C, d] -> [M, C, C] (float64)."""
    rows = _stacked(rows).double()
    unit = rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    return unit @ unit.transpose(1, 2)


def classifier_geometry(classifier: torch.Tensor) -> dict:
    """The same ETF geometry for the classifier rows W [M, C, d] (centred across classes, as Papyan et al.)."""
    w = _stacked(classifier).double()
    return _frame_geometry(w - w.mean(1, keepdim=True), w.shape[1])


def _rows(st: _Stats, classifier) -> torch.Tensor:
    w = _stacked(classifier)
    if w.shape[1:] != st.mt.shape[1:] or w.shape[0] not in (1, st.mt.shape[0]):
        raise ConfigError(f"The classifier must hold one row per class, [M, C, d] = [{st.mt.shape[0]}, {st.C}, "
                          f"{st.mt.shape[2]}]; got {tuple(w.shape)} (transpose a [M, d, C] weight).")
    return w


def _nc3(st: _Stats, w: torch.Tensor) -> torch.Tensor:
    w, mt = w.double(), st.mt.double()
    fro = lambda t: t.flatten(1).norm(dim=1).clamp_min(1e-300)[:, None, None]
    return (w / fro(w) - mt / fro(mt)).flatten(1).pow(2).sum(1).to(torch.float32)


def nc3(features: torch.Tensor, labels: torch.Tensor, classifier: torch.Tensor, n_classes: int | None = None) -> torch.Tensor:
    """‖W/‖W‖_F − M̃/‖M̃‖_F‖²_F per member [M] (0: classifier rows ∝ centred class means; at most 4).
    classifier: the rows of the last linear layer, [M, C, d] (the reglab MLP stores [M, d, C]: transpose)."""
    st = _Stats(features, labels, n_classes)
    return _nc3(st, _rows(st, classifier))


def ncc_predictions(features: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """Nearest-class-centre decision [M, n] for features [M, n, d] and class means [M, C, d]:
    argmin_c ‖h − μ_c‖² = argmin_c (‖μ_c‖² − 2 h·μ_c)."""
    h = _stacked(features)
    means = means.to(h.dtype)
    # scores [M, C, n]: bmm with the n-wide output and max/min(dim).indices are 2.5× and 6× faster here than
    # h @ meansᵀ (an n×C output) and argmin on these shapes; the same first-index tie rule
    scores = means.pow(2).sum(-1).unsqueeze(-1) - 2 * torch.bmm(means, h.transpose(1, 2))
    return scores.min(1).indices


def _nc4(st: _Stats, w: torch.Tensor, bias) -> torch.Tensor:
    logits = torch.bmm(w.to(st.h.dtype), st.h.transpose(1, 2))  # [M, C, n], as in ncc_predictions
    if bias is not None:
        logits = logits + bias.detach().to(st.h.dtype).reshape(w.shape[0], -1, 1)
    return (logits.max(1).indices != ncc_predictions(st.h, st.means)).to(torch.float32).mean(-1)


def nc4(features: torch.Tensor, labels: torch.Tensor, classifier: torch.Tensor, bias: torch.Tensor | None = None,
        n_classes: int | None = None) -> torch.Tensor:
    """Fraction of examples where argmax(W h + b) differs from the nearest class centre (means of these
    features and labels) per member [M]."""
    st = _Stats(features, labels, n_classes)
    return _nc4(st, _rows(st, classifier), bias)


def collapse_metrics(features: torch.Tensor, labels: torch.Tensor, classifier: torch.Tensor | None = None,
                     bias: torch.Tensor | None = None, n_classes: int | None = None) -> dict:
    """NC1–NC4 (NC3 and NC4 when the classifier rows [M, C, d] are given) in one dict of [M] tensors:
    nc1, nc2_equinorm, nc2_equiangular, nc2_maxangle, nc2_cos_mean, nc2_etf_distance, nc3, nc4,
    w_equinorm, w_maxangle. Class means are computed once."""
    st = _Stats(features, labels, n_classes)
    out = {"nc1": _nc1(st)}
    out.update({f"nc2_{k}": v for k, v in _frame_geometry(st.mt.double(), st.C).items()})
    if classifier is not None:
        w = _rows(st, classifier)
        out["nc3"] = _nc3(st, w)
        out["nc4"] = _nc4(st, w, bias)
        geo = classifier_geometry(w)
        out["w_equinorm"], out["w_maxangle"] = geo["equinorm"], geo["maxangle"]
    return out


def simplex_etf(n_classes: int, dim: int | None = None, scale: float = 1.0) -> torch.Tensor:
    """A simplex ETF: C unit-norm rows in `dim` ≥ C − 1 dimensions with pairwise cosines −1/(C−1) [C, dim]."""
    C = int(n_classes)
    dim = C if dim is None else int(dim)
    if dim < C - 1:
        raise ConfigError(f"A simplex ETF of {C} classes needs dim ≥ {C - 1}; got {dim}.")
    frame = (torch.eye(C, dtype=torch.float64) - 1.0 / C) * (C / (C - 1)) ** 0.5  # rows: unit norm, cos −1/(C−1)
    if dim == C:
        return scale * frame
    # rotate into `dim` coordinates: the rows lie in the (C−1)-dim subspace orthogonal to 1
    basis = torch.linalg.qr(frame.T)[0][:, : C - 1]  # orthonormal basis of the row span, [C, C−1]
    coords = frame @ basis  # [C, C−1]
    out = torch.zeros(C, dim, dtype=torch.float64)
    out[:, : C - 1] = coords
    return scale * out

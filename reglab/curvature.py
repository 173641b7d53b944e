"""Curvature of the loss: Hessian-vector products, top eigenvalues, traces, spectral density.

Everything works on a stacked parameter dict (leading member axis M) and a per-member loss
`loss_fn(params) -> Tensor[M]`. Members are independent, so the Hessian of `loss_fn(params).sum()`
is block diagonal: one Hessian-vector product serves all members, and every inner product below is
taken per member.

    H = Hessian(state.loss, state.params)        # one gradient graph, many products
    top_eigenvalues(H, k=3).eigenvalues          # [M, 3], Lanczos
    hutchinson_trace(H, n_probes=100)            # (mean [M], standard error [M])
    train(cfg, probes=[Sharpness(every=50)])     # λ_max during training, warm-started
    run.hessian(top=3), run.hessian_trace()      # at the end of a run, every member
    module_hessian(net, F.cross_entropy, x, y, top=3)   # any torch.nn.Module on one batch

The square-loss convention of theme T1 (½‖f − y‖² summed over outputs, averaged over examples) is
the engine's "mse" loss; the Hessian is always that of whatever `loss_fn` returns.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .config import ConfigError, Interval, check

HVP_BATCH = 16  # probes per vmapped backward when batching pays (small, overhead-bound models)
CHEAP_HVP_SECONDS = 2e-3  # below this one HVP is dominated by Python/dispatch overhead: batch it
JACOBIAN_CHUNK_FLOATS = 16_000_000  # per-example Jacobians held at once by gauss_newton_trace (~64 MB)


# ---------------------------------------------------------------------------------------------
# stacked vectors: a parameter dict [M, ...] <-> one flat matrix [M, N]


def _flatten(tree: dict) -> torch.Tensor:
    return torch.cat([t.reshape(t.shape[0], -1) for t in tree.values()], dim=1)


def _unflatten(flat: torch.Tensor, like: dict) -> list:
    """Split [M, N] into views shaped like `like`'s tensors (member axis included)."""
    pieces = flat.split([t[0].numel() for t in like.values()], dim=1)
    return [x.view(t.shape) for x, t in zip(pieces, like.values())]


def _check_params(params: dict, owner: str) -> int:
    if not isinstance(params, dict) or not params:
        raise ConfigError(f"The 'params' parameter of {owner} must be a non-empty dict of stacked tensors [M, ...]. "
                          f"Got {type(params).__name__} instead.")
    sizes = {k: (v.shape[0] if torch.is_tensor(v) and v.dim() > 0 else None) for k, v in params.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
        raise ConfigError(f"The 'params' parameter of {owner} must hold tensors that share a leading member axis M. "
                          f"Got leading sizes {sizes} instead.")
    bad = [k for k, v in params.items() if not v.is_floating_point()]
    if bad:
        raise ConfigError(f"The 'params' parameter of {owner} must hold floating-point tensors. Got non-float {bad}.")
    return next(iter(sizes.values()))


# ---------------------------------------------------------------------------------------------
# Hessian-vector products


class Hessian:
    """The Hessian of `loss_fn(params).sum()` at one point, as a linear operator on stacked vectors.

    The gradient is taken once with create_graph=True; each product is then one more backward pass
    through that cached graph (measured 1.15–2.2 gradients on CPU, against 2.2–3.7 for a fresh
    double backward). The graph is built on ONE leaf, the flat parameters [M, N], with `params`
    as views of it: a product takes and returns flat vectors, and the split into parameters and the
    concatenation of their gradients run inside the autograd engine (~10 % faster per product
    than splitting and concatenating around it on a 15k-parameter MLP). `n_hvp` counts products (a
    batch of P vectors counts P). Every function below accepts a Hessian in place of `loss_fn`
    (params then unused), to share one graph and one counter.
    """

    def __init__(self, loss_fn: Callable, params: dict):
        self.M = _check_params(params, "Hessian")
        self.flat = _flatten({k: v.detach() for k, v in params.items()}).requires_grad_(True)
        self.params = dict(zip(params, _unflatten(self.flat, params)))
        with torch.enable_grad():
            loss = loss_fn(self.params)
            if not torch.is_tensor(loss) or tuple(loss.shape) != (self.M,):
                shape = tuple(loss.shape) if torch.is_tensor(loss) else type(loss).__name__
                raise ConfigError(f"The 'loss_fn' parameter of Hessian must return one loss per member, shape "
                                  f"({self.M},). Got {shape} instead.")
            grad = torch.autograd.grad(loss.sum(), self.flat, create_graph=True, allow_unused=True)[0]
        self.loss = loss.detach()
        grad = torch.zeros_like(self.flat) if grad is None else grad
        self.grad = dict(zip(self.params, _unflatten(grad.detach(), self.params)))
        # a gradient that does not depend on the parameters (a loss linear in them) has a zero Hessian
        self._grad = grad if grad.requires_grad else None
        self.numel = self.flat.shape[1]  # parameters per member
        self.dtype, self.device = self.flat.dtype, self.flat.device
        self.n_hvp = 0
        self.hvp_seconds = None  # fastest single product seen (decides whether batching pays)
        self._batch_ok = True

    def _backward(self, v: torch.Tensor, batched: bool) -> torch.Tensor:
        if self._grad is None:
            return torch.zeros_like(v)
        with torch.enable_grad():
            out = torch.autograd.grad(self._grad, self.flat, grad_outputs=v, retain_graph=True, allow_unused=True,
                                      is_grads_batched=batched)[0]
        return torch.zeros_like(v) if out is None else out

    def mv(self, vecs: dict) -> dict:
        """H v for a stacked vector dict (same keys and shapes as params)."""
        return dict(zip(self.params, _unflatten(self.mv_flat(_flatten({k: vecs[k] for k in self.params})),
                                                self.params)))

    def mv_flat(self, v: torch.Tensor) -> torch.Tensor:
        """H v for flat per-member vectors [M, N]."""
        start = time.perf_counter()
        out = self._backward(v.to(self.dtype), False)
        took = time.perf_counter() - start
        self.hvp_seconds = took if self.hvp_seconds is None else min(self.hvp_seconds, took)
        self.n_hvp += 1
        return out

    def mm_flat(self, V: torch.Tensor, batch: int | None = None) -> torch.Tensor:
        """H applied to P flat vectors per member: [P, M, N] -> [P, M, N].

        Vectors go through one vmapped backward `batch` at a time. By default they are batched only
        when a single product is cheap (overhead-bound): there batching measured ~2× faster per
        product, while on a compute-bound model (MNIST-1D MLP, 1000 examples) it was 1.0–1.5× slower.
        """
        out, start = [], 0
        if batch is None:
            if self.hvp_seconds is None:  # time the first product, then decide for the rest
                out.append(self.mv_flat(V[0]))
                start = 1
            batch = HVP_BATCH if self.hvp_seconds < CHEAP_HVP_SECONDS else 1
        i = start
        while i < len(V):
            if batch <= 1 or not self._batch_ok:
                out.append(self.mv_flat(V[i]))
                i += 1
                continue
            chunk = V[i:i + batch].to(self.dtype)
            try:
                res = self._backward(chunk, True)
            except RuntimeError:  # an op without a vmap rule for its double backward: go one by one
                self._batch_ok = False
                continue
            out.extend(res.unbind(0))
            self.n_hvp += len(chunk)
            i += len(chunk)
        return torch.stack(out)


def hvp(loss_fn: Callable, params: dict, vecs: dict) -> dict:
    """One Hessian-vector product H v, per member (builds the gradient graph; for many products at
    one point build a `Hessian` once and call its `mv`)."""
    return _as_hessian(loss_fn, params, "hvp").mv(vecs)


def _as_hessian(loss_fn, params, owner: str) -> Hessian:
    if isinstance(loss_fn, Hessian):
        return loss_fn
    if not callable(loss_fn):
        raise ConfigError(f"The 'loss_fn' parameter of {owner} must be a callable params -> Tensor[M] or a Hessian. "
                          f"Got {type(loss_fn).__name__} instead.")
    _check_params(params, owner)
    return Hessian(loss_fn, params)


# ---------------------------------------------------------------------------------------------
# Lanczos, batched over rows (members, or members × probes)


def _randn(shape, generator, dtype, device) -> torch.Tensor:
    if generator is None:
        return torch.randn(shape, dtype=dtype, device=device)
    return torch.randn(shape, generator=generator, dtype=dtype, device=generator.device).to(device)


def _rademacher(shape, generator, dtype, device) -> torch.Tensor:
    gen_device = device if generator is None else generator.device
    bits = torch.randint(0, 2, shape, generator=generator, device=gen_device)
    return (bits * 2 - 1).to(device, dtype)


def _orthogonalize(w: torch.Tensor, basis: torch.Tensor) -> tuple:
    """Remove from each row of w [R, N] its components along the orthonormal rows of basis [R, j, N].
    Classical Gram–Schmidt applied twice (as accurate as modified Gram–Schmidt, but four matmuls).
    Returns (w, first pass's coefficients basis·w [R, j])."""
    coefficients = torch.bmm(basis, w.unsqueeze(2))
    w = torch.baddbmm(w.unsqueeze(2), basis.mT, coefficients, alpha=-1)
    w = torch.baddbmm(w, basis.mT, torch.bmm(basis, w), alpha=-1)
    return w.squeeze(2), coefficients.squeeze(2)


def _unit_rows(v: torch.Tensor, generator) -> torch.Tensor:
    """Normalize rows; a zero or non-finite row (e.g. a diverged member's old Ritz vector) is redrawn."""
    n = v.norm(dim=1)
    bad = ~torch.isfinite(n) | (n == 0)
    if bool(bad.any()):
        v = torch.where(bad[:, None], _randn(v.shape, generator, v.dtype, v.device), v)
    return v / v.norm(dim=1, keepdim=True)


@dataclass
class _Krylov:
    Q: torch.Tensor  # [R, m, N] orthonormal Lanczos basis
    alphas: torch.Tensor  # [R, m] float64: diag of T = Qᵀ H Q (exactly q_jᵀ H q_j)
    betas: torch.Tensor  # [R, m] float64: off-diagonal; betas[:, m-1] is the final residual norm
    theta: torch.Tensor  # [R, m] Ritz values, ascending
    S: torch.Tensor  # [R, m, m] eigenvectors of T
    ok: torch.Tensor  # [R] rows that stayed finite
    converged: torch.Tensor  # [R]
    residuals: torch.Tensor  # [R, k] ‖H y − θ y‖ of the top-k Ritz pairs
    history: torch.Tensor  # [m, R] top Ritz value after each step

    @property
    def steps(self) -> int:
        return self.alphas.shape[1]


def _lanczos(op: Callable, v0: torch.Tensor, steps: int, k: int, tol: float, ok: torch.Tensor, generator) -> _Krylov:
    """Lanczos with full re-orthogonalization on rows of v0 [R, N], op: [R, N] -> [R, N].

    Stops when every row's top-k Ritz pairs have residual ‖H y − θ y‖ = β_j |s_j| ≤ tol·max|θ| (a
    row that converged early keeps iterating with the others: harmless, it only sharpens). A row
    whose Krylov space becomes invariant (β = 0) restarts from a random vector orthogonal to its
    basis, with a zero coupling in T. Rows that are not `ok` (inactive or non-finite) count as done.

    A step is one product, one re-orthogonalization (which also yields α_j = q_jᵀ H q_j and takes
    the three-term recurrence's α_j q_j and β q_{j-1} out with the rest) and the tridiagonal T's
    eigendecomposition for the stopping test. T and that test live on the host in numpy (float64):
    a handful of µs-sized operations instead of a few dozen torch dispatches per step. The tiny
    eigenproblems go through torch's LAPACK, which keeps to torch.set_num_threads (numpy's
    OpenBLAS would wake its own threads for them).
    """
    R, N = v0.shape
    dtype, device = v0.dtype, v0.device
    Q = v0.new_empty(R, min(steps, 16), N)  # grown on demand: most runs stop long before `steps`
    T = np.zeros((R, steps + 1, steps + 1))  # Qᵀ H Q, tridiagonal
    ok = (ok & torch.isfinite(v0).all(1)).cpu().numpy()
    q = _unit_rows(v0, generator)
    eps = torch.finfo(dtype).eps
    history = []
    for j in range(steps):
        if j == Q.shape[1]:
            Q = torch.cat([Q, Q.new_empty(R, min(Q.shape[1], steps - j), N)], 1)
        Q[:, j] = q
        w, coefficients = _orthogonalize(op(q), Q[:, :j + 1])
        b = w.norm(dim=1)
        alpha_beta = torch.stack((coefficients[:, j], b), 1).to("cpu", torch.float64).numpy()
        ok &= np.isfinite(alpha_beta).all(1)
        alpha_beta[~ok] = 0.0
        alpha, beta = alpha_beta[:, 0], alpha_beta[:, 1]
        T[:, j, j], T[:, j, j + 1], T[:, j + 1, j] = alpha, beta, beta
        last = j == steps - 1 or not ok.any()
        if tol > 0 or last:
            theta, S = (x.numpy() for x in torch.linalg.eigh(torch.from_numpy(T[:, :j + 1, :j + 1])))
            residuals = np.abs(beta[:, None] * S[:, -1, :-k - 1:-1])  # top-k Ritz pairs, largest first
            scale = np.maximum(np.abs(theta[:, 0]), np.abs(theta[:, -1]))
            converged = ok & (j + 1 >= k) & (residuals <= tol * scale[:, None]).all(1)
        else:  # no stopping test (a fixed number of steps): the Ritz values alone, for the history
            theta = torch.linalg.eigvalsh(torch.from_numpy(T[:, :j + 1, :j + 1])).numpy()
            scale = np.maximum(np.abs(theta[:, 0]), np.abs(theta[:, -1]))
        history.append(theta[:, -1])
        if last or (tol > 0 and (converged | ~ok).all()):
            break
        tiny = ok & (beta <= eps * scale)
        if tiny.any():  # an invariant subspace: restart orthogonally, uncoupled
            fresh = _orthogonalize(_randn((R, N), generator, dtype, device), Q[:, :j + 1])[0]
            restart = torch.from_numpy(tiny).to(device)
            w = torch.where(restart[:, None], fresh, w)
            b = torch.where(restart, fresh.norm(dim=1), b)
            T[tiny, j, j + 1] = T[tiny, j + 1, j] = 0.0
        q = w / b[:, None]
        if not ok.all():  # a dead row must not feed NaN to the graph
            q = torch.where(torch.from_numpy(ok).to(device)[:, None], q, 0.0)
    m = j + 1
    host = lambda a, dtype=torch.float64: torch.from_numpy(np.ascontiguousarray(a)).to(device, dtype)
    return _Krylov(Q[:, :m], host(T[:, range(m), range(m)]), host(T[:, range(m), range(1, m + 1)]), host(theta),
                   host(S), host(ok, torch.bool), host(converged, torch.bool), host(residuals), host(np.stack(history)))


def _ritz_vectors(K: _Krylov, k: int) -> torch.Tensor:
    """Top-k Ritz vectors, [R, k, N], largest first."""
    Y = K.S[:, :, -k:].flip(-1).to(K.Q.dtype)  # [R, m, k]
    return torch.bmm(Y.transpose(1, 2), K.Q)


@dataclass
class Eigen:
    """Top eigenpairs of every member's Hessian (largest algebraic eigenvalues first)."""

    eigenvalues: torch.Tensor  # [M, k]
    vectors: list  # k stacked dicts [M, ...], unit norm per member: warm starts / directions
    residuals: torch.Tensor  # [M, k] ‖H y − θ y‖ (an eigenvalue of H lies within this of θ)
    converged: torch.Tensor  # [M] bool
    iterations: int  # Lanczos steps = Hessian-vector products
    history: torch.Tensor = field(repr=False)  # [iterations, M] top Ritz value after each step


def top_eigenvalues(loss_fn, params: dict | None = None, k: int = 1, max_iter: int = 100, tol: float = 1e-4,
                    init: dict | None = None, generator: torch.Generator | None = None,
                    active: torch.Tensor | None = None) -> Eigen:
    """The k largest Hessian eigenvalues of every member by Lanczos with full re-orthogonalization.

    Stops when every active member's top-k Ritz residuals are ≤ tol·max|θ| (tol=0: run max_iter).
    `init` (a stacked dict, e.g. a previous `vectors[0]`) warm-starts it. Members with `active`
    False, or whose Hessian is not finite, get NaN. A repeated eigenvalue is found once only (a
    single Krylov sequence cannot see multiplicity).
    """
    owner = "top_eigenvalues"
    check("k", k, Interval(int, 1, math.inf), owner)
    check("max_iter", max_iter, Interval(int, 1, math.inf), owner)
    check("tol", tol, Interval(float, 0, 1, closed="left"), owner)
    H = _as_hessian(loss_fn, params, owner)
    if k > H.numel:
        raise ConfigError(f"The 'k' parameter of {owner} must be an int in the range [1, {H.numel}] (the parameters "
                          f"per member). Got {k!r} instead.")
    if max_iter < k:
        raise ConfigError(f"The 'max_iter' parameter of {owner} must be an int in the range [{k}, inf] (at least k). "
                          f"Got {max_iter!r} instead.")
    if init is None:
        v0 = _randn((H.M, H.numel), generator, H.dtype, H.device)
    else:
        v0 = init if torch.is_tensor(init) else _flatten({key: init[key] for key in H.params})
        if tuple(v0.shape) != (H.M, H.numel):
            raise ConfigError(f"The 'init' parameter of {owner} must have {H.numel} entries per member for {H.M} "
                              f"members. Got shape {tuple(v0.shape)} instead.")
        v0 = v0.detach().to(H.device, H.dtype)
    ok = torch.ones(H.M, dtype=torch.bool, device=H.device) if active is None else active.to(H.device).bool().clone()
    K = _lanczos(H.mv_flat, v0, min(max_iter, H.numel), k, float(tol), ok, generator)
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=H.device)
    values = torch.where(K.ok[:, None], K.theta[:, -k:].flip(1), nan).to(H.dtype)
    Y = _ritz_vectors(K, k)
    vectors = [dict(zip(H.params, _unflatten(Y[:, i], H.params))) for i in range(k)]
    return Eigen(values, vectors, K.residuals.to(H.dtype), K.converged, K.steps,
                 torch.where(K.ok, K.history, nan).to(H.dtype))


# ---------------------------------------------------------------------------------------------
# traces


def hutchinson_trace(loss_fn, params: dict | None = None, n_probes: int = 100, generator: torch.Generator | None = None,
                     batch: int | None = None, deflate: int = 0) -> tuple:
    """Hutchinson's estimate of tr(H) per member from Rademacher probes: (mean [M], standard error [M]).

    Costs n_probes products (+ deflate). With deflate = m > 0, an m-step Lanczos basis Q first takes
    the outlying eigen-directions out (Krylov-deflated Hutch++): tr(H) = tr(QᵀHQ) + tr((I−P)H(I−P))
    holds for any orthonormal Q, the first term is exact (Σ of Lanczos α) and only the second is
    sampled, so the standard error shrinks by the share of ‖H‖_F² the outliers carried. `batch`:
    probes per vmapped backward (None: automatic, see Hessian.mm_flat).
    """
    owner = "hutchinson_trace"
    check("n_probes", n_probes, Interval(int, 2, math.inf), owner)
    check("batch", batch, Interval(int, 1, math.inf, allow_none=True), owner)
    check("deflate", deflate, Interval(int, 0, math.inf), owner)
    H = _as_hessian(loss_fn, params, owner)
    exact = torch.zeros(H.M, dtype=torch.float64, device=H.device)
    Q, ok = None, torch.ones(H.M, dtype=torch.bool, device=H.device)
    if deflate:
        v0 = _randn((H.M, H.numel), generator, H.dtype, H.device)
        K = _lanczos(H.mv_flat, v0, min(deflate, H.numel), 1, 0.0, ok, generator)
        Q, ok, exact = K.Q, K.ok, K.alphas.sum(1)
    samples = []
    for i in range(0, n_probes, HVP_BATCH):
        Z = _rademacher((min(HVP_BATCH, n_probes - i), H.M, H.numel), generator, H.dtype, H.device)
        if Q is not None:  # project out the deflated subspace, per member
            Z = Z - torch.einsum("mjn,pmj->pmn", Q, torch.einsum("mjn,pmn->pmj", Q, Z))
        samples.append((Z * H.mm_flat(Z, batch)).sum(-1).double())
    samples = torch.cat(samples)  # [n_probes, M]
    mean = exact + samples.mean(0)
    stderr = samples.std(0) / math.sqrt(n_probes)
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=H.device)
    return torch.where(ok, mean, nan).to(H.dtype), torch.where(ok, stderr, nan).to(H.dtype)


def _basis_products(H: Hessian, max_params: int, owner: str, batch):
    """Yield (start, H e_i for a chunk of basis vectors [c, M, N]): the exact Hessian column by column."""
    check("max_params", max_params, Interval(int, 1, math.inf), owner)
    if H.numel > max_params:
        raise ConfigError(f"{owner} needs one Hessian-vector product per parameter: the model has {H.numel} per "
                          f"member, more than max_params={max_params}. Raise max_params, or use hutchinson_trace.")
    chunk = 64
    for start in range(0, H.numel, chunk):
        c = min(chunk, H.numel - start)
        E = torch.zeros(c, H.M, H.numel, dtype=H.dtype, device=H.device)
        E[torch.arange(c), :, start + torch.arange(c)] = 1.0
        yield start, H.mm_flat(E, batch)


def hessian_matrix(loss_fn, params: dict | None = None, max_params: int = 5000, batch: int | None = None) -> torch.Tensor:
    """The full Hessian of every member, [M, N, N] (N parameters per member, in params' key order,
    each tensor flattened), from N Hessian-vector products with basis vectors. For small models."""
    H = _as_hessian(loss_fn, params, "hessian_matrix")
    out = torch.empty(H.M, H.numel, H.numel, dtype=H.dtype, device=H.device)
    for start, cols in _basis_products(H, max_params, "hessian_matrix", batch):
        out[:, :, start:start + len(cols)] = cols.permute(1, 2, 0)
    return out


def hessian_trace(loss_fn, params: dict | None = None, max_params: int = 5000, batch: int | None = None) -> torch.Tensor:
    """The exact trace of every member's Hessian, [M], from N basis-vector products."""
    H = _as_hessian(loss_fn, params, "hessian_trace")
    total = torch.zeros(H.M, dtype=torch.float64, device=H.device)
    for start, cols in _basis_products(H, max_params, "hessian_trace", batch):
        idx = start + torch.arange(len(cols), device=H.device)
        total += cols[torch.arange(len(cols)), :, idx].sum(0).double()
    return total.to(H.dtype)


def gauss_newton_trace(model, params: dict, x: torch.Tensor, y: torch.Tensor, loss="mse",
                       chunk: int | None = None) -> torch.Tensor:
    """The exact trace of the Gauss–Newton matrix G = (1/n) Σ_i J_iᵀ A_i J_i per member, [M].

    J_i = ∂f(x_i)/∂θ (outputs × parameters), A_i the Hessian of the per-example loss in the outputs
    (the identity for the square loss ½‖f − y‖², so tr G = (1/n) Σ_i ‖J_i‖_F²; diag(p) − ppᵀ for
    cross-entropy). Near an interpolating minimum G equals the Hessian. Per-example Jacobians come
    from torch.func (vmap over examples of jacrev), `chunk` examples at a time. The model must treat
    examples independently (no BatchNorm: its batch statistics couple them).
    """
    from torch.func import jacrev, vmap  # (its first use in a process imports torch._dynamo: ~2 s)

    from .losses import LOSSES

    owner = "gauss_newton_trace"
    M = _check_params(params, owner)
    check("chunk", chunk, Interval(int, 1, math.inf, allow_none=True), owner)
    if getattr(model, "batchnorm", False):
        raise ConfigError(f"{owner} needs a model whose examples are independent; this one uses BatchNorm, whose "
                          f"batch statistics couple them. Use hessian_trace or hutchinson_trace instead.")
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ConfigError(f"The 'loss' parameter of {owner} must be one of {', '.join(map(repr, LOSSES))} or a "
                              f"callable (out [M, B, C], y) -> [M, B]. Got {loss!r} instead.")
        loss = LOSSES[loss]
    if len(x) != len(y) or len(x) == 0:
        raise ConfigError(f"The 'x' and 'y' parameters of {owner} must hold the same, non-zero number of examples. "
                          f"Got {len(x)} and {len(y)} instead.")
    params = {k: v.detach() for k, v in params.items()}
    N = sum(p[0].numel() for p in params.values())

    def outputs(p, xi):
        # summing over members keeps each member's Jacobian in its own slot: members never interact
        return model(p, xi.unsqueeze(0))[:, 0, :].sum(0)

    with torch.no_grad():
        C = model(params, x[:1]).shape[-1]
    per_example_jacobian = vmap(jacrev(outputs), in_dims=(None, 0))
    chunk = chunk or max(1, JACOBIAN_CHUNK_FLOATS // (C * M * N))
    total = torch.zeros(M, dtype=torch.float64, device=x.device)
    for i in range(0, len(x), chunk):
        xc, yc = x[i:i + chunk], y[i:i + chunk]
        jac = per_example_jacobian(params, xc)  # name -> [b, C, M, *shape]
        gram = sum(torch.einsum("bcmn,bdmn->mbcd", j.flatten(3), j.flatten(3)) for j in jac.values())  # J Jᵀ
        total += (gram * _output_hessian(model, params, xc, yc, loss)).sum((1, 2, 3)).double()
    return (total / len(x)).to(next(iter(params.values())).dtype)


def _output_hessian(model, params, x, y, loss) -> torch.Tensor:
    """A_i = ∂²ℓ(f_i, y_i)/∂f_i² for every member and example, [M, B, C, C] (C backward passes)."""
    with torch.enable_grad():
        out = model(params, x).detach().requires_grad_(True)
        g = torch.autograd.grad(loss(out, y).sum(), out, create_graph=True)[0]
        C = out.shape[-1]
        if not g.requires_grad:  # piecewise-linear loss (hinge): zero curvature in the outputs
            return torch.zeros(*out.shape, C, dtype=out.dtype, device=out.device)
        cols = [torch.autograd.grad(g[..., c].sum(), out, retain_graph=True, allow_unused=True)[0] for c in range(C)]
    return torch.stack([torch.zeros_like(out) if c is None else c for c in cols], -1)


# ---------------------------------------------------------------------------------------------
# spectral density


@dataclass
class SpectralDensity:
    """Eigenvalue density of every member's Hessian by stochastic Lanczos quadrature."""

    grid: torch.Tensor  # [G]
    density: torch.Tensor  # [M, G], integrates to 1 (multiply by N for a count of eigenvalues)
    nodes: torch.Tensor  # [M, n_probes, n_iter] Ritz values
    weights: torch.Tensor  # [M, n_probes, n_iter] quadrature weights (each probe's sum to 1)
    sigma: float


def spectral_density(loss_fn, params: dict | None = None, n_probes: int = 4, n_iter: int = 50,
                     grid: int | torch.Tensor = 200, sigma: float | None = None,
                     generator: torch.Generator | None = None, batch: int | None = None) -> SpectralDensity:
    """Stochastic Lanczos quadrature (Ghorbani et al. 2019), Gaussian-broadened, per member.

    Each of n_probes Gaussian start vectors runs n_iter Lanczos steps; the eigenvalues θ_j of T and
    the squared first components τ_j of its eigenvectors are a quadrature rule for the spectral
    measure. grid: points, or how many to spread over the Ritz values' range; sigma: Gaussian width
    (default 1 % of the grid's range). Costs n_probes × n_iter products, probes batched.
    """
    owner = "spectral_density"
    check("n_probes", n_probes, Interval(int, 1, math.inf), owner)
    check("n_iter", n_iter, Interval(int, 1, math.inf), owner)
    check("sigma", sigma, Interval(float, 0, math.inf, closed="neither", allow_none=True), owner)
    if not torch.is_tensor(grid):
        check("grid", grid, Interval(int, 2, math.inf), owner)
    H = _as_hessian(loss_fn, params, owner)
    P, M, N = n_probes, H.M, H.numel
    v0 = _randn((P * M, N), generator, H.dtype, H.device)
    op = lambda q: H.mm_flat(q.view(P, M, N), batch).reshape(P * M, N)
    K = _lanczos(op, v0, min(n_iter, N), 1, 0.0, torch.ones(P * M, dtype=torch.bool, device=H.device), generator)
    nodes = K.theta.view(P, M, -1).transpose(0, 1)
    weights = K.S[:, 0, :].pow(2).view(P, M, -1).transpose(0, 1)
    dead = ~K.ok.view(P, M).all(0)  # a member whose Hessian was not finite in any probe
    if torch.is_tensor(grid):
        g = grid.to(H.device, torch.float64)
    else:
        finite = nodes[~dead]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.numel() else (-1.0, 1.0)
        pad = 0.05 * (hi - lo) + 1e-12 * max(1.0, abs(hi))
        g = torch.linspace(lo - pad, hi + pad, grid, dtype=torch.float64, device=H.device)
    s = float(sigma) if sigma is not None else 0.01 * float(g[-1] - g[0]) or 1e-3
    gauss = torch.exp(-0.5 * ((g[None, None, None, :] - nodes[..., None]) / s) ** 2) / (s * math.sqrt(2 * math.pi))
    density = (weights[..., None] * gauss).sum(2).mean(1)  # [M, G]
    density[dead] = float("nan")
    return SpectralDensity(g.to(H.dtype), density.to(H.dtype), nodes.to(H.dtype), weights.to(H.dtype), s)


# ---------------------------------------------------------------------------------------------
# the probe


class Sharpness:
    """Probe for `reglab.engine.train`: λ_max of the Hessian of the training loss, per member.

        run = train(cfg, probes=[Sharpness(every=50)])      # metric "sharpness" in run.history

    Each evaluation warm-starts Lanczos from the previous Ritz vector (measured ~11–15 products per
    point instead of ~26 cold). It computes at an evaluation point when at least `every` steps have
    passed since its last one. Diverged members get NaN. `n_hvp` (total) and `log` (one dict per
    computation: step, hvps, warm, seconds) record the cost; with k > 1 it also reports sharpness_2…k.
    """

    def __init__(self, every: int = 1, k: int = 1, tol: float = 1e-4, max_iter: int = 100, warm_start: bool = True,
                 split: str = "train", name: str = "sharpness", seed: int = 0):
        owner = "Sharpness"
        check("every", every, Interval(int, 1, math.inf), owner)
        check("k", k, Interval(int, 1, math.inf), owner)
        check("max_iter", max_iter, Interval(int, k, math.inf), owner)
        check("tol", tol, Interval(float, 0, 1, closed="left"), owner)
        if split not in ("train", "test"):
            raise ConfigError(f"The 'split' parameter of Sharpness must be one of 'train', 'test'. Got {split!r} instead.")
        self.every, self.k, self.tol, self.max_iter = every, k, tol, max_iter
        self.warm_start, self.split, self.name = warm_start, split, name
        self.generator = torch.Generator().manual_seed(seed)
        self.n_hvp = 0
        self.log: list = []
        self._vector = None  # flat [M, N]: sum of the last top-k Ritz vectors
        self._last_step = None

    def __repr__(self) -> str:  # the settings that change its numbers (e.g. for a cache key)
        return (f"Sharpness(every={self.every}, k={self.k}, tol={self.tol}, max_iter={self.max_iter}, "
                f"warm_start={self.warm_start}, split={self.split!r}, name={self.name!r})")

    def __call__(self, state) -> dict:
        if self._last_step is not None and state.step <= self._last_step:  # reused for a new run: start over
            self._last_step, self._vector = None, None
        if self._last_step is not None and state.step - self._last_step < self.every:
            return {}
        self._last_step = state.step
        start = time.perf_counter()
        H = Hessian(lambda p: state.loss(p, split=self.split), state.params)
        warm = self.warm_start and self._vector is not None and tuple(self._vector.shape) == (H.M, H.numel)
        res = top_eigenvalues(H, k=self.k, max_iter=self.max_iter, tol=self.tol, init=self._vector if warm else None,
                              generator=self.generator, active=state.alive)
        # a Krylov space grown from the sum of the top-k vectors contains all k of them
        self._vector = sum(_flatten(v) for v in res.vectors).detach()
        self.n_hvp += H.n_hvp
        self.log.append({"step": state.step, "hvps": H.n_hvp, "warm": warm, "seconds": time.perf_counter() - start})
        out = {self.name: res.eigenvalues[:, 0]}
        for i in range(1, self.k):
            out[f"{self.name}_{i + 1}"] = res.eigenvalues[:, i]
        return out


# ---------------------------------------------------------------------------------------------
# any torch.nn.Module


def module_loss(module: torch.nn.Module, loss: Callable, inputs, targets) -> tuple:
    """(loss_fn, params) for a module's loss on one batch, in this module's stacked form (one member):
    `loss(module(inputs), targets)` through `torch.func.functional_call`, so the module is not changed."""
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    params = {n: p.detach()[None] for n, p in module.named_parameters() if n in names}

    def loss_fn(p):
        out = torch.func.functional_call(module, {n: v[0] for n, v in p.items()}, (inputs,))
        return loss(out, targets).reshape(1)

    return loss_fn, params


def module_hessian(module: torch.nn.Module, loss: Callable, inputs, targets, top: int = 1, tol: float = 1e-4,
                   seed: int = 0) -> torch.Tensor:
    """The `top` largest Hessian eigenvalues of `loss(module(inputs), targets)` w.r.t. the module's
    parameters ([top], largest first): PyHessian's `eigenvalues`, with a certified stop."""
    loss_fn, params = module_loss(module, loss, inputs, targets)
    return top_eigenvalues(loss_fn, params, k=top, tol=tol, generator=torch.Generator().manual_seed(seed)).eigenvalues[0]


def module_hessian_trace(module: torch.nn.Module, loss: Callable, inputs, targets, n_probes: int = 100,
                         seed: int = 0) -> tuple:
    """Hutchinson's estimate of tr(H) of `loss(module(inputs), targets)`: (mean, standard error)."""
    loss_fn, params = module_loss(module, loss, inputs, targets)
    mean, stderr = hutchinson_trace(loss_fn, params, n_probes=n_probes, generator=torch.Generator().manual_seed(seed))
    return float(mean[0]), float(stderr[0])

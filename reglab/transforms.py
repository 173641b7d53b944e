"""Gradient transformations, optax style: small and composable.

A transform is a pair (init, update): `init(params) -> state`, `update(grads, state, params) ->
(updates, state)`. Hyperparameters are tensors with one value per ensemble member ([M]), so one chain
trains a whole sweep. A chain owns the gradients handed to it (the engine makes fresh ones every step
and never reads them again), so links update them in place, as torch.optim does: no new tensors per
step. An optimizer is a chain; regularizers are links in it:

    sgd + coupled L2:   chain(add_l2(λ, mask), momentum(μ))            then descend(η, schedule)
    AdamW:              chain(adam(β1, β2), add_decayed_weights(λ, mask))  then descend(η, schedule)

The chain turns gradients into descent directions; `descend` takes the step along them.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch


class Transform(NamedTuple):
    init: Callable
    update: Callable


def per_member(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape an [M] hyperparameter to broadcast against a parameter of shape [M, ...]."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _stateless(fn) -> Transform:
    return Transform(lambda params: None, lambda grads, state, params: (fn(grads, params), None))


def chain(*transforms: Transform) -> Transform:
    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(grads, state, params):
        new_state = []
        for t, s in zip(transforms, state):
            grads, s = t.update(grads, s, params)
            new_state.append(s)
        return grads, tuple(new_state)

    return Transform(init, update)


def member_norm(tree: dict) -> torch.Tensor:
    """Global L2 norm of a parameter dict, one value per member: [M]."""
    return torch.sqrt(sum(t.pow(2).flatten(1).sum(1) for t in tree.values()))


def clip_by_global_norm(max_norm: torch.Tensor) -> Transform:
    """Rescale each member's whole gradient to norm ≤ max_norm (inf: no clipping)."""
    def fn(grads, params):
        factor = torch.clamp(max_norm / (member_norm(grads) + 1e-12), max=1.0)
        return {k: g.mul_(per_member(factor, g)) for k, g in grads.items()}
    return _stateless(fn)


def _member_views(values: torch.Tensor):
    """A function tensors -> [per_member(values, t) for t in tensors], remembered per shape pattern
    (a parameter tree keeps its shapes for a whole run, and making the views each step costs time)."""
    made = {}

    def views(tensors) -> list:
        key = tuple(t.dim() for t in tensors)
        if key not in made:
            made[key] = [per_member(values, t) for t in tensors]
        return made[key]

    return views


def _masked(fn_, tree: dict, mask: dict, params: dict) -> dict:
    """Apply the in-place fn_(list of tree entries, list of matching params) to the masked entries only."""
    keys = [k for k in tree if mask[k]]
    if keys:
        fn_([tree[k] for k in keys], [params[k] for k in keys])
    return tree


# The links below use torch._foreach_* ops: one C++ call per link for all parameters instead of one
# Python-level op per tensor (the optimizer was ~1/6 of a small model's step; benchmarks/sweep.py).


def _plus_decay(weight_decay: torch.Tensor, mask: dict) -> Transform:
    """Add λ·w to the masked entries of whatever reaches this link."""
    views = _member_views(weight_decay)
    return _stateless(lambda tree, params: _masked(
        lambda t, p: torch._foreach_addcmul_(t, views(p), p), tree, mask, params))


def add_l2(weight_decay: torch.Tensor, mask: dict) -> Transform:
    """Coupled weight decay: the gradient of λ/2‖w‖² is added to the gradient (first in the chain)."""
    return _plus_decay(weight_decay, mask)


def orthogonal_to_weights() -> Transform:
    """⊥Grad (Prieto et al.): drop the gradient's component along each weight tensor, so the update
    cannot simply scale the weights up (the naive-loss-minimization direction), then rescale what is left
    back to the gradient's norm, per tensor and member, as the paper's code does: g⊥ · ‖g‖ / ‖g⊥‖."""
    def fn(grads, params):
        out = {}
        for k, g in grads.items():
            w = params[k]
            coef = (g * w).flatten(1).sum(1) / (w.pow(2).flatten(1).sum(1) + 1e-30)
            g_orth = g - per_member(coef, w) * w
            scale = g.flatten(1).norm(dim=1) / (g_orth.flatten(1).norm(dim=1) + 1e-30)
            out[k] = g_orth * per_member(scale, w)
        return out
    return _stateless(fn)


def momentum(beta: torch.Tensor) -> Transform:
    """Heavy-ball momentum as in torch.optim.SGD: buf ← β·buf + g."""
    views = _member_views(beta)

    def init(params):
        return {k: torch.zeros_like(p) for k, p in params.items()}

    def update(grads, state, params):
        bufs, g = [state[k] for k in grads], list(grads.values())
        torch._foreach_addcmul_(g, views(bufs), bufs)  # g ← g + β·buf
        torch._foreach_copy_(bufs, g)  # a copy, not the same tensors: later links may change g in place
        return grads, state

    return Transform(init, update)


def adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Transform:
    """Adam's bias-corrected moment ratio (without the step size)."""
    def init(params):
        return {"t": 0, "m": {k: torch.zeros_like(p) for k, p in params.items()},
                "v": {k: torch.zeros_like(p) for k, p in params.items()}}

    def update(grads, state, params):
        t = state["t"] + 1
        keys, g = list(grads), list(grads.values())
        m = torch._foreach_lerp([state["m"][k] for k in keys], g, 1 - b1)  # b1·m + (1 − b1)·g
        v = torch._foreach_addcmul(torch._foreach_mul([state["v"][k] for k in keys], b2), g, g, value=1 - b2)
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t
        denominators = torch._foreach_add(torch._foreach_sqrt(torch._foreach_div(v, c2)), eps)
        updates = torch._foreach_div(torch._foreach_div(m, c1), denominators)
        return dict(zip(keys, updates)), {"t": t, "m": dict(zip(keys, m)), "v": dict(zip(keys, v))}

    return Transform(init, update)


def add_decayed_weights(weight_decay: torch.Tensor, mask: dict) -> Transform:
    """Decoupled weight decay (AdamW): λ·w is added to the update, after any preconditioning."""
    return _plus_decay(weight_decay, mask)


def descend(step_size: torch.Tensor, schedule: Callable[[int], float]) -> Callable:
    """The step itself, after the chain: w ← w − η·schedule(t)·d for each member, as one fused multiply-add
    over all tensors (the update −η·d is never stored). Members where `alive` is False stay where they are.

        step = descend(η, schedule);  step(leaves, directions, t, alive=None)
    """
    factors = {}  # per-member factors shaped for each parameter, remade only when the schedule moves

    def step(leaves: list, directions: list, t: int, alive: torch.Tensor | None = None) -> None:
        scale = schedule(t)
        if factors.get("scale") != scale:
            factors.update(scale=scale, views=_member_views(-step_size * scale))
        if alive is None:
            torch._foreach_addcmul_(leaves, directions, factors["views"](directions))
            return
        for p, d, f in zip(leaves, directions, factors["views"](directions)):  # rare: some member diverged
            p.copy_(torch.where(per_member(alive, p), p + f * d, p))

    return step


def schedule(kind: str, steps: int, warmup: int = 0) -> Callable[[int], float]:
    """The step-size factor at step t (0-based): a linear warm-up over `warmup` steps, then `kind` over the
    remaining steps ("constant", "cosine" to 0, or "step": ÷10 at half and at three quarters)."""
    import math

    if warmup:
        after = schedule(kind, max(steps - warmup, 1))
        return lambda t: (t + 1) / warmup if t < warmup else after(t - warmup)
    if kind == "cosine":
        return lambda t: 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps))
    if kind == "step":  # ÷10 at half and again at three quarters of training
        return lambda t: 1.0 if t < steps // 2 else 0.1 if t < 3 * steps // 4 else 0.01
    return lambda t: 1.0

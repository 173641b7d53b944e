"""Per-example losses and accuracies. Each takes outputs [M, B, C] and targets, returns [M, B]."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _targets(y, M):
    """Targets shared by all members ([B] ids or [B, k] values) or per member ([M, B] / [M, B, k])."""
    per_member = y.dim() == (3 if y.is_floating_point() else 2)
    return y if per_member else y.unsqueeze(0).expand(M, *y.shape)


def cross_entropy(out, y):
    M, B, C = out.shape
    y = _targets(y, M)
    return F.cross_entropy(out.reshape(M * B, C), y.reshape(M * B), reduction="none").view(M, B)


def stablemax(z):
    """StableMax's s(z): z + 1 for z ≥ 0 and 1 / (1 − z) below; grows linearly, so it cannot overflow."""
    return torch.where(z >= 0, z + 1, 1 / (1 - torch.clamp(z, max=0)))


def stablemax_cross_entropy(out, y):
    M, B, C = out.shape
    y = _targets(y, M)
    s = stablemax(out)
    prob = s.gather(-1, y.unsqueeze(-1)).squeeze(-1) / s.sum(-1)
    return -torch.log(prob)


def _residual(out, y):
    """f(x) − y, with one-hot y for classes: [M, B, C]."""
    y = _targets(y, out.shape[0])
    return out - (F.one_hot(y, out.shape[-1]).to(out.dtype) if not y.is_floating_point() else y)


def square(out, y):
    """Cohen et al.'s square loss: ½‖f(x) − y‖² summed over outputs (one-hot y for classes)."""
    return 0.5 * _residual(out, y).pow(2).sum(-1)


def hinge(out, y):
    return torch.relu(1 - out.squeeze(-1) * _targets(y, out.shape[0]).squeeze(-1))


def logistic(out, y):
    return F.softplus(-out.squeeze(-1) * _targets(y, out.shape[0]).squeeze(-1))


LOSSES = {"ce": cross_entropy, "stablemax_ce": stablemax_cross_entropy, "mse": square, "hinge": hinge,
          "logistic": logistic}


def _cross_entropy_and_grad(out, y):
    if out.stride(-1) != 1 and out.mT.is_contiguous():  # a class-major [M, C, B] tensor seen as [M, B, C]
        loss, grad = _cross_entropy_along(out.mT, y, 1)
        return loss, grad.mT
    return _cross_entropy_along(out, y, -1)


def _cross_entropy_along(z, y, dim):
    """Loss and softmax − one-hot with the classes on axis `dim`: the axis as it lies in memory. The MLP's
    outputs are class-major, where log_softmax over dim 1 is 2–3× faster than over a copy that makes
    the classes contiguous (and the MLP's backward wants the derivative class-major too)."""
    log_p = torch.log_softmax(z, dim)
    y = _targets(y, z.shape[0]).unsqueeze(dim)
    grad = log_p.exp()
    grad.scatter_add_(dim, y, torch.full(y.shape, -1.0, dtype=z.dtype, device=z.device))  # softmax − one-hot
    return -log_p.gather(dim, y).squeeze(dim), grad


def _square_and_grad(out, y):
    residual = _residual(out, y)
    return 0.5 * residual.pow(2).sum(-1), residual


# per-example loss [M, B] and its derivative by the outputs [M, B, C], written out: an autograd call costs
# more than the arithmetic at training-step sizes (~70 µs fixed; benchmarks/README.md)
LOSS_AND_GRADS = {"ce": _cross_entropy_and_grad, "mse": _square_and_grad}


def objective(name: str, y, weights=None):
    """The training objective on a batch as a function `out -> (loss [M], dloss/dout [M, B, C])`: per member
    Σ_b weights[m, b]·ℓ(out_b, y_b), or the mean over the batch when weights is None. Models backpropagate
    dloss/dout through themselves (models.autograd_value_and_grad, MLP.value_and_grad)."""
    def value_and_grad(out):
        if name in LOSS_AND_GRADS:
            per_example, grad = LOSS_AND_GRADS[name](out, y)
        else:
            with torch.enable_grad():
                leaf = out.detach().requires_grad_()
                per_example = LOSSES[name](leaf, y)
                (grad,) = torch.autograd.grad(per_example.sum(), leaf)
            per_example = per_example.detach()
        w = torch.full_like(per_example, 1.0 / per_example.shape[-1]) if weights is None else weights
        return (per_example * w).sum(-1), grad.mul_(w.unsqueeze(-1))

    return value_and_grad


def accuracy(out, y):
    """Per-example correctness [M, B] (float): argmax for classes, sign for ±1 targets; None for regression."""
    M = out.shape[0]
    y = _targets(y, M)
    if not y.is_floating_point():
        return (out.max(-1).indices == y).to(out.dtype)  # max(-1).indices: 1.6–6× faster than argmax here
    if out.shape[-1] == 1 and bool(((y == 1) | (y == -1)).all()):
        return (torch.sign(out.squeeze(-1)) == y.squeeze(-1)).to(out.dtype)
    return None

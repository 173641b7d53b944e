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


def square(out, y):
    """Cohen et al.'s square loss: ½‖f(x) − y‖² summed over outputs (one-hot y for classes)."""
    M, B, C = out.shape
    y = _targets(y, M)
    target = F.one_hot(y, C).to(out.dtype) if not y.is_floating_point() else y
    return 0.5 * (out - target).pow(2).sum(-1)


def hinge(out, y):
    return torch.relu(1 - out.squeeze(-1) * _targets(y, out.shape[0]).squeeze(-1))


def logistic(out, y):
    return F.softplus(-out.squeeze(-1) * _targets(y, out.shape[0]).squeeze(-1))


LOSSES = {"ce": cross_entropy, "stablemax_ce": stablemax_cross_entropy, "mse": square, "hinge": hinge,
          "logistic": logistic}


def accuracy(out, y):
    """Per-example correctness [M, B] (float): argmax for classes, sign for ±1 targets; None for regression."""
    M = out.shape[0]
    y = _targets(y, M)
    if not y.is_floating_point():
        return (out.argmax(-1) == y).to(out.dtype)
    if out.shape[-1] == 1 and bool(((y == 1) | (y == -1)).all()):
        return (torch.sign(out.squeeze(-1)) == y.squeeze(-1)).to(out.dtype)
    return None

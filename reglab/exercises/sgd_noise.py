"""SGD-noise exercises: set the temperature that makes SGD find the support, match it with GD's explicit weight
decay, and compute the irrelevant-input norm the claims are made of."""
from __future__ import annotations

import functools

import pandas as pd
import torch

from ..claims import at_most
from ..config import validate
from ..engine import train
from ..experiments.sgd_noise import config, data_for, irrelevant_norm, relevant_norm, train_support
from . import Feedback, exercise

# 02.1 and 02.2: the support experiment, shortened (one run about 1.7 s on one CPU thread)
STEPS, N_TRAIN = 1500, 4000
SHRINK_VS_GD = at_most(0.6)  # SGD (B = 1) irrelevant norm over full-batch GD's at the same η
HOT_LOSS = 0.5  # SGD's mean training loss over the last third of the run above which the hint says "too hot"
REFERENCE_STEP_SIZE = 0.3  # 02.2: SGD (B = 1) and GD with weight decay, both at the theme's η
MATCHES_SGD = at_most(1.0)  # GD's irrelevant norm with weight decay over SGD's (B = 1, no decay)
FITS = at_most(0.1)  # GD's final training loss (½ MSE; it starts near 2.5)

# 02.3: the metric on a fresh ensemble (d ≠ width, so that confusing inputs with hidden units shows)
CODE_D, CODE_K, CODE_WIDTH, CODE_SEEDS, CODE_STEPS = 12, 4, 15, 3, 200
SAME_VALUES = at_most(1e-4)  # max relative difference from reglab's irrelevant_norm



def support_finals(step_size: float, batch_size: int | None, weight_decay: float = 0.0) -> dict:
    """One shortened support run (STEPS steps on N_TRAIN rows, the theme's network and clipping): the irrelevant
    and relevant first-layer norms at the start and end, the final training loss, its mean over the last third of
    the evaluations, and the divergence step (None if it did not diverge)."""
    validate(config(step_size, batch_size, weight_decay, steps=STEPS, n_train=N_TRAIN), n_train=N_TRAIN)
    return _support_finals(float(step_size), batch_size, float(weight_decay))


@functools.lru_cache(maxsize=32)
def _support_finals(step_size: float, batch_size: int | None, weight_decay: float) -> dict:
    cfg = config(step_size, batch_size, weight_decay, steps=STEPS, n_train=N_TRAIN)
    frame = train_support([cfg], progress=False).sort_values("step")
    last = frame.groupby("metric").value.last()
    first = frame.groupby("metric").value.first()
    loss = frame[frame.metric == "train_loss"].value
    at = frame.diverged_at.iloc[0]
    return {"irrelevant": float(last.irrelevant_norm), "relevant": float(last.relevant_norm),
            "irrelevant_0": float(first.irrelevant_norm), "relevant_0": float(first.relevant_norm),
            "loss": float(last.train_loss), "late_loss": float(loss.iloc[-(len(loss) // 3):].mean()),
            "diverged_at": None if pd.isna(at) else int(at)}


# ---------------------------------------------------------------------------------------------
# 02.1 · the temperature


@exercise("02.1", hint="The implicit regularization grows with the temperature η/B, but at B = 1 a small η lets the "
                       "loss settle at the label-noise floor, where the gradient noise vanishes; too large an η "
                       "kicks every weight. Try η between 0.1 and 2.")
def hot_enough_step_size(step_size: float) -> Feedback:
    """Pass when SGD with B = 1 at this η ends (STEPS steps) with its irrelevant first-layer norm SHRINK_VS_GD
    times that of full-batch GD at the same η."""
    sgd, gd = support_finals(step_size, 1), support_finals(step_size, None)
    for name, r in (("SGD with B = 1", sgd), ("Full-batch GD", gd)):
        if r["diverged_at"] is not None:
            return Feedback(False, f"At η = {step_size:g}, {name} diverged at step {r['diverged_at']}.",
                            f"Your η diverged at step {r['diverged_at']}: too large.")
    ratio = sgd["irrelevant"] / gd["irrelevant"]
    said = (f"At η = {step_size:g} after {STEPS} steps, the irrelevant first-layer norm is {sgd['irrelevant']:.3f} with "
            f"SGD (B = 1) and {gd['irrelevant']:.3f} with full-batch GD (it started at {gd['irrelevant_0']:.3f}): "
            f"ratio {ratio:.3f} (needed {SHRINK_VS_GD}). SGD's mean training loss over the last third of the run: "
            f"{sgd['late_loss']:.3g}.")
    if SHRINK_VS_GD(ratio):
        return Feedback(True, said)
    if sgd["late_loss"] >= HOT_LOSS or sgd["irrelevant"] > sgd["irrelevant_0"]:
        return Feedback(False, said, "Too hot: SGD's loss stays high and the noise kicks the irrelevant weights as "
                                     "much as it shrinks them. Lower η.")
    return Feedback(False, said, "Too cold: the loss settles near the label-noise floor and the gradient noise "
                                 "that shrinks the irrelevant weights is small. Raise η.")


# ---------------------------------------------------------------------------------------------
# 02.2 · explicit weight decay for GD


@exercise("02.2", hint="Weight decay shrinks every weight by a factor (1 − ηλ) per step: too small a λ leaves GD's "
                       "irrelevant weights where they started, too large a λ erases the relevant ones as well. "
                       "Look between 1e-4 and 1.")
def decay_like_sgd(weight_decay: float) -> Feedback:
    """Pass when full-batch GD with this λ (η = REFERENCE_STEP_SIZE, STEPS steps) ends with its irrelevant
    first-layer norm MATCHES_SGD times that of SGD with B = 1 and no decay, and its training loss FITS."""
    eta = REFERENCE_STEP_SIZE
    gd = support_finals(eta, None, weight_decay)
    sgd = support_finals(eta, 1, 0.0)
    if gd["diverged_at"] is not None:
        return Feedback(False, f"With λ = {weight_decay:g}, full-batch GD diverged at step {gd['diverged_at']}.",
                        f"Your λ diverged GD at step {gd['diverged_at']}: too large.")
    ratio = gd["irrelevant"] / sgd["irrelevant"]
    said = (f"At η = {eta:g} after {STEPS} steps: GD with λ = {weight_decay:g} ends with irrelevant norm "
            f"{gd['irrelevant']:.3f} and relevant norm {gd['relevant']:.3f}, training loss {gd['loss']:.3g} (needed "
            f"{FITS}); SGD with B = 1 and no decay: irrelevant {sgd['irrelevant']:.3f}, relevant {sgd['relevant']:.3f}. "
            f"GD over SGD irrelevant norm: {ratio:.3f} (needed {MATCHES_SGD}).")
    if not FITS(gd["loss"]):
        return Feedback(False, said, "λ is too large: it shrank the relevant weights too (they started at "
                                     f"{gd['relevant_0']:.3f}) and the network no longer fits. Lower λ.")
    if not MATCHES_SGD(ratio):
        return Feedback(False, said, "λ is too small: GD's irrelevant weights stay near where they started "
                                     f"({gd['irrelevant_0']:.3f}). Raise λ, by factors of 10.")
    return Feedback(True, said)


# ---------------------------------------------------------------------------------------------
# 02.3 · the metric


def code_weights() -> torch.Tensor:
    """First-layer weights of a fresh ensemble (CODE_SEEDS seeds of SGD, B = 4, η = 0.3, CODE_STEPS steps, d =
    CODE_D inputs of which CODE_K relevant, width CODE_WIDTH): [members, d, width]."""
    cfgs = [validate(config(0.3, 4, d=CODE_D, k=CODE_K, width=CODE_WIDTH, n_train=400, steps=CODE_STEPS, seed=s),
                     n_train=400) for s in range(CODE_SEEDS)]
    run = train(cfgs, data=data_for(cfgs[0]), progress=False)
    return run.model.weight(run.params, 0).detach()


def _mistake(answer: torch.Tensor, w0: torch.Tensor, k: int) -> str:
    """A hint naming the mistake whose values the answer reproduces ("" when none does)."""
    rows = w0[:, k:, :]
    known = [(relevant_norm(w0, k), "That is the norm of the relevant inputs 0 … k−1; the irrelevant ones are k … d−1."),
             (rows.norm(dim=-1).sum(1), "That is the sum of the per-input norms; the claim uses the Frobenius norm "
                                        "of all irrelevant rows together (the square root of the sum of squares)."),
             (irrelevant_norm(w0, k) ** 2, "That is the squared norm: take the square root."),
             (w0[:, :, k:].flatten(1).norm(dim=1), "That slices the hidden units (axis 2); the inputs are axis 1."),
             (w0[:, k + 1:, :].flatten(1).norm(dim=1), "Off by one: input k is the first irrelevant one (0-based)."),
             (w0[:, k - 1:, :].flatten(1).norm(dim=1), "Off by one: input k − 1 is still relevant (0-based).")]
    for values, hint in known:
        if torch.allclose(answer, values.to(answer.dtype), rtol=1e-4, atol=1e-6):
            return hint
    return ""


@exercise("02.3", hint="w0[:, k:, :] holds the irrelevant inputs' rows of every member; flatten all but the "
                       "member axis and take the norm along it: one value per member.", code=True)
def irrelevant_norm_check(irrelevant_norm_fn) -> Feedback:
    """Pass when `irrelevant_norm_fn(w0, k)` returns, for the first-layer weights w0 [M, d, width] of a fresh
    reglab ensemble and two splits k, one value per member within SAME_VALUES (relative) of reglab's
    `irrelevant_norm`."""
    w0 = code_weights()
    members = w0.shape[0]
    said = []
    for k in (CODE_K, CODE_K + 2):
        value = irrelevant_norm_fn(w0.clone(), k)
        try:
            answer = torch.as_tensor(value).detach().to(w0.dtype)
        except (TypeError, ValueError, RuntimeError):
            return Feedback(False, f"Your function returned a {type(value).__name__}, not a tensor of numbers.",
                            f"Return a tensor with one value per member, shape ({members},).")
        if tuple(answer.shape) != (members,):
            pooled = answer.numel() == 1 and torch.allclose(answer.reshape(()), w0[:, k:, :].norm(), rtol=1e-4)
            return Feedback(False, f"For w0 of shape {tuple(w0.shape)} and k = {k}, your function returned shape "
                                   f"{tuple(answer.shape)}; needed ({members},), one value per member.",
                            "That is one norm over all members together: keep the member axis (dim 0)." if pooled
                            else f"Return one value per member, shape ({members},): reduce over axes 1 and 2 only.")
        want = irrelevant_norm(w0, k)
        diff = float(((answer - want).abs() / want.abs()).max())
        said.append(f"k = {k}: yours {[round(float(v), 4) for v in answer]}, reglab's {[round(float(v), 4) for v in want]}")
        if not SAME_VALUES(diff):
            return Feedback(False, f"On the first-layer weights of a fresh ensemble ({members} members, d = {w0.shape[1]}, "
                                   f"width {w0.shape[2]}), {said[-1]}: max relative difference {diff:.3g} (needed "
                                   f"{SAME_VALUES}).", _mistake(answer, w0, k))
    return Feedback(True, f"On the first-layer weights of a fresh ensemble ({members} members, d = {w0.shape[1]}, width "
                          f"{w0.shape[2]}), your norms match reglab's irrelevant_norm ({SAME_VALUES} relative): "
                          + "; ".join(said) + ".")

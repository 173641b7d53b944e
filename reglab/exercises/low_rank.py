"""Weight decay and low rank exercises: write the nuclear-norm proximal step, pick λ for a given rank, tune λ."""
from __future__ import annotations

import numpy as np

from ..claims import Rule, at_most
from ..engine import train
from ..experiments.low_rank import D_IN, config, matrix_regression
from ..metrics import singular_values
from . import Feedback, exercise

STEPS = 400  # each check trains W = U Vᵀ (20 × 20, full batch, η = 0.1) this long: σᵢ(W) settle within ~1e-6
SOFT_LAMBDAS = (0.5, 1.5)  # the λ at which the student's soft-thresholding is compared with training
MATCHES_TRAINING = at_most(1e-3)  # ‖W_yours − W_trained‖_F / ‖W_trained‖_F, the larger of the two λ
ALIVE = 1e-3  # a singular value of the trained W counts toward its rank when it exceeds this
TARGET_RANK = 3
RANK_IS_TARGET = Rule(f"= {TARGET_RANK}", lambda k: k == TARGET_RANK)  # singular values of W above ALIVE
LAMBDA_GRID = tuple(round(0.025 * i, 3) for i in range(21))  # 0, 0.025, …, 0.5: where the best λ is searched
NEAR_BEST = at_most(0.01)  # test loss at the answer's λ over the lowest test loss on LAMBDA_GRID, minus 1


def _trained_w(weight_decays, rank=D_IN):
    """Train W = U Vᵀ (or a plain W, rank None) at each λ as one ensemble on the theme's matrix regression:
    (Run, Ŵ as float64 numpy)."""
    data = matrix_regression()
    run = train([config(lam, rank=rank, steps=STEPS).replace(eval_every=STEPS) for lam in weight_decays], data=data)
    return run, data.info["w_ls"]


def _diverged(run, weight_decays) -> str:
    bad = [(lam, run.diverged_step(m)) for m, lam in enumerate(weight_decays) if run.diverged_step(m) is not None]
    return "; ".join(f"at λ = {lam:g} the run diverged at step {at}" for lam, at in bad)


def _svd_map(w_hat: np.ndarray, f) -> np.ndarray:
    u, s, vt = np.linalg.svd(w_hat)
    return (u * f(s)) @ vt


@exercise("03.1", hint="Take the SVD Ŵ = U diag(σ) Vᵀ (np.linalg.svd), replace every σᵢ by max(σᵢ − λ, 0) and "
                       "multiply back: U diag((σ − λ)₊) Vᵀ, a 20 × 20 matrix.", code=True)
def soft_thresholding(soft_threshold) -> Feedback:
    """Pass when `soft_threshold(w_hat, lam)` returns, for the theme's least-squares Ŵ and each λ in SOFT_LAMBDAS,
    the W that gradient descent with weight decay λ on U Vᵀ converges to: relative Frobenius distance MATCHES_TRAINING."""
    run, w_hat = _trained_w(SOFT_LAMBDAS)
    if note := _diverged(run, SOFT_LAMBDAS):
        return Feedback(False, f"The reference run failed: {note}.")
    trained = run.model.weight(run.params, 0).detach().double().cpu().numpy()
    errors = []
    for m, lam in enumerate(SOFT_LAMBDAS):
        out = soft_threshold(w_hat.copy(), lam)
        try:
            yours = np.asarray(out, dtype=float)
        except (TypeError, ValueError):
            return Feedback(False, f"soft_threshold(w_hat, {lam:g}) returned a {type(out).__name__}, not a matrix.")
        if yours.shape != w_hat.shape:
            hint = ("That is a vector of singular values: return the matrix U diag((σ − λ)₊) Vᵀ." if yours.shape ==
                    (min(w_hat.shape),) else "")
            return Feedback(False, f"soft_threshold(w_hat, {lam:g}) returned shape {yours.shape}; Ŵ is "
                                   f"{w_hat.shape[0]} × {w_hat.shape[1]} and so is W.", hint)
        if not np.isfinite(yours).all():
            return Feedback(False, f"soft_threshold(w_hat, {lam:g}) returned a matrix with NaN or infinite entries.")
        errors.append(float(np.linalg.norm(yours - trained[m]) / np.linalg.norm(trained[m])))
    worst = max(errors)
    said = ("Relative distance ‖W_yours − W_trained‖_F / ‖W_trained‖_F to W = U Vᵀ trained with weight decay: "
            + ", ".join(f"{e:.2g} at λ = {lam:g}" for e, lam in zip(errors, SOFT_LAMBDAS))
            + f" (needed {MATCHES_TRAINING}).")
    if MATCHES_TRAINING(worst):
        return Feedback(True, said)
    lam = SOFT_LAMBDAS[int(np.argmax(errors))]
    yours = np.asarray(soft_threshold(w_hat.copy(), lam), dtype=float)
    mistakes = {  # what a common mistake returns, and what to say about it
        "Ŵ / (1 + λ) is weight decay on a plain W: it shrinks every σᵢ by one factor and zeroes none. "
        "The factorization turns the penalty into λ‖W‖_*: subtract λ instead.": w_hat / (1 + lam),
        "That is hard thresholding: the σᵢ below λ vanish, but the survivors must also drop by λ.":
            _svd_map(w_hat, lambda s: np.where(s > lam, s, 0.0)),
        "Clip at zero: a σᵢ below λ becomes 0, not σᵢ − λ < 0.": _svd_map(w_hat, lambda s: s - lam),
        "You returned Ŵ unchanged: λ must lower the singular values.": w_hat,
    }
    hint = next((text for text, m in mistakes.items()
                 if np.linalg.norm(yours - m) <= 1e-6 * max(np.linalg.norm(m), 1.0)), "")
    return Feedback(False, said, hint)


@exercise("03.2", hint="Soft-thresholding keeps exactly the σᵢ(Ŵ) above λ. The chart of section 1 shows Ŵ's "
                       "singular values (the λ = 0 crosses): put λ between the 4th and the 3rd.")
def rank_three_decay(weight_decay: float) -> Feedback:
    """Pass when W = U Vᵀ trained STEPS steps with this λ ends with exactly TARGET_RANK singular values above
    ALIVE."""
    run, w_hat = _trained_w([weight_decay])
    if run.diverged_step(0) is not None:
        return Feedback(False, f"At λ = {weight_decay:g} the run diverged at step {run.diverged_step(0)}: "
                               "ηλ is too large for gradient descent to be stable.",
                        "The singular values of Ŵ are between 0 and about 5: λ needs to be no larger than that.")
    s = singular_values(run.model.weight(run.params, 0))[0].double().cpu().numpy()
    k = int((s > ALIVE).sum())
    shown = ", ".join(f"{v:.3g}" for v in s[:max(k, TARGET_RANK) + 1])
    said = (f"At λ = {weight_decay:g}, W = U Vᵀ kept {k} singular values above {ALIVE:g} after {STEPS} steps "
            f"(needed {RANK_IS_TARGET}); its largest: {shown}.")
    if RANK_IS_TARGET(k):
        return Feedback(True, said)
    sigma = np.linalg.svd(w_hat, compute_uv=False)
    hint = (f"Too many survive: every σᵢ(Ŵ) above λ stays. σ₃(Ŵ) = {sigma[2]:.3g}, σ₄(Ŵ) = {sigma[3]:.3g}: "
            "raise λ." if k > TARGET_RANK else f"Too few survive: σ₃(Ŵ) = {sigma[2]:.3g} must stay above λ: lower λ.")
    return Feedback(False, said, hint)


@exercise("03.3", hint="λ = 0 keeps every noise direction of Ŵ (σᵢ ≈ 0.3 and below); a λ above them also takes λ "
                       "off each of the five signal directions. The best λ lies in between: train a few λ at once and "
                       "compare their summary.test_loss.")
def best_test_decay(weight_decay: float) -> Feedback:
    """Pass when W = U Vᵀ at this λ reaches a test loss within NEAR_BEST of the lowest over LAMBDA_GRID (each
    trained STEPS steps in one ensemble)."""
    lams = [*LAMBDA_GRID, weight_decay]
    run, _ = _trained_w(lams)
    if run.diverged_step(len(lams) - 1) is not None:
        return Feedback(False, f"At λ = {weight_decay:g} the run diverged at step {run.diverged_step(len(lams) - 1)}.",
                        "λ this large makes gradient descent unstable; the best λ is below 1.")
    test = run.summary.test_loss.to_numpy(float)
    best = int(np.nanargmin(test[:-1]))
    excess = float(test[-1] / test[best] - 1)
    plain, _ = _trained_w([weight_decay], rank=None)
    said = (f"At λ = {weight_decay:g} the test loss is {test[-1]:.4g}; the lowest over λ = 0, 0.025, …, "
            f"{LAMBDA_GRID[-1]:g} is {test[best]:.4g}: yours / lowest − 1 = {excess:.3g} (needed {NEAR_BEST}). "
            f"λ = 0 gives {test[0]:.4g}; the same λ on a plain W gives {plain.summary.test_loss.iloc[0]:.4g}.")
    if NEAR_BEST(excess):
        return Feedback(True, said)
    side = ("too small: the noise directions of Ŵ still pass into W" if weight_decay < LAMBDA_GRID[best]
            else "too large: each of the five signal directions loses λ as well")
    return Feedback(False, said, f"Your λ is {side}.")

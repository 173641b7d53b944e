"""Double-descent exercises: find the ridgeless peak, choose a ridge λ that removes it, write the ridge read-out."""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from ..claims import at_least, at_most
from ..config import Interval, check
from ..experiments import double_descent as dd
from . import Feedback, exercise

N_TRAIN = 120  # the exercises' n (the notebook's default is 200): the threshold sits at N = 120
WIDTH_MAX = 4 * N_TRAIN  # the curves run from N = 10 to 4n
DRAWS = 5  # feature draws averaged: the checks read the expected test error, not one draw's
IN_THE_PEAK = at_least(30.0)  # mean ridgeless test error at the chosen N / its lowest over the widths
NEVER_RISES = at_most(dd.MAX_RISE)  # fixed-λ ridge: largest ratio of its mean test error to the previous width's
NEAR_TUNED = at_most(1.25)  # fixed-λ ridge / validation-tuned ridge mean test error, at the worst width
READOUT_AGREES = at_most(1e-4)  # ‖yours − reglab's‖ / ‖reglab's‖ of the test predictions (float32 passes)
READOUT_CASES = ((N_TRAIN // 2, 1e-2), (N_TRAIN, 1e-3), (2 * N_TRAIN, 1e-1))  # (N, λ): under, at, over N = n


def _mean_curves(weight_decay: float = 0.0, extra: tuple = ()) -> tuple:
    """Mean test and training MSE over DRAWS feature draws (by method and width) and the median λ the
    validation chose (by width), on the theme's widths for n = N_TRAIN (up to WIDTH_MAX or the widest of
    `extra`, which are added)."""
    top = max((WIDTH_MAX, *extra))
    cfg = dd.config(n_train=N_TRAIN, width=top, weight_decay=weight_decay)
    frame = dd.curves(cfg, list(range(DRAWS)), grid=sorted(set(dd.widths(N_TRAIN, top)) | set(extra)))
    mean = frame[frame.quantity.isin(["test", "train"])].groupby(["quantity", "method", "width"])["value"].mean()
    chosen = frame[frame.quantity == "lambda"].groupby("width")["value"].median()
    return mean["test"], mean["train"], chosen


def _number(name: str, value, interval: Interval):
    """A numeric answer (numpy numbers too) inside `interval`; a ConfigError otherwise."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = int(value) if interval.kind is int and float(value).is_integer() else float(value)
    check(name, value, interval, "this exercise")
    return value


@exercise("06.1", hint="The ridgeless read-out fits the training labels exactly as soon as it can. Where it just "
                       "barely can, the feature matrix is square and nearly singular, and fitting the label noise "
                       "takes huge coefficients.")
def peak_width(width: int) -> Feedback:
    """Pass when, with n = N_TRAIN training examples, the ridgeless read-out's test MSE at `width` random
    features (mean over DRAWS draws) is IN_THE_PEAK: at least 30× its lowest over the widths 10 … WIDTH_MAX."""
    width = _number("width", width, Interval(int, dd.MIN_WIDTH, 10 * N_TRAIN))
    test, train, _ = _mean_curves(extra=(width,))
    test, train = test["ridgeless"], train["ridgeless"]
    ratio, low = test[width] / test.min(), test.idxmin()
    said = (f"With n = {N_TRAIN}, the ridgeless test MSE at N = {width} is {test[width]:.3g} (mean over {DRAWS} "
            f"feature draws), {ratio:.3g}× its lowest, {test.min():.3g} at N = {low} (needed {IN_THE_PEAK}); its "
            f"training MSE there is {train[width]:.2g}. The highest test MSE is {test.max():.3g}, at N = "
            f"{test.idxmax()}.")
    if IN_THE_PEAK(ratio):
        return Feedback(True, said)
    if train[width] > 1e-9:
        return Feedback(False, said, f"At N = {width} the read-out cannot fit all {N_TRAIN} training labels yet "
                                     f"(training MSE > 0): add features, up to where it just can.")
    return Feedback(False, said, f"At N = {width} the read-out interpolates with features to spare, and the "
                                 f"smallest-norm interpolant is tame: take fewer features, down to where it just "
                                 f"can interpolate.")


@exercise("06.2", hint="A λ too small leaves the peak at N = n; a λ too large shrinks every read-out toward 0 and "
                       "costs accuracy at every width. The λ the validation picks per width (the notebook's λ chart) "
                       "shows the range to try.")
def ridge_without_peak(weight_decay: float) -> Feedback:
    """Pass when, with n = N_TRAIN, the ridge read-out at this one fixed λ has a mean test MSE (over DRAWS
    draws) that NEVER_RISES more than 5 % from one width to the next and stays NEAR_TUNED to the
    validation-tuned ridge's (λ chosen per width) at every width."""
    weight_decay = _number("weight decay λ", weight_decay, Interval(float, 0, math.inf, closed="neither"))
    test, _, chosen = _mean_curves(weight_decay)
    ridge, tuned = test["ridge λ"], test["tuned ridge"]
    rises = (ridge / ridge.shift(1)).iloc[1:]
    cost = ridge / tuned
    said = (f"With n = {N_TRAIN} and λ = {weight_decay:g}, the ridge's mean test MSE over {DRAWS} draws runs from "
            f"{ridge.iloc[0]:.3g} at N = {ridge.index[0]} through {ridge[N_TRAIN]:.3g} at N = n to "
            f"{ridge.iloc[-1]:.3g} at N = {ridge.index[-1]}. Its largest rise from one width to the next is "
            f"×{rises.max():.3f} (at N = {rises.idxmax()}; needed {NEVER_RISES}); against the tuned ridge it is "
            f"at worst {cost.max():.3g}× (at N = {cost.idxmax()}; needed {NEAR_TUNED}).")
    if not NEVER_RISES(rises.max()):
        return Feedback(False, said, f"The peak is still there (the error rises ×{rises.max():.2f} from one "
                                     f"width to the next at N = {rises.idxmax()}, on its way up to N = n): this λ is "
                                     f"too small.")
    if not NEAR_TUNED(cost.max()):
        at = cost.idxmax()
        side, other = ("smaller", "larger") if weight_decay < chosen[at] else ("larger", "smaller")
        return Feedback(False, said, f"At N = {at}, where your ridge loses most to the tuned one, your λ is {side} "
                                     f"than the one the validation picks there: try a {other} λ.")
    return Feedback(True, said)


def _reference(x, x_test, y, w, N: int, lam: float) -> tuple:
    """The theme's closed-form test predictions at width N: (ridge λ, ridge λ/n, ridgeless), each [m]."""
    n = len(y)
    features, test_features = torch.relu(x @ w[:, :, :N]), torch.relu(x_test @ w[:, :, :N])
    _, U, s, K = next(dd.spectra(features, test_features, [N]))
    filters = torch.cat([dd.ridge_filter(s, [lam, lam / n], n), dd.ridgeless_filter(s, n, N).unsqueeze(1)], 1)
    _, test_pred, _ = dd.solve(U, s, K, y, filters, n)
    return tuple(test_pred[0])


@exercise("06.3", hint="Set the gradient of ½·mean((Φa − y)²) + ½λ‖a‖² (no intercept) to 0: a linear system for a, "
                       "which np.linalg.solve solves. Mind the mean's 1/n.", code=True)
def ridge_readout(readout_fn) -> Feedback:
    """Pass when `readout_fn(Phi, y, lam)` (numpy float64 [n, N], [n], a float) returns coefficients a [N]
    whose test predictions agree with the theme's closed-form ridge (READOUT_AGREES) on a fresh feature
    draw, for each (N, λ) of READOUT_CASES."""
    cfg = dd.config(n_train=N_TRAIN, width=max(N for N, _ in READOUT_CASES))
    p, w = dd.problem(cfg, [DRAWS], cfg.width)  # a draw the other checks do not average
    y = p["y"]
    said = []
    for N, lam in READOUT_CASES:
        phi, phi_test = (torch.relu(x @ w[0, :, :N]) / math.sqrt(N) for x in (p["x"], p["x_test"]))
        a = readout_fn(phi.numpy().copy(), y.numpy().copy(), float(lam))
        if isinstance(a, torch.Tensor):
            a = a.detach().cpu().numpy()
        try:
            a = np.asarray(a, dtype=np.float64)
        except (TypeError, ValueError):
            return Feedback(False, f"At N = {N} it returned {type(a).__name__}, not an array of {N} coefficients.")
        if a.size != N:
            return Feedback(False, f"At N = {N} it returned an array of shape {a.shape}: the read-out has one "
                                   f"coefficient per feature, {N} of them.")
        pred = phi_test @ torch.from_numpy(a.reshape(N))
        ridge, forgot_n, ridgeless = _reference(p["x"], p["x_test"], y, w, N, lam)
        off = lambda ref: float((pred - ref).norm() / ref.norm())
        mse = lambda pred: float((pred - p["y_test"]).pow(2).mean())
        said.append(f"N = {N}, λ = {lam:g}: test MSE {mse(pred):.4g} (reglab's {mse(ridge):.4g}), relative difference "
                    f"{off(ridge):.2g}")
        if not READOUT_AGREES(off(ridge)):
            text = (f"On a fresh feature draw with n = {N_TRAIN}: " + "; ".join(said)
                    + f". The difference must be {READOUT_AGREES}.")
            if READOUT_AGREES(off(forgot_n)):
                return Feedback(False, text, "Yours is the ridge with λ in place of nλ: the loss is ½·mean squared "
                                             "error, so the normal equations are (ΦᵀΦ + nλI) a = Φᵀy.")
            if READOUT_AGREES(off(ridgeless)):
                return Feedback(False, text, "Yours is the ridgeless (minimum-norm) read-out: λ is missing.")
            if not np.isfinite(a).all():
                return Feedback(False, text, "Your coefficients are not finite.")
            return Feedback(False, text)
    return Feedback(True, f"Your ridge read-out matches reglab's closed form on a fresh feature draw with n = "
                          f"{N_TRAIN} (needed a relative difference {READOUT_AGREES}): " + "; ".join(said) + ".")

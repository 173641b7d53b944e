"""Neural-collapse exercises: NC1 from the class means; weight decay speeds collapse up; collapse grows with depth."""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from ..claims import at_least, at_most, within
from ..config import Interval, check
from ..engine import train
from ..experiments.neural_collapse import config, dataset
from ..metrics import collapse
from . import Feedback, exercise

SMALL = dict(width=64, depth=2, n_train=500, steps=300)  # the theme's network shrunk: about a second a run
NC1_AGREES = within(0.99, 1.01)  # the student's NC1 / reglab's collapse.nc1, on the same features
FITS = at_least(1.0)  # training accuracy at the end: collapse is a statement about the terminal phase
WD_COLLAPSES_FASTER = at_most(0.25)  # NC1 at the end with the chosen λ / NC1 at the end with λ = 0
DEPTH_COLLAPSE = at_most(0.1)  # NC1 of the last hidden layer / NC1 of the first, at the end
MAX_DEPTH = 8  # deeper nets would make the check slow


def _train(*configs):
    """Train the configs as one ensemble, evaluating only at the start and the end: (Run, hidden features
    of the whole training set after training, one [M, n, d] tensor per hidden layer)."""
    run = train([c.replace(eval_every=c.steps) for c in configs], data=dataset(configs[0]), progress=False)
    with torch.no_grad():
        return run, [f.detach().cpu() for f in run.model.features(run.params, run.data.x_train)]


def _integer(name: str, value, low: int, high: int) -> int:
    """An integer answer in [low, high] (numpy integers too); a ConfigError otherwise."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)
    check(name, value, Interval(int, low, high), "this exercise")
    return value


def _one_number(value):
    """(the float, None) when `value` is one number (a float, a numpy or torch scalar, a 1-element array),
    else (None, what was wrong)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None, f"it returned {type(value).__name__}, not a number"
    if arr.size != 1:
        return None, f"it returned an array of shape {arr.shape}, not one number"
    return float(arr.reshape(())), None


@exercise("05.1", hint="NC1 = tr(Σ_W Σ_B⁺)/C with Σ_W = (1/n) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ, "
                       "Σ_B = (1/C) Σ_c (μ_c − μ_G)(μ_c − μ_G)ᵀ, μ_G the mean of all n features, and Σ_B⁺ the "
                       "pseudo-inverse (np.linalg.pinv): Σ_B has rank at most C, far below d.", code=True)
def nc1_from_class_means(nc1_fn) -> Feedback:
    """Pass when `nc1_fn(features, labels)` (numpy float64 [n, d] and integer [n]) gives reglab's
    `collapse.nc1` within NC1_AGREES on the same features: those of the first and of the last hidden layer
    of a freshly trained SMALL network."""
    run, feats = _train(config(**SMALL))
    labels, C = run.data.y_train.cpu(), run.data.n_classes
    said = []
    for layer, h in ((1, feats[0][0]), (len(feats), feats[-1][0])):
        h = h.double()
        theirs = nc1_fn(h.numpy().copy(), labels.numpy().copy())
        value, wrong = _one_number(theirs)
        if wrong:
            return Feedback(False, f"On layer {layer}'s features ({h.shape[0]} × {h.shape[1]}) {wrong}.")
        ours = float(collapse.nc1(h, labels, C)[0])
        ratio = value / ours
        said.append(f"layer {layer}: yours {value:.5g}, reglab's {ours:.5g} (ratio {ratio:.4f})")
        if not NC1_AGREES(ratio):
            text = (f"On the features of a fresh run ({h.shape[0]} digits, {C} classes, d = {h.shape[1]}): "
                    + "; ".join(said) + f". The ratio must be {NC1_AGREES}.")
            if not math.isfinite(value) or abs(value) > 1e3 * abs(ours):
                return Feedback(False, text, "Σ_B has rank at most C < d, so it has no inverse: a plain inverse "
                                             "(np.linalg.inv) returns noise. Use the pseudo-inverse np.linalg.pinv.")
            if abs(ratio / C - 1) < 0.02:
                return Feedback(False, text, f"Yours is C = {C} times reglab's: NC1 divides the trace by C.")
            if abs(ratio - (C - 1) / C) < 0.01:
                return Feedback(False, text, "Yours is (C − 1)/C of reglab's: Σ_B averages over the C classes "
                                             "(1/C, not 1/(C − 1)) and Σ_W over the n examples (1/n).")
            if abs(ratio * C - 1) < 0.02:
                return Feedback(False, text, f"Yours is 1/C = 1/{C} of reglab's: count the factors of C. Σ_B "
                                             "carries 1/C, and NC1 divides tr(Σ_W Σ_B⁺) by C once.")
            return Feedback(False, text)
    return Feedback(True, f"Your NC1 matches reglab's on the features of a fresh run ({h.shape[0]} digits, {C} "
                          f"classes, d = {h.shape[1]}; ratio {NC1_AGREES}): " + "; ".join(said) + ".")


@exercise("05.2", hint="Weight decay pulls the weights toward 0, and BatchNorm makes the loss blind to their scale, "
                       "so a larger λ acts like a larger effective step size. The default λ = 5e-4 barely shows "
                       "in a short run: try λ tens of times larger, but not so large that the training set is no "
                       "longer fitted.")
def weight_decay_speeds_collapse(weight_decay: float) -> Feedback:
    """Pass when the SMALL network trained with this λ fits its training set and ends with an NC1 of the last
    hidden layer at most WD_COLLAPSES_FASTER of the same network's (same seed and batches) with λ = 0."""
    chosen = config(**SMALL, weight_decay=weight_decay)
    run, feats = _train(chosen.replace(weight_decay=0.0), chosen)
    at = run.diverged_step(1)
    if at is not None:
        return Feedback(False, f"At λ = {weight_decay:g} the run diverged at step {at}.",
                        "This λ is too large: the run diverged. Try a smaller one.")
    nc1 = collapse.nc1(feats[-1], run.data.y_train.cpu(), run.data.n_classes).tolist()
    acc = run.summary.train_acc.tolist()
    ratio = nc1[1] / nc1[0]
    said = (f"After {chosen.steps} steps, training accuracy {acc[1]:.3f} at λ = {weight_decay:g} ({acc[0]:.3f} at "
            f"λ = 0); NC1 of the last hidden layer {nc1[1]:.3g} vs {nc1[0]:.3g} at λ = 0: a ratio of {ratio:.3g} "
            f"(needed: training accuracy {FITS}, ratio {WD_COLLAPSES_FASTER}).")
    if not FITS(acc[1]):
        return Feedback(False, said, f"At λ = {weight_decay:g} the network no longer fits its training set "
                                     f"(accuracy {acc[1]:.3f}): this λ is too large.")
    if not WD_COLLAPSES_FASTER(ratio) and weight_decay < 0.05:
        return Feedback(False, said, "NC1 fell too little: this λ is too small for a 300-step run. Try a larger one.")
    if not WD_COLLAPSES_FASTER(ratio):
        return Feedback(False, said, "Past a point, more λ collapses less here (the effective step size grows too "
                                     "large): try a smaller λ, but more than the default 5e-4.")
    return Feedback(True, said)


@exercise("05.3", hint="Each hidden layer separates the classes a little more than the one before: NC1 falls by "
                       "a roughly constant factor per layer. Count how many factors you need to reach 1/10.")
def depth_for_collapse(depth: int) -> Feedback:
    """Pass when the SMALL network with `depth` hidden layers (at most MAX_DEPTH) ends with NC1 of its last
    hidden layer at most DEPTH_COLLAPSE of its first hidden layer's."""
    depth = _integer("depth", depth, 1, MAX_DEPTH)
    run, feats = _train(config(**{**SMALL, "depth": depth}))
    labels, C = run.data.y_train.cpu(), run.data.n_classes
    nc1 = [float(collapse.nc1(f, labels, C)[0]) for f in feats]
    ratio = nc1[-1] / nc1[0]
    said = (f"With {depth} hidden layer{'s' * (depth > 1)}, NC1 at the end, layer 1 → {depth}: "
            + " → ".join(f"{v:.3g}" for v in nc1) + f"; last / first = {ratio:.3g} (needed {DEPTH_COLLAPSE}).")
    if DEPTH_COLLAPSE(ratio):
        return Feedback(True, said)
    if depth == 1:
        return Feedback(False, said, "With one hidden layer the first layer is the last: nothing to compare. "
                                     "Add layers.")
    per_layer = ratio ** (1 / (depth - 1))
    if per_layer >= 1:
        return Feedback(False, said)
    return Feedback(False, said, f"Here NC1 falls about {1 / per_layer:.2g}× per layer: add layers until the "
                                 f"product of these factors reaches 10.")

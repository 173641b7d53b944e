"""Large-batch exercises: scale the step size with the batch, give the large batch its updates back, and write
Ghost Batch Normalization."""
from __future__ import annotations

import math

import torch

from ..claims import at_least, at_most, every_seed
from ..data import make_dataset
from ..engine import train
from ..experiments import large_batch as theme
from ..models import build_model
from . import Feedback, exercise

# every check: the theme's BatchNorm MLP (two hidden layers of WIDTH) on MNIST-1D, small batch B_S = SMALL_BATCH at
# η = STEP_SIZE for EPOCHS epochs (300 updates), SEEDS seeds, evaluated once at the end (a few seconds on one thread)
SMALL_BATCH, STEP_SIZE, EPOCHS, WIDTH, SEEDS = 40, 0.03, 3, 32, (0, 1)
SCALED_BATCH = 400  # 10.1: the large batch whose step size the student chooses (equal epochs: 30 updates)
LONG_BATCH = 1000  # 10.2: the large batch that trains longer, at η·√(LONG_BATCH/SMALL_BATCH)
GHOST_BATCH, GHOST_SIZES, GHOST_STEPS = 400, (40, 100), 20  # 10.3: a batch of 400 in ghost batches of 40 and 100

HALF_THE_GAP = at_least(theme.CLOSED)  # (acc at your η − acc at η_S) / (acc small − acc at η_S), seeds' mean accuracy
AS_GOOD_AS_SMALL = every_seed(at_least(0.0))  # per seed: test accuracy of the large batch − the small batch's (points)
GHOST_AGREES = at_most(1e-4)  # largest |your features − reglab's| over the batch, both ghost sizes


def _config(step_size: float, batch_size: int, steps: int, seed: int, ghost_batch=None):
    return theme.config(step_size, batch_size, width=WIDTH, steps=steps, seed=seed, device="cpu",
                        ghost_batch=ghost_batch).replace(eval_every=steps)


def _small(data):
    """The small batch, every seed: its run and its updates."""
    steps = theme.steps_for(EPOCHS, SMALL_BATCH, data.n_train)
    return train([_config(STEP_SIZE, SMALL_BATCH, steps, s) for s in SEEDS], data=data, progress=False), steps


def _pct(values) -> str:
    return ", ".join(f"{100 * v:.1f}" for v in values) + " %"


# ---------------------------------------------------------------------------------------------
# 10.1 · the step size of the large batch


@exercise("10.1", hint=f"At equal epochs the large batch takes B_L/B_S = {SCALED_BATCH // SMALL_BATCH}× fewer updates. "
                       "Hoffer et al. scale the step size by √(B_L/B_S), which keeps the variance of the weights' "
                       "random walk per example seen about the same.")
def large_batch_step_size(step_size: float) -> Feedback:
    """Pass when the large batch (SCALED_BATCH) trained at `step_size` for the small batch's EPOCHS closes at least
    HALF_THE_GAP between the large batch at η_S and the small batch (test accuracy, mean over SEEDS)."""
    data = make_dataset("mnist1d")
    small, _ = _small(data)
    steps = theme.steps_for(EPOCHS, SCALED_BATCH, data.n_train)
    large = train([_config(eta, SCALED_BATCH, steps, s) for eta in (STEP_SIZE, step_size) for s in SEEDS],
                  data=data, progress=False)
    k, acc = len(SEEDS), large.summary.test_acc.tolist()
    plain, yours, ref = acc[:k], acc[k:], small.summary.test_acc.tolist()
    mean = lambda xs: sum(xs) / len(xs)
    closed = theme._closed(mean(ref), mean(plain), mean(yours))
    ratio, sqrt_rule = step_size / STEP_SIZE, math.sqrt(SCALED_BATCH / SMALL_BATCH)
    diverged = [large.diverged_step(m) for m in range(k, 2 * k) if large.diverged_step(m) is not None]
    yours_text = (f"diverged at step {min(diverged)}" if diverged else f"tests at {_pct(yours)}")
    said = (f"Equal epochs ({EPOCHS}): the small batch (B = {SMALL_BATCH}, η = {STEP_SIZE:g}, "
            f"{theme.steps_for(EPOCHS, SMALL_BATCH, data.n_train)} updates) tests at {_pct(ref)}; the large batch "
            f"(B = {SCALED_BATCH}, {steps} updates) at {_pct(plain)} with η = {STEP_SIZE:g}, and with your "
            f"η = {step_size:g} ({ratio:.3g}× η_S; the √ rule gives {sqrt_rule:.3g}×) it {yours_text}."
            + ("" if diverged else f" Fraction of the gap closed: {'—' if closed is None else f'{closed:.2f}'} "
                                   f"(needed {HALF_THE_GAP})."))
    if diverged:
        return Feedback(False, said, f"η = {step_size:g} diverged at step {min(diverged)}: too large.")
    if HALF_THE_GAP(closed):
        return Feedback(True, said)
    if step_size <= STEP_SIZE:
        return Feedback(False, said, "η ≤ η_S keeps the large batch's few updates as short as the small batch's "
                                     "many: scale η up with the batch.")
    if ratio > sqrt_rule:
        return Feedback(False, said, f"η = {step_size:g} overshoots: the large batch tests no better. Try the √ rule, "
                                     f"η_S·√(B_L/B_S) = {STEP_SIZE * sqrt_rule:.3g}.")
    return Feedback(False, said)


# ---------------------------------------------------------------------------------------------
# 10.2 · as many updates as the small batch


@exercise("10.2", hint="Count updates, not epochs: E epochs at batch B are E·n/B updates (n = 4000). The small batch "
                       f"takes {EPOCHS}·4000/{SMALL_BATCH} of them; how many epochs does B = {LONG_BATCH} need for as "
                       "many?")
def large_batch_epochs(epochs: int) -> Feedback:
    """Pass when the large batch (LONG_BATCH, η·√(LONG_BATCH/SMALL_BATCH)) trained for `epochs` epochs, in at most
    as many updates as the small batch takes in EPOCHS, tests at least as well as the small batch on every seed
    (AS_GOOD_AS_SMALL)."""
    epochs = theme.THEME.params["epochs"].check("epochs", epochs, "exercise 10.2")
    data = make_dataset("mnist1d")
    n, small_steps = data.n_train, theme.steps_for(EPOCHS, SMALL_BATCH, data.n_train)
    steps = theme.steps_for(epochs, LONG_BATCH, n)
    if steps > small_steps:
        return Feedback(False, f"{epochs} epochs at B = {LONG_BATCH} are {steps} updates, more than the "
                               f"{small_steps} the small batch takes in {EPOCHS} epochs: this check trains the large "
                               "batch for at most as many updates as the small batch.",
                        "Hoffer et al.'s claim is that as many updates as the small batch are enough: no more.")
    small, _ = _small(data)
    eta = STEP_SIZE * math.sqrt(LONG_BATCH / SMALL_BATCH)
    large = train([_config(eta, LONG_BATCH, steps, s) for s in SEEDS], data=data, progress=False)
    ref, yours = small.summary.test_acc.tolist(), large.summary.test_acc.tolist()
    diff = [100 * (y - r) for y, r in zip(yours, ref)]
    said = (f"{epochs} epochs at B = {LONG_BATCH} (η = {eta:.3g}) are {steps} updates; the small batch takes "
            f"{small_steps} in {EPOCHS} epochs. Test accuracy: large batch {_pct(yours)}, small batch {_pct(ref)} "
            f"(difference {', '.join(f'{d:+.1f}' for d in diff)} points, needed {AS_GOOD_AS_SMALL}; train accuracy "
            f"{_pct(large.summary.train_acc.tolist())} against {_pct(small.summary.train_acc.tolist())}).")
    if AS_GOOD_AS_SMALL(diff):
        return Feedback(True, said)
    if epochs <= EPOCHS:
        return Feedback(False, said, f"At equal epochs the large batch takes {LONG_BATCH // SMALL_BATCH}× fewer updates "
                                     "and is still underfitting: train it for more epochs.")
    return Feedback(False, said)


# ---------------------------------------------------------------------------------------------
# 10.3 · Ghost Batch Normalization


def _normalized(chunks: torch.Tensor, unbiased: bool = False, eps: float = 1e-5) -> torch.Tensor:
    mean = chunks.mean(dim=-2, keepdim=True)
    return (chunks - mean) / torch.sqrt(chunks.var(dim=-2, unbiased=unbiased, keepdim=True) + eps)


@exercise("10.3", hint="Split the batch into consecutive blocks of `ghost` rows (h.reshape(-1, ghost, d)), normalize "
                       "each block by its own mean and variance over the rows (divided by the block size, not size − 1), "
                       "with ε = 1e-5 under the square root, and reshape back to [B, d].", code=True)
def ghost_batch_norm(ghost_norm) -> Feedback:
    """Pass when `ghost_norm(h, ghost)`, put in place of the first BatchNorm of a freshly trained ghost-BN network,
    gives reglab's hidden features for a batch of GHOST_BATCH in ghost batches of each size in GHOST_SIZES
    (GHOST_AGREES)."""
    data = make_dataset("mnist1d")
    eta = STEP_SIZE * math.sqrt(GHOST_BATCH / SMALL_BATCH)
    config = _config(eta, GHOST_BATCH, GHOST_STEPS, SEEDS[0], ghost_batch=GHOST_SIZES[0])
    run = train(config, data=data, progress=False)
    p = {k: v.detach() for k, v in run.params.items()}
    x = data.x_train[:GHOST_BATCH]
    h = x @ p["W0"][0] + p["b0"][0]  # the first layer's pre-activations, [B, width]
    layer = lambda z: torch.relu(p["gain0"][0] * z + p["shift0"][0])  # what follows BatchNorm in the network
    worst, hint = 0.0, ""
    for ghost in GHOST_SIZES:
        want = build_model(config.replace(ghost_batch=ghost), data).features(p, x)[0][0]
        got = ghost_norm(h.clone(), ghost)
        try:
            got = torch.as_tensor(got, dtype=h.dtype)
        except (TypeError, ValueError, RuntimeError):
            return Feedback(False, f"ghost_norm(h, {ghost}) returned {type(got).__name__}; it should return a tensor "
                                   f"shaped like h, {tuple(h.shape)}.")
        if got.shape != h.shape:
            return Feedback(False, f"ghost_norm(h, {ghost}) returned shape {tuple(got.shape)}; h is {tuple(h.shape)} "
                                   "and the result should be too.")
        err = float((layer(got) - want).abs().max())
        if not math.isfinite(err) or err > worst:
            worst = err if math.isfinite(err) else math.inf
        if not hint and not GHOST_AGREES(err):
            k, d = GHOST_BATCH // ghost, h.shape[1]
            variants = {
                "You normalized over the whole batch: each ghost batch of `ghost` rows needs its own mean and variance.":
                    _normalized(h.unsqueeze(0)).squeeze(0),
                "Your variance divides by ghost − 1 (torch.var's default): BatchNorm's divides by ghost "
                "(unbiased=False).": _normalized(h.reshape(k, ghost, d), unbiased=True).reshape(h.shape),
                "Your ghost batches interleave rows (row i goes with rows i + k, i + 2k, …): a ghost batch is "
                f"consecutive rows, h[0:{ghost}], h[{ghost}:{2 * ghost}], ….":
                    _normalized(h.reshape(ghost, k, d).transpose(0, 1)).transpose(0, 1).reshape(h.shape),
                "Add ε = 1e-5 to the variance under the square root, as PyTorch's BatchNorm does.":
                    _normalized(h.reshape(k, ghost, d), eps=0.0).reshape(h.shape),
            }
            hint = next((text for text, z in variants.items() if float((got - z).abs().max()) <= 1e-4), "")
    said = (f"In a network trained {GHOST_STEPS} steps at B = {GHOST_BATCH} with ghost BatchNorm, your ghost_norm in "
            f"place of the first BatchNorm gives hidden features that differ from reglab's by at most {worst:.2g} "
            f"(ghost batches of {' and '.join(str(g) for g in GHOST_SIZES)}; needed {GHOST_AGREES}).")
    return Feedback(GHOST_AGREES(worst), said, hint)

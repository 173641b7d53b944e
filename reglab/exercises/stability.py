"""Stability exercises: put GD at the edge of stability, estimate λ_max by power iteration, find where SGD's
stricter stability limit bites before GD's."""
from __future__ import annotations

import functools
import math
import threading

import torch

from ..claims import at_least, at_most, below, within
from ..config import validate
from ..curvature import Hessian, Sharpness, gauss_newton_trace, top_eigenvalues
from ..engine import train
from ..experiments.stability import (EDGE_HIGH, EDGE_LOW, SHARPNESS_TOL, TRACE_N_TRAIN, config, crossing_step,
                                     eos_ratio, trace_config)
from . import Feedback, exercise, one_number

# 01.1: a small edge-of-stability run (about 2 s on one CPU thread)
EDGE_N_TRAIN, EDGE_WIDTH, EDGE_STEPS, EDGE_EVERY = 200, 50, 400, 20
EDGE_BAND = within(EDGE_LOW, EDGE_HIGH)  # median λ_max·η/2 from the first crossing of 2/η on (the theme's band)
STARTS_BELOW_EDGE = below(1.0)  # λ_max·η/2 at initialization: GD must sharpen up to the edge, not start past it
HOVER_EVALS = at_least(5)  # evaluations (every EDGE_EVERY steps) from the first crossing on: long enough to hover

# 01.2: power iteration against reglab's Lanczos on one GD run at the edge
POWER_STEP_SIZE, POWER_STEPS = 0.2, 300
AGREEMENT = at_most(0.01)  # |your λ_max − Lanczos's| / Lanczos's
MAX_HVP = 2000  # products the student's function may ask for

# 01.3: SGD (B = 1) against full-batch GD at one step size on the 200-digit parity task
SGD_EPOCHS, GD_STEPS = 3, 500
GD_TRAINS = at_most(0.5)  # GD's final over initial training loss: it trains, it does not merely survive



# ---------------------------------------------------------------------------------------------
# 01.1 · choose η


def edge_run(step_size: float):
    """The 01.1 run: full-batch GD on the first EDGE_N_TRAIN digits, tanh MLP 64-50-50-10, λ_max every EDGE_EVERY
    steps. Returns (run, steps, sharpness) with the sharpness as a list per evaluation step."""
    cfg = validate(config(step_size, EDGE_STEPS, EDGE_N_TRAIN, EDGE_WIDTH, eval_every=EDGE_EVERY))
    run = train(cfg, probes=[Sharpness(every=EDGE_EVERY, tol=SHARPNESS_TOL)], progress=False)
    s = run.history[run.history.metric == "sharpness"].sort_values("step")
    return run, s.step.tolist(), s.value.tolist()


@exercise("01.1", hint="λ_max starts near 6.5 and sharpens by roughly a factor of 2 within 400 steps. Choose η so "
                       "that 2/η lies above where λ_max starts but within reach of where it would climb.")
def edge_step_size(step_size: float) -> Feedback:
    """Pass when full-batch GD at this η starts below the edge (λ_max·η/2 STARTS_BELOW_EDGE at step 0), reaches
    2/η with HOVER_EVALS evaluations left, and from then on has median λ_max·η/2 in EDGE_BAND."""
    run, steps, sharp = edge_run(step_size)
    edge = 2 / step_size
    at = run.diverged_step(0)
    if at is not None:
        return Feedback(False, f"At η = {step_size:g} (2/η = {edge:.3g}) GD diverged at step {at}.",
                        f"Your η diverged at step {at}: too large. λ_max at initialization is {sharp[0]:.3g}, so "
                        f"2/η must stay above it.")
    start = sharp[0] * step_size / 2
    if not STARTS_BELOW_EDGE(start):
        return Feedback(False, f"At η = {step_size:g}, λ_max at initialization is already {sharp[0]:.3g} ≥ 2/η = "
                               f"{edge:.3g} (λ_max·η/2 = {start:.2f}, needed {STARTS_BELOW_EDGE}).",
                        "GD started past the edge instead of sharpening up to it: η is too large. Choose an η "
                        f"with 2/η above {sharp[0]:.3g}.")
    k = crossing_step(steps, sharp, step_size)
    if k is None:
        return Feedback(False, f"At η = {step_size:g}, λ_max rose from {sharp[0]:.3g} to {max(sharp):.3g} in "
                               f"{EDGE_STEPS} steps but never reached 2/η = {edge:.3g}.",
                        "η is too small: 2/η lies above where λ_max climbs in this run. Raise η.")
    left = sum(s >= k for s in steps)
    ratio = eos_ratio(steps, sharp, step_size)
    said = (f"At η = {step_size:g}, λ_max rose from {sharp[0]:.3g} to 2/η = {edge:.3g} at step {k}; from there its "
            f"median is {ratio:.3f} × 2/η (needed {EDGE_BAND}) over {left} evaluations (needed {HOVER_EVALS}).")
    if not HOVER_EVALS(left):
        return Feedback(False, said, f"λ_max reached 2/η only at step {k}, too late to see it hover: raise η a little.")
    if not EDGE_BAND(ratio):
        return Feedback(False, said, "λ_max sits well above 2/η: this η is so close to 2/λ_max(0) that GD overshoots "
                                     "the edge. Lower η a little." if ratio > EDGE_HIGH else
                        "λ_max fell back below 2/η after the crossing: lower η.")
    return Feedback(True, said)


# ---------------------------------------------------------------------------------------------
# 01.2 · power iteration


class _TooManyProducts(RuntimeError):
    pass


@functools.lru_cache(maxsize=1)
def power_setup():
    """The 01.2 run and its Hessian: full-batch GD at η = POWER_STEP_SIZE for POWER_STEPS steps (the 01.1
    set-up, where λ_max ends at the edge). Returns (run, Hessian of its final training loss); trained once per
    process."""
    run = train(validate(config(POWER_STEP_SIZE, POWER_STEPS, EDGE_N_TRAIN, EDGE_WIDTH)), progress=False)
    return run, Hessian(run.loss, run.params)


@exercise("01.2", hint="Start from v, repeat v ← H v / ‖H v‖ (hvp gives H v) and return the Rayleigh quotient "
                       "vᵀ H v / vᵀ v. The top two eigenvalues here are close, so it needs about 100 products.", code=True)
def power_iteration_check(power_iteration) -> Feedback:
    """Pass when `power_iteration(hvp, v)` — hvp(v) = H v for the final training-loss Hessian of a fresh GD run
    at the edge, v a random start — returns λ_max within AGREEMENT (relative) of reglab's Lanczos value."""
    _, H = power_setup()
    n = H.numel
    calls = [0]

    def hvp(v):
        v = torch.as_tensor(v)
        if v.numel() != n:
            raise ValueError(f"hvp takes a vector of {n} entries (one per parameter); got shape {tuple(v.shape)}")
        calls[0] += 1
        if calls[0] > MAX_HVP:
            raise _TooManyProducts()
        return H.mv_flat(v.reshape(1, n).to(H.dtype).detach())[0].detach()

    start = torch.randn(n, generator=torch.Generator().manual_seed(1), dtype=H.dtype)
    try:
        value = power_iteration(hvp, start.clone())
    except _TooManyProducts:
        return Feedback(False, f"Your function asked for more than {MAX_HVP} Hessian-vector products.",
                        "Stop after a fixed number of iterations (about 100 is plenty here).")
    estimate = one_number(value)
    if estimate is None:
        what = f"a tensor of shape {tuple(value.shape)}" if hasattr(value, "shape") else f"a {type(value).__name__}"
        return Feedback(False, f"Your function returned {what}, not one number.",
                        "Return the eigenvalue estimate (a float), not the vector.")
    lanczos = top_eigenvalues(H, k=2, tol=1e-5, generator=torch.Generator().manual_seed(0))
    top, second = (float(x) for x in lanczos.eigenvalues[0])
    error = abs(estimate - top) / abs(top) if math.isfinite(estimate) else math.inf
    said = (f"Your power iteration: λ_max = {estimate:.5g} in {calls[0]} Hessian-vector products; reglab's Lanczos on "
            f"the same Hessian: {top:.5g} in {lanczos.iterations} (λ₂ = {second:.5g}; 2/η = {2 / POWER_STEP_SIZE:g}). "
            f"Relative difference {error:.4f} (needed {AGREEMENT}).")
    if AGREEMENT(error):
        return Feedback(True, said)
    if calls[0] == 0:
        return Feedback(False, said, "Your function never called hvp: the estimate must come from products H v.")
    if not math.isfinite(estimate):
        return Feedback(False, said, "Your estimate is not finite: normalize v at every step so that it cannot "
                                     "overflow.")
    if estimate > top:
        return Feedback(False, said, "Above λ_max: the Rayleigh quotient vᵀHv/vᵀv never exceeds it. Did you divide "
                                     "by vᵀv (or normalize v) before returning?")
    return Feedback(False, said, f"Below λ_max: power iteration converges like (λ₂/λ₁)^k and here λ₂/λ₁ = "
                                 f"{second / top:.3f}, so it needs more iterations than {calls[0]}.")


# ---------------------------------------------------------------------------------------------
# 01.3 · SGD's limit before GD's


def _stop_when_all_diverged(members: int):
    """(on_eval, stop event): the event is set once every member's training loss reads NaN (diverged)."""
    done, latest = threading.Event(), {}

    def on_eval(rows, step):
        latest.update({r["run"]: r["value"] for r in rows if r["metric"] == "train_loss"})
        if len(latest) == members and all(not math.isfinite(v) for v in latest.values()):
            done.set()

    return on_eval, done


@exercise("01.3", hint="Full-batch GD at a large η rides the edge of stability (λ_max ≈ 2/η); SGD with B = 1 has "
                       "to be stable for every single example's step, a stricter limit. Try η between 0.1 and 1.")
def sgd_gives_up_first(step_size: float) -> Feedback:
    """Pass when, at this η on the 200-digit parity task, SGD with B = 1 diverges within SGD_EPOCHS epochs while
    full-batch GD trains for GD_STEPS steps without diverging (final over initial loss GD_TRAINS)."""
    sgd_cfg = validate(trace_config(step_size, 1, SGD_EPOCHS * TRACE_N_TRAIN), n_train=TRACE_N_TRAIN)
    gd_cfg = validate(trace_config(step_size, None, GD_STEPS), n_train=TRACE_N_TRAIN)
    sgd, gd = (train(cfg, on_eval=on_eval, stop=stop, progress=False)
               for cfg, (on_eval, stop) in ((c, _stop_when_all_diverged(1)) for c in (sgd_cfg, gd_cfg)))
    sgd_at, gd_at = sgd.diverged_step(0), gd.diverged_step(0)
    if gd_at is not None:
        return Feedback(False, f"At η = {step_size:g} full-batch GD diverged too, at step {gd_at}"
                               + (f" (SGD with B = 1 at step {sgd_at})." if sgd_at is not None else "."),
                        f"Your η diverged GD at step {gd_at}: too large. GD survives up to about twice SGD's limit.")
    loss = gd.history[gd.history.metric == "train_loss"].sort_values("step").value
    first, last = float(loss.iloc[0]), float(loss.iloc[-1])
    shrink = last / first
    gn = float(gauss_newton_trace(gd.model, gd.params, gd.data.x_train, gd.data.y_train, gd_cfg.loss)[0])
    lmax = float(gd.hessian(top=1, tol=1e-5)[0, 0])
    gd_said = (f"full-batch GD trained {GD_STEPS} steps, loss {first:.3g} → {last:.3g} ({shrink:.2f}× its start, "
               f"needed {GD_TRAINS}), ending with λ_max·η/2 = {lmax * step_size / 2:.2f} and "
               f"tr(H)·η/2 = {gn * step_size / 2:.2f}")
    if sgd_at is None:
        sgd_loss = float(sgd.summary.train_loss.iloc[0])
        return Feedback(False, f"At η = {step_size:g} SGD with B = 1 did not diverge in {SGD_EPOCHS} epochs (final "
                               f"loss {sgd_loss:.3g}); {gd_said}.",
                        "Both train at this η: SGD's limit is lower than GD's, but not far lower. Raise η.")
    said = f"At η = {step_size:g} SGD with B = 1 diverged at step {sgd_at} (epoch {(sgd_at - 1) // TRACE_N_TRAIN + 1}); {gd_said}."
    if not GD_TRAINS(shrink):
        return Feedback(False, said, "GD survived but barely trained: choose an η where it makes progress.")
    return Feedback(True, said)

"""T1 · Stability: the edge of stability of full-batch GD, and the Hessian-trace bound of SGD.

Three experiments, all trained by `reglab.engine.train` (step sizes and seeds are members of one
ensemble per experiment), all on the loss the optimizer minimizes: reglab's "mse" is Cohen et al.'s
square loss, ½‖f(x) − y‖² summed over outputs (one-hot targets), averaged over examples.

1. **Edge of stability** (Cohen et al. 2021). Full-batch GD on the first `n_train` sklearn digits
   (pixels in [0, 1]), tanh MLP 64-100-100-10. The sharpness λ_max (top Hessian eigenvalue, warm-
   started Lanczos: the core's `Sharpness` probe) rises (progressive sharpening) until it reaches
   2/η, then hovers there while the loss keeps falling, non-monotonically. A second step size whose
   2/η lies far above the sharpness reached is the control: there λ_max never reaches 2/η.
2. **Linear stability of SGD bounds the Hessian trace** (Wu & Su 2023). 200 digits, ±1 parity
   target (scalar output), tanh MLP 64-32-1. SGD with batch size 1 and full-batch GD over a few step
   sizes; at the end, the exact Gauss–Newton trace (the Hessian near an interpolating minimum) and
   λ_max, against 2/η. The bound tr(H) ≤ 2/η is for B = 1 and a scalar output; with batch size B the
   argument gives roughly tr(H) ≤ 2B/η, and with C outputs it can be loose by up to C.
3. **The top of the spectrum**: stochastic-Lanczos spectral density and top eigenvalues of one GD
   run's Hessian at initialization and at a chosen step.

Time (measured on the shared 2-core machine with `time.process_time`, one thread): see the notebook.
"""
from __future__ import annotations

import math
import time

import altair as alt
import numpy as np
import pandas as pd
import torch

from .. import charts
from ..claims import Claim, Result, fmt_number
from ..config import ConfigError, Interval, OneOf, RunConfig, check, validate
from ..curvature import Sharpness, gauss_newton_trace, spectral_density, top_eigenvalues
from ..data import make_dataset
from ..engine import train
from ..losses import LOSSES

OWNER = "stability.run"

# experiment 1 (THEMES.md T1, claim 1; digits variant, n_train 500 to fit the time budget)
STEP_SIZE = 0.15  # crosses 2/η ≈ 13.3 after ~180 steps of progressive sharpening
SMALL_STEP_SIZE = 0.05  # 2/η = 40: far above the ~13–16 the sharpness reaches in the run
STEPS = 400
N_TRAIN = 500
WIDTH = 100
SHARPNESS_EVERY = 20
SHARPNESS_TOL = 1e-3  # Ritz residual ≤ 1e-3·λ: eigenvalue error far below the [0.9, 1.15] band
EOS_BAND = (0.9, 1.15)
BEFORE_MAX = 0.05  # "≈ 0 % of steps increase the loss before the crossing"
AFTER_MIN = 0.10  # "a clear share of them do after it"

# experiment 2 (THEMES.md T1, claim 2)
TRACE_N_TRAIN = 200
TRACE_WIDTH = 32
TRACE_STEP_SIZES = (0.02, 0.05, 0.1, 0.2)
SGD_EPOCHS = 20
GD_STEPS = 1000
CONVERGED_FRACTION = 0.2  # converged: did not diverge and final train loss ≤ 20 % of the initial one
MIN_CONVERGED = 2  # converged SGD runs needed per seed for the trace claim to count

SEEDS = 3
SPECTRUM_PROBES, SPECTRUM_ITER, SPECTRUM_TOP = 2, 40, 5


# ---------------------------------------------------------------------------------------------
# configurations


def config(step_size: float = STEP_SIZE, steps: int = STEPS, n_train: int = N_TRAIN, width: int = WIDTH,
           weight_decay: float = 0.0, rank: int | None = None, loss: str = "mse", batch_size: int | None = None,
           eval_every: int = SHARPNESS_EVERY, seed: int = 0, device: str = "auto") -> RunConfig:
    """Experiment 1: GD (batch_size None) on the first n_train digits, tanh MLP 64-w-w-10; `rank`
    factorizes the hidden w×w layer."""
    return RunConfig(data="digits", n_train=n_train, model="mlp", width=width, depth=2, activation="tanh", rank=rank,
                     loss=loss, optimizer="sgd", step_size=step_size, batch_size=batch_size,
                     weight_decay=weight_decay, steps=steps, eval_every=min(eval_every, steps), seed=seed,
                     device=device)


def trace_config(step_size: float = 0.1, batch_size: int | None = 1, steps: int = SGD_EPOCHS * TRACE_N_TRAIN,
                 target: str = "parity", loss: str = "mse", weight_decay: float = 0.0, width: int = TRACE_WIDTH,
                 n_train: int = TRACE_N_TRAIN, seed: int = 0, device: str = "auto") -> RunConfig:
    """Experiment 2: 200 digits, ±1 parity (scalar output) or 10 classes, tanh MLP 64-32-(1 or 10).
    loss "ce" means the logistic loss for the ±1 target."""
    if loss == "ce" and target == "parity":
        loss = "logistic"
    return RunConfig(data="digits", n_train=n_train, data_options={"target": target}, model="mlp", width=width,
                     depth=1, activation="tanh", loss=loss, optimizer="sgd", step_size=step_size,
                     batch_size=batch_size, weight_decay=weight_decay, steps=steps,
                     eval_every=max(1, steps // 40), seed=seed, device=device)


# ---------------------------------------------------------------------------------------------
# metrics (pure functions)


def crossing_step(steps, sharpness, step_size: float):
    """First step at which the sharpness reaches 2/η (None if it never does)."""
    steps, sharpness = np.asarray(steps), np.asarray(sharpness, dtype=float)
    hit = np.nonzero(sharpness >= 2.0 / step_size)[0]
    return None if len(hit) == 0 else int(steps[hit[0]])


def eos_ratio(steps, sharpness, step_size: float, after: int | None = None):
    """Median of λ_max·η/2 over the evaluation points at and after the first crossing of 2/η
    (or after step `after`); None without a crossing or without finite values."""
    steps, sharpness = np.asarray(steps), np.asarray(sharpness, dtype=float)
    k = crossing_step(steps, sharpness, step_size) if after is None else after
    if k is None:
        return None
    tail = sharpness[(steps >= k) & np.isfinite(sharpness)]
    return None if len(tail) == 0 else float(np.median(tail) * step_size / 2)


def loss_increase_fractions(step_losses, crossing: int | None):
    """(fraction before, fraction after) of updates that raised the loss. step_losses[j] is the loss
    at the parameters after j updates (Run.step_losses: GD's full-batch loss); update j+1 raises it
    when step_losses[j+1] > step_losses[j]. "Before" are the updates that lead up to the crossing
    step k (j + 1 ≤ k), "after" those from it on. None for an empty side; no crossing: all before."""
    losses = np.asarray(step_losses, dtype=float)
    up = losses[1:] > losses[:-1]
    finite = np.isfinite(losses[1:]) & np.isfinite(losses[:-1])
    k = len(up) if crossing is None else min(int(crossing), len(up))
    frac = lambda mask: float(up[mask].mean()) if mask.any() else None
    idx = np.arange(len(up))
    return frac((idx < k) & finite), frac((idx >= k) & finite)


def converged(final_loss, initial_loss, diverged_at, fraction: float = CONVERGED_FRACTION) -> bool:
    """A run converged when it did not diverge and its final train loss is ≤ fraction × initial."""
    if diverged_at is not None and not (isinstance(diverged_at, float) and math.isnan(diverged_at)):
        return False
    return bool(np.isfinite(final_loss) and final_loss <= fraction * initial_loss)


class Snapshot:
    """Probe that keeps a copy of the parameters at chosen evaluation steps (returns no metric)."""

    def __init__(self, steps):
        self.steps = set(int(s) for s in steps)
        self.params: dict = {}

    def __repr__(self) -> str:
        return f"Snapshot(steps={sorted(self.steps)})"

    def __call__(self, state) -> dict:
        if state.step in self.steps:
            self.params[state.step] = {k: v.detach().clone() for k, v in state.params.items()}
        return {}


def member_loss(model, data, loss_name: str):
    """Differentiable full-train loss of the members of a parameter dict: params -> [M]."""
    return lambda p: LOSSES[loss_name](model(p, data.x_train), data.y_train).mean(-1)


# ---------------------------------------------------------------------------------------------
# the experiment


def _seeds(seed: int, seeds: int) -> list:
    return [seed + i for i in range(seeds)]


def _or_diverged(row: dict, text: str) -> str:
    return text if row["diverged_at"] is None else f"diverged at step {row['diverged_at']}"


def _validate(step_size, small_step_size, steps, n_train, width, weight_decay, rank, loss, sharpness_every,
              batch_size, trace_step_sizes, sgd_epochs, gd_steps, target, spectrum_step, seeds, seed, device):
    check("steps", steps, Interval(int, 1, 10_000_000), OWNER)
    check("loss", loss, OneOf(("mse", "ce")), OWNER)
    check("target", target, OneOf(("parity", "class")), OWNER)
    check("small_step_size", small_step_size, Interval(float, 0, math.inf, closed="neither"), OWNER)
    check("sharpness_every", sharpness_every, Interval(int, 1, steps), OWNER)
    check("sgd_epochs", sgd_epochs, Interval(int, 1, 10_000), OWNER)
    check("gd_steps", gd_steps, Interval(int, 1, 10_000_000), OWNER)
    check("seeds", seeds, Interval(int, 1, 10), OWNER)
    check("spectrum_step", spectrum_step, Interval(int, 0, steps, allow_none=True), OWNER)
    if not isinstance(trace_step_sizes, (list, tuple)) or len(trace_step_sizes) < 2:
        raise ConfigError(f"The 'trace_step_sizes' parameter of {OWNER} must be a list of at least 2 step sizes. "
                          f"Got {trace_step_sizes!r} instead.")
    for eta in trace_step_sizes:
        check("trace_step_sizes", eta, Interval(float, 0, math.inf, closed="neither"), OWNER)
    eos = [config(eta, steps, n_train, width, weight_decay, rank, loss, None, sharpness_every, s, device)
           for eta in (step_size, small_step_size) for s in _seeds(seed, seeds)]
    sgd = [trace_config(eta, batch_size, sgd_epochs * TRACE_N_TRAIN, target, loss, weight_decay, seed=s, device=device)
           for eta in trace_step_sizes for s in _seeds(seed, seeds)]
    gd = [c.replace(batch_size=None, steps=gd_steps, eval_every=max(1, gd_steps // 40)) for c in sgd]
    for c in eos:
        validate(c, n_train=n_train)
    for c in sgd + gd:
        validate(c, n_train=TRACE_N_TRAIN)
    make_dataset("digits", n_train)  # the data set's own range check (n_train ≤ 1787) before any training
    return eos, sgd, gd


def run(step_size: float = STEP_SIZE, small_step_size: float = SMALL_STEP_SIZE, steps: int = STEPS,
        n_train: int = N_TRAIN, width: int = WIDTH, weight_decay: float = 0.0, rank: int | None = None,
        loss: str = "mse", sharpness_every: int = SHARPNESS_EVERY, batch_size: int | None = 1,
        trace_step_sizes=TRACE_STEP_SIZES, sgd_epochs: int = SGD_EPOCHS, gd_steps: int = GD_STEPS,
        target: str = "parity", spectrum_step: int | None = None, seeds: int = SEEDS, seed: int = 0,
        device: str = "auto", progress: bool | None = None) -> Result:
    """Train all three experiments (every seed) and compute the claims. Parameters are validated
    before anything trains; a diverged run is reported, not raised."""
    trace_step_sizes = list(trace_step_sizes)
    eos_cfgs, sgd_cfgs, gd_cfgs = _validate(step_size, small_step_size, steps, n_train, width, weight_decay, rank,
                                            loss, sharpness_every, batch_size, trace_step_sizes, sgd_epochs,
                                            gd_steps, target, spectrum_step, seeds, seed, device)
    seed_list = _seeds(seed, seeds)
    timing = {}

    # -- experiment 1: edge of stability ---------------------------------------------------------
    t0 = time.process_time()
    spec_step = steps if spectrum_step is None else spectrum_step
    spec_step = min(steps, int(round(spec_step / eos_cfgs[0].eval_every)) * eos_cfgs[0].eval_every) if spec_step < steps else steps
    probe = Sharpness(every=eos_cfgs[0].eval_every, tol=SHARPNESS_TOL)
    snap = Snapshot([0, spec_step])
    eos = train(eos_cfgs, probes=[probe, snap], progress=progress)
    timing["edge of stability"] = time.process_time() - t0

    # -- experiment 2: SGD (batch size B) vs GD, traces at the end -------------------------------
    t0 = time.process_time()
    sgd = train(sgd_cfgs, progress=progress)
    gd = train(gd_cfgs, progress=progress)
    curv = {name: _end_curvature(r) for name, r in (("SGD", sgd), ("GD", gd))}
    timing["SGD vs GD traces"] = time.process_time() - t0

    # -- experiment 3: the top of the spectrum (seed 0, the large step size) -----------------------
    t0 = time.process_time()
    spectrum = _spectrum(eos, snap, step_size)
    timing["spectrum"] = time.process_time() - t0

    metrics, claims = {}, []
    eos_frame, eos_rows = _eos_frame(eos), []
    sharp = eos.curve("sharpness") if "sharpness" in set(eos.history.metric) else pd.DataFrame(columns=["run", "step", "value"])
    for m, c in enumerate(eos_cfgs):
        s = sharp[sharp.run == m].sort_values("step")
        div = eos.diverged_step(m)
        k = crossing_step(s.step, s.value, c.step_size)
        ratio = eos_ratio(s.step, s.value, c.step_size)
        before, after = loss_increase_fractions(eos.step_losses[:, m].numpy() if div is None
                                                else eos.step_losses[:div - 1, m].numpy(), k)
        finite = s.value[np.isfinite(s.value)]
        eos_rows.append({"run": m, "step_size": c.step_size, "seed": c.seed, "diverged_at": div, "crossing": k,
                         "median_ratio": ratio, "max_ratio": float(finite.max() * c.step_size / 2) if len(finite) else None,
                         "up_before": before, "up_after": after, "sharpness_init": float(s.value.iloc[0]) if len(s) else None,
                         "final_loss": float(eos.summary.train_loss.iloc[m])})
    eos_table = _object_table(eos_rows, ("diverged_at", "crossing"))
    big = [r for r in eos_rows if r["step_size"] == step_size][:seeds]
    small = eos_rows[seeds:]
    for r in big:
        tag = f"@seed={r['seed']}"
        metrics["eos_crossing_step" + tag] = r["crossing"]
        metrics["eos_median_ratio" + tag] = r["median_ratio"]
        metrics["loss_up_before" + tag] = r["up_before"]
        metrics["loss_up_after" + tag] = r["up_after"]
        metrics["eos_diverged_at" + tag] = r["diverged_at"]
    for r in small:
        metrics[f"small_eta_max_ratio@seed={r['seed']}"] = r["max_ratio"]

    def div_note(rows):
        return "; ".join(f"seed {r['seed']} diverged at step {r['diverged_at']}" for r in rows if r["diverged_at"] is not None)

    pct = lambda v: fmt_number(None if v is None else 100 * v, ".0f")
    lo, hi = EOS_BAND
    ok = [r["diverged_at"] is None and r["median_ratio"] is not None and lo <= r["median_ratio"] <= hi for r in big]
    claims.append(Claim(
        f"GD (η = {step_size:g}): once λ_max reaches 2/η = {2 / step_size:.3g}, it hovers there — median λ_max·η/2 "
        f"after the first crossing in [{lo}, {hi}], every seed",
        ", ".join(_or_diverged(r, fmt_number(r["median_ratio"])) for r in big), f"each in [{lo}, {hi}]", all(ok),
        div_note(big) or "first crossing at step " + ", ".join("never" if r["crossing"] is None else str(r["crossing"])
                                                              for r in big)))
    ok = [r["diverged_at"] is None and r["crossing"] is not None and r["up_before"] is not None
          and r["up_after"] is not None and r["up_before"] <= BEFORE_MAX and r["up_after"] >= AFTER_MIN for r in big]
    claims.append(Claim(
        f"GD (η = {step_size:g}): the loss rises on ≈ 0 % of steps before the crossing and on a clear share after "
        f"(it keeps falling, non-monotonically), every seed",
        ", ".join(_or_diverged(r, f"{pct(r['up_before'])} % → {pct(r['up_after'])} %") for r in big),
        f"before ≤ {BEFORE_MAX:.0%}, after ≥ {AFTER_MIN:.0%}", all(ok), div_note(big)))
    ok = [r["diverged_at"] is None and r["max_ratio"] is not None and r["max_ratio"] < 1 for r in small]
    claims.append(Claim(
        f"GD at a small step size (η = {small_step_size:g}): λ_max stays below 2/η = {2 / small_step_size:.3g} for the "
        f"whole run, every seed",
        ", ".join(_or_diverged(r, fmt_number(r["max_ratio"])) for r in small), "max λ_max·η/2 < 1", all(ok), div_note(small)))

    # experiment 2 claims
    trace_rows = _trace_rows(sgd, gd, curv, sgd_cfgs, gd_cfgs)
    for r in trace_rows:
        tag = f"@eta={r['step_size']:g},seed={r['seed']}"
        if r["method"] == "SGD":
            metrics["sgd_trace_ratio" + tag] = r["trace_ratio"]
            metrics["sgd_converged" + tag] = r["converged"]
        else:
            metrics["gd_trace_ratio" + tag] = r["trace_ratio"]
            metrics["gd_lmax_ratio" + tag] = r["lmax_ratio"]
    B = batch_size or TRACE_N_TRAIN
    outputs = "scalar output" if target == "parity" else "10 outputs"
    s_rows = [r for r in trace_rows if r["method"] == "SGD"]
    g_rows = [r for r in trace_rows if r["method"] == "GD"]
    per_seed, ok = [], []
    for s in seed_list:
        conv = [r for r in s_rows if r["seed"] == s and r["converged"]]
        worst = max((r["trace_ratio"] for r in conv), default=None)
        per_seed.append(f"{fmt_number(worst)} ({len(conv)}/{len(trace_step_sizes)} converged)")
        ok.append(len(conv) >= min(MIN_CONVERGED, len(trace_step_sizes)) and worst is not None and worst <= 1)
    unconv = [r for r in s_rows if not r["converged"]]
    note = ("not converged: " + ", ".join(
        f"η={r['step_size']:g} seed {r['seed']}" + (f" (diverged at step {r['diverged_at']})" if r["diverged_at"] is not None
                                                   else f" (final loss {r['final_loss']:.3g})") for r in unconv)) if unconv else ""
    if not (B == 1 and target == "parity" and loss == "mse"):
        note = (f"Qualifier not met (B = {B}, {outputs}, {'square' if loss == 'mse' else 'cross-entropy'} loss): the "
                f"B = 1, scalar-output, square-loss bound need not hold here; with batch size B the argument gives "
                f"about tr(H) ≤ 2B/η{', and up to C times looser with C outputs' if target != 'parity' else ''}. " + note)
    claims.append(Claim(
        f"SGD (B = {B}, {outputs}): converged runs have tr(H)·η/2 ≤ 1, i.e. tr(H) ≤ 2/η, every seed",
        "; ".join(per_seed), f"max over converged runs ≤ 1, with ≥ {MIN_CONVERGED} converged step sizes per seed",
        all(ok), note))
    large = sorted(trace_step_sizes)[-2:]
    ok, vals = [], []
    for s in seed_list:
        rows = [r for r in g_rows if r["seed"] == s and r["step_size"] in large]
        v = None if any(r["diverged_at"] is not None for r in rows) else min(r["trace_ratio"] for r in rows)
        vals.append(v)
        ok.append(v is not None and v > 1)
    claims.append(Claim(
        f"GD: tr(H)·η/2 exceeds 1 at the larger step sizes (η = {', '.join(f'{e:g}' for e in large)}), every seed",
        ", ".join(fmt_number(v) for v in vals), "min over those > 1", all(ok)))
    ok, vals = [], []
    for s in seed_list:
        rows = [r for r in g_rows if r["seed"] == s]
        v = None if any(r["diverged_at"] is not None for r in rows) else max(r["lmax_ratio"] for r in rows)
        vals.append(v)
        ok.append(v is not None and v <= EOS_BAND[1])
    claims.append(Claim(
        f"GD: only λ_max is held to the stability limit — λ_max·η/2 ≤ {EOS_BAND[1]} (at most the edge of stability) "
        f"at every step size, every seed", ", ".join(fmt_number(v) for v in vals), f"max ≤ {EOS_BAND[1]}", all(ok)))
    trace_table = _object_table(trace_rows, ("diverged_at",))

    frames = {"eos": eos_frame, "eos_table": eos_table, "trace": trace_table, "trace_history": _trace_history(sgd, gd),
              "spectrum": spectrum, "timing": pd.DataFrame([{"part": k, "cpu_seconds": v} for k, v in timing.items()])}
    info = {"step_size": step_size, "small_step_size": small_step_size, "batch_size": B, "target": target}
    frames["info"] = pd.DataFrame([info])
    return Result(metrics, claims, frames, {"eos": eos, "sgd": sgd, "gd": gd, "sharpness": probe})


def _end_curvature(r) -> dict:
    """Exact Gauss–Newton trace and λ_max of every member's full training loss at the end of a run."""
    cfg = r.configs[0]
    gn = gauss_newton_trace(r.model, r.params, r.data.x_train, r.data.y_train, cfg.loss)
    alive = torch.tensor([r.diverged_step(m) is None for m in range(len(r.configs))])
    lmax = top_eigenvalues(member_loss(r.model, r.data, cfg.loss), r.params, k=1, tol=1e-5, active=alive,
                           generator=torch.Generator().manual_seed(0)).eigenvalues[:, 0]
    return {"trace": gn.float().cpu().numpy(), "lmax": lmax.cpu().numpy(), "alive": alive.numpy()}


def _trace_rows(sgd, gd, curv, sgd_cfgs, gd_cfgs) -> list:
    rows = []
    for name, r, cfgs in (("SGD", sgd, sgd_cfgs), ("GD", gd, gd_cfgs)):
        hist = r.curve("train_loss")
        for m, c in enumerate(cfgs):
            h = hist[hist.run == m].sort_values("step")
            initial, final = float(h.value.iloc[0]), float(r.summary.train_loss.iloc[m])
            div = r.diverged_step(m)
            alive = bool(curv[name]["alive"][m])
            tr = float(curv[name]["trace"][m]) if alive else None
            lm = float(curv[name]["lmax"][m]) if alive else None
            rows.append({"method": name, "batch_size": c.batch_size or TRACE_N_TRAIN, "step_size": c.step_size,
                         "seed": c.seed, "trace": tr, "lmax": lm,
                         "trace_ratio": None if tr is None else tr * c.step_size / 2,
                         "lmax_ratio": None if lm is None else lm * c.step_size / 2, "final_loss": final,
                         "initial_loss": initial, "diverged_at": div, "converged": converged(final, initial, div)})
    return rows


def _object_table(rows: list, columns) -> pd.DataFrame:
    """A frame of dict rows whose `columns` keep None (not NaN) for missing integers."""
    table = pd.DataFrame(rows)
    for col in columns:
        table[col] = pd.Series([r[col] for r in rows], dtype=object)
    return table


def _eos_frame(r) -> pd.DataFrame:
    """Tidy rows of experiment 1: the eval-point history plus the loss at every step ("step_loss"),
    with each member's step size, seed and divergence step."""
    M = len(r.configs)
    L = r.step_losses.numpy()
    steps = np.arange(len(L))
    per_step = pd.DataFrame({"run": np.repeat(np.arange(M), len(L)), "step": np.tile(steps, M),
                             "metric": "step_loss", "value": L.T.reshape(-1).astype(float)})
    frame = pd.concat([r.history, per_step], ignore_index=True)
    info = pd.DataFrame({"run": range(M), "eta": [f"{c.step_size:g}" for c in r.configs],
                         "seed": [c.seed for c in r.configs],
                         "diverged_at": [np.nan if d is None else float(d) for d in r.summary.diverged_at]})
    return frame.merge(info, on="run", how="left")


def _trace_history(sgd, gd) -> pd.DataFrame:
    parts = []
    for name, r in (("SGD", sgd), ("GD", gd)):
        h = r.history[r.history.metric == "train_loss"].copy()
        h["method"] = name
        h["eta"] = h.run.map({m: f"{c.step_size:g}" for m, c in enumerate(r.configs)})
        h["seed"] = h.run.map({m: c.seed for m, c in enumerate(r.configs)})
        h["diverged_at"] = h.run.map({m: np.nan if d is None else float(d) for m, d in enumerate(r.summary.diverged_at)})
        if name == "GD":
            h["run"] = h["run"] + len(sgd.configs)
        parts.append(h)
    return pd.concat(parts, ignore_index=True)


def _spectrum(r, snap: Snapshot, step_size: float) -> pd.DataFrame:
    """Spectral density and top eigenvalues of member 0 (large η, first seed) at the snapshot steps."""
    rows = []
    cfg = r.configs[0]
    loss_fn = member_loss(r.model, r.data, cfg.loss)
    for step, params in sorted(snap.params.items()):
        one = {k: v[:1] for k, v in params.items()}
        if not all(torch.isfinite(v).all() for v in one.values()):
            continue
        gen = torch.Generator().manual_seed(0)
        dens = spectral_density(loss_fn, one, n_probes=SPECTRUM_PROBES, n_iter=SPECTRUM_ITER, grid=200, generator=gen)
        top = top_eigenvalues(loss_fn, one, k=SPECTRUM_TOP, tol=1e-4, generator=gen).eigenvalues[0]
        if not torch.isfinite(dens.density).all():
            continue
        label = f"step {step}"
        rows += [{"when": label, "step": step, "kind": "density", "eigenvalue": float(g), "value": float(d)}
                 for g, d in zip(dens.grid, dens.density[0])]
        rows += [{"when": label, "step": step, "kind": "top", "eigenvalue": float(v), "value": i + 1}
                 for i, v in enumerate(top)]
    return pd.DataFrame(rows, columns=["when", "step", "kind", "eigenvalue", "value"])


# ---------------------------------------------------------------------------------------------
# the explorer's run


def explore(config: RunConfig, on_eval=None, stop=None):
    """One run of experiment 1 with the sharpness probe, streaming rows (for the explorer)."""
    return train(config, probes=[Sharpness(every=config.eval_every, tol=SHARPNESS_TOL)], on_eval=on_eval, stop=stop,
                 progress=False)


def member_frame(result: Result, member: int = 0) -> pd.DataFrame:
    """One experiment-1 member's eval-point history (the explorer's `initial`), divergence in attrs."""
    r = result.runs["eos"]
    frame = r.history[r.history.run == member].assign(run=0).reset_index(drop=True)
    frame.attrs["diverged_at"] = {0: r.diverged_step(member)}
    return frame


# ---------------------------------------------------------------------------------------------
# charts


def _rules(values: dict) -> pd.DataFrame:
    return pd.DataFrame({"value": list(values.values()), "label": list(values.keys())})


def chart(frame: pd.DataFrame, config: RunConfig | None = None):
    """Experiment 1: training loss (every step when available) and sharpness λ_max against step, with
    a 2/η line for each step size."""
    color = "eta" if "eta" in frame.columns else None
    if color:
        etas = sorted({float(e) for e in frame["eta"].dropna()})
    else:
        etas = [config.step_size] if config is not None else []
    metrics = set(frame["metric"])
    loss_metric = "step_loss" if "step_loss" in metrics else "train_loss"
    loss = charts.curves(frame, loss_metric, color=color, log_y=True, title="training loss", y_title="loss")
    panels = [loss]
    if "sharpness" in metrics:
        sharp = charts.curves(frame, "sharpness", color=color, title="sharpness λ_max and 2/η", y_title="λ_max")
        if etas:
            sharp = alt.layer(sharp, charts.reference_rule(_rules({f"2/η = {2 / e:.3g} (η = {e:g})": 2 / e for e in etas})))
        panels.append(sharp)
    return alt.hconcat(*panels)


def ratio_chart(frame: pd.DataFrame):
    """Experiment 1, normalized: λ_max·η/2 against step (1 = the stability limit 2/η)."""
    rows = frame[frame.metric == "sharpness"].copy()
    rows["value"] = rows["value"] * rows["eta"].astype(float) / 2
    rows["metric"] = "λ_max·η/2"
    c = charts.curves(rows, "λ_max·η/2", color="eta", title="λ_max·η/2 (1 = the edge of stability)")
    band = pd.DataFrame({"value": [1.0, EOS_BAND[0], EOS_BAND[1]], "label": ["2/η", f"{EOS_BAND[0]}", f"{EOS_BAND[1]}"]})
    return alt.layer(c, charts.reference_rule(band))


def trace_chart(trace: pd.DataFrame, batch_size: int = 1):
    """Experiment 2: tr(H) (SGD and GD) and GD's λ_max at the end of training against η, log–log,
    with the curves 2/η and (for B > 1) 2B/η. Diverged runs are listed under the chart."""
    live = trace[[d is None or (isinstance(d, float) and math.isnan(d)) for d in trace.diverged_at]]
    pts = pd.concat([
        live.assign(series=live.method.map(lambda m: f"tr(H), {m}" if m == "GD" else f"tr(H), SGD B={batch_size}"),
                    value=live.trace),
        live[live.method == "GD"].assign(series="λ_max, GD", value=live[live.method == "GD"].lmax),
    ], ignore_index=True)[["series", "step_size", "seed", "value", "converged", "method"]]
    etas = np.geomspace(trace.step_size.min() * 0.8, trace.step_size.max() * 1.25, 30)
    refs = [pd.DataFrame({"step_size": etas, "value": 2 / etas, "line": "2/η"})]
    if batch_size > 1:
        refs.append(pd.DataFrame({"step_size": etas, "value": 2 * batch_size / etas, "line": f"2B/η (B={batch_size})"}))
    refs = pd.concat(refs, ignore_index=True)
    x = alt.X("step_size:Q", title="step size η", scale=alt.Scale(type="log", domain=[etas[0], etas[-1]], nice=False),
              axis=alt.Axis(values=sorted(set(trace.step_size)), format="g"))
    y = alt.Y("value:Q", title="curvature at the end", scale=alt.Scale(type="log"))
    dots = alt.Chart(charts._values(pts)).mark_point(filled=True, size=50).encode(
        x=x, y=y, color=alt.Color("series:N", title=None),
        tooltip=["series:N", "step_size:Q", "seed:N", alt.Tooltip("value:Q", format=".4g"), "converged:N"])
    mean = pts.groupby(["series", "step_size"], as_index=False)["value"].median()
    lines = alt.Chart(charts._values(mean)).mark_line().encode(x=x, y=y, color=alt.Color("series:N", title=None))
    ref = alt.Chart(charts._values(refs)).mark_line(strokeDash=[5, 4], color="gray").encode(
        x=x, y=y, detail="line:N")
    lab = alt.Chart(charts._values(refs.groupby("line", as_index=False).first())).mark_text(
        align="left", dx=4, dy=-6, color="gray").encode(x=x, y=y, text="line:N")
    chart = alt.layer(ref, lab, lines, dots).properties(width=360, height=260,
                                                         title="tr(H) against 2/η at the end of training")
    dead = trace[[not (d is None or (isinstance(d, float) and math.isnan(d))) for d in trace.diverged_at]]
    if len(dead):
        text = "; ".join(f"{method} diverged at η = {eta:g}: seed {', '.join(str(v) for v in g.seed)} at step "
                         f"{', '.join(str(int(v)) for v in g.diverged_at)}"
                         for (method, eta), g in dead.groupby(["method", "step_size"], sort=False))
        chart = charts.note(chart, "⚠ " + text)
    return chart


def trace_loss_chart(history: pd.DataFrame):
    """Experiment 2: training loss of the SGD and GD runs (diverged runs drawn up to divergence)."""
    panels = []
    for method in ("SGD", "GD"):
        rows = history[history.method == method]
        if len(rows):
            panels.append(charts.curves(rows, "train_loss", color="eta", log_y=True, title=f"{method}: training loss",
                                        width=280, height=180))
    return alt.hconcat(*panels)


def spectrum_chart(spectrum: pd.DataFrame, step_size: float):
    """Experiment 3: Hessian spectral density (log scale) at initialization and at the chosen step,
    with the top eigenvalues as ticks and 2/η as a vertical line."""
    if spectrum.empty:
        return charts.note(alt.Chart({"values": [{}]}).mark_point().properties(width=10, height=10),
                           "no spectrum: the run diverged before the chosen step")
    dens = spectrum[spectrum.kind == "density"].copy()
    dens["value"] = dens["value"].clip(lower=1e-6)
    x = alt.X("eigenvalue:Q", title="Hessian eigenvalue")
    lines = alt.Chart(charts._values(dens)).mark_line().encode(
        x=x, y=alt.Y("value:Q", title="density", scale=alt.Scale(type="log")), color=alt.Color("when:N", title=None))
    top = spectrum[spectrum.kind == "top"]
    ticks = alt.Chart(charts._values(top)).mark_tick(thickness=2, size=18).encode(
        x=x, color=alt.Color("when:N", title=None), tooltip=["when:N", alt.Tooltip("eigenvalue:Q", format=".4g")])
    rule = alt.Chart({"values": [{"x": 2 / step_size, "label": f"2/η = {2 / step_size:.3g}"}]})
    vline = rule.mark_rule(strokeDash=[5, 4], color="gray").encode(x="x:Q")
    vtext = rule.mark_text(align="left", dx=4, dy=-60, color="gray").encode(x="x:Q", text="label:N")
    return alt.layer(lines, ticks, vline, vtext).properties(width=420, height=220,
                                                            title="Hessian spectrum (top eigenvalues as ticks)")

"""01 · Stability: the edge of stability of full-batch GD, and the Hessian-trace bound of SGD.

1. Edge of stability (Cohen et al. 2021): under full-batch GD the sharpness λ_max (the top Hessian
   eigenvalue of the loss the optimizer minimizes; "mse" is Cohen's ½‖f(x) − y‖²) rises until it reaches
   2/η and hovers there while the loss keeps falling, non-monotonically; a small η is the control.
2. Linear stability of SGD bounds the Hessian trace (Wu & Su 2023): at a minimum SGD with B = 1 can stay
   at, tr(H) ≤ 2/η (scalar output; batch size B gives about 2B/η, C outputs up to C× looser), while GD
   only holds λ_max; measured with the exact Gauss–Newton trace at the end of training.
3. The top of the spectrum: spectral density and top eigenvalues of one GD run at two steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import altair as alt
import numpy as np
import pandas as pd
import torch

from .. import charts
from ..claims import Rule, above, at_least, at_most, below, every_seed, fmt_number, key, per_seed, verdict, within
from ..config import Interval, ListOf, OneOf, RunConfig, check, validate
from ..curvature import Sharpness, gauss_newton_trace, spectral_density, top_eigenvalues
from ..engine import train
from ..theme import DEVICE, NON_NEGATIVE, POSITIVE, SEED, SEEDS, Exploration, Param, Theme

SHARPNESS_TOL = 1e-3  # Ritz residual ≤ 1e-3·λ: eigenvalue error far below the edge band
TRACE_N_TRAIN, TRACE_WIDTH = 200, 32  # experiment 2's training set and hidden width
INTERPOLATION_LOSS = 1e-3  # at a minimum: final train loss ≤ 1e-3 (RMS residual ≤ 0.045 on ±1 targets)
MIN_CONVERGED = 2  # SGD step sizes at a minimum needed per seed for the trace claim to count
SPECTRUM_PROBES, SPECTRUM_ITER, SPECTRUM_TOP = 2, 40, 5
EDGE_LOW, EDGE_HIGH = 0.9, 1.15  # "at the edge of stability": λ_max·η/2 in this band
UP_BEFORE, UP_AFTER = 0.05, 0.10  # share of updates raising the loss: ≈ 0 before the crossing, clear after
MANY = 10_000_000


# candidates for reglab.claims
def both(first: Rule, second: Rule, names=("first", "second")) -> Rule:
    """A rule on a pair of values: the first passes `first` and the second `second` (None fails)."""
    return Rule(f"{names[0]} {first}, {names[1]} {second}", lambda v: v is not None and first(v[0]) and second(v[1]))


# the claims' rules (per-seed values; a seed that is missing or fails fails the rule)
EOS_BAND = every_seed(within(EDGE_LOW, EDGE_HIGH))  # median λ_max·η/2 after the first crossing of 2/η
LOSS_UP = every_seed(both(at_most(UP_BEFORE), at_least(UP_AFTER), ("before", "after")))  # [before, after]
SMALL_BELOW_EDGE = every_seed(below(1.0))  # max λ_max·η/2 at the small step size
SGD_TRACE_BOUND = every_seed(both(at_most(1.0), at_least(MIN_CONVERGED), ("max over runs at a minimum", "runs at a minimum")))
GD_TRACE_ABOVE = every_seed(above(1.0))  # min tr(H)·η/2 of GD at the two largest step sizes
GD_LMAX_AT_EDGE = every_seed(at_most(EDGE_HIGH))  # max λ_max·η/2 of GD over all step sizes

THEME = Theme("01_stability", {
    "step_size": Param(0.15, POSITIVE, "η of the GD edge-of-stability runs (experiment 1)", log=True),
    "small_step_size": Param(0.05, POSITIVE, "a small η whose 2/η lies far above the sharpness reached", log=True),
    "steps": Param(400, Interval(int, 1, MANY), "GD steps of experiment 1", label="steps", slider=(100, 3000)),
    "n_train": Param(500, Interval(int, 10, 1787), "first n digits (experiment 1)"),
    "width": Param(100, Interval(int, 1, 100_000), "hidden width of experiment 1"),
    "weight_decay": Param(0.0, NON_NEGATIVE, "weight decay λ of both experiments"),
    "rank": Param(None, Interval(int, 1, 100_000, allow_none=True), "rank of experiment 1's w × w layer (None: full)"),
    "loss": Param("mse", OneOf(("mse", "ce")), "loss: Cohen's square loss, or cross-entropy (logistic for ±1)", label="loss"),
    "sharpness_every": Param(20, Interval(int, 1, MANY), "steps between λ_max computations"),
    "batch_size": Param(1, Interval(int, 1, TRACE_N_TRAIN, allow_none=True), "SGD batch size B of experiment 2"),
    "trace_step_sizes": Param([0.02, 0.05, 0.1, 0.15], ListOf(POSITIVE, at_least=2), "η of experiment 2"),
    "sgd_epochs": Param(150, Interval(int, 1, 10_000), "SGD epochs of experiment 2 (200 examples per epoch)"),
    "gd_steps": Param(4000, Interval(int, 1, MANY), "GD steps of experiment 2"),
    "target": Param("parity", OneOf(("parity", "class")), "experiment 2's target: ±1 (scalar output) or 10 classes"),
    "spectrum_step": Param(None, Interval(int, 0, MANY, allow_none=True), "step of experiment 3's spectrum (None: last)"),
    "seeds": SEEDS, "seed": SEED, "device": DEVICE,
})


def config(step_size=0.15, steps=400, n_train=500, width=100, weight_decay=0.0, rank=None, loss="mse",
           batch_size=None, eval_every=20, seed=0, device="auto") -> RunConfig:
    """Experiment 1: GD (batch_size None) on the first n_train digits, tanh MLP 64-w-w-10 (SGD optimizer)."""
    return RunConfig(data="digits", n_train=n_train, width=width, depth=2, activation="tanh", rank=rank, loss=loss,
                     step_size=step_size, batch_size=batch_size, weight_decay=weight_decay, steps=steps,
                     eval_every=min(eval_every, steps), seed=seed, device=device)


def trace_config(step_size=0.1, batch_size=1, steps=20 * TRACE_N_TRAIN, target="parity", loss="mse",
                 weight_decay=0.0, seed=0, device="auto") -> RunConfig:
    """Experiment 2: 200 digits, ±1 parity or 10 classes, tanh MLP 64-32-(1 or 10); "ce" is logistic for ±1."""
    return config(step_size, steps, TRACE_N_TRAIN, TRACE_WIDTH, weight_decay, None, "logistic" if (loss, target) ==
                  ("ce", "parity") else loss, batch_size, max(1, steps // 40), seed, device).replace(
        depth=1, data_options={"target": target})


# metrics (pure functions)
def crossing_step(steps, sharpness, step_size: float):
    """First step at which the sharpness reaches 2/η (None if it never does)."""
    hit = np.nonzero(np.asarray(sharpness, dtype=float) >= 2.0 / step_size)[0]
    return None if len(hit) == 0 else int(np.asarray(steps)[hit[0]])


def eos_ratio(steps, sharpness, step_size: float):
    """Median λ_max·η/2 at the evaluation points from the first crossing of 2/η on (None: no crossing or no value)."""
    steps, sharpness = np.asarray(steps), np.asarray(sharpness, dtype=float)
    k = crossing_step(steps, sharpness, step_size)
    tail = sharpness[(steps >= k) & np.isfinite(sharpness)] if k is not None else []
    return None if len(tail) == 0 else float(np.median(tail) * step_size / 2)


def loss_increase_fractions(step_losses, crossing: int | None):
    """(fraction before, fraction after) of updates that raised the loss. step_losses[j] is the loss after j
    updates (Run.step_losses); update j+1 raises it when step_losses[j+1] > step_losses[j]. "Before": the
    updates up to the crossing step k (j + 1 ≤ k); "after": the rest. None for an empty side; no crossing: all before."""
    losses = np.asarray(step_losses, dtype=float)
    up, finite = losses[1:] > losses[:-1], np.isfinite(losses[1:]) & np.isfinite(losses[:-1])
    k, idx = len(up) if crossing is None else min(int(crossing), len(up)), np.arange(len(up))
    frac = lambda mask: float(up[mask].mean()) if mask.any() else None
    return frac((idx < k) & finite), frac((idx >= k) & finite)


def converged(final_loss, diverged_at, tol: float = INTERPOLATION_LOSS) -> bool:
    """A run ends at a minimum (near interpolation, where the theorem applies and H ≈ the Gauss–Newton matrix)
    when it did not diverge and its final train loss is ≤ tol."""
    return diverged_at is None and bool(np.isfinite(final_loss) and final_loss <= tol)


@dataclass
class Snapshot:
    """Probe that keeps a copy of the parameters at chosen evaluation steps (returns no metric)."""

    steps: list
    params: dict = field(default_factory=dict, repr=False)

    def __call__(self, state) -> dict:
        if state.step in self.steps:
            self.params[state.step] = {k: v.detach().clone() for k, v in state.params.items()}
        return {}


# the experiment
@THEME.run
def run(p, result) -> None:
    """Train the three experiments (every seed) and judge the claims; a diverged run is reported, not raised."""
    seeds = [p.seed + i for i in range(p.seeds)]
    for name, low in (("sharpness_every", 1), ("spectrum_step", 0)):  # both are steps of experiment 1
        check(name, getattr(p, name), Interval(int, low, p.steps, allow_none=True), "01_stability.run")
    eos_cfgs = [validate(config(eta, p.steps, p.n_train, p.width, p.weight_decay, p.rank, p.loss, None,
                                p.sharpness_every, s, p.device), n_train=p.n_train)
                for eta in (p.step_size, p.small_step_size) for s in seeds]
    sgd_cfgs = [validate(trace_config(eta, p.batch_size, p.sgd_epochs * TRACE_N_TRAIN, p.target, p.loss,
                                      p.weight_decay, seed=s, device=p.device), n_train=TRACE_N_TRAIN)
                for eta in p.trace_step_sizes for s in seeds]
    gd_cfgs = [validate(c.replace(batch_size=None, steps=p.gd_steps, eval_every=max(1, p.gd_steps // 40)))
               for c in sgd_cfgs]
    every, spec = eos_cfgs[0].eval_every, p.spectrum_step  # the spectrum at the nearest evaluation step
    spec = p.steps if spec is None or spec >= p.steps else min(p.steps, round(spec / every) * every)

    with result.timed("edge of stability"):
        probe, snap = Sharpness(every=every, tol=SHARPNESS_TOL), Snapshot([0, spec])
        eos = train(eos_cfgs, probes=[probe, snap])
    with result.timed("SGD vs GD traces"):
        sgd, gd = train(sgd_cfgs), train(gd_cfgs)
        trace_rows = _trace_rows("SGD", sgd) + _trace_rows("GD", gd)
    with result.timed("spectrum"):
        spectrum = _spectrum(eos, snap)
    rows = _eos_rows(eos)
    steps_as_int = {"diverged_at": "Int64", "crossing": "Int64"}  # nullable: <NA> = did not diverge / cross
    result.frames = {"eos": _eos_frame(eos), "eos_table": pd.DataFrame(rows).astype(steps_as_int),
                     "trace": pd.DataFrame(trace_rows).astype({"diverged_at": "Int64"}),
                     "trace_history": pd.concat([_tidy(r, r.history[r.history.metric == "train_loss"]).assign(
                         method=name, run=lambda f, o=offset: f.run + o)  # run ids continue from SGD's to GD's
                         for name, r, offset in (("SGD", sgd, 0), ("GD", gd, len(sgd_cfgs)))], ignore_index=True),
                     "spectrum": spectrum}
    result.runs = {"eos": eos, "sgd": sgd, "gd": gd, "sharpness": probe}
    member0 = charts.tidy(eos)
    initial = member0[member0.run == 0]
    ratio_rows = initial[initial.metric == "sharpness"].assign(metric="edge_ratio", value=lambda f: f.value * p.step_size / 2)
    result.exploration = Exploration(eos_cfgs[0], chart, run=explore, initial=pd.concat([initial, ratio_rows], ignore_index=True),
                                     controls={n: THEME.params[n] for n in ("steps", "loss", "seed")}, presets=PRESETS,
                                     learned=learned_chart)

    # -- experiment 1: metrics and claims --------------------------------------------------------
    big, small = rows[:p.seeds], rows[p.seeds:]
    col = lambda rs, name: [r[name] for r in rs]
    diverged_of = lambda rs: {f"η = {r['step_size']:g}, seed {r['seed']}": r["diverged_at"] for r in rs}
    # fn (min or max) of a field over each seed's rows; None for a seed with none or with a missing value
    seed_extreme = lambda fn, rs, column: [None if not v or None in v else fn(v)
                                           for v in ([r[column] for r in rs if r["seed"] == s] for s in seeds)]
    for name, column in (("eos_crossing_step", "crossing"), ("eos_median_ratio", "median_ratio"), ("loss_up_before",
                         "up_before"), ("loss_up_after", "up_after"), ("eos_diverged_at", "diverged_at")):
        result.metrics.update(per_seed(name, col(big, column), seeds))
    result.metrics.update(per_seed("small_eta_max_ratio", col(small, "max_ratio"), seeds))
    eta, pct = p.step_size, lambda v: fmt_number(None if v is None else 100 * v, ".0f")
    result.claims = [
        verdict("edge_of_stability", f"GD (η = {eta:g}): once λ_max reaches 2/η = {2 / eta:.3g}, it hovers there — "
                f"median λ_max·η/2 after the first crossing in [{EDGE_LOW}, {EDGE_HIGH}], every seed",
                col(big, "median_ratio"), EOS_BAND, diverged=diverged_of(big), note="first crossing at step "
                + ", ".join("never" if k is None else str(k) for k in col(big, "crossing"))),
        verdict("loss_non_monotone", f"GD (η = {eta:g}): the loss rises on ≈ 0 % of steps before the crossing and on "
                "a clear share after (it keeps falling, non-monotonically), every seed",
                [[r["up_before"], r["up_after"]] for r in big], LOSS_UP, diverged=diverged_of(big),
                note="updates raising the loss, before → after the crossing: "
                     + ", ".join(f"{pct(r['up_before'])} % → {pct(r['up_after'])} %" for r in big)),
        verdict("small_step_below_edge", f"GD at a small step size (η = {p.small_step_size:g}): λ_max stays below "
                f"2/η = {2 / p.small_step_size:.3g} for the whole run, every seed",
                col(small, "max_ratio"), SMALL_BELOW_EDGE, diverged=diverged_of(small)),
    ]

    # -- experiment 2: metrics and claims --------------------------------------------------------
    for r in trace_rows:  # SGD: trace ratio and convergence; GD: trace and λ_max ratios
        q, (name, f) = dict(eta=r["step_size"], seed=r["seed"]), (("sgd_converged", "converged") if r["method"] == "SGD"
                                                                   else ("gd_lmax_ratio", "lmax_ratio"))
        result.metrics.update({key(r["method"].lower() + "_trace_ratio", **q): r["trace_ratio"], key(name, **q): r[f]})
    B, outputs = p.batch_size or TRACE_N_TRAIN, "scalar output" if p.target == "parity" else "10 outputs"
    s_rows, g_rows = [r for r in trace_rows if r["method"] == "SGD"], [r for r in trace_rows if r["method"] == "GD"]
    conv, large = [r for r in s_rows if r["converged"]], sorted(p.trace_step_sizes)[-2:]
    counts = [sum(r["seed"] == s for r in conv) for s in seeds]
    unconv = [f"η={r['step_size']:g} seed {r['seed']} (final loss {r['final_loss']:.3g})" for r in s_rows
              if not r["converged"] and r["diverged_at"] is None]
    note = (f"step sizes at a minimum (final loss ≤ {INTERPOLATION_LOSS:g}) per seed: "
            + ", ".join(f"{n}/{len(p.trace_step_sizes)}" for n in counts)
            + ("; not at a minimum after " + f"{p.sgd_epochs} epochs: " + ", ".join(unconv) if unconv else ""))
    if not (B == 1 and p.target == "parity" and p.loss == "mse"):
        note = (f"Qualifier not met (B = {B}, {outputs}, {'square' if p.loss == 'mse' else 'cross-entropy'} loss): the "
                f"B = 1, scalar-output, square-loss bound need not hold here; with batch size B the argument gives "
                f"about tr(H) ≤ 2B/η{', and up to C times looser with C outputs' if p.target != 'parity' else ''}. "
                + note)
    g_large = [r for r in g_rows if r["step_size"] in large]
    result.claims += [
        verdict("sgd_trace_bound", f"SGD (B = {B}, {outputs}): runs that end at a minimum (train loss ≤ "
                f"{INTERPOLATION_LOSS:g}) have tr(H)·η/2 ≤ 1, i.e. tr(H) ≤ 2/η, at ≥ {MIN_CONVERGED} step sizes, every seed",
                [list(v) for v in zip(seed_extreme(max, conv, "trace_ratio"), counts)],
                SGD_TRACE_BOUND, note=note, diverged=diverged_of(s_rows)),
        verdict("gd_trace_above_bound", f"GD: tr(H)·η/2 exceeds 1 at the larger step sizes (η = "
                f"{', '.join(f'{e:g}' for e in large)}), every seed", seed_extreme(min, g_large, "trace_ratio"),
                GD_TRACE_ABOVE, diverged=diverged_of(g_large), note=f"GD's final train loss after {p.gd_steps} steps: "
                + ", ".join(f"η = {r['step_size']:g}, seed {r['seed']}: {r['final_loss']:.2g}" for r in g_large)),
        verdict("gd_lmax_at_edge", f"GD: only λ_max is held to the stability limit — λ_max·η/2 ≤ {EDGE_HIGH} (at most "
                "the edge of stability) at every step size, every seed", seed_extreme(max, g_rows, "lmax_ratio"),
                GD_LMAX_AT_EDGE, diverged=diverged_of(g_rows)),
    ]


def _eos_rows(r) -> list:
    """Per experiment-1 member: first crossing of 2/η, median and max λ_max·η/2, shares of rising updates."""
    sharp, rows = r.history[r.history.metric == "sharpness"], []
    for m, c in enumerate(r.configs):
        s, div, losses = sharp[sharp.run == m].sort_values("step"), r.diverged_step(m), r.step_losses[:, m].numpy()
        k, finite = crossing_step(s.step, s.value, c.step_size), s.value[np.isfinite(s.value)]
        before, after = loss_increase_fractions(losses if div is None else losses[:div - 1], k)
        rows.append({"run": m, "step_size": c.step_size, "seed": c.seed, "diverged_at": div, "crossing": k,
                     "median_ratio": eos_ratio(s.step, s.value, c.step_size),
                     "max_ratio": float(finite.max() * c.step_size / 2) if len(finite) else None,
                     "up_before": before, "up_after": after, "sharpness_init": float(s.value.iloc[0]) if len(s) else None,
                     "final_loss": float(r.summary.train_loss.iloc[m])})
    return rows


def _trace_rows(method: str, r) -> list:
    """Per member: end-of-run exact Gauss–Newton trace and λ_max (None if diverged), ratios to 2/η, convergence."""
    loss = r.configs[0].loss
    gn = gauss_newton_trace(r.model, r.params, r.data.x_train, r.data.y_train, loss).float().cpu()
    lmax = r.hessian(top=1, tol=1e-5)[:, 0].cpu()  # NaN for a diverged member
    initial = r.history[(r.history.metric == "train_loss") & (r.history.step == 0)].set_index("run").value
    rows = []
    for m, c in enumerate(r.configs):
        div, final = r.diverged_step(m), float(r.summary.train_loss.iloc[m])
        tr, lm = (None, None) if div is not None else (float(gn[m]), float(lmax[m]))
        ratio = lambda v: None if v is None else v * c.step_size / 2
        rows.append({"method": method, "batch_size": c.batch_size or TRACE_N_TRAIN, "step_size": c.step_size,
                     "seed": c.seed, "trace": tr, "lmax": lm, "trace_ratio": ratio(tr), "lmax_ratio": ratio(lm),
                     "final_loss": final, "initial_loss": float(initial[m]), "diverged_at": div,
                     "converged": converged(final, div)})
    return rows


def _tidy(r, frame: pd.DataFrame) -> pd.DataFrame:
    """Tidy rows of a run with each member's step size (as text: a colour), seed and divergence step."""
    members = r.summary[["run", "diverged_at"]].assign(eta=[f"{c.step_size:g}" for c in r.configs],
                                                       seed=[c.seed for c in r.configs])
    return frame.merge(members, on="run", how="left")


def _eos_frame(r) -> pd.DataFrame:
    """Experiment 1: the eval-point history plus the loss at every step ("step_loss")."""
    L = r.step_losses.numpy()
    per_step = pd.DataFrame({"run": np.repeat(np.arange(L.shape[1]), len(L)), "step": np.tile(np.arange(len(L)), L.shape[1]),
                             "metric": "step_loss", "value": L.T.reshape(-1).astype(float)})
    return _tidy(r, pd.concat([r.history, per_step], ignore_index=True))


def _spectrum(r, snap: Snapshot) -> pd.DataFrame:
    """Spectral density and top eigenvalues of member 0 (large η, first seed) at the snapshot steps."""
    rows, loss_fn = [], r.loss
    for step, params in sorted(snap.params.items()):
        one = {k: v[:1] for k, v in params.items()}
        if not all(torch.isfinite(v).all() for v in one.values()):
            continue
        gen = torch.Generator().manual_seed(0)
        dens = spectral_density(loss_fn, one, n_probes=SPECTRUM_PROBES, n_iter=SPECTRUM_ITER, grid=200, generator=gen)
        top = top_eigenvalues(loss_fn, one, k=SPECTRUM_TOP, tol=1e-4, generator=gen).eigenvalues[0]
        if not torch.isfinite(dens.density).all():
            continue
        rows += [(f"step {step}", step, "density", float(g), float(d)) for g, d in zip(dens.grid, dens.density[0])]
        rows += [(f"step {step}", step, "top", float(v), i + 1) for i, v in enumerate(top)]  # value: rank
    return pd.DataFrame(rows, columns=["when", "step", "metric", "eigenvalue", "value"])


def explore(config: RunConfig, on_eval=None, stop=None, start=None):
    """One run of experiment 1 with the sharpness probe, streaming rows (the explorer's run): λ_max
    ("sharpness") and λ_max·η/2 ("edge_ratio", 1 = the stability limit 2/η) at every evaluation."""
    probe = Sharpness(every=config.eval_every, tol=SHARPNESS_TOL)

    def edge(state):
        out = probe(state)
        return {**out, "edge_ratio": out["sharpness"] * config.step_size / 2} if "sharpness" in out else out

    return train(config, probes=[edge], on_eval=on_eval, stop=stop, start=start, progress=False)


# the explorer's guided scenarios (controls: step_size, batch_size, weight_decay, rank, steps, loss, seed)
PRESETS = {
    "edge of stability": {"question": "Full-batch GD at η = 0.15: where does λ_max stop rising, and what does the loss "
                          "do from then on?", "values": {"step_size": 0.15, "batch_size": None, "loss": "mse",
                                                          "weight_decay": 0.0, "steps": 400}, "lock": ("batch_size",)},
    "double the step size": {"question": "At η = 0.3 the limit 2/η halves to 6.7: does λ_max follow it down, and does "
                             "training still make progress?", "values": {"step_size": 0.3, "batch_size": None,
                                                                          "loss": "mse", "steps": 400},
                             "lock": ("batch_size",)},
    "small step": {"question": "At η = 0.05 (2/η = 40), does the sharpness ever reach 2/η within the run?",
                   "values": {"step_size": 0.05, "batch_size": None, "loss": "mse", "steps": 400}, "lock": ("batch_size",)},
    "cross-entropy": {"question": "With cross-entropy, does λ_max still hover at 2/η once the margins grow?",
                      "values": {"step_size": 0.15, "batch_size": None, "loss": "ce", "steps": 1000},
                      "lock": ("batch_size",), "hide": ("rank",)},
}


def learned_chart(frame: pd.DataFrame, config: RunConfig | None = None):
    """What the run learned about its own curvature: λ_max·η/2 against step (1 = 2/η, the stability limit),
    with the band that counts as "at the edge"; one line per run when comparing."""
    rows = frame[frame.metric == "edge_ratio"]
    if rows.empty:
        return charts.empty("λ_max against 2/η appears at the first evaluation")
    band = pd.DataFrame({"value": [EDGE_LOW, 1.0, EDGE_HIGH], "label": [f"{EDGE_LOW}", "2/η", f"{EDGE_HIGH}"]})
    return charts.layer(charts.curves(rows, "edge_ratio", title="what it learned: λ_max against 2/η (1 = the stability "
                                      "limit)", y_title="λ_max·η/2", width=600, height=160), charts.reference_rule(band))


# charts
def chart(frame: pd.DataFrame, config: RunConfig | None = None):
    """Experiment 1: training loss (every step when there) and λ_max against step, 2/η per step size (`eta` or config)."""
    color = "eta" if "eta" in frame.columns else None
    etas = sorted({float(e) for e in frame["eta"].dropna()}) if color else [config.step_size] if config else []
    metrics = set(frame["metric"])
    panels = [charts.curves(frame, "step_loss" if "step_loss" in metrics else "train_loss", color=color, log_y=True,
                            title="training loss", y_title="loss")]
    if "sharpness" in metrics:
        sharp = charts.curves(frame, "sharpness", color=color, title="sharpness λ_max and 2/η", y_title="λ_max")
        rules = pd.DataFrame({"value": [2 / e for e in etas], "label": [f"2/η = {2 / e:.3g} (η = {e:g})" for e in etas]})
        panels.append(charts.layer(sharp, charts.reference_rule(rules)) if etas else sharp)
    return charts.row(*panels)


def ratio_chart(frame: pd.DataFrame):
    """Experiment 1, normalized: λ_max·η/2 against step (1 = the stability limit 2/η)."""
    rows = frame[frame.metric == "sharpness"]
    rows = rows.assign(value=rows.value * rows.eta.astype(float) / 2, metric="λ_max·η/2")
    return charts.layer(charts.curves(rows, "λ_max·η/2", color="eta", title="λ_max·η/2 (1 = the edge of stability)"),
                        charts.reference_rule(pd.DataFrame({"value": [1.0, EDGE_LOW, EDGE_HIGH],
                                                            "label": ["2/η", f"{EDGE_LOW}", f"{EDGE_HIGH}"]})))


def trace_chart(trace: pd.DataFrame, batch_size: int | None = None):
    """Experiment 2: tr(H) (SGD and GD) and GD's λ_max at the end of training against η, log–log,
    with the curves 2/η and (for B > 1) 2B/η. Diverged runs are listed under the chart."""
    B = batch_size or int(trace.batch_size[trace.method == "SGD"].iloc[0])
    ok = np.isnan(charts.diverged_steps(trace.diverged_at))
    live, dead = trace[ok], trace[~ok]
    gd = live[live.method == "GD"]
    pts = pd.concat([live.assign(series=np.where(live.method == "GD", "tr(H), GD", f"tr(H), SGD B={B}"), value=live.trace),
                     gd.assign(series="λ_max, GD", value=gd.lmax)], ignore_index=True)
    etas = np.geomspace(trace.step_size.min() * 0.8, trace.step_size.max() * 1.25, 30)
    refs = pd.concat([pd.DataFrame({"step_size": etas, "value": b * 2 / etas, "label": label})
                      for b, label in [(1, "2/η")] + [(B, f"2B/η (B={B})")] * (B > 1)])
    titles = dict(x_title="step size η", y_title="curvature at the end")
    out = charts.layer(reference_curves(refs, "step_size", **titles),
                       charts.against(pts, "step_size", color="series", log_x=True, log_y=True,
                                      tooltip=["series", "seed", "converged"], **titles)).properties(
        width=360, height=260, title="tr(H) against 2/η at the end of training")
    if len(dead):
        out = charts.note(out, "⚠ " + "; ".join(
            f"{method} diverged at η = {eta:g}: seed {', '.join(str(v) for v in g.seed)} at step "
            f"{', '.join(str(v) for v in g.diverged_at)}" for (method, eta), g in dead.groupby(["method", "step_size"], sort=False)))
    return out


def trace_loss_chart(history: pd.DataFrame):
    """Experiment 2: training loss of the SGD and GD runs (diverged runs drawn up to divergence)."""
    return charts.row(*[charts.curves(history[history.method == m], "train_loss", color="eta", log_y=True,
                                      title=f"{m}: training loss", width=280, height=180)
                        for m in ("SGD", "GD") if (history.method == m).any()])


def spectrum_chart(spectrum: pd.DataFrame, step_size: float):
    """Experiment 3: Hessian spectral density (log scale) at initialization and at the chosen step,
    with the top eigenvalues as ticks and 2/η as a vertical line."""
    if spectrum.empty:
        return charts.empty("no spectrum: the run diverged before the chosen step")
    dens = spectrum[spectrum.metric == "density"]
    lines = charts.curves(dens.assign(value=dens.value.clip(lower=1e-6)), "density", x="eigenvalue", color="when",
                          log_y=True, y_title="density")
    ticks = alt.Chart(charts.inline(spectrum[spectrum.metric == "top"])).mark_tick(thickness=2, size=18).encode(
        x="eigenvalue:Q", color=alt.Color("when:N", title=None),
        tooltip=["when:N", alt.Tooltip("eigenvalue:Q", format=".4g")])
    return charts.layer(lines, ticks, charts.vertical_rule(2 / step_size, f"2/η = {2 / step_size:.3g}")).properties(
        width=420, height=220, title="Hessian spectrum (top eigenvalues as ticks)")


# candidates for reglab.charts
def reference_curves(frame: pd.DataFrame, x: str, *, x_title: str | None = None, y_title: str | None = None,
                     log: bool = True, color: str = "gray") -> alt.LayerChart:
    """Dashed reference curves (columns x, value, label: one curve per label, e.g. 2/η against η),
    each labelled at its first point; log–log by default, to layer under `charts.against(log_x, log_y)`."""
    scale = alt.Scale(type="log", nice=False) if log else alt.Scale(zero=False, nice=False)
    enc = dict(x=alt.X(f"{x}:Q", title=x_title or x, scale=scale), y=alt.Y("value:Q", title=y_title, scale=scale))
    lines = alt.Chart(charts.inline(frame)).mark_line(strokeDash=[5, 4], color=color).encode(**enc, detail="label:N")
    first = charts.inline(frame.groupby("label", as_index=False, sort=False).first())
    return alt.layer(lines, alt.Chart(first).mark_text(align="left", dx=4, dy=-6, color=color).encode(**enc, text="label:N"))

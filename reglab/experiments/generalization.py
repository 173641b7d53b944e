"""T9 · Generalization measures: which measure predicts the gap, and when none does (Jiang et al. 2020).

A grid over step size η, batch size B, weight decay λ and the rank r of the hidden layer (× seeds) is
trained on sklearn's 8×8 digits: a bias-free ReLU MLP 64 → width → width → 10 whose middle layer is
W = U V of rank r, cross-entropy, plain SGD with coupled weight decay (L2 in the gradient). Every
network is stopped at the same training-loss criterion, as Jiang et al. do (they stop at cross-entropy
0.01): a probe watches the training loss at every evaluation and keeps each member's parameters from the
first evaluation at which its loss is ≤ `criterion`; the ensemble stops once every member has reached it
(or diverged, or `max_steps` ran out: such networks are reported and left out of the correlations).

At that point the theme measures each network's generalization gap (test error − training error) and the
complexity measures of `reglab.metrics.generalization` (parameter norm, spectral-norm product, path norm,
distance from initialization, sharpness λ_max from `reglab.curvature`, PAC-Bayes flatness, inverse
margin), the rank-aware bound of `reglab.metrics.bounds` (theme T3) and 1/(steps to the criterion); then
Kendall's τ of each measure with the gap over the whole grid and Jiang et al.'s granulated Ψ (τ averaged
over the sub-sweeps in which one hyperparameter varies).

The grid trains as batched ensembles through the chunks of `reglab.sweep` (compatible configs together,
sized to its memory budget, each finished chunk written at once and resumed), in this process or on a Ray
cluster (`cluster`), with the measures computed where the chunk trained: see `measured_sweep`.
"""
from __future__ import annotations

import dataclasses
import math

import altair as alt
import numpy as np
import pandas as pd
import torch

from .. import charts
from ..claims import above, at_most, below, every_seed, finite, fmt_number, key, verdict
from ..config import CONSTRAINTS, ConfigError, Interval, ListOf, OneOf, RunConfig, validate
from ..data import make_dataset
from ..engine import train
from ..sweep import sweep
from ..metrics import bounds
from ..metrics import generalization as gm
from ..theme import DEVICE, NON_NEGATIVE, POSITIVE, SEED, Exploration, Param, Theme

HYPERPARAMETERS = ("step_size", "batch_size", "weight_decay", "rank")
SYMBOL = {"step_size": "η", "batch_size": "B", "weight_decay": "λ", "rank": "r"}
# name: (label, formula); all complexity measures: larger should mean a larger gap
MEASURES = {
    "parameter_norm": ("parameter norm", "‖θ‖₂"),
    "spectral_product": ("spectral-norm product", "∏ ‖W_ℓ‖₂"),
    "path_norm": ("path norm", "√(Σ_paths ∏ w²)"),
    "distance_from_init": ("distance from init", "‖θ − θ₀‖₂"),
    "sharpness": ("sharpness", "λ_max(∇²L)"),
    "pac_bayes_flatness": ("PAC-Bayes flatness", "1/σ*²"),
    "rank_bound": ("rank-aware bound", "‖X‖_F/n ∏‖W_ℓ‖₂ Σ√(r_ℓ d_ℓ)"),
    "inverse_margin": ("inverse margin", "1/γ²"),
    "inverse_steps": ("1 / steps", "1/(steps to the criterion)"),
}
FLATNESS = ("sharpness", "pac_bayes_flatness")
PAC_BAYES_EPSILON = 0.1  # the training cross-entropy may rise by this much under the noise (Jiang et al.: 0.1)
PAC_BAYES_SAMPLES = 10
MEASURES_VERSION = "1"  # part of a stored chunk's name: bump when a measure's definition changes
EVALUATIONS = 50  # steps between evaluations: the resolution of the stopping point

# claims (per-measure values are listed in the order of MEASURES)
SOME_SUB_SWEEP_NEGATIVE = every_seed(above(0.0))  # per measure: fraction of one-hyperparameter sub-sweeps with τ < 0
PSI_SIGN_CHANGES = every_seed(at_most(0.0))  # per measure: its smallest ψ_i over the hyperparameters
FLATNESS_ABOVE_SPECTRAL = above(0.0)  # min(Ψ sharpness, Ψ PAC-Bayes flatness) − Ψ spectral-norm product
SPECTRAL_NEGATIVE_IN_ETA = below(0.0)  # ψ_η of the spectral-norm product


@dataclasses.dataclass(frozen=True)
class ClusterAddress:
    """None (this process), "local", "ray" or "ray://host:port": where `reglab.sweep` runs chunks."""

    def accepts(self, value) -> bool:
        return value is None or value in ("local", "ray") or (isinstance(value, str) and value.startswith("ray://"))

    def describe(self) -> str:
        return "None, 'local', 'ray' or 'ray://host:port'"


RANK = Interval(int, 1, 100_000, allow_none=True)
THEME = Theme("09_generalization_measures", {
    "step_sizes": Param([0.05, 0.1, 0.2], ListOf(POSITIVE), "the step sizes η of the grid"),
    "batch_sizes": Param([8, 16, 32], ListOf(Interval(int, 1, 1787)), "the batch sizes B of the grid"),
    "weight_decays": Param([0.0, 0.0003, 0.001], ListOf(NON_NEGATIVE), "the weight decays λ of the grid (coupled)"),
    "ranks": Param([4, 12, None], ListOf(RANK), "the ranks r of the hidden layer W = U V (None: full rank)"),
    "width": Param(32, CONSTRAINTS["width"], "hidden width"),
    "n_train": Param(200, Interval(int, 10, 1787), "training digits (the first n; the rest test)"),
    "criterion": Param(0.02, Interval(float, 0, math.inf, closed="neither"),
                       "stopping criterion: training cross-entropy at which every network is measured", log=True),
    "max_steps": Param(3000, Interval(int, 1, 1_000_000), "step budget; a network not at the criterion by then is "
                       "left out of the correlations"),
    "cluster": Param(None, ClusterAddress(), "where the grid trains: None (this process), 'local', 'ray' or "
                     "'ray://host:port' (a Ray cluster)"),
    "seeds": Param(3, Interval(int, 1, 20), "seeds per grid cell: seed, seed + 1, …", label="seeds"),
    "seed": SEED, "device": DEVICE,
})

# the explorer's controls: which measure against the gap, coloured by which hyperparameter, and which networks are
# compared: the whole grid (τ) or the sub-sweeps in which one hyperparameter alone varies (their mean τ is ψ_i)
VIEW = {"measure": Param("sharpness", OneOf(tuple(MEASURES)), "measure", field="data_options.measure",
                         labels=tuple(label for label, _ in MEASURES.values())),
        "color": Param("step_size", OneOf(HYPERPARAMETERS), "colour by", field="data_options.color",
                       labels=tuple(f"{SYMBOL[h]} ({h.replace('_', ' ')})" for h in HYPERPARAMETERS)),
        "vary": Param("all", OneOf(("all", *HYPERPARAMETERS)), "the networks compared: the whole grid, or the "
                      "sub-sweeps in which one hyperparameter alone varies", label="networks", field="data_options.vary",
                      labels=("the whole grid", *(f"only {SYMBOL[h]} varies" for h in HYPERPARAMETERS)))}


def config(width=32, n_train=200, max_steps=3000, device="auto") -> RunConfig:
    """The grid's base run: digits (the first n_train train), a bias-free ReLU MLP with two hidden layers of
    `width` (the rank, when set, factorizes the middle one), cross-entropy, plain SGD, coupled weight decay,
    an evaluation every EVALUATIONS steps."""
    return RunConfig(data="digits", n_train=n_train, model="mlp", width=width, depth=2, activation="relu", bias=False,
                     rank_layer=1, loss="ce", optimizer="sgd", decay="coupled", steps=max_steps,
                     eval_every=min(EVALUATIONS, max_steps), device=device)


def grid_configs(p) -> list:
    """Every cell of the grid × seeds (rank varies slowest: one ensemble per rank)."""
    base = config(p.width, p.n_train, p.max_steps, p.device)
    return [base.replace(rank=r, step_size=float(eta), batch_size=b, weight_decay=float(lam), seed=p.seed + s)
            for r in p.ranks for eta in p.step_sizes for b in p.batch_sizes for lam in p.weight_decays
            for s in range(p.seeds)]


# ---------------------------------------------------------------------------------------------
# training to the criterion, and the measures where the chunk trained


class CriterionProbe:
    """At every evaluation: every member's training loss; the first time it is ≤ `criterion`, a copy of
    that member's parameters and the step. Also keeps the parameters at initialization. `done()` is True
    once every member has reached the criterion or diverged (the ensemble can stop)."""

    def __init__(self, criterion: float):
        self.criterion = criterion
        self.initial = self.snapshot = self.step = self.alive = None

    def __repr__(self) -> str:
        return f"CriterionProbe({self.criterion!r})"

    def __call__(self, state) -> dict:
        with torch.no_grad():
            if self.initial is None:
                self.initial = {k: v.detach().clone() for k, v in state.params.items()}
                self.snapshot = {k: v.detach().clone() for k, v in state.params.items()}
                self.step = torch.full((len(state.configs),), -1, dtype=torch.long)
            loss = state.loss().detach().cpu()
            hit = (loss <= self.criterion) & (self.step < 0) & state.alive.cpu()
            if bool(hit.any()):
                for k, v in state.params.items():
                    self.snapshot[k][hit.to(v.device)] = v.detach()[hit.to(v.device)]
                self.step[hit] = state.step
            self.alive = state.alive.cpu()
        return {}

    def done(self) -> bool:
        return self.step is not None and bool(((self.step >= 0) | ~self.alive).all())


def measure(run, probe: CriterionProbe) -> pd.DataFrame:
    """One row per member of a trained ensemble: the step at which it reached the criterion (None: never),
    training and test error and the gap there, and every measure of MEASURES at those parameters (a member
    that never reached the criterion is measured at its last parameters and marked `reached` False)."""
    reached = probe.step >= 0
    params = {k: torch.where(reached.to(v.device).view(-1, *[1] * (v.dim() - 1)), probe.snapshot[k], v)
              for k, v in run.params.items()}
    at = dataclasses.replace(run, params=params)
    data = run.data
    with torch.no_grad():
        out_train, out_test = run.model(params, data.x_train), run.model(params, data.x_test)
        err = lambda out, y: (out.argmax(-1) != y).double().mean(-1)
        train_err, test_err = err(out_train, data.y_train), err(out_test, data.y_test)
    weights = bounds.model_weights(run.model, params)
    alive = at.alive
    loss = lambda p: at.loss(p)
    with torch.no_grad():
        train_loss = loss(params)
    values = {
        "parameter_norm": gm.parameter_norm(params),
        "spectral_product": gm.spectral_product(weights),
        "path_norm": gm.path_norm(weights),
        "distance_from_init": gm.distance_from_init(params, probe.initial),
        "sharpness": at.hessian(top=1, tol=1e-3)[:, 0],
        "pac_bayes_flatness": gm.pac_bayes_flatness(gm.pac_bayes_sigma(loss, params, PAC_BAYES_EPSILON,
                                                                       PAC_BAYES_SAMPLES)),
        "rank_bound": bounds.rank_bound(weights, data.x_train, bounds.model_rank_constraints(run.model, params)),
        "inverse_margin": gm.inverse_margin(out_train, data.y_train),
    }
    rows = []
    for m in range(len(run.configs)):
        step = int(probe.step[m]) if bool(reached[m]) else None
        row = {"run": m, "reached": bool(reached[m]), "criterion_step": step, "diverged_at": run.diverged_step(m),
               "train_loss": float(train_loss[m]) if bool(alive[m]) else math.nan,
               "train_error": float(train_err[m]), "test_error": float(test_err[m]),
               "gap": float(test_err[m] - train_err[m]),
               **{name: float(v[m]) if bool(alive[m]) else math.nan for name, v in values.items()},
               "inverse_steps": 1.0 / step if step else math.nan}
        rows.append(row)
    return pd.DataFrame(rows)


def measured_chunk(texts: list, criterion: float, version: int = 0) -> dict:
    """Train one chunk (configs as their text stamps) to the criterion and measure it: what a worker sends
    back (`reglab.sweep.train_chunk` plus the measures). `version` (the measures' version) only keys the
    sweep's store, so stored chunks of older measures are not reused."""
    import time

    start = time.process_time()
    configs = [RunConfig.from_text(t) for t in texts]
    probe = CriterionProbe(criterion)
    run = train(configs, probes=[probe], stop=probe.done, progress=False)
    frames = {"summary": run.summary, "history": run.history, "measures": measure(run, probe)}
    return {**frames, "cpu_seconds": time.process_time() - start, "steps": int(run.history.step.max())}


def measured_sweep(configs: list, criterion: float, *, cluster: str | None = None, store=None,
                   progress: bool | None = None) -> dict:
    """The grid through `reglab.sweep`, with `measured_chunk` as the chunk, so the measures are computed
    where each chunk trained (in this process or on a Ray cluster): {"summary", "history", "measures",
    "chunks", "trained"}, each frame's `run` the config's index; "chunks" has one row per chunk (members,
    steps trained, the CPU seconds its training and measures took where it ran, from_store). Finished
    chunks are stored and read back by the same call, keyed by the configs and the criterion."""
    if not ClusterAddress().accepts(cluster):
        raise ConfigError(f"The 'cluster' parameter of sweep must be {ClusterAddress().describe()}. Got {cluster!r} instead.")
    result = sweep(configs, chunk=measured_chunk, chunk_args=(criterion, MEASURES_VERSION), cluster=cluster, store=store,
                   progress=progress)
    return {**{k: result.frames[k] for k in ("summary", "history", "measures")}, "chunks": result.chunk_table,
            "trained": result.trained}


# ---------------------------------------------------------------------------------------------
# correlations


def networks(configs: list, measures: pd.DataFrame) -> pd.DataFrame:
    """The measures frame with each network's hyperparameters and seed (rank None shown as the width)."""
    settings = pd.DataFrame([{**{h: getattr(c, h) for h in HYPERPARAMETERS}, "seed": c.seed} for c in configs])
    settings["rank"] = [c.rank if c.rank is not None else c.width for c in configs]
    return pd.concat([settings, measures.drop(columns="run")], axis=1).assign(network=range(len(configs)))


def correlations(table: pd.DataFrame) -> tuple:
    """(one row per measure: τ over every measured network, ψ_i per hyperparameter and Ψ; the τ of every
    one-hyperparameter sub-sweep, one row per measure and sub-sweep). Only the networks that reached the
    criterion count, and only the hyperparameters that take several values."""
    ok = measured(table)
    varying = [h for h in HYPERPARAMETERS if ok[h].nunique() > 1]
    rows, subs = [], []
    for name in MEASURES:
        taus = gm.sub_sweep_taus(ok, name, "gap", varying)
        psi, big_psi = gm.psi_of(taus, varying)
        subs.append(taus.assign(measure=name))
        rows.append({"measure": name, "label": MEASURES[name][0], "tau": gm.kendall_tau(ok[name], ok["gap"]),
                     **{f"psi_{h}": psi.get(h, math.nan) for h in HYPERPARAMETERS}, "Psi": big_psi})
    return pd.DataFrame(rows), pd.concat(subs, ignore_index=True)


def measured(table: pd.DataFrame) -> pd.DataFrame:
    """The networks that reached the criterion without diverging: the ones the correlations use."""
    return table[table.reached & table.diverged_at.isna()]


# ---------------------------------------------------------------------------------------------
# the run


@THEME.run
def run(p, result) -> None:
    """Train the grid to the criterion, measure every network, rank-correlate the measures with the gap,
    check the claims."""
    for name in ("step_sizes", "batch_sizes", "weight_decays", "ranks"):
        values = getattr(p, name)
        if len(set(values)) != len(values):
            raise ConfigError(f"The '{name}' parameter of {THEME.notebook}.run must be a list without repeated "
                              f"values. Got {values!r} instead.")
    configs = grid_configs(p)
    data = make_dataset("digits", p.n_train)
    for c in configs:
        validate(c, n_train=data.n_train)
    with result.timed("training and measures"):
        out = measured_sweep(configs, p.criterion, cluster=p.cluster)
    table = networks(configs, out["measures"])
    with result.timed("correlations"):
        corr, subs = correlations(table)
    ok = measured(table)
    varying = [h for h in HYPERPARAMETERS if ok[h].nunique() > 1]
    result.frames.update(networks=table, correlations=corr, sub_sweeps=subs, history=out["history"], chunks=out["chunks"])
    missed = table[~table.reached & table.diverged_at.isna()]
    diverged = table[table.diverged_at.notna()]

    m = result.metrics
    m.update({"networks": len(table), "measured": len(ok), "not_at_criterion": len(missed), "diverged": len(diverged),
              "gap_median": float(ok.gap.median()) if len(ok) else math.nan,
              "gap_min": float(ok.gap.min()) if len(ok) else math.nan,
              "gap_max": float(ok.gap.max()) if len(ok) else math.nan})
    by = corr.set_index("measure")
    for name in MEASURES:
        m[key("tau", measure=name)] = by.tau[name]
        m[key("Psi", measure=name)] = by.Psi[name]

    negative = [float((subs.tau[subs.measure == n] < 0).mean()) if (subs.measure == n).any() else math.nan
                for n in MEASURES]
    lowest = by[[f"psi_{h}" for h in HYPERPARAMETERS]].min(axis=1, skipna=True)
    always = [MEASURES[n][0] for n in MEASURES if (finite(lowest[n]) or 0) > 0]
    flat = min(by.Psi[n] for n in FLATNESS) - by.Psi["spectral_product"]
    best = by.Psi.idxmax() if by.Psi.notna().any() else None
    left_out = (f"{len(missed)} network(s) not at the criterion within {p.max_steps} steps and {len(diverged)} "
                "diverged, left out" if len(missed) or len(diverged) else "")
    unmeasurable = {f"{len(diverged)} of {len(table)} networks": int(diverged.diverged_at.min())} \
        if len(ok) < 3 and len(diverged) else {}
    result.claims = [
        verdict("no_measure_always_positive", f"No measure has τ > 0 in every one-hyperparameter sub-sweep: each has "
                f"τ < 0 in some (fraction of its {len(subs) // len(MEASURES)} sub-sweeps with τ < 0, per measure)",
                negative, SOME_SUB_SWEEP_NEGATIVE, "; ".join(filter(None, [left_out, "in the order " + ", ".join(
                    label for label, _ in MEASURES.values())])), unmeasurable),
        verdict("psi_changes_sign", "Averaged per hyperparameter (ψ_i), every measure still has a hyperparameter "
                "whose sub-sweeps rank it against the gap (smallest ψ_i per measure)", lowest.tolist(), PSI_SIGN_CHANGES,
                "ψ_i > 0 for every hyperparameter: " + (", ".join(always) if always else "none"), unmeasurable,
                informational=True),
        verdict("flatness_above_spectral", "Sharpness- and flatness-based measures rank above the spectral-norm "
                "product on Ψ (min(Ψ sharpness, Ψ PAC-Bayes flatness) − Ψ spectral-norm product)", flat,
                FLATNESS_ABOVE_SPECTRAL, f"Ψ: sharpness {fmt_number(by.Psi['sharpness'])}, PAC-Bayes flatness "
                f"{fmt_number(by.Psi['pac_bayes_flatness'])}, spectral-norm product "
                f"{fmt_number(by.Psi['spectral_product'])}; highest Ψ: "
                + (f"{MEASURES[best][0]} {fmt_number(by.Psi[best])}" if best else "—"), unmeasurable),
        verdict("spectral_negative_in_step_size", "The spectral-norm product correlates negatively with the gap when "
                "only the step size varies (ψ_η)", by.loc["spectral_product", "psi_step_size"],
                SPECTRAL_NEGATIVE_IN_ETA, "" if "step_size" in varying else "one step size only: no η sub-sweep",
                unmeasurable),
    ]
    m.update({key("sub_sweeps_negative", measure=n): v for n, v in zip(MEASURES, negative)})
    m.update({key("psi", measure="spectral_product", hyperparameter="step_size"):
              by.loc["spectral_product", "psi_step_size"], "flatness_minus_spectral_Psi": flat})
    view = config(p.width, p.n_train, p.max_steps, p.device).replace(
        data_options={name: VIEW[name].default for name in VIEW})
    result.exploration = Exploration(view, scatter_view, run=_ViewRun(table), initial=view_frame(table), controls=VIEW,
                                     common=(), n_train=p.n_train, presets=PRESETS, learned=learned)


# ---------------------------------------------------------------------------------------------
# the explorer: a view of the run's networks (nothing trains)


def view_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The networks as tidy rows (run = network, step 0): the gap, every measure, every hyperparameter and
    the seed (a sub-sweep fixes the seed too), and `reached` (1: measured at the criterion, 0: left out)."""
    cols = ["gap", "reached", *MEASURES, *HYPERPARAMETERS, "seed"]
    t = table.assign(reached=table.reached.astype(float) * table.diverged_at.isna().astype(float))
    return t.melt(id_vars="network", value_vars=cols, var_name="metric", value_name="value").rename(
        columns={"network": "run"}).assign(step=0)[["run", "step", "metric", "value"]]


class _ViewRun:
    """The explorer's run: the same networks whatever the controls say (the chart picks the columns)."""

    def __init__(self, table: pd.DataFrame):
        self.frame = view_frame(table)

    def __call__(self, cfg, on_eval=None, stop=None) -> pd.DataFrame:
        if on_eval is not None:
            on_eval(self.frame.to_dict("records"), 0)
        return self.frame


def _options(config: RunConfig | None) -> tuple:
    """(measure, colour, vary) chosen in the config's data_options, defaults where absent."""
    options = config.data_options if config is not None else {}
    return tuple(options.get(name, VIEW[name].default) for name in ("measure", "color", "vary"))


def _wide(frame: pd.DataFrame) -> pd.DataFrame:
    """The view frame (tidy, as the explorer streams it) back to one row per measured network, in the
    columns of the run's `networks` table that `correlations` reads (the current view only: in compare
    mode every view shows the same networks)."""
    if "current" in frame.columns:
        frame = frame[frame["current"].fillna(True).astype(bool)]
    columns = ["gap", "reached", *MEASURES, *HYPERPARAMETERS, "seed"]
    if frame.empty:
        return pd.DataFrame(columns=["run", *columns, "diverged_at"])
    wide = frame.pivot_table(index="run", columns="metric", values="value", aggfunc="first", dropna=False)
    wide = wide.reindex(columns=[c for c in columns if c in set(frame.metric)]).reset_index()  # all-NaN measures too
    wide = wide[wide.get("reached", 1) > 0]
    return wide.assign(reached=True, diverged_at=math.nan)


def sub_sweeps(table: pd.DataFrame, vary: str) -> pd.Series:
    """Each network's sub-sweep along `vary`: an id shared by the networks that differ only in `vary` (every
    other varying hyperparameter and the seed equal, as in `gm.sub_sweep_taus`); NaN for a network alone in
    its group, which no τ counts."""
    varying = [h for h in HYPERPARAMETERS if table[h].nunique() > 1]
    others = [c for c in [*varying, "seed"] if c != vary and c in table.columns]
    ids = table.groupby(others, dropna=False).ngroup() if others else pd.Series(0, index=table.index)
    sizes = table.groupby(ids)[vary].transform("nunique")
    return ids.where(sizes > 1)


def scatter_view(frame: pd.DataFrame, config: RunConfig | None = None):
    """The explorer's chart: the measure chosen in the config's data_options against the gap, coloured by the
    chosen hyperparameter, τ in the title; with one hyperparameter chosen to vary, each of its sub-sweeps
    joined by a line (green where its τ > 0, red where τ < 0) and ψ, their mean τ, in the title."""
    measure, color, vary = _options(config)
    return scatter(_wide(frame), measure, color, vary=None if vary == "all" else vary)


def scatter(table: pd.DataFrame, measure: str, color: str, width: int = 420, height: int = 260,
            vary: str | None = None) -> alt.Chart | alt.LayerChart:
    """One point per network: `measure` (log scale) against the gap, coloured by hyperparameter `color`;
    with `vary`, the networks of each sub-sweep in which only `vary` changes joined in its order."""
    if measure not in MEASURES or color not in HYPERPARAMETERS or vary not in (None, *HYPERPARAMETERS):
        raise ConfigError(f"scatter takes a measure in {', '.join(MEASURES)}, a colour in {', '.join(HYPERPARAMETERS)} "
                          f"and vary None or one of those. Got {measure!r}, {color!r}, {vary!r} instead.")
    if vary is not None:  # sub-sweeps of every network, as `correlations` groups them, before missing values drop
        table = table.assign(sub_sweep=sub_sweeps(table, vary))
    rows = table[np.isfinite(table[measure].astype(float)) & np.isfinite(table["gap"].astype(float))]
    rows = rows.assign(**{SYMBOL[color]: rows[color].astype(float)})  # numeric: the legend in numeric order
    tau = gm.kendall_tau(rows[measure], rows["gap"])
    label, formula = MEASURES[measure]
    positive = bool(len(rows)) and bool((rows[measure] > 0).all())
    x = alt.X(f"{measure}:Q", title=f"{label}  {formula}",
              scale=alt.Scale(type="log", nice=False) if positive else alt.Scale(zero=False))
    y = alt.Y("gap:Q", title="generalization gap (test − train error)", scale=alt.Scale(zero=False))
    points = alt.Chart(charts.inline(rows[[measure, "gap", SYMBOL[color]]])).mark_point(
        filled=True, size=45, opacity=0.75).encode(
        x=x, y=y, color=alt.Color(f"{SYMBOL[color]}:O", title=SYMBOL[color], scale=alt.Scale(scheme="viridis")),
        tooltip=[alt.Tooltip(f"{measure}:Q", format=".4g"), alt.Tooltip("gap:Q", format=".4f"), f"{SYMBOL[color]}:O"])
    title = f"{label} vs the gap: τ = {fmt_number(tau, '.2f')} over {len(rows)} networks"
    if vary is None:
        return points.properties(width=width, height=height, title=title)
    rows = rows.assign(order=rows[vary].astype(float)).dropna(subset=["sub_sweep"])
    taus = pd.Series({k: gm.kendall_tau(g[measure], g["gap"]) for k, g in rows.groupby("sub_sweep")}, dtype=float)
    rows = rows.assign(sign=rows["sub_sweep"].map(np.sign(taus)).fillna(0.0))  # 0: τ undefined (ties)
    lines = [alt.Chart(charts.inline(rows[rows.sign == s][[measure, "gap", "sub_sweep", "order"]])).mark_line(
        color=c, opacity=0.45, strokeWidth=1.2).encode(x=x, y=y, detail="sub_sweep:N", order="order:Q")
        for s, c in ((1.0, "#2e7d32"), (-1.0, "#c62828"), (0.0, "#999999")) if (rows.sign == s).any()]
    psi = float(taus.mean()) if taus.notna().any() else math.nan
    sub = (f"ψ {SYMBOL[vary]} = {fmt_number(psi, '.2f')}: mean τ of {int(taus.notna().sum())} sub-sweeps where only "
           f"{SYMBOL[vary]} varies (green τ > 0, red τ < 0)" if len(taus) else f"no sub-sweep varies {SYMBOL[vary]} alone here")
    return alt.layer(*lines, points).properties(width=width, height=height, title=alt.TitleParams(title, subtitle=sub))


_CORRELATIONS: dict = {}  # content hash of a view's networks -> their correlations (every view shows the same ones)


def _correlations_of(table: pd.DataFrame) -> pd.DataFrame:
    """`correlations(table)[0]`, kept for the next draw (~0.7 s on the default grid of 243 networks)."""
    key = int(pd.util.hash_pandas_object(table[["gap", *MEASURES, *HYPERPARAMETERS, "seed"]], index=False).sum())
    if key not in _CORRELATIONS:
        _CORRELATIONS.clear()
        _CORRELATIONS[key] = correlations(table)[0]
    return _CORRELATIONS[key]


def learned(frame: pd.DataFrame, config: RunConfig | None = None):
    """What each measure captures of the gap, over the networks the explorer shows: Kendall τ over the whole
    grid and the granulated coefficient of the current choice (Ψ over every hyperparameter, or ψ of the one
    chosen to vary), one pair of bars per measure, the chosen measure in full colour. The numbers are those of
    `correlations` (the notebook's table) on the same networks."""
    measure, _, vary = _options(config)
    table = _wide(frame)
    if len(table) < 2:
        return charts.empty("the rank correlations appear once two networks are measured")
    corr = _correlations_of(table)
    granulated, name = ("Psi", "Ψ (mean of the ψ_i)") if vary == "all" else (f"psi_{vary}", f"ψ {SYMBOL[vary]}")
    bars = corr[["measure", "label", "tau", granulated]].rename(columns={"tau": "τ (whole grid)", granulated: name})
    bars = bars.melt(id_vars=["measure", "label"], var_name="coefficient", value_name="value").dropna(subset=["value"])
    if bars.empty:
        return charts.empty("no rank correlation is defined on these networks (every gap or measure tied)")
    bars = bars.assign(chosen=bars.measure == measure)
    order = ["τ (whole grid)", name]
    chart = alt.Chart(charts.inline(bars)).mark_bar().encode(
        x=alt.X("label:N", title=None, sort=[MEASURES[m][0] for m in MEASURES], axis=alt.Axis(labelAngle=-30)),
        xOffset=alt.XOffset("coefficient:N", sort=order),
        y=alt.Y("value:Q", title="Kendall τ with the gap", scale=alt.Scale(domain=[-1, 1])),
        color=alt.Color("coefficient:N", sort=order, title=None, legend=alt.Legend(orient="top")),
        opacity=alt.condition("datum.chosen", alt.value(1.0), alt.value(0.4)),
        tooltip=["label:N", "coefficient:N", alt.Tooltip("value:Q", format=".3f")])
    zero = alt.Chart({"values": [{"zero": 0}]}).mark_rule(color="gray").encode(y="zero:Q")
    return alt.layer(chart, zero).resolve_scale(color="independent").properties(  # not merged with the scatter's colours
        width=600, height=170, title=f"what the measures capture: rank correlation with the gap ({MEASURES[measure][0]} "
                                     "in full colour)")


# the explorer's guided scenarios (controls: measure, colour by, networks)
PRESETS = {
    "sharpness vs the gap": {
        "question": "Over the whole grid, do sharper networks (larger λ_max) have larger gaps, and which "
                    "hyperparameter's colours sort the points?",
        "values": {"data_options.measure": "sharpness", "data_options.color": "step_size", "data_options.vary": "all"},
        "lock": ("data_options.measure",)},
    "spectral product when only η varies": {
        "question": "Within each sub-sweep where only η changes, does the spectral-norm product rise or fall with the "
                    "gap, and which sign does ψ η have?",
        "values": {"data_options.measure": "spectral_product", "data_options.color": "step_size",
                   "data_options.vary": "step_size"}, "lock": ("data_options.vary",)},
    "flatness when only B varies": {
        "question": "When only the batch size B changes, do the flatter networks (smaller 1/σ*²) have the smaller "
                    "gaps, and does the whole grid say the same?",
        "values": {"data_options.measure": "pac_bayes_flatness", "data_options.color": "batch_size",
                   "data_options.vary": "batch_size"}, "lock": ("data_options.vary",)},
    "the rank-aware bound when only r varies": {
        "question": "When only the rank r of the hidden layer changes, does the rank-aware bound order the networks "
                    "by their gap?",
        "values": {"data_options.measure": "rank_bound", "data_options.color": "rank", "data_options.vary": "rank"},
        "lock": ("data_options.vary",)},
}


# ---------------------------------------------------------------------------------------------
# charts


def gap_chart(result) -> alt.HConcatChart:
    """The gap against each hyperparameter of the grid (one dot per network, a line through the medians)."""
    t = result.frames["networks"]
    t = t[t.reached & t.diverged_at.isna()]
    panels = [charts.against(t, h, "gap", log_x=h != "weight_decay" or bool((t[h] > 0).all()),
                             x_title=f"{SYMBOL[h]} ({h.replace('_', ' ')})", y_title="gap" if i == 0 else " ",
                             width=185, height=170) for i, h in enumerate(HYPERPARAMETERS)]
    return charts.row(*panels, spacing=12).properties(title="The generalization gap across the grid")


def tau_chart(result) -> alt.Chart:
    """Jiang et al.'s figure: for every measure, ψ_i of each hyperparameter, Ψ and τ over the whole grid."""
    corr = result.frames["correlations"]
    long = corr.melt(id_vars=["measure", "label"], value_vars=[*(f"psi_{h}" for h in HYPERPARAMETERS), "Psi", "tau"],
                     var_name="coefficient", value_name="value")
    names = {**{f"psi_{h}": f"ψ {SYMBOL[h]}" for h in HYPERPARAMETERS}, "Psi": "Ψ", "tau": "τ (all)"}
    long["coefficient"] = long["coefficient"].map(names)
    return grouped_bars(long, "label", "value", "coefficient", order=list(names.values()),
                        title="Rank correlation with the gap: ψ per hyperparameter, Ψ and τ", y_title="Kendall τ")


def by_measure(result) -> pd.DataFrame:
    """The correlation table as the notebook shows it (rounded, one row per measure)."""
    corr = result.frames["correlations"].set_index("label")
    cols = {**{f"psi_{h}": f"ψ {SYMBOL[h]}" for h in HYPERPARAMETERS}, "Psi": "Ψ", "tau": "τ"}
    return corr[list(cols)].rename(columns=cols).round(3)


# ---------------------------------------------------------------------------------------------
# candidates for reglab.charts


def grouped_bars(frame: pd.DataFrame, x: str, y: str, group: str, *, order=None, title=None, y_title=None,
                 width: int = 880, height: int = 220) -> alt.Chart:
    """Bars of `y` for every `x` category, the `group` categories side by side within it (e.g. one bar per
    hyperparameter for every measure), with a rule at 0."""
    base = alt.Chart(charts.inline(frame[[x, y, group]].dropna())).encode(
        x=alt.X(f"{x}:N", title=None, sort=list(dict.fromkeys(frame[x])), axis=alt.Axis(labelAngle=-20)),
        xOffset=alt.XOffset(f"{group}:N", sort=order),
        y=alt.Y(f"{y}:Q", title=y_title or y, scale=alt.Scale(domain=[-1, 1])),
        color=alt.Color(f"{group}:N", sort=order, title=None, legend=alt.Legend(orient="top")),
        tooltip=[f"{x}:N", f"{group}:N", alt.Tooltip(f"{y}:Q", format=".3f")])
    zero = alt.Chart({"values": [{"zero": 0}]}).mark_rule(color="gray").encode(y="zero:Q")
    return alt.layer(base.mark_bar(), zero).properties(width=width, height=height, **({"title": title} if title else {}))

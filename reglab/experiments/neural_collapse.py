"""Neural collapse: NC1–NC4 over training and across layers (Papyan, Han & Donoho 2020).

An MLP (4 hidden layers of 128, BatchNorm + ReLU) learns sklearn's 8×8 digits with cross-entropy and
SGD with momentum and weight decay, well past zero training error. Every few epochs a probe computes
the metrics of `reglab.metrics.collapse` on the whole training set, for every member: NC1
tr(Σ_W Σ_B⁺)/C of the classifier's input and of every hidden layer; NC2 the centred class means vs a
simplex ETF (equal norms, pairwise cosines → −1/(C−1)); NC3 the distance between the normalized
classifier rows and centred class means; NC4 the fraction of training examples where the network's
decision differs from the nearest class centre. The seeds (and the λ comparison's extra weight decays)
are members of one ensemble; claims are checked per seed.

BatchNorm uses the statistics of the batch at hand, in training and in evaluation alike (the core MLP
keeps no running averages): every metric is computed on the full training set as one batch.

`classes` (digits 0 … classes−1) and `imbalance` (class c keeps a fraction imbalance^(−c/(C−1)) of its
training examples) live in `data_options`, so a config stamp recreates the run. `rank` factorizes the
classifier (rank_layer = depth): logits = (h U) V + b, and the feature whose collapse is measured is
then z = h U, of dimension r (r < C − 1 leaves no room for a simplex ETF).
"""
from __future__ import annotations

import dataclasses
import math

import altair as alt
import numpy as np
import pandas as pd
import torch

from .. import charts
from ..claims import Rule, at_least, at_most, below, every_seed, finite, fmt_number, key, per_seed, verdict
from ..config import CONSTRAINTS, Interval, ListOf, RunConfig, validate
from ..data import Dataset, make_dataset
from ..engine import train
from ..metrics import collapse
from ..theme import DEVICE, NON_NEGATIVE, POSITIVE, SEED, SEEDS, Exploration, Param, Theme

N_CLASSES = 10  # sklearn digits
EVALS = 100  # evaluations per run (every 3 epochs at the defaults: locates zero training error)
FALL, MISMATCH = 5.0, 0.01
NC1_FALLS = every_seed(at_least(FALL))  # NC1(zero training error) / NC1(end)
NC3_FALLS = every_seed(below(1.0))  # NC3(end) / NC3(zero training error)
NC4_NCC = every_seed(at_most(MISMATCH))  # mismatch with the nearest-class-centre rule at the end
DEPTH_FALLS = every_seed(below(1.0))  # the largest NC1(layer k+1) / NC1(layer k) at the end
WD_FALLS = Rule("strictly decreasing in λ", lambda vs: len(vs) > 1 and None not in (xs := [finite(v) for v in vs])
                and all(b < a for a, b in zip(xs, xs[1:])))  # NC1 at the end, in order of λ

THEME = Theme("05_neural_collapse", {
    "step_size": Param(0.05, POSITIVE, "step size η", log=True),
    "batch_size": Param(128, CONSTRAINTS["batch_size"], "batch size B (None: full batch)"),
    "weight_decay": Param(0.0005, NON_NEGATIVE, "weight decay λ (coupled, on every parameter)"),
    "rank": Param(None, CONSTRAINTS["rank"], "feature dimension r: the classifier becomes (h U) V with U of rank r "
                  "(None: full)", label="feature dimension r"),
    "width": Param(128, CONSTRAINTS["width"], "hidden width"),
    "depth": Param(4, Interval(int, 1, 64), "hidden layers"),
    "momentum": Param(0.9, CONSTRAINTS["momentum"], "heavy-ball momentum β"),
    "steps": Param(3300, Interval(int, 1, 1_000_000), "training steps (110 ≈ 10 epochs at the defaults)",
                   label="steps (110 ≈ 10 epochs)", slider=(110, 6600)),
    "lr_schedule": Param("step", CONSTRAINTS["lr_schedule"], "step-size schedule (step: ÷10 at ½ and ¾)"),
    "classes": Param(N_CLASSES, Interval(int, 2, N_CLASSES), "classes: digits 0 … classes − 1"),
    "imbalance": Param(1.0, Interval(float, 1, 1e4), "imbalance ratio: class c keeps imbalance^(−c/(C−1)) of its "
                       "examples (1: balanced)", field="data_options.imbalance", slider=(1, 50)),
    "n_train": Param(1400, Interval(int, 10, 1787), "training digits (the first n)"),
    "compare_weight_decay": Param([], ListOf(NON_NEGATIVE, at_least=0), "extra λ values trained at seed `seed`"),
    "seeds": SEEDS, "seed": SEED, "device": DEVICE,
})


def config(**values) -> RunConfig:
    """The reference run (any declared parameter overrides it): digits, `depth` hidden layers of
    `width` with BatchNorm + ReLU, CE, SGD with heavy-ball momentum and coupled weight decay on every
    parameter (what torch.optim.SGD's weight_decay does), learning rate ÷10 at ½ and ¾ of training.
    3300 steps of B = 128 on 1400 examples ≈ 300 epochs."""
    p = THEME.validate(values, owner="neural_collapse.config")
    fields = ("n_train", "width", "depth", "rank", "step_size", "batch_size", "momentum", "weight_decay", "lr_schedule",
              "steps", "seed", "device")
    return RunConfig(data="digits", data_options={"classes": p["classes"], "imbalance": p["imbalance"]}, model="mlp",
                     activation="relu", batchnorm=True, rank_layer=p["depth"], loss="ce", optimizer="sgd", decay="coupled",
                     decay_biases=True, eval_every=max(1, p["steps"] // EVALS), **{k: p[k] for k in fields})


def dataset(cfg: RunConfig) -> Dataset:
    """Digits restricted to `classes` classes and subsampled by `imbalance` (from cfg.data_options); a
    ConfigError names the class when one is left with fewer than 2 training examples."""
    options, owner = dict(cfg.data_options), "neural_collapse data_options"
    classes = THEME.params["classes"].check("classes", options.pop("classes", None) or N_CLASSES, owner)
    imbalance = THEME.params["imbalance"].check("imbalance", options.pop("imbalance", None) or 1.0, owner)
    base = make_dataset(cfg.data, cfg.n_train, cfg.data_seed, **options)
    y, keep = base.y_train, base.y_train < classes
    if imbalance > 1.0:
        keep = torch.zeros_like(keep)
        for c in range(classes):
            idx = torch.nonzero(y == c).flatten()
            keep[idx[: max(1, int(round(imbalance ** (-c / max(classes - 1, 1)) * len(idx))))]] = True
    test = base.y_test < classes
    data = Dataset("digits", base.x_train[keep], y[keep], base.x_test[test], base.y_test[test], "classification",
                   classes, dict(base.info, classes=classes, imbalance=imbalance))
    collapse.check_labels(data.y_train, data.n_classes)
    return data


def epochs_per_step(cfg: RunConfig, n_train: int) -> float:
    return (cfg.batch_size or n_train) / n_train


# ---------------------------------------------------------------------------------------------
# the probe: NC metrics of every member at every evaluation


class CollapseProbe:
    """`probe(state) -> {metric: [M]}`: NC1–NC4 on the classifier's input features, NC1 of every
    hidden layer (`nc1_layer1` …), and a copy of the pairwise cosines of the centred class means and
    of the classifier rows at every evaluation (in `self.cosines`, step -> two [M, C, C] tensors)."""

    def __init__(self):
        self.cosines: dict = {}

    def __call__(self, state) -> dict:
        model, params, data = state.model, state.params, state.data
        C, L, y = data.n_classes, len(model.dims) - 2, data.y_train
        with torch.no_grad():
            feats = state.features("train")
            h, w, b = classifier_inputs(params, feats, L)
            out = collapse.collapse_metrics(h, y, w, b, C)
            for k, f in enumerate(feats, start=1):
                out[f"nc1_layer{k}"] = out["nc1"] if (k == L and h is f) else collapse.nc1(f, y, C)
            self.cosines[state.step] = (collapse.pairwise_cosines(collapse.centred_class_means(h, y, C)).float().cpu(),
                                        collapse.pairwise_cosines(w - w.mean(1, keepdim=True)).float().cpu())
        return out


def classifier_inputs(params: dict, feats: list, depth: int):
    """(features the classifier sees [M, n, d], classifier rows [M, C, d], bias [M, C] or None).
    A factorized classifier U Vᵀ (rank set) sees z = h U and has rows Vᵀ."""
    if f"W{depth}" in params:
        h, w = feats[-1], params[f"W{depth}"].transpose(1, 2)  # W is [M, d, C]: its columns are the rows
    else:
        h, w = feats[-1] @ params[f"U{depth}"], params[f"V{depth}"].transpose(1, 2)
    return h, w, params.get(f"b{depth}")


def train_members(configs: list, on_eval=None, stop=None, data: Dataset | None = None):
    """Train configs (one ensemble) with the collapse probe: (Run, probe)."""
    probe = CollapseProbe()
    data = data or dataset(configs[0])
    return train(configs, data=data, probes=[probe], on_eval=on_eval, stop=stop, progress=False), probe


def explore(config: RunConfig, on_eval=None, stop=None):
    """The explorer's run: one config, streamed, with the collapse probe (~EVALS evaluations at any steps)."""
    return train_members([config.replace(eval_every=max(1, config.steps // EVALS))], on_eval, stop)[0]


def zero_error_step(history: pd.DataFrame, run: int) -> int | None:
    """First evaluated step at which training accuracy is 100 % (None: never)."""
    hit = history[(history.run == run) & (history.metric == "train_acc") & (history.value >= 1.0 - 1e-9)]
    return None if hit.empty else int(hit.step.min())


def _ratio(a, b):
    """a / b for finite a and positive finite b, else None."""
    a, b = finite(a), finite(b)
    return None if a is None or b is None or b <= 0 else a / b


def _largest_step(values: list):
    """The largest ratio of consecutive values (None when one is missing or there is only one)."""
    ratios = [_ratio(b, a) for a, b in zip(values, values[1:])]
    return None if not ratios or None in ratios else max(ratios)


def by_seed(result, name: str) -> list:
    """A per-seed metric's values, in seed order."""
    return [result.metrics[key(name, seed=result.params["seed"] + i)] for i in range(result.params["seeds"])]


@THEME.run
def run(p, result) -> None:
    """Train `seeds` seeds at the settings, plus seed `seed` at each λ in `compare_weight_decay`, as one
    ensemble; compute NC1–NC4 over training and per layer; check the claims for every seed."""
    base = config(**vars(p))
    data = dataset(base)
    validate(base, n_train=data.n_train)
    lambdas = sorted(set(map(float, p.compare_weight_decay)) - {p.weight_decay})
    configs = [base.replace(seed=p.seed + i) for i in range(p.seeds)] + [base.replace(weight_decay=l) for l in lambdas]
    with result.timed("training"):
        r, probe = train_members(configs, data=data)
    h, last, members = r.history, int(r.history.step.max()), range(p.seeds)
    at = h.set_index(["run", "metric", "step"])["value"]
    value = lambda m, name, step: None if step is None else float(at.get((m, name, step), math.nan))
    seeds = [c.seed for c in configs[: p.seeds]]
    zero = [zero_error_step(h, m) for m in members]
    end = {name: [value(m, name, last) for m in members] for name in
           ["nc1", "nc3", "nc4", "nc2_equinorm", "nc2_maxangle", "train_acc", "test_acc"]}
    nc1_zero, nc3_zero = ([value(m, name, z) for m, z in zip(members, zero)] for name in ("nc1", "nc3"))
    layers = [[value(m, f"nc1_layer{k}", last) for k in range(1, p.depth + 1)] for m in members]
    drops = [_ratio(a, b) for a, b in zip(nc1_zero, end["nc1"])]
    per_step = epochs_per_step(base, data.n_train)
    for name, values in [("zero_error_epoch", [None if z is None else round(z * per_step, 2) for z in zero]),
                         ("nc1_at_zero_error", nc1_zero), ("nc1_end", end["nc1"]), ("nc1_drop", drops),
                         ("nc3_at_zero_error", nc3_zero), ("nc3_end", end["nc3"]), ("nc4_end", end["nc4"]),
                         ("nc2_equinorm_end", end["nc2_equinorm"]), ("nc2_maxangle_end", end["nc2_maxangle"]),
                         *((f"nc1_layer{k}_end", [ls[k - 1] for ls in layers]) for k in range(1, p.depth + 1)),
                         ("train_acc", end["train_acc"]), ("test_acc", end["test_acc"]),
                         ("diverged_at", [r.diverged_step(m) for m in members])]:
        result.metrics.update(per_seed(name, values, seeds))

    diverged = {f"seed {s}": r.diverged_step(m) for m, s in zip(members, seeds)}
    missed = "; ".join(f"seed {s}: never reached zero training error" for s, z in zip(seeds, zero)
                       if z is None and diverged[f"seed {s}"] is None)
    result.claims = [
        verdict("nc1_falls_after_zero_error", f"NC1 falls ≥ {FALL:g}× from the epoch of zero training error to "
                "the end of training (NC1 then / NC1 at the end, per seed)", drops, NC1_FALLS, missed, diverged),
        verdict("nc3_aligns", "NC3: the classifier rows align further with the class means after zero training "
                "error (NC3 at the end / NC3 then, per seed)", [_ratio(b, a) for a, b in zip(nc3_zero, end["nc3"])],
                NC3_FALLS, missed, diverged),
        verdict("nc4_nearest_centre", f"NC4: the network decides like the nearest-class-centre rule (mismatch on "
                f"the training set ≤ {MISMATCH:.0%}, per seed)", end["nc4"], NC4_NCC, diverged=diverged),
        verdict("nc1_falls_with_depth", "NC1 decreases with depth across the hidden layers at the end of training "
                "(largest NC1(layer k+1) / NC1(layer k), per seed)", [_largest_step(ls) for ls in layers],
                DEPTH_FALLS, "" if p.depth > 1 else "one hidden layer: nothing to compare", diverged),
    ]
    by_wd = sorted((c.weight_decay, m) for m, c in enumerate(configs) if c.seed == p.seed)
    if len(by_wd) > 1:
        ends = [value(m, "nc1", last) for _, m in by_wd]
        result.metrics.update({key("nc1_end", wd=l): v for (l, _), v in zip(by_wd, ends)})
        result.claims.append(verdict(
            "weight_decay_lowers_nc1", f"Weight decay speeds up collapse: more λ, lower NC1 at the end (seed "
            f"{p.seed}, λ = {', '.join(f'{l:g}' for l, _ in by_wd)})", ends, WD_FALLS,
            f"NC1 at λ = {by_wd[-1][0]:g} is {fmt_number(_ratio(ends[-1], ends[0]), '.3g')}× NC1 at λ = {by_wd[0][0]:g}",
            {f"λ = {l:g}": r.diverged_step(m) for l, m in by_wd}))

    frame = charts.tidy(r).assign(epoch=lambda f: f["step"] * per_step)
    roles = pd.DataFrame({"run": range(len(configs)), "seed": [c.seed for c in configs], "role": ["seed"] * p.seeds
                          + ["λ comparison"] * len(lambdas), "weight_decay": [c.weight_decay for c in configs]})
    result.frames["history"] = frame.merge(roles, on="run")
    result.frames["layers"] = pd.DataFrame([{"seed": s, "layer": k, "nc1": v} for s, ls in zip(seeds, layers)
                                            for k, v in enumerate(ls, start=1)])
    result.frames["cosines"] = _cosine_frame(probe, zero, seeds, data.n_classes)
    result.runs["train"] = r
    rank = dataclasses.replace(THEME.params["rank"], slider=(1, p.width))
    result.exploration = Exploration(base, chart, run=explore, initial=frame[frame.run == 0], controls={
        "rank": rank, "steps": THEME.params["steps"], "imbalance": THEME.params["imbalance"]})


def _cosine_frame(probe, zero, seeds, C) -> pd.DataFrame:
    """Pairwise cosines (c < c') of the centred class means and of the classifier rows, for every seed,
    at initialization, at zero training error and at the end."""
    rows, iu = [], np.triu_indices(C, 1)
    for m, (seed, z) in enumerate(zip(seeds, zero)):
        for moment, step in [("initialization", 0), ("zero training error", z), ("end", max(probe.cosines))]:
            for what, mats in zip(("class means", "classifier rows"), probe.cosines.get(step, ())):
                rows += [{"seed": seed, "moment": moment, "of": what, "cosine": float(v)} for v in mats[m].numpy()[iu]]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# charts

PANELS = [("nc1", "NC1  tr(Σ_W Σ_B^+)/C", True, "NC1"), ("nc2_equinorm", "NC2  std/mean of class-mean norms", True,
          "NC2 (norms)"), ("nc2_maxangle", "NC2  mean |cos + 1/(C−1)|", True, "NC2 (angles)"),
          ("nc3", "NC3  ‖W/‖W‖ − M/‖M‖‖²", True, "NC3"), ("nc4", "NC4  mismatch with nearest class centre", False,
          "fraction of training examples"), ("train_acc", "training accuracy", False, "accuracy")]
SMALL = dict(x="epoch", log_x=True, width=230, height=160)


def _zero_error_rules(frame: pd.DataFrame) -> list:
    """A dashed rule at each distinct epoch of zero training error (current runs only), labelled once."""
    acc = frame[(frame.metric == "train_acc") & (frame.value >= 1.0 - 1e-9)]
    if "current" in acc.columns:
        acc = acc[acc["current"].fillna(True).astype(bool)]
    by_run = acc.groupby([k for k in ("label", "run") if k in acc.columns])["epoch"].min() if len(acc) else []
    epochs = sorted(set(by_run))
    return [charts.vertical_rule(e, "zero training error" if i == 0 else " ") for i, e in enumerate(epochs)]


def chart(frame: pd.DataFrame, config: RunConfig | None = None, color: str | None = None):
    """NC1, NC2 (norms and angles), NC3, NC4 and training accuracy against epochs (symlog), the epoch of
    zero training error marked. Works on the explorer's frame (label/current) and on
    `result.frames["history"]` (one colour per seed; the λ comparison runs are left out)."""
    if "epoch" not in frame.columns:  # the explorer's frame
        frame = frame.assign(epoch=frame["step"] * (epochs_per_step(config, dataset(config).n_train) if config else 1))
    if "role" in frame.columns:
        frame = frame[frame.role == "seed"].assign(seed=lambda f: f["seed"].astype(str))
    color = color or ("seed" if "seed" in frame.columns and frame["seed"].nunique() > 1 else None)
    rules = _zero_error_rules(frame)
    return charts.grid(*(charts.layer(charts.curves(frame, metric, color=color, log_y=log, title=title, y_title=y,
                                                    **SMALL), *rules) for metric, title, log, y in PANELS), columns=3)


def layer_chart(result) -> alt.HConcatChart:
    """NC1 of every hidden layer: at the end (per seed, log scale) and over training (first seed)."""
    h = result.frames["history"]
    h = h[(h.run == 0) & h.metric.str.startswith("nc1_layer")]
    per_layer = h.assign(layer=h["metric"].str.replace("nc1_layer", "layer "))
    end = result.frames["layers"].assign(seed=lambda f: f["seed"].astype(str))
    return charts.row(
        charts.against(end, "layer", "nc1", color="seed", log_y=True, title="NC1 by depth (end of training)",
                       x_title="hidden layer", y_title="NC1 at the end", width=220),
        charts.curves(per_layer, color="layer", log_y=True, y_title="NC1", **{**SMALL, "width": 300, "height": 200},
                      title=f"NC1 of every hidden layer (seed {result.params['seed']})"),
    ).resolve_scale(color="independent")


def cosine_chart(result) -> alt.LayerChart:
    """Pairwise cosines of the centred class means and of the classifier rows (first seed) at
    initialization, at zero training error and at the end, against the simplex-ETF value −1/(C−1)."""
    cos, etf, seed = result.frames["cosines"], -1.0 / (result.params["classes"] - 1), result.params["seed"]
    return charts.layer(ticks(cos[cos.seed == seed], "cosine", "moment", "of", domain=(-1, 1), x_title="pairwise cosine",
                              order=["initialization", "zero training error", "end"]),
                        charts.vertical_rule(etf, f"−1/(C−1) = {etf:.3f}")).properties(
        width=420, height=170, title=f"Class-mean and classifier angles vs the simplex ETF (seed {seed})")


def weight_decay_chart(result):
    """NC1 against epochs for every λ trained at the first seed (a note when there is one λ only)."""
    h = result.frames["history"]
    h = h[(h.seed == result.params["seed"]) & (h.metric == "nc1")]
    if h["weight_decay"].nunique() < 2:
        return charts.empty(f"No λ comparison in this run (compare_weight_decay = []); NC1 at the end for λ = "
                            f"{result.params['weight_decay']:g}: {fmt_number(by_seed(result, 'nc1_end')[0], '.4g')}")
    return charts.curves(h.assign(λ=h["weight_decay"].map(lambda v: f"{v:g}")), "nc1", color="λ", log_y=True,
                         y_title="NC1", title="NC1 over training for several weight decays",
                         **{**SMALL, "width": 360, "height": 200})


# ---------------------------------------------------------------------------------------------
# candidates for reglab.charts


def ticks(frame: pd.DataFrame, x: str, y: str, color: str, *, domain=None, order=None, x_title=None) -> alt.Chart:
    """Every row as a short tick at its x value, one strip per y category, the `color` groups side by
    side within a strip (e.g. the pairwise cosines of two sets of vectors at a few moments)."""
    return alt.Chart(charts.inline(frame)).mark_tick(thickness=1.5, size=14, opacity=0.6).encode(
        x=alt.X(f"{x}:Q", title=x_title or x, scale=alt.Scale(domain=list(domain)) if domain else alt.Undefined),
        y=alt.Y(f"{y}:N", sort=order, title=None),
        color=alt.Color(f"{color}:N", title=None), yOffset=alt.YOffset(f"{color}:N"),
        tooltip=[f"{color}:N", f"{y}:N", alt.Tooltip(f"{x}:Q", format=".3f")])

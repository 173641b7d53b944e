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
WD_SPEEDS_UP = every_seed(below(1.0))  # geometric mean over the terminal phase of NC1(larger λ) / NC1(smaller λ)

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
    "compare_weight_decay": Param([0.0], ListOf(NON_NEGATIVE, at_least=0), "λ values compared with `weight_decay`, "
                                  "trained at the same seeds"),
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
    of the classifier rows at every evaluation (in `self.cosines`, step -> two [M, C, C] tensors). With
    `matrix`, the pairwise cosines of the centred class means are also metrics `cos{c}_{c'}` (c < c')."""

    def __init__(self, matrix: bool = False):
        self.cosines: dict = {}
        self.matrix = matrix

    def __call__(self, state) -> dict:
        model, params, data = state.model, state.params, state.data
        C, L, y = data.n_classes, len(model.dims) - 2, data.y_train
        with torch.no_grad():
            feats = state.features("train")
            h, w, b = classifier_inputs(params, feats, L)
            out = collapse.collapse_metrics(h, y, w, b, C)
            for k, f in enumerate(feats, start=1):
                out[f"nc1_layer{k}"] = out["nc1"] if (k == L and h is f) else collapse.nc1(f, y, C)
            means = collapse.pairwise_cosines(collapse.centred_class_means(h, y, C))
            self.cosines[state.step] = (means.float().cpu(), collapse.pairwise_cosines(w - w.mean(1, keepdim=True)).float().cpu())
            if self.matrix:
                out.update({f"cos{a}_{b}": means[:, a, b] for a in range(C) for b in range(a + 1, C)})
        return out


def classifier_inputs(params: dict, feats: list, depth: int):
    """(features the classifier sees [M, n, d], classifier rows [M, C, d], bias [M, C] or None).
    A factorized classifier U Vᵀ (rank set) sees z = h U and has rows Vᵀ."""
    if f"W{depth}" in params:
        h, w = feats[-1], params[f"W{depth}"].transpose(1, 2)  # W is [M, d, C]: its columns are the rows
    else:
        h, w = feats[-1] @ params[f"U{depth}"], params[f"V{depth}"].transpose(1, 2)
    return h, w, params.get(f"b{depth}")


def train_members(configs: list, on_eval=None, stop=None, data: Dataset | None = None, matrix: bool = False):
    """Train configs (one ensemble) with the collapse probe (`matrix`: cosines as metrics too): (Run, probe)."""
    probe = CollapseProbe(matrix)
    data = data or dataset(configs[0])
    return train(configs, data=data, probes=[probe], on_eval=on_eval, stop=stop, progress=False), probe


def explore(config: RunConfig, on_eval=None, stop=None):
    """The explorer's run: one config, streamed, with the collapse probe (~EVALS evaluations at any steps)."""
    return train_members([config.replace(eval_every=max(1, config.steps // EVALS))], on_eval, stop, matrix=True)[0]


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
    """Train `seeds` seeds at the settings, and the same seeds at each λ in `compare_weight_decay`, as one
    ensemble; compute NC1–NC4 over training and per layer; check the claims for every seed."""
    base = config(**vars(p))
    data = dataset(base)
    validate(base, n_train=data.n_train)
    lambdas = sorted(set(map(float, p.compare_weight_decay)) - {p.weight_decay})
    configs = [base.replace(seed=p.seed + i) for i in range(p.seeds)] + [base.replace(weight_decay=l, seed=p.seed + i)
                                                                          for l in lambdas for i in range(p.seeds)]
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
    if lambdas:  # weight decay speeds up collapse: the NC1 trajectories of the λ values, seed by seed
        order = sorted({p.weight_decay, *lambdas})
        member = {(c.weight_decay, c.seed): m for m, c in enumerate(configs)}
        nc1 = h[h.metric == "nc1"].pivot(index="step", columns="run", values="value")
        mean, worst, ends, div = [], [], [], {}
        for s in seeds:
            runs = [member[(l, s)] for l in order]
            ends.append([value(m, "nc1", last) for m in runs])
            div.update({f"λ = {l:g}, seed {s}": r.diverged_step(m) for l, m in zip(order, runs)})
            mean_ratio, max_ratio = terminal_phase_speedup(nc1[runs], [zero_error_step(h, m) for m in runs])
            mean.append(mean_ratio)
            worst.append(max_ratio)
            result.metrics.update({key("nc1_end", wd=l, seed=s): v for l, v in zip(order, ends[-1])})
        result.metrics.update(per_seed("nc1_wd_mean_ratio", mean, seeds))
        result.metrics.update(per_seed("nc1_wd_max_ratio", worst, seeds))
        lam = ", ".join(f"{l:g}" for l in order)
        result.claims.append(verdict(
            "weight_decay_speeds_collapse", f"Weight decay speeds up collapse: from zero training error on, NC1 is lower "
            f"with more weight decay over the terminal phase (λ = {lam}; geometric mean over its evaluations of "
            f"NC1(more λ) / NC1(less λ), per seed)", mean, WD_SPEEDS_UP,
            "largest single ratio over the terminal phase, per seed: " + ", ".join(fmt_number(w, ".4g") for w in worst)
            + "; NC1 at the end, λ = " + lam + ": " + "; ".join(
                f"seed {s}: {fmt_number(e, '.3g')}" for s, e in zip(seeds, ends)), div))
        result.metrics.update(per_seed("nc1_end_decreasing_in_wd", [WD_FALLS(e) for e in ends], seeds))

    frame = charts.tidy(r).assign(epoch=lambda f: f["step"] * per_step)
    roles = pd.DataFrame({"run": range(len(configs)), "seed": [c.seed for c in configs], "role": ["seed"] * p.seeds
                          + ["λ comparison"] * (len(lambdas) * p.seeds), "weight_decay": [c.weight_decay for c in configs]})
    result.frames["history"] = frame.merge(roles, on="run")
    result.frames["layers"] = pd.DataFrame([{"seed": s, "layer": k, "nc1": v} for s, ls in zip(seeds, layers)
                                            for k, v in enumerate(ls, start=1)])
    result.frames["cosines"] = _cosine_frame(probe, zero, seeds, data.n_classes)
    result.runs["train"] = r
    rank = dataclasses.replace(THEME.params["rank"], slider=(1, p.width))
    first = probe.cosines[last][0][0].numpy()  # the first seed's class-mean cosines at the end
    iu = np.triu_indices(data.n_classes, 1)
    cos_rows = pd.DataFrame({"run": 0, "step": last, "metric": [f"cos{a}_{b}" for a, b in zip(*iu)],
                             "value": first[iu].astype(float)})
    result.exploration = Exploration(base, chart, run=explore, initial=pd.concat([frame[frame.run == 0], cos_rows],
                                                                                 ignore_index=True), controls={
        "rank": rank, "steps": THEME.params["steps"], "imbalance": THEME.params["imbalance"]},
        presets=PRESETS, learned=learned_chart)


def terminal_phase_ratios(nc1: pd.DataFrame, zero: list) -> np.ndarray | None:
    """NC1(λ_{j+1}) / NC1(λ_j) for consecutive λ (columns of `nc1`, in order of λ; rows: evaluation steps) at every
    step from the latest first-zero-training-error step of the runs on: [steps, pairs]. None when a run never reaches
    zero training error or a value is missing."""
    if len(nc1.columns) < 2 or None in zero:
        return None
    tail = nc1[nc1.index >= max(zero)].to_numpy(dtype=float)
    ratios = tail[:, 1:] / tail[:, :-1]
    return None if tail.size == 0 or not np.isfinite(ratios).all() else ratios


def terminal_phase_speedup(nc1: pd.DataFrame, zero: list) -> tuple[float | None, float | None]:
    """(the geometric mean over the terminal phase of NC1(more λ) / NC1(less λ), for the pair of consecutive λ where
    it is largest; the largest single ratio). The mean is the claim: below 1 when more weight decay keeps NC1 lower
    over the terminal phase as a whole. The single largest ratio sits at its first evaluations, where weight decay has
    barely acted (it has shrunk the weights by ηλt ≈ 0.1 % at the defaults) and the two runs agree to within noise."""
    ratios = terminal_phase_ratios(nc1, zero)
    if ratios is None or (ratios <= 0).any():
        return None, None
    return float(np.exp(np.log(ratios).mean(0)).max()), float(ratios.max())


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


# the explorer's guided scenarios (controls: step_size, batch_size, weight_decay, rank, steps, imbalance)
PRESETS = {
    "reference run": {"question": "Past zero training error, how far does NC1 keep falling, and do the class-mean "
                      "cosines settle at −1/(C−1)?", "values": {"weight_decay": 0.0005, "rank": None, "data_options.imbalance": 1.0,
                                                                 "steps": 3300}},
    "no weight decay": {"question": "Without weight decay, does NC1 still fall after zero training error — as fast?",
                        "values": {"weight_decay": 0.0, "rank": None, "data_options.imbalance": 1.0, "steps": 3300},
                        "lock": ("step_size", "batch_size")},
    "feature dimension below C − 1": {"question": "With r = 4 < C − 1 = 9 there is no room for a simplex ETF: what do "
                                      "the class-mean cosines do instead?", "values": {"rank": 4, "data_options.imbalance": 1.0,
                                                                                        "weight_decay": 0.0005},
                                      "lock": ("step_size", "batch_size")},
    "imbalanced classes": {"question": "With class 9 keeping 1/20 of the examples of class 0, do the minority class "
                           "means still spread out like the others?", "values": {"data_options.imbalance": 20.0, "rank": None,
                                                                                 "weight_decay": 0.0005},
                           "lock": ("step_size", "batch_size")},
}


def learned_chart(frame: pd.DataFrame, config: RunConfig | None = None):
    """What the network learned: the pairwise cosines of its centred class means at the latest evaluation
    of the current run, as a C × C matrix (a simplex ETF has −1/(C−1) off the diagonal)."""
    rows = frame[frame.metric.str.match(r"^cos\d+_\d+$")]
    if "current" in rows.columns:
        rows = rows[rows["current"].fillna(True).astype(bool)]
    if rows.empty:
        return charts.empty("the class-mean cosine matrix appears at the first evaluation")
    rows = rows[rows.step == rows.step.max()]
    if "run" in rows.columns:
        rows = rows[rows.run == rows.run.max()]
    pairs = rows.metric.str.extract(r"^cos(\d+)_(\d+)$").astype(int)
    C = int(pairs.max().max()) + 1
    cells = pd.concat([pd.DataFrame({"class": pairs[0], "class ": pairs[1], "cosine": rows.value.to_numpy()}),
                       pd.DataFrame({"class": pairs[1], "class ": pairs[0], "cosine": rows.value.to_numpy()}),
                       pd.DataFrame({"class": range(C), "class ": range(C), "cosine": 1.0})], ignore_index=True)
    etf = -1.0 / (C - 1)
    step = int(rows.step.iloc[0])
    return alt.Chart(charts.inline(cells)).mark_rect().encode(
        x=alt.X("class:O"), y=alt.Y("class :O", title="class"),
        color=alt.Color("cosine:Q", scale=alt.Scale(scheme="redblue", domain=[-1, 1], reverse=True)),
        tooltip=["class:O", "class :O", alt.Tooltip("cosine:Q", format=".3f")]).properties(
        width=220, height=220, title=[f"what it learned: class-mean cosines at step {step}",
                                      f"(simplex ETF: {etf:.3f} off the diagonal)"])


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
    """NC1 against epochs for every λ, one panel per seed (a note when there is one λ only)."""
    h = result.frames["history"]
    h = h[h.metric == "nc1"]
    if h["weight_decay"].nunique() < 2:
        return charts.empty(f"No λ comparison in this run (compare_weight_decay = []); NC1 at the end for λ = "
                            f"{result.params['weight_decay']:g}: {fmt_number(by_seed(result, 'nc1_end')[0], '.4g')}")
    h = h.assign(λ=h["weight_decay"].map(lambda v: f"{v:g}"))
    rules = lambda f: _zero_error_rules(result.frames["history"][result.frames["history"].run.isin(set(f.run))])
    seeds = sorted(h.seed.unique())
    width = max(200, 900 // len(seeds) - 40)
    return charts.row(*(charts.layer(charts.curves(h[h.seed == s], "nc1", color="λ", log_y=True, y_title="NC1",
                                                   title=f"NC1 for each λ (seed {s})", **{**SMALL, "width": width,
                                                                                          "height": 180}),
                                     *rules(h[h.seed == s])) for s in seeds))


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

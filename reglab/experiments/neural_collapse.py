"""T5 · Neural collapse: NC1–NC4 over training and across layers (Papyan, Han & Donoho 2020).

An MLP (4 hidden layers of 128, BatchNorm + ReLU) learns sklearn's 8×8 digits with cross-entropy and
SGD with momentum and weight decay, well past zero training error. A probe computes the collapse
metrics of `reglab.metrics.collapse` on the whole training set every few epochs, for every member:

* NC1 tr(Σ_W Σ_B⁺)/C of the last hidden layer (the classifier's input) and of every hidden layer;
* NC2 the centred class means vs a simplex ETF (equal norms, pairwise cosines → −1/(C−1));
* NC3 the distance between the normalized classifier rows and the normalized centred class means;
* NC4 the fraction of training examples where the network's decision differs from the nearest class centre.

The three seeds are members of one ensemble (and so are the extra weight-decay values of the λ
comparison), trained by the one engine. Claims are computed per seed from the run.

BatchNorm here uses the statistics of the batch at hand, in training and in evaluation alike (the core
MLP keeps no running averages): every metric is computed on the full training set as one batch.

Controls beyond RunConfig's fields live in `data_options` (so a config stamp recreates the run):
`classes` (use digits 0 … classes−1) and `imbalance` (class c keeps a fraction imbalance^(−c/(C−1)) of
its training examples: the first class keeps all, the last 1/imbalance). `rank` factorizes the
classifier (rank_layer = depth): logits = (h U) V + b, and the "feature" whose collapse is measured is
then z = h U, of dimension r (r < C − 1 leaves no room for a simplex ETF).
"""
from __future__ import annotations

import math

import altair as alt
import numpy as np
import pandas as pd
import torch

from .. import charts
from ..claims import Claim, Result
from ..config import ConfigError, Interval, RunConfig, check, check_each, validate
from ..data import Dataset, make_dataset
from ..engine import train
from ..metrics import collapse

N_CLASSES = 10  # sklearn digits
SEEDS = 3  # "hold for 3 seeds at the defaults"
NC1_DROP = 5.0  # NC1 falls ≥ 5× between zero training error and the end
NC4_MAX = 0.01  # mismatch with the nearest-class-centre rule ≤ 1 %
EVALS = 100  # evaluations per run (every 3 epochs at the defaults: locates zero training error)
OWNER = "neural_collapse"
NC_METRICS = ["nc1", "nc2_equinorm", "nc2_equiangular", "nc2_maxangle", "nc3", "nc4"]
TITLES = {"nc1": "NC1  tr(Σ_W Σ_B^+)/C", "nc2_equinorm": "NC2  std/mean of class-mean norms",
          "nc2_equiangular": "NC2  std of pairwise cosines", "nc2_maxangle": "NC2  mean |cos + 1/(C−1)|",
          "nc3": "NC3  ‖W/‖W‖ − M/‖M‖‖²", "nc4": "NC4  mismatch with nearest class centre"}


# ---------------------------------------------------------------------------------------------
# configuration and data


def config(step_size=0.05, batch_size=128, weight_decay=5e-4, rank=None, width=128, depth=4, momentum=0.9,
           steps=3300, lr_schedule="step", classes=N_CLASSES, imbalance=1.0, n_train=1400, seed=0,
           device="auto") -> RunConfig:
    """The reference run: digits, `depth` hidden layers of `width` with BatchNorm + ReLU, CE, SGD with
    heavy-ball momentum and coupled weight decay on every parameter (what torch.optim.SGD's
    weight_decay does), learning rate ÷10 at ½ and ¾ of training. 3300 steps of B = 128 on 1400
    examples ≈ 300 epochs."""
    check("classes", classes, Interval(int, 2, N_CLASSES), owner=OWNER)
    check("imbalance", imbalance, Interval(float, 1, 1e4), owner=OWNER)
    options = {}
    if classes != N_CLASSES:
        options["classes"] = int(classes)
    if imbalance != 1.0:
        options["imbalance"] = float(imbalance)
    steps = int(steps)
    cfg = RunConfig(data="digits", n_train=n_train, data_options=options, model="mlp", width=width, depth=depth,
                    activation="relu", batchnorm=True, rank=rank, rank_layer=depth,
                    loss="ce", optimizer="sgd", step_size=step_size, batch_size=batch_size, momentum=momentum,
                    weight_decay=weight_decay, decay="coupled", decay_biases=True, lr_schedule=lr_schedule,
                    steps=steps, eval_every=max(1, steps // EVALS), seed=seed, device=device)
    if depth < 1:
        raise ConfigError(f"The 'depth' parameter of {OWNER} must be an int in the range [1, 64] "
                          f"(neural collapse is about hidden features). Got {depth!r} instead.")
    return cfg


def dataset(cfg: RunConfig) -> Dataset:
    """Digits restricted to `classes` classes and subsampled by `imbalance` (from cfg.data_options); a
    ConfigError names the class when one is left with fewer than 2 training examples."""
    options = dict(cfg.data_options)
    classes = options.pop("classes", None) or N_CLASSES
    imbalance = options.pop("imbalance", None) or 1.0  # None: balanced (the explorer's "off")
    imbalance = float(imbalance) if isinstance(imbalance, int) and not isinstance(imbalance, bool) else imbalance
    check("classes", classes, Interval(int, 2, N_CLASSES), owner=OWNER)
    check("imbalance", imbalance, Interval(float, 1, 1e4), owner=OWNER)
    base = make_dataset(cfg.data, cfg.n_train, cfg.data_seed, **options)
    y = base.y_train
    keep = y < classes
    if imbalance > 1.0:
        keep = torch.zeros_like(keep)
        for c in range(classes):
            idx = torch.nonzero(y == c).flatten()
            share = imbalance ** (-c / max(classes - 1, 1))
            keep[idx[: max(1, int(round(share * len(idx))))]] = True
    test = base.y_test < classes
    data = Dataset("digits", base.x_train[keep], y[keep], base.x_test[test], base.y_test[test], "classification",
                   int(classes), dict(base.info, classes=int(classes), imbalance=float(imbalance)))
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
        C, L = data.n_classes, len(model.dims) - 2
        y = data.y_train
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
        h, w = feats[-1], params[f"W{depth}"]
    else:
        h, w = feats[-1] @ params[f"U{depth}"], params[f"V{depth}"].transpose(1, 2)
    return h, w, params.get(f"b{depth}")


def train_members(configs: list, on_eval=None, stop=None):
    """Train configs (one ensemble) with the collapse probe: (Run, probe)."""
    data = dataset(configs[0])
    probe = CollapseProbe()
    return train(configs, data=data, probes=[probe], on_eval=on_eval, stop=stop, progress=False), probe


def explore(config: RunConfig, on_eval=None, stop=None):
    """The explorer's run: one config, streamed, with the collapse probe (evaluated ~EVALS times
    whatever the steps slider says)."""
    return train_members([config.replace(eval_every=max(1, config.steps // EVALS))], on_eval, stop)[0]


# ---------------------------------------------------------------------------------------------
# reading a run


def zero_error_step(history: pd.DataFrame, run: int) -> int | None:
    """First evaluated step at which training accuracy is 100 % (None: never)."""
    acc = history[(history.run == run) & (history.metric == "train_acc")].sort_values("step")
    hit = acc[acc.value >= 1.0 - 1e-9]
    return None if hit.empty else int(hit.step.iloc[0])


def _value(history, run, metric, step):
    rows = history[(history.run == run) & (history.metric == metric) & (history.step == step)]
    return float(rows.value.iloc[0]) if len(rows) else float("nan")


def tidy(run, roles: list, n_train: int) -> pd.DataFrame:
    """History with epoch, seed, weight_decay and role ("seed" or "λ comparison") of each member."""
    cfg = run.configs[0]
    frame = charts.tidy(run).copy()
    frame["epoch"] = frame["step"] * epochs_per_step(cfg, n_train)
    info = pd.DataFrame({"run": range(len(run.configs)), "seed": [c.seed for c in run.configs],
                         "weight_decay": [c.weight_decay for c in run.configs], "role": roles})
    return frame.merge(info, on="run")


# ---------------------------------------------------------------------------------------------
# the experiment


def run(step_size=0.05, batch_size=128, weight_decay=5e-4, rank=None, width=128, depth=4, momentum=0.9, steps=3300,
        lr_schedule="step", classes=N_CLASSES, imbalance=1.0, n_train=1400, seeds=SEEDS,
        compare_weight_decay=(), seed=0, device="auto") -> Result:
    """Train `seeds` seeds at the settings, plus seed `seed` at each λ in `compare_weight_decay`, as one
    ensemble; compute NC1–NC4 over training and per layer; check the claims for every seed."""
    check("seeds", seeds, Interval(int, 1, 10), owner=OWNER)
    compare = [float(l) for l in check_each("compare_weight_decay", compare_weight_decay or [], Interval(float, 0, math.inf),
                                            OWNER, at_least=0)]
    base = config(step_size=step_size, batch_size=batch_size, weight_decay=weight_decay, rank=rank, width=width,
                  depth=depth, momentum=momentum, steps=steps, lr_schedule=lr_schedule, classes=classes,
                  imbalance=imbalance, n_train=n_train, seed=seed, device=device)
    data = dataset(base)
    validate(base, n_train=data.n_train)
    configs = [base.replace(seed=seed + i) for i in range(seeds)]
    roles = ["seed"] * seeds
    for l in sorted(set(compare) - {float(weight_decay)}):
        configs.append(base.replace(weight_decay=l))
        roles.append("λ comparison")
    r, probe = train_members(configs)
    frame = tidy(r, roles, data.n_train)
    C = data.n_classes

    metrics, per_seed = {}, []
    for m in range(seeds):
        s = configs[m].seed
        z = zero_error_step(r.history, m)
        last = int(r.history.step.max())
        row = {"seed": s, "zero_step": z, "diverged_at": r.diverged_step(m)}
        for name in ("nc1", "nc3", "nc4", "nc2_equinorm", "nc2_maxangle", "train_acc", "test_acc"):
            row[f"{name}_end"] = _value(r.history, m, name, last)
        row["layers"] = [_value(r.history, m, f"nc1_layer{k}", last) for k in range(1, depth + 1)]
        if z is not None:
            row["nc1_zero"], row["nc3_zero"] = _value(r.history, m, "nc1", z), _value(r.history, m, "nc3", z)
        per_seed.append(row)
        tag = f"_s{s}"
        metrics[f"zero_error_epoch{tag}"] = None if z is None else round(z * epochs_per_step(base, data.n_train), 2)
        metrics[f"nc1_at_zero_error{tag}"] = row.get("nc1_zero")
        metrics[f"nc1_end{tag}"] = row["nc1_end"]
        metrics[f"nc1_drop{tag}"] = _ratio(row.get("nc1_zero"), row["nc1_end"])
        metrics[f"nc3_at_zero_error{tag}"] = row.get("nc3_zero")
        metrics[f"nc3_end{tag}"] = row["nc3_end"]
        metrics[f"nc4_end{tag}"] = row["nc4_end"]
        metrics[f"nc2_equinorm_end{tag}"] = row["nc2_equinorm_end"]
        metrics[f"nc2_maxangle_end{tag}"] = row["nc2_maxangle_end"]
        for k, v in enumerate(row["layers"], start=1):
            metrics[f"nc1_layer{k}_end{tag}"] = v
        metrics[f"train_acc{tag}"], metrics[f"test_acc{tag}"] = row["train_acc_end"], row["test_acc_end"]
        metrics[f"diverged_at{tag}"] = row["diverged_at"]
    wd_rows = [(configs[m].weight_decay, m) for m in range(len(configs)) if configs[m].seed == seed]
    wd_rows.sort()
    for l, m in (wd_rows if len(wd_rows) > 1 else []):
        metrics[f"nc1_end_wd{l:g}"] = _value(r.history, m, "nc1", int(r.history.step.max()))

    claims = _claims(per_seed, wd_rows, r, depth)
    frames = {"history": frame, "cosines": _cosine_frame(probe, r, per_seed, C), "layers": _layer_frame(per_seed),
              "explore": r.history[r.history.run == 0].reset_index(drop=True)}
    return Result(metrics, claims, frames, {"train": r, "config": base, "n_train": data.n_train})


def _ratio(a, b):
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return None
    return a / b


def _worst(values, pick):
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return None if len(vals) < len(values) or not vals else round(pick(vals), 4)


def _claims(per_seed, wd_rows, r, depth) -> list:
    n = len(per_seed)
    every = f"each of {n} seed{'s' if n > 1 else ''}"
    note = "; ".join(f"seed {p['seed']}: " + ("diverged at step %d" % p["diverged_at"] if p["diverged_at"] is not None
                                               else "never reached zero training error")
                     for p in per_seed if p["zero_step"] is None or p["diverged_at"] is not None)
    diverged = "; ".join(f"seed {p['seed']}: diverged at step {p['diverged_at']}" for p in per_seed if p["diverged_at"] is not None)
    drops = [_ratio(p.get("nc1_zero"), p["nc1_end"]) for p in per_seed]
    nc3 = [_ratio(p["nc3_end"], p.get("nc3_zero")) for p in per_seed]
    nc4 = [p["nc4_end"] for p in per_seed]
    ok = [p["zero_step"] is not None and p["diverged_at"] is None for p in per_seed]
    depth_ratio = [max((b / a for a, b in zip(p["layers"], p["layers"][1:])), default=None) if depth > 1 else None
                   for p in per_seed]
    claims = [
        Claim(f"NC1 falls ≥ {NC1_DROP:g}× from the epoch of zero training error to the end of training",
              _worst(drops, min), f"NC1(zero error) / NC1(end) ≥ {NC1_DROP:g} for {every} (worst shown)",
              all(ok) and all(d is not None and d >= NC1_DROP for d in drops), note),
        Claim("NC3: the classifier rows align further with the class means after zero training error",
              _worst(nc3, max), f"NC3(end) / NC3(zero error) < 1 for {every} (worst shown)",
              all(ok) and all(v is not None and v < 1 for v in nc3), note),
        Claim(f"NC4: the network decides like the nearest-class-centre rule (mismatch ≤ {NC4_MAX:.0%})",
              _worst(nc4, max), f"mismatch on the training set ≤ {NC4_MAX:g} for {every} (worst shown)",
              all(p["diverged_at"] is None for p in per_seed) and all(v is not None and math.isfinite(v) and v <= NC4_MAX for v in nc4),
              diverged),
        Claim("NC1 decreases with depth across the hidden layers (at the end of training)",
              _worst(depth_ratio, max) if depth > 1 else None,
              f"NC1(layer k+1) / NC1(layer k) < 1 for every k and {every} (worst shown)",
              depth > 1 and all(p["diverged_at"] is None for p in per_seed)
              and all(v is not None and math.isfinite(v) and v < 1 for v in depth_ratio),
              diverged if depth > 1 else "one hidden layer: nothing to compare"),
    ]
    if len(wd_rows) > 1:
        last = int(r.history.step.max())
        ends = [_value(r.history, m, "nc1", last) for _, m in wd_rows]
        finite = all(math.isfinite(v) for v in ends)
        claims.append(Claim("Weight decay speeds up collapse: more λ, lower NC1 at the end (first seed)",
                            round(ends[-1] / ends[0], 4) if finite and ends[0] > 0 else None,
                            "NC1(end) strictly decreasing in λ over " + ", ".join(f"{l:g}" for l, _ in wd_rows)
                            + " (shown: NC1 at the largest λ / at the smallest)",
                            finite and all(b < a for a, b in zip(ends, ends[1:]))))
    return claims


def _cosine_frame(probe, r, per_seed, C) -> pd.DataFrame:
    """Pairwise cosines (c < c') of the centred class means and of the classifier rows, for every seed,
    at initialization, at zero training error and at the end."""
    rows = []
    last = max(probe.cosines)
    iu = np.triu_indices(C, 1)
    for m, p in enumerate(per_seed):
        moments = [("initialization", 0), ("zero training error", p["zero_step"]), ("end", last)]
        for moment, step in moments:
            if step is None or step not in probe.cosines:
                continue
            for what, mats in zip(("class means", "classifier rows"), probe.cosines[step]):
                vals = mats[m].numpy()[iu]
                rows += [{"seed": p["seed"], "moment": moment, "of": what, "cosine": float(v)} for v in vals]
    return pd.DataFrame(rows)


def _layer_frame(per_seed) -> pd.DataFrame:
    return pd.DataFrame([{"seed": p["seed"], "layer": k, "nc1": v} for p in per_seed
                         for k, v in enumerate(p["layers"], start=1)])


# ---------------------------------------------------------------------------------------------
# charts


def _with_epoch(frame: pd.DataFrame, config: RunConfig | None, n_train: int | None) -> pd.DataFrame:
    if "epoch" in frame.columns:
        return frame
    frame = frame.copy()
    if config is not None:
        n = n_train or dataset(config).n_train
        frame["epoch"] = frame["step"] * epochs_per_step(config, n)
    else:
        frame["epoch"] = frame["step"]
    return frame


def _zero_rules(frame: pd.DataFrame) -> pd.DataFrame:
    """One dashed rule per distinct epoch of zero training error (current runs only), labelled once."""
    acc = frame[(frame.metric == "train_acc") & (frame.value >= 1.0 - 1e-9)]
    if "current" in acc.columns:
        acc = acc[acc["current"].fillna(True).astype(bool)]
    if acc.empty:
        return pd.DataFrame(columns=["epoch", "text"])
    keys = [k for k in ("label", "run") if k in acc.columns]
    epochs = sorted(acc.groupby(keys)["epoch"].min().unique())
    return pd.DataFrame({"epoch": epochs, "text": ["zero training error"] + [""] * (len(epochs) - 1)})


EPOCH_TICKS = [0, 1, 3, 10, 30, 100, 300, 1000, 3000]


def _epoch_axis(frame: pd.DataFrame) -> alt.X:
    top = float(frame["epoch"].max()) if len(frame) else 300.0
    ticks = [t for t in EPOCH_TICKS if t <= top * 1.01] or [0]
    return alt.X("epoch:Q", title="epoch (symlog)", scale=alt.Scale(type="symlog", domain=[0, top]),
                 axis=alt.Axis(values=ticks, format=".0f", labelOverlap=False))


def _records(frame: pd.DataFrame, positive: bool = True) -> list:
    """Rows with a finite (and, for log axes, positive) value, drawn up to a run's divergence; NaN → null."""
    keep = frame["value"].map(lambda v: v is not None and math.isfinite(v) and (v > 0 or not positive))
    if "diverged_at" in frame.columns:
        d = pd.to_numeric(frame["diverged_at"], errors="coerce")
        keep &= d.isna() | (frame["step"] <= d)
    clean = frame[keep]
    clean = clean.astype(object).where(clean.notna(), None)
    return clean.to_dict("records")


def _lines(rows: pd.DataFrame, color: str | None, log_y: bool, y_title: str, dash: str | None = None):
    """Lines of value against epoch (symlog axis), one per run; earlier runs faded."""
    enc = dict(x=_epoch_axis(rows),
               y=alt.Y("value:Q", title=y_title, scale=alt.Scale(type="log") if log_y else alt.Scale(zero=False)),
               detail=[alt.Detail(f"{f}:N") for f in ("run", "label", "seed") if f in rows.columns],
               tooltip=[alt.Tooltip(f"{f}:N") for f in ("label", "seed", "metric") if f in rows.columns]
               + [alt.Tooltip("epoch:Q", format=".1f"), alt.Tooltip("value:Q", format=".4g")])
    if color:
        enc["color"] = alt.Color(f"{color}:N", title=color)
    if dash:
        enc["strokeDash"] = alt.StrokeDash(f"{dash}:N", legend=None, sort=sorted(rows[dash].unique(), reverse=True))
    if "current" in rows.columns and not rows["current"].all():
        enc["opacity"] = alt.condition("datum.current", alt.value(1.0), alt.value(charts.FADED))
    return alt.Chart(alt.Data(values=_records(rows, positive=log_y))).mark_line().encode(**enc)


def _panel(frame, metric, color, log_y, rules, title=None, y_title=None, dash=None, width=230, height=160):
    """One metric (or several, told apart by `dash`) against epochs, with the zero-error rule(s) and
    the core's "diverged at step k" marks."""
    rows = frame[frame.metric.isin([metric] if isinstance(metric, str) else metric)]
    parts = [_lines(rows, color, log_y, y_title or (metric if isinstance(metric, str) else "value"), dash)]
    if not rules.empty:
        base = alt.Chart(alt.Data(values=rules.to_dict("records"))).encode(x="epoch:Q")
        parts += [base.mark_rule(strokeDash=[4, 3], color="gray"),
                  base.mark_text(align="left", dx=3, baseline="top", color="gray", fontSize=10).encode(
                      text="text:N", y=alt.value(2))]
    marks = charts.diverged_marks(rows, rows.metric.iloc[0], x="epoch") if len(rows) else None
    if marks is not None:
        parts.append(marks)
    name = metric if isinstance(metric, str) else metric[0]
    return alt.layer(*parts).properties(width=width, height=height, title=title or TITLES.get(name, name))


def chart(frame: pd.DataFrame, config: RunConfig | None = None, n_train: int | None = None, color: str | None = None):
    """NC1, NC2 (norms and angles), NC3 and NC4 against epochs, the epoch of zero training error marked.
    Works on the explorer's frame (label/current) and on `result.frames["history"]` (colour by seed)."""
    frame = _with_epoch(frame, config, n_train)
    if "role" in frame.columns:
        frame = frame[frame.role == "seed"]
    if color is None:
        color = "label" if "label" in frame.columns and frame["label"].nunique() > 1 else (
            "seed" if "seed" in frame.columns and frame["seed"].nunique() > 1 else None)
    if color == "seed":
        frame = frame.assign(seed=frame["seed"].astype(str))
    rules = _zero_rules(frame)
    nc2 = {"nc2_equinorm": "norms: std/mean", "nc2_maxangle": "angles: mean |cos + 1/(C−1)|"}
    frame = frame.assign(metric=frame["metric"].replace(nc2))
    panels = [
        _panel(frame, "nc1", color, True, rules),
        _panel(frame, list(nc2.values()), color, True, rules, title="NC2  norms (solid), angles (dashed)",
               y_title="NC2", dash="metric"),
        _panel(frame, "nc3", color, True, rules),
        _panel(frame, "nc4", color, False, rules, y_title="fraction of training examples"),
        _panel(frame, "train_acc", color, False, rules, title="training accuracy", y_title="accuracy"),
    ]
    return alt.concat(*panels, columns=3).resolve_scale(color="independent")


def layer_chart(result_or_frames) -> alt.HConcatChart:
    """NC1 of every hidden layer: at the end (per seed, log scale) and over training (first seed)."""
    frames = result_or_frames.frames if hasattr(result_or_frames, "frames") else result_or_frames
    end = frames["layers"].assign(seed=lambda f: f["seed"].astype(str))
    history = frames["history"]
    first = history[(history.role == "seed") & (history.seed == history.seed.min())]
    per_layer = first[first.metric.str.startswith("nc1_layer")].copy()
    per_layer["layer"] = per_layer["metric"].str.replace("nc1_layer", "layer ")
    per_layer = per_layer[per_layer.value > 0]
    bars = alt.Chart(alt.Data(values=_records(end.rename(columns={"nc1": "value"})))).mark_line(point=True).encode(
        x=alt.X("layer:O", title="hidden layer", axis=alt.Axis(labelAngle=0)), y=alt.Y("value:Q", title="NC1 at the end", scale=alt.Scale(type="log")),
        color=alt.Color("seed:N", title="seed"), tooltip=["seed:N", "layer:O", alt.Tooltip("value:Q", format=".4g")]
    ).properties(width=220, height=200, title="NC1 by depth (end of training)")
    over = alt.Chart(alt.Data(values=_records(per_layer))).mark_line().encode(
        x=_epoch_axis(per_layer), y=alt.Y("value:Q", title="NC1", scale=alt.Scale(type="log")),
        color=alt.Color("layer:N", title="layer"), tooltip=["layer:N", alt.Tooltip("epoch:Q", format=".1f"),
                                                             alt.Tooltip("value:Q", format=".4g")]
    ).properties(width=300, height=200, title=f"NC1 of every hidden layer (seed {int(first.seed.min()) if len(first) else 0})")
    return alt.hconcat(bars, over).resolve_scale(color="independent")


def cosine_chart(result_or_frames, n_classes: int = N_CLASSES) -> alt.LayerChart:
    """Pairwise cosines of the centred class means and of the classifier rows (first seed) at
    initialization, at zero training error and at the end, against the simplex-ETF value −1/(C−1)."""
    frames = result_or_frames.frames if hasattr(result_or_frames, "frames") else result_or_frames
    cos = frames["cosines"]
    cos = cos[cos.seed == cos.seed.min()]
    order = ["initialization", "zero training error", "end"]
    ticks = alt.Chart(alt.Data(values=cos.to_dict("records"))).mark_tick(thickness=1.5, size=14, opacity=0.6).encode(
        x=alt.X("cosine:Q", title="pairwise cosine", scale=alt.Scale(domain=[-1, 1])),
        y=alt.Y("moment:N", sort=order, title=None), color=alt.Color("of:N", title=None),
        yOffset=alt.YOffset("of:N"), tooltip=["of:N", "moment:N", alt.Tooltip("cosine:Q", format=".3f")])
    etf = -1.0 / (n_classes - 1)
    rule = alt.Chart(alt.Data(values=[{"x": etf, "text": f"−1/(C−1) = {etf:.3f}"}])).encode(x="x:Q")
    return alt.layer(ticks, rule.mark_rule(strokeDash=[4, 3], color="gray"),
                     rule.mark_text(align="left", dx=3, dy=-4, baseline="bottom", color="gray").encode(
                         text="text:N", y=alt.value(0))).properties(
        width=420, height=170, title=f"Class-mean and classifier angles vs the simplex ETF (seed {int(cos.seed.min()) if len(cos) else 0})")


def weight_decay_chart(result_or_frames) -> alt.Chart:
    """NC1 against epochs for every λ trained at the first seed."""
    frames = result_or_frames.frames if hasattr(result_or_frames, "frames") else result_or_frames
    h = frames["history"]
    h = h[(h.seed == h[h.role == "seed"].seed.min()) & (h.metric == "nc1")].copy()
    h["λ"] = h["weight_decay"].map(lambda v: f"{v:g}")
    lines = alt.Chart(alt.Data(values=_records(h))).mark_line().encode(
        x=_epoch_axis(h), y=alt.Y("value:Q", title="NC1", scale=alt.Scale(type="log")),
        color=alt.Color("λ:N", title="weight decay λ", sort=sorted(h["λ"].unique(), key=float)),
        tooltip=["λ:N", alt.Tooltip("epoch:Q", format=".1f"), alt.Tooltip("value:Q", format=".4g")])
    return lines.properties(width=360, height=200, title="NC1 over training for several weight decays")

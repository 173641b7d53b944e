"""Implicit bias: GD on the logistic loss over separable data converges in direction to the hard-margin SVM
(Soudry et al. 2018), slowly: 1 − cos(w_t, w_SVM) ~ 1/log²t; large steps keep the direction (Wu et al. 2024),
weight decay λ > 0 stops short of it, mini-batch SGD keeps it. One engine call trains the seeds and the
weight-decay and batch-size members (linear, no bias, float64) against independent references: the exact SVM
(`reglab.metrics.margins.svm`) and Newton's λ > 0 minimizers. The step-size members train on a thin slab of
points crowding the margin (SLAB), where a large step overshoots back and forth, one engine call per data draw.
A 2-D data set shows the decision boundary rotating toward the SVM's."""
from __future__ import annotations

import json
from functools import lru_cache
from types import SimpleNamespace

import altair as alt
import numpy as np
import pandas as pd
import torch

from .. import charts
from ..claims import Rule, above, at_least, at_most, below, every_seed, fmt_number, is_true, key, verdict
from ..config import ConfigError, Interval, ListOf, RunConfig, validate
from ..data import Dataset, make_dataset
from ..engine import Run, train
from ..metrics import margins as mg
from ..theme import DEVICE, NON_NEGATIVE, POSITIVE, SEED, SEEDS, Exploration, Param, Result, Theme

RATE_FROM = 100  # the rate and approach checks cover t = 1e2 … the last step (1e5 at the defaults)
SLAB = {"margin": 0.05, "slab": 0.05}  # the step-size members' data: a thin slab, y⟨x, w*⟩ ~ U[0.05, 0.1]
SWEEP_STEPS = 10_000  # the step-size members train min(steps, SWEEP_STEPS) steps, one ensemble per data draw
EARLY = 1000  # a large step size's loss is watched over the first EARLY steps
EVALS = 200  # evaluations per run (eval_every = steps // EVALS)
PICTURE_STEPS = 1000  # the 2-D run
WIDTH, HEIGHT = 230, 170  # three panels and a legend to a row (≤ 960 px)

# rules: a list holds one value per seed (or per λ)
MONOTONE = every_seed(at_most(0))  # increases of 1 − cos between evaluations after the start
RATE_BAND = every_seed(below(3.0))  # max/min of (1 − cos)·log²t from t = 1e2 on
MARGIN_APPROACH = every_seed(Rule(  # [margin ratio at t = 1e2, at the end, decreases between evaluations from t = 1e2]
    "rises at every evaluation from t = 1e2, ends ≤ 1",
    lambda v: v is not None and v[2] == 0 and v[0] < v[1] <= 1 + 1e-9))
MARGIN_RATE = every_seed(below(3.0))  # max/min of (1 − margin/SVM margin)·log t from t = 1e2 on
CONVERGES = every_seed(Rule(  # [increases of 1 − cos between evaluations from t = 1e2, 1 − cos at the end / at t = 1e2]
    "decreases at every evaluation from t = 1e2", lambda v: v is not None and v[0] == 0 and v[1] < 1))
LOSS_RISES = every_seed(at_least(1))  # steps that raised the loss among the first EARLY, per data draw
MINIBATCH_RATE = below(3.0)  # the smallest B's max/min of (1 − cos)·log²t from t = 1e2 on
NORM_MATCH = every_seed(below(0.01))  # |‖w_T‖/‖w_λ‖ − 1| per λ (w_λ: the regularized minimizer)
ANGLE_GROWS = above(0.0)  # the smallest growth (degrees) of the angle to the SVM from one λ to the next
SEPARABLE = is_true("an LP finds w with y⟨w, x⟩ ≥ 1")
CLAIMS = {  # id: sentence; the first four are about the main run's direction, the rest about the sweeps
    "separable": "the training data are linearly separable (the premise of every max-margin claim)",
    "direction_monotone": "1 − cos(w_t, w_SVM) decreases monotonically (every evaluation after the start), for every seed",
    "log_rate": "the direction converges like 1/log t: (1 − cos)·log²t varies by < 3× from t = 1e2 on, for every seed",
    "margin_approaches": "the normalized margin approaches the SVM margin: it rises at every evaluation from t = 1e2 on "
                         "and never exceeds it, for every seed",
    "margin_rate": "the margin gap closes like 1/log t (Soudry et al. 2018): (1 − margin / SVM margin)·log t varies by "
                   "< 3× from t = 1e2 on, for every seed",
    "large_eta_direction": "a large step size (the largest η) still converges in direction: on the thin-slab data its "
                           "1 − cos decreases at every evaluation from t = 1e2 on, for every data draw",
    "large_eta_loss_rises": "a large step size makes the loss non-monotone early (Wu et al. 2024): on the thin-slab data "
                            "some of its first 1000 steps raise the loss, for every data draw",
    "weight_decay_bounded": "with λ > 0 the norm stays bounded: it converges to the finite norm of the regularized minimizer",
    "angle_grows_with_lambda": "the angle to the SVM grows with λ (and shrinks toward 0 as λ → 0)",
    "minibatch_direction": "mini-batch SGD (the smallest B) keeps the bias at GD's rate: its (1 − cos)·log²t varies by "
                           "< 3× from t = 1e2 on",
}
DIRECTION_CLAIMS = tuple(CLAIMS)[:5]

THEME = Theme("07_max_margin", {
    "step_size": Param(1.0, POSITIVE, "step size η of the main run", label="step size η", log=True, slider=(1e-3, 1e3)),
    "batch_size": Param(None, Interval(int, 1, 10**7, allow_none=True), "batch size B of the main run (None: GD)"),
    "weight_decay": Param(0.0, NON_NEGATIVE, "weight decay λ of the main run"),
    "steps": Param(100_000, Interval(int, 2 * RATE_FROM, 10_000_000), "training steps (the rate window is t = 1e2 … steps)",
                   slider=(200, 100_000)),
    "n_train": Param(40, Interval(int, 2, 10**7), "training points"), "d": Param(5, Interval(int, 1, 10_000), "dimension"),
    "margin": Param(0.1, Interval(float, 0, 10), "data margin", field="data_options.margin", slider=(0, 1), step=0.05),
    "label_noise": Param(0.0, Interval(float, 0, 1), "label noise", field="data_options.label_noise", slider=(0, 0.5),
                         step=0.05),
    "data_seed": Param(0, Interval(int, 0, 2**31 - 1), "seed of the data draw"),
    "step_sizes": Param([0.1, 10.0, 100.0], ListOf(POSITIVE, 0), "step-size members (on thin-slab data, with η)"),
    "weight_decays": Param([0.001, 0.01, 0.1], ListOf(POSITIVE, 0), "extra members at these weight decays"),
    "batch_sizes": Param([1, 8], ListOf(Interval(int, 1, 10**7), 0), "extra members: mini-batch SGD at these B"),
    "seeds": SEEDS, "seed": SEED, "device": DEVICE,
})


def config(step_size=1.0, batch_size=None, weight_decay=0.0, steps=100_000, n_train=40, d=5, margin=0.1,
           label_noise=0.0, data_seed=0, seed=0, device="auto") -> RunConfig:
    """A linear classifier (no bias) trained by GD (batch_size None) on the logistic loss."""
    return RunConfig(data="separable", n_train=n_train, data_seed=data_seed, model="mlp", depth=0, bias=False,
                     data_options={"d": d, "margin": float(margin), "label_noise": float(label_noise)}, loss="logistic",
                     optimizer="sgd", step_size=step_size, batch_size=batch_size, weight_decay=weight_decay,
                     steps=steps, eval_every=1, seed=seed, device=device, dtype="float64")


def with_evals(cfg: RunConfig) -> RunConfig:
    """The config as trained: about EVALS evaluations, whatever the number of steps."""
    return cfg.replace(eval_every=max(1, cfg.steps // EVALS))


def dataset(cfg: RunConfig, data: Dataset | None = None) -> Dataset:
    """The config's data set (or `data`), once its labels are checked to be ±1 of shape [n, 1]."""
    data = make_dataset(cfg.data, cfg.n_train, cfg.data_seed, **cfg.data_options) if data is None else data
    y = data.y_train
    if data.task != "binary" or y.dim() != 2 or y.shape[1] != 1 or not bool(((y == 1) | (y == -1)).all()):
        raise ConfigError("max_margin needs a binary task: ±1 labels of shape [n, 1] (from_arrays(..., task='binary')).")
    return data


def regularized_minimizer(x, y, weight_decay: float, tol: float = 1e-12) -> torch.Tensor:
    """argmin_w mean_i log(1 + exp(−y_i ⟨w, x_i⟩)) + (λ/2)‖w‖², by damped Newton in float64 — the point
    GD with weight decay λ converges to (the engine's update is −η(∇loss + λw))."""
    z = torch.as_tensor(y, dtype=torch.float64).reshape(-1, 1) * torch.as_tensor(x, dtype=torch.float64)
    (n, d), lam = z.shape, weight_decay
    objective = lambda w: torch.nn.functional.softplus(-(z @ w)).mean() + 0.5 * lam * w.dot(w)
    w = torch.zeros(d, dtype=torch.float64)
    for _ in range(200):
        s = torch.sigmoid(-(z @ w))  # −dℓ/dm at margins m = z·w
        grad = -(z * s[:, None]).mean(0) + lam * w
        if float(grad.norm()) < tol:
            break
        step = torch.linalg.solve((z * (s * (1 - s))[:, None]).T @ z / n + lam * torch.eye(d, dtype=z.dtype), grad)
        t, f0 = 1.0, objective(w)
        while objective(w - t * step) > f0 - 0.25 * t * grad.dot(step) and t > 1e-10:
            t *= 0.5
        w = w - t * step
    return w


def lambda_path(data: Dataset, svm: mg.SVM, lambdas=np.logspace(-12, 0, 25)) -> pd.DataFrame:
    """Angle to the SVM and norm of the regularized minimizer over λ (Newton; no training)."""
    ws = [(lam, regularized_minimizer(data.x_train, data.y_train, lam)) for lam in (lambdas if svm.separable else [])]
    return pd.DataFrame([{"lambda": lam, "angle_deg": float(mg.angle_degrees(w, svm.w)[0]), "norm": float(w.norm())}
                         for lam, w in ws], columns=["lambda", "angle_deg", "norm"])


def plane(x, w_svm=None) -> torch.Tensor:
    """A 2-D view of the data [d, 2] (orthonormal columns): the SVM direction (without one, the widest principal
    direction) and the widest principal direction of the points orthogonal to it; in d = 2, the plane itself."""
    x = torch.as_tensor(x, dtype=torch.float64)
    d = x.shape[1]
    widest = lambda z: torch.linalg.svd(z, full_matrices=False).Vh[0]
    e1 = widest(x) if w_svm is None else torch.as_tensor(w_svm, dtype=torch.float64)
    e1 = e1 / e1.norm()
    if d == 1:
        return torch.stack([e1, torch.zeros_like(e1)], 1)
    e2 = widest(x - torch.outer(x @ e1, e1))
    e2 = e2 - e2.dot(e1) * e1
    e2 = e2 / e2.norm()
    e2 = e2 * torch.sign(e2[torch.argmax(e2.abs())])  # a fixed sign: the same view at every call
    return torch.stack([e1, e2], 1)


class MarginProbe:
    """‖w‖, 1 − cos(w, w_SVM), the normalized margin and its ratio to the SVM margin, per member; w's
    coordinates in the 2-D view of the data (`plane`: "w_par" along the SVM, "w_perp" across)."""

    def __init__(self, svm: mg.SVM):
        self.svm = svm if svm.separable else None

    def __call__(self, state) -> dict:
        w = state.params["W0"][:, :, 0].detach().to(torch.float64)  # the linear model's W0: [M, d, 1]
        out = {"norm": w.norm(dim=1), "normalized_margin": mg.normalized_margin(w, state.data.x_train, state.data.y_train)}
        if self.svm is not None:
            out.update(one_minus_cos=mg.one_minus_cos(w, self.svm.w), margin_ratio=out["normalized_margin"] / self.svm.margin)
        if w.shape[1] == 2:  # the 2-D picture needs the weights themselves
            out.update(w0=w[:, 0], w1=w[:, 1])
        view = w @ plane(state.data.x_train, None if self.svm is None else self.svm.w)
        out.update(w_par=view[:, 0], w_perp=view[:, 1])
        return {k: v.to(state.params["W0"].dtype) for k, v in out.items()}

    def __repr__(self) -> str:  # stable across processes (the engine's cache keys on probe reprs)
        return f"MarginProbe(svm_margin={None if self.svm is None else round(self.svm.margin, 12)})"


def members(base: RunConfig, seeds=3, step_sizes=(), weight_decays=(), batch_sizes=()) -> list:
    """(group, label, metric-key qualifiers, config) of every member of the one ensemble."""
    sweep = lambda group, name, field, values, cast: [(group, f"{name} = {cast(v):g}", {field: cast(v)}, base.replace(
        **{field: cast(v)})) for v in values if cast(v) != getattr(base, field)]
    return ([("seeds", f"seed {s}", {"seed": s}, base.replace(seed=s)) for s in range(base.seed, base.seed + seeds)]
            + sweep("step size", "η", "step_size", step_sizes, float)
            + sweep("weight decay", "λ", "weight_decay", weight_decays, float)
            + sweep("batch size", "B", "batch_size", batch_sizes, int))


def with_rate(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame plus (1 − cos)·log²t as metric "rate" (flat when the angle decays like 1/log t)."""
    cos = frame[(frame.metric == "one_minus_cos") & (frame.step > 1)]
    rate = cos.assign(metric="rate", value=cos.value * np.log(cos.step.astype(float)) ** 2)
    return frame if (frame.metric == "rate").any() else pd.concat([frame, rate], ignore_index=True)


def log_steps(steps, count: int = 60) -> np.ndarray:
    """About `count` log-spaced values among the given (evaluated) steps ≥ 1 (charts over log t need no more)."""
    steps = np.unique([s for s in steps if s >= 1])
    if len(steps) <= count:
        return steps
    return np.unique(steps[np.searchsorted(steps, np.geomspace(steps[0], steps[-1], count)).clip(max=len(steps) - 1)])


def series(frame: pd.DataFrame, label: str, metric: str, start: float = 0) -> pd.Series:
    """One member's values of a metric by step, from step `start` on."""
    s = frame[(frame.label == label) & (frame.metric == metric)].set_index("step")["value"].sort_index()
    return s[s.index >= start]


def numbers(frame: pd.DataFrame, label: str, separable: bool) -> dict:
    """A member's final ‖w‖ and loss; with an SVM, its numbers of 1 − cos, (1 − cos)·log²t and the margin ratio."""
    out = {f"{m}_end": float(series(frame, label, m).iloc[-1]) for m in ("norm", "train_loss")}
    if not separable:
        return out
    cos, ratio = series(frame, label, "one_minus_cos"), series(frame, label, "margin_ratio")
    late, r, late_ratio = cos[cos.index >= RATE_FROM], series(frame, label, "rate", RATE_FROM), ratio[ratio.index >= RATE_FROM]
    ups = lambda s: int((np.diff(s.to_numpy()) > 0).sum())
    gap = (1 - late_ratio) * np.log(late_ratio.index.to_numpy(dtype=float))  # flat when the gap closes like 1/log t
    return {**out, "one_minus_cos_t100": float(late.iloc[0]), "one_minus_cos_end": float(cos.iloc[-1]),
            "increases_after_t100": ups(late), "increases_from_start": ups(cos[cos.index >= 1]),
            "rate_min": float(r.min()), "rate_max": float(r.max()), "rate_spread": float(r.max() / r.min()),
            "margin_ratio_t100": float(late_ratio.iloc[0]), "margin_ratio_end": float(ratio.iloc[-1]),
            "margin_decreases_after_t100": ups(-late_ratio),
            "margin_gap_spread": float(gap.max() / gap.min()) if (gap > 0).all() else np.nan}


def picture(cfg: RunConfig) -> Run:
    """The 2-D run: the same GD (full batch, λ = 0, at most PICTURE_STEPS steps) on points in the plane."""
    flat = with_evals(cfg.replace(data_options={**cfg.data_options, "d": 2}, steps=min(cfg.steps, PICTURE_STEPS),
                                  batch_size=None, weight_decay=0.0))
    data = dataset(flat)
    return train(flat, data=data, probes=[MarginProbe(mg.svm(data.x_train, data.y_train))], progress=False)


def slab_ensembles(base: RunConfig, p, data: Dataset | None = None) -> list:
    """The step-size members (η of the main run and `step_sizes`, full-batch GD, λ = 0, min(steps, SWEEP_STEPS)
    steps) on the thin-slab data, one engine call per data draw (data_seed, data_seed + 1, … for `seeds` draws;
    on your own data, that data once): [(data_seed, roles, Run, SVM)]."""
    etas = list(dict.fromkeys([float(p.step_size)] + [float(e) for e in p.step_sizes]))
    cfg = base.replace(steps=min(base.steps, SWEEP_STEPS), batch_size=None, weight_decay=0.0)
    draws = [(None, cfg, data)] if data is not None else [
        (cfg.data_seed + i, cfg.replace(data_seed=cfg.data_seed + i, data_options={**cfg.data_options, **SLAB}), None)
        for i in range(p.seeds)]
    out = []
    for ds, c, own in draws:
        d = dataset(c, own)
        roles = [("step size", f"η = {e:g}", {"step_size": e} | ({} if ds is None else {"data_seed": ds}),
                  c.replace(step_size=e)) for e in etas]
        svm = mg.svm(d.x_train, d.y_train)
        ens = train([validate(with_evals(r[3]), n_train=d.n_train) for r in roles], data=d, probes=[MarginProbe(svm)],
                    progress=False)
        out.append((ds, roles, ens, svm))
    return out


def experiment(p, result: Result, data: Dataset | None = None) -> None:
    """Train the ensemble (one engine call), the step-size members on the thin slab and the 2-D run, and compute
    the claims."""
    base = config(p.step_size, p.batch_size, p.weight_decay, p.steps, p.n_train, p.d, p.margin, p.label_noise,
                  p.data_seed, p.seed, p.device)
    base = base if data is None else base.replace(data="arrays", data_options={}, n_train=None)
    own, data = data, dataset(base, data)
    roles = members(base, p.seeds, [], p.weight_decays, p.batch_sizes)
    configs = [validate(with_evals(c), n_train=data.n_train) for *_, c in roles]
    svm = mg.svm(data.x_train, data.y_train)
    with result.timed("ensemble"):
        ens = train(configs, data=data, probes=[MarginProbe(svm)], progress=False)
    role = pd.DataFrame([{"run": i, "group": g, "label": lab} for i, (g, lab, _, _) in enumerate(roles)])
    frame = result.frames["history"] = with_rate(charts.tidy(ens).merge(role, on="run"))
    result.runs.update(ensemble=ens, svm=svm, roles=roles)
    slabs = []
    if p.step_sizes:
        with result.timed("step sizes (thin slab)"):
            slabs = result.runs["step_sizes"] = slab_ensembles(base, p, own)
        result.frames["step_sizes"] = pd.concat([with_rate(charts.tidy(e).merge(pd.DataFrame(
            [{"run": i, "group": g, "label": lab} for i, (g, lab, _, _) in enumerate(rs)]), on="run")).assign(data_seed=ds)
            for ds, rs, e, _ in slabs], ignore_index=True)
    if base.data == "separable":  # own data: no 2-D picture, no explorer
        with result.timed("2-D run"):
            result.runs["picture"] = picture(base)
        result.exploration = Exploration(base, chart, run=explore, initial=frame[frame.run == 0], controls={
            n: THEME.params[n] for n in ("step_size", "steps", "label_noise", "margin")},
            common=("batch_size", "weight_decay"), presets=PRESETS, learned=learned)  # a linear model: no rank
    m = result.metrics = dict(n=data.n_train, d=data.x_train.shape[1], steps=p.steps, separable=svm.separable,
                              svm_margin=svm.margin, support_vectors=len(svm.support))
    for i, (_, lab, q, _) in enumerate(roles):  # every member's numbers, keyed "name@seed=0", "name@batch_size=1", …
        m.update({key(name, **q): v for name, v in numbers(frame, lab, svm.separable).items()})
        m[key("diverged_at", **q)] = ens.diverged_step(i)
    group = lambda g: [(i, lab, q, c) for i, (gr, lab, q, c) in enumerate(roles) if gr == g]
    seeds, lams = group("seeds"), sorted(group("weight decay"), key=lambda r: r[3].weight_decay)
    values = lambda name, ms: [m[key(name, **q)] for _, _, q, _ in ms]
    claim = lambda id, value, rule, diverged, note="": result.claims.append(verdict(
        id, CLAIMS[id], value, rule, note=note, diverged=diverged))
    on = lambda ms: {lab: ens.diverged_step(i) for i, lab, _, _ in ms}  # the main ensemble's members' divergence
    with result.timed("references"):
        result.frames["lambda_path"], refs = lambda_path(data, svm), lambda_path(data, svm, [r[3].weight_decay for r in lams])
    for (i, lab, q, c), ref in zip(lams, refs.itertuples()):  # trained members against the regularized minimizers
        m.update({key("norm_minimizer", **q): ref.norm, key("angle_deg_minimizer", **q): ref.angle_deg,
                  key("angle_deg", **q): float(mg.angle_degrees(ens.params["W0"][i, :, 0], svm.w)[0])})
    if not svm.separable:
        return claim("separable", svm.separable, SEPARABLE, {}, svm.message)
    claim("direction_monotone", values("increases_from_start", seeds), MONOTONE, on(seeds),
          "increases between evaluations; 1 − cos at the end: " + fmt_number(values("one_minus_cos_end", seeds)))
    claim("log_rate", values("rate_spread", seeds), RATE_BAND, on(seeds),
          f"max/min of (1 − cos)·log²t over t = 1e2 … {p.steps:.0e}".replace("e+0", "e"))
    claim("margin_approaches", [list(v) for v in zip(values("margin_ratio_t100", seeds), values("margin_ratio_end", seeds),
                                                     values("margin_decreases_after_t100", seeds))],
          MARGIN_APPROACH, on(seeds), "[margin / SVM margin at t = 1e2, at the end, decreases from t = 1e2]")
    claim("margin_rate", values("margin_gap_spread", seeds), MARGIN_RATE, on(seeds),
          "max/min of (1 − margin / SVM margin)·log t from t = 1e2 on")
    if slabs:  # the largest η, on each thin-slab draw
        big, rows, diverged = max(float(e) for e in [p.step_size, *p.step_sizes]), [], {}
        for ds, rs, e, s in slabs:
            i, (_, lab, q, c) = next((i, r) for i, r in enumerate(rs) if r[3].step_size == big)
            f = result.frames["step_sizes"]
            num = numbers(f[f.data_seed == ds] if ds is not None else f, lab, s.separable)
            first, losses = min(EARLY, c.steps), e.step_losses[:, i]
            num.update(loss_increases_first_1000=int((losses[1:first] > losses[:first - 1]).sum()),
                       loss_step1=float(losses[0]), loss_step2=float(losses[1]), diverged_at=e.diverged_step(i))
            m.update({key(name, **q): v for name, v in num.items()})
            for j, (_, _, qj, _) in enumerate(rs):  # every η's end point, for the table
                if j != i and s.separable:
                    m[key("one_minus_cos_end", **qj)] = float(mg.one_minus_cos(e.params["W0"][j, :, 0], s.w)[0])
            diverged[f"{lab}, {'your data' if ds is None else f'slab draw {ds}'}"] = e.diverged_step(i)
            rows.append((ds, num, first))
        m["large_eta"], m["slab_steps"] = big, min(p.steps, SWEEP_STEPS)
        at = lambda name: [r[1].get(name, np.nan) for r in rows]
        draws = "your data" if own is not None else f"data_seed = {fmt_number([r[0] for r in rows], 'g')}"
        claim("large_eta_direction", [[r[1].get("increases_after_t100"), r[1].get("one_minus_cos_end", np.nan) / r[1].get(
              "one_minus_cos_t100", np.nan)] for r in rows], CONVERGES, diverged,
              f"η = {big:g}, {draws}, {m['slab_steps']} steps: [increases of 1 − cos from t = 1e2, 1 − cos end / t = 1e2]; "
              f"1 − cos {fmt_number(at('one_minus_cos_t100'))} → {fmt_number(at('one_minus_cos_end'))}")
        claim("large_eta_loss_rises", at("loss_increases_first_1000"), LOSS_RISES, diverged,
              f"η = {big:g}, {draws}: steps of the first {rows[0][2]} that raised the loss")
    if lams:
        norm = series(frame, seeds[0][1], "norm")
        growth = m[key("norm_growth_last_half", **seeds[0][2])] = float(
            norm.iloc[-1] / norm[norm.index >= norm.index[-1] / 2].iloc[0] - 1)
        angles, at = values("angle_deg", lams), f"λ = {fmt_number([c.weight_decay for *_, c in lams], 'g')}"
        claim("weight_decay_bounded", [abs(a / b - 1) for a, b in zip(values("norm_end", lams), values(
            "norm_minimizer", lams))], NORM_MATCH, on(lams), f"|‖w_T‖/‖w_λ‖ − 1| at {at}; {seeds[0][1]} (λ = "
              f"{p.weight_decay:g}) still grows {100 * growth:.1f} % over the last half")
        claim("angle_grows_with_lambda", float(np.diff(angles).min()) if len(angles) > 1 else None, ANGLE_GROWS, on(lams),
              f"smallest growth from one λ to the next; angle = {fmt_number(angles)}° at {at}")
    if group("batch size"):  # the smallest B
        small = min(group("batch size"), key=lambda r: r[3].batch_size)
        q = small[2]
        claim("minibatch_direction", m[key("rate_spread", **q)], MINIBATCH_RATE, on([small]),
              f"{small[1]}: max/min of (1 − cos)·log²t from t = 1e2 on; 1 − cos {m[key('one_minus_cos_t100', **q)]:.3g} → "
              f"{m[key('one_minus_cos_end', **q)]:.3g} (GD, {seeds[0][1]}: {m[key('one_minus_cos_end', **seeds[0][2])]:.3g})")


run = THEME.run(experiment)


def run_on(data: Dataset, **values) -> Result:
    """`run` on your own binary data set (±1 labels [n, 1]) instead of the generated one (no 2-D picture)."""
    result = Result(theme=THEME.notebook, params=THEME.validate(values))
    experiment(SimpleNamespace(**result.params), result, data)
    return result


def explore(cfg: RunConfig, on_eval=None, stop=None, start=None) -> Run:
    """The explorer's run: one config, with the margin probe against its data's SVM."""
    data = dataset(cfg)
    return train(with_evals(cfg), data=data, probes=[MarginProbe(mg.svm(data.x_train, data.y_train))],
                 on_eval=on_eval, stop=stop, start=start, progress=False)


def _over_t(frame, metric, title, log_y=True, **options):
    return charts.curves(frame[frame.step.isin(log_steps(frame.step))], metric, log_x=True, log_y=log_y, title=title,
                         y_title=title.split(": ")[-1], width=WIDTH, height=HEIGHT, **options)


def chart(frame: pd.DataFrame, config: RunConfig | None = None):
    """Over log t, one line per run: 1 − cos(w, w_SVM), (1 − cos)·log²t, margin / SVM margin, ‖w‖, loss."""
    f = with_rate(frame)
    panels = ([_over_t(f, "one_minus_cos", "1 − cos(w, w_SVM)"), _over_t(f, "rate", "(1 − cos)·log²t, flat at a 1/log t rate"),
               _over_t(f, "margin_ratio", "normalized margin / SVM margin", False) + charts.reference_rule(1.0, "SVM")]
              if (f.metric == "one_minus_cos").any() else
              [_over_t(f, "normalized_margin", "normalized margin (no SVM)", False) + charts.reference_rule(0.0, "0")])
    return charts.grid(*panels, _over_t(f, "norm", "norm of w"), _over_t(f, "train_loss", "training loss"), columns=3)


def boundary_chart(result: Result, count: int = 5):
    """The 2-D data, GD's decision boundary ⟨w_t, x⟩ = 0 at `count` log-spaced steps, and the SVM's (dashed)."""
    if "picture" not in result.runs:
        return charts.empty("no 2-D picture for your own data set")
    run = result.runs["picture"]
    x, y, svm = run.data.x_train.numpy(), run.data.y_train[:, 0].numpy(), mg.svm(run.data.x_train, run.data.y_train)
    points = pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "class": np.where(y > 0, "+1", "−1"),
                           "support": np.isin(np.arange(len(x)), svm.support)})
    w = run.history[run.history.metric.isin(["w0", "w1"])].pivot_table(index="step", columns="metric", values="value")
    ws = [(int(t), w.loc[t].to_numpy()) for t in log_steps(w.index, count)]
    ws += [(None, svm.w.numpy())] if svm.separable else []  # the SVM's boundary has no step
    r, u = float(np.abs(x).max()) * 1.05, lambda v: np.array([-v[1], v[0]]) / np.linalg.norm(v)  # a boundary's direction
    lines = pd.DataFrame([{"step": t, "x1": s * r * u(v)[0], "x2": s * r * u(v)[1]} for t, v in ws for s in (-1, 1)])
    scale = alt.Scale(domain=[-r, r])
    xy = dict(x=alt.X("x1:Q", scale=scale, title="x₁"), y=alt.Y("x2:Q", scale=scale, title="x₂"))
    classes = alt.Color("class:N", scale=alt.Scale(domain=["+1", "−1"], range=["#1f77b4", "#d62728"]), title="label")
    steps = alt.Color("step:Q", scale=alt.Scale(type="log", scheme="viridis"), title="GD step t")
    return alt.layer(
        alt.Chart(points).mark_point(filled=True, size=45).encode(**xy, color=classes, shape=alt.Shape("class:N", legend=None)),
        alt.Chart(points[points.support]).mark_point(size=160, color="black").encode(**xy),
        alt.Chart(lines[lines.step.isna()]).mark_line(strokeDash=[6, 4], color="black", strokeWidth=2).encode(**xy),
        alt.Chart(lines[lines.step.notna()]).mark_line(strokeWidth=1.5).encode(**xy, detail="step:N", color=steps),
    ).resolve_scale(color="independent").properties(width=320, height=320, title=(
        "GD's boundary rotates toward the SVM's (dashed; circled: support vectors)" if svm.separable else "no SVM: not separable"))


def sweep_chart(result: Result, early: int = 300):
    """Each sweep: for step sizes (first thin-slab draw) the early loss and 1 − cos over log t; with the first seed's
    run, for weight decay ‖w‖ and the angle to the SVM over λ (Newton's minimizers and the trained members), for
    batch sizes 1 − cos."""
    frame, path = result.frames["history"], result.frames["lambda_path"]
    roles, separable = result.runs["roles"], result.runs["svm"].separable
    metric, title = ("one_minus_cos", "1 − cos(w, w_SVM)") if separable else ("normalized_margin", "normalized margin")
    over = lambda g, m, t, log=True: _over_t(frame[(frame.group == g) | (frame.run == 0)], m, f"{g}s: {t}", log, color="label")
    has, panels = lambda group: (frame.group == group).any(), []
    if result.runs.get("step_sizes"):
        ds, rs, e, s = result.runs["step_sizes"][0]
        sf = result.frames["step_sizes"]
        sf = sf[sf.data_seed == ds] if ds is not None else sf
        where = "your data" if ds is None else f"thin slab (data_seed {ds})"
        losses = pd.DataFrame(e.step_losses[:early].numpy(), columns=[lab for _, lab, _, _ in rs])
        losses = losses.rename_axis("step").reset_index().melt("step", var_name="label").assign(metric="train_loss")
        panels += [charts.curves(losses.assign(step=losses.step + 1), "train_loss", color="label", log_y=True, title=(
            f"step sizes, {where}: loss, first {len(losses) // len(rs)} steps"), y_title="training loss", width=WIDTH,
            height=HEIGHT), _over_t(sf, "one_minus_cos" if s.separable else "normalized_margin",
                                    f"step sizes, {where}: {title if s.separable else 'normalized margin'}",
                                    s.separable, color="label")]
    if has("weight decay"):
        panels.append(over("weight decay", "norm", "norm of w"))
    if has("weight decay") and separable:
        trained = pd.DataFrame([{"lambda": c.weight_decay, "label": "trained", "angle_deg": result.metrics[key(
            "angle_deg", **q)]} for g, _, q, c in roles if g == "weight decay"])
        rows = pd.concat([path.assign(label="Newton"), trained]).assign(log_lambda=lambda f: np.log10(f["lambda"]))
        panels.append(charts.against(rows, "log_lambda", "angle_deg", color="label", log_y=True, x_title="log₁₀ λ",
                                     title="weight decay: angle to the SVM", y_title="angle to the SVM (degrees)",
                                     width=WIDTH, height=HEIGHT))
    if has("batch size"):
        panels.append(over("batch size", metric, title, separable))
    return charts.grid(*panels, columns=3) if panels else charts.empty("no sweeps")


@lru_cache(maxsize=16)
def _view_of(data_key: str):
    """(data, SVM, plane) of a config's data set, cached by the data's settings (the explorer redraws often)."""
    cfg = RunConfig(**json.loads(data_key))
    data = dataset(cfg)
    svm = mg.svm(data.x_train, data.y_train)
    return data, svm, plane(data.x_train, svm.w if svm.separable else None)


def learned(frame: pd.DataFrame, config: RunConfig | None = None, count: int = 4):
    """What the model learned, live in the explorer: the training points in the plane of w_SVM and the widest
    direction across it (exact in d = 2, a projection above), the run's boundary ⟨w_t, x⟩ = 0 traced in that
    plane at a few log-spaced steps (the latest thickest) and the SVM's (dashed: the vertical axis)."""
    if config is None or config.data != "separable":
        return charts.empty("what it learned: the 2-D view needs the generated separable data")
    w = frame[frame.metric.isin(["w_par", "w_perp"])].pivot_table(index="step", columns="metric", values="value")
    data_key = json.dumps({k: getattr(config, k) for k in ("data", "n_train", "data_seed", "data_options")}, sort_keys=True)
    data, svm, basis = _view_of(data_key)
    z = (data.x_train.double() @ basis).numpy()
    y = data.y_train[:, 0].numpy()
    points = pd.DataFrame({"along": z[:, 0], "across": z[:, 1], "label": np.where(y > 0, "+1", "−1")})
    ra, rc = float(np.abs(z[:, 0]).max()) * 1.2, max(float(np.abs(z[:, 1]).max()), 1e-12) * 1.05  # own scales: a thin
    r = 10 * max(ra, rc)  # slab stays readable; boundaries are drawn long and clipped to the view
    ws = [] if w.empty or w.isna().all().all() else [
        (int(t), w.loc[t, ["w_par", "w_perp"]].to_numpy(dtype=float)) for t in log_steps(w.dropna().index, count)]
    last = ws[-1][0] if ws else None
    unit = lambda v: np.array([-v[1], v[0]]) / np.linalg.norm(v)  # a boundary's direction in the plane
    lines = pd.DataFrame([{"step": t, "latest": t == last, "along": s * r * unit(v)[0], "across": s * r * unit(v)[1]}
                          for t, v in ws if np.linalg.norm(v) > 0 for s in (-1, 1)],
                         columns=["step", "latest", "along", "across"])
    dims = "the plane" if z.shape[1] == 2 and data.x_train.shape[1] == 2 else f"projected from d = {data.x_train.shape[1]}"
    xy = dict(x=alt.X("along:Q", scale=alt.Scale(domain=[-ra, ra], nice=False),
                      title="along w_SVM" if svm.separable else "widest direction"),
              y=alt.Y("across:Q", scale=alt.Scale(domain=[-rc, rc], nice=False), title="across (widest direction ⟂)"))
    layers = [alt.Chart(points).mark_point(filled=True, size=40).encode(
        **xy, color=alt.Color("label:N", scale=alt.Scale(domain=["+1", "−1"], range=["#1f77b4", "#d62728"]), title="label"),
        shape=alt.Shape("label:N", legend=None))]
    if svm.separable:
        svm_line = pd.DataFrame({"along": [0.0, 0.0], "across": [-rc, rc]})
        layers.append(alt.Chart(svm_line).mark_line(strokeDash=[6, 4], color="black", clip=True).encode(**xy))
    if len(lines):
        layers.append(alt.Chart(lines).mark_line(clip=True).encode(
            **xy, detail="step:N", color=alt.Color("step:Q", scale=alt.Scale(type="log", scheme="viridis"), title="step t"),
            strokeWidth=alt.condition("datum.latest", alt.value(3), alt.value(1))))
    title = ("what it learned: the boundary ⟨w_t, x⟩ = 0 and the SVM's (dashed), " + dims) if svm.separable else (
        "what it learned: no SVM (not separable); the boundary ⟨w_t, x⟩ = 0, " + dims)
    return alt.layer(*layers).resolve_scale(color="independent").properties(width=300, height=260, title=title)


PRESETS = {  # the explorer's guided scenarios (each sets every value it depends on)
    "large step on a thin slab": {
        "question": "At η = 100 on points crowding the margin, does the loss go up and down, and does the boundary "
                    "still settle on the SVM's?",
        "values": {"step_size": 100.0, "steps": 2000, "batch_size": None, "weight_decay": 0.0,
                   "data_options.margin": SLAB["margin"], "data_options.slab": SLAB["slab"],
                   "data_options.label_noise": 0.0}, "lock": ("batch_size", "weight_decay")},
    "B = 1 vs full batch": {
        "question": "Does SGD with one example per step turn the boundary to the same SVM direction as GD?",
        "values": {"batch_size": 1, "step_size": 1.0, "steps": 10_000, "weight_decay": 0.0, "data_options.margin": 0.1,
                   "data_options.slab": 0.0, "data_options.label_noise": 0.0}, "lock": ("weight_decay",)},
    "weight decay stops short": {
        "question": "With λ = 0.01, does ‖w‖ stop growing, and how far from the SVM does the boundary stop turning?",
        "values": {"weight_decay": 0.01, "step_size": 1.0, "steps": 10_000, "batch_size": None,
                   "data_options.margin": 0.1, "data_options.slab": 0.0, "data_options.label_noise": 0.0}},
    "no margin to find": {
        "question": "With 10 % of the labels flipped no plane separates the data: what happens to ‖w‖ and the loss?",
        "values": {"data_options.label_noise": 0.1, "step_size": 1.0, "steps": 10_000, "batch_size": None,
                   "weight_decay": 0.0, "data_options.margin": 0.1, "data_options.slab": 0.0}},
}

"""SGD noise as an implicit regularizer: η/B shrinks the first-layer weights of irrelevant inputs.

Three experiments, trained as batched ensembles by the engine (`reglab.engine.train`):
1. Support (Beneventano, Pinto & Poggio 2024; code andreakiro/sgd-finds-support): a linear MLP d-15-15-15-1
   without biases learns a linear teacher of the first k of d Gaussian inputs, with gradient clipping. The
   claim: mini-batch SGD shrinks the first-layer rows of the d − k irrelevant inputs toward zero, full-batch
   GD at the same η keeps them (it would need explicit weight decay).
2. Phase diagram over (η, B): final irrelevant norm and test error, with iso-lines of the temperature η/B.
3. Temperature T = η/B against the output scale α (Sclocchi, Geiger & Wyart 2023): digits even/odd, ReLU
   MLP 64-128-128-1 with output α·(f − f₀) and hinge loss / α² (step η/α²); lazy (large α) vs feature learning.

reglab's "mse" is ½(f − y)², the reference's `nn.MSELoss` has no ½: step η and clipping c on the ½ loss is
exactly step η/2 and clipping 2c on nn.MSELoss (their η = 0.1, clip 1 is our η = 0.2, clip 0.5). Full-batch GD
of a bias-free linear network sees the data only through its second moments, so it trains on an exactly
equivalent data set of d + 1 rows (`full_batch_equivalent`), as cheap as one small batch.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import threading

import altair as alt
import numpy as np
import pandas as pd
import torch

from .. import charts
from ..claims import Rule, at_least, at_most, decreasing, every_seed, finite, key, per_seed, verdict
from ..config import Interval, ListOf, RunConfig, validate
from ..data import Dataset, from_arrays, make_dataset
from ..engine import train
from ..theme import DEVICE, NON_NEGATIVE, POSITIVE, SEED, SEEDS, Exploration, Param, Theme
from ..transforms import member_norm

COUNT = Interval(int, 1, 1_000_000)
THEME = Theme("02_sgd_noise", {
    "step_size": Param(0.3, POSITIVE, "step size η of experiment 1 (η/2 with nn.MSELoss)", log=True, slider=(0.01, 2)),
    "batch_size": Param(1, Interval(int, 1, 10**7, allow_none=True), "the explorer's first batch size B (None: full batch)"),
    "weight_decay": Param(0.0, NON_NEGATIVE, "weight decay λ", slider=(0.0, 0.1)),
    "rank": Param(None, Interval(int, 1, 100_000, allow_none=True), "rank r of the first layer U Vᵀ (None: full)"),
    "width": Param(15, Interval(int, 1, 4096), "hidden width"), "depth": Param(3, Interval(int, 1, 16), "hidden layers"),
    "k": Param(5, Interval(int, 1, 9_999), "relevant inputs k", field="data_options.k", slider=(1, 14)),
    "d": Param(15, Interval(int, 2, 10_000), "inputs d"),
    "n_train": Param(10_000, Interval(int, 4, 10**7), "training rows (n/2 points, each twice)"),
    "label_noise": Param(1e-3, Interval(float, 0, 10), "label noise ε (labels y ± ε)"),
    "grad_clip": Param(0.5, Interval(float, 0, math.inf, "neither", True), "gradient clipping (None: none)"),
    "steps": Param(4000, COUNT, "training steps of experiments 1 and 2", slider=(100, 20_000)),
    "batch_sizes": Param([256, 32, 4, 1], ListOf(COUNT), "batch sizes of experiment 1 (plus full-batch GD)"),
    "sweep_step_sizes": Param([0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8], ListOf(POSITIVE), "phase diagram rows η"),
    "sweep_batch_sizes": Param([1, 2, 4, 8, 16, 32, 64], ListOf(COUNT), "phase diagram columns B (plus GD)"),
    "alphas": Param([0.1, 1.0, 10.0], ListOf(POSITIVE, 0), "output scales α of experiment 3 (empty: skip it)"),
    "temperatures": Param([0.001, 0.003, 0.01, 0.03], ListOf(POSITIVE, 0), "temperatures T = η/B of experiment 3"),
    "alpha_batch_size": Param(16, COUNT, "batch size of experiment 3"), "alpha_steps": Param(3000, COUNT, "its step budget"),
    "alpha_width": Param(128, Interval(int, 1, 4096), "its MLP's width"),
    "alpha_n_train": Param(400, Interval(int, 2, 1797), "its training images"),
    "seeds": SEEDS, "seed": SEED, "device": DEVICE,
})

# claim rules: per seed, on the values `run` measures
GD_DRIFT = 0.1  # full-batch GD's irrelevant norm stays within 10 % of its initial value
LAZY_LIMIT = 0.1  # "small" relative weight change
FEATURE_FACTOR = 5.0  # small α changes the weights ≥ 5× more than large α
STRICTLY_DECREASING = every_seed(decreasing())  # final irrelevant norms at GD, the largest B, …, the smallest B
HALF_OF_GD = every_seed(at_most(0.5))  # irrelevant norm at the smallest B / at GD
GD_KEEPS_NORM = every_seed(at_most(GD_DRIFT))  # |final / initial − 1| of GD's irrelevant norm
LAZY_REGIME = every_seed(Rule(f"all < {LAZY_LIMIT:g}, non-decreasing in T", lambda changes: (  # rel. change over T
    (xs := [finite(v) for v in changes]) != [] and None not in xs and max(xs) < LAZY_LIMIT and xs == sorted(xs))))
FEATURE_REGIME = every_seed(at_least(FEATURE_FACTOR))  # min over T of rel. change (small α) / (large α)
OVERHEAD_ROWS = 1200  # one ensemble's per-step overhead, in padded example-rows (measured on the 2-core CPU)


# ---------------------------------------------------------------------------------------------
# data and metrics (pure functions of stacked parameters: one value per member)

@functools.lru_cache(maxsize=8)
def sparse_support_data(n_train: int = 10_000, d: int = 15, k: int = 5, label_noise: float = 1e-3, seed: int = 0,
                        n_test: int = 1000) -> Dataset:
    """The reference recipe (reglab.data.sparse_teacher): k relevant of d inputs, every point twice, labels y ± ε."""
    return make_dataset("sparse_teacher", n_train, seed, d=d, k=k, label_noise=label_noise, n_test=n_test)


def full_batch_equivalent(data: Dataset) -> Dataset:
    """A data set of d + 1 rows on which the mean square loss of any *linear, bias-free* model equals
    the loss on `data` (so its full-batch gradients are equal too): R from the QR factorization of
    [X y]/√n, scaled by √(d+1). The test split is kept."""
    xy = torch.cat([data.x_train.double(), data.y_train.double()], 1)
    r = torch.linalg.qr(xy / math.sqrt(len(xy)), mode="r").R * math.sqrt(xy.shape[1])
    out = from_arrays(r[:, :-1].float(), r[:, -1:].float(), data.x_test, data.y_test, "regression", data.name + "_moments")
    out.info.update(data.info)
    return out


def data_for(cfg: RunConfig) -> Dataset:
    o = cfg.data_options
    return sparse_support_data(cfg.n_train or 10_000, o.get("d", 15), o.get("k", 5), o.get("label_noise", 1e-3), cfg.data_seed)


def input_norms(w0: torch.Tensor) -> torch.Tensor:
    """Norm of each input's outgoing first-layer weights: [M, d] (rows of W0 as stored, [M, d, width])."""
    return w0.norm(dim=-1)


def irrelevant_norm(w0: torch.Tensor, k: int) -> torch.Tensor:
    """Frobenius norm of the first-layer weights of the irrelevant inputs k..d−1 (relevant: 0..k−1): [M]."""
    return w0[:, k:, :].flatten(1).norm(dim=1)


def relevant_norm(w0: torch.Tensor, k: int) -> torch.Tensor:
    return w0[:, :k, :].flatten(1).norm(dim=1)


def relative_change(params: dict, initial: dict) -> torch.Tensor:
    """‖θ − θ₀‖ / ‖θ₀‖ over all parameters, per member: [M]."""
    diff = {name: params[name].detach() - initial[name] for name in initial}
    return member_norm(diff) / member_norm(initial)


def support_probe(k: int):
    """Probe: irrelevant and relevant first-layer norms and every input's norm (in0, in1, …); W0 = U Vᵀ if factorized."""
    def probe(state):
        w0 = state.model.weight(state.params, 0).detach()
        return {"irrelevant_norm": irrelevant_norm(w0, k), "relevant_norm": relevant_norm(w0, k),
                **{f"in{j}": v for j, v in enumerate(input_norms(w0).T)}}
    return probe


# ---------------------------------------------------------------------------------------------
# configs and training

def config(step_size=0.3, batch_size=1, weight_decay=0.0, rank=None, width=15, depth=3, k=5, d=15, n_train=10_000,
           label_noise=1e-3, grad_clip=0.5, steps=4000, seed=0, data_seed=0, device="auto", eval_every=None) -> RunConfig:
    """One run of the support experiment (batch_size None or n_train: full-batch GD; `rank`: W0 = U Vᵀ)."""
    return RunConfig(data="sparse_teacher", n_train=n_train, data_seed=data_seed, width=width, depth=depth,
                     data_options={"d": d, "k": k, "label_noise": label_noise}, activation="linear", bias=False,
                     rank=rank, rank_layer=0 if rank is not None else None, loss="mse", optimizer="sgd",
                     step_size=step_size, batch_size=batch_size, weight_decay=weight_decay, grad_clip=grad_clip,
                     steps=steps, eval_every=eval_every or max(1, steps // 25), seed=seed, device=device)


def alpha_config(alpha=1.0, temperature=1e-3, batch_size=16, width=128, n_train=400, steps=3000, seed=0, device="auto"):
    """Experiment 3: digits even/odd, ReLU MLP 64-width-width-1, output α·(f − f₀), SGD at temperature
    T = η/B on the hinge loss / α² (the 1/α² folded into the step size)."""
    return RunConfig(data="digits", n_train=n_train, data_options={"target": "parity", "standardize": True},
                     width=width, depth=2, activation="relu", output_scale=float(alpha), center_output=True,
                     loss="hinge", optimizer="sgd", step_size=temperature * batch_size / alpha ** 2,
                     batch_size=batch_size, steps=steps, eval_every=max(1, steps // 12), seed=seed, device=device)


def _groups(configs, n):
    """Indices of configs split into ensembles: full batch alone, and runs of mini-batch sizes chosen to
    minimize the estimated cost Σ (OVERHEAD_ROWS + members × largest batch): every member is padded to
    its ensemble's largest batch, and every ensemble costs a fixed overhead per step."""
    full = [i for i, c in enumerate(configs) if (c.batch_size or n) >= n]
    mini = sorted(set(range(len(configs))) - set(full), key=lambda i: configs[i].batch_size)
    size = [configs[i].batch_size for i in mini]
    # best[j]: cheapest split of the first j members; cuts only between different batch sizes
    best, cut = [0.0] + [math.inf] * len(mini), [0] * (len(mini) + 1)
    ends = [j for j in range(1, len(mini) + 1) if j == len(mini) or size[j] != size[j - 1]]
    for j in ends:
        for i in [0, *ends[:ends.index(j)]]:
            if best[i] + OVERHEAD_ROWS + (j - i) * size[j - 1] < best[j]:
                best[j], cut[j] = best[i] + OVERHEAD_ROWS + (j - i) * size[j - 1], i
    groups, j = [], len(mini)
    while j > 0:
        groups.append(mini[cut[j]:j])
        j = cut[j]
    return groups[::-1] + ([full] if full else [])


def train_support(configs, data: Dataset | None = None, on_eval=None, stop=None, progress=None) -> pd.DataFrame:
    """Train support configs (any mix of batch sizes) in as few ensembles as padding allows. Returns one
    tidy frame (run, step, metric, value, diverged_at) with run = index into `configs`."""
    configs = list(configs)
    data = data if data is not None else data_for(configs[0])
    n, frames = data.n_train, []
    for c in configs:  # a clear message for bad input (batch > n, rank > width…) before anything trains
        validate(c, n_train=n)
    for idx in _groups(configs, n):
        group = [configs[i] for i in idx]
        gd = (group[0].batch_size or n) >= n
        exact = gd and group[0].activation == "linear" and not group[0].bias
        relay = None if on_eval is None else (lambda rows, step, idx=idx: on_eval(
            [{**r, "run": idx[r["run"]]} for r in rows], step))
        run = train([c.replace(batch_size=None) for c in group] if gd else group,
                    data=full_batch_equivalent(data) if exact else data, probes=[support_probe(data.info["k"])],
                    on_eval=relay, stop=stop, progress=progress)
        frames.append(charts.tidy(run).assign(run=lambda f: f.run.map(dict(enumerate(idx)))))
        if run.stopped:
            break
    return pd.concat(frames, ignore_index=True).sort_values(["run", "step", "metric"], ignore_index=True)


def explore_run(cfg: RunConfig, on_eval=None, stop=None) -> pd.DataFrame:
    """The explorer's run function: one support config (GD through the exact moment data set)."""
    return train_support([cfg], on_eval=on_eval, stop=stop, progress=False)


def temperature_sweep(alphas, temperatures, seeds, batch_size=16, width=128, n_train=400, steps=3000, device="auto"):
    """One ensemble per α over temperatures × seeds; each stops once every member has reached zero
    training hinge loss or diverged. A member counts as diverged when the engine says so or when its
    final training loss is no lower than at the start (the weights blew up without fitting; diverged_at
    is then the last step). Returns (final table, tidy history)."""
    rows, hists = [], []
    for alpha in alphas:
        cfgs = [alpha_config(alpha, t, batch_size, width, n_train, steps, s, device) for t in temperatures for s in seeds]
        temps = [c.step_size * alpha ** 2 / batch_size for c in cfgs]
        latest, done = {}, threading.Event()
        def on_eval(new, step, latest=latest, done=done, m=len(cfgs)):  # stop once all fit or diverged
            latest.update({r["run"]: r["value"] for r in new if r["metric"] == "train_loss"})
            if len(latest) == m and all(v == 0 or not math.isfinite(v) for v in latest.values()):
                done.set()
        r = train(cfgs, probes=[lambda st: {"rel_change": relative_change(st.params, st.model.initial)}], on_eval=on_eval,
                  stop=done)
        h, end, loss = r.history, int(r.history.step.max()), r.history[r.history.metric == "train_loss"]
        last = h.sort_values("step").groupby(["run", "metric"]).last()["value"].unstack()
        fit_step, start = loss[loss.value == 0].groupby("run").step.min(), loss[loss.step == 0].set_index("run").value
        for i, c in enumerate(cfgs):
            div, final = r.diverged_step(i), float(last.loc[i, "train_loss"]) if i in last.index else math.nan
            if div is None and not final < float(start[i]):  # blew up or ended no better than the start
                div = end
            ok = 1.0 if div is None else math.nan  # no final weights or error after a divergence
            rows.append(dict(alpha=alpha, temperature=temps[i], seed=c.seed, step_size=c.step_size, train_loss=final,
                             rel_change=ok * last.loc[i, "rel_change"], test_error=ok * (1 - last.loc[i, "test_acc"]),
                             diverged_at=div, fitted=div is None and final == 0, fit_step=fit_step.get(i), steps_run=end))
        hists.append(h.assign(alpha=alpha, temperature=h.run.map(temps.__getitem__), seed=h.run.map(lambda i: cfgs[i].seed)))
    table = pd.DataFrame(rows).astype({"diverged_at": "Int64", "fit_step": "Int64"})
    return table.assign(trained=table.diverged_at.isna()), pd.concat(hists, ignore_index=True)


def _label_b(b, n) -> str:
    return "GD" if b is None or b >= n else f"B={b}"


def _diverged(rows: pd.DataFrame, label) -> dict:
    return {label(r): int(r.diverged_at) for r in rows[rows.diverged_at.notna()].itertuples()}


@THEME.run
def run(p, result) -> None:
    """Experiments 1–3 at these settings; claims over `seeds` seeds (seed, seed + 1, …)."""
    base = config(p.step_size, p.batch_size, p.weight_decay, p.rank, p.width, p.depth, p.k, p.d, p.n_train,
                  p.label_noise, p.grad_clip, p.steps, p.seed, device=p.device)
    n, seeds = data_for(base).n_train, [p.seed + i for i in range(p.seeds)]
    # every support member once: experiment 1 (η0 × {GD, batch_sizes} × seeds) and the sweep (seed only)
    keys = list(dict.fromkeys([(p.step_size, b, s) for s in seeds for b in [None, *p.batch_sizes]]
                              + [(float(e), b, p.seed) for e in p.sweep_step_sizes for b in [None, *p.sweep_batch_sizes]]))
    configs = [base.replace(step_size=eta, batch_size=b, seed=s) for eta, b, s in keys]
    with result.timed("support and phase diagram"):
        frame = train_support(configs)
    info = pd.DataFrame([{"run": i, "step_size": eta, "batch_size": b, "seed": s, "B": _label_b(b, n),
                          "temperature": eta / (b if b is not None and b < n else n)} for i, (eta, b, s) in enumerate(keys)])
    info["diverged_at"] = info.run.map(frame.groupby("run").diverged_at.first()).astype("Int64")
    first, last = (frame.sort_values("step").groupby(["run", "metric"]).value.agg(f).unstack() for f in ("first", "last"))
    for m in ("irrelevant_norm", "relevant_norm", "train_loss", "test_loss"):  # none after a divergence
        info[m] = info.run.map(last[m]).where(info.diverged_at.isna())
    info["initial_irrelevant_norm"] = info.run.map(first.irrelevant_norm)
    # ---- experiment 1: at η0 the irrelevant norm falls as B falls; smallest B ≤ ½ GD; GD stays put
    labels = ["GD", *(_label_b(b, n) for b in sorted(p.batch_sizes, reverse=True))]
    at0 = info[(info.step_size == p.step_size) & info.seed.isin(seeds) & info.B.isin(labels)]
    norms = at0.pivot(index="seed", columns="B", values="irrelevant_norm").loc[seeds, labels]
    initial = at0[at0.B == "GD"].set_index("seed").initial_irrelevant_norm.loc[seeds]
    falls = norms.values.tolist()  # per seed: GD, largest B, …, smallest B (NaN where a run diverged)
    half = (norms[labels[-1]] / norms["GD"]).round(4).tolist()
    drift = (norms["GD"] / initial - 1).abs().round(4).tolist()
    m = result.metrics
    for s in seeds:
        m.update({key("irrelevant", B=b.removeprefix("B="), seed=s): round(norms.loc[s, b], 4) for b in labels})
        m[key("initial_irrelevant", seed=s)] = round(initial[s], 4)
    m.update({**per_seed("ratio_smallest_B_to_GD", half, seeds), **per_seed("gd_relative_drift", drift, seeds),
              **per_seed("strictly_decreasing", [decreasing()(v) for v in falls], seeds)})
    gone = lambda bs: _diverged(at0[at0.B.isin(bs)], lambda r: f"{r.B}, seed {r.seed}")
    result.claims = [
        verdict("irrelevant_norm_falls_with_b", f"at η = {p.step_size:g} the final irrelevant norm decreases strictly "
                f"as B decreases ({' > '.join(labels)})", falls, STRICTLY_DECREASING, diverged=gone(labels)),
        verdict("smallest_b_halves_gd", f"{labels[-1].replace('=', ' = ')} ends at most half of GD's irrelevant norm",
                half, HALF_OF_GD, diverged=gone(["GD", labels[-1]])),
        verdict("gd_keeps_irrelevant_norm", f"full-batch GD keeps the irrelevant norm within {GD_DRIFT * 100:g} % of its "
                "initial value", drift, GD_KEEPS_NORM, diverged=gone(["GD"]))]
    # ---- experiment 2: does η/B alone predict the outcome? pairs of sweep cells with equal η/B
    phase = info[(info.seed == p.seed) & info.step_size.isin([float(e) for e in p.sweep_step_sizes])
                 & (info.batch_size.isin(p.sweep_batch_sizes) | info.batch_size.isna())].copy()
    pairs = iso_temperature_pairs(phase[phase.B != "GD"])
    m.update(iso_T_pairs=len(pairs), sweep_cells=len(phase))
    if len(pairs):
        worst = pairs.sort_values("ratio", ascending=False).iloc[0]
        m.update(iso_T_max_ratio=round(float(worst.ratio), 4), iso_T_worst_pair_eta_small=float(worst.eta_small),
                 iso_T_worst_pair_eta_large=float(worst.eta_large), iso_T_worst_pair_T=float(worst.temperature))
    table = pd.concat([initial.to_frame("initial").T, norms.T]).round(3)  # rows: initial, GD, largest B … smallest
    result.frames.update(support=frame.merge(info[["run", "step_size", "batch_size", "B", "seed"]], on="run"), runs=info,
                         support_table=table.rename(columns=lambda s: f"seed {s}"), phase=phase, pairs=pairs)
    start = info[(info.step_size == p.step_size) & (info.B == _label_b(p.batch_size, n)) & (info.seed == p.seed)]
    k = dataclasses.replace(THEME.params["k"], slider=(1, p.d - 1))  # k < d
    result.exploration = Exploration(base, explore_chart, explore_run, {"steps": THEME.params["steps"], "seed": SEED, "k": k},
                                     None if start.empty else frame[frame.run == start.run.iloc[0]].assign(run=0),
                                     presets=PRESETS, learned=learned_chart)
    if not (p.alphas and p.temperatures):  # an empty list skips experiment 3
        return
    # ---- experiment 3: lazy regime at the largest α, feature learning at the smallest
    with result.timed("temperature vs output scale"):
        temp, hist = temperature_sweep(p.alphas, p.temperatures, seeds, p.alpha_batch_size, p.alpha_width,
                                       p.alpha_n_train, p.alpha_steps, p.device)
    lazy_a, feat_a = max(p.alphas), min(p.alphas)
    change = lambda a: temp[temp.alpha == a].pivot(index="seed", columns="temperature", values="rel_change").loc[seeds]
    per_t = change(feat_a) / change(lazy_a)  # seeds × T; NaN where a run at either α did not train
    lazy = change(lazy_a).round(4).values.tolist()
    ratio = [None if row.isna().all() else round(float(row.min()), 3) for _, row in per_t.iterrows()]
    for r in temp[temp.alpha.isin([lazy_a, feat_a])].itertuples():
        m[key("rel_change", alpha=r.alpha, T=r.temperature, seed=r.seed)] = round(r.rel_change, 4)
        if pd.notna(r.diverged_at):
            m[key("diverged_at", alpha=r.alpha, T=r.temperature, seed=r.seed)] = int(r.diverged_at)
    for s in seeds:
        m.update({key("feature_ratio", T=t, seed=s): round(float(v), 3) for t, v in per_t.loc[s].items()})
    cell = lambda r: f"α = {r.alpha:g}, T = {r.temperature:g}, seed {r.seed}"
    feat = temp[temp.alpha == feat_a]
    untrained = feat[feat.diverged_at.notna()].sort_values(["temperature", "seed"])
    unfitted = feat[feat.diverged_at.isna() & ~feat.fitted]
    cold = sorted(set(untrained.temperature))
    m["feature_untrained_temperatures"] = len(cold)
    per_t_note = "; ".join(f"seed {s}: " + ", ".join(f"T = {t:g}: " + ("did not train" if math.isnan(v) else f"{v:.3g}")
                                                     for t, v in per_t.loc[s].items()) for s in seeds)
    trains = [t for t in p.temperatures if not np.isclose(cold, t, rtol=1e-9, atol=0).any()]
    cold = [t for t in p.temperatures if t not in trains]  # as declared (the table's T carry rounding)
    result.claims += [
        verdict("lazy_regime", f"lazy regime (α = {lazy_a:g}): relative weight change < {LAZY_LIMIT:g} and "
                "non-decreasing in T", lazy, LAZY_REGIME, note="max per seed: " + ", ".join(
                    f"{max(v):.3f}" for v in lazy), diverged=_diverged(temp[temp.alpha == lazy_a], cell)),
        verdict("feature_regime", f"feature regime (α = {feat_a:g}): relative weight change ≥ {FEATURE_FACTOR:g}× the "
                f"lazy value (α = {lazy_a:g}) at every T where it trains"
                + (f" (T = {', '.join(f'{t:g}' for t in trains)}; not at T = {', '.join(f'{t:g}' for t in cold)})"
                   if cold else ""), ratio, FEATURE_REGIME,
                note=f"ratio per T, {per_t_note}" + (f"; trained but not fitted within {p.alpha_steps} steps: "
                                                     + ", ".join(cell(r) for r in unfitted.itertuples())
                                                     if len(unfitted) else "")),
        verdict("feature_regime_untrained", f"feature regime (α = {feat_a:g}): temperatures at which the network does "
                "not train (diverges or ends no better than it started), reported rather than scored: "
                + (", ".join(f"T = {t:g}" for t in cold) if cold else "none"), [float(t) for t in cold],
                Rule("reported", lambda v: True), informational=True,
                note="; ".join(f"{cell(r)}: diverged at step {r.diverged_at}" for r in untrained.itertuples()))]
    result.frames.update(temperature=temp, temperature_history=hist)


def iso_temperature_pairs(cells: pd.DataFrame) -> pd.DataFrame:
    """Pairs of sweep cells with the same η/B (within 1e-9 relative): the one with the smaller η and its
    partner, and the ratio of their final irrelevant norms (small η / large η)."""
    c = cells.dropna(subset=["irrelevant_norm"])[["step_size", "batch_size", "irrelevant_norm", "temperature"]]
    c.columns = ["eta", "b", "norm", "temperature"]
    pairs = c.merge(c, how="cross", suffixes=("_small", "_large"))
    pairs = pairs[(pairs.eta_small < pairs.eta_large)
                  & np.isclose(pairs.temperature_small, pairs.temperature_large, rtol=1e-9, atol=0)]
    pairs = pairs.assign(temperature=pairs.temperature_small, ratio=pairs.norm_small / pairs.norm_large)
    return pairs.drop(columns=["temperature_small", "temperature_large"]).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# charts

def input_norm_chart(frame: pd.DataFrame, k: int, title: str, width: int = charts.WIDTH, height: int = charts.HEIGHT):
    """Every input's first-layer norm ‖W₀[i, :]‖ over time, coloured relevant (i < k) or irrelevant."""
    rows = frame[frame.metric.str.match(r"^in\d+$")].assign(input=lambda f: np.where(
        f.metric.str[2:].astype(int) < k, "relevant", "irrelevant"))
    return charts.curves(rows, sorted(rows.metric.unique()), color="input", title=title, y_title="‖W₀ row‖ of input",
                         width=width, height=height)


def support_chart(frame: pd.DataFrame, seed: int | None = None, step_size: float | None = None,
                  k: int = 5, batch_sizes=None) -> alt.VConcatChart:
    """Per-input first-layer norms over time, one panel per batch size, and the irrelevant norm and the
    training loss over time. `batch_sizes` selects panels (full-batch GD is always drawn)."""
    f = frame if batch_sizes is None else frame[frame.batch_size.isna() | frame.batch_size.isin(list(batch_sizes))]
    f = f if seed is None else f[f.seed == seed]
    f = f if step_size is None else f[f.step_size == step_size]
    order = sorted(f.B.unique(), key=lambda b: math.inf if b == "GD" else int(b[2:]))
    panel = min(150, 900 // max(1, len(order)) - 24)  # keeps the row within ~960 px
    return alt.vconcat(
        charts.row(*(input_norm_chart(f[f.B == b], k, b, width=panel, height=130) for b in order)),
        charts.row(charts.curves(f, "irrelevant_norm", color="B", title="irrelevant first-layer norm",
                                 y_title="irrelevant norm ‖W₀[k:]‖", width=300, height=160),
                   charts.curves(f, "train_loss", color="B", log_y=True, title="training loss",
                                 y_title="train loss (½ MSE)", width=300, height=160))).resolve_scale(color="independent")


def _edges(values):
    """Cell edges on a log axis: geometric midpoints between neighbours, mirrored at the ends."""
    v = np.array(sorted(values), dtype=float)
    if len(v) == 1:
        return {v[0]: (v[0] / 1.4, v[0] * 1.4)}
    mids = np.sqrt(v[1:] * v[:-1])
    lo, hi = np.concatenate([[v[0] ** 2 / mids[0]], mids]), np.concatenate([mids, [v[-1] ** 2 / mids[-1]]])
    return {x: (a, b) for x, a, b in zip(v, lo, hi)}


def phase_chart(phase: pd.DataFrame, metric: str = "irrelevant_norm", title: str | None = None,
                iso=(1e-3, 1e-2, 1e-1, 1.0), log_color: bool = False) -> alt.LayerChart:
    """Heatmap of a final metric over (B, η) on log axes (full-batch GD as the right-most column) with
    iso-lines of the temperature η/B; diverged cells read "div."."""
    gd_b = max([*phase.batch_size.dropna(), 1]) * 4  # full-batch GD's column
    cells = phase.assign(b=phase.batch_size.fillna(gd_b).astype(float), value=phase[metric].astype(float),
                         state=np.where(phase.diverged_at.notna(), "diverged", ""))
    for c, col in (("b", "b"), ("e", "step_size")):
        cells[c + "0"], cells[c + "1"] = zip(*cells[col].map(_edges(cells[col].unique())))
    mid = (cells.value.min() + cells.value.max()) / 2  # light text on dark cells and vice versa
    cells["text"], cells["tone"] = zip(*[(f"{v:.2f}", "light" if v > mid else "dark") if math.isfinite(v)
                                         else ("div.", "diverged") for v in cells.value])
    cells = cells.assign(xm=np.sqrt(cells.b0 * cells.b1), ym=np.sqrt(cells.e0 * cells.e1))
    xs, ys = (alt.Scale(type="log", domain=[float(cells[c + "0"].min()), float(cells[c + "1"].max())], nice=False)
              for c in "be")
    axis = lambda col, **kw: alt.Axis(values=sorted(cells[col].unique().tolist()), format="~g", **kw)
    base = alt.Chart(charts.inline(cells))
    rect = base.mark_rect(stroke="white", strokeWidth=0.5).encode(
        x=alt.X("b0:Q", scale=xs, title="batch size B", axis=axis("b", labelExpr=f"datum.value == {gd_b:g} ? 'GD' : datum.label")),
        x2="b1:Q", y=alt.Y("e0:Q", scale=ys, title="step size η", axis=axis("step_size")), y2="e1:Q",
        color=alt.Color("value:Q", title=metric, scale=alt.Scale(scheme="viridis", type="log" if log_color else "linear"),
                        legend=alt.Legend(format=".1e" if log_color else ".2f")),
        tooltip=["B:N", alt.Tooltip("step_size:Q", title="η"), alt.Tooltip("temperature:Q", title="η/B", format=".3g"),
                 alt.Tooltip("value:Q", format=".3g", title=metric), "state:N"])
    tones = alt.Scale(domain=["dark", "light", "diverged"], range=["white", "black", charts.DIVERGED_COLOR])
    text = base.mark_text(fontSize=8).encode(x=alt.X("xm:Q", scale=xs), y=alt.Y("ym:Q", scale=ys), text="text:N",
                                             color=alt.Color("tone:N", scale=tones, legend=None))
    bs = np.geomspace(xs.domain[0], cells.b1[cells.b != gd_b].max() if (cells.b != gd_b).any() else xs.domain[1], 40)
    lines = pd.DataFrame([(b, t * b, f"η/B = {t:g}") for t in iso for b in bs], columns=["b", "eta", "label"])
    lines = lines[lines.eta.between(*ys.domain)]
    lines = lines[lines.groupby("label").b.transform("size") >= 2]  # an iso-line needs two points in the frame
    xy, layers = dict(x=alt.X("b:Q", scale=xs), y=alt.Y("eta:Q", scale=ys)), [rect, text]
    if len(lines):
        layers += [alt.Chart(charts.inline(lines)).mark_line(color="white", strokeDash=[4, 3], strokeWidth=1.2, opacity=0.8)
                   .encode(detail="label:N", **xy),
                   alt.Chart(charts.inline(lines.groupby("label", as_index=False).nth(-3))).mark_text(
                       align="right", dx=-4, fontSize=9, color="white", fontWeight="bold").encode(text="label:N", **xy)]
    return alt.layer(*layers).resolve_scale(color="independent").properties(width=330, height=260, title=title or metric)


def collapse_chart(phase: pd.DataFrame, metric: str = "irrelevant_norm") -> alt.LayerChart:
    """Final metric against η/B, one line per η: if η/B alone set the outcome, the lines would coincide."""
    return charts.against(phase[phase.B != "GD"], "temperature", metric, color="step_size", log_x=True,
                          x_title="temperature η/B", y_title=metric.replace("_", " "), tooltip=["B"], width=330, height=220,
                          title="does η/B alone predict the outcome?")


def temperature_chart(temp: pd.DataFrame) -> alt.HConcatChart:
    """Experiment 3: relative weight change and test error over (T, α), mean over the seeds that trained;
    cells where a seed diverged or did not fit are marked."""
    g = temp.assign(diverged=temp.diverged_at.notna()).groupby(["alpha", "temperature"], as_index=False).agg(
        rel_change=("rel_change", "mean"), test_error=("test_error", "mean"), diverged=("diverged", "any"),
        fitted=("fitted", "all"))
    t, a = "temperature T = η/B", "output scale α"
    g = g.assign(note=np.where(g.diverged, "diverged", np.where(g.fitted, "", "not fitted"))).rename(
        columns={"temperature": t, "alpha": a})
    notes = alt.Chart(charts.inline(g[[t, a, "note"]].assign(**{c: g[c].map("{:g}".format) for c in (t, a)}))).mark_text(
        fontSize=8, dy=11, color=charts.DIVERGED_COLOR).encode(
        x=alt.X(f"{t}:O", sort=[f"{v:g}" for v in sorted(g[t].unique())]),
        y=alt.Y(f"{a}:O", sort=[f"{v:g}" for v in sorted(g[a].unique(), reverse=True)]), text="note:N")
    heat = lambda col, title, log: alt.layer(charts.heatmap(  # a cell with no seed trained has no colour, only its note
        g.dropna(subset=[col]), t, a, col, log_color=log, fmt=".3f", title=title, width=220, height=160), notes)
    return charts.row(heat("rel_change", "relative weight change |θ−θ₀|/|θ₀|", True),
                      heat("test_error", "test error", False)).resolve_scale(color="independent")


# the explorer's guided scenarios (controls: step_size, batch_size, weight_decay, rank, steps, seed, k)
PRESETS = {
    "B = 1": {"question": "SGD with one example per step at η = 0.3: which inputs' first-layer weights shrink, and how far?",
              "values": {"step_size": 0.3, "batch_size": 1, "weight_decay": 0.0, "steps": 4000}, "lock": ("step_size",)},
    "full batch": {"question": "Full-batch GD at the same η = 0.3: do the irrelevant inputs' weights move at all?",
                   "values": {"step_size": 0.3, "batch_size": None, "weight_decay": 0.0, "steps": 4000},
                   "lock": ("step_size",)},
    "GD with explicit λ": {"question": "Full-batch GD needs explicit weight decay to shrink the irrelevant weights: "
                           "does λ = 0.01 shrink the relevant ones too?",
                           "values": {"step_size": 0.3, "batch_size": None, "weight_decay": 0.01, "steps": 4000}},
    "same η/B, smaller η": {"question": "η = 0.15 with B = 2 has the η/B of η = 0.3 with B = 4: do the irrelevant "
                            "weights end alike?", "values": {"step_size": 0.15, "batch_size": 2,
                                                                             "weight_decay": 0.0, "steps": 4000}},
}


def learned_chart(frame: pd.DataFrame, config: RunConfig | None = None) -> alt.Chart:
    """What the first layer learned: each input's outgoing first-layer weight norm ‖W₀[i, :]‖ at the latest
    evaluation, relevant inputs (i < k) and irrelevant ones side by side, one row of bars per run compared."""
    k = config.data_options.get("k", 5) if config is not None else 5
    rows = frame[frame.metric.str.match(r"^in\d+$")]
    if rows.empty:
        return charts.empty("the first-layer weights appear at the first evaluation")
    group = [c for c in ("label", "run") if c in rows.columns][:1]
    rows = rows[rows.step == rows.groupby(group or ["metric"]).step.transform("max")] if group else rows[rows.step == rows.step.max()]
    rows = rows.assign(input=rows.metric.str[2:].astype(int)).assign(
        kind=lambda f: np.where(f.input < k, "relevant", "irrelevant"))
    enc = dict(x=alt.X("input:O", title="input i"), y=alt.Y("value:Q", title="‖W₀[i, :]‖ now"),
               color=alt.Color("kind:N", title=None, scale=alt.Scale(domain=["relevant", "irrelevant"])),
               tooltip=["input:O", "kind:N", alt.Tooltip("value:Q", format=".3f")])
    if group and rows[group[0]].nunique() > 1:
        enc["row"] = alt.Row(f"{group[0]}:N", title=None)
    return alt.Chart(charts.inline(rows)).mark_bar().encode(**enc).properties(
        width=420, height=110, title="what it learned: first-layer weights of relevant vs irrelevant inputs")


def explore_chart(frame: pd.DataFrame, config: RunConfig | None = None) -> alt.HConcatChart:
    """The explorer's chart: every input's first-layer norm over time and the training and test loss."""
    k = config.data_options.get("k", 5) if config is not None else 5
    return charts.row(input_norm_chart(frame, k, "first-layer weights per input", width=300),
                      charts.curves(frame, ["train_loss", "test_loss"], log_y=True, title="loss", y_title="loss (½ MSE)",
                                    width=260)).resolve_scale(color="independent")

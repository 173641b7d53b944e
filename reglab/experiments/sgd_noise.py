"""SGD noise as an implicit regularizer: η/B shrinks the first-layer weights of irrelevant inputs.

Three experiments, all trained with the one engine (`reglab.engine.train`), as batched ensembles:

1. Support (Beneventano, Pinto & Poggio 2024; code andreakiro/sgd-finds-support). A linear teacher uses the
   first k of d Gaussian inputs; a linear MLP d-15-15-15-1 without biases learns it with gradient clipping.
   Mini-batch SGD shrinks the first-layer rows of the d − k irrelevant inputs toward zero; full-batch GD
   at the same η does not (it would need explicit weight decay).
2. Phase diagram over (η, B): final irrelevant norm and test error, with iso-lines of the temperature
   η/B — showing where η/B does and does not predict the outcome.
3. Temperature T = η/B against the output scale α (Sclocchi, Geiger & Wyart 2023): digits even/odd
   (400 standardized training images), ReLU MLP 64-128-128-1 (the pilot used 256: 3× the CPU time) with
   output α·(f − f₀) and hinge loss / α²; lazy (large α) vs feature learning.

Loss convention: reglab's "mse" is ½(f − y)² averaged over examples; the reference code uses
`nn.MSELoss` (no ½). SGD with step η and gradient clipping c on the ½ loss is *exactly* SGD with step
η/2 and clipping 2c on nn.MSELoss, so the reference recipe (η = 0.1, clip 1) is our η = 0.2, clip 0.5.
The hinge loss / α² of experiment 3 is the plain hinge with step size η/α² (no clipping, no momentum).

Full-batch GD of a linear network without biases sees the data only through its second moments, so it is
trained on an exactly equivalent data set of d + 1 rows (`full_batch_equivalent`), which makes the GD
members as cheap as one small batch.
"""
from __future__ import annotations

import functools
import math
import threading

import altair as alt
import numpy as np
import pandas as pd
import torch

from ..claims import Claim, Result
from ..config import ConfigError, Interval, RunConfig, check, validate
from ..data import Dataset, from_arrays, make_dataset
from ..engine import train
from ..transforms import member_norm

# ---------------------------------------------------------------------------------------------
# defaults (THEMES.md T2; η in reglab's ½-loss convention, see the module docstring)

STEP_SIZE = 0.3  # = 0.15 with nn.MSELoss: inside the claim's range 0.1–0.2
GRAD_CLIP = 0.5  # = clipping at 1 with nn.MSELoss, as in the reference
BATCH_SIZES = [256, 32, 4, 1]  # experiment 1 (plus full-batch GD)
SWEEP_STEP_SIZES = [0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8]
SWEEP_BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64]  # plus full-batch GD: 8 columns
ALPHAS = [0.1, 1.0, 10.0]
TEMPERATURES = [1e-3, 3e-3, 1e-2, 3e-2]
LAZY_LIMIT = 0.1  # "small" relative weight change
FEATURE_FACTOR = 5.0  # small α changes the weights ≥ 5× more than large α


# ---------------------------------------------------------------------------------------------
# data


def check_positive(name, value, kind=float, low=0, owner="sgd_noise"):
    check(name, value, Interval(kind, low, math.inf, closed="neither" if kind is float else "both"), owner=owner)


@functools.lru_cache(maxsize=8)
def sparse_support_data(n_train: int = 10_000, d: int = 15, k: int = 5, label_noise: float = 1e-3, seed: int = 0,
                        n_test: int = 1000) -> Dataset:
    """The reference recipe (reglab.data.sparse_teacher): k relevant of d inputs, every point twice with
    labels y ± ε."""
    return make_dataset("sparse_teacher", n_train, seed, d=d, k=k, label_noise=label_noise, n_test=n_test)


def full_batch_equivalent(data: Dataset) -> Dataset:
    """A data set of d + 1 rows on which the mean square loss of any *linear, bias-free* model equals
    the loss on `data` (so its full-batch gradients are equal too): R from the QR factorization of
    [X y]/√n, scaled by √(d+1). The test split is kept."""
    xy = torch.cat([data.x_train.double(), data.y_train.double()], 1)
    r = torch.linalg.qr(xy / math.sqrt(len(xy)), mode="r").R * math.sqrt(xy.shape[1])
    out = from_arrays(r[:, :-1].float(), r[:, -1:].float(), data.x_test, data.y_test, task="regression",
                      name=data.name + "_moments")
    out.info.update(data.info)
    return out


def data_for(cfg: RunConfig) -> Dataset:
    o = cfg.data_options
    return sparse_support_data(cfg.n_train or 10_000, o.get("d", 15), o.get("k", 5), o.get("label_noise", 1e-3),
                               cfg.data_seed)


# ---------------------------------------------------------------------------------------------
# metrics (pure functions of stacked parameters: one value per member)


def first_layer(model, params) -> torch.Tensor:
    """The first weight matrix, [M, d, width] (U Vᵀ when the first layer is factorized)."""
    return model.weight(params, 0).detach()


def input_norms(w0: torch.Tensor) -> torch.Tensor:
    """Norm of each input's outgoing first-layer weights: [M, d] (rows of W0 as stored, [M, d, width])."""
    return w0.norm(dim=-1)


def irrelevant_norm(w0: torch.Tensor, k: int) -> torch.Tensor:
    """Frobenius norm of the first-layer weights of the irrelevant inputs k..d−1: [M]."""
    return w0[:, k:, :].flatten(1).norm(dim=1)


def relevant_norm(w0: torch.Tensor, k: int) -> torch.Tensor:
    return w0[:, :k, :].flatten(1).norm(dim=1)


def relative_change(params: dict, initial: dict) -> torch.Tensor:
    """‖θ − θ₀‖ / ‖θ₀‖ over all parameters, per member: [M]."""
    diff = {name: params[name].detach() - initial[name] for name in initial}
    return member_norm(diff) / member_norm(initial)


def support_probe(k: int):
    """Probe: irrelevant and relevant first-layer norms and every input's norm (metrics in0, in1, …)."""
    def probe(state):
        w0 = first_layer(state.model, state.params)
        out = {"irrelevant_norm": irrelevant_norm(w0, k), "relevant_norm": relevant_norm(w0, k)}
        out.update({f"in{j}": v for j, v in enumerate(input_norms(w0).T)})
        return out
    return probe


def weight_change_probe(state):
    """Probe for centred-output models: relative weight change from initialization."""
    return {"rel_change": relative_change(state.params, state.model.initial)}


# ---------------------------------------------------------------------------------------------
# configs


def config(step_size=STEP_SIZE, batch_size=1, weight_decay=0.0, rank=None, width=15, depth=3, k=5, d=15,
           n_train=10_000, label_noise=1e-3, grad_clip=GRAD_CLIP, steps=4000, seed=0, data_seed=0,
           device="auto", eval_every=None) -> RunConfig:
    """One run of the support experiment. batch_size None (or n_train) is full-batch GD; `rank`
    factorizes the first layer W0 = U Vᵀ."""
    return RunConfig(data="sparse_teacher", n_train=n_train, data_seed=data_seed,
                     data_options={"d": d, "k": k, "label_noise": label_noise}, width=width, depth=depth,
                     activation="linear", bias=False, rank=rank, rank_layer=0 if rank is not None else None,
                     loss="mse", optimizer="sgd", step_size=step_size, batch_size=batch_size,
                     weight_decay=weight_decay, grad_clip=grad_clip, steps=steps,
                     eval_every=eval_every or max(1, steps // 25), seed=seed, device=device)


def alpha_config(alpha=1.0, temperature=1e-3, batch_size=16, width=128, n_train=400, steps=3000, seed=0,
                 device="auto") -> RunConfig:
    """Experiment 3: digits even/odd, ReLU MLP 64-width-width-1, output α·(f − f₀), hinge loss / α²,
    SGD at temperature T = η/B (the 1/α² of the loss is folded into the step size)."""
    check_positive("alpha", alpha)
    check_positive("temperature", temperature)
    return RunConfig(data="digits", n_train=n_train, data_options={"target": "parity", "standardize": True},
                     width=width, depth=2, activation="relu", output_scale=float(alpha), center_output=True,
                     loss="hinge", optimizer="sgd", step_size=temperature * batch_size / alpha ** 2,
                     batch_size=batch_size, steps=steps, eval_every=max(1, steps // 12), seed=seed, device=device)


def is_full_batch(cfg: RunConfig, n: int) -> bool:
    return cfg.batch_size is None or cfg.batch_size >= n


OVERHEAD_ROWS = 1200  # one ensemble's per-step overhead, in padded example-rows (measured on the 2-core CPU)


def _groups(configs, n):
    """Indices of configs split into ensembles: full batch alone, and runs of mini-batch sizes chosen to
    minimize the estimated cost Σ (OVERHEAD_ROWS + members × largest batch) — every member is padded to
    its ensemble's largest batch, and every ensemble costs a fixed overhead per step."""
    full = [i for i, c in enumerate(configs) if is_full_batch(c, n)]
    mini = sorted((i for i, c in enumerate(configs) if not is_full_batch(c, n)), key=lambda i: configs[i].batch_size)
    size = [configs[i].batch_size for i in mini]
    # best[j]: cheapest split of the first j members; cuts only between different batch sizes
    best, cut = [0.0] + [math.inf] * len(mini), [0] * (len(mini) + 1)
    for j in range(1, len(mini) + 1):
        if j < len(mini) and size[j] == size[j - 1]:
            continue
        for i in range(j):
            if (i == 0 or size[i] != size[i - 1]) and best[i] < math.inf:
                cost = best[i] + OVERHEAD_ROWS + (j - i) * size[j - 1]
                if cost < best[j]:
                    best[j], cut[j] = cost, i
    groups, j = [], len(mini)
    while j > 0:
        groups.append(mini[cut[j]:j])
        j = cut[j]
    groups = groups[::-1]
    if full:
        groups.append(full)
    return groups


def train_support(configs, data: Dataset | None = None, on_eval=None, stop=None, progress=None) -> pd.DataFrame:
    """Train support configs (any mix of batch sizes) in as few ensembles as padding allows.
    Returns one tidy frame (member, step, metric, value) with member = index into `configs`, and
    `frame.attrs["diverged_at"]` = {member: step}."""
    configs = list(configs)
    data = data if data is not None else data_for(configs[0])
    k = data.info["k"]
    n = data.n_train
    for c in configs:  # a clear message for bad input (batch > n, rank > width…) before anything trains
        validate(c, n_train=n)
    frames, diverged = [], {}
    for idx in _groups(configs, n):
        group = [configs[i] for i in idx]
        gd = is_full_batch(group[0], n)
        exact = gd and group[0].activation == "linear" and not group[0].bias
        train_data = full_batch_equivalent(data) if exact else data
        if gd:
            group = [c.replace(batch_size=None) for c in group]
        relay = None if on_eval is None else (lambda rows, step, idx=idx: on_eval(
            [{**r, "run": idx[r["run"]]} for r in rows], step))
        run = train(group, data=train_data, probes=[support_probe(k)], on_eval=relay, stop=stop, progress=progress)
        h = run.history.copy()
        h["run"] = h["run"].map(dict(enumerate(idx)))
        frames.append(h)
        for m, at in enumerate(run.summary["diverged_at"]):
            if at is not None and not (isinstance(at, float) and math.isnan(at)):
                diverged[idx[m]] = int(at)
        if run.stopped:
            break
    frame = pd.concat(frames, ignore_index=True).sort_values(["run", "step", "metric"], ignore_index=True)
    frame.attrs["diverged_at"] = diverged
    return frame


def initial_frame(result: Result, step_size: float, batch_size: int | None, seed: int) -> pd.DataFrame | None:
    """The tidy history (run 0) of one support member trained by `run`, for the explorer's first view;
    None when `run` did not train that (η, B, seed)."""
    runs = result.frames["runs"]
    n = result.runs["base"].n_train
    b_label = _label_b(batch_size, n)
    hit = runs[(runs.step_size == step_size) & (runs.B == b_label) & (runs.seed == seed)]
    if hit.empty:
        return None
    sup = result.frames["support"]
    frame = sup[sup.run == int(hit.run.iloc[0])][["run", "step", "metric", "value"]].assign(run=0)
    frame = frame.reset_index(drop=True)
    at = hit.diverged_at.iloc[0]
    frame.attrs["diverged_at"] = {} if at is None or (isinstance(at, float) and math.isnan(at)) else {0: int(at)}
    return frame


def explore_run(cfg: RunConfig, on_eval=None, stop=None) -> pd.DataFrame:
    """The explorer's run function: one support config (GD through the exact moment data set)."""
    return train_support([cfg], on_eval=on_eval, stop=stop, progress=False)


# ---------------------------------------------------------------------------------------------
# the experiment


def _final(frame: pd.DataFrame, metric: str) -> dict:
    rows = frame[frame.metric == metric].sort_values("step").groupby("run").last()
    return rows["value"].to_dict()


def _worst(values) -> float:
    """The largest value, rounded; NaN (which fails every ≤ check) when any is not finite (a diverged run)."""
    return round(max(values), 4) if all(math.isfinite(v) for v in values) else float("nan")


def _label_b(b, n) -> str:
    return "GD" if b is None or b >= n else f"B={b}"


def run(step_size=STEP_SIZE, batch_size=1, weight_decay=0.0, rank=None, width=15, depth=3, k=5, d=15,
        n_train=10_000, label_noise=1e-3, grad_clip=GRAD_CLIP, steps=4000, seed=0, n_seeds=3,
        batch_sizes=tuple(BATCH_SIZES), sweep_step_sizes=tuple(SWEEP_STEP_SIZES),
        sweep_batch_sizes=tuple(SWEEP_BATCH_SIZES), alphas=tuple(ALPHAS), temperatures=tuple(TEMPERATURES),
        alpha_batch_size=16, alpha_width=128, alpha_n_train=400, alpha_steps=3000, device="auto") -> Result:
    """Experiments 1–3 at these settings; claims over `n_seeds` seeds (seed, seed+1, …)."""
    check("n_seeds", n_seeds, Interval(int, 1, 20), owner="sgd_noise.run")
    for name, values in (("batch_sizes", batch_sizes), ("sweep_step_sizes", sweep_step_sizes),
                         ("sweep_batch_sizes", sweep_batch_sizes)):
        if len(values) == 0:
            raise ConfigError(f"The '{name}' parameter of sgd_noise.run must list at least one value. Got {values!r} instead.")
    base = config(step_size, batch_size, weight_decay, rank, width, depth, k, d, n_train, label_noise, grad_clip,
                  steps, seed, device=device)
    data = data_for(base)
    n = data.n_train
    seeds = [seed + i for i in range(n_seeds)]
    # every support member, deduplicated: experiment 1 (η0 × {GD, batch_sizes} × seeds) and the sweep
    wanted = {}
    for s in seeds:
        for b in [None, *batch_sizes]:
            wanted[(step_size, b, s)] = None
    for eta in sweep_step_sizes:
        for b in [None, *sweep_batch_sizes]:
            wanted[(float(eta), b, seed)] = None
    keys = list(wanted)
    configs = [base.replace(step_size=float(eta), batch_size=b, seed=s) for eta, b, s in keys]
    frame = train_support(configs, data)
    diverged = frame.attrs["diverged_at"]
    info = pd.DataFrame([{"run": i, "step_size": eta, "batch_size": b, "seed": s,
                          "B": _label_b(b, n), "diverged_at": diverged.get(i)} for i, (eta, b, s) in enumerate(keys)])
    finals = {m: _final(frame, m) for m in ("irrelevant_norm", "relevant_norm", "train_loss", "test_loss")}
    initial = frame[(frame.step == 0) & (frame.metric == "irrelevant_norm")].set_index("run")["value"].to_dict()
    for m, values in finals.items():  # a diverged run has no final value (its chart stops at the divergence)
        info[m] = info["run"].map(values).where(info.diverged_at.isna())
    info["initial_irrelevant_norm"] = info["run"].map(initial)
    info["temperature"] = [eta / (b if b is not None and b < n else n) for eta, b in zip(info.step_size, info.batch_size)]

    metrics, claims = {}, []
    # ---- claim 1: at η0, the irrelevant norm falls as B falls; B=1 ≤ ½ GD; GD within 10 % of init
    order = [None, *sorted(batch_sizes, reverse=True)]
    mono, half, gd_flat = [], [], []
    for s in seeds:
        sel = info[(info.step_size == step_size) & (info.seed == s)].set_index("B")
        vals = [float(sel.loc[_label_b(b, n), "irrelevant_norm"]) for b in order]
        for b, v in zip(order, vals):
            metrics[f"irrelevant_{_label_b(b, n)}_seed{s}"] = round(v, 4)
        mono.append(all(a > b for a, b in zip(vals, vals[1:])) and all(math.isfinite(v) for v in vals))
        smallest = vals[-1] / vals[0]
        half.append(smallest)
        gd0 = float(sel.loc["GD", "initial_irrelevant_norm"])
        gd_flat.append(abs(vals[0] / gd0 - 1))
        metrics[f"initial_irrelevant_seed{s}"] = round(gd0, 4)
    smallest_b = order[-1]
    claims.append(Claim(f"at η = {step_size:g} the final irrelevant norm decreases strictly as B decreases "
                        f"(GD > {' > '.join(f'B={b}' for b in order[1:])})",
                        f"{sum(mono)}/{len(seeds)} seeds", "strictly decreasing for every seed", all(mono)))
    gone = info[(info.step_size == step_size) & info.diverged_at.notna() & info.seed.isin(seeds)]
    gone_note = "; ".join(f"{r.B} seed {r.seed} diverged at step {int(r.diverged_at)}" for r in gone.itertuples())
    claims.append(Claim(f"B = {smallest_b} ends at most half of GD's irrelevant norm",
                        _worst(half), "max over seeds of norm(B)/norm(GD) ≤ 0.5", _worst(half) <= 0.5,
                        note="; ".join(filter(None, ["per seed: " + ", ".join(f"{v:.3f}" for v in half), gone_note]))))
    claims.append(Claim("full-batch GD keeps the irrelevant norm within 10 % of its initial value",
                        _worst(gd_flat), "max over seeds of |final/initial − 1| ≤ 0.1", _worst(gd_flat) <= 0.1,
                        note="per seed: " + ", ".join(f"{v:.3f}" for v in gd_flat)))
    for i, s in enumerate(seeds):
        metrics[f"ratio_smallest_B_to_GD_seed{s}"] = round(half[i], 4)
        metrics[f"gd_relative_drift_seed{s}"] = round(gd_flat[i], 4)
        metrics[f"strictly_decreasing_seed{s}"] = bool(mono[i])

    # ---- the caveat: does η/B alone predict the outcome? pairs of sweep cells with equal η/B
    phase = info[(info.seed == seed) & info.step_size.isin([float(e) for e in sweep_step_sizes])
                 & (info.batch_size.isin(list(sweep_batch_sizes)) | info.batch_size.isna())].copy()
    pairs = iso_temperature_pairs(phase[phase.B != "GD"])
    metrics["iso_T_pairs"] = len(pairs)
    if len(pairs):
        worst = pairs.sort_values("ratio", ascending=False).iloc[0]
        metrics["iso_T_max_ratio"] = round(float(worst.ratio), 4)
        metrics["iso_T_worst_pair_eta_small"] = float(worst.eta_small)
        metrics["iso_T_worst_pair_eta_large"] = float(worst.eta_large)
        metrics["iso_T_worst_pair_T"] = float(worst.temperature)
    metrics["sweep_cells"] = int(len(phase))

    frames = {"support": frame.merge(info[["run", "step_size", "batch_size", "B", "seed"]], on="run"),
              "runs": info, "phase": phase, "pairs": pairs}
    if len(alphas) and len(temperatures):  # experiment 3 (an empty list skips it)
        claims += temperature_claims(frames, metrics, alphas, temperatures, seeds, alpha_batch_size, alpha_width,
                                     alpha_n_train, alpha_steps, device)
    return Result(metrics, claims, frames, {"configs": configs, "base": base})


def temperature_claims(frames, metrics, alphas, temperatures, seeds, batch_size, width, n_train, steps, device):
    """Experiment 3 and its claims; adds frames "temperature" and "temperature_history" and metrics."""
    claims = []
    for name, values in (("alphas", alphas), ("temperatures", temperatures)):
        for v in values:
            check_positive(name, v)
    alpha_batch_size, alpha_width, alpha_n_train, alpha_steps = batch_size, width, n_train, steps
    temp, temp_hist = temperature_sweep(alphas, temperatures, seeds, batch_size=alpha_batch_size, width=alpha_width,
                                        n_train=alpha_n_train, steps=alpha_steps, device=device)
    lazy_a, feat_a = max(alphas), min(alphas)
    lazy_ok, feat_ok, lazy_max, feat_min = [], [], [], []
    for s in seeds:
        lz = temp[(temp.alpha == lazy_a) & (temp.seed == s)].sort_values("temperature")
        ft = temp[(temp.alpha == feat_a) & (temp.seed == s)].sort_values("temperature")
        lz_vals = lz.rel_change.tolist()
        lazy_ok.append(bool(lz.trained.all()) and max(lz_vals) < LAZY_LIMIT
                       and all(b >= a for a, b in zip(lz_vals, lz_vals[1:])))
        lazy_max.append(max(lz_vals))
        both = ft.merge(lz, on="temperature", suffixes=("_f", "_l"))
        both = both[both.trained_f & both.trained_l]
        ratio = (both.rel_change_f / both.rel_change_l).min() if len(both) else float("nan")
        feat_min.append(float(ratio))
        feat_ok.append(bool(len(both)) and ratio >= FEATURE_FACTOR)
        for _, r in lz.iterrows():
            metrics[f"rel_change_alpha{lazy_a:g}_T{r.temperature:g}_seed{s}"] = round(float(r.rel_change), 4)
        for _, r in ft.iterrows():
            metrics[f"rel_change_alpha{feat_a:g}_T{r.temperature:g}_seed{s}"] = (
                round(float(r.rel_change), 4) if r.trained else "diverged" if r.diverged else "not fitted")
    claims.append(Claim(f"lazy regime (α = {lazy_a:g}): relative weight change < {LAZY_LIMIT:g} and non-decreasing in T",
                        f"{sum(lazy_ok)}/{len(seeds)} seeds", f"< {LAZY_LIMIT:g} and non-decreasing for every seed",
                        all(lazy_ok), note="max per seed: " + ", ".join(f"{v:.3f}" for v in lazy_max)))
    claims.append(Claim(f"feature regime (α = {feat_a:g}): relative weight change ≥ {FEATURE_FACTOR:g}× the lazy value at every T",
                        round(min(feat_min), 3) if all(map(math.isfinite, feat_min)) else None,
                        f"min over T and seeds of the ratio ≥ {FEATURE_FACTOR:g} (T where both trained)", all(feat_ok),
                        note="per seed: " + ", ".join(f"{v:.2f}" for v in feat_min)))
    frames.update(temperature=temp, temperature_history=temp_hist)
    return claims


def support_table(result: Result, step_size: float, batch_sizes) -> pd.DataFrame:
    """Final irrelevant norm at η = step_size, one row per batch size (largest first, GD on top), one
    column per seed, plus the initial norm."""
    runs = result.frames["runs"]
    n = result.runs["base"].n_train
    order = ["GD", *(_label_b(b, n) for b in sorted(batch_sizes, reverse=True))]
    sel = runs[(runs.step_size == step_size) & runs.B.isin(order)]
    table = sel.pivot_table(index="B", columns="seed", values="irrelevant_norm").reindex(order)
    table.columns = [f"seed {c}" for c in table.columns]
    init = sel.groupby("seed").initial_irrelevant_norm.first()
    return pd.concat([pd.DataFrame([init.values], index=["initial"], columns=table.columns), table]).round(3)


def iso_temperature_pairs(cells: pd.DataFrame) -> pd.DataFrame:
    """Pairs of sweep cells with the same η/B (within 1e-9 relative): the one with the smaller η and its
    partner, and the ratio of their final irrelevant norms (small η / large η)."""
    rows = []
    cells = cells.dropna(subset=["irrelevant_norm"])
    for _, a in cells.iterrows():
        for _, b in cells.iterrows():
            if a.step_size < b.step_size and math.isclose(a.temperature, b.temperature, rel_tol=1e-9):
                rows.append({"eta_small": a.step_size, "b_small": a.batch_size, "norm_small": a.irrelevant_norm,
                             "eta_large": b.step_size, "b_large": b.batch_size, "norm_large": b.irrelevant_norm,
                             "temperature": a.temperature, "ratio": a.irrelevant_norm / b.irrelevant_norm})
    return pd.DataFrame(rows, columns=["eta_small", "b_small", "norm_small", "eta_large", "b_large", "norm_large",
                                       "temperature", "ratio"])


def temperature_sweep(alphas, temperatures, seeds, batch_size=16, width=128, n_train=400, steps=3000,
                      device="auto"):
    """One ensemble per α over temperatures × seeds; each stops once every member has reached zero
    training hinge loss or diverged. A member counts as diverged when the engine says so or when its
    final training loss is no lower than at the start (the weights blew up without fitting).
    Returns (final table, tidy history)."""
    rows, hists = [], []
    for alpha in alphas:
        cfgs = [alpha_config(alpha, t, batch_size, width, n_train, steps, s, device) for t in temperatures for s in seeds]
        latest = {}
        done = threading.Event()

        def on_eval(new, step, latest=latest, done=done, m=len(cfgs)):
            for r in new:
                if r["metric"] == "train_loss":
                    latest[r["run"]] = r["value"]
            if len(latest) == m and all(v == 0 or not math.isfinite(v) for v in latest.values()):
                done.set()

        r = train(cfgs, probes=[weight_change_probe], on_eval=on_eval, stop=done)
        h = r.history.copy()
        h["alpha"] = alpha
        h["temperature"] = h["run"].map({i: c.step_size * alpha ** 2 / batch_size for i, c in enumerate(cfgs)})
        h["seed"] = h["run"].map({i: c.seed for i, c in enumerate(cfgs)})
        hists.append(h)
        last = r.history.sort_values("step").groupby(["run", "metric"]).last()["value"].unstack()
        fit_step = r.history[(r.history.metric == "train_loss") & (r.history.value == 0)].groupby("run")["step"].min()
        start = r.history[(r.history.step == 0) & (r.history.metric == "train_loss")].set_index("run")["value"]
        for i, c in enumerate(cfgs):
            div = r.summary.loc[i, "diverged_at"]
            div = None if div is None or (isinstance(div, float) and math.isnan(div)) else int(div)
            loss = float(last.loc[i, "train_loss"]) if i in last.index else float("nan")
            if div is None and not (loss < float(start[i])):  # blew up or ended no better than the start
                div = int(r.history.step.max())
            rows.append({"alpha": alpha, "temperature": c.step_size * alpha ** 2 / batch_size, "seed": c.seed,
                         "step_size": c.step_size, "rel_change": float(last.loc[i, "rel_change"]) if div is None else float("nan"),
                         "test_error": 1 - float(last.loc[i, "test_acc"]) if div is None else float("nan"),
                         "train_loss": loss, "diverged": div is not None, "diverged_at": div,
                         "fitted": div is None and loss == 0, "fit_step": None if i not in fit_step.index else int(fit_step[i]),
                         "steps_run": int(r.history.step.max())})
    table = pd.DataFrame(rows)
    table["trained"] = ~table.diverged
    return table, pd.concat(hists, ignore_index=True)


# ---------------------------------------------------------------------------------------------
# charts

RELEVANCE_COLORS = alt.Scale(domain=["relevant", "irrelevant"], range=["#1f77b4", "#d62728"])


def support_chart(frame: pd.DataFrame, seed: int | None = None, step_size: float | None = None,
                  k: int = 5, batch_sizes=None) -> alt.VConcatChart:
    """Per-input first-layer norms over time, one panel per batch size (relevant inputs blue, irrelevant
    red), and the training loss over time. `batch_sizes` selects panels (full-batch GD is always drawn)."""
    f = frame
    if batch_sizes is not None:
        f = f[f.batch_size.isna() | f.batch_size.isin(list(batch_sizes))]
    if seed is not None:
        f = f[f.seed == seed]
    if step_size is not None:
        f = f[f.step_size == step_size]
    inputs = f[f.metric.str.match(r"^in\d+$")].copy()
    inputs["input"] = inputs.metric.str[2:].astype(int)
    inputs["kind"] = np.where(inputs["input"] < k, "relevant", "irrelevant")
    order = sorted(inputs.B.unique(), key=_b_order)
    norms = alt.Chart(inputs).mark_line(strokeWidth=1.2).encode(
        x=alt.X("step:Q", title="step"), y=alt.Y("value:Q", title="‖W₀ row‖ of input"),
        color=alt.Color("kind:N", scale=RELEVANCE_COLORS, title="input"), detail="input:N",
        tooltip=["B:N", "input:Q", "step:Q", alt.Tooltip("value:Q", format=".3f")],
    ).properties(width=150, height=130).facet(column=alt.Column("B:N", sort=order, title=None))
    loss = f[f.metric == "train_loss"]
    losses = alt.Chart(loss).mark_line().encode(
        x=alt.X("step:Q"), y=alt.Y("value:Q", scale=alt.Scale(type="log"), title="train loss (½ MSE)"),
        color=alt.Color("B:N", sort=order, title="batch"), detail="run:N").properties(width=300, height=160,
                                                                                    title="training loss")
    irr = f[f.metric == "irrelevant_norm"]
    irr_chart = alt.Chart(irr).mark_line().encode(
        x=alt.X("step:Q"), y=alt.Y("value:Q", title="irrelevant norm ‖W₀[k:]‖"),
        color=alt.Color("B:N", sort=order, title="batch"), detail="run:N").properties(width=300, height=160,
                                                                                    title="irrelevant first-layer norm")
    return alt.vconcat(norms, alt.hconcat(irr_chart, losses)).resolve_scale(color="independent")


def _b_order(label: str):
    return math.inf if label == "GD" else int(label.split("=")[1])


def _edges(values):
    """Cell edges on a log axis: geometric midpoints between neighbours, mirrored at the ends."""
    v = np.array(sorted(values), dtype=float)
    if len(v) == 1:
        return {v[0]: (v[0] / 1.4, v[0] * 1.4)}
    mids = np.sqrt(v[1:] * v[:-1])
    lo = np.concatenate([[v[0] ** 2 / mids[0]], mids])
    hi = np.concatenate([mids, [v[-1] ** 2 / mids[-1]]])
    return {x: (a, b) for x, a, b in zip(v, lo, hi)}


def phase_chart(phase: pd.DataFrame, metric: str = "irrelevant_norm", title: str | None = None,
                iso=(1e-3, 1e-2, 1e-1, 1.0), log_color: bool = False) -> alt.LayerChart:
    """Heatmap of a final metric over (B, η) on log axes (full-batch GD as the right-most column) with
    iso-lines of the temperature η/B."""
    cells = phase.copy()
    gd_b = max([b for b in cells.batch_size.dropna()] + [1]) * 4
    cells["b"] = cells.batch_size.fillna(gd_b).astype(float)
    be, ee = _edges(cells.b.unique()), _edges(cells.step_size.unique())
    cells["b0"], cells["b1"] = cells.b.map(lambda x: be[x][0]), cells.b.map(lambda x: be[x][1])
    cells["e0"], cells["e1"] = cells.step_size.map(lambda x: ee[x][0]), cells.step_size.map(lambda x: ee[x][1])
    cells["value"] = cells[metric]
    cells["state"] = np.where(cells.diverged_at.notna(), "diverged", "")
    cells["text"] = [f"{v:.2f}" if math.isfinite(v) else "div." for v in cells.value.astype(float)]
    x_dom = [float(cells.b0.min()), float(cells.b1.max())]
    y_dom = [float(cells.e0.min()), float(cells.e1.max())]
    xs = alt.Scale(type="log", domain=x_dom, nice=False)
    ys = alt.Scale(type="log", domain=y_dom, nice=False)
    rect = alt.Chart(cells).mark_rect(stroke="white", strokeWidth=0.5).encode(
        x=alt.X("b0:Q", scale=xs, title="batch size B",
                axis=alt.Axis(values=sorted(cells.b.unique().tolist()), format="~g",
                              labelExpr=f"datum.value == {gd_b:g} ? 'GD' : datum.label")),
        x2="b1:Q", y=alt.Y("e0:Q", scale=ys, title="step size η", axis=alt.Axis(values=sorted(cells.step_size.unique().tolist()), format="~g")),
        y2="e1:Q",
        color=alt.Color("value:Q", title=metric, scale=alt.Scale(scheme="viridis", type="log" if log_color else "linear"),
                        legend=alt.Legend(format=".1e" if log_color else ".2f")),
        tooltip=["B:N", alt.Tooltip("step_size:Q", title="η"), alt.Tooltip("temperature:Q", title="η/B", format=".3g"),
                 alt.Tooltip("value:Q", format=".3g", title=metric), "state:N"])
    mid = float(np.nanmean([np.nanmin(cells.value), np.nanmax(cells.value)])) if cells.value.notna().any() else 0.0
    cells["tone"] = ["diverged" if not math.isfinite(v) else "light" if v > mid else "dark" for v in cells.value.astype(float)]
    text = alt.Chart(cells.assign(xm=np.sqrt(cells.b0 * cells.b1), ym=np.sqrt(cells.e0 * cells.e1))).mark_text(
        fontSize=8).encode(x=alt.X("xm:Q", scale=xs), y=alt.Y("ym:Q", scale=ys),
                           text="text:N",
                           color=alt.Color("tone:N", scale=alt.Scale(domain=["dark", "light", "diverged"],
                                                                     range=["white", "black", "#c0392b"]), legend=None))
    lines = []
    b_lo, b_hi = x_dom[0], float(be[max(b for b in cells.b.unique() if b != gd_b)][1]) if len(be) > 1 else x_dom[1]
    for t in iso:
        bs = np.geomspace(b_lo, b_hi, 40)
        pts = pd.DataFrame({"b": bs, "eta": t * bs, "label": f"η/B = {t:g}"})
        pts = pts[(pts.eta >= y_dom[0]) & (pts.eta <= y_dom[1])]
        if len(pts) >= 2:
            lines.append(pts)
    layers = [rect, text]
    if lines:
        iso_frame = pd.concat(lines)
        layers.append(alt.Chart(iso_frame).mark_line(color="white", strokeDash=[4, 3], strokeWidth=1.2, opacity=0.8).encode(
            x=alt.X("b:Q", scale=xs), y=alt.Y("eta:Q", scale=ys), detail="label:N"))
        ends = iso_frame.groupby("label", as_index=False).nth(-3)
        layers.append(alt.Chart(ends).mark_text(align="right", dx=-4, fontSize=9, color="white", fontWeight="bold").encode(
            x=alt.X("b:Q", scale=xs), y=alt.Y("eta:Q", scale=ys), text="label:N"))
    return alt.layer(*layers).resolve_scale(color="independent").properties(width=330, height=260, title=title or metric)


def collapse_chart(phase: pd.DataFrame, metric: str = "irrelevant_norm") -> alt.Chart:
    """Final metric against η/B, one line per η: if η/B alone set the outcome, the lines would coincide."""
    cells = phase[phase.B != "GD"].dropna(subset=[metric])
    return alt.Chart(cells).mark_line(point=True).encode(
        x=alt.X("temperature:Q", scale=alt.Scale(type="log"), title="temperature η/B"),
        y=alt.Y(f"{metric}:Q", title=metric.replace("_", " ")),
        color=alt.Color("step_size:O", scale=alt.Scale(scheme="plasma"), title="η"),
        tooltip=["step_size:Q", "batch_size:Q", alt.Tooltip("temperature:Q", format=".3g"),
                 alt.Tooltip(f"{metric}:Q", format=".3f")],
    ).properties(width=330, height=220, title="does η/B alone predict the outcome?")


def temperature_chart(temp: pd.DataFrame) -> alt.HConcatChart:
    """Experiment 3: relative weight change and test error over (T, α), mean over seeds; diverged cells
    are marked."""
    g = temp.groupby(["alpha", "temperature"], as_index=False).agg(
        rel_change=("rel_change", "mean"), test_error=("test_error", "mean"), diverged=("diverged", "any"),
        fitted=("fitted", "all"))
    g["T"] = g.temperature.map(lambda v: f"{v:g}")
    g["α"] = g.alpha.map(lambda v: f"{v:g}")
    g["note"] = np.where(g.diverged, "diverged", np.where(g.fitted, "", "not fitted"))
    t_order = [f"{v:g}" for v in sorted(g.temperature.unique())]
    a_order = [f"{v:g}" for v in sorted(g.alpha.unique(), reverse=True)]

    def heat(col, title, fmt, log):
        base = alt.Chart(g).encode(x=alt.X("T:O", sort=t_order, title="temperature T = η/B"),
                                   y=alt.Y("α:O", sort=a_order, title="output scale α"))
        rect = base.mark_rect().encode(color=alt.Color(f"{col}:Q", title=col.replace("_", " "), scale=alt.Scale(
            scheme="viridis", type="log" if log else "linear"), legend=alt.Legend(format=".2g")), tooltip=["α:N", "T:N", alt.Tooltip(f"{col}:Q", format=".3g"), "note:N"])
        txt = base.mark_text(fontSize=10, color="white").encode(text=alt.Text(f"{col}:Q", format=fmt))
        note = base.mark_text(fontSize=8, dy=11, color="#ffb3b3").encode(text="note:N")
        return alt.layer(rect, txt, note).properties(width=220, height=160, title=title)

    return alt.hconcat(heat("rel_change", "relative weight change |θ−θ₀|/|θ₀|", ".3f", True),
                       heat("test_error", "test error", ".3f", False)).resolve_scale(color="independent")


def explore_chart(frame: pd.DataFrame, config: RunConfig | None = None) -> alt.HConcatChart:
    """The explorer's chart: every input's first-layer norm over time (relevant blue, irrelevant red)
    and the training loss."""
    k = (config.data_options.get("k", 5) if config is not None else 5)
    inputs = frame[frame.metric.str.match(r"^in\d+$")].copy()
    inputs["input"] = inputs.metric.str[2:].astype(int)
    inputs["kind"] = np.where(inputs["input"] < k, "relevant", "irrelevant")
    enc = dict(x=alt.X("step:Q", title="step"), detail=alt.Detail(["run:N", "input:N"]))
    if "current" in inputs.columns and not inputs["current"].all():
        enc["opacity"] = alt.condition("datum.current", alt.value(1.0), alt.value(0.25))
    norms = alt.Chart(inputs).mark_line().encode(
        y=alt.Y("value:Q", title="‖W₀ row‖ per input"),
        color=alt.Color("kind:N", scale=RELEVANCE_COLORS, title="input"), **enc).properties(
        width=300, height=200, title="first-layer weights per input")
    loss = frame[frame.metric.isin(["train_loss", "test_loss"])]
    loss = loss[loss.value > 0]
    lenc = dict(x=alt.X("step:Q", title="step"), detail="run:N")
    if "current" in loss.columns and not loss["current"].all():
        lenc["opacity"] = alt.condition("datum.current", alt.value(1.0), alt.value(0.25))
    losses = alt.Chart(loss).mark_line().encode(
        y=alt.Y("value:Q", scale=alt.Scale(type="log"), title="loss (½ MSE)"), color=alt.Color("metric:N"),
        **lenc).properties(width=260, height=200, title="loss")
    return alt.hconcat(norms, losses).resolve_scale(color="independent")

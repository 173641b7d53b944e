"""Double descent: test error against model size peaks at the interpolation threshold N = n; a tuned
ridge removes the peak, and so does an optimizer that cannot reach the interpolating solution.

The model is random-features regression: N fixed ReLU features φ_j(x) = relu(w_j·x)/√N
(w_j ~ N(0, I/d), drawn per seed, nested: width N uses the first N) and a trained linear read-out a.
Everything about the read-out is closed-form linear algebra on the SVD of the n × N feature matrix
Φ = U diag(s) Vᵀ: a solution is a filter g(s) on the singular values, a = V diag(g) Uᵀ y, and

    ridgeless (min-norm)  g = 1/s                  (s below max(n, N)·eps·s_max counts as 0, as numpy's lstsq)
    ridge λ               g = s / (s² + nλ)        (minimizer of ½·mean squared error + ½λ‖a‖²)
    GD, t steps, from 0   g = (1 − (1 − η s²/n)^t) / s   (full-batch GD on ½·mean squared error)

so every λ and every step count costs one small matrix product. Mini-batch SGD has no closed form; it
trains with the one engine (`reglab.engine.train`) on the feature matrix: a depth-0, bias-free MLP
with loss "mse" (½ squared error, mean over examples) and `center_output` (the model outputs
Φ(a − a₀), which is exactly training from a = 0, the start the closed forms assume).

Stability: U and s come from an SVD of the n × n triangular factor R of Φᵀ = QR, updated as features
are added (QR of [R; new columns], never Φᵀ Φ), in float64. Conditioning κ(Φ) = s_max/s_min is
reported for every width; near N = n it reaches ~1e4–1e5 and the solve stays exact to ~1e-11.

The data (`reglab.data.linear_teacher`; the core's `sparse_teacher` duplicates every point for
theme 02) are Gaussian inputs in d = 15 dimensions, a random linear teacher on the first k = 5,
training labels with Gaussian noise of std `label_noise`: n train examples, a validation set of `N_VAL`
noisy examples (for tuning λ) and 1000 noiseless test examples.
"""
from __future__ import annotations

import math
import threading

import altair as alt
import numpy as np
import pandas as pd
import torch

from ..claims import Claim, Result
from ..config import ConfigError, Interval, RunConfig, check, validate
from ..data import feature_weights, from_arrays, linear_teacher
from ..engine import DIVERGENCE_FACTOR, default_threads, train

N_VAL = 500  # noisy validation examples for choosing λ (never the test set)
MIN_WIDTH = 10
LAMBDAS = np.logspace(-6, 2, 33)  # the grid the tuned ridge chooses from (per width, by validation)
SEEDS = 3  # feature draws trained at the defaults ("holds for 3 seeds")
PEAK_WINDOW = 0.25  # the peak must lie within ±25 % of N = n
PEAK_FACTOR = 5.0  # and be ≥ 5× the curve's minimum
MAX_RISE = 1.05  # tuned ridge: never rises more than 5 % from one width to the next
SGD_FRACTIONS = (0.5, 0.8, 1.0, 1.25, 2.5)  # SGD widths, as multiples of n (engine runs are not free)
METHOD_ORDER = ["ridgeless", "ridge λ", "tuned ridge", "GD", "SGD"]


# ---------------------------------------------------------------------------------------------
# configuration


def config(step_size=1.0, batch_size=20, weight_decay=0.0, steps=1000, width=2000, n_train=200, label_noise=0.5,
           d=15, k=5, seed=0, device="auto") -> RunConfig:
    """The run a double-descent curve describes. `width` is the largest number of random features,
    `weight_decay` the fixed ridge λ (0: no fixed-λ curve), `step_size`/`steps` the limited-step GD
    (closed form) and SGD, `batch_size` the SGD batch (None: full-batch GD only, no engine run)."""
    return RunConfig(data="arrays", n_train=n_train, data_seed=0,
                     data_options={"teacher": "linear", "d": d, "k": k, "label_noise": float(label_noise)},
                     model="mlp", width=width, depth=0, activation="relu", bias=False, center_output=True,
                     loss="mse", optimizer="sgd", step_size=step_size, batch_size=batch_size,
                     weight_decay=weight_decay, steps=steps, eval_every=1, seed=seed, device=device)


def _check(cfg: RunConfig) -> None:
    validate(cfg, n_train=cfg.n_train)
    owner = "double_descent"
    check("width", cfg.width, Interval(int, MIN_WIDTH, 20_000), owner)
    check("n_train", cfg.n_train, Interval(int, 10, 5_000), owner)
    opts = cfg.data_options
    check("label_noise", opts.get("label_noise", 0.0), Interval(float, 0, 100), owner)
    check("d", opts.get("d", 15), Interval(int, 1, 1_000), owner)
    check("k", opts.get("k", 5), Interval(int, 1, opts.get("d", 15)), owner)
    unknown = sorted(set(opts) - {"teacher", "d", "k", "label_noise"})
    if unknown:
        raise ConfigError(f"Unknown data option(s) {', '.join(unknown)} for double_descent; valid: d, k, label_noise.")
    if cfg.loss != "mse" or cfg.depth != 0:
        raise ConfigError("double_descent trains a linear read-out of random features: loss 'mse', depth 0.")


def widths(n: int, width_max: int, points: int = 30) -> list:
    """Log-spaced widths from 10 to width_max, plus a dense band (steps of 5 % of n) around N = n."""
    grid = set(np.unique(np.round(np.geomspace(MIN_WIDTH, width_max, points)).astype(int)).tolist())
    grid |= {int(round(n * f)) for f in np.arange(0.8, 1.2001, 0.05)}
    return sorted(w for w in grid if MIN_WIDTH <= w <= width_max)


# ---------------------------------------------------------------------------------------------
# data and features


def problem(cfg: RunConfig) -> dict:
    """Train (n), validation (N_VAL, noisy like train) and test (noiseless) splits in float64."""
    n = cfg.n_train
    opts = {k: v for k, v in cfg.data_options.items() if k != "teacher"}
    x, y, x_test, y_test = linear_teacher(n + N_VAL, cfg.data_seed, **opts)
    f64 = lambda a: torch.from_numpy(np.asarray(a)).to(torch.float64)
    return {"x": f64(x[:n]), "y": f64(y[:n]), "x_val": f64(x[n:]), "y_val": f64(y[n:]),
            "x_test": f64(x_test), "y_test": f64(y_test)}


def relu_features(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Unscaled features relu(x W), [S, n, width]; width N uses the first N columns divided by √N."""
    return torch.relu(x @ w)


def spectra(features: torch.Tensor, eval_features: torch.Tensor, grid, stop=None):
    """For each width N of `grid` (increasing): (N, U [S, n, r], s [S, r], K [S, m, n]) with
    Φ_N/√N = U diag(s) Vᵀ the thin SVD of the scaled train features and K = Φ_eval Φ_Nᵀ / N the
    evaluation-by-train kernel. The SVD comes from the triangular factor of Φᵀ = QR, updated by
    re-factorizing [R; new columns] (a stable, O(n²) per added feature, update; no Gram matrix)."""
    S, n, _ = features.shape
    R = features.new_zeros(S, 0, n)
    K = eval_features.new_zeros(S, eval_features.shape[1], n)
    prev = 0
    for N in grid:
        if stop is not None and stop():
            return
        block = features[:, :, prev:N]
        R = torch.linalg.qr(torch.cat([R, block.transpose(1, 2)], 1), mode="r").R
        K = K + eval_features[:, :, prev:N] @ block.transpose(1, 2)
        prev = N
        U, s, _ = torch.linalg.svd(R.transpose(1, 2) / math.sqrt(N), full_matrices=False)
        yield N, U, s, K / N


def kept(s: torch.Tensor, n: int, N: int) -> torch.Tensor:
    """Singular values a pseudo-inverse keeps: s > max(n, N)·eps·s_max (numpy's lstsq/pinv rule)."""
    return s > s[..., :1] * max(n, N) * torch.finfo(s.dtype).eps


def ridgeless_filter(s, n, N):
    return torch.where(kept(s, n, N), 1 / s, torch.zeros_like(s))


def ridge_filter(s, lam, n):
    """g(s) = s / (s² + nλ) for each λ: [..., L, r]."""
    lam = torch.as_tensor(lam, dtype=s.dtype).reshape(-1, 1)
    return s.unsqueeze(-2) / (s.unsqueeze(-2) ** 2 + n * lam)


def gd_filter(s, step_size, steps, n):
    """Full-batch GD from 0 for `steps` steps at `step_size` on ½·mean squared error:
    g(s) = (1 − (1 − η s²/n)^t)/s. Non-finite where it overflows (a diverging run)."""
    base = 1 - step_size * s ** 2 / n
    g = (1 - base ** steps) / s
    return torch.where(s > 0, g, torch.zeros_like(s))


def solve(U, s, K, y, filters, n):
    """Predictions of the read-outs a = V diag(g) Uᵀ y for filters g [S, F, r]:
    train [S, F, n], evaluation [S, F, m] (through K, never forming V) and ‖a‖² [S, F]."""
    Uy = (U.transpose(1, 2) @ y.unsqueeze(-1)).squeeze(-1)  # [S, r]
    gs = filters * s.unsqueeze(1)  # shrinkage factors on the training fit
    train_pred = torch.einsum("snr,sfr->sfn", U, gs * Uy.unsqueeze(1))
    safe = torch.where(s > 0, s, torch.ones_like(s))
    alpha = torch.einsum("snr,sfr->sfn", U, filters / safe.unsqueeze(1) * Uy.unsqueeze(1))  # a = Φᵀα
    eval_pred = torch.einsum("smn,sfn->sfm", K, alpha)
    norm2 = (filters * Uy.unsqueeze(1)).pow(2).sum(-1)
    return train_pred, eval_pred, norm2


# ---------------------------------------------------------------------------------------------
# the curves


def curves(cfg: RunConfig, seeds, grid=None, stop=None) -> pd.DataFrame:
    """Closed-form curves for every width and seed, as a tidy frame with columns
    run (seed index), step (= width N), metric ("<quantity>:<method>"), value, plus width, seed,
    method, quantity (test / train / norm / lambda), and for each width the conditioning κ(Φ_N)."""
    _check(cfg)
    torch.set_num_threads(default_threads())  # as the engine does: one thread is faster on shared small machines
    p = problem(cfg)
    n, d = cfg.n_train, p["x"].shape[1]
    grid = widths(n, cfg.width) if grid is None else grid
    w = feature_weights(d, cfg.width, seeds)
    F = relu_features(p["x"], w)
    x_eval = torch.cat([p["x_val"], p["x_test"]])
    F_eval = relu_features(x_eval, w)
    n_val = len(p["y_val"])
    L = len(LAMBDAS)
    init_loss = 0.5 * p["y"].pow(2).mean()
    rows = []
    for N, U, s, K in spectra(F, F_eval, grid, stop):
        parts = {"ridgeless": ridgeless_filter(s, n, N).unsqueeze(1)}
        parts["tuned"] = ridge_filter(s, LAMBDAS, n)
        if cfg.weight_decay > 0:
            parts["ridge λ"] = ridge_filter(s, [cfg.weight_decay], n)
        parts["GD"] = gd_filter(s, cfg.step_size, cfg.steps, n).unsqueeze(1)
        G = torch.cat(list(parts.values()), 1)
        tr, ev, norm2 = solve(U, s, K, p["y"], G, n)
        train_mse = (tr - p["y"]).pow(2).mean(-1)
        val_mse = (ev[..., :n_val] - p["y_val"]).pow(2).mean(-1)
        test_mse = (ev[..., n_val:] - p["y_test"]).pow(2).mean(-1)
        offsets = np.cumsum([0] + [v.shape[1] for v in parts.values()])
        idx = dict(zip(parts, offsets[:-1]))
        cond = (s[:, 0] / s[:, -1]).tolist()
        for i, seed in enumerate(seeds):
            def add(method, j, quantity_values):
                for quantity, value in quantity_values.items():
                    rows.append((i, N, f"{quantity}:{method}", float(value), seed, method, quantity))
            add("ridgeless", idx["ridgeless"], {"test": test_mse[i, idx["ridgeless"]], "train": train_mse[i, idx["ridgeless"]],
                                                 "norm": norm2[i, idx["ridgeless"]].sqrt()})
            t0 = idx["tuned"]
            best = int(torch.argmin(val_mse[i, t0:t0 + L]))
            add("tuned ridge", t0 + best, {"test": test_mse[i, t0 + best], "train": train_mse[i, t0 + best],
                                           "norm": norm2[i, t0 + best].sqrt(), "lambda": LAMBDAS[best]})
            if "ridge λ" in idx:
                j = idx["ridge λ"]
                add("ridge λ", j, {"test": test_mse[i, j], "train": train_mse[i, j], "norm": norm2[i, j].sqrt()})
            j = idx["GD"]
            gd_loss = 0.5 * float(train_mse[i, j])
            diverged = not math.isfinite(gd_loss) or gd_loss > DIVERGENCE_FACTOR * max(float(init_loss), 1.0)
            if diverged:
                rows.append((i, N, "diverged:GD", 1.0, seed, "GD", "diverged"))
            else:
                add("GD", j, {"test": test_mse[i, j], "train": train_mse[i, j], "norm": norm2[i, j].sqrt()})
            rows.append((i, N, "cond", cond[i], seed, "ridgeless", "cond"))
            rows.append((i, N, "sharpness", float(s[i, 0] ** 2 / n), seed, "GD", "sharpness"))
    return pd.DataFrame(rows, columns=["run", "step", "metric", "value", "seed", "method", "quantity"]).assign(
        width=lambda f: f["step"])


def sgd_curves(cfg: RunConfig, seed: int, grid, stop=None) -> tuple[pd.DataFrame, dict]:
    """Mini-batch SGD (batch cfg.batch_size, cfg.steps steps at cfg.step_size) on the random features of
    one seed, one engine run per width of `grid`. Returns tidy rows and {width: diverged_at step}."""
    p = problem(cfg)
    d = p["x"].shape[1]
    w = feature_weights(d, max(grid), [seed])[0]  # the same first features as `curves` draws
    F, Ft = relu_features(p["x"], w), relu_features(p["x_test"], w)
    base = cfg.replace(data="arrays", data_options={}, n_train=None, eval_every=cfg.steps, seed=seed)
    should_stop = stop.is_set if isinstance(stop, threading.Event) else stop
    rows, diverged = [], {}
    for N in grid:
        if should_stop is not None and should_stop():
            break
        scale = 1 / math.sqrt(N)
        data = from_arrays((F[:, :N] * scale).float(), p["y"].float().unsqueeze(1),
                           (Ft[:, :N] * scale).float(), p["y_test"].float().unsqueeze(1), task="regression")
        r = train(base.replace(width=N), data=data, stop=stop, progress=False)
        row = r.summary.iloc[0]
        if row["diverged_at"] is not None:
            diverged[N] = int(row["diverged_at"])
            rows.append((0, N, "diverged:SGD", 1.0, seed, "SGD", "diverged"))
            continue
        # the engine's "mse" is ½·squared error: ×2 gives the mean squared error of the closed forms
        rows.append((0, N, "test:SGD", 2 * float(row["test_loss"]), seed, "SGD", "test"))
        rows.append((0, N, "train:SGD", 2 * float(row["train_loss"]), seed, "SGD", "train"))
    frame = pd.DataFrame(rows, columns=["run", "step", "metric", "value", "seed", "method", "quantity"])
    return frame.assign(width=frame["step"]), diverged


def sgd_widths(n: int, width_max: int) -> list:
    return sorted({int(round(f * n)) for f in SGD_FRACTIONS if MIN_WIDTH <= round(f * n) <= width_max})


def explore(cfg: RunConfig, on_eval=None, stop=None) -> pd.DataFrame:
    """The explorer's run: the curves of cfg.seed (and SGD when batch_size is set) as a tidy frame."""
    should_stop = stop.is_set if isinstance(stop, threading.Event) else stop
    frame = curves(cfg, [cfg.seed], stop=should_stop)
    if cfg.batch_size is not None:
        sgd, _ = sgd_curves(cfg, cfg.seed, sgd_widths(cfg.n_train, cfg.width), stop=stop)
        frame = pd.concat([frame, sgd], ignore_index=True)
    if on_eval is not None:
        on_eval(frame[["run", "step", "metric", "value"]].to_dict("records"), int(frame["step"].max()))
    return frame


# ---------------------------------------------------------------------------------------------
# summaries of a curve


def peak(curve: pd.Series) -> tuple[int, float, float]:
    """(width of the maximum, maximum, maximum / minimum) of a curve indexed by width."""
    curve = curve.dropna().sort_index()
    return int(curve.idxmax()), float(curve.max()), float(curve.max() / curve.min())


def max_rise(curve: pd.Series) -> float:
    """The largest ratio of a value to the one at the previous width (≤ 1: never rises)."""
    values = curve.dropna().sort_index().to_numpy()
    return float(np.max(values[1:] / values[:-1])) if len(values) > 1 else 1.0


def _curve(frame, seed, metric) -> pd.Series:
    rows = frame[(frame.seed == seed) & (frame.metric == metric)]
    return rows.set_index("width")["value"]


# ---------------------------------------------------------------------------------------------
# the experiment


def run(step_size=1.0, batch_size=20, weight_decay=0.0, steps=1000, width=2000, n_train=200, label_noise=0.5,
        seeds=SEEDS, seed=0, device="auto") -> Result:
    """Ridgeless, fixed-λ ridge, validation-tuned ridge and limited-step GD curves for `seeds` feature
    draws (seed, seed+1, ...), SGD (when batch_size is set) for the first, and the claims."""
    cfg = config(step_size=step_size, batch_size=batch_size, weight_decay=weight_decay, steps=steps, width=width,
                 n_train=n_train, label_noise=label_noise, seed=seed, device=device)
    check("seeds", seeds, Interval(int, 1, 20), "double_descent")
    seed_list = [seed + i for i in range(seeds)]
    frame = curves(cfg, seed_list)
    n = cfg.n_train
    sgd_diverged = {}
    if batch_size is not None:
        sgd, sgd_diverged = sgd_curves(cfg, seed, sgd_widths(n, width))
        frame = pd.concat([frame, sgd], ignore_index=True)

    metrics, per_seed = {"n": n, "widths": int(frame.width.nunique())}, []
    for s in seed_list:
        ridgeless = _curve(frame, s, "test:ridgeless")
        tuned = _curve(frame, s, "test:tuned ridge")
        gd = _curve(frame, s, "test:GD")
        at, height, ratio = peak(ridgeless)
        gd_height = float(gd.max()) if len(gd) else float("nan")
        per_seed.append({"seed": s, "peak_width": at, "peak": height, "peak_over_min": ratio,
                         "tuned_rise": max_rise(tuned), "gd_peak": gd_height, "gd_ratio": gd_height / height,
                         "gd_diverged": int((frame[(frame.seed == s) & (frame.metric == "diverged:GD")]).shape[0])})
    for r in per_seed:
        i = r["seed"] - seed
        metrics.update({f"peak_width_s{i}": r["peak_width"], f"peak_mse_s{i}": r["peak"],
                        f"peak_over_min_s{i}": r["peak_over_min"], f"tuned_max_rise_s{i}": r["tuned_rise"],
                        f"gd_peak_ratio_s{i}": r["gd_ratio"]})
    med = frame[frame.quantity == "test"].groupby(["method", "width"])["value"].median()
    first = frame.seed == seed
    at_n = lambda metric: frame[first & (frame.metric == metric) & (frame.width == n)]["value"]
    metrics.update({
        "ridgeless_min_mse_median": float(med["ridgeless"].min()),
        "ridgeless_peak_mse_median": float(med["ridgeless"].max()),
        "ridgeless_widest_mse_median": float(med["ridgeless"].iloc[-1]),
        "tuned_first_mse_median": float(med["tuned ridge"].iloc[0]),
        "tuned_at_n_mse_median": float(med["tuned ridge"].get(n, float("nan"))),
        "tuned_widest_mse_median": float(med["tuned ridge"].iloc[-1]),
        "tuned_max_rise_median_curve": max_rise(med["tuned ridge"]),
        "cond_at_n_median": float(frame[(frame.metric == "cond") & (frame.width == n)]["value"].median()),
        "cond_max": float(frame[frame.metric == "cond"]["value"].max()),
        "gd_train_mse_at_n_s0": float(at_n("train:GD").iloc[0]) if len(at_n("train:GD")) else None,
        "ridgeless_train_mse_at_n_s0": float(at_n("train:ridgeless").iloc[0]),
        "gd_diverged_widths": sum(r["gd_diverged"] for r in per_seed),
    })
    if batch_size is not None:
        sgd_at_n = at_n("test:SGD")
        metrics["sgd_test_mse_at_n_s0"] = float(sgd_at_n.iloc[0]) if len(sgd_at_n) else None
        metrics["sgd_train_mse_at_n_s0"] = float(at_n("train:SGD").iloc[0]) if len(at_n("train:SGD")) else None
        metrics["sgd_diverged_widths"] = len(sgd_diverged)

    k = len(per_seed)
    fmt = lambda values, f="{:.3g}": ", ".join(f.format(v) for v in values)
    in_window = [abs(r["peak_width"] / n - 1) <= PEAK_WINDOW for r in per_seed]
    tall = [r["peak_over_min"] >= PEAK_FACTOR for r in per_seed]
    flat = [r["tuned_rise"] <= MAX_RISE for r in per_seed]
    lower = [r["gd_ratio"] < 1 for r in per_seed]
    seeds_held = lambda held: f"{sum(held)}/{k} seeds: "
    claims = [
        Claim("ridgeless test error peaks within ±25 % of N = n, for every seed",
              seeds_held(in_window) + f"N_peak = {fmt([r['peak_width'] for r in per_seed], '{}')} (n = {n})",
              "|N_peak/n − 1| ≤ 0.25", all(in_window)),
        Claim("the ridgeless peak is ≥ 5× the curve's minimum, for every seed",
              seeds_held(tall) + "peak/min = " + fmt([r["peak_over_min"] for r in per_seed]), "peak / min ≥ 5", all(tall)),
        Claim("validation-tuned ridge has no peak: its test error never rises > 5 % from one width to the next, for every seed",
              seeds_held(flat) + "largest rise ×" + fmt([r["tuned_rise"] for r in per_seed], "{:.3f}"), "rise ≤ ×1.05",
              all(flat)),
        Claim("validation-tuned ridge, median curve over the seeds (the pilot's check): never rises > 5 %",
              metrics["tuned_max_rise_median_curve"], "rise ≤ ×1.05", metrics["tuned_max_rise_median_curve"] <= MAX_RISE),
        Claim("GD stopped after the given steps peaks lower than ridgeless, for every seed",
              seeds_held(lower) + "GD max / ridgeless max = " + fmt([r["gd_ratio"] for r in per_seed]), "ratio < 1",
              all(lower), note="" if not metrics["gd_diverged_widths"] else "GD diverged at some widths"),
    ]
    if batch_size is not None and metrics.get("sgd_test_mse_at_n_s0") is not None:
        ratio = metrics["sgd_test_mse_at_n_s0"] / float(at_n("test:ridgeless").iloc[0])
        metrics["sgd_over_ridgeless_at_n_s0"] = ratio
        claims.append(Claim("mini-batch SGD with the same steps also stays below the ridgeless error at N = n",
                            ratio, "SGD / ridgeless test MSE at N = n < 1 (first seed)", ratio < 1))
    metrics.update({f"tuned_peak_over_min_s{r['seed'] - seed}": float(_curve(frame, r["seed"], "test:tuned ridge").max()
                                                                     / _curve(frame, r["seed"], "test:tuned ridge").min())
                    for r in per_seed})
    frames = {"curves": frame, "per_seed": pd.DataFrame(per_seed)}
    return Result(metrics, claims, frames, {"config": cfg})


# ---------------------------------------------------------------------------------------------
# charts


def _methods(frame: pd.DataFrame) -> pd.DataFrame:
    f = frame.copy()
    parts = f["metric"].str.split(":", n=1)
    f["quantity"] = parts.str[0]
    f["method"] = parts.str[1].fillna("")
    f["width"] = f["step"]
    return f


def chart(frame: pd.DataFrame, config: RunConfig | None = None):
    """Test and training MSE against the number of features N (log–log, one line per method and seed,
    SGD as points), the interpolation threshold N = n dashed; beside them, the conditioning κ(Φ_N)."""
    f = _methods(frame)
    value = f["value"].astype(float)
    f = f[np.isfinite(value) & ((value > 0) | (f["quantity"] == "train"))]
    n = config.n_train if config is not None else None
    methods = [m for m in METHOD_ORDER if m in set(f["method"])]
    color = alt.Color("method:N", sort=methods, title="read-out", scale=alt.Scale(
        domain=methods, range=[dict(zip(METHOD_ORDER, ["#d62728", "#9467bd", "#2ca02c", "#1f77b4", "#ff7f0e"]))[m] for m in methods]))
    opacity = (alt.condition("datum.current === false", alt.value(0.25), alt.value(0.9))
               if "current" in f.columns else alt.value(0.9))
    detail = [alt.Detail("run:N")] + ([alt.Detail("label:N")] if "label" in f.columns else [])
    domain = [float(f["width"].min()), float(f["width"].max())] if len(f) else alt.Undefined
    x = alt.X("width:Q", scale=alt.Scale(type="log", domain=domain, nice=False), title="number of random features N")

    def panel(quantity, title, y_title, log=True):
        rows = f[f.quantity == quantity]
        y_scale = alt.Scale(type="log") if log else alt.Scale(zero=True)
        lines = alt.Chart(rows[rows.method != "SGD"]).mark_line(strokeWidth=1.5).encode(
            x=x, y=alt.Y("value:Q", scale=y_scale, title=y_title), color=color, detail=detail,
            opacity=opacity, tooltip=["method:N", "width:Q", alt.Tooltip("value:Q", format=".4g"), "run:N"])
        layers = [lines]
        sgd = rows[rows.method == "SGD"]
        if len(sgd):
            layers.append(alt.Chart(sgd).mark_point(size=60, filled=True).encode(
                x=x, y="value:Q", color=color, detail=detail, opacity=opacity,
                tooltip=["method:N", "width:Q", alt.Tooltip("value:Q", format=".4g")]))
        if n is not None:
            rule = pd.DataFrame({"width": [n], "text": [f"N = n = {n}"]})
            base = alt.Chart(rule).encode(x="width:Q")
            layers += [base.mark_rule(strokeDash=[5, 4], color="gray"),
                       base.mark_text(align="left", dx=4, dy=-4, baseline="top", color="gray", y=0).encode(text="text:N")]
        return alt.layer(*layers).properties(title=title, width=300, height=220)

    cond_rows = f[f.quantity == "cond"]
    cond = alt.Chart(cond_rows).mark_line(color="#555").encode(
        x=x, y=alt.Y("value:Q", scale=alt.Scale(type="log"), title="κ(Φ) = s_max / s_min"), detail=detail, opacity=opacity,
        tooltip=["width:Q", alt.Tooltip("value:Q", format=".3g")]).properties(
        title="conditioning of the feature matrix", width=220, height=220)
    top = alt.hconcat(panel("test", "test error", "test MSE"), panel("train", "training error (0: interpolates)", "train MSE", log=False), cond)
    notes = []
    sharp = f[f.metric == "sharpness"].groupby("width")["value"].max()
    for method in ("GD", "SGD"):
        bad = f[f.metric == f"diverged:{method}"]
        if len(bad):
            ws = sorted(set(bad.width))
            limit = f" = {2 / sharp.reindex(ws).max():.3g}" if method == "GD" and len(sharp) else ""
            shown = ", ".join(str(int(w)) for w in ws[:6]) + (" …" if len(ws) > 6 else "")
            notes.append(f"{method} diverged at N = {shown} (step size above 2/λ_max of the loss{limit})")
    chart_ = top.resolve_scale(color="shared")
    if notes:
        from .. import charts

        chart_ = charts.note(chart_, "; ".join(notes))
    return chart_


def lambda_chart(frame: pd.DataFrame):
    """The λ the validation chose at each width (per seed): small where the data pin the read-out down,
    largest around N = n where the min-norm solution would blow up."""
    rows = frame[frame.metric == "lambda:tuned ridge"]
    return alt.Chart(rows).mark_line(point=True, color="#2ca02c").encode(
        x=alt.X("width:Q", scale=alt.Scale(type="log"), title="number of random features N"),
        y=alt.Y("value:Q", scale=alt.Scale(type="log"), title="chosen λ"), detail="run:N",
        tooltip=["width:Q", alt.Tooltip("value:Q", format=".2g"), "seed:N"]).properties(
        title="ridge λ chosen by validation", width=300, height=180)

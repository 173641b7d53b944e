"""Double descent: test error against model size peaks at the interpolation threshold N = n; a tuned
ridge removes the peak, and so does an optimizer that cannot reach the interpolating solution.

Random-features regression: N fixed ReLU features φ_j(x) = relu(w_j·x)/√N (w_j ~ N(0, I/d), drawn per
seed, nested: width N uses the first N) and a trained linear read-out a. Every read-out but SGD is a
filter g on the singular values of the n × N feature matrix Φ = U diag(s) Vᵀ, a = V diag(g) Uᵀ y:

    ridgeless (min-norm)  g = 1/s                  (s below max(n, N)·eps·s_max counts as 0, as numpy's lstsq)
    ridge λ               g = s / (s² + nλ)        (minimizer of ½·mean squared error + ½λ‖a‖²)
    GD, t steps, from 0   g = (1 − (1 − η s²/n)^t) / s   (full-batch GD on ½·mean squared error)

U and s come from an SVD of the triangular factor of Φᵀ = QR, updated as features are added (never Φᵀ Φ),
in float64: near N = n, where κ(Φ) reaches ~1e4–1e5, the solve stays exact to ~1e-11. SGD trains with the
engine (a depth-0, bias-free MLP, loss "mse" = ½ squared error, `center_output`: from a = 0 as the closed
forms). Data: `linear_teacher` (d = 15, teacher on k = 5): n train, N_VAL noisy validation, 1000 noiseless test.
The tuned ridge's "no peak" is a statement about the expected test error: it is checked on the mean curve over
`draws` (≥ MIN_DRAWS) feature draws, not on single draws, which rise by several per cent from width to width.
"""
from __future__ import annotations

import bisect
import math

import altair as alt
import numpy as np
import pandas as pd
import torch

from .. import charts
from ..claims import at_least, at_most, below, every_seed, fmt_number, key, per_seed, verdict, within
from ..config import Interval, RunConfig, validate
from ..data import feature_weights, from_arrays, linear_teacher
from ..engine import DIVERGENCE_FACTOR, default_threads, train
from ..theme import DEVICE, NON_NEGATIVE, POSITIVE, SEED, SEEDS, Exploration, Param, Theme

N_VAL = 500  # noisy validation examples for choosing λ (never the test set)
MIN_WIDTH = 10
LAMBDAS = np.logspace(-6, 2, 33)  # the grid the tuned ridge chooses from (per width, by validation)
PEAK_WINDOW = 0.25  # the peak must lie within ±25 % of N = n
PEAK_FACTOR = 5.0  # and be ≥ 5× the curve's minimum
MAX_RISE = 1.05  # tuned ridge: its expected test error never rises more than 5 % from one width to the next
MIN_DRAWS = 20  # feature draws averaged for the expected (mean) tuned-ridge curve; fewer: informational
DRAW_CHUNK = 5  # feature draws solved together (memory: the evaluation features are [draws, 1500, width])
SGD_FRACTIONS = (0.5, 0.8, 1.0, 1.25, 2.5)  # SGD widths, as multiples of n (engine runs are not free)
COLUMNS = ["run", "step", "metric", "value", "seed", "method", "quantity", "diverged_at"]

PEAK_AT_N = every_seed(within(1 - PEAK_WINDOW, 1 + PEAK_WINDOW))  # N_peak / n of the ridgeless curve
PEAK_TALL = every_seed(at_least(PEAK_FACTOR))  # ridgeless peak / minimum
RISE = at_most(MAX_RISE)  # largest ratio of the mean tuned-ridge test error to the one at the previous width
GD_FLAT = every_seed(below(PEAK_FACTOR))  # GD's largest test error within ±25 % of N = n / its own minimum
SGD_FLAT = below(PEAK_FACTOR)  # SGD's test error at N = n / its lowest over its widths (first seed)

THEME = Theme("06_double_descent", {
    "step_size": Param(1.0, POSITIVE, "step size η of GD and SGD", label="step size η", log=True, slider=(1e-3, 100.0)),
    "batch_size": Param(20, Interval(int, 1, math.inf, allow_none=True), "SGD batch B (None: full-batch GD only)"),
    "weight_decay": Param(0.0, NON_NEGATIVE, "a fixed ridge λ drawn as its own curve (0: none)"),
    "steps": Param(1000, Interval(int, 1, 10_000_000), "GD / SGD steps", slider=(1, 10_000)),
    "width": Param(2000, Interval(int, MIN_WIDTH, 20_000), "the largest number of random features N"),
    "n_train": Param(200, Interval(int, 10, 5_000), "n, the number of training examples (the threshold N = n)"),
    "label_noise": Param(0.5, Interval(float, 0, 100), "label noise σ (std of the training labels' Gaussian noise)",
                         field="data_options.label_noise", slider=(0.0, 2.0)),
    "draws": Param(MIN_DRAWS, Interval(int, 1, 1000), "feature draws averaged for the tuned ridge's expected test error"),
    "seeds": SEEDS, "seed": SEED, "device": DEVICE,
})


def config(step_size=1.0, batch_size=20, weight_decay=0.0, steps=1000, width=2000, n_train=200, label_noise=0.5,
           seed=0, device="auto", d=15, k=5) -> RunConfig:
    """The run a curve describes: `width` the largest N, `weight_decay` the fixed ridge λ (0: none),
    `step_size`/`steps` the limited-step GD and SGD, `batch_size` SGD's batch (None: no engine run)."""
    return RunConfig(data="arrays", n_train=n_train, data_seed=0, model="mlp", width=width, depth=0, activation="relu",
                     data_options={"teacher": "linear", "d": d, "k": k, "label_noise": float(label_noise)}, bias=False,
                     center_output=True, loss="mse", optimizer="sgd", step_size=step_size, batch_size=batch_size,
                     weight_decay=weight_decay, steps=steps, eval_every=1, seed=seed, device=device)


def widths(n: int, width_max: int, points: int = 30) -> list:
    """Log-spaced widths from 10 to width_max, plus a dense band (steps of 5 % of n) around N = n."""
    grid = set(np.unique(np.round(np.geomspace(MIN_WIDTH, width_max, points)).astype(int)).tolist())
    grid |= {int(round(n * f)) for f in np.arange(0.8, 1.2001, 0.05)}
    return sorted(w for w in grid if MIN_WIDTH <= w <= width_max)


def problem(cfg: RunConfig, seeds, width: int) -> tuple[dict, torch.Tensor]:
    """Train, noisy validation and noiseless test splits (float64), and each seed's feature weights [S, d, width]."""
    n, opts = cfg.n_train, {k: v for k, v in cfg.data_options.items() if k != "teacher"}
    x, y, x_test, y_test = (torch.as_tensor(a, dtype=torch.float64) for a in linear_teacher(n + N_VAL, cfg.data_seed, **opts))
    data = {"x": x[:n], "y": y[:n], "x_val": x[n:], "y_val": y[n:], "x_test": x_test, "y_test": y_test}
    return data, feature_weights(x.shape[1], width, seeds)


# ---- closed forms: every read-out but SGD as a filter on the singular values
def spectra(features: torch.Tensor, eval_features: torch.Tensor, grid, stop=None):
    """For each width N of `grid` (increasing): N, U [S, n, r], s [S, r] of the thin SVD Φ_N/√N = U diag(s) Vᵀ
    (from R of Φᵀ = QR, updated by re-factorizing [R; new columns]) and K = Φ_eval Φ_Nᵀ / N [S, m, n]."""
    S, n, _ = features.shape
    R, K = features.new_zeros(S, 0, n), eval_features.new_zeros(S, eval_features.shape[1], n)
    prev = 0
    for N in grid:
        if stop is not None and stop():
            return
        block = features[:, :, prev:N]
        R = torch.linalg.qr(torch.cat([R, block.transpose(1, 2)], 1), mode="r").R
        K, prev = K + eval_features[:, :, prev:N] @ block.transpose(1, 2), N
        U, s, _ = torch.linalg.svd(R.transpose(1, 2) / math.sqrt(N), full_matrices=False)
        yield N, U, s, K / N


def ridgeless_filter(s, n, N):
    """g = 1/s on the singular values a pseudo-inverse keeps (s > max(n, N)·eps·s_max, numpy's rule), else 0."""
    kept = s > s[..., :1] * max(n, N) * torch.finfo(s.dtype).eps
    return torch.where(kept, 1 / s, torch.zeros_like(s))


def ridge_filter(s, lam, n):
    """g(s) = s / (s² + nλ) for each λ: [..., L, r]."""
    lam = torch.as_tensor(lam, dtype=s.dtype).reshape(-1, 1)
    return s.unsqueeze(-2) / (s.unsqueeze(-2) ** 2 + n * lam)


def gd_filter(s, step_size, steps, n):
    """t = `steps` steps of full-batch GD from 0 on ½·MSE: g = (1 − (1 − ηs²/n)^t)/s (non-finite if it diverges)."""
    return torch.where(s > 0, (1 - (1 - step_size * s ** 2 / n) ** steps) / s, torch.zeros_like(s))


def gd_diverged_step(U, s, y, step_size, steps, limit) -> int:
    """The first step t at which GD's training loss ½(‖y‖² − ‖Uᵀy‖² + Σ ((1 − ηs²/n)^t Uᵀy)²)/n is over
    `limit` (it is at t = steps): convex in t and under the limit at t = 0, so bisection finds it."""
    n, Uy = len(y), U.T @ y
    loss = lambda t: 0.5 * (y.pow(2).sum() - Uy.pow(2).sum() + ((1 - step_size * s ** 2 / n) ** t * Uy).pow(2).sum()) / n
    return bisect.bisect_left(range(steps + 1), True, key=lambda t: not loss(t) <= limit)


def solve(U, s, K, y, filters, n):
    """Train [S, F, n] and evaluation [S, F, m] (via K) predictions and ‖a‖² of a = V diag(g) Uᵀ y, g [S, F, r]."""
    Uy = (U.transpose(1, 2) @ y.unsqueeze(-1)).squeeze(-1).unsqueeze(1)  # [S, 1, r]
    train_pred = torch.einsum("snr,sfr->sfn", U, filters * s.unsqueeze(1) * Uy)
    safe = torch.where(s > 0, s, torch.ones_like(s))
    alpha = torch.einsum("snr,sfr->sfn", U, filters / safe.unsqueeze(1) * Uy)  # a = Φᵀα
    return train_pred, torch.einsum("smn,sfn->sfm", K, alpha), (filters * Uy).pow(2).sum(-1)


# ---- the curves: tidy frames (COLUMNS), one row per seed (run), width (step) and metric
def _frame(rows) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame.assign(diverged_at=pd.array(frame["diverged_at"].tolist(), dtype="Int64"), width=frame["step"])


def curves(cfg: RunConfig, seeds, grid=None, stop=None) -> pd.DataFrame:
    """Closed-form curves for every width and seed: test / train MSE and ‖a‖ ("norm") of the ridgeless,
    tuned ridge (and its "lambda"), fixed-λ ridge (weight_decay > 0) and GD read-outs, κ(Φ_N) ("cond") and
    λ_max of the loss ("sharpness"). GD diverged where its final loss is over the engine's limit."""
    validate(cfg, n_train=cfg.n_train)
    torch.set_num_threads(default_threads())  # as the engine does: one thread is faster on shared small machines
    (p, w), n = problem(cfg, seeds, cfg.width), cfg.n_train
    features, eval_features = torch.relu(p["x"] @ w), torch.relu(torch.cat([p["x_val"], p["x_test"]]) @ w)
    y, n_val = p["y"], len(p["y_val"])
    limit = DIVERGENCE_FACTOR * max(0.5 * float(y.pow(2).mean()), 1.0)  # the engine's rule, from a = 0
    rows = []
    for N, U, s, K in spectra(features, eval_features, widths(n, cfg.width) if grid is None else grid, stop):
        filters = {"ridgeless": ridgeless_filter(s, n, N).unsqueeze(1), "tuned ridge": ridge_filter(s, LAMBDAS, n)}
        if cfg.weight_decay > 0:
            filters["ridge λ"] = ridge_filter(s, [cfg.weight_decay], n)
        filters["GD"] = gd_filter(s, cfg.step_size, cfg.steps, n).unsqueeze(1)
        train_pred, eval_pred, norm2 = solve(U, s, K, y, torch.cat(list(filters.values()), 1), n)
        train_mse, val_mse, test_mse = ((pred - target).pow(2).mean(-1) for pred, target in (
            (train_pred, y), (eval_pred[..., :n_val], p["y_val"]), (eval_pred[..., n_val:], p["y_test"])))
        cols = dict(zip(filters, np.cumsum([0] + [g.shape[1] for g in filters.values()]).tolist()))
        best = torch.argmin(val_mse[:, cols["tuned ridge"]:cols["tuned ridge"] + len(LAMBDAS)], 1).tolist()  # per seed
        for i, seed in enumerate(seeds):
            entries = [("lambda", "tuned ridge", LAMBDAS[best[i]], None), ("cond", "", s[i, 0] / s[i, -1], None),
                     ("sharpness", "", s[i, 0] ** 2 / n, None)]
            for method, j in cols.items():
                j += best[i] if method == "tuned ridge" else 0
                bad = method == "GD" and not 0.5 * float(train_mse[i, j]) <= limit
                at = gd_diverged_step(U[i], s[i], y, cfg.step_size, cfg.steps, limit) if bad else None
                entries += [(q, method, math.nan if at else v, at) for q, v in
                          (("test", test_mse[i, j]), ("train", train_mse[i, j]), ("norm", norm2[i, j].sqrt()))]
            rows += [(i, N, f"{q}:{m}" if m else q, float(v), seed, m, q, at) for q, m, v, at in entries]
    return _frame(rows)


def sgd_curves(cfg: RunConfig, seed: int, grid=None, stop=None) -> tuple[pd.DataFrame, dict]:
    """Mini-batch SGD (cfg's batch, steps and step size) on one seed's random features, one engine run per
    width of `grid` (default: SGD_FRACTIONS of n): tidy rows (COLUMNS) and {width: Run}."""
    grid = grid or sorted({w for f in SGD_FRACTIONS if MIN_WIDTH <= (w := int(round(f * cfg.n_train))) <= cfg.width})
    p, (w,) = problem(cfg, [seed], max(grid))  # the same first features as `curves` draws
    features, test_features = torch.relu(p["x"] @ w), torch.relu(p["x_test"] @ w)
    base = cfg.replace(data="arrays", data_options={}, n_train=None, eval_every=cfg.steps, seed=seed)
    rows, runs = [], {}
    for N in grid:
        if stop is not None and stop.is_set():
            break
        scaled = lambda f: (f[:, :N] / math.sqrt(N)).float()
        data = from_arrays(scaled(features), p["y"].float().unsqueeze(1), scaled(test_features),
                           p["y_test"].float().unsqueeze(1), task="regression")
        r = runs[N] = train(base.replace(width=N), data=data, stop=stop, progress=False)
        at = r.diverged_step(0)  # the engine's "mse" is ½·squared error: ×2 is the closed forms' MSE
        rows += [(0, N, f"{q}:SGD", math.nan if at else 2 * float(r.summary[f"{q}_loss"].iloc[0]), seed, "SGD", q, at)
                 for q in ("test", "train")]
    return _frame(rows), runs


def explore(cfg: RunConfig, on_eval=None, stop=None) -> pd.DataFrame:
    """The explorer's run: the curves of cfg.seed (and SGD when batch_size is set) as a tidy frame."""
    frame = curves(cfg, [cfg.seed], stop=stop and stop.is_set)
    if cfg.batch_size is not None:
        frame = pd.concat([frame, sgd_curves(cfg, cfg.seed, stop=stop)[0]], ignore_index=True)
    if on_eval is not None:
        on_eval(frame[["run", "step", "metric", "value"]].to_dict("records"), int(frame["step"].max()))
    return frame


# ---- summaries and claims
def peak(curve: pd.Series) -> tuple[int, float, float]:
    """(width of the maximum, maximum, maximum / minimum) of a curve indexed by width."""
    curve = curve.dropna().sort_index()
    return int(curve.idxmax()), float(curve.max()), float(curve.max() / curve.min())


def near_threshold_over_min(curve: pd.Series, n: int) -> float:
    """A curve's largest value within ±PEAK_WINDOW of N = n over its minimum (NaN where it has no value there)."""
    curve = curve.dropna()
    near = curve[(curve.index >= (1 - PEAK_WINDOW) * n) & (curve.index <= (1 + PEAK_WINDOW) * n)]
    return float(near.max() / curve.min()) if len(near) else math.nan


def max_rise(curve: pd.Series) -> float:
    """The largest ratio of a value to the one at the previous width (≤ 1: never rises)."""
    values = curve.dropna().sort_index().to_numpy()
    return float(np.max(values[1:] / values[:-1])) if len(values) > 1 else 1.0


@THEME.run
def run(p, result) -> None:
    """Ridgeless, fixed-λ ridge, validation-tuned ridge and limited-step GD curves for max(`seeds`, `draws`)
    feature draws (seed, seed + 1, …), SGD (when batch_size is set) for the first, and the claims: the per-seed
    ones on the first `seeds` draws, the tuned ridge's on the mean curve over the first `draws`."""
    cfg = config(p.step_size, p.batch_size, p.weight_decay, p.steps, p.width, p.n_train, p.label_noise, p.seed, p.device)
    every = [p.seed + i for i in range(max(p.seeds, p.draws))]
    seeds, draws, n, first = every[:p.seeds], every[:p.draws], p.n_train, dict(seed=p.seed)
    with result.timed("closed forms"):
        frame = pd.concat([curves(cfg, every[i:i + DRAW_CHUNK]) for i in range(0, len(every), DRAW_CHUNK)],
                          ignore_index=True)
        frame["run"] = frame.seed - p.seed
    if p.batch_size is not None:
        with result.timed("SGD (engine)"):
            sgd, runs = sgd_curves(cfg, p.seed)
        frame, result.runs = pd.concat([frame, sgd], ignore_index=True), {key("sgd", N=N): r for N, r in runs.items()}
    test = frame[frame.quantity == "test"]
    curve = lambda s, method: test[(test.seed == s) & (test.method == method)].set_index("width")["value"]
    summary = lambda s, ridgeless, gd, tuned: {
        "seed": s, "peak_width": peak(ridgeless)[0], "peak_mse": ridgeless.max(), "peak_over_min": peak(ridgeless)[2],
        "tuned_max_rise": max_rise(tuned), "tuned_peak_over_min": peak(tuned)[2], "gd_peak_mse": gd.max(),
        "gd_near_n_over_min": near_threshold_over_min(gd, n), "gd_diverged_widths": int(gd.isna().sum())}
    table = pd.DataFrame([summary(s, *(curve(s, m) for m in ("ridgeless", "GD", "tuned ridge"))) for s in seeds])
    shown = frame[frame.seed.isin(seeds)]
    med = shown[shown.quantity.isin(["test", "cond"])].groupby(["metric", "width"])["value"].median()
    tuned_draws = test[(test.method == "tuned ridge") & test.seed.isin(draws)].groupby("width")["value"]
    tuned_mean, tuned_median = tuned_draws.mean(), tuned_draws.median()
    at_n = lambda metric: float(frame.value[(frame.seed == p.seed) & (frame.metric == metric) & (frame.width == n)]
                                .sum(min_count=1))  # NaN where missing or diverged
    m = result.metrics = {"n": n, "widths": int(frame.width.nunique()), "draws": len(draws)}
    for name in ("peak_width", "peak_mse", "peak_over_min", "tuned_max_rise", "gd_near_n_over_min", "tuned_peak_over_min"):
        m.update(per_seed(name, table[name].tolist(), seeds))
    ridgeless = med["test:ridgeless"]
    m.update({"ridgeless_min_mse_median": ridgeless.min(), "ridgeless_peak_mse_median": ridgeless.max(),
              "ridgeless_widest_mse_median": ridgeless.iloc[-1], "tuned_first_mse_mean": tuned_mean.iloc[0],
              "tuned_at_n_mse_mean": tuned_mean.get(n, math.nan), "tuned_widest_mse_mean": tuned_mean.iloc[-1],
              "tuned_max_rise_mean_curve": max_rise(tuned_mean), "tuned_max_rise_median_curve": max_rise(tuned_median),
              "tuned_max_rise_single_draw_max": max(max_rise(curve(s, "tuned ridge")) for s in draws),
              "cond_at_n_median": med["cond"].get(n, math.nan), "cond_max": shown.value[shown.quantity == "cond"].max(),
              key("gd_train_mse_at_n", **first): at_n("train:GD"),
              key("ridgeless_train_mse_at_n", **first): at_n("train:ridgeless"),
              "gd_diverged_widths": int(table.gd_diverged_widths.sum())})
    sgd = test[test.method == "SGD"].set_index("width")["value"]
    sgd_ratio = float(at_n("test:SGD") / sgd.min()) if sgd.notna().any() else math.nan
    if p.batch_size is not None:
        m.update({key("sgd_test_mse_at_n", **first): at_n("test:SGD"), key("sgd_train_mse_at_n", **first): at_n("train:SGD"),
                  "sgd_diverged_widths": int(test[test.method == "SGD"].diverged_at.notna().sum()),
                  key("sgd_at_n_over_min", **first): float(sgd_ratio),
                  key("ridgeless_over_sgd_at_n", **first): at_n("test:ridgeless") / at_n("test:SGD")})
    diverged = lambda method, at=None: {  # {label: earliest step} of a method's diverged widths (or width `at`), per seed
        f"{method} at {len(g)} width(s) from N = {g.width.min()}, seed {s}": int(g.diverged_at.min()) for s, g in
        test[(test.method == method) & test.diverged_at.notna() & ((test.width == at) | (at is None))
             & test.seed.isin(seeds)].groupby("seed")}
    rise, window = f"{(MAX_RISE - 1) * 100:.0f} % from one width to the next", f"±{PEAK_WINDOW * 100:g} % of N = n"
    few = len(draws) < MIN_DRAWS
    sgd_widths = sorted(set(test.width[test.method == "SGD"]))
    result.claims = [
        verdict("peak_at_threshold", f"ridgeless test error peaks within {window} = {n}, for every seed (N_peak / n)",
                (table.peak_width / n).tolist(), PEAK_AT_N, note=f"N_peak = {fmt_number(table.peak_width.tolist(), 'g')}"),
        verdict("peak_height", f"the ridgeless peak is ≥ {PEAK_FACTOR:g}× the curve's minimum, for every seed",
                table.peak_over_min.tolist(), PEAK_TALL),
        verdict("tuned_no_peak", f"validation-tuned ridge has no peak: its mean test error over {len(draws)} feature draws "
                f"(the expected risk) never rises > {rise}", m["tuned_max_rise_mean_curve"], RISE, informational=few,
                note=(f"median curve {m['tuned_max_rise_median_curve']:.4g}; single draws up to "
                      f"{m['tuned_max_rise_single_draw_max']:.4g}") + (f"; fewer than {MIN_DRAWS} draws: the mean is too "
                                                                       "noisy to score" if few else "")),
        verdict("gd_no_peak", f"GD stopped after {p.steps} steps has no interpolation peak: its test error within {window} "
                f"stays < {PEAK_FACTOR:g}× its own minimum, for every seed (the ridgeless peak is ≥ {PEAK_FACTOR:g}×)",
                table.gd_near_n_over_min.tolist(), GD_FLAT, diverged=diverged("GD")),
        verdict("sgd_no_peak", f"mini-batch SGD (B = {p.batch_size}, {p.steps} steps) has no peak either: its test error at "
                f"N = n is < {PEAK_FACTOR:g}× its lowest over its widths (first seed)", sgd_ratio, SGD_FLAT,
                diverged=diverged("SGD"), informational=(no_sgd := n not in sgd_widths),
                note="no SGD run at N = n" if no_sgd else f"SGD widths N = {fmt_number(sgd_widths, 'g')}"),
    ]
    result.frames = {"curves": shown, "per_seed": table,  # the draws past `seeds` only enter the tuned-ridge mean
                     "tuned_draws": test[(test.method == "tuned ridge") & test.seed.isin(draws)],
                     "tuned_mean": pd.DataFrame({"width": tuned_mean.index, "mean": tuned_mean.values,
                                                 "median": tuned_median.values})}
    result.exploration = Exploration(cfg, chart, run=explore, initial=frame[frame.seed == p.seed],
                                     controls={k: THEME.params[k] for k in ("step_size", "steps", "label_noise")},
                                     common=("batch_size", "weight_decay"),  # a linear read-out: no rank
                                     presets=PRESETS, learned=learned)


# ---- charts

N_AXIS = alt.X("width:Q", scale=alt.Scale(type="log", nice=False), title="number of random features N")
METHOD = alt.Color("method:N", title="read-out", legend=alt.Legend(orient="bottom", direction="horizontal"))


def chart(frame: pd.DataFrame, config: RunConfig | None = None):
    """Test and training MSE against N (a line per method and seed, SGD with points), N = n dashed, and the
    conditioning κ(Φ_N); a note names the widths where GD or SGD diverged (they have no value there). Needs
    only run, step, metric, value (what the explorer keeps); diverged_at is dropped: curves reads it per step."""
    parts = frame["metric"].str.split(":", n=1)
    f = frame.drop(columns="diverged_at", errors="ignore").assign(width=frame.step, quantity=parts.str[0],
                                                                   method=parts.str[1].fillna(""))
    rule = [charts.vertical_rule(config.n_train, f"N = n = {config.n_train}")] if config is not None else []

    def panel(quantity, title, y_title, log_y=True):
        metrics, sgd = sorted(set(f.metric[f.quantity == quantity])), f"{quantity}:SGD"
        draw = lambda ms: charts.curves(f, ms, color="method", x="width", log_y=log_y, title=title, y_title=y_title,
                                        width=250, height=220).encode(x=N_AXIS, color=METHOD)
        points = [draw(sgd).mark_line(point=alt.OverlayMarkDef(size=60, filled=True))] if sgd in metrics else []
        return charts.layer(draw([m for m in metrics if m != sgd]), *points, *rule)

    cond = charts.curves(f, "cond", x="width", log_y=True, title="conditioning of the feature matrix",
                         y_title="κ(Φ) = s_max / s_min", width=200, height=220).encode(x=N_AXIS)
    top = charts.row(charts.row(panel("test", "test error", "test MSE"), panel("train", "training error (0: interpolates)",
                     "train MSE", log_y=False)), charts.layer(cond, *rule)).resolve_scale(color="independent")
    sharpness = f[f.quantity == "sharpness"].groupby("width")["value"].max()
    for method in ("GD", "SGD"):
        gone = sorted(set(f.width[(f.metric == f"test:{method}") & f.value.isna()]))  # no value: diverged there
        limit = f" = {2 / sharpness.reindex(gone).max():.3g}" if method == "GD" and len(sharpness) else ""
        top = charts.note(top, f"{method} diverged at N = {fmt_number(gone[:6], 'g')}{' …' * (len(gone) > 6)} (step size "
                          f"above 2/λ_max of the loss{limit})") if gone else top
    return top


def lambda_chart(frame: pd.DataFrame):
    """The λ the validation chose at each width, per seed."""
    return charts.curves(frame, "lambda:tuned ridge", x="width", log_y=True, title="ridge λ chosen by validation",
                         y_title="chosen λ", width=300, height=180).encode(x=N_AXIS)


def learned(frame: pd.DataFrame, config: RunConfig | None = None):
    """What the read-outs learned, live in the explorer: test error against N with the current width (the config's
    N) marked by a point per read-out and N = n by a rule, beside the norm ‖a‖ of the learned read-out — the
    coefficients the ridgeless one needs to fit the noise blow up at N = n, a ridge or few GD steps cap them."""
    parts = frame["metric"].str.split(":", n=1)
    f = frame.assign(width=frame.step, quantity=parts.str[0], method=parts.str[1].fillna(""))
    f = f[f.quantity.isin(["test", "norm"]) & (f.method != "") & np.isfinite(f.value.astype(float))]
    if f.empty:
        return charts.empty("what the read-outs learned: no curves yet")
    current = int(config.width) if config is not None else int(f.width.max())
    at = f[f.width == f.width[f.width <= current].max()] if (f.width <= current).any() else f.iloc[:0]
    rules = [charts.vertical_rule(config.n_train, "N = n")] if config is not None else []
    here = [charts.vertical_rule(current, f"current width N = {current}")]

    def panel(quantity, title, y_title):
        lines = alt.Chart(f[f.quantity == quantity]).mark_line().encode(
            x=N_AXIS, y=alt.Y("value:Q", scale=alt.Scale(type="log"), title=y_title), color=METHOD, detail="run:N",
            tooltip=["method:N", alt.Tooltip("width:Q", title="N"), alt.Tooltip("value:Q", format=".3g")])
        points = alt.Chart(at[at.quantity == quantity]).mark_point(size=90, filled=True).encode(
            x=N_AXIS, y="value:Q", color=METHOD, tooltip=["method:N", alt.Tooltip("value:Q", format=".3g")])
        return charts.layer(lines, points, *rules, *here).properties(title=title, width=300, height=180)

    return charts.row(panel("test", "what it learned: test error against width", "test MSE"),
                      panel("norm", "the learned read-out's norm ‖a‖", "‖a‖"))


PRESETS = {  # the explorer's guided scenarios (each sets every value it depends on)
    "the interpolation peak": {
        "question": "Where does GD with many steps peak, and is it where the ridgeless read-out peaks (N = n)?",
        "values": {"steps": 10_000, "step_size": 1.0, "weight_decay": 0.0, "batch_size": None,
                   "data_options.label_noise": 0.5}, "lock": ("weight_decay",)},
    "early stopping": {
        "question": "How few GD steps flatten the peak, and what do they cost at small and large N?",
        "values": {"steps": 10, "step_size": 1.0, "weight_decay": 0.0, "batch_size": None,
                   "data_options.label_noise": 0.5}, "hide": ("weight_decay",)},
    "a fixed ridge": {
        "question": "Does one fixed λ flatten the peak at N = n, and what does it cost at other widths?",
        "values": {"weight_decay": 0.001, "steps": 1000, "step_size": 1.0, "batch_size": None,
                   "data_options.label_noise": 0.5}, "lock": ("step_size", "steps")},
    "noiseless labels": {
        "question": "With labels carrying no noise, is there still a peak at N = n?",
        "values": {"data_options.label_noise": 0.0, "steps": 1000, "step_size": 1.0, "weight_decay": 0.0,
                   "batch_size": None}},
}

"""T3 · Weight decay and low rank, in three experiments (each trains its seeds and sweep as one ensemble):
1. weight decay λ on W = U Vᵀ fitting whitened matrix regression is, at a minimum, the nuclear-norm penalty λ‖W‖_*:
   W should be the least-squares Ŵ with soft-thresholded singular values (σᵢ(Ŵ) − λ)₊;
2. rank slider: a two-layer ReLU network with a rank-r first layer; loss, gap and two bounds (`metrics.bounds`) vs r;
3. SAM lowers feature rank (Andriushchenko et al. 2023): a 100-unit student of a 3-unit teacher, feature rank vs ρ,
   on the reference code's data, initialization and number of steps.
"""
from __future__ import annotations

import functools
import math

import altair as alt
import numpy as np
import pandas as pd
import torch

from .. import charts
from ..claims import Rule, above, at_most, below, every_seed, fmt_number, key, per_seed, verdict
from ..config import Interval, ListOf, RunConfig, check, validate
from ..data import Dataset, from_arrays
from ..engine import train
from ..metrics import bounds, effective_rank, nuclear_norm, numerical_rank, singular_values, stable_rank
from ..theme import DEVICE, NON_NEGATIVE, POSITIVE, SEED, SEEDS, Exploration, Param, Theme

D_IN, D_OUT, N_MATRIX, NOISE_MATRIX, TRUE_SPECTRUM = 20, 20, 100, 0.5, (5.0, 4.0, 3.0, 2.0, 1.0)  # experiment 1
D_INDEX, K_INDEX, N_INDEX, NOISE_INDEX, WIDTH_INDEX = 20, 2, 100, 0.5, 32  # experiment 2
N_SAM, D_SAM, TEACHER_UNITS, STUDENT_UNITS = 20, 3, 3, 100  # experiment 3
FEATURE_ENERGY = 0.9999  # principal components kept: 99.99 % of Σσ² of the (uncentred) features, as in the SAM code
SAM_DATA_SEED, SAM_INIT_STD = 4, 0.3  # the SAM code's data seed and student init: N(0, 0.3²) weights and biases
DATA_SEED, NUCLEAR_TOLERANCE, STEPS = 0, 0.05, Interval(int, 1, 10**6)
# U and V balance as their imbalance UᵀU − VVᵀ decays like e^(−2ηλt): experiment 1 trains at least BALANCE / (ηλ) steps
# for its smallest λ > 0 (ηλt ≥ 1: two time constants), at most BALANCE_CAP steps; a λ short of that is "not yet balanced"
BALANCE, BALANCE_CAP = 1.0, 20_000

# claim rules: the value of every seed must pass
RANK_FALLS = every_seed(below(0))  # largest rise of the effective rank between consecutive λ
NUCLEAR_GAP = every_seed(at_most(NUCLEAR_TOLERANCE))  # |(‖U‖²+‖V‖²)/2 − ‖W‖_*| / ‖W‖_*, largest over λ > 0
SOFT_THRESHOLD = every_seed(at_most(0.01))  # max |σᵢ(W) − (σᵢ(Ŵ) − λ)₊| / σ₁(Ŵ), largest over λ > 0
TRACKS_GAP = every_seed(above(0))  # Spearman correlation of the rank-aware bound with the gap over the r sweep
SAM_FITS = every_seed(below(1e-3))  # train MSE, the larger of the two compared radii
LOWER_FEATURE_RANK = every_seed(at_most(0.7))  # feature rank at ρ₁ / feature rank at ρ₀

THEME = Theme("03_low_rank", {
    "weight_decay": Param(0.3, NON_NEGATIVE, "weight decay λ (where the explorer starts)", slider=(0.0, 5.0)),
    "weight_decays": Param([0.0, 0.1, 0.3, 1.0, 2.0], ListOf(NON_NEGATIVE), "the λ sweep of experiment 1"),
    "rank": Param(D_IN, Interval(int, 1, min(D_IN, D_OUT), allow_none=True), "rank r (None: a plain, unfactorized W)"),
    "step_size": Param(0.1, POSITIVE, "step size η of experiment 1", log=True),
    "batch_size": Param(None, Interval(int, 1, N_MATRIX, allow_none=True), "batch size of experiment 1 (None: all)"),
    "steps": Param(1000, STEPS, "steps (of experiment 1)", slider=(100, 5000)),
    "ranks": Param([1, 2, 4, 8, 16], ListOf(Interval(int, 1, WIDTH_INDEX), at_least=2), "the ranks r of experiment 2"),
    "rank_steps": Param(800, STEPS, "steps of experiment 2"), "rank_step_size": Param(0.1, POSITIVE, "η of experiment 2"),
    "sam_radii": Param([0.0, 0.2, 0.4, 0.6], ListOf(NON_NEGATIVE), "the SAM radii ρ of experiment 3"),
    "sam_steps": Param(20000, STEPS, "steps of experiment 3"), "sam_step_size": Param(0.2, POSITIVE, "η of experiment 3"),
    "seeds": SEEDS, "seed": SEED, "device": DEVICE,
})


# experiment 1: a factorized linear layer, whitened matrix regression
def matrix_regression(n: int = N_MATRIX, d_in: int = D_IN, d_out: int = D_OUT, spectrum=TRUE_SPECTRUM,
                      noise: float = NOISE_MATRIX, seed: int = DATA_SEED, n_test: int = 1000) -> Dataset:
    """Y = X W* + noise, W* of singular values `spectrum`. Training inputs are whitened (XᵀX = n·I exactly), so
    the training loss is ½‖W − Ŵ‖_F² + const with Ŵ = XᵀY/n (info["w_ls"]); test inputs are standard Gaussian."""
    check("n", n, Interval(int, d_in, 10**6), owner="matrix_regression")  # whitening needs n ≥ d_in
    rng = np.random.default_rng(seed)
    x = np.sqrt(n) * np.linalg.qr(rng.standard_normal((n, d_in)))[0]
    a, b = (np.linalg.qr(rng.standard_normal((d, len(spectrum))))[0] for d in (d_in, d_out))
    w_star = (a * np.asarray(spectrum)) @ b.T
    y = x @ w_star + noise * rng.standard_normal((n, d_out))
    xt = rng.standard_normal((n_test, d_in))
    yt = xt @ w_star + noise * rng.standard_normal((n_test, d_out))
    data = from_arrays(*(v.astype(np.float32) for v in (x, y, xt, yt)), task="regression", name="matrix_regression")
    data.info.update(w_star=w_star, w_ls=x.T @ y / n)
    return data


def config(weight_decay: float = 0.3, rank: int | None = D_IN, step_size: float = 0.1, batch_size: int | None = None,
           steps: int = 1000, seed: int = 0, device: str = "auto") -> RunConfig:
    """The factorized layer W = U Vᵀ (rank None: a plain, unfactorized W) on the matrix-regression data."""
    return RunConfig(data="arrays", n_train=N_MATRIX, model="mlp", depth=0, rank=rank, bias=False, activation="linear",
                     loss="mse", optimizer="sgd", step_size=step_size, batch_size=batch_size, weight_decay=weight_decay,
                     steps=steps, eval_every=max(1, steps // 100), seed=seed, device=device)


def predicted_spectrum(w_ls, weight_decay: float, rank: int | None) -> np.ndarray:
    """Singular values full-batch GD converges to: for W = U Vᵀ (a nuclear-norm penalty) (σ − λ)₊ of the `rank`
    largest, argmin ½‖W − Ŵ‖² + λ‖W‖_* with rank ≤ r; for a plain W (a Frobenius penalty) shrinkage σ/(1+λ)."""
    sigma = np.linalg.svd(np.asarray(w_ls, dtype=float), compute_uv=False)
    if rank is None:
        return sigma / (1 + weight_decay)
    return np.where(np.arange(len(sigma)) < rank, np.maximum(sigma - weight_decay, 0.0), 0.0)


def factor_norm(params: dict, layer: int = 0) -> torch.Tensor:
    """(‖U‖_F² + ‖V‖_F²)/2 of a factorized layer: what weight decay penalizes. [M]"""
    u, v = params[f"U{layer}"].detach(), params[f"V{layer}"].detach()
    return (u.pow(2).flatten(1).sum(1) + v.pow(2).flatten(1).sum(1)) / 2


def nuclear_gap(params: dict, layer: int = 0) -> torch.Tensor:
    """|(‖U‖² + ‖V‖²)/2 − ‖U Vᵀ‖_*| / ‖U Vᵀ‖_*: zero exactly when the factorization is balanced. [M]"""
    nuc = nuclear_norm(params[f"U{layer}"].detach() @ params[f"V{layer}"].detach())
    return (factor_norm(params, layer) - nuc).abs() / nuc.clamp_min(1e-30)


def spectrum_probe(w_ls, weight_decays, ranks):
    """Probe: W's singular values (sv_00, …), norms and ranks, distance to the predicted spectrum, nuclear gap."""
    targets = torch.tensor(np.stack([predicted_spectrum(w_ls, lam, r) for lam, r in zip(weight_decays, ranks)]))
    @torch.no_grad()
    def probe(state) -> dict:
        s = singular_values(w := state.model.weight(state.params, 0).detach())
        k = min(s.shape[1], targets.shape[1])
        out = {f"sv_{i:02d}": s[:, i] for i in range(s.shape[1])}
        out.update(nuclear_norm=s.sum(-1), effective_rank=effective_rank(w), stable_rank=stable_rank(w),
                   svt_error=(s[:, :k].double().cpu() - targets[:, :k]).abs().max(-1).values.to(s))
        if "U0" in state.params:
            out.update(factor_norm=factor_norm(state.params), nuclear_gap=nuclear_gap(state.params))
        return out
    return probe


def balance_steps(step_size: float, weight_decay: float) -> int | None:
    """Steps for U and V to balance at η, λ: BALANCE / (ηλ) (None for λ = 0: they never do)."""
    return math.ceil(BALANCE / (step_size * weight_decay)) if weight_decay > 0 else None


def decay_budget(steps: int, step_size: float, weight_decays) -> int:
    """Experiment 1's steps: `steps`, raised to balance the smallest λ > 0, capped at BALANCE_CAP (never lowered)."""
    need = [balance_steps(step_size, lam) for lam in weight_decays if lam > 0]
    return max(steps, min(BALANCE_CAP, max(need, default=steps)))


def train_spectrum(configs, **options):
    """Experiment 1: the configs as one ensemble on the matrix regression, with the spectrum probe. (Run, data)"""
    data = matrix_regression()
    probe = spectrum_probe(data.info["w_ls"], [c.weight_decay for c in configs], [c.rank for c in configs])
    return train(configs, data=data, probes=[probe], **options), data


# experiment 2: rank slider on a two-layer ReLU network
def multi_index(n: int = N_INDEX, d: int = D_INDEX, k: int = K_INDEX, noise: float = NOISE_INDEX,
                seed: int = DATA_SEED, n_test: int = 2000) -> Dataset:
    """y = Σ_j relu(p_jᵀx) (centred) + noise, with k orthonormal directions p_j in R^d, x standard Gaussian."""
    rng = np.random.default_rng(seed)
    p = np.linalg.qr(rng.standard_normal((d, k)))[0]
    x = rng.standard_normal((n + n_test, d))
    f = np.maximum(x @ p, 0).sum(1)
    x, y = x.astype(np.float32), (f - f[:n].mean() + noise * rng.standard_normal(n + n_test))[:, None].astype(np.float32)
    data = from_arrays(x[:n], y[:n], x[n:], y[n:], task="regression", name="multi_index")
    data.info.update(directions=p)
    return data


def rank_config(rank: int, step_size: float = 0.1, steps: int = 800, seed: int = 0, weight_decay: float = 0.0,
                device: str = "auto") -> RunConfig:
    """x → relu(W₀ᵀx) → w₁ᵀ·, bias-free, W₀ = U Vᵀ of rank r (d = 20 inputs, 32 hidden units), full-batch GD."""
    return RunConfig(data="arrays", n_train=N_INDEX, model="mlp", depth=1, width=WIDTH_INDEX, rank=rank, rank_layer=0,
                     bias=False, activation="relu", loss="mse", optimizer="sgd", step_size=step_size,
                     weight_decay=weight_decay, steps=steps, eval_every=steps, seed=seed, device=device)


def rank_sweep(ranks, step_size=0.1, steps=800, seeds=(0, 1, 2), device="auto"):
    """Experiment 2: one ensemble (the seeds) per rank. Returns (frame per rank and seed, {rank: Run})."""
    data, frames, runs = multi_index(), [], {}
    for r in ranks:
        run = runs[r] = train([rank_config(r, step_size, steps, s, device=device) for s in seeds], data=data)
        w, x, f = bounds.model_weights(run.model, run.params), run.data.x_train, run.summary.assign(rank=r)
        frames.append(f[["rank", "seed", "train_loss", "test_loss", "diverged_at"]].assign(
            gap=f.test_loss - f.train_loss, spectral_bound=bounds.spectral_bound(w, x).tolist(),
            rank_bound=bounds.rank_bound(w, x, bounds.model_rank_constraints(run.model, run.params)).tolist()))
    return pd.concat(frames, ignore_index=True), runs


def loglog_slope(x, y) -> float:
    """Least-squares slope of log y against log x (y ∝ x^slope); nan with fewer than two usable points."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0]) if len(np.unique(x[ok])) > 1 else float("nan")


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties); nan when either side is constant, too short or has NaN."""
    a, b = pd.Series(np.asarray(a, dtype=float)), pd.Series(np.asarray(b, dtype=float))
    ok = len(a) > 1 and a.nunique() > 1 and b.nunique() > 1 and not (a.isna().any() or b.isna().any())
    return float(np.corrcoef(a.rank(), b.rank())[0, 1]) if ok else float("nan")


# experiment 3: SAM and feature rank in a teacher-student network
def teacher_student(n: int = N_SAM, d: int = D_SAM, m: int = TEACHER_UNITS, seed: int = SAM_DATA_SEED,
                    n_test: int = 1000) -> Dataset:
    """Inputs uniform on the unit sphere in R^d; y = aᵀ relu(Wᵀx + b) + c from a ReLU teacher with m units,
    unit-norm incoming weights, ±1 output weights and N(0, 1) biases. The draw of tml-epfl/sam-low-rank-features
    (`get_data_two_layer_relu_net`): at seed 4 these are its 20 training points and labels exactly."""
    with torch.random.fork_rng(devices=[]):  # the reference draws from the global generators: leave them as they were
        rng = np.random.RandomState(seed)
        torch.manual_seed(seed)
        x = [rng.multivariate_normal(np.zeros(d), np.eye(d), k) for k in (n, n_test)]
        x = [torch.tensor(v).float() for v in x]
        x = [v / v.pow(2).sum(1, keepdim=True).sqrt() for v in x]
        torch.nn.Linear(d, m), torch.nn.Linear(m, 1)  # the teacher's default init, drawn and then overwritten
        w, a = torch.randn(m, d), torch.randn(1, m)
        b, c = torch.randn(m), torch.randn(1)
    w, a = w / w.pow(2).sum(1, keepdim=True).sqrt(), torch.sign(a)
    xs, ys = [v.numpy() for v in x], [(torch.relu(v @ w.T + b) @ a.T + c).numpy() for v in x]
    return from_arrays(xs[0], ys[0], xs[1], ys[1], task="regression", name="teacher_student")


def sam_config(sam_radius: float, step_size: float = 0.2, steps: int = 20000, seed: int = 0,
               sam_fraction: float = 0.5, device: str = "auto") -> RunConfig:
    """The 100-unit ReLU student, N(0, 0.3²) weights and biases, SGD with B = 1, SAM of radius ρ for the first
    `sam_fraction` of the steps (the SAM code: 10^4.3 ≈ 20,000 steps, SAM for the first half).
    reglab's square loss is ½(f − y)², so η = 0.2 here is the SAM code's lr 0.1 on (f − y)²."""
    return RunConfig(data="arrays", n_train=N_SAM, model="mlp", depth=1, width=STUDENT_UNITS, activation="relu",
                     bias=True, init_std=SAM_INIT_STD, loss="mse", optimizer="sgd", step_size=step_size, batch_size=1,
                     sam_radius=sam_radius,
                     sam_fraction=sam_fraction, steps=steps, eval_every=max(1, steps // 20), seed=seed, device=device)


def active_neurons(features: torch.Tensor) -> torch.Tensor:
    """Hidden units that are nonzero on at least one input. [M]"""
    return (features.detach() > 0).any(-2).sum(-1)


@torch.no_grad()
def feature_probe(state) -> dict:
    """Probe: feature rank and active neurons of the hidden layer on the training inputs."""
    feats = state.features("train")[0].detach()
    return {"feature_rank": numerical_rank(feats, FEATURE_ENERGY).to(feats.dtype),
            "active_neurons": active_neurons(feats).to(feats.dtype)}


def sam_sweep(sam_radii, step_size=0.2, steps=20000, seeds=(0, 1, 2), device="auto"):
    """Experiment 3: every (ρ, seed) as one ensemble. (frame per ρ and seed, Run); MSE as the SAM code's (f − y)²."""
    run = train([sam_config(rho, step_size, steps, s, device=device) for rho in sam_radii for s in seeds],
                data=teacher_student(), probes=[feature_probe])
    feats, s = run.model.features(run.params, run.data.x_train)[0], run.summary
    frame = pd.DataFrame({"sam_radius": s.sam_radius, "seed": s.seed, "train_mse": 2 * s.train_loss,
                          "test_mse": 2 * s.test_loss, "feature_rank": numerical_rank(feats, FEATURE_ENERGY).tolist(),
                          "active_neurons": active_neurons(feats).tolist(), "diverged_at": s.diverged_at})
    frame.loc[frame.diverged_at.notna(), ["feature_rank", "active_neurons"]] = np.nan  # frozen before it diverged
    return frame, run


def seeds_that_trained(compared: pd.DataFrame, seeds) -> tuple[list, dict, str]:
    """The SAM claims' seeds. SGD with B = 1 under SAM blows up in its first steps from a few initializations
    (so does a plain-PyTorch copy of the SAM code's loop: 2 of 100 initializations at ρ = 0.4), so the claims are
    judged on the seeds whose runs at both compared radii (the rows of `compared`) trained, and a seed that
    diverged is named with its step. (trained seeds, {label: step} for `verdict` when no seed trained, note)."""
    blown = compared[compared.diverged_at.notna()].sort_values(["seed", "sam_radius"])
    trained = [s for s in seeds if s not in set(blown.seed)]
    steps = {f"ρ = {r.sam_radius:g}, seed {r.seed}": int(r.diverged_at) for r in blown.itertuples()}
    if not trained:
        return [], steps, ""
    note = "" if blown.empty else (f"; judged on the {len(trained)} of {len(seeds)} seeds that trained ("
                                   + "; ".join(f"seed {r.seed} diverged at step {int(r.diverged_at)} at ρ = "
                                               f"{r.sam_radius:g}" for r in blown.itertuples()) + ")")
    return trained, {}, note


# the notebook's one call
@THEME.run
def run(p, result) -> None:
    """Train the three experiments (each seed a member of the same ensemble) and check the claims."""
    seeds = list(range(p.seed, p.seed + p.seeds))
    lams, ranks, radii = sorted(map(float, p.weight_decays)), sorted(map(int, p.ranks)), sorted(map(float, p.sam_radii))
    cfg = config(p.weight_decay, p.rank, p.step_size, p.batch_size, p.steps, p.seed, p.device)
    for c in (cfg, rank_config(ranks[0], p.rank_step_size, p.rank_steps, p.seed, device=p.device),
              sam_config(radii[0], p.sam_step_size, p.sam_steps, p.seed, device=p.device)):
        validate(c, n_train=c.n_train)  # a bad combination (e.g. B > n) fails before anything trains
    metrics, claims, frames = result.metrics, result.claims, result.frames
    each = lambda frame, fn: [fn(frame[frame.seed == s]) for s in seeds]  # one value per seed
    steps = lambda rows, by, col: np.diff(rows.sort_values(by)[col].to_numpy(float)) if len(rows) > 1 else [np.nan]
    means = lambda frame, by, names, q: {key(n, **{q: v}): float(g[n].mean()) for v, g in frame.groupby(by) for n in names}
    diverged_in = lambda runs, label: {label(c): r.diverged_step(m) for r in runs for m, c in enumerate(r.configs)}

    # 1 · weight decay on W = U Vᵀ (long enough for the smallest λ > 0 to balance U and V, up to BALANCE_CAP steps)
    budget = decay_budget(p.steps, p.step_size, lams) if p.rank is not None else p.steps
    with result.timed("weight decay sweep"):
        sweep, data = train_spectrum([config(lam, p.rank, p.step_size, p.batch_size, budget, s, p.device)
                                      for lam in lams for s in seeds])
    metrics["decay_steps"] = budget
    result.runs["weight_decay"], final = sweep, sweep.summary  # final: last recorded metrics, NaN where diverged
    history = frames["history"] = charts.tidy(sweep).merge(final[["run", "weight_decay", "seed"]], on="run")
    frames["spectrum"] = pd.DataFrame([{"weight_decay": c.weight_decay, "seed": c.seed, "index": i + 1,
                                        "sigma": final[f"sv_{i:02d}"][m], "predicted": v} for m, c in enumerate(sweep.configs)
                                       for i, v in enumerate(predicted_spectrum(data.info["w_ls"], c.weight_decay, c.rank))])
    f1 = frames["ranks_vs_decay"] = final[[c for c in final if not c.startswith("sv_") and c != "config"]]
    metrics.update(means(f1, "weight_decay", ("effective_rank", "stable_rank"), "wd"))
    diverged = diverged_in([sweep], lambda c: f"λ = {c.weight_decay:g}, seed {c.seed}")
    rises = each(f1, lambda r: float(np.max(steps(r, "weight_decay", "effective_rank"))))
    metrics.update(per_seed("effective_rank_largest_rise", rises, seeds))
    claims.append(verdict("effective_rank_falls", "Effective rank of W = U Vᵀ falls monotonically as weight decay λ grows",
                          rises, RANK_FALLS, note="largest rise between consecutive λ, per seed", diverged=diverged))
    if p.rank is not None and any(lam > 0 for lam in lams):
        decayed, scale = f1[f1.weight_decay > 0], float(np.linalg.svd(data.info["w_ls"], compute_uv=False)[0])
        unbalanced = [lam for lam in lams if 0 < lam and p.step_size * lam * budget < BALANCE]  # ηλt < 1: too early
        balanced = decayed[~decayed.weight_decay.isin(unbalanced)]
        gaps = each(balanced, lambda r: float(r.nuclear_gap.max()) if len(r) else None)
        errors = each(decayed, lambda r: float(r.svt_error.max()) / scale)
        metrics.update({**per_seed("nuclear_gap_max", gaps, seeds), **per_seed("soft_threshold_error", errors, seeds)})
        raised = f"trained {budget} steps" + (f" (raised from {p.steps} so that ηλt ≥ {BALANCE:g} for the smallest λ > 0"
                                               + (f", capped at {BALANCE_CAP})" if budget == BALANCE_CAP else ")")
                                               if budget > p.steps else "")
        late = "; not yet balanced (ηλt < 1, left out): " + ", ".join(
            f"λ = {lam:g} (ηλt = {p.step_size * lam * budget:.2g}, needs {balance_steps(p.step_size, lam)} steps)"
            for lam in unbalanced) if unbalanced else ""
        claims.append(verdict("nuclear_norm_penalty", "Weight decay on U, V is a nuclear-norm penalty: (‖U‖²+‖V‖²)/2 = "
                              "‖W‖_* at the end (λ > 0, balanced: ηλt ≥ 1)", gaps, NUCLEAR_GAP, diverged=diverged,
                              informational=len(balanced) == 0,
                              note=f"largest relative difference over the balanced λ > 0, per seed; {raised}{late}"))
        claims.append(verdict("soft_thresholding", "Singular values are soft-thresholded: σᵢ(W) = (σᵢ(Ŵ) − λ)₊", errors,
                              SOFT_THRESHOLD, note="largest |σᵢ(W) − (σᵢ(Ŵ) − λ)₊| / σ₁(Ŵ) over λ > 0, per seed",
                              diverged=diverged))
    start = [m for m, c in enumerate(sweep.configs) if c.weight_decay == p.weight_decay and c.seed == p.seed]
    explore = lambda c, on_eval=None, stop=None: train_spectrum([c], on_eval=on_eval, stop=stop, progress=False)[0]
    result.exploration = Exploration(  # starts from that member's curves when the sweep has it: no second run
        cfg, chart, run=explore, initial=history[history.run == start[0]].assign(run=0) if start else None,
        controls={n: THEME.params[n] for n in ("weight_decay", "rank", "steps", "seed")},  # + the common η and B
        presets=PRESETS, learned=learned)

    # 2 · rank slider
    with result.timed("rank sweep"):
        f2, rank_runs = rank_sweep(ranks, p.rank_step_size, p.rank_steps, seeds, p.device)
    result.runs["rank"], frames["rank_sweep"], r0 = rank_runs, f2, ranks[0]
    metrics.update(means(f2, "rank", ("train_loss", "test_loss", "gap", "spectral_bound", "rank_bound"), "r"))
    diverged = diverged_in(rank_runs.values(), lambda c: f"r = {c.rank}, seed {c.seed}")
    slopes = {b: each(f2, lambda r: loglog_slope(r["rank"], r[b])) for b in ("rank_bound", "spectral_bound", "gap")}
    for b, v in slopes.items():
        metrics.update(per_seed(f"{b}_slope", v, seeds))
    ratios = each(f2[f2["rank"] == r0], lambda r: float(r.rank_bound.iloc[0] / r.spectral_bound.iloc[0]))
    metrics.update({key("rank_over_spectral_bound", r=r0, seed=s): v for s, v in zip(seeds, ratios)})
    claims.append(verdict("bound_scaling_in_r", "How each bound scales with r (both drop constants, so only their growth "
                          "in r compares): log-log slope of the rank-aware bound", slopes["rank_bound"],
                          Rule("no threshold", lambda v: True),
                          informational=True, diverged=diverged,
                          note=f"per seed; product of spectral norms: {fmt_number(slopes['spectral_bound'])}; measured gap: "
                          f"{fmt_number(slopes['gap'])}; B_rank / B_spec at r = {r0}: {fmt_number(ratios)}"))
    rhos, rhos_spec = (each(f2, lambda r: spearman(r[b], r.gap)) for b in ("rank_bound", "spectral_bound"))
    metrics.update(per_seed("spearman_rank_bound_gap", rhos, seeds))
    metrics.update(per_seed("spearman_spectral_bound_gap", rhos_spec, seeds))
    monotone = all(np.all(steps(r, "rank", "rank_bound") > 0) for r in (f2[f2.seed == s] for s in seeds))
    claims.append(verdict("rank_bound_tracks_gap", "The rank-aware bound's Spearman correlation with the measured gap over "
                          "the r sweep is positive", rhos, TRACKS_GAP, diverged=diverged,
                          note=f"per seed; product-of-spectral-norms bound: {fmt_number(rhos_spec)}"
                          + ("; the rank-aware bound rises with r for every seed, so this is the Spearman correlation of "
                             "the gap with r: the gap grows with r" if monotone else "")))

    # 3 · SAM and feature rank
    with result.timed("SAM sweep"):
        f3, sam_run = sam_sweep(radii, p.sam_step_size, p.sam_steps, seeds, p.device)
    result.runs["sam"], frames["sam"] = sam_run, f3
    frames["sam_history"] = charts.tidy(sam_run).merge(sam_run.summary[["run", "sam_radius", "seed"]], on="run")
    metrics.update(means(f3, "sam_radius", ("feature_rank", "active_neurons", "train_mse"), "rho"))
    rho0, rho1 = radii[0], 0.4 if 0.4 in radii else radii[-1]
    metrics.update({key("sam_diverged_at", rho=c.sam_radius, seed=c.seed): sam_run.diverged_step(m)
                    for m, c in enumerate(sam_run.configs) if sam_run.diverged_step(m) is not None})
    compared = f3[f3.sam_radius.isin([rho0, rho1])]
    trained, diverged, among = seeds_that_trained(compared, seeds)
    judged = trained or seeds  # none trained: every seed, and the claims read "diverged"
    on = lambda frame, fn: [fn(frame[frame.seed == s]) for s in judged]
    losses = on(compared, lambda r: float(r.train_mse.max(skipna=False)))
    claims.append(verdict("sam_fits", f"SAM runs fit the training set: train MSE < 1e-3 at ρ = {rho0:g} and ρ = {rho1:g}",
                          losses, SAM_FITS, note="the larger mean (f − y)² of the two, per seed" + among,
                          diverged=diverged))
    ratios = on(compared.set_index("sam_radius"),  # a diverged member's rank is NaN (see sam_sweep): so is its ratio
                lambda r: float(r.feature_rank[rho1] / r.feature_rank[rho0]))
    metrics.update(per_seed("feature_rank_ratio", ratios, judged))
    claims.append(verdict("sam_lowers_feature_rank", f"SAM lowers feature rank: rank at ρ = {rho1:g} ≤ 0.7 × rank at "
                          f"ρ = {rho0:g}", ratios, LOWER_FEATURE_RANK, note="ratio per seed" + among, diverged=diverged))


# charts: compositions of reglab.charts over the frames above (three 220-px charts to a row)
SMALL = dict(width=220, height=180)
first_seed = lambda frame: frame[frame.seed == frame.seed.min()]


def spectrum_chart(spectrum: pd.DataFrame, history: pd.DataFrame):
    """Final σᵢ(W) per λ (dots: seeds, line: median), (σᵢ(Ŵ) − λ)₊ (crosses); σᵢ(W) in training per λ (first seed)."""
    i = dict(x="index", color="weight_decay", x_title="singular value index i", y_title="σᵢ(W)")
    final = charts.layer(charts.against(spectrum, y="sigma", tooltip=["seed"], **i), points(first_seed(spectrum), y="predicted", **i))
    during = charts.grid(*(charts.curves(r, color="metric", title=f"λ = {lam:g}", y_title="σᵢ(W)", **SMALL) for lam, r
                           in first_seed(history[history.metric.str.startswith("sv_")]).groupby("weight_decay")), columns=3)
    return alt.vconcat(final.properties(title="final spectrum (lines) vs (σᵢ(Ŵ) − λ)₊ (crosses)"), during).resolve_scale(
        color="independent")


def balance_note(config: RunConfig | None) -> str:
    """One line when the run is too short (ηλt < 1) or has no weight decay to balance U and V; else ""."""
    if config is None or config.rank is None:
        return ""
    if config.weight_decay == 0:
        return "λ = 0: nothing balances U and V; the gap keeps its initial imbalance"
    t = config.step_size * config.weight_decay * config.steps
    return (f"not yet balanced: ηλt = {t:.2g} < {BALANCE:g}; U and V need about 1/(ηλ) = "
            f"{balance_steps(config.step_size, config.weight_decay):,} steps") if t < BALANCE else ""


def nuclear_chart(frame: pd.DataFrame, color: str | None = None, config: RunConfig | None = None):
    """|(‖U‖²+‖V‖²)/2 − ‖W‖_*| / ‖W‖_* in training (log scale), the claim's tolerance dashed; with `config`, a
    subtitle saying when the run is too short for U and V to balance."""
    if not (frame.metric == "nuclear_gap").any():
        return charts.empty("W is not factorized: no (‖U‖²+‖V‖²)/2 to compare with ‖W‖_*")
    title, note = "|(‖U‖²+‖V‖²)/2 − ‖W‖_*| / ‖W‖_*", balance_note(config)
    return charts.layer(charts.curves(frame, "nuclear_gap", color=color, log_y=True, y_title="relative gap"),
                        charts.reference_rule(NUCLEAR_TOLERANCE, f"{NUCLEAR_TOLERANCE:.0%}")).properties(
        title=alt.TitleParams(title, subtitle=[note]) if note else title)


def ranks_chart(frame: pd.DataFrame, history: pd.DataFrame):
    """Effective and stable rank of the final W vs λ (dots: seeds, line: median); the nuclear gap per λ (first seed)."""
    long = frame.melt(id_vars=["weight_decay", "seed"], value_vars=["effective_rank", "stable_rank"], var_name="measure")
    ranks = charts.against(long, "weight_decay", color="measure", tooltip=["seed"], x_title="weight decay λ",
                           y_title="rank of W", title="rank of W vs λ")
    return charts.row(ranks, nuclear_chart(first_seed(history), "weight_decay")).resolve_scale(color="independent")


def rank_sweep_chart(frame: pd.DataFrame):
    """Experiment 2: losses and gap vs r; both bounds vs r; each bound against the measured gap."""
    losses = frame.melt(id_vars=["rank", "seed"], value_vars=["train_loss", "test_loss", "gap"], var_name="quantity")
    bnd = frame.melt(id_vars=["rank", "seed", "gap"], value_vars=["spectral_bound", "rank_bound"], var_name="bound")
    bnd["bound"] = bnd["bound"].map({"spectral_bound": "product of spectral norms", "rank_bound": "rank-aware"})
    common = dict(tooltip=["seed"], **SMALL)
    return charts.row(
        charts.against(losses, "rank", color="quantity", log_x=True, x_title="rank r", y_title="loss (½ squared error)",
                       title="train / test / gap vs r", **common),
        charts.against(bnd, "rank", color="bound", log_x=True, log_y=True, x_title="rank r", y_title="bound (no constants)",
                       title="bounds vs r", **common),
        points(bnd, "gap", color="bound", size="rank", log_y=True, shape="circle", x_title="measured gap (test − train)",
               y_title="bound", title="bound vs measured gap", **common)).configure_legend(orient="bottom")


def sam_chart(frame: pd.DataFrame, history: pd.DataFrame):
    """Experiment 3: feature rank and active neurons vs ρ (dots: seeds, line: median); feature rank in training."""
    long = frame.melt(id_vars=["sam_radius", "seed"], value_vars=["feature_rank", "active_neurons"], var_name="measure")
    titles = {"feature_rank": f"feature rank ({FEATURE_ENERGY:.2%} of Σσ²)", "active_neurons": f"active neurons (of {STUDENT_UNITS})"}
    return charts.row(*(charts.against(long[long.measure == m], "sam_radius", tooltip=["seed"], x_title="SAM radius ρ",
                                       y_title=t, title=t, **SMALL) for m, t in titles.items()),
                      charts.curves(first_seed(history), "feature_rank", color="sam_radius", y_title="feature rank",
                                    title="feature rank during training (first seed)", **SMALL))


def chart(frame: pd.DataFrame, config: RunConfig | None = None):
    """The explorer's chart for experiment 1: W's singular values in training and, when factorized, the nuclear gap."""
    sv = charts.curves(frame, sorted(m for m in frame.metric.unique() if m.startswith("sv_")), color="metric",
                       y_title="σᵢ(W)", title="singular values of W")
    return charts.row(sv, nuclear_chart(frame, config=config)) if (frame.metric == "nuclear_gap").any() else sv


@functools.lru_cache(maxsize=1)
def _least_squares_w() -> np.ndarray:
    return matrix_regression().info["w_ls"]


def learned(frame: pd.DataFrame, config: RunConfig):
    """What W learned, drawn live under the explorer's curves: σᵢ(W) of the latest run at its latest step (bars)
    against the closed-form answer for its λ and r (ticks): (σᵢ(Ŵ) − λ)₊ for U Vᵀ, σᵢ(Ŵ)/(1 + λ) for a plain W."""
    sv = frame[frame.metric.str.startswith("sv_")]
    if sv.empty:
        return charts.empty("the singular values of W appear here once training starts")
    sv = sv[sv.run == sv.run.max()]
    last = sv[sv.step == sv.step.max()]
    index = last.metric.str[3:].astype(int).to_numpy()
    predicted = predicted_spectrum(_least_squares_w(), config.weight_decay, config.rank)
    rows = pd.DataFrame({"i": index + 1, "σᵢ(W)": last.value.to_numpy(float), "predicted": predicted[index]})
    rule = "(σᵢ(Ŵ) − λ)₊" if config.rank is not None else "σᵢ(Ŵ) / (1 + λ)"
    base = alt.Chart(charts.inline(rows)).encode(x=alt.X("i:O", title="singular value index i"))
    tooltip = [alt.Tooltip("i:O"), alt.Tooltip("σᵢ(W):Q", format=".3g"), alt.Tooltip("predicted:Q", format=".3g", title=rule)]
    finite = rows["σᵢ(W)"][np.isfinite(rows["σᵢ(W)"])]
    top = max(6.0, float(finite.max())) if len(finite) else 6.0  # fixed axis: runs compare by eye
    bars = base.mark_bar(opacity=0.7).encode(y=alt.Y("σᵢ(W):Q", title="σᵢ(W)", scale=alt.Scale(domain=[0, top])),
                                             tooltip=tooltip)
    ticks = base.mark_tick(color="black", thickness=2, size=14).encode(y="predicted:Q", tooltip=tooltip)
    return (bars + ticks).properties(width=600, height=160, title=alt.TitleParams(
        f"what W learned: σᵢ(W) at step {int(last.step.max())} (bars) vs {rule} (ticks)",
        subtitle=[f"λ = {config.weight_decay:g}, " + (f"W = U Vᵀ of rank {config.rank}" if config.rank else "plain W")]))


PRESETS = {
    "soft-thresholding": {
        "question": "With λ = 1 on U Vᵀ, which singular values of W survive, and how far does each one fall?",
        "values": {"weight_decay": 1.0, "rank": D_IN, "step_size": 0.1, "batch_size": None, "steps": 1000},
        "hide": ("batch_size",)},
    "plain W: shrinks, never zeroes": {
        "question": "Without the factorization, does weight decay λ = 1 still set the small singular values to zero?",
        "values": {"weight_decay": 1.0, "rank": None, "step_size": 0.1, "batch_size": None, "steps": 1000},
        "lock": ("rank",), "hide": ("batch_size",)},
    "not yet balanced": {
        "question": "At λ = 0.01 and 100 steps (ηλt = 0.1), is (‖U‖²+‖V‖²)/2 already ‖W‖_*? How many steps until it is?",
        "values": {"weight_decay": 0.01, "rank": D_IN, "step_size": 0.1, "batch_size": None, "steps": 100},
        "lock": ("step_size",), "hide": ("batch_size",)},
    "rank constraint, no decay": {
        "question": "With r = 2 and λ = 0, which singular values does W keep, and are they shrunk at all?",
        "values": {"weight_decay": 0.0, "rank": 2, "step_size": 0.1, "batch_size": None, "steps": 1000},
        "lock": ("weight_decay",), "hide": ("batch_size",)},
}


# candidates for reglab.charts
def points(frame: pd.DataFrame, x: str, y: str = "value", *, color=None, size=None, shape="cross", log_y=False,
           title=None, x_title=None, y_title=None, tooltip=(), width=charts.WIDTH, height=charts.HEIGHT) -> alt.Chart:
    """One mark per row, no line (a prediction over measured lines, a bound against a measured gap), coloured by
    `color`, sized by `size` (log scale). Non-finite values (with `log_y`, non-positive ones) are left out."""
    rows = frame[np.isfinite(pd.to_numeric(frame[y], errors="coerce").to_numpy(dtype=float))]
    rows = rows[rows[y] > 0] if log_y else rows
    enc = dict(x=alt.X(f"{x}:Q", title=x_title or x, scale=alt.Scale(zero=False)),
               y=alt.Y(f"{y}:Q", title=y_title or y, scale=alt.Scale(type="log") if log_y else alt.Scale(zero=False)),
               tooltip=[*(f"{f}:N" for f in tooltip), alt.Tooltip(f"{x}:Q", format=".4g"), alt.Tooltip(f"{y}:Q", format=".4g")],
               **({"color": alt.Color(f"{color}:N", title=color)} if color else {}),
               **({"size": alt.Size(f"{size}:Q", title=size, scale=alt.Scale(type="log", range=[30, 300]))} if size else {}))
    return alt.Chart(charts.inline(rows)).mark_point(shape=shape, size=70, filled=True, opacity=0.7).encode(
        **enc).properties(width=width, height=height, **({"title": title} if title else {}))

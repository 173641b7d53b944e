"""T3 · Weight decay and low rank: nuclear norm, rank constraints, rank-aware bounds, SAM's low-rank features.

Three experiments, all trained by `reglab.engine.train` (seeds and sweeps are members of one ensemble):

1. **Weight decay on a factorized layer.** A linear map W = U Vᵀ (the reglab MLP with depth 0 and `rank`)
   fits a low-rank matrix-regression problem with whitened inputs, so that the training loss is
   ½‖W − Ŵ‖_F² + const with Ŵ the least-squares solution. Weight decay λ on U and V minimizes
   λ(‖U‖²+‖V‖²)/2, whose minimum over factorizations of W is λ‖W‖_*: the trained W should be Ŵ with its
   singular values soft-thresholded, σ_i(W) = (σ_i(Ŵ) − λ)₊, and its effective rank should fall with λ.
2. **Rank slider.** A two-layer ReLU network whose first layer is W₀ = U Vᵀ of rank r fits a noisy
   multi-index target; train/test loss and the gap vs r, with a product-of-spectral-norms bound and a
   rank-aware bound (formulas in `reglab.metrics.bounds`).
3. **SAM lowers feature rank** (Andriushchenko et al. 2023): a 100-unit ReLU student fits 20 points of a
   3-unit teacher with SGD (B = 1), SAM for the first half of training; feature rank and active neurons
   vs the SAM radius ρ.
"""
from __future__ import annotations

import math

import altair as alt
import numpy as np
import pandas as pd
import torch

from .. import charts
from ..claims import Claim, Result, fmt_number
from ..config import ConfigError, Interval, RunConfig, check, check_each, validate
from ..data import Dataset, from_arrays
from ..engine import train
from ..metrics import effective_rank, nuclear_norm, numerical_rank, singular_values, stable_rank
from ..metrics import bounds

# ---------------------------------------------------------------------------------------------
# experiment 1: a factorized linear layer, whitened matrix regression

D_IN, D_OUT, TRUE_RANK, N_MATRIX, NOISE_MATRIX = 20, 20, 5, 100, 0.5
TRUE_SPECTRUM = (5.0, 4.0, 3.0, 2.0, 1.0)
DATA_SEED = 0


def matrix_regression(n: int = N_MATRIX, d_in: int = D_IN, d_out: int = D_OUT, spectrum=TRUE_SPECTRUM,
                      noise: float = NOISE_MATRIX, seed: int = DATA_SEED, n_test: int = 1000) -> Dataset:
    """Y = X W* + noise with W* of rank len(spectrum) and singular values `spectrum`. The training inputs
    are whitened (XᵀX = n·I exactly), so the training loss is ½‖W − Ŵ‖_F² + const, Ŵ = XᵀY/n the
    least-squares solution (info["w_ls"]); test inputs are standard Gaussian."""
    check("n", n, Interval(int, d_in, 10**6), owner="matrix_regression")  # whitening needs n ≥ d_in
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, d_in)))
    x = math.sqrt(n) * q
    k = len(spectrum)
    a, _ = np.linalg.qr(rng.standard_normal((d_in, k)))
    b, _ = np.linalg.qr(rng.standard_normal((d_out, k)))
    w_star = (a * np.asarray(spectrum)) @ b.T
    y = x @ w_star + noise * rng.standard_normal((n, d_out))
    xt = rng.standard_normal((n_test, d_in))
    yt = xt @ w_star + noise * rng.standard_normal((n_test, d_out))
    f32 = lambda v: v.astype(np.float32)
    data = from_arrays(f32(x), f32(y), f32(xt), f32(yt), task="regression", name="matrix_regression")
    data.info.update(w_star=w_star, w_ls=x.T @ y / n)
    return data


def config(weight_decay: float = 0.3, rank: int | None = D_IN, step_size: float = 0.1, batch_size: int | None = None,
           steps: int = 1000, seed: int = 0, device: str = "auto") -> RunConfig:
    """The factorized layer W = U Vᵀ (rank None: a plain, unfactorized W) on the matrix-regression data."""
    return RunConfig(data="arrays", n_train=N_MATRIX, model="mlp", depth=0, rank=rank, bias=False, activation="linear",
                     loss="mse", optimizer="sgd", step_size=step_size, batch_size=batch_size, weight_decay=weight_decay,
                     steps=steps, eval_every=max(1, steps // 100), seed=seed, device=device)


def soft_threshold(sigma, lam: float, rank: int | None = None) -> np.ndarray:
    """(σ − λ)₊, keeping only the `rank` largest: the singular values of argmin ½‖W − Ŵ‖² + λ‖W‖_* (rank ≤ r)."""
    out = np.maximum(np.sort(np.asarray(sigma, dtype=float))[::-1] - lam, 0.0)
    if rank is not None:
        out[rank:] = 0.0
    return out


def predicted_spectrum(w_ls, weight_decay: float, rank: int | None) -> np.ndarray:
    """Singular values full-batch GD converges to: soft-thresholding for W = U Vᵀ (weight decay on U, V is
    a nuclear-norm penalty), plain shrinkage σ/(1+λ) for an unfactorized W (a Frobenius penalty)."""
    sigma = np.linalg.svd(np.asarray(w_ls, dtype=float), compute_uv=False)
    return sigma / (1 + weight_decay) if rank is None else soft_threshold(sigma, weight_decay, rank)


def factor_norm(params: dict, layer: int = 0) -> torch.Tensor:
    """(‖U‖_F² + ‖V‖_F²)/2 of a factorized layer: what weight decay penalizes. [M]"""
    u, v = params[f"U{layer}"].detach(), params[f"V{layer}"].detach()
    return (u.pow(2).flatten(1).sum(1) + v.pow(2).flatten(1).sum(1)) / 2


def nuclear_gap(params: dict, layer: int = 0) -> torch.Tensor:
    """|(‖U‖² + ‖V‖²)/2 − ‖U Vᵀ‖_*| / ‖U Vᵀ‖_*: zero exactly when the factorization is balanced. [M]"""
    w = params[f"U{layer}"].detach() @ params[f"V{layer}"].detach()
    nuc = nuclear_norm(w)
    return (factor_norm(params, layer) - nuc).abs() / nuc.clamp_min(1e-30)


def spectrum_probe(w_ls, weight_decays, ranks):
    """Probe: singular values of W (sv_00, sv_01, …), its nuclear norm, effective and stable rank, the
    factor norm (‖U‖²+‖V‖²)/2 when factorized, and the largest distance to the predicted spectrum."""
    targets = torch.tensor(np.stack([predicted_spectrum(w_ls, lam, r) for lam, r in zip(weight_decays, ranks)]))

    @torch.no_grad()
    def probe(state) -> dict:
        w = state.model.weight(state.params, 0).detach()
        s = singular_values(w)
        out = {f"sv_{i:02d}": s[:, i] for i in range(s.shape[1])}
        out["nuclear_norm"] = s.sum(-1)
        out["effective_rank"] = effective_rank(w)
        out["stable_rank"] = stable_rank(w)
        k = min(s.shape[1], targets.shape[1])
        out["svt_error"] = (s[:, :k].double().cpu() - targets[:, :k]).abs().max(-1).values.to(s)
        if "U0" in state.params:
            out["factor_norm"] = factor_norm(state.params)
            out["nuclear_gap"] = nuclear_gap(state.params)
        return out

    return probe


def explore(config: RunConfig, on_eval=None, stop=None):
    """The explorer's run: experiment 1 for one config, with the spectrum probe."""
    data = matrix_regression()
    probe = spectrum_probe(data.info["w_ls"], [config.weight_decay], [config.rank])
    return train(config, data=data, probes=[probe], on_eval=on_eval, stop=stop, progress=False)


def weight_decay_sweep(weight_decays, rank=D_IN, step_size=0.1, batch_size=None, steps=1000, seeds=(0, 1, 2),
                       device="auto"):
    """Experiment 1: every (λ, seed) as one ensemble. Returns (Run, data)."""
    data = matrix_regression()
    configs = [config(lam, rank, step_size, batch_size, steps, s, device) for lam in weight_decays for s in seeds]
    probe = spectrum_probe(data.info["w_ls"], [c.weight_decay for c in configs], [c.rank for c in configs])
    return train(configs, data=data, probes=[probe]), data


# ---------------------------------------------------------------------------------------------
# experiment 2: rank slider on a two-layer ReLU network

D_INDEX, K_INDEX, N_INDEX, NOISE_INDEX, WIDTH_INDEX = 20, 2, 100, 0.5, 32


def multi_index(n: int = N_INDEX, d: int = D_INDEX, k: int = K_INDEX, noise: float = NOISE_INDEX,
                seed: int = DATA_SEED, n_test: int = 2000) -> Dataset:
    """y = Σ_j relu(p_jᵀx) (centred) + noise, with k orthonormal directions p_j in R^d, x standard Gaussian."""
    rng = np.random.default_rng(seed)
    p, _ = np.linalg.qr(rng.standard_normal((d, k)))
    x = rng.standard_normal((n + n_test, d))
    f = np.maximum(x @ p, 0).sum(1)
    y = f - f[:n].mean() + noise * rng.standard_normal(n + n_test)
    x, y = x.astype(np.float32), y[:, None].astype(np.float32)
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
    """Experiment 2: one ensemble (the seeds) per rank. Returns (tidy frame per rank and seed, runs)."""
    data = multi_index()
    rows, runs = [], {}
    for r in ranks:
        run = train([rank_config(r, step_size, steps, s, device=device) for s in seeds], data=data)
        runs[r] = run
        weights = bounds.model_weights(run.model, run.params)
        limits = bounds.model_rank_constraints(run.model, run.params)
        x = run.data.x_train
        spec, rank_b = bounds.spectral_bound(weights, x), bounds.rank_bound(weights, x, limits)
        for m, s in enumerate(seeds):
            row = run.summary.iloc[m]
            rows.append({"rank": r, "seed": s, "train_loss": row["train_loss"], "test_loss": row["test_loss"],
                         "gap": row["test_loss"] - row["train_loss"], "spectral_bound": float(spec[m]),
                         "rank_bound": float(rank_b[m]), "diverged_at": row["diverged_at"]})
    return pd.DataFrame(rows), runs


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties); nan when either side is constant or too short."""
    a, b = pd.Series(np.asarray(a, dtype=float)), pd.Series(np.asarray(b, dtype=float))
    if len(a) < 2 or a.nunique() < 2 or b.nunique() < 2 or a.isna().any() or b.isna().any():
        return float("nan")
    return float(np.corrcoef(a.rank(), b.rank())[0, 1])


# ---------------------------------------------------------------------------------------------
# experiment 3: SAM and feature rank in a teacher-student network

N_SAM, D_SAM, TEACHER_UNITS, STUDENT_UNITS = 20, 3, 3, 100
FEATURE_ENERGY = 0.9999  # principal components kept: 99.99 % of Σσ² of the (uncentred) features, as in the SAM code


def teacher_student(n: int = N_SAM, d: int = D_SAM, m: int = TEACHER_UNITS, seed: int = DATA_SEED,
                    n_test: int = 1000) -> Dataset:
    """Inputs uniform on the unit sphere in R^d; y = aᵀ relu(Wᵀx + b) + c from a ReLU teacher with m units,
    unit-norm incoming weights and ±1 output weights (the two-layer setup of tml-epfl/sam-low-rank-features)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + n_test, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w = rng.standard_normal((d, m))
    w /= np.linalg.norm(w, axis=0, keepdims=True)
    b, a, c = rng.standard_normal(m), np.sign(rng.standard_normal(m)), rng.standard_normal()
    y = np.maximum(x @ w + b, 0) @ a + c
    x, y = x.astype(np.float32), y[:, None].astype(np.float32)
    return from_arrays(x[:n], y[:n], x[n:], y[n:], task="regression", name="teacher_student")


def sam_config(sam_radius: float, step_size: float = 0.2, steps: int = 6000, seed: int = 0,
               sam_fraction: float = 0.5, device: str = "auto") -> RunConfig:
    """The 100-unit ReLU student, SGD with B = 1, SAM of radius ρ for the first `sam_fraction` of the steps.
    reglab's square loss is ½(f − y)², so η = 0.2 here is the SAM code's lr 0.1 on (f − y)²."""
    return RunConfig(data="arrays", n_train=N_SAM, model="mlp", depth=1, width=STUDENT_UNITS, activation="relu",
                     bias=True, loss="mse", optimizer="sgd", step_size=step_size, batch_size=1, sam_radius=sam_radius,
                     sam_fraction=sam_fraction, steps=steps, eval_every=max(1, steps // 20), seed=seed, device=device)


def feature_rank(features: torch.Tensor, energy: float = FEATURE_ENERGY) -> torch.Tensor:
    """Principal components needed for `energy` of Σσ² of the feature matrix [M, n, width]. [M]"""
    return numerical_rank(features, energy)


def active_neurons(features: torch.Tensor) -> torch.Tensor:
    """Hidden units that are nonzero on at least one input. [M]"""
    return (features.detach() > 0).any(-2).sum(-1)


@torch.no_grad()
def feature_probe(state) -> dict:
    """Probe: feature rank and active neurons of the hidden layer on the training inputs."""
    feats = state.features("train")[0].detach()
    return {"feature_rank": feature_rank(feats).to(feats.dtype), "active_neurons": active_neurons(feats).to(feats.dtype)}


def sam_sweep(sam_radii, step_size=0.2, steps=6000, seeds=(0, 1, 2), device="auto"):
    """Experiment 3: every (ρ, seed) as one ensemble. Returns (frame per radius and seed, Run)."""
    data = teacher_student()
    configs = [sam_config(rho, step_size, steps, s, device=device) for rho in sam_radii for s in seeds]
    run = train(configs, data=data, probes=[feature_probe])
    feats = run.model.features(run.params, run.data.x_train)[0]
    ranks, active = feature_rank(feats), active_neurons(feats)
    rows = []
    for m, c in enumerate(configs):
        row = run.summary.iloc[m]
        # the SAM code reports mean (f − y)²; reglab's loss is half of it
        rows.append({"sam_radius": c.sam_radius, "seed": c.seed, "train_mse": 2 * row["train_loss"],
                     "test_mse": 2 * row["test_loss"], "feature_rank": int(ranks[m]), "active_neurons": int(active[m]),
                     "diverged_at": row["diverged_at"]})
    return pd.DataFrame(rows), run


# ---------------------------------------------------------------------------------------------
# the notebook's one call


def _per_seed(frame, seeds, fn):
    return [fn(frame[frame.seed == s]) for s in seeds]


def run(weight_decay: float = 0.3, weight_decays=(0.0, 0.1, 0.3, 1.0, 2.0), rank: int | None = D_IN,
        step_size: float = 0.1, batch_size: int | None = None, steps: int = 1000, ranks=(1, 2, 4, 8, 16),
        rank_steps: int = 800, rank_step_size: float = 0.1, sam_radii=(0.0, 0.2, 0.4, 0.6), sam_steps: int = 6000,
        sam_step_size: float = 0.2, seeds: int = 3, seed: int = 0, device: str = "auto") -> Result:
    """Train all three experiments (each seed a member of the same ensemble) and check the claims."""
    non_negative = Interval(float, 0, math.inf, closed="left")
    weight_decays = sorted(float(v) for v in check_each("weight_decays", weight_decays, non_negative, "low_rank.run"))
    ranks = sorted(int(v) for v in check_each("ranks", ranks, Interval(int, 1, WIDTH_INDEX), "low_rank.run", at_least=2))
    sam_radii = sorted(float(v) for v in check_each("sam_radii", sam_radii, non_negative, "low_rank.run"))
    check("seeds", seeds, Interval(int, 1, 10), owner="low_rank.run")
    seed_list = list(range(seed, seed + seeds))
    # every RunConfig is validated here, before anything trains, so a bad value fails fast
    for c, prefix in ((config(weight_decay, rank, step_size, batch_size, steps, seed, device), ""),
                      (rank_config(ranks[0], rank_step_size, rank_steps, seed, device=device), "rank_"),
                      (sam_config(sam_radii[0], sam_step_size, sam_steps, seed, device=device), "sam_")):
        try:
            validate(c, n_train=c.n_train)
        except ConfigError as err:  # name the notebook parameter, not the RunConfig field it sets
            text = str(err)
            for name in ("steps", "step_size"):
                text = text.replace(f"The '{name}' parameter of RunConfig", f"The '{prefix}{name}' parameter of low_rank.run")
            raise ConfigError(text) from None

    metrics, claims, frames, runs = {}, [], {}, {}

    # 1 · weight decay on W = U Vᵀ ------------------------------------------------------------
    sweep, data = weight_decay_sweep(weight_decays, rank, step_size, batch_size, steps, seed_list, device)
    runs["weight_decay"] = sweep
    frames["history"] = sweep.history.merge(sweep.summary[["run", "weight_decay", "seed"]], on="run")
    # the last recorded row of each metric (NaN for a diverged member: groupby.last() would skip it)
    final = sweep.history.sort_values("step").groupby(["run", "metric"]).tail(1).pivot(index="run", columns="metric", values="value")
    final = final.join(sweep.summary.set_index("run")[["weight_decay", "seed", "diverged_at"]])
    w_ls = data.info["w_ls"]
    spec_rows = []
    for m, c in enumerate(sweep.configs):
        pred = predicted_spectrum(w_ls, c.weight_decay, c.rank)
        for i in range(min(D_IN, D_OUT)):
            spec_rows.append({"weight_decay": c.weight_decay, "seed": c.seed, "index": i + 1,
                              "sigma": final.loc[m, f"sv_{i:02d}"], "predicted": pred[i]})
    frames["spectrum"] = pd.DataFrame(spec_rows)
    frames["ranks_vs_decay"] = final.reset_index()[["weight_decay", "seed", "effective_rank", "stable_rank", "nuclear_norm",
                                                    *(["factor_norm", "nuclear_gap"] if rank is not None else []), "svt_error",
                                                    "train_loss", "test_loss", "diverged_at"]]
    f1 = frames["ranks_vs_decay"]
    diverged1 = f1.dropna(subset=["diverged_at"])
    for lam in weight_decays:
        rows = f1[f1.weight_decay == lam]
        metrics[f"effective_rank@wd={lam:g}"] = float(rows.effective_rank.mean())
        metrics[f"stable_rank@wd={lam:g}"] = float(rows.stable_rank.mean())

    def monotone(rows):
        e = rows.sort_values("weight_decay").effective_rank.to_numpy()
        return float(np.max(np.diff(e))) if len(e) > 1 and np.isfinite(e).all() else float("nan")

    steps_up = _per_seed(f1, seed_list, monotone)
    for s, v in zip(seed_list, steps_up):
        metrics[f"effective_rank_largest_rise/seed={s}"] = v
    ok = [math.isfinite(v) and v < 0 for v in steps_up]
    claims.append(Claim("Effective rank of W = U Vᵀ falls monotonically as weight decay λ grows",
                        max(steps_up) if all(map(math.isfinite, steps_up)) else None,
                        "largest rise between consecutive λ < 0, every seed", all(ok) and len(weight_decays) > 1,
                        note=f"held for {sum(ok)}/{len(ok)} seeds; largest rise per seed: {fmt_number(steps_up)}"
                             + "".join(f"; λ = {r.weight_decay:g}, seed {r.seed} diverged at step {int(r.diverged_at)}"
                                       for r in diverged1.itertuples())))
    positive = [lam for lam in weight_decays if lam > 0]
    if rank is not None and positive:
        gaps = _per_seed(f1[f1.weight_decay > 0], seed_list, lambda r: float(r.nuclear_gap.max()))
        for s, v in zip(seed_list, gaps):
            metrics[f"nuclear_gap_max/seed={s}"] = v
        ok = [math.isfinite(v) and v <= 0.05 for v in gaps]
        claims.append(Claim("Weight decay on U, V is a nuclear-norm penalty: (‖U‖²+‖V‖²)/2 = ‖W‖_* at the end (λ > 0)",
                            max(gaps) if all(map(math.isfinite, gaps)) else None, "relative difference ≤ 0.05, every λ > 0 and seed",
                            all(ok), note=f"held for {sum(ok)}/{len(ok)} seeds; worst per seed: {fmt_number(gaps)}"))
        scale = float(np.linalg.svd(w_ls, compute_uv=False)[0])
        errs = _per_seed(f1[f1.weight_decay > 0], seed_list, lambda r: float(r.svt_error.max()) / scale)
        for s, v in zip(seed_list, errs):
            metrics[f"soft_threshold_error/seed={s}"] = v
        ok = [math.isfinite(v) and v <= 0.01 for v in errs]
        claims.append(Claim("Singular values are soft-thresholded: σᵢ(W) = (σᵢ(Ŵ) − λ)₊",
                            max(errs) if all(map(math.isfinite, errs)) else None,
                            "max |σᵢ(W) − (σᵢ(Ŵ) − λ)₊| / σ₁(Ŵ) ≤ 0.01, every λ > 0 and seed", all(ok),
                            note=f"held for {sum(ok)}/{len(ok)} seeds; worst per seed: {fmt_number(errs)}"))
    if weight_decay in weight_decays:  # the explorer starts from this member's curves, no second run
        m = next(i for i, c in enumerate(sweep.configs) if c.weight_decay == weight_decay and c.seed == seed)
        initial = sweep.history[sweep.history.run == m].assign(run=0)
        d = sweep.diverged_step(m)
        initial.attrs["diverged_at"] = {} if d is None else {0: d}
        frames["explorer_initial"] = initial.reset_index(drop=True)

    # 2 · rank slider ---------------------------------------------------------------------------
    f2, rank_runs = rank_sweep(ranks, rank_step_size, rank_steps, seed_list, device)
    runs["rank"] = rank_runs
    frames["rank_sweep"] = f2
    for r in ranks:
        rows = f2[f2["rank"] == r]
        for key in ("train_loss", "test_loss", "gap", "spectral_bound", "rank_bound"):
            metrics[f"{key}@r={r}"] = float(rows[key].mean())
    rises = _per_seed(f2, seed_list, lambda r: float(np.min(np.diff(r.sort_values("rank").rank_bound.to_numpy()))))
    ok = [math.isfinite(v) and v > 0 for v in rises]
    claims.append(Claim("The rank-aware bound increases with the rank r",
                        min(rises) if all(map(math.isfinite, rises)) else None, "smallest step between consecutive r > 0, every seed",
                        all(ok), note=f"held for {sum(ok)}/{len(ok)} seeds; smallest step per seed: {fmt_number(rises)}"))
    r0 = ranks[0]
    ratios = _per_seed(f2[f2["rank"] == r0], seed_list, lambda r: float(r.rank_bound.iloc[0] / r.spectral_bound.iloc[0]))
    for s, v in zip(seed_list, ratios):
        metrics[f"rank_over_spectral_bound@r={r0}/seed={s}"] = v
    below = {r: float((f2[f2["rank"] == r].rank_bound < f2[f2["rank"] == r].spectral_bound).mean()) for r in ranks}
    crossing = max([r for r in ranks if below[r] == 1.0], default=None)
    ok = [math.isfinite(v) and v < 1 for v in ratios]
    claims.append(Claim(f"The rank-aware bound is below the product-of-spectral-norms bound for small r (r = {r0})",
                        max(ratios) if all(map(math.isfinite, ratios)) else None, "B_rank / B_spec < 1, every seed", all(ok),
                        note=f"held for {sum(ok)}/{len(ok)} seeds; ratio per seed: {fmt_number(ratios)}; "
                             f"below for every seed up to r = {crossing}" if crossing else
                             f"held for {sum(ok)}/{len(ok)} seeds; ratio per seed: {fmt_number(ratios)}"))
    rhos = _per_seed(f2, seed_list, lambda r: spearman(r.rank_bound, r.gap))
    rho_spec = _per_seed(f2, seed_list, lambda r: spearman(r.spectral_bound, r.gap))
    for s, v, w in zip(seed_list, rhos, rho_spec):
        metrics[f"spearman_rank_bound_gap/seed={s}"] = v
        metrics[f"spearman_spectral_bound_gap/seed={s}"] = w
    ok = [math.isfinite(v) and v > 0 for v in rhos]
    claims.append(Claim("The rank-aware bound's Spearman correlation with the measured gap over the r sweep is positive",
                        min(rhos) if all(map(math.isfinite, rhos)) else None, "> 0, every seed", all(ok),
                        note=f"held for {sum(ok)}/{len(ok)} seeds; per seed: {fmt_number(rhos)} "
                             f"(product-of-spectral-norms bound: {fmt_number(rho_spec)})"))

    # 3 · SAM and feature rank ------------------------------------------------------------------
    f3, sam_run = sam_sweep(sam_radii, sam_step_size, sam_steps, seed_list, device)
    runs["sam"] = sam_run
    frames["sam"] = f3
    frames["sam_history"] = sam_run.history.merge(sam_run.summary[["run", "sam_radius", "seed"]], on="run")
    for rho in sam_radii:
        rows = f3[f3.sam_radius == rho]
        for key in ("feature_rank", "active_neurons", "train_mse"):
            metrics[f"{key}@rho={rho:g}"] = float(rows[key].mean())
    rho0 = sam_radii[0]
    rho1 = 0.4 if 0.4 in sam_radii else sam_radii[-1]
    losses = _per_seed(f3[f3.sam_radius.isin([rho0, rho1])], seed_list, lambda r: float(r.train_mse.max()))
    ok = [math.isfinite(v) and v < 1e-3 for v in losses]
    claims.append(Claim(f"SAM runs fit the training set: train MSE < 1e-3 at ρ = {rho0:g} and ρ = {rho1:g}",
                        max(losses) if all(map(math.isfinite, losses)) else None, "mean (f − y)² < 1e-3, every seed", all(ok),
                        note=f"held for {sum(ok)}/{len(ok)} seeds; worst per seed: {fmt_number(losses)}"))
    fr = _per_seed(f3, seed_list, lambda r: float(r[r.sam_radius == rho1].feature_rank.iloc[0] / r[r.sam_radius == rho0].feature_rank.iloc[0]))
    for s, v in zip(seed_list, fr):
        metrics[f"feature_rank_ratio/seed={s}"] = v
    ok = [math.isfinite(v) and v <= 0.7 for v in fr]
    claims.append(Claim(f"SAM lowers feature rank: rank at ρ = {rho1:g} ≤ 0.7 × rank at ρ = {rho0:g}",
                        max(fr) if all(map(math.isfinite, fr)) else None, "ratio ≤ 0.7, every seed", all(ok) and rho1 != rho0,
                        note=f"held for {sum(ok)}/{len(ok)} seeds; ratio per seed: {fmt_number(fr)}"))
    return Result(metrics, claims, frames, runs)


# ---------------------------------------------------------------------------------------------
# charts (Altair specs over the tidy frames above)

W, H = 260, 180


def _clean(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.replace([np.inf, -np.inf], np.nan)
    return out.astype(object).where(out.notna(), None)


def spectrum_chart(spectrum: pd.DataFrame) -> alt.Chart:
    """Final singular values of W for each λ (seed of the first run), with the soft-thresholding prediction."""
    first = spectrum[spectrum.seed == spectrum.seed.min()]
    base = alt.Chart(_clean(first)).encode(x=alt.X("index:O", title="singular value index i"),
                                           color=alt.Color("weight_decay:N", title="λ"))
    measured = base.mark_line(point=True).encode(y=alt.Y("sigma:Q", title="σᵢ(W)"),
                                                 tooltip=["weight_decay:N", "index:O", alt.Tooltip("sigma:Q", format=".4f"),
                                                          alt.Tooltip("predicted:Q", format=".4f")])
    predicted = base.mark_point(shape="cross", size=70, filled=True, opacity=0.6).encode(y="predicted:Q")
    return (measured + predicted).properties(width=W + 60, height=H,
                                             title="final spectrum (lines) vs (σᵢ(Ŵ) − λ)₊ (crosses)")


def spectrum_history_chart(history: pd.DataFrame) -> alt.Chart:
    """Singular values of W over training, one small panel per λ (first seed)."""
    rows = history[history.metric.str.startswith("sv_") & (history.seed == history.seed.min())].copy()
    rows["index"] = rows.metric.str[3:].astype(int) + 1
    return alt.Chart(_clean(rows[["step", "value", "index", "weight_decay"]])).mark_line().encode(
        x=alt.X("step:Q"), y=alt.Y("value:Q", title="σᵢ(W)"), detail="index:N",
        color=alt.Color("index:Q", title="i", scale=alt.Scale(scheme="viridis"))).properties(width=140, height=140).facet(
        column=alt.Column("weight_decay:N", title="weight decay λ")).properties(title="singular values during training")


def ranks_vs_decay_chart(frame: pd.DataFrame) -> alt.Chart:
    """Effective (entropy) and stable rank of the final W against λ; every seed a point, the mean a line."""
    long = frame.melt(id_vars=["weight_decay", "seed"], value_vars=["effective_rank", "stable_rank"], var_name="measure",
                      value_name="rank")
    base = alt.Chart(_clean(long)).encode(x=alt.X("weight_decay:O", title="weight decay λ", axis=alt.Axis(labelAngle=0)),
                                          color=alt.Color("measure:N", title=None))
    return (base.mark_line().encode(y=alt.Y("mean(rank):Q", title="rank of W")) + base.mark_point().encode(
        y="rank:Q", tooltip=["weight_decay:O", "seed:N", "measure:N", alt.Tooltip("rank:Q", format=".3f")])).properties(
        width=W, height=H, title="rank of W vs λ")


def nuclear_chart(history: pd.DataFrame) -> alt.Chart:
    """|(‖U‖²+‖V‖²)/2 − ‖W‖_*| / ‖W‖_* during training for each λ (first seed), log scale, 5 % line."""
    rows = history[(history.metric == "nuclear_gap") & (history.seed == history.seed.min())]
    rows = rows[rows.value > 0]
    lines = alt.Chart(_clean(rows[["step", "value", "weight_decay"]])).mark_line().encode(
        x="step:Q", y=alt.Y("value:Q", title="relative gap", scale=alt.Scale(type="log")),
        color=alt.Color("weight_decay:N", title="λ"))
    rule = alt.Chart(pd.DataFrame({"y": [0.05]})).mark_rule(strokeDash=[5, 4], color="gray").encode(y="y:Q")
    return (lines + rule).properties(width=W, height=H, title="(‖U‖²+‖V‖²)/2 vs ‖W‖_* (dashed: 5 %)")


def rank_sweep_chart(frame: pd.DataFrame) -> alt.HConcatChart:
    """Experiment 2: losses and gap vs r; both bounds vs r; bound against measured gap."""
    losses = frame.melt(id_vars=["rank", "seed"], value_vars=["train_loss", "test_loss", "gap"], var_name="quantity")
    x = alt.X("rank:Q", title="rank r", scale=alt.Scale(type="log", base=2))
    left = alt.Chart(_clean(losses)).encode(x=x, color=alt.Color("quantity:N", title=None))
    left = (left.mark_line().encode(y=alt.Y("mean(value):Q", title="loss (½ squared error)")) +
            left.mark_point(opacity=0.5).encode(y="value:Q")).properties(width=W - 40, height=H, title="train / test / gap vs r")
    bnd = frame.melt(id_vars=["rank", "seed", "gap"], value_vars=["spectral_bound", "rank_bound"], var_name="bound")
    bnd["bound"] = bnd["bound"].map({"spectral_bound": "product of spectral norms", "rank_bound": "rank-aware"})
    mid = alt.Chart(_clean(bnd)).encode(x=x, color=alt.Color("bound:N", title=None))
    mid = (mid.mark_line().encode(y=alt.Y("mean(value):Q", title="bound (no constants)", scale=alt.Scale(type="log"))) +
           mid.mark_point(opacity=0.5).encode(y="value:Q")).properties(width=W - 40, height=H, title="bounds vs r")
    right = alt.Chart(_clean(bnd)).mark_point(filled=True).encode(
        x=alt.X("gap:Q", title="measured gap (test − train)"), y=alt.Y("value:Q", title="bound", scale=alt.Scale(type="log")),
        color=alt.Color("bound:N", title=None), size=alt.Size("rank:Q", title="r", scale=alt.Scale(type="log", base=2, range=[30, 300])),
        tooltip=["rank:Q", "seed:N", "bound:N", alt.Tooltip("value:Q", format=".3g"), alt.Tooltip("gap:Q", format=".3f")]
    ).properties(width=W - 40, height=H, title="bound vs measured gap")
    return alt.hconcat(left, mid, right).resolve_scale(color="independent")


def sam_chart(frame: pd.DataFrame, history: pd.DataFrame | None = None):
    """Experiment 3: feature rank and active neurons vs ρ (points: seeds; line: mean); feature rank in training."""
    long = frame.melt(id_vars=["sam_radius", "seed"], value_vars=["feature_rank", "active_neurons"], var_name="measure")
    base = alt.Chart(_clean(long)).encode(x=alt.X("sam_radius:Q", title="SAM radius ρ"))
    panels = []
    for measure, title in (("feature_rank", "feature rank (99.99 % of Σσ²)"), ("active_neurons", "active neurons (of 100)")):
        b = base.transform_filter(alt.datum.measure == measure)
        panels.append((b.mark_line().encode(y=alt.Y("mean(value):Q", title=title)) +
                       b.mark_point().encode(y="value:Q", tooltip=["sam_radius:Q", "seed:N", "value:Q"])).properties(
            width=W - 60, height=H, title=title))
    if history is not None:
        rows = history[(history.metric == "feature_rank") & (history.seed == history.seed.min())]
        panels.append(alt.Chart(_clean(rows[["step", "value", "sam_radius"]])).mark_line().encode(
            x="step:Q", y=alt.Y("value:Q", title="feature rank"), color=alt.Color("sam_radius:N", title="ρ")).properties(
            width=W - 40, height=H, title="feature rank during training (first seed)"))
    return alt.hconcat(*panels)


def chart(frame: pd.DataFrame, config: RunConfig | None = None):
    """The explorer's chart for one run of experiment 1: the singular values of W over training, and the
    relative gap between (‖U‖²+‖V‖²)/2 and ‖W‖_* (log scale, dashed 5 % line)."""
    rows = frame[frame.metric.str.startswith("sv_")].copy()
    rows["index"] = rows.metric.str[3:].astype(int) + 1
    keep = [c for c in ("step", "value", "index", "label", "current", "run") if c in rows.columns]
    enc = dict(x=alt.X("step:Q"), y=alt.Y("value:Q", title="σᵢ(W)"),
               detail=[alt.Detail("index:N")] + ([alt.Detail("label:N")] if "label" in rows.columns else []),
               color=alt.Color("index:Q", title="i", scale=alt.Scale(scheme="viridis")))
    if "current" in rows.columns and not rows["current"].all():
        enc["opacity"] = alt.condition("datum.current", alt.value(1.0), alt.value(0.25))
    left = alt.Chart(_clean(rows[keep])).mark_line().encode(**enc)
    marks = charts.diverged_marks(frame, "sv_00")  # a diverged run: "diverged at step k" at its last finite point
    left = (left if marks is None else alt.layer(left, marks)).properties(width=W, height=H, title="singular values of W")
    gap = frame[(frame.metric == "nuclear_gap") & (frame.value > 0)]
    if gap.empty:
        return left
    keep = [c for c in ("step", "value", "label", "current") if c in gap.columns]
    genc = dict(x="step:Q", y=alt.Y("value:Q", title="relative gap", scale=alt.Scale(type="log")))
    if "label" in gap.columns:
        genc["color"] = alt.Color("label:N", title=None)
    right = alt.Chart(_clean(gap[keep])).mark_line().encode(**genc)
    rule = alt.Chart(pd.DataFrame({"y": [0.05]})).mark_rule(strokeDash=[5, 4], color="gray").encode(y="y:Q")
    return alt.hconcat(left, (right + rule).properties(width=W, height=H, title="|(‖U‖²+‖V‖²)/2 − ‖W‖_*| / ‖W‖_*"))

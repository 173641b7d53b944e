"""Implicit bias: gradient descent on the logistic loss over linearly separable data diverges in norm but
converges in direction to the hard-margin SVM (Soudry et al. 2018), slowly: the angle decays like
1/log t, so 1 − cos(w_t, w_SVM) ~ 1/log²t. Large step sizes make the loss non-monotone early yet keep
the direction (Wu et al. 2024); weight decay λ > 0 gives a finite-norm minimizer whose direction
approaches the SVM as λ → 0; mini-batch SGD keeps the same bias.

One engine call trains every member at once (a batched ensemble of linear models, `depth=0`,
`bias=False`, loss "logistic", float64): three seeds at the default step size, a step-size sweep, a
weight-decay sweep and mini-batch members. A probe measures ‖w‖, 1 − cos to the SVM and the normalized
margin at every evaluation (every `steps // 200` steps). The SVM is solved independently and exactly
(`reglab.metrics.margins.svm`); the λ > 0 minimizers by Newton's method, so the trained weights are
compared with closed-form references, not with each other. A second, 2-D data set draws the decision
boundary rotating toward the SVM boundary.
"""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import torch

from ..claims import Claim, Result
from ..config import ConfigError, Interval, RunConfig, check
from ..data import Dataset, make_dataset
from ..engine import Run, train
from ..metrics import margins as mg

STEP_SIZES = (0.1, 10.0, 100.0)  # extra step sizes (seed 0, λ = 0, full batch)
WEIGHT_DECAYS = (1e-3, 1e-2, 1e-1)  # λ members (seed 0, default η, full batch)
BATCH_SIZES = (1, 8)  # mini-batch members (seed 0, default η, λ = 0)
SEEDS = 3
RATE_FROM = 100  # the rate check starts at t = 1e2, as in THEMES
RATE_SPREAD = 3.0  # (1 − cos)·log²t must vary by < 3× over the window
NORM_TOLERANCE = 0.01  # λ > 0: ‖w_T‖ within 1 % of the regularized minimizer's norm
EVALS = 200  # evaluations per run (eval_every = steps // EVALS)
PICTURE_STEPS = 1000  # the 2-D run


# ---------------------------------------------------------------------------------------------
# configuration


def config(step_size=1.0, batch_size=None, weight_decay=0.0, steps=10_000, n_train=40, d=5, margin=0.1,
           label_noise=0.0, data_seed=0, seed=0, device="auto") -> RunConfig:
    """A linear classifier (no bias) trained by GD (batch_size None) on the logistic loss. The evaluation
    interval is derived from the steps when training (`with_evals`), so any step count is valid."""
    return RunConfig(data="separable", n_train=n_train, data_seed=data_seed,
                     data_options={"d": d, "margin": float(margin), "label_noise": float(label_noise)},
                     model="mlp", depth=0, bias=False, loss="logistic", optimizer="sgd", step_size=step_size,
                     batch_size=batch_size, weight_decay=weight_decay, steps=steps, eval_every=1, seed=seed,
                     device=device, dtype="float64")


def with_evals(cfg: RunConfig) -> RunConfig:
    """The config as trained: about EVALS evaluations, whatever the number of steps."""
    return cfg.replace(eval_every=max(1, cfg.steps // EVALS))


def _dataset(cfg: RunConfig) -> Dataset:
    return make_dataset(cfg.data, cfg.n_train, cfg.data_seed, **cfg.data_options)


def _check_binary(data: Dataset) -> None:
    y = data.y_train
    if data.task != "binary" or y.dim() != 2 or y.shape[1] != 1 or not bool(((y == 1) | (y == -1)).all()):
        raise ConfigError("max_margin needs a binary task: ±1 labels of shape [n, 1] (from_arrays(..., task='binary')).")


# ---------------------------------------------------------------------------------------------
# references and probes


def reference(data: Dataset) -> mg.SVM:
    """The hard-margin SVM through the origin of the training set (or why there is none)."""
    return mg.svm(data.x_train, data.y_train)


def regularized_minimizer(x, y, weight_decay: float, tol: float = 1e-12) -> torch.Tensor:
    """argmin_w mean_i log(1 + exp(−y_i ⟨w, x_i⟩)) + (λ/2)‖w‖², by damped Newton in float64 — the point
    GD with weight decay λ converges to (the engine's update is −η(∇loss + λw))."""
    x = torch.as_tensor(x, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
    z = y[:, None] * x
    n, d = z.shape
    objective = lambda w: torch.nn.functional.softplus(-(z @ w)).mean() + 0.5 * weight_decay * w.dot(w)
    w = torch.zeros(d, dtype=torch.float64)
    for _ in range(200):
        s = torch.sigmoid(-(z @ w))  # −dℓ/dm at margins m = z·w
        grad = -(z * s[:, None]).mean(0) + weight_decay * w
        if float(grad.norm()) < tol:
            break
        hess = (z * (s * (1 - s))[:, None]).T @ z / n + weight_decay * torch.eye(d, dtype=torch.float64)
        step = torch.linalg.solve(hess, grad)
        t, f0 = 1.0, objective(w)
        while objective(w - t * step) > f0 - 0.25 * t * grad.dot(step) and t > 1e-10:
            t *= 0.5
        w = w - t * step
    return w


class MarginProbe:
    """‖w‖, 1 − cos(w, w_SVM), the angle and the normalized margin / SVM margin, per member."""

    def __init__(self, svm: mg.SVM | None, x=None, y=None):
        self.svm = svm if svm is not None and svm.separable else None
        self.x, self.y = x, y

    def __call__(self, state) -> dict:
        w = state.params["W0"][:, 0].detach().to(torch.float64)
        x, y = (state.data.x_train, state.data.y_train) if self.x is None else (self.x, self.y)
        out = {"norm": w.norm(dim=1), "normalized_margin": mg.normalized_margin(w, x, y)}
        if self.svm is not None:
            out["one_minus_cos"] = mg.one_minus_cos(w, self.svm.w)
            out["margin_ratio"] = out["normalized_margin"] / self.svm.margin
        if w.shape[1] == 2:  # the 2-D picture needs the weights themselves
            out["w0"], out["w1"] = w[:, 0], w[:, 1]
        return {k: v.to(state.params["W0"].dtype) for k, v in out.items()}

    def __repr__(self) -> str:  # stable across processes (the engine's cache keys on probe reprs)
        return f"MarginProbe(svm_margin={None if self.svm is None else round(self.svm.margin, 12)})"


# ---------------------------------------------------------------------------------------------
# the ensemble


def members(base: RunConfig, seeds=SEEDS, step_sizes=STEP_SIZES, weight_decays=WEIGHT_DECAYS,
            batch_sizes=BATCH_SIZES) -> list:
    """(group, label, config) of every member of the one ensemble."""
    out = [("seeds", f"seed {base.seed + i}", base.replace(seed=base.seed + i)) for i in range(seeds)]
    out += [("step size", f"η = {v:g}", base.replace(step_size=float(v))) for v in step_sizes if v != base.step_size]
    out += [("weight decay", f"λ = {v:g}", base.replace(weight_decay=float(v))) for v in weight_decays if v != base.weight_decay]
    out += [("batch size", f"B = {v}", base.replace(batch_size=int(v))) for v in batch_sizes if v != base.batch_size]
    return out


def tidy(run: Run, roles: list) -> pd.DataFrame:
    """The run's history with each member's group and label, plus (1 − cos)·log²t as metric "rate"."""
    role = pd.DataFrame([{"run": i, "group": g, "label": lab} for i, (g, lab, _) in enumerate(roles)])
    frame = run.history.merge(role, on="run")
    cos = frame[(frame.metric == "one_minus_cos") & (frame.step > 1)]
    rate = cos.assign(metric="rate", value=cos.value * np.log(cos.step) ** 2)
    return pd.concat([frame, rate], ignore_index=True)


def log_steps(steps, count: int = 60) -> np.ndarray:
    """About `count` log-spaced values among the given (evaluated) steps, ≥ 1."""
    steps = np.unique(np.asarray(steps))
    steps = steps[steps >= 1]
    if len(steps) <= count:
        return steps
    targets = np.geomspace(steps[0], steps[-1], count)
    return np.unique(steps[np.searchsorted(steps, targets).clip(max=len(steps) - 1)])


def thin(frame: pd.DataFrame, count: int = 60) -> pd.DataFrame:
    """Rows at ~count log-spaced steps (charts over log t need no more)."""
    keep = set(log_steps(frame.step.unique(), count).tolist())
    return frame[frame.step.isin(keep)]


# ---------------------------------------------------------------------------------------------
# summaries


def series(frame: pd.DataFrame, label: str, metric: str) -> pd.Series:
    rows = frame[(frame.label == label) & (frame.metric == metric)]
    return rows.set_index("step")["value"].sort_index()


def monotone_decreasing(s: pd.Series) -> tuple[bool, int]:
    """(never increases, number of increases) over a series in step order."""
    diffs = np.diff(s.to_numpy())
    return bool((diffs <= 0).all()), int((diffs > 0).sum())


def spread(s: pd.Series) -> float:
    """max / min of a positive series."""
    return float(s.max() / s.min())


def loss_increases(step_losses: torch.Tensor, member: int, first: int) -> int:
    """How many of the first `first` steps raised the training loss of a member."""
    losses = step_losses[:first, member]
    return int((losses[1:] > losses[:-1]).sum())


# ---------------------------------------------------------------------------------------------
# the experiment


def picture(cfg: RunConfig, stop=None) -> dict:
    """The 2-D run: separable points in the plane, GD from the same start, w at every evaluation."""
    steps = min(cfg.steps, PICTURE_STEPS)
    flat = cfg.replace(data_options={**cfg.data_options, "d": 2}, steps=steps, eval_every=max(1, steps // EVALS),
                       batch_size=None, weight_decay=0.0)
    data = _dataset(flat)
    svm = reference(data)
    run = train(flat, data=data, probes=[MarginProbe(svm)], stop=stop, progress=False)
    return {"data": data, "svm": svm, "run": run, "config": flat}


def run(step_size=1.0, batch_size=None, weight_decay=0.0, steps=10_000, n_train=40, d=5, margin=0.1, label_noise=0.0,
        data_seed=0, seeds=SEEDS, step_sizes=STEP_SIZES, weight_decays=WEIGHT_DECAYS, batch_sizes=BATCH_SIZES, seed=0,
        device="auto", data: Dataset | None = None) -> Result:
    """Train the ensemble (one engine call), the 2-D picture, and compute the claims.
    `data`: your own binary data set (±1 labels [n, 1]) instead of the generated one."""
    check("seeds", seeds, Interval(int, 1, 20), "max_margin")
    check("steps", steps, Interval(int, 2 * RATE_FROM, 10_000_000), "max_margin")
    base = config(step_size=step_size, batch_size=batch_size, weight_decay=weight_decay, steps=steps, n_train=n_train,
                  d=d, margin=margin, label_noise=label_noise, data_seed=data_seed, seed=seed, device=device)
    if data is None:
        data = _dataset(base)
    else:
        base = base.replace(data="arrays", data_options={}, n_train=None)
    _check_binary(data)
    roles = members(base, seeds, step_sizes, weight_decays, batch_sizes)
    svm = reference(data)
    ens = train([with_evals(c) for _, _, c in roles], data=data, probes=[MarginProbe(svm)], progress=False)
    frame = tidy(ens, roles)
    pic = picture(base) if base.data == "separable" else None  # your own data: no 2-D picture
    metrics = {"n": data.n_train, "d": data.x_train.shape[1], "steps": steps, "separable": svm.separable,
               "svm_margin": svm.margin, "support_vectors": len(svm.support)}
    diverged = {lab: int(k) for (_, lab, _), k in zip(roles, ens.summary["diverged_at"]) if k is not None and k == k}
    metrics["diverged"] = ", ".join(f"{lab} at step {k}" for lab, k in diverged.items()) or "none"
    seed_labels = [lab for g, lab, _ in roles if g == "seeds"]
    claims = []
    if not svm.separable:
        claims.append(Claim("the training data are linearly separable (the premise of every max-margin claim)",
                            "not separable", "an LP finds w with y⟨w, x⟩ ≥ 1", False, note=svm.message))
        for i, lab in enumerate(seed_labels):
            norm = series(frame, lab, "norm")
            metrics[f"final_norm_s{i}"] = float(norm.iloc[-1])
            metrics[f"final_train_loss_s{i}"] = float(series(frame, lab, "train_loss").iloc[-1])
        return Result(metrics, claims, {"history": frame, "picture": pic, "lambda_path": lambda_path(data, svm)},
                      {"ensemble": ens, "svm": svm, "roles": roles})

    # -- 1. direction, rate and margin, for every seed ------------------------------------------
    mono, rates, ratios = [], [], []
    for i, lab in enumerate(seed_labels):
        cos = series(frame, lab, "one_minus_cos")
        window = cos[cos.index >= RATE_FROM]
        _, ups = monotone_decreasing(window)
        ok, ups_all = monotone_decreasing(cos[cos.index >= 1])  # every evaluation after the start
        rate = series(frame, lab, "rate")
        r = spread(rate[rate.index >= RATE_FROM])
        ratio = series(frame, lab, "margin_ratio")
        start = float(ratio[ratio.index >= RATE_FROM].iloc[0])
        end = float(ratio.iloc[-1])
        mono.append(ok), rates.append(r), ratios.append((start, end))
        metrics.update({f"one_minus_cos_t100_s{i}": float(window.iloc[0]), f"one_minus_cos_end_s{i}": float(cos.iloc[-1]),
                        f"increases_after_t100_s{i}": ups, f"increases_from_start_s{i}": ups_all,
                        f"rate_min_s{i}": float(rate[rate.index >= RATE_FROM].min()),
                        f"rate_max_s{i}": float(rate[rate.index >= RATE_FROM].max()), f"rate_spread_s{i}": r,
                        f"margin_ratio_t100_s{i}": start, f"margin_ratio_end_s{i}": end,
                        f"norm_end_s{i}": float(series(frame, lab, "norm").iloc[-1])})
    k = len(seed_labels)
    held = lambda flags: f"{sum(flags)}/{k} seeds: "
    fmt = lambda values, f="{:.3g}": ", ".join(f.format(v) for v in values)
    approach = [e > s and e <= 1 + 1e-9 for s, e in ratios]
    claims += [
        Claim("1 − cos(w_t, w_SVM) decreases monotonically (every evaluation after the start), for every seed",
              held(mono) + "1 − cos at the end = " + fmt([metrics[f"one_minus_cos_end_s{i}"] for i in range(k)]),
              "no increase between evaluations", all(mono)),
        Claim("the direction converges like 1/log t: (1 − cos)·log²t varies by < 3× from t = 1e2 to the last step, for every seed",
              held([r < RATE_SPREAD for r in rates]) + "max/min = " + fmt(rates), "< 3",
              all(r < RATE_SPREAD for r in rates)),
        Claim("the normalized margin approaches the SVM margin (it rises, and never exceeds it), for every seed",
              held(approach) + "margin / SVM margin at the end = " + fmt([e for _, e in ratios], "{:.4f}"),
              "ratio(t_end) > ratio(1e2) and ≤ 1", all(approach)),
    ]

    # -- 2. large step sizes ---------------------------------------------------------------------
    eta_roles = [(i, c.step_size) for i, (g, _, c) in enumerate(roles) if g == "step size"]
    if eta_roles:
        i, eta = max(eta_roles, key=lambda r: r[1])
        lab = roles[i][1]
        ups = loss_increases(ens.step_losses, i, min(1000, steps))
        cos = series(frame, lab, "one_minus_cos")
        start, end = float(cos[cos.index >= RATE_FROM].iloc[0]), float(cos.iloc[-1])
        metrics.update({"large_eta": eta, "large_eta_loss_increases_first_1000": ups,
                        "large_eta_one_minus_cos_t100": start, "large_eta_one_minus_cos_end": end})
        first_loss = float(ens.step_losses[0, i])
        after_one = float(ens.step_losses[1, i]) if steps > 1 else float("nan")
        metrics.update({"large_eta_loss_step1": first_loss, "large_eta_loss_step2": after_one})
        claims += [
            Claim("a large step size (the largest η) still converges in direction",
                  f"η = {eta:g}: 1 − cos {start:.3g} (t = 1e2) → {end:.3g} (end)", "1 − cos(end) < 1 − cos(1e2), no divergence",
                  lab not in diverged and end < start),
            Claim("a large step size makes the loss non-monotone early (Wu et al. 2024)",
                  f"η = {eta:g}: the loss rose on {ups} of the first {min(1000, steps)} steps (loss {first_loss:.3g} → "
                  f"{after_one:.3g} after one step)", "≥ 1 increase", ups > 0,
                  note="" if ups else "the first large step already separates these points, so the loss can only fall"),
        ]
        for j, e in eta_roles:
            metrics[f"one_minus_cos_end_eta_{e:g}"] = float(series(frame, roles[j][1], "one_minus_cos").iloc[-1])

    # -- 3. weight decay ---------------------------------------------------------------------------
    lam_roles = [(i, c.weight_decay) for i, (g, _, c) in enumerate(roles) if g == "weight decay"]
    if lam_roles:
        devs, angles = [], []
        for i, lam in sorted(lam_roles, key=lambda r: r[1]):
            w_lam = regularized_minimizer(data.x_train, data.y_train, lam)
            norm = float(series(frame, roles[i][1], "norm").iloc[-1])
            dev = abs(norm / float(w_lam.norm()) - 1)
            angle = float(mg.angle_degrees(ens.params["W0"][i, 0], svm.w)[0])
            devs.append(dev), angles.append(angle)
            metrics.update({f"norm_end_lambda_{lam:g}": norm, f"norm_minimizer_lambda_{lam:g}": float(w_lam.norm()),
                            f"angle_deg_lambda_{lam:g}": angle,
                            f"angle_deg_minimizer_lambda_{lam:g}": float(mg.angle_degrees(w_lam, svm.w)[0])})
        lam0 = series(frame, seed_labels[0], "norm")
        growth = float(lam0.iloc[-1] / lam0[lam0.index >= lam0.index[-1] / 2].iloc[0] - 1)
        metrics["norm_growth_last_half_lambda_0"] = growth
        lams = sorted(l for _, l in lam_roles)
        claims += [
            Claim("with λ > 0 the norm stays bounded: it converges to the finite norm of the regularized minimizer",
                  "|‖w_T‖/‖w_λ‖ − 1| = " + fmt(devs, "{:.2g}") + f" (λ = {fmt(lams, '{:g}')}); λ = 0 still grows "
                  f"{100 * growth:.1f} % over the last half", f"< {NORM_TOLERANCE:g} for every λ",
                  all(d < NORM_TOLERANCE for d in devs)),
            Claim("the angle to the SVM grows with λ (and shrinks toward 0 as λ → 0)",
                  "angle = " + fmt(angles, "{:.3g}") + f"° at λ = {fmt(lams, '{:g}')}", "increasing in λ",
                  len(angles) > 1 and all(b > a for a, b in zip(angles, angles[1:]))),
        ]

    # -- 4. mini-batches ---------------------------------------------------------------------------
    for i, (g, lab, c) in enumerate(roles):
        if g != "batch size":
            continue
        cos = series(frame, lab, "one_minus_cos")
        metrics[f"one_minus_cos_t100_B{c.batch_size}"] = float(cos[cos.index >= RATE_FROM].iloc[0])
        metrics[f"one_minus_cos_end_B{c.batch_size}"] = float(cos.iloc[-1])
    b_roles = [(lab, c.batch_size) for g, lab, c in roles if g == "batch size"]
    if b_roles:
        lab, b = min(b_roles, key=lambda r: r[1])
        start, end = metrics[f"one_minus_cos_t100_B{b}"], metrics[f"one_minus_cos_end_B{b}"]
        claims.append(Claim("mini-batch SGD (the smallest B) keeps the bias: its direction also converges toward the SVM",
                            f"B = {b}: 1 − cos {start:.3g} → {end:.3g} (GD: {metrics['one_minus_cos_end_s0']:.3g})",
                            "1 − cos(end) < 1 − cos(1e2)", lab not in diverged and end < start))

    frames = {"history": frame, "picture": pic, "lambda_path": lambda_path(data, svm)}
    return Result(metrics, claims, frames, {"ensemble": ens, "svm": svm, "roles": roles})


def lambda_path(data: Dataset, svm: mg.SVM, lambdas=None) -> pd.DataFrame:
    """Angle to the SVM and norm of the regularized minimizer over λ (Newton; no training)."""
    if not svm.separable:
        return pd.DataFrame(columns=["lambda", "angle_deg", "norm"])
    lambdas = np.logspace(-12, 0, 25) if lambdas is None else lambdas
    rows = []
    for lam in lambdas:
        w = regularized_minimizer(data.x_train, data.y_train, float(lam))
        rows.append({"lambda": float(lam), "angle_deg": float(mg.angle_degrees(w, svm.w)[0]), "norm": float(w.norm())})
    return pd.DataFrame(rows)


def explore(cfg: RunConfig, on_eval=None, stop=None) -> Run:
    """The explorer's run: one config, with the margin probe against its data's SVM."""
    data = _dataset(cfg)
    _check_binary(data)
    return train(with_evals(cfg), data=data, probes=[MarginProbe(reference(data))], on_eval=on_eval, stop=stop,
                 progress=False)


# ---------------------------------------------------------------------------------------------
# charts


def _log_x(frame=None, title="step t"):
    domain = [float(frame.step.min()), float(frame.step.max())] if frame is not None and len(frame) else alt.Undefined
    return alt.X("step:Q", scale=alt.Scale(type="log", domain=domain, nice=False), title=title)


def chart(frame: pd.DataFrame, config: RunConfig | None = None):
    """Over log-scaled steps: 1 − cos(w, w_SVM), (1 − cos)·log²t, ‖w‖, the normalized margin / SVM margin
    and the training loss, one line per run (coloured by label when there is one)."""
    f = frame.copy()
    if "rate" not in set(f.metric):
        cos = f[(f.metric == "one_minus_cos") & (f.step > 1)]
        f = pd.concat([f, cos.assign(metric="rate", value=cos.value * np.log(cos.step.astype(float)) ** 2)])
    if "diverged_at" in f.columns:
        d = pd.to_numeric(f["diverged_at"], errors="coerce")
        f = f[d.isna() | (f.step <= d)]
    f = thin(f[(f.step >= 1) & np.isfinite(f.value.astype(float))])
    color_field = "label" if "label" in f.columns and f["label"].nunique() > 1 else "run"
    color = alt.Color(f"{color_field}:N", title=None if color_field == "label" else "run")
    opacity = (alt.condition("datum.current === false", alt.value(0.3), alt.value(1.0))
               if "current" in f.columns else alt.value(1.0))
    detail = [alt.Detail(c) for c in ("run:N", "label:N") if c.split(":")[0] in f.columns and c.split(":")[0] != color_field]

    def panel(metric, title, log_y=True, rule=None):
        rows = f[f.metric == metric]
        if log_y:
            rows = rows[rows.value > 0]
        scale = alt.Scale(type="log") if log_y else alt.Scale(zero=False)
        line = alt.Chart(rows).mark_line().encode(
            x=_log_x(f), y=alt.Y("value:Q", scale=scale, title=title), color=color, detail=detail, opacity=opacity,
            tooltip=[f"{color_field}:N", "step:Q", alt.Tooltip("value:Q", format=".4g")])
        if rule is not None:
            line = line + alt.Chart(pd.DataFrame({"y": [rule]})).mark_rule(strokeDash=[5, 4], color="gray").encode(y="y:Q")
        return line.properties(width=240, height=170, title=title)

    panels = []
    if (f.metric == "one_minus_cos").any():
        panels += [panel("one_minus_cos", "1 − cos(w, w_SVM)"), panel("rate", "(1 − cos)·log²t (flat: 1/log t rate)"),
                   panel("margin_ratio", "normalized margin / SVM margin", log_y=False, rule=1.0)]
    else:
        panels.append(panel("normalized_margin", "normalized margin (no SVM: not separable)", log_y=False, rule=0.0))
    panels += [panel("norm", "norm of w (grows like log t)"), panel("train_loss", "training loss")]
    return alt.concat(*panels, columns=3).resolve_scale(color="shared")


def boundary_chart(pic: dict, count: int = 5):
    """The 2-D data, GD's decision boundary ⟨w_t, x⟩ = 0 at log-spaced steps, and the SVM's (dashed)."""
    data, svm, run = pic["data"], pic["svm"], pic["run"]
    x, y = data.x_train.numpy(), data.y_train[:, 0].numpy()
    points = pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "class": np.where(y > 0, "+1", "−1")})
    if svm.separable:
        points["support"] = [i in set(svm.support) for i in range(len(points))]
    hist = run.history
    w = hist[hist.metric.isin(["w0", "w1"])].pivot_table(index="step", columns="metric", values="value")
    steps = log_steps(w.index[w.index >= 1], count)
    radius = float(np.abs(x).max()) * 1.05
    lines = []
    for t in steps:
        v = w.loc[t].to_numpy()
        u = np.array([-v[1], v[0]]) / np.linalg.norm(v)
        lines += [{"t": f"t = {int(t)}", "step": int(t), "x1": s * radius * u[0], "x2": s * radius * u[1]} for s in (-1, 1)]
    lines = pd.DataFrame(lines)
    scale = alt.Scale(domain=[-radius, radius])
    base = alt.Chart(points).encode(x=alt.X("x1:Q", scale=scale, title="x₁"), y=alt.Y("x2:Q", scale=scale, title="x₂"))
    layers = [base.mark_point(filled=True, size=45).encode(
        color=alt.Color("class:N", scale=alt.Scale(domain=["+1", "−1"], range=["#1f77b4", "#d62728"]), title="label"),
        shape=alt.Shape("class:N", legend=None))]
    if svm.separable:
        layers.append(alt.Chart(points[points.support]).mark_point(size=160, color="black").encode(x="x1:Q", y="x2:Q"))
        u = np.array([-float(svm.w[1]), float(svm.w[0])]) / float(svm.w.norm())
        ref = pd.DataFrame({"x1": [-radius * u[0], radius * u[0]], "x2": [-radius * u[1], radius * u[1]]})
        layers.append(alt.Chart(ref).mark_line(strokeDash=[6, 4], color="black", strokeWidth=2).encode(x="x1:Q", y="x2:Q"))
    layers.append(alt.Chart(lines).mark_line(strokeWidth=1.5).encode(
        x="x1:Q", y="x2:Q", detail="t:N",
        color=alt.Color("step:Q", scale=alt.Scale(type="log", scheme="viridis"), title="GD step t")))
    title = ("GD's boundary rotates toward the SVM's (dashed; circled: support vectors)" if svm.separable
             else "not separable: no SVM boundary")
    return alt.layer(*layers).resolve_scale(color="independent").properties(width=320, height=320, title=title)


def sweep_chart(result: Result, early: int = 300):
    """Step sizes: the training loss over the first steps (large η: non-monotone) and 1 − cos over log t;
    weight decay: ‖w‖ over log t (bounded for λ > 0) and the minimizer's angle to the SVM over λ;
    batch sizes: 1 − cos over log t."""
    frame, ens, roles = result.frames["history"], result.runs["ensemble"], result.runs["roles"]
    f = thin(frame[(frame.step >= 1)])
    first = roles[0][1]
    pick = lambda group: f[(f.group == group) | (f.label == first)]
    color = alt.Color("label:N", title=None)

    def over_t(rows, metric, title, log_y=True):
        rows = rows[(rows.metric == metric) & ((rows.value > 0) if log_y else True)]
        return alt.Chart(rows).mark_line().encode(
            x=_log_x(f), y=alt.Y("value:Q", scale=alt.Scale(type="log") if log_y else alt.Scale(zero=False), title=title),
            color=color, tooltip=["label:N", "step:Q", alt.Tooltip("value:Q", format=".4g")]).properties(
            width=240, height=170, title=title)

    separable = (frame.metric == "one_minus_cos").any()
    direction, direction_title, log_dir = (("one_minus_cos", "1 − cos(w, w_SVM)", True) if separable
                                           else ("normalized_margin", "normalized margin (not separable)", False))
    panels = []
    eta = [(i, lab) for i, (g, lab, _) in enumerate(roles) if g == "step size" or i == 0]
    if len(eta) > 1:
        n = min(early, ens.step_losses.shape[0])
        losses = pd.DataFrame([{"step": t + 1, "label": lab, "value": float(ens.step_losses[t, i])}
                               for i, lab in eta for t in range(n)])
        losses = losses[losses.value > 0]
        panels.append(alt.Chart(losses).mark_line(strokeWidth=1).encode(
            x=alt.X("step:Q", title="step t"), y=alt.Y("value:Q", scale=alt.Scale(type="log"), title="training loss"),
            color=color).properties(width=240, height=170, title=f"step sizes: loss, first {n} steps"))
        panels.append(over_t(pick("step size"), direction, "step sizes: " + direction_title, log_dir))
    if (frame.group == "weight decay").any():
        panels.append(over_t(pick("weight decay"), "norm", "weight decay: norm of w"))
        path = result.frames.get("lambda_path")
        if path is not None and len(path):
            trained = pd.DataFrame([{"lambda": c.weight_decay,
                                     "angle_deg": float(mg.angle_degrees(ens.params["W0"][i, 0], result.runs["svm"].w)[0])}
                                    for i, (g, _, c) in enumerate(roles) if g == "weight decay"])
            line = alt.Chart(path).mark_line(color="gray").encode(
                x=alt.X("lambda:Q", scale=alt.Scale(type="log"), title="weight decay λ"),
                y=alt.Y("angle_deg:Q", scale=alt.Scale(type="log"), title="angle to the SVM (degrees)"))
            dots = alt.Chart(trained).mark_point(filled=True, size=70, color="black").encode(x="lambda:Q", y="angle_deg:Q")
            panels.append((line + dots).properties(width=240, height=170, title="regularized minimizer vs λ (dots: trained)"))
    if (frame.group == "batch size").any():
        panels.append(over_t(pick("batch size"), direction, "batch sizes: " + direction_title, log_dir))
    return alt.concat(*panels, columns=3).resolve_scale(color="independent")

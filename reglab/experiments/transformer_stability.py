"""Small-scale proxies for transformer training instabilities (Wortsman et al. 2023).

A 2-block pre-LayerNorm decoder-only transformer (no biases, AdamW β = (0.9, 0.95), linear warm-up then a
cosine schedule, weight decay independent of η, z-loss) learns the next token of a lag-2 Markov chain
(`lag2_markov`: the next token depends on the token two back only, so the model must attend two positions
back; the chain's entropy rate is the best possible loss). A log-spaced step-size sweep × seeds trains as one
batched ensemble per qk-layernorm setting; a probe records, on a fixed batch of training windows, the largest
attention logit |q·k|/√d_head over blocks, heads and positions, each head's attention from the last position
to every lag, and the mean output logit and log Z of the output softmax.

Claims: (1) without qk-layernorm, a large η makes the attention logits grow by orders of magnitude and the
loss stall far above the entropy rate, while with qk-layernorm the same η trains to within 0.1 of the best
loss; (2) LR sensitivity — the mean over the sweep of min(final loss, initial loss) − the sweep's best loss —
is lower with qk-layernorm; (3) without weight decay the output logits drift (the mean output logit walks
far from 0) and z-loss prevents it; the third is reported as informational when it does not appear.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import altair as alt
import numpy as np
import pandas as pd
import torch

from .. import charts
from ..claims import Rule, above, at_most, below, every_seed, finite, fmt_number, key, per_seed, verdict
from ..config import CONSTRAINTS, Interval, ListOf, OneOf, RunConfig, validate
from ..data import make_dataset
from ..engine import train
from ..theme import DEVICE, NON_NEGATIVE, POSITIVE, SEED, SEEDS, Exploration, Param, Theme

PROBE_BATCH = 64  # training windows the attention probe looks at
EVALS = 10  # evaluations per run
SMOOTH = 25  # steps in the moving average of the per-step training loss (loss curves)
LOGIT_BLOWUP = 1e4  # "attention logits grow without bound": the largest |logit| over training exceeds this
STALL_GAP = 0.5  # "the loss stalls far above the entropy rate": final loss − entropy rate ≥ this (nats)
NEAR_BEST = 0.1  # "trains to within 0.1 of the best loss": final loss − the sweep's best ≤ this (nats)
DRIFT = 10.0  # "output logits diverge": the mean output logit moves this far from 0

LOGITS_BLOW_UP = every_seed(above(LOGIT_BLOWUP))  # largest |attention logit| over training, no qk-layernorm
LOSS_STALLS = every_seed(Rule(f"≥ {STALL_GAP:g}", lambda v: (x := finite(v)) is not None and x >= STALL_GAP))
QK_TRAINS = every_seed(at_most(NEAR_BEST))  # final loss − the sweep's best, with qk-layernorm
LESS_SENSITIVE = every_seed(below(1.0))  # LR sensitivity with qk-layernorm ÷ without
DRIFT_PREVENTED = Rule(f"drift without z-loss ≥ {DRIFT:g}, with z-loss < {DRIFT:g}",
                       lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and None not in (a := [finite(x) for x in v])
                       and a[0] >= DRIFT and a[1] < DRIFT)  # [largest |mean output logit| without z-loss, with z-loss]

ETAS = [0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
QK = {False: "plain attention", True: "qk-layernorm"}

THEME = Theme("11_transformer_stability", {
    "step_size": Param(0.3, POSITIVE, "large η: claim 1 checks every swept η ≥ it; the loss curves and the explorer "
                       "start here", log=True, slider=(1e-4, 3)),
    "step_sizes": Param(ETAS, ListOf(POSITIVE, at_least=2), "the η sweep (log-spaced; trained with and without "
                        "qk-layernorm)"),
    "weight_decay": Param(1e-4, NON_NEGATIVE, "weight decay λ, independent of η: w ← w − λ·w per step (× schedule)",
                          off=(0.0, "λ = 0"), log=True, slider=(1e-6, 1e-2)),
    "z_loss": Param(1e-4, NON_NEGATIVE, "z-loss coefficient (× log² Z of the output softmax)", off=(0.0, "off"),
                    log=True, slider=(1e-6, 1e-1)),
    "warmup_steps": Param(100, Interval(int, 0, 1_000_000), "linear warm-up steps (then cosine decay to 0)",
                          label="warm-up steps", slider=(0, 300)),
    "steps": Param(1000, Interval(int, 2, 1_000_000), "training steps", slider=(100, 2000)),
    "batch_size": Param(32, CONSTRAINTS["batch_size"], "batch size B (None: full batch)"),
    "width": Param(16, Interval(int, 2, 1024), "width d of the residual stream (heads of d / heads each)"),
    "heads": Param(2, Interval(int, 1, 64), "attention heads"),
    "depth": Param(2, Interval(int, 1, 4), "transformer blocks"),
    "vocab": Param(16, Interval(int, 2, 4096), "tokens of the Markov chain", field="data_options.vocab"),
    "context": Param(8, Interval(int, 3, 256), "window length (tokens the model sees)", field="data_options.context"),
    "alpha": Param(0.1, Interval(float, 0, 100, closed="right"), "Dirichlet α of the transition rows (small: sparse, "
                   "predictable)", field="data_options.alpha", log=True),
    "n_train": Param(4000, Interval(int, 2, 10**7), "training windows"),
    "n_test": Param(1000, Interval(int, 1, 10**7), "held-out windows (the final loss is measured on them)"),
    "drift_step_sizes": Param([0.3, 1.0], ListOf(POSITIVE, at_least=0), "η of the output-logit runs "
                              "(qk-layernorm, λ = 0, z-loss off and on; seed `seed`; [] skips them)"),
    "seeds": SEEDS, "seed": SEED, "device": DEVICE,
})


def config(**values) -> RunConfig:
    """One member of the sweep (any declared parameter overrides the defaults): Wortsman et al.'s recipe at
    laptop scale — pre-LN blocks without biases, AdamW (0.9, 0.95) with ε 1e-8, warm-up then cosine to 0,
    decay of matrices and embeddings independent of η, z-loss, qk-layernorm off."""
    p = SimpleNamespace(**{**THEME.defaults(), **values})
    return RunConfig(data="lag2_markov", n_train=p.n_train, data_options={
                         "vocab": p.vocab, "context": p.context, "alpha": float(p.alpha), "n_test": p.n_test},
                     model="transformer", width=p.width, depth=p.depth, heads=p.heads, activation="gelu", bias=False,
                     qk_layernorm=bool(values.get("qk_layernorm", False)), z_loss=float(p.z_loss), loss="ce",
                     optimizer="adamw", betas=(0.9, 0.95), step_size=float(p.step_size), batch_size=p.batch_size,
                     weight_decay=float(p.weight_decay), decay="independent", lr_schedule="cosine",
                     warmup_steps=min(p.warmup_steps, p.steps), steps=p.steps, eval_every=max(1, p.steps // EVALS),
                     seed=p.seed, device=p.device)


class AttentionProbe:
    """`probe(state) -> {metric: [M]}` on the first PROBE_BATCH training windows: `max_attn_logit` (the largest
    |q·k|/√d_head over blocks, heads, query and key positions), `attn{b}.{h}_back{k}` (the attention of block b's
    head h from the last position to the token k back from the predicted one: back1 is the last token, back2 the
    one the next token depends on; averaged over the windows), `output_logit_mean` (the
    mean output logit) and `log_z` (the mean log Z of the output softmax)."""

    def __init__(self, n: int = PROBE_BATCH):
        self.n = n

    def __repr__(self) -> str:
        return f"AttentionProbe(n={self.n})"

    def __call__(self, state) -> dict:
        model, params, x = state.model, state.params, state.data.x_train[: self.n]
        out = {}
        with torch.no_grad():
            scores = model.attention_logits(params, x)  # per block [M, B, H, T, T], masked entries −inf
            finite_abs = [s.nan_to_num(nan=math.inf, neginf=0.0).abs() for s in scores]
            out["max_attn_logit"] = torch.stack([s.flatten(1).max(1).values for s in finite_abs]).max(0).values
            for b, s in enumerate(scores):
                last = torch.softmax(s[..., -1, :], dim=-1).mean(1)  # [M, H, T]: from the last position
                T = last.shape[-1]
                for h in range(last.shape[1]):
                    for k in range(1, T + 1):
                        out[f"attn{b}.{h}_back{k}"] = last[:, h, T - k]
            logits = model(params, x)  # [M, B, vocab]
            out["output_logit_mean"] = logits.mean((1, 2))
            out["log_z"] = torch.logsumexp(logits, -1).mean(1)
        return out


def explore(config: RunConfig, on_eval=None, stop=None, start=None):
    """The explorer's run: one config with the attention probe."""
    return train(config, probes=[AttentionProbe()], on_eval=on_eval, stop=stop, start=start, progress=False)


def lr_sensitivity(final: list, initial: list) -> float | None:
    """Wortsman et al.'s LR sensitivity of one sweep: the mean over η of min(final loss, initial loss) − the
    best final loss of the sweep; a diverged run (no final loss) counts as its initial loss."""
    if not final or None in (initial := [finite(i) for i in initial]):
        return None
    capped = [i if (x := finite(f)) is None else min(x, i) for f, i in zip(final, initial)]
    return float(np.mean(capped) - min(capped))


def smoothed_losses(run, window: int = SMOOTH, every: int = 5) -> pd.DataFrame:
    """Each member's per-step training-batch loss as a moving average over `window` steps, every `every` steps."""
    losses = pd.DataFrame(run.step_losses.numpy()).rolling(window, min_periods=1).mean().to_numpy()
    steps = np.array(sorted({*range(every, len(losses) + 1, every), len(losses)})) if len(losses) else np.array([], int)
    kept = losses[steps - 1] if len(steps) else np.zeros((0, losses.shape[1]))
    frame = pd.DataFrame({"step": np.repeat(steps, kept.shape[1]), "run": np.tile(np.arange(kept.shape[1]), len(steps)),
                          "value": kept.reshape(-1)})
    return frame.assign(metric="train_batch_loss")


def _sweep(configs: list, data, qk: bool):
    members = train(configs, data=data, probes=[AttentionProbe()], progress=False)
    h = members.history
    largest = h[h.metric == "max_attn_logit"].groupby("run")["value"].max()
    initial = h[(h.metric == "test_loss") & (h.step == 0)].set_index("run")["value"]
    s = members.summary
    sweep = pd.DataFrame({"run": s.run, "step_size": s.step_size, "seed": s.seed, "attention": QK[qk], "qk_layernorm": qk,
                          "test_loss": s.test_loss, "train_loss": s.train_loss, "initial_loss": s.run.map(initial),
                          "max_attn_logit": s.run.map(largest), "diverged_at": s.diverged_at})
    return members, sweep


@THEME.run
def run(p, result) -> None:
    """Train the η sweep × seeds with plain attention and with qk-layernorm (one ensemble each), and the
    output-logit runs; measure final losses, attention logits and output logits; check the claims."""
    etas, seeds = sorted({float(e) for e in p.step_sizes} | {p.step_size}), list(range(p.seed, p.seed + p.seeds))
    base = config(**vars(p))
    data = make_dataset(base.data, base.n_train, base.data_seed, **base.data_options)
    validate(base, n_train=data.n_train)
    entropy = data.info["entropy_rate"]
    m = result.metrics
    m.update(entropy_rate=entropy, bayes_loss=data.info["bayes_loss"])
    runs, sweeps, curves = {}, [], []
    for qk in (False, True):
        configs = [base.replace(qk_layernorm=qk, step_size=e, seed=s) for s in seeds for e in etas]
        with result.timed(f"sweep, {QK[qk]}"):
            runs[qk], sweep = _sweep(configs, data, qk)
        sweeps.append(sweep.assign(run=sweep.run + len(configs) * qk))
        curves.append(smoothed_losses(runs[qk]).assign(run=lambda f: f.run + len(configs) * qk))
        result.runs["plain" if not qk else "qk_layernorm"] = runs[qk]
    sweep = pd.concat(sweeps, ignore_index=True)
    result.frames["sweep"] = sweep
    members = sweep[["run", "step_size", "seed", "attention", "diverged_at"]]
    result.frames["curves"] = pd.concat(curves, ignore_index=True).merge(members, on="run")
    history = pd.concat([charts.tidy(runs[qk]).drop(columns="diverged_at").assign(run=lambda f: f.run + len(sweeps[0]) * qk)
                         for qk in (False, True)], ignore_index=True)
    result.frames["history"] = history.merge(members, on="run")
    at = sweep.set_index(["qk_layernorm", "step_size", "seed"])
    medians = sweep.groupby(["qk_layernorm", "step_size"])[["test_loss", "max_attn_logit"]].median()  # over seeds
    for (qk, e), row in medians.iterrows():
        name = "qk" if qk else "plain"
        m[key("test_loss", attention=name, eta=e)] = finite(row.test_loss)
        m[key("log10_max_attn_logit", attention=name, eta=e)] = finite(np.log10(row.max_attn_logit))

    # (1) at the large step sizes: logits blow up and the loss stalls without qk-layernorm; qk-layernorm trains
    large = [e for e in etas if e >= p.step_size]
    value = lambda qk, e, s, col: finite(at.loc[(qk, e, s)][col])
    best = {s: min((v for qk in (False, True) for e in etas if (v := value(qk, e, s, "test_loss")) is not None),
                   default=None) for s in seeds}  # the sweep's best final loss, per seed

    def worst(measure, pick):  # per seed, the least favourable value over the large step sizes
        per = [[measure(e, s) for e in large] for s in seeds]
        return [None if None in vs else pick(vs) for vs in per]

    logits_plain = worst(lambda e, s: value(False, e, s, "max_attn_logit"), min)
    logits_qk = worst(lambda e, s: value(True, e, s, "max_attn_logit"), max)
    stall = worst(lambda e, s: None if (v := value(False, e, s, "test_loss")) is None else v - entropy, min)
    near = worst(lambda e, s: None if (v := value(True, e, s, "test_loss")) is None or best[s] is None
                 else v - best[s], max)
    gone = lambda qk: {f"{QK[qk]}, η = {e:g}, seed {s}": d for e in large for s in seeds
                       if not pd.isna(d := at.loc[(qk, e, s)].diverged_at)}
    m.update(per_seed("best_loss", list(best.values()), seeds) | per_seed("stall_gap_plain", stall, seeds)
             | per_seed("gap_to_best_qk", near, seeds))
    eta = f"η ∈ {{{', '.join(f'{e:g}' for e in large)}}}"
    losses = lambda qk: "; ".join(f"η = {e:g}: {fmt_number([value(qk, e, s, 'test_loss') for s in seeds], '.3f')}"
                                  for e in large)
    result.claims += [
        verdict("attention_logits_blow_up", f"Without qk-layernorm, at {eta} the attention logits grow without bound: "
                f"the largest |attention logit| during training exceeds {LOGIT_BLOWUP:.0e} (per seed, the smallest over "
                "those η)", logits_plain, LOGITS_BLOW_UP, f"with qk-layernorm at most {fmt_number(logits_qk, '.3g')}",
                gone(False)),
        verdict("loss_stalls_without_qk_layernorm", f"Without qk-layernorm, at {eta} the loss stalls far above the "
                f"entropy rate (final held-out loss − entropy rate ≥ {STALL_GAP:g} nats, per seed, the smallest over "
                "those η)", stall, LOSS_STALLS, f"entropy rate {entropy:.3f}; final losses {losses(False)}", gone(False)),
        verdict("qk_layernorm_trains", f"With qk-layernorm, the same {eta} train to within {NEAR_BEST:g} nats of the best "
                "loss (final held-out loss − the sweep's best, per seed, the largest over those η)", near, QK_TRAINS,
                f"best loss per seed {fmt_number(list(best.values()), '.3f')}; final losses {losses(True)}", gone(True)),
    ]

    # (2) LR sensitivity
    sens = {}
    for qk in (False, True):
        sens[qk] = [lr_sensitivity([finite(at.loc[(qk, e, s)].test_loss) for e in etas],
                                   [finite(at.loc[(qk, e, s)].initial_loss) for e in etas]) for s in seeds]
        m.update(per_seed(f"lr_sensitivity_{'qk' if qk else 'plain'}", sens[qk], seeds))
    ratio = [None if a is None or b is None or b <= 0 else a / b for a, b in zip(sens[True], sens[False])]
    m.update(per_seed("lr_sensitivity_ratio", ratio, seeds))
    diverged = {f"{QK[qk]}, η = {e:g}": int(sweep[(sweep.qk_layernorm == qk) & (sweep.step_size == e)].diverged_at.notna().sum())
                for qk in (False, True) for e in etas}
    diverged = ", ".join(f"{k} ({v} seed{'s' if v > 1 else ''})" for k, v in diverged.items() if v)
    result.claims.append(verdict(
        "lr_sensitivity_lower_with_qk_layernorm", "LR sensitivity (mean over the η sweep of min(final, initial loss) − "
        "the sweep's best) is lower with qk-layernorm (its ratio to plain attention's, per seed)", ratio, LESS_SENSITIVE,
        f"LR sensitivity per seed: plain {fmt_number(sens[False], '.3f')}; qk-layernorm {fmt_number(sens[True], '.3f')}"
        + (f"; diverged runs count as their initial loss: {diverged}" if diverged else "")))

    # (3) output-logit drift without weight decay, and z-loss
    _drift(p, base, data, seeds[0], result)

    result.frames["attention"] = _attention_frame(result.frames["history"], p.step_size)
    start = base.replace(seed=p.seed)
    first = result.frames["history"]
    first = first[(first.step_size == p.step_size) & (first.seed == p.seed) & (first.attention == QK[False])]
    result.exploration = Exploration(start, chart, run=explore, initial=first.assign(run=0).reset_index(drop=True),
                                     controls={"qk_layernorm": QK_CONTROL, **{n: THEME.params[n] for n in
                                               ("z_loss", "warmup_steps", "steps")}},
                                     common=("step_size", "batch_size", "weight_decay"), presets=PRESETS,
                                     learned=learned)


QK_CONTROL = Param(False, OneOf((False, True)), "LayerNorm on each head's queries and keys", label="qk-layernorm")


def _drift(p, base, data, seed, result) -> None:
    """Output-logit runs: qk-layernorm, λ = 0, z-loss off and at p.z_loss, at each η of drift_step_sizes."""
    etas = sorted({float(e) for e in p.drift_step_sizes})
    if not etas:
        result.frames["drift"] = pd.DataFrame(columns=["run", "step", "metric", "value", "step_size", "z_loss"])
        return
    frames, m, drift = [], result.metrics, {}
    for z in sorted({0.0, float(p.z_loss)}):
        configs = [base.replace(qk_layernorm=True, weight_decay=0.0, z_loss=z, step_size=e, seed=seed) for e in etas]
        with result.timed("output-logit runs"):
            r = train(configs, data=data, probes=[AttentionProbe()], progress=False)
        h = charts.tidy(r).merge(r.summary[["run", "step_size"]], on="run").assign(z_loss=z)
        frames.append(h.assign(run=h.run + len(etas) * len(frames)))
        means = h[h.metric == "output_logit_mean"]
        for e in etas:
            values = means[means.step_size == e].value
            largest = finite(values.abs().max()) if values.notna().any() else None
            m[key("output_logit_drift", z_loss=z, eta=e)] = largest
            m[key("output_logit_mean_end", z_loss=z, eta=e)] = finite(values.iloc[-1]) if len(values) else None
            m[key("test_loss_no_decay", z_loss=z, eta=e)] = finite(r.summary.test_loss[etas.index(e)])
        drift[z] = max((m[key("output_logit_drift", z_loss=z, eta=e)] or 0.0) for e in etas)
    result.frames["drift"] = pd.concat(frames, ignore_index=True)
    value = [drift[0.0], drift[float(p.z_loss)]] if p.z_loss > 0 else [drift[0.0], None]
    held = DRIFT_PREVENTED(value)
    ends = "; ".join(f"η = {e:g}: {fmt_number(m[key('output_logit_mean_end', z_loss=0.0, eta=e)], '+.2f')}" for e in etas)
    loss = lambda z: fmt_number([m[key("test_loss_no_decay", z_loss=z, eta=e)] for e in etas], ".3f")
    note = (f"largest |mean output logit| over training at η ∈ {{{', '.join(f'{e:g}' for e in etas)}}}, seed {seed}; "
            f"at the end without z-loss: {ends}; final loss without z-loss {loss(0.0)}"
            + (f", with z-loss {loss(float(p.z_loss))}" if p.z_loss > 0 else "; z_loss = 0: nothing to compare"))
    if not held:
        note = (f"Did not reproduce here ({p.steps} steps, width {p.width}; the paper's runs are 1e5 steps of models of "
                f"1e7–1e9 parameters, where the drift has far longer to build up): " + note)
    result.claims.append(verdict(
        "z_loss_prevents_output_logit_drift", f"Without weight decay the output logits drift (the mean output logit "
        f"moves ≥ {DRIFT:g} from 0) and z-loss prevents it (qk-layernorm, λ = 0; [without, with] z-loss)", value,
        DRIFT_PREVENTED, note, informational=not held))


def _attention_frame(history: pd.DataFrame, step_size: float) -> pd.DataFrame:
    """The attention from the last position to every lag at the end of training, per block and head, at η =
    step_size, averaged over seeds (runs that diverged drop out)."""
    h = history[(history.step_size == step_size) & history.metric.str.startswith("attn")]
    h = h[h.step == h.step.max()]
    parts = h.metric.str.extract(r"attn(\d+)\.(\d+)_back(\d+)").astype(int)
    h = h.assign(block=parts[0], head=parts[1], back=parts[2])
    out = h.groupby(["attention", "block", "head", "back"], as_index=False)["value"].mean()
    return out.assign(head=lambda f: "block " + f.block.astype(str) + ", head " + f["head"].astype(str))


# ---------------------------------------------------------------------------------------------
# charts


def sensitivity_chart(sweep: pd.DataFrame, best: float, step_size: float | None = None):
    """Left: final held-out loss against η with and without qk-layernorm (dots: seeds; lines: medians), the
    entropy rate (the best possible loss) dashed. Right: the largest |attention logit| over training against η (log–log)."""
    loss = charts.layer(charts.against(sweep, "step_size", "test_loss", color="attention", log_x=True,
                                       title="final loss vs step size", x_title="step size η",
                                       y_title="held-out loss (nats)", tooltip=["seed"]),
                        charts.reference_rule(best, f"entropy rate {best:.3f}"))
    logits = charts.layer(charts.against(sweep, "step_size", "max_attn_logit", color="attention", log_x=True, log_y=True,
                                         title="largest attention logit during training", x_title="step size η",
                                         y_title="max |q·k| / √d_head", tooltip=["seed"]),
                          charts.reference_rule(LOGIT_BLOWUP, f"{LOGIT_BLOWUP:.0e}"))
    if step_size is not None:
        loss, logits = (charts.layer(c, charts.vertical_rule(step_size, "")) for c in (loss, logits))
    return charts.row(loss, logits)


def curves_chart(curves: pd.DataFrame, history: pd.DataFrame, step_size: float, best: float):
    """At η = step_size: the training-batch loss (moving average) and the largest attention logit over
    training, plain attention vs qk-layernorm, one line per seed."""
    c = curves[curves.step_size == step_size].assign(label=lambda f: f.attention + ", seed " + f.seed.astype(str))
    h = history[(history.step_size == step_size) & (history.metric == "max_attn_logit")]
    h = h.assign(label=lambda f: f.attention + ", seed " + f.seed.astype(str))
    if c.empty:
        return charts.empty(f"η = {step_size:g} is not in the sweep.")
    return charts.row(
        charts.layer(charts.curves(c, "train_batch_loss", color="label", title=f"training loss at η = {step_size:g}",
                                   y_title=f"batch loss ({SMOOTH}-step average)"),
                     charts.reference_rule(best, "entropy rate")),
        charts.curves(h, "max_attn_logit", color="label", log_y=True, title=f"largest attention logit at η = {step_size:g}",
                      y_title="max |q·k| / √d_head"))


def attention_chart(attention: pd.DataFrame, step_size: float):
    """Where the last position attends at the end (η = step_size, mean over seeds): one cell per head and lag."""
    if attention.empty:
        return charts.empty(f"No finished run at η = {step_size:g}.")
    maps = [charts.heatmap(attention[attention.attention == a], "back", "head", "value", fmt=".2f",
                           title=f"{a}: attention from the last token, η = {step_size:g}", width=300, height=130)
            for a in QK.values() if (attention.attention == a).any()]
    return charts.row(*maps)


def drift_chart(drift: pd.DataFrame):
    """Mean output logit over training without weight decay, z-loss off and on, one line per η."""
    d = drift[drift.metric == "output_logit_mean"] if len(drift) else drift
    if d.empty:
        return charts.empty("No output-logit runs (drift_step_sizes = []).")
    d = d.assign(label=lambda f: "η = " + f.step_size.map("{:g}".format) + ", z-loss " + f.z_loss.map("{:g}".format))
    return charts.layer(charts.curves(d, "output_logit_mean", color="label", y_title="mean output logit",
                                      title="output logits without weight decay (qk-layernorm)", width=420),
                        charts.reference_rule(0.0, "0"))


def _entropy_rate(config: RunConfig | None) -> float | None:
    """The best possible loss of the config's Markov chain (make_dataset memoizes the data)."""
    if config is None or config.data != "lag2_markov":
        return None
    return float(make_dataset(config.data, config.n_train, config.data_seed, **config.data_options).info["entropy_rate"])


def chart(frame: pd.DataFrame, config: RunConfig | None = None):
    """The explorer's view: training and held-out loss over training against the entropy rate (the best
    possible loss), and the output logits: their mean and log Z of the output softmax (z-loss pulls log Z
    towards 0; without weight decay the mean may drift)."""
    frame = charts.tidy(frame)
    loss = charts.curves(frame, ["train_loss", "test_loss"], title="loss", y_title="cross-entropy (nats)", width=300)
    best = _entropy_rate(config)
    if best is not None:
        loss = charts.layer(loss, charts.reference_rule(best, f"entropy rate {best:.3f}"))
    names = {"output_logit_mean": "mean output logit", "log_z": "log Z"}
    outputs = frame[frame.metric.isin(list(names))].assign(metric=lambda f: f.metric.map(names))
    logits = charts.layer(charts.curves(outputs, list(names.values()), title="output logits", y_title="nats", width=300),
                          charts.reference_rule(0.0, "0"))
    return charts.row(loss, logits).resolve_scale(color="independent")  # train/test there, the two logit series here


def _current(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the run the controls describe (in compare mode the kept runs are not current)."""
    if "current" in frame.columns:
        frame = frame[frame["current"].fillna(True).astype(bool)]
    return frame[frame.run == frame.run.min()] if len(frame) else frame


WIDE = 190  # px per panel of the learned view: three panels and the heads' legend in the explorer's 940 px


def learned(frame: pd.DataFrame, config: RunConfig | None = None):
    """What the attention learned: where each head (every block) attends from the last position at the latest
    evaluation, one cell per token back (the next token depends on the one 2 back, outlined); the attention
    each head puts two back over training; and the largest attention logit |q·k|/√d_head, which grows
    without bound when training goes unstable."""
    attention = frame[frame.metric.str.match(r"^attn\d+\.\d+_back\d+$")]
    finite = np.isfinite(pd.to_numeric(attention.value, errors="coerce").to_numpy(dtype=float))
    attention = attention[finite]  # a diverged run: its latest finite evaluation
    now = _current(attention)
    if now.empty:
        return charts.empty("the attention of every head appears at the first evaluation")
    now = now[now.step == now.step.max()]
    parts = now.metric.str.extract(r"attn(\d+)\.(\d+)_back(\d+)").astype(int)
    cells = pd.DataFrame({"head": "block " + parts[0].astype(str) + " · head " + parts[1].astype(str),
                          "back": parts[2].to_numpy(), "attention": now.value.astype(float).to_numpy()})
    base = alt.Chart(charts.inline(cells)).encode(
        x=alt.X("back:O", title="tokens back from the predicted one (1: the last)"), y=alt.Y("head:N", title=None))
    heat = alt.layer(
        base.mark_rect().encode(color=alt.Color("attention:Q", scale=alt.Scale(domain=[0, 1], scheme="blues"),
                                                legend=None),  # the values are written in the cells
                                tooltip=["head:N", "back:O", alt.Tooltip("attention:Q", format=".3f")]),
        base.mark_text(fontSize=9).encode(text=alt.Text("attention:Q", format=".2f"),
                                          color=alt.condition("datum.attention > 0.6", alt.value("white"), alt.value("black"))),
        base.transform_filter("datum.back == 2").mark_rect(fill=None, stroke="#c0392b", strokeWidth=2),
    ).properties(width=WIDE, height=24 * cells["head"].nunique(),
                 title=f"what it learned: attention from the last token, step {int(now.step.iloc[0])}")
    two = _current(attention)
    two = two[two.metric.str.endswith("_back2")]
    heads = two.metric.str.extract(r"attn(\d+)\.(\d+)_back2")
    two = two.assign(metric="block " + heads[0] + " · head " + heads[1])
    context = int(parts[2].max())
    over_time = charts.layer(
        charts.curves(two, color="metric", title="attention two back, per head", y_title="attention to token 2 back",
                      width=WIDE),
        charts.reference_rule(1 / context, f"uniform 1/{context}"))
    logit = charts.curves(frame, "max_attn_logit", log_y=True, title="largest attention logit",
                          y_title="max |q·k| / √d_head", width=WIDE)
    return charts.row(heat, over_time, logit).resolve_scale(color="independent")  # not merged with the curves' colours


# the explorer's guided scenarios (controls: step_size, batch_size, weight_decay, qk_layernorm, z_loss, warmup_steps, steps)
PRESETS = {
    "η = 1 without qk-layernorm": {
        "question": "At η = 1 with plain attention, how far do the attention logits grow, and does the loss get near "
                    "the entropy rate?",
        "values": {"step_size": 1.0, "qk_layernorm": False, "weight_decay": 1e-4, "z_loss": 1e-4, "warmup_steps": 100},
        "lock": ("qk_layernorm",)},
    "same η with qk-layernorm": {
        "question": "With LayerNorm on each head's queries and keys at the same η = 1, do the attention logits stay "
                    "bounded, and does a head learn to attend two back?",
        "values": {"step_size": 1.0, "qk_layernorm": True, "weight_decay": 1e-4, "z_loss": 1e-4, "warmup_steps": 100},
        "lock": ("step_size",)},
    "z-loss on, no weight decay": {
        "question": "Without weight decay (λ = 0), does the mean output logit walk away from 0, and does z-loss hold "
                    "log Z near 0 (switch it off to compare)?",
        "values": {"step_size": 1.0, "qk_layernorm": True, "weight_decay": 0.0, "z_loss": 1e-4, "warmup_steps": 100},
        "lock": ("weight_decay", "qk_layernorm")},
    "no warm-up": {
        "question": "At η = 0.3 with plain attention and no warm-up, do the attention logits grow sooner and further "
                    "than with 100 warm-up steps?",
        "values": {"step_size": 0.3, "qk_layernorm": False, "weight_decay": 1e-4, "z_loss": 1e-4, "warmup_steps": 0},
        "lock": ("qk_layernorm",)},
}

"""Weight decay and rare tokens: per-token *training* loss by target-token frequency.

The seed paper reports that as weight decay grows, low-frequency tokens are disproportionately depreciated in
270M–3B language models. Here: Zipfian next-token data (`zipf`), the `bigram` model (embedding of dimension d =
`rank` → linear unembedding, both decayed), AdamW over a λ sweep × seeds in one batched `train` call, and a
plain-SGD + coupled-L2 control. The loss by target token is exact and cheap: the prediction depends only on the
context, so it is −Σ_c N[c, y] log p(y | c) with N the (context, target) pair counts (tokens.pair_token_loss).
"""
from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import altair as alt
import numpy as np
import pandas as pd
import torch

from .. import charts
from ..claims import Rule, above, at_least, below, every_seed, fmt_number, key, per_seed, verdict
from ..config import CONSTRAINTS, Interval, ListOf, OneOf, RunConfig, validate
from ..data import make_dataset
from ..engine import train
from ..metrics.tokens import (DEFAULT_EDGES, absent_tokens, bucket_example_counts, bucket_means, bucket_names,
                              bucket_norms, context_log_probs, frequency_buckets, frequency_rank,
                              logit_singular_values, logit_svd, pair_counts, pair_token_loss, row_norms, token_counts,
                              token_means)
from ..theme import DEVICE, NON_NEGATIVE, POSITIVE, SEED, SEEDS, Exploration, Param, Theme

NAMES = bucket_names(DEFAULT_EDGES)
K = len(NAMES)
RAREST, FREQUENT = K - 1, 0
RISE_FACTOR = 3.0  # the rarest bucket's loss rises ≥ 3× more than the most frequent bucket's
UNIFORM_FRACTION = 0.99  # a train loss ≥ 99 % of log V counts as (near-)uniform predictions
CONTROLS = ("step_size", "batch_size", "weight_decay")
PRESETS = {  # guided scenarios for the explorer, each with the question it asks
    "no weight decay": {"question": "Without decay, do rare and frequent tokens end at the same training loss?",
                        "values": {"weight_decay": 0.0}},
    "strong decay": {"question": "At λ = 1, which frequency bucket's training loss rises most?",
                     "values": {"weight_decay": 1.0}, "lock": ("optimizer",)},
    "flatter Zipf": {"question": "With a flatter frequency law (exponent 0.5), does the rare-token gap shrink?",
                     "values": {"data_options.exponent": 0.5}},
    "plain SGD": {"question": "With SGD and coupled L2 instead of AdamW, where does the decay bite?",
                  "values": {"optimizer": "sgd"}},
}  # the explorer's common controls (no low-rank layer here)

# claim rules (pure; tests probe them at their thresholds)
RISES_MORE = every_seed(Rule(f"≥ {RISE_FACTOR:g}", lambda r: r is not None and r >= RISE_FACTOR))  # ∞ passes
GAP_GROWS = every_seed(above(0.0))  # the smallest increase of the gap between consecutive λ
ROWS_SHRINK_MORE = every_seed(below(1.0))  # norm ratio (λ vs 0) of the rarest bucket ÷ that of the most frequent
SGD_UNIFORM = at_least(UNIFORM_FRACTION)  # the smallest SGD train loss ÷ log V over λ ≥ 0.5

THEME = Theme("08_rare_tokens", {
    "step_size": Param(0.03, POSITIVE, "step size η (of the main optimizer)", log=True, slider=(1e-4, 10)),
    "batch_size": Param(512, CONSTRAINTS["batch_size"], "batch size B (None: full batch)"),
    "weight_decay": Param(1.0, POSITIVE, "weight decay λ (the claims compare it with λ = 0)"),
    "weight_decays": Param([0.0, 0.25, 0.5, 1.0], ListOf(NON_NEGATIVE), "the λ sweep (0 and weight_decay join it)"),
    "rank": Param(32, Interval(int, 1, 4096), "embedding dim d (the logit matrix's rank)", field="width", slider=(2, 128)),
    "steps": Param(300, CONSTRAINTS["steps"], "training steps"),
    "vocab": Param(500, Interval(int, 10, 5000), "vocabulary V", field="data_options.vocab", slider=(50, 2000), step=50),
    "exponent": Param(1.1, Interval(float, 0, 10), "Zipf exponent (of the contexts)", field="data_options.exponent",
                      slider=(0.5, 2), step=0.05),
    "n_train": Param(20_000, CONSTRAINTS["n_train"], "training pairs"),
    "optimizer": Param("adamw", OneOf(("adamw", "sgd")), "optimizer (of the main sweep; sgd: plain SGD with coupled L2)"),
    "sgd_control": Param(True, OneOf((True, False)), "SGD control (the λ sweep with plain SGD + coupled L2, one seed)"),
    "sgd_step_size": Param(1.0, POSITIVE, "step size η of the SGD control"),
    "seeds": SEEDS, "seed": SEED, "device": DEVICE,
})


def config(data_seed=0, eval_every=None, **values) -> RunConfig:
    """One member of the sweep from the theme's parameters (defaults: THEME's); `rank` is the embedding
    dimension d. SGD gets coupled L2 (the gradient of λ/2‖w‖²), AdamW decoupled decay."""
    p = SimpleNamespace(**{**THEME.defaults(), **values})
    return RunConfig(data="zipf", n_train=p.n_train, data_seed=data_seed,
                     data_options={"vocab": p.vocab, "exponent": float(p.exponent)},
                     model="bigram", width=int(p.rank), bias=False, loss="ce", optimizer=p.optimizer,
                     decay="coupled" if p.optimizer == "sgd" else "decoupled", step_size=float(p.step_size),
                     batch_size=p.batch_size, weight_decay=float(p.weight_decay), steps=p.steps,
                     eval_every=eval_every or p.steps, seed=p.seed, device=p.device)


class TokenStats:
    """What the per-token metrics need from the data: target counts, frequency ranks, buckets, and the
    (context, target) pair counts of the train and held-out splits."""

    def __init__(self, data):
        self.vocab = int(data.info["vocab"])
        self.counts = token_counts(data.y_train, self.vocab)
        self.rank = frequency_rank(self.counts)
        self.buckets = frequency_buckets(self.counts, DEFAULT_EDGES)
        self.pairs = {split: pair_counts(x, y, self.vocab) for split, x, y in
                      (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)) if len(x)}

    def probe(self):
        """A TrainState probe: train/test loss per bucket, mean unembedding row norm per bucket, and the
        effective rank of the logit matrix. Buckets without examples are absent, not NaN."""
        def probe(state) -> dict:
            out, logp = {}, context_log_probs(state.model, state.params, self.vocab)
            for split, pairs in self.pairs.items():
                means = bucket_means(*pair_token_loss(logp, pairs), self.buckets, K)
                out.update({f"{split}_loss_b{k}": v for k, v in means.items()})
            norms = bucket_norms(row_norms(state.params["unembed"]), self.buckets, K)
            out.update({f"unembed_norm_b{k}": norms[:, k] for k in range(K)})
            s = logit_singular_values(state.params["embed"], state.params["unembed"])
            p = s / s.sum(-1, keepdim=True).clamp_min(1e-30)
            out["logit_erank"] = torch.exp(-(p * torch.log(p.clamp_min(1e-30))).sum(-1))
            return out
        return probe


def explore(config: RunConfig, on_eval=None, stop=None, start=None):
    """The explorer's run: one member with the token probe (SGD gets coupled L2)."""
    config = config.replace(decay="coupled" if config.optimizer == "sgd" else "decoupled")
    data = make_dataset(config.data, config.n_train, config.data_seed, **config.data_options)
    return train(config, data=data, probes=[TokenStats(data).probe()], on_eval=on_eval, stop=stop, start=start, progress=False)


def _rows(members: pd.DataFrame, values: dict, items: dict) -> pd.DataFrame:
    """One row per member × item: `values` are [M, n] arrays, `items` the n items' columns."""
    n = len(next(iter(items.values())))
    frame = pd.DataFrame({"run": np.repeat(members.run.to_numpy(), n), **{c: np.tile(np.asarray(v), len(members))
                          for c, v in items.items()}, **{c: np.asarray(v).reshape(-1) for c, v in values.items()}})
    return members.merge(frame, on="run")


def sweep_frames(run, stats: TokenStats) -> dict:
    """From the final parameters of a sweep: buckets (member × bucket × split), token_loss (present tokens
    only), row_norms (every token, with `norm_rel` to the same seed's λ = 0), spectrum (singular values of
    the logit matrix), logit_top (its leading direction) and the examples per bucket."""
    members = run.summary[["run", "seed", "weight_decay", "diverged_at"]]
    logp = context_log_probs(run.model, run.params, stats.vocab)
    buckets, counts, out = stats.buckets.numpy(), stats.counts.numpy(), {"buckets": []}
    info = {"frequency_rank": stats.rank.numpy(), "count": counts, "bucket": np.array(NAMES)[buckets]}  # per token
    for split, pairs in stats.pairs.items():
        total, count = pair_token_loss(logp, pairs)
        examples = bucket_example_counts(count, stats.buckets, K)
        means = bucket_means(total, count, stats.buckets, K)  # a bucket without examples is absent: no row
        ks = sorted(means)
        out["buckets"].append(_rows(members, {"loss": torch.stack([means[k] for k in ks], 1).cpu().numpy()},
                                    {"bucket": [NAMES[k] for k in ks], "bucket_index": ks,
                                     "examples": [examples[k] for k in ks]}).assign(split=split))
        if split == "train":
            out["examples"] = examples
            t, mean = (v.cpu().numpy() for v in token_means(total, count))
            out["token_loss"] = _rows(members, {"loss": mean}, {"token": t, **{c: v[t] for c, v in info.items()}})
    out["buckets"] = pd.concat(out["buckets"], ignore_index=True)
    norms = _rows(members, {"norm": row_norms(run.params["unembed"]).cpu().numpy()},
                  {"token": np.arange(stats.vocab), **info, "present": counts > 0, "bucket_index": buckets})
    base = norms[norms.weight_decay == 0.0][["seed", "token", "norm"]].rename(columns={"norm": "norm_at_0"})
    norms = out["row_norms"] = norms.merge(base, on=["seed", "token"], how="left")
    norms["norm_rel"] = (norms.norm / norms.norm_at_0).where(norms.norm_at_0 > 0)  # undefined where the λ = 0 row is 0
    left, sv, right = (t.cpu().double().numpy() for t in logit_svd(run.params["embed"], run.params["unembed"]))
    first = sv[:, :1]
    rel = np.divide(sv, first, out=np.zeros_like(sv), where=first > 0)
    out["spectrum"] = _rows(members, {"sigma": sv, "sigma_rel": rel}, {"index": np.arange(1, sv.shape[1] + 1)})
    live, log_freq = first[:, 0] > 0, np.log1p(counts.astype(float))  # the leading direction of a non-zero matrix:
    corr = [abs(np.corrcoef(b, log_freq)[0, 1]) if b.std() > 0 else np.nan for b in right[:, :, 0]]
    out["logit_top"] = members.assign(  # its share of ‖L‖², its |correlation| with log-frequency, its context mean
        top_share=np.where(live, sv[:, 0] ** 2 / (sv ** 2).sum(1).clip(1e-300), np.nan),
        top_vs_log_frequency=np.where(live, corr, np.nan),
        top_context_alignment=np.where(live, abs(left[:, :, 0].sum(1)) / math.sqrt(left.shape[1]), np.nan))
    return out


def _num(v) -> float | None:
    return None if v is None or pd.isna(v) else float(v)


@THEME.run
def run(p, result) -> None:
    """Train the λ sweep × seeds as one ensemble (and the SGD control), measure per-token training losses,
    unembedding norms and the logit spectrum, and check the claims."""
    lams = sorted({float(v) for v in p.weight_decays} | {0.0, p.weight_decay})
    lam_hi, seeds = p.weight_decay, list(range(p.seed, p.seed + p.seeds))
    base = config(**vars(p))
    sgd_base = base.replace(optimizer="sgd", decay="coupled", step_size=p.sgd_step_size)
    data = make_dataset(base.data, base.n_train, base.data_seed, **base.data_options)
    for cfg in ([base, sgd_base] if p.sgd_control else [base]):
        validate(cfg, n_train=data.n_train)
    stats = TokenStats(data)
    configs = [base.replace(weight_decay=lam, seed=s) for s in seeds for lam in lams]
    with result.timed("sweep"):
        sweep = train(configs, data=data, probes=[stats.probe()])
    found, result.runs["sweep"] = sweep_frames(sweep, stats), sweep
    result.frames.update({k: v for k, v in found.items() if k != "examples"})
    result.frames["history"] = history = charts.tidy(sweep).merge(sweep.summary[["run", "weight_decay", "seed"]], on="run")
    result.exploration = Exploration(  # starts from this sweep's member at (λ, seed)
        base.replace(eval_every=max(1, p.steps // 10)), explore_chart, run=explore,
        controls={n: THEME.params[n] for n in ("rank", "optimizer", "exponent", "vocab")},
        initial=history[history.run == configs.index(base)].assign(run=0).reset_index(drop=True), common=CONTROLS,
        presets=PRESETS, learned=learned)

    m = result.metrics
    m["absent_tokens"], m["log_vocab"] = len(absent_tokens(stats.counts)), math.log(stats.vocab)
    m.update({key("train_examples", bucket=NAMES[k]): n for k, n in enumerate(found["examples"])})
    b, top, rn = (found[f][found[f].diverged_at.isna()] for f in ("buckets", "logit_top", "row_norms"))
    index = pd.MultiIndex.from_product([seeds, lams], names=["seed", "weight_decay"])
    loss = {split: b[b.split == split].pivot_table(index=["seed", "weight_decay"], columns="bucket_index", values="loss")
            .reindex(index=index, columns=range(K)) for split in ("train", "test")}
    mean = {split: t.groupby(level="weight_decay").mean() for split, t in loss.items()}
    top = top.groupby("weight_decay")[["top_share", "top_vs_log_frequency"]].mean().reindex(lams)
    for lam in lams:
        m.update({key("train_loss", bucket=NAMES[k], wd=lam): _num(mean["train"].loc[lam, k]) for k in range(K)})
        m.update({key("heldout_loss", bucket=NAMES[k], wd=lam): _num(mean["test"].loc[lam, k]) for k in (FREQUENT, RAREST)})
        m.update({key(f"logit_{c}", wd=lam): _num(top.loc[lam, c]) for c in top.columns})
    m["diverged_members"] = int(sweep.summary.diverged_at.notna().sum())
    gone = [(c, sweep.diverged_step(i)) for i, c in enumerate(configs)]
    ends, checked = (0.0, lam_hi), [lam for lam in lams if lam <= lam_hi]

    def diverged(used) -> dict:  # the members at λ ∈ used that diverged
        return {f"λ = {c.weight_decay:g}, seed {c.seed}": d for c, d in gone if c.weight_decay in used}

    # the rarest bucket's rise from λ = 0 to λ_hi against the most frequent bucket's
    train_loss = loss["train"]
    rise = train_loss.xs(lam_hi, level="weight_decay") - train_loss.xs(0.0, level="weight_decay")
    ratios = [_num(r / q) if q > 0 else math.inf if r > 0 else None  # ∞: only the rarest rose; None: neither (or no row)
              for r, q in zip(rise[RAREST], rise[FREQUENT])]
    m.update({key("rise", bucket=NAMES[k], seed=s): _num(rise.loc[s, k]) for s in seeds for k in (RAREST, FREQUENT)})
    m.update(per_seed("rise_ratio", ratios, seeds))
    pairs = "; ".join(f"{fmt_number(r, '+.2f')} vs {fmt_number(q, '+.2f')}" for r, q in zip(rise[RAREST], rise[FREQUENT]))
    result.claims.append(verdict(
        "rare_loss_rises_more", f"From λ = 0 to λ = {lam_hi:g} the rarest bucket's training loss rises ≥ {RISE_FACTOR:g}× "
        "more than the most frequent bucket's", ratios, RISES_MORE, diverged=diverged(ends),
        note=f"rise({NAMES[RAREST]}) ÷ rise({NAMES[FREQUENT]}) per seed; rises per seed: {pairs}"))

    # the gap (rarest − most frequent) grows with λ up to λ_hi
    gap = train_loss[RAREST] - train_loss[FREQUENT]
    m.update({key("gap", wd=lam, seed=s): _num(g) for (s, lam), g in gap.items()})
    smallest = np.diff(gap.unstack("weight_decay")[checked].loc[seeds].to_numpy(), axis=1).min(axis=1)
    result.claims.append(verdict(
        "gap_grows_with_decay", "The gap (rarest − most frequent bucket's training loss) increases monotonically over "
        f"λ ∈ {{{', '.join(f'{lam:g}' for lam in checked)}}}", [_num(v) if len(checked) > 2 else None for v in smallest],
        GAP_GROWS, diverged=diverged(checked), note="smallest increase between consecutive λ, per seed"
        + ("" if len(checked) > 2 else "; needs at least 3 values of λ in [0, λ] to test")))

    # rare tokens' unembedding rows shrink more (relative to λ = 0) than frequent tokens'
    norm = rn.groupby(["seed", "weight_decay", "bucket_index"]).norm.mean().unstack().reindex(index=index, columns=range(K))
    n0 = norm.xs(0.0, level="weight_decay")
    rel = (norm.xs(lam_hi, level="weight_decay") / n0).where(n0 > 0)  # seeds × buckets
    m.update({key("norm_ratio", bucket=NAMES[k], seed=s): _num(rel.loc[s, k]) for s in seeds for k in (RAREST, FREQUENT)})
    shrink = (rel[RAREST] / rel[FREQUENT]).where(rel[FREQUENT] > 0)
    parts = "; ".join(f"{fmt_number(r, '.2f')} vs {fmt_number(q, '.2f')}" + (" (every row decayed to zero)" if r == q == 0
                      else "") for r, q in zip(rel[RAREST], rel[FREQUENT]))
    result.claims.append(verdict(
        "rare_rows_shrink_more", f"Rare tokens' unembedding rows shrink more than frequent tokens' (mean row norm at "
        f"λ = {lam_hi:g} relative to λ = 0)", [_num(v) for v in shrink], ROWS_SHRINK_MORE, diverged=diverged(ends),
        note=f"ratio({NAMES[RAREST]}) ÷ ratio({NAMES[FREQUENT]}) per seed; norm ratios per seed: {parts}"))

    # the optimizer control: plain SGD with coupled L2, one seed
    if not p.sgd_control:
        return
    sgd_configs = [sgd_base.replace(weight_decay=lam) for lam in lams]
    with result.timed("sgd control"):
        sgd = train(sgd_configs, data=data, probes=[stats.probe()])
    result.runs["sgd"], result.frames["sgd_buckets"] = sgd, sweep_frames(sgd, stats)["buckets"]
    log_v, big = math.log(stats.vocab), [lam for lam in lams if lam >= 0.5]
    sgd_loss = {c.weight_decay: None if sgd.diverged_step(i) is not None else _num(sgd.summary.train_loss[i])
                for i, c in enumerate(sgd_configs)}
    m.update({key("sgd_train_loss", wd=lam): v for lam, v in sgd_loss.items()})
    fraction = {lam: None if v is None else v / log_v for lam, v in sgd_loss.items()}
    if big:
        fr = [fraction[lam] for lam in big]
        result.claims.append(verdict(
            "sgd_collapses_to_uniform", "Control: plain SGD with coupled L2 collapses to uniform predictions at λ ≥ 0.5 "
            "— the rare-token effect is an AdamW-regime phenomenon here", None if None in fr else min(fr), SGD_UNIFORM,
            note=f"SGD train loss ÷ log V, smallest over λ ≥ 0.5 (SGD η = {p.sgd_step_size:g}); at λ = {fmt_number(big)}: "
                 f"{fmt_number(fr)}; at λ = 0: {fmt_number(fraction[0.0])}",
            diverged={f"SGD λ = {c.weight_decay:g}": sgd.diverged_step(i) for i, c in enumerate(sgd_configs)
                      if c.weight_decay >= 0.5}))


# charts over the tidy frames above ----------------------------------------------------------------

W, H = 230, 190  # three panels, their axes and a legend fit a ~960-px row
BUCKET_COLOR = alt.Color("bucket:N", title="target frequency", scale=alt.Scale(domain=NAMES, scheme="viridis"), sort=NAMES)
LAMBDA_COLOR = alt.Color("weight_decay:O", title="λ", scale=alt.Scale(scheme="plasma"))


def _finished(width: int = W):
    """Decorator: the chart is built from the rows of members that did not diverge, with a note naming those
    that did (not drawn); a placeholder when none finished."""
    def wrap(build):
        @functools.wraps(build)
        def chart(frame: pd.DataFrame, *args, **kwargs):
            bad = [f"λ = {r.weight_decay:g} (seed {r.seed}) diverged at step {int(r.diverged_at)}"
                   for r in frame.dropna(subset=["diverged_at"]).drop_duplicates("run").itertuples()]
            text = "; ".join(bad if len(bad) <= 3 else bad[:2] + [f"{len(bad) - 2} more diverged"])
            ok = frame[frame.diverged_at.isna()]
            if len(ok) == 0:
                return charts.empty(f"No finished run to draw: {text or 'no rows'}", width)
            return charts.note(build(ok, *args, **kwargs), f"{text} (not drawn)") if bad else build(ok, *args, **kwargs)
        return chart
    return wrap


def _by_bucket(rows, y, title, y_title, x_title="weight decay λ"):
    """A value per bucket against λ: one dot per seed, a line through the median (charts.against)."""
    return _recolor(charts.against(rows, "weight_decay", y, color="bucket", title=title, x_title=x_title, y_title=y_title,
                                   tooltip=["bucket", "seed"], width=W, height=H), BUCKET_COLOR)


@_finished(3 * W)
def bucket_chart(ok: pd.DataFrame):
    """Training loss per frequency bucket against λ; its rise since λ = 0 (same seed); the same on held-out pairs."""
    base = ok[ok.weight_decay == 0.0][["seed", "split", "bucket", "loss"]].rename(columns={"loss": "loss0"})
    ok = ok.merge(base, on=["seed", "split", "bucket"], how="left").assign(rise=lambda f: f.loss - f.loss0)
    train_rows, test_rows = ok[ok.split == "train"], ok[ok.split == "test"]
    panels = [_by_bucket(train_rows, "loss", "training loss by target frequency", "training cross-entropy"),
              _by_bucket(train_rows, "rise", "rise since λ = 0 (training)", "loss(λ) − loss(0)")]
    if len(test_rows):
        panels.append(_by_bucket(test_rows, "loss", "the same on held-out pairs", "held-out cross-entropy"))
    return charts.row(*panels)


@_finished()
def gap_chart(ok: pd.DataFrame):
    """The gap (rarest − most frequent bucket's training loss) against λ, one line per seed."""
    wide = ok[ok.split == "train"].pivot_table(index=["seed", "weight_decay"], columns="bucket_index", values="loss")
    if RAREST not in wide.columns or FREQUENT not in wide.columns:
        return charts.empty("The rarest or the most frequent bucket has no training example: no gap to draw.", W)
    wide = wide.assign(gap=wide[RAREST] - wide[FREQUENT]).reset_index()[["seed", "weight_decay", "gap"]]
    return charts.against(wide, "weight_decay", "gap", color="seed", title="rare-vs-frequent gap, per seed",
                          x_title="weight decay λ", y_title=f"loss[{NAMES[RAREST]}] − loss[{NAMES[FREQUENT]}]")


@_finished(2 * W)
def norms_chart(ok: pd.DataFrame, seed: int | None = None):
    """Unembedding row norms relative to λ = 0 against frequency rank (one seed; crosses: tokens that never
    occur as a target), and the mean row norm per bucket against λ."""
    s = int(ok.seed.min()) if seed is None else seed
    one = ok[(ok.seed == s) & (ok.weight_decay > 0)].dropna(subset=["norm_rel"])
    one = one.assign(occurs=np.where(one.present, "occurs as a target", "never a target"))
    cloud = rank_cloud(one, "norm_rel", y_title="row norm ÷ row norm at λ = 0", width=W + 60, height=H,
                       title=f"unembedding rows relative to λ = 0 (seed {s})",
                       shape=("occurs", {"occurs as a target": "circle", "never a target": "cross"}))
    per = ok.groupby(["seed", "weight_decay", "bucket"], as_index=False).norm.mean()
    lines = _by_bucket(per, "norm", "mean row norm by bucket", "mean unembedding row norm")
    return charts.row(cloud, lines).resolve_scale(color="independent", shape="independent")


@_finished(2 * W)
def token_chart(ok: pd.DataFrame, seed: int | None = None):
    """Per-token training loss against frequency rank (one seed), one colour per λ. Tokens that never occur
    as a target have no loss and are not drawn."""
    s = int(ok.seed.min()) if seed is None else seed
    return rank_cloud(ok[ok.seed == s], "loss", y_title="mean training cross-entropy", width=2 * W, height=H,
                      title=f"training loss of every target token that occurs (seed {s}; line: binned median)")


@_finished()
def sgd_chart(ok: pd.DataFrame, log_vocab: float):
    """The SGD + coupled L2 control: training loss per bucket against λ, with log V (uniform predictions)."""
    lines = _by_bucket(ok[ok.split == "train"], "loss", "control: plain SGD with coupled L2", "training cross-entropy",
                       x_title="weight decay λ (coupled L2)")
    return charts.layer(lines, charts.reference_rule(log_vocab, f"log V = {log_vocab:.2f} (uniform)"))


@_finished()
def spectrum_chart(ok: pd.DataFrame, seed: int | None = None):
    """Singular values of the learned logit matrix E Uᵀ (relative to the largest), one line per λ (one seed)."""
    s = int(ok.seed.min()) if seed is None else seed
    one = ok[ok.seed == s].drop(columns="diverged_at").assign(metric="sigma_rel", value=lambda f: f.sigma_rel)
    return _recolor(charts.curves(one, "sigma_rel", x="index", log_y=True, y_title="σᵢ / σ₁", width=W + 60, height=H,
                                  title=f"singular values of the logit matrix (seed {s})"), LAMBDA_COLOR)


def _bucket_rows(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    """The explorer frame's finite per-bucket training losses, with the bucket's name, the run's label and
    whether it is the current run; None before the first finite one."""
    rows = frame[frame.metric.str.match(r"^train_loss_b\d+$")] if frame is not None and "metric" in frame else frame
    if rows is None or not np.isfinite(pd.to_numeric(rows.value, errors="coerce")).any():
        return None
    rows = rows[np.isfinite(pd.to_numeric(rows.value, errors="coerce"))]
    return rows.assign(bucket=rows.metric.str.slice(len("train_loss_b")).astype(int).map(NAMES.__getitem__),
                       label=rows["label"].astype(str).str.replace("data_options.", "", regex=False)
                       if "label" in rows else "this run", current=rows.get("current", True))


def explore_chart(frame: pd.DataFrame, config=None):
    """The explorer's curves: each frequency bucket's training loss over steps in the current run (a diverged
    run drawn up to its divergence)."""
    rows = _bucket_rows(frame)
    if rows is None:
        return charts.empty("Waiting for a first finite per-bucket loss…")
    now = rows[rows.current.astype(bool)]
    return _recolor(charts.curves(now, list(now.metric.unique()), color="bucket", title="training loss by frequency "
                                  "bucket, over steps", y_title="training cross-entropy", width=W, height=H), BUCKET_COLOR)


def learned(frame: pd.DataFrame, config=None):
    """What the model learned: the training loss of each frequency bucket at the latest step, one line per run
    (earlier runs faded in compare mode): weight decay lifts the rare buckets far more than the frequent ones."""
    rows = _bucket_rows(frame)
    if rows is None:
        return charts.empty("Waiting for a first finite per-bucket loss…")
    last = rows.loc[rows.step == rows.groupby("run").step.transform("max"), ["run", "label", "current", "bucket", "value", "step"]]
    return alt.Chart(charts.inline(last)).mark_line(point=True).encode(
        x=alt.X("bucket:N", sort=NAMES, title="target frequency bucket", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("value:Q", title="training cross-entropy"),
        color=alt.Color("label:N", title=None, legend=alt.Legend(orient="bottom", columns=1, labelLimit=600)),
        detail="run:N", opacity=alt.condition("datum.current", alt.value(1.0), alt.value(charts.FADED)),
        tooltip=["label:N", "bucket:N", "step:Q", alt.Tooltip("value:Q", format=".3f")],
    ).properties(width=W, height=H, title="what it learned: training loss by target frequency (latest step)")


def _recolor(chart, color: alt.Color):
    """A builder's chart with its colour encoding replaced in every layer (an ordered or sequential scale)."""
    for part in getattr(chart, "layer", None) or [chart]:
        part.encoding.color = color if part.encoding.color is not alt.Undefined else alt.Undefined
    return chart


def binned_median(frame: pd.DataFrame, x: str, y: str, groupby: list, bins: int = 12) -> pd.DataFrame:
    """Median of `y` in log-spaced bins of `x` ≥ 1 (a trend line through a cloud of points)."""
    frame = frame.dropna(subset=[y])
    if len(frame) == 0:
        return frame[[*groupby, x, y]]
    edges = np.unique(np.round(np.geomspace(1, max(int(frame[x].max()), 2) + 1, bins + 1)).astype(int))
    binned = frame.assign(bin=pd.cut(frame[x], edges, right=False, labels=False))
    return binned.groupby([*groupby, "bin"], as_index=False).agg(**{x: (x, "median"), y: (y, "median")}).dropna()


def rank_cloud(frame: pd.DataFrame, y: str, *, y_title: str, title: str, shape: tuple | None = None,
               width: int = charts.WIDTH, height: int = charts.HEIGHT) -> alt.LayerChart:
    """A value per token against its frequency rank (log x, 1 = most frequent): one point per token coloured
    by λ (`shape`: (a nominal field, {value: shape})), and a line through the median of each log-spaced rank bin."""
    rows = frame.assign(rank1=frame.frequency_rank + 1)
    x = alt.X("rank1:Q", scale=alt.Scale(type="log", domain=[1, max(int(rows.rank1.max()), 2)]),
              title="frequency rank of the token (1 = most frequent)")
    enc = dict(x=x, y=alt.Y(f"{y}:Q", title=y_title), color=LAMBDA_COLOR,
               tooltip=["token:Q", "count:Q", "weight_decay:Q", alt.Tooltip(f"{y}:Q", format=".3f")])
    if shape:
        field, shapes = shape
        enc["shape"] = alt.Shape(f"{field}:N", title=None, scale=alt.Scale(domain=list(shapes), range=list(shapes.values())))
    cols = ["rank1", y, "weight_decay", "token", "count"] + ([shape[0]] if shape else [])
    cloud = alt.Chart(charts.inline(rows[cols])).mark_point(size=12, opacity=0.4, filled=True).encode(**enc)
    trend = alt.Chart(charts.inline(binned_median(rows, "rank1", y, ["weight_decay"]))).mark_line(strokeWidth=3).encode(
        x=x, y=f"{y}:Q", color=LAMBDA_COLOR)
    return alt.layer(cloud, trend).properties(width=width, height=height, title=title)

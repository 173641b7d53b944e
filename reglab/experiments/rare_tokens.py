"""Weight decay and rare tokens: per-token *training* loss by target-token frequency (theme T8).

The seed paper reports that as weight decay grows, low-frequency tokens are disproportionately
depreciated in 270M–3B language models. This module shows the mechanism at laptop scale, with the
design measured to reproduce it (THEMES.md T8):

* data: the core's `zipf` generator — context tokens follow a Zipf law (exponent 1.1 over V = 500
  tokens), the next token is drawn from a random teacher transition table tilted by the Zipf prior;
  20,000 fixed training pairs, trained on for many epochs;
* model: the core's `bigram` — embedding (d = 32, the rank slider) → linear unembedding, both decayed;
* optimizer: AdamW (decoupled weight decay), a batched sweep over λ × 3 seeds in ONE `train` call;
* measured: the training cross-entropy averaged over the examples whose *target* falls in each
  frequency bucket (top 1 %, 1–10 %, 10–50 %, 50–100 % of the vocabulary by target frequency), and the
  norms of the unembedding rows by token frequency.

Speed: THEMES' pilot used η = 3e-3 for 3000 steps (~77 epochs); the defaults take η = 0.03 for 300 steps
(~8 epochs, the same η·steps and so the same decay budget λ·η·steps) at a tenth of the cost. Measured
here (seed 0): the pilot setting gives a rise of +2.18 (rarest bucket) vs +0.22 (most frequent) from
λ = 0 to 1, the defaults +1.76 vs +0.24 — the rarest bucket is memorized a little less at λ = 0 in fewer
epochs. Pass `step_size=0.003, steps=3000` for the pilot setting.

The per-token losses are exact and cheap: the bigram model's prediction depends only on the context
token, so the training loss by target is −Σ_c N[c, y] log p(y | c) with N the (context, target) pair
counts — one V × V evaluation per member instead of n × V (reglab.metrics.tokens.pair_token_loss).

Controls beyond λ, η, B and r: the Zipf exponent, the vocabulary size, and the optimizer (SGD with
coupled L2, which — measured here — collapses to uniform predictions already at λ = 0.25; the control
run shows it).
"""
from __future__ import annotations

import math
import time

import altair as alt
import numpy as np
import pandas as pd
import torch

from ..claims import Claim, Result, fmt_number
from ..config import CONSTRAINTS, Interval, OneOf, RunConfig, check, check_each, validate
from ..data import make_dataset
from ..engine import train
from ..metrics.tokens import (DEFAULT_EDGES, absent_tokens, bucket_example_counts, bucket_means, bucket_names,
                              bucket_norms, context_log_probs, frequency_buckets, frequency_rank,
                              logit_singular_values, logit_svd, pair_counts, pair_token_loss, row_norms, token_counts,
                              token_means)

VOCAB, EXPONENT, N_TRAIN, WIDTH = 500, 1.1, 20_000, 32
STEP_SIZE, BATCH_SIZE, STEPS = 0.03, 512, 300
WEIGHT_DECAYS = (0.0, 0.25, 0.5, 1.0)
SGD_STEP_SIZE = 1.0  # plain SGD on the mean cross-entropy needs a step ~50× AdamW's
RISE_FACTOR = 3.0  # the rarest bucket's loss rises ≥ 3× more than the most frequent bucket's
UNIFORM_FRACTION = 0.99  # a train loss ≥ 99 % of log V counts as (near-)uniform predictions
NAMES = bucket_names(DEFAULT_EDGES)
K = len(NAMES)
RAREST, FREQUENT = K - 1, 0


# ---------------------------------------------------------------------------------------------
# configuration


def config(step_size: float = STEP_SIZE, batch_size: int | None = BATCH_SIZE, weight_decay: float = 1.0,
           rank: int = WIDTH, steps: int = STEPS, vocab: int = VOCAB, exponent: float = EXPONENT,
           n_train: int = N_TRAIN, optimizer: str = "adamw", seed: int = 0, data_seed: int = 0,
           eval_every: int | None = None, device: str = "auto") -> RunConfig:
    """One member of the sweep. `rank` is the embedding dimension d (the bigram model's width: the rank
    of its logit matrix). SGD gets coupled L2 (the gradient of λ/2‖w‖²), AdamW decoupled decay."""
    check("optimizer", optimizer, OneOf(("adamw", "sgd")), owner="rare_tokens.config")
    check("rank", rank, Interval(int, 1, 4096), owner="rare_tokens.config (the embedding dimension d)")
    for name, value in (("step_size", step_size), ("weight_decay", weight_decay)):
        check(name, value, CONSTRAINTS[name])
    check("exponent", exponent, Interval(float, 0, 10), owner="rare_tokens.config (the Zipf exponent)")
    check("vocab", vocab, Interval(int, 10, 5000), owner="rare_tokens.config")
    return RunConfig(data="zipf", n_train=n_train, data_seed=data_seed,
                     data_options={"vocab": vocab, "exponent": float(exponent)},
                     model="bigram", width=int(rank), bias=False, loss="ce", optimizer=optimizer,
                     decay="coupled" if optimizer == "sgd" else "decoupled", step_size=float(step_size),
                     batch_size=batch_size, weight_decay=float(weight_decay), steps=steps,
                     eval_every=eval_every or steps, seed=seed, device=device)


def dataset(cfg: RunConfig):
    return make_dataset(cfg.data, cfg.n_train, cfg.data_seed, **cfg.data_options)


# ---------------------------------------------------------------------------------------------
# the probe: bucket losses, row norms and the logit spectrum, streamed during training


class TokenStats:
    """Everything about the data the per-token metrics need: target counts, frequency ranks, buckets,
    and the (context, target) pair counts of the train and held-out splits."""

    def __init__(self, data):
        self.vocab = int(data.info["vocab"])
        self.counts = token_counts(data.y_train, self.vocab)
        self.rank = frequency_rank(self.counts)
        self.buckets = frequency_buckets(self.counts, DEFAULT_EDGES)
        self.train_pairs = pair_counts(data.x_train, data.y_train, self.vocab)
        self.test_pairs = pair_counts(data.x_test, data.y_test, self.vocab) if len(data.x_test) else None
        self.absent = absent_tokens(self.counts)

    def losses(self, model, params, split: str = "train"):
        """(total [M, V], count [V]) of the training (or held-out) cross-entropy by target token."""
        pairs = self.train_pairs if split == "train" else self.test_pairs
        return pair_token_loss(context_log_probs(model, params, self.vocab), pairs)

    def probe(self):
        """A TrainState probe: train/test loss per bucket, mean unembedding row norm per bucket, and the
        effective rank of the logit matrix. Buckets without examples are absent, not NaN."""
        def probe(state) -> dict:
            out = {}
            logp = context_log_probs(state.model, state.params, self.vocab)
            for split, pairs in (("train", self.train_pairs), ("test", self.test_pairs)):
                if pairs is None:
                    continue
                total, count = pair_token_loss(logp, pairs)
                for k, v in bucket_means(total, count, self.buckets, K).items():
                    out[f"{split}_loss_b{k}"] = v
            norms = bucket_norms(row_norms(state.params["unembed"]), self.buckets, K)
            for k in range(K):
                out[f"unembed_norm_b{k}"] = norms[:, k]
            s = logit_singular_values(state.params["embed"], state.params["unembed"])
            p = s / s.sum(-1, keepdim=True).clamp_min(1e-30)
            out["logit_erank"] = torch.exp(-(p * torch.log(p.clamp_min(1e-30))).sum(-1))
            return out
        return probe


def explore(config: RunConfig, on_eval=None, stop=None):
    """The explorer's run: one member with the token probe (SGD gets coupled L2)."""
    if config.optimizer == "sgd" and config.decay != "coupled":
        config = config.replace(decay="coupled")
    data = dataset(config)
    stats = TokenStats(data)
    return train(config, data=data, probes=[stats.probe()], on_eval=on_eval, stop=stop, progress=False)


# ---------------------------------------------------------------------------------------------
# tidy frames from a finished sweep


def sweep_frames(run, stats: TokenStats) -> dict:
    """buckets (member × bucket × split), token_loss (present tokens only), row_norms (every token),
    spectrum (singular values of the logit matrix) from the final parameters of a sweep."""
    V = stats.vocab
    members = [{"run": m, "seed": c.seed, "weight_decay": c.weight_decay, "diverged_at": run.diverged_step(m)}
               for m, c in enumerate(run.configs)]
    bucket_rows, token_rows, norm_rows, spec_rows = [], [], [], []
    examples = {}
    for split in ("train", "test"):
        if split == "test" and stats.test_pairs is None:
            continue
        total, count = stats.losses(run.model, run.params, split)
        examples[split] = bucket_example_counts(count, stats.buckets, K)
        means = bucket_means(total, count, stats.buckets, K)
        for info in members:
            for k in range(K):
                if k in means:  # a bucket without examples is absent: no row
                    bucket_rows.append({**info, "split": split, "bucket": NAMES[k], "bucket_index": k,
                                        "loss": float(means[k][info["run"]]), "examples": examples[split][k]})
        if split == "train":
            tokens, mean = token_means(total, count)
            tok, rk, ct, bk = (tokens.cpu().numpy(), stats.rank[tokens.cpu()].numpy(), stats.counts[tokens.cpu()].numpy(),
                               stats.buckets[tokens.cpu()].numpy())
            mean = mean.cpu().numpy()
            for info in members:
                for j in range(len(tok)):
                    token_rows.append({**info, "token": int(tok[j]), "frequency_rank": int(rk[j]), "count": int(ct[j]),
                                       "bucket": NAMES[bk[j]], "loss": float(mean[info["run"], j])})
    norms = row_norms(run.params["unembed"]).cpu().numpy()
    for info in members:
        for t in range(V):
            norm_rows.append({**info, "token": t, "frequency_rank": int(stats.rank[t]), "count": int(stats.counts[t]),
                              "present": bool(stats.counts[t] > 0), "bucket": NAMES[int(stats.buckets[t])],
                              "bucket_index": int(stats.buckets[t]), "norm": float(norms[info["run"], t])})
    left, sv, right = (t.cpu().double().numpy() for t in logit_svd(run.params["embed"], run.params["unembed"]))
    log_freq = np.log1p(stats.counts.double().numpy())
    top_rows = []
    for info in members:
        s = sv[info["run"]]
        for i, v in enumerate(s):
            spec_rows.append({**info, "index": i + 1, "sigma": float(v), "sigma_rel": float(v / s[0]) if s[0] > 0 else 0.0})
        a1, b1 = left[info["run"], :, 0], right[info["run"], :, 0]
        share = float(s[0] ** 2 / (s ** 2).sum()) if s[0] > 0 else None
        corr = float(abs(np.corrcoef(b1, log_freq)[0, 1])) if s[0] > 0 and b1.std() > 0 else None
        shared = float(abs(a1.sum()) / math.sqrt(len(a1))) if s[0] > 0 else None
        top_rows.append({**info, "top_share": share, "top_vs_log_frequency": corr, "top_context_alignment": shared})
    norms_frame = pd.DataFrame(norm_rows)
    base = norms_frame[norms_frame.weight_decay == 0.0][["seed", "token", "norm"]].rename(columns={"norm": "norm_at_0"})
    norms_frame = norms_frame.merge(base, on=["seed", "token"], how="left")
    ratio = norms_frame["norm"] / norms_frame["norm_at_0"]
    norms_frame["norm_rel"] = ratio.where(norms_frame["norm_at_0"] > 0)  # undefined where the λ = 0 row is zero
    return {"buckets": pd.DataFrame(bucket_rows), "token_loss": pd.DataFrame(token_rows), "row_norms": norms_frame,
            "spectrum": pd.DataFrame(spec_rows), "logit_top": pd.DataFrame(top_rows), "examples": examples}


# ---------------------------------------------------------------------------------------------
# the notebook's one call


def _losses(frame, split="train") -> dict:
    """{(seed, λ): {bucket_index: loss}} for members that did not diverge."""
    out = {}
    rows = frame[(frame.split == split) & frame.diverged_at.isna()] if len(frame) else frame
    for (s, lam), g in rows.groupby(["seed", "weight_decay"]):
        out[(int(s), float(lam))] = dict(zip(g.bucket_index.astype(int), g.loss.astype(float)))
    return out


def run(step_size: float = STEP_SIZE, batch_size: int | None = BATCH_SIZE, weight_decay: float = 1.0,
        weight_decays=WEIGHT_DECAYS, rank: int = WIDTH, steps: int = STEPS, vocab: int = VOCAB,
        exponent: float = EXPONENT, n_train: int = N_TRAIN, optimizer: str = "adamw", sgd_control: bool = True,
        sgd_step_size: float = SGD_STEP_SIZE, seeds: int = 3, seed: int = 0, data_seed: int = 0,
        device: str = "auto") -> Result:
    """Train the λ sweep × seeds as one ensemble (and, with `sgd_control`, the same λ sweep with plain SGD +
    coupled L2 for one seed), measure per-token training losses and unembedding norms, check the claims.

    weight_decay: the λ the claims compare with λ = 0 (and the explorer's starting λ); it and 0 are added
    to `weight_decays` when missing. rank: the embedding dimension d.
    """
    check("weight_decay", weight_decay, Interval(float, 0, math.inf, closed="neither"),
          owner="rare_tokens.run (the λ compared with λ = 0)")
    decays = check_each("weight_decays", weight_decays, Interval(float, 0, math.inf, closed="left"), "rare_tokens.run")
    lams = sorted({float(v) for v in decays} | {0.0, float(weight_decay)})
    check("seeds", seeds, Interval(int, 1, 10), owner="rare_tokens.run")
    check("sgd_control", sgd_control, OneOf((True, False)), owner="rare_tokens.run")
    check("sgd_step_size", sgd_step_size, Interval(float, 0, math.inf, closed="neither"), owner="rare_tokens.run")
    seed_list = list(range(seed, seed + seeds))
    base = config(step_size, batch_size, weight_decay, rank, steps, vocab, exponent, n_train, optimizer, seed, data_seed,
                  device=device)
    data = dataset(base)
    validate(base, n_train=data.n_train)
    if sgd_control:
        validate(base.replace(step_size=float(sgd_step_size)), n_train=data.n_train)
    stats = TokenStats(data)
    metrics, claims, frames, runs = {}, [], {}, {}
    lam_hi = float(weight_decay)

    # 1 · the λ sweep × seeds, one ensemble ----------------------------------------------------------
    configs = [base.replace(weight_decay=lam, seed=s) for s in seed_list for lam in lams]
    cpu, wall = time.process_time(), time.perf_counter()
    sweep = train(configs, data=data, probes=[stats.probe()])
    timing = {"sweep_cpu_s": time.process_time() - cpu, "sweep_wall_s": time.perf_counter() - wall,
              "members": len(configs)}
    runs["sweep"] = sweep
    found = sweep_frames(sweep, stats)
    frames.update({k: found[k] for k in ("buckets", "token_loss", "row_norms", "spectrum", "logit_top")})
    frames["history"] = sweep.history.merge(sweep.summary[["run", "weight_decay", "seed"]], on="run")
    m0 = next(i for i, c in enumerate(configs) if c.weight_decay == lam_hi and c.seed == seed)
    initial = sweep.history[sweep.history.run == m0].assign(run=0).reset_index(drop=True)
    d0 = sweep.diverged_step(m0)
    initial.attrs["diverged_at"] = {} if d0 is None else {0: d0}
    frames["explorer_initial"] = initial

    metrics["absent_tokens"] = len(stats.absent)
    metrics["log_vocab"] = math.log(stats.vocab)
    for k, n in enumerate(found["examples"]["train"]):
        metrics[f"train_examples[{NAMES[k]}]"] = n
    train_loss = _losses(found["buckets"], "train")
    test_loss = _losses(found["buckets"], "test") if "test" in found["examples"] else {}
    for lam in lams:
        for k in range(K):
            vals = [train_loss.get((s, lam), {}).get(k) for s in seed_list]
            vals = [v for v in vals if v is not None]
            metrics[f"train_loss[{NAMES[k]}]@wd={lam:g}"] = float(np.mean(vals)) if vals else None
        for k in (FREQUENT, RAREST):
            vals = [test_loss.get((s, lam), {}).get(k) for s in seed_list]
            vals = [v for v in vals if v is not None]
            metrics[f"heldout_loss[{NAMES[k]}]@wd={lam:g}"] = float(np.mean(vals)) if vals else None
    top = found["logit_top"][found["logit_top"].diverged_at.isna()]
    for lam in lams:
        rows = top[top.weight_decay == lam]
        for key in ("top_share", "top_vs_log_frequency"):
            vals = rows[key].dropna()
            metrics[f"logit_{key}@wd={lam:g}"] = float(vals.mean()) if len(vals) else None
    diverged = {}  # seed -> "λ = 3 diverged at step 2, …"
    for m, c in enumerate(configs):
        d = sweep.diverged_step(m)
        if d is not None:
            diverged.setdefault(c.seed, []).append(f"λ = {c.weight_decay:g} diverged at step {d}")
    diverged = {s: ", ".join(v) for s, v in diverged.items()}
    diverged_note = ("; " + "; ".join(f"seed {s}: {v}" for s, v in diverged.items())) if diverged else ""
    metrics["diverged_members"] = int(sweep.summary["diverged_at"].notna().sum())

    # claim 1: rarest bucket's rise ≥ 3× the most frequent bucket's, λ = 0 → λ_hi
    ratios, ok, rises = [], [], []
    for s in seed_list:
        lo, hi = train_loss.get((s, 0.0), {}), train_loss.get((s, lam_hi), {})
        if RAREST in lo and RAREST in hi and FREQUENT in lo and FREQUENT in hi:
            rare, freq = hi[RAREST] - lo[RAREST], hi[FREQUENT] - lo[FREQUENT]
            metrics[f"rise[{NAMES[RAREST]}]/seed={s}"], metrics[f"rise[{NAMES[FREQUENT]}]/seed={s}"] = rare, freq
            ratio = rare / freq if freq > 0 else (math.inf if rare > 0 else None)
            metrics[f"rise_ratio/seed={s}"] = ratio
            ratios.append(ratio)
            rises.append(f"+{rare:.2f} vs {freq:+.2f}")
            ok.append(rare > 0 and rare >= RISE_FACTOR * freq)
        else:
            ratios.append(None)
            rises.append(diverged.get(s, "a bucket is absent"))
            ok.append(False)
    finite = [r for r in ratios if r is not None]
    claims.append(Claim(f"From λ = 0 to λ = {lam_hi:g} the rarest bucket's training loss rises ≥ {RISE_FACTOR:g}× more "
                        f"than the most frequent bucket's",
                        min(finite) if finite and len(finite) == len(ratios) else None,
                        f"rise({NAMES[RAREST]}) ≥ {RISE_FACTOR:g} × rise({NAMES[FREQUENT]}), every seed", all(ok),
                        note=f"held for {sum(ok)}/{len(ok)} seeds; rise rarest vs most frequent per seed: {'; '.join(rises)}"))

    # claim 2: the gap (rarest − most frequent) increases monotonically over λ ∈ [0, λ_hi]
    checked = [lam for lam in lams if lam <= lam_hi]
    steps_up, ok = [], []
    for s in seed_list:
        gaps = []
        for lam in lams:
            b = train_loss.get((s, lam), {})
            gap = b[RAREST] - b[FREQUENT] if RAREST in b and FREQUENT in b else None
            metrics[f"gap@wd={lam:g}/seed={s}"] = gap
            if lam <= lam_hi:
                gaps.append(gap)
        if len(gaps) > 1 and all(g is not None for g in gaps):
            smallest = float(np.min(np.diff(gaps)))
            steps_up.append(smallest)
            ok.append(smallest > 0)
        else:
            steps_up.append(None)
            ok.append(False)
    finite = [v for v in steps_up if v is not None]
    claims.append(Claim("The gap (rarest − most frequent bucket's training loss) increases monotonically over "
                        f"λ ∈ {{{', '.join(f'{lam:g}' for lam in checked)}}}",
                        min(finite) if finite and len(finite) == len(steps_up) else None,
                        "smallest increase between consecutive λ > 0, every seed", all(ok) and len(checked) > 2,
                        note=f"held for {sum(ok)}/{len(ok)} seeds; smallest increase per seed: {fmt_number(steps_up)}"
                             + ("" if len(checked) > 2 else "; needs at least 3 values of λ in [0, λ] to test") + diverged_note))

    # claim 3: rare tokens' unembedding rows shrink more (relative to λ = 0) than frequent tokens'
    nf = found["row_norms"]
    shrink, ok, parts = [], [], []
    for s in seed_list:
        rows = nf[(nf.seed == s) & nf.weight_decay.isin([0.0, lam_hi]) & nf.diverged_at.isna()]
        by = rows.groupby(["weight_decay", "bucket_index"]).norm.mean()
        keys = [(lam_hi, RAREST), (0.0, RAREST), (lam_hi, FREQUENT), (0.0, FREQUENT)]
        if not all(k in by.index for k in keys) or by[(0.0, RAREST)] <= 0 or by[(0.0, FREQUENT)] <= 0:
            shrink.append(None)
            ok.append(False)
            parts.append(diverged.get(s, "rows at λ = 0 missing or zero"))
            continue
        rare, freq = float(by[(lam_hi, RAREST)] / by[(0.0, RAREST)]), float(by[(lam_hi, FREQUENT)] / by[(0.0, FREQUENT)])
        metrics[f"norm_ratio[{NAMES[RAREST]}]/seed={s}"], metrics[f"norm_ratio[{NAMES[FREQUENT]}]/seed={s}"] = rare, freq
        shrink.append(rare / freq if freq > 0 else None)
        ok.append(rare < freq)
        parts.append(f"{rare:.2f} vs {freq:.2f}" + (" (every row decayed to zero)" if freq == 0 and rare == 0 else ""))
    finite = [v for v in shrink if v is not None]
    claims.append(Claim(f"Rare tokens' unembedding rows shrink more than frequent tokens' (mean row norm at λ = {lam_hi:g} "
                        "relative to λ = 0)",
                        max(finite) if finite and len(finite) == len(shrink) else None,
                        f"ratio({NAMES[RAREST]}) / ratio({NAMES[FREQUENT]}) < 1, every seed", all(ok),
                        note=f"held for {sum(ok)}/{len(ok)} seeds; norm ratio rarest vs most frequent per seed: {'; '.join(parts)}"))

    # 2 · the optimizer control: plain SGD with coupled L2, one seed ----------------------------------
    if sgd_control:
        sgd_configs = [base.replace(optimizer="sgd", decay="coupled", step_size=float(sgd_step_size), weight_decay=lam,
                                    seed=seed) for lam in lams]
        cpu = time.process_time()
        sgd = train(sgd_configs, data=data, probes=[stats.probe()])
        timing["sgd_cpu_s"] = time.process_time() - cpu
        runs["sgd"] = sgd
        sgd_found = sweep_frames(sgd, stats)
        frames["sgd_buckets"] = sgd_found["buckets"]
        log_v = math.log(stats.vocab)
        sgd_diverged = []
        sgd_train = _losses(sgd_found["buckets"], "train")  # finite members only
        total = {lam: sgd_found["examples"]["train"] for lam in lams}
        for m, c in enumerate(sgd_configs):
            d = sgd.diverged_step(m)
            if d is not None:
                sgd_diverged.append(f"λ = {c.weight_decay:g} diverged at step {d}")
            b = sgd_train.get((seed, c.weight_decay))
            value = None
            if d is None and b:  # the training loss over every example, from the per-bucket means
                n = total[c.weight_decay]
                value = sum(b[k] * n[k] for k in b) / sum(n[k] for k in b)
            metrics[f"sgd_train_loss@wd={c.weight_decay:g}"] = value
        big = [lam for lam in lams if lam >= 0.5]
        if big:
            fractions = [metrics[f"sgd_train_loss@wd={lam:g}"] for lam in big]
            fr = [None if v is None else v / log_v for v in fractions]
            held = all(v is not None and v >= UNIFORM_FRACTION for v in fr)
            claims.append(Claim("Control (measured here): plain SGD with coupled L2 collapses to uniform predictions at "
                                "λ ≥ 0.5 — the rare-token effect is an AdamW-regime phenomenon here",
                                min(fr) if all(v is not None for v in fr) else None,
                                f"SGD train loss / log V ≥ {UNIFORM_FRACTION:g} at every λ ≥ 0.5", held,
                                note=f"SGD η = {sgd_step_size:g}; train loss / log V at λ = {fmt_number(big)}: {fmt_number(fr)}; "
                                     f"at λ = 0: {fmt_number([None if metrics['sgd_train_loss@wd=0'] is None else metrics['sgd_train_loss@wd=0'] / log_v])}"
                                     + ("; " + ", ".join(sgd_diverged) if sgd_diverged else "")))
    frames["timing"] = pd.DataFrame([timing])
    return Result(metrics, claims, frames, runs)


# ---------------------------------------------------------------------------------------------
# charts (Altair specs over the tidy frames above)

W, H = 250, 190
BUCKET_SCALE = alt.Scale(domain=NAMES, scheme="viridis")
DIVERGED_COLOR = "#c0392b"


def _mean_over_seeds(frame, keys, value):
    return frame.groupby(keys, as_index=False)[value].mean()


def _placeholder(text: str, width: int = W) -> alt.Chart:
    """A chart that says why there is nothing to draw (e.g. every run diverged)."""
    return alt.Chart(pd.DataFrame({"note": [text]})).mark_text(
        align="left", baseline="top", fontSize=13, color=DIVERGED_COLOR, fontWeight="bold").encode(
        text="note:N", x=alt.value(0), y=alt.value(8)).properties(width=width, height=40, view=alt.ViewBackground(stroke=None))


def _finished(frame: pd.DataFrame):
    """(rows of members that did not diverge, subtitle lines naming those that did: they are not drawn)."""
    if frame is None or len(frame) == 0 or "diverged_at" not in frame.columns:
        return (frame if frame is not None else pd.DataFrame()), []
    bad = frame.dropna(subset=["diverged_at"]).drop_duplicates("run")
    lines = [f"λ = {r.weight_decay:g} (seed {r.seed}) diverged at step {int(r.diverged_at)}: not drawn" for r in bad.itertuples()]
    if len(lines) > 3:
        lines = lines[:2] + [f"… and {len(lines) - 2} more diverged runs"]
    return frame[frame.diverged_at.isna()], lines


def _title(text: str, subtitle: list) -> alt.TitleParams:
    return alt.TitleParams(text, subtitle=subtitle, subtitleColor=DIVERGED_COLOR) if subtitle else alt.TitleParams(text)


def bucket_chart(buckets: pd.DataFrame):
    """Training loss per frequency bucket against λ; its rise since λ = 0; the same on held-out pairs."""
    ok, diverged = _finished(buckets)
    if len(ok) == 0:
        return _placeholder("No finished run to draw" + (f": {'; '.join(diverged)}" if diverged else "."), 3 * W)
    mean = _mean_over_seeds(ok, ["split", "weight_decay", "bucket", "bucket_index"], "loss")
    base0 = mean[mean.weight_decay == 0.0][["split", "bucket", "loss"]].rename(columns={"loss": "loss0"})
    mean = mean.merge(base0, on=["split", "bucket"], how="left")
    mean["rise"] = mean["loss"] - mean["loss0"]
    seeds = ok.seed.nunique()

    def panel(rows, y, title, y_title, subtitle=()):
        enc = dict(x=alt.X("weight_decay:Q", title="weight decay λ"), y=alt.Y(f"{y}:Q", title=y_title, scale=alt.Scale(zero=False)),
                   color=alt.Color("bucket:N", title="target frequency", scale=BUCKET_SCALE, sort=NAMES),
                   tooltip=["bucket:N", "weight_decay:Q", alt.Tooltip(f"{y}:Q", format=".3f")])
        rows = rows.dropna(subset=[y])
        return alt.Chart(rows).mark_line(point=True).encode(**enc).properties(width=W, height=H, title=_title(title, list(subtitle)))

    train_rows = mean[mean.split == "train"]
    charts = [panel(train_rows, "loss", "training loss by target frequency",
                    f"training cross-entropy (mean of {seeds} seed{'s' if seeds > 1 else ''})", diverged),
              panel(train_rows, "rise", "rise since λ = 0 (training)", "loss(λ) − loss(0)")]
    if (mean.split == "test").any():
        charts.append(panel(mean[mean.split == "test"], "loss", "the same on held-out pairs", "held-out cross-entropy"))
    return alt.hconcat(*charts)


def gap_chart(buckets: pd.DataFrame):
    """The gap (rarest − most frequent bucket's training loss) against λ, one line per seed."""
    ok, diverged = _finished(buckets)
    rows = ok[ok.split == "train"] if len(ok) else ok
    if len(rows) == 0:
        return _placeholder("No finished run to draw" + (f": {'; '.join(diverged)}" if diverged else "."))
    wide = rows.pivot_table(index=["seed", "weight_decay"], columns="bucket_index", values="loss").reset_index()
    if RAREST not in wide.columns or FREQUENT not in wide.columns:
        return _placeholder("The rarest or the most frequent bucket has no training example: no gap to draw.")
    wide["gap"] = wide[RAREST] - wide[FREQUENT]
    return alt.Chart(wide[["seed", "weight_decay", "gap"]].dropna()).mark_line(point=True).encode(
        x=alt.X("weight_decay:Q", title="weight decay λ"),
        y=alt.Y("gap:Q", title=f"loss[{NAMES[RAREST]}] − loss[{NAMES[FREQUENT]}]", scale=alt.Scale(zero=False)),
        color=alt.Color("seed:N", title="seed"), tooltip=["seed:N", "weight_decay:Q", alt.Tooltip("gap:Q", format=".3f")],
    ).properties(width=W, height=H, title=_title("rare-vs-frequent gap, per seed", diverged))


def _binned_median(frame, value, groupby, bins=12):
    """Median of `value` in log-spaced bins of frequency rank (a trend line through a cloud of tokens)."""
    frame = frame.dropna(subset=[value])
    if len(frame) == 0:
        return pd.DataFrame(columns=[*groupby, "bin", "rank+1", value])
    top = max(int(frame["rank+1"].max()), 2)
    edges = np.unique(np.round(np.geomspace(1, top + 1, bins + 1)).astype(int))
    binned = frame.assign(bin=pd.cut(frame["rank+1"], edges, right=False, labels=False))
    out = binned.groupby([*groupby, "bin"], as_index=False).agg(**{"rank+1": ("rank+1", "median"), value: (value, "median")})
    return out.dropna()


def norms_chart(row_norms: pd.DataFrame, seed: int | None = None):
    """Unembedding row norms: relative to λ = 0 against frequency rank (one seed; the line is the median in
    log-spaced rank bins), and the mean per bucket against λ (mean of seeds). Tokens that never occur as a
    target are drawn as crosses."""
    ok, diverged = _finished(row_norms)
    if len(ok) == 0:
        return _placeholder("No finished run to draw" + (f": {'; '.join(diverged)}" if diverged else "."), 2 * W)
    seed = int(ok.seed.min()) if seed is None else seed
    one = ok[(ok.seed == seed) & (ok.weight_decay > 0)].dropna(subset=["norm_rel"]).copy()
    one["rank+1"] = one["frequency_rank"] + 1
    one["occurs"] = np.where(one["present"], "occurs as a target", "never a target")
    x = alt.X("rank+1:Q", scale=alt.Scale(type="log", domain=[1, int(row_norms.frequency_rank.max()) + 1]),
              title="frequency rank of the token (1 = most frequent)")
    color = alt.Color("weight_decay:O", title="λ", scale=alt.Scale(scheme="plasma"))
    cloud = alt.Chart(one[["rank+1", "norm_rel", "weight_decay", "occurs", "token", "count"]]).mark_point(
        size=14, opacity=0.45, filled=True).encode(
        x=x, y=alt.Y("norm_rel:Q", title="row norm ÷ row norm at λ = 0"), color=color,
        shape=alt.Shape("occurs:N", title=None, scale=alt.Scale(domain=["occurs as a target", "never a target"],
                                                                 range=["circle", "cross"])),
        tooltip=["token:Q", "count:Q", "weight_decay:Q", alt.Tooltip("norm_rel:Q", format=".3f")])
    trend = alt.Chart(_binned_median(one, "norm_rel", ["weight_decay"])).mark_line(strokeWidth=3).encode(
        x=x, y="norm_rel:Q", color=color)
    scatter = alt.layer(cloud, trend).properties(width=W + 60, height=H,
                                                 title=_title(f"unembedding rows relative to λ = 0 (seed {seed})", diverged))
    per = ok.groupby(["seed", "weight_decay", "bucket", "bucket_index"], as_index=False).norm.mean()
    per = _mean_over_seeds(per, ["weight_decay", "bucket", "bucket_index"], "norm")
    lines = alt.Chart(per).mark_line(point=True).encode(
        x=alt.X("weight_decay:Q", title="weight decay λ"), y=alt.Y("norm:Q", title="mean unembedding row norm"),
        color=alt.Color("bucket:N", title="target frequency", scale=BUCKET_SCALE, sort=NAMES),
        tooltip=["bucket:N", "weight_decay:Q", alt.Tooltip("norm:Q", format=".3f")],
    ).properties(width=W, height=H, title="mean row norm by bucket")
    return alt.hconcat(scatter, lines).resolve_scale(color="independent", shape="independent")


def token_chart(token_loss: pd.DataFrame, seed: int | None = None):
    """Per-token training loss against frequency rank (one seed), one colour per λ. Tokens that never
    occur as a target have no loss and are not drawn."""
    ok, diverged = _finished(token_loss)
    if len(ok) == 0:
        return _placeholder("No finished run to draw" + (f": {'; '.join(diverged)}" if diverged else "."), 2 * W)
    seed = int(ok.seed.min()) if seed is None else seed
    one = ok[ok.seed == seed].copy()
    one["rank+1"] = one["frequency_rank"] + 1
    x = alt.X("rank+1:Q", scale=alt.Scale(type="log", domain=[1, max(int(one["rank+1"].max()), 2)]),
              title="frequency rank of the target (1 = most frequent)")
    color = alt.Color("weight_decay:O", title="λ", scale=alt.Scale(scheme="plasma"))
    cloud = alt.Chart(one[["rank+1", "loss", "weight_decay", "token", "count"]]).mark_point(size=12, opacity=0.35, filled=True).encode(
        x=x, y=alt.Y("loss:Q", title="mean training cross-entropy"), color=color,
        tooltip=["token:Q", "count:Q", "weight_decay:Q", alt.Tooltip("loss:Q", format=".3f")])
    trend = alt.Chart(_binned_median(one, "loss", ["weight_decay"])).mark_line(strokeWidth=3).encode(x=x, y="loss:Q", color=color)
    return alt.layer(cloud, trend).properties(
        width=2 * W, height=H, title=_title(f"training loss of every target token that occurs (seed {seed}; line: binned median)", diverged))


def sgd_chart(sgd_buckets: pd.DataFrame, log_vocab: float):
    """The SGD + coupled L2 control: training loss per bucket against λ, with log V (uniform predictions)."""
    ok, diverged = _finished(sgd_buckets)
    rows = ok[ok.split == "train"] if len(ok) else ok
    if len(rows) == 0:
        return _placeholder("No finished SGD run to draw" + (f": {'; '.join(diverged)}" if diverged else "."), W + 60)
    lines = alt.Chart(rows[["weight_decay", "bucket", "loss"]]).mark_line(point=True).encode(
        x=alt.X("weight_decay:Q", title="weight decay λ (coupled L2)"), y=alt.Y("loss:Q", title="training cross-entropy"),
        color=alt.Color("bucket:N", title="target frequency", scale=BUCKET_SCALE, sort=NAMES),
        tooltip=["bucket:N", "weight_decay:Q", alt.Tooltip("loss:Q", format=".3f")])
    rule = alt.Chart(pd.DataFrame({"y": [log_vocab], "label": [f"log V = {log_vocab:.2f} (uniform)"]}))
    marks = rule.mark_rule(strokeDash=[5, 4], color="gray").encode(y="y:Q") + rule.mark_text(
        align="right", baseline="top", dy=4, color="gray").encode(y="y:Q", x=alt.value(W + 55), text="label:N")
    return alt.layer(lines, marks).properties(width=W + 60, height=H, title=_title("control: plain SGD with coupled L2", diverged))


def spectrum_chart(spectrum: pd.DataFrame, seed: int | None = None):
    """Singular values of the learned logit matrix E Uᵀ (relative to the largest), one line per λ (one seed)."""
    ok, diverged = _finished(spectrum)
    ok = ok[ok.sigma_rel > 0] if len(ok) else ok
    if len(ok) == 0:
        return _placeholder("No finished run to draw" + (f": {'; '.join(diverged)}" if diverged else "."), W + 60)
    seed = int(ok.seed.min()) if seed is None else seed
    one = ok[ok.seed == seed]
    return alt.Chart(one[["index", "sigma_rel", "weight_decay"]]).mark_line(point=alt.OverlayMarkDef(size=10)).encode(
        x=alt.X("index:Q", title="index i"), y=alt.Y("sigma_rel:Q", scale=alt.Scale(type="log"), title="σᵢ / σ₁"),
        color=alt.Color("weight_decay:O", title="λ", scale=alt.Scale(scheme="plasma")),
    ).properties(width=W + 60, height=H, title=_title(f"singular values of the logit matrix (seed {seed})", diverged))


def explore_chart(frame: pd.DataFrame, config=None):
    """The explorer's view of one run: each bucket's training loss over steps (once the run has recorded ≥ 3
    evaluations), and the training loss per frequency bucket at the latest step (one line per run; earlier
    runs faded in compare mode). A diverged run is drawn up to its last finite evaluation."""
    if frame is None or len(frame) == 0 or "metric" not in frame.columns:
        return _placeholder("Waiting for the first evaluation…")
    rows = frame[frame.metric.str.match(r"^train_loss_b\d+$")].copy()
    rows = rows[rows.value.map(lambda v: v is not None and math.isfinite(v))]
    if len(rows) == 0:
        return _placeholder("No finite per-bucket loss to draw yet.")
    rows["bucket_index"] = rows.metric.str.slice(len("train_loss_b")).astype(int)
    rows["bucket"] = rows.bucket_index.map(lambda k: NAMES[k])
    rows["label"] = rows["label"].astype(str).str.replace("data_options.", "", regex=False) if "label" in rows.columns else "this run"
    if "current" not in rows.columns:
        rows["current"] = True
    last = rows[rows.step == rows.groupby("run").step.transform("max")]
    opacity = alt.condition("datum.current", alt.value(1.0), alt.value(0.3))
    profile = alt.Chart(last[["run", "label", "current", "bucket", "value", "step"]]).mark_line(point=True).encode(
        x=alt.X("bucket:N", sort=NAMES, title="target frequency bucket", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("value:Q", title="training cross-entropy"),
        color=alt.Color("label:N", title=None, legend=alt.Legend(orient="bottom", columns=1, labelLimit=600)),
        detail="run:N", opacity=opacity,
        tooltip=["label:N", "bucket:N", "step:Q", alt.Tooltip("value:Q", format=".3f")],
    ).properties(width=W, height=H, title="training loss by target frequency (latest step)")
    now = rows[rows.current.astype(bool)]
    if now.step.nunique() < 3:
        return profile
    curves = alt.Chart(now[["run", "step", "bucket", "value"]]).mark_line().encode(
        x=alt.X("step:Q"), y=alt.Y("value:Q", title="training cross-entropy"),
        color=alt.Color("bucket:N", title="bucket", scale=BUCKET_SCALE, sort=NAMES), detail="run:N",
    ).properties(width=W, height=H, title="this run, over steps")
    return alt.hconcat(curves, profile).resolve_scale(color="independent")

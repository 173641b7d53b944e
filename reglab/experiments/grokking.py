"""Grokking: weight decay, Softmax Collapse and its remedies (⊥Grad, StableMax), corrupted labels, and a
regime map over weight decay × step size.

Modular addition a + b mod p: all p² pairs as concatenated one-hot vectors (length 2p); a `train_fraction`
of them trains, the rest tests. An MLP with two hidden ReLU layers of `width` is trained full batch with
AdamW (decoupled weight decay λ on the weight matrices); `rank` r factorizes the input layer
(2p → r → width), an embedding of size r. Adam runs at the Softmax Collapse paper's settings (Prieto et al.'s
code: ε = 1e-25, β₂ = 0.99): a large ε damps exactly the tiny-gradient updates that drive the logits to collapse.
Each experiment is one `train` call of one batched ensemble.

1. **Grokking.** With weight decay the training set is fitted early and the test set, if at all, much later.
2. **Softmax Collapse** (Prieto et al. 2025). At λ = 0 the logits grow until the float32 softmax of the
   labelled class rounds to exactly 1: that sample's loss and gradient are then exactly zero
   (`zero_grad_frac`; `logit_norm` tracks the growth). The λ = 0 control trains `collapse_steps` steps and is
   judged on the largest fraction over training (a loss spike follows the collapse). The remedies, at λ = 0:
   ⊥AdamW (the gradient's component along the weights removed and the rest rescaled to the gradient's norm)
   and StableMax (s(z) = z + 1 for z ≥ 0, 1/(1 − z) below, for exp; the loss in float64). StableMax needed
   80,000–100,000 full-batch epochs in the paper, far beyond this budget: its verdict is informational.
3. **Corrupted labels** (Doshi et al., "To grok or not to grok"). With a fraction ξ of wrong training labels
   and enough weight decay the net generalizes and "unlearns" them: train accuracy falls back to about
   1 − ξ while the corrupted rows get the rule's answer. Its own settings: train fraction 0.6, λ = 6.
4. **Regime map** over weight decay × step size, one ensemble, each cell labelled by `regime`.
"""
from __future__ import annotations

import math

import altair as alt
import pandas as pd
import torch

from .. import charts
from ..claims import above, at_least, at_most, below, every_seed, key, per_seed, verdict
from ..config import Interval, ListOf, OneOf, RunConfig, validate
from ..data import make_dataset
from ..engine import train
from ..losses import stablemax
from ..theme import DEVICE, POSITIVE, SEED, SEEDS, Exploration, Param, Theme

REMEDIES = ("orthogonal", "stablemax")
VARIANTS = {"orthogonal": "⊥AdamW, λ = 0", "stablemax": "StableMax, λ = 0"}
LOSS_NAMES = {"ce": "softmax", "stablemax_ce": "StableMax"}
REGIMES = ("no learning", "memorizes", "groks", "generalizes", "diverged")
REGIME_COLORS = ("#bdbdbd", "#e8a33d", "#3b75af", "#59a14f", charts.DIVERGED_COLOR)
PROBED = ("zero_grad_frac", "logit_norm", "train_acc_clean", "corrupted_memorized", "corrupted_corrected")

# thresholds and the rules of the claims (and of the regime map)
TRAIN_FIT, TEST_GEN, DELAY, NO_GEN, UNLEARN_TOL = 0.99, 0.90, 3.0, 0.10, 0.05
FITTED = at_least(TRAIN_FIT)  # the training set is fitted: train accuracy
GENERALIZED = at_least(TEST_GEN)  # test accuracy
LATE = at_least(DELAY)  # step(test ≥ 90 %) / step(train ≥ 99 %)
GROKS = every_seed(LATE)
GENERALIZES = every_seed(GENERALIZED)  # final test accuracy
NO_GENERALIZATION = every_seed(below(NO_GEN))  # highest test accuracy at λ = 0
COLLAPSE_RISES = every_seed(above(0))  # largest − initial exactly-zero-gradient fraction over training
UNLEARNS = every_seed(at_most(UNLEARN_TOL))  # |final train accuracy − (1 − ξ)|
STABLEMAX_EPOCHS = "80,000–100,000"  # Prieto et al.'s StableMax grokking runs at λ = 0

RATE = Interval(float, 0, 1e3)
THEME = Theme("04_grokking", {
    "step_size": Param(0.02, POSITIVE, "AdamW step size η", label="step size η", log=True, slider=(1e-3, 0.2)),
    "weight_decay": Param(2.0, RATE, "decoupled weight decay λ (the same seeds also train without decay)",
                          label="weight decay λ", log=True, slider=(1e-2, 10), off=(0.0, "λ = 0")),
    "batch_size": Param(None, Interval(int, 1, 100_000, allow_none=True), "batch size (None: full batch)"),
    "rank": Param(None, Interval(int, 1, 100_000, allow_none=True), "embedding size r (None: no bottleneck)",
                  slider=(1, 128)),
    "width": Param(128, Interval(int, 1, 4096), "hidden width"),
    "p": Param(59, Interval(int, 3, 200), "modulus p", field="data_options.p", slider=(11, 67)),
    "train_fraction": Param(0.4, Interval(float, 0, 1, closed="neither"), "fraction of the p² pairs that trains",
                            label="train fraction", field="data_options.train_fraction", slider=(0.2, 0.8)),
    "loss": Param("ce", OneOf(("ce", "stablemax_ce")), "cross-entropy of softmax (ce) or StableMax", label="loss",
                  labels=("softmax", "StableMax")),
    "steps": Param(500, Interval(int, 1, 10**6), "training steps", slider=(100, 3000)),
    "adam_eps": Param(1e-25, Interval(float, 0, 1, closed="right"), "Adam's ε (Prieto et al.'s code: 1e-25)",
                      label="Adam ε", log=True),
    "adam_beta2": Param(0.99, Interval(float, 0, 1, closed="left"), "Adam's β₂ (Prieto et al.'s code: 0.99)",
                        label="Adam β₂"),
    "collapse_steps": Param(2000, Interval(int, 1, 10**6, allow_none=True),
                            "steps of the softmax λ = 0 control (None: steps)"),
    "remedies": Param(list(REMEDIES), ListOf(OneOf(REMEDIES), at_least=0), "Softmax Collapse remedies, at λ = 0"),
    "corrupt_fraction": Param(0.1, Interval(float, 0, 0.9), "corrupted fraction ξ of the training labels (0: skip)",
                              label="corrupted fraction ξ", field="data_options.corrupt_fraction", slider=(0, 0.5)),
    "corrupt_train_fraction": Param(0.6, Interval(float, 0, 1, closed="neither"),
                                    "train fraction of the corrupted-labels experiment"),
    "corrupt_weight_decay": Param(6.0, RATE, "weight decay λ of the corrupted-labels experiment"),
    "corrupt_steps": Param(800, Interval(int, 1, 10**6, allow_none=True), "steps with corrupted labels (None: steps)"),
    "map_weight_decays": Param([0.0, 2.0, 6.0], ListOf(RATE, at_least=0), "the regime map's λ values"),
    "map_step_sizes": Param([0.02, 0.05], ListOf(Interval(float, 0, 10, closed="right"), at_least=0), "the map's η"),
    "map_steps": Param(500, Interval(int, 1, 10**6, allow_none=True), "steps of the regime map (None: steps)"),
    "seeds": SEEDS,
    "seed": SEED,
    "device": DEVICE,
})
CONFIG_PARAMS = ("step_size", "weight_decay", "batch_size", "rank", "width", "p", "train_fraction", "loss", "steps",
                 "adam_eps", "adam_beta2", "seed", "device")  # the base RunConfig's (ξ = 0: clean labels to start)
EXPLORER_CONTROLS = {  # besides the common batch size (λ declared: its slider reaches the corrupted-labels λ = 6)
    **{n: THEME.params[n] for n in ("step_size", "weight_decay", "rank", "steps", "seed", "p", "train_fraction",
                                    "corrupt_fraction", "loss")},
    "orthogonal_grad": Param(False, OneOf((False, True)), "⊥Grad: AdamW on the gradient with its component along "
                             "the weights removed", label="⊥Grad (⊥AdamW)")}


def config(orthogonal_grad: bool = False, **values) -> RunConfig:
    """Modular addition mod p and an MLP [width, width] trained by AdamW; `values` are declared parameters
    (checked, the rest at their defaults; ξ is 0 unless given). Bad values raise ConfigError."""
    v = THEME.validate({"corrupt_fraction": 0.0, **values}, owner="grokking.config")
    options = {"p": v["p"], "train_fraction": v["train_fraction"], "corrupt_fraction": v["corrupt_fraction"]}
    cfg = RunConfig(data="modular", data_options=options, model="mlp", width=v["width"], depth=2, rank=v["rank"],
                    rank_layer=0, loss=v["loss"], optimizer="adamw", step_size=v["step_size"],
                    batch_size=v["batch_size"], weight_decay=v["weight_decay"], orthogonal_grad=orthogonal_grad,
                    adam_eps=v["adam_eps"], betas=(0.9, v["adam_beta2"]),
                    seed=v["seed"], device=v["device"], **_budget(v["steps"]))
    return validate(cfg, n_train=make_dataset("modular", None, cfg.data_seed, **options).n_train)


def _budget(steps: int) -> dict:
    """`steps` and 50 evaluations (every 10 steps at 500): fine enough to time the jumps."""
    return {"steps": steps, "eval_every": max(1, int(steps) // 50)}


# ---------------------------------------------------------------------------------------------
# pure metrics


def true_class_probability(logits: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """Probability of the labelled class as the loss computes it: the float32 softmax for "ce",
    s(z_y) / Σ s(z) in float64 for "stablemax_ce". logits [M, B, C], y [B] or [M, B] -> [M, B]."""
    z = logits.detach().to(torch.float32)
    idx = (y if y.dim() == 2 else y.unsqueeze(0).expand(z.shape[0], -1)).unsqueeze(-1)
    if loss == "stablemax_ce":
        s = stablemax(z.to(torch.float64))
        return s.gather(-1, idx).squeeze(-1) / s.sum(-1)
    return torch.softmax(z, -1).gather(-1, idx).squeeze(-1)


def zero_gradient_fraction(logits: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """Fraction of samples whose float32 probability of the labelled class is exactly 1 (Softmax
    Collapse): their loss is exactly 0 and the gradient along the true logit, p_y − 1, exactly zero. [M]"""
    return (true_class_probability(logits, y, loss) == 1.0).to(torch.float32).mean(-1)


def first_step(steps, values, threshold: float):
    """The first step at which the value is ≥ threshold, else None (missing values never count)."""
    return next((int(s) for s, v in zip(steps, values) if at_least(threshold)(v)), None)


def delay_ratio(step_train, step_test):
    """step(test ≥ 90 %) / step(train ≥ 99 %) (a step-0 fit counts as step 1); None when either never happened."""
    return None if pd.isna(step_train) or pd.isna(step_test) else float(step_test) / max(float(step_train), 1.0)


def regime(final_train, final_test, step_train, step_test, diverged: bool = False) -> str:
    """The regime map's cell label: diverged (the loss blew up); groks (final test ≥ 90 %, reached at least 3×
    later than train reached 99 %) or else generalizes (final test ≥ 90 %); memorizes (final train ≥ 99 %,
    final test < 90 %); no learning (final train < 99 %, final test < 90 %)."""
    if diverged:
        return "diverged"
    if GENERALIZED(final_test):
        return "groks" if LATE(delay_ratio(step_train, step_test)) else "generalizes"
    return "memorizes" if FITTED(final_train) else "no learning"


def embedding(params: dict) -> torch.Tensor:
    """The input layer's weights, one row per one-hot input: W0, or U0 V0 with an embedding bottleneck.
    [M, 2p, width]"""
    return params["W0"] if "W0" in params else params["U0"] @ params["V0"]


def fourier_power(embedding: torch.Tensor, p: int) -> torch.Tensor:
    """The embeddings' power per frequency k = 1 … ⌊p/2⌋ (fraction of the non-constant power): the DFT over
    the p tokens of each operand's rows (a: rows 0 … p − 1, b: rows p … 2p − 1), |·|² summed over the
    embedding's columns and both operands. A net that solved a + b mod p concentrates it on a few k. [M, ⌊p/2⌋]"""
    e = embedding.detach().to(torch.float64)
    spectra = [torch.fft.rfft(part, dim=1).abs().pow(2).sum(-1)[:, 1:p // 2 + 1] for part in (e[:, :p], e[:, p:2 * p])]
    power = spectra[0] + spectra[1]
    return (power / power.sum(-1, keepdim=True).clamp_min(1e-300)).to(torch.float32)


def top_share(spectrum: torch.Tensor, k: int = 5) -> torch.Tensor:
    """The share of the power held by the k strongest frequencies. spectrum [M, F] -> [M]"""
    return spectrum.topk(min(k, spectrum.shape[-1]), dim=-1).values.sum(-1)


def true_labels(x: torch.Tensor, p: int, op: str = "+") -> torch.Tensor:
    """The rule's answer a∘b mod p for one-hot pairs x [n, 2p] (what a corrupted row should say)."""
    a, b = x[:, :p].argmax(-1), x[:, p:].argmax(-1)
    return {"+": a + b, "-": a - b, "*": a * b}[op] % p


# ---------------------------------------------------------------------------------------------
# probes (run at every evaluation) and the explorer's run


def collapse_probe(state) -> dict:
    """Softmax Collapse on the training set: the exactly-zero-gradient fraction and the mean logit norm."""
    with torch.no_grad():
        z = state.model(state.params, state.data.x_train)
        return {"zero_grad_frac": zero_gradient_fraction(z, state.data.y_train, state.loss_name),
                "logit_norm": z.norm(dim=-1).mean(-1)}


def fourier_probe(state) -> dict:
    """The embeddings' Fourier spectrum: `fourier_k`, the share of the power at frequency k (k = 1 … ⌊p/2⌋)."""
    spectrum = fourier_power(embedding(state.params), state.data.info["p"])
    return {f"fourier_{k + 1}": spectrum[:, k] for k in range(spectrum.shape[1])}


def corruption_probe(state) -> dict:
    """Accuracy on the clean training rows (train_acc_clean) and, on the corrupted rows, the fraction
    predicted with their wrong label (corrupted_memorized) or with the rule's answer (corrupted_corrected)."""
    data = state.data
    mask = data.info.get("corrupted", torch.zeros(data.n_train, dtype=torch.bool)).to(data.x_train.device)
    with torch.no_grad():
        pred = state.model(state.params, data.x_train).argmax(-1)  # [M, n]
    out = {"train_acc_clean": (pred[:, ~mask] == data.y_train[~mask]).float().mean(-1)}
    if bool(mask.any()):
        rule = true_labels(data.x_train, data.info["p"], state.configs[0].data_options.get("op", "+"))
        out["corrupted_memorized"] = (pred[:, mask] == data.y_train[mask]).float().mean(-1)
        out["corrupted_corrected"] = (pred[:, mask] == rule[mask]).float().mean(-1)
    return out


def explore(config: RunConfig, on_eval=None, stop=None, start=None):
    """The explorer's run: one config with the collapse and Fourier probes (and the corruption probe when ξ > 0)."""
    probes = [collapse_probe, fourier_probe] + ([corruption_probe] if config.data_options.get("corrupt_fraction", 0)
                                                else [])
    return train(config, probes=probes, on_eval=on_eval, stop=stop, start=start, progress=False)


# ---------------------------------------------------------------------------------------------
# tidy frames and per-member summaries


def tidy(run, variant: str, offset: int = 0) -> pd.DataFrame:
    """A run's tidy history with each member's seed, λ, η and a `variant`; run ids shifted by `offset`."""
    f = charts.tidy(run).merge(run.summary[["run", "seed", "weight_decay", "step_size"]], on="run")
    return f.assign(run=f.run + offset, variant=variant)


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per member: variant, seed, λ, η, final and peak accuracies, the steps where train first reached 99 %
    and test 90 %, their ratio, the regime, diverged_at, the probes' final values (zero_grad_frac also at the start
    and its largest value)."""
    rows = []
    for r, g in frame.groupby("run"):
        first, s = g.iloc[0], {m: gm.sort_values("step") for m, gm in g.groupby("metric")}
        final = lambda m: float(s[m].value.dropna().iloc[-1]) if m in s and s[m].value.notna().any() else math.nan
        reach = lambda m, t: first_step(s[m].step, s[m].value, t) if m in s else None
        row = {"run": int(r), "variant": first["variant"], "seed": int(first["seed"]),
               "weight_decay": float(first["weight_decay"]), "step_size": float(first["step_size"]),
               "final_train": final("train_acc"), "final_test": final("test_acc"),
               "max_test": float(s["test_acc"].value.max()) if "test_acc" in s else math.nan,
               "step_train_99": reach("train_acc", TRAIN_FIT), "step_test_90": reach("test_acc", TEST_GEN),
               "diverged_at": None if pd.isna(first["diverged_at"]) else int(first["diverged_at"])}
        row["delay_ratio"] = delay_ratio(row["step_train_99"], row["step_test_90"])
        row["regime"] = regime(row["final_train"], row["final_test"], row["step_train_99"], row["step_test_90"],
                               row["diverged_at"] is not None)
        if "zero_grad_frac" in s:
            row["zero_grad_start"] = float(s["zero_grad_frac"].value.iloc[0])
            row["zero_grad_max"] = float(s["zero_grad_frac"].value.max())
        rows.append(row | {m: final(m) for m in PROBED if m in s})
    return pd.DataFrame(rows).astype({"step_train_99": "Int64", "step_test_90": "Int64", "delay_ratio": float,
                                      "diverged_at": "Int64"})


def _per_seed(result, name: str, values, seeds) -> None:
    result.metrics.update(per_seed(name, [None if pd.isna(v) else round(float(v), 4) for v in values], seeds))


def _seed_claim(result, id: str, sentence: str, rows: pd.DataFrame, values, rule, shown=None, note: str = "",
                informational: bool = False) -> None:
    """A claim on every seed's value (`rows`: the summary rows, one per seed). Metrics: `id@seed=s` (of
    `shown` when given, e.g. the accuracy a gap is measured from) and `id_seeds_held`."""
    values = [None if pd.isna(v) else float(v) for v in values]
    _per_seed(result, id, values if shown is None else shown, rows.seed)
    result.metrics[f"{id}_seeds_held"] = sum(rule([v]) for v in values)
    diverged = {f"seed {s}": None if pd.isna(d) else int(d) for s, d in zip(rows.seed, rows.diverged_at)}
    result.claims.append(verdict(id, sentence, values, rule, note=note, diverged=diverged, informational=informational))


# ---------------------------------------------------------------------------------------------
# the one call the notebook makes


@THEME.run
def run(p, result) -> None:
    """Experiments 1–4, each one `train` call of one ensemble. Seeds seed … seed + seeds − 1 are members;
    `remedies` picks the λ = 0 remedies trained; empty map lists or corrupt_fraction = 0 skip 4 and 3."""
    base = config(**{n: getattr(p, n) for n in CONFIG_PARAMS})
    seeds, name, lam = list(range(p.seed, p.seed + p.seeds)), LOSS_NAMES[p.loss], f"λ = {p.weight_decay:g}"
    remedies = [r for r in p.remedies if not (r == "stablemax" and p.loss == "stablemax_ce")]  # λ = 0 is StableMax

    # 1: grokking at λ; 2: the same seeds at λ = 0 for `collapse_steps`, and the remedies at λ = 0
    spectral = [collapse_probe, fourier_probe]
    with result.timed("grokking"):
        r = result.runs["grokking"] = train([base.replace(seed=s) for s in seeds], probes=spectral)
    parts = [tidy(r, f"{name}, {lam}")]
    collapse_steps = p.collapse_steps or p.steps
    if p.weight_decay > 0:
        with result.timed("collapse"):
            cfg = base.replace(weight_decay=0.0, **_budget(collapse_steps))
            r = result.runs["collapse"] = train([cfg.replace(seed=s) for s in seeds], probes=spectral)
        parts.append(tidy(r, f"{name}, λ = 0", offset=int(parts[-1].run.max()) + 1))
    for remedy in remedies:
        changes = {"loss": "ce", "orthogonal_grad": True} if remedy == "orthogonal" else {"loss": "stablemax_ce"}
        with result.timed(remedy):
            r = result.runs[remedy] = train([base.replace(weight_decay=0.0, seed=s, **changes) for s in seeds],
                                            probes=[collapse_probe])
        parts.append(tidy(r, VARIANTS[remedy], offset=int(parts[-1].run.max()) + 1))
    history = result.frames["history"] = pd.concat(parts, ignore_index=True)
    table = result.frames["summary"] = summarize(history)
    rows = lambda variant: table[table.variant == variant].sort_values("seed")
    main, zero = rows(f"{name}, {lam}"), rows(f"{name}, λ = 0")

    _seed_claim(result, "delay_ratio", f"grokking ({name}, {lam}): step(test ≥ 90 %) ≥ 3 × step(train ≥ 99 %) "
                "for every seed", main, main.delay_ratio, GROKS)
    _per_seed(result, "step_train99", main.step_train_99, main.seed)
    _per_seed(result, "step_test90", main.step_test_90, main.seed)
    _seed_claim(result, "final_test", f"with weight decay ({lam}) the final test accuracy is ≥ 90 % for every seed",
                main, main.final_test, GENERALIZES)
    if p.weight_decay > 0 and len(zero):
        _seed_claim(result, "lambda0_max_test", f"{name}, λ = 0: test accuracy stays < 10 % within {collapse_steps} "
                    "steps for every seed", zero, zero.max_test, NO_GENERALIZATION)
        if p.loss == "ce":
            _seed_claim(result, "lambda0_zero_grad", f"softmax, λ = 0 (Adam ε = {p.adam_eps:g}, β₂ = "
                        f"{p.adam_beta2:g}): the fraction of training samples with exactly zero float32 gradient "
                        f"rises within {collapse_steps} steps (its largest value above its initial one), every seed",
                        zero, zero.zero_grad_max - zero.zero_grad_start, COLLAPSE_RISES, shown=zero.zero_grad_max)
    for remedy in remedies:
        informational = remedy == "stablemax"  # the paper's StableMax runs are ~100× longer than this budget
        note = (f"faithful non-reproduction at this budget: Prieto et al. trained StableMax at λ = 0 for "
                f"{STABLEMAX_EPOCHS} full-batch epochs; here {p.steps} steps") if informational else ""
        _seed_claim(result, f"{remedy}_final_test", f"{VARIANTS[remedy]}: final test accuracy ≥ 90 % for every seed",
                    rows(VARIANTS[remedy]), rows(VARIANTS[remedy]).final_test, GENERALIZES, note=note,
                    informational=informational)
    if remedies:  # THEMES.md: StableMax or ⊥Grad restores grokking without weight decay
        best = pd.concat([rows(VARIANTS[r]).set_index("seed").final_test for r in remedies], axis=1).max(axis=1)
        either = rows(VARIANTS[remedies[0]]).assign(final_test=best.reindex(rows(VARIANTS[remedies[0]]).seed).values)
        names = " or ".join(VARIANTS[r].split(",")[0] for r in remedies[::-1])
        _seed_claim(result, "remedy_final_test", f"{names} at λ = 0 reaches final test accuracy ≥ 90 % (the better "
                    "of them, every seed)", either, either.final_test, GENERALIZES)

    # 3: corrupted labels, at their own settings (a train fraction and λ where the net can unlearn them)
    if p.corrupt_fraction > 0:
        cfg = config(**{**{n: getattr(p, n) for n in CONFIG_PARAMS}, "corrupt_fraction": p.corrupt_fraction,
                        "train_fraction": p.corrupt_train_fraction, "weight_decay": p.corrupt_weight_decay})
        cfg = cfg.replace(**_budget(p.corrupt_steps or p.steps))
        with result.timed("corrupted"):
            r = result.runs["corrupted"] = train([cfg.replace(seed=s) for s in seeds], probes=[corruption_probe])
        xi = f"ξ = {p.corrupt_fraction:g}"
        setting = f"{xi}, train fraction {p.corrupt_train_fraction:g}, λ = {p.corrupt_weight_decay:g}"
        result.frames["corrupted"] = tidy(r, xi)
        c = result.frames["corrupted_summary"] = summarize(result.frames["corrupted"])
        _seed_claim(result, "corrupted_final_train", f"corrupted labels ({setting}): final train accuracy within "
                    f"{UNLEARN_TOL:g} of 1 − ξ for every seed", c, (c.final_train - (1 - p.corrupt_fraction)).abs(),
                    UNLEARNS, shown=c.final_train)
        _seed_claim(result, "corrupted_final_test", f"corrupted labels ({setting}): final test accuracy ≥ 90 % for "
                    "every seed", c, c.final_test, GENERALIZES)
        if "corrupted_memorized" in c:
            _per_seed(result, "corrupted_memorized", c.corrupted_memorized, c.seed)

    # 4: regime map
    if p.map_weight_decays and p.map_step_sizes:
        cells = [base.replace(weight_decay=float(w), step_size=float(eta), **_budget(p.map_steps or p.steps))
                 for w in p.map_weight_decays for eta in p.map_step_sizes]
        with result.timed("map"):  # every (λ, η) cell one member, at the base seed
            r = result.runs["map"] = train(cells, probes=[collapse_probe])
        result.frames["map_history"] = tidy(r, "map")
        cells = result.frames["map"] = summarize(result.frames["map_history"])
        counts = cells.regime.value_counts()
        result.metrics.update({key(f"map_{g.replace(' ', '_')}"): int(counts.get(g, 0)) for g in REGIMES})

    seed_rows = [(*k.split("@seed="), v) for k, v in result.metrics.items() if "@seed=" in k]
    result.frames["per_seed"] = pd.DataFrame(seed_rows, columns=["metric", "seed", "value"]).pivot(
        index="metric", columns="seed", values="value")  # the per-seed metrics as a table
    first = history[history.run == 0][["run", "step", "metric", "value", "diverged_at"]]  # seed `seed` at λ
    result.exploration = Exploration(base, chart, run=explore, controls=EXPLORER_CONTROLS, initial=first,
                                     presets=PRESETS, learned=learned)


# ---------------------------------------------------------------------------------------------
# charts: compositions of reglab.charts builders over the tidy frames


def grokking_chart(history: pd.DataFrame, summary: pd.DataFrame) -> alt.HConcatChart:
    """Train and test accuracy against step, one line per seed, one panel per weight decay of the grokking
    runs; dotted rules at the median steps where train reached 99 % and test 90 %."""
    main_loss = history.variant.iloc[0].split(",")[0]  # the grokking runs come first: "softmax" or "StableMax"
    panels = []
    for v in [v for v in history.variant.unique() if v.split(",")[0] == main_loss]:
        s = summary[summary.variant == v]
        rules = [charts.vertical_rule(s[col].median(), text) for col, text in
                 (("step_train_99", "train ≥ 99 %"), ("step_test_90", "test ≥ 90 %")) if s[col].notna().any()]
        panels.append(charts.layer(charts.curves(history[history.variant == v], ["train_acc", "test_acc"], title=v,
                                                 y_title="accuracy"), *rules))
    return charts.row(*panels)


def collapse_chart(history: pd.DataFrame) -> alt.HConcatChart:
    """Test accuracy, the exactly-zero-gradient fraction and the mean logit norm (log scale) against step,
    coloured by variant (λ with softmax, λ = 0 with softmax, and the remedies at λ = 0), one line per seed."""
    panels = (("test_acc", "test accuracy"), ("zero_grad_frac", "exactly-zero-gradient fraction"),
              ("logit_norm", "mean logit norm (log scale)"))
    return charts.row(*(charts.curves(history, m, color="variant", log_y=m == "logit_norm", title=t, y_title=t,
                                      width=240) for m, t in panels))


def corrupted_chart(frame: pd.DataFrame, corrupt_fraction: float) -> alt.LayerChart:
    """Corrupted labels: train, test, clean-train accuracy and, on the corrupted rows, the fraction still
    predicted with the wrong label (memorized) or with the rule (corrected); a dashed rule at 1 − ξ."""
    names = {"train_acc": "train (all rows)", "test_acc": "test", "train_acc_clean": "train, clean rows",
             "corrupted_memorized": "corrupted rows: wrong label kept",
             "corrupted_corrected": "corrupted rows: rule's answer"}
    rows = frame[frame.metric.isin(list(names))].assign(metric=lambda f: f.metric.map(names))
    lines = charts.curves(rows, list(names.values()), y_title="accuracy / fraction", width=420, height=230,
                          title=f"{corrupt_fraction:.0%} of training labels corrupted")
    return charts.layer(lines, charts.reference_rule(1 - corrupt_fraction, f"1 − ξ = {1 - corrupt_fraction:g}"))


def regime_chart(cells: pd.DataFrame) -> alt.LayerChart:
    """The regime map: one cell per (η, λ), coloured by regime, with the final test accuracy written in."""
    rows = cells.assign(text=[f"test {t:.2f}" if not pd.isna(t) else "—" for t in cells.final_test])
    return category_map(rows, "step_size", "weight_decay", "regime", REGIMES, REGIME_COLORS, x_title="step size η",
                        y_title="weight decay λ", title="regime after the budget",
                        tooltip=("final_train", "final_test", "delay_ratio"))


def chart(frame: pd.DataFrame, config: RunConfig | None = None) -> alt.HConcatChart:
    """The explorer's chart: train/test accuracy, the zero-gradient fraction and the logit norm of one run
    (and the corrupted rows when ξ > 0)."""
    panels = ((["train_acc", "test_acc"], "accuracy"), (["zero_grad_frac"], "fraction with exactly zero gradient"),
              (["logit_norm"], "mean logit norm"), (["corrupted_memorized", "corrupted_corrected"], "corrupted rows"))
    return charts.row(*(charts.curves(frame, m, title=t, y_title=t, log_y=m == ["logit_norm"], width=220)
                        for m, t in panels if m[0] in set(frame.metric))).resolve_scale(color="independent")


def spectrum_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The `fourier_k` rows of a tidy frame as (run, step, frequency, share)."""
    rows = frame[frame.metric.astype(str).str.startswith("fourier_")]
    return pd.DataFrame({"run": rows.run.to_numpy(), "step": rows.step.to_numpy(),
                         "frequency": rows.metric.str.slice(len("fourier_")).astype(int).to_numpy(),
                         "share": rows.value.to_numpy(dtype=float)})


def fourier_chart(frame: pd.DataFrame, title: str = "embedding spectrum", width: int = 300,
                  height: int = 200) -> alt.HConcatChart:
    """What the embedding learned: the share of its power at each frequency k over training (cells: step × k)
    and at the last step (bars), for the last run of the frame; "top 5" is the share of the 5 strongest k."""
    spec = spectrum_frame(frame)
    if spec.empty:
        return charts.empty("no embedding spectrum in this run", width=width)
    spec = spec[spec.run == spec.run.max()].dropna()
    last = spec[spec.step == spec.step.max()]
    top = last.share.nlargest(5).sum()
    cells = alt.Chart(charts.inline(spec)).mark_rect().encode(
        x=alt.X("step:Q", bin=alt.Bin(maxbins=50), title="step"),
        y=alt.Y("frequency:O", title="frequency k", sort="descending", axis=alt.Axis(labelOverlap=True)),
        color=alt.Color("share:Q", title="share of power", scale=alt.Scale(domain=[0, 0.5], clamp=True,
                                                                             scheme="viridis")),
        tooltip=["step:Q", "frequency:O", alt.Tooltip("share:Q", format=".3f")]).properties(
        width=width, height=height, title=f"{title} over training")
    bars = alt.Chart(charts.inline(last)).mark_bar().encode(
        x=alt.X("frequency:O", title="frequency k", axis=alt.Axis(labelOverlap=True)),
        y=alt.Y("share:Q", title="share of power", scale=alt.Scale(domain=[0, 1])),
        tooltip=["frequency:O", alt.Tooltip("share:Q", format=".3f")]).properties(
        width=width, height=height, title=f"at step {int(last.step.max()) if len(last) else 0}: top 5 hold {top:.0%}")
    return charts.row(cells, bars)


def _spectral_runs(history: pd.DataFrame) -> list:
    """(variant, seed, the run's rows) for every run with an embedding spectrum, in variant order."""
    spectral = history[history.metric.astype(str).str.startswith("fourier_")]
    out = []
    for variant in spectral.variant.unique():
        for run in sorted(spectral[spectral.variant == variant].run.unique()):
            rows = history[history.run == run]
            out.append((variant, int(rows.seed.iloc[0]), rows))
    return out


def spectra_chart(history: pd.DataFrame, seed: int) -> alt.VConcatChart:
    """The embedding spectrum (fourier_chart) of one seed for each variant that records it (λ, then λ = 0)."""
    panels = [fourier_chart(rows, variant) for variant, s, rows in _spectral_runs(history) if s == seed]
    return alt.vconcat(*panels) if panels else charts.empty("no embedding spectrum recorded")


def spectrum_text(history: pd.DataFrame, k: int = 5) -> str:
    """One sentence per variant: the share of the embedding's power held by its k strongest frequencies at the
    last step, per seed, beside what a flat spectrum would give."""
    shares, n_freq = {}, None
    for variant, s, rows in _spectral_runs(history):
        spec = spectrum_frame(rows)
        last = spec[spec.step == spec.step.max()]
        n_freq = len(last)
        shares.setdefault(variant, []).append((s, float(last.share.nlargest(k).sum())))
    if not shares:
        return "No embedding spectrum was recorded."
    lines = [f"**{v}:** the {k} strongest frequencies hold "
             + ", ".join(f"{x:.0%}" for _, x in vals) + f" of the power (seeds {', '.join(str(s) for s, _ in vals)})."
             for v, vals in shares.items()]
    return "\n\n".join(lines + [f"A flat spectrum over the {n_freq} frequencies would give {k / n_freq:.0%}."])


def collapse_text(result) -> str:
    """What the λ = 0 runs did, in numbers: the softmax control's largest exactly-zero-gradient fraction (and its
    step) and best test accuracy, and each remedy's final test accuracy, per seed."""
    p, table, history = result.params, result.frames["summary"], result.frames["history"]
    name, out = LOSS_NAMES[p["loss"]], []
    fmt = lambda xs: ", ".join(f"{x:.0%}" if not pd.isna(x) else "—" for x in xs)
    zero = table[table.variant == f"{name}, λ = 0"].sort_values("seed")
    if p["weight_decay"] > 0 and len(zero):
        seeds = ", ".join(str(s) for s in zero.seed)
        text = (f"**{name}, λ = 0** ({p['collapse_steps'] or p['steps']} steps, Adam ε = {p['adam_eps']:g}, "
                f"β₂ = {p['adam_beta2']:g}), seeds {seeds}: best test accuracy {fmt(zero.max_test)}")
        if "zero_grad_max" in zero:
            frac = history[(history.variant == f"{name}, λ = 0") & (history.metric == "zero_grad_frac")]
            peaks = [int(g.loc[g.value.idxmax(), "step"]) if g.value.max() > 0 else None
                     for _, g in frac.groupby("seed")]
            text += (f"; largest exactly-zero-gradient fraction {fmt(zero.zero_grad_max)} (at steps "
                     f"{', '.join('—' if s is None else str(s) for s in peaks)}), final {fmt(zero.zero_grad_frac)}")
        out.append(text + ".")
    for remedy in REMEDIES:
        rows = table[table.variant == VARIANTS[remedy]].sort_values("seed")
        if len(rows):
            out.append(f"**{VARIANTS[remedy]}** ({p['steps']} steps): final test accuracy {fmt(rows.final_test)}"
                       + (f"; the paper's StableMax runs take {STABLEMAX_EPOCHS} full-batch epochs."
                          if remedy == "stablemax" else "."))
    return "\n\n".join(out) or "No λ = 0 runs at these settings."


def learned(frame: pd.DataFrame, config: RunConfig | None = None) -> alt.HConcatChart:
    """The explorer's view of what the model learned: the Fourier spectrum of the input embeddings. A net
    that solved a + b mod p with the Fourier algorithm puts its embeddings' power on a few frequencies."""
    return fourier_chart(frame, "embedding spectrum")


PRESETS = {  # the explorer's guided scenarios
    "grokking needs λ": {
        "question": "With λ = 2, how much later than the training pairs are the held-out pairs right, and what "
                    "happens to the embedding spectrum then?",
        "values": {"weight_decay": 2.0, "orthogonal_grad": False, "loss": "ce", "steps": 1000},
        "lock": ("loss",)},
    "Softmax Collapse": {
        "question": "Without weight decay, when do exactly-zero gradients appear, and does the test accuracy move?",
        "values": {"weight_decay": 0.0, "orthogonal_grad": False, "loss": "ce", "steps": 2000},
        "lock": ("weight_decay",)},
    "⊥Grad without λ": {
        "question": "If the update may not grow the weights along themselves, does the net generalize at λ = 0?",
        "values": {"weight_decay": 0.0, "orthogonal_grad": True, "loss": "ce", "steps": 500},
        "lock": ("weight_decay",)},
    "unlearning wrong labels": {
        "question": "With 10 % wrong labels, train fraction 0.6 and λ = 6, does train accuracy fall back to 90 %?",
        "values": {"weight_decay": 6.0, "orthogonal_grad": False, "loss": "ce", "steps": 800,
                   "data_options.train_fraction": 0.6, "data_options.corrupt_fraction": 0.1},
        "hide": ("rank",)},
}


# ---------------------------------------------------------------------------------------------
# candidates for reglab.charts


def category_map(frame: pd.DataFrame, x: str, y: str, category: str, domain, colors, *, text: str = "text",
                 x_title: str | None = None, y_title: str | None = None, title: str | None = None,
                 tooltip=(), cell: tuple = (80, 55)) -> alt.LayerChart:
    """A sweep as cells coloured by a category (fixed domain and colours), `text` written in; y descending."""
    rows = frame[[x, y, category, text, *tooltip]].assign(**{c: frame[c].map(lambda v: f"{v:g}") for c in (x, y)})
    xs, ys = ([f"{v:g}" for v in sorted(frame[c].unique())] for c in (x, y))
    base = alt.Chart(charts.inline(rows)).encode(x=alt.X(f"{x}:O", sort=xs, title=x_title or x),
                                                 y=alt.Y(f"{y}:O", sort=ys[::-1], title=y_title or y))
    cells = base.mark_rect(stroke="white").encode(
        color=alt.Color(f"{category}:N", scale=alt.Scale(domain=list(domain), range=list(colors)), title=category),
        tooltip=[f"{x}:O", f"{y}:O", f"{category}:N", *(alt.Tooltip(f"{t}:Q", format=".3f") for t in tooltip)])
    return alt.layer(cells, base.mark_text(fontSize=11).encode(text=f"{text}:N")).properties(
        width=cell[0] * len(xs), height=cell[1] * len(ys), **({"title": title} if title else {}))

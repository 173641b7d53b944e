"""T4 · Grokking: weight decay, Softmax Collapse and its remedies (⊥Grad, StableMax), corrupted labels,
and a regime map over weight decay × step size.

Modular addition a + b mod p: all p² pairs as concatenated one-hot vectors (length 2p); a `train_fraction`
of them trains, the rest tests. An MLP with two hidden ReLU layers of `width` is trained full batch with
AdamW (decoupled weight decay λ on the weight matrices). `rank` r factorizes the input layer
(2p → r → width): an embedding of size r for each of a and b. Every experiment is one call of
`reglab.engine.train`; its seeds, λ values and sweep cells are members of one batched ensemble.

1. **Grokking.** With weight decay the training set is fitted within ~50 steps, the test set only several
   times later. The seeds at λ and at λ = 0 are one ensemble.
2. **Softmax Collapse** (Prieto et al. 2025). At λ = 0 the logits grow along the naive-loss-minimization
   direction; once the float32 softmax of the labelled class rounds to exactly 1, that sample's loss is
   exactly 0 and its gradient along the true logit (p_y − 1) exactly zero. `zero_gradient_fraction`
   counts such samples; `logit_norm` tracks the growth. The paper's remedies, both at λ = 0: ⊥AdamW
   (AdamW on the gradient with its component along the weights removed, `orthogonal_grad=True`) and
   StableMax (s(z) = z + 1 for z ≥ 0, 1/(1 − z) below, in place of exp).
3. **Corrupted labels** (Doshi et al., "To grok or not to grok"). A fraction ξ of the training labels is
   replaced by wrong ones. With enough weight decay the net generalizes and "unlearns" the corrupted
   labels: train accuracy falls back to about 1 − ξ while the corrupted rows get the rule's answer.
4. **Regime map** over weight decay × step size, one ensemble, each cell labelled by `regime`.
"""
from __future__ import annotations

import math
import time

import altair as alt
import pandas as pd
import torch

from .. import charts
from ..claims import Claim, Result, fmt_number
from ..config import Interval, OneOf, RunConfig, check, check_each, validate
from ..data import make_dataset
from ..engine import train
from ..losses import stablemax

# ---------------------------------------------------------------------------------------------
# defaults and thresholds (the notebook states them)

STEP_SIZE, WEIGHT_DECAY, WIDTH, P, TRAIN_FRACTION, STEPS = 0.02, 2.0, 128, 59, 0.4, 500
CORRUPT_FRACTION = 0.1
MAP_WEIGHT_DECAYS = (0.0, 2.0, 6.0)
MAP_STEP_SIZES = (0.02, 0.05)
REMEDIES = ("orthogonal", "stablemax")

TRAIN_FIT = 0.99  # the training set is fitted: train accuracy ≥ 99 %
TEST_GEN = 0.90  # generalization: test accuracy ≥ 90 %
DELAY = 3.0  # grokking: step(test ≥ 90 %) ≥ 3 × step(train ≥ 99 %)
NO_GEN = 0.10  # no generalization: test accuracy stays < 10 %
UNLEARN_TOL = 0.05  # unlearning: |final train accuracy − (1 − ξ)| ≤ 0.05
REGIMES = ("no learning", "memorizes", "groks", "generalizes", "diverged")
REGIME_COLORS = ("#bdbdbd", "#e8a33d", "#3b75af", "#59a14f", "#c0392b")
LOSSES = ("ce", "stablemax_ce")
LOSS_NAMES = {"ce": "softmax", "stablemax_ce": "StableMax"}
W, H = 300, 190


# ---------------------------------------------------------------------------------------------
# configs


def eval_every(steps: int) -> int:
    """50 evaluations per run (every 10 steps at 500): fine enough to time the jumps."""
    return max(1, int(steps) // 50)


def config(step_size: float = STEP_SIZE, batch_size: int | None = None, weight_decay: float = WEIGHT_DECAY,
           rank: int | None = None, width: int = WIDTH, p: int = P, train_fraction: float = TRAIN_FRACTION,
           corrupt_fraction: float = 0.0, loss: str = "ce", orthogonal_grad: bool = False, steps: int = STEPS,
           seed: int = 0, data_seed: int = 0, device: str = "auto") -> RunConfig:
    """Modular addition mod p and an MLP [width, width] trained by AdamW; `rank` r factorizes the input
    layer (one-hot pair → r → width), i.e. an embedding of size r. Bad values raise ConfigError."""
    check("loss", loss, OneOf(LOSSES), owner="grokking")
    check("p", p, Interval(int, 3, 200), owner="grokking")
    check("train_fraction", train_fraction, Interval(float, 0, 1, closed="neither"), owner="grokking")
    check("corrupt_fraction", corrupt_fraction, Interval(float, 0, 0.9), owner="grokking")
    options = {"p": int(p), "train_fraction": float(train_fraction), "corrupt_fraction": float(corrupt_fraction)}
    cfg = RunConfig(data="modular", data_options=options, data_seed=data_seed, model="mlp", width=width, depth=2,
                    rank=rank, rank_layer=0, loss=loss, optimizer="adamw", step_size=step_size,
                    batch_size=batch_size, weight_decay=weight_decay, orthogonal_grad=orthogonal_grad, steps=steps,
                    eval_every=eval_every(steps) if isinstance(steps, int) and steps >= 1 else 1, seed=seed,
                    device=device)
    return validate(cfg)


# ---------------------------------------------------------------------------------------------
# pure metrics


def true_class_probability(logits: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """Probability of the labelled class in float32, as the loss computes it: softmax for "ce",
    s(z_y) / Σ s(z) for "stablemax_ce". logits [M, B, C], y [B] or [M, B] -> [M, B]."""
    z = logits.detach().to(torch.float32)
    idx = (y if y.dim() == 2 else y.unsqueeze(0).expand(z.shape[0], -1)).unsqueeze(-1)
    if loss == "stablemax_ce":
        s = stablemax(z)
        return s.gather(-1, idx).squeeze(-1) / s.sum(-1)
    return torch.softmax(z, -1).gather(-1, idx).squeeze(-1)


def zero_gradient_fraction(logits: torch.Tensor, y: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """Fraction of samples whose float32 probability of the labelled class is exactly 1 (Softmax
    Collapse): their loss is exactly 0 and the gradient along the true logit, p_y − 1, exactly zero. [M]"""
    return (true_class_probability(logits, y, loss) == 1.0).to(torch.float32).mean(-1)


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def first_step(steps, values, threshold: float):
    """The first step at which the value is ≥ threshold, else None (missing values never count)."""
    for s, v in zip(steps, values):
        if not _missing(v) and v >= threshold:
            return int(s)
    return None


def delay_ratio(step_train, step_test):
    """step(test ≥ 90 %) / step(train ≥ 99 %); None when either never happened."""
    if _missing(step_train) or _missing(step_test):
        return None
    return float(step_test) / max(float(step_train), 1.0)


def regime(final_train, final_test, step_train, step_test, diverged: bool = False) -> str:
    """The cell label of the regime map:
    diverged — the loss blew up;
    generalizes — final test ≥ 90 % and test reached 90 % less than 3× later than train reached 99 %;
    groks — final test ≥ 90 % and test reached 90 % at least 3× later than train reached 99 %;
    memorizes — final train ≥ 99 % but final test < 90 %;
    no learning — final train < 99 % and final test < 90 %."""
    if diverged:
        return "diverged"
    if not _missing(final_test) and final_test >= TEST_GEN:
        ratio = delay_ratio(step_train, step_test)
        return "groks" if ratio is not None and ratio >= DELAY else "generalizes"
    if not _missing(final_train) and final_train >= TRAIN_FIT:
        return "memorizes"
    return "no learning"


def true_labels(x: torch.Tensor, p: int, op: str = "+") -> torch.Tensor:
    """The rule's answer a∘b mod p for one-hot pairs x [n, 2p] (what a corrupted row should say)."""
    a, b = x[:, :p].argmax(-1), x[:, p:].argmax(-1)
    return {"+": a + b, "-": a - b, "*": a * b}[op] % p


# ---------------------------------------------------------------------------------------------
# probes (run at every evaluation)


def collapse_probe(state) -> dict:
    """Softmax Collapse on the training set: the exactly-zero-gradient fraction and the mean logit norm."""
    with torch.no_grad():
        z = state.model(state.params, state.data.x_train)
        return {"zero_grad_frac": zero_gradient_fraction(z, state.data.y_train, state.loss_name),
                "logit_norm": z.norm(dim=-1).mean(-1)}


def corruption_probe(p: int, op: str = "+"):
    """Accuracy on the clean training rows (train_acc_clean) and, on the corrupted rows, the fraction
    predicted with their wrong label (corrupted_memorized) or with the rule's answer (corrupted_corrected)."""
    cache: dict = {}

    def probe(state) -> dict:
        data = state.data
        if "mask" not in cache:
            mask = data.info.get("corrupted")
            mask = torch.zeros(data.n_train, dtype=torch.bool) if mask is None else mask
            cache["mask"] = mask.to(data.x_train.device)
            cache["rule"] = true_labels(data.x_train, p, op)
        mask, rule = cache["mask"], cache["rule"]
        with torch.no_grad():
            pred = state.model(state.params, data.x_train).argmax(-1)  # [M, n]
        out = {"train_acc_clean": (pred[:, ~mask] == data.y_train[~mask]).float().mean(-1)}
        if bool(mask.any()):
            out["corrupted_memorized"] = (pred[:, mask] == data.y_train[mask]).float().mean(-1)
            out["corrupted_corrected"] = (pred[:, mask] == rule[mask]).float().mean(-1)
        return out

    return probe


# ---------------------------------------------------------------------------------------------
# the experiments (each one `train` call)


def run_grokking(base: RunConfig, seeds, on_eval=None, stop=None):
    """Experiments 1 and 2's control: every seed at λ and at λ = 0, one ensemble."""
    decays = [base.weight_decay] if base.weight_decay == 0 else [base.weight_decay, 0.0]
    return train([base.replace(seed=s, weight_decay=lam) for lam in decays for s in seeds], probes=[collapse_probe],
                 on_eval=on_eval, stop=stop)


def run_remedy(base: RunConfig, seeds, remedy: str):
    """Experiment 2's remedies at λ = 0: "orthogonal" (⊥AdamW, softmax) or "stablemax" (StableMax, AdamW)."""
    check("remedy", remedy, OneOf(REMEDIES), owner="grokking")
    changes = {"loss": "ce", "orthogonal_grad": True} if remedy == "orthogonal" else {"loss": "stablemax_ce"}
    cfg = base.replace(weight_decay=0.0, **changes)
    return train([cfg.replace(seed=s) for s in seeds], probes=[collapse_probe])


def run_corrupted(base: RunConfig, seeds, corrupt_fraction: float, steps: int):
    """Experiment 3: a fraction ξ of the training labels corrupted; every seed at the base λ."""
    opts = {**base.data_options, "corrupt_fraction": float(corrupt_fraction)}
    cfg = base.replace(data_options=opts, steps=steps, eval_every=eval_every(steps))
    return train([cfg.replace(seed=s) for s in seeds], probes=[corruption_probe(opts["p"], opts.get("op", "+"))])


def run_map(base: RunConfig, weight_decays, step_sizes, steps: int):
    """Experiment 4: every (λ, η) cell as one member of one ensemble, at the base seed."""
    cfg = base.replace(steps=steps, eval_every=eval_every(steps))
    return train([cfg.replace(weight_decay=float(lam), step_size=float(eta)) for lam in weight_decays
                  for eta in step_sizes], probes=[collapse_probe])


def explore(config: RunConfig, on_eval=None, stop=None):
    """The explorer's run: one config with the collapse probe (and the corruption probe when ξ > 0)."""
    probes = [collapse_probe]
    if config.data_options.get("corrupt_fraction", 0):
        probes.append(corruption_probe(config.data_options["p"], config.data_options.get("op", "+")))
    return train(config, probes=probes, on_eval=on_eval, stop=stop, progress=False)


# ---------------------------------------------------------------------------------------------
# tidy frames and per-member summaries


def tidy(run, variant: str, offset: int = 0) -> pd.DataFrame:
    """A run's history with each member's seed, λ, η, diverged_at and a `variant` name; run ids shifted
    by `offset` so that several runs can share one frame."""
    keys = run.summary[["run", "seed", "weight_decay", "step_size", "diverged_at"]].astype({"diverged_at": float})
    f = run.history.merge(keys, on="run")
    f["run"] = f["run"] + offset
    f["variant"] = variant
    return f


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per member: variant, seed, λ, η, final train/test accuracy, peak test accuracy, the steps
    where train first reached 99 % and test 90 %, their ratio, the regime, diverged_at, and the final
    values of the probes (zero-gradient fraction also at the start)."""
    rows = []
    for r, g in frame.groupby("run"):
        first = g.iloc[0]
        series = {m: gm.sort_values("step") for m, gm in g.groupby("metric")}

        def final(m):
            values = series[m].value.dropna() if m in series else []
            return float(values.iloc[-1]) if len(values) else float("nan")

        step_to = lambda m, t: first_step(series[m].step.tolist(), series[m].value.tolist(), t) if m in series else None
        diverged = not pd.isna(first["diverged_at"])
        row = {"run": int(r), "variant": first["variant"], "seed": int(first["seed"]),
               "weight_decay": float(first["weight_decay"]), "step_size": float(first["step_size"]),
               "final_train": final("train_acc"), "final_test": final("test_acc"),
               "max_test": float(series["test_acc"].value.max()) if "test_acc" in series else float("nan"),
               "step_train_99": step_to("train_acc", TRAIN_FIT), "step_test_90": step_to("test_acc", TEST_GEN),
               "diverged_at": int(first["diverged_at"]) if diverged else None}
        row["delay_ratio"] = delay_ratio(row["step_train_99"], row["step_test_90"])
        row["regime"] = regime(row["final_train"], row["final_test"], row["step_train_99"], row["step_test_90"], diverged)
        if "zero_grad_frac" in series:
            row["zero_grad_start"] = float(series["zero_grad_frac"].value.iloc[0])
        for m in ("zero_grad_frac", "logit_norm", "train_acc_clean", "corrupted_memorized", "corrupted_corrected"):
            if m in series:
                row[m] = final(m)
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# claims: each over every seed, with the worst seed as the value


def _seed_claim(text, rows: pd.DataFrame, values, ok, threshold: str, worst, spec=".3g") -> tuple:
    """A claim that must hold for every seed; returns (Claim, held count). A diverged seed fails."""
    values = [None if _missing(v) else float(v) for v in values]
    passed = [(not _missing(v)) and bool(ok(v)) for v in values]
    notes = []
    for s, v, d in zip(rows.seed, values, rows.diverged_at):
        notes.append(f"seed {s}: " + (f"diverged at step {int(d)}" if not _missing(d) else fmt_number(v, spec)))
    finite = [v for v in values if v is not None]
    value = None if len(finite) < len(values) or not finite else round(worst(finite), 4)
    return Claim(text, value, threshold, all(passed) and len(values) > 0, note="; ".join(notes)), sum(passed)


def _claims(table: pd.DataFrame, corrupted: pd.DataFrame, weight_decay: float, loss: str, remedies,
            corrupt_fraction: float, seeds: int):
    """The notebook's claims and per-seed metrics from the summary tables."""
    metrics, claims, per_seed = {}, [], []
    name = LOSS_NAMES[loss]
    main = table[table.variant == f"{name}, λ = {weight_decay:g}"].sort_values("seed")
    zero = table[table.variant == f"{name}, λ = 0"].sort_values("seed")

    def add(key, claim_and_count, rows, values, label):
        claim, count = claim_and_count
        claims.append(claim)
        metrics[f"{key}_seeds_held"] = count
        for s, v in zip(rows.seed, values):
            metrics[f"{key}_seed{s}"] = None if _missing(v) else round(float(v), 4)
            per_seed.append({"check": label, "seed": int(s), "value": None if _missing(v) else float(v)})

    lam = f"λ = {weight_decay:g}"
    ratios = [r if r is not None else float("nan") for r in main.delay_ratio]
    add("delay_ratio", _seed_claim(f"grokking ({name}, {lam}): step(test ≥ 90 %) ≥ 3 × step(train ≥ 99 %) for every seed",
                                   main, ratios, lambda v: v >= DELAY, f"ratio ≥ {DELAY:g}, all {seeds} seeds", min),
        main, ratios, "step(test ≥ 90 %) / step(train ≥ 99 %)")
    for s, a, b in zip(main.seed, main.step_train_99, main.step_test_90):
        metrics[f"step_train99_seed{s}"] = None if _missing(a) else int(a)
        metrics[f"step_test90_seed{s}"] = None if _missing(b) else int(b)
    add("final_test", _seed_claim(f"with weight decay ({lam}) the final test accuracy is ≥ 90 % for every seed", main,
                                  main.final_test, lambda v: v >= TEST_GEN, f"≥ {TEST_GEN:g}, all {seeds} seeds", min),
        main, main.final_test, f"final test accuracy, {lam}")
    if weight_decay > 0 and len(zero):
        add("lambda0_max_test", _seed_claim(f"{name}, λ = 0: test accuracy stays < 10 % within the budget for every seed",
                                            zero, zero.max_test, lambda v: v < NO_GEN,
                                            f"max test accuracy < {NO_GEN:g}, all {seeds} seeds", max),
            zero, zero.max_test, f"{name}, λ = 0: max test accuracy")
        if loss == "ce":
            add("lambda0_zero_grad", _seed_claim(
                "softmax, λ = 0: the fraction of training samples with exactly zero float32 gradient rises, every seed",
                zero, [b - a for a, b in zip(zero.zero_grad_start, zero.zero_grad_frac)], lambda v: v > 0,
                f"final − initial fraction > 0, all {seeds} seeds", min, spec=".4f"),
                zero, zero.zero_grad_frac, "softmax, λ = 0: final zero-gradient fraction")
    for remedy in remedies:
        variant = "⊥AdamW, λ = 0" if remedy == "orthogonal" else "StableMax, λ = 0"
        rows = table[table.variant == variant].sort_values("seed")
        add(f"{remedy}_final_test", _seed_claim(f"{variant}: final test accuracy ≥ 90 % for every seed", rows,
                                                rows.final_test, lambda v: v >= TEST_GEN,
                                                f"≥ {TEST_GEN:g}, all {seeds} seeds", min),
            rows, rows.final_test, f"{variant}: final test accuracy")
    if len(corrupted):
        c = corrupted.sort_values("seed")
        xi = f"ξ = {corrupt_fraction:g}"
        gaps = [abs(t - (1 - corrupt_fraction)) for t in c.final_train]
        add("corrupted_final_train", _seed_claim(
            f"corrupted labels ({xi}, {lam}): final train accuracy within 0.05 of 1 − ξ for every seed", c, gaps,
            lambda v: v <= UNLEARN_TOL, f"|train − {1 - corrupt_fraction:g}| ≤ {UNLEARN_TOL:g}, all {seeds} seeds", max),
            c, c.final_train, f"corrupted ({xi}): final train accuracy")
        add("corrupted_final_test", _seed_claim(f"corrupted labels ({xi}, {lam}): final test accuracy ≥ 90 % for every seed",
                                                c, c.final_test, lambda v: v >= TEST_GEN,
                                                f"≥ {TEST_GEN:g}, all {seeds} seeds", min),
            c, c.final_test, f"corrupted ({xi}): final test accuracy")
        if "corrupted_memorized" in c:
            for s, v in zip(c.seed, c.corrupted_memorized):
                metrics[f"corrupted_memorized_seed{s}"] = round(float(v), 4)
                per_seed.append({"check": f"corrupted ({xi}): corrupted rows still memorized", "seed": int(s), "value": float(v)})
    return metrics, claims, pd.DataFrame(per_seed)


# ---------------------------------------------------------------------------------------------
# the one call the notebook makes


def run(step_size: float = STEP_SIZE, batch_size: int | None = None, weight_decay: float = WEIGHT_DECAY,
        rank: int | None = None, width: int = WIDTH, p: int = P, train_fraction: float = TRAIN_FRACTION,
        loss: str = "ce", steps: int = STEPS, remedies=REMEDIES, corrupt_fraction: float = CORRUPT_FRACTION,
        corrupt_steps: int | None = None, map_weight_decays=MAP_WEIGHT_DECAYS, map_step_sizes=MAP_STEP_SIZES,
        map_steps: int | None = None, seeds: int = 3, seed: int = 0, device: str = "auto") -> Result:
    """Experiments 1–4. Seeds seed … seed + seeds − 1 are ensemble members; `remedies` picks the λ = 0
    remedies trained (any of "orthogonal", "stablemax"); empty map lists or corrupt_fraction = 0 skip
    experiments 4 and 3."""
    check("seeds", seeds, Interval(int, 1, 10), owner="grokking")
    check("weight_decay", weight_decay, Interval(float, 0, 1e3), owner="grokking")
    remedies = check_each("remedies", remedies or [], OneOf(REMEDIES), "grokking", at_least=0)
    if loss == "stablemax_ce" and "stablemax" in remedies:
        remedies.remove("stablemax")  # the main runs' λ = 0 members are already StableMax at λ = 0
    map_weight_decays = check_each("map_weight_decays", map_weight_decays or [], Interval(float, 0, 1e3), "grokking",
                                   at_least=0)
    map_step_sizes = check_each("map_step_sizes", map_step_sizes or [], Interval(float, 0, 10, closed="right"),
                                "grokking", at_least=0)
    corrupt_steps, map_steps = corrupt_steps or steps, map_steps or steps
    for name, value in (("corrupt_steps", corrupt_steps), ("map_steps", map_steps)):
        check(name, value, Interval(int, 1, 10**6), owner="grokking")
    base = config(step_size=step_size, batch_size=batch_size, weight_decay=weight_decay, rank=rank, width=width, p=p,
                  train_fraction=train_fraction, loss=loss, steps=steps, seed=seed, device=device)
    config(corrupt_fraction=corrupt_fraction, p=p)  # validates ξ before anything trains
    validate(base, n_train=make_dataset("modular", None, base.data_seed, **base.data_options).n_train)
    seed_list = list(range(seed, seed + seeds))
    timings, runs, frames = [], {}, {}

    def timed(name, fn, *args):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args)
        timings.append({"experiment": name, "members": len(out.configs), "steps": out.configs[0].steps,
                        "wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(time.process_time() - c0, 2)})
        runs[name] = out
        return out

    # 1 + 2: grokking, and the same seeds at λ = 0
    name = LOSS_NAMES[loss]
    r = timed("grokking", run_grokking, base, seed_list)
    history = tidy(r, "")
    history["variant"] = [f"{name}, λ = {lam:g}" for lam in history.weight_decay]
    parts = [history]
    for remedy in remedies:
        r = timed(remedy, run_remedy, base, seed_list, remedy)
        offset = int(max(f.run.max() for f in parts)) + 1
        parts.append(tidy(r, "⊥AdamW, λ = 0" if remedy == "orthogonal" else "StableMax, λ = 0", offset))
    frames["history"] = pd.concat(parts, ignore_index=True)
    table = summarize(frames["history"])
    first = frames["history"][(frames["history"].seed == seed) & (frames["history"].weight_decay == weight_decay)
                              & (frames["history"].variant == f"{name}, λ = {weight_decay:g}")]
    frames["explorer_initial"] = first[["run", "step", "metric", "value"]].assign(run=0).reset_index(drop=True)

    # 3: corrupted labels
    corrupted = pd.DataFrame()
    if corrupt_fraction > 0:
        r = timed("corrupted", run_corrupted, base, seed_list, corrupt_fraction, corrupt_steps)
        frames["corrupted"] = tidy(r, f"ξ = {corrupt_fraction:g}")
        corrupted = summarize(frames["corrupted"])

    # 4: regime map
    if map_weight_decays and map_step_sizes:
        r = timed("map", run_map, base, map_weight_decays, map_step_sizes, map_steps)
        frames["map_history"] = tidy(r, "map")
        frames["map"] = summarize(frames["map_history"])

    metrics, claims, per_seed = _claims(table, corrupted, weight_decay, loss, remedies, corrupt_fraction, seeds)
    if "map" in frames:
        counts = frames["map"].regime.value_counts()
        for reg in REGIMES:
            metrics[f"map_{reg.replace(' ', '_')}"] = int(counts.get(reg, 0))
    frames.update(summary=table, corrupted_summary=corrupted, per_seed=per_seed, timings=pd.DataFrame(timings))
    return Result(metrics, claims, frames, runs)


# ---------------------------------------------------------------------------------------------
# charts (Altair specs over the tidy frames)


def _data(frame: pd.DataFrame) -> alt.Data:
    return charts._values(frame)


def _accuracy_rows(frame: pd.DataFrame) -> pd.DataFrame:
    rows = frame[frame.metric.isin(["train_acc", "test_acc"])].copy()
    rows["split"] = rows.metric.map({"train_acc": "train", "test_acc": "test"})
    if "diverged_at" in rows.columns:
        d = pd.to_numeric(rows["diverged_at"], errors="coerce")
        rows = rows[d.isna() | (rows.step <= d)]
    return rows[rows.value.notna()]


def grokking_chart(history: pd.DataFrame, summary: pd.DataFrame | None = None) -> alt.Chart:
    """Train (dashed) and test (solid) accuracy against step, one line per seed, one panel per weight
    decay of the grokking runs; dotted rules at the median steps where train reached 99 % and test 90 %."""
    main_loss = history.variant.iloc[0].split(",")[0]  # the grokking runs come first: "softmax" or "StableMax"
    variants = [v for v in history.variant.unique() if v.split(",")[0] == main_loss]
    rows = _accuracy_rows(history[history.variant.isin(variants)])
    rows = rows[["variant", "seed", "run", "step", "value", "split"]]
    panels = []
    for v in variants:
        sub = rows[rows.variant == v]
        lines = alt.Chart(_data(sub)).mark_line().encode(
            x=alt.X("step:Q", title="step"), y=alt.Y("value:Q", title="accuracy", scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("split:N", title=None, scale=alt.Scale(domain=["train", "test"], range=["#e8a33d", "#3b75af"])),
            strokeDash=alt.StrokeDash("split:N", title=None, scale=alt.Scale(domain=["train", "test"], range=[[5, 3], [1, 0]])),
            detail="seed:N", tooltip=["seed:N", "split:N", "step:Q", alt.Tooltip("value:Q", format=".3f")])
        layer = [lines]
        if summary is not None:
            s = summary[summary.variant == v]
            marks = []
            for col, text in (("step_train_99", "train ≥ 99 %"), ("step_test_90", "test ≥ 90 %")):
                steps = s[col].dropna()
                if len(steps):
                    marks.append({"step": float(steps.median()), "label": text})
            if marks:
                base = alt.Chart(alt.Data(values=marks)).encode(x="step:Q")
                layer += [base.mark_rule(strokeDash=[2, 2], color="gray"),
                          base.mark_text(align="left", dx=3, color="gray", baseline="bottom").encode(
                              text="label:N", y=alt.value(H - 4))]
        panels.append(alt.layer(*layer).properties(width=W, height=H, title=v))
    return alt.hconcat(*panels)


def collapse_chart(history: pd.DataFrame) -> alt.Chart:
    """Test accuracy, the exactly-zero-gradient fraction and the mean logit norm (log scale) against step,
    coloured by variant (λ with softmax, λ = 0 with softmax, and the remedies at λ = 0), one line per seed."""
    rows = history[history.metric.isin(["test_acc", "zero_grad_frac", "logit_norm"]) & history.value.notna()]
    rows = rows[["variant", "seed", "run", "step", "metric", "value"]]
    order = list(dict.fromkeys(rows.variant))
    color = alt.Color("variant:N", title=None, sort=order, scale=alt.Scale(scheme="tableau10"))
    titles = {"test_acc": "test accuracy", "zero_grad_frac": "exactly-zero-gradient fraction",
              "logit_norm": "mean logit norm (log scale)"}
    panels = []
    for metric in ("test_acc", "zero_grad_frac", "logit_norm"):
        sub = rows[rows.metric == metric]
        if metric == "logit_norm":
            sub = sub[sub.value > 0]
        if metric == "logit_norm":
            scale = alt.Scale(type="log")
        else:
            top = 1.0 if metric == "test_acc" else max(0.05, float(sub.value.max()) if len(sub) else 0.0)
            scale = alt.Scale(domain=[0, top])
        y = alt.Y("value:Q", title=None, scale=scale)
        panels.append(alt.Chart(_data(sub)).mark_line().encode(
            x="step:Q", y=y, color=color, detail="run:N",
            tooltip=["variant:N", "seed:N", "step:Q", alt.Tooltip("value:Q", format=".4g")]).properties(
            width=230, height=H, title=titles[metric]))
    return alt.hconcat(*panels)


def corrupted_chart(frame: pd.DataFrame, corrupt_fraction: float) -> alt.Chart:
    """Corrupted labels: train, test, clean-train accuracy and, on the corrupted rows, the fraction still
    predicted with the wrong label (memorized) or with the rule (corrected); a dashed rule at 1 − ξ."""
    names = {"train_acc": "train (all rows)", "test_acc": "test", "train_acc_clean": "train, clean rows",
             "corrupted_memorized": "corrupted rows: wrong label kept", "corrupted_corrected": "corrupted rows: rule's answer"}
    rows = frame[frame.metric.isin(list(names)) & frame.value.notna()].copy()
    rows["curve"] = rows.metric.map(names)
    rows = rows[["curve", "seed", "run", "step", "value"]]
    lines = alt.Chart(_data(rows)).mark_line().encode(
        x="step:Q", y=alt.Y("value:Q", title="accuracy / fraction", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("curve:N", title=None, sort=list(names.values())), detail="seed:N",
        tooltip=["curve:N", "seed:N", "step:Q", alt.Tooltip("value:Q", format=".3f")])
    rule = charts.reference_rule(1 - corrupt_fraction, f"1 − ξ = {1 - corrupt_fraction:g}")
    return alt.layer(lines, rule).properties(width=420, height=230, title=f"{corrupt_fraction:.0%} of training labels corrupted")


def regime_chart(cells: pd.DataFrame) -> alt.Chart:
    """The regime map: one cell per (η, λ), coloured by regime, with the final test accuracy written in."""
    rows = cells[["weight_decay", "step_size", "regime", "final_test", "final_train", "delay_ratio"]].copy()
    rows["λ"] = rows.weight_decay.map(lambda v: f"{v:g}")
    rows["η"] = rows.step_size.map(lambda v: f"{v:g}")
    rows["text"] = [f"test {t:.2f}" if not _missing(t) else "—" for t in rows.final_test]
    lam_order = [f"{v:g}" for v in sorted(rows.weight_decay.unique(), reverse=True)]
    eta_order = [f"{v:g}" for v in sorted(rows.step_size.unique())]
    base = alt.Chart(_data(rows)).encode(x=alt.X("η:O", sort=eta_order, title="step size η"),
                                         y=alt.Y("λ:O", sort=lam_order, title="weight decay λ"))
    cellmark = base.mark_rect(stroke="white").encode(
        color=alt.Color("regime:N", scale=alt.Scale(domain=list(REGIMES), range=list(REGIME_COLORS)), title="regime"),
        tooltip=["η:O", "λ:O", "regime:N", alt.Tooltip("final_train:Q", format=".3f"),
                 alt.Tooltip("final_test:Q", format=".3f"), alt.Tooltip("delay_ratio:Q", format=".2f")])
    text = base.mark_text(fontSize=11).encode(text="text:N")
    return alt.layer(cellmark, text).properties(width=80 * len(eta_order), height=55 * len(lam_order),
                                                title="regime after the budget")


def chart(frame: pd.DataFrame, config: RunConfig | None = None) -> alt.Chart:
    """The explorer's chart: train/test accuracy, the zero-gradient fraction and the logit norm of one run
    (earlier runs faded in compare mode; a diverged run drawn up to its divergence)."""
    acc = charts.curves(frame, ["train_acc", "test_acc"], title="accuracy", y_title="accuracy", width=W, height=H)
    parts = [acc]
    if (frame.metric == "zero_grad_frac").any():
        parts.append(charts.curves(frame, "zero_grad_frac", title="fraction with exactly zero gradient", width=220,
                                   height=H))
    if (frame.metric == "logit_norm").any():
        parts.append(charts.curves(frame, "logit_norm", log_y=True, title="mean logit norm", width=220, height=H))
    if (frame.metric == "corrupted_memorized").any():
        parts.append(charts.curves(frame, ["corrupted_memorized", "corrupted_corrected"], title="corrupted rows",
                                   width=220, height=H))
    return alt.hconcat(*parts).resolve_scale(color="independent")

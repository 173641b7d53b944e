"""Large batches: a gap in updates, not in batch size (Hoffer, Hubara & Soudry 2017; Keskar et al. 2017).

An MLP with BatchNorm (Linear → BatchNorm → ReLU) learns MNIST-1D with cross-entropy and SGD with
heavy-ball momentum, at a small batch B_S and at a large batch B_L. At an equal number of *epochs* the
large batch takes B_L/B_S times fewer updates and tests worse. Hoffer's three remedies are added one at
a time, each setting trained for `seeds` seeds:

    small batch       B_S, η,              E epochs  (E·n/B_S updates)
    large batch       B_L, η,              E epochs  (E·n/B_L updates)
    + √ step size     B_L, η·√(B_L/B_S),   E epochs
    + ghost BN        B_L, η·√(B_L/B_S),   E epochs, BatchNorm statistics over ghost batches of `ghost_batch`
    + equal updates   B_L, η·√(B_L/B_S),   ghost BN, as many updates as the small batch

BatchNorm members of one ensemble share one batch size, and ghost batches are a shared setting, so
these are four `train` calls, each batched over seeds (and over the two step sizes of the plain large
batch).

Evaluation: reglab's BatchNorm normalizes with the statistics of the batch at hand. Every model here is
evaluated, and its Hessian taken, with the statistics of the whole split (the analogue of the population
statistics a deployed BatchNorm network uses) — for the ghost-batch models too, whose training batches
were normalized ghost batch by ghost batch (`FullStatistics` overrides the engine's evaluation for them).
Sharpness is the top eigenvalue of the Hessian of the full training loss at the final parameters.

The explorer trains one config; its extra options (the reference batch B_S, the epochs, the √-scaling
toggle and the epochs-or-updates budget) ride in `data_options` so that a config stamp recreates the
run, and `explore` takes them out before training.
"""
from __future__ import annotations

import math

import altair as alt
import pandas as pd
import torch

from .. import charts
from ..claims import (Rule, above, at_least, every_seed, finite, fmt_number, key, per_seed, verdict)
from ..config import CONSTRAINTS, ConfigError, Interval, OneOf, RunConfig, validate
from ..curvature import top_eigenvalues
from ..data import make_dataset
from ..engine import train
from ..losses import LOSSES, accuracy
from ..metrics.generalization import distance_from_init
from ..models import build_model
from ..theme import DEVICE, POSITIVE, SEED, SEEDS, Exploration, Param, Theme

EVALS = 40  # evaluations per run
FIT = 0.95  # training accuracy at which a model "fits the training set" (Keskar's comparison needs both to)
CLOSED = 0.5  # fraction of the gap the full remedy must close
SHARPNESS_TOL = 1e-3  # Lanczos stop: Ritz residual ≤ tol·λ (0.1 %: far below the differences compared here)

LARGE_BATCH_GAP = every_seed(above(0.0))  # test accuracy (points): small batch − large batch, equal epochs and η
GAP_CLOSED = every_seed(at_least(CLOSED))  # (remedy − large) / (small − large), test accuracy
KESKAR_SHARPER = Rule("each > 1 where both fit", lambda vs: any(finite(v) is not None for v in vs) and all(
    finite(v) > 1.0 for v in vs if finite(v) is not None))  # λ_max(large, √η) / λ_max(small); None: not both fit
TRACKS_LOSS = Rule("ρ(λ_max, train loss) > ρ(λ_max, test error)",
                   lambda v: len(v) == 2 and None not in (xs := [finite(x) for x in v]) and xs[0] > xs[1])

THEME = Theme("10_large_batch", {
    "step_size": Param(0.03, POSITIVE, "step size η of the small batch (and of the plain large batch)", log=True,
                       slider=(1e-3, 1)),
    "small_batch": Param(40, Interval(int, 1, 4000), "small batch size B_S"),
    "large_batch": Param(1000, Interval(int, 2, 4000), "large batch size B_L"),
    "ghost_batch": Param(40, Interval(int, 2, 4000), "ghost batch size of the ghost-BatchNorm runs (must divide B_L)"),
    "epochs": Param(20, Interval(int, 1, 1000), "epochs of the small batch (and of the equal-epoch large batches)"),
    "width": Param(128, CONSTRAINTS["width"], "hidden width (two hidden layers)"),
    "momentum": Param(0.9, CONSTRAINTS["momentum"], "heavy-ball momentum β"),
    "seeds": SEEDS, "seed": SEED, "device": DEVICE,
})

# the settings, in the order the remedies are added: (id, label)
SETTINGS = [("small", "small batch"), ("large", "large batch"), ("sqrt", "+ √ step size"), ("ghost", "+ ghost BN"),
            ("remedy", "+ equal updates")]
LABEL = dict(SETTINGS)


def config(step_size=0.03, batch_size=40, width=128, momentum=0.9, steps=2000, seed=0, device="auto",
           ghost_batch=None) -> RunConfig:
    """One run: MNIST-1D, MLP of two hidden layers of `width` with BatchNorm + ReLU, cross-entropy, SGD with
    heavy-ball momentum, constant step size, no weight decay."""
    return RunConfig(data="mnist1d", model="mlp", width=width, depth=2, activation="relu", batchnorm=True,
                     ghost_batch=ghost_batch, loss="ce", optimizer="sgd", momentum=momentum, step_size=step_size,
                     batch_size=batch_size, steps=steps, eval_every=max(1, steps // EVALS), seed=seed, device=device)


def steps_for(epochs: float, batch: int, n_train: int) -> int:
    """Updates in `epochs` passes over n_train examples at batch size `batch` (at least one)."""
    return max(1, round(epochs * n_train / batch))


def plain_model(run_or_config, data):
    """The run's network with BatchNorm over the whole batch at hand (no ghost batches)."""
    cfg = run_or_config.configs[0] if hasattr(run_or_config, "configs") else run_or_config
    return build_model(cfg.replace(ghost_batch=None), data)


class FullStatistics:
    """A probe that evaluates with BatchNorm statistics of the whole split: train/test loss and accuracy
    under the engine's names, so it replaces the engine's ghost-batch evaluation of a ghost-BN run."""

    def __repr__(self) -> str:
        return "FullStatistics()"

    def __call__(self, state) -> dict:
        model, out = plain_model(state.configs[0], state.data), {}
        with torch.no_grad():
            for split, x, y in (("train", state.data.x_train, state.data.y_train),
                                ("test", state.data.x_test, state.data.y_test)):
                logits = model(state.params, x)
                out[f"{split}_loss"] = LOSSES[state.loss_name](logits, y).mean(-1)
                out[f"{split}_acc"] = accuracy(logits, y).mean(-1)
        return out


def sharpness(run, seed: int = 0) -> list:
    """Top Hessian eigenvalue of every member's full training loss (whole-split BatchNorm statistics) at
    its final parameters; None for a diverged member."""
    model, data = plain_model(run, run.data), run.data
    loss = lambda p: LOSSES["ce"](model(p, data.x_train), data.y_train).mean(-1)
    values = top_eigenvalues(loss, run.params, k=1, tol=SHARPNESS_TOL, active=run.alive,
                             generator=torch.Generator().manual_seed(seed)).eigenvalues[:, 0]
    return [finite(v) for v in values.tolist()]


def check_batches(p) -> None:
    if p.large_batch <= p.small_batch:
        raise ConfigError(f"The 'large_batch' parameter of {THEME.notebook}.run must be an int greater than "
                          f"small_batch ({p.small_batch}). Got {p.large_batch!r} instead.")


def _closed(small, large, remedy):
    """(remedy − large) / (small − large), None without a positive gap."""
    s, l, r = finite(small), finite(large), finite(remedy)
    return None if None in (s, l, r) or s - l <= 0 else (r - l) / (s - l)


def _spearman(x, y):
    frame = pd.DataFrame({"x": x, "y": y}, dtype=float).dropna()
    return finite(frame["x"].corr(frame["y"], method="spearman")) if len(frame) > 2 else None


@THEME.run
def run(p, result) -> None:
    """Train the small batch, the large batch and the large batch with Hoffer's remedies added one at a
    time (each for `seeds` seeds); compare test and train accuracy and the sharpness of the final models."""
    check_batches(p)
    data = make_dataset("mnist1d")
    n = data.n_train
    sqrt_eta = p.step_size * math.sqrt(p.large_batch / p.small_batch)
    S, L = steps_for(p.epochs, p.small_batch, n), steps_for(p.epochs, p.large_batch, n)
    seeds = [p.seed + i for i in range(p.seeds)]
    common = dict(width=p.width, momentum=p.momentum, device=p.device)
    small = config(p.step_size, p.small_batch, steps=S, **common)
    large = config(p.step_size, p.large_batch, steps=L, **common)
    ghost = config(sqrt_eta, p.large_batch, steps=L, ghost_batch=p.ghost_batch, **common)
    for c in (small, large, ghost, ghost.replace(steps=S, eval_every=max(1, S // EVALS))):
        validate(c, n_train=n)  # a ghost batch that does not divide B_L, a batch larger than the data: refused here
    # (setting, configs, probes): each a single batched ensemble over seeds (and step sizes)
    calls = [
        ("small batch", {"small": [small.replace(seed=s) for s in seeds]}, []),
        ("large batch, equal epochs", {"large": [large.replace(seed=s) for s in seeds],
                                       "sqrt": [large.replace(seed=s, step_size=sqrt_eta) for s in seeds]}, []),
        ("ghost BN, equal epochs", {"ghost": [ghost.replace(seed=s) for s in seeds]}, [FullStatistics()]),
        ("ghost BN, equal updates", {"remedy": [ghost.replace(seed=s, steps=S, eval_every=max(1, S // EVALS))
                                                for s in seeds]}, [FullStatistics()]),
    ]
    final, frames, diverged = {}, [], {}
    for part, groups, probes in calls:
        configs = [c for cs in groups.values() for c in cs]
        with result.timed(part):
            r = train(configs, data=data, probes=probes, progress=False)
        with result.timed("sharpness"):
            lam = sharpness(r)
        m = 0
        for setting, cs in groups.items():
            for c in cs:
                row = r.summary.iloc[m]
                final[setting, c.seed] = {"test_acc": finite(row["test_acc"]), "train_acc": finite(row["train_acc"]),
                                          "train_loss": finite(row["train_loss"]), "sharpness": lam[m],
                                          "diverged_at": r.diverged_step(m)}
                if r.diverged_step(m) is not None:
                    diverged[f"{LABEL[setting]}, seed {c.seed}"] = r.diverged_step(m)
                h = r.history[r.history.run == m]
                frames.append(h.assign(setting=LABEL[setting], seed=c.seed, batch_size=c.batch_size,
                                       step_size=c.step_size, epoch=h["step"] * c.batch_size / n))
                m += 1
        result.runs[part] = r

    get = lambda setting, name: [final[setting, s][name] for s in seeds]
    for setting, _ in SETTINGS:
        for name in ("test_acc", "train_acc", "train_loss", "sharpness", "diverged_at"):
            result.metrics.update({key(name, setting=setting, seed=s): v for s, v in zip(seeds, get(setting, name))})
    points = lambda a, b: [None if None in (x, y) else 100 * (x - y) for x, y in zip(a, b)]
    gap = points(get("small", "test_acc"), get("large", "test_acc"))
    closed = [_closed(*v) for v in zip(get("small", "test_acc"), get("large", "test_acc"), get("remedy", "test_acc"))]
    result.metrics.update(per_seed("gap_points", gap, seeds))
    result.metrics.update(per_seed("gap_closed", closed, seeds))

    # each remedy's share of the gap, on the seeds' mean test accuracies
    mean = {s: _mean(get(s, "test_acc")) for s, _ in SETTINGS}
    cum = [_closed(mean["small"], mean["large"], mean[s]) for s in ("large", "sqrt", "ghost", "remedy")]
    shares = [None if None in (a, b) else b - a for a, b in zip(cum, cum[1:])]
    result.metrics.update({key("share", remedy=s): v for s, v in zip(("sqrt", "ghost", "updates"), shares)})

    fits = lambda setting: [a is not None and a >= FIT for a in get(setting, "train_acc")]
    both = [a and b for a, b in zip(fits("small"), fits("sqrt"))]
    sharper = [None if not ok or None in (a, b) or b <= 0 else a / b
               for ok, a, b in zip(both, get("sqrt", "sharpness"), get("small", "sharpness"))]
    result.metrics.update(per_seed("keskar_ratio", sharper, seeds))
    rows = pd.DataFrame([{"setting": LABEL[s], "seed": seed, **v} for (s, seed), v in final.items()])
    rho = [_spearman(rows["sharpness"], rows["train_loss"]), _spearman(rows["sharpness"], 1 - rows["test_acc"])]
    result.metrics.update({"rho_sharpness_train_loss": rho[0], "rho_sharpness_test_error": rho[1]})
    flatter = [None if None in (a, b) or b <= 0 else a / b
               for a, b in zip(get("remedy", "sharpness"), get("small", "sharpness"))]
    result.metrics.update(per_seed("remedy_sharpness_ratio", flatter, seeds))

    k = p.large_batch / p.small_batch
    pct = lambda setting: fmt_number([None if a is None else 100 * a for a in get(setting, "test_acc")], ".1f")
    tr = lambda setting: fmt_number([None if a is None else 100 * a for a in get(setting, "train_acc")], ".1f")
    div = lambda *settings: {k_: v for k_, v in diverged.items() if k_.split(",")[0] in {LABEL[s] for s in settings}}
    missing = "; ".join(f"seed {s}: small batch {fmt_number(100 * (a or 0), '.1f')} %, large batch (√η) "
                        f"{fmt_number(100 * (b or 0), '.1f')} % train accuracy" for s, ok, a, b in
                        zip(seeds, both, get("small", "train_acc"), get("sqrt", "train_acc")) if not ok)
    result.claims = [
        verdict("large_batch_gap", f"At equal epochs ({p.epochs}) and equal step size (η = {p.step_size:g}), the large "
                f"batch (B = {p.large_batch}) tests worse than the small batch (B = {p.small_batch}): test-accuracy "
                "gap in points, per seed", gap, LARGE_BATCH_GAP,
                f"test accuracy: small batch {pct('small')} %, large batch {pct('large')} % (train {tr('large')} %)",
                div("small", "large")),
        verdict("remedy_closes_gap", f"Step size × √(B_L/B_S) = {math.sqrt(k):.3g}, ghost BatchNorm (ghost batch "
                f"{p.ghost_batch}) and as many updates as the small batch ({S}) close at least {CLOSED:.0%} of that "
                "gap (fraction closed, per seed)", closed, GAP_CLOSED,
                f"test accuracy with the full remedy {pct('remedy')} %", div("small", "large", "remedy")),
        verdict("remedy_shares", "Each remedy's share of the gap, added in turn: √ step size, ghost BN, equal updates "
                "(on the seeds' mean test accuracy)", shares, Rule("no threshold", lambda v: True),
                "mean test accuracy: " + ", ".join(f"{label} {fmt_number(None if mean[s] is None else 100 * mean[s], '.1f')} %"
                                                   for s, label in SETTINGS),
                informational=True),
        verdict("keskar_sharper_when_both_fit", f"Where both fit the training set (train accuracy ≥ {FIT:.0%}), the "
                "large batch (with the √-scaled step size, equal epochs) ends at a sharper minimum than the small "
                "batch (λ_max ratio, per seed)", sharper, KESKAR_SHARPER,
                "; ".join(filter(None, [f"λ_max: small batch {fmt_number(get('small', 'sharpness'))}, large batch "
                                        f"{fmt_number(get('sqrt', 'sharpness'))}", missing and "left out, "
                                        "not fitting the training set: " + missing])), div("small", "sqrt"),
                informational=not any(both)),
        verdict("sharpness_tracks_train_loss", "Over all final models, sharpness tracks the training loss more than "
                "the test error (Spearman ρ of λ_max with each)", rho, TRACKS_LOSS,
                f"ρ with train loss {fmt_number(rho[0])}, with test error {fmt_number(rho[1])}", div(*LABEL)),
        verdict("remedy_flatter_and_better", "The remedied large batch ends flatter than the small batch "
                "(λ_max ratio, per seed) and tests at least as well", flatter, Rule("no threshold", lambda v: True),
                f"λ_max: remedy {fmt_number(get('remedy', 'sharpness'))} vs small batch "
                f"{fmt_number(get('small', 'sharpness'))}; test accuracy {pct('remedy')} % vs {pct('small')} %",
                informational=True),
    ]

    result.frames["history"] = pd.concat(frames, ignore_index=True)
    result.frames["final"] = rows
    result.frames["ablation"] = pd.DataFrame({
        "setting": [LABEL[s] for s, _ in SETTINGS], "test_acc": [mean[s] for s, _ in SETTINGS],
        "train_acc": [_mean(get(s, "train_acc")) for s, _ in SETTINGS],
        "gap_closed": [None, *cum]})
    base = small.replace(seed=p.seed, data_options={"small_batch": p.small_batch, "epochs": p.epochs,
                                                      "scale_step": True, "budget": "epochs"})
    first = result.frames["history"]
    first = first[(first.setting == LABEL["small"]) & (first.seed == p.seed)][["run", "step", "metric", "value"]]
    end = pd.DataFrame([{"run": 0, "step": S, "metric": "sharpness", "value": final["small", p.seed]["sharpness"]}])
    result.exploration = Exploration(base, explore_chart, run=explore, n_train=n, common=("step_size", "batch_size"),
                                     initial=pd.concat([first.assign(run=0), end], ignore_index=True),
                                     controls=explorer_controls(n, p.small_batch, p.large_batch),
                                     presets=presets(p.step_size, p.small_batch, p.large_batch, p.ghost_batch, n, p.epochs),
                                     learned=learned)


def _mean(values):
    xs = [finite(v) for v in values]
    return None if not xs or None in xs else sum(xs) / len(xs)


# ---------------------------------------------------------------------------------------------
# the explorer: one run, its budget and step size set from the reference batch

EXPLORER_CONTROLS = {
    "ghost_batch": Param(None, Interval(int, 2, 4000, allow_none=True), "ghost batch size (must divide B)",
                         slider=(2, 500), off=(None, "no ghost batches")),
    "epochs": Param(20, Interval(int, 1, 1000), "epochs (of the reference batch B_S, when the budget is updates)",
                    label="epochs", field="data_options.epochs", slider=(1, 100)),
    "scale_step": Param(True, OneOf((True, False)), "scale η by √(B/B_S)", label="scale √B",
                        field="data_options.scale_step"),
    "budget": Param("epochs", OneOf(("epochs", "updates")), "budget: equal epochs, or as many updates as B_S",
                    label="budget", field="data_options.budget", labels=("equal epochs", "equal updates")),
    "seed": SEED,
}
OPTIONS = ("small_batch", "epochs", "scale_step", "budget")


def explorer_controls(n_train: int, small_batch: int, large_batch: int) -> dict:
    """EXPLORER_CONTROLS plus the batch size, offering B_S and B_L beside the powers of two below n (the
    common control offers powers of two and the starting batch only: B_L = 1000 would snap to 1024)."""
    sizes = sorted({2 ** k for k in range(int(math.log2(n_train)) + 1) if 2 ** k < n_train}
                   | {b for b in (small_batch, large_batch) if b < n_train})
    batch = Param(small_batch, OneOf((*sizes, None)), "batch size B", labels=(*map(str, sizes), f"full batch ({n_train})"))
    return {"batch_size": batch, **EXPLORER_CONTROLS}


def presets(step_size: float = 0.03, small_batch: int = 40, large_batch: int = 1000, ghost_batch: int = 40,
            n_train: int = 4000, epochs: int = 20) -> dict:
    """The explorer's guided scenarios: Hoffer's remedies added one at a time to the large batch, on the
    run's settings (its η, locked, and its epochs; the ghost batch set after B so that it divides it)."""
    k, updates = large_batch / small_batch, steps_for(epochs, small_batch, n_train)
    sqrt_eta = step_size * math.sqrt(k)
    low, high = EXPLORER_CONTROLS["epochs"].slider
    same = {"step_size": step_size, **({"data_options.epochs": epochs} if low <= epochs <= high else {})}
    plain = {**same, "ghost_batch": None, "batch_size": large_batch, "data_options.budget": "epochs"}
    ghost = {**same, "batch_size": large_batch, "ghost_batch": ghost_batch, "data_options.scale_step": True}
    return {
        "large batch, same η": {
            "question": f"B = {large_batch} at the small batch's η = {step_size:g} for the same epochs takes {k:g}× fewer "
                        f"updates: how much test accuracy does it lose against B = {small_batch}?",
            "values": {**plain, "data_options.scale_step": False}, "lock": ("step_size",)},
        "√-scaled η": {
            "question": f"η × √(B/B_S) = {step_size:g} × {math.sqrt(k):.3g} = {sqrt_eta:.3g} at B = {large_batch}: how "
                        "much of the gap does the larger step close on its own?",
            "values": {**plain, "data_options.scale_step": True}, "lock": ("step_size",)},
        "ghost BatchNorm": {
            "question": f"With √-scaled η and BatchNorm statistics over ghost batches of {ghost_batch} inside each batch "
                        f"of {large_batch}, does the large batch test closer to the small one?",
            "values": {**ghost, "data_options.budget": "epochs"}, "lock": ("step_size",)},
        "equal updates": {
            "question": f"Given as many updates as B = {small_batch} takes ({updates} in {epochs} "
                        f"epoch{'s' * (epochs != 1)}), does the large batch catch up, and does it end sharper or "
                        "flatter (λ_max)?",
            "values": {**ghost, "data_options.budget": "updates"}, "lock": ("step_size",)},
    }


PRESETS = presets()  # on the theme's defaults; the run's explorer gets presets(...) of its own settings


def effective(config: RunConfig, n_train: int) -> RunConfig:
    """The config that trains: η × √(B/B_S) when scale_step, and E·n/B steps (budget "epochs") or
    E·n/B_S steps (budget "updates"), the options taken out of data_options."""
    opts = dict(config.data_options)
    ref, epochs = int(opts.get("small_batch", 40)), int(opts.get("epochs", 20))
    batch = config.batch_size or n_train
    eta = config.step_size * (math.sqrt(batch / ref) if opts.get("scale_step", True) else 1.0)
    steps = steps_for(epochs, ref if opts.get("budget", "epochs") == "updates" else batch, n_train)
    return config.replace(step_size=eta, steps=steps, eval_every=max(1, steps // EVALS),
                          data_options={k: v for k, v in opts.items() if k not in OPTIONS})


class FinalSharpness:
    """A probe: λ_max of the full training loss at the last step only."""

    def __init__(self, steps: int):
        self.steps = steps

    def __repr__(self) -> str:
        return f"FinalSharpness({self.steps})"

    def __call__(self, state) -> dict:
        if state.step != self.steps:
            return {}
        model, data = plain_model(state.configs[0], state.data), state.data
        loss = lambda p: LOSSES["ce"](model(p, data.x_train), data.y_train).mean(-1)
        params = {k: v.detach() for k, v in state.params.items()}
        return {"sharpness": top_eigenvalues(loss, params, k=1, tol=SHARPNESS_TOL, active=state.alive,
                                             generator=torch.Generator().manual_seed(0)).eigenvalues[:, 0]}


class DistanceFromInit:
    """A probe: ‖θ − θ₀‖₂ over every parameter at each evaluation (θ₀: the parameters at the first one, the
    initialization). Hoffer et al. read training as a walk on the loss surface whose distance grows like
    log(updates): a large batch with fewer updates travels less far."""

    def __init__(self):
        self.initial = None

    def __repr__(self) -> str:
        return "DistanceFromInit()"

    def __call__(self, state) -> dict:
        with torch.no_grad():
            if self.initial is None:
                self.initial = {k: v.detach().clone() for k, v in state.params.items()}
            return {"distance_from_init": distance_from_init(state.params, self.initial)}


def explore(config: RunConfig, on_eval=None, stop=None, start=None):
    """The explorer's run: one config with its options applied, evaluated with whole-split BatchNorm
    statistics, ‖θ − θ₀‖ at every evaluation and λ_max at the end."""
    data = make_dataset(config.data, config.n_train, config.data_seed)
    cfg = effective(config, data.n_train)
    probes = ([FullStatistics()] if cfg.ghost_batch else []) + [DistanceFromInit(), FinalSharpness(cfg.steps)]
    return train(cfg, data=data, probes=probes, on_eval=on_eval, stop=stop, start=start, progress=False)


def explore_chart(frame: pd.DataFrame, config: RunConfig | None = None):
    """Test and train accuracy against epochs, and test accuracy against updates (kept runs included): at
    equal epochs a larger batch takes fewer updates."""
    if config is not None and "epoch" not in frame.columns:
        n = make_dataset(config.data, config.n_train, config.data_seed).n_train
        frame = frame.assign(epoch=frame["step"] * (config.batch_size or n) / n)
    x = "epoch" if "epoch" in frame.columns else "step"
    acc = charts.curves(frame, ["test_acc", "train_acc"], x=x, log_x=True, title="accuracy against epochs",
                        y_title="accuracy")
    updates = charts.curves(frame, "test_acc", log_x=True, title="test accuracy against updates (steps)",
                            y_title="test accuracy")
    return charts.row(acc, updates).resolve_scale(color="independent")  # train/test there, runs here


def learned(frame: pd.DataFrame, config: RunConfig | None = None):
    """What the network learned: how far its weights travelled, ‖θ − θ₀‖ against updates (recorded by the
    explorer's runs), and where it ended, λ_max of the training loss against test accuracy (one point per
    run, kept runs included)."""
    series = [c for c in ("label", "run", "current") if c in frame.columns]
    if (frame.metric == "distance_from_init").any():
        travelled = charts.curves(frame, "distance_from_init", log_x=True, title="what it learned: distance from init",
                                  y_title="‖θ − θ₀‖", width=280)
    else:
        travelled = charts.empty("‖θ − θ₀‖ against updates appears once the explorer trains", width=280)
    sharp = frame[frame.metric == "sharpness"][[*series, "value"]].rename(columns={"value": "sharpness"})
    test = (frame[frame.metric == "test_acc"].sort_values("step").groupby(series, as_index=False).last()
            [[*series, "value"]].rename(columns={"value": "test_acc"}))
    ends = sharp.merge(test, on=series)
    ends = ends[ends.sharpness > 0]
    compared = "label" in ends and ends["label"].nunique() > 1  # one run: no legend repeating the settings
    ended = (scatter(ends, "test_acc", "sharpness", color="label" if compared else None, log_y=True,
                     title="where it ended: sharpness vs test accuracy", x_title="test accuracy",
                     y_title="λ_max (train loss)", width=280)
             if len(ends) else charts.empty("λ_max appears when a run ends", width=280))
    return charts.row(travelled, ended).resolve_scale(color="independent")  # not merged with the curves' colours


# ---------------------------------------------------------------------------------------------
# charts of the result


def _colors():
    order = [label for _, label in SETTINGS]
    return alt.Color("setting:N", sort=order, scale=alt.Scale(domain=order), title="setting")


def curves_chart(result, seed: int | None = None):
    """Test accuracy against epochs and against updates (symlog), and train accuracy against updates, one
    line per setting (seed `seed`, default the first)."""
    seed = result.params["seed"] if seed is None else seed
    h = result.frames["history"]
    h = h[h.seed == seed]
    panel = lambda metric, x, title, y_title: alt.Chart(charts.inline(h[h.metric == metric])).mark_line().encode(
        x=alt.X(f"{x}:Q", scale=alt.Scale(type="symlog"), title=x if x == "epoch" else "updates (steps)"),
        y=alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=False)), color=_colors(),
        tooltip=["setting:N", f"{x}:Q", alt.Tooltip("value:Q", format=".3f")]).properties(
        width=250, height=200, title=title)
    return charts.row(panel("test_acc", "epoch", "test accuracy vs epochs", "test accuracy"),
                      panel("test_acc", "step", "test accuracy vs updates", "test accuracy"),
                      panel("train_acc", "step", "train accuracy vs updates", "train accuracy"),
                      spacing=16).resolve_scale(color="shared")


def ablation_chart(result):
    """Mean test and train accuracy per setting (the small batch's test accuracy dashed), and the fraction of
    the gap closed as each remedy is added."""
    a = result.frames["ablation"]
    small = a["test_acc"].iloc[0]
    acc = a.melt(id_vars="setting", value_vars=["test_acc", "train_acc"], var_name="split", value_name="accuracy")
    grouped = alt.Chart(charts.inline(acc)).mark_bar().encode(
        x=alt.X("setting:N", sort=list(a["setting"]), title=None), xOffset="split:N",
        y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1])), color=alt.Color("split:N", title=None),
        tooltip=["setting:N", "split:N", alt.Tooltip("accuracy:Q", format=".3f")]).properties(
        width=380, height=220, title="accuracy (mean over seeds)")
    closed = charts.bars(a.dropna(subset=["gap_closed"]), "setting", "gap_closed", title="fraction of the gap closed",
                         y_title="(acc − large) / (small − large)", fmt=".2f", width=300, height=220)
    return charts.row(charts.layer(grouped, charts.reference_rule(small, "small batch (test)")),
                      charts.layer(closed, charts.reference_rule(1.0, "gap closed"),
                                   charts.reference_rule(CLOSED, f"{CLOSED:.0%}")))


def sharpness_chart(result):
    """λ_max of every final model against its training loss and against its test accuracy (log scales)."""
    f = result.frames["final"].dropna(subset=["sharpness"])
    f = f[f["sharpness"] > 0].assign(train_loss=lambda d: d["train_loss"].clip(lower=1e-6))
    return charts.row(
        scatter(f, "train_loss", "sharpness", color="setting", log_x=True, log_y=True, title="sharpness vs train loss",
                x_title="train loss (full training set)", y_title="λ_max", width=300, order=list(LABEL.values())),
        scatter(f, "test_acc", "sharpness", color="setting", log_y=True, title="sharpness vs test accuracy",
                x_title="test accuracy", y_title="λ_max", width=300, order=list(LABEL.values())))


# ---------------------------------------------------------------------------------------------
# candidates for reglab.charts


def scatter(frame: pd.DataFrame, x: str, y: str, *, color: str | None = None, log_x: bool = False,
            log_y: bool = False, title: str | None = None, x_title: str | None = None, y_title: str | None = None,
            order: list | None = None, width: int = charts.WIDTH, height: int = charts.HEIGHT) -> alt.Chart:
    """One point per row (e.g. per model and seed), y against x, coloured by a category."""
    enc = dict(x=alt.X(f"{x}:Q", title=x_title or x, scale=alt.Scale(type="log") if log_x else alt.Scale(zero=False)),
               y=alt.Y(f"{y}:Q", title=y_title or y, scale=alt.Scale(type="log") if log_y else alt.Scale(zero=False)),
               tooltip=[f"{c}:{'Q' if frame[c].dtype.kind in 'biuf' else 'N'}" for c in frame.columns][:8])
    if color:
        enc["color"] = alt.Color(f"{color}:N", title=color, sort=order,
                                 scale=alt.Scale(domain=order) if order else alt.Undefined)
    return alt.Chart(charts.inline(frame)).mark_point(filled=True, size=70).encode(**enc).properties(
        width=width, height=height, **({"title": title} if title else {}))

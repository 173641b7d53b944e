"""Quickstart: a small MLP on MNIST-1D, with the four common controls."""
from __future__ import annotations

import math

from .. import charts
from ..claims import at_least, below, verdict
from ..config import Interval, RunConfig
from ..engine import train
from ..theme import DEVICE, POSITIVE, SEED, Exploration, Param, Theme

CHANCE = 0.1  # ten balanced classes
LOSS_RATIO = below(0.5)  # final / initial training loss
BEATS_CHANCE = at_least(3 * CHANCE)  # test accuracy

THEME = Theme("00_quickstart", {
    "step_size": Param(0.1, POSITIVE, "step size η", log=True, slider=(1e-4, 10)),
    "batch_size": Param(32, Interval(int, 1, 4000, allow_none=True), "batch size B (None: full batch)"),
    "weight_decay": Param(0.0, Interval(float, 0, math.inf), "weight decay λ"),
    "rank": Param(None, Interval(int, 1, 100_000, allow_none=True), "rank r of the hidden layer (None: full rank)"),
    "width": Param(100, Interval(int, 1, 4096), "hidden width"),
    "steps": Param(1500, Interval(int, 1, 1_000_000), "training steps", slider=(100, 5000)),
    "seed": SEED,
    "device": DEVICE,
})


def config(step_size=0.1, batch_size=32, weight_decay=0.0, rank=None, width=100, steps=1500, seed=0,
           device="auto") -> RunConfig:
    return RunConfig(data="mnist1d", width=width, depth=2, rank=rank, loss="ce", optimizer="sgd",
                     step_size=step_size, batch_size=batch_size, weight_decay=weight_decay, steps=steps,
                     eval_every=max(1, steps // 30), seed=seed, device=device)


@THEME.run
def run(p, result) -> None:
    """Train one MLP on MNIST-1D and check that it learns."""
    cfg = config(p.step_size, p.batch_size, p.weight_decay, p.rank, p.width, p.steps, p.seed, p.device)
    with result.timed("training"):
        r = train(cfg)
    row = r.summary.iloc[0]
    initial = r.history[(r.history.step == 0) & (r.history.metric == "train_loss")].value.iloc[0]
    diverged = {"": r.diverged_step(0)}
    result.metrics = {m: row[m] for m in ("train_loss", "test_loss", "train_acc", "test_acc")}
    result.metrics["diverged_at"] = r.diverged_step(0)
    result.claims = [
        verdict("loss_halves", "training lowers the training loss to under half its initial value",
                row["train_loss"] / initial, LOSS_RATIO, diverged=diverged),
        verdict("beats_chance", f"the trained MLP beats chance ({CHANCE * 100:.0f} %) on held-out MNIST-1D by 3×",
                row["test_acc"], BEATS_CHANCE, diverged=diverged),
    ]
    result.frames["history"] = charts.tidy(r)
    result.runs["train"] = r
    result.exploration = Exploration(cfg, chart, controls={"steps": THEME.params["steps"], "seed": THEME.params["seed"]},
                                     initial=r)


def chart(frame, config=None):
    """Loss (log scale) and accuracy (0–1) over steps, train and test."""
    return charts.row(
        charts.curves(frame, ["train_loss", "test_loss"], log_y=True, title="loss", y_title="cross-entropy"),
        charts.curves(frame, ["train_acc", "test_acc"], title="accuracy", y_title="accuracy"),
    )

"""Quickstart: a small MLP on MNIST-1D, with the four common controls."""
from __future__ import annotations

import math

import altair as alt
import pandas as pd
import torch

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
        r = train(cfg, probes=[learned_probe])
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
    result.exploration = Exploration(cfg, chart, run=explore, initial=r, presets=PRESETS, learned=learned,
                                     controls={"steps": THEME.params["steps"], "seed": THEME.params["seed"]})


PRESETS = {  # guided scenarios of the explorer: a question, the values it sets, what it locks or hides
    "smaller batches": {"question": "At the same η, does B = 8 instead of 32 test better or worse, and why is its "
                                    "curve noisier?", "values": {"batch_size": 8, "step_size": 0.1}, "lock": ("step_size",)},
    "too large a step": {"question": "At η = 5, does the loss still fall, or does the run diverge — and at which step?",
                         "values": {"step_size": 5.0, "batch_size": 32}, "lock": ("batch_size",)},
    "weight decay shrinks W": {"question": "With λ = 0.01, which singular values of the hidden layer shrink, and what "
                                           "happens to test accuracy?", "values": {"weight_decay": 0.01},
                               "hide": ("rank",)},
    "a rank-5 bottleneck": {"question": "With the hidden layer limited to rank r = 5, how many singular values are left, "
                                        "and how much accuracy does it cost?", "values": {"rank": 5}, "hide": ("weight_decay",)},
}


def learned_probe(state) -> dict:
    """What the network learned, at every evaluation: the singular values of its hidden-to-hidden layer
    (`sv:k`, largest first; W = U V when factorized) and the test confusion matrix (`confusion:true:predicted`,
    the fraction of each true class)."""
    p = state.params
    w = p["W1"] if "W1" in p else p["U1"] @ p["V1"]
    out = {}
    with torch.no_grad():
        sv = torch.linalg.svdvals(w.detach().double())  # [M, k]
        for k in range(sv.shape[1]):
            out[f"sv:{k}"] = sv[:, k].to(w.dtype)
        logits = state.model(p, state.data.x_test)  # [M, n, C]
        pred, y = logits.argmax(-1), state.data.y_test
        classes = logits.shape[-1]
        for t in range(classes):
            rows = y == t
            total = max(int(rows.sum()), 1)
            for q in range(classes):
                out[f"confusion:{t}:{q}"] = ((pred[:, rows] == q).sum(-1) / total).to(logits.dtype)
    return out


def explore(config, on_eval, stop, start=None):
    """The explorer's run: reglab.train with the learned-view probe, streaming, quiet."""
    return train(config, probes=[learned_probe], on_eval=on_eval, stop=stop, start=start, progress=False)


def learned(frame: pd.DataFrame, config=None):
    """What the network learned, at its latest evaluation: the singular values of the hidden layer (how
    many directions it uses; weight decay and rank shrink them) and the test confusion matrix."""
    rows = frame[frame["current"]] if "current" in frame.columns else frame
    rows = rows[rows["run"] == rows["run"].min()] if len(rows) else rows
    learned_rows = rows[rows["metric"].str.contains(":", regex=False)]
    learned_rows = learned_rows[pd.to_numeric(learned_rows["value"], errors="coerce").notna()]
    if learned_rows.empty:
        return charts.empty("the weight spectrum and the confusion matrix appear with the first evaluation")
    step = int(learned_rows["step"].max())
    last = learned_rows[learned_rows["step"] == step]
    sv, conf = last[last["metric"].str.startswith("sv:")], last[last["metric"].str.startswith("confusion:")]
    sv = sv.assign(k=sv["metric"].str[3:].astype(int) + 1)
    sv = sv[sv["value"] > 0]
    spectrum = alt.Chart(charts.inline(sv[["k", "value"]])).mark_line(point=True, color="#4c78a8").encode(
        x=alt.X("k:Q", title="index k (largest first)"),
        y=alt.Y("value:Q", title="singular value σ", scale=alt.Scale(type="log")),
        tooltip=[alt.Tooltip("k:Q"), alt.Tooltip("value:Q", format=".3g", title="σ")]).properties(
        width=charts.WIDTH, height=charts.HEIGHT, title=f"hidden-layer spectrum at step {step}")
    parts = conf["metric"].str.split(":", expand=True)
    cells = pd.DataFrame({"true": parts[1].astype(int).values, "predicted": parts[2].astype(int).values,
                          "fraction": conf["value"].astype(float).values})
    matrix = alt.Chart(charts.inline(cells)).mark_rect().encode(
        x=alt.X("predicted:O", title="predicted class"), y=alt.Y("true:O", title="true class"),
        color=alt.Color("fraction:Q", title="share", scale=alt.Scale(domain=[0, 1], scheme="blues"),
                        legend=alt.Legend(orient="right", gradientLength=120)),
        tooltip=["true:O", "predicted:O", alt.Tooltip("fraction:Q", format=".0%")]).properties(
        width=200, height=200, title=f"test confusion at step {step}")
    return charts.row(spectrum, matrix)


def chart(frame, config=None):
    """Loss (log scale) and accuracy (0–1) over steps, train and test."""
    return charts.row(
        charts.curves(frame, ["train_loss", "test_loss"], log_y=True, title="loss", y_title="cross-entropy"),
        charts.curves(frame, ["train_acc", "test_acc"], title="accuracy", y_title="accuracy"),
    )

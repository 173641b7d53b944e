"""Quickstart: a small MLP on MNIST-1D, with the four common controls."""
from __future__ import annotations

import altair as alt

from ..claims import Claim, Result
from ..config import RunConfig
from ..engine import train

CHANCE = 0.1  # ten balanced classes


def config(step_size=0.1, batch_size=32, weight_decay=0.0, rank=None, width=100, steps=1500, seed=0,
           device="auto") -> RunConfig:
    return RunConfig(data="mnist1d", width=width, depth=2, rank=rank, loss="ce", optimizer="sgd",
                     step_size=step_size, batch_size=batch_size, weight_decay=weight_decay, steps=steps,
                     eval_every=max(1, steps // 30), seed=seed, device=device)


def run(**params) -> Result:
    cfg = config(**params)
    r = train(cfg)
    row = r.summary.iloc[0]
    initial = r.history[(r.history.step == 0) & (r.history.metric == "train_loss")].value.iloc[0]
    diverged = row["diverged_at"]
    metrics = {"train_loss": row["train_loss"], "test_loss": row["test_loss"], "train_acc": row["train_acc"],
               "test_acc": row["test_acc"], "diverged_at": None if diverged is None else int(diverged)}
    claims = [
        Claim("training lowers the training loss to under half its initial value", round(row["train_loss"] / initial, 4),
              "final / initial < 0.5", diverged is None and row["train_loss"] < 0.5 * initial),
        Claim("the trained MLP beats chance (10 %) on held-out MNIST-1D by 3×", round(row["test_acc"], 4),
              f"test accuracy ≥ {3 * CHANCE:.1f}", row["test_acc"] >= 3 * CHANCE),
    ]
    return Result(metrics, claims, {"history": r.history}, {"train": r})


def chart(history, config=None) -> alt.Chart:
    """Loss and accuracy over steps, train vs test, side by side."""
    frame = history.assign(split=history.metric.str.split("_").str[0], kind=history.metric.str.split("_").str[1])
    base = alt.Chart(frame).mark_line().encode(
        x=alt.X("step:Q", title="step"), y=alt.Y("value:Q", title=None),
        color=alt.Color("split:N", title="split"), detail="run:N")
    return alt.hconcat(
        base.transform_filter(alt.datum.kind == "loss").properties(title="loss", width=260, height=180),
        base.transform_filter(alt.datum.kind == "acc").properties(title="accuracy", width=260, height=180),
    )

"""Keep weights: reglab.train(start=...) and the explorer's "keep weights" box, which goes on training the
current weights when an optimization setting changes and restarts (saying why) when the model's shape,
the data or the seed changes."""
import time

import numpy as np
import pandas as pd
import pytest
import torch

from reglab import ConfigError, RunConfig, train
from reglab.widgets import Explorer
from reglab.widgets.session import KEEPS_WEIGHTS, carry_over, LiveRun

SMALL = RunConfig(data="digits", n_train=200, width=32, depth=2, step_size=0.1, batch_size=16, steps=30, eval_every=10)
TINY = RunConfig(data="mnist1d", n_train=200, width=16, depth=1, steps=20, eval_every=5, batch_size=32)


def train_loss(run, step=None):
    rows = run.history[run.history.metric == "train_loss"]
    return float(rows[rows.step == (rows.step.max() if step is None else step)].value.iloc[0])


# -- the engine ----------------------------------------------------------------------------------


def test_start_goes_on_from_the_given_parameters():
    first = train(SMALL, progress=False)
    given = {k: v.clone() for k, v in first.params.items()}
    second = train(SMALL.replace(step_size=0.3), start=first.params, progress=False)
    assert train_loss(second, 0) == pytest.approx(train_loss(first), rel=1e-6)  # the same weights, evaluated again
    assert second.history.step.min() == 0 and second.history.step.max() == SMALL.steps
    assert train_loss(second) < train_loss(second, 0)
    for k, v in first.params.items():  # copied, not trained in place
        torch.testing.assert_close(v, given[k], rtol=0, atol=0)


def test_two_halves_of_full_batch_gradient_descent_make_the_whole_run():
    """Plain full-batch GD has no optimizer state and no randomness: 10 steps, then 10 from there, are 20."""
    cfg = SMALL.replace(batch_size=None, steps=10, eval_every=5)
    half = train(cfg, progress=False)
    both = train(cfg, start=half.params, progress=False)
    whole = train(cfg.replace(steps=20), progress=False)
    for k, p in whole.params.items():
        torch.testing.assert_close(both.params[k], p, rtol=1e-5, atol=1e-6)


def test_start_is_checked_against_the_model():
    run = train(SMALL.replace(steps=2, eval_every=1), progress=False)
    with pytest.raises(ConfigError, match=r"start\['W0'\] has shape \(1, 64, 32\); this model's 'W0' has shape \(1, 64, 48\)"):
        train(SMALL.replace(width=48), start=run.params, progress=False)
    with pytest.raises(ConfigError, match="missing U1, V1; unknown W1"):
        train(SMALL.replace(rank=4), start=run.params, progress=False)
    with pytest.raises(ConfigError, match="ensemble size"):  # three members, one member's weights
        train([SMALL.replace(seed=s) for s in range(3)], start=run.params, progress=False)
    with pytest.raises(ConfigError, match="dict of parameter tensors"):
        train(SMALL, start=[run.params], progress=False)
    with pytest.raises(ConfigError, match="not both"):
        train(SMALL, start=run.params, cache=True, progress=False)


def test_a_cancelled_run_hands_back_its_weights_and_steps():
    seen = []

    def on_eval(rows, step):
        seen.append(step)

    run = train(SMALL.replace(eval_every=5), on_eval=on_eval, stop=lambda: len(seen) >= 3, progress=False)
    assert run.stopped and len(run.step_losses) == 10  # held at the evaluation of step 10
    again = train(SMALL, start=run.params, progress=False)
    assert train_loss(again, 0) == pytest.approx(train_loss(run), rel=1e-6)


# -- which changes keep the weights --------------------------------------------------------------


def test_only_optimization_settings_keep_the_weights():
    source = LiveRun(TINY, pd.DataFrame(columns=["run", "step", "metric", "value"]), params={"W0": None}, step=20)
    assert {"step_size", "batch_size", "weight_decay", "momentum"} <= KEEPS_WEIGHTS
    for change in (dict(step_size=0.5), dict(batch_size=None), dict(weight_decay=1e-3), dict(steps=50)):
        assert carry_over(source, TINY.replace(**change)) is None, change
    for change, why in [(dict(width=32), "width changed (it sets the model's shape)"),
                        (dict(rank=4), "rank changed (it sets the model's shape)"),
                        (dict(depth=2), "depth changed"), (dict(data_seed=1), "data_seed changed (it sets the data)"),
                        (dict(data_options={"p": 0.5}), "data_options changed (it sets the data)"),
                        (dict(seed=3), "seed changed (it draws the initial weights)")]:
        assert why in carry_over(source, TINY.replace(**change)), change
    assert "takes no start=" in carry_over(source, TINY, takes_start=False)
    assert "did not hand back" in carry_over(LiveRun(TINY, source.frame), TINY)
    assert carry_over(None, TINY) == ""


# -- the explorer ---------------------------------------------------------------------------------


class Runs:
    """The default run (reglab.train with start=), recording what each call returned."""

    def __init__(self, slow=False):
        self.runs, self.starts, self.slow = [], [], slow

    def __call__(self, config, on_eval, stop, start=None):
        def streamed(rows, step):
            on_eval(rows, step)
            if self.slow:
                time.sleep(0.05)

        self.starts.append(start)
        out = train(config, on_eval=streamed, stop=stop, progress=False, start=start)
        self.runs.append(out)
        return out


def explorer(run, config=TINY, keep=True):
    ex = Explorer(config, run=run, headless=False, n_train=200, debounce=0.01)
    ex.widget
    assert ex.wait(60)
    ex.keep_box.value = keep
    return ex


def losses(frame, metric="train_loss"):
    rows = frame[frame.metric == metric]
    return dict(zip(rows.step, rows.value))


def test_keep_weights_goes_on_from_the_current_weights_along_the_step_axis():
    runs = Runs()
    ex = explorer(runs)
    try:
        assert not ex.keep_box.disabled and ex.keep_weights
        before = ex.session.current
        ex.set(step_size=0.3)
        assert ex.wait(60)
        now = ex.session.current
        assert now.status == "done" and now.start == TINY.steps and now.step == 2 * TINY.steps and now.end == 40
        assert runs.starts[-1] is not None  # the new run was given the previous run's weights...
        first, last = train_loss(runs.runs[-1], 0), losses(before.frame)[TINY.steps]
        assert first == pytest.approx(last, rel=1e-6)  # ...so its first loss is the previous run's last
        curve = losses(now.frame)
        assert sorted(curve) == list(range(0, 41, 5))  # the step axis goes on: 0..20, then 25..40
        assert all(curve[s] == losses(before.frame)[s] for s in range(0, 20, 5))  # the earlier curve, as it was
        assert curve[20] == pytest.approx(last, rel=1e-6)
        assert ex.frame["budget"].max() == 40  # the x axis spans the continued budget
        assert "going on from the weights at step 20" in " ".join(t for _, t in ex.lines)
        assert now.key not in ex.session.cache  # a continued curve is not the config's own run
        ex.set(step_size=0.2)  # again: from step 40
        assert ex.wait(60) and ex.session.current.start == 40 and max(losses(ex.session.current.frame)) == 60
        ex.reset()  # the starting settings and their own run, not a continuation
        assert ex.wait(60) and ex.session.current.start == 0 and ex.status.startswith("cached")
        ex.set(step_size=0.2)
        assert ex.wait(60) and ex.session.current.start == TINY.steps
        ex.keep_box.value = False
        ex.set(step_size=0.1)  # keep weights off: the config's own run from step 0 (cached: the first run)
        assert ex.wait(60) and ex.session.current.start == 0 and ex.status.startswith("cached")
    finally:
        ex.close()


def test_a_shape_change_restarts_and_says_why():
    runs = Runs()
    ex = explorer(runs)
    try:
        ex.set(step_size=0.3)
        assert ex.wait(60) and ex.session.current.start == TINY.steps
        ex.set(rank=4)
        assert ex.wait(60)
        now = ex.session.current
        assert runs.starts[-1] is None and now.start == 0 and max(losses(now.frame)) == TINY.steps
        text = " ".join(t for _, t in ex.lines)
        assert "rank changed (it sets the model's shape)" in text and "restarts from fresh weights at step 0" in text
        ex.set(step_size=0.1)  # the rank-4 weights go on
        assert ex.wait(60) and ex.session.current.start == TINY.steps and ex.session.current.config.rank == 4
    finally:
        ex.close()


def test_keep_weights_goes_on_from_a_held_or_stopped_run():
    runs = Runs(slow=True)
    ex = explorer(runs, config=TINY.replace(steps=200, eval_every=5))
    try:
        ex.set(step_size=0.05)
        time.sleep(0.3)
        assert ex.pause() and ex.wait(30)
        held = ex.session.current
        assert held.status == "paused"
        ex.set(step_size=0.2)  # from the evaluation it is held at
        deadline = time.time() + 30
        while ex.session.current.config.step_size != 0.2 and time.time() < deadline:
            time.sleep(0.02)
        ex.stop()  # cancelled: "run" goes on from where it stopped
        assert ex.wait(30)
        stopped = ex.session.current
        assert stopped.start == held.step and stopped.status == "stopped"
        assert train_loss(runs.runs[-1], 0) == pytest.approx(losses(held.frame)[held.step], rel=1e-6)
        ex.resume()
        assert ex.wait(60)
        assert ex.session.current.start == stopped.taken and ex.session.current.status == "done"
        assert ex.session.current.start >= stopped.step  # the step it was cancelled at, not its last evaluation
    finally:
        ex.close()


def test_a_run_function_without_start_cannot_keep_weights():
    def run(config, on_eval, stop):
        return train(config, on_eval=on_eval, stop=stop, progress=False)

    ex = explorer(run)
    try:
        assert ex.keep_box.disabled and "takes no start=" in ex.keep_box.tooltip
        ex.set(step_size=0.3)
        assert ex.wait(60) and ex.session.current.start == 0
        assert "takes no start= weights" in " ".join(t for _, t in ex.lines)
    finally:
        ex.close()


def test_momentum_state_starting_afresh_is_said():
    ex = explorer(Runs(), config=TINY.replace(momentum=0.9))
    try:
        ex.set(step_size=0.05)
        assert ex.wait(60) and ex.session.current.start == TINY.steps
        assert "momentum starts afresh" in " ".join(t for _, t in ex.lines)
        assert np.isfinite(list(losses(ex.session.current.frame).values())).all()
    finally:
        ex.close()

"""Runs behind the explorer: background training, cancellation, debounce, throttled redraws, cache.

No widgets here. A `Session` owns one worker at a time and talks to a view through three calls made
while holding `session.lock` (so widget updates from the worker thread never interleave with the
kernel thread's):

    view.draw(result)              # a LiveRun: config, tidy frame so far, status
    view.progress(fraction, text)  # 0..1 and "step 150/500", "cached", "stopped at step 80"
    view.message(text, level)      # level "info", "warn" or "error"

`request(config)` cancels whatever runs (its stop Event is set at once), then either redraws a cached
result immediately or starts a new run: at once if the previous request is more than `debounce`
seconds old, else after `debounce` seconds (a burst of key presses trains only the last value). A run that is not the
latest request never draws (each request bumps a generation number the worker checks under the lock).

`pause()` holds the run at its next evaluation (drawn, "paused at step k"), `resume()` lets it go on from
the same weights, `advance()` runs to the next evaluation and holds again; a new request releases a held
run and cancels it. A run function that streams through `on_eval` can be paused; the hold is in there.

`request(config, keep=True)` keeps the weights: the new run starts from the parameters the latest run
had when it ended or was cancelled (a held run is cancelled at the evaluation it is held at), and its
steps follow on from there, its frame beginning with that run's curve up to that step. This needs a run
function that returns a reglab Run (its `params`) and takes `start=` (passed to reglab.train). When the
config changes what the weights are (their shape, the data or the initialization: anything but the
optimization settings in `KEEPS_WEIGHTS`), the run restarts at step 0 and `view.message` says why. A run
that goes on is neither drawn from the cache nor put in it: its curve depends on the run it came from,
not on its config alone.
"""
from __future__ import annotations

import inspect
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from reglab.config import ConfigError, RunConfig

COLUMNS = ["run", "step", "metric", "value"]

# RunConfig fields a run may change and still go on from the current weights: how they are optimized.
# Any other field (width, depth, rank, model, the data, the seed that draws the initial weights, ...)
# changes what the weights are, so a run that changes one starts from a fresh initialization.
KEEPS_WEIGHTS = frozenset({
    "step_size", "batch_size", "weight_decay", "decay", "decay_biases", "momentum", "optimizer", "betas",
    "adam_eps", "grad_clip", "sam_radius", "sam_fraction", "orthogonal_grad", "lr_schedule", "warmup_steps",
    "steps", "eval_every", "z_loss"})
WHY_NOT = {**dict.fromkeys(("model", "width", "depth", "heads", "rank", "rank_layer", "bias", "batchnorm"),
                           "it sets the model's shape"),
           **dict.fromkeys(("data", "n_train", "data_seed", "data_options"), "it sets the data"),
           **dict.fromkeys(("seed", "init_std"), "it draws the initial weights")}


@dataclass
class LiveRun:
    """What the explorer draws: a config and its tidy frame (complete, or so far)."""

    config: RunConfig
    frame: pd.DataFrame  # run, step, metric, value
    status: str = "done"  # "running", "done", "diverged", "stopped", "error"
    step: int = 0
    diverged_at: dict = field(default_factory=dict)  # run -> step
    view: object = None  # the view's drawing of this result, kept so a cached revisit need not rebuild it
    params: dict | None = field(default=None, repr=False)  # the weights at its end (a reglab Run's), to go on from
    start: int = 0  # the step its weights came from (a run that kept an earlier run's weights), else 0
    taken: int | None = None  # steps trained up to its end, counted from the first run's step 0
    lineage: str = ""  # for a run that continued another: what makes its key differ from a fresh run's

    def __post_init__(self):
        if self.taken is None:
            self.taken = self.step

    @property
    def key(self) -> str:
        return self.config.short_hash() + self.lineage

    @property
    def end(self) -> int:
        """The last step of its budget on the x axis: its config's steps after the step it started from."""
        return self.start + self.config.steps

    @property
    def complete(self) -> bool:
        return self.status in ("done", "diverged")

    def divergence_text(self) -> str | None:
        if not self.diverged_at:
            return None
        if len(self.diverged_at) == 1 and len(self.frame) and self.frame["run"].nunique() <= 1:
            return f"diverged at step {next(iter(self.diverged_at.values()))}"
        return "; ".join(f"run {r} diverged at step {k}" for r, k in sorted(self.diverged_at.items()))


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def infer_divergence(frame: pd.DataFrame) -> dict:
    """run -> first evaluated step from which all of that run's values are non-finite (a run function
    that returns a bare frame and says nothing else about divergence)."""
    out = {}
    if frame.empty:
        return out
    ok = frame.assign(ok=frame["value"].map(_finite)).groupby(["run", "step"])["ok"].any().reset_index()
    for run, rows in ok.groupby("run"):
        last_good = rows.loc[rows.ok, "step"].max() if rows.ok.any() else -1
        after = rows.loc[rows.step > last_good, "step"]
        if len(after) and after.min() > 0:
            out[int(run)] = int(after.min())
    return out


def weight_changes(old: RunConfig, new: RunConfig) -> list:
    """The fields that differ between two configs and change what the weights are (not in KEEPS_WEIGHTS)."""
    before = old.to_dict()
    return [f for f, v in new.to_dict().items() if f not in KEEPS_WEIGHTS and v != before[f]]


def carry_over(source: LiveRun | None, config: RunConfig, takes_start: bool = True) -> str | None:
    """None when a run of `config` can go on from `source`'s weights, else why not (a sentence; empty
    when there is nothing to go on from). A source still running or paused counts as handing back its
    weights: it does when it is cancelled."""
    if source is None:
        return ""
    if not takes_start:
        return "this panel's run function takes no start= weights"
    if source.params is None and source.status not in ("running", "paused"):
        return "the current run did not hand back its weights"
    if source.diverged_at:
        return "the current run diverged"
    changed = weight_changes(source.config, config)
    if changed:
        return "; ".join(f"{f} changed ({WHY_NOT.get(f, 'not an optimization setting')})" for f in changed)
    return None


def weights(out, frame: pd.DataFrame) -> tuple[dict | None, int]:
    """(parameters, steps trained) of what a run function returned: a reglab Run's final (or, when
    cancelled, current) parameters and the steps it took; (None, last evaluated step) for a frame."""
    last = int(frame["step"].max()) if len(frame) else 0
    params = getattr(out, "params", None)
    if not isinstance(params, dict):
        return None, last
    losses = getattr(out, "step_losses", None)
    return params, len(losses) if losses is not None else last


def accepts_start(run: Callable) -> bool:
    """Whether a run function takes a `start=` keyword (the weights to begin from)."""
    try:
        parameters = inspect.signature(run).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "start" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def normalize(out, config: RunConfig, streamed: list) -> tuple[pd.DataFrame, dict, bool]:
    """(tidy frame, diverged_at, stopped) from what a run function returned: a reglab Run, a frame
    (diverged steps in its `diverged_at` column, else inferred from non-finite values), or None (the
    streamed rows)."""
    stopped = bool(getattr(out, "stopped", False))
    if hasattr(out, "history") and hasattr(out, "summary"):
        frame = out.history
        summary = out.summary
        diverged = {int(r): int(k) for r, k in zip(summary["run"], summary["diverged_at"]) if not pd.isna(k)}
        return frame, diverged, stopped
    if out is None:
        frame = pd.DataFrame(streamed, columns=COLUMNS)
    elif isinstance(out, pd.DataFrame):
        frame = out
    else:
        raise ConfigError(f"The explorer's run function must return a reglab Run or a tidy DataFrame; got {type(out).__name__}.")
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigError(f"The run function's frame lacks column(s) {', '.join(missing)}; a tidy frame has run, step, metric, value.")
    if "diverged_at" in frame.columns:
        d = frame.dropna(subset=["diverged_at"]).groupby("run")["diverged_at"].first()
        diverged = {int(r): int(k) for r, k in d.items()}
    else:
        diverged = infer_divergence(frame)
    return frame[COLUMNS], diverged, stopped


class Session:
    """One background run at a time, for the latest requested config; finished runs are cached."""

    def __init__(self, run: Callable, view, *, debounce: float = 0.25, redraw_every: float = 0.2,
                 cache_size: int = 64, lock: threading.RLock | None = None):
        self.run, self.view = run, view
        self.debounce, self.redraw_every, self.cache_size = debounce, redraw_every, cache_size
        self.lock = lock or threading.RLock()
        self.cache: OrderedDict[str, LiveRun] = OrderedDict()
        self.current: LiveRun | None = None
        self.runs_started = 0
        self._generation = 0
        self._stop = threading.Event()
        self._timer: threading.Timer | None = None
        self._active: threading.Thread | None = None
        self._running_gen = 0  # the generation whose run is under way
        self._last_request = -math.inf
        self._idle = threading.Event()
        self._idle.set()
        self._closed = False
        self._go = threading.Event()  # cleared: the run holds at its next evaluation
        self._go.set()
        self._advance = False  # run to the next evaluation, then hold again
        self.held: LiveRun | None = None  # the run held now (paused), if any
        self.takes_start = accepts_start(run)
        self.weights: LiveRun | None = None  # the latest result with its weights: what a kept run goes on from
        self._weights_gen = 0  # the generation that set it

    # -- requests ----------------------------------------------------------------------------
    def request(self, config: RunConfig, delay: float | None = None, keep: bool = False) -> str:
        """Show `config`: "cached" (drawn now), or "scheduled" (a run starts after the debounce). keep: go
        on from the current weights where `carry_over` allows (then never from the cache)."""
        with self.lock:
            now = time.monotonic()
            quiet, self._last_request = now - self._last_request > self.debounce, now
            self._generation += 1
            gen = self._generation
            self._cancel_locked()
            self._release_locked()
            # the run shown now (its weights, or those it hands back when it returns) is what a kept run goes on from
            shown = self.current
            continues = keep and carry_over(shown, config, self.takes_start) is None
            hit = None if continues else self.cache.get(config.short_hash())
            if hit is not None:
                self.cache.move_to_end(hit.key)
                self.current = hit
                self.weights, self._weights_gen = hit, gen
                self._show_final_locked(hit, cached=True)
                self._idle.set()
                return "cached"
            self._idle.clear()
            self._stop = stop = threading.Event()
            self.view.progress(0.0, "starting…")
            if delay is None:  # the first change after a quiet spell starts at once; a burst waits for quiet
                delay = 0.0 if quiet else self.debounce
            self._timer = threading.Timer(delay, self._work, (config, gen, stop, keep))
            self._timer.daemon = True
            self._timer.start()
            return "scheduled"

    def add(self, result: LiveRun) -> None:
        """Put a finished result in the cache (e.g. the notebook's own run of the initial config)."""
        with self.lock:
            self.cache[result.key] = result
            self.cache.move_to_end(result.key)
            while len(self.cache) > self.cache_size:
                self.cache.popitem(last=False)

    def stop(self) -> None:
        """Cancel the current run; what it drew stays, marked stopped."""
        with self.lock:
            if self._timer is not None:
                self._timer.cancel()
            self._stop.set()
            if self.held is not None:  # the held worker returns and reports "stopped"
                self._idle.clear()
            self._release_locked()
            if not self._idle.is_set() and self._running_gen != self._generation:  # not started yet
                self.view.progress(0.0, "stopped")
                self._idle.set()

    @property
    def paused(self) -> bool:
        return not self._go.is_set()

    def pause(self) -> bool:
        """Hold the run at its next evaluation; False when nothing is running."""
        with self.lock:
            if self._idle.is_set() or self._running_gen != self._generation:
                return False
            self._advance = False
            self._go.clear()
            return True

    def resume(self) -> bool:
        """Let a held run go on from where it stopped; False when none is held."""
        with self.lock:
            if self._go.is_set():
                return False
            held = self.held is not None
            self._release_locked()
            if held:
                self._idle.clear()
            return held

    def advance(self) -> bool:
        """Run a held run to its next evaluation and hold it again (pause a running one)."""
        with self.lock:
            if self._go.is_set():
                return self.pause()
            if self.held is None:  # asked to hold, but the run ended first
                self._release_locked()
                return False
            self._advance = True
            self.held = None
            self._idle.clear()
            self._go.set()
            return True

    def _release_locked(self) -> None:
        self.held = None
        self._advance = False
        self._go.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the latest request has been drawn in full (tests, benchmarks, scripts)."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        with self.lock:
            self._closed = True
            self._generation += 1
            self._cancel_locked()
            self._release_locked()
            active = self._active
        if active is not None and active is not threading.current_thread():
            active.join(timeout=10)
        self._idle.set()

    def _cancel_locked(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stop.set()

    # -- the worker --------------------------------------------------------------------------
    def _work(self, config: RunConfig, gen: int, stop: threading.Event, keep: bool = False) -> None:
        with self.lock:
            previous, self._active = self._active, threading.current_thread()
        if previous is not None and previous is not threading.current_thread():
            previous.join()  # it was told to stop (and left its weights in self.weights); never two trainings at once
        with self.lock:
            if stop.is_set() or gen != self._generation:
                if gen == self._generation and not self._closed:  # stopped before it started
                    self.view.progress(0.0, "stopped")
                    self._idle.set()
                return
            self._running_gen = gen
            self.runs_started += 1
            source = self.weights if keep else None
            why = carry_over(source, config, self.takes_start) if keep else ""
            if why:
                self.view.message(f"Keep weights: {why}; training restarts from fresh weights at step 0.", "info")
                self.view.progress(0.0, "restarting from fresh weights")
            elif keep and why is None:
                fresh = " (the optimizer's momentum starts afresh)" if config.momentum > 0 or config.optimizer == "adamw" else ""
                self.view.message(f"Keep weights: going on from the weights at step {source.taken}{fresh}.", "info")
                self.view.progress(0.0, f"going on from step {source.taken}")
        if why is not None:
            source = None
        offset = source.taken if source is not None else 0
        prefix = source.frame[source.frame["step"] < offset] if source is not None else None
        lineage = f"+{offset}#{self.runs_started}" if source is not None else ""
        rows: list = []
        state = {"last": -math.inf, "step": 0, "all_diverged": False}  # last: when the throttle interval starts
        end = offset + config.steps

        def live(frame: pd.DataFrame, status: str, step: int, **more) -> LiveRun:
            """A result of this run (`frame`: its own rows); one that went on from another run's weights
            counts its steps from where that one stopped, and its frame begins with that one's curve."""
            if prefix is not None:
                frame = pd.concat([prefix, frame.assign(step=frame["step"] + offset)], ignore_index=True)
            return LiveRun(config, frame, status, offset + step, start=offset, lineage=lineage, **more)

        def on_eval(new, step):
            rows.extend(new)
            state["step"] = step
            if step > 0 and new and not any(_finite(r.get("value")) for r in new):
                state["all_diverged"] = True  # every run is frozen: no point computing the rest
                stop.set()
            if stop.is_set():
                return
            with self.lock:
                if self._advance and gen == self._generation:  # one evaluation further: hold again
                    self._advance = False
                    self._go.clear()
                hold = not self._go.is_set() and gen == self._generation
            if hold:
                self._hold(live(pd.DataFrame(rows, columns=COLUMNS), "paused", step), gen, stop)
                return
            if time.monotonic() - state["last"] < self.redraw_every:
                return
            started = time.monotonic()
            partial = live(pd.DataFrame(rows, columns=COLUMNS), "running", step)
            with self.lock:
                if gen != self._generation:
                    return
                self.current = partial
                drawn = self.view.draw(partial) is not False  # a view may wait for more rows (no throttle then)
                self.view.progress(step / max(config.steps, 1), f"step {offset + step}/{end}")
            if not drawn:
                return
            # at most 1/redraw_every draws a second, and drawing takes at most ~1/4 of the worker's time
            state["last"] = time.monotonic() + 3 * (time.monotonic() - started)

        try:
            out = self.run(config, on_eval, stop, start=source.params) if source is not None else \
                self.run(config, on_eval, stop)
            frame, diverged, stopped = normalize(out, config, rows)
            params, taken = weights(out, frame)
        except Exception as err:  # shown in the panel, never raised into the kernel
            with self.lock:
                if gen == self._generation:
                    text = str(err) if isinstance(err, ConfigError) else f"{type(err).__name__}: {err}"
                    self.view.message(f"The run failed: {text}", "error")
                    self.view.progress(0.0, "failed")
                    self._idle.set()
            return
        cancelled = (stop.is_set() or stopped) and not state["all_diverged"]
        last = int(frame["step"].max()) if len(frame) else 0
        status = "stopped" if cancelled else "diverged" if diverged else "done"
        result = live(frame, status, last, diverged_at={r: k + offset for r, k in diverged.items()}, params=params,
                      taken=offset + taken)
        with self.lock:
            if gen >= self._weights_gen:  # also a cancelled run: the next kept run goes on from here
                self.weights, self._weights_gen = result, gen
            if not cancelled and source is None:
                self.add(result)
            if gen != self._generation:
                return
            self.current = result
            self._show_final_locked(result)
            self._idle.set()

    def _hold(self, held: LiveRun, gen, stop) -> None:
        """Draw the run so far and wait (in the worker) until resumed, advanced or cancelled."""
        fraction = (held.step - held.start) / max(held.config.steps, 1)
        with self.lock:
            if gen != self._generation:
                return
            self.current = self.held = held
            self.view.draw(held)
            self.view.progress(fraction, f"paused at step {held.step}/{held.end}")
            self._idle.set()
        while not self._go.wait(0.05):
            if stop.is_set():
                return
        with self.lock:
            if gen == self._generation and not stop.is_set():
                self.view.progress(fraction, f"step {held.step}/{held.end}")

    def _show_final_locked(self, result: LiveRun, cached: bool = False) -> None:
        self.view.draw(result)
        if result.status == "stopped":
            self.view.progress((result.step - result.start) / max(result.config.steps, 1), f"stopped at step {result.step}")
        else:
            text = result.status  # the step it diverged at is said once, in the message line
            self.view.progress(1.0, f"cached · {text}" if cached else text)
        if result.diverged_at:
            self.view.message(result.divergence_text(), "warn")

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
"""
from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from reglab.config import ConfigError, RunConfig

COLUMNS = ["run", "step", "metric", "value"]


@dataclass
class LiveRun:
    """What the explorer draws: a config and its tidy frame (complete, or so far)."""

    config: RunConfig
    frame: pd.DataFrame  # run, step, metric, value
    status: str = "done"  # "running", "done", "diverged", "stopped", "error"
    step: int = 0
    diverged_at: dict = field(default_factory=dict)  # run -> step
    view: object = None  # the view's drawing of this result, kept so a cached revisit need not rebuild it

    @property
    def key(self) -> str:
        return self.config.short_hash()

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

    # -- requests ----------------------------------------------------------------------------
    def request(self, config: RunConfig, delay: float | None = None) -> str:
        """Show `config`: "cached" (drawn now), or "scheduled" (a run starts after the debounce)."""
        with self.lock:
            now = time.monotonic()
            quiet, self._last_request = now - self._last_request > self.debounce, now
            self._generation += 1
            gen = self._generation
            self._cancel_locked()
            self._release_locked()
            hit = self.cache.get(config.short_hash())
            if hit is not None:
                self.cache.move_to_end(hit.key)
                self.current = hit
                self._show_final_locked(hit, cached=True)
                self._idle.set()
                return "cached"
            self._idle.clear()
            self._stop = stop = threading.Event()
            self.view.progress(0.0, "starting…")
            if delay is None:  # the first change after a quiet spell starts at once; a burst waits for quiet
                delay = 0.0 if quiet else self.debounce
            self._timer = threading.Timer(delay, self._work, (config, gen, stop))
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
    def _work(self, config: RunConfig, gen: int, stop: threading.Event) -> None:
        with self.lock:
            previous, self._active = self._active, threading.current_thread()
        if previous is not None and previous is not threading.current_thread():
            previous.join()  # it was told to stop; never two trainings at once on a small machine
        with self.lock:
            if stop.is_set() or gen != self._generation:
                if gen == self._generation and not self._closed:  # stopped before it started
                    self.view.progress(0.0, "stopped")
                    self._idle.set()
                return
            self._running_gen = gen
            self.runs_started += 1
        rows: list = []
        state = {"last": -math.inf, "step": 0, "all_diverged": False}  # last: when the throttle interval starts

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
                self._hold(config, gen, stop, rows, step)
                return
            if time.monotonic() - state["last"] < self.redraw_every:
                return
            started = time.monotonic()
            partial = LiveRun(config, pd.DataFrame(rows, columns=COLUMNS), "running", step)
            with self.lock:
                if gen != self._generation:
                    return
                self.current = partial
                drawn = self.view.draw(partial) is not False  # a view may wait for more rows (no throttle then)
                self.view.progress(step / max(config.steps, 1), f"step {step}/{config.steps}")
            if not drawn:
                return
            # at most 1/redraw_every draws a second, and drawing takes at most ~1/4 of the worker's time
            state["last"] = time.monotonic() + 3 * (time.monotonic() - started)

        try:
            out = self.run(config, on_eval, stop)
            frame, diverged, stopped = normalize(out, config, rows)
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
        result = LiveRun(config, frame, status, last, diverged)
        with self.lock:
            if not cancelled:
                self.add(result)
            if gen != self._generation:
                return
            self.current = result
            self._show_final_locked(result)
            self._idle.set()

    def _hold(self, config, gen, stop, rows, step) -> None:
        """Draw the run so far and wait (in the worker) until resumed, advanced or cancelled."""
        with self.lock:
            if gen != self._generation:
                return
            held = LiveRun(config, pd.DataFrame(rows, columns=COLUMNS), "paused", step)
            self.current = self.held = held
            self.view.draw(held)
            self.view.progress(step / max(config.steps, 1), f"paused at step {step}/{config.steps}")
            self._idle.set()
        while not self._go.wait(0.05):
            if stop.is_set():
                return
        with self.lock:
            if gen == self._generation and not stop.is_set():
                self.view.progress(step / max(config.steps, 1), f"step {step}/{config.steps}")

    def _show_final_locked(self, result: LiveRun, cached: bool = False) -> None:
        self.view.draw(result)
        if result.status == "stopped":
            self.view.progress(result.step / max(result.config.steps, 1), f"stopped at step {result.step}")
        else:
            text = result.status  # the step it diverged at is said once, in the message line
            self.view.progress(1.0, f"cached · {text}" if cached else text)
        if result.diverged_at:
            self.view.message(result.divergence_text(), "warn")

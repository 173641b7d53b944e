"""The theme protocol: a theme is declared parameters + experiments + claims + charts.

A theme module declares its parameters once and wraps its experiment with them:

    THEME = Theme("01_stability", {
        "step_size": Param(0.15, Interval(float, 0, inf, closed="neither"), "η of the GD runs", log=True),
        "seeds": SEEDS,
    })

    @THEME.run
    def run(p) -> Result:          # p: the validated values, as attributes (p.step_size)
        ...

`run(**values)` fills defaults, checks every value against its declaration (a `ConfigError` naming the
parameter, its range and the value) and returns the one `Result`. The same declaration serves the
`reglab report -p` check before any kernel starts, the notebook's `parameters` cell (a test keeps
them equal) and the explorer's controls (label, range, log scale).
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable

import pandas as pd

from .claims import Claim, record, verdict_text
from .config import ConfigError, Interval, OneOf, RunConfig, check

POSITIVE = Interval(float, 0, math.inf, closed="neither")
COMMON_CONTROLS = ("step_size", "batch_size", "weight_decay", "rank")  # the four knobs of every notebook
NON_NEGATIVE = Interval(float, 0, math.inf)


@dataclass(frozen=True)
class Param:
    """One declared parameter: default, constraint (config.Interval / OneOf / Kind / ListOf), help.

    Explorer hints: `label` (defaults to the help text's first words), `log` (log-scale slider),
    `field` (the RunConfig field the control sets, e.g. "data_options.p"; default: the name),
    `slider` ((low, high) of the slider when it should not span the whole constraint), `step` (the
    slider's step), `off` ((value, label) of one exact value offered by a checkbox beside the slider,
    e.g. (0.0, "λ = 0") or (None, "full rank")), `labels` (the shown names of a choice's options)."""

    default: Any
    constraint: Any
    help: str
    label: str | None = None
    log: bool = False
    field: str | None = None
    slider: tuple | None = None
    step: float | None = None
    off: tuple | None = None
    labels: tuple | None = None

    def check(self, name: str, value, owner: str):
        if isinstance(value, int) and not isinstance(value, bool) and isinstance(self.default, float):
            value = float(value)  # papermill and the CLI give 1 for 1.0
        if isinstance(value, tuple):
            value = list(value)
        check(name, value, self.constraint, owner)
        return value


SEEDS = Param(3, Interval(int, 1, 20), "seeds: seed, seed + 1, …", label="seeds")
SEED = Param(0, Interval(int, 0, 2**31 - 1), "first seed", label="seed", slider=(0, 99))
DEVICE = Param("auto", OneOf(("auto", "cpu", "cuda")), "where to train: CUDA when present, else the CPU")


class Theme:
    """A theme's name (its notebook's stem) and declared parameters; `@theme.run` makes its runner."""

    def __init__(self, notebook: str, params: dict):
        self.notebook = notebook
        self.params = dict(params)

    def defaults(self) -> dict:
        return {name: p.default for name, p in self.params.items()}

    def validate(self, values: dict, owner: str | None = None) -> dict:
        """All declared values (defaults filled in), each checked; unknown names are refused."""
        owner = owner or f"{self.notebook}.run"
        unknown = sorted(set(values) - set(self.params))
        if unknown:
            raise ConfigError(f"Unknown parameter(s) {', '.join(unknown)} of {owner}; valid ones are: "
                              f"{', '.join(self.params)}.")
        return {name: p.check(name, values.get(name, p.default), owner) for name, p in self.params.items()}

    def values_in(self, namespace: dict) -> dict:
        """The declared parameters found in a namespace (a notebook's globals after its parameters cell)."""
        return {name: namespace[name] for name in self.params if name in namespace}

    def run(self, experiment: Callable) -> Callable:
        theme = self

        def run(**values) -> Result:
            p = theme.validate(values)
            result = Result(theme=theme.notebook, params=p)
            experiment(SimpleNamespace(**p), result)
            return result

        run.__doc__ = experiment.__doc__
        run.__name__ = experiment.__name__
        run.theme = theme
        return run


@dataclass
class Exploration:
    """What the explorer needs from a theme: the starting config, the chart, the run (None: plain
    `reglab.train`), the theme's controls ({name: Param}), which of the common controls apply, the first
    frame, and the training-set size when the config's data set would not tell it (e.g. a filtered split)."""

    config: RunConfig
    chart: Callable
    run: Callable | None = None
    controls: dict = field(default_factory=dict)
    initial: Any = None
    n_train: int | None = None
    common: tuple = COMMON_CONTROLS
    # guided scenarios: {name: {"question": one line, "values": {control: value}, "lock": (…), "hide": (…)}}
    presets: dict = field(default_factory=dict)
    learned: Callable | None = None  # (frame, config) -> chart of what the model learned, drawn live


@dataclass
class Result:
    """What a theme's `run` returns.

    params: the validated values. metrics: {key: number} (keys as `claims.key` makes them).
    claims: [Claim]. frames: {name: tidy DataFrame}. runs: {name: engine.Run}. timings: {part: CPU
    seconds}. exploration: the explorer's starting point (`result.explorer()`)."""

    theme: str = ""
    params: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    claims: list = field(default_factory=list)
    frames: dict = field(default_factory=dict)
    runs: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    exploration: Exploration | None = None

    @contextmanager
    def timed(self, part: str):
        """Adds the CPU time of the block to timings[part] (process time: fair on a shared machine)."""
        start = time.process_time()
        try:
            yield
        finally:
            self.timings[part] = self.timings.get(part, 0.0) + time.process_time() - start

    @property
    def timing(self) -> pd.DataFrame:
        return pd.DataFrame({"part": list(self.timings), "cpu_seconds": [round(v, 2) for v in self.timings.values()]})

    def claim(self, id: str) -> Claim:
        for c in self.claims:
            if c.id == id:
                return c
        raise KeyError(f"no claim {id!r}; claims: {', '.join(c.id for c in self.claims)}")

    def claims_of(self, *ids) -> list:
        return [self.claim(i) for i in ids]

    def verdicts(self) -> str:
        return verdict_text(self.claims)

    def record(self) -> None:
        record(self)

    def explorer(self, **options):
        """The explorer on this result's settings, drawing its first frame without training."""
        if self.exploration is None:
            raise ConfigError(f"{self.theme} has no explorer.")
        from reglab.widgets import Explorer  # the explorer is optional for the core

        e = self.exploration
        return Explorer(e.config, chart=e.chart, run=e.run, **{"controls": e.common, "extra": e.controls,
                        "initial": e.initial, "n_train": e.n_train, "presets": e.presets, "learned": e.learned,
                        **options})

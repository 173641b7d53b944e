"""Control specs and the pure logic behind them: no widgets here, so all of it is unit-testable.

A control is named by a RunConfig field ("step_size") or a key inside a dict field
("data_options.p"). Its spec says what the panel offers:

    LogRange(1e-4, 10)                          # a positive float on a log slider
    LogRange(1e-5, 1, off=0.0, off_label="0")   # ...with a checkbox for one exact value (no decay)
    IntRange(1, 100, off=None, off_label="full rank")
    FloatRange(0.0, 0.99, step=0.01)
    Choice([1, 8, 32, None], labels=["1", "8", "32", "full batch"])
    Toggle()

Every value a person types (a number beside a slider, "step_size=3" in the set box, a preset) goes
through `resolve`: first the one validation path of reglab.config (a value the core refuses is refused
with its ConfigError message), then the control's range (a value outside it is refused with a message
naming the range; a restored stamp is clamped instead, with a message). Nothing here raises for a bad
value. A log slider stops at round values (1, 2, 5 per decade, `round_grid`) plus any value typed in range.
"""
from __future__ import annotations

import ast
import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

from reglab.config import ConfigError, RunConfig, validate, validate_param


class _NoOff:
    def __repr__(self) -> str:
        return "NO_OFF"


NO_OFF = _NoOff()  # a range without an "off" checkbox


# ---------------------------------------------------------------------------------------------
# spec types


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


@dataclass(frozen=True)
class _Range:
    low: float
    high: float
    step: float | None = None
    off: Any = NO_OFF  # one exact value outside the range offered by a checkbox (0, None)
    off_label: str = "off"
    label: str | None = None
    kind = float

    @property
    def has_off(self) -> bool:
        return self.off is not NO_OFF

    def describe(self) -> str:
        text = f"[{self.low:g}, {self.high:g}]"
        return text + (f" or {self.off!r}" if self.has_off else "")

    def coerce(self, name: str, value, clamp: bool = False) -> tuple[Any, str | None]:
        """(value to use, message) — value is `None`-safe; raises ConfigError only to refuse (a value
        outside the range is refused unless `clamp`, which uses the nearest end and says so)."""
        if self.has_off and (value is self.off or value == self.off):
            return self.off, None
        if not _is_number(value) or (self.kind is int and not float(value).is_integer()):
            raise ConfigError(f"The '{name}' control takes {'an int' if self.kind is int else 'a number'} "
                              f"in {self.describe()}. Got {value!r} instead.")
        value = self.kind(value)
        if (value < self.low or value > self.high) and not clamp:
            side = "below" if value < self.low else "above"
            raise ConfigError(f"{name} = {value:g} is {side} this control's range {self.describe()}.")
        if value < self.low or value > self.high:
            clamped = self.kind(min(max(value, self.low), self.high))
            side = "below" if value < self.low else "above"
            return clamped, f"{name} = {value:g} is {side} this control's range {self.describe()}; using {clamped:g}."
        return value, None


@dataclass(frozen=True)
class LogRange(_Range):
    """A positive float on a log-scale slider; `step` is in decades (0.1: ten stops per factor of 10)."""

    step: float | None = 0.1
    fmt: str = ".3g"  # the slider's readout (d3-format), e.g. ".1e" for 1.0e-5

    def __post_init__(self):
        if not 0 < self.low < self.high:
            raise ConfigError(f"LogRange needs 0 < low < high. Got low={self.low!r}, high={self.high!r} instead.")


@dataclass(frozen=True)
class FloatRange(_Range):
    """A float on a linear slider."""


@dataclass(frozen=True)
class IntRange(_Range):
    """An int on a slider."""

    step: float | None = 1
    kind = int


@dataclass(frozen=True)
class Choice:
    """One of a few values. Numbers (and None, e.g. "full batch") show as a selection slider; a typed
    number that is not an option snaps to the nearest one, with a message."""

    options: Sequence
    labels: Sequence[str] | None = None
    label: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "options", tuple(self.options))
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(self.labels))
            if len(self.labels) != len(self.options):
                raise ConfigError(f"Choice has {len(self.options)} options but {len(self.labels)} labels.")

    @property
    def numeric(self) -> bool:
        return all(o is None or _is_number(o) for o in self.options)

    def text(self, value) -> str:
        i = self.options.index(value)
        return self.labels[i] if self.labels else "None" if value is None else str(value)

    def coerce(self, name: str, value, clamp: bool = False) -> tuple[Any, str | None]:
        if value in self.options and not (isinstance(value, bool) and not any(isinstance(o, bool) for o in self.options)):
            return self.options[self.options.index(value)], None
        numbers = [o for o in self.options if _is_number(o) and o > 0]
        if _is_number(value) and value > 0 and numbers:
            near = min(numbers, key=lambda o: abs(math.log(o) - math.log(value)))
            return near, f"{name} = {value:g} is not on this control; using the nearest option, {self.text(near)}."
        shown = ", ".join(self.text(o) for o in self.options)
        raise ConfigError(f"The '{name}' control takes one of {shown}. Got {value!r} instead.")


@dataclass(frozen=True)
class Toggle:
    """A checkbox for a boolean field."""

    label: str | None = None

    def coerce(self, name: str, value, clamp: bool = False) -> tuple[Any, str | None]:
        if isinstance(value, bool):
            return value, None
        raise ConfigError(f"The '{name}' control takes True or False. Got {value!r} instead.")


def round_grid(low: float, high: float, include=()) -> list:
    """The stops of a log slider: 1, 2, 5 × 10^k within [low, high], both ends, and `include` (values
    typed or restored in range, so the slider shows exactly the value used)."""
    values = {float(low), float(high)}
    for k in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1):
        for m in (1, 2, 5):
            v = float(f"{m}e{k}")
            if low <= v <= high:
                values.add(v)
    values |= {float(v) for v in include if _is_number(v) and low <= v <= high}
    return sorted(values)


def show_value(spec, value) -> str:
    """A control's readout: exactly the value used (4 significant digits are enough for the grid's
    values; more when a typed value needs them), the off label's value ("0", "full") when off."""
    if isinstance(spec, Choice):
        return spec.text(value) if value in spec.options else _show(value)
    if isinstance(spec, Toggle):
        return "on" if value else "off"
    if spec.has_off and (value is spec.off or value == spec.off):
        return "full" if value is None else f"{value:g}"
    if isinstance(value, float):
        for digits in range(3, 17):
            text = f"{value:.{digits}g}"
            if float(text) == value:
                return text
    return str(value)


Spec = LogRange | FloatRange | IntRange | Choice | Toggle

COMMON = ("step_size", "batch_size", "weight_decay", "rank")
SYMBOLS = {"step_size": "η", "batch_size": "B", "weight_decay": "λ", "rank": "r", "momentum": "β", "seed": "seed"}


# ---------------------------------------------------------------------------------------------
# default specs for the common controls, fitted to the starting config


def batch_options(n_train: int, include: int | None = None) -> Choice:
    """Powers of two below n, the starting value, and full batch (None)."""
    sizes = {2 ** k for k in range(int(math.log2(max(n_train, 1))) + 1) if 2 ** k < n_train}
    if include is not None and include < n_train:
        sizes.add(int(include))
    sizes = sorted(sizes)
    return Choice([*sizes, None], labels=[*map(str, sizes), f"full batch ({n_train})"], label="batch size B")


def default_spec(name: str, config: RunConfig, n_train: int) -> Spec:
    value = get_value(config, name)
    if name == "step_size":
        low, high = min(1e-4, value), max(10.0, value)
        return LogRange(low, high, label="step size η")
    if name == "weight_decay":
        low, high = (1e-5, 1.0) if value == 0 else (min(1e-5, value), max(1.0, value))
        return LogRange(low, high, off=0.0, off_label="λ = 0", label="weight decay λ", fmt=".1e")
    if name == "batch_size":
        return batch_options(n_train, value)
    if name == "rank":
        width = config.width if config.depth > 0 else 1
        return IntRange(1, width, off=None, off_label="full rank", label="rank r")
    if name == "momentum":
        return FloatRange(0.0, 0.99, step=0.01, label="momentum")
    if name == "seed":
        return IntRange(0, 99, label="seed")
    if name == "steps":
        return IntRange(1, max(10_000, config.steps), step=1, label="steps")
    field = next((f for f in dataclasses.fields(RunConfig) if f.name == name), None)
    if field is not None and isinstance(value, bool):
        return Toggle(label=name)
    raise ConfigError(f"No default control for '{name}'; give its spec in extra, e.g. extra={{'{name}': IntRange(1, 10)}}.")


def spec_for(param) -> Spec:
    """The control for a theme's declared parameter (reglab.theme.Param): the slider range (`slider`, else
    the constraint's), log scale, step, an "off" checkbox (`off`, or None where the constraint allows it)
    and the labels it declares."""
    from reglab.config import Interval, OneOf

    c, label = param.constraint, param.label or param.help.split(" (")[0]
    if isinstance(c, OneOf):
        if set(c.options) <= {True, False}:
            return Toggle(label=label)
        return Choice(list(c.options), labels=param.labels, label=label)
    if isinstance(c, Interval):
        low, high = param.slider or (c.low, c.high)
        off, off_label = param.off or ((None, f"{label}: none") if c.allow_none else (NO_OFF, "off"))
        if c.kind is int:
            return IntRange(int(low), int(high), step=param.step or 1, off=off, off_label=off_label, label=label)
        if param.log:
            return LogRange(low, high, off=off, off_label=off_label, label=label, **({"step": param.step} if param.step else {}))
        return FloatRange(low, high, step=param.step or (high - low) / 100, off=off, off_label=off_label, label=label)
    raise ConfigError(f"No control for a parameter constrained to {c.describe()}.")


# ---------------------------------------------------------------------------------------------
# values <-> config


FIELDS = {f.name for f in dataclasses.fields(RunConfig)}


def _split(name: str) -> tuple[str, str | None]:
    field, _, key = name.partition(".")
    if field not in FIELDS:
        raise ConfigError(f"Unknown control '{name}': not a RunConfig parameter (valid ones are: {', '.join(sorted(FIELDS))}).")
    if key and not isinstance(getattr(RunConfig(), field), dict):
        raise ConfigError(f"Control '{name}': only dict parameters such as data_options take a '.key'.")
    return field, key or None


def get_value(config: RunConfig, name: str, default=None):
    field, key = _split(name)
    value = getattr(config, field)
    return value.get(key, default) if key else value


def config_for(base: RunConfig, values: dict) -> RunConfig:
    """The base config with the control values applied ("data_options.p" sets one key of a dict)."""
    changes: dict = {}
    for name, value in values.items():
        field, key = _split(name)
        if key:
            changes[field] = {**changes.get(field, getattr(base, field)), key: value}
        else:
            changes[field] = value
    return dataclasses.replace(base, **changes)


@dataclass
class Outcome:
    name: str
    value: Any = None
    accepted: bool = True
    message: str | None = None


def resolve(name: str, value, spec: Spec | None, base: RunConfig, values: dict, n_train: int | None,
            clamp: bool = False) -> Outcome:
    """Check one typed value: the core's constraints first (reglab.config's validate_param, then
    validate on the whole config with the data size: refused with its ConfigError message), then the
    control's range (refused with a message naming it; with `clamp`, clamped with a message). Never raises."""
    try:
        field, key = _split(name)
        if not key:
            if field in ("step_size", "weight_decay", "output_scale", "momentum", "sam_radius", "sam_fraction") and _is_number(value):
                value = float(value)
            validate_param(field, value)
        validate(config_for(base, {**values, name: value}), n_train=n_train)  # batch ≤ n, rank ≤ width...
        message = None
        if spec is not None:
            value, message = spec.coerce(name, value, clamp=clamp)
            validate(config_for(base, {**values, name: value}), n_train=n_train)
        return Outcome(name, value, True, message)
    except ConfigError as err:
        old = values.get(name, NO_OFF)
        kept = f" Keeping {name} = {_show(old)}." if old is not NO_OFF else ""
        return Outcome(name, None, False, f"{err}{kept}")


def _show(value) -> str:
    return "full" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


def label(config: RunConfig, names: Sequence[str], specs: dict | None = None) -> str:
    """Short description of a config by its control values: "η=0.1 · B=32 · λ=0 · r=full" (a control
    without a symbol by its shown label, e.g. "corrupted fraction=0.2", when `specs` are given)."""
    def name_of(n):
        shown = getattr((specs or {}).get(n), "label", None)
        return SYMBOLS.get(n) or shown or n.removeprefix("data_options.")

    return " · ".join(f"{name_of(n)}={_show(get_value(config, n))}" for n in names)


# ---------------------------------------------------------------------------------------------
# typed text: "step_size=0.3, batch_size=full" or a stamp


_PAIR = re.compile(r"([A-Za-z_][\w.]*)\s*=\s*(\[[^\]]*\]|\{[^}]*\}|'[^']*'|\"[^\"]*\"|[^,;\s]+)")
_WORDS = {"none": None, "full": None, "null": None, "true": True, "false": False}


def aliases(specs: dict) -> dict:
    """{name a person may type (lower case): control name}: the field name, its key without
    "data_options.", the control's label as shown ("corrupted fraction"), the label without its symbol
    ("step size") and the symbol alone ("η")."""
    out = {}
    for name, spec in specs.items():
        words = [name, name.split(".")[-1], SYMBOLS.get(name, "")]
        shown = getattr(spec, "label", None) or ""
        if shown:
            words += [shown, re.sub(r"\s+\S$", "", shown) if len(shown.split()) > 1 and len(shown.split()[-1]) == 1 else shown]
        for w in words:
            if w:
                out.setdefault(w.lower(), name)
    return out


def parse_assignments(text: str, names: dict | None = None) -> dict:
    """{"step_size": 0.3, "batch_size": None} from "step_size=0.3 batch_size=full" (ConfigError if none).
    names: aliases (see `aliases`), so "corrupted fraction = 0.2" or "η=0.3" work too."""
    for alias, name in sorted((names or {}).items(), key=lambda kv: -len(kv[0])):
        if alias != name.lower():
            text = re.sub(r"(?<![\w.])" + re.escape(alias) + r"(?=\s*=)", name, text, flags=re.IGNORECASE)
    pairs = _PAIR.findall(text)
    if not pairs:
        raise ConfigError(f"Type a config stamp (reglab:{{...}}) or name=value pairs such as step_size=0.05. Got {text!r} instead.")
    out = {}
    for name, raw in pairs:
        if raw.lower() in _WORDS:
            out[name] = _WORDS[raw.lower()]
            continue
        try:
            out[name] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[name] = raw
    return out

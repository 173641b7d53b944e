"""One run configuration, validated up front.

A `RunConfig` is plain data: every knob of a run with a default. `validate` checks each value against
the constraint declared once in `CONSTRAINTS` (scikit-learn style) and raises `ConfigError` naming the
parameter, the allowed range and the value it got. The same constraints serve the Python API, the
explorer's sliders, the CLI and papermill parameters.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import torch


class ConfigError(ValueError):
    """A parameter is out of its allowed range. The message is meant for the person who typed it."""


# ---------------------------------------------------------------------------------------------
# constraints


@dataclass(frozen=True)
class Interval:
    kind: type  # int or float
    low: float = -math.inf
    high: float = math.inf
    closed: str = "both"  # "both", "left", "right", "neither"
    allow_none: bool = False

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.allow_none
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind is int and not float(value).is_integer():
            return False
        if math.isnan(value):
            return False
        low_ok = value >= self.low if self.closed in ("both", "left") else value > self.low
        high_ok = value <= self.high if self.closed in ("both", "right") else value < self.high
        return low_ok and high_ok

    def describe(self) -> str:
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        fmt = lambda v: "inf" if v == math.inf else "-inf" if v == -math.inf else f"{v:g}"
        text = f"{'an int' if self.kind is int else 'a float'} in the range {left}{fmt(self.low)}, {fmt(self.high)}{right}"
        return text + (" or None" if self.allow_none else "")


@dataclass(frozen=True)
class OneOf:
    options: tuple

    def accepts(self, value: Any) -> bool:
        return value in self.options

    def describe(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)


@dataclass(frozen=True)
class Kind:
    kind: type

    def accepts(self, value: Any) -> bool:
        return isinstance(value, self.kind)

    def describe(self) -> str:
        return f"a {self.kind.__name__}"


@dataclass(frozen=True)
class ListOf:
    item: Any  # the constraint every entry meets
    at_least: int = 1

    def accepts(self, value: Any) -> bool:
        return (isinstance(value, (list, tuple)) and len(value) >= self.at_least
                and all(self.item.accepts(v) for v in value))

    def describe(self) -> str:
        return f"a list of at least {self.at_least} entr{'y' if self.at_least == 1 else 'ies'}, each {self.item.describe()}"


def check(name: str, value: Any, constraint, owner: str = "RunConfig") -> None:
    """Raise ConfigError unless `value` satisfies `constraint`."""
    if not constraint.accepts(value):
        raise ConfigError(f"The '{name}' parameter of {owner} must be {constraint.describe()}. Got {value!r} instead.")


# ---------------------------------------------------------------------------------------------
# the configuration

DATASETS = ("mnist1d", "digits", "sparse_teacher", "random_features", "modular", "zipf", "zipf_sequences",
            "separable", "gaussian_mixture", "lag2_markov", "arrays")
MODELS = ("mlp", "bigram", "transformer")
ACTIVATIONS = ("relu", "tanh", "gelu", "linear")
LOSSES = ("ce", "stablemax_ce", "mse", "hinge", "logistic")
OPTIMIZERS = ("sgd", "adamw")


@dataclass
class RunConfig:
    """Everything that determines a run. Same config + seed on the same machine → same numbers."""

    # data
    data: str = "mnist1d"
    n_train: int | None = None  # None: the data set's default size
    data_seed: int = 0
    data_options: dict = field(default_factory=dict)  # generator-specific knobs (p, vocab, margin…)
    # model
    model: str = "mlp"
    width: int = 100
    depth: int = 2  # hidden layers; 0 gives a linear model (the transformer: blocks, 1 to 4)
    heads: int = 1  # attention heads of the transformer; must divide the width
    activation: str = "relu"
    rank: int | None = None  # rank r of the factorized layer W = U Vᵀ; None: full rank
    rank_layer: int | None = None  # which weight matrix is factorized (0 = input layer); None: 1, or 0 if depth = 0
    bias: bool = True
    init_std: float | None = None  # None: PyTorch's default uniform init; a float: N(0, std²) weights and biases
    batchnorm: bool = False
    ghost_batch: int | None = None  # BatchNorm statistics over ghost batches of this size (Hoffer et al.)
    qk_layernorm: bool = False  # transformer: LayerNorm on each head's queries and keys
    z_loss: float = 0.0  # coefficient of log²Z of the output softmax, added to the training loss
    output_scale: float = 1.0  # α: the model outputs α·(f(x) − f₀(x)) when center_output
    center_output: bool = False
    # objective and optimizer
    loss: str = "ce"
    optimizer: str = "sgd"
    step_size: float = 0.1
    batch_size: int | None = None  # None or n_train: full-batch GD
    weight_decay: float = 0.0
    decay: str = "decoupled"  # "decoupled" (AdamW: w ← w − η·λ·w), "coupled" (L2 in the gradient) or
    # "independent" (w ← w − λ·w: decay independent of the step size, following the schedule)
    decay_biases: bool = False  # nanoGPT policy: matrices decay, biases and norm gains don't
    momentum: float = 0.0
    betas: tuple = (0.9, 0.999)
    adam_eps: float = 1e-8
    grad_clip: float | None = None
    sam_radius: float = 0.0
    sam_fraction: float = 1.0  # SAM is applied for this leading fraction of the steps
    orthogonal_grad: bool = False  # ⊥Grad: remove the gradient's component along the weights
    lr_schedule: str = "constant"
    warmup_steps: int = 0  # linear warm-up of the step size before the schedule
    steps: int = 1000
    eval_every: int | None = None  # None: every 50 steps, or every step of a run shorter than that
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"

    # fields that may differ between members of one batched ensemble
    PER_MEMBER = ("step_size", "weight_decay", "seed", "momentum", "batch_size", "sam_radius", "grad_clip")

    def __post_init__(self):
        if self.eval_every is None:
            self.eval_every = min(50, self.steps) if isinstance(self.steps, int) and self.steps >= 1 else 50

    # -- identity ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(d["betas"])
        return d

    def to_text(self) -> str:
        """Copyable text of the non-default fields; `RunConfig.from_text` recreates the config."""
        default = RunConfig().to_dict()
        changed = {k: v for k, v in self.to_dict().items() if v != default[k]}
        return "reglab:" + json.dumps(changed, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_text(cls, text: str) -> "RunConfig":
        body = text.strip()
        if body.startswith("reglab:"):
            body = body[len("reglab:"):]
        try:
            values = json.loads(body)
        except json.JSONDecodeError as err:
            raise ConfigError(f"Not a reglab config stamp: {text[:60]!r} ({err.msg}).") from None
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, values: dict) -> "RunConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"Unknown RunConfig parameter(s) {', '.join(unknown)}; valid ones are: {', '.join(sorted(names))}.")
        values = dict(values)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)

    def short_hash(self) -> str:
        """A stable 10-character hash of the config (same on every machine and Python run)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)


CONSTRAINTS: dict[str, Any] = {
    "data": OneOf(DATASETS),
    "n_train": Interval(int, 2, math.inf, allow_none=True),
    "data_seed": Interval(int, 0, 2**31 - 1),
    "data_options": Kind(dict),
    "model": OneOf(MODELS),
    "width": Interval(int, 1, 100_000),
    "depth": Interval(int, 0, 64),
    "heads": Interval(int, 1, 1024),
    "activation": OneOf(ACTIVATIONS),
    "rank": Interval(int, 1, math.inf, allow_none=True),
    "rank_layer": Interval(int, 0, 64, allow_none=True),
    "bias": OneOf((True, False)),
    "init_std": Interval(float, 0, math.inf, closed="neither", allow_none=True),
    "batchnorm": OneOf((True, False)),
    "ghost_batch": Interval(int, 2, math.inf, allow_none=True),
    "qk_layernorm": OneOf((True, False)),
    "z_loss": Interval(float, 0, math.inf),
    "output_scale": Interval(float, 0, math.inf, closed="neither"),
    "center_output": OneOf((True, False)),
    "loss": OneOf(LOSSES),
    "optimizer": OneOf(OPTIMIZERS),
    "step_size": Interval(float, 0, math.inf, closed="neither"),
    "batch_size": Interval(int, 1, math.inf, allow_none=True),
    "weight_decay": Interval(float, 0, math.inf, closed="left"),
    "decay": OneOf(("decoupled", "coupled", "independent")),
    "decay_biases": OneOf((True, False)),
    "momentum": Interval(float, 0, 1, closed="left"),
    "betas": Kind(tuple),
    "adam_eps": Interval(float, 0, 1, closed="right"),
    "grad_clip": Interval(float, 0, math.inf, closed="neither", allow_none=True),
    "sam_radius": Interval(float, 0, math.inf, closed="left"),
    "sam_fraction": Interval(float, 0, 1),
    "orthogonal_grad": OneOf((True, False)),
    "lr_schedule": OneOf(("constant", "cosine", "step")),
    "warmup_steps": Interval(int, 0, 10_000_000),
    "steps": Interval(int, 1, 10_000_000),
    "eval_every": Interval(int, 1, 10_000_000),
    "seed": Interval(int, 0, 2**31 - 1),
    "device": OneOf(("auto", "cpu", "cuda")),
    "dtype": OneOf(("float32", "float64")),
}


def validate_param(name: str, value: Any) -> None:
    """Check one parameter against its declared constraint (used by the CLI and the explorer)."""
    if name in CONSTRAINTS:
        check(name, value, CONSTRAINTS[name])


def validate(config: RunConfig, n_train: int | None = None) -> RunConfig:
    """Check every field; with the data set's size also check the batch size. Returns the config."""
    for name, constraint in CONSTRAINTS.items():
        check(name, getattr(config, name), constraint)
    if config.model == "transformer":
        if not 1 <= config.depth <= 4:
            raise ConfigError(f"The 'depth' parameter of RunConfig must be an int in the range [1, 4] for "
                              f"model='transformer' (its number of blocks). Got {config.depth!r} instead.")
        if config.width % config.heads:
            raise ConfigError(f"The 'heads' parameter of RunConfig must be an int in the range [1, 1024] that divides "
                              f"the width ({config.width}). Got {config.heads!r} instead.")
        if config.rank is not None:
            raise ConfigError(f"The 'rank' parameter of RunConfig must be None for model='transformer' (rank "
                              f"factorizes an MLP layer; a transformer's bottleneck is its width). "
                              f"Got {config.rank!r} instead.")
    if config.rank is not None:
        if config.rank_layer is not None and config.rank_layer > config.depth:
            raise ConfigError(f"The 'rank_layer' parameter of RunConfig must be an int in the range [0, {config.depth}] "
                              f"(the depth). Got {config.rank_layer!r} instead.")
        if config.depth > 0 and config.rank > config.width:  # a layer into or out of the hidden width
            raise ConfigError(f"The 'rank' parameter of RunConfig must be an int in the range [1, {config.width}] "
                              f"(the layer width) or None. Got {config.rank!r} instead.")
    if config.ghost_batch is not None:
        batch = config.batch_size or n_train
        if not config.batchnorm or config.model != "mlp":
            raise ConfigError("The 'ghost_batch' parameter of RunConfig needs model='mlp' with batchnorm=True. "
                              f"Got ghost_batch={config.ghost_batch!r} without BatchNorm.")
        if batch is not None and batch % config.ghost_batch:
            raise ConfigError(f"The 'ghost_batch' parameter of RunConfig must divide the batch size ({batch}). "
                              f"Got {config.ghost_batch!r} instead.")
    if n_train is not None and config.batch_size is not None and config.batch_size > n_train:
        raise ConfigError(
            f"The 'batch_size' parameter of RunConfig must be an int in the range [1, {n_train}] "
            f"(the number of training examples) or None for full batch. Got {config.batch_size!r} instead."
        )
    if config.eval_every > config.steps:
        raise ConfigError(f"The 'eval_every' parameter of RunConfig must be an int in the range [1, {config.steps}] (the steps). Got {config.eval_every!r} instead.")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("The 'device' parameter of RunConfig is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'.")
    return config


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)

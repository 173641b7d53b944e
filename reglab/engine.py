"""The one training engine: a single run and a batched sweep are the same loop.

    run = train(RunConfig(step_size=0.1))                          # one model
    sweep = train([cfg.replace(step_size=s) for s in (0.05, 0.1)]) # one stacked ensemble

Members of an ensemble differ only in the fields `RunConfig.PER_MEMBER` (step size, weight decay,
seed, momentum, batch size, SAM radius, clipping); their parameters are stacked along a leading axis
and trained by batched matmuls, one backward pass for all. Metrics stream out as tidy rows
(run, step, metric, value) through `on_eval`; `stop` cancels; a member whose loss turns non-finite
or explodes is frozen and recorded as diverged at that step.
"""
from __future__ import annotations

import dataclasses
import math
import os
import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

import pandas as pd
import torch

from . import transforms as T
from .config import ConfigError, RunConfig, resolve_device, validate
from .data import Dataset, make_dataset
from .losses import LOSSES, accuracy, batch_loss
from .models import build_model
from .notebook import batch

EVAL_ELEMENTS = 2 ** 20  # activations (members × examples × width × positions) per evaluation forward pass


def eval_chunk(model, params: dict, x: torch.Tensor) -> int:
    """Examples per forward pass when evaluating on a whole split: about EVAL_ELEMENTS activations, so one
    hidden layer of all members stays cache-sized. Measured on 2-core CPUs: a 27-member ensemble evaluates
    1.7× (MLP, width 100) to 2× (transformer, width 16 × 8 tokens) faster in chunks of ~300 than of 8192,
    while a single MLP is fastest in large chunks."""
    members = next(iter(params.values())).shape[0]
    positions = x.shape[1] if x.dim() == 2 and not x.is_floating_point() else 1  # token sequences
    per_example = members * getattr(model, "width", 1) * positions
    return int(min(8192, max(64, EVAL_ELEMENTS // per_example)))


DIVERGENCE_FACTOR = 1e4  # a loss this many times its initial value (or non-finite) counts as diverged


@dataclass
class TrainState:
    """What a probe sees at an evaluation point."""

    step: int
    params: dict
    model: object
    data: Dataset
    configs: list
    loss_name: str
    alive: torch.Tensor  # [M] bool: members that have not diverged
    memo: dict = field(default_factory=dict, repr=False)  # this evaluation's forward passes, by split

    def loss(self, params=None, split="train", x=None, y=None) -> torch.Tensor:
        """Differentiable mean loss of every member on a split (or given x, y): [M]."""
        params = self.params if params is None else params
        if x is None:
            x, y = (self.data.x_train, self.data.y_train) if split == "train" else (self.data.x_test, self.data.y_test)
        return LOSSES[self.loss_name](self.model(params, x), y).mean(-1)

    def features(self, split="train") -> list:
        """Hidden features of every member on a whole split, `model.features` of it: the evaluation's
        own forward pass when it made one (no second pass for probes)."""
        if split not in self.memo:
            x = self.data.x_train if split == "train" else self.data.x_test
            with torch.no_grad():
                self.memo[split] = self.model.features(self.params, x)
        return self.memo[split]


@dataclass
class Run:
    """The outcome of `train`: tidy history, one summary row per member, final parameters."""

    configs: list
    history: pd.DataFrame  # columns: run, step, metric, value
    summary: pd.DataFrame  # one row per member: its per-member settings, final metrics, diverged_at
    params: dict
    model: object
    data: Dataset
    stopped: bool = False
    step_losses: torch.Tensor | None = None  # [steps, M] training-batch loss at every step

    def curve(self, metric: str) -> pd.DataFrame:
        """History of one metric with each member's settings joined in (for charts)."""
        rows = self.history[self.history.metric == metric]
        return rows.merge(self.summary[["run", *labels(self.configs)]], on="run")

    def member(self, i: int) -> dict:
        return {k: v[i] for k, v in self.params.items()}

    @property
    def diverged(self) -> pd.Series:
        return self.summary.set_index("run")["diverged_at"]

    def diverged_step(self, m: int) -> int | None:
        """The step at which member m diverged, None if it did not."""
        d = self.summary["diverged_at"].iloc[m]
        return None if d is None or pd.isna(d) else int(d)

    def loss(self, params=None, split: str = "train") -> torch.Tensor:
        """Differentiable mean loss of every member on a whole split at `params` (default: the final
        parameters): [M]. The function the curvature methods below differentiate."""
        params = self.params if params is None else params
        x, y = (self.data.x_train, self.data.y_train) if split == "train" else (self.data.x_test, self.data.y_test)
        return LOSSES[self.configs[0].loss](self.model(params, x), y).mean(-1)

    @property
    def alive(self) -> torch.Tensor:
        """[M] bool: the members that did not diverge."""
        return torch.tensor([self.diverged_step(m) is None for m in range(len(self.configs))])

    def hessian(self, top: int = 1, split: str = "train", tol: float = 1e-4, seed: int = 0) -> torch.Tensor:
        """The `top` largest eigenvalues of each member's loss Hessian at its final parameters: [M, top],
        by Lanczos with a certified stop (every Ritz residual ≤ tol·|θ|). Diverged members get NaN."""
        from .curvature import top_eigenvalues

        return top_eigenvalues(lambda p: self.loss(p, split), self.params, k=top, tol=tol, active=self.alive,
                               generator=torch.Generator().manual_seed(seed)).eigenvalues

    def hessian_trace(self, n_probes: int = 100, split: str = "train", seed: int = 0) -> tuple:
        """Hutchinson's estimate of each member's Hessian trace at its final parameters:
        (mean [M], standard error [M])."""
        from .curvature import hutchinson_trace

        return hutchinson_trace(lambda p: self.loss(p, split), self.params, n_probes=n_probes,
                                generator=torch.Generator().manual_seed(seed))


def labels(configs) -> list:
    """The per-member fields that actually vary in this ensemble (always at least step_size)."""
    varying = [f for f in RunConfig.PER_MEMBER if len({str(getattr(c, f)) for c in configs}) > 1]
    return varying or ["step_size"]


def _check_ensemble(configs: Sequence[RunConfig]) -> None:
    shared = [f.name for f in dataclasses.fields(RunConfig) if f.name not in RunConfig.PER_MEMBER]
    for f in shared:
        values = {repr(getattr(c, f)) for c in configs}
        if len(values) > 1:
            raise ConfigError(f"All members of one ensemble must share '{f}' (got {', '.join(sorted(values))}); "
                              f"only {', '.join(RunConfig.PER_MEMBER)} may differ.")


def _optimizer(cfg: RunConfig, configs, mask, device, dtype):
    """(the chain that turns gradients into descent directions, the step that moves along them)."""
    member = lambda name, none=math.inf: torch.tensor(
        [none if getattr(c, name) is None else float(getattr(c, name)) for c in configs], device=device, dtype=dtype)
    links = []
    if any(c.grad_clip is not None for c in configs):
        links.append(T.clip_by_global_norm(member("grad_clip")))
    if cfg.orthogonal_grad:
        links.append(T.orthogonal_to_weights())
    decays = any(c.weight_decay > 0 for c in configs)  # a zero-decay link would only cost time
    if cfg.decay == "coupled" and decays:
        links.append(T.add_l2(member("weight_decay"), mask))
    if cfg.optimizer == "adamw":
        links.append(T.adam(*cfg.betas, eps=cfg.adam_eps))
    elif any(c.momentum > 0 for c in configs):
        links.append(T.momentum(member("momentum")))
    if cfg.decay == "decoupled" and decays:
        links.append(T.add_decayed_weights(member("weight_decay"), mask))
    if cfg.decay == "independent" and decays:  # λ/η here, times η in the step: w ← w − λ·w, whatever η is
        links.append(T.add_decayed_weights(member("weight_decay") / member("step_size"), mask))
    return T.chain(*links), T.descend(member("step_size"), T.schedule(cfg.lr_schedule, cfg.steps, cfg.warmup_steps))


class _Batches:
    """Each member draws its own stream of shuffled indices from its own generator (so a member's
    batches do not depend on the ensemble it is in); streams are cut into per-member batch sizes and
    padded to the largest, with weights 1/B on real entries and 0 on padding."""

    def __init__(self, generators, sizes, n, device, dtype, chunk=256):
        self.generators, self.sizes, self.n, self.chunk = generators, sizes, n, chunk
        self.full = all(b >= n for b in sizes)
        self.device = device
        self.b_max = max(sizes)
        self.leftover = [torch.empty(0, dtype=torch.long) for _ in sizes]
        w = torch.zeros(len(sizes), self.b_max, dtype=dtype)
        for m, b in enumerate(sizes):
            w[m, :b] = 1.0 / b
        self.weights = w.to(device)
        self.queue, self.pos = None, 0

    def _refill(self):
        rows = []
        for m, (g, b) in enumerate(zip(self.generators, self.sizes)):
            if b >= self.n:
                rows.append(torch.arange(self.n).repeat(self.chunk, 1))
                continue
            need = self.chunk * b
            stream = [self.leftover[m]]
            have = len(self.leftover[m])
            while have < need:
                stream.append(torch.randperm(self.n, generator=g))
                have += self.n
            stream = torch.cat(stream)
            self.leftover[m] = stream[need:]
            rows.append(torch.nn.functional.pad(stream[:need].view(self.chunk, b), (0, self.b_max - b)))
        self.queue, self.pos = torch.stack(rows, 1).to(self.device), 0  # [chunk, M, b_max]

    def next(self):
        if self.full:
            return None, None
        if self.queue is None or self.pos == self.chunk:
            self._refill()
        idx = self.queue[self.pos]
        self.pos += 1
        return idx, self.weights


def _gather(t: torch.Tensor, idx):
    """Rows idx [M, B] of t, as [M, B, ...] (index_select: 3× faster than t[idx] at these sizes)."""
    return t if idx is None else t.index_select(0, idx.reshape(-1)).view(*idx.shape, *t.shape[1:])


def value_and_grad(model, params, x, y, loss_name, weights, z_loss=0.0):
    """(loss [M], {name: gradient}): every member's batch loss (plus z_loss·log²Z, the z-loss of the
    output softmax), differentiated by autograd. Members never interact, so the gradient of the summed
    loss is each member's own."""
    with torch.enable_grad():
        out = model(params, x)
        per_example = LOSSES[loss_name](out, y)
        if z_loss:
            per_example = per_example + z_loss * torch.logsumexp(out, -1).pow(2)
        loss = batch_loss(per_example, weights)
        grads = torch.autograd.grad(loss.sum(), list(params.values()), materialize_grads=True)  # unused: zeros
    return loss.detach(), dict(zip(params, grads))


def _sam_gradient(model, params, x, y, loss_name, weights, z_loss, grads, radius):
    """Sharpness-aware minimization: the gradient at w + ρ g/‖g‖, per member."""
    scale = radius / (T.member_norm(grads) + 1e-12)
    shifted = {k: (p + T.per_member(scale, p) * grads[k]).detach().requires_grad_() for k, p in params.items()}
    return value_and_grad(model, shifted, x, y, loss_name, weights, z_loss)[1]


def evaluate(model, params, data: Dataset, loss_name: str, memo: dict | None = None) -> dict:
    """Loss and accuracy of every member on the full train and test splits: name -> [M]. With `memo`,
    each split's hidden features are kept there (see TrainState.features)."""
    out = {}
    with torch.no_grad():
        for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
            if len(x) == 0:
                continue
            losses, accs, feats = [], [], []
            chunk = eval_chunk(model, params, x)
            for i in range(0, len(x), chunk):
                o, f = model.forward(params, x[i:i + chunk])
                if memo is not None:
                    feats.append(f)
                losses.append(LOSSES[loss_name](o, y[i:i + chunk]))
                a = accuracy(o, y[i:i + chunk])
                if a is not None:
                    accs.append(a)
            out[f"{split}_loss"] = torch.cat(losses, 1).mean(1)
            if memo is not None:
                memo[split] = feats[0] if len(feats) == 1 else [torch.cat(layer, 1) for layer in zip(*feats)]
            if accs:
                out[f"{split}_acc"] = torch.cat(accs, 1).mean(1)
    return out


def default_threads() -> int:
    """Intra-op threads: REGLAB_THREADS, else 1 (measured in benchmarks/threads.py: on the shared
    2-core machines a second thread bought little alone and cost a lot under load)."""
    return int(os.environ.get("REGLAB_THREADS", "1"))


def train(configs: RunConfig | Sequence[RunConfig], data: Dataset | None = None, probes: Sequence[Callable] = (),
          on_eval: Callable | None = None, stop: threading.Event | Callable | None = None,
          progress: bool | None = None, cache: str | bool = False, start: dict | None = None) -> Run:
    """Train one config, or a list of configs as one batched ensemble.

    probes: callables `probe(state: TrainState) -> {metric: Tensor[M]}` run at every evaluation.
    on_eval: called as `on_eval(rows, step)` with the new tidy rows, for live charts.
    stop: an Event (or a function returning True) that cancels the run; what was done is returned.
    cache: True (or a string naming what the probes/data add to the key) reuses a finished run with the
    same configs (and probe reprs) from the disk cache; its rows are replayed to on_eval at once.
    start: parameters to train from instead of the initialization, {name: Tensor[M, ...]} with the model's
    names and shapes (e.g. an earlier `Run.params`, to go on with another step size); a ConfigError says
    what does not match. Only the weights carry over: the optimizer state (momentum, Adam's moments), the
    step count (the history starts at step 0), the step-size schedule and its warm-up start afresh;
    batches are drawn as in a fresh run of the seed, and a centered output (`center_output`) still
    subtracts the seed's initial function. Not combined with `cache` (a cached run is keyed by its configs).
    """
    configs = [configs] if isinstance(configs, RunConfig) else list(configs)
    if not configs:
        raise ConfigError("train needs at least one RunConfig.")
    _check_ensemble(configs)
    if cache and start is not None:
        raise ConfigError("train takes start= or cache=, not both: a cached run is keyed by its configs, not by "
                          "the parameters it started from.")
    if cache:
        return _cached_train(configs, data, probes, on_eval, stop, progress, cache)
    cfg = configs[0]
    if data is None:
        data = make_dataset(cfg.data, cfg.n_train, cfg.data_seed, **cfg.data_options)
    for c in configs:
        validate(c, n_train=data.n_train)
    batch_sizes = [c.batch_size or data.n_train for c in configs]  # None: the full batch
    if cfg.batchnorm and len(set(batch_sizes)) > 1:  # a smaller batch is padded, and padding would enter its statistics
        raise ConfigError(f"BatchNorm members of one ensemble must share 'batch_size' (got "
                          f"{', '.join(map(str, sorted(set(batch_sizes))))}): "
                          f"train each batch size as its own run.")
    device, dtype = resolve_device(cfg.device), getattr(torch, cfg.dtype)
    if device.type == "cpu":
        torch.set_num_threads(default_threads())
    data = data.to(device, dtype)
    M, n = len(configs), data.n_train
    generators = [torch.Generator().manual_seed(c.seed) for c in configs]
    model = build_model(cfg, data)
    params = model.init(generators, device, dtype)  # also with `start`: the generators then draw the same batches
    if start is not None:
        params = _start_from(start, params)
    mask = model.decay_mask(params, cfg.decay_biases)
    opt, descend = _optimizer(cfg, configs, mask, device, dtype)
    opt_state = opt.init(params)
    batches = _Batches(generators, batch_sizes, n, device, dtype)
    sam_radius = torch.tensor([c.sam_radius for c in configs], device=device, dtype=dtype)
    sam_until = int(cfg.sam_fraction * cfg.steps) if bool((sam_radius > 0).any()) else 0
    should_stop = stop.is_set if isinstance(stop, threading.Event) else (stop or (lambda: False))

    alive, all_alive = torch.ones(M, dtype=torch.bool, device=device), True
    diverged_at = torch.full((M,), -1, dtype=torch.long, device=device)
    step_losses = torch.zeros(cfg.steps, M, dtype=dtype, device=device)
    limit = None
    rows: list = []
    leaves = list(params.values())
    for p in leaves:
        p.requires_grad_(True)  # updated in place under no_grad: the same leaves all run long

    def record(step):
        state = TrainState(step, params, model, data, configs, cfg.loss, alive)
        metrics = evaluate(model, params, data, cfg.loss, state.memo)
        for probe in probes:
            metrics.update(probe(state))
        new = []
        for name, values in metrics.items():
            values = torch.where(alive, values, torch.full_like(values, float("nan"))).tolist()
            new += [{"run": m, "step": step, "metric": name, "value": v} for m, v in enumerate(values)]
        rows.extend(new)
        if on_eval is not None:
            on_eval(new, step)

    bar = _progress(cfg.steps, progress, M)
    record(0)
    stopped = False
    for step in range(1, cfg.steps + 1):
        if should_stop():
            stopped = True
            break
        idx, w = batches.next()
        x, y = _gather(data.x_train, idx), _gather(data.y_train, idx)
        loss, grads = value_and_grad(model, params, x, y, cfg.loss, w, cfg.z_loss)
        if step <= sam_until:
            grads = _sam_gradient(model, params, x, y, cfg.loss, w, cfg.z_loss, grads, sam_radius)
        with torch.no_grad():
            step_losses[step - 1] = loss
            if limit is None:
                limit = DIVERGENCE_FACTOR * torch.clamp(loss.abs(), min=1.0)
            bad = ~(loss <= limit)  # NaN compares False: non-finite and exploding losses alike
            if bool(bad.any()):  # rare: record the step, freeze the member at its last finite parameters
                diverged_at = torch.where(bad & alive, torch.full_like(diverged_at, step), diverged_at)
                alive = alive & ~bad
                all_alive = bool(alive.all())
            directions, opt_state = opt.update(grads, opt_state, params)
            descend(leaves, [directions[k] for k in params], step - 1, None if all_alive else alive)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            record(step)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    history = pd.DataFrame(rows, columns=["run", "step", "metric", "value"])
    summary = _summary(configs, history, diverged_at.tolist())
    params = {k: p.detach() for k, p in params.items()}
    return Run(configs, history, summary, params, model, data, stopped, step_losses[: step if not stopped else step - 1].cpu())


def _start_from(start, params: dict) -> dict:
    """Copies of `start`'s tensors on the model's device and dtype, after checking that they are the
    model's parameters: the same names, each of the same shape (leading axis: the members)."""
    if not isinstance(start, dict):
        raise ConfigError(f"start= takes a dict of parameter tensors, e.g. an earlier Run.params. Got {type(start).__name__} instead.")
    missing, unknown = [k for k in params if k not in start], [k for k in start if k not in params]
    if missing or unknown:
        raise ConfigError(f"start= must hold exactly the model's parameters ({', '.join(params)}); "
                          + "; ".join(part for part in (f"missing {', '.join(missing)}" if missing else "",
                                                        f"unknown {', '.join(map(str, unknown))}" if unknown else "") if part)
                          + ". Were they trained with another model, width, depth or rank?")
    out = {}
    for k, p in params.items():
        t = start[k]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(p.shape):
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ConfigError(f"start['{k}'] has shape {got}; this model's '{k}' has shape {tuple(p.shape)} "
                              f"([members, ...]). Start from parameters of the same model and ensemble size.")
        out[k] = t.detach().to(device=p.device, dtype=p.dtype).clone()
    return out


def _summary(configs, history, diverged_at) -> pd.DataFrame:
    # the value at each member's last evaluation: NaN for a member that diverged (see diverged_at)
    last = (history.sort_values("step", kind="stable").groupby(["run", "metric"]).tail(1)
            .set_index(["run", "metric"])["value"].unstack()) if len(history) else None
    rows = []
    for m, c in enumerate(configs):
        row = {"run": m, **{f: getattr(c, f) for f in RunConfig.PER_MEMBER}, "config": c.to_text()}
        row["diverged_at"] = None if diverged_at[m] < 0 else diverged_at[m]
        if last is not None and m in last.index:
            row.update(last.loc[m].to_dict())
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame["diverged_at"] = pd.array([r["diverged_at"] for r in rows], dtype="Int64")  # <NA>: did not diverge
    return frame


def _progress(total, progress, members):
    if progress is None:
        progress = not batch()
    if not progress:
        return None
    from tqdm.auto import tqdm

    from .charts import headless

    # in a notebook the finished bar stays (a closed widget reads "Error displaying widget" in Voilà); in a
    # terminal it is erased, so sweeps of many train() calls do not fill the log
    return tqdm(total=total, desc=f"training {members} run{'s' if members > 1 else ''}", leave=not headless(),
                mininterval=0.5)


def _cached_train(configs, data, probes, on_eval, stop, progress, cache) -> Run:
    from . import cache as disk

    extra = "" if cache is True else str(cache)
    key = disk.key_of(*(c.to_text() for c in configs), extra, "" if data is None else data.fingerprint(),
                      *(repr(p) for p in probes))
    run = disk.load(key)
    if run is not None:
        if on_eval is not None:
            for step, rows in run.history.groupby("step", sort=True):
                on_eval(rows.to_dict("records"), int(step))
        return run
    run = train(configs, data, probes, on_eval, stop, progress)
    if not run.stopped:  # a cancelled run is not a result for this config
        disk.store(key, run)
    return run

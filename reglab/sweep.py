"""Sweeps: many configs trained as batched ensembles, in this process or on a Ray cluster, resumable.

    result = reglab.sweep(base, {"step_size": [0.05, 0.1, 0.2], "seed": [0, 1, 2]})
    result = reglab.sweep(configs, cluster="ray://head:10001", store="runs/atlas")
    result.summary           # one row per config: its settings, final metrics, diverged_at

The configs are grouped into compatible ensembles (members may differ only in RunConfig.PER_MEMBER
fields, and BatchNorm members also share a batch size), and each group is cut into chunks that fit a
memory budget. A chunk is one `reglab.train` call: in this process (`cluster=None`), or one Ray task
(`cluster="local"` starts a Ray instance on this machine; `"ray"` joins the one `ray start` runs here;
`"ray://host:port"` a remote cluster). Ray retries a task whose worker dies (`max_retries`).

Each finished chunk is written to `store` at once (one file per chunk, written atomically), so the same
call after an interruption (Ctrl-C, a dead driver) trains only the chunks that are missing. A member
gets the same numbers wherever its chunk runs: its seed, not its neighbours, draws its initialization
and batches.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

from .config import ConfigError, RunConfig, validate
from .engine import train
from .notebook import batch

MEMORY_BUDGET_MB = 1024  # per chunk: a 2-core laptop trains comfortably inside it


@dataclass
class SweepResult:
    """The sweep's tidy frames, each with `run` = the config's index: `summary` (one row per config, its
    settings as columns, final metrics and diverged_at), `history` (run, step, metric, value) and any
    other frame the chunk function returns; `chunk_table` has one row per chunk (members, from_store and
    the chunk's own scalar results); and how it ran."""

    configs: list
    frames: dict
    chunk_table: pd.DataFrame
    chunks: int  # chunks in the plan
    trained: int  # chunks trained by this call (the rest came from the store)
    chunk_members: int  # the largest chunk

    @property
    def summary(self) -> pd.DataFrame:
        return self.frames["summary"]

    @property
    def history(self) -> pd.DataFrame:
        return self.frames["history"]


def expand(base: RunConfig, grid: dict) -> list:
    """Every combination of the grid's values on top of `base` (any RunConfig field may vary)."""
    names = list(grid)
    for name in names:
        if name not in RunConfig.__dataclass_fields__:
            raise ConfigError(f"Unknown RunConfig parameter '{name}' in the sweep grid.")
    return [base.replace(**dict(zip(names, combo))) for combo in itertools.product(*grid.values())]


def _group_key(c: RunConfig) -> str:
    shared = {k: v for k, v in c.to_dict().items() if k not in RunConfig.PER_MEMBER}
    if c.batchnorm:  # padding would enter the batch statistics: one batch size per BatchNorm ensemble
        shared["batch_size"] = c.batch_size
    return repr(sorted(shared.items()))


def member_megabytes(c: RunConfig) -> float:
    """A generous estimate of one member's memory: parameters with gradients and optimizer state, and the
    hidden activations of an evaluation chunk (the engine evaluates 4096 examples at a time)."""
    n_in = 64 if c.model != "mlp" else 1024
    params = c.width * (n_in + c.width * max(c.depth - 1, 0) + 100)
    activations = 4096 * c.width * max(c.depth, 1) * 3
    return 4 * (4 * params + activations) / 2**20


def plan(configs: Sequence[RunConfig], memory_budget_mb: float = MEMORY_BUDGET_MB, chunk_members: int | None = None) -> list:
    """Chunks of config indices: compatible members together, at most what the memory budget holds
    (or `chunk_members`)."""
    groups: dict = {}
    for i, c in enumerate(configs):
        groups.setdefault(_group_key(c), []).append(i)
    chunks = []
    for members in groups.values():
        size = chunk_members or max(1, int(memory_budget_mb // member_megabytes(configs[members[0]])))
        chunks += [members[i:i + size] for i in range(0, len(members), size)]
    return chunks


def _chunk_id(configs) -> str:
    return hashlib.sha1("\n".join(c.to_text() for c in configs).encode()).hexdigest()[:16]


def _write(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: Path):
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception:  # absent, partial or from another version: train it again
        return None


def train_chunk(texts: list) -> dict:
    """Train one chunk (configs as their text stamps) and return its tidy frames: what a worker sends back."""
    run = train([RunConfig.from_text(t) for t in texts], progress=False)
    return {"summary": run.summary, "history": run.history}


def _connect(cluster: str):
    try:
        import ray
    except ImportError:
        raise ConfigError(f"cluster={cluster!r} needs Ray: pip install -e \".[cluster]\" (or pip install ray).") from None
    if ray.is_initialized():
        return ray
    try:
        if cluster == "local":
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address="auto" if cluster == "ray" else cluster, log_to_driver=False)
    except Exception as err:  # an address nobody answers at, a cluster not running
        raise ConfigError(f"Could not reach the Ray cluster at {cluster!r}: {str(err).splitlines()[0]}") from None
    return ray


def _ray_chunks(ray, todo, configs, max_retries, chunk_fn, chunk_args):
    """Run the chunks as Ray tasks; yields (chunk, frames) as each one finishes."""
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0  # one GPU per chunk where the cluster has them
    task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=max_retries)(chunk_fn)
    pending = {task.remote([configs[i].to_text() for i in chunk], *chunk_args): chunk for chunk in todo}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        chunk = pending.pop(done[0])
        yield chunk, ray.get(done[0])


def sweep(configs, grid: dict | None = None, *, cluster: str | None = None, store: str | os.PathLike | None = None,
          memory_budget_mb: float = MEMORY_BUDGET_MB, chunk_members: int | None = None, max_retries: int = 3,
          chunk=train_chunk, chunk_args: tuple = (), progress: bool | None = None) -> SweepResult:
    """Train every config (a list, or a base config and a `grid` of values) as batched ensembles.

    cluster: None (in this process), "local", "ray" or "ray://host:port". store: the folder finished
    chunks are written to (default: under the reglab cache, keyed by the sweep and the chunk function);
    the same call resumes. chunk: what runs on a worker, `chunk(config_texts, *chunk_args) -> {name:
    frame with a run column, or a scalar}` (default `train_chunk`: the summary and history); a theme
    passes its own to measure the trained networks where they trained.
    """
    configs = expand(configs, grid) if grid is not None else list(configs)
    if isinstance(configs, RunConfig) or not configs:
        raise ConfigError("sweep needs a non-empty list of RunConfigs, or a base RunConfig and a grid.")
    for c in configs:
        validate(c)
    if cluster is not None and cluster not in ("local", "ray") and not str(cluster).startswith("ray://"):
        raise ConfigError(f"The 'cluster' parameter of sweep must be None, 'local', 'ray' or 'ray://host:port'. "
                          f"Got {cluster!r} instead.")
    chunks = plan(configs, memory_budget_mb, chunk_members)
    if store is None:
        from .cache import cache_dir

        tag = "" if chunk is train_chunk else f"-{chunk.__module__}.{chunk.__qualname__}{chunk_args!r}"
        store = cache_dir().parent / "sweeps" / (_chunk_id(configs) + hashlib.sha1(tag.encode()).hexdigest()[:8] * bool(tag))
    store = Path(store)
    files = {tuple(chunk): store / f"chunk-{_chunk_id([configs[i] for i in chunk])}.pkl" for chunk in chunks}
    results = {k: _read(path) for k, path in files.items()}
    todo = [list(k) for k, v in results.items() if v is None]

    from tqdm.auto import tqdm

    if progress is None:
        progress = not batch()
    bar = tqdm(total=len(configs), initial=len(configs) - sum(map(len, todo)), desc="sweep", unit="run",
               disable=not progress)
    finished = ((part, chunk([configs[i].to_text() for i in part], *chunk_args)) for part in todo) if cluster is None \
        else _ray_chunks(_connect(cluster), todo, configs, max_retries, chunk, chunk_args)
    for part, frames in finished:
        _write(files[tuple(part)], frames)  # at once: nothing finished is lost to a later interruption
        results[tuple(part)] = frames
        bar.update(len(part))
    bar.close()
    trained = {tuple(part) for part in todo}
    table = pd.DataFrame([{"members": len(part), "from_store": part not in trained,
                           **{k: v for k, v in frames.items() if not isinstance(v, pd.DataFrame)}}
                          for part, frames in results.items()])
    return SweepResult(configs, _assemble(configs, results), table, len(chunks), len(todo), max(map(len, chunks)))


def _assemble(configs, results) -> dict:
    """Every frame the chunks returned, in the configs' order (`run` = the config's index); the summary
    also gets the settings that vary across the sweep as columns."""
    names = [k for k, v in next(iter(results.values())).items() if isinstance(v, pd.DataFrame)]
    frames = {}
    for name in names:
        parts = []
        for chunk, found in results.items():
            f = found[name].copy()
            f["run"] = f["run"].map(dict(enumerate(chunk)))
            parts.append(f)
        order = ["run", "step"] if name == "history" else ["run"]
        frames[name] = pd.concat(parts, ignore_index=True).sort_values(order, kind="stable").reset_index(drop=True)
    settings = pd.DataFrame([{k: v for k, v in c.to_dict().items() if not isinstance(v, (dict, list))} for c in configs])
    varying = [k for k in settings.columns if settings[k].astype(str).nunique() > 1 and k not in frames["summary"].columns]
    frames["summary"] = pd.concat([frames["summary"], settings[varying]], axis=1)
    return frames

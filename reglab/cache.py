"""Results cached on disk by key: instant revisits of a setting, across kernels and sessions.

Files live under $REGLAB_CACHE (default ~/.cache/reglab/runs). Writes are atomic (a temporary file
renamed into place); a corrupt or partial file is ignored, removed and recomputed, never fatal.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from pathlib import Path
from typing import Callable

VERSION = "1"  # bump when a cached object's layout changes


def cache_dir() -> Path:
    return Path(os.environ.get("REGLAB_CACHE", Path.home() / ".cache" / "reglab")) / "runs"


def key_of(*parts) -> str:
    return hashlib.sha1("\x1f".join([VERSION, *map(str, parts)]).encode()).hexdigest()[:16]


def load(key: str):
    path = cache_dir() / f"{key}.pkl"
    if not path.exists():
        return None
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception:  # truncated, corrupt or from an incompatible version: recompute
        path.unlink(missing_ok=True)
        return None


def store(key: str, value) -> None:
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, folder / f"{key}.pkl")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def memoize(key: str, compute: Callable[[], object]):
    """The cached value for `key`, computing and storing it on a miss."""
    value = load(key)
    if value is None:
        value = compute()
        store(key, value)
    return value

"""Sweeps: the same numbers alone, in a local sweep and on Ray; resumable; a killed worker loses nothing."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from reglab import ConfigError, RunConfig, sweep, train
from reglab.sweep import plan

BASE = RunConfig(data="digits", n_train=200, width=16, depth=1, step_size=0.1, batch_size=16, steps=40, eval_every=20)
GRID = {"step_size": [0.05, 0.1, 0.2], "seed": [0, 1]}
METRICS = ["train_loss", "test_loss", "train_acc", "test_acc"]


def test_grid_sweep_matches_training_each_config_alone(tmp_path):
    result = sweep(BASE, GRID, store=tmp_path, chunk_members=4, progress=False)
    assert len(result.summary) == 6 and result.chunks == 2 and result.trained == 2
    assert list(result.summary.columns[:1]) == ["run"] and {"step_size", "seed"} <= set(result.summary.columns)
    for i, c in enumerate(result.configs):
        alone = train(c, progress=False).summary.iloc[0]
        np.testing.assert_allclose(result.summary.loc[i, METRICS].astype(float), alone[METRICS].astype(float), rtol=1e-4)
    assert set(result.history.run) == set(range(6))


def test_incompatible_configs_are_split_and_the_memory_budget_sizes_chunks():
    configs = [BASE.replace(seed=s) for s in range(5)] + [BASE.replace(width=8, seed=s) for s in range(2)]
    chunks = plan(configs, chunk_members=2)
    assert sorted(map(len, chunks)) == [1, 2, 2, 2] and sorted(i for c in chunks for i in c) == list(range(7))
    assert len(plan(configs, memory_budget_mb=1e6)) == 2  # a big budget: one chunk per compatible group
    assert len(plan(configs, memory_budget_mb=1e-6)) == 7  # a tiny one: one member per chunk


def test_an_interrupted_sweep_resumes_with_only_the_missing_chunks(tmp_path):
    first = sweep(BASE, GRID, store=tmp_path, chunk_members=2, progress=False)
    files = sorted(tmp_path.glob("chunk-*.pkl"))
    assert first.trained == 3 and len(files) == 3
    files[1].unlink()  # as if the sweep had died before this chunk finished
    files[2].write_bytes(b"partial")  # or while writing it
    again = sweep(BASE, GRID, store=tmp_path, chunk_members=2, progress=False)
    assert again.trained == 2
    assert again.summary[METRICS].equals(first.summary[METRICS])


def test_bad_cluster_values_fail_fast_with_one_line():
    with pytest.raises(ConfigError, match="'cluster' parameter of sweep"):
        sweep(BASE, GRID, cluster="spark", progress=False)


ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_gives_identical_metrics(local_ray, tmp_path):
    here = sweep(BASE, GRID, store=tmp_path / "here", chunk_members=2, progress=False)
    there = sweep(BASE, GRID, cluster="local", store=tmp_path / "ray", chunk_members=2, progress=False)
    assert there.trained == 3
    assert there.summary[METRICS].equals(here.summary[METRICS])
    assert there.history.equals(here.history)


def test_a_killed_worker_is_retried_and_every_member_comes_back_once(local_ray, tmp_path):
    slow = BASE.replace(steps=1500, eval_every=500)
    done = {}
    thread = threading.Thread(target=lambda: done.update(r=sweep(slow, GRID, cluster="local", store=tmp_path,
                                                                  chunk_members=3, progress=False)))
    thread.start()
    killed = None
    for _ in range(600):  # wait for a worker to be inside a chunk, then kill it
        out = subprocess.run(["pgrep", "-f", "ray::train_chunk"], capture_output=True, text=True).stdout.split()
        if out:
            killed = int(out[0])
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.1)
    thread.join(timeout=600)
    assert killed is not None, "no worker was seen running a chunk"
    result = done["r"]
    assert sorted(result.summary.run) == list(range(6)) and result.summary[METRICS].notna().all().all()


def test_an_unreachable_cluster_fails_fast_with_one_line(tmp_path):
    code = textwrap.dedent("""
        import reglab, sys
        try:
            reglab.sweep(reglab.RunConfig(steps=5), {"seed": [0, 1]}, cluster="ray://127.0.0.1:1", progress=False)
        except reglab.ConfigError as err:
            print("ERR", err); sys.exit(3)
    """)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 3 and "Could not reach the Ray cluster at 'ray://127.0.0.1:1'" in out.stdout
    assert time.perf_counter() - start < 120


def test_cli_sweep_writes_the_summary(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("base: {data: digits, n_train: 100, width: 8, depth: 1, steps: 10, eval_every: 5}\n"
                    "grid: {step_size: [0.05, 0.1], seed: [0, 1]}\n")
    out = subprocess.run([sys.executable, "-m", "reglab.cli", "sweep", str(grid), "--store", str(tmp_path / "s"),
                          "--out", str(tmp_path / "s.csv")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "4 runs in 1 chunks (1 trained now)" in out.stdout
    import pandas as pd

    assert len(pd.read_csv(tmp_path / "s.csv")) == 4

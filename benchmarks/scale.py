"""Scale-out benchmark: the same 64-member MNIST-1D sweep (40-100-100-10, SGD B = 32, 16 step sizes ×
4 seeds) trained in this process as planned by `reglab.sweep`, and on a local Ray cluster with 2 workers
(the sweep cut into 2 chunks, one per worker), measured in this run. Also times one tiny chunk both ways:
Ray's overhead per chunk (task dispatch, process hop, result transfer).
Ends with `RESULT scale <in-process time / Ray time>`.

    .venv/bin/python benchmarks/scale.py [--steps 600] [--workers 2]
"""
import argparse
import tempfile
import time

import ray

from reglab import RunConfig, sweep
from reglab.sweep import plan


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    base = RunConfig(data="mnist1d", width=100, depth=2, batch_size=32, steps=args.steps, eval_every=args.steps)
    grid = {"step_size": [0.01 * 1.2 ** i for i in range(16)], "seed": [0, 1, 2, 3]}
    configs = [base.replace(step_size=s, seed=k) for s in grid["step_size"] for k in grid["seed"]]
    chunks = plan(configs)
    print(f"plan for 64 members under the default memory budget: {len(chunks)} chunk(s) of {max(map(len, chunks))}")
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    tiny = base.replace(steps=1, eval_every=1)

    def timed(**kw):
        with tempfile.TemporaryDirectory() as store:
            t = time.perf_counter()
            sweep(**kw, store=store, progress=False)
            return time.perf_counter() - t

    timed(configs=[tiny], cluster="local")  # warm the workers
    overhead = min(timed(configs=[tiny], cluster="local") - timed(configs=[tiny]) for _ in range(3))
    here = timed(configs=configs)
    there = timed(configs=configs, cluster="local", chunk_members=-(-len(configs) // args.workers))
    print(f"in process: {here:.2f} s; local Ray, {args.workers} workers: {there:.2f} s; "
          f"Ray overhead per chunk {overhead * 1000:.0f} ms")
    ray.shutdown()
    print(f"RESULT scale {here / there:.2f}")


if __name__ == "__main__":
    main()

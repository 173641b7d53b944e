"""Evaluation on a whole split in cache-sized chunks (engine.eval_chunk) against one fixed chunk of 8192
examples, timed in the same run. Ends with `RESULT evaluation <speed-up of the 27-member transformer sweep>`.

    .venv/bin/python benchmarks/evaluation.py [--repeats 5]
"""
import argparse
import time

import torch

import reglab
from reglab import engine
from reglab.experiments import transformer_stability

FIXED = 8192  # examples per forward pass: the single chunk size the adaptive one is compared with


def best_time(run, repeats) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        engine.evaluate(run.model, run.params, run.data, run.configs[0].loss)
        times.append(time.perf_counter() - t)
    return min(times)


def cases():
    mlp = reglab.RunConfig(data="mnist1d", n_train=4000, width=100, depth=2, steps=1, eval_every=1)
    tf = transformer_stability.config(**transformer_stability.THEME.defaults()).replace(steps=1, eval_every=1,
                                                                                        warmup_steps=0)
    yield "MLP width 100, 1 member", [mlp]
    yield "MLP width 100, 27 members", [mlp.replace(seed=s) for s in range(27)]
    yield "transformer sweep (T11), 27 members", [tf.replace(step_size=e, seed=s) for s in range(3)
                                                  for e in transformer_stability.ETAS]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(engine.default_threads())
    adaptive = engine.eval_chunk
    ratio = None
    for name, configs in cases():
        run = reglab.train(configs, progress=False)
        engine.eval_chunk = lambda *_: FIXED
        fixed = best_time(run, args.repeats)
        engine.eval_chunk = adaptive
        chunked = best_time(run, args.repeats)
        ratio = fixed / chunked
        print(f"{name:40s} chunk {adaptive(run.model, run.params, run.data.x_train):5d}: {chunked * 1e3:8.1f} ms · "
              f"chunk {FIXED}: {fixed * 1e3:8.1f} ms · speed-up {ratio:.2f}×")
    print(f"RESULT evaluation {ratio:.2f}")


if __name__ == "__main__":
    main()

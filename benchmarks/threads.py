"""1 vs 2 intra-op threads for a typical reglab workload, on an idle machine and with another
CPU-bound process running (the shared 2-core machines). Ends with `RESULT threads <t1/t2 under load>`
(> 1 means two threads were faster under load).

    .venv/bin/python benchmarks/threads.py
"""
import multiprocessing as mp
import os
import time


def workload(threads: int) -> float:
    os.environ["REGLAB_THREADS"] = str(threads)
    from reglab import RunConfig, train

    cfgs = [RunConfig(data="mnist1d", width=100, depth=2, step_size=0.05 * (k + 1), batch_size=32, steps=400,
                      eval_every=400, seed=k) for k in range(8)]
    train(cfgs[0].replace(steps=5, eval_every=5), progress=False)
    t = time.perf_counter()
    train(cfgs, progress=False)
    train(cfgs[0].replace(batch_size=None, n_train=1000, steps=200, eval_every=200), progress=False)
    return time.perf_counter() - t


def burn(stop):
    import torch

    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    while not stop.is_set():
        a = torch.tanh(a @ a)


def timed(threads: int, repeats: int = 2) -> float:
    return min(workload(threads) for _ in range(repeats))


def main():
    idle = {t: timed(t) for t in (1, 2)}
    stop = mp.Event()
    burner = mp.Process(target=burn, args=(stop,), daemon=True)
    burner.start()
    try:
        loaded = {t: timed(t) for t in (1, 2)}
    finally:
        stop.set()
        burner.join(5)
    for name, res in (("idle", idle), ("one core busy", loaded)):
        print(f"{name:>14}: 1 thread {res[1]:.2f} s, 2 threads {res[2]:.2f} s, ratio 1/2 = {res[1] / res[2]:.2f}")
    print(f"RESULT threads {loaded[1] / loaded[2]:.2f}")


if __name__ == "__main__":
    main()

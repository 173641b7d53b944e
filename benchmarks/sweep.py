"""Sweep benchmark: 16 MNIST-1D MLPs (40-100-100-10, SGD, B = 32, 2000 steps, 16 step sizes) trained
as one reglab ensemble vs a sequential plain-PyTorch loop (nn.Sequential + torch.optim.SGD), both
measured in this run, at each intra-op thread count asked for (default 1 and 2: the machine has 2 cores).
Prints the ratio at each thread count, and ends with `RESULT sweep <ratio>`: the plain loop's best time
over the thread counts against the ensemble's best, each side using the machine as well as it can.
Also times the same ensemble with autograd through the whole network instead of the MLP's written-out
backward pass (`RESULT sweep_backward`: what writing the backward out buys, at the ensemble's best
thread count).

    .venv/bin/python benchmarks/sweep.py [--steps 2000] [--members 16] [--device auto] [--threads 1,2] [--rounds 4]
"""
import argparse
import os
import statistics
import time

import torch

from reglab import RunConfig, make_dataset, train
from reglab.config import resolve_device
from reglab.models import MLP, autograd_value_and_grad

written_out = MLP.value_and_grad


def plain_loop(data, step_sizes, steps, batch, device, first_seed=0):
    x, y = data.x_train.to(device), data.y_train.to(device)
    for i, lr in enumerate(step_sizes, start=first_seed):
        g = torch.Generator().manual_seed(i)
        net = torch.nn.Sequential(torch.nn.Linear(40, 100), torch.nn.ReLU(), torch.nn.Linear(100, 100), torch.nn.ReLU(),
                                  torch.nn.Linear(100, 10)).to(device)
        opt = torch.optim.SGD(net.parameters(), lr=lr)
        for _ in range(steps):
            idx = torch.randint(0, len(x), (batch,), generator=g).to(device)
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()


def use_threads(n):
    torch.set_num_threads(n)
    os.environ["REGLAB_THREADS"] = str(n)  # the engine sets its own thread count from this


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--members", type=int, default=16)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts to compare")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds: ensemble timings per thread count and backward (median)")
    args = ap.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]
    device = resolve_device(args.device)
    data = make_dataset("mnist1d")
    step_sizes = [0.01 * 1.2 ** i for i in range(args.members)]
    configs = [RunConfig(data="mnist1d", width=100, depth=2, step_size=s, batch_size=32, steps=args.steps,
                         eval_every=args.steps, seed=i, device=args.device) for i, s in enumerate(step_sizes)]
    train(configs[0].replace(steps=20, eval_every=20), progress=False)  # warm-up
    plain_loop(data, step_sizes[:1], 20, 32, device)

    def timed(fn):
        t = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t, result

    # Interleaved: the machine is shared and its speed drifts by tens of percent within minutes, so each
    # round trains 1/rounds of the plain loop's models and then the ensemble, at each thread count; the
    # plain loop's time is its sum over rounds (all 16 models once), the ensemble's the median of its rounds.
    share = -(-args.members // args.rounds)
    plain = {n: 0.0 for n in thread_counts}
    times = {(n, backward): [] for n in thread_counts for backward in ("written", "autograd")}
    runs = {}
    for r in range(args.rounds):
        part = step_sizes[r * share:(r + 1) * share]
        for n in thread_counts:
            use_threads(n)
            plain[n] += timed(lambda: plain_loop(data, part, args.steps, 32, device, r * share))[0]
            for backward in ("written", "autograd"):  # the same engine, with autograd through the whole network or not
                MLP.value_and_grad = written_out if backward == "written" else autograd_value_and_grad
                t, runs[backward] = timed(lambda: train(configs, progress=False))
                times[n, backward].append(t)
    MLP.value_and_grad = written_out
    median = {key: statistics.median(v) for key, v in times.items()}

    run = runs["written"]
    gap = (run.summary.train_loss - runs["autograd"].summary.train_loss).abs().max()
    print(f"device {device}, {args.members} members × {args.steps} steps, ensemble medians of {args.rounds} rounds "
          f"(final train acc {run.summary.train_acc.min():.2f}–{run.summary.train_acc.max():.2f}; "
          f"largest train-loss gap to autograd {gap:.1e})")
    print("threads  plain PyTorch  reglab ensemble  (with autograd)  ratio")
    for n in thread_counts:
        print(f"{n:7d}  {plain[n]:11.2f} s  {median[n, 'written']:13.2f} s  {median[n, 'autograd']:13.2f} s"
              f"  {plain[n] / median[n, 'written']:5.2f}")
    best = min(thread_counts, key=lambda n: median[n, "written"])
    best_plain = min(plain.values())
    print(f"best against best: plain {best_plain:.2f} s ({min(plain, key=plain.get)} thread(s)), "
          f"ensemble {median[best, 'written']:.2f} s ({best} thread(s))")
    print(f"RESULT sweep_backward {median[best, 'autograd'] / median[best, 'written']:.2f}")
    print(f"RESULT sweep {best_plain / median[best, 'written']:.2f}")


if __name__ == "__main__":
    main()

"""Sweep benchmark: 16 MNIST-1D MLPs (40-100-100-10, SGD, B = 32, 2000 steps, 16 step sizes) trained
as one reglab ensemble vs a sequential plain-PyTorch loop (nn.Sequential + torch.optim.SGD), both
measured in this run. Prints the ratio; ends with `RESULT sweep <ratio>`. Also times the same ensemble
with autograd through the whole network instead of the MLP's written-out backward pass, and prints
that ratio too (`RESULT sweep_backward`: what writing the backward out buys).

    .venv/bin/python benchmarks/sweep.py [--steps 2000] [--members 16] [--device auto] [--threads 1] [--rounds 3]
"""
import argparse
import os
import time

import torch

from reglab import RunConfig, make_dataset, train
from reglab.config import resolve_device
from reglab.models import MLP, autograd_value_and_grad

written_out = MLP.value_and_grad


def plain_loop(data, step_sizes, steps, batch, device):
    x, y = data.x_train.to(device), data.y_train.to(device)
    for i, lr in enumerate(step_sizes):
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--members", type=int, default=16)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="ensemble timings per backward (median reported)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["REGLAB_THREADS"] = str(args.threads)  # the engine sets its own thread count from this
    device = resolve_device(args.device)
    data = make_dataset("mnist1d")
    step_sizes = [0.01 * 1.2 ** i for i in range(args.members)]
    configs = [RunConfig(data="mnist1d", width=100, depth=2, step_size=s, batch_size=32, steps=args.steps,
                         eval_every=args.steps, seed=i, device=args.device) for i, s in enumerate(step_sizes)]
    train(configs[0].replace(steps=20, eval_every=20), progress=False)  # warm-up
    plain_loop(data, step_sizes[:1], 20, 32, device)

    t = time.perf_counter()
    plain_loop(data, step_sizes, args.steps, 32, device)
    t_plain = time.perf_counter() - t
    def timed_ensemble():
        t = time.perf_counter()
        run = train(configs, progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t, run

    times, runs = {"written": [], "autograd": []}, {}
    for _ in range(args.rounds):  # interleaved, medians: the machine is shared and noisy
        for backward in times:  # the same engine, with autograd through the whole network or not
            MLP.value_and_grad = written_out if backward == "written" else autograd_value_and_grad
            t, runs[backward] = timed_ensemble()
            times[backward].append(t)
    MLP.value_and_grad = written_out
    t_ens, t_autograd = (sorted(v)[len(v) // 2] for v in times.values())
    run = runs["written"]
    gap = (run.summary.train_loss - runs["autograd"].summary.train_loss).abs().max()
    print(f"device {device}, threads {torch.get_num_threads()}, {args.members} members × {args.steps} steps")
    print(f"sequential plain PyTorch: {t_plain:.2f} s")
    print(f"reglab batched ensemble:  {t_ens:.2f} s (median of {args.rounds})   (final train acc {run.summary.train_acc.min():.2f}–{run.summary.train_acc.max():.2f})")
    print(f"  the same with autograd: {t_autograd:.2f} s   (largest final train-loss difference {gap:.1e})")
    print(f"RESULT sweep_backward {t_autograd / t_ens:.2f}")
    print(f"RESULT sweep {t_plain / t_ens:.2f}")


if __name__ == "__main__":
    main()

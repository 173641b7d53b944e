"""Sweep benchmark: 16 MNIST-1D MLPs (40-100-100-10, SGD, B = 32, 2000 steps, 16 step sizes), three ways,
all measured in this run at each intra-op thread count asked for (default 1 and 2):

- plain: a sequential loop, nn.Sequential + torch.optim.SGD, one model after the other;
- vmap: the ensemble an expert writes with torch.func (stack_module_state, vmap over grad of a
  functional_call, one stacked SGD update);
- reglab: one `reglab.train` ensemble.

Interleaved rounds (the shared machine's speed drifts): each round trains 1/rounds of the plain loop's
models, then the vmap ensemble and the reglab ensemble. Prints each side's best time over the thread
counts and ends with `RESULT sweep <plain / reglab>` and `RESULT sweep_vmap <vmap / reglab>` (> 1: reglab
is ahead).

    .venv/bin/python benchmarks/sweep.py [--steps 2000] [--members 16] [--device auto] [--threads 1,2] [--rounds 4]
"""
import argparse
import copy
import os
import statistics
import time

import torch
from torch.func import functional_call, grad, stack_module_state, vmap

from reglab import RunConfig, make_dataset, train
from reglab.config import resolve_device


def network(seed, device):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(40, 100), torch.nn.ReLU(), torch.nn.Linear(100, 100), torch.nn.ReLU(),
                               torch.nn.Linear(100, 10)).to(device)


def plain_loop(data, step_sizes, steps, batch, device, first_seed=0):
    x, y = data.x_train.to(device), data.y_train.to(device)
    for i, lr in enumerate(step_sizes, start=first_seed):
        g = torch.Generator().manual_seed(i)
        net = network(i, device)
        opt = torch.optim.SGD(net.parameters(), lr=lr)
        for _ in range(steps):
            idx = torch.randint(0, len(x), (batch,), generator=g).to(device)
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def vmap_ensemble(data, step_sizes, steps, batch, device):
    x, y = data.x_train.to(device), data.y_train.to(device)
    nets = [network(i, device) for i in range(len(step_sizes))]
    params, buffers = stack_module_state(nets)
    base = copy.deepcopy(nets[0]).to("meta")

    def loss(p, b, xb, yb):
        return torch.nn.functional.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

    gradient = vmap(grad(loss))
    lr = torch.tensor(step_sizes, device=device)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (len(step_sizes), batch), generator=g).to(device)
        grads = gradient(params, buffers, x[idx], y[idx])
        with torch.no_grad():
            for k, p in params.items():
                p.sub_(lr.view(-1, *[1] * (p.dim() - 1)) * grads[k])


def use_threads(n):
    torch.set_num_threads(n)
    os.environ["REGLAB_THREADS"] = str(n)  # the engine sets its own thread count from this


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--members", type=int, default=16)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts to compare")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds (ensemble times: their median)")
    args = ap.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]
    device = resolve_device(args.device)
    data = make_dataset("mnist1d")
    step_sizes = [0.01 * 1.2 ** i for i in range(args.members)]
    configs = [RunConfig(data="mnist1d", width=100, depth=2, step_size=s, batch_size=32, steps=args.steps,
                         eval_every=args.steps, seed=i, device=args.device) for i, s in enumerate(step_sizes)]
    train(configs[0].replace(steps=20, eval_every=20), progress=False)  # warm-up
    plain_loop(data, step_sizes[:1], 20, 32, device)
    vmap_ensemble(data, step_sizes, 20, 32, device)

    def timed(fn):
        t = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t, result

    share = -(-args.members // args.rounds)
    plain = {n: 0.0 for n in thread_counts}
    times = {(n, side): [] for n in thread_counts for side in ("vmap", "reglab")}
    for r in range(args.rounds):
        part = step_sizes[r * share:(r + 1) * share]
        for n in thread_counts:
            use_threads(n)
            plain[n] += timed(lambda: plain_loop(data, part, args.steps, 32, device, r * share))[0]
            times[n, "vmap"].append(timed(lambda: vmap_ensemble(data, step_sizes, args.steps, 32, device))[0])
            t, run = timed(lambda: train(configs, progress=False))
            times[n, "reglab"].append(t)
    median = {key: statistics.median(v) for key, v in times.items()}
    print(f"device {device}, {args.members} members × {args.steps} steps, ensemble medians of {args.rounds} rounds "
          f"(reglab final train acc {run.summary.train_acc.min():.2f}–{run.summary.train_acc.max():.2f})")
    print("threads  plain loop   vmap ensemble  reglab ensemble")
    for n in thread_counts:
        print(f"{n:7d}  {plain[n]:8.2f} s  {median[n, 'vmap']:11.2f} s  {median[n, 'reglab']:13.2f} s")
    best = {side: min(median[n, side] for n in thread_counts) for side in ("vmap", "reglab")}
    best_plain = min(plain.values())
    print(f"best of each: plain {best_plain:.2f} s, vmap {best['vmap']:.2f} s, reglab {best['reglab']:.2f} s")
    print(f"RESULT sweep_vmap {best['vmap'] / best['reglab']:.2f}")
    print(f"RESULT sweep {best_plain / best['reglab']:.2f}")


if __name__ == "__main__":
    main()

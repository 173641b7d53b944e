"""Floor benchmark: how far the engine is from the leanest eager PyTorch step for the sweep benchmark's
ensemble (16 MNIST-1D MLPs 40-100-100-10, SGD, B = 32, 2000 steps). The floor is the step written out by
hand for exactly this model: the same batched kernels as `MLP.value_and_grad` (baddbmm, relu_, bmm,
threshold_backward, one fused update), no configuration, no probes, no divergence bookkeeping beyond
one check, no evaluations. `reglab.train` runs the same ensemble with its two evaluations (start and
end). The sweep benchmark's plain-PyTorch loop is timed too, split across the rounds (its 16 models once in
all), so the floor's own ratio to it shows the most any engine in eager PyTorch could reach here.
Interleaved rounds, medians. Ends with `RESULT floor <train time / floor time>`: what the engine's
generality costs.

    .venv/bin/python benchmarks/floor.py [--threads 1] [--rounds 4]
"""
import argparse
import statistics
import time

import torch

from reglab import RunConfig, make_dataset, train
from sweep import plain_loop, use_threads  # benchmarks/sweep.py, next to this script


def floor_loop(x_all, y_all, step_sizes, steps, batch, seed=0):
    M = len(step_sizes)
    g = torch.Generator().manual_seed(seed)
    layers = [(40, 100), (100, 100), (100, 10)]
    weights = [(torch.rand(M, o, i, generator=g) * 2 - 1) / i ** 0.5 for i, o in layers]
    biases = [(torch.rand(M, o, 1, generator=g) * 2 - 1) / i ** 0.5 for i, o in layers]
    leaves = [t for pair in zip(weights, biases) for t in pair]
    minus_lr = [-torch.tensor(step_sizes).view(M, 1, 1)] * len(leaves)
    minus_one = torch.full((M, 1, batch), -1.0)
    (W0, W1, W2), (b0, b1, b2) = weights, biases
    for _ in range(steps):
        idx = torch.randint(0, len(x_all), (M * batch,), generator=g)
        x = x_all.index_select(0, idx).view(M, batch, 40).mT
        y = y_all.index_select(0, idx).view(M, 1, batch)
        a0 = torch.baddbmm(b0, W0, x).relu_()
        a1 = torch.baddbmm(b1, W1, a0).relu_()
        log_p = torch.log_softmax(torch.baddbmm(b2, W2, a1), 1)
        d2 = log_p.exp().scatter_add_(1, y, minus_one).mul_(1 / batch)
        loss = -log_p.gather(1, y).mean((1, 2))
        d1 = torch.ops.aten.threshold_backward(torch.bmm(W2.mT, d2), a1, 0.0)
        d0 = torch.ops.aten.threshold_backward(torch.bmm(W1.mT, d1), a0, 0.0)
        grads = [torch.bmm(d0, x.mT), d0.sum(-1, keepdim=True), torch.bmm(d1, a0.mT), d1.sum(-1, keepdim=True),
                 torch.bmm(d2, a1.mT), d2.sum(-1, keepdim=True)]
        torch._foreach_addcmul_(leaves, grads, minus_lr)
        if not bool(torch.isfinite(loss).all()):
            break


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    use_threads(args.threads)
    data = make_dataset("mnist1d")
    step_sizes = [0.01 * 1.2 ** i for i in range(16)]
    configs = [RunConfig(data="mnist1d", width=100, depth=2, step_size=s, batch_size=32, steps=args.steps,
                         eval_every=args.steps, seed=i) for i, s in enumerate(step_sizes)]
    runs = {"floor": lambda: floor_loop(data.x_train, data.y_train, step_sizes, args.steps, 32),
            "train": lambda: train(configs, progress=False)}
    for run in runs.values():  # warm-up
        run()
    times, plain = {name: [] for name in runs}, 0.0
    share = -(-len(step_sizes) // args.rounds)
    for r in range(args.rounds):  # interleaved, medians: the machine is shared and noisy
        t = time.perf_counter()
        plain_loop(data, step_sizes[r * share:(r + 1) * share], args.steps, 32, torch.device("cpu"), r * share)
        plain += time.perf_counter() - t
        for name, run in runs.items():
            t = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t)
    floor, engine = (statistics.median(times[name]) for name in ("floor", "train"))
    print(f"threads {args.threads}, 16 members × {args.steps} steps, medians of {args.rounds} interleaved rounds")
    print(f"sequential plain PyTorch (16 models):  {plain:.2f} s")
    print(f"hand-written eager step (floor):       {floor:.2f} s ({floor / args.steps * 1e6:.0f} µs a step), "
          f"{plain / floor:.2f}× the plain loop")
    print(f"reglab.train, evaluations included:    {engine:.2f} s ({engine / args.steps * 1e6:.0f} µs a step), "
          f"{plain / engine:.2f}× the plain loop")
    print(f"RESULT floor {engine / floor:.2f}")


if __name__ == "__main__":
    main()

"""Full-batch GD step throughput as a fraction of this machine's measured matmul rate (an MFU-style
ratio): both measured in this run. Ends with `RESULT throughput <fraction>`.

    .venv/bin/python benchmarks/throughput.py [--n 1000] [--width 200] [--steps 300] [--members 1]
"""
import argparse
import time

import torch

from reglab import RunConfig, train


def matmul_rate(size=512, repeats=40, device="cpu") -> float:
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * size ** 3 * repeats / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--width", type=int, default=200)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--members", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import os

    os.environ["REGLAB_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    peak = matmul_rate()
    cfg = RunConfig(data="mnist1d", n_train=args.n, width=args.width, depth=2, activation="tanh", loss="mse",
                    step_size=0.05, batch_size=None, steps=args.steps, eval_every=args.steps)
    configs = [cfg.replace(seed=k) for k in range(args.members)]
    train(cfg.replace(steps=5, eval_every=5), progress=False)
    t = time.perf_counter()
    train(configs, progress=False)
    seconds = time.perf_counter() - t
    w = args.width
    flops_per_step = 3 * 2 * args.n * (40 * w + w * w + w * 10) * args.members  # forward + backward ≈ 3 matmuls each
    rate = flops_per_step * args.steps / seconds
    print(f"threads {args.threads}; matmul peak {peak / 1e9:.1f} GFLOP/s (512×512 fp32)")
    print(f"full-batch GD, n={args.n}, MLP 40-{w}-{w}-10 × {args.members}: {args.steps / seconds:.0f} steps/s, "
          f"{rate / 1e9:.1f} GFLOP/s")
    print(f"RESULT throughput {rate / peak:.3f}")


if __name__ == "__main__":
    main()

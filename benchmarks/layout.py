"""Layout benchmark: one forward + backward of a stacked MLP ensemble in reglab's layout (weights
[M, out, in], hidden states feature-major [M, d, B], BatchNorm as a per-channel group norm) vs the
textbook stacked layout measured in the same run (weights [M, in, out], hidden states [M, B, d],
`h @ W` by baddbmm, F.batch_norm over [B, M·d]). Ends with `RESULT layout <ratio>` (geometric mean of
the cases' speed-ups).

    .venv/bin/python benchmarks/layout.py [--repeats 200] [--rounds 5] [--threads 1]

The machines are shared: each variant is timed in `rounds` interleaved rounds and its fastest round counts.
"""
import argparse
import math
import time

import torch
import torch.nn.functional as F

from reglab import RunConfig, make_dataset
from reglab.models import build_model

CASES = [  # (name, data, members, batch, width, depth, batchnorm)
    ("sweep: MNIST-1D 40-100-100-10, 16 members, B=32", "mnist1d", 16, 32, 100, 2, False),
    ("neural collapse: digits 4×128 + BN, 3 members, B=128", "digits", 3, 128, 128, 4, True),
    ("full batch: MNIST-1D 40-200-200-10, 4 members, B=1000", "mnist1d", 4, 1000, 200, 2, False),
]


def sample_major_forward(weights, biases, gains, shifts, x):
    """The textbook stacked MLP: h [M, B, d] @ W [M, in, out] (shared inputs expanded to every member)."""
    h = x if x.dim() == 3 else x.expand(len(weights[0]), *x.shape)
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = torch.baddbmm(b.unsqueeze(-2), h, w)
        if i < len(weights) - 1:
            if gains:
                M, B, d = h.shape
                flat = h.transpose(0, 1).reshape(B, M * d)
                h = F.batch_norm(flat, None, None, gains[i].reshape(-1), shifts[i].reshape(-1), training=True)
                h = h.reshape(B, M, d).transpose(0, 1)
            h = torch.relu(h)
    return h


def timed(step, repeats):
    for _ in range(10):
        step()
    start = time.process_time()
    for _ in range(repeats):
        step()
    return (time.process_time() - start) / repeats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ratios = []
    for name, data_name, M, B, width, depth, bn in CASES:
        data = make_dataset(data_name)
        cfg = RunConfig(data=data_name, width=width, depth=depth, batchnorm=bn, device="cpu")
        model = build_model(cfg, data)
        params = {k: v.requires_grad_() for k, v in model.init([torch.Generator().manual_seed(m) for m in range(M)]).items()}
        if B >= 1000:  # full batch: every member sees the same inputs
            x, y = data.x_train[:B], data.y_train[:B]
        else:
            idx = torch.randint(0, data.n_train, (M, B), generator=torch.Generator().manual_seed(0))
            x, y = data.x_train[idx], data.y_train[idx]
        n_layers = depth + 1
        baseline = {"w": [params[f"W{i}"].detach().mT.contiguous().requires_grad_() for i in range(n_layers)],
                    "b": [params[f"b{i}"].detach().clone().requires_grad_() for i in range(n_layers)],
                    "g": [params[f"gain{i}"].detach().clone().requires_grad_() for i in range(depth)] if bn else [],
                    "s": [params[f"shift{i}"].detach().clone().requires_grad_() for i in range(depth)] if bn else []}
        base_leaves = [t for ts in baseline.values() for t in ts]
        loss = lambda out: F.cross_entropy(out.reshape(-1, out.shape[-1]), y.expand(*out.shape[:-1]).reshape(-1))
        ours = lambda: torch.autograd.grad(loss(model(params, x)), list(params.values()))
        textbook = lambda: torch.autograd.grad(
            loss(sample_major_forward(baseline["w"], baseline["b"], baseline["g"], baseline["s"], x)), base_leaves)
        torch.testing.assert_close(model(params, x), sample_major_forward(baseline["w"], baseline["b"], baseline["g"],
                                                                           baseline["s"], x), rtol=1e-4, atol=1e-4)
        repeats = max(5, args.repeats * 32 // B)
        rounds = [(timed(textbook, repeats), timed(ours, repeats)) for _ in range(args.rounds)]
        t_base, t_ours = min(r[0] for r in rounds), min(r[1] for r in rounds)  # interleaved: least disturbed
        ratios.append(t_base / t_ours)
        print(f"{name}: textbook {t_base * 1e3:.3f} ms, reglab {t_ours * 1e3:.3f} ms per forward+backward "
              f"→ {t_base / t_ours:.2f}×")
    print(f"threads {torch.get_num_threads()}, CPU time per step (process_time), fastest of {args.rounds} interleaved rounds")
    print(f"RESULT layout {math.exp(sum(map(math.log, ratios)) / len(ratios)):.2f}")


if __name__ == "__main__":
    main()

"""Curvature benchmark: reglab.curvature against PyHessian 0.1 on one fixed model.

Model: MNIST-1D (1000 standardized train examples), tanh MLP 40-100-100-10, Cohen's square loss,
full-batch GD η = 1/15 for 300 steps (theme T1's setup, narrower), then its final parameters.

1. λ_max to 1e-3 relative accuracy. Ground truth: our Lanczos in float64 run to a 1e-10 residual.
   PyHessian's power iteration is credited with its *oracle* stop (the first iteration whose
   estimate is within 1e-3 of the truth: its best case, which its own rule cannot know); ours is
   timed with its own certified stop (Ritz residual ≤ 1e-3·θ, which bounds the error by 1e-3).
2. Trace at matched standard error: PyHessian's Hutchinson (100 Rademacher probes, run to the end)
   against ours with the same probes (batched when cheap) and ours with Krylov deflation, given
   just enough probes to match PyHessian's standard error.

Timings are medians of interleaved repeats, each from the parameters to the answer (building the
gradient graph included). One intra-op thread (REGLAB_THREADS to change).

    .venv/bin/python benchmarks/curvature.py
"""
from __future__ import annotations

import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reglab import RunConfig, train  # noqa: E402
from reglab import curvature as C  # noqa: E402
from reglab.losses import LOSSES  # noqa: E402

TARGET = 1e-3  # relative accuracy of λ_max
REPEATS = 5  # start vectors / timing repeats
TRACE_PROBES = 100  # PyHessian's default maxIter for trace


def setup():
    cfg = RunConfig(data="mnist1d", n_train=1000, width=100, depth=2, activation="tanh", loss="mse",
                    step_size=1 / 15, steps=300, eval_every=300, seed=0)
    run = train(cfg, progress=False)
    torch.set_num_threads(int(os.environ.get("REGLAB_THREADS", "1")))
    params = {k: v.detach() for k, v in run.params.items()}
    data, model = run.data, run.model
    loss_fn = lambda p: LOSSES["mse"](model(p, data.x_train), data.y_train).mean(-1)
    return cfg, run, params, data, model, loss_fn


def pyhessian_net(params, data):
    """The same network as torch.nn.Sequential (our weights are stored [in, out]: nn.Linear's is Wᵀ)."""
    dims = [params["W0"].shape[1]] + [params[f"W{i}"].shape[2] for i in range(3)]
    layers = []
    for i in range(3):
        lin = torch.nn.Linear(dims[i], dims[i + 1])
        with torch.no_grad():
            lin.weight.copy_(params[f"W{i}"][0].T)
            lin.bias.copy_(params[f"b{i}"][0])
        layers += [lin, torch.nn.Tanh()] if i < 2 else [lin]
    net = torch.nn.Sequential(*layers)
    onehot = torch.nn.functional.one_hot(data.y_train, 10).to(data.x_train.dtype)
    criterion = lambda out, y: 0.5 * (out - y).pow(2).sum(1).mean()  # ½‖f − y‖², mean over examples
    return net, criterion, (data.x_train, onehot)


def fresh(net, criterion, batch):
    """A PyHessian object for the net. Its constructor calls loss.backward(create_graph=True) without
    zeroing .grad first, so a second object on the same net would see 2× the Hessian: zero it here."""
    from pyhessian import hessian

    net.zero_grad(set_to_none=True)
    return hessian(net, criterion, data=batch, cuda=False)


def power_history(ph, iters, seed):
    """PyHessian's power iteration step by step (its own utils, its own random start) to see when it
    first reaches the target; checked against its eigenvalues() below."""
    from pyhessian.utils import group_product, hessian_vector_product, normalization

    torch.manual_seed(seed)
    v = normalization([torch.randn(p.size()) for p in ph.params])
    out = []
    for _ in range(iters):
        Hv = hessian_vector_product(ph.gradsH, ph.params, v)
        out.append(group_product(Hv, v).item())
        v = normalization(Hv)
    return out


def first_within(history, truth, target=TARGET):
    for i, value in enumerate(history):
        if abs(value - truth) <= target * abs(truth):
            return i + 1
    return None


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main():
    warnings.simplefilter("ignore")  # PyHessian's backward(create_graph=True) warns on every call
    t0 = time.perf_counter()
    cfg, run, params, data, model, loss_fn = setup()
    n_params = sum(p[0].numel() for p in params.values())
    print(f"model: MNIST-1D MLP 40-100-100-10 tanh, square loss, {data.n_train} examples, {n_params} parameters; "
          f"GD η={cfg.step_size:.4g} for {cfg.steps} steps, final train loss {float(loss_fn(params)[0]):.4f} "
          f"(trained in {time.perf_counter() - t0:.1f} s); threads={torch.get_num_threads()}")
    net, criterion, batch = pyhessian_net(params, data)
    print(f"PyHessian copy's loss {float(criterion(net(batch[0]), batch[1])):.6f} (must match)")

    # --- 1. top eigenvalue -----------------------------------------------------------------------
    p64 = {k: v.double() for k, v in params.items()}
    d64 = data.to(torch.device("cpu"), torch.float64)
    loss64 = lambda p: LOSSES["mse"](model(p, d64.x_train), d64.y_train).mean(-1)
    truth_run = C.top_eigenvalues(loss64, p64, k=2, tol=1e-10, max_iter=300, generator=torch.Generator().manual_seed(0))
    truth, second = float(truth_run.eigenvalues[0, 0]), float(truth_run.eigenvalues[0, 1])
    print(f"\n[1] λ_max ground truth (float64 Lanczos, {truth_run.iterations} HVPs, residual "
          f"{float(truth_run.residuals[0, 0]):.1e}): {truth:.6f}; λ_2 = {second:.6f} (gap ratio {second / truth:.3f}); "
          f"2/η = {2 / cfg.step_size:.2f}")

    ours_oracle, ph_oracle = [], []
    for s in range(REPEATS):
        hist = C.top_eigenvalues(loss_fn, params, tol=0.0, max_iter=80, generator=torch.Generator().manual_seed(s)).history
        ours_oracle.append(first_within(hist[:, 0].tolist(), truth))
        ph = fresh(net, criterion, batch)
        ph_oracle.append(first_within(power_history(ph, 400, s), truth))
    check = fresh(net, criterion, batch)
    torch.manual_seed(0)
    replay = check.eigenvalues(maxIter=ph_oracle[0], tol=0.0)[0][0]
    assert abs(replay - power_history(check, ph_oracle[0], 0)[-1]) <= 1e-5 * abs(truth), "power-iteration replay differs"
    print(f"    HVPs to first reach {TARGET:g} (oracle stop), over {REPEATS} random starts:")
    print(f"      ours Lanczos        {ours_oracle}  median {statistics.median(ours_oracle)}")
    print(f"      PyHessian power it. {ph_oracle}  median {statistics.median(ph_oracle)}")

    # practical stopping rules
    rules = []
    for tol in (1e-3, 1e-4):
        r = C.top_eigenvalues(loss_fn, params, tol=tol, generator=torch.Generator().manual_seed(0))
        rules.append((f"ours tol={tol:g} (residual rule)", r.iterations, abs(float(r.eigenvalues[0, 0]) - truth) / truth))
    for tol in (1e-3, 1e-4, 1e-5):
        ph = fresh(net, criterion, batch)
        torch.manual_seed(0)
        counter = {"n": 0}
        original = ph.eigenvalues.__globals__["hessian_vector_product"]

        def counting(*a, _orig=original):
            counter["n"] += 1
            return _orig(*a)

        ph.eigenvalues.__globals__["hessian_vector_product"] = counting
        try:
            value = ph.eigenvalues(maxIter=1000, tol=tol)[0][0]
        finally:
            ph.eigenvalues.__globals__["hessian_vector_product"] = original
        rules.append((f"PyHessian tol={tol:g}", counter["n"], abs(value - truth) / truth))
    print("    with each method's own stopping rule (seed 0):")
    for name, hvps, err in rules:
        print(f"      {name:34s} {hvps:4d} HVPs, relative error {err:.1e}")

    n_ph = statistics.median(ph_oracle)
    ours_times, ph_times, ours_hvps, ours_errs = [], [], [], []
    for s in range(REPEATS):
        dt, r = timed(lambda: C.top_eigenvalues(loss_fn, params, tol=TARGET, generator=torch.Generator().manual_seed(s)))
        ours_times.append(dt)
        ours_hvps.append(r.iterations)
        ours_errs.append(abs(float(r.eigenvalues[0, 0]) - truth) / truth)

        def ph_run():
            torch.manual_seed(s)
            return fresh(net, criterion, batch).eigenvalues(maxIter=n_ph, tol=0.0)

        ph_times.append(timed(ph_run)[0])
    t_ours, t_ph = statistics.median(ours_times), statistics.median(ph_times)
    print(f"    timed to {TARGET:g}: ours (certified stop, tol={TARGET:g}) {t_ours * 1e3:.0f} ms, "
          f"{statistics.median(ours_hvps)} HVPs, max error {max(ours_errs):.1e}; "
          f"PyHessian (oracle stop, {n_ph} iterations) {t_ph * 1e3:.0f} ms")
    eig_speedup = t_ph / t_ours
    hvp_ratio = n_ph / statistics.median(ours_hvps)

    # --- 2. trace at matched standard error ------------------------------------------------------
    ph_t, ours_t, defl_t = [], [], []
    H = C.Hessian(loss_fn, params)
    pilot_mean, pilot_se = C.hutchinson_trace(H, n_probes=400, generator=torch.Generator().manual_seed(99))
    best = None
    for m in (10, 20, 40):
        _, se = C.hutchinson_trace(H, n_probes=100, deflate=m, generator=torch.Generator().manual_seed(m))
        sd = float(se[0]) * 10
        if best is None or m + sd ** 2 < best[0] + best[1] ** 2:
            best = (m, sd)
    print(f"\n[2] trace: reference {float(pilot_mean[0]):.2f} ± {float(pilot_se[0]):.2f} (ours, 400 probes); "
          f"per-probe std plain {float(pilot_se[0]) * 20:.1f}, deflated (m={best[0]}) {best[1]:.1f}")
    results = []
    for s in range(REPEATS):
        def ph_trace():
            torch.manual_seed(100 + s)
            return fresh(net, criterion, batch).trace(maxIter=TRACE_PROBES, tol=0.0)

        dt, samples = timed(ph_trace)
        ph_t.append(dt)
        se_ph = statistics.stdev(samples) / math.sqrt(len(samples))
        mean_ph = statistics.mean(samples)
        dt, (mean, se) = timed(lambda: C.hutchinson_trace(loss_fn, params, n_probes=TRACE_PROBES,
                                                          generator=torch.Generator().manual_seed(200 + s)))
        ours_t.append(dt)
        n_defl = max(2, math.ceil((best[1] / se_ph) ** 2))
        dt, (mean_d, se_d) = timed(lambda: C.hutchinson_trace(loss_fn, params, n_probes=n_defl, deflate=best[0],
                                                              generator=torch.Generator().manual_seed(300 + s)))
        defl_t.append(dt)
        results.append((mean_ph, se_ph, float(mean[0]), float(se[0]), float(mean_d[0]), float(se_d[0]), n_defl))
    ph_default = fresh(net, criterion, batch)
    torch.manual_seed(0)
    default_samples = ph_default.trace()  # maxIter=100, tol=1e-3: stops when the running mean settles
    print(f"    PyHessian default trace(): stopped after {len(default_samples)} probes at "
          f"{statistics.mean(default_samples):.2f} ({(statistics.mean(default_samples) / float(pilot_mean[0]) - 1) * 100:+.1f} % "
          f"from the reference)")
    for mean_ph, se_ph, mean, se, mean_d, se_d, n_defl in results[:2]:
        print(f"    PyHessian {TRACE_PROBES} probes {mean_ph:.2f} ± {se_ph:.2f} | ours {TRACE_PROBES} probes {mean:.2f} ± {se:.2f}"
              f" | ours deflated {best[0]}+{n_defl} HVPs {mean_d:.2f} ± {se_d:.2f}")
    n_defl_med = statistics.median(r[6] for r in results)
    se_ratio = statistics.median(r[5] / r[1] for r in results)
    t_ph_tr, t_ours_tr, t_defl = map(statistics.median, (ph_t, ours_t, defl_t))
    print(f"    timed: PyHessian {t_ph_tr * 1e3:.0f} ms ({TRACE_PROBES} HVPs) | ours plain {t_ours_tr * 1e3:.0f} ms "
          f"({TRACE_PROBES} HVPs, same standard error in expectation) | ours deflated {t_defl * 1e3:.0f} ms "
          f"({best[0]}+{n_defl_med:g} HVPs, standard error {se_ratio:.2f}× PyHessian's)")

    print("\nratios (PyHessian / ours):")
    print(f"  λ_max to {TARGET:g}: HVPs {hvp_ratio:.2f}×, time {eig_speedup:.2f}×")
    print(f"  trace, plain Hutchinson at equal probes: time {t_ph_tr / t_ours_tr:.2f}×")
    print(f"  trace, deflated at matched standard error: HVPs {TRACE_PROBES / (best[0] + n_defl_med):.2f}×, "
          f"time {t_ph_tr / t_defl:.2f}×")
    print(f"RESULT is the λ_max speedup: PyHessian's time with its oracle stop over ours with our certified stop, "
          f"to {TARGET:g} relative accuracy (total benchmark time {time.perf_counter() - t0:.0f} s).")
    print(f"RESULT curvature {eig_speedup:.2f}")


if __name__ == "__main__":
    main()

"""Curvature benchmark: reglab.curvature against PyHessian 0.1 on one fixed model.

Model: MNIST-1D (1000 standardized train examples), tanh MLP 40-100-100-10, Cohen's square loss,
full-batch GD η = 1/15 for 300 steps (theme T1's setup, narrower), then its final parameters.
PyHessian gets the same network as a torch.nn.Sequential, the same data and the same loss.

1. λ_max to 1e-3 relative accuracy. Ground truth: our Lanczos in float64 run to a 1e-10 residual.
   PyHessian's power iteration is credited with its *oracle* stop (the first iteration whose
   estimate is within 1e-3 of the truth: its best case, which its own rule cannot know), taken as
   the median over STARTS random starts; ours is timed with its own certified stop (Ritz residual
   ≤ 1e-3·θ, which bounds the error by 1e-3), from the same random starts.
2. Trace at matched standard error: PyHessian's Hutchinson (100 Rademacher probes, run to the end)
   against ours with the same probes and ours with Krylov deflation, given just enough probes to
   match PyHessian's standard error.

Timings are medians of interleaved repeats, each from the parameters to the answer (building the
gradient graph included), in wall time and in CPU time of this process (the machine may be
shared: CPU time does not count time spent waiting for a core). One intra-op thread
(REGLAB_THREADS to change).

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
STARTS = 15  # random start vectors (seeds 0..STARTS-1), each timed once per method
TRACE_REPEATS = 5
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


def pyhessian_net(params, data, model):
    """The same network as torch.nn.Sequential (model.weight gives [in, out]: nn.Linear's is its transpose)."""
    weights = [model.weight(params, i)[0] for i in range(3)]
    layers = []
    for i, w in enumerate(weights):
        lin = torch.nn.Linear(*w.shape)
        with torch.no_grad():
            lin.weight.copy_(w.T)
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


def power_history(ph, iters, seed, truth=None):
    """PyHessian's power iteration step by step (its own utils, its own random start, as in its
    eigenvalues()), to see when it first reaches the target; stops there when `truth` is given."""
    from pyhessian.utils import group_product, hessian_vector_product, normalization

    torch.manual_seed(seed)
    v = normalization([torch.randn(p.size()) for p in ph.params])
    out = []
    for _ in range(iters):
        Hv = hessian_vector_product(ph.gradsH, ph.params, v)
        out.append(group_product(Hv, v).item())
        v = normalization(Hv)
        if truth is not None and abs(out[-1] - truth) <= TARGET * abs(truth):
            break
    return out


def first_within(history, truth, target=TARGET):
    for i, value in enumerate(history):
        if abs(value - truth) <= target * abs(truth):
            return i + 1
    return None


def timed(fn):
    """(wall seconds, CPU seconds of this process, result)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def rademacher(n, H):
    return torch.randint(0, 2, (n, H.M, H.numel), generator=torch.Generator().manual_seed(7)).to(H.dtype) * 2 - 1


def spread(xs) -> str:
    return f"median {statistics.median(xs):g} (range {min(xs)}–{max(xs)})"


def main():
    warnings.simplefilter("ignore")  # PyHessian's backward(create_graph=True) warns on every call
    t0 = time.perf_counter()
    cfg, run, params, data, model, loss_fn = setup()
    n_params = sum(p[0].numel() for p in params.values())
    print(f"model: MNIST-1D MLP 40-100-100-10 tanh, square loss, {data.n_train} examples, {n_params} parameters; "
          f"GD η={cfg.step_size:.4g} for {cfg.steps} steps, final train loss {float(loss_fn(params)[0]):.4f} "
          f"(trained in {time.perf_counter() - t0:.1f} s); threads={torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.2f}")
    net, criterion, batch = pyhessian_net(params, data, model)
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

    seeds = range(STARTS)
    ours_oracle, ph_oracle = [], []
    for s in seeds:
        hist = C.top_eigenvalues(loss_fn, params, tol=0.0, max_iter=40, generator=torch.Generator().manual_seed(s)).history
        ours_oracle.append(first_within(hist[:, 0].tolist(), truth))
        ph_oracle.append(len(power_history(fresh(net, criterion, batch), 2000, s, truth)))
    check = fresh(net, criterion, batch)
    torch.manual_seed(0)
    replay = check.eigenvalues(maxIter=ph_oracle[0], tol=0.0)[0][0]
    assert abs(replay - power_history(check, ph_oracle[0], 0)[-1]) <= 1e-5 * abs(truth), "power-iteration replay differs"
    n_ph = math.ceil(statistics.median(ph_oracle))
    print(f"    HVPs to first reach {TARGET:g} (oracle stop), over {STARTS} random starts:")
    print(f"      ours Lanczos        {spread(ours_oracle)}")
    print(f"      PyHessian power it. {spread(ph_oracle)}")

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

    ours, ours_fixed, ph_runs = [], [], []  # (wall, cpu, HVPs) per start
    errors = []
    n_ours = math.ceil(statistics.median(ours_oracle))
    for s in seeds:
        wall, cpu, r = timed(lambda: C.top_eigenvalues(loss_fn, params, tol=TARGET, generator=torch.Generator().manual_seed(s)))
        ours.append((wall, cpu, r.iterations))
        errors.append(abs(float(r.eigenvalues[0, 0]) - truth) / truth)
        wall, cpu, _ = timed(lambda: C.top_eigenvalues(loss_fn, params, tol=0.0, max_iter=n_ours,
                                                       generator=torch.Generator().manual_seed(s)))
        ours_fixed.append((wall, cpu, n_ours))

        def ph_run():
            torch.manual_seed(s)
            return fresh(net, criterion, batch).eigenvalues(maxIter=n_ph, tol=0.0)

        wall, cpu, _ = timed(ph_run)
        ph_runs.append((wall, cpu, n_ph))
    med = lambda rows, i: statistics.median(row[i] for row in rows)
    ours_hvps = [row[2] for row in ours]
    print(f"    timed to {TARGET:g}, {STARTS} starts: ours (certified stop) {spread(ours_hvps)} HVPs, "
          f"max error {max(errors):.1e}: {med(ours, 0) * 1e3:.0f} ms wall, {med(ours, 1) * 1e3:.0f} ms CPU "
          f"({med(ours, 1) / statistics.median(ours_hvps) * 1e3:.2f} ms CPU per HVP, graph included)")
    print(f"      PyHessian (oracle stop, {n_ph} iterations): {med(ph_runs, 0) * 1e3:.0f} ms wall, "
          f"{med(ph_runs, 1) * 1e3:.0f} ms CPU ({med(ph_runs, 1) / n_ph * 1e3:.2f} ms CPU per HVP, graph included)")
    hvp_ratio = n_ph / statistics.median(ours_hvps)
    eig_speedup, eig_speedup_cpu = med(ph_runs, 0) / med(ours, 0), med(ph_runs, 1) / med(ours, 1)

    probe = C.Sharpness(every=50, tol=TARGET)
    train(cfg.replace(eval_every=50), probes=[probe], progress=False)
    hvps = [e["hvps"] for e in probe.log]
    print(f"    in training (Sharpness probe every 50 GD steps, tol={TARGET:g}): HVPs per evaluation {hvps} "
          f"(first cold, then warm-started from the previous Ritz vector)")

    # --- 2. trace at matched standard error ------------------------------------------------------
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
    per_product = {}
    for P in (1, 4, 16):  # vmapped batches of probes: one backward pass for P products
        V = rademacher(16, H)
        per_product[P] = statistics.median(timed(lambda: H.mm_flat(V, batch=P))[1] for _ in range(3)) / 16
    auto = C.HVP_BATCH if H.hvp_seconds < C.CHEAP_HVP_SECONDS else 1
    print("    CPU time per product with P probes per vmapped backward: "
          + ", ".join(f"P={P}: {t * 1e3:.2f} ms" for P, t in per_product.items())
          + f" (hutchinson_trace's automatic choice here: P={auto})")
    ph_t, ours_t, defl_t, results = [], [], [], []
    for s in range(TRACE_REPEATS):
        def ph_trace():
            torch.manual_seed(100 + s)
            return fresh(net, criterion, batch).trace(maxIter=TRACE_PROBES, tol=0.0)

        wall, cpu, samples = timed(ph_trace)
        ph_t.append((wall, cpu))
        se_ph = statistics.stdev(samples) / math.sqrt(len(samples))
        mean_ph = statistics.mean(samples)
        wall, cpu, (mean, se) = timed(lambda: C.hutchinson_trace(loss_fn, params, n_probes=TRACE_PROBES,
                                                                 generator=torch.Generator().manual_seed(200 + s)))
        ours_t.append((wall, cpu))
        n_defl = max(2, math.ceil((best[1] / se_ph) ** 2))
        wall, cpu, (mean_d, se_d) = timed(lambda: C.hutchinson_trace(loss_fn, params, n_probes=n_defl, deflate=best[0],
                                                                     generator=torch.Generator().manual_seed(300 + s)))
        defl_t.append((wall, cpu))
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
    print(f"    timed (wall / CPU): PyHessian {med(ph_t, 0) * 1e3:.0f} / {med(ph_t, 1) * 1e3:.0f} ms ({TRACE_PROBES} HVPs) | "
          f"ours plain {med(ours_t, 0) * 1e3:.0f} / {med(ours_t, 1) * 1e3:.0f} ms ({TRACE_PROBES} HVPs, same standard "
          f"error in expectation) | ours deflated {med(defl_t, 0) * 1e3:.0f} / {med(defl_t, 1) * 1e3:.0f} ms "
          f"({best[0]}+{n_defl_med:g} HVPs, standard error {se_ratio:.2f}× PyHessian's)")
    trace_plain, trace_defl = med(ph_t, 0) / med(ours_t, 0), med(ph_t, 0) / med(defl_t, 0)

    print("\nratios (PyHessian / ours):")
    print(f"  λ_max to {TARGET:g}, certified stop vs oracle stop: HVPs {hvp_ratio:.2f}×, time {eig_speedup:.2f}× wall, "
          f"{eig_speedup_cpu:.2f}× CPU")
    print(f"  λ_max to {TARGET:g}, oracle stop for both ({n_ph} vs {n_ours} HVPs): HVPs {n_ph / n_ours:.2f}×, "
          f"time {med(ph_runs, 0) / med(ours_fixed, 0):.2f}× wall, {med(ph_runs, 1) / med(ours_fixed, 1):.2f}× CPU")
    print(f"  trace, plain Hutchinson at equal probes: time {trace_plain:.2f}× wall, "
          f"{med(ph_t, 1) / med(ours_t, 1):.2f}× CPU")
    print(f"  trace, deflated at matched standard error: HVPs {TRACE_PROBES / (best[0] + n_defl_med):.2f}×, "
          f"time {trace_defl:.2f}× wall, {med(ph_t, 1) / med(defl_t, 1):.2f}× CPU")
    print(f"RESULT is the λ_max speedup in wall time: PyHessian's with its oracle stop over ours with our certified "
          f"stop, to {TARGET:g} relative accuracy; curvature_trace is plain Hutchinson's at equal probes "
          f"(total benchmark time {time.perf_counter() - t0:.0f} s).")
    print(f"RESULT curvature_trace {trace_plain:.2f}")
    print(f"RESULT curvature {eig_speedup:.2f}")


if __name__ == "__main__":
    main()

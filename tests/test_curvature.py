"""Curvature: exact answers on quadratics, the 2/λ_max stability threshold, agreement with PyHessian,
and the Sharpness probe inside the training engine."""
import math
import warnings

import pytest
import torch

from reglab import RunConfig, make_dataset, train
from reglab import curvature as C
from reglab.config import ConfigError
from reglab.losses import LOSSES
from reglab.models import build_model

N = 24
SPECTRA = [  # one per member, distinct eigenvalues (one Krylov sequence sees each eigenvalue once)
    torch.linspace(1.0, 10.0, N),
    torch.logspace(-3, 0.5, N),
    torch.cat([torch.tensor([50.0, 40.0, 30.0]), torch.linspace(0.0, 1.0, N - 3)]),
]


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread, as the engine uses: on a busy 2-core machine two threads oversubscribe."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def quadratic(spectra=SPECTRA, seed=0, quartic=0.0):
    """½ wᵀ A_m w per member (+ quartic·Σ w⁴, to make the Hessian depend on w), A_m = U diag(s) Uᵀ."""
    g = torch.Generator().manual_seed(seed)
    A = []
    for s in spectra:
        U, _ = torch.linalg.qr(torch.randn(N, N, generator=g, dtype=torch.float64))
        A.append(U @ torch.diag(s.double()) @ U.T)
    A = torch.stack(A)
    params = {"w": torch.randn(len(spectra), N, generator=g, dtype=torch.float64)}
    loss = lambda p: 0.5 * torch.einsum("mi,mij,mj->m", p["w"], A, p["w"]) + quartic * p["w"].pow(4).sum(1)
    return loss, params, A


def test_hvp_is_the_matrix_product():
    loss, params, A = quadratic()
    v = {"w": torch.randn(3, N, dtype=torch.float64)}
    assert torch.allclose(C.hvp(loss, params, v)["w"], torch.einsum("mij,mj->mi", A, v["w"]), atol=1e-12)
    assert torch.allclose(C.hessian_matrix(loss, params), A, atol=1e-12)


def test_top_eigenvalues_exact_on_quadratic():
    loss, params, A = quadratic()
    res = C.top_eigenvalues(loss, params, k=3, tol=1e-8, generator=torch.Generator().manual_seed(1))
    want = torch.stack([s.double().sort(descending=True).values[:3] for s in SPECTRA])
    assert res.eigenvalues.shape == (3, 3)
    assert torch.allclose(res.eigenvalues, want, atol=1e-5)
    assert bool(res.converged.all()) and res.iterations <= N
    for i, vec in enumerate(res.vectors):  # Ritz vectors are eigenvectors, unit norm per member
        y = vec["w"]
        assert torch.allclose(y.norm(dim=1), torch.ones(3, dtype=torch.float64), atol=1e-10)
        assert (torch.einsum("mij,mj->mi", A, y) - res.eigenvalues[:, i:i + 1] * y).norm(dim=1).max() < 1e-4


def test_top_eigenvalue_is_largest_algebraic_and_warm_start_helps():
    spectra = [torch.cat([torch.tensor([-20.0]), torch.linspace(0.0, 3.0, N - 1)])]
    loss, params, _ = quadratic(spectra)
    cold = C.top_eigenvalues(loss, params, tol=1e-6, generator=torch.Generator().manual_seed(0))
    assert abs(float(cold.eigenvalues[0, 0]) - 3.0) < 1e-5
    warm = C.top_eigenvalues(loss, params, tol=1e-6, init=cold.vectors[0])
    assert warm.iterations < cold.iterations
    assert abs(float(warm.eigenvalues[0, 0]) - 3.0) < 1e-5


def test_traces_on_quadratic():
    loss, params, _ = quadratic()
    want = torch.stack([s.double().sum() for s in SPECTRA])
    assert torch.allclose(C.hessian_trace(loss, params), want, atol=1e-9)
    g = torch.Generator().manual_seed(2)
    for deflate in (0, 6):
        mean, se = C.hutchinson_trace(loss, params, n_probes=200, generator=g, deflate=deflate)
        assert bool((se > 0).all())
        assert bool(((mean - want).abs() <= 4 * se).all()), (deflate, mean, se, want)
    # deflating the three outliers of member 2 removes most of its variance
    _, se_plain = C.hutchinson_trace(loss, params, n_probes=200, generator=g)
    _, se_defl = C.hutchinson_trace(loss, params, n_probes=200, generator=g, deflate=6)
    assert float(se_defl[2]) < 0.2 * float(se_plain[2])


def test_repeated_eigenvalue_found_again_after_an_invariant_restart():
    # three distinct eigenvalues, each eight times: the Krylov space is invariant after three steps,
    # and the restart (orthogonal to the basis) finds each eigenvalue's other copies
    spectra = [torch.tensor([5.0] * 8 + [2.0] * 8 + [-1.0] * 8)]
    loss, params, _ = quadratic(spectra)
    res = C.top_eigenvalues(loss, params, k=4, tol=1e-8, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(res.eigenvalues[0], torch.tensor([5.0, 5.0, 2.0, 2.0], dtype=torch.float64), atol=1e-8)
    assert bool(res.converged.all()) and res.iterations <= 8


def test_zero_curvature_directions():
    # "u" is unused and "c" enters linearly: their Hessian rows and columns are zero
    loss_w, params, A = quadratic(SPECTRA[:1])
    params |= {"u": torch.randn(1, 3, dtype=torch.float64), "c": torch.randn(1, 2, dtype=torch.float64)}
    H = C.Hessian(lambda p: loss_w(p) + p["c"].sum(1), params)
    full = C.hessian_matrix(H)[0]
    assert torch.allclose(full[:N, :N], A[0], atol=1e-12) and float(full[N:].abs().max()) == 0.0
    assert float(H.grad["u"].abs().max()) == 0.0 and torch.allclose(H.grad["c"], torch.ones(1, 2, dtype=torch.float64))
    linear = C.top_eigenvalues(lambda p: p["w"].sum(1), params)  # a zero Hessian: λ = 0, at once
    assert float(linear.eigenvalues[0, 0]) == 0.0 and bool(linear.converged[0]) and linear.iterations == 1


def test_gd_diverges_iff_step_exceeds_two_over_sharpness():
    loss, params, A = quadratic()
    lam = C.top_eigenvalues(loss, params, tol=1e-8).eigenvalues[:, 0]
    for factor, stable in ((0.95, True), (1.05, False)):
        eta = factor * 2 / lam
        w = params["w"].clone()
        for _ in range(300):
            w = w - eta[:, None] * torch.einsum("mij,mj->mi", A, w)  # plain GD: ∇ = A w
        ratio = w.norm(dim=1) / params["w"].norm(dim=1)
        # stable: the norm shrinks (slowly along flat directions); unstable: it grows like 1.1^t
        assert bool((ratio < 1).all() if stable else (ratio > 1e6).all()), (factor, ratio)


def test_inactive_and_non_finite_members_get_nan():
    loss, params, _ = quadratic(quartic=0.1)
    params["w"][1] = float("nan")
    res = C.top_eigenvalues(loss, params, active=torch.tensor([True, True, False]))
    assert math.isfinite(float(res.eigenvalues[0, 0]))
    assert res.eigenvalues[1:, 0].isnan().all()
    mean, se = C.hutchinson_trace(loss, params, n_probes=4)
    assert math.isfinite(float(mean[0])) and math.isnan(float(mean[1]))


def test_spectral_density_recovers_the_spectrum():
    loss, params, _ = quadratic()
    sd = C.spectral_density(loss, params, n_probes=2, n_iter=N, grid=400, generator=torch.Generator().manual_seed(3))
    assert sd.density.shape == (3, 400)
    mass = sd.density.sum(1) * (sd.grid[1] - sd.grid[0])
    assert torch.allclose(mass, torch.ones(3, dtype=mass.dtype), atol=0.02)
    for m, s in enumerate(SPECTRA):  # N steps on an N-dim problem: the nodes are the eigenvalues
        assert torch.allclose(sd.nodes[m, 0].sort().values, s.double().sort().values, atol=1e-6)
        assert torch.allclose(sd.weights[m].sum(-1), torch.ones(2, dtype=torch.float64), atol=1e-10)


def test_validation_names_parameter_range_and_value():
    loss, params, _ = quadratic()
    with pytest.raises(ConfigError, match=r"'k' parameter of top_eigenvalues must be an int in the range \[1, inf\]. Got 0"):
        C.top_eigenvalues(loss, params, k=0)
    with pytest.raises(ConfigError, match="'n_probes'.*Got 1"):
        C.hutchinson_trace(loss, params, n_probes=1)
    with pytest.raises(ConfigError, match="'tol'"):
        C.top_eigenvalues(loss, params, tol=-1.0)
    with pytest.raises(ConfigError, match="one loss per member"):
        C.Hessian(lambda p: p["w"].sum(), params)
    with pytest.raises(ConfigError, match="max_params"):
        C.hessian_trace(loss, params, max_params=10)
    with pytest.raises(ConfigError, match="'every'"):
        C.Sharpness(every=0)


# ---------------------------------------------------------------------------------------------
# a small MLP on digits: Gauss–Newton, PyHessian


def digits_problem(members=2, depth=1, loss="mse", dtype=torch.float32, n=200):
    cfg = RunConfig(data="digits", n_train=n, width=16, depth=depth, activation="tanh", loss=loss)
    data = make_dataset("digits", n).to("cpu", dtype)
    model = build_model(cfg, data)
    params = model.init([torch.Generator().manual_seed(s) for s in range(members)], dtype=dtype)
    loss_fn = lambda p: LOSSES[loss](model(p, data.x_train), data.y_train).mean(-1)
    return model, params, data, loss_fn


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_gauss_newton_equals_hessian_for_a_linear_model(loss):
    # f is linear in θ, so the Hessian is exactly J ᵀ A J: the two traces must agree
    model, params, data, loss_fn = digits_problem(depth=0, loss=loss, dtype=torch.float64)
    gn = C.gauss_newton_trace(model, params, data.x_train, data.y_train, loss, chunk=64)
    assert torch.allclose(gn, C.hessian_trace(loss_fn, params), rtol=1e-8)


def test_gauss_newton_square_loss_is_mean_jacobian_norm():
    from torch.func import jacrev

    model, params, data, _ = digits_problem(members=1, dtype=torch.float64, n=50)
    J = jacrev(lambda p: model(p, data.x_train)[0])(params)  # [B, C, 1, ...]
    want = sum(j.pow(2).sum() for j in J.values()) / len(data.x_train)
    assert torch.allclose(C.gauss_newton_trace(model, params, data.x_train, data.y_train), want.reshape(1), rtol=1e-10)


def test_against_pyhessian():
    pyhessian = pytest.importorskip("pyhessian")
    model, params, data, loss_fn = digits_problem(members=2)
    net = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10))
    with torch.no_grad():  # member 0; model.weight gives [in, out], nn.Linear stores [out, in]
        for layer, i in ((net[0], 0), (net[2], 1)):
            layer.weight.copy_(model.weight(params, i)[0].T)
            layer.bias.copy_(params[f"b{i}"][0])
    onehot = torch.nn.functional.one_hot(data.y_train, 10).float()
    criterion = lambda out, y: 0.5 * (out - y).pow(2).sum(1).mean()  # our "mse": ½‖f − y‖², mean over examples
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyHessian's backward(create_graph=True) warns about a leaked graph
        ph = pyhessian.hessian(net, criterion, data=(data.x_train, onehot), cuda=False)
        ph_top = ph.eigenvalues(maxIter=300, tol=1e-6)[0][0]
        samples = torch.tensor(ph.trace(maxIter=200, tol=0.0), dtype=torch.float64)  # tol=0: all 200 probes
    ph_mean, ph_se = float(samples.mean()), float(samples.std() / math.sqrt(len(samples)))

    H = C.Hessian(loss_fn, params)
    # one product, member 0, against PyHessian's (nn.Linear stores each weight transposed)
    v = {k: torch.randn(p.shape, generator=torch.Generator().manual_seed(5)) for k, p in params.items()}
    as_linear = lambda t: [x for i in (0, 1) for x in (model.weight(t, i)[0].T, t[f"b{i}"][0])]
    ph_hv = pyhessian.utils.hessian_vector_product(ph.gradsH, ph.params, as_linear(v))
    for ours_part, ph_part in zip(as_linear(H.mv(v)), ph_hv):
        assert torch.allclose(ours_part, ph_part, rtol=1e-4, atol=1e-5 * float(ph_part.abs().max()))
    ours = C.top_eigenvalues(H, tol=1e-6, generator=torch.Generator().manual_seed(0))
    assert abs(float(ours.eigenvalues[0, 0]) - ph_top) <= 0.01 * abs(ph_top)
    exact = float(C.hessian_trace(H)[0])
    assert abs(ph_mean - exact) <= 4 * ph_se
    mean, se = C.hutchinson_trace(H, n_probes=200, generator=torch.Generator().manual_seed(0))
    assert abs(float(mean[0]) - exact) <= 4 * float(se[0])
    assert abs(float(mean[0]) - ph_mean) <= 4 * math.hypot(float(se[0]), ph_se)


def test_module_hessian_matches_pyhessian_and_run_hessian_matches_lanczos():
    pyhessian = pytest.importorskip("pyhessian")
    data = make_dataset("digits", 200)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10))
    criterion = torch.nn.functional.cross_entropy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ph_top = pyhessian.hessian(net, criterion, data=(data.x_train, data.y_train), cuda=False).eigenvalues(
            maxIter=300, tol=1e-6, top_n=2)[0]
    ours = C.module_hessian(net, criterion, data.x_train, data.y_train, top=2, tol=1e-6)
    for got, want in zip(ours.tolist(), ph_top):
        assert abs(got - want) <= 0.01 * abs(want)
    exact = float(C.hessian_trace(*C.module_loss(net, criterion, data.x_train, data.y_train))[0])
    mean, se = C.module_hessian_trace(net, criterion, data.x_train, data.y_train, n_probes=200)
    assert abs(mean - exact) <= 4 * se

    run = train(RunConfig(data="digits", n_train=200, width=16, depth=1, activation="tanh", steps=20,
                          eval_every=10, step_size=0.05), progress=False)
    want = C.top_eigenvalues(run.loss, run.params, k=2, generator=torch.Generator().manual_seed(0)).eigenvalues
    torch.testing.assert_close(run.hessian(top=2), want)
    mean, se = run.hessian_trace(n_probes=50)
    assert mean.shape == (1,) and float(se[0]) > 0


def test_run_hessian_is_nan_for_a_diverged_member():
    cfg = RunConfig(data="digits", n_train=100, width=8, depth=1, loss="mse", steps=30, eval_every=10)
    run = train([cfg.replace(step_size=1e4), cfg.replace(step_size=0.05)], progress=False)
    top = run.hessian()
    assert run.diverged_step(0) is not None and torch.isnan(top[0, 0]) and torch.isfinite(top[1, 0])


def test_batched_products_match_one_by_one():
    _, params, _, loss_fn = digits_problem(members=2)
    H = C.Hessian(loss_fn, params)
    V = torch.randn(5, 2, H.numel, generator=torch.Generator().manual_seed(0))
    one_by_one = H.mm_flat(V, batch=1)
    assert torch.allclose(H.mm_flat(V, batch=4), one_by_one, rtol=1e-4, atol=1e-5 * float(one_by_one.abs().max()))
    assert H.n_hvp == 10


# ---------------------------------------------------------------------------------------------
# the probe inside the engine


def test_sharpness_probe_in_training():
    cfg = RunConfig(data="digits", n_train=200, width=32, depth=1, activation="tanh", loss="mse", steps=60,
                    eval_every=10)
    warm, cold = C.Sharpness(tol=1e-5), C.Sharpness(tol=1e-5, warm_start=False, name="cold")
    run = train([cfg.replace(step_size=0.05), cfg.replace(step_size=0.2), cfg.replace(step_size=50.0)],
                probes=[warm, cold], progress=False)
    h = run.history
    w = h[h.metric == "sharpness"].pivot(index="step", columns="run", values="value")
    c = h[h.metric == "cold"].pivot(index="step", columns="run", values="value")
    assert list(w.index) == list(range(0, 61, 10))
    assert w[[0, 1]].notna().all().all() and bool((w[[0, 1]] > 0).all().all())
    assert ((w[[0, 1]] - c[[0, 1]]).abs() / c[[0, 1]]).max().max() < 1e-3  # warm and cold agree
    assert run.summary.diverged_at[2] is not None and w[2].iloc[-1] != w[2].iloc[-1]  # diverged: NaN
    assert warm.n_hvp < cold.n_hvp
    assert [e["warm"] for e in warm.log] == [False] + [True] * 6


def test_sharpness_every_skips_points():
    cfg = RunConfig(data="digits", n_train=100, width=8, depth=1, loss="mse", steps=40, eval_every=10)
    probe = C.Sharpness(every=20)
    run = train(cfg, probes=[probe], progress=False)
    steps = sorted(run.history[run.history.metric == "sharpness"].step.unique())
    assert steps == [0, 20, 40] and len(probe.log) == 3
    again = train(cfg, probes=[probe], progress=False)  # the same probe in a second run starts over
    assert sorted(again.history[again.history.metric == "sharpness"].step.unique()) == [0, 20, 40]
    assert [e["warm"] for e in probe.log[3:]] == [False, True, True]
    assert "every=20" in repr(probe)

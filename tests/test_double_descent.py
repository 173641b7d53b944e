"""Double descent (theme 06): the closed forms against direct solves, the engine against the GD closed
form, the curve summaries on hand examples, and the experiment on a tiny setting."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from reglab import ConfigError, from_arrays, train
from reglab.experiments import double_descent as dd

torch.set_num_threads(1)


def _problem(n=12, N=20, m=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    F = torch.randn(1, n, N, generator=g, dtype=torch.float64)
    Fe = torch.randn(1, m, N, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    return F, Fe, y


@pytest.mark.parametrize("N", [5, 12, 20])  # under-, exactly and over-parameterized (n = 12)
def test_ridgeless_matches_min_norm_least_squares(N):
    F, Fe, y = _problem(N=20)
    n = F.shape[1]
    (width, U, s, K), = list(dd.spectra(F, Fe, [N]))
    tr, ev, norm2 = dd.solve(U, s, K, y, dd.ridgeless_filter(s, n, N).unsqueeze(1), n)
    phi, phi_e = F[0, :, :N] / math.sqrt(N), Fe[0, :, :N] / math.sqrt(N)
    a = torch.linalg.lstsq(phi, y.unsqueeze(1), driver="gelsd").solution.squeeze(1)  # min-norm
    torch.testing.assert_close(tr[0, 0], phi @ a)
    torch.testing.assert_close(ev[0, 0], phi_e @ a)
    torch.testing.assert_close(norm2[0, 0], a.pow(2).sum())
    if N >= n:  # interpolates
        torch.testing.assert_close(tr[0, 0], y)


def test_qr_updated_spectrum_matches_direct_svd():
    F, Fe, y = _problem(n=12, N=40)
    grid = [3, 7, 12, 13, 25, 40]
    for N, U, s, K in dd.spectra(F, Fe, grid):
        phi = F[0, :, :N] / math.sqrt(N)
        torch.testing.assert_close(s[0], torch.linalg.svdvals(phi))
        torch.testing.assert_close(K[0], Fe[0, :, :N] @ F[0, :, :N].T / N)
        # U spans the column space: U Uᵀ Φ = Φ
        torch.testing.assert_close(U[0] @ U[0].T @ phi, phi)


def test_ridge_filter_matches_direct_solve_for_every_lambda():
    F, Fe, y = _problem(N=30)
    n, N = F.shape[1], 30
    (_, U, s, K), = list(dd.spectra(F, Fe, [N]))
    lams = [1e-3, 0.1, 2.0]
    tr, ev, _ = dd.solve(U, s, K, y, dd.ridge_filter(s, lams, n), n)
    phi, phi_e = F[0] / math.sqrt(N), Fe[0] / math.sqrt(N)
    for j, lam in enumerate(lams):
        a = torch.linalg.solve(phi.T @ phi + n * lam * torch.eye(N, dtype=phi.dtype), phi.T @ y)
        torch.testing.assert_close(ev[0, j], phi_e @ a)
        torch.testing.assert_close(tr[0, j], phi @ a)


def test_gd_filter_matches_explicit_gradient_descent():
    F, Fe, y = _problem(N=16)
    n, N, eta, t = F.shape[1], 16, 0.7, 37
    (_, U, s, K), = list(dd.spectra(F, Fe, [N]))
    _, ev, _ = dd.solve(U, s, K, y, dd.gd_filter(s, eta, t, n).unsqueeze(1), n)
    phi, phi_e = F[0] / math.sqrt(N), Fe[0] / math.sqrt(N)
    a = torch.zeros(N, dtype=phi.dtype)
    for _ in range(t):  # GD on ½·mean squared error
        a = a - eta * phi.T @ (phi @ a - y) / n
    torch.testing.assert_close(ev[0, 0], phi_e @ a)


def test_engine_full_batch_gd_matches_the_closed_form():
    """The engine's 'mse' (½·squared error, mean over examples) with center_output trains from a = 0:
    full-batch GD in the engine equals the closed-form filter."""
    F, Fe, y = _problem(n=12, N=16)
    n, N, eta, t = 12, 16, 0.5, 25
    phi, phi_e = F[0] / math.sqrt(N), Fe[0] / math.sqrt(N)
    cfg = dd.config(step_size=eta, batch_size=None, steps=t, n_train=n).replace(
        data="arrays", data_options={}, n_train=None, device="cpu", dtype="float64")
    y_e = torch.linspace(-1, 1, phi_e.shape[0], dtype=phi.dtype)
    r = train(cfg, data=from_arrays(phi, y.unsqueeze(1), phi_e, y_e.unsqueeze(1), task="regression"), progress=False)
    (_, U, s, K), = list(dd.spectra(F, Fe, [N]))
    _, ev, _ = dd.solve(U, s, K, y, dd.gd_filter(s, eta, t, n).unsqueeze(1), n)
    expected = 0.5 * (ev[0, 0] - y_e).pow(2).mean()
    np.testing.assert_allclose(r.summary.test_loss[0], float(expected), rtol=1e-6)


def test_curve_summaries_on_hand_examples():
    curve = pd.Series([1.0, 0.5, 8.0, 2.0, 1.0], index=[10, 20, 40, 80, 160])
    assert dd.peak(curve) == (40, 8.0, 16.0)
    assert dd.max_rise(curve) == pytest.approx(16.0)
    assert dd.max_rise(pd.Series([3.0, 2.0, 2.1, 1.0], index=[1, 2, 3, 4])) == pytest.approx(1.05)
    assert dd.max_rise(pd.Series([3.0, 2.0, 1.0], index=[3, 2, 1])) == pytest.approx(2.0)  # sorted by width: 1, 2, 3


def test_width_grid_is_dense_around_the_threshold():
    grid = dd.widths(200, 2000)
    assert grid[0] == 10 and grid[-1] == 2000 and 200 in grid
    assert all(w in grid for w in (160, 190, 210, 240))
    assert grid == sorted(set(grid))


def test_tiny_run_peaks_at_the_threshold_and_reports_conditioning():
    r = dd.run(width=200, n_train=40, seeds=2, steps=50, batch_size=None)
    assert [c.claim for c in r.claims][:2] == ["ridgeless test error peaks within ±25 % of N = n, for every seed",
                                               "the ridgeless peak is ≥ 5× the curve's minimum, for every seed"]
    assert r.claims[0].held and r.claims[1].held
    assert r.metrics["cond_at_n_median"] > 100 and math.isfinite(r.metrics["cond_max"])
    curves = r.frames["curves"]
    assert set(curves.method) >= {"ridgeless", "tuned ridge", "GD"} and "SGD" not in set(curves.method)
    assert np.isfinite(curves.value).all()
    # the ridgeless read-out interpolates from N = n on (training error ~0), GD at 50 steps does not
    at_n = curves[(curves.width == 40) & (curves.seed == 0)].set_index("metric")["value"]
    assert at_n["train:ridgeless"] < 1e-12 < 1e-3 < at_n["train:GD"]


def test_same_seed_same_numbers_and_explorer_frame():
    cfg = dd.config(width=120, n_train=30, steps=20, batch_size=None)
    a, b = dd.explore(cfg), dd.explore(cfg)
    pd.testing.assert_frame_equal(a, b)
    assert {"run", "step", "metric", "value"} <= set(a.columns)
    assert dd.chart(a, cfg).to_dict()  # the chart builds from the tidy columns alone
    assert dd.chart(a[["run", "step", "metric", "value"]], cfg).to_dict()


def test_sgd_engine_points_and_divergence_is_reported():
    cfg = dd.config(width=60, n_train=30, steps=30, batch_size=5, step_size=0.5)
    frame, diverged = dd.sgd_curves(cfg, 0, [15, 30])
    assert set(frame.metric) == {"test:SGD", "train:SGD"} and not diverged
    big = dd.curves(dd.config(width=60, n_train=30, steps=200, step_size=500.0, batch_size=None), [0])
    assert (big.metric == "diverged:GD").any()  # η far above 2/λ_max: reported, never a crash
    assert not (big.metric == "test:GD").any()
    assert "GD diverged" in str(dd.chart(big, cfg).to_dict())


@pytest.mark.parametrize("bad", [dict(width=5), dict(batch_size=500), dict(step_size=-1.0), dict(label_noise=-0.1),
                                 dict(seeds=0)])
def test_bad_input_is_a_clear_config_error(bad):
    with pytest.raises(ConfigError):
        dd.run(**{"width": 100, "n_train": 30, "steps": 10, **bad})


def test_features_are_nested_whatever_the_largest_width():
    small, large = dd.feature_weights(4, 30, [7]), dd.feature_weights(4, 300, [7])
    torch.testing.assert_close(small, large[:, :, :30])


def test_core_random_features_data_is_the_theme_model():
    """reglab's `random_features` data set: the theme's teacher seen through its nested ReLU features."""
    from reglab import make_dataset

    wide, narrow = make_dataset("random_features", width=128), make_dataset("random_features", width=64)
    x, y, _, _ = dd.linear_teacher(200)
    w = dd.feature_weights(15, 64, [0])[0]
    expected = torch.relu(torch.from_numpy(x).double() @ w) / math.sqrt(64)
    torch.testing.assert_close(narrow.x_train.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(wide.x_train[:, :64] * math.sqrt(128), narrow.x_train * math.sqrt(64))  # nested
    torch.testing.assert_close(narrow.y_train[:, 0], torch.from_numpy(y))

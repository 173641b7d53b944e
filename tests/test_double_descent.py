"""Double descent (theme 06): the closed forms against direct solves, the engine against the GD closed
form, the curve summaries on hand examples, the claim rules at their thresholds, divergence, and the
experiment on a tiny setting."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from reglab import ConfigError, from_arrays, train
from reglab.claims import DIVERGED, HELD, INFO, NOT_HELD
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


EPS = 1e-9


def test_gd_diverged_step_is_the_first_step_over_the_limit():
    F, Fe, y = _problem(n=12, N=16)
    n, N, eta, t = 12, 16, 40.0, 60
    (_, U, s, _), = list(dd.spectra(F, Fe, [N]))
    phi = F[0] / math.sqrt(N)
    limit = 1e4 * max(0.5 * float(y.pow(2).mean()), 1.0)
    a, first = torch.zeros(N, dtype=phi.dtype), None
    for step in range(1, t + 1):  # explicit GD, the loss after each step
        a = a - eta * phi.T @ (phi @ a - y) / n
        if first is None and not 0.5 * float((phi @ a - y).pow(2).mean()) <= limit:
            first = step
    assert first is not None and 1 < first < t
    assert dd.gd_diverged_step(U[0], s[0], y, eta, t, limit) == first


@pytest.mark.parametrize("rule, at, inside, outside", [
    (dd.PEAK_AT_N, [0.75, 1.25], [0.75 + EPS, 1.25 - EPS], [0.75 - EPS, 1.25 + EPS]),
    (dd.PEAK_TALL, [dd.PEAK_FACTOR], [dd.PEAK_FACTOR + EPS], [dd.PEAK_FACTOR - EPS]),
    (dd.GD_FLAT, [], [dd.PEAK_FACTOR - EPS], [dd.PEAK_FACTOR, dd.PEAK_FACTOR + EPS]),
])
def test_per_seed_rules_at_inside_and_outside_their_thresholds(rule, at, inside, outside):
    for v in at + inside:
        assert rule([1.0 if rule is dd.PEAK_AT_N else v, v]), v
    for v in outside:
        assert not rule([v]) and not rule([inside[0], v]), v  # one failing seed fails the rule
    assert not rule([inside[0], None]) and not rule([])  # so does a missing one


@pytest.mark.parametrize("rule, at, inside, outside", [
    (dd.RISE, [1.05], 1.05 - EPS, [1.05 + EPS]),
    (dd.SGD_FLAT, [], dd.PEAK_FACTOR - EPS, [dd.PEAK_FACTOR, dd.PEAK_FACTOR + EPS]),
])
def test_single_value_rules_at_inside_and_outside_their_thresholds(rule, at, inside, outside):
    assert all(rule(v) for v in at) and rule(inside)
    assert not any(rule(v) for v in outside) and not rule(None) and not rule(math.nan)


def test_near_threshold_over_min_reads_the_window_around_n():
    curve = pd.Series([1.0, 0.5, 3.0, 2.0, 9.0], index=[10, 74, 100, 125, 126])
    assert dd.near_threshold_over_min(curve, 100) == pytest.approx(6.0)  # 3.0 at N = 100 / 0.5; 74 and 126 are outside
    assert math.isnan(dd.near_threshold_over_min(pd.Series([1.0, 2.0], index=[10, 20]), 100))
    assert dd.near_threshold_over_min(pd.Series([2.0, math.nan, 1.0], index=[75, 100, 200]), 100) == 2.0  # NaN dropped


def test_tuned_ridge_is_scored_on_the_mean_of_enough_draws():
    r = dd.run(width=200, n_train=40, seeds=2, steps=50, batch_size=None, draws=dd.MIN_DRAWS)
    claim = r.claim("tuned_no_peak")
    assert claim.status != INFO and r.metrics["draws"] == dd.MIN_DRAWS
    draws = r.frames["tuned_draws"]
    tuned = draws.groupby("width")["value"].mean()
    assert claim.value == pytest.approx(dd.max_rise(tuned)) == pytest.approx(r.metrics["tuned_max_rise_mean_curve"])
    assert set(draws.seed) == set(range(dd.MIN_DRAWS)) and list(r.frames["per_seed"].seed) == [0, 1]
    assert set(r.frames["curves"].seed) == {0, 1}  # the charts show the per-seed draws
    few = dd.run(width=200, n_train=40, seeds=2, steps=50, batch_size=None, draws=dd.MIN_DRAWS - 1)
    assert few.claim("tuned_no_peak").status == INFO and "fewer than" in few.claim("tuned_no_peak").note


def test_tiny_run_claims_metrics_and_frames():
    r = dd.run(width=200, n_train=40, seeds=2, steps=50, batch_size=None, draws=2)
    status = {c.id: c.status for c in r.claims}
    assert list(status) == ["peak_at_threshold", "peak_height", "tuned_no_peak", "gd_no_peak", "sgd_no_peak"]
    assert status["peak_at_threshold"] == status["peak_height"] == status["gd_no_peak"] == HELD
    assert status["sgd_no_peak"] == status["tuned_no_peak"] == INFO  # no SGD without a batch size; 2 draws
    assert r.claim("peak_at_threshold").value == [1.0, 1.0]  # N_peak / n, per seed
    assert r.metrics["peak_width@seed=0"] == r.metrics["peak_width@seed=1"] == 40
    assert r.metrics["cond_at_n_median"] > 100 and math.isfinite(r.metrics["cond_max"])
    assert not any("_s0" in k for k in r.metrics) and "sgd_diverged_widths" not in r.metrics
    curves = r.frames["curves"]
    assert set(curves.method) >= {"ridgeless", "tuned ridge", "GD"} and "SGD" not in set(curves.method)
    assert np.isfinite(curves.value).all() and str(curves.diverged_at.dtype) == "Int64" and curves.diverged_at.isna().all()
    # the ridgeless read-out interpolates from N = n on (training error ~0), GD at 50 steps does not
    at_n = curves[(curves.width == 40) & (curves.seed == 0)].set_index("metric")["value"]
    assert at_n["train:ridgeless"] < 1e-12 < 1e-3 < at_n["train:GD"]
    assert set(r.timings) == {"closed forms"} and list(r.frames["per_seed"].seed) == [0, 1]
    assert set(r.exploration.controls) == {"step_size", "steps", "label_noise"} and r.exploration.run is dd.explore
    assert r.exploration.presets is dd.PRESETS and r.exploration.learned is dd.learned


def test_gd_with_many_steps_regains_the_peak_and_fails_the_no_peak_claim():
    r = dd.run(width=200, n_train=40, seeds=1, steps=1_000_000, batch_size=None, draws=1)
    assert r.claim("gd_no_peak").status == NOT_HELD and r.claim("gd_no_peak").value[0] >= dd.PEAK_FACTOR


def test_same_seed_same_numbers_and_explorer_frame():
    cfg = dd.config(width=120, n_train=30, steps=20, batch_size=None)
    a, b = dd.explore(cfg), dd.explore(cfg)
    pd.testing.assert_frame_equal(a, b)
    assert {"run", "step", "metric", "value", "diverged_at"} <= set(a.columns)
    assert dd.chart(a, cfg).to_dict()  # the chart builds from the tidy columns alone
    assert dd.chart(a[["run", "step", "metric", "value"]], cfg).to_dict()
    assert dd.lambda_chart(a).to_dict()
    view = dd.learned(a[["run", "step", "metric", "value"]], cfg).to_dict()
    assert "current width N = 120" in str(view) and "N = n" in str(view)
    assert dd.learned(a.iloc[:0], cfg).to_dict()  # nothing yet: a note


def test_presets_apply_in_the_explorer():
    r = dd.run(width=120, n_train=30, seeds=1, steps=20, batch_size=None, draws=1)
    ex = r.explorer(headless=True)
    try:
        for name, preset in dd.PRESETS.items():
            assert ex.apply_preset(name) == [] and preset["question"]
            assert all(ex.values[k] == v for k, v in preset["values"].items()), name
    finally:
        ex.close()


def test_divergence_is_the_diverged_at_column_and_the_claim_says_where():
    big = dd.curves(dd.config(width=60, n_train=30, steps=200, step_size=500.0, batch_size=None), [0])
    gd = big[big.method == "GD"]
    assert gd.diverged_at.notna().all() and gd.value.isna().all()  # η far above 2/λ_max: every width, no crash
    assert big[big.method != "GD"].diverged_at.isna().all() and (gd.diverged_at < 200).all()
    assert "GD diverged at N = 10" in str(dd.chart(big, dd.config(n_train=30)).to_dict())
    r = dd.run(width=60, n_train=30, seeds=1, steps=200, step_size=500.0, batch_size=None, draws=1)
    claim = r.claim("gd_no_peak")
    assert claim.status == DIVERGED and claim.note.startswith("diverged at step") and "from N = 10, seed 0" in claim.note
    assert r.claim("peak_height").status != DIVERGED and r.metrics["gd_diverged_widths"] == len(set(gd.width))


def test_sgd_engine_points_and_divergence():
    cfg = dd.config(width=60, n_train=30, steps=30, batch_size=5, step_size=0.5)
    frame, runs = dd.sgd_curves(cfg, 0, [15, 30])
    assert set(frame.metric) == {"test:SGD", "train:SGD"} and frame.diverged_at.isna().all() and set(runs) == {15, 30}
    bad, runs = dd.sgd_curves(cfg.replace(step_size=500.0), 0, [30])
    assert bad.value.isna().all() and (bad.diverged_at == runs[30].diverged_step(0)).all()


@pytest.mark.parametrize("bad", [dict(width=5), dict(batch_size=500), dict(step_size=-1.0), dict(label_noise=-0.1),
                                 dict(seeds=0), dict(steps=0), dict(draws=0)])
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

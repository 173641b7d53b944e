"""Generalization measures on cases with known values, the rank correlations, the claims' rules at their
thresholds, and the T9 experiment on a tiny grid."""
import math

import pandas as pd
import pytest
import torch

from reglab import ConfigError, train
from reglab.experiments import generalization as t9
from reglab.metrics import generalization as gm

EPS = 1e-9


def diagonal_layers():
    """Two members of a two-layer diagonal network: member 0 diag(3, 1) then diag(0.5, 2); member 1 twice I."""
    w1 = torch.stack([torch.diag(torch.tensor([3.0, 1.0])), torch.eye(2)])
    w2 = torch.stack([torch.diag(torch.tensor([0.5, 2.0])), torch.eye(2)])
    return [w1, w2]


# ---------------------------------------------------------------------------------------------
# the measures


def test_spectral_product_of_diagonal_layers_is_the_product_of_their_largest_entries():
    assert gm.spectral_product(diagonal_layers()).tolist() == pytest.approx([3.0 * 2.0, 1.0])


def test_path_norm_of_diagonal_layers_sums_the_two_paths():
    # paths 1→1→1 (3 · 0.5) and 2→2→2 (1 · 2): √(1.5² + 2²) = 2.5; the identity network: √2
    assert gm.path_norm(diagonal_layers()).tolist() == pytest.approx([2.5, math.sqrt(2)])


def test_path_norm_matches_enumerating_every_path():
    g = torch.Generator().manual_seed(0)
    ws = [torch.randn(1, *s, generator=g, dtype=torch.float64) for s in ((3, 4), (4, 2), (2, 3))]
    total = sum((ws[0][0, i, j] * ws[1][0, j, k] * ws[2][0, k, l]) ** 2
                for i in range(3) for j in range(4) for k in range(2) for l in range(3))
    assert gm.path_norm(ws).item() == pytest.approx(math.sqrt(float(total)), rel=1e-9)


def test_parameter_norm_and_distance_from_init():
    params = {"W0": torch.tensor([[[3.0, 0.0]], [[1.0, 1.0]]]), "b0": torch.tensor([[4.0], [0.0]])}
    start = {"W0": torch.zeros(2, 1, 2), "b0": torch.tensor([[4.0], [1.0]])}
    assert gm.parameter_norm(params).tolist() == pytest.approx([5.0, math.sqrt(2)])
    assert gm.distance_from_init(params, start).tolist() == pytest.approx([3.0, math.sqrt(3)])


def test_output_margins_and_inverse_margin():
    out = torch.tensor([[[3.0, 1.0, 0.0], [0.0, 2.0, 1.5]]])  # one member, two examples
    y = torch.tensor([0, 1])
    assert gm.output_margins(out, y).tolist() == [pytest.approx([2.0, 0.5])]
    assert gm.inverse_margin(out, y, quantile=0.0).item() == pytest.approx(1 / 0.5 ** 2)
    assert gm.inverse_margin(out, y, quantile=0.1).item() == pytest.approx(1 / 0.65 ** 2)  # linear interpolation
    wrong = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])
    assert math.isnan(gm.inverse_margin(wrong, torch.tensor([0, 0])).item())  # misclassified: no margin


def quadratic(diagonals: torch.Tensor):
    """L(θ) = ½ θᵀ diag(a) θ per member: its Hessian is diag(a)."""
    return lambda p: 0.5 * (diagonals * p["w"] ** 2).sum(-1)


def test_sharpness_of_a_quadratic_is_its_largest_curvature():
    a = torch.tensor([[1.0, 5.0, 2.0], [0.5, 0.25, 3.0]], dtype=torch.float64)
    params = {"w": torch.randn(2, 3, dtype=torch.float64)}
    assert gm.sharpness(quadratic(a), params, tol=1e-8).tolist() == pytest.approx([5.0, 3.0], rel=1e-6)


def test_pac_bayes_sigma_of_a_quadratic():
    # E[L(σu)] − L(0) = ½σ² tr(A): σ* = √(2ε / tr A); tr A = a·d per member
    d, eps = 4000, 0.1
    a = torch.tensor([[1.0], [4.0]], dtype=torch.float64).expand(2, d)
    params = {"w": torch.zeros(2, d, dtype=torch.float64)}
    sigma = gm.pac_bayes_sigma(quadratic(a), params, epsilon=eps, samples=10)
    expected = [math.sqrt(2 * eps / (1.0 * d)), math.sqrt(2 * eps / (4.0 * d))]
    assert sigma.tolist() == pytest.approx(expected, rel=0.02)
    assert gm.pac_bayes_flatness(sigma).tolist() == pytest.approx([1 / s ** 2 for s in expected], rel=0.04)
    broken = gm.pac_bayes_sigma(lambda p: p["w"].sum(-1) * math.nan, params)
    assert torch.isnan(broken).all()


# ---------------------------------------------------------------------------------------------
# rank correlation


def test_kendall_tau_known_values_and_ties():
    from scipy.stats import kendalltau

    assert gm.kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert gm.kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert gm.kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    a, b = [1, 1, 2, 3, 3, 4], [2, 1, 1, 5, 4, 4]
    assert gm.kendall_tau(a, b) == pytest.approx(kendalltau(a, b).statistic)  # τ-b with ties
    assert gm.kendall_tau([1, 2, math.nan, 3], [1, 2, 0, 3]) == pytest.approx(1.0)  # a missing value is dropped
    assert math.isnan(gm.kendall_tau([1, 1, 1], [1, 2, 3])) and math.isnan(gm.kendall_tau([1], [1]))


def test_granulated_tau_averages_one_hyperparameter_sub_sweeps():
    # gap = a + b; the measure follows a and opposes b: ψ_a = 1, ψ_b = −1, Ψ = 0, while τ over all is 0
    rows = [{"a": a, "b": b, "seed": 0, "gap": a + b, "m": a - b} for a in (1, 2, 3) for b in (0.1, 0.2, 0.3)]
    frame = pd.DataFrame(rows)
    taus = gm.sub_sweep_taus(frame, "m", "gap", ["a", "b"])
    assert len(taus) == 6 and set(taus.networks) == {3}
    psi, big_psi = gm.granulated_tau(frame, "m", "gap", ["a", "b"])
    assert psi == {"a": pytest.approx(1.0), "b": pytest.approx(-1.0)} and big_psi == pytest.approx(0.0)
    two_seeds = pd.concat([frame, frame.assign(seed=1, m=frame.a + frame.b)])  # seed 1: the measure is the gap
    psi, _ = gm.granulated_tau(two_seeds, "m", "gap", ["a", "b"])
    assert psi == {"a": pytest.approx(1.0), "b": pytest.approx(0.0)}  # (−1 + 1) / 2 over b's sub-sweeps


# ---------------------------------------------------------------------------------------------
# the claims' rules


def test_rules_at_and_around_their_thresholds():
    some = t9.SOME_SUB_SWEEP_NEGATIVE  # every measure has a positive fraction of sub-sweeps with τ < 0
    assert some([EPS, 0.5]) and not some([0.0, 0.5]) and not some([0.5, -EPS]) and not some([0.5, None])
    signs = t9.PSI_SIGN_CHANGES  # every measure's smallest ψ_i ≤ 0
    assert signs([0.0, -0.3]) and signs([-EPS]) and not signs([-0.3, EPS]) and not signs([None])
    flat = t9.FLATNESS_ABOVE_SPECTRAL
    assert flat(EPS) and not flat(0.0) and not flat(-EPS) and not flat(math.nan)
    neg = t9.SPECTRAL_NEGATIVE_IN_ETA
    assert neg(-EPS) and not neg(0.0) and not neg(EPS) and not neg(None)


# ---------------------------------------------------------------------------------------------
# the experiment

TINY = dict(step_sizes=[0.1, 0.3], batch_sizes=[8, 16], weight_decays=[0.0, 0.001], ranks=[2, None], width=8,
            n_train=100, criterion=0.3, max_steps=400, seeds=1)


def test_the_probe_keeps_each_member_where_it_first_reached_the_criterion():
    base = t9.config(width=16, n_train=100, max_steps=1000).replace(batch_size=16)
    configs = [base.replace(step_size=s) for s in (0.1, 0.4)]
    probe = t9.CriterionProbe(0.3)
    run = train(configs, probes=[probe], stop=probe.done, progress=False)
    assert (probe.step > 0).all() and probe.step[1] < probe.step[0]
    at = run.loss(probe.snapshot)
    assert (at <= 0.3).all()
    assert int(run.history.step.max()) == int(probe.step.max())  # stopped once every member got there


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import os

    os.environ["REGLAB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return t9.run(**TINY)


def test_tiny_run_returns_claims_metrics_frames_and_the_explorer(tiny):
    assert [c.id for c in tiny.claims] == ["no_measure_always_positive", "psi_changes_sign", "flatness_above_spectral",
                                           "spectral_negative_in_step_size"]
    assert tiny.metrics["networks"] == 16 and tiny.metrics["measured"] + tiny.metrics["not_at_criterion"] \
        + tiny.metrics["diverged"] == 16
    table = tiny.frames["networks"]
    assert set(t9.MEASURES) <= set(table.columns) and {"gap", "criterion_step", "reached"} <= set(table.columns)
    ok = t9.measured(table)
    assert (ok.train_loss <= TINY["criterion"] + 1e-6).all() and (ok.inverse_steps == 1 / ok.criterion_step).all()
    assert set(table["rank"]) == {2, 8}  # full rank shown as the width
    corr = tiny.frames["correlations"]
    assert list(corr.measure) == list(t9.MEASURES) and corr.tau.between(-1, 1).all()
    for chart in (t9.tau_chart(tiny), t9.gap_chart(tiny), t9.scatter(ok, "path_norm", "batch_size")):
        chart.to_dict()
    explorer = tiny.explorer(headless=True)
    assert set(explorer.specs) == {"data_options.measure", "data_options.color", "data_options.vary"}
    explorer.static_chart().to_dict()
    explorer.set(**{"data_options.measure": "spectral_product", "data_options.color": "rank"})
    assert "spectral-norm product" in str(explorer.static_chart().to_dict()["vconcat"][0]["title"])


def test_the_store_resumes_and_gives_the_same_measures(tmp_path):
    from types import SimpleNamespace

    configs = t9.grid_configs(SimpleNamespace(**{**t9.THEME.validate(TINY), "ranks": [None]}))
    first = t9.measured_sweep(configs, 0.3, store=tmp_path, progress=False)
    again = t9.measured_sweep(configs, 0.3, store=tmp_path, progress=False)
    assert first["trained"] == len(first["chunks"]) == 1 and again["trained"] == 0
    assert again["chunks"].from_store.all() and again["chunks"].cpu_seconds.equals(first["chunks"].cpu_seconds)
    pd.testing.assert_frame_equal(first["measures"], again["measures"])


@pytest.mark.parametrize("change, message", [
    ({"ranks": [2, 2]}, "'ranks' parameter .* without repeated values"),
    ({"ranks": [16]}, "'rank' parameter of RunConfig must be an int in the range \\[1, 8\\]"),
    ({"batch_sizes": [200]}, "'batch_size' parameter of RunConfig must be an int in the range \\[1, 100\\]"),
    ({"cluster": "spark"}, "'cluster' parameter .* must be None, 'local', 'ray' or 'ray://host:port'"),
    ({"step_sizes": []}, "'step_sizes' parameter"),
])
def test_bad_settings_are_refused_with_one_line(change, message):
    with pytest.raises(ConfigError, match=message):
        t9.run(**{**TINY, **change})


def test_diverging_networks_are_reported_not_raised(tmp_path, monkeypatch):
    monkeypatch.setenv("REGLAB_CACHE", str(tmp_path))
    result = t9.run(**{**TINY, "step_sizes": [300.0], "ranks": [None], "max_steps": 100})
    assert result.metrics["diverged"] > 0 and result.metrics["measured"] == 0  # the rest never reach the criterion
    assert all(c.status == "diverged" and "diverged at step" in c.note for c in result.claims)


def test_the_grid_on_ray_gives_the_same_measures(tmp_path):
    ray = pytest.importorskip("ray")
    from types import SimpleNamespace

    configs = t9.grid_configs(SimpleNamespace(**{**t9.THEME.validate(TINY), "ranks": [None], "step_sizes": [0.3]}))
    here = t9.measured_sweep(configs, 0.3, store=tmp_path / "here", progress=False)
    try:
        there = t9.measured_sweep(configs, 0.3, cluster="local", store=tmp_path / "ray", progress=False)
    finally:
        ray.shutdown()
    assert there["trained"] == 1
    cols = ["criterion_step", "gap", *t9.MEASURES]
    pd.testing.assert_frame_equal(here["measures"][cols], there["measures"][cols], rtol=1e-5)

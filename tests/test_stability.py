"""01 · Stability: metric functions on hand-computed examples, the claims' rules at their thresholds, and
the experiment on tiny settings."""
import math

import numpy as np
import pytest
import torch

from reglab import ConfigError, RunConfig, train
from reglab.claims import DIVERGED
from reglab.curvature import gauss_newton_trace, top_eigenvalues
from reglab.data import make_dataset
from reglab.experiments import stability
from reglab.models import MLP

TINY = dict(steps=40, n_train=100, width=16, sharpness_every=10, trace_step_sizes=[0.05, 0.1], sgd_epochs=1,
            gd_steps=40, seeds=1)
EPS = 1e-9


# ---------------------------------------------------------------------------------------------
# pure metrics


def test_crossing_step_and_eos_ratio():
    steps = [0, 10, 20, 30, 40]
    lam = [5.0, 8.0, 10.5, 9.5, 10.0]  # 2/η = 10 at η = 0.2: first reached at step 20
    assert stability.crossing_step(steps, lam, 0.2) == 20
    # after the crossing: 10.5, 9.5, 10.0 -> median 10.0 -> ratio 10·0.2/2 = 1.0
    assert stability.eos_ratio(steps, lam, 0.2) == pytest.approx(1.0)
    assert stability.crossing_step(steps, lam, 0.1) is None  # 2/η = 20 never reached
    assert stability.eos_ratio(steps, lam, 0.1) is None
    assert stability.eos_ratio(steps, [5, 8, 10.5, float("nan"), 11.0], 0.2) == pytest.approx(10.75 * 0.1)


def test_loss_increase_fractions():
    # loss at θ_0..θ_6; updates 1..6 change it by  -, -, -, +, -, +
    losses = [1.0, 0.9, 0.8, 0.7, 0.75, 0.6, 0.65]
    before, after = stability.loss_increase_fractions(losses, 3)  # updates 1-3 lead to θ_3, the crossing
    assert before == 0.0 and after == pytest.approx(2 / 3)
    assert stability.loss_increase_fractions(losses, None) == (pytest.approx(2 / 6), None)
    assert stability.loss_increase_fractions(losses, 0) == (None, pytest.approx(2 / 6))


def test_converged_means_near_interpolation():
    tol = stability.INTERPOLATION_LOSS
    assert stability.converged(tol, None)  # at the threshold
    assert stability.converged(tol * (1 - 1e-6), None)  # just inside
    assert not stability.converged(tol * (1 + 1e-6), None)  # just outside
    assert not stability.converged(0.1, None)  # 20 % of a 0.5 initial loss is far from a minimum
    assert not stability.converged(1e-5, 85)  # diverged
    assert not stability.converged(float("nan"), None)


def test_diverged_sgd_step_sizes_are_reported_not_dropped():
    res = stability.run(**{**TINY, "trace_step_sizes": [0.05, 40.0]})
    c = res.claim("sgd_trace_bound")
    assert c.status == DIVERGED and "η = 40, seed 0" in c.note and "diverged at step" in c.note


def test_gauss_newton_trace_of_a_linear_model_by_hand():
    # f(x) = Wᵀx + b with C outputs and ½‖f − y‖²: the Hessian is constant, tr H = C·mean(‖x‖² + 1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 3, generator=g), torch.randint(0, 4, (7,), generator=g)
    model = MLP(3, 4, depth=0)
    params = model.init([torch.Generator().manual_seed(s) for s in (0, 1)])
    want = 4 * (x.pow(2).sum(1) + 1).mean()
    got = gauss_newton_trace(model, params, x, y, "mse")
    assert got.shape == (2,)
    assert torch.allclose(got.double(), want.double().expand(2), rtol=1e-5)


def test_snapshot_keeps_parameters_at_chosen_steps():
    snap = stability.Snapshot([0, 20])
    cfg = RunConfig(data="digits", n_train=50, width=8, depth=1, loss="mse", steps=20, eval_every=10, step_size=0.1)
    r = train(cfg, probes=[snap], progress=False)
    assert sorted(snap.params) == [0, 20]
    assert all(torch.equal(snap.params[20][k], r.params[k]) for k in r.params)
    assert not torch.equal(snap.params[0]["W0"], r.params["W0"])


# ---------------------------------------------------------------------------------------------
# the claims' rules: at, just inside and just outside each threshold; one failing or missing seed fails


@pytest.mark.parametrize("rule, at, inside, outside, held_at", [
    (stability.EOS_BAND, 0.9, 0.9 + EPS, 0.9 - EPS, True),
    (stability.EOS_BAND, 1.15, 1.15 - EPS, 1.15 + EPS, True),
    (stability.SMALL_BELOW_EDGE, 1.0, 1.0 - EPS, 1.0 + EPS, False),
    (stability.GD_TRACE_ABOVE, 1.0, 1.0 + EPS, 1.0 - EPS, False),
    (stability.GD_LMAX_AT_EDGE, 1.15, 1.15 - EPS, 1.15 + EPS, True),
])
def test_single_value_rules(rule, at, inside, outside, held_at):
    assert rule([at]) is held_at and rule([inside]) and not rule([outside])
    assert rule([inside] * 3) and not rule([inside, outside, inside])  # one failing seed fails the rule
    assert not rule([inside, None]) and not rule([])  # a missing seed (diverged) fails it too


@pytest.mark.parametrize("before, after, held", [
    (0.05, 0.10, True), (0.05 - EPS, 0.10 + EPS, True),  # at and just inside both thresholds
    (0.05 + EPS, 0.5, False), (0.0, 0.10 - EPS, False),  # just outside either
    (None, 0.5, False), (0.0, None, False),  # a side with no updates (no crossing) fails
])
def test_loss_up_rule(before, after, held):
    assert stability.LOSS_UP([[before, after]]) is held
    assert stability.LOSS_UP([[0.0, 0.2], [before, after]]) is held  # the other seed passes: this one decides
    assert not stability.LOSS_UP([[0.0, 0.2], None])


@pytest.mark.parametrize("worst, n, held", [
    (1.0, 2, True), (1.0 - EPS, 3, True),  # at and inside: max ratio ≤ 1 with ≥ 2 converged step sizes
    (1.0 + EPS, 2, False), (0.5, 1, False),  # just outside: ratio above 1, or one converged step size
    (None, 0, False),  # nothing converged
])
def test_sgd_trace_bound_rule(worst, n, held):
    assert stability.SGD_TRACE_BOUND([[worst, n]]) is held
    assert stability.SGD_TRACE_BOUND([[0.3, 4], [worst, n]]) is held
    assert not stability.SGD_TRACE_BOUND([[0.3, 4], None])


# ---------------------------------------------------------------------------------------------
# the experiment on tiny settings


@pytest.fixture(scope="module")
def tiny():
    return stability.run(**TINY)


def test_tiny_run_has_every_claim_and_finite_metrics(tiny):
    assert [c.id for c in tiny.claims] == ["edge_of_stability", "loss_non_monotone", "small_step_below_edge",
                                           "sgd_trace_bound", "gd_trace_above_bound", "gd_lmax_at_edge"]
    assert {"eos", "eos_table", "trace", "trace_history", "spectrum"} <= set(tiny.frames)
    assert list(tiny.timing.part) == ["edge of stability", "SGD vs GD traces", "spectrum"]
    trace = tiny.frames["trace"]
    assert len(trace) == 2 * 2  # SGD and GD at two step sizes, one seed
    assert np.isfinite(trace.trace.astype(float)).all() and (trace.trace.astype(float) > 0).all()
    # the trace bounds the top eigenvalue (H ≈ G is positive semidefinite near convergence)
    assert (trace.trace.astype(float) >= trace.lmax.astype(float) * 0.99).all()
    assert str(trace.diverged_at.dtype) == "Int64" and trace.diverged_at.isna().all()
    assert set(tiny.frames["spectrum"].when) == {"step 0", "step 40"}
    for key in ("sgd_trace_ratio@eta=0.05,seed=0", "gd_lmax_ratio@eta=0.1,seed=0", "small_eta_max_ratio@seed=0"):
        assert math.isfinite(tiny.metrics[key])
    assert tiny.metrics["eos_diverged_at@seed=0"] is None


def test_sharpness_probe_tolerance_is_accurate(tiny):
    r = tiny.runs["eos"]
    last = r.history[(r.history.metric == "sharpness") & (r.history.step == 40)].sort_values("run").value.to_numpy()
    exact = top_eigenvalues(r.loss, r.params, k=1, tol=1e-7,
                            max_iter=300).eigenvalues[:, 0].numpy()
    assert np.allclose(last, exact, rtol=2e-3)


def test_charts_build(tiny):
    for chart in (stability.chart(tiny.frames["eos"]), stability.ratio_chart(tiny.frames["eos"]),
                  stability.trace_chart(tiny.frames["trace"]), stability.trace_loss_chart(tiny.frames["trace_history"]),
                  stability.spectrum_chart(tiny.frames["spectrum"], 0.15)):
        assert chart.to_dict()
    assert "2B/η" in str(stability.trace_chart(tiny.frames["trace"], 4).to_dict())
    assert "2B/η" not in str(stability.trace_chart(tiny.frames["trace"]).to_dict())  # B = 1: only 2/η
    assert "no spectrum" in str(stability.spectrum_chart(tiny.frames["spectrum"].iloc[:0], 0.15).to_dict())


def test_explorer_starts_from_member_zero(tiny):
    e = tiny.exploration
    assert e.config == tiny.runs["eos"].configs[0] and e.run is stability.explore
    assert set(e.controls) == {"steps", "loss", "seed"} and e.controls["steps"] is stability.THEME.params["steps"]
    assert set(e.initial.run) == {0} and "sharpness" in set(e.initial.metric)
    assert "2/η = 13.3" in str(stability.chart(e.initial, e.config).to_dict())  # 2/η from the config


def test_divergence_is_reported_not_raised():
    res = stability.run(**{**TINY, "step_size": 60.0})
    assert isinstance(res.metrics["eos_diverged_at@seed=0"], int)
    for c in res.claims_of("edge_of_stability", "loss_non_monotone"):
        assert c.status == DIVERGED and "diverged at step" in c.note and "η = 60, seed 0" in c.note
    assert res.claim("small_step_below_edge").status != DIVERGED  # the small step size is a separate run
    eos = res.frames["eos"]
    assert eos.diverged_at[eos.run == 0].notna().all() and eos.diverged_at[eos.run == 1].isna().all()
    assert "diverged at step" in str(stability.chart(eos).to_dict())  # drawn up to the divergence, and labelled


@pytest.mark.parametrize("change,name", [({"rank": 17}, "rank"), ({"loss": "hinge"}, "loss"),
                                         ({"batch_size": 500}, "batch_size"), ({"target": "odd"}, "target"),
                                         ({"step_size": -0.1}, "step_size"), ({"trace_step_sizes": [0.1]}, "trace_step_sizes"),
                                         ({"n_train": 5000}, "n_train"), ({"spectrum_step": 41}, "spectrum_step"),
                                         ({"sharpness_every": 41}, "sharpness_every"), ({"seeds": 0}, "seeds")])
def test_bad_inputs_name_the_parameter(change, name):
    with pytest.raises(ConfigError, match=name):
        stability.run(**{**TINY, **change})


def test_declared_defaults_build_valid_configs():
    assert stability.THEME.validate({}) == stability.THEME.defaults()
    assert stability.config().step_size == stability.THEME.params["step_size"].default


def test_trace_config_maps_ce_to_logistic_for_the_scalar_target():
    assert stability.trace_config(loss="ce", target="parity").loss == "logistic"
    assert stability.trace_config(loss="ce", target="class").loss == "ce"
    c = stability.trace_config(steps=400)
    assert (c.width, c.depth, c.n_train, c.eval_every, c.data_options) == (32, 1, 200, 10, {"target": "parity"})
    data = make_dataset("digits", 200, target="parity")
    assert data.output_dim == 1 and set(data.y_train.flatten().tolist()) == {-1.0, 1.0}


def test_presets_apply_and_the_learned_view_draws_lambda_max_against_two_over_eta(tiny, presets_apply):
    e = tiny.exploration
    assert e.learned is stability.learned_chart and "edge_ratio" in set(e.initial.metric)
    ratio = e.initial[e.initial.metric == "edge_ratio"].value.to_numpy()
    sharp = e.initial[e.initial.metric == "sharpness"].value.to_numpy()
    assert np.allclose(ratio, sharp * e.config.step_size / 2)
    assert "λ_max against 2/η" in str(stability.learned_chart(e.initial, e.config).to_dict())
    assert "first evaluation" in str(stability.learned_chart(e.initial.iloc[:0], e.config).to_dict())
    presets_apply(tiny)
    run = stability.explore(e.config.replace(steps=20, eval_every=10))
    assert "edge_ratio" in set(run.history.metric)

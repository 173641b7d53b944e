"""T1 · Stability: metric functions on hand-computed examples, and the experiment on tiny settings."""
import math

import numpy as np
import pytest
import torch

from reglab import ConfigError, RunConfig, train
from reglab.curvature import gauss_newton_trace, top_eigenvalues
from reglab.data import make_dataset
from reglab.experiments import stability
from reglab.models import MLP

TINY = dict(steps=40, n_train=100, width=16, sharpness_every=10, trace_step_sizes=[0.05, 0.1], sgd_epochs=1,
            gd_steps=40, seeds=1, progress=False)


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


def test_converged():
    assert stability.converged(0.05, 0.5, None)
    assert not stability.converged(0.2, 0.5, None)  # 40 % of the initial loss
    assert not stability.converged(0.01, 0.5, 85)  # diverged
    assert not stability.converged(float("nan"), 0.5, None)


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
# the experiment on tiny settings


@pytest.fixture(scope="module")
def tiny():
    return stability.run(**TINY)


def test_tiny_run_has_every_claim_and_finite_metrics(tiny):
    assert len(tiny.claims) == 6
    assert {"eos", "eos_table", "trace", "trace_history", "spectrum", "timing"} <= set(tiny.frames)
    trace = tiny.frames["trace"]
    assert len(trace) == 2 * 2  # SGD and GD at two step sizes, one seed
    assert np.isfinite(trace.trace.astype(float)).all() and (trace.trace.astype(float) > 0).all()
    # the trace bounds the top eigenvalue (H ≈ G is positive semidefinite near convergence)
    assert (trace.trace.astype(float) >= trace.lmax.astype(float) * 0.99).all()
    assert set(tiny.frames["spectrum"].when) == {"step 0", "step 40"}
    for key in ("sgd_trace_ratio@eta=0.05,seed=0", "gd_lmax_ratio@eta=0.1,seed=0", "small_eta_max_ratio@seed=0"):
        assert math.isfinite(tiny.metrics[key])


def test_sharpness_probe_tolerance_is_accurate(tiny):
    r = tiny.runs["eos"]
    last = r.history[(r.history.metric == "sharpness") & (r.history.step == 40)].sort_values("run").value.to_numpy()
    exact = top_eigenvalues(stability.member_loss(r.model, r.data, "mse"), r.params, k=1, tol=1e-7,
                            max_iter=300).eigenvalues[:, 0].numpy()
    assert np.allclose(last, exact, rtol=2e-3)


def test_charts_build(tiny):
    for chart in (stability.chart(tiny.frames["eos"]), stability.ratio_chart(tiny.frames["eos"]),
                  stability.trace_chart(tiny.frames["trace"], 4), stability.trace_loss_chart(tiny.frames["trace_history"]),
                  stability.spectrum_chart(tiny.frames["spectrum"], 0.15)):
        spec = chart.to_dict()
        assert spec
    assert "2B/η" in str(stability.trace_chart(tiny.frames["trace"], 4).to_dict())
    frame = stability.member_frame(tiny, 0)
    assert set(frame.run) == {0} and "sharpness" in set(frame.metric)
    stability.chart(frame, stability.config(steps=40)).to_dict()  # the explorer's view: 2/η from the config


def test_divergence_is_reported_not_raised():
    res = stability.run(**{**TINY, "step_size": 60.0})
    assert res.metrics["eos_diverged_at@seed=0"] is not None
    first = res.claims[0]
    assert not first.held and "diverged at step" in first.note
    eos = res.frames["eos"]
    d = eos.diverged_at[eos.run == 0].iloc[0]
    assert math.isfinite(d)
    spec = str(stability.chart(eos).to_dict())
    assert "diverged at step" in spec  # drawn up to the divergence, and labelled


@pytest.mark.parametrize("change,name", [({"rank": 17}, "rank"), ({"loss": "hinge"}, "loss"),
                                         ({"batch_size": 500}, "batch_size"), ({"target": "odd"}, "target"),
                                         ({"step_size": -0.1}, "step_size"), ({"trace_step_sizes": [0.1]}, "trace_step_sizes"),
                                         ({"n_train": 5000}, "n_train"), ({"spectrum_step": 41}, "spectrum_step")])
def test_bad_inputs_name_the_parameter(change, name):
    with pytest.raises(ConfigError, match=name):
        stability.run(**{**TINY, **change})


def test_trace_config_maps_ce_to_logistic_for_the_scalar_target():
    assert stability.trace_config(loss="ce", target="parity").loss == "logistic"
    assert stability.trace_config(loss="ce", target="class").loss == "ce"
    data = make_dataset("digits", 200, target="parity")
    assert data.output_dim == 1 and set(data.y_train.flatten().tolist()) == {-1.0, 1.0}

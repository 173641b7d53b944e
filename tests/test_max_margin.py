"""Max-margin implicit bias (theme 07): margin metrics on hand examples, the exact SVM against hand
solutions and scikit-learn, separability detection, the λ > 0 minimizer, every claim rule at its
thresholds, and the experiment on a tiny setting."""
import math

import numpy as np
import pytest
import torch

from reglab import ConfigError, from_arrays, make_dataset, train
from reglab.claims import DIVERGED, HELD, NOT_HELD, key
from reglab.experiments import max_margin as mm
from reglab.metrics import margins as mg


def test_margins_and_angles_on_hand_examples():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]])
    y = torch.tensor([[1.0], [1.0], [-1.0]])
    w = torch.tensor([[1.0, 1.0], [1.0, -1.0]])  # two members
    torch.testing.assert_close(mg.margins(w, x, y), torch.tensor([[1.0, 2.0, 2.0], [1.0, -2.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(mg.normalized_margin(w, x, y), torch.tensor([1 / math.sqrt(2), -2 / math.sqrt(2)], dtype=torch.float64))
    ref = torch.tensor([1.0, 0.0])
    torch.testing.assert_close(mg.one_minus_cos(w, ref), torch.full((2,), 1 - 1 / math.sqrt(2), dtype=torch.float64))
    torch.testing.assert_close(mg.angle_degrees(w, ref), torch.full((2,), 45.0, dtype=torch.float64))
    # a linear model's W0 ([M, d, 1] as stored, or [M, 1, d]) reads as [M, d]; a tiny angle has no cancellation
    tiny = torch.tensor([[[1.0], [1e-6]]], dtype=torch.float64)
    assert float(mg.one_minus_cos(tiny, ref)) == pytest.approx(0.5e-12, rel=1e-6)
    assert float(mg.one_minus_cos(tiny.mT, ref)) == pytest.approx(0.5e-12, rel=1e-6)
    with pytest.raises(ValueError):
        mg.margins(w, x, torch.tensor([0.0, 1.0, 2.0]))


def test_svm_on_a_hand_solved_example():
    # +1 at (1, 1) and (1, −1), −1 at (−2, 0.5): the widest separator through 0 is w = (1, 0), margin 1
    x = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-2.0, 0.5]])
    y = torch.tensor([1.0, 1.0, -1.0])
    s = mg.svm(x, y)
    assert s.separable
    torch.testing.assert_close(s.w, torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert s.margin == pytest.approx(1.0) and s.support == [0, 1]
    torch.testing.assert_close(s.w, (s.alpha[:, None] * y[:, None].double() * x.double()).sum(0))  # w = Σ α y x


def test_svm_matches_scikit_learn_and_satisfies_kkt():
    from sklearn.svm import LinearSVC

    data = make_dataset("separable", n_train=60, seed=3, d=6, margin=0.1)
    s = mg.svm(data.x_train, data.y_train)
    m = mg.margins(s.w, data.x_train, data.y_train)[0]
    assert float(m.min()) == pytest.approx(1.0, abs=1e-9)  # canonical: closest points at margin 1
    assert torch.all(m[s.support] < 1 + 1e-8) and bool((s.alpha >= 0).all())
    ref = LinearSVC(loss="hinge", fit_intercept=False, C=1e5, tol=1e-10, max_iter=1_000_000).fit(
        data.x_train.numpy(), data.y_train[:, 0].numpy())
    assert float(mg.one_minus_cos(torch.tensor(ref.coef_[0]), s.w)) < 1e-8
    # no unit vector beats the SVM margin (a random search)
    g = torch.Generator().manual_seed(0)
    cand = torch.randn(2000, 6, generator=g, dtype=torch.float64)
    assert float(mg.normalized_margin(cand, data.x_train, data.y_train).max()) <= s.margin + 1e-12


def test_non_separable_data_are_detected_and_explained():
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([1.0, 1.0, -1.0])  # (1,0) and (−1,0) cannot both be on the positive side of a plane through 0
    s = mg.svm(x, y)
    assert not s.separable and s.w is None and "not linearly separable" in s.message
    assert mg.separable(x[[0, 2]], y[[0, 2]])[0]


def test_regularized_minimizer_is_stationary_and_matches_engine_gd():
    data = make_dataset("separable", n_train=40, d=5, margin=0.1)
    lam = 0.5
    w = mm.regularized_minimizer(data.x_train, data.y_train, lam).requires_grad_(True)
    z = data.y_train.double() * data.x_train.double()
    obj = torch.nn.functional.softplus(-(z @ w)).mean() + 0.5 * lam * w.dot(w)
    (grad,) = torch.autograd.grad(obj, w)
    assert float(grad.norm()) < 1e-10
    run = train(mm.with_evals(mm.config(weight_decay=lam, steps=600)), progress=False)
    torch.testing.assert_close(run.params["W0"][0, :, 0], w.detach(), rtol=1e-6, atol=1e-8)


def test_probe_follows_gd_toward_the_svm():
    run = mm.explore(mm.config(steps=400))
    h = run.history
    cos = h[h.metric == "one_minus_cos"].set_index("step")["value"]
    ratio = h[h.metric == "margin_ratio"]["value"]
    assert cos.iloc[-1] < cos.loc[cos.index >= 10].iloc[0] and float(ratio.max()) <= 1 + 1e-9
    data = mm.dataset(mm.config())
    svm = mg.svm(data.x_train, data.y_train)
    assert repr(mm.MarginProbe(svm)) == f"MarginProbe(svm_margin={round(svm.margin, 12)})"


def test_log_steps_are_log_spaced_evaluated_steps():
    steps = mm.log_steps(np.arange(0, 10_001, 50), count=5)
    assert steps[0] == 50 and steps[-1] == 10_000 and len(steps) <= 5 and set(steps) <= set(range(50, 10_001, 50))
    assert list(mm.log_steps([0, 1, 2, 3], count=5)) == [1, 2, 3]


# ---------------------------------------------------------------------------------------------
# rules: at, just inside and just outside each threshold; one failing or missing seed fails

EPS = 1e-9


@pytest.mark.parametrize("rule, at, inside, outside, held_at", [
    (mm.MINIBATCH_RATE, 3.0, 3.0 - EPS, 3.0 + EPS, False),
    (mm.ANGLE_GROWS, 0.0, EPS, -EPS, False),
])
def test_single_number_rules(rule, at, inside, outside, held_at):
    assert rule(at) is held_at and rule(inside) and not rule(outside) and not rule(None) and not rule(math.nan)


@pytest.mark.parametrize("rule, at, inside, outside, held_at", [
    (mm.MONOTONE, 0, -EPS, 1, True),  # increases of 1 − cos: none allowed
    (mm.RATE_BAND, 3.0, 3.0 - EPS, 3.0 + EPS, False),
    (mm.NORM_MATCH, 0.01, 0.01 - EPS, 0.01 + EPS, False),
    (mm.MARGIN_RATE, 3.0, 3.0 - EPS, 3.0 + EPS, False),
    (mm.LOSS_RISES, 1, 2, 0, True),  # steps that raised the loss, per data draw: at least one
])
def test_per_seed_rules(rule, at, inside, outside, held_at):
    assert rule([inside, at]) is held_at and rule([inside, inside]) and not rule([inside, outside])
    assert not rule([inside, None]) and not rule([])


def test_margin_approach_rule_needs_a_monotone_rise_and_no_overshoot_for_every_seed():
    rule, ok = mm.MARGIN_APPROACH, [0.5, 0.7, 0]  # [at t = 1e2, at the end, decreases from t = 1e2]
    assert rule([ok, [0.5, 0.5 + 1e-6, 0]]) and not rule([ok, [0.5, 0.5, 0]]) and not rule([ok, [0.5, 0.4, 0]])
    assert rule([ok, [0.5, 1.0, 0]]) and rule([ok, [0.5, 1 + 1e-9, 0]]) and not rule([ok, [0.5, 1 + 1e-8, 0]])
    assert not rule([ok, [0.5, 0.7, 1]])  # one decrease between evaluations fails
    assert not rule([ok, None]) and not rule([ok, [0.5, math.nan, 0]]) and not rule([])


def test_converges_rule_needs_no_increase_from_t100_and_a_decrease_for_every_draw():
    rule, ok = mm.CONVERGES, [0, 0.5]  # [increases of 1 − cos from t = 1e2, end / t = 1e2]
    assert rule([ok, [0, 1 - EPS]]) and not rule([ok, [0, 1.0]]) and not rule([ok, [0, 1 + EPS]])
    assert not rule([ok, [1, 0.5]]) and not rule([ok, None]) and not rule([ok, [0, math.nan]]) and not rule([])


def test_separable_rule():
    assert mm.SEPARABLE(True) and not mm.SEPARABLE(False)


# ---------------------------------------------------------------------------------------------
# the experiment


def test_tiny_run_has_every_claim_keyed_metrics_and_an_explorer():
    r = mm.run(steps=200, seeds=2, step_sizes=[10.0], weight_decays=[0.05, 0.2], batch_sizes=[4])
    assert [c.id for c in r.claims] == list(mm.CLAIMS)[1:]
    status = {c.id: c.status for c in r.claims}
    assert status["direction_monotone"] == status["weight_decay_bounded"] == status["angle_grows_with_lambda"] == HELD
    assert status["large_eta_loss_rises"] == HELD and len(r.claim("large_eta_loss_rises").value) == 2  # two slab draws
    steps = r.frames["step_sizes"]
    assert set(steps.data_seed) == {0, 1} and set(steps.label) == {"η = 1", "η = 10"}
    assert r.metrics[key("loss_increases_first_1000", step_size=10.0, data_seed=1)] >= 1
    assert r.metrics["separable"] and 0 < r.metrics["margin_ratio_end@seed=1"] <= 1
    assert r.metrics[key("norm_minimizer", weight_decay=0.2)] > 0 and key("one_minus_cos_end", batch_size=4) in r.metrics
    assert all(r.metrics[key("diverged_at", seed=s)] is None for s in (0, 1))
    assert r.claim("angle_grows_with_lambda").value == pytest.approx(
        r.metrics["angle_deg@weight_decay=0.2"] - r.metrics["angle_deg@weight_decay=0.05"])
    assert set(r.frames["history"].group) == {"seeds", "weight decay", "batch size"}
    assert set(r.timings) == {"ensemble", "step sizes (thin slab)", "2-D run", "references"}
    assert mm.chart(r.frames["history"]).to_dict() and mm.sweep_chart(r).to_dict() and mm.boundary_chart(r).to_dict()
    e = r.exploration
    assert e.run is mm.explore and set(e.controls) == {"step_size", "steps", "label_noise", "margin"}
    assert e.controls["label_noise"].field == "data_options.label_noise" and set(e.initial.run) == {0}
    assert e.presets is mm.PRESETS and e.learned is mm.learned
    view = str(mm.learned(e.initial[["run", "step", "metric", "value"]], e.config).to_dict())
    assert "what it learned" in view and "projected from d = 5" in view


def test_the_thin_slab_makes_the_large_step_loss_non_monotone_and_gaussian_data_do_not():
    r = mm.run(steps=1000, seeds=1, step_sizes=[100.0], weight_decays=[], batch_sizes=[])
    assert r.claim("large_eta_loss_rises").held and r.claim("large_eta_direction").held
    assert r.metrics[key("loss_increases_first_1000", step_size=100.0, data_seed=0)] >= 10
    data = make_dataset("separable", n_train=40, d=5, margin=0.1)  # the main data: the first large step separates it
    run = train(mm.with_evals(mm.config(step_size=100.0, steps=1000)), data=data, progress=False)
    losses = run.step_losses[:, 0]
    assert int((losses[1:] > losses[:-1]).sum()) == 0


def test_plane_is_an_orthonormal_view_with_the_svm_first():
    data = make_dataset("separable", n_train=40, d=5, margin=0.1)
    svm = mg.svm(data.x_train, data.y_train)
    basis = mm.plane(data.x_train, svm.w)
    torch.testing.assert_close(basis.T @ basis, torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(basis[:, 0], svm.w / svm.w.norm())
    flat = make_dataset("separable", n_train=20, d=2, margin=0.1)
    b2 = mm.plane(flat.x_train)  # no SVM: principal directions; in d = 2 a rotation of the plane
    torch.testing.assert_close(b2 @ b2.T, torch.eye(2, dtype=torch.float64))
    run = mm.explore(mm.config(steps=200))  # the probe's view coordinates are w projected on the plane
    h = run.history[run.history.step == 200].set_index("metric")["value"]
    w = run.params["W0"][0, :, 0].double() @ mm.plane(run.data.x_train, svm.w)
    assert h["w_par"] == pytest.approx(float(w[0])) and h["w_perp"] == pytest.approx(float(w[1]), abs=1e-12)


def test_presets_apply_in_the_explorer():
    r = mm.run(steps=200, seeds=1, step_sizes=[], weight_decays=[], batch_sizes=[])
    ex = r.explorer(headless=True)
    try:
        for name, preset in mm.PRESETS.items():
            assert ex.apply_preset(name) == [] and preset["question"]
            cfg = ex.config
            assert cfg.step_size == preset["values"]["step_size"] and cfg.steps == preset["values"]["steps"]
            assert cfg.data_options["slab"] == preset["values"]["data_options.slab"], name
            assert cfg.data_options["margin"] == preset["values"]["data_options.margin"], name
    finally:
        ex.close()


def test_label_noise_breaks_separability_and_is_reported_not_crashed():
    r = mm.run(steps=200, seeds=1, label_noise=0.3, step_sizes=[], weight_decays=[], batch_sizes=[])
    assert [(c.id, c.status) for c in r.claims] == [("separable", NOT_HELD)]
    assert "not linearly separable" in r.claims[0].note and r.metrics["norm_end@seed=0"] > 0
    assert not (r.frames["history"].metric == "one_minus_cos").any() and r.frames["lambda_path"].empty
    assert mm.chart(r.frames["history"]).to_dict() and mm.sweep_chart(r).to_dict()  # the normalized margin instead


def test_own_data_and_bad_input():
    x = torch.tensor([[1.0, 0.2], [0.8, -0.1], [-1.0, 0.3], [-0.7, -0.4]])
    y = torch.tensor([[1.0], [1.0], [-1.0], [-1.0]])
    r = mm.run_on(from_arrays(x, y, task="binary"), steps=200, seeds=1, step_sizes=[], weight_decays=[], batch_sizes=[])
    assert r.metrics["separable"] and "picture" not in r.runs and r.exploration is None
    assert mm.boundary_chart(r).to_dict()  # says there is no picture
    with pytest.raises(ConfigError, match="binary"):  # class ids are not ±1 labels
        mm.run_on(from_arrays(x, torch.tensor([0, 1, 0, 1])), steps=200)
    with pytest.raises(ConfigError, match="'steps'"):
        mm.run(steps=50)  # fewer steps than the rate window needs
    with pytest.raises(ConfigError, match="batch"):
        mm.run(steps=200, batch_sizes=[100])  # batch > n
    with pytest.raises(ConfigError, match="'step_size'"):
        mm.run(steps=200, step_size=-1.0)
    with pytest.raises(ConfigError, match="'weight_decays'"):
        mm.run(steps=200, weight_decays=[0.0])


def test_a_diverged_member_makes_its_claims_diverged():
    r = mm.run(steps=200, seeds=1, d=2, margin=0.0, step_sizes=[1e8], weight_decays=[], batch_sizes=[])
    step = r.metrics[key("diverged_at", step_size=1e8, data_seed=0)]
    assert step is not None and r.claim("large_eta_direction").status == DIVERGED and r.claim("log_rate").held
    assert f"diverged at step {step}" in r.claim("large_eta_loss_rises").note
    assert mm.sweep_chart(r).to_dict()  # drawn up to the divergence

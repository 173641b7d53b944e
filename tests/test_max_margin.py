"""Max-margin implicit bias (theme 07): margin metrics on hand examples, the exact SVM against hand
solutions and scikit-learn, separability detection, the λ > 0 minimizer, and the experiment on a tiny
setting."""
import math

import numpy as np
import pytest
import torch

from reglab import ConfigError, from_arrays, make_dataset, train
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
    # a linear model's W0 ([M, 1, d] as stored, or [M, d, 1]) reads as [M, d]; a tiny angle has no cancellation
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
    torch.testing.assert_close(run.params["W0"][0, 0], w.detach(), rtol=1e-6, atol=1e-8)


def test_probe_follows_gd_toward_the_svm():
    cfg = mm.config(steps=400)
    data = mm._dataset(cfg)
    svm = mm.reference(data)
    run = train(mm.with_evals(cfg), data=data, probes=[mm.MarginProbe(svm)], progress=False)
    h = run.history
    cos = h[h.metric == "one_minus_cos"].set_index("step")["value"]
    ratio = h[h.metric == "margin_ratio"]["value"]
    assert cos.iloc[-1] < cos.loc[cos.index >= 10].iloc[0] and float(ratio.max()) <= 1 + 1e-9
    assert "MarginProbe(svm_margin=" in repr(mm.MarginProbe(svm))


def test_log_steps_and_monotone_helpers():
    steps = mm.log_steps(np.arange(0, 10_001, 50), count=5)
    assert steps[0] == 50 and steps[-1] == 10_000 and len(steps) <= 5
    import pandas as pd

    assert mm.monotone_decreasing(pd.Series([3.0, 2.0, 2.0, 1.0])) == (True, 0)
    assert mm.monotone_decreasing(pd.Series([3.0, 2.5, 2.7, 1.0])) == (False, 1)
    assert mm.spread(pd.Series([0.5, 1.0, 1.5])) == pytest.approx(3.0)
    losses = torch.tensor([[1.0], [0.5], [0.7], [0.2]])
    assert mm.loss_increases(losses, 0, 4) == 1


def test_tiny_run_has_the_claims_for_every_part():
    r = mm.run(steps=200, seeds=2, step_sizes=[10.0], weight_decays=[0.05, 0.2], batch_sizes=[4])
    names = [c.claim for c in r.claims]
    assert names[0].startswith("1 − cos(w_t, w_SVM) decreases monotonically")
    assert any("weight decay" in n or "λ > 0" in n for n in names) and any("mini-batch" in n for n in names)
    assert r.metrics["separable"] and 0 < r.metrics["margin_ratio_end_s0"] <= 1
    assert r.claims[0].held  # 1 − cos falls at every evaluation
    lam = next(c for c in r.claims if c.claim.startswith("with λ > 0"))
    assert lam.held  # 200 steps at λ ≥ 0.05 reach the regularized minimizer's norm
    assert set(r.frames["history"].group) == {"seeds", "step size", "weight decay", "batch size"}
    assert mm.chart(r.frames["history"]).to_dict() and mm.sweep_chart(r).to_dict()
    assert mm.boundary_chart(r.frames["picture"]).to_dict()


def test_label_noise_breaks_separability_and_is_reported_not_crashed():
    r = mm.run(steps=200, seeds=1, label_noise=0.3, step_sizes=[], weight_decays=[], batch_sizes=[])
    assert not r.metrics["separable"] and len(r.claims) == 1 and not r.claims[0].held
    assert "not linearly separable" in r.claims[0].note
    assert not (r.frames["history"].metric == "one_minus_cos").any()
    assert mm.chart(r.frames["history"]).to_dict()  # draws the normalized margin instead


def test_own_data_and_bad_input():
    x = torch.tensor([[1.0, 0.2], [0.8, -0.1], [-1.0, 0.3], [-0.7, -0.4]])
    y = torch.tensor([[1.0], [1.0], [-1.0], [-1.0]])
    r = mm.run(steps=200, seeds=1, step_sizes=[], weight_decays=[], batch_sizes=[],
               data=from_arrays(x, y, task="binary"))
    assert r.metrics["separable"] and r.frames["picture"] is None
    with pytest.raises(ConfigError):  # class ids are not ±1 labels
        mm.run(steps=200, data=from_arrays(x, torch.tensor([0, 1, 0, 1])))
    with pytest.raises(ConfigError):
        mm.run(steps=50)  # fewer steps than the rate window needs
    with pytest.raises(ConfigError):
        mm.run(steps=200, batch_sizes=[100])  # batch > n
    with pytest.raises(ConfigError):
        mm.run(steps=200, step_size=-1.0)

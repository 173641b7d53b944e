"""Theme 02 (SGD noise): metric functions on hand-computed examples, the exact full-batch data set, the
claim rules at their thresholds, and the experiment's pieces on tiny settings."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from reglab.claims import DIVERGED, HELD
from reglab.config import ConfigError
from reglab.engine import train
from reglab.experiments import sgd_noise as sn

EPS = 1e-9
TINY = dict(steps=30, n_train=200, k=2, d=6, seeds=2, batch_sizes=[32, 1], sweep_step_sizes=[0.1, 0.2],
            sweep_batch_sizes=[1, 2], alphas=[0.1, 10.0], temperatures=[1e-3], alpha_width=8, alpha_n_train=60,
            alpha_steps=20)


def test_input_and_irrelevant_norms_by_hand():
    w0 = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [3.0, 4.0]]])  # [M=1, d=3, width=2]
    assert sn.input_norms(w0).tolist() == [[1.0, 0.0, 5.0]]
    assert sn.irrelevant_norm(w0, k=1).item() == pytest.approx(5.0)
    assert sn.relevant_norm(w0, k=1).item() == pytest.approx(1.0)
    assert sn.irrelevant_norm(w0, k=2).item() == pytest.approx(5.0)


def test_relative_change_by_hand():
    init = {"W0": torch.tensor([[[3.0, 0.0]]]), "W1": torch.tensor([[[0.0], [4.0]]])}  # ‖θ₀‖ = 5
    params = {"W0": torch.tensor([[[3.0, 3.0]]]), "W1": torch.tensor([[[4.0], [4.0]]])}  # diff (0,3),(4,0): 5
    assert sn.relative_change(params, init).item() == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# claim rules: at, just inside and just outside each threshold; one failing or missing seed fails


def test_strictly_decreasing_needs_every_seed():
    rule = sn.STRICTLY_DECREASING  # per seed: irrelevant norms at GD, then ever smaller B
    assert rule([[1.8, 1.6, 1.3], [1.8, 1.8 - EPS]])
    assert not rule([[1.8, 1.6, 1.3], [1.8, 1.8]])  # equal is not a decrease
    assert not rule([[1.8, 1.6, 1.3], [1.8, 1.8 + EPS]])  # one failing seed
    assert not rule([[1.8, 1.6, 1.3], [1.8, math.nan]]) and not rule([[1.8, None]]) and not rule([])


@pytest.mark.parametrize("rule, t", [(sn.HALF_OF_GD, 0.5), (sn.GD_KEEPS_NORM, sn.GD_DRIFT)])
def test_at_most_rules(rule, t):
    assert rule([t, 0.0]) and rule([t - EPS]) and not rule([t + EPS])
    assert not rule([0.0, t + EPS, 0.0])  # one failing seed
    assert not rule([0.0, None]) and not rule([0.0, math.nan])  # a missing (diverged) seed


def test_lazy_regime_is_small_and_non_decreasing_in_t():
    rule, t = sn.LAZY_REGIME, sn.LAZY_LIMIT
    assert rule([[0.02, t - EPS], [0.03, 0.03]])  # flat counts as non-decreasing
    assert not rule([[0.02, t]]) and not rule([[0.02, t + EPS]])  # strictly below the limit
    assert not rule([[0.05, 0.04]])  # decreasing in T
    assert not rule([[0.02, 0.03], [0.05, 0.04]])  # one failing seed
    assert not rule([[0.02, math.nan]]) and not rule([[0.02, None]]) and not rule([[]]) and not rule([])


def test_feature_regime_ratio():
    rule, t = sn.FEATURE_REGIME, sn.FEATURE_FACTOR
    assert rule([t, 20.0]) and rule([t + EPS]) and not rule([t - EPS])
    assert not rule([20.0, t - EPS]) and not rule([20.0, math.nan])


# ---------------------------------------------------------------------------------------------
# data and training


def test_reference_data_recipe():
    data = sn.sparse_support_data(n_train=200, d=6, k=2, label_noise=1e-3, seed=3, n_test=50)
    x, y = data.x_train.double(), data.y_train.double()
    half = len(x) // 2
    assert torch.equal(x[:half], x[half:])  # every point twice
    assert torch.allclose(x[:half, 2:].mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-6)  # centred irrelevant
    mean_label = (y[:half] + y[half:]) / 2  # ± ε cancels: the teacher of ones on the first k inputs
    assert torch.allclose(mean_label.squeeze(1), x[:half, :2].sum(1), atol=1e-5)
    assert float((y[:half] - y[half:]).abs().max()) < 0.01
    assert torch.allclose(data.y_test.squeeze(1), data.x_test[:, :2].sum(1), atol=1e-5)
    assert data.info["k"] == 2 and data.x_test.shape == (50, 6)
    with pytest.raises(ConfigError, match="'k'"):
        sn.sparse_support_data(d=5, k=5)


def test_full_batch_equivalent_preserves_loss_and_gd_trajectory():
    data = sn.sparse_support_data(n_train=400, d=6, k=2, seed=1, n_test=20)
    small = sn.full_batch_equivalent(data)
    assert small.x_train.shape == (7, 6)
    w = torch.randn(6, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    loss = lambda d: 0.5 * ((d.x_train.double() @ w - d.y_train.double()) ** 2).mean()
    assert float(loss(small)) == pytest.approx(float(loss(data)), rel=1e-5)
    cfg = sn.config(step_size=0.2, batch_size=None, k=2, d=6, n_train=400, steps=30, width=5)
    a = train(cfg, data=data, probes=[sn.support_probe(2)], progress=False)
    b = train(cfg, data=small, probes=[sn.support_probe(2)], progress=False)
    fa, fb = a.summary.iloc[0], b.summary.iloc[0]
    assert fb["irrelevant_norm"] == pytest.approx(fa["irrelevant_norm"], rel=1e-4)
    assert fb["train_loss"] == pytest.approx(fa["train_loss"], rel=1e-3)


def test_groups_balance_padding_against_overhead():
    sizes = [1, 2, 4, 8, 16] * 8 + [32, 64] * 8 + [256] * 3 + [None] * 4
    cfgs = [sn.config(batch_size=b) for b in sizes]
    groups = sn._groups(cfgs, 10_000)
    assert sorted(i for g in groups for i in g) == list(range(len(cfgs)))  # every member exactly once
    assert [sorted({cfgs[i].batch_size for i in g}, key=lambda b: b or 0) for g in groups] == [
        [1, 2, 4, 8, 16], [32, 64], [256], [None]]  # full batch alone, last
    # a few members of very different sizes are cheaper padded together than as separate ensembles
    few = [sn.config(batch_size=b, n_train=1000) for b in (256, 1, None, 32, 2)]
    assert [[few[i].batch_size for i in g] for g in sn._groups(few, 1000)] == [[1, 2, 32, 256], [None]]


def test_iso_temperature_pairs():
    cells = pd.DataFrame({"step_size": [0.1, 0.2, 0.2], "batch_size": [16, 32, 16], "irrelevant_norm": [1.8, 0.9, 0.5]})
    cells["temperature"] = cells.step_size / cells.batch_size
    pairs = sn.iso_temperature_pairs(cells)
    assert len(pairs) == 1
    assert pairs.iloc[0].ratio == pytest.approx(2.0)
    assert pairs.iloc[0].b_small == 16 and pairs.iloc[0].b_large == 32
    assert list(pairs.columns) == ["eta_small", "b_small", "norm_small", "eta_large", "b_large", "norm_large",
                                   "temperature", "ratio"]


def test_train_support_mixes_batch_sizes_and_keeps_member_order():
    cfgs = [sn.config(step_size=0.3, batch_size=b, k=2, d=6, n_train=200, steps=40, width=5) for b in (None, 1, 64)]
    frame = sn.train_support(cfgs, progress=False)
    assert sorted(frame.run.unique()) == [0, 1, 2]
    assert {f"in{j}" for j in range(6)} <= set(frame.metric)
    assert str(frame.diverged_at.dtype) == "Int64" and frame.diverged_at.isna().all()
    final = frame[frame.step == 40].pivot(index="run", columns="metric", values="value")
    # the probe's irrelevant norm is the norm of the irrelevant inputs' rows
    rows = final[[f"in{j}" for j in range(2, 6)]].pow(2).sum(1).pow(0.5)
    assert np.allclose(rows.values, final.irrelevant_norm.values, rtol=1e-5)
    # member 1 alone gives the same numbers as inside the mixed call (one generator per member)
    alone = sn.train_support([cfgs[1]], progress=False)
    assert alone[alone.step == 40].set_index("metric").value["irrelevant_norm"] == pytest.approx(
        final.loc[1, "irrelevant_norm"], rel=1e-6)


def test_temperature_sweep_tiny():
    table, hist = sn.temperature_sweep([0.1, 10.0], [1e-3], [0], batch_size=8, width=8, n_train=60, steps=20)
    assert len(table) == 2
    lazy = table[table.alpha == 10.0].iloc[0]
    feature = table[table.alpha == 0.1].iloc[0]
    assert math.isfinite(lazy.rel_change) and lazy.rel_change < feature.rel_change
    assert lazy.step_size == pytest.approx(1e-3 * 8 / 100)
    assert str(table.diverged_at.dtype) == "Int64" and table.trained.all()
    assert {"rel_change", "train_loss"} <= set(hist.metric)


def test_bad_inputs_give_config_errors_naming_the_parameter():
    for bad, name in [(dict(alphas=[-1.0]), "alphas"), (dict(seeds=0), "seeds"), (dict(batch_sizes=[]), "batch_sizes"),
                      (dict(step_size=-0.1), "step_size"), (dict(sweep_batch_sizes=[0]), "sweep_batch_sizes")]:
        with pytest.raises(ConfigError, match=f"'{name}'"):
            sn.run(**bad)
    with pytest.raises(ConfigError, match="batch_size"):
        sn.train_support([sn.config(batch_size=500, n_train=200, k=2, d=6, steps=5)])
    with pytest.raises(ConfigError, match="rank"):
        sn.train_support([sn.config(rank=50, n_train=200, k=2, d=6, steps=5)])
    with pytest.raises(ConfigError, match="batch_size"):  # a bad combination fails before anything trains
        sn.run(**{**TINY, "batch_sizes": [500]})


# ---------------------------------------------------------------------------------------------
# the experiment


@pytest.fixture(scope="module")
def tiny():
    return sn.run(**TINY)


def test_run_tiny_produces_claims_metrics_and_frames(tiny):
    r = tiny
    assert [c.id for c in r.claims] == ["irrelevant_norm_falls_with_b", "smallest_b_halves_gd",
                                        "gd_keeps_irrelevant_norm", "lazy_regime", "feature_regime",
                                        "feature_regime_untrained"]
    assert all(len(c.value) == 2 for c in r.claims[:-1])  # one value per seed
    assert r.claims[-1].status == "informational" and "feature_ratio@T=0.001,seed=1" in r.metrics
    assert r.claim("irrelevant_norm_falls_with_b").value[0] == pytest.approx(
        [r.metrics[f"irrelevant@B={b},seed=0"] for b in ("GD", 32, 1)], abs=1e-4)  # GD, then B from large to small
    assert {"support", "runs", "support_table", "phase", "pairs", "temperature", "temperature_history"} <= set(r.frames)
    assert len(r.frames["phase"]) == 2 * 3  # two η × (B = 1, 2, GD)
    assert r.frames["pairs"].shape[0] == 1  # (0.1, 1) and (0.2, 2) share η/B
    assert {"irrelevant@B=GD,seed=1", "irrelevant@B=32,seed=0", "initial_irrelevant@seed=1",
            "ratio_smallest_B_to_GD@seed=0", "rel_change@alpha=10,T=0.001,seed=1"} <= set(r.metrics)
    assert r.metrics["ratio_smallest_B_to_GD@seed=0"] == pytest.approx(
        r.metrics["irrelevant@B=1,seed=0"] / r.metrics["irrelevant@B=GD,seed=0"], abs=1e-3)
    assert set(r.timings) == {"support and phase diagram", "temperature vs output scale"}
    table = r.frames["support_table"]
    assert list(table.index) == ["initial", "GD", "B=32", "B=1"] and list(table.columns) == ["seed 0", "seed 1"]
    # charts build from the frames
    sn.support_chart(r.frames["support"], seed=0, step_size=0.3, k=2).to_dict()
    sn.phase_chart(r.frames["phase"]).to_dict()
    sn.phase_chart(r.frames["phase"], "test_loss", log_color=True).to_dict()
    sn.collapse_chart(r.frames["phase"]).to_dict()
    sn.temperature_chart(r.frames["temperature"]).to_dict()


def test_exploration_starts_from_the_trained_member_and_declares_its_controls(tiny):
    e = tiny.exploration
    assert e.config.batch_size == 1 and e.config.data_options["k"] == 2
    assert set(e.initial.run) == {0} and "irrelevant_norm" in set(e.initial.metric)
    assert set(e.controls) == {"steps", "seed", "k"} and e.controls["k"].slider == (1, 5)  # k < d = 6
    sn.explore_chart(e.initial, e.config).to_dict()


def test_explorer_trains_support_runs_and_refuses_bad_batch(tiny):
    ex = tiny.explorer(headless=False, debounce=0.01)
    try:
        assert "data_options.k" in ex.extra and (ex.extra["data_options.k"].low, ex.extra["data_options.k"].high) == (1, 5)
        ex.widget
        ex.set(steps=60)
        assert ex.wait(60) and ex.session.current.status == "done"
        assert {"in0", "in5", "irrelevant_norm"} <= set(ex.frame.metric)
        ex.set(batch_size=None)  # full-batch GD through the exact moment data set
        assert ex.wait(60) and ex.session.current.config.batch_size is None
        messages = ex.set(batch_size=1000)
        assert any("batch_size" in m for m in messages)
    finally:
        ex.close()


def test_experiment_3_is_skipped_on_an_empty_list():
    r = sn.run(**{**TINY, "seeds": 1, "alphas": []})
    assert [c.id for c in r.claims] == ["irrelevant_norm_falls_with_b", "smallest_b_halves_gd", "gd_keeps_irrelevant_norm"]
    assert "temperature" not in r.frames and "temperature vs output scale" not in r.timings


def test_diverged_runs_are_reported_not_scored():
    r = sn.run(steps=60, n_train=200, k=2, d=6, seeds=1, step_size=50.0, grad_clip=None, batch_sizes=[1],
               sweep_step_sizes=[50.0], sweep_batch_sizes=[1], alphas=[], temperatures=[])
    runs = r.frames["runs"]
    assert runs.diverged_at.notna().all() and runs.irrelevant_norm.isna().all()
    assert [c.status for c in r.claims] == [DIVERGED] * 3
    assert "diverged at step" in r.claims[1].note and "B=1, seed 0" in r.claims[1].note
    assert math.isnan(r.metrics["irrelevant@B=1,seed=0"])  # no final value after a divergence
    d = sn.phase_chart(r.frames["phase"]).to_dict()  # draws "div." cells
    assert "div." in str(d)
    assert "diverged at step" in str(sn.support_chart(r.frames["support"], seed=0, step_size=50.0, k=2).to_dict())
    assert "diverged at step" in str(sn.explore_chart(r.exploration.initial, r.exploration.config).to_dict())


def test_temperatures_where_the_feature_run_does_not_train_are_reported_not_dropped():
    r = sn.run(**{**TINY, "seeds": 1, "alphas": [0.1, 10.0], "temperatures": [1e-3, 100.0]})
    untrained = r.claim("feature_regime_untrained")
    assert untrained.status == "informational" and untrained.value == [100.0]
    assert "T = 100" in untrained.claim and "diverged at step" in untrained.note
    assert math.isnan(r.metrics["feature_ratio@T=100,seed=0"]) and r.metrics["feature_untrained_temperatures"] == 1
    feature = r.claim("feature_regime")
    assert "not at T = 100" in feature.claim and "T = 100: did not train" in feature.note
    assert feature.value == [r.metrics["feature_ratio@T=0.001,seed=0"]]  # scored where it trains


def test_learned_view_and_presets(tiny, presets_apply):
    e = tiny.exploration
    assert set(e.presets) >= {"B = 1", "full batch"} and e.learned is sn.learned_chart
    d = str(sn.learned_chart(e.initial, e.config).to_dict())
    assert "relevant" in d and "irrelevant" in d
    assert "first evaluation" in str(sn.learned_chart(e.initial.iloc[:0], e.config).to_dict())
    two = pd.concat([e.initial.assign(label="B=1"), e.initial.assign(label="GD")])
    assert "row" in sn.learned_chart(two, e.config).to_dict()["encoding"]
    presets_apply(tiny)


def test_a_held_claim_keeps_its_value(tiny):
    c = tiny.claim("gd_keeps_irrelevant_norm")
    assert (c.status == HELD) == all(v <= sn.GD_DRIFT for v in c.value)

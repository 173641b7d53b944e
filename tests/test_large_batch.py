"""T10 (large batches): the claim rules at their thresholds, the explorer's budget arithmetic, and the
experiment end to end on tiny settings."""
import math

import pytest
import torch

from reglab import ConfigError, RunConfig, make_dataset
from reglab.claims import DIVERGED, HELD, INFO, NOT_HELD
from reglab.experiments import large_batch as lb

EPS = 1e-9
TINY = dict(epochs=2, width=16, small_batch=40, large_batch=400, ghost_batch=40, seeds=2)


# ---------------------------------------------------------------------------------------------
# rules


def test_gap_rule_needs_every_seed_above_zero():
    assert lb.LARGE_BATCH_GAP([EPS, 12.0]) and not lb.LARGE_BATCH_GAP([0.0, 12.0])
    assert not lb.LARGE_BATCH_GAP([-EPS, 12.0]) and not lb.LARGE_BATCH_GAP([12.0, None])


def test_gap_closed_rule_at_half():
    assert lb.GAP_CLOSED([0.5, 1.1]) and lb.GAP_CLOSED([0.5 + EPS, 0.9])
    assert not lb.GAP_CLOSED([0.5 - EPS, 1.1]) and not lb.GAP_CLOSED([1.1, None])


def test_keskar_rule_skips_seeds_that_do_not_fit_and_needs_one_that_does():
    rule = lb.KESKAR_SHARPER
    assert rule([1 + EPS, None]) and rule([3.0, 12.0])
    assert not rule([1.0, None]) and not rule([1 - EPS, 5.0]) and not rule([5.0, 1 - EPS])
    assert not rule([None, None]) and not rule([])


def test_tracks_loss_rule_compares_the_two_correlations():
    rule = lb.TRACKS_LOSS
    assert rule([0.8, 0.8 - EPS]) and not rule([0.8, 0.8]) and not rule([0.8, 0.8 + EPS])
    assert not rule([None, 0.1]) and not rule([0.5]) and not rule([0.5, math.nan])


def test_closed_fraction_and_spearman():
    assert lb._closed(0.7, 0.5, 0.6) == pytest.approx(0.5)
    assert lb._closed(0.7, 0.5, 0.75) == pytest.approx(1.25)
    assert lb._closed(0.5, 0.5, 0.6) is None and lb._closed(0.5, 0.6, 0.6) is None and lb._closed(0.7, None, 0.6) is None
    assert lb._spearman([1, 2, 3, 4], [10, 20, 25, 100]) == pytest.approx(1.0)
    assert lb._spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert lb._spearman([1, 2], [1, 2]) is None


# ---------------------------------------------------------------------------------------------
# budgets and evaluation


def test_steps_and_the_explorer_options():
    assert lb.steps_for(20, 40, 4000) == 2000 and lb.steps_for(20, 1000, 4000) == 80 and lb.steps_for(1, 8000, 4000) == 1
    base = lb.config(0.03, 1000).replace(data_options={"small_batch": 40, "epochs": 20, "scale_step": True,
                                                        "budget": "epochs"})
    cfg = lb.effective(base, 4000)
    assert cfg.step_size == pytest.approx(0.15) and cfg.steps == 80 and cfg.data_options == {}
    cfg = lb.effective(base.replace(data_options={**base.data_options, "scale_step": False, "budget": "updates"}), 4000)
    assert cfg.step_size == pytest.approx(0.03) and cfg.steps == 2000 and cfg.eval_every == 2000 // lb.EVALS


def test_full_statistics_probe_evaluates_a_ghost_run_like_plain_batchnorm():
    data = make_dataset("digits", 256)
    cfg = RunConfig(data="digits", n_train=256, width=16, depth=1, batchnorm=True, batch_size=64, ghost_batch=8,
                    steps=3, eval_every=3)
    from reglab import train
    ghost = train(cfg, data=data, probes=[lb.FullStatistics()], progress=False)
    plain = lb.plain_model(ghost, ghost.data)
    acc = (plain(ghost.params, ghost.data.x_test).argmax(-1) == ghost.data.y_test).float().mean(-1)
    assert ghost.summary.test_acc[0] == pytest.approx(float(acc[0]))
    raw = train(cfg, data=data, progress=False)  # the engine's own evaluation: ghost batches of 8
    assert torch.equal(raw.params["W0"], ghost.params["W0"])  # the probe only evaluates
    assert raw.summary.train_loss[0] != pytest.approx(ghost.summary.train_loss[0])  # 256 = 32 ghost batches


def test_bad_batch_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="'large_batch'.*greater than small_batch \\(40\\). Got 40"):
        lb.run(**{**TINY, "large_batch": 40})
    with pytest.raises(ConfigError, match="'ghost_batch'.*divide the batch size \\(400\\). Got 30"):
        lb.run(**{**TINY, "ghost_batch": 30})
    with pytest.raises(ConfigError, match="'large_batch'.*\\[2, 4000\\]. Got 5000"):
        lb.run(**{**TINY, "large_batch": 5000})
    with pytest.raises(ConfigError, match="'seeds'.*Got 0"):
        lb.run(seeds=0)


# ---------------------------------------------------------------------------------------------
# the experiment, tiny


@pytest.fixture(scope="module")
def tiny():
    return lb.run(**TINY)


def test_tiny_run_fills_metrics_claims_and_frames(tiny):
    ids = [c.id for c in tiny.claims]
    assert ids == ["large_batch_gap", "remedy_closes_gap", "remedy_shares", "keskar_sharper_when_both_fit",
                   "sharpness_tracks_train_loss", "remedy_flatter_and_better"]
    assert tiny.claim("remedy_shares").status == INFO and tiny.claim("remedy_flatter_and_better").status == INFO
    assert all(c.status in (HELD, NOT_HELD, INFO) for c in tiny.claims)
    for setting, _ in lb.SETTINGS:
        for s in (0, 1):
            assert 0 <= tiny.metrics[f"test_acc@setting={setting},seed={s}"] <= 1
            assert tiny.metrics[f"sharpness@setting={setting},seed={s}"] > 0
    assert len(tiny.claim("remedy_shares").value) == 3
    final = tiny.frames["final"]
    assert len(final) == 10 and set(final.setting) == {label for _, label in lb.SETTINGS}
    h = tiny.frames["history"]
    remedy, small = h[h.setting == "+ equal updates"], h[h.setting == "small batch"]
    assert remedy.step.max() == small.step.max() == lb.steps_for(2, 40, 4000)  # equal updates
    assert h[h.setting == "large batch"].step.max() == lb.steps_for(2, 400, 4000)
    assert set(tiny.timings) == {"small batch", "large batch, equal epochs", "ghost BN, equal epochs",
                                 "ghost BN, equal updates", "sharpness"}


def test_tiny_charts_and_explorer_frame_draw(tiny):
    for chart in (lb.curves_chart(tiny), lb.ablation_chart(tiny), lb.sharpness_chart(tiny)):
        assert chart.to_dict()
    e = tiny.exploration
    assert e.config.batch_size == 40 and e.config.data_options["small_batch"] == 40 and e.n_train == 4000
    assert set(e.controls) == {"ghost_batch", "epochs", "scale_step", "budget", "seed", "batch_size"}
    assert "sharpness" in set(e.initial.metric)
    assert lb.explore_chart(e.initial.assign(label="B=40", current=True), e.config).to_dict()


def test_explore_trains_one_config_with_final_sharpness():
    cfg = lb.config(0.03, 400, width=16).replace(ghost_batch=40, data_options={
        "small_batch": 40, "epochs": 1, "scale_step": True, "budget": "epochs"})
    r = lb.explore(cfg)
    assert r.configs[0].step_size == pytest.approx(0.03 * math.sqrt(10)) and r.configs[0].steps == 10
    assert r.history[r.history.metric == "sharpness"].step.tolist() == [10]


def test_diverged_runs_are_reported_not_scored():
    r = lb.run(**{**TINY, "seeds": 1, "step_size": 1e4})
    assert r.claim("large_batch_gap").status == DIVERGED and "diverged at step" in r.claim("large_batch_gap").note


def test_explorer_trains_with_its_options_and_refuses_a_ghost_batch_that_does_not_divide(tiny):
    ex = tiny.explorer(headless=False, debounce=0.01)
    try:
        assert {"ghost_batch", "data_options.epochs", "data_options.scale_step", "data_options.budget"} <= set(ex.extra)
        ex.widget
        ex.set(batch_size=400, ghost_batch=40, **{"data_options.epochs": 1})
        assert ex.wait(120) and ex.session.current.status == "done"
        assert "sharpness" in set(ex.frame.metric) and ex.config.data_options["epochs"] == 1
        messages = ex.set(ghost_batch=30)
        assert any("ghost_batch" in m for m in messages)
        lb.explore_chart(ex.frame, ex.config).to_dict()
    finally:
        ex.close()

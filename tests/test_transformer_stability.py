"""Theme 11: transformer training instabilities — claim rules at their thresholds, the LR-sensitivity measure,
the attention probe, the lag-2 Markov task's entropy rate, and the theme on tiny settings."""
import math

import numpy as np
import pytest
import torch

from reglab import ConfigError, make_dataset
from reglab.claims import DIVERGED, INFO
from reglab.experiments import transformer_stability as ts
from reglab.models import build_model

EPS = 1e-9


# ---------------------------------------------------------------------------------------------
# claim rules at, just inside and just outside their thresholds


def test_logits_blow_up_above_1e4_on_every_seed():
    rule = ts.LOGITS_BLOW_UP
    assert rule([1e4 + 1e-3]) and not rule([1e4]) and not rule([1e4 - 1e-3])
    assert not rule([5e5, 9e3]) and not rule([5e5, None]) and not rule([])


def test_loss_stalls_at_half_a_nat_on_every_seed():
    rule = ts.LOSS_STALLS
    assert rule([0.5]) and rule([0.5 + EPS]) and not rule([0.5 - EPS])
    assert not rule([1.2, 0.4]) and not rule([1.2, None]) and not rule([1.2, math.nan])


def test_qk_trains_within_a_tenth_on_every_seed():
    rule = ts.QK_TRAINS
    assert rule([0.1]) and rule([0.1 - EPS]) and not rule([0.1 + EPS])
    assert not rule([0.0, 0.2]) and not rule([0.0, None])


def test_less_sensitive_is_a_ratio_below_one_on_every_seed():
    rule = ts.LESS_SENSITIVE
    assert rule([1.0 - EPS]) and not rule([1.0]) and not rule([1.0 + EPS])
    assert not rule([0.5, 1.1]) and not rule([0.5, None])


def test_drift_prevented_needs_the_drift_without_and_none_with_z_loss():
    rule = ts.DRIFT_PREVENTED
    assert rule([10.0, 10.0 - EPS]) and rule([10.0 + EPS, 0.3])
    assert not rule([10.0 - EPS, 0.3]) and not rule([12.0, 10.0]) and not rule([12.0, None]) and not rule(12.0)


# ---------------------------------------------------------------------------------------------
# LR sensitivity


def test_lr_sensitivity_is_the_mean_capped_loss_minus_the_best():
    assert ts.lr_sensitivity([2.0, 1.5, 3.0], [3.2, 3.2, 3.2]) == pytest.approx((2.0 + 1.5 + 3.0) / 3 - 1.5)
    # a loss above the initial one is capped there; a diverged run (no loss) counts as its initial loss
    assert ts.lr_sensitivity([1.0, 9.0, None], [3.0, 3.0, 3.0]) == pytest.approx((1.0 + 3.0 + 3.0) / 3 - 1.0)
    assert ts.lr_sensitivity([1.0, 1.0], [3.0, 3.0]) == 0.0
    assert ts.lr_sensitivity([1.0], [None]) is None


# ---------------------------------------------------------------------------------------------
# the task and the probe


def test_lag2_markov_entropy_rate_is_the_stationary_mean_row_entropy():
    data = make_dataset("lag2_markov", 2000, vocab=16, context=8, alpha=0.1, n_test=20000)
    P = data.info["transition"]
    pi = np.linalg.matrix_power(P.T, 500)[:, 0]  # the stationary law
    want = -(pi * (P * np.log(P)).sum(1)).sum()
    assert data.info["entropy_rate"] == pytest.approx(want, rel=1e-6)
    assert abs(data.info["bayes_loss"] - data.info["entropy_rate"]) < 0.03  # the true law's held-out loss
    assert data.info["entropy_rate"] < math.log(16) - 0.5  # sparse rows: far more predictable than uniform


def test_attention_probe_matches_the_model():
    cfg = ts.config(vocab=8, context=6, width=16, heads=2, n_train=100, n_test=10, steps=1)
    data = make_dataset(cfg.data, cfg.n_train, cfg.data_seed, **cfg.data_options)
    model = build_model(cfg, data)
    params = model.init([torch.Generator().manual_seed(s) for s in (0, 1)])
    params = {k: v * 30 if k.startswith("attn_qkv") else v for k, v in params.items()}  # large logits
    state = type("State", (), {"model": model, "params": params, "data": data})()
    out = ts.AttentionProbe(n=20)(state)
    logits = model.attention_logits(params, data.x_train[:20])
    want = torch.stack([s.masked_fill(torch.isinf(s), 0).abs().flatten(1).max(1).values for s in logits]).max(0).values
    torch.testing.assert_close(out["max_attn_logit"], want)
    for b in range(2):
        for h in range(2):  # the attention from the last position sums to one over the tokens back
            total = sum(out[f"attn{b}.{h}_back{k}"] for k in range(1, 7))
            torch.testing.assert_close(total, torch.ones(2))
        weights = torch.softmax(logits[b][:, :, h, -1], -1).mean(1)
        torch.testing.assert_close(out[f"attn{b}.{h}_back2"], weights[:, -2])
    y = model(params, data.x_train[:20])
    torch.testing.assert_close(out["output_logit_mean"], y.mean((1, 2)))
    torch.testing.assert_close(out["log_z"], torch.logsumexp(y, -1).mean(1))


def test_config_is_the_papers_recipe():
    cfg = ts.config()
    assert (cfg.model, cfg.bias, cfg.optimizer, cfg.betas, cfg.decay, cfg.lr_schedule) == (
        "transformer", False, "adamw", (0.9, 0.95), "independent", "cosine")
    assert cfg.warmup_steps == 100 and cfg.z_loss == 1e-4 and not cfg.qk_layernorm
    assert ts.config(warmup_steps=500, steps=200).warmup_steps == 200


# ---------------------------------------------------------------------------------------------
# the theme on tiny settings

TINY = dict(steps=30, step_sizes=[1e-3, 0.3, 1.0], n_train=200, n_test=100, seeds=2, drift_step_sizes=[0.3], width=8,
            context=4, vocab=8, warmup_steps=5)
IDS = ["attention_logits_blow_up", "loss_stalls_without_qk_layernorm", "qk_layernorm_trains",
       "lr_sensitivity_lower_with_qk_layernorm", "z_loss_prevents_output_logit_drift"]


@pytest.fixture(scope="module")
def tiny():
    return ts.run(**TINY)


def test_run_returns_every_claim_with_one_ensemble_per_qk_setting(tiny):
    assert [c.id for c in tiny.claims] == IDS
    assert all(len(c.value) == 2 for c in tiny.claims[:4])  # one value per seed
    for name, qk in (("plain", False), ("qk_layernorm", True)):
        r = tiny.runs[name]
        assert len(r.configs) == 3 * 2 and {c.qk_layernorm for c in r.configs} == {qk}
        assert {c.step_size for c in r.configs} == {1e-3, 0.3, 1.0}
    assert set(tiny.timings) == {"sweep, plain attention", "sweep, qk-layernorm", "output-logit runs"}
    assert len(tiny.frames["sweep"]) == 12 and tiny.frames["sweep"]["max_attn_logit"].notna().all()
    # qk-layernorm bounds every logit by √d_head (LayerNorm'd q and k)
    qk = tiny.frames["sweep"].query("qk_layernorm")
    assert (qk.max_attn_logit <= math.sqrt(8 / 2) + 1e-4).all()


def test_metric_keys_have_the_one_format(tiny):
    m = tiny.metrics
    assert "test_loss@attention=qk,eta=0.3" in m and "lr_sensitivity_ratio@seed=0" in m
    assert "log10_max_attn_logit@attention=plain,eta=1" in m
    assert "output_logit_drift@z_loss=0,eta=0.3" in m and "entropy_rate" in m
    assert not [k for k in m if "[" in k or "/" in k]


def test_the_output_logit_claim_is_informational_when_it_does_not_reproduce(tiny):
    c = tiny.claim("z_loss_prevents_output_logit_drift")
    assert len(c.value) == 2
    assert (c.status == INFO) == (not ts.DRIFT_PREVENTED(c.value))
    if c.status == INFO:
        assert "Did not reproduce" in c.note


def test_same_settings_give_the_same_numbers(tiny):
    again = ts.run(**{**TINY, "drift_step_sizes": []})
    for name in ("test_loss@attention=plain,eta=1", "log10_max_attn_logit@attention=qk,eta=0.3", "stall_gap_plain@seed=1"):
        assert again.metrics[name] == tiny.metrics[name]
    assert "z_loss_prevents_output_logit_drift" not in [c.id for c in again.claims]
    assert ts.drift_chart(again.frames["drift"]).to_dict()


@pytest.mark.parametrize("bad, match", [
    (dict(step_size=-0.1), "step_size"),
    (dict(step_sizes=[1e-3]), "step_sizes"),
    (dict(step_sizes=[1e-3, -1.0]), "step_sizes"),
    (dict(z_loss=-1.0), "z_loss"),
    (dict(weight_decay=-1e-4), "weight_decay"),
    (dict(heads=3), "heads"),
    (dict(batch_size=10_000), "batch_size"),
    (dict(context=2), "context"),
    (dict(seeds=0), "seeds"),
    (dict(widht=3), "widht"),
])
def test_bad_input_is_a_clear_config_error(bad, match):
    with pytest.raises(ConfigError, match=match):
        ts.run(**{**TINY, **bad})


def test_divergence_is_reported_not_raised():
    blown = ts.run(**{**TINY, "step_sizes": [1e5, 1e6], "step_size": 1e5, "seeds": 1, "drift_step_sizes": [],
                      "z_loss": 0.0, "warmup_steps": 0})
    sweep = blown.frames["sweep"]
    if sweep.diverged_at.notna().any():  # the claims on diverged runs say where, the charts still draw
        assert any(c.status == DIVERGED and "diverged at step" in c.note for c in blown.claims)
    assert ts.sensitivity_chart(sweep, blown.metrics["entropy_rate"]).to_dict()


def test_charts_build_from_the_frames(tiny):
    f, best = tiny.frames, tiny.metrics["entropy_rate"]
    for chart in (ts.sensitivity_chart(f["sweep"], best, 0.3), ts.curves_chart(f["curves"], f["history"], 0.3, best),
                  ts.curves_chart(f["curves"], f["history"], 0.05, best), ts.attention_chart(f["attention"], 0.3),
                  ts.drift_chart(f["drift"]), ts.chart(tiny.exploration.initial)):
        assert chart.to_dict()
    assert set(f["attention"]["back"]) == {1, 2, 3, 4}


def test_explorer_starts_from_the_sweep_with_the_theme_controls(tiny):
    ex = tiny.explorer(headless=True)
    assert ex.names == ["step_size", "batch_size", "weight_decay", "qk_layernorm", "z_loss", "warmup_steps", "steps"]
    assert ex.config.step_size == 0.3 and not ex.config.qk_layernorm
    ex.run_fn = lambda *args: pytest.fail("the explorer retrained instead of drawing the sweep's member")
    assert ex.static_chart().to_dict()


def test_explorer_run_streams_the_attention_probe():
    cfg = ts.config(**{k: v for k, v in TINY.items() if k in ("steps", "n_train", "n_test", "width", "context",
                                                                "vocab", "warmup_steps")}).replace(eval_every=10)
    run = ts.explore(cfg.replace(qk_layernorm=True))
    metrics = set(run.history.metric)
    assert {"max_attn_logit", "attn0.1_back2", "output_logit_mean", "test_loss"} <= metrics
    assert sorted(run.history.step.unique()) == [0, 10, 20, 30]
    assert ts.chart(run.history, cfg).to_dict()

"""Exercises 11.x: plausible wrong answers fail with the hint that names the mistake, bad input gives a failed
check instead of an exception, and each threshold rule at, just inside and just outside its threshold.
(The solutions passing and the stubs failing are tested for every notebook in tests/test_course.py.)"""
import math

import pytest
import torch

from reglab.engine import train
from reglab.exercises import transformer_stability as ex
from reglab.experiments.transformer_stability import config

EPS = 1e-9


# ---------------------------------------------------------------------------------------------
# threshold rules


def test_blow_up_needs_every_seed_above_1e4():
    rule = ex.BLOWS_UP
    assert rule([1e4 + 1e-3]) and not rule([1e4]) and not rule([1e4 - 1e-3])
    assert not rule([2e5, 9e3]) and not rule([2e5, math.nan]) and not rule([])


def test_bounded_is_at_most_ten_on_every_seed():
    rule = ex.BOUNDED
    assert rule([10.0]) and rule([10.0 - EPS]) and not rule([10.0 + EPS])
    assert not rule([2.8, 1e4]) and not rule([2.8, math.nan])


def test_trains_is_within_three_tenths_of_the_entropy_rate_on_every_seed():
    rule = ex.TRAINS
    assert rule([0.3]) and rule([0.3 - EPS]) and not rule([0.3 + EPS])
    assert not rule([0.1, 0.5]) and not rule([0.1, None])


def test_matches_is_a_relative_error_of_at_most_1e_4():
    rule = ex.MATCHES
    assert rule(1e-4) and rule(1e-4 - EPS) and not rule(1e-4 + EPS) and not rule(math.nan)


# ---------------------------------------------------------------------------------------------
# 11.1: a step size at which the attention logits blow up


def test_a_step_size_where_only_some_seeds_blow_up_fails():
    fb = ex.blowup_step_size(0.3)  # measured: 1.6e4, 2.6e3, 1.7e4, 9.4e3
    assert not fb.passed and "each > 10000" in fb.said and fb.hint == ex.blowup_step_size.hint


def test_a_step_size_so_large_the_loss_diverges_at_once_fails_with_its_hint():
    fb = ex.blowup_step_size(100.0)  # the loss is non-finite by step 10–15, before the first measurement
    assert not fb.passed and "diverged" in fb.said and "too large" in fb.hint


@pytest.mark.parametrize("answer", [-1.0, 0.0, "big", True, [1.0]])
def test_a_bad_step_size_is_a_failed_check(answer):
    fb = ex.blowup_step_size(answer)
    assert not fb.passed and "refused" in fb.said and fb.hint


# ---------------------------------------------------------------------------------------------
# 11.2: settings under which η = 0.3 trains


def test_z_loss_without_qk_layernorm_leaves_the_logits_unbounded():
    fb = ex.stable_settings(False, 1e-2)
    assert not fb.passed and "not q·k" in fb.hint


def test_qk_layernorm_with_a_huge_z_loss_bounds_the_logits_but_does_not_train():
    fb = ex.stable_settings(True, 1.0)  # measured: logits 2.8, loss − entropy rate 0.25–0.50
    assert not fb.passed and "outweighs" in fb.hint


@pytest.mark.parametrize("qk,z", [("yes", 1e-4), (1, 1e-4), (True, -1.0), (True, "small"), (True, math.nan)])
def test_bad_settings_are_a_failed_check(qk, z):
    fb = ex.stable_settings(qk, z)
    assert not fb.passed and "refused" in fb.said and fb.hint


# ---------------------------------------------------------------------------------------------
# 11.3: the largest attention logit from queries and keys


def _logits(q, k):
    return q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5


def _causal(T):
    return torch.ones(T, T, dtype=torch.bool).tril()


def no_mask(q, k):
    return _logits(q, k).abs().max().item()


def no_scale(q, k):
    return (q @ k.transpose(-1, -2)).abs()[..., _causal(q.shape[-2])].max().item()


def signed(q, k):
    return _logits(q, k)[..., _causal(q.shape[-2])].max().item()


def per_window(q, k):
    return _logits(q, k).abs().amax((-1, -2))


@pytest.mark.parametrize("answer,says", [(no_mask, "causal mask"), (no_scale, "√d_head"), (signed, "absolute value"),
                                         (per_window, "tensor of shape [64, 2]")])
def test_a_slip_in_the_max_logit_fails_and_says_which(answer, says):
    fb = ex.max_logit_function(answer)
    assert not fb.passed and says in fb.said + fb.hint


def test_something_that_is_not_a_function_is_a_failed_check():
    fb = ex.max_logit_function(3.0)
    assert not fb.passed and "should be a function" in fb.said


def test_the_queries_and_keys_handed_out_give_reglabs_attention_logits():
    run = train(config(step_size=1.0, seed=0, **dict(ex.SMALL, depth=2, steps=5)), progress=False)
    x = run.data.x_train[:8]
    with torch.no_grad():
        expected = run.model.attention_logits(run.params, x)
    for (q, k), logits in zip(ex.queries_and_keys(run, x), expected):
        T = x.shape[-1]
        ours = _logits(q, k).masked_fill(~_causal(T), float("-inf"))
        torch.testing.assert_close(ours, logits[0], rtol=1e-5, atol=1e-6)

"""The low-rank exercises decide by training: plausible wrong answers fail with a specific hint, bad input fails
without a traceback, and each threshold sits where its constant says. (The solutions pass in test_course.py.)"""
import numpy as np
import pytest

from reglab.exercises import low_rank as ex


def _svd(w, f):
    u, s, vt = np.linalg.svd(w)
    return (u * f(s)) @ vt


@pytest.mark.parametrize("answer,hint", [
    (lambda w, lam: _svd(w, lambda s: np.where(s > lam, s, 0.0)), "hard thresholding"),
    (lambda w, lam: w / (1 + lam), "plain W"),
    (lambda w, lam: _svd(w, lambda s: s - lam), "Clip at zero"),
    (lambda w, lam: np.maximum(np.linalg.svd(w, compute_uv=False) - lam, 0), "vector of singular values"),
], ids=["hard-threshold", "frobenius-shrink", "no-clip", "returns-spectrum"])
def test_soft_threshold_wrong_answers_fail_with_their_hint(answer, hint):
    fb = ex.soft_thresholding(answer)
    assert not fb.passed and hint in fb.hint, str(fb)


@pytest.mark.parametrize("answer,said", [
    (3.0, "not a function"),
    (lambda w, lam: None, "returned None"),
    (lambda w, lam: "W", "not a matrix"),
    (lambda w, lam: 1 / 0, "ZeroDivisionError"),
    (lambda w, lam: np.full_like(w, np.nan), "NaN"),
], ids=["not-callable", "returns-none", "returns-str", "raises", "nan"])
def test_soft_threshold_bad_input_is_a_failed_check(answer, said):
    fb = ex.soft_thresholding(answer)
    assert not fb.passed and said in fb.said and fb.hint, str(fb)


@pytest.mark.parametrize("lam,hint", [(1.0, "Too many"), (3.5, "Too few")])
def test_rank_three_wrong_lambda_fails_with_its_direction(lam, hint):
    fb = ex.rank_three_decay(lam)
    assert not fb.passed and hint in fb.hint, str(fb)
    assert f"kept {5 if lam == 1.0 else 2} singular values" in fb.said


@pytest.mark.parametrize("check", [ex.rank_three_decay, ex.best_test_decay])
@pytest.mark.parametrize("answer", [-1.0, "a lot"])
def test_bad_lambda_is_refused_not_raised(check, answer):
    fb = check(answer)
    assert not fb.passed and "refused" in fb.said and fb.hint


def test_rank_three_diverging_lambda_says_so():
    fb = ex.rank_three_decay(50.0)
    assert not fb.passed and "diverged at step" in fb.said


@pytest.mark.parametrize("lam,hint", [(0.3, "too large"), (0.0, "too small")])
def test_best_decay_wrong_lambda_fails_with_its_direction(lam, hint):
    fb = ex.best_test_decay(lam)
    assert not fb.passed and hint in fb.hint, str(fb)


@pytest.mark.parametrize("rule,at,inside,outside", [
    (ex.MATCHES_TRAINING, 1e-3, 0.99e-3, 1.01e-3),
    (ex.NEAR_BEST, 0.01, 0.0099, 0.0101),
])
def test_threshold_rules(rule, at, inside, outside):
    assert rule(at) and rule(inside) and not rule(outside)
    assert not rule(float("nan")) and not rule(None)


def test_rank_rule_is_exactly_three():
    assert ex.RANK_IS_TARGET(3) and not ex.RANK_IS_TARGET(2) and not ex.RANK_IS_TARGET(4)

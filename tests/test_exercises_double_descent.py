"""Double-descent exercises: plausible wrong answers fail with their hint, bad input gives a failed check (never
an exception), and each threshold rule at, just inside and just outside its threshold. The solutions are run
by tests/test_course.py."""
import math

import numpy as np
import pytest

from reglab.exercises import double_descent as ex

EPS = 1e-9


@pytest.mark.parametrize("rule, at, inside, outside", [
    (ex.IN_THE_PEAK, 30.0, 30.0 + EPS, 30.0 - EPS),  # ridgeless test MSE at N / its lowest
    (ex.NEVER_RISES, 1.05, 1.05 - EPS, 1.05 + EPS),  # largest rise of the fixed ridge from one width to the next
    (ex.NEAR_TUNED, 1.25, 1.25 - EPS, 1.25 + EPS),  # fixed ridge / tuned ridge, worst width
    (ex.READOUT_AGREES, 1e-4, 1e-4 - 1e-12, 1e-4 + 1e-12),  # relative difference of the test predictions
])
def test_rules_at_just_inside_and_just_outside_their_thresholds(rule, at, inside, outside):
    assert rule(at) and rule(inside) and not rule(outside)
    assert not rule(math.nan) and not rule(None)


# ---------------------------------------------------------------------------------------------- 06.1
def test_a_width_past_the_threshold_is_not_the_peak():
    fb = ex.peak_width(4 * ex.N_TRAIN)
    assert not fb.passed and "features to spare" in fb.hint


def test_a_width_below_the_threshold_cannot_interpolate_yet():
    fb = ex.peak_width(np.int64(ex.N_TRAIN // 2))  # a numpy integer is accepted
    assert not fb.passed and "cannot fit all 120 training labels" in fb.hint


@pytest.mark.parametrize("answer", [5, 10 * ex.N_TRAIN + 1, 119.5, "120"])
def test_bad_width_is_refused_with_a_failed_check(answer):
    fb = ex.peak_width(answer)
    assert not fb.passed and "refused" in fb.said


# ---------------------------------------------------------------------------------------------- 06.2
def test_a_ridge_too_weak_keeps_the_peak():
    fb = ex.ridge_without_peak(1e-4)
    assert not fb.passed and "peak is still there" in fb.hint


def test_a_ridge_slightly_too_weak_loses_to_the_tuned_ridge_near_the_threshold():
    fb = ex.ridge_without_peak(1e-3)  # the curve no longer rises 5 %, but near N = n it pays 1.4× the tuned error
    assert not fb.passed and "try a larger λ" in fb.hint


def test_a_ridge_too_strong_costs_accuracy_everywhere():
    fb = ex.ridge_without_peak(0.1)
    assert not fb.passed and "try a smaller λ" in fb.hint


@pytest.mark.parametrize("answer", [0.0, -1e-3, "0.005", math.inf])
def test_bad_lambda_is_refused_with_a_failed_check(answer):
    fb = ex.ridge_without_peak(answer)
    assert not fb.passed and "refused" in fb.said


# ---------------------------------------------------------------------------------------------- 06.3
def test_a_ridge_with_lambda_in_place_of_n_lambda_fails_with_its_hint():
    fb = ex.ridge_readout(lambda Phi, y, lam: np.linalg.solve(Phi.T @ Phi + lam * np.eye(Phi.shape[1]), Phi.T @ y))
    assert not fb.passed and "nλ" in fb.hint


def test_the_ridgeless_read_out_is_recognized():
    fb = ex.ridge_readout(lambda Phi, y, lam: np.linalg.pinv(Phi) @ y)
    assert not fb.passed and "λ is missing" in fb.hint


@pytest.mark.parametrize("answer, said", [
    (lambda Phi, y, lam: np.zeros(5), "one coefficient per feature"),
    (lambda Phi, y, lam: "a", "not an array"),
    (lambda Phi, y, lam: None, "No answer yet"),  # the stub's function body returns None
    (lambda Phi, y, lam: Phi.T @ y @ Phi, "raised ValueError"),  # shapes that do not fit: a failed check
    ("my_ridge", "not a function"),
])
def test_read_outs_of_the_wrong_kind_give_a_failed_check(answer, said):
    fb = ex.ridge_readout(answer)
    assert not fb.passed and said in fb.said and fb.hint

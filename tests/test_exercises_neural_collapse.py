"""Neural-collapse exercises: plausible wrong answers fail with their hint, bad input gives a failed check (never
an exception), and each threshold rule at, just inside and just outside its threshold. The solutions are run
by tests/test_course.py."""
import math

import numpy as np
import pytest

from reglab.exercises import neural_collapse as ex

EPS = 1e-9


def reference_nc1(features, labels):
    classes = np.unique(labels)
    means = np.stack([features[labels == c].mean(0) for c in classes])
    within, between = features - means[np.searchsorted(classes, labels)], means - features.mean(0)
    sigma_w, sigma_b = within.T @ within / len(features), between.T @ between / len(classes)
    return float(np.trace(sigma_w @ np.linalg.pinv(sigma_b)) / len(classes))


@pytest.mark.parametrize("rule, at, inside, outside", [
    (ex.NC1_AGREES, (0.99, 1.01), (0.99 + EPS, 1.01 - EPS), (0.99 - EPS, 1.01 + EPS)),  # yours / reglab's
    (ex.FITS, (1.0,), (1.0 + EPS,), (1.0 - EPS,)),  # training accuracy
    (ex.WD_COLLAPSES_FASTER, (0.25,), (0.25 - EPS,), (0.25 + EPS,)),  # NC1(λ) / NC1(0)
    (ex.DEPTH_COLLAPSE, (0.1,), (0.1 - EPS,), (0.1 + EPS,)),  # NC1(last layer) / NC1(first layer)
])
def test_rules_at_just_inside_and_just_outside_their_thresholds(rule, at, inside, outside):
    assert all(rule(v) for v in at + inside)
    assert not any(rule(v) for v in outside)
    assert not rule(math.nan) and not rule(None)


# ---------------------------------------------------------------------------------------------- 05.1
def test_nc1_that_forgets_to_divide_by_c_fails_with_its_hint():
    fb = ex.nc1_from_class_means(lambda h, y: reference_nc1(h, y) * len(np.unique(y)))
    assert not fb.passed and "ratio 10.0000" in fb.said and "NC1 divides the trace by C" in fb.hint


def test_nc1_with_a_plain_inverse_fails_and_names_the_pseudo_inverse():
    def with_inverse(h, y):
        means = np.stack([h[y == c].mean(0) for c in np.unique(y)])
        within, between = h - means[y], means - h.mean(0)
        sigma_b = between.T @ between / len(means)
        return np.trace(within.T @ within / len(h) @ np.linalg.inv(sigma_b)) / len(means)

    fb = ex.nc1_from_class_means(with_inverse)
    assert not fb.passed and "np.linalg.pinv" in fb.hint


@pytest.mark.parametrize("answer, said", [
    (lambda h, y: np.ones(3), "shape (3,), not one number"),  # one value per something, not one number
    (lambda h, y: 1 / 0, "raised ZeroDivisionError"),  # the student's code fails: a failed check, no traceback
    (3.0, "not a function"),
])
def test_nc1_answers_that_are_not_one_number_give_a_failed_check(answer, said):
    fb = ex.nc1_from_class_means(answer)
    assert not fb.passed and said in fb.said and fb.hint


# ---------------------------------------------------------------------------------------------- 05.2
def test_the_default_weight_decay_is_too_small_for_a_short_run():
    fb = ex.weight_decay_speeds_collapse(5e-4)
    assert not fb.passed and "too small" in fb.hint


def test_a_weight_decay_that_stops_the_network_fitting_fails_with_its_hint():
    fb = ex.weight_decay_speeds_collapse(0.3)
    assert not fb.passed and "no longer fits its training set" in fb.hint


@pytest.mark.parametrize("answer", [-0.01, "0.03", math.nan])
def test_bad_weight_decay_is_refused_with_a_failed_check(answer):
    fb = ex.weight_decay_speeds_collapse(answer)
    assert not fb.passed and "refused" in fb.said


# ---------------------------------------------------------------------------------------------- 05.3
def test_two_layers_collapse_too_little_and_the_hint_gives_the_factor_per_layer():
    fb = ex.depth_for_collapse(np.int64(2))  # a numpy integer is accepted
    assert not fb.passed and "per layer" in fb.hint and "last / first" in fb.said


def test_one_hidden_layer_has_nothing_to_compare():
    fb = ex.depth_for_collapse(1)
    assert not fb.passed and "first layer is the last" in fb.hint


@pytest.mark.parametrize("answer", [0, ex.MAX_DEPTH + 1, 2.5, "4"])
def test_bad_depth_is_refused_with_a_failed_check(answer):
    fb = ex.depth_for_collapse(answer)
    assert not fb.passed and "refused" in fb.said

"""Max-margin exercises (07): plausible wrong answers fail with their specific hint, bad input gives a failed
check (never a traceback), and every threshold rule holds at, just inside and just outside its threshold."""
import math

import pytest

from reglab.exercises import ExerciseFailed
from reglab.exercises import max_margin as ex


def solution(w, x, y):
    return (y * (x @ w)).min() / w.norm()


@pytest.mark.parametrize("rule,threshold,inside,outside,at_passes", [
    (ex.MARGIN_MATCH, 1e-6, 0.9e-6, 1.1e-6, True),
    (ex.ANGLE_TO_SVM, 6.5, 6.49, 6.51, False),
    (ex.FROZEN, 1.2, 1.19, 1.21, False),
    (ex.SETTLED, 0.01, 0.0099, 0.0101, False),
    (ex.NEAR_SVM, 8.0, 7.99, 8.01, False),
])
def test_thresholds(rule, threshold, inside, outside, at_passes):
    assert rule(threshold) is at_passes
    assert rule(inside) and not rule(outside)
    assert not rule(None) and not rule(math.nan)


def test_normalized_margin_catches_the_usual_mistakes():
    assert ex.normalized_margin(solution).passed
    unnormalized = ex.normalized_margin(lambda w, x, y: (y * (x @ w)).min())
    assert not unnormalized.passed and "divide" in unnormalized.hint
    absolute = ex.normalized_margin(lambda w, x, y: (x @ w).abs().min() / w.norm())
    assert not absolute.passed and "never negative" in absolute.hint and "flipped labels" in absolute.said


def test_normalized_margin_refuses_bad_answers_without_a_traceback():
    every = ex.normalized_margin(lambda w, x, y: y * (x @ w) / w.norm())
    assert not every.passed and "40 values" in every.said
    assert not ex.normalized_margin(3.0).passed
    broken = ex.normalized_margin(lambda w, x, y: w @ y)  # shapes [d] and [n] do not multiply
    assert not broken.passed and "raised" in broken.said
    stub = ex.normalized_margin(lambda w, x, y: None)
    assert not stub.passed and "No answer yet" in stub.said


def test_direction_within_says_which_way_to_move_the_step_size():
    slow = ex.direction_within(1.0)  # ~9.2° after 1000 steps: still turning
    assert not slow.passed and "larger η" in slow.hint
    frozen = ex.direction_within(100.0)  # ~15° : the first steps froze the direction
    assert not frozen.passed and "smaller η" in frozen.hint
    for bad in (-1.0, "big", math.nan):
        fb = ex.direction_within(bad)
        assert not fb.passed and "refused" in fb.said


def test_settled_near_svm_separates_speed_from_destination():
    unsettled = ex.settled_near_svm(1.0, 1e-4)  # w_λ is 7.4° away, but 1/(ηλ) = 1e4 steps to get there
    assert not unsettled.passed and "larger η" in unsettled.hint
    too_much = ex.settled_near_svm(30.0, 1e-3)  # settled at w_λ, which is 10.6° away
    assert not too_much.passed and "smaller λ" in too_much.hint
    zero = ex.settled_near_svm(10.0, 0.0)
    assert not zero.passed and "λ > 0" in zero.said
    negative = ex.settled_near_svm(10.0, -1.0)
    assert not negative.passed and "refused" in negative.said


def test_a_wrong_answer_fails_the_graded_cell(monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(ExerciseFailed, match="Hint"):
        ex.settled_near_svm(10.0, 0.0)

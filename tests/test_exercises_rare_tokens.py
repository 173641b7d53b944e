"""Rare-token exercises (08): plausible wrong answers fail with their specific hint, bad input gives a failed
check (never a traceback), and every threshold rule holds at, just inside and just outside its threshold."""
import math

import pytest
import torch

from reglab.exercises import ExerciseFailed
from reglab.exercises import rare_tokens as ex


def per_token_mean(losses, targets, buckets):
    """The plausible mistake: every token counts once, however many examples it has."""
    out = []
    for k in range(4):
        tokens = [t for t in range(len(buckets)) if buckets[t] == k and bool((targets == t).any())]
        out.append(sum(float(losses[targets == t].mean()) for t in tokens) / len(tokens))
    return out


@pytest.mark.parametrize("rule,threshold,inside,outside,at_passes", [
    (ex.BUCKET_MATCH, 1e-4, 0.9e-4, 1.1e-4, True),
    (ex.RARE_RISE, 1.0, 1.01, 0.99, True),
    (ex.FREQUENT_RISE, 0.3, 0.29, 0.31, True),
    (ex.SGD_LEARNS, 0.8, 0.79, 0.81, True),
    (ex.SGD_RARE_RISE, 0.15, 0.16, 0.14, True),
    (ex.SGD_RARE_PAYS_MORE, 0.0, 0.01, -0.01, False),
])
def test_thresholds(rule, threshold, inside, outside, at_passes):
    assert rule(threshold) is at_passes
    assert rule(inside) and not rule(outside)
    assert not rule(None) and not rule(math.nan)


def test_bucket_loss_catches_the_usual_mistakes():
    token = ex.bucket_loss(per_token_mean)
    assert not token.passed and "every token counts once" in token.hint
    summed = ex.bucket_loss(lambda losses, targets, buckets: torch.stack(
        [losses[buckets[targets] == k].sum() for k in range(4)]))
    assert not summed.passed and "summed" in summed.hint


def test_bucket_loss_refuses_bad_answers_without_a_traceback():
    overall = ex.bucket_loss(lambda losses, targets, buckets: losses.mean())
    assert not overall.passed and "returned 1 values" in overall.said
    by_position = ex.bucket_loss(lambda losses, targets, buckets: [losses[buckets == k].mean() for k in range(4)])
    assert not by_position.passed and "raised" in by_position.said  # a [V] mask on [n] losses
    assert not ex.bucket_loss("mean").passed
    stub = ex.bucket_loss(lambda losses, targets, buckets: None)
    assert not stub.passed and "No answer yet" in stub.said


def test_rare_only_decay_says_which_way_to_move_lambda():
    weak = ex.rare_only_decay(0.5)  # rarest +0.71 nat
    assert not weak.passed and "larger λ" in weak.hint
    strong = ex.rare_only_decay(3.0)  # most frequent +1.3 nat
    assert not strong.passed and "frequent tokens too" in strong.hint
    for bad in (-1.0, "x"):
        fb = ex.rare_only_decay(bad)
        assert not fb.passed and "refused" in fb.said


def test_sgd_decay_between_too_weak_and_collapse():
    collapsed = ex.sgd_decay(0.5)  # AdamW's λ: uniform predictions
    assert not collapsed.passed and "orders of magnitude smaller" in collapsed.hint
    weak = ex.sgd_decay(1e-4)  # rarest +0.01 nat
    assert not weak.passed and "larger λ" in weak.hint
    both = ex.sgd_decay(0.02)  # the frequent bucket rises more than the rarest
    assert not both.passed and "frequent tokens pay as much" in both.hint
    negative = ex.sgd_decay(-0.01)
    assert not negative.passed and "refused" in negative.said


def test_a_wrong_answer_fails_the_graded_cell(monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(ExerciseFailed, match="Hint"):
        ex.sgd_decay(0.5)

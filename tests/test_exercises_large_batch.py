"""The large-batch exercises decide by training: plausible wrong answers fail with a specific hint, bad input fails
without a traceback, and each threshold sits where its constant says. (The solutions pass in test_course.py.)"""
import math

import pytest
import torch

from reglab.exercises import large_batch as ex

EPS = 1e-9


def blocks(h, ghost, unbiased=False, eps=1e-5):
    b = h.reshape(-1, ghost, h.shape[1])
    return ((b - b.mean(1, keepdim=True)) / torch.sqrt(b.var(1, unbiased=unbiased, keepdim=True) + eps)).reshape(h.shape)


def whole_batch(h, ghost):
    return (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + 1e-5)


def interleaved(h, ghost):
    b = h.reshape(ghost, -1, h.shape[1])  # row i with rows i + k, i + 2k, …
    return ((b - b.mean(0, keepdim=True)) / torch.sqrt(b.var(0, unbiased=False, keepdim=True) + 1e-5)).reshape(h.shape)


# ---------------------------------------------------------------------------------------------- 10.1

@pytest.mark.parametrize("eta,said,hint", [
    (0.03, "closed: 0.00", "scale η up"),
    (0.003, "closed: -", "scale η up"),
    (10.0, "Fraction of the gap closed", "overshoots"),
    (100.0, "diverged at step", "too large"),
], ids=["unscaled", "scaled-down", "overshoots", "diverges"])
def test_step_size_wrong_answers_fail_with_their_hint(eta, said, hint):
    fb = ex.large_batch_step_size(eta)
    assert not fb.passed and said in fb.said and hint in fb.hint, str(fb)


@pytest.mark.parametrize("answer", [-0.1, 0, "big", float("nan")])
def test_bad_step_size_is_refused_not_raised(answer):
    fb = ex.large_batch_step_size(answer)
    assert not fb.passed and "refused" in fb.said and fb.hint, str(fb)


def test_half_the_gap_rule_at_its_threshold():
    assert ex.HALF_THE_GAP(0.5) and ex.HALF_THE_GAP(0.5 + EPS) and ex.HALF_THE_GAP(1.3)
    assert not ex.HALF_THE_GAP(0.5 - EPS) and not ex.HALF_THE_GAP(None) and not ex.HALF_THE_GAP(math.nan)


# ---------------------------------------------------------------------------------------------- 10.2

def test_equal_epochs_fail_with_the_updates_hint():
    fb = ex.large_batch_epochs(ex.EPOCHS)
    assert not fb.passed and "12 updates" in fb.said and "fewer updates" in fb.hint, str(fb)


def test_more_updates_than_the_small_batch_are_refused_before_training():
    fb = ex.large_batch_epochs(76)
    assert not fb.passed and "304 updates, more than the 300" in fb.said and "no more" in fb.hint, str(fb)


@pytest.mark.parametrize("answer", [0, -3, 2.5, "75", None])
def test_bad_epochs_are_refused_not_raised(answer):
    fb = ex.large_batch_epochs(answer)
    assert not fb.passed and fb.hint, str(fb)
    assert ("No answer yet" if answer is None else "refused") in fb.said


def test_as_good_as_small_rule_at_its_threshold():
    assert ex.AS_GOOD_AS_SMALL([0.0, 3.0]) and ex.AS_GOOD_AS_SMALL([EPS, 0.0])
    assert not ex.AS_GOOD_AS_SMALL([-EPS, 3.0]) and not ex.AS_GOOD_AS_SMALL([None, 3.0])
    assert not ex.AS_GOOD_AS_SMALL([])


# ---------------------------------------------------------------------------------------------- 10.3

@pytest.mark.parametrize("answer,hint", [
    (whole_batch, "whole batch"),
    (lambda h, ghost: blocks(h, ghost, unbiased=True), "ghost − 1"),
    (interleaved, "interleave"),
], ids=["whole-batch", "unbiased-variance", "interleaved-rows"])
def test_ghost_norm_wrong_answers_fail_with_their_hint(answer, hint):
    fb = ex.ghost_batch_norm(answer)
    assert not fb.passed and hint in fb.hint, str(fb)


@pytest.mark.parametrize("answer,said", [
    ("torch.nn.BatchNorm1d", "should be a function"),
    (lambda h, ghost: h[:ghost], "returned shape"),
    (lambda h, ghost: "normalized", "should return a tensor"),
    (lambda h, ghost: h.reshape(ghost, -1, 7), "raised RuntimeError"),
], ids=["not-a-function", "wrong-shape", "a-string", "raises"])
def test_ghost_norm_bad_answers_fail_without_a_traceback(answer, said):
    fb = ex.ghost_batch_norm(answer)
    assert not fb.passed and said in fb.said and fb.hint, str(fb)


def test_ghost_norm_as_numpy_passes_and_rule_at_its_threshold():
    assert ex.ghost_batch_norm(lambda h, ghost: blocks(h, ghost).numpy()).passed
    assert ex.GHOST_AGREES(1e-4) and ex.GHOST_AGREES(1e-4 - EPS)
    assert not ex.GHOST_AGREES(1e-4 + EPS) and not ex.GHOST_AGREES(math.nan)

"""The grokking exercises decide by training: plausible wrong answers fail with a specific hint, bad input fails
without a traceback, and each threshold sits where its constant says. (The solutions pass in test_course.py.)"""
import pytest
import torch

from reglab.exercises import grokking as ex


@pytest.mark.parametrize("lam,hint", [(2.0, "smaller λ suffices"), (0.5, "raise λ"), (4.0, "too strong")],
                         ids=["half-also-generalizes", "memorizes", "too-strong"])
def test_smallest_decay_wrong_answers_fail_with_their_hint(lam, hint):
    fb = ex.smallest_grokking_decay(lam)
    assert not fb.passed and hint in fb.hint, str(fb)
    assert f"After {ex.STEPS} steps" in fb.said


def _p_true(z, y, dtype=torch.float32):
    return torch.softmax(z.to(dtype), -1)[torch.arange(len(y)), y]


@pytest.mark.parametrize("answer,hint", [
    (lambda z, y: (_p_true(z, y, torch.float64) == 1).float().mean().item(), "float64"),
    (lambda z, y: (z.argmax(-1) == y).float().mean().item(), "correctly classified"),
    (lambda z, y: (_p_true(z, y) > 0.999).float().mean().item(), "exactly 1.0"),
], ids=["float64", "accuracy", "close-to-one"])
def test_zero_gradient_wrong_answers_fail_with_their_hint(answer, hint):
    fb = ex.zero_gradient_count(answer)
    assert not fb.passed and hint in fb.hint, str(fb)


def test_zero_gradient_loss_exactly_zero_is_an_equivalent_answer():
    fb = ex.zero_gradient_count(
        lambda z, y: (torch.nn.functional.cross_entropy(z, y, reduction="none") == 0).float().mean().item())
    assert fb.passed, str(fb)


@pytest.mark.parametrize("answer,said", [
    (0.5, "not a function"),
    (lambda z, y: None, "returned None"),
    (lambda z, y: (_p_true(z, y) == 1).float(), "not one number"),
    (lambda z, y: z.nonexistent, "AttributeError"),
    (lambda z, y: float(len(y)), "lies in [0, 1]"),
], ids=["not-callable", "returns-none", "returns-vector", "raises", "a-count-not-a-fraction"])
def test_zero_gradient_bad_input_is_a_failed_check(answer, said):
    fb = ex.zero_gradient_count(answer)
    assert not fb.passed and said in fb.said and fb.hint, str(fb)


@pytest.mark.parametrize("eta,hint", [(0.02, "Raise η"), (0.2, "Lower η")], ids=["groks", "no-learning"])
def test_no_wait_wrong_step_size_fails_with_its_direction(eta, hint):
    fb = ex.no_wait_step_size(eta)
    assert not fb.passed and hint in fb.hint, str(fb)
    assert "Regime:" in fb.said


@pytest.mark.parametrize("check", [ex.smallest_grokking_decay, ex.no_wait_step_size])
@pytest.mark.parametrize("answer", [-1.0, "fast"])
def test_bad_settings_are_refused_not_raised(check, answer):
    fb = check(answer)
    assert not fb.passed and "refused" in fb.said and fb.hint


@pytest.mark.parametrize("rule,at,inside,outside", [
    (ex.GENERALIZED, 0.9, 0.9001, 0.8999),  # final test accuracy (04.1, 04.3)
    (ex.LATE, 3.0, 3.01, 2.99),  # step(test ≥ 90 %) / step(train ≥ 99 %): 04.3 needs it not to hold
])
def test_threshold_rules(rule, at, inside, outside):
    assert rule(at) and rule(inside) and not rule(outside)
    assert not rule(float("nan")) and not rule(None)


def test_same_count_rule():
    assert ex.SAME_COUNT(0) and not ex.SAME_COUNT(1) and not ex.SAME_COUNT(None)

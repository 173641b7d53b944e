"""The SGD-noise exercises decide by training: plausible wrong answers fail with a specific hint, bad input fails
without a traceback, and each threshold sits where its constant says. (The solutions pass in test_course.py.)"""
import pytest

from reglab.exercises import sgd_noise as ex

# ---------------------------------------------------------------------------------------------- 02.1 and 02.2


@pytest.mark.parametrize("eta,hint", [(0.1, "Too cold"), (2.0, "Too hot")], ids=["cold", "hot"])
def test_step_size_outside_the_window_fails_with_its_direction(eta, hint):
    fb = ex.hot_enough_step_size(eta)
    assert not fb.passed and hint in fb.hint, str(fb)
    assert "full-batch GD" in fb.said and "needed ≤ 0.6" in fb.said


@pytest.mark.parametrize("lam,hint", [(1e-4, "too small"), (1.0, "too large")])
def test_weight_decay_outside_the_window_fails_with_its_direction(lam, hint):
    fb = ex.decay_like_sgd(lam)
    assert not fb.passed and hint in fb.hint, str(fb)
    assert "SGD with B = 1" in fb.said


@pytest.mark.parametrize("check,answer", [
    (ex.hot_enough_step_size, 0), (ex.hot_enough_step_size, -0.3), (ex.hot_enough_step_size, "fast"),
    (ex.decay_like_sgd, -0.01), (ex.decay_like_sgd, "some"), (ex.decay_like_sgd, float("inf")),
])
def test_bad_settings_are_refused_not_raised(check, answer):
    fb = check(answer)
    assert not fb.passed and "refused" in fb.said and fb.hint, str(fb)


# ---------------------------------------------------------------------------------------------- 02.3


@pytest.mark.parametrize("answer,hint", [
    (lambda w0, k: w0[:, :k, :].flatten(1).norm(dim=1), "relevant inputs"),
    (lambda w0, k: w0[:, k:, :].norm(dim=-1).sum(1), "sum of the per-input norms"),
    (lambda w0, k: w0[:, k:, :].flatten(1).norm(dim=1) ** 2, "squared"),
    (lambda w0, k: w0[:, :, k:].flatten(1).norm(dim=1), "hidden units"),
    (lambda w0, k: w0[:, k + 1:, :].flatten(1).norm(dim=1), "Off by one"),
    (lambda w0, k: w0[:, k:, :].norm(), "all members together"),
], ids=["relevant", "sum-of-row-norms", "squared", "wrong-axis", "off-by-one", "pooled"])
def test_irrelevant_norm_wrong_answers_fail_with_their_hint(answer, hint):
    fb = ex.irrelevant_norm_check(answer)
    assert not fb.passed and hint in fb.hint, str(fb)


@pytest.mark.parametrize("answer,said", [
    (3.0, "not a function"),
    (lambda w0, k: None, "No answer yet"),
    (lambda w0, k: "norm", "not a tensor"),
    (lambda w0, k: w0[:, k:, :].flatten(1).norm(dim=1, keepdim=True), "returned shape (3, 1)"),
    (lambda w0, k: 1 / 0, "ZeroDivisionError"),
], ids=["not-callable", "returns-none", "returns-str", "keeps-dim", "raises"])
def test_irrelevant_norm_bad_input_is_a_failed_check(answer, said):
    fb = ex.irrelevant_norm_check(answer)
    assert not fb.passed and said in fb.said and fb.hint, str(fb)


def test_irrelevant_norm_hard_coded_k_fails():
    fb = ex.irrelevant_norm_check(lambda w0, k: w0[:, ex.CODE_K:, :].flatten(1).norm(dim=1))
    assert not fb.passed and f"k = {ex.CODE_K + 2}" in fb.said


def test_irrelevant_norm_accepts_a_list():
    fb = ex.irrelevant_norm_check(lambda w0, k: [float(v) for v in w0[:, k:, :].flatten(1).norm(dim=1)])
    assert fb.passed, str(fb)


# ---------------------------------------------------------------------------------------------- thresholds

@pytest.mark.parametrize("rule,inside,at,outside", [
    (ex.SHRINK_VS_GD, [0.599], [0.6], [0.601]),
    (ex.MATCHES_SGD, [0.999], [1.0], [1.001]),
    (ex.FITS, [0.099], [0.1], [0.101]),
    (ex.SAME_VALUES, [0.9e-4], [1e-4], [1.1e-4]),
], ids=["shrink-vs-gd", "matches-sgd", "fits", "same-values"])
def test_thresholds(rule, inside, at, outside):
    assert all(rule(v) for v in inside + at), str(rule)
    assert not any(rule(v) for v in outside), str(rule)
    assert not rule(None) and not rule(float("nan"))

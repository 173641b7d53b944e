"""The stability exercises decide by training: plausible wrong answers fail with a specific hint, bad input fails
without a traceback, and each threshold sits where its constant says. (The solutions pass in test_course.py.)"""
import pytest
import torch

from reglab.exercises import stability as ex


def power(iterations):
    def power_iteration(hvp, v):
        for _ in range(iterations):
            w = hvp(v)
            v = w / w.norm()
        return float(v @ hvp(v))
    return power_iteration


def unnormalized_power(hvp, v):
    for _ in range(200):
        v = hvp(v)
    return float(v @ hvp(v) / (v @ v))


def forever(hvp, v):
    while True:
        v = hvp(v)
        v = v / v.norm()


# ---------------------------------------------------------------------------------------------- 01.1

@pytest.mark.parametrize("eta,said,hint", [
    (0.1, "never reached 2/η", "too small"),
    (0.6, "already", "past the edge"),
    (1.0, "diverged at step", "too large"),
], ids=["too-small", "starts-past-edge", "diverges"])
def test_edge_wrong_step_sizes_fail_with_their_hint(eta, said, hint):
    fb = ex.edge_step_size(eta)
    assert not fb.passed and said in fb.said and hint in fb.hint, str(fb)


@pytest.mark.parametrize("check", [ex.edge_step_size, ex.sgd_gives_up_first])
@pytest.mark.parametrize("answer", [-0.1, 0, "big", float("nan")])
def test_bad_step_size_is_refused_not_raised(check, answer):
    fb = check(answer)
    assert not fb.passed and "refused" in fb.said and fb.hint, str(fb)


# ---------------------------------------------------------------------------------------------- 01.2

@pytest.mark.parametrize("answer,hint", [
    (power(5), "more iterations"),
    (lambda hvp, v: float(hvp(v).norm()), "divide"),
    (lambda hvp, v: 10.0, "never called hvp"),
    (unnormalized_power, "not finite"),
], ids=["too-few-iterations", "not-normalized", "no-products", "overflows"])
def test_power_iteration_wrong_answers_fail_with_their_hint(answer, hint):
    fb = ex.power_iteration_check(answer)
    assert not fb.passed and hint in fb.hint, str(fb)
    assert "Lanczos" in fb.said


@pytest.mark.parametrize("answer,said", [
    (3.0, "not a function"),
    (lambda hvp, v: None, "No answer yet"),
    (lambda hvp, v: hvp(v), "not one number"),
    (lambda hvp, v: "ten", "not one number"),
    (lambda hvp, v: hvp(v[:10]), "ValueError"),
    (lambda hvp, v: 1 / 0, "ZeroDivisionError"),
], ids=["not-callable", "returns-none", "returns-vector", "returns-str", "wrong-length", "raises"])
def test_power_iteration_bad_input_is_a_failed_check(answer, said):
    fb = ex.power_iteration_check(answer)
    assert not fb.passed and said in fb.said and fb.hint, str(fb)


def test_power_iteration_that_never_stops_is_cut_off(monkeypatch):
    monkeypatch.setattr(ex, "MAX_HVP", 30)
    fb = ex.power_iteration_check(forever)
    assert not fb.passed and "more than 30" in fb.said and "fixed number" in fb.hint


def test_power_iteration_accepts_a_tensor_result():
    fb = ex.power_iteration_check(lambda hvp, v: torch.tensor([power(100)(hvp, v)]))
    assert fb.passed, str(fb)


# ---------------------------------------------------------------------------------------------- 01.3

@pytest.mark.parametrize("eta,said,hint", [
    (0.15, "did not diverge", "Raise η"),
    (1.0, "GD diverged too", "too large"),
], ids=["both-train", "both-diverge"])
def test_sgd_limit_wrong_step_sizes_fail_with_their_hint(eta, said, hint):
    fb = ex.sgd_gives_up_first(eta)
    assert not fb.passed and said in fb.said and hint in fb.hint, str(fb)


# ---------------------------------------------------------------------------------------------- thresholds

@pytest.mark.parametrize("rule,inside,at,outside", [
    (ex.EDGE_BAND, [0.91, 1.149], [0.9, 1.15], [0.899, 1.151]),
    (ex.STARTS_BELOW_EDGE, [0.999], [], [1.0, 1.001]),
    (ex.HOVER_EVALS, [6], [5], [4]),
    (ex.AGREEMENT, [0.0099], [0.01], [0.0101]),
    (ex.GD_TRAINS, [0.499], [0.5], [0.501]),
], ids=["edge-band", "starts-below", "hover-evals", "agreement", "gd-trains"])
def test_thresholds(rule, inside, at, outside):
    assert all(rule(v) for v in inside + at), str(rule)
    assert not any(rule(v) for v in outside), str(rule)
    assert not rule(None) and not rule(float("nan"))

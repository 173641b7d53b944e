"""The generalization-measure exercises decide by training: plausible wrong answers fail with a specific hint, bad
input fails without a traceback, and each threshold sits where its constant says. (The solutions pass in
test_course.py.)"""
import functools
import math

import numpy as np
import pytest

from reglab.exercises import generalization as ex
from reglab.metrics import generalization as gm

EPS = 1e-12


def tau_b(measure, gap):
    m, g = np.asarray(measure, float), np.asarray(gap, float)
    i, j = np.triu_indices(len(m), 1)
    sm, sg = np.sign(m[i] - m[j]), np.sign(g[i] - g[j])
    return float((sm * sg).sum() / np.sqrt(np.abs(sm).sum() * np.abs(sg).sum()))


def tau_a(measure, gap):
    m, g = np.asarray(measure, float), np.asarray(gap, float)
    i, j = np.triu_indices(len(m), 1)
    return float((np.sign(m[i] - m[j]) * np.sign(g[i] - g[j])).sum() / len(i))


def psi_grouped_by(with_seed):
    def psi(table, measure, hyperparameter):
        others = [h for h in ("step_size", "batch_size", "weight_decay", "rank") if h != hyperparameter]
        groups = table.groupby(others + ["seed"] if with_seed else others)
        return float(np.nanmean([gm.kendall_tau(g[measure], g["gap"]) for _, g in groups]))
    return psi


@pytest.fixture
def grid(monkeypatch):
    """The checks' grid trained once for this module's tests (each check still gets a fresh copy)."""
    monkeypatch.setattr(ex, "grid_networks", lambda: _grid().copy())


@functools.lru_cache(maxsize=1)
def _grid(train=ex.grid_networks):
    return train()


# ---------------------------------------------------------------------------------------------- 09.1

@pytest.mark.parametrize("criterion,said,hint", [
    (0.5, "training error 0.05", "Lower it"),
    (0.01, "not within 1200 steps", "Raise it"),
], ids=["too-high", "too-low"])
def test_criterion_wrong_answers_fail_with_their_hint(criterion, said, hint):
    fb = ex.stopping_criterion(criterion)
    assert not fb.passed and said in fb.said and hint in fb.hint, str(fb)


@pytest.mark.parametrize("answer", [-0.1, 0, "low", float("nan"), [0.05]])
def test_bad_criterion_is_refused_not_raised(answer):
    fb = ex.stopping_criterion(answer)
    assert not fb.passed and "refused" in fb.said and fb.hint, str(fb)


def test_criterion_rules_at_their_thresholds():
    budget = ex.CRITERION_BUDGET
    assert ex.REACHED_IN_BUDGET([budget, 50]) and ex.REACHED_IN_BUDGET([budget - 1])
    assert not ex.REACHED_IN_BUDGET([budget + 1, 50]) and not ex.REACHED_IN_BUDGET([None, 50])
    assert ex.FITS_TRAINING_SET([0.0, 0.0]) and not ex.FITS_TRAINING_SET([0.0, EPS])
    assert not ex.FITS_TRAINING_SET([0.0, 0.01]) and not ex.FITS_TRAINING_SET([])


# ---------------------------------------------------------------------------------------------- 09.2

@pytest.mark.parametrize("answer,hint", [
    (tau_a, "τ-a"),
    (lambda m, g: -tau_b(m, g), "opposite sign"),
    (lambda m, g: float(np.corrcoef(m, g)[0, 1]), "Pearson"),
    (lambda m, g: tau_b(m, g) * len(m) * (len(m) - 1) / 2, "[−1, 1]"),
], ids=["tau-a-ignores-ties", "sign", "pearson", "not-normalized"])
def test_kendall_wrong_answers_fail_with_their_hint(grid, answer, hint):
    fb = ex.kendall_tau(answer)
    assert not fb.passed and hint in fb.hint, str(fb)


@pytest.mark.parametrize("answer,said", [
    (0.5, "should be a function"),
    (lambda m, g: "tau", "should return one number"),
    (lambda m, g: [1.0, 2.0], "should return one number"),
    (lambda m, g: 1 / 0, "raised ZeroDivisionError"),
], ids=["not-a-function", "a-string", "a-list", "raises"])
def test_kendall_bad_answers_fail_without_a_traceback(grid, answer, said):
    fb = ex.kendall_tau(answer)
    assert not fb.passed and said in fb.said and fb.hint, str(fb)


def test_kendall_answer_passes_on_the_fresh_grid(grid):
    assert ex.kendall_tau(tau_b).passed


def test_tau_rule_at_its_threshold():
    assert ex.TAU_AGREES(1e-9) and ex.TAU_AGREES(1e-9 - EPS) and ex.TAU_AGREES(0.0)
    assert not ex.TAU_AGREES(1e-9 + 1e-15) and not ex.TAU_AGREES(math.inf) and not ex.TAU_AGREES(math.nan)


# ---------------------------------------------------------------------------------------------- 09.3

@pytest.mark.parametrize("answer,hint", [
    (psi_grouped_by(with_seed=False), "mix seeds"),
    (lambda table, measure, h: gm.kendall_tau(table[measure], table["gap"]), "whole grid"),
], ids=["seed-not-held-fixed", "tau-over-the-grid"])
def test_psi_wrong_answers_fail_with_their_hint(grid, answer, hint):
    fb = ex.granulated_psi(answer)
    assert not fb.passed and hint in fb.hint, str(fb)


@pytest.mark.parametrize("answer,said", [
    ({"step_size": 0.1}, "should be a function"),
    (lambda table, measure, h: None, "returned None"),
    (lambda table, measure, h: table["no such column"], "raised KeyError"),
], ids=["not-a-function", "returns-none", "raises"])
def test_psi_bad_answers_fail_without_a_traceback(grid, answer, said):
    fb = ex.granulated_psi(answer)
    assert not fb.passed and said in fb.said and fb.hint, str(fb)


def test_psi_answer_passes_and_rule_at_its_threshold(grid):
    assert ex.granulated_psi(psi_grouped_by(with_seed=True)).passed
    assert ex.PSI_AGREES(1e-9) and ex.PSI_AGREES(1e-9 - EPS)
    assert not ex.PSI_AGREES(1e-9 + 1e-15) and not ex.PSI_AGREES(math.nan)

"""Course material: every exercise in the notebooks is well formed and its check decides by running —
the instructor's solution passes, the student's stub fails with its hint. Theme-specific wrong answers are
tested in tests/test_exercises_<theme>.py; nbgrader and the site in tests/test_course_build.py."""
import re

import nbformat
import pytest

from reglab import exercises
from reglab.course import exercises_in
from reglab.exercises import ExerciseFailed, Feedback
from reglab.notebook import notebook_paths

NOTEBOOKS = notebook_paths()
ALL = [(p, e) for p in NOTEBOOKS for e in exercises_in(p)]


def student_stub(answer: str) -> str:
    """The answer cell as nbgrader's ClearSolutions (with reglab's code stub) leaves it."""
    return re.sub(r"### BEGIN SOLUTION.*?### END SOLUTION", "# YOUR CODE HERE", answer, flags=re.S)


def run_exercise(answer: str, check: str) -> Feedback:
    """Run an answer cell, then the check cell, as the notebook would; the check cell's last line is the call."""
    space = {"exercises": exercises}
    exec(answer, space)
    *body, last = check.strip().splitlines()
    exec("\n".join(body), space)
    return eval(last, space)


def test_every_theme_has_two_exercises_and_a_prediction():
    for path in NOTEBOOKS:
        nb = nbformat.read(str(path), as_version=4)
        found = exercises_in(nb)
        assert len(found) >= 2, f"{path.stem} has {len(found)} exercises"
        assert sum("Prediction(" in c.source for c in nb.cells) >= 1, f"{path.stem} has no prediction"
        assert sum(".reveal(" in c.source for c in nb.cells) >= 1, f"{path.stem} never reveals its prediction"
    assert len(ALL) >= 27


@pytest.mark.parametrize("path,ex", ALL, ids=[e["id"] for _, e in ALL])
def test_exercise_cells_are_complete_and_name_a_registered_check(path, ex):
    assert {"question", "answer", "check", "title"} <= set(ex), ex
    assert ex["id"].split(".")[0] == path.stem[:2]
    assert "### BEGIN SOLUTION" in ex["answer"] and "### END SOLUTION" in ex["answer"]
    called = re.findall(r"exercises\.(\w+)\.(\w+)\(", ex["check"])
    assert len(called) == 1, f"the check cell of {ex['id']} must call exactly one exercise check"
    check = getattr(getattr(exercises, called[0][0]), called[0][1])
    assert check.exercise_id == ex["id"]


@pytest.mark.parametrize("path,ex", ALL, ids=[e["id"] for _, e in ALL])
def test_solution_passes_and_stub_fails_with_its_hint(path, ex, monkeypatch):
    solved = run_exercise(ex["answer"], ex["check"])
    assert solved.passed, str(solved)
    assert solved.exercise == ex["id"]
    stub = run_exercise(student_stub(ex["answer"]), ex["check"])
    assert not stub.passed and stub.hint and "No answer yet" in stub.said
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")  # graded: the stub's check cell must fail
    with pytest.raises(ExerciseFailed, match="Hint"):
        run_exercise(student_stub(ex["answer"]), ex["check"])


# ---------------------------------------------------------------------------------------------
# the exercise decorator: what every check gets the same way


@exercises.exercise("99.1", hint="a hint")
def _positive(x) -> Feedback:
    from reglab import RunConfig, validate

    validate(RunConfig(step_size=x))  # a ConfigError for x ≤ 0
    return Feedback(x > 1, f"x = {x}")


@exercises.exercise("99.2", hint="write it", code=True)
def _doubles(fn) -> Feedback:
    return Feedback(fn(2) == 4, f"fn(2) = {fn(2)}")


def test_a_refused_answer_and_a_raising_function_fail_with_the_message_not_a_traceback():
    refused = _positive(-1.0)
    assert not refused.passed and "reglab refused the answer" in refused.said and refused.hint == "a hint"
    raised = _doubles(lambda v: 1 / 0)
    assert not raised.passed and "ZeroDivisionError" in raised.said


def test_a_code_answer_must_be_a_function_that_returns_something():
    assert "not a function" in _doubles(3.0).said
    assert "returned None" in _doubles(lambda v: None).said and "No answer yet" in _doubles(lambda v: None).said
    assert _doubles(lambda v: 2 * v).passed and not _doubles(lambda v: v + 1).passed


def test_under_nbgrader_a_failed_check_raises_and_a_passed_one_returns_nothing(monkeypatch):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    with pytest.raises(ExerciseFailed, match="x = 0.5"):
        _positive(0.5)
    assert _positive(2.0) is None  # displayed; a returned value would be read as partial credit


def test_one_number_takes_scalars_of_every_kind_and_refuses_the_rest():
    import numpy as np
    import torch

    from reglab.exercises import one_number

    for value in (2.5, np.float32(2.5), torch.tensor(2.5), torch.tensor([2.5]), np.array([[2.5]])):
        assert one_number(value) == 2.5
    for value in (True, "2.5", [1.0, 2.0], torch.ones(2), None, object()):
        assert one_number(value) is None

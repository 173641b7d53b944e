"""Exercises checked by running: each check trains reglab on the student's answer and says what happened.

An exercise is a function decorated with `@exercise(id, hint)`. It receives the student's answer (settings
or a function), runs reglab on it, and returns a `Feedback` with the measured numbers. The decorator adds what
every check needs the same way:

- an answer left at its stub (None or `...`) gets "no answer yet" and the hint, without running anything;
- bad input (a negative step size, a function that raises) becomes a failed check with the message, never a
  traceback;
- under nbgrader's autograder or validator (it sets NBGRADER_EXECUTION) a failed check raises
  `ExerciseFailed`, so the graded cell scores zero, and a passed one displays its feedback and returns None
  (nbgrader would read a returned value as partial credit); everywhere else the Feedback is returned.

In a notebook an exercise is three cells with nbgrader's metadata: the question (markdown), the answer cell
(`### BEGIN SOLUTION` … `### END SOLUTION`, replaced by a stub in the student version) and the check cell
(graded, locked), whose last line calls the check.
"""
from __future__ import annotations

import functools
import html
import importlib
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ..config import ConfigError
from ..notebook import grading

EXERCISES: dict[str, Callable] = {}  # id ("01.2") → the decorated check, in import order
MODULES = ("quickstart", "stability", "sgd_noise", "low_rank", "grokking", "neural_collapse", "double_descent",
           "max_margin", "rare_tokens", "generalization", "large_batch", "transformer_stability")


class ExerciseFailed(AssertionError):
    """A check that did not pass, raised only while nbgrader grades (the graded cell then scores zero)."""


@dataclass(frozen=True)
class Feedback:
    """What a check found: passed or not, what the run measured (`said`), and a hint when it did not pass."""
    passed: bool
    said: str
    hint: str = ""
    exercise: str = ""

    def __str__(self) -> str:
        head = f"Exercise {self.exercise}: " if self.exercise else ""
        if self.passed:
            return f"✓ {head}passed. {self.said}"
        return f"✗ {head}not yet. {self.said}" + (f"\nHint: {self.hint}" if self.hint else "")

    __repr__ = __str__

    def _repr_html_(self) -> str:
        color, mark, verdict = ("#1a7f37", "✓", "passed") if self.passed else ("#cf222e", "✗", "not yet")
        head = f"Exercise {html.escape(self.exercise)}: " if self.exercise else ""
        hint = "" if self.passed or not self.hint else f"<div><b>Hint:</b> {html.escape(self.hint)}</div>"
        return (f"<div style='border-left:4px solid {color};padding:.4rem .8rem;margin:.3rem 0'>"
                f"<div style='color:{color};font-weight:600'>{mark} {head}{verdict}</div>"
                f"<div>{html.escape(self.said)}</div>{hint}</div>")


def _unanswered(value) -> bool:
    return value is None or value is Ellipsis


class _ReturnedNone(Exception):
    """A student's function returned None: its body is still the stub."""


def _must_return(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def called(*args, **kwargs):
        out = fn(*args, **kwargs)
        if out is None:
            raise _ReturnedNone
        return out

    return called


def one_number(value) -> float | None:
    """A student's result as a float when it is one number (a Python, numpy or torch scalar, or a
    one-element array or tensor); None for anything else (a bool, a string, several values)."""
    if value is None or isinstance(value, (bool, str)):
        return None
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None
    return float(arr.reshape(())) if arr.size == 1 else None


def exercise(exercise_id: str, hint: str, code: bool = False) -> Callable:
    """Register a check under `exercise_id` with the hint shown whenever it does not pass (a check may
    return a more specific hint of its own). `code=True`: the answer is a function the student writes; one
    that is not a function, or that returns None (its body still the stub), fails before the check measures."""
    def wrap(check: Callable) -> Callable:
        @functools.wraps(check)
        def checked(*args, **kwargs) -> Feedback:
            answers = [*args, *kwargs.values()]
            if not answers or any(_unanswered(a) for a in answers):
                fb = Feedback(False, "No answer yet: fill in the cell above and run it, then this one.", hint)
            elif code and not callable(answers[0]):
                fb = Feedback(False, f"The answer is not a function: it should be a function (the `def` in the cell "
                                     f"above), got a {type(answers[0]).__name__}.", hint)
            else:
                if code and args:  # the first answer is the student's function
                    args = (_must_return(args[0]), *args[1:])
                elif code:
                    first = next(iter(kwargs))
                    kwargs = {**kwargs, first: _must_return(kwargs[first])}
                try:
                    fb = check(*args, **kwargs)
                except _ReturnedNone:
                    fb = Feedback(False, "No answer yet: the function returned None. Write its body (it ends with "
                                         "`return …`), run its cell, then this one.", hint)
                except ConfigError as err:
                    fb = Feedback(False, f"reglab refused the answer: {err}", hint)
                except ExerciseFailed:
                    raise
                except Exception as err:  # the student's own code failed: say so, don't show a traceback
                    fb = Feedback(False, f"The answer raised {type(err).__name__}: {err}", hint)
            fb = replace(fb, exercise=exercise_id, hint=fb.hint or hint)
            if grading():  # nbgrader: a failed check is an error; a returned value would be read as partial credit
                if not fb.passed:
                    raise ExerciseFailed(str(fb))
                from IPython.display import display

                display(fb)
                return None
            return fb

        checked.exercise_id = exercise_id
        checked.hint = hint
        if exercise_id in EXERCISES and EXERCISES[exercise_id].__qualname__ != check.__qualname__:
            raise ValueError(f"exercise id {exercise_id} is used twice")
        EXERCISES[exercise_id] = checked
        return checked

    return wrap


def __getattr__(name: str):
    """`exercises.stability` imports the theme's exercise module on first use."""
    if name in MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

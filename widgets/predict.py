"""Predict, then run: a student commits to a guess before the run, then sees the computed outcome beside it.

    guess = Prediction("After λ_max reaches 2/η, it …", choices=["keeps rising", "hovers near 2/η", "falls back"])
    guess                                   # shown before the run: choose, then "Lock in"
    ...                                     # the run
    guess.reveal("hovers near 2/η", "median λ_max·η/2 = 1.02")   # after it: the outcome beside the guess

A number instead of choices: `Prediction("Test accuracy after training (%)?", number=True)`. The outcome
stays hidden until a guess is locked in, so a student who runs every cell still commits first. Headless
(papermill, CI, nbgrader) shows no prompt: `reveal` prints the outcome alone.
"""
from __future__ import annotations

import math
from typing import Sequence

from reglab import charts
from reglab.course import PREDICT, SKIPPED  # the site reads the question back from this text


class Prediction:
    """A guess recorded before a run. `value` is the locked-in guess (None until then)."""

    def __init__(self, question: str, choices: Sequence[str] | None = None, number: bool = False,
                 headless: bool | None = None):
        if bool(choices) == bool(number):
            raise ValueError("Prediction needs either choices (a list of answers) or number=True, not both")
        self.question, self.choices, self.number = question, list(choices or []), number
        self.value = None
        self.outcome = None
        self.said = ""
        self.headless = charts.headless() if headless is None else headless
        self._widget = None
        self._result_box = None

    # ------------------------------------------------------------------ the text, shared by both modes
    def comparison(self) -> str:
        """The guess beside the outcome, one sentence (an empty string before `reveal`)."""
        if self.outcome is None:
            return ""
        said = f" ({self.said})" if self.said else ""
        if self.value is None:
            return f"The run: {self._fmt(self.outcome)}{said}."
        if self.number:
            off = abs(self.value - self.outcome)
            rel = f", {off / abs(self.outcome) * 100:.0f} % off" if self.outcome else ""
            return f"You predicted {self._fmt(self.value)}; the run gave {self._fmt(self.outcome)}{said}{rel}."
        match = "right" if self.value == self.outcome else "not what happened"
        return f"You predicted “{self.value}”; the run: “{self.outcome}”{said}. Your prediction was {match}."

    @staticmethod
    def _fmt(value) -> str:
        return f"{value:.3g}" if isinstance(value, float) and math.isfinite(value) else str(value)

    # ------------------------------------------------------------------ the two calls a notebook makes
    def lock_in(self, value) -> None:
        """Record the guess (the "Lock in" button calls this; a script may too)."""
        if self.number:
            value = float(value)
        elif value not in self.choices:
            raise ValueError(f"guess must be one of {self.choices}, got {value!r}")
        self.value = value
        self._refresh()

    def reveal(self, outcome, said: str = ""):
        """Show the computed outcome beside the locked-in guess (hidden until a guess is locked in)."""
        if not self.number and outcome not in self.choices:
            raise ValueError(f"outcome must be one of {self.choices}, got {outcome!r}")
        self.outcome, self.said = outcome, said
        if self.headless:
            from IPython.display import Markdown

            return Markdown(f"**Prediction.** {self.question} — {self.comparison()}")
        import ipywidgets as w

        self._result_box = w.HTML()
        self._refresh()
        return self._result_box

    # ------------------------------------------------------------------ the widget
    def _refresh(self) -> None:
        if self._result_box is None:
            return
        if self.value is None:
            self._result_box.value = "<i>Lock in a prediction above to see the outcome.</i>"
        else:
            right = self.number or self.value == self.outcome
            color = "#1a7f37" if right else "#9a6700"
            self._result_box.value = f"<div style='border-left:4px solid {color};padding:.3rem .7rem'>{self.comparison()}</div>"

    def _build(self):
        import ipywidgets as w

        entry = (w.FloatText(description="", layout=w.Layout(width="8rem")) if self.number else
                 w.RadioButtons(options=self.choices, value=None, layout=w.Layout(width="auto")))
        button = w.Button(description="Lock in", button_style="primary", icon="lock")
        note = w.HTML()

        def lock(_):
            if entry.value is None:
                note.value = "<i>Choose an answer first.</i>"
                return
            self.lock_in(entry.value)
            entry.disabled = button.disabled = True
            note.value = f"Locked in: <b>{self._fmt(self.value)}</b>. Now run the cells below."

        button.on_click(lock)
        return w.VBox([w.HTML(f"<b>Predict first.</b> {self.question}"), entry, w.HBox([button, note])])

    def _ipython_display_(self):
        from IPython.display import Markdown, display

        if self.headless:
            display(Markdown(f"{PREDICT} {self.question} {SKIPPED}"))
            return
        if self._widget is None:
            self._widget = self._build()
        display(self._widget)

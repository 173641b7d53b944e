"""The prediction widget: the guess is locked before the outcome is shown; headless runs skip the prompt."""
import pytest

from reglab.widgets import Prediction

CHOICES = ["keeps rising", "hovers near 2/η", "falls back"]


def test_needs_choices_or_a_number_not_both():
    with pytest.raises(ValueError, match="either choices"):
        Prediction("?")
    with pytest.raises(ValueError, match="either choices"):
        Prediction("?", choices=CHOICES, number=True)


def test_a_guess_outside_the_choices_and_an_outcome_outside_them_are_refused():
    guess = Prediction("?", choices=CHOICES, headless=True)
    with pytest.raises(ValueError, match="one of"):
        guess.lock_in("goes to zero")
    with pytest.raises(ValueError, match="one of"):
        guess.reveal("goes to zero")


def test_outcome_stays_hidden_until_a_guess_is_locked_in_then_shows_beside_it():
    guess = Prediction("After λ_max reaches 2/η, it …", choices=CHOICES, headless=False)
    box = guess.reveal("hovers near 2/η", "median λ_max·η/2 = 1.02")
    assert "Lock in" in box.value and "hovers" not in box.value
    panel = guess._build()  # the prompt a student sees: choose, then lock in
    entry, button = panel.children[1], panel.children[2].children[0]
    button.click()
    assert guess.value is None  # nothing chosen yet: nothing locked
    entry.value = "keeps rising"
    button.click()
    assert guess.value == "keeps rising" and entry.disabled and button.disabled
    assert "You predicted “keeps rising”" in box.value and "“hovers near 2/η”" in box.value
    assert "not what happened" in box.value and "1.02" in box.value


def test_a_right_choice_says_so():
    guess = Prediction("?", choices=CHOICES, headless=True)
    guess.lock_in("falls back")
    guess.reveal("falls back")
    assert guess.comparison().endswith("Your prediction was right.")


def test_a_number_reports_how_far_off_the_guess_was():
    guess = Prediction("Test accuracy (%)?", number=True, headless=True)
    guess.lock_in("50")
    shown = guess.reveal(40.0, "after 1500 steps")
    assert guess.comparison() == "You predicted 50; the run gave 40 (after 1500 steps), 25 % off."
    assert "25 % off" in shown.data


def test_headless_shows_the_question_without_a_prompt_and_the_outcome_alone():
    guess = Prediction("Test accuracy (%)?", number=True, headless=True)
    assert guess.reveal(41.5).data == "**Prediction.** Test accuracy (%)? — The run: 41.5."

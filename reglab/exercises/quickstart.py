"""Quickstart exercises: find where a step size diverges; trade weight decay's shrinkage against accuracy."""
from __future__ import annotations

from ..claims import at_most
from ..engine import train
from ..experiments.quickstart import config
from . import Feedback, exercise

STEPS = 300  # each check trains the quickstart MLP this long: well under a second on one CPU thread
SHRINK = at_most(0.7)  # ‖W1‖ with decay over ‖W1‖ without
ACCURACY_FALL = at_most(0.05)  # test accuracy without decay minus with it


@exercise("00.1", hint="A step size that is merely too large can leave the loss stuck near ln 10 ≈ 2.30 without "
                       "blowing up; divergence needs a larger η still. Try growing η by factors of 2.")
def diverging_step_size(step_size: float) -> Feedback:
    """Pass when the quickstart MLP trained with this η diverges within STEPS steps."""
    run = train(config(step_size=step_size, steps=STEPS))
    at = run.diverged_step(0)
    if at is not None:
        return Feedback(True, f"At η = {step_size:g} the loss became non-finite at step {at}.")
    loss = run.summary.train_loss.iloc[0]
    return Feedback(False, f"At η = {step_size:g} the run stayed finite for {STEPS} steps "
                           f"(final training loss {loss:.3g}).")


@exercise("00.2", hint="Weight decay shrinks the weights a little at every step. Too small a λ barely changes "
                       "‖W1‖; too large a λ costs accuracy. Look between 1e-3 and 1e-1.")
def shrinking_weight_decay(weight_decay: float) -> Feedback:
    """Pass when this λ brings the hidden layer's Frobenius norm to SHRINK of its λ = 0 value while test
    accuracy falls by no more than ACCURACY_FALL."""
    plain, decayed = (train(config(weight_decay=wd, steps=STEPS)) for wd in (0.0, weight_decay))
    if decayed.diverged_step(0) is not None:
        return Feedback(False, f"At λ = {weight_decay:g} the run diverged at step {decayed.diverged_step(0)}.")
    ratio = float(decayed.params["W1"].norm() / plain.params["W1"].norm())
    drop = float(plain.summary.test_acc.iloc[0] - decayed.summary.test_acc.iloc[0])
    said = (f"At λ = {weight_decay:g}, ‖W1‖ is {ratio:.2f}× its λ = 0 value (needed {SHRINK}) and test accuracy "
            f"{'falls' if drop > 0 else 'rises'} by {abs(drop):.3f} from λ = 0's (a fall {ACCURACY_FALL} is allowed).")
    return Feedback(SHRINK(ratio) and ACCURACY_FALL(drop), said)

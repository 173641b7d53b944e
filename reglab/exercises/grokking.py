"""Grokking exercises: the least weight decay that generalizes in a budget, count Softmax Collapse, a step size
that ends the wait."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..claims import at_most
from ..engine import train
from ..experiments import grokking as theme
from ..experiments.grokking import FITTED, GENERALIZED, LATE, config, zero_gradient_fraction
from . import Feedback, exercise

# every check trains modular addition mod P (half of the P² pairs train) on an MLP [WIDTH, WIDTH], full-batch AdamW,
# seed 0: STEPS steps of one member take about 1.5 s of one CPU thread, two members as one ensemble about 2 s
P, WIDTH, TRAIN_FRACTION, STEPS = 47, 64, 0.5, 500
SETTINGS = dict(p=P, width=WIDTH, train_fraction=TRAIN_FRACTION)
HALF = 0.5  # 04.1: λ must grok within STEPS and λ·HALF must not
COLLAPSE_STEPS = 300  # 04.2: the λ = 0 run whose logits are counted
SCALES = tuple(float(c) for c in np.round(np.geomspace(1.0, 4.0, 13), 3))  # 04.2: the logits times c, as they grow
SAME_COUNT = at_most(0)  # 04.2: samples counted differently from reglab's zero_gradient_fraction, the most over SCALES
FIXED_DECAY = 2.0  # 04.3: λ is fixed; the answer is η


def _outcome(run, m: int) -> dict:
    """Member m's final accuracies, the steps where train first reached 99 % and test 90 %, their ratio, its
    regime (the notebook's rules), diverged_at."""
    row = theme.summarize(theme.tidy(run, "exercise")).set_index("run").loc[m]
    out = {k: row[k] for k in ("final_train", "final_test", "step_train_99", "step_test_90", "delay_ratio", "regime")}
    out["diverged_at"] = run.diverged_step(m)
    return out


def _steps(o: dict) -> str:
    at = lambda step: "never" if pd.isna(step) else f"at step {int(step)}"
    return f"train ≥ 99 % {at(o['step_train_99'])}, test ≥ 90 % {at(o['step_test_90'])}"


@exercise("04.1", hint=f"Without enough decay the net memorizes and waits; λ·{HALF:g} must still be too little to "
                       f"generalize within {STEPS} steps. The notebook's regime map and λ = 0 run bracket it: try "
                       f"values between 0.3 and 3 with grokking.config(weight_decay=λ, p={P}, width={WIDTH}, "
                       f"train_fraction={TRAIN_FRACTION}, steps={STEPS}).")
def smallest_grokking_decay(weight_decay: float) -> Feedback:
    """Pass when, at the exercise's settings, λ reaches test accuracy GENERALIZED after STEPS steps and λ·HALF
    does not: λ is within a factor 1/HALF of the smallest weight decay that generalizes in the budget."""
    cfg = config(weight_decay=weight_decay, steps=STEPS, **SETTINGS)
    run = train([cfg, cfg.replace(weight_decay=HALF * weight_decay)])
    yours, half = _outcome(run, 0), _outcome(run, 1)
    if yours["diverged_at"] is not None:
        return Feedback(False, f"At λ = {weight_decay:g} the run diverged at step {yours['diverged_at']}.",
                        "λ that large makes AdamW's decay unstable: lower it.")
    ok, half_ok = GENERALIZED(yours["final_test"]), GENERALIZED(half["final_test"])
    said = (f"After {STEPS} steps: λ = {weight_decay:g} reaches test accuracy {yours['final_test']:.3f} "
            f"({_steps(yours)}); λ·{HALF:g} = {HALF * weight_decay:g} reaches {half['final_test']:.3f}. "
            f"Needed: test {GENERALIZED} at λ and not at λ·{HALF:g}.")
    if ok and not half_ok:
        late = (f" Test came {yours['delay_ratio']:.1f}× later than train: it grokked." if LATE(yours["delay_ratio"])
                else "")
        return Feedback(True, said + late)
    if ok:
        return Feedback(False, said, f"λ·{HALF:g} also generalizes within {STEPS} steps: a smaller λ suffices.")
    if half_ok:
        return Feedback(False, said, f"λ·{HALF:g} generalizes but λ does not: this much decay is too strong "
                                     "(it slows the fit itself). Lower λ.")
    if FITTED(yours["final_train"]):
        return Feedback(False, said, "The net fits the training pairs but only memorizes within the budget: "
                                     "raise λ.")
    return Feedback(False, said, "Too little or too much: the net did not even fit its training pairs at this λ. "
                                 "Try λ between 0.3 and 3.")


@exercise("04.2", hint="p_y = softmax(logits)[i, y_i] in float32 (torch.softmax on the float32 logits); a sample "
                       "collapses when p_y == 1.0 exactly. Return the fraction of such samples as a float.", code=True)
def zero_gradient_count(zero_grad_fraction) -> Feedback:
    """Pass when `zero_grad_fraction(logits, y)` (logits [n, p] float32, labels y [n]) gives, on the training
    logits of a fresh λ = 0 run scaled by every c in SCALES, the fraction reglab's `zero_gradient_fraction`
    gives: SAME_COUNT samples apart."""
    run = train(config(weight_decay=0.0, steps=COLLAPSE_STEPS, **SETTINGS).replace(eval_every=COLLAPSE_STEPS))
    with torch.no_grad():  # on the CPU, whichever device trained: the answer sees plain tensors
        logits = run.model(run.params, run.data.x_train)[0].float().cpu()
    y, n = run.data.y_train.cpu(), len(run.data.y_train)
    rows = []
    for c in SCALES:
        z = (logits * c).contiguous()
        out = zero_grad_fraction(z.clone(), y.clone())
        try:
            yours = float(out)
        except (TypeError, ValueError, RuntimeError):
            shape = tuple(getattr(out, "shape", ())) or type(out).__name__
            return Feedback(False, f"zero_grad_fraction returned {shape}, not one number.",
                            "Average over the samples: one fraction in [0, 1] (e.g. `.float().mean().item()`).")
        if not 0 <= yours <= 1:
            return Feedback(False, f"zero_grad_fraction returned {yours:g} at c = {c:g}: a fraction lies in [0, 1].")
        reference = float(zero_gradient_fraction(z[None], y)[0])
        rows.append((c, yours, reference, round(abs(yours - reference) * n)))
    worst = max(rows, key=lambda r: r[3])
    said = (f"On {n} training pairs of a λ = 0 run ({COLLAPSE_STEPS} steps), its logits scaled by c = "
            f"{SCALES[0]:g} … {SCALES[-1]:g}: reglab counts " + ", ".join(f"{r[2]:.3f}" for r in rows)
            + "; yours " + ", ".join(f"{r[1]:.3f}" for r in rows)
            + f". Largest difference: {worst[3]} samples at c = {worst[0]:g} (needed {SAME_COUNT}).")
    if SAME_COUNT(worst[3]):
        return Feedback(True, said)
    p_true = lambda z, dtype=torch.float32: torch.softmax(z.to(dtype), -1).gather(-1, y[:, None]).squeeze(-1)
    mistakes = {  # what a common mistake computes, and what to say about it
        "p_y close to 1 is not enough: the gradient p_y − 1 is exactly zero only when p_y rounds to exactly 1.0.":
            lambda z: p_true(z) > 0.999,
        "You counted the correctly classified samples: a sample can be right with p_y < 1, and its gradient is "
        "then not zero.": lambda z: z.argmax(-1) == y,
        "In float64 p_y reaches 1 much later than in float32: Softmax Collapse is a float32 rounding effect. Keep "
        "the softmax in float32.": lambda z: p_true(z, torch.float64) == 1,
    }
    hint = next((text for text, wrong in mistakes.items()
                 if all(abs(float(wrong(logits * c).double().mean()) - r[1]) * n < 0.5 for c, r in zip(SCALES, rows))),
                "")
    return Feedback(False, said, hint)


@exercise("04.3", hint=f"AdamW shrinks the weights by 1 − ηλ every step: ηλ sets how fast the decay acts, while "
                       f"fitting the training pairs takes about the same number of steps for any moderate η. Try η "
                       f"between 0.01 and 0.2 at λ = {FIXED_DECAY:g}.")
def no_wait_step_size(step_size: float) -> Feedback:
    """Pass when, at λ = FIXED_DECAY and this η, the run's regime is "generalizes": final test accuracy
    GENERALIZED, reached less than 3× after train accuracy first reached 99 % (not LATE)."""
    run = train(config(weight_decay=FIXED_DECAY, step_size=step_size, steps=STEPS, **SETTINGS))
    o = _outcome(run, 0)
    if o["diverged_at"] is not None:
        return Feedback(False, f"At η = {step_size:g} the run diverged at step {o['diverged_at']}.",
                        "That step size is too large for AdamW: lower η.")
    ratio = "—" if pd.isna(o["delay_ratio"]) else f"{o['delay_ratio']:.2f}"
    said = (f"At λ = {FIXED_DECAY:g}, η = {step_size:g} (ηλ = {step_size * FIXED_DECAY:.3g}): {_steps(o)}, "
            f"ratio {ratio}; final test accuracy {o['final_test']:.3f}. Regime: {o['regime']} (needed: generalizes, "
            f"test {GENERALIZED} reached less than {theme.DELAY:g}× after train ≥ 99 %).")
    if o["regime"] == "generalizes":
        return Feedback(True, said)
    if o["regime"] in ("groks", "memorizes"):
        return Feedback(False, said, "The decay acts too slowly: test accuracy still waits for it. Raise η.")
    return Feedback(False, said, f"ηλ = {step_size * FIXED_DECAY:.3g}: the decay removes that fraction of the "
                                 "weights every step, faster than the net can fit. Lower η.")

"""Max-margin exercises: write the normalized margin; steer GD's direction toward the SVM with η; trade λ against it."""
from __future__ import annotations

import torch

from ..claims import at_most, below
from ..config import validate
from ..engine import train
from ..experiments.max_margin import MarginProbe, config, dataset, regularized_minimizer, with_evals
from ..metrics import margins as mg
from . import Feedback, exercise

MARGIN_STEPS = 300  # 07.1: the fresh run that supplies the weight vectors (3 seeds, and one on flipped labels)
NOISY = 0.2  # 07.1: the flipped-label fraction of the second data set (not separable: its margins are negative)
MARGIN_MATCH = at_most(1e-6)  # largest |yours − reglab's| / max(|reglab's|, 1e-12) over the weight vectors
BUDGET = 1000  # 07.2 and 07.3: GD steps on the theme's data (n = 40, d = 5, margin 0.1)
ANGLE_TO_SVM = below(6.5)  # 07.2: degrees between w_T and w_SVM after BUDGET steps
FROZEN = below(1.2)  # 07.2: ‖w_T‖ over ‖w‖ at the first evaluation: below this the early steps froze the direction
SETTLED = below(0.01)  # 07.3: |‖w_T‖ / ‖w_λ‖ − 1|, w_λ the regularized minimizer (Newton)
NEAR_SVM = below(8.0)  # 07.3: degrees between w_T and w_SVM


def _angle(w, ref) -> float:
    return float(mg.angle_degrees(w, ref)[0])


# ---------------------------------------------------------------------------------------------
# 07.1: the normalized margin


def _scalar(value) -> tuple[float | None, str]:
    """The student's margin as a float, or None and what came back instead."""
    if isinstance(value, (bool, str)):
        return None, f"The function returned {value!r}, not a number."
    try:
        t = value.detach().double() if torch.is_tensor(value) else torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return None, f"The function returned a {type(value).__name__}, not a number."
    if t.numel() != 1:
        return None, (f"The function returned {t.numel()} values (shape {tuple(t.shape)}); the normalized margin is "
                      f"one number per weight vector.")
    return float(t.reshape(())), ""


MISTAKES = {  # a plausible wrong formula → what to say when the answers match it
    "forgot ‖w‖": (lambda m, w: m.min(), "Your numbers grow with ‖w‖: divide the smallest y_i ⟨w, x_i⟩ by ‖w‖, so "
                   "that scaling w up (which GD does forever) leaves the margin unchanged."),
    "absolute value": (lambda m, w: m.abs().min() / w.norm(), "Your margins are never negative: a misclassified point "
                       "has y_i ⟨w, x_i⟩ < 0 and must count as negative (multiply by the label, no absolute value)."),
    "mean": (lambda m, w: m.mean() / w.norm(), "You averaged over the points: the margin is set by the closest point, "
             "the smallest y_i ⟨w, x_i⟩."),
    "max": (lambda m, w: m.max() / w.norm(), "You took the farthest point: the margin is the smallest y_i ⟨w, x_i⟩."),
}


@exercise("07.1", hint="The normalized (geometric) margin of a linear classifier through the origin is "
                       "min_i y_i ⟨w, x_i⟩ / ‖w‖: the signed distance of the closest point to the boundary "
                       "(negative when some point is misclassified). x @ w gives every ⟨w, x_i⟩ at once.", code=True)
def normalized_margin(fn) -> Feedback:
    """Pass when `fn(w, x, y)` (w: [d], x: [n, d], y: [n] of ±1, float64 tensors) returns reglab's normalized
    margin, to a relative MARGIN_MATCH, for every weight vector of a fresh run: three seeds on the theme's
    separable data and one on data with a fraction NOISY of flipped labels (a negative margin)."""
    cases = []
    clean = config(steps=MARGIN_STEPS)
    run = train([with_evals(clean.replace(seed=s)) for s in range(3)], progress=False)
    cases += [(f"seed {s}", run.params["W0"][s, :, 0], run.data) for s in range(3)]
    noisy = config(steps=MARGIN_STEPS, label_noise=NOISY)
    run = train(with_evals(noisy), data=dataset(noisy), progress=False)
    cases.append((f"{NOISY:.0%} flipped labels", run.params["W0"][0, :, 0], run.data))
    yours, ours, wrong = [], [], {name: [] for name in MISTAKES}
    for _, w, data in cases:
        w, x, y = (t.detach().to(torch.float64) for t in (w, data.x_train, data.y_train.reshape(-1)))
        got = fn(w.clone(), x.clone(), y.clone())
        value, problem = _scalar(got)
        if value is None:
            return Feedback(False, problem)
        yours.append(value)
        ours.append(float(mg.normalized_margin(w, x, y)[0]))
        m = mg.margins(w, x, y)[0]
        for name, (formula, _) in MISTAKES.items():
            wrong[name].append(float(formula(m, w)))
    error = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(yours, ours))
    pairs = "; ".join(f"{label}: {a:.4g} vs {b:.4g}" for (label, _, _), a, b in zip(cases, yours, ours))
    said = (f"On {len(cases)} weight vectors of a fresh run ({MARGIN_STEPS} GD steps; yours vs reglab's) — {pairs}. "
            f"Largest relative difference {error:.2g} (needed {MARGIN_MATCH}).")
    if MARGIN_MATCH(error):
        return Feedback(True, said)
    for name, (_, hint) in MISTAKES.items():
        if all(abs(a - b) <= 1e-6 * max(abs(b), 1e-12) for a, b in zip(yours, wrong[name])):
            return Feedback(False, said, hint)
    return Feedback(False, said)


# ---------------------------------------------------------------------------------------------
# 07.2: a step size that turns the direction toward the SVM within the budget


@exercise("07.2", hint=f"The direction moves on the clock η·t, so a larger η gets further in {BUDGET} steps — up to "
                       f"a point: a huge first step separates every point with a large ‖w‖, the loss and its gradient "
                       f"become tiny, and the direction stays where that first step put it. Start at η = 1 and grow it by factors of 3.")
def direction_within(step_size: float) -> Feedback:
    """Pass when GD at this η, on the theme's data for BUDGET steps, ends within ANGLE_TO_SVM degrees of the SVM."""
    cfg = with_evals(config(step_size=step_size, steps=BUDGET))
    data = dataset(cfg)
    svm = mg.svm(data.x_train, data.y_train)
    run = train(cfg, data=data, probes=[MarginProbe(svm)], progress=False)
    at = run.diverged_step(0)
    if at is not None:
        return Feedback(False, f"At η = {step_size:g} the run diverged at step {at}.",
                        "Far too large a step: the weights overflowed. Come down by orders of magnitude.")
    angle = _angle(run.params["W0"][0, :, 0], svm.w)
    norm = run.curve("norm").set_index("step")["value"]
    growth = float(norm.iloc[-1] / norm[norm.index > 0].iloc[0])
    said = (f"At η = {step_size:g}, after {BUDGET} steps w is {angle:.2f}° from the SVM direction (needed "
            f"{ANGLE_TO_SVM}°); ‖w‖ grew {growth:.2f}× after step {int(norm.index[norm.index > 0][0])} and the "
            f"training loss ended at {float(run.summary.train_loss.iloc[0]):.2g}.")
    if ANGLE_TO_SVM(angle):
        return Feedback(True, said)
    if FROZEN(growth):
        return Feedback(False, said, "The first steps already made every margin large: ‖w‖ hardly grows after them, "
                                     "the loss and its gradient are tiny, and the direction barely turns. Use a "
                                     "smaller η.")
    return Feedback(False, said, "The direction is still turning, slowly (the angle decays like 1/log(ηt)): the "
                                 "budget is fixed, so a larger η moves it further.")


# ---------------------------------------------------------------------------------------------
# 07.3: weight decay stops short of the SVM


@exercise("07.3", hint="With λ > 0, GD settles at the regularized minimizer w_λ: its direction depends on λ alone "
                       "(smaller λ, closer to the SVM), while the time to settle is roughly 1/(ηλ) steps. Pick a small "
                       f"λ first, then an η that settles it within {BUDGET} steps (without making the run oscillate).")
def settled_near_svm(step_size: float, weight_decay: float) -> Feedback:
    """Pass when GD at (η, λ), on the theme's data for BUDGET steps, has settled (‖w_T‖ within SETTLED of the
    norm of the regularized minimizer w_λ, solved by Newton's method) within NEAR_SVM degrees of the SVM."""
    cfg = validate(with_evals(config(step_size=step_size, weight_decay=weight_decay, steps=BUDGET)))
    if weight_decay == 0:
        return Feedback(False, "At λ = 0 there is no finite minimizer to settle at (‖w‖ grows forever): this "
                               "exercise needs λ > 0.")
    data = dataset(cfg)
    run = train(cfg, data=data, progress=False)
    at = run.diverged_step(0)
    if at is not None:
        return Feedback(False, f"At η = {step_size:g}, λ = {weight_decay:g} the run diverged at step {at}.",
                        "η is far too large: come down by orders of magnitude.")
    svm = mg.svm(data.x_train, data.y_train)
    w, w_lam = run.params["W0"][0, :, 0], regularized_minimizer(data.x_train, data.y_train, weight_decay)
    ratio, angle, target = float(w.norm() / w_lam.norm()), _angle(w, svm.w), _angle(w_lam, svm.w)
    said = (f"At η = {step_size:g}, λ = {weight_decay:g}, after {BUDGET} steps ‖w_T‖ / ‖w_λ‖ = {ratio:.4f} (settled "
            f"needs |ratio − 1| {SETTLED}) and w_T is {angle:.2f}° from the SVM direction (needed {NEAR_SVM}°; the "
            f"minimizer w_λ itself is {target:.2f}° from it).")
    if SETTLED(abs(ratio - 1)) and NEAR_SVM(angle):
        return Feedback(True, said)
    hints = [] if NEAR_SVM(target) else [f"Even the minimizer w_λ is {target:.1f}° from the SVM: at this λ no amount "
                                         f"of training gets closer. Take a smaller λ."]
    if ratio > 1 and not SETTLED(ratio - 1):
        hints.append("‖w‖ overshoots its settled value: η is too large for this λ (the run oscillates instead of "
                     "settling). Take a smaller η.")
    elif not SETTLED(abs(ratio - 1)):
        hints.append(f"‖w‖ is still growing toward ‖w_λ‖: settling takes roughly 1/(ηλ) steps, "
                     f"{1 / (step_size * weight_decay):.3g} here. Take a larger η.")
    return Feedback(False, said, " ".join(hints))

"""Generalization-measure exercises: stop every network at one training loss, then rank measures against the gap
with Kendall's τ and Jiang et al.'s ψ."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from ..claims import at_most, every_seed
from ..engine import train
from ..experiments import generalization as theme
from ..metrics import generalization as gm
from . import Feedback, exercise, one_number

WIDTH, N_TRAIN = 16, 100  # the checks' networks: 64 → 16 → 16 → 10 on the first 100 digits (well under 5 s)

# 09.1: four networks that reach a low loss at very different speeds (η = 0.05 is slow, λ's L2 term holds it up)
CRITERION_GRID = [(0.05, 0.0), (0.05, 0.003), (0.2, 0.0), (0.2, 0.003)]  # (η, λ), batch 16, seed 0
CRITERION_BUDGET = 1200  # steps
REACHED_IN_BUDGET = every_seed(at_most(CRITERION_BUDGET))  # per network: the step it reached the criterion (None: never)
FITS_TRAINING_SET = every_seed(at_most(0.0))  # per network: training error at the criterion

# 09.2 and 09.3: a small grid measured by the theme's own pipeline (η × B × seed, stopped at GRID_CRITERION)
GRID_STEP_SIZES, GRID_BATCH_SIZES, GRID_SEEDS = (0.1, 0.2, 0.3), (8, 32), (0, 1)
GRID_CRITERION, GRID_BUDGET = 0.05, 1000
VARYING = ("step_size", "batch_size")
TAU_AGREES = at_most(1e-9)  # largest |your τ − reglab's τ| over the measure–gap pairs
PSI_AGREES = at_most(1e-9)  # largest |your ψ − reglab's ψ| over the measures and hyperparameters


def _base(max_steps: int):
    return theme.config(width=WIDTH, n_train=N_TRAIN, max_steps=max_steps, device="cpu")


def grid_networks() -> pd.DataFrame:
    """The measured networks of the small grid (one row each: hyperparameters, seed, gap, every measure), trained
    and measured as the theme does."""
    base = _base(GRID_BUDGET)
    configs = [base.replace(step_size=eta, batch_size=b, seed=s)
               for eta in GRID_STEP_SIZES for b in GRID_BATCH_SIZES for s in GRID_SEEDS]
    out = theme.measured_chunk([c.to_text() for c in configs], GRID_CRITERION)
    return theme.measured(theme.networks(configs, out["measures"])).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# 09.1 · the stopping criterion


@exercise("09.1", hint="Too high a criterion stops networks that still misclassify training digits; too low, and the "
                       "slow ones (η = 0.05, or λ = 0.003 whose L2 term holds the loss up) never get there within "
                       f"{CRITERION_BUDGET} steps. Try values between 0.01 and 0.2.")
def stopping_criterion(criterion: float) -> Feedback:
    """Pass when every network of CRITERION_GRID reaches training cross-entropy ≤ `criterion` within
    CRITERION_BUDGET steps (REACHED_IN_BUDGET) and misclassifies no training digit there (FITS_TRAINING_SET)."""
    criterion = theme.THEME.params["criterion"].check("criterion", criterion, "exercise 09.1")
    base = _base(CRITERION_BUDGET).replace(batch_size=16, seed=0)
    configs = [base.replace(step_size=eta, weight_decay=lam) for eta, lam in CRITERION_GRID]
    probe = theme.CriterionProbe(criterion)
    run = train(configs, probes=[probe], stop=probe.done, progress=False)
    with torch.no_grad():
        wrong = (run.model(probe.snapshot, run.data.x_train).argmax(-1) != run.data.y_train).sum(-1)
    steps = [int(s) if s >= 0 else None for s in probe.step.tolist()]
    errors = [int(w) / run.data.n_train for w in wrong.tolist()]
    name = lambda i: f"η = {CRITERION_GRID[i][0]:g}, λ = {CRITERION_GRID[i][1]:g}"
    missed = [name(i) for i, s in enumerate(steps) if s is None]
    reached = [i for i, s in enumerate(steps) if s is not None]
    unfit = [f"{name(i)} ({int(wrong[i])} of {run.data.n_train} wrong)" for i in reached if errors[i] > 0]
    said = (f"Stopping at training cross-entropy {criterion:g}: " + "; ".join(
        f"{name(i)} " + (f"reached it at step {steps[i]} with training error {errors[i]:.2f}" if steps[i] is not None
                         else f"not within {CRITERION_BUDGET} steps") for i in range(len(configs)))
            + f" (needed: reached by step {REACHED_IN_BUDGET}, training error there {FITS_TRAINING_SET}).")
    if not REACHED_IN_BUDGET(steps):
        return Feedback(False, said, f"Not every network got to {criterion:g} ({'; '.join(missed)}): a network that never "
                                     "reaches the criterion is left out of the comparison. Raise it.")
    if not FITS_TRAINING_SET([errors[i] for i in reached]):
        return Feedback(False, said, f"At loss {criterion:g} some networks still misclassify training digits "
                                     f"({'; '.join(unfit)}): a gap measured there mixes underfitting with "
                                     "generalization. Lower it.")
    return Feedback(True, said)


# ---------------------------------------------------------------------------------------------
# 09.2 · Kendall's τ


def _tau_a(m: np.ndarray, g: np.ndarray) -> float:
    i, j = np.triu_indices(len(m), 1)
    return float((np.sign(m[i] - m[j]) * np.sign(g[i] - g[j])).sum() / len(i))


def _mistake(yours: list, ref: list, variants: dict) -> str:
    """The hint of the first variant that reproduces every value the answer got wrong ("" if none does)."""
    off = [k for k, (y, r) in enumerate(zip(yours, ref)) if not abs(y - r) <= 1e-9]
    for hint, values in variants.items():
        if off and all(abs(yours[k] - values[k]) <= 1e-9 for k in off):
            return hint
    return ""


@exercise("09.2", hint="Over every pair of networks i < j add sign(m_i − m_j)·sign(g_i − g_j), then divide by "
                       "√(pairs not tied in m × pairs not tied in g) (τ-b). np.triu_indices(n, 1) gives the pairs.", code=True)
def kendall_tau(kendall) -> Feedback:
    """Pass when `kendall(measure, gap)` (two float arrays, one value per network) returns reglab's τ-b for every
    measure and for η and B against the gap of a freshly trained small grid (TAU_AGREES)."""
    table = grid_networks()
    names, yours, ref, variants = [], [], [], {}
    for col in [*theme.MEASURES, *VARYING]:
        keep = np.isfinite(table[col].to_numpy(float)) & np.isfinite(table["gap"].to_numpy(float))
        m, g = table[col].to_numpy(float)[keep], table["gap"].to_numpy(float)[keep]
        tau = gm.kendall_tau(m, g)
        if not math.isfinite(tau):
            continue
        got = kendall(m.copy(), g.copy())
        value = one_number(got)
        if value is None:
            return Feedback(False, f"kendall(measure, gap) returned {type(got).__name__} {got!r:.60}; it should "
                                   "return one number.")
        names.append(col)
        yours.append(value)
        ref.append(tau)
        for hint, v in {"Your τ has the opposite sign: count a pair as +1 when the measure and the gap order it "
                        "the same way.": -tau,
                        "Your τ matches τ-a (divided by all n(n−1)/2 pairs). Where values tie — η and B repeat "
                        "across networks — τ-b divides by √(pairs not tied in m × pairs not tied in g) instead.":
                            _tau_a(m, g),
                        "That is Spearman's ρ (a correlation of ranks); Kendall's τ counts concordant and "
                        "discordant pairs.": float(pd.Series(m).corr(pd.Series(g), method="spearman")),
                        "That is Pearson's r of the values; Kendall's τ only uses the order of each pair.":
                            float(np.corrcoef(m, g)[0, 1])}.items():
            variants.setdefault(hint, []).append(v)
    diff = max(abs(y - r) if math.isfinite(y) else math.inf for y, r in zip(yours, ref))
    from scipy.stats import kendalltau

    best = max((c for c in names if c in theme.MEASURES), key=lambda c: abs(ref[names.index(c)]))
    shown = [(best, theme.MEASURES[best][0]), ("step_size", "η")]
    scipy_tau = lambda col: kendalltau(*(table.loc[np.isfinite(table[col]) & np.isfinite(table["gap"]), [col, "gap"]]
                                         .to_numpy(float).T)).statistic
    said = (f"On {len(table)} networks trained to training loss {GRID_CRITERION:g}: your τ against the gap for "
            f"{len(names)} columns ({len(theme.MEASURES)} measures, η and B) differs from reglab's by at most "
            f"{diff:.2g} (needed {TAU_AGREES}). "
            + "; ".join(f"τ({label}, gap): yours {yours[names.index(col)]:.4f}, reglab's {ref[names.index(col)]:.4f}, "
                        f"scipy.stats.kendalltau's {scipy_tau(col):.4f}" for col, label in shown) + ".")
    if TAU_AGREES(diff):
        return Feedback(True, said)
    hint = _mistake(yours, ref, variants)
    if not hint and any(abs(y) > 1 for y in yours):
        hint = "τ lies in [−1, 1]: divide the sum over pairs by the number of (untied) pairs."
    return Feedback(False, said, hint)


# ---------------------------------------------------------------------------------------------
# 09.3 · the granulated coefficient ψ


@exercise("09.3", hint="Group the networks by every other hyperparameter and by the seed (table.groupby(...)): each "
                       "group is one sub-sweep, in which only your hyperparameter varies. ψ is the mean of the "
                       "groups' τ between the measure and the gap.", code=True)
def granulated_psi(psi) -> Feedback:
    """Pass when `psi(table, measure, hyperparameter)` returns reglab's ψ_i (`metrics.generalization.granulated_tau`)
    for every measure and for η and B on a freshly trained small grid (PSI_AGREES)."""
    table = grid_networks()
    yours, ref, labels, variants = [], [], [], {}
    for measure in theme.MEASURES:
        want = gm.granulated_tau(table, measure, "gap", VARYING)[0]
        no_seed = gm.granulated_tau(table, measure, "gap", VARYING, fixed=())[0]
        whole = gm.kendall_tau(table[measure], table["gap"])
        for h in VARYING:
            if not math.isfinite(want[h]):
                continue
            got = psi(table.copy(), measure, h)
            value = one_number(got)
            if value is None:
                return Feedback(False, f"psi(table, {measure!r}, {h!r}) returned {type(got).__name__} {got!r:.60}; "
                                       "it should return one number.")
            yours.append(value)
            ref.append(want[h])
            labels.append((measure, h))
            for hint, v in {"Your groups mix seeds: a sub-sweep holds the seed fixed too (group by the other "
                            "hyperparameters and the seed).": no_seed[h],
                            "That is τ over the whole grid: ψ averages τ over the sub-sweeps where only this "
                            "hyperparameter varies.": whole}.items():
                variants.setdefault(hint, []).append(v)
    diff = max(abs(y - r) if math.isfinite(y) else math.inf for y, r in zip(yours, ref))
    k = max(range(len(ref)), key=lambda i: abs(ref[i]))
    measure, h = labels[k]
    groups = len(table) // len(GRID_STEP_SIZES)
    said = (f"On {len(table)} networks ({len(GRID_STEP_SIZES)} η × {len(GRID_BATCH_SIZES)} B × {len(GRID_SEEDS)} "
            f"seeds: {groups} sub-sweeps in η, {len(table) // len(GRID_BATCH_SIZES)} in B): your ψ for {len(yours)} "
            f"(measure, hyperparameter) pairs differs from reglab's by at most {diff:.2g} (needed {PSI_AGREES}). "
            f"ψ_{theme.SYMBOL[h]} of the {theme.MEASURES[measure][0]}: yours {yours[k]:.4f}, reglab's {ref[k]:.4f}.")
    if PSI_AGREES(diff):
        return Feedback(True, said)
    return Feedback(False, said, _mistake(yours, ref, variants))

"""Rare-token exercises: write the loss by frequency bucket; find the λ that hurts only rare tokens, for AdamW and for SGD."""
from __future__ import annotations

import math

import torch

from ..claims import above, at_least, at_most
from ..data import make_dataset
from ..engine import train
from ..experiments.rare_tokens import FREQUENT, K, NAMES, RAREST, TokenStats, config
from ..metrics import tokens as tk
from . import Feedback, exercise

SMALL = {"vocab": 200, "n_train": 5000, "steps": 150, "batch_size": 256}  # the notebook's CI setup: < 1 s per check
BUCKET_MATCH = at_most(1e-4)  # 08.1: largest |yours − reglab's| / reglab's over the buckets and members
RARE_RISE = at_least(1.0)  # 08.2: rise of the rarest bucket's training loss from λ = 0 (nats)
FREQUENT_RISE = at_most(0.3)  # 08.2: rise of the most frequent bucket's training loss from λ = 0 (nats)
SGD_STEP_SIZE = 1.0  # 08.3: plain SGD with coupled L2, as the notebook's control
SGD_LEARNS = at_most(0.8)  # 08.3: SGD's training loss over log V (1: uniform predictions)
SGD_RARE_RISE = at_least(0.15)  # 08.3: rise of the rarest bucket's training loss from λ = 0 (nats)
SGD_RARE_PAYS_MORE = above(0.0)  # 08.3: the rarest bucket's rise minus the most frequent bucket's (nats)


def _data(base):
    return make_dataset(base.data, base.n_train, base.data_seed, **base.data_options)


def _bucket_losses(run, stats: TokenStats) -> dict:
    """reglab's training loss per bucket ({bucket: [M]}), from the run's final parameters."""
    logp = tk.context_log_probs(run.model, run.params, stats.vocab)
    return tk.bucket_means(*tk.pair_token_loss(logp, stats.pairs["train"]), stats.buckets, K)


def _sweep(base, lam):
    """Train λ = 0 and λ (validated by reglab) as one ensemble: (run, per-bucket losses, the data's stats)."""
    data = _data(base)
    stats = TokenStats(data)
    run = train([base.replace(weight_decay=0.0), base.replace(weight_decay=lam)], data=data, progress=False)
    return run, _bucket_losses(run, stats), stats


# ---------------------------------------------------------------------------------------------
# 08.1: the training loss by frequency bucket


def _values(value) -> tuple[torch.Tensor | None, str]:
    """The student's K bucket losses as a float64 tensor, or None and what came back instead."""
    if isinstance(value, dict):
        value = [value[k] for k in sorted(value)]
    try:
        t = value.detach().double() if torch.is_tensor(value) else torch.tensor(
            [float(v) for v in value], dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return None, f"The function returned a {type(value).__name__}, not {K} numbers."
    t = t.reshape(-1)
    if len(t) != K:
        return None, (f"The function returned {len(t)} values; there are {K} frequency buckets ({', '.join(NAMES)}): "
                      f"return one mean loss per bucket, in bucket order.")
    return t, ""


def _token_weighted(losses, targets, buckets):
    """The plausible mistake: the mean of the per-token means in each bucket (every token counts once)."""
    total, count = tk.per_token_loss(losses, targets, len(buckets))
    present = count > 0
    mean = total[0] / count.clamp_min(1)
    return torch.stack([mean[(buckets == k) & present].mean() for k in range(K)]).double()


def _by_example(losses, targets, buckets, reduce):
    b = buckets[targets]
    return torch.stack([reduce(losses[b == k]) for k in range(K)]).double()


@exercise("08.1", hint="Look up each example's bucket through its target token (buckets[targets]), then average the "
                       "losses of the examples in each bucket: a frequent token contributes many examples, a rare one few.", code=True)
def bucket_loss(fn) -> Feedback:
    """Pass when `fn(losses, targets, buckets)` — per-example training losses [n], target token ids [n], the
    frequency bucket of every token [V] (0 = the most frequent) — returns the K mean losses over the examples
    whose target falls in each bucket, matching reglab's to a relative BUCKET_MATCH, for the two members
    (λ = 0 and λ = 1) of a fresh AdamW run."""
    run, ours, stats = _sweep(config(**SMALL), 1.0)
    data = run.data
    logp = tk.context_log_probs(run.model, run.params, stats.vocab)
    x, y = data.x_train.reshape(-1).long(), data.y_train.reshape(-1).long()
    errors, rows, mistakes = [], [], {"token": [], "sum": []}
    for m, lam in enumerate((0.0, 1.0)):
        losses = -logp[m, x, y]
        got = fn(losses.clone(), y.clone(), stats.buckets.clone())
        yours, problem = _values(got)
        if yours is None:
            return Feedback(False, problem)
        ref = torch.stack([ours[k][m] for k in range(K)]).double()
        errors.append(float(((yours - ref).abs() / ref.abs().clamp_min(1e-12)).max()))
        rows.append(f"λ = {lam:g}: " + ", ".join(f"{a:.3f} vs {b:.3f}" for a, b in zip(yours.tolist(), ref.tolist())))
        close = lambda other: bool(torch.allclose(yours, other.to(yours), rtol=1e-4))
        mistakes["token"].append(close(_token_weighted(losses, y, stats.buckets)))
        mistakes["sum"].append(close(_by_example(losses, y, stats.buckets, torch.sum)))
    error = max(errors)
    said = (f"Your bucket losses vs reglab's ({', '.join(NAMES)}) on a fresh run ({SMALL['steps']} AdamW steps, "
            f"V = {SMALL['vocab']}, {SMALL['n_train']} pairs) — {'; '.join(rows)}. Largest relative difference "
            f"{error:.2g} (needed {BUCKET_MATCH}).")
    if BUCKET_MATCH(error):
        return Feedback(True, said)
    if all(mistakes["token"]):
        return Feedback(False, said, "You averaged the per-token means, so every token counts once. The bucket's loss "
                                     "is the mean over its examples: a token seen 50 times weighs 50 times as much as "
                                     "one seen once.")
    if all(mistakes["sum"]):
        return Feedback(False, said, "You summed the losses: divide by the number of examples in each bucket.")
    return Feedback(False, said)


# ---------------------------------------------------------------------------------------------
# 08.2: the λ that depreciates rare tokens and spares frequent ones


def _rises(ours) -> tuple[float, float]:
    """(rarest, most frequent) bucket's rise of the training loss from λ = 0 (member 0) to λ (member 1)."""
    return tuple(float(ours[k][1] - ours[k][0]) for k in (RAREST, FREQUENT))


@exercise("08.2", hint="A λ too small barely moves any bucket; a λ too large pulls every row down and the frequent "
                       "tokens pay too. Try λ between 0.1 and 5 (AdamW's decoupled decay).")
def rare_only_decay(weight_decay: float) -> Feedback:
    """Pass when AdamW at this λ (the notebook's CI setup, against λ = 0) raises the rarest bucket's training loss
    by RARE_RISE nats while the most frequent bucket's rises by FREQUENT_RISE."""
    run, ours, _ = _sweep(config(**SMALL), weight_decay)
    at = run.diverged_step(1)
    if at is not None:
        return Feedback(False, f"At λ = {weight_decay:g} the run diverged at step {at}.")
    rare, frequent = _rises(ours)
    said = (f"From λ = 0 to λ = {weight_decay:g} the rarest bucket's training loss rises by {rare:+.3f} nats (needed "
            f"{RARE_RISE}) and the most frequent bucket's by {frequent:+.3f} (needed {FREQUENT_RISE}).")
    if RARE_RISE(rare) and FREQUENT_RISE(frequent):
        return Feedback(True, said)
    if not FREQUENT_RISE(frequent):
        return Feedback(False, said, "This λ hurts the frequent tokens too: every row is pulled down. Take a smaller λ.")
    return Feedback(False, said, "This λ barely depreciates the rare tokens yet: take a larger λ.")


# ---------------------------------------------------------------------------------------------
# 08.3: plain SGD with coupled L2 — a λ that bites without collapsing


@exercise("08.3", hint="With coupled L2 the penalty's gradient λw competes with the raw loss gradient, which is "
                       "small: the useful λ is orders of magnitude below AdamW's. Try λ from 1e-4 up by factors of 3.")
def sgd_decay(weight_decay: float) -> Feedback:
    """Pass when plain SGD (η = SGD_STEP_SIZE) with coupled L2 at this λ, on the notebook's CI setup, still learns
    (training loss SGD_LEARNS of log V) while the rarest bucket's training loss rises by SGD_RARE_RISE nats from
    λ = 0, more than the most frequent bucket's (SGD_RARE_PAYS_MORE)."""
    base = config(**SMALL, optimizer="sgd", step_size=SGD_STEP_SIZE)
    run, ours, stats = _sweep(base, weight_decay)
    at = run.diverged_step(1)
    if at is not None:
        return Feedback(False, f"At λ = {weight_decay:g} the run diverged at step {at}.")
    fraction = float(run.summary.train_loss.iloc[1]) / math.log(stats.vocab)
    rare, frequent = _rises(ours)
    said = (f"With plain SGD + coupled L2 at λ = {weight_decay:g}, the training loss is {fraction:.2f}× log V (needed "
            f"{SGD_LEARNS}; 1 means uniform predictions); from λ = 0 the rarest bucket's training loss rises by "
            f"{rare:+.3f} nats (needed {SGD_RARE_RISE}), the most frequent bucket's by {frequent:+.3f} (the rare "
            f"rise minus the frequent one: {rare - frequent:+.3f}, needed {SGD_RARE_PAYS_MORE}).")
    if SGD_LEARNS(fraction) and SGD_RARE_RISE(rare) and SGD_RARE_PAYS_MORE(rare - frequent):
        return Feedback(True, said)
    if not SGD_LEARNS(fraction):
        return Feedback(False, said, "The weights decayed (nearly) to zero and every prediction is (nearly) uniform: "
                                     "coupled L2 won against the loss. Take a λ orders of magnitude smaller.")
    if not SGD_RARE_PAYS_MORE(rare - frequent):
        return Feedback(False, said, "The frequent tokens pay as much as the rare ones: this λ is on its way to the "
                                     "uniform collapse. Take a smaller λ.")
    return Feedback(False, said, "The decay is too weak to depreciate the rare tokens: take a larger λ.")

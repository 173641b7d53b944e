"""Transformer-stability exercises: make the attention logits blow up, stop them with qk-layernorm, and compute
the largest attention logit from queries and keys."""
from __future__ import annotations

import math

import torch

from ..claims import at_most, every_seed, fmt_number
from ..config import ConfigError, validate
from ..engine import train
from ..experiments.transformer_stability import LOGITS_BLOW_UP, AttentionProbe, config
from . import Feedback, exercise

# The theme's recipe shrunk to ~2 s a check on one CPU thread: one block, 8 tokens, windows of 6, 200 steps
# (on the CPU wherever the notebook runs, so a check measures the same numbers everywhere).
SMALL = dict(depth=1, vocab=8, context=6, n_train=1000, n_test=500, steps=200, warmup_steps=20, batch_size=64,
             device="cpu")
SEEDS = 4  # each check trains these seeds as one batched ensemble
LARGE_ETA = 0.3  # exercise 11.2's step size: the notebook's "large η"
BLOWS_UP = LOGITS_BLOW_UP  # the theme's rule: every seed's largest |attention logit| during training > 1e4
BOUNDED = every_seed(at_most(10.0))  # largest |attention logit| during training, per seed (qk-layernorm: ≤ √d_head)
TRAINS = every_seed(at_most(0.3))  # final held-out loss − the chain's entropy rate (nats), per seed
MATCHES = at_most(1e-4)  # |your max logit − reglab's| / reglab's, per block
CODE_RUN = dict(SMALL, depth=2, steps=100)  # exercise 11.3: two blocks, one seed, trained at η = 1
CODE_ETA = 1.0
CODE_BATCH = 64  # training windows whose queries and keys the function gets


def _sweep(step_size: float, **settings):
    """SEEDS plain-recipe runs at `step_size` (settings override fields of the RunConfig), with the attention
    probe: (run, largest |attention logit| during training per seed, final loss − entropy rate per seed)."""
    configs = [config(**SMALL).replace(step_size=step_size, seed=s, **settings) for s in range(SEEDS)]
    for c in configs:
        validate(c)
    run = train(configs, probes=[AttentionProbe()], progress=False)
    h = run.history
    largest = h[h.metric == "max_attn_logit"].groupby("run")["value"].max().reindex(range(SEEDS)).tolist()
    gap = (run.summary.test_loss - run.data.info["entropy_rate"]).tolist()
    return run, largest, gap


def _diverged(run) -> str:
    steps = [run.diverged_step(m) for m in range(len(run.configs))]
    gone = [f"seed {m} at step {s}" for m, s in enumerate(steps) if s is not None]
    return f" The loss diverged ({', '.join(gone)})." if gone else ""


@exercise("11.1", hint="A step size where the loss still falls is too small: AdamW at η = 0.1 keeps the logits in "
                       "the hundreds. Go up by factors of 3, but not so far that the loss itself becomes infinite "
                       "within the warm-up (then nothing is left to measure).")
def blowup_step_size(step_size: float) -> Feedback:
    """Pass when, with plain attention at this η, every seed's largest |attention logit| during training exceeds
    the theme's 1e4 (BLOWS_UP)."""
    run, largest, _ = _sweep(step_size)
    said = (f"At η = {step_size:g} without qk-layernorm the largest |attention logit| per seed was "
            f"{fmt_number(largest, '.3g')} (needed {BLOWS_UP}).{_diverged(run)}")
    first = run.configs[0].eval_every  # the first measurement after the start
    early = [m for m in range(SEEDS) if (s := run.diverged_step(m)) is not None and s < first]
    if not BLOWS_UP(largest) and early:
        return Feedback(False, said, "The loss became non-finite before the first measurement, so the logits never had "
                                     "a chance to grow: that η is too large. Look between 0.1 and 10.")
    return Feedback(BLOWS_UP(largest), said)


@exercise("11.2", hint="Two switches, two different logits: z-loss penalizes log Z of the OUTPUT softmax, "
                       "qk-layernorm normalizes the queries and keys whose dot products are the ATTENTION logits. "
                       "Which one bounds |q·k|/√d_head? And keep the z-loss coefficient small (the paper uses 1e-4).")
def stable_settings(use_qk_layernorm: bool, z_loss_coefficient: float) -> Feedback:
    """Pass when, at η = LARGE_ETA, every seed's largest |attention logit| stays BOUNDED and its final held-out
    loss is within TRAINS of the chain's entropy rate."""
    if not isinstance(use_qk_layernorm, bool):
        raise ConfigError(f"use_qk_layernorm must be True or False. Got {use_qk_layernorm!r} instead.")
    run, largest, gap = _sweep(LARGE_ETA, qk_layernorm=use_qk_layernorm, z_loss=z_loss_coefficient)
    bounded, trains = BOUNDED(largest), TRAINS(gap)
    said = (f"At η = {LARGE_ETA:g} with qk_layernorm={use_qk_layernorm}, z-loss {z_loss_coefficient:g}: the largest "
            f"|attention logit| per seed was {fmt_number(largest, '.3g')} (needed {BOUNDED}) and the final loss − "
            f"entropy rate {fmt_number(gap, '.3f')} nats (needed {TRAINS}).{_diverged(run)}")
    hint = ""
    if not bounded and z_loss_coefficient > 0:
        hint = ("z-loss did not stop the attention logits: it keeps the output softmax's log Z near 0, not q·k. "
                "Something must bound the queries and keys themselves.")
    elif bounded and not trains and z_loss_coefficient >= 0.1:
        hint = (f"The attention logits are bounded, but a z-loss of {z_loss_coefficient:g} outweighs the task's own "
                "loss: use a small coefficient such as 1e-4, or 0.")
    return Feedback(bounded and trains, said, hint)


def queries_and_keys(run, x: torch.Tensor, member: int = 0) -> list:
    """Each block's queries and keys of one member on windows x, as pairs of [B, heads, T, d_head] tensors:
    the q and k whose q·kᵀ/√d_head `Transformer.attention_logits` returns."""
    with torch.no_grad():
        return [(q[member], k[member]) for q, k in run.model.queries_and_keys(run.params, x)]


def reference_max_logit(run, x: torch.Tensor, member: int = 0) -> list:
    """reglab's largest |attention logit| of each block for one member on windows x (masked entries left out)."""
    with torch.no_grad():
        logits = run.model.attention_logits(run.params, x)
    return [float(s[member].nan_to_num(neginf=0.0).abs().max()) for s in logits]


def _variants(q: torch.Tensor, k: torch.Tensor) -> dict:
    """The usual slips, computed from q and k: no causal mask, no 1/√d_head, the largest signed logit."""
    d, T = q.shape[-1], q.shape[-2]
    raw = q @ k.transpose(-1, -2)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    return {"mask": float((raw / math.sqrt(d)).abs().max()),
            "scale": float(raw.abs()[..., causal].max()),
            "abs": float((raw / math.sqrt(d))[..., causal].max())}


SLIPS = {"mask": "Query i may only attend to keys j ≤ i (the causal mask): leave out the pairs with j > i.",
         "scale": "The attention logit is q·k divided by √d_head (d_head = q.shape[-1]).",
         "abs": "The largest logit in absolute value: a blown-up logit can be hugely negative."}


@exercise("11.3", hint="From q and k [B, heads, T, d_head]: the logits are q @ kᵀ / √d_head, [B, heads, T, T]; "
                       "keep only query i's keys j ≤ i (torch.ones(T, T).tril() as a mask); return the largest "
                       "absolute value as a float.", code=True)
def max_logit_function(max_attention_logit) -> Feedback:
    """Pass when the function, given each block's queries and keys from a fresh run whose logits have blown up,
    returns reglab's largest |attention logit| of that block to within MATCHES (relative)."""
    run = train([config(step_size=CODE_ETA, seed=0, **CODE_RUN)], progress=False)
    x = run.data.x_train[:CODE_BATCH]
    reference = reference_max_logit(run, x)
    said, ok, slips = [], True, set()
    for b, ((q, k), ref) in enumerate(zip(queries_and_keys(run, x), reference)):
        got = max_attention_logit(q.clone(), k.clone())
        if isinstance(got, torch.Tensor) and got.numel() != 1:
            return Feedback(False, f"Your function returned a tensor of shape {list(got.shape)} for block {b}: return "
                                   "one number, the largest over batch, heads and positions.")
        try:
            got = float(got)
        except (TypeError, ValueError):
            return Feedback(False, f"Your function returned {type(got).__name__} for block {b}, not a number.")
        error = abs(got - ref) / ref
        ok &= MATCHES(error)
        said.append(f"block {b}: yours {got:.6g}, reglab's {ref:.6g} (relative error {error:.1e})")
        if not MATCHES(error):
            slips |= {s for s, v in _variants(q, k).items() if v != ref and abs(got - v) <= 1e-4 * abs(v)}
    text = (f"Queries and keys of {CODE_BATCH} windows from a run at η = {CODE_ETA:g} without qk-layernorm; "
            + "; ".join(said) + f" (needed a relative error {MATCHES}).")
    return Feedback(ok, text, " ".join(SLIPS[s] for s in SLIPS if s in slips))

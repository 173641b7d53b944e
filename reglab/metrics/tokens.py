"""Per-token metrics of next-token models: loss by target token and by frequency bucket, unembedding
row norms by token frequency, the singular values of the learned logit matrix.

Tokens are ranked by how often they occur as a *target* in the training set (rank 0 = most frequent,
ties broken by token id) and grouped into frequency buckets by rank: with the default edges
(0.01, 0.1, 0.5) the buckets are the top 1 %, 1–10 %, 10–50 % and 50–100 % of the vocabulary.

Absent, not NaN: a token that never occurs as a target has no loss. Functions that average losses
return the tokens (or buckets) that have examples and leave the others out — `token_means` gives the
present tokens' ids next to their means, `bucket_means` a dict without the empty buckets. Row norms
exist for every token (its row is a parameter even if the token never occurs).

Every function works on stacked members ([M, ...]) like the rest of reglab.metrics:

    counts = token_counts(y_train, vocab)                  # [V]
    buckets = frequency_buckets(counts)                    # [V] bucket of every token
    pairs = pair_counts(x_train, y_train, vocab)           # [V, V] (context, target) counts
    total, count = pair_token_loss(context_log_probs(model, params, vocab), pairs)   # [M, V], [V]
    bucket_means(total, count, buckets)                    # {bucket: [M]}, empty buckets absent
"""
from __future__ import annotations

import math

import torch

from ..config import ConfigError

DEFAULT_EDGES = (0.01, 0.1, 0.5)  # top 1 %, 1–10 %, 10–50 %, 50–100 % of the vocabulary by frequency


# ---------------------------------------------------------------------------------------------
# frequencies and buckets


def token_counts(targets: torch.Tensor, vocab: int) -> torch.Tensor:
    """How often each token occurs as a target: LongTensor [V]."""
    targets = targets.detach().reshape(-1).long()
    if len(targets) and (int(targets.min()) < 0 or int(targets.max()) >= vocab):
        raise ConfigError(f"Token ids must lie in [0, {vocab - 1}] (the vocabulary); got ids from "
                          f"{int(targets.min())} to {int(targets.max())}.")
    return torch.bincount(targets.cpu(), minlength=vocab)


def frequency_rank(counts: torch.Tensor) -> torch.Tensor:
    """Rank of every token by count, 0 = most frequent; equal counts keep token-id order. LongTensor [V]."""
    counts = counts.detach().cpu().long()
    order = torch.sort(-counts, stable=True).indices  # descending counts, ties by id
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(counts))
    return rank


def bucket_bounds(vocab: int, edges=DEFAULT_EDGES) -> list:
    """The first rank of every bucket after the first: ceil(edge·V), each bucket holding ≥ 1 token."""
    edges = [float(e) for e in edges]
    if any(not 0 < e < 1 for e in edges) or edges != sorted(set(edges)):
        raise ConfigError(f"Frequency-bucket edges must be increasing fractions in (0, 1). Got {edges!r} instead.")
    if vocab < len(edges) + 1:
        raise ConfigError(f"{len(edges) + 1} frequency buckets need a vocabulary of at least {len(edges) + 1} tokens; got {vocab}.")
    bounds = []
    for k, e in enumerate(edges):
        low = bounds[-1] + 1 if bounds else 1
        high = vocab - (len(edges) - k)  # leave one token for every later bucket
        bounds.append(min(max(math.ceil(e * vocab), low), high))
    return bounds


def frequency_buckets(counts: torch.Tensor, edges=DEFAULT_EDGES) -> torch.Tensor:
    """Bucket of every token by frequency rank (0 = the most frequent tokens): LongTensor [V]."""
    rank = frequency_rank(counts)
    bounds = torch.tensor(bucket_bounds(len(counts), edges))
    return torch.bucketize(rank, bounds, right=True)


def bucket_names(edges=DEFAULT_EDGES) -> list:
    """["top 1%", "1–10%", "10–50%", "50–100%"] for the default edges."""
    pct = [0.0, *[100 * float(e) for e in edges], 100.0]
    fmt = lambda v: f"{v:g}"
    return [f"top {fmt(pct[1])}%"] + [f"{fmt(a)}–{fmt(b)}%" for a, b in zip(pct[1:-1], pct[2:])]


# ---------------------------------------------------------------------------------------------
# losses per target token


def per_token_loss(example_losses: torch.Tensor, targets: torch.Tensor, vocab: int):
    """Sum of the per-example losses by target token, and the number of examples per token.

    example_losses: [M, n] (or [n]); targets: [n] token ids. Returns (total [M, V], count [V]); a token
    with count 0 has total 0 and is absent from every mean taken with `token_means` / `bucket_means`.
    """
    losses = example_losses.detach()
    if losses.dim() == 1:
        losses = losses.unsqueeze(0)
    targets = targets.reshape(-1).long().to(losses.device)
    if losses.shape[-1] != len(targets):
        raise ConfigError(f"per_token_loss got {losses.shape[-1]} losses per member for {len(targets)} targets; they must match.")
    total = torch.zeros(losses.shape[0], vocab, dtype=losses.dtype, device=losses.device).index_add_(1, targets, losses)
    return total, token_counts(targets, vocab).to(losses.device)


def pair_counts(contexts: torch.Tensor, targets: torch.Tensor, vocab: int) -> torch.Tensor:
    """N[c, y]: how often the pair (context c, next token y) occurs. LongTensor [V, V]."""
    contexts, targets = contexts.reshape(-1).long().cpu(), targets.reshape(-1).long().cpu()
    if len(contexts) != len(targets):
        raise ConfigError(f"pair_counts got {len(contexts)} contexts for {len(targets)} targets; they must match.")
    token_counts(contexts, vocab), token_counts(targets, vocab)  # range checks
    return torch.bincount(contexts * vocab + targets, minlength=vocab * vocab).view(vocab, vocab)


def context_log_probs(model, params: dict, vocab: int) -> torch.Tensor:
    """log p(y | c) for every context token c and member: [M, V, V]. Exact for any model whose prediction
    depends only on the current token (reglab's bigram model)."""
    device = next(iter(params.values())).device
    with torch.no_grad():
        return torch.log_softmax(model(params, torch.arange(vocab, device=device)), dim=-1)


def pair_token_loss(log_probs: torch.Tensor, pairs: torch.Tensor):
    """The training cross-entropy summed by target token, from log p(y | c) [M, V, V] and the pair counts
    N [V, V]: total[m, y] = −Σ_c N[c, y] log p_m(y | c). Equal to `per_token_loss` of the per-example
    cross-entropy, at the cost of one V × V evaluation instead of n × V. Returns (total [M, V], count [V])."""
    pairs = pairs.to(log_probs.device)
    weights = pairs.to(log_probs.dtype)
    safe = torch.where(pairs > 0, log_probs, torch.zeros((), dtype=log_probs.dtype, device=log_probs.device))
    total = -(weights * safe).sum(-2)  # sum over contexts
    return total, pairs.sum(0)


def token_means(total: torch.Tensor, count: torch.Tensor):
    """(tokens [P], mean loss [M, P]) for the P tokens that occur; absent tokens are left out, never NaN."""
    present = torch.nonzero(count > 0).reshape(-1)
    return present, total[:, present] / count[present].to(total.dtype)


def absent_tokens(count: torch.Tensor) -> list:
    """Ids of the tokens that never occur as a target."""
    return torch.nonzero(count == 0).reshape(-1).tolist()


def bucket_means(total: torch.Tensor, count: torch.Tensor, buckets: torch.Tensor, n_buckets: int | None = None) -> dict:
    """Mean loss over the examples whose target falls in each bucket: {bucket: [M]}. A bucket none of
    whose tokens occurs is absent from the dict."""
    buckets = buckets.to(total.device)
    K = int(buckets.max()) + 1 if n_buckets is None else n_buckets
    onehot = torch.nn.functional.one_hot(buckets, K).to(total.dtype)  # [V, K]
    sums, n = total @ onehot, count.to(total.dtype) @ onehot
    return {k: sums[:, k] / n[k] for k in range(K) if n[k] > 0}


def bucket_example_counts(count: torch.Tensor, buckets: torch.Tensor, n_buckets: int | None = None) -> list:
    """Number of examples whose target falls in each bucket (0: the bucket is absent)."""
    K = int(buckets.max()) + 1 if n_buckets is None else n_buckets
    return [int(count[buckets.to(count.device) == k].sum()) for k in range(K)]


# ---------------------------------------------------------------------------------------------
# unembedding rows and the logit matrix


def row_norms(matrix: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of every row of each member's matrix ([M, V, d] → [M, V]); for the unembedding,
    the norm of each token's output vector."""
    return matrix.detach().norm(dim=-1)


def bucket_norms(norms: torch.Tensor, buckets: torch.Tensor, n_buckets: int | None = None) -> torch.Tensor:
    """Mean row norm per frequency bucket, over every token of the bucket (present or not): [M, K]."""
    buckets = buckets.to(norms.device)
    K = int(buckets.max()) + 1 if n_buckets is None else n_buckets
    onehot = torch.nn.functional.one_hot(buckets, K).to(norms.dtype)
    return (norms @ onehot) / onehot.sum(0).clamp_min(1)


def logit_singular_values(embed: torch.Tensor, unembed: torch.Tensor) -> torch.Tensor:
    """Singular values of the logit matrix L = E Uᵀ (every context × every next token) of each member,
    descending: [M, min(V, d)]. Computed from the d × d factors of thin QRs, never forming V × V."""
    E, U = embed.detach().to(torch.float64), unembed.detach().to(torch.float64)
    if E.shape[-2] > E.shape[-1] and U.shape[-2] > U.shape[-1]:
        E, U = torch.linalg.qr(E, mode="r")[1], torch.linalg.qr(U, mode="r")[1]
    return torch.linalg.svdvals(E @ U.transpose(-1, -2)).to(embed.dtype)


def logit_svd(embed: torch.Tensor, unembed: torch.Tensor):
    """Thin SVD of the logit matrix L = E Uᵀ of each member, L = A diag(s) Bᵀ: (A [M, V, k], s [M, k],
    B [M, V, k]) with k = min(V, d), from thin QRs of E and U (never an SVD of V × V). A's columns are
    directions over contexts, B's over next tokens."""
    E, U = embed.detach().to(torch.float64), unembed.detach().to(torch.float64)
    QE, RE = torch.linalg.qr(E)
    QU, RU = torch.linalg.qr(U)
    a, s, bh = torch.linalg.svd(RE @ RU.transpose(-1, -2), full_matrices=False)
    return (QE @ a).to(embed.dtype), s.to(embed.dtype), (QU @ bh.transpose(-1, -2)).to(embed.dtype)

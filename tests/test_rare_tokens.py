"""Per-token metrics (reglab.metrics.tokens) on hand-computed examples, and the rare-token theme's pieces
on tiny settings."""
import math

import pytest
import torch
import torch.nn.functional as F

from reglab.claims import DIVERGED, HELD
from reglab.config import ConfigError
from reglab.experiments import rare_tokens
from reglab.metrics import tokens
from reglab.models import Bigram


# ---------------------------------------------------------------------------------------------
# frequencies and buckets


def test_counts_and_rank_break_ties_by_token_id():
    counts = tokens.token_counts(torch.tensor([2, 2, 0, 3, 3, 3, 0]), vocab=5)
    assert counts.tolist() == [2, 0, 2, 3, 0]
    # 3 is most frequent; 0 and 2 tie (0 first); 1 and 4 never occur (1 first)
    assert tokens.frequency_rank(counts).tolist() == [1, 3, 2, 0, 4]


def test_token_ids_out_of_range_are_refused():
    with pytest.raises(ConfigError, match="vocabulary"):
        tokens.token_counts(torch.tensor([0, 5]), vocab=5)


def test_default_buckets_are_top_1_10_50_percent():
    counts = torch.arange(500, 0, -1)  # token t has 500 − t occurrences: rank = id
    b = tokens.frequency_buckets(counts)
    assert torch.bincount(b).tolist() == [5, 45, 200, 250]
    assert b[:5].tolist() == [0] * 5 and b[5].item() == 1 and b[50].item() == 2 and b[250].item() == 3
    assert tokens.bucket_names() == ["top 1%", "1–10%", "10–50%", "50–100%"]


def test_small_vocabulary_keeps_every_bucket_nonempty_and_too_small_is_refused():
    b = tokens.frequency_buckets(torch.arange(10, 0, -1))
    assert torch.bincount(b, minlength=4).tolist() == [1, 1, 3, 5]  # ceil(.01·10)=1, max(ceil(1), 2)=2, 5
    assert tokens.bucket_bounds(4) == [1, 2, 3]
    with pytest.raises(ConfigError, match="at least 4 tokens"):
        tokens.bucket_bounds(3)
    with pytest.raises(ConfigError, match="increasing fractions"):
        tokens.bucket_bounds(100, edges=(0.5, 0.1))


# ---------------------------------------------------------------------------------------------
# losses by token: absent, not NaN


def test_per_token_loss_sums_counts_and_leaves_absent_tokens_out():
    losses = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.0, 1.0]])
    targets = torch.tensor([0, 2, 0, 2])
    total, count = tokens.per_token_loss(losses, targets, vocab=4)
    assert total.tolist() == [[4.0, 0.0, 6.0, 0.0], [0.0, 0.0, 2.0, 0.0]]
    assert count.tolist() == [2, 0, 2, 0]
    present, mean = tokens.token_means(total, count)
    assert present.tolist() == [0, 2]
    assert mean.tolist() == [[2.0, 3.0], [0.0, 1.0]]
    assert tokens.absent_tokens(count) == [1, 3]
    assert not torch.isnan(mean).any()


def test_bucket_means_weight_by_examples_and_drop_empty_buckets():
    total = torch.tensor([[4.0, 0.0, 6.0, 0.0]])
    count = torch.tensor([2, 0, 2, 0])
    buckets = torch.tensor([0, 1, 0, 2])  # bucket 0 = tokens 0, 2 (4 examples); buckets 1, 2 have none
    means = tokens.bucket_means(total, count, buckets, n_buckets=3)
    assert set(means) == {0}
    assert means[0].tolist() == [2.5]  # (4 + 6) / 4, not the mean of the token means
    assert tokens.bucket_example_counts(count, buckets, 3) == [4, 0, 0]


def test_pair_loss_equals_per_example_cross_entropy():
    g = [torch.Generator().manual_seed(s) for s in (0, 1)]
    model = Bigram(vocab=7, width=3)
    params = model.init(g)
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randint(0, 7, (200,), generator=gen), torch.randint(0, 6, (200,), generator=gen)  # token 6 never a target
    logits = model(params, x)
    per_example = F.cross_entropy(logits.reshape(-1, 7), y.repeat(2), reduction="none").view(2, -1)
    want_total, want_count = tokens.per_token_loss(per_example, y, 7)
    total, count = tokens.pair_token_loss(tokens.context_log_probs(model, params, 7), tokens.pair_counts(x, y, 7))
    assert torch.allclose(total, want_total, atol=1e-4)
    assert count.tolist() == want_count.tolist() and count[6] == 0 and total[:, 6].tolist() == [0.0, 0.0]
    # the mean over all examples is the full-train loss
    assert torch.allclose(total.sum(1) / 200, per_example.mean(1), atol=1e-6)


def test_pair_loss_is_finite_where_a_never_seen_pair_has_zero_probability():
    log_probs = torch.tensor([[[0.0, -math.inf], [-math.inf, 0.0]]])  # p(1|0) = p(0|1) = 0
    pairs = torch.tensor([[3, 0], [0, 1]])
    total, count = tokens.pair_token_loss(log_probs, pairs)
    assert total.tolist() == [[0.0, 0.0]] and count.tolist() == [3, 1]


# ---------------------------------------------------------------------------------------------
# rows and the logit matrix


def test_row_norms_and_bucket_norms():
    W = torch.tensor([[[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]]])
    norms = tokens.row_norms(W)
    assert norms.tolist() == [[5.0, 1.0, 10.0]]
    assert tokens.bucket_norms(norms, torch.tensor([0, 1, 1]), 2).tolist() == [[5.0, 5.5]]


def test_logit_singular_values_match_the_full_matrix():
    gen = torch.Generator().manual_seed(0)
    E, U = torch.randn(2, 40, 5, generator=gen), torch.randn(2, 30, 5, generator=gen)
    want = torch.linalg.svdvals(E.double() @ U.double().transpose(-1, -2))[:, :5].float()
    assert torch.allclose(tokens.logit_singular_values(E, U), want, rtol=1e-4)


def test_logit_svd_reconstructs_the_logit_matrix():
    gen = torch.Generator().manual_seed(1)
    E, U = torch.randn(2, 40, 5, generator=gen, dtype=torch.float64), torch.randn(2, 30, 5, generator=gen, dtype=torch.float64)
    A, s, B = tokens.logit_svd(E, U)
    assert A.shape == (2, 40, 5) and s.shape == (2, 5) and B.shape == (2, 30, 5)
    assert torch.allclose(A @ torch.diag_embed(s) @ B.transpose(-1, -2), E @ U.transpose(-1, -2), atol=1e-10)
    assert torch.allclose(A.transpose(-1, -2) @ A, torch.eye(5, dtype=torch.float64).expand(2, 5, 5), atol=1e-10)
    assert torch.allclose(s, tokens.logit_singular_values(E, U), atol=1e-10)


# ---------------------------------------------------------------------------------------------
# claim rules at, just inside and just outside their thresholds

EPS = 1e-9


def test_rises_more_needs_every_seed_at_three_times_and_passes_infinity():
    rule = rare_tokens.RISES_MORE
    assert rule([3.0]) and rule([3.0 + EPS]) and not rule([3.0 - EPS])
    assert rule([math.inf, 8.9])  # only the rarest bucket rose
    assert not rule([8.9, 2.9]) and not rule([8.9, None]) and not rule([8.9, math.nan]) and not rule([])


def test_gap_grows_is_strict_and_per_seed():
    rule = rare_tokens.GAP_GROWS
    assert rule([EPS]) and not rule([0.0]) and not rule([-EPS])
    assert not rule([0.2, -0.01]) and not rule([0.2, None])


def test_rows_shrink_more_below_one_on_every_seed():
    rule = rare_tokens.ROWS_SHRINK_MORE
    assert rule([1.0 - EPS]) and not rule([1.0]) and not rule([1.0 + EPS])
    assert not rule([0.7, 1.2]) and not rule([0.7, None])


def test_sgd_uniform_at_least_99_percent_of_log_v():
    rule = rare_tokens.SGD_UNIFORM
    assert rule(0.99) and rule(0.99 + EPS) and not rule(0.99 - EPS) and not rule(None)


# ---------------------------------------------------------------------------------------------
# the theme on tiny settings

TINY = dict(steps=40, vocab=40, n_train=600, batch_size=64, weight_decays=[0.0, 0.5, 1.0], seeds=2, sgd_control=True)
IDS = ["rare_loss_rises_more", "gap_grows_with_decay", "rare_rows_shrink_more", "sgd_collapses_to_uniform"]


@pytest.fixture(scope="module")
def tiny():
    return rare_tokens.run(**TINY)


def test_run_returns_every_claim_and_absent_tokens_as_counts(tiny):
    assert [c.id for c in tiny.claims] == IDS
    assert len(tiny.claim("rare_loss_rises_more").value) == 2  # one value per seed
    # 600 pairs over 40 tokens: some tokens never occur as a target; they are counted, never NaN
    absent = tiny.metrics["absent_tokens"]
    counts = tiny.frames["row_norms"].query("run == 0")["count"]
    assert absent == int((counts == 0).sum()) and absent > 0
    loss = tiny.frames["token_loss"]
    assert loss["loss"].notna().all() and (loss["count"] > 0).all()
    assert len(loss.query("run == 0")) == 40 - absent
    assert tiny.frames["buckets"]["loss"].notna().all()
    # one member per (seed, λ), all in one ensemble
    assert len(tiny.runs["sweep"].configs) == 2 * 3
    assert set(tiny.timings) == {"sweep", "sgd control"}


def test_metric_keys_have_the_one_format(tiny):
    assert "train_loss@bucket=top 1%,wd=0.5" in tiny.metrics and "rise_ratio@seed=1" in tiny.metrics
    assert "norm_ratio@bucket=50–100%,seed=0" in tiny.metrics and "gap@wd=1,seed=1" in tiny.metrics
    assert not [k for k in tiny.metrics if "[" in k or "/" in k]


def test_bucket_means_of_the_run_match_the_engine_loss(tiny):
    """The exposed per-bucket losses recombine, weighted by examples, to the engine's full-train loss."""
    b = tiny.frames["buckets"].query("split == 'train'")
    summary = tiny.runs["sweep"].summary
    for m in range(len(summary)):
        rows = b[b.run == m]
        pooled = (rows.loss * rows.examples).sum() / rows.examples.sum()
        assert pooled == pytest.approx(summary.train_loss[m], rel=1e-4)


def test_sgd_control_collapses_to_uniform_at_large_decay(tiny):
    assert tiny.metrics["sgd_train_loss@wd=1"] == pytest.approx(math.log(40), rel=1e-3)
    assert tiny.metrics["sgd_train_loss@wd=0"] < math.log(40) - 0.1
    assert tiny.claim("sgd_collapses_to_uniform").status == HELD


def test_same_settings_give_the_same_numbers(tiny):
    again = rare_tokens.run(**{**TINY, "sgd_control": False})
    for name in ("train_loss@bucket=50–100%,wd=1", "gap@wd=0.5,seed=1", "norm_ratio@bucket=top 1%,seed=0"):
        assert again.metrics[name] == tiny.metrics[name]
    assert "sgd_collapses_to_uniform" not in [c.id for c in again.claims]


@pytest.mark.parametrize("bad, match", [
    (dict(weight_decays=[0.0, -1.0]), "weight_decays"),
    (dict(weight_decays=[]), "weight_decays"),
    (dict(weight_decay=0.0), "weight_decay"),
    (dict(rank=0), "rank"),
    (dict(batch_size=10_000), "batch_size"),
    (dict(vocab=5), "vocab"),
    (dict(exponent=-1.0), "exponent"),
    (dict(optimizer="adam"), "optimizer"),
    (dict(step_size=-0.1), "step_size"),
    (dict(step_size="fast"), "step_size"),
    (dict(exponent="1.1"), "exponent"),
    (dict(sgd_step_size=0.0), "sgd_step_size"),
    (dict(seeds=0), "seeds"),
    (dict(rank=None), "rank"),
    (dict(widht=3), "widht"),
])
def test_bad_input_is_a_clear_config_error(bad, match):
    with pytest.raises(ConfigError, match=match):
        rare_tokens.run(**{**TINY, **bad})


def test_charts_build_from_the_frames(tiny):
    f = tiny.frames
    for chart in (rare_tokens.bucket_chart(f["buckets"]), rare_tokens.gap_chart(f["buckets"]),
                  rare_tokens.norms_chart(f["row_norms"]), rare_tokens.token_chart(f["token_loss"]),
                  rare_tokens.sgd_chart(f["sgd_buckets"], tiny.metrics["log_vocab"]),
                  rare_tokens.spectrum_chart(f["spectrum"]), rare_tokens.explore_chart(tiny.exploration.initial),
                  rare_tokens.learned(tiny.exploration.initial)):
        assert chart.to_dict()


def test_presets_apply(tiny, presets_apply):
    assert set(tiny.exploration.presets) == set(rare_tokens.PRESETS) and tiny.exploration.learned is rare_tokens.learned
    presets_apply(tiny)


def test_explorer_starts_from_the_sweep_with_the_theme_controls(tiny):
    ex = tiny.explorer(controls=rare_tokens.CONTROLS, headless=True)
    assert ex.names == ["step_size", "batch_size", "weight_decay", "width", "optimizer", "data_options.exponent",
                        "data_options.vocab"]
    assert ex.config.weight_decay == 1.0 and ex.config.width == 32 and ex.config.eval_every == 4
    ex.run_fn = lambda *args: pytest.fail("the explorer retrained instead of drawing the sweep's member")
    assert ex.static_chart().to_dict()


def test_explorer_run_streams_bucket_losses():
    cfg = rare_tokens.config(steps=20, vocab=40, n_train=600, batch_size=64, eval_every=5, optimizer="sgd", step_size=1.0)
    run = rare_tokens.explore(cfg)
    assert run.configs[0].decay == "coupled"
    assert rare_tokens.explore(cfg.replace(optimizer="adamw", step_size=0.03)).configs[0].decay == "decoupled"
    metrics = set(run.history.metric)
    assert {f"train_loss_b{k}" for k in range(4)} <= metrics and "logit_erank" in metrics
    assert sorted(run.history.step.unique()) == [0, 5, 10, 15, 20]
    curves = rare_tokens.explore_chart(run.history).to_dict()
    assert len({row["metric"] for row in curves["datasets"][curves["data"]["name"]]}) == 4  # one line per bucket
    profile = rare_tokens.learned(run.history).to_dict()
    latest = profile["datasets"][profile["data"]["name"]]
    assert {row["step"] for row in latest} == {20} and len(latest) == 4  # the latest step, one point per bucket


def test_collapsed_rows_and_diverged_runs_are_reported_not_raised():
    # plain SGD as the main optimizer: at λ > 0 every row decays to zero (norm ratios 0 vs 0)
    collapsed = rare_tokens.run(**{**TINY, "optimizer": "sgd", "step_size": 1.0, "sgd_control": False})
    shrink = collapsed.claim("rare_rows_shrink_more")
    assert not shrink.held and shrink.value == [None, None] and "0.00 vs 0.00" in shrink.note
    # a step size that blows the SGD control up: the claim says where, with no value
    blown = rare_tokens.run(**{**TINY, "sgd_step_size": 1000.0})
    sgd_claim = blown.claim("sgd_collapses_to_uniform")
    assert sgd_claim.status == DIVERGED and sgd_claim.value is None and "diverged at step" in sgd_claim.note
    assert blown.metrics["sgd_train_loss@wd=0"] is None  # not the pre-divergence loss
    assert rare_tokens.sgd_chart(blown.frames["sgd_buckets"], blown.metrics["log_vocab"]).to_dict()
    # a main sweep that diverges: every claim on it is "diverged", and the charts say so instead of drawing
    gone = rare_tokens.run(**{**TINY, "optimizer": "sgd", "step_size": 1e4, "sgd_control": False})
    assert {c.status for c in gone.claims} == {DIVERGED} and gone.metrics["diverged_members"] == 6
    assert "No finished run" in str(rare_tokens.bucket_chart(gone.frames["buckets"]).to_dict())

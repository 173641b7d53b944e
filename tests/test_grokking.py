"""T4 grokking: the metric functions on hand-computed examples, and the experiment's pieces on tiny settings."""
import math

import pandas as pd
import pytest
import torch

from reglab.config import ConfigError
from reglab.data import make_dataset
from reglab.experiments import grokking as G


# ---------------------------------------------------------------------------------------------
# pure metrics


def test_zero_gradient_fraction_counts_exact_float32_ones():
    # margins 30 and 200 round the true-class softmax to exactly 1 in float32; margin 5 does not
    logits = torch.tensor([[[30.0, 0.0, 0.0], [0.0, 200.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    y = torch.tensor([0, 1, 0, 0])
    frac = G.zero_gradient_fraction(logits, y)
    assert frac.shape == (1,)
    assert frac.item() == pytest.approx(0.5)
    # the same samples have an exactly zero float32 cross-entropy gradient along the true logit
    z = logits[0].clone().requires_grad_()
    torch.nn.functional.cross_entropy(z, y, reduction="sum").backward()
    true_grad = z.grad[torch.arange(4), y]
    assert (true_grad == 0).tolist() == [True, True, False, False]


def test_zero_gradient_fraction_is_per_member_and_stablemax_does_not_collapse():
    logits = torch.tensor([[[40.0, 0.0], [40.0, 0.0]], [[1.0, 0.0], [40.0, 0.0]]])  # [M=2, B=2, C=2]
    y = torch.tensor([0, 0])
    assert G.zero_gradient_fraction(logits, y).tolist() == [1.0, 0.5]
    # StableMax: s(40) = 41, s(0) = 1 -> p = 41/42, far from 1
    p = G.true_class_probability(logits, y, "stablemax_ce")
    assert p[0, 0].item() == pytest.approx(41 / 42)
    assert G.zero_gradient_fraction(logits, y, "stablemax_ce").tolist() == [0.0, 0.0]


def test_first_step_and_delay_ratio():
    steps, values = [0, 10, 20, 30, 40], [0.0, 0.5, float("nan"), 0.95, 0.2]
    assert G.first_step(steps, values, 0.9) == 30
    assert G.first_step(steps, values, 0.99) is None
    assert G.delay_ratio(50, 350) == pytest.approx(7.0)
    assert G.delay_ratio(0, 30) == pytest.approx(30.0)  # a step-0 fit counts as step 1
    assert G.delay_ratio(None, 30) is None and G.delay_ratio(50, None) is None


@pytest.mark.parametrize("args, expected", [
    ((1.0, 0.98, 50, 350), "groks"),         # 350 ≥ 3 × 50
    ((1.0, 0.98, 100, 250), "generalizes"),  # 250 < 3 × 100
    ((0.95, 0.92, None, 200), "generalizes"),  # train never reached 99 %
    ((1.0, 0.30, 50, None), "memorizes"),
    ((0.60, 0.05, None, None), "no learning"),
    ((float("nan"), float("nan"), None, None), "no learning"),
])
def test_regime_thresholds(args, expected):
    assert G.regime(*args) == expected


def test_regime_diverged_wins():
    assert G.regime(1.0, 0.99, 10, 100, diverged=True) == "diverged"


def test_true_labels_recover_the_rule_and_the_corruption_mask():
    data = make_dataset("modular", None, 0, p=7, train_fraction=0.5, corrupt_fraction=0.2)
    rule = G.true_labels(data.x_train, 7)
    bad = data.info["corrupted"]
    assert bad.sum().item() == round(0.2 * data.n_train)
    assert (rule[~bad] == data.y_train[~bad]).all()
    assert (rule[bad] != data.y_train[bad]).all()
    assert (G.true_labels(data.x_test, 7) == data.y_test).all()


def test_summarize_reads_thresholds_from_a_tidy_frame():
    rows = []
    for step, tr, te in [(0, 0.0, 0.0), (10, 0.995, 0.0), (20, 1.0, 0.5), (30, 1.0, 0.92), (40, 1.0, 0.97)]:
        rows += [{"run": 0, "step": step, "metric": "train_acc", "value": tr},
                 {"run": 0, "step": step, "metric": "test_acc", "value": te},
                 {"run": 0, "step": step, "metric": "zero_grad_frac", "value": step / 100}]
    frame = pd.DataFrame(rows).assign(seed=0, weight_decay=1.0, step_size=0.02, diverged_at=float("nan"), variant="v")
    row = G.summarize(frame).iloc[0]
    assert row.step_train_99 == 10 and row.step_test_90 == 30
    assert row.delay_ratio == pytest.approx(3.0) and row.regime == "groks"
    assert row.final_test == pytest.approx(0.97) and row.max_test == pytest.approx(0.97)
    assert row.zero_grad_start == 0.0 and row.zero_grad_frac == pytest.approx(0.4)


# ---------------------------------------------------------------------------------------------
# configs and bad input


def test_config_embedding_rank_factorizes_the_input_layer():
    cfg = G.config(rank=8, width=16, p=11, steps=20, device="cpu")
    assert cfg.rank == 8 and cfg.rank_layer == 0 and cfg.optimizer == "adamw"
    from reglab.engine import train

    run = train(cfg, progress=False)
    assert tuple(run.params["U0"].shape) == (1, 22, 8) and tuple(run.params["V0"].shape) == (1, 8, 16)


@pytest.mark.parametrize("kwargs, name", [
    ({"step_size": -1.0}, "step_size"), ({"loss": "mse"}, "loss"), ({"p": 1000}, "p"), ({"rank": 500}, "rank"),
    ({"train_fraction": 1.5}, "train_fraction"), ({"corrupt_fraction": 0.95}, "corrupt_fraction"),
])
def test_bad_config_input_names_the_parameter(kwargs, name):
    with pytest.raises(ConfigError, match=f"'{name}'"):
        G.config(**kwargs)


@pytest.mark.parametrize("kwargs, name", [
    ({"seeds": 0}, "seeds"), ({"remedies": ["dropout"]}, "remedies"), ({"map_step_sizes": [-0.1]}, "map_step_sizes"),
    ({"batch_size": 5000}, "batch_size"), ({"weight_decay": -1.0}, "weight_decay"),
])
def test_bad_run_input_fails_before_training(kwargs, name):
    with pytest.raises(ConfigError, match=f"'{name}'"):
        G.run(p=11, width=8, steps=10, **kwargs)


# ---------------------------------------------------------------------------------------------
# the experiment on tiny settings


@pytest.fixture(scope="module")
def tiny():
    return G.run(p=13, width=16, steps=40, map_weight_decays=[0.0, 1.0], map_step_sizes=[0.02], seeds=2, device="cpu")


def test_tiny_run_trains_every_experiment_as_ensembles(tiny):
    t = tiny.frames["timings"].set_index("experiment")
    assert t.loc["grokking", "members"] == 4  # 2 seeds × {λ, 0}
    assert t.loc["orthogonal", "members"] == 2 and t.loc["stablemax", "members"] == 2
    assert t.loc["corrupted", "members"] == 2 and t.loc["map", "members"] == 2
    variants = set(tiny.frames["summary"].variant)
    assert variants == {"softmax, λ = 2", "softmax, λ = 0", "⊥AdamW, λ = 0", "StableMax, λ = 0"}
    assert set(tiny.frames["map"].regime) <= set(G.REGIMES)
    assert {"corrupted_memorized", "corrupted_corrected", "train_acc_clean"} <= set(tiny.frames["corrupted"].metric)


def test_tiny_run_claims_and_per_seed_metrics(tiny):
    assert len(tiny.claims) == 8
    for c in tiny.claims:
        assert isinstance(c.held, bool) and c.threshold and "seed 0" in c.note
    assert tiny.metrics["final_test_seeds_held"] in (0, 1, 2)
    assert {"final_test_seed0", "final_test_seed1", "step_train99_seed0", "corrupted_final_train_seed1"} <= set(tiny.metrics)
    # claims are computed from the summary, not written by hand
    main = tiny.frames["summary"].query("variant == 'softmax, λ = 2'")
    claim = next(c for c in tiny.claims if c.claim.startswith("with weight decay"))
    assert claim.value == pytest.approx(round(main.final_test.min(), 4))
    assert claim.held == bool((main.final_test >= G.TEST_GEN).all())


def test_explorer_initial_matches_the_first_seed(tiny):
    frame = tiny.frames["explorer_initial"]
    assert set(frame.columns) == {"run", "step", "metric", "value"} and set(frame.run) == {0}
    run = G.explore(G.config(p=13, width=16, steps=40, device="cpu"))
    fresh = run.history.query("metric == 'test_acc'").value.to_numpy()
    assert fresh.tolist() == pytest.approx(frame.query("metric == 'test_acc'").value.tolist())


def test_charts_build(tiny):
    import altair as alt

    for chart in (G.grokking_chart(tiny.frames["history"], tiny.frames["summary"]),
                  G.collapse_chart(tiny.frames["history"]), G.corrupted_chart(tiny.frames["corrupted"], 0.1),
                  G.regime_chart(tiny.frames["map"]), G.chart(tiny.frames["explorer_initial"])):
        assert isinstance(chart.to_dict(), dict)
        assert isinstance(chart, (alt.HConcatChart, alt.LayerChart))


def test_same_seed_same_numbers():
    a = G.explore(G.config(p=11, width=8, steps=15, weight_decay=0.0, device="cpu"))
    b = G.explore(G.config(p=11, width=8, steps=15, weight_decay=0.0, device="cpu"))
    assert a.history.value.tolist() == b.history.value.tolist()
    assert not math.isnan(a.summary.loc[0, "train_acc"])

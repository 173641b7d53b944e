"""Grokking: the metric functions on hand-computed examples, the claim rules at their thresholds, the
declaration, and the experiment on tiny settings."""
import math

import pandas as pd
import pytest
import torch

from reglab.claims import DIVERGED, HELD, INFO, NOT_HELD
from reglab.config import ConfigError
from reglab.data import make_dataset
from reglab.experiments import grokking as G
from reglab.theme import Result

EPS = 1e-9


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
    assert G.delay_ratio(None, 30) is None and G.delay_ratio(50, None) is None and G.delay_ratio(pd.NA, 30) is None


@pytest.mark.parametrize("args, expected", [
    ((1.0, 0.98, 50, 350), "groks"),         # 350 ≥ 3 × 50
    ((1.0, 0.98, 50, 150), "groks"),         # exactly 3 × later still groks
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


def test_fourier_power_finds_the_frequency_of_a_cosine_embedding():
    p, width = 11, 6
    t = torch.arange(p, dtype=torch.float64).unsqueeze(-1)
    phases = torch.linspace(0, 3, width, dtype=torch.float64)
    a = torch.cos(2 * math.pi * 3 * t / p + phases)  # operand a: frequency 3
    b = 2 * torch.sin(2 * math.pi * 4 * t / p + phases) + 5.0  # operand b: frequency 4 (and a constant, left out)
    spectrum = G.fourier_power(torch.cat([a, b]).unsqueeze(0).float(), p)
    assert spectrum.shape == (1, p // 2)
    assert spectrum.sum().item() == pytest.approx(1.0, abs=1e-6)
    # power ∝ amplitude²: 1 at k = 3, 4 at k = 4
    assert spectrum[0, 2].item() == pytest.approx(0.2, abs=1e-5)
    assert spectrum[0, 3].item() == pytest.approx(0.8, abs=1e-5)
    assert G.top_share(spectrum, 1).item() == pytest.approx(0.8, abs=1e-5)
    assert G.top_share(spectrum, 2).item() == pytest.approx(1.0, abs=1e-5)


def test_embedding_is_the_input_layer_or_its_factorization():
    W = torch.randn(1, 6, 4)
    assert G.embedding({"W0": W}) is W
    U, V = torch.randn(1, 6, 2), torch.randn(1, 2, 4)
    torch.testing.assert_close(G.embedding({"U0": U, "V0": V}), U @ V)


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
    frame = pd.DataFrame(rows).assign(seed=0, weight_decay=1.0, step_size=0.02, diverged_at=pd.NA, variant="v")
    row = G.summarize(frame).iloc[0]
    assert row.step_train_99 == 10 and row.step_test_90 == 30
    assert row.delay_ratio == pytest.approx(3.0) and row.regime == "groks"
    assert row.final_test == pytest.approx(0.97) and row.max_test == pytest.approx(0.97)
    assert row.zero_grad_start == 0.0 and row.zero_grad_frac == pytest.approx(0.4)
    assert row.zero_grad_max == pytest.approx(0.4)
    spike = frame.assign(value=[v if not (m == "zero_grad_frac" and st == 40) else 0.05
                                for m, st, v in zip(frame.metric, frame.step, frame.value)])
    assert G.summarize(spike).iloc[0].zero_grad_max == pytest.approx(0.3)  # the largest value, not the last
    assert pd.isna(row.diverged_at)
    diverged = G.summarize(frame.assign(diverged_at=pd.array([20] * len(frame), dtype="Int64"))).iloc[0]
    assert diverged.diverged_at == 20 and diverged.regime == "diverged"


# ---------------------------------------------------------------------------------------------
# claim rules: at, just inside and just outside their thresholds; one failing or missing seed fails


@pytest.mark.parametrize("rule, t, at, inside, outside", [
    (G.FITTED, G.TRAIN_FIT, True, G.TRAIN_FIT + EPS, G.TRAIN_FIT - EPS),
    (G.GENERALIZED, G.TEST_GEN, True, G.TEST_GEN + EPS, G.TEST_GEN - EPS),
    (G.LATE, G.DELAY, True, G.DELAY + EPS, G.DELAY - EPS),
])
def test_single_value_rules(rule, t, at, inside, outside):
    assert rule(t) is at and rule(inside) and not rule(outside) and not rule(None) and not rule(math.nan)


@pytest.mark.parametrize("rule, t, at, inside, outside", [
    (G.GROKS, 3.0, True, 3.0 + EPS, 3.0 - EPS),  # step(test ≥ 90 %) / step(train ≥ 99 %)
    (G.GENERALIZES, 0.9, True, 0.9 + EPS, 0.9 - EPS),  # final test accuracy
    (G.NO_GENERALIZATION, 0.1, False, 0.1 - EPS, 0.1 + EPS),  # highest test accuracy at λ = 0
    (G.COLLAPSE_RISES, 0.0, False, EPS, -EPS),  # largest − initial exactly-zero-gradient fraction
    (G.UNLEARNS, 0.05, True, 0.05 - EPS, 0.05 + EPS),  # |final train − (1 − ξ)|
])
def test_per_seed_rules_at_their_thresholds_and_for_every_seed(rule, t, at, inside, outside):
    assert rule([t, inside]) is at
    assert rule([inside, inside, inside])
    assert not rule([inside, outside, inside])  # one failing seed fails the claim
    assert not rule([inside, None])  # so does a missing one (never reached, diverged)
    assert not rule([])


def test_thresholds_are_the_stated_ones():
    assert (G.TRAIN_FIT, G.TEST_GEN, G.DELAY, G.NO_GEN, G.UNLEARN_TOL) == (0.99, 0.90, 3.0, 0.10, 0.05)


def test_defaults_follow_the_papers():
    d = G.THEME.defaults()
    assert (d["adam_eps"], d["adam_beta2"]) == (1e-25, 0.99)  # Prieto et al.'s Adam
    assert d["collapse_steps"] >= 1600  # Softmax Collapse appears after ~1,600 steps at η = 0.02
    assert (d["corrupt_train_fraction"], d["corrupt_weight_decay"], d["corrupt_steps"]) == (0.6, 6.0, 800)
    cfg = G.config(p=11, width=8, steps=10, device="cpu")
    assert cfg.adam_eps == 1e-25 and cfg.betas == (0.9, 0.99)


def test_a_seed_that_diverged_makes_the_claim_diverged():
    result = Result()
    rows = pd.DataFrame({"seed": [0, 1], "diverged_at": pd.array([None, 12], dtype="Int64")})
    G._seed_claim(result, "final_test", "s", rows, [0.95, float("nan")], G.GENERALIZES)
    c = result.claim("final_test")
    assert c.status == DIVERGED and "diverged at step 12 (seed 1)" in c.note and c.value == [0.95, None]
    assert result.metrics == {"final_test@seed=0": 0.95, "final_test@seed=1": None, "final_test_seeds_held": 1}
    G._seed_claim(result, "ok", "s", rows.assign(diverged_at=pd.array([None, None], dtype="Int64")), [0.95, 0.9],
                  G.GENERALIZES)
    assert result.claim("ok").status == HELD
    G._seed_claim(result, "info", "s", rows.assign(diverged_at=pd.array([None, None], dtype="Int64")), [0.1, 0.2],
                  G.GENERALIZES, note="paper's budget", informational=True)
    assert result.claim("info").status == INFO and result.claim("info").note == "paper's budget"


# ---------------------------------------------------------------------------------------------
# declaration, configs and bad input


def test_the_declaration_refuses_zero_seeds_and_bad_lists():
    with pytest.raises(ConfigError, match=r"'seeds'.*Got 0"):
        G.THEME.validate({"seeds": 0})
    assert G.THEME.validate({"remedies": [], "map_step_sizes": []})["remedies"] == []


def test_config_embedding_rank_factorizes_the_input_layer():
    cfg = G.config(rank=8, width=16, p=11, steps=20, device="cpu")
    assert cfg.rank == 8 and cfg.rank_layer == 0 and cfg.optimizer == "adamw" and cfg.eval_every == 1
    assert cfg.data_options["corrupt_fraction"] == 0.0  # the base config has clean labels
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
    ({"batch_size": 5000}, "batch_size"), ({"weight_decay": -1.0}, "weight_decay"), ({"map_steps": 0}, "map_steps"),
])
def test_bad_run_input_fails_before_training(kwargs, name):
    with pytest.raises(ConfigError, match=f"'{name}'"):
        G.run(p=11, width=8, steps=10, **kwargs)


# ---------------------------------------------------------------------------------------------
# the experiment on tiny settings


@pytest.fixture(scope="module")
def tiny():
    return G.run(p=13, width=16, steps=40, collapse_steps=60, corrupt_steps=40, map_weight_decays=[0.0, 1.0],
                 map_step_sizes=[0.02], map_steps=40, seeds=2, device="cpu")


def test_tiny_run_trains_every_experiment_as_ensembles(tiny):
    members = {name: len(run.configs) for name, run in tiny.runs.items()}
    assert members == {"grokking": 2, "collapse": 2, "orthogonal": 2, "stablemax": 2, "corrupted": 2, "map": 2}
    collapse = tiny.runs["collapse"].configs
    assert {c.steps for c in collapse} == {60} and {c.weight_decay for c in collapse} == {0.0}
    corrupted = tiny.runs["corrupted"].configs[0]  # the corrupted-labels experiment's own settings
    assert (corrupted.data_options["train_fraction"], corrupted.weight_decay, corrupted.steps) == (0.6, 6.0, 40)
    assert all(c.adam_eps == 1e-25 and c.betas == (0.9, 0.99) for r in tiny.runs.values() for c in r.configs)
    assert set(tiny.timings) == set(members)
    variants = set(tiny.frames["summary"].variant)
    assert variants == {"softmax, λ = 2", "softmax, λ = 0", "⊥AdamW, λ = 0", "StableMax, λ = 0"}
    assert set(tiny.frames["map"].regime) <= set(G.REGIMES)
    assert {"corrupted_memorized", "corrupted_corrected", "train_acc_clean"} <= set(tiny.frames["corrupted"].metric)


def test_tiny_run_claims_and_per_seed_metrics(tiny):
    assert [c.id for c in tiny.claims] == ["delay_ratio", "final_test", "lambda0_max_test", "lambda0_zero_grad",
                                           "orthogonal_final_test", "stablemax_final_test", "remedy_final_test",
                                           "corrupted_final_train", "corrupted_final_test"]
    assert all(c.status in (HELD, NOT_HELD) for c in tiny.claims if c.id != "stablemax_final_test")
    stablemax = tiny.claim("stablemax_final_test")  # a faithful non-reproduction, with the paper's budget
    assert stablemax.status == INFO and "80,000–100,000 full-batch epochs" in stablemax.note
    table = tiny.frames["summary"].set_index(["variant", "seed"]).final_test
    best = [max(table["⊥AdamW, λ = 0", s], table["StableMax, λ = 0", s]) for s in (0, 1)]
    assert tiny.claim("remedy_final_test").value == pytest.approx(best)
    zero = tiny.frames["summary"].query("variant == 'softmax, λ = 0'").sort_values("seed")
    assert tiny.claim("lambda0_zero_grad").value == pytest.approx((zero.zero_grad_max - zero.zero_grad_start).tolist())
    assert {"final_test@seed=0", "final_test@seed=1", "step_train99@seed=0", "corrupted_final_train@seed=1",
            "corrupted_memorized@seed=0", "map_memorizes"} <= set(tiny.metrics)
    assert not any("_seed0" in k or "_s0" in k for k in tiny.metrics)
    # claims are computed from the summary, not written by hand
    main = tiny.frames["summary"].query("variant == 'softmax, λ = 2'").sort_values("seed")
    claim = tiny.claim("final_test")
    assert claim.value == pytest.approx(main.final_test.tolist())
    assert claim.held == bool((main.final_test >= G.TEST_GEN).all())
    assert tiny.metrics["final_test_seeds_held"] == int((main.final_test >= G.TEST_GEN).sum())
    gaps = (tiny.frames["corrupted_summary"].final_train - 0.9).abs().tolist()
    assert tiny.claim("corrupted_final_train").value == pytest.approx(gaps)
    assert set(tiny.frames["per_seed"].columns) == {"0", "1"} and "final_test" in tiny.frames["per_seed"].index


def test_explorer_starts_from_the_first_seed_at_lambda(tiny):
    e = tiny.exploration
    assert e.config.weight_decay == 2.0 and e.config.seed == 0 and e.run is G.explore
    assert set(e.initial.run) == {0}
    assert {"step_size", "weight_decay", "rank", "steps", "seed", "p", "train_fraction", "corrupt_fraction", "loss",
            "orthogonal_grad"} == set(e.controls)
    assert e.learned is G.learned and e.presets is G.PRESETS
    assert {f"fourier_{k}" for k in range(1, 7)} <= set(e.initial.metric)  # p = 13: k = 1 … 6
    assert e.controls["p"].field == "data_options.p"
    run = G.explore(G.config(p=13, width=16, steps=40, device="cpu"))
    fresh = run.history.query("metric == 'test_acc'").value.to_numpy()
    assert fresh.tolist() == pytest.approx(e.initial.query("metric == 'test_acc'").value.tolist())


def test_explorer_builds_every_control(tiny):
    explorer = tiny.explorer(headless=True)
    assert {"weight_decay", "batch_size", "orthogonal_grad", "data_options.p",
            "data_options.corrupt_fraction"} <= set(explorer.specs)
    assert explorer.specs["weight_decay"].has_off  # the λ = 0 switch
    try:
        for name, preset in G.PRESETS.items():
            assert 2 <= len(G.PRESETS) <= 4 and preset["question"]
            assert explorer.apply_preset(name) == [], name  # every preset value is accepted as it is
            assert all(explorer.values[k] == v for k, v in preset["values"].items()), name
    finally:
        explorer.close()


def test_learned_view_draws_the_embedding_spectrum(tiny):
    frame = tiny.exploration.initial
    spec = G.spectrum_frame(frame)
    assert set(spec.frequency) == set(range(1, 7))
    last = spec[spec.step == spec.step.max()]
    assert last.share.sum() == pytest.approx(1.0, abs=1e-4)
    assert 0 < _width(G.learned(frame, tiny.exploration.config).to_dict()) <= 960
    assert "no embedding spectrum" in str(G.learned(frame[~frame.metric.str.startswith("fourier_")]).to_dict())


def _width(spec: dict) -> int:
    if "hconcat" in spec:
        return sum(_width(s) for s in spec["hconcat"])
    return max([spec.get("width", 0)] + [_width(s) for s in spec.get("layer", [])])


def test_charts_build_and_fit_a_notebook_column(tiny):
    for chart in (G.grokking_chart(tiny.frames["history"], tiny.frames["summary"]),
                  G.collapse_chart(tiny.frames["history"]), G.corrupted_chart(tiny.frames["corrupted"], 0.1),
                  G.regime_chart(tiny.frames["map"]), G.chart(tiny.exploration.initial),
                  G.fourier_chart(tiny.frames["history"])):
        assert 0 < _width(chart.to_dict()) <= 960


def test_same_seed_same_numbers():
    a = G.explore(G.config(p=11, width=8, steps=15, weight_decay=0.0, device="cpu"))
    b = G.explore(G.config(p=11, width=8, steps=15, weight_decay=0.0, device="cpu"))
    assert a.history.value.tolist() == b.history.value.tolist()
    assert not math.isnan(a.summary.loc[0, "train_acc"])

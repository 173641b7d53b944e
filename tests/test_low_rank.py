"""T3 · weight decay and low rank: metric functions on hand-computed examples, the claim rules at their thresholds,
experiment pieces and the whole run on tiny settings."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from reglab.claims import DIVERGED, HELD, INFO, verdict
from reglab.config import ConfigError
from reglab.engine import DIVERGENCE_FACTOR, train
from reglab.experiments import low_rank
from reglab.metrics import bounds, numerical_rank
from reglab.models import MLP, build_model


# ---------------------------------------------------------------------------------------------
# bounds


def test_norm_21_sums_the_norms_of_each_units_incoming_weights():
    w = torch.tensor([[[3.0, 0.0], [4.0, 1.0]]])  # [M=1, in=2, out=2]: columns (3, 4) and (0, 1)
    assert bounds.norm_21(w).item() == pytest.approx(5.0 + 1.0)


def test_spectral_complexity_single_layer():
    w = torch.diag(torch.tensor([2.0, 1.0]))[None]  # ‖W‖₂ = 2, ‖W‖₂,₁ = 3 → 2 · (1.5^(2/3))^(3/2) = 3
    assert bounds.spectral_complexity([w]).item() == pytest.approx(3.0, rel=1e-5)


def test_two_layer_bounds_by_hand():
    w0 = torch.eye(2)[None]  # s = 1, ‖·‖₂,₁ = 2
    w1 = torch.tensor([[[3.0], [4.0]]])  # s = 5, ‖·‖₂,₁ = 5
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]])  # ‖X‖_F / n = 5 / 2
    spec = 5 * (2 ** (2 / 3) + 1) ** 1.5
    assert bounds.spectral_complexity([w0, w1]).item() == pytest.approx(spec, rel=1e-5)
    assert bounds.spectral_bound([w0, w1], x).item() == pytest.approx(2.5 * spec, rel=1e-5)
    # rank constraint 1 on the first layer: Σ √(r d_out) = √(1·2) + √(1·1)
    assert bounds.rank_complexity([w0, w1], [1, None]).item() == pytest.approx(5 * (math.sqrt(2) + 1), rel=1e-5)
    # unconstrained: r = min(in, out) = 2 for the first layer
    assert bounds.rank_bound([w0, w1], x).item() == pytest.approx(2.5 * 5 * (2 + 1), rel=1e-5)


def test_rank_bound_grows_with_the_constraint_and_layer_ranks_cap():
    w = torch.randn(1, 6, 4)
    assert bounds.layer_ranks([w], [10]) == [4]
    values = [bounds.rank_complexity([w], [r]).item() for r in (1, 2, 3, 4)]
    assert all(a < b for a, b in zip(values, values[1:]))
    with pytest.raises(ValueError):
        bounds.layer_ranks([w, w], [1])


def test_model_weights_and_rank_constraints_of_a_factorized_mlp():
    model = MLP(5, 1, width=8, depth=1, rank=3, rank_layer=0, bias=False)
    params = model.init([torch.Generator().manual_seed(0)])
    weights = bounds.model_weights(model, params)
    assert [tuple(w.shape) for w in weights] == [(1, 5, 8), (1, 8, 1)]
    assert bounds.model_rank_constraints(model, params) == [3, None]
    assert torch.linalg.matrix_rank(weights[0][0]).item() == 3


# ---------------------------------------------------------------------------------------------
# claim rules: at, just inside and just outside each threshold; one failing or missing seed fails


EPS = 1e-9
RULES = {  # rule: (threshold, holds at the threshold, holds below it)
    "RANK_FALLS": (0.0, False, True),
    "NUCLEAR_GAP": (0.05, True, True),
    "SOFT_THRESHOLD": (0.01, True, True),
    "TRACKS_GAP": (0.0, False, False),
    "SAM_FITS": (1e-3, False, True),
    "LOWER_FEATURE_RANK": (0.7, True, True),
}


@pytest.mark.parametrize("name", list(RULES))
def test_rule_at_just_inside_and_just_outside_its_threshold(name):
    rule, (t, at, upper) = getattr(low_rank, name), RULES[name]
    inside, outside = (t - EPS, t + EPS) if upper else (t + EPS, t - EPS)
    assert rule([t, t, t]) is at
    assert rule([inside, inside, inside])
    assert not rule([outside, outside, outside])
    assert not rule([inside, outside, inside])  # one failing seed
    assert not rule([inside, None, inside]) and not rule([inside, math.nan]) and not rule([])  # a missing seed


def test_every_rule_constant_is_tested():
    declared = {n for n, v in vars(low_rank).items() if n.isupper() and type(v).__name__ == "Rule"}
    assert declared == set(RULES)


# ---------------------------------------------------------------------------------------------
# experiment 1 pieces


def test_predicted_spectrum_soft_thresholds_a_factorized_w_and_shrinks_a_plain_one():
    w = np.diag([3.0, 1.0, 0.5])
    assert low_rank.predicted_spectrum(w, 0.7, 3) == pytest.approx([2.3, 0.3, 0.0])  # U Vᵀ: (σ − λ)₊
    assert low_rank.predicted_spectrum(w, 0.7, 1) == pytest.approx([2.3, 0.0, 0.0])  # rank ≤ 1 keeps the largest
    assert low_rank.predicted_spectrum(np.diag([4.0, 2.0]), 1.0, None) == pytest.approx([2.0, 1.0])  # plain W: σ / (1 + λ)


def test_nuclear_gap_is_zero_for_a_balanced_factorization_and_known_when_unbalanced():
    rng = np.random.default_rng(0)
    a, _ = np.linalg.qr(rng.standard_normal((4, 2)))
    b, _ = np.linalg.qr(rng.standard_normal((3, 2)))
    s = np.array([3.0, 1.0])
    u = torch.tensor(a * np.sqrt(s))[None]
    v = torch.tensor((np.sqrt(s)[:, None] * b.T))[None]
    params = {"U0": u, "V0": v}
    assert low_rank.factor_norm(params).item() == pytest.approx(4.0)  # (tr S + tr S) / 2
    assert low_rank.nuclear_gap(params).item() == pytest.approx(0.0, abs=1e-9)
    unbalanced = {"U0": 2 * u, "V0": v / 2}  # (4 tr S + tr S / 4) / 2 = 2.125 tr S
    assert low_rank.nuclear_gap(unbalanced).item() == pytest.approx(1.125, rel=1e-6)


def test_matrix_regression_is_whitened_and_w_ls_is_least_squares():
    data = low_rank.matrix_regression(n=40, d_in=6, d_out=5, spectrum=(2.0, 1.0), seed=3, n_test=10)
    x, y = data.x_train.double().numpy(), data.y_train.double().numpy()
    assert x.T @ x == pytest.approx(40 * np.eye(6), abs=1e-3)
    assert data.info["w_ls"] == pytest.approx(np.linalg.lstsq(x, y, rcond=None)[0], abs=1e-4)
    assert np.linalg.matrix_rank(data.info["w_star"]) == 2
    with pytest.raises(ConfigError):
        low_rank.matrix_regression(n=4, d_in=6)


def test_the_budget_grows_with_one_over_eta_lambda_up_to_its_cap():
    assert low_rank.balance_steps(0.1, 0.5) == 20 and low_rank.balance_steps(0.1, 0.0) is None
    assert low_rank.decay_budget(1000, 0.1, [0.0, 0.1, 0.3]) == 1000  # 1/(ηλ) = 100 ≤ 1000: unchanged
    assert low_rank.decay_budget(1000, 0.1, [0.0, 0.003]) == 3334  # raised to ⌈1/(ηλ)⌉
    assert low_rank.decay_budget(1000, 0.1, [1e-6]) == low_rank.BALANCE_CAP  # capped
    assert low_rank.decay_budget(50_000, 0.1, [1e-6]) == 50_000  # never lowered
    assert low_rank.decay_budget(1000, 0.1, [0.0]) == 1000  # no λ > 0: nothing to balance


def test_a_lambda_too_small_to_balance_is_reported_not_yet_balanced(monkeypatch):
    monkeypatch.setattr(low_rank, "BALANCE_CAP", 200)  # λ = 1e-3 needs 10,000 steps at η = 0.1
    result = low_rank.run(**{**TINY, "weight_decays": [0.0, 1e-3, 0.3], "seeds": 1})
    claim = result.claim("nuclear_norm_penalty")
    assert result.metrics["decay_steps"] == 200 and "capped at 200" in claim.note
    assert "not yet balanced" in claim.note and "λ = 0.001 (ηλt = 0.02, needs 10000 steps)" in claim.note
    assert claim.status == HELD  # judged on λ = 0.3 alone
    only_small = low_rank.run(**{**TINY, "weight_decays": [0.0, 1e-3], "seeds": 1}).claim("nuclear_norm_penalty")
    assert only_small.status == INFO and "not yet balanced" in only_small.note


def test_the_explorer_says_when_u_and_v_are_not_yet_balanced():
    cfg = low_rank.config(0.01, steps=500)
    assert low_rank.balance_note(cfg) == "not yet balanced: ηλt = 0.5 < 1; U and V need about 1/(ηλ) = 1,000 steps"
    assert low_rank.balance_note(cfg.replace(steps=1000)) == ""
    assert "nothing balances" in low_rank.balance_note(cfg.replace(weight_decay=0.0))
    assert low_rank.balance_note(cfg.replace(rank=None)) == ""  # a plain W has no factors


def test_weight_decay_reaches_soft_thresholding_and_the_nuclear_identity():
    run, data = low_rank.train_spectrum([low_rank.config(lam, steps=300) for lam in (0.0, 0.5)])
    gap = low_rank.nuclear_gap(run.params)
    assert gap[1].item() < 1e-3  # λ = 0.5: balanced
    assert gap[0].item() > 0.05  # λ = 0: keeps the imbalance of its initialization
    final = run.history[run.history.step == 300].pivot(index="run", columns="metric", values="value")
    assert final.loc[1, "svt_error"] < 0.05
    assert final.loc[1, "effective_rank"] < final.loc[0, "effective_rank"]


# ---------------------------------------------------------------------------------------------
# experiments 2 and 3 pieces


def test_loglog_slope():
    assert low_rank.loglog_slope([1, 2, 4, 8], [3, 3 * 2 ** 0.5, 6, 6 * 2 ** 0.5]) == pytest.approx(0.5)
    assert low_rank.loglog_slope([1, 2, 4], [5, -1, 20]) == pytest.approx(1.0)  # a non-positive value is left out
    assert math.isnan(low_rank.loglog_slope([1, 1], [2, 3])) and math.isnan(low_rank.loglog_slope([1], [2]))


def test_spearman():
    assert low_rank.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert low_rank.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert low_rank.spearman([1, 2, 3, 4], [1, 1, 2, 2]) == pytest.approx(np.corrcoef([1, 2, 3, 4], [1.5, 1.5, 3.5, 3.5])[0, 1])
    assert math.isnan(low_rank.spearman([1, 2, 3], [5, 5, 5]))


def test_feature_rank_and_active_neurons_by_hand():
    feats = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])  # M = 2, n = 2, width 3
    assert low_rank.active_neurons(feats).tolist() == [2, 1]
    assert numerical_rank(feats, low_rank.FEATURE_ENERGY).tolist() == [2, 1]


def test_teacher_student_matches_the_sam_setup():
    data = low_rank.teacher_student(seed=1)
    assert data.x_train.shape == (20, 3) and data.y_train.shape == (20, 1)
    assert data.x_train.norm(dim=1) == pytest.approx(torch.ones(20), abs=1e-5)


def test_teacher_student_at_seed_4_is_the_sam_codes_data_and_leaves_the_global_generators_alone():
    state = torch.random.get_rng_state()
    y = low_rank.teacher_student().y_train.flatten()  # printed by tml-epfl/sam-low-rank-features (ReLU, seed 4)
    assert y[:8].tolist() == pytest.approx([-0.4467, -0.8946, 0.2728, 0.2902, -0.8578, -0.2734, -1.2403, -0.3220], abs=1e-4)
    assert y[-4:].tolist() == pytest.approx([0.3070, 0.4649, 0.3832, -0.2585], abs=1e-4)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_sam_step_is_the_reference_codes_and_seed_0_blows_up_in_plain_pytorch_too():
    """The SAM code's loop written out in float64 (normalized ascent of ρ, the gradient there, SGD with lr 0.1 on
    (f − y)²) from reglab's seed-0 initialization and sample order: the same losses, and the same blow-up."""
    cfg, data = low_rank.sam_config(0.4, steps=14), low_rank.teacher_student()
    run = train([cfg], data=data, progress=False)
    generator = torch.Generator().manual_seed(cfg.seed)  # the engine's: the initialization, then the sample order
    model = build_model(cfg, data)
    w = {k: v[0].double().requires_grad_() for k, v in model.init([generator]).items()}
    order = torch.cat([torch.randperm(data.n_train, generator=generator) for _ in range(2)])
    x, y = data.x_train.double(), data.y_train.double()
    f = lambda w, i: torch.relu(x[i] @ w["W0"] + w["b0"]) @ w["W1"] + w["b1"]
    losses = []
    for i in order[: cfg.steps].tolist():
        loss = (f(w, [i]) - y[[i]]).pow(2).mean()
        g = torch.autograd.grad(loss, list(w.values()))
        norm = torch.sqrt(sum(gi.pow(2).sum() for gi in g))
        shifted = {k: v + 0.4 * gi / norm for (k, v), gi in zip(w.items(), g)}
        g = torch.autograd.grad((f(shifted, [i]) - y[[i]]).pow(2).mean(), list(shifted.values()))
        w = {k: (v - 0.1 * gi).detach().requires_grad_() for (k, v), gi in zip(w.items(), g)}
        losses.append(loss.item() / 2)  # reglab's ½(f − y)²
    assert run.diverged_step(0) == 11
    torch.testing.assert_close(run.step_losses[:8, 0].double(), torch.tensor(losses[:8], dtype=torch.float64), rtol=1e-3, atol=1e-6)
    blown = [t + 1 for t, v in enumerate(losses) if v > DIVERGENCE_FACTOR * max(losses[0], 1.0)]
    assert blown and blown[0] == 11  # the plain loop passes the same limit at the same step


def test_sam_student_uses_the_reference_init_and_budget():
    cfg = low_rank.sam_config(0.4)
    assert cfg.init_std == 0.3 and cfg.steps == 20000 and cfg.sam_fraction == 0.5 and cfg.batch_size == 1
    assert low_rank.THEME.defaults()["sam_steps"] == 20000


def _sam_rows(diverged_at: dict):
    """The compared rows (ρ = 0 and 0.4) of seeds 0–2, diverged_at given as {(ρ, seed): step}."""
    rows = [{"sam_radius": rho, "seed": s, "diverged_at": diverged_at.get((rho, s))} for rho in (0.0, 0.4) for s in range(3)]
    frame = pd.DataFrame(rows)
    return frame.astype({"diverged_at": "Int64"})


def test_sam_claims_are_judged_on_the_seeds_that_trained_and_name_the_one_that_diverged():
    assert low_rank.seeds_that_trained(_sam_rows({}), [0, 1, 2]) == ([0, 1, 2], {}, "")
    trained, diverged, note = low_rank.seeds_that_trained(_sam_rows({(0.4, 0): 11}), [0, 1, 2])
    assert trained == [1, 2] and diverged == {}
    assert note == "; judged on the 2 of 3 seeds that trained (seed 0 diverged at step 11 at ρ = 0.4)"
    trained, _, note = low_rank.seeds_that_trained(_sam_rows({(0.0, 2): 5, (0.4, 0): 11}), [0, 1, 2])
    assert trained == [1] and "seed 0 diverged at step 11 at ρ = 0.4; seed 2 diverged at step 5 at ρ = 0" in note


def test_sam_claims_read_diverged_when_no_seed_trained():
    trained, diverged, note = low_rank.seeds_that_trained(_sam_rows({(0.4, s): 3 + s for s in range(3)}), [0, 1, 2])
    assert trained == [] and note == ""
    assert diverged == {"ρ = 0.4, seed 0": 3, "ρ = 0.4, seed 1": 4, "ρ = 0.4, seed 2": 5}
    assert verdict("sam_fits", "fits", [None] * 3, low_rank.SAM_FITS, diverged=diverged).status == DIVERGED


# ---------------------------------------------------------------------------------------------
# the whole run on tiny settings

TINY = dict(weight_decays=[0.0, 0.3], steps=100, ranks=[1, 2], rank_steps=40, sam_radii=[0.0, 0.4], sam_steps=40, seeds=2)
IDS = ["effective_rank_falls", "nuclear_norm_penalty", "soft_thresholding", "bound_scaling_in_r",
       "rank_bound_tracks_gap", "sam_fits", "sam_lowers_feature_rank"]


def test_tiny_run_returns_claims_metrics_frames_and_the_explorer():
    result = low_rank.run(**TINY)
    assert [c.id for c in result.claims] == IDS
    assert all(isinstance(c.value, list) and len(c.value) == 2 for c in result.claims[:-2])  # one value per seed
    assert {"spectrum", "history", "ranks_vs_decay", "rank_sweep", "sam", "sam_history"} <= set(result.frames)
    assert set(result.frames["rank_sweep"]["rank"]) == {1, 2}
    assert "effective_rank@wd=0.3" in result.metrics and "feature_rank_ratio@seed=1" in result.metrics
    assert "rank_over_spectral_bound@r=1,seed=0" in result.metrics
    # seed 0 diverges at ρ = 0.4 in its first steps (as in plain PyTorch): no feature rank for it, the claims say where
    sam = result.frames["sam"].set_index(["sam_radius", "seed"])
    assert sam.diverged_at[(0.4, 0)] == 11 and math.isnan(sam.feature_rank[(0.4, 0)]) and sam.feature_rank[(0.0, 0)] > 0
    assert result.metrics["sam_diverged_at@rho=0.4,seed=0"] == 11
    for id in ("sam_fits", "sam_lowers_feature_rank"):  # judged on seed 1 alone, seed 0 named with its step
        claim = result.claim(id)
        assert claim.status != DIVERGED and len(claim.value) == 1 and not math.isnan(claim.value[0])
        assert "judged on the 1 of 2 seeds that trained (seed 0 diverged at step 11 at ρ = 0.4)" in claim.note
    assert "feature_rank_ratio@seed=0" not in result.metrics
    assert set(result.timings) == {"weight decay sweep", "rank sweep", "SAM sweep"}
    # the explorer starts from the sweep's member λ = 0.3, seed 0, drawn without training
    initial = result.exploration.initial
    assert initial["run"].eq(0).all() and len(initial) == len(result.frames["history"].query("weight_decay == 0.3 and seed == 0"))
    explorer = result.explorer(headless=True)
    assert set(explorer.specs) == {"step_size", "batch_size", "weight_decay", "rank", "steps", "seed"}
    assert explorer.specs["rank"].off is None  # rank None: a plain W
    explorer.static_chart().to_dict()
    assert set(explorer.presets) == set(low_rank.PRESETS) and result.exploration.learned is low_rank.learned
    for name in low_rank.PRESETS:  # every preset is accepted by the controls as it stands
        assert explorer.apply_preset(name) == []
        assert all(explorer.values[k] == v for k, v in low_rank.PRESETS[name]["values"].items() if k in explorer.values)
    explorer.close()
    f = result.frames
    for chart in (low_rank.spectrum_chart(f["spectrum"], f["history"]), low_rank.ranks_chart(f["ranks_vs_decay"], f["history"]),
                  low_rank.rank_sweep_chart(f["rank_sweep"]), low_rank.sam_chart(f["sam"], f["sam_history"])):
        chart.to_dict()


def test_the_learned_view_draws_sigma_of_w_against_the_closed_form_answer():
    run, _ = low_rank.train_spectrum([low_rank.config(1.0, steps=100)])
    frame = run.history
    spec = low_rank.learned(frame, run.configs[0]).to_dict()
    values = next(iter(spec["datasets"].values()))
    assert len(values) == low_rank.D_IN and "(σᵢ(Ŵ) − λ)₊" in str(spec["title"])
    predicted = low_rank.predicted_spectrum(low_rank.matrix_regression().info["w_ls"], 1.0, low_rank.D_IN)
    assert [v["predicted"] for v in values] == pytest.approx(predicted.tolist())
    assert [v["σᵢ(W)"] for v in values] == pytest.approx(predicted.tolist(), abs=0.05)  # trained: close to it
    assert "σᵢ(Ŵ) / (1 + λ)" in str(low_rank.learned(frame, run.configs[0].replace(rank=None)).to_dict()["title"])
    assert "once training starts" in str(low_rank.learned(frame.iloc[:0], run.configs[0]).to_dict())


def test_a_plain_w_has_no_nuclear_norm_claims_and_its_charts_say_so():
    result = low_rank.run(**{**TINY, "rank": None, "seeds": 1})
    assert [c.id for c in result.claims] == [i for i in IDS if i not in ("nuclear_norm_penalty", "soft_thresholding")]
    assert "nuclear_gap" not in result.frames["ranks_vs_decay"]
    assert "not factorized" in str(low_rank.ranks_chart(result.frames["ranks_vs_decay"], result.frames["history"]).to_dict())


@pytest.mark.parametrize("bad", [dict(ranks=[0, 2]), dict(ranks=[4]), dict(sam_radii=[-0.1]), dict(step_size=-1.0),
                                 dict(batch_size=1000), dict(seeds=0), dict(weight_decays=[]), dict(rank=0),
                                 dict(rank_steps=0), dict(colour="red")])
def test_bad_input_gives_a_config_error(bad):
    with pytest.raises(ConfigError):
        low_rank.run(**bad)


def test_a_diverging_run_is_reported_not_raised():
    result = low_rank.run(**{**TINY, "step_size": 50.0, "steps": 60, "seeds": 1})
    first = result.claim("effective_rank_falls")
    assert first.status == DIVERGED and "diverged at step" in first.note and "λ = " in first.note
    assert result.claim("bound_scaling_in_r").status == INFO  # experiments 2 and 3 are unaffected

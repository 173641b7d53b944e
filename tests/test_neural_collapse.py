"""Neural-collapse metrics on hand-computed examples, and the T5 experiment's pieces on tiny settings."""
import math

import pandas as pd
import pytest
import torch

from reglab import ConfigError
from reglab.experiments import neural_collapse as nc
from reglab.metrics import collapse

C = 10


def etf_features(n_per_class=5, C=C, dim=16, scale=3.0, noise=0.0, seed=0):
    """Features that are exactly (noise = 0) the rows of a simplex ETF of their class, plus a global offset."""
    frame = collapse.simplex_etf(C, dim, scale=scale)
    y = torch.arange(C).repeat(n_per_class)
    g = torch.Generator().manual_seed(seed)
    h = frame[y] + 0.7 + noise * torch.randn(len(y), dim, generator=g, dtype=torch.float64)
    return h, y, frame


# ---------------------------------------------------------------------------------------------
# the metrics


def test_simplex_etf_has_unit_rows_and_cosines_minus_one_over_c_minus_one():
    for dim in (C - 1, C, 64):
        frame = collapse.simplex_etf(C, dim)
        gram = frame @ frame.T
        assert torch.allclose(torch.diagonal(gram), torch.ones(C, dtype=gram.dtype), atol=1e-12)
        off = gram[~torch.eye(C, dtype=torch.bool)]
        assert torch.allclose(off, torch.full_like(off, -1 / (C - 1)), atol=1e-12)
    with pytest.raises(ConfigError, match="dim ≥ 9"):
        collapse.simplex_etf(C, 5)


def test_exact_simplex_etf_features_are_fully_collapsed():
    h, y, frame = etf_features()
    out = collapse.collapse_metrics(h, y, classifier=frame.unsqueeze(0), n_classes=C)
    assert out["nc1"].item() == pytest.approx(0.0, abs=1e-12)
    assert out["nc2_equinorm"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["nc2_equiangular"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["nc2_maxangle"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["nc2_cos_mean"].item() == pytest.approx(-1 / (C - 1), abs=1e-6)
    assert out["nc2_etf_distance"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["nc3"].item() == pytest.approx(0.0, abs=1e-10)  # classifier rows = class means (any scale)
    assert out["nc4"].item() == 0.0
    # a classifier ∝ the class means at another scale is just as aligned; its negative is the worst case (4)
    assert collapse.nc3(h, y, 5 * frame.unsqueeze(0), C).item() == pytest.approx(0.0, abs=1e-10)
    assert collapse.nc3(h, y, -frame.unsqueeze(0), C).item() == pytest.approx(4.0, abs=1e-6)


def test_nc1_by_hand_two_classes_in_one_dimension():
    # class 0 at −1 ± a, class 1 at +1 ± a: μ_G = 0, Σ_W = a², Σ_B = ½(1 + 1) = 1, so NC1 = a²/C = a²/2
    a = 0.3
    h = torch.tensor([[-1 - a], [-1 + a], [1 - a], [1 + a]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])
    sw, sb = collapse.within_between(h, y)
    assert sw.item() == pytest.approx(a * a)
    assert sb.item() == pytest.approx(1.0)
    assert collapse.nc1(h, y).item() == pytest.approx(a * a / 2, rel=1e-6)
    # two centred means ±1: cosine −1 = −1/(C−1), equal norms
    geo = collapse.nc2(h, y)
    assert geo["cos_mean"].item() == pytest.approx(-1.0)
    assert geo["equinorm"].item() == pytest.approx(0.0, abs=1e-7)


def test_nc1_matches_the_direct_pseudo_inverse_formula_per_member():
    g = torch.Generator().manual_seed(1)
    M, n, d, k = 3, 240, 12, 6
    y = torch.arange(n) % k
    centres = 2 * torch.randn(M, k, d, generator=g)
    h = centres[:, y] + torch.randn(M, n, d, generator=g)
    h[1] *= 0.1  # NC1 is scale-free: members at different scales
    sw, sb = collapse.within_between(h, y, k)
    direct = torch.stack([torch.trace(sw[m] @ torch.linalg.pinv(sb[m], hermitian=True)) for m in range(M)]) / k
    assert torch.allclose(collapse.nc1(h, y, k).double(), direct, rtol=1e-4)
    # features of lower dimension than C − 1: Σ_B is rank-deficient, still the pseudo-inverse formula
    low = h[..., :3]
    sw, sb = collapse.within_between(low, y, k)
    direct = torch.stack([torch.trace(sw[m] @ torch.linalg.pinv(sb[m], hermitian=True)) for m in range(M)]) / k
    assert torch.allclose(collapse.nc1(low, y, k).double(), direct, rtol=1e-4)


def test_within_class_noise_raises_nc1_and_an_orthogonal_frame_has_cosines_zero():
    values = [collapse.nc1(*etf_features(noise=s)[:2], C).item() for s in (0.01, 0.1, 0.5)]
    assert values[0] < values[1] < values[2]
    # the supervised-contrastive geometry: class means on orthogonal axes (centred about their own mean,
    # as SupCon features are not centred by the loss) — here the uncentred cosines are exactly 0
    y = torch.arange(4).repeat(3)
    h = torch.eye(4, dtype=torch.float64)[y]
    means, mu_g, counts = collapse.class_means(h, y)
    assert torch.allclose(collapse.pairwise_cosines(means)[0], torch.eye(4, dtype=torch.float64))
    assert counts.tolist() == [3, 3, 3, 3]
    assert collapse.nc1(h, y).item() == pytest.approx(0.0, abs=1e-12)


def test_nc4_counts_disagreements_with_the_nearest_class_centre():
    # 1-D features, class means at −1 and +1; a classifier with a bias moves the boundary to 0.5, so the
    # examples at 0.2 and 0.4 (nearest centre: +1) are classified as class 0: 2 of 6 disagree
    h = torch.tensor([[-1.2], [-1.0], [-0.8], [0.2], [0.4], [2.4]])
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    w = torch.tensor([[[-1.0], [1.0]]])  # logits −h and +h
    b = torch.tensor([[0.5, -0.5]])  # boundary where −h + 0.5 = h − 0.5, i.e. h = 0.5
    assert collapse.nc4(h, y, w, b).item() == pytest.approx(2 / 6)
    assert collapse.nc4(h, y, w).item() == 0.0  # without the bias the boundary is 0 = the midpoint of the means
    assert collapse.ncc_predictions(h, collapse.class_means(h, y)[0]).tolist() == [[0, 0, 0, 1, 1, 1]]


def test_bad_labels_give_clear_messages():
    h = torch.randn(7, 4)
    with pytest.raises(ConfigError, match="at least 2 examples of every class.*class 2 has 1"):
        collapse.nc1(h, torch.tensor([0, 0, 1, 1, 2, 0, 1]))
    with pytest.raises(ConfigError, match="class 3 has 0"):
        collapse.nc1(h, torch.tensor([0, 0, 1, 1, 2, 2, 1]), n_classes=4)
    with pytest.raises(ConfigError, match="labels for 7 feature rows"):
        collapse.nc1(h, torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ConfigError, match=r"\[M, C, d\]"):
        collapse.nc3(h, torch.tensor([0, 0, 1, 1, 2, 2, 1]), torch.randn(1, 4, 3))  # [M, d, C] not transposed


# ---------------------------------------------------------------------------------------------
# the claims' rules, at, just inside and just outside their thresholds

EPS = 1e-9


@pytest.mark.parametrize("rule, threshold, at, inside, outside", [
    (nc.NC1_FALLS, 5.0, True, 5.0 + EPS, 5.0 - EPS),  # NC1 then / NC1 at the end ≥ 5
    (nc.NC3_FALLS, 1.0, False, 1.0 - EPS, 1.0 + EPS),  # NC3 at the end / NC3 then < 1
    (nc.NC4_NCC, 0.01, True, 0.01 - EPS, 0.01 + EPS),  # mismatch ≤ 1 %
    (nc.DEPTH_FALLS, 1.0, False, 1.0 - EPS, 1.0 + EPS),  # NC1(layer k+1) / NC1(layer k) < 1
])
def test_per_seed_rules_at_their_thresholds_and_one_failing_or_missing_seed_fails(rule, threshold, at, inside, outside):
    good = inside
    assert rule([threshold, threshold]) is at
    assert rule([inside, inside, inside]) and not rule([outside, outside])
    assert not rule([good, outside, good]) and not rule([good, None, good]) and not rule([good, math.nan])
    assert not rule([])


def test_weight_decay_rule_needs_nc1_strictly_decreasing_in_lambda():
    assert nc.WD_FALLS([0.03, 0.02, 0.01])
    assert nc.WD_FALLS([1.0, 1.0 - EPS])  # just inside
    assert not nc.WD_FALLS([1.0, 1.0])  # at: equal is not a decrease
    assert not nc.WD_FALLS([1.0, 1.0 + EPS])  # just outside
    assert not nc.WD_FALLS([0.03, 0.01, 0.02]) and not nc.WD_FALLS([0.03, None, 0.01]) and not nc.WD_FALLS([0.03])


def test_weight_decay_speeds_up_collapse_rule_at_its_threshold():
    rule = nc.WD_SPEEDS_UP  # per seed: the geometric mean over the terminal phase of NC1(more λ) / NC1(less λ)
    assert rule([0.5, 1.0 - EPS]) and not rule([0.5, 1.0]) and not rule([0.5, 1.0 + EPS])
    assert not rule([0.5, None]) and not rule([0.5, math.nan]) and not rule([])


def test_terminal_phase_ratios_read_the_trajectory_from_zero_training_error_on():
    nc1 = pd.DataFrame({0: [1.0, 0.5, 0.2, 0.1], 1: [1.0, 0.6, 0.1, 0.05]}, index=[0, 10, 20, 30])  # λ small, λ large
    ratios = nc.terminal_phase_ratios(nc1, [20, 10])  # from step 20: 0.1/0.2, 0.05/0.1
    assert ratios.shape == (2, 1) and ratios[:, 0] == pytest.approx([0.5, 0.5])
    assert nc.terminal_phase_ratios(nc1, [10, 10])[0, 0] == pytest.approx(1.2)  # step 10 counts: 0.6/0.5
    assert nc.terminal_phase_ratios(nc1, [None, 10]) is None  # a run never reached zero training error
    assert nc.terminal_phase_ratios(nc1[[0]], [10]) is None


def test_terminal_phase_speedup_is_the_geometric_mean_of_the_worst_pair_and_the_largest_ratio():
    nc1 = pd.DataFrame({0: [1.0, 0.5, 0.2, 0.1], 1: [1.0, 0.6, 0.1, 0.05]}, index=[0, 10, 20, 30])
    mean, largest = nc.terminal_phase_speedup(nc1, [10, 10])  # ratios 1.2, 0.5, 0.5
    assert mean == pytest.approx((1.2 * 0.5 * 0.5) ** (1 / 3)) and largest == pytest.approx(1.2)
    assert mean < 1 < largest  # lower over the phase as a whole although not at its first evaluation
    three = nc1.assign(**{"2": [1.0, 0.3, 0.2, 0.01]})  # λ 2 vs 1 at steps 20, 30: 2.0, 0.2
    mean, largest = nc.terminal_phase_speedup(three, [20, 20, 20])
    assert mean == pytest.approx(math.sqrt(2.0 * 0.2)) and largest == pytest.approx(2.0)
    assert nc.terminal_phase_speedup(nc1, [None, 10]) == (None, None)


# ---------------------------------------------------------------------------------------------
# the experiment, on tiny settings


def test_config_is_the_reference_setup_and_bad_inputs_are_refused():
    cfg = nc.config()
    assert (cfg.data, cfg.depth, cfg.width, cfg.batchnorm, cfg.loss, cfg.optimizer) == ("digits", 4, 128, True, "ce", "sgd")
    assert (cfg.momentum, cfg.weight_decay, cfg.decay, cfg.lr_schedule, cfg.steps) == (0.9, 5e-4, "coupled", "step", 3300)
    assert cfg.rank_layer == cfg.depth  # rank factorizes the classifier: the feature dimension
    assert cfg.data_options == {"classes": 10, "imbalance": 1.0} and cfg.eval_every == 33
    with pytest.raises(ConfigError, match="'rank' parameter of RunConfig must be an int in the range \\[1, 128\\]"):
        nc.run(rank=200, steps=10)
    with pytest.raises(ConfigError, match="'classes' parameter of neural_collapse.config"):
        nc.config(classes=1)
    with pytest.raises(ConfigError, match="'compare_weight_decay' parameter of 05_neural_collapse.run"):
        nc.run(compare_weight_decay=[-0.1])
    with pytest.raises(ConfigError, match="'depth' parameter of 05_neural_collapse.run"):
        nc.run(depth=0)
    with pytest.raises(ConfigError, match="class 9 has 1"):
        nc.dataset(nc.config(imbalance=2000.0))
    # the explorer's path: data_options from a stamp or a slider are checked against the same declarations
    with pytest.raises(ConfigError, match="'classes' parameter of neural_collapse data_options"):
        nc.dataset(cfg.replace(data_options={"classes": 11}))


def test_dataset_classes_and_imbalance():
    data = nc.dataset(nc.config(classes=4, imbalance=4.0))
    counts = torch.bincount(data.y_train).tolist()
    assert data.n_classes == 4 and len(counts) == 4
    assert counts[0] > 3 * counts[3]  # the last class keeps about 1/4 of its examples
    assert int(data.y_test.max()) == 3
    assert nc.dataset(nc.config().replace(data_options={"imbalance": None})).n_train == 1400  # None: balanced


def test_tiny_run_computes_every_claim_per_seed_and_draws(presets_apply):
    res = nc.run(width=32, depth=3, steps=110, seeds=2, classes=4, compare_weight_decay=[0.0, 0.002])
    h, m = res.frames["history"], res.metrics
    for metric in ("nc1", "nc2_equinorm", "nc2_maxangle", "nc3", "nc4", "nc1_layer1", "nc1_layer3", "train_acc"):
        assert metric in set(h.metric)
    last = h[(h.step == h.step.max()) & (h.metric == "nc1")]
    assert torch.allclose(torch.tensor(last.value.values),
                          torch.tensor(h[(h.step == h.step.max()) & (h.metric == "nc1_layer3")].value.values))
    assert set(h.role) == {"seed", "λ comparison"} and h.run.nunique() == 6  # 2 seeds × 3 λ: the same seeds
    assert set(h[h.role == "λ comparison"].seed) == {0, 1}
    assert {"nc1_drop@seed=0", "nc1_drop@seed=1", "nc4_end@seed=0", "nc1_layer2_end@seed=1", "diverged_at@seed=1",
            "nc1_end@wd=0,seed=0", "nc1_end@wd=0.0005,seed=1", "nc1_end@wd=0.002,seed=1", "nc1_wd_max_ratio@seed=1"} <= set(m)
    assert [c.id for c in res.claims] == ["nc1_falls_after_zero_error", "nc3_aligns", "nc4_nearest_centre",
                                          "nc1_falls_with_depth", "weight_decay_speeds_collapse"]
    assert m["nc1_at_zero_error@seed=0"] is not None  # 10 epochs reach zero training error on 4 classes
    assert m["nc1_drop@seed=0"] == pytest.approx(m["nc1_at_zero_error@seed=0"] / m["nc1_end@seed=0"])
    assert res.claim("nc1_falls_after_zero_error").value == nc.by_seed(res, "nc1_drop")
    assert res.claim("nc4_nearest_centre").value == nc.by_seed(res, "nc4_end")
    wd = res.claim("weight_decay_speeds_collapse")
    assert wd.value == [m["nc1_wd_mean_ratio@seed=0"], m["nc1_wd_mean_ratio@seed=1"]]
    for c, rule in zip(res.claims, (nc.NC1_FALLS, nc.NC3_FALLS, nc.NC4_NCC, nc.DEPTH_FALLS, nc.WD_SPEEDS_UP)):
        assert c.status == ("held" if rule(c.value) else "not held"), c.id
    cos = res.frames["cosines"]
    assert len(cos[(cos.seed == 0) & (cos.moment == "end") & (cos["of"] == "class means")]) == 4 * 3 // 2
    assert set(res.frames["layers"].layer) == {1, 2, 3}
    for chart in (nc.chart(h), nc.layer_chart(res), nc.cosine_chart(res), nc.weight_decay_chart(res)):
        assert chart.to_dict()
    assert list(res.timings) == ["training"] and res.timings["training"] > 0
    # the explorer: its first frame (one run, label/current added) draws, its controls are the declared ones
    e = res.exploration
    assert e.run is nc.explore and e.config.seed == 0 and e.initial.run.unique().tolist() == [0]
    assert e.controls["rank"].slider == (1, 32) and e.controls["imbalance"].field == "data_options.imbalance"
    assert nc.chart(e.initial.assign(label="λ=0.0005", current=True), e.config).to_dict()
    assert e.presets and e.learned is nc.learned_chart
    assert "class-mean cosines" in str(nc.learned_chart(e.initial.assign(current=True), e.config).to_dict())
    assert "first evaluation" in str(nc.learned_chart(e.initial.iloc[:0], e.config).to_dict())
    presets_apply(res)


def test_one_weight_decay_draws_a_note_and_one_layer_has_nothing_to_compare():
    res = nc.run(width=16, depth=1, steps=40, seeds=1, classes=3, compare_weight_decay=[])
    assert "weight_decay_speeds_collapse" not in [c.id for c in res.claims]
    assert "No λ comparison" in str(nc.weight_decay_chart(res).to_dict())
    depth = res.claim("nc1_falls_with_depth")
    assert depth.status == "not held" and depth.note == "one hidden layer: nothing to compare"


def test_zero_error_step_and_a_diverged_run_is_reported():
    history = pd.DataFrame({"run": [0, 0, 0], "step": [0, 10, 20], "metric": "train_acc", "value": [0.1, 1.0, 1.0]})
    assert nc.zero_error_step(history, 0) == 10
    assert nc.zero_error_step(history.assign(value=[0.1, 0.9, 0.99]), 0) is None
    res = nc.run(width=16, depth=2, steps=20, seeds=1, step_size=1e4)
    assert res.metrics["diverged_at@seed=0"] is not None
    assert [c.status for c in res.claims] == ["diverged"] * 5
    assert f"diverged at step {res.metrics['diverged_at@seed=0']} (seed 0)" in res.claims[0].note
    assert nc.chart(res.frames["history"]).to_dict()


def test_probe_measures_the_rank_r_feature():
    cfg = nc.config(width=16, depth=2, rank=3, steps=4)
    r, probe = nc.train_members([cfg])
    assert "U2" in r.params and "V2" in r.params
    feats = r.model.features(r.params, r.data.x_train)
    z, w, _ = nc.classifier_inputs(r.params, feats, 2)
    assert z.shape[-1] == 3 and w.shape[1:] == (10, 3)
    assert set(probe.cosines) == set(r.history.step.unique())
    assert not math.isnan(r.history[r.history.metric == "nc3"].value.iloc[-1])

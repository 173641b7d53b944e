"""The explorer's guided scenarios (presets) and "what the model learned" views of themes 09–11: every preset
is valid for its theme's controls and applies from any other one, and every learned view draws from the rows
its theme's explorer run streams, on tiny settings."""
import dataclasses

import altair as alt
import pytest

from reglab.experiments import generalization as t9
from reglab.experiments import large_batch as lb
from reglab.experiments import transformer_stability as ts
from reglab.theme import Result

T9 = dict(step_sizes=[0.1, 0.3], batch_sizes=[8, 16], weight_decays=[0.0], ranks=[4, None], width=8, n_train=60,
          criterion=1.0, max_steps=300, seeds=1)  # 7 of the 8 networks reach the criterion
LB = dict(epochs=1, width=8, small_batch=40, large_batch=400, ghost_batch=40, seeds=1)
TS = dict(steps=10, step_sizes=[1e-3, 1.0], step_size=1.0, n_train=64, n_test=32, seeds=1, drift_step_sizes=[],
          width=8, context=4, vocab=8, warmup_steps=2)


@pytest.fixture(scope="module")
def t9_tiny(tmp_path_factory):
    with pytest.MonkeyPatch.context() as env:  # the grid's chunks are stored: in a scratch folder
        env.setenv("REGLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
        return t9.run(**T9)


@pytest.fixture(scope="module")
def lb_tiny():
    return lb.run(**LB)


@pytest.fixture(scope="module")
def ts_tiny():
    return ts.run(**TS)


def _text(chart) -> str:
    return str(chart.to_dict())


def _rows(spec: dict, view: dict) -> list:
    """The data rows of one view of a spec (inline, or named in the spec's datasets; a layer's data may sit
    on the layer)."""
    data = view.get("data") or next((v["data"] for v in view.get("layer", []) if "data" in v), None)
    return data["values"] if "values" in data else spec["datasets"][data["name"]]


def check_presets(result, module_presets=None):
    """2–4 presets, each a one-line question and values, locks and hides of this explorer's controls, each
    accepted as written (no message) whichever preset was applied before it."""
    presets = result.exploration.presets
    assert 2 <= len(presets) <= 4
    if module_presets is not None:
        assert presets is module_presets
    ex = result.explorer(headless=True)
    try:
        for name, preset in presets.items():
            assert set(preset) <= {"question", "values", "lock", "hide"} and preset["values"], name
            q = preset["question"]
            assert isinstance(q, str) and q.endswith("?") and "\n" not in q and len(q) < 200, name
            named = {*preset["values"], *preset.get("lock", ()), *preset.get("hide", ())}
            assert named <= set(ex.names), (name, named - set(ex.names))
        for before in presets:
            for name, preset in presets.items():
                ex.apply_preset(before)
                assert ex.apply_preset(name) == [], (before, name)
                assert all(ex.values[k] == v for k, v in preset["values"].items()), (before, name)
                assert ex.locked == set(preset.get("lock", ())) and ex.hidden == set(preset.get("hide", ()))
        ex.apply_preset(None)
        assert not ex.locked and not ex.hidden
    finally:
        ex.close()


# ---------------------------------------------------------------------------------------------
# 09 · generalization measures: a view of the measured networks


def test_generalization_presets_apply(t9_tiny, presets_apply):
    presets_apply(t9_tiny)
    check_presets(t9_tiny, t9.PRESETS)
    assert t9_tiny.exploration.learned is t9.learned


def test_generalization_learned_view_shows_the_correlations_of_the_notebook(t9_tiny):
    e = t9_tiny.exploration
    frame = e.run(e.config).assign(current=True)  # what the explorer's run streams
    corr = t9_tiny.frames["correlations"].set_index("measure")
    for vary, column in [("all", "Psi"), ("step_size", "psi_step_size"), ("batch_size", "psi_batch_size")]:
        cfg = e.config.replace(data_options={**e.config.data_options, "measure": "spectral_product", "vary": vary})
        spec = t9.learned(frame, cfg).to_dict()
        bars = {(r["measure"], r["coefficient"]): r["value"] for r in _rows(spec, spec["layer"][0])}
        assert bars[("spectral_product", "τ (whole grid)")] == pytest.approx(corr.tau["spectral_product"])
        granulated = [v for (m, c), v in bars.items() if m == "spectral_product" and c != "τ (whole grid)"]
        assert granulated == ([pytest.approx(corr[column]["spectral_product"])] if corr[column].notna()["spectral_product"]
                              else [])
        assert "what the measures capture" in str(spec) and "spectral-norm product in full colour" in str(spec["title"])
    assert "once two networks" in _text(t9.learned(frame.iloc[:0], e.config))


def test_generalization_scatter_joins_the_sub_sweeps_and_titles_psi(t9_tiny):
    e = t9_tiny.exploration
    frame = e.run(e.config)
    corr = t9_tiny.frames["correlations"].set_index("measure")
    cfg = e.config.replace(data_options={**e.config.data_options, "measure": "path_norm", "vary": "batch_size"})
    spec = t9.scatter_view(frame, cfg).to_dict()
    psi = corr.psi_batch_size["path_norm"]
    assert f"ψ B = {psi:.2f}" in spec["title"]["subtitle"] and len(spec["layer"]) >= 2  # lines under the points
    whole = t9.scatter_view(frame, e.config).to_dict()
    assert "subtitle" not in str(whole["title"]) and "sharpness vs the gap" in str(whole["title"])
    ex = t9_tiny.explorer(headless=True)
    try:
        ex.apply_preset("spectral product when only η varies")
        chart = ex.static_chart()
        assert isinstance(chart, alt.VConcatChart) and "what the measures capture" in _text(chart)
    finally:
        ex.close()


# ---------------------------------------------------------------------------------------------
# 10 · large batches: one run with Hoffer's remedies as options


def test_large_batch_presets_apply(lb_tiny, presets_apply):
    presets_apply(lb_tiny)
    check_presets(lb_tiny)
    e = lb_tiny.exploration
    assert e.learned is lb.learned
    assert {p["values"]["batch_size"] for p in e.presets.values()} == {LB["large_batch"]}
    assert e.presets["equal updates"]["values"]["ghost_batch"] == LB["ghost_batch"]


def test_large_batch_presets_at_the_theme_defaults_are_valid_for_its_controls(lb_tiny):
    """The module's PRESETS (the notebook's B_L = 1000, ghost batch 40) on the explorer the default run builds:
    B_L is offered by the batch-size control, not snapped to 1024."""
    d = lb.THEME.defaults()
    base = lb.config(d["step_size"], d["small_batch"], width=d["width"]).replace(data_options={
        "small_batch": d["small_batch"], "epochs": d["epochs"], "scale_step": True, "budget": "epochs"})
    exploration = dataclasses.replace(lb_tiny.exploration, config=base, initial=None, presets=lb.PRESETS,
                                      controls=lb.explorer_controls(4000, d["small_batch"], d["large_batch"]))
    check_presets(Result(theme=lb.THEME.notebook, exploration=exploration), lb.PRESETS)
    assert lb.PRESETS["√-scaled η"]["values"] == {"step_size": 0.03, "data_options.epochs": 20, "ghost_batch": None,
                                                  "batch_size": 1000, "data_options.budget": "epochs",
                                                  "data_options.scale_step": True}


def test_large_batch_learned_view_draws_the_distance_travelled_and_the_final_sharpness(lb_tiny):
    e = lb_tiny.exploration
    cfg = e.config.replace(batch_size=400, ghost_batch=40, data_options={**e.config.data_options, "epochs": 1})
    run = lb.explore(cfg)  # the explorer's run: 10 updates, ‖θ − θ₀‖ at every evaluation, λ_max at the end
    h = run.history
    distance = h[h.metric == "distance_from_init"].sort_values("step").value
    assert distance.iloc[0] == 0 and (distance.diff().dropna() > 0).all()
    frame = h.assign(current=True, label="B=400")
    text = _text(lb.learned(frame, cfg))
    assert "what it learned: distance from init" in text and "sharpness vs test accuracy" in text
    assert "distance_from_init" in text
    first = _text(lb.learned(e.initial.assign(current=True), e.config))  # the notebook's run: λ_max, no distance
    assert "appears once the explorer trains" in first and "sharpness vs test accuracy" in first
    assert "appears when a run ends" in _text(lb.learned(frame[frame.metric != "sharpness"], cfg))
    assert "test accuracy against updates" in _text(lb.explore_chart(frame, cfg))


def test_large_batch_explorer_trains_a_preset_and_draws_the_learned_view_under_the_curves(lb_tiny):
    ex = lb_tiny.explorer(headless=True)
    try:
        ex.apply_preset("ghost BatchNorm")
        chart = ex.static_chart()  # one quiet run: B = 400 in ghost batches of 40, 1 epoch
        assert ex.config.ghost_batch == 40 and ex.session.current.status == "done"
        assert isinstance(chart, alt.VConcatChart) and "what it learned: distance from init" in _text(chart)
        assert "distance_from_init" in set(ex.frame.metric) and "sharpness" in set(ex.frame.metric)
    finally:
        ex.close()


# ---------------------------------------------------------------------------------------------
# 11 · transformer stability: one config with the attention probe


def test_transformer_presets_apply(ts_tiny, presets_apply):
    presets_apply(ts_tiny)
    check_presets(ts_tiny, ts.PRESETS)
    assert ts_tiny.exploration.learned is ts.learned


def test_transformer_learned_view_draws_attention_two_back_and_the_largest_logit(ts_tiny):
    e = ts_tiny.exploration
    cfg = e.config.replace(qk_layernorm=True, eval_every=5)
    run = ts.explore(cfg)  # the explorer's run: the attention probe at steps 0, 5, 10
    frame = run.history.assign(current=True, label="qk")
    spec = ts.learned(frame, cfg).to_dict()
    heat = spec["hconcat"][0]
    cells = _rows(spec, heat)
    assert {c["back"] for c in cells} == set(range(1, TS["context"] + 1))
    assert {c["head"] for c in cells} == {f"block {b} · head {h}" for b in range(2) for h in range(2)}
    assert all(0 <= c["attention"] <= 1 for c in cells) and "step 10" in str(heat["title"])
    assert heat["layer"][2]["transform"] == [{"filter": "datum.back == 2"}]  # the token the next one depends on
    text = str(spec)
    assert "attention two back, per head" in text and "uniform 1/4" in text and "largest attention logit" in text
    assert "first evaluation" in _text(ts.learned(frame[~frame.metric.str.startswith("attn")], cfg))
    main = _text(ts.chart(frame, cfg))
    assert "entropy rate" in main and "mean output logit" in main and "log Z" in main


def test_transformer_explorer_trains_a_preset_and_draws_the_learned_view_under_the_curves(ts_tiny):
    ex = ts_tiny.explorer(headless=True)
    try:
        ex.apply_preset("same η with qk-layernorm")
        chart = ex.static_chart()  # one quiet run of the preset's config through the theme's explorer run
        assert ex.config.qk_layernorm and ex.session.current.status == "done"
        assert isinstance(chart, alt.VConcatChart)
        text = _text(chart)
        assert "what it learned: attention from the last token, step 10" in text and "largest attention logit" in text
    finally:
        ex.close()

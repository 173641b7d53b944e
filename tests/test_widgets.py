"""The explorer without a browser: controls -> config -> run, cancellation, messages, cache, headless."""
import time

import numpy as np
import pandas as pd
import pytest

from reglab import ConfigError, RunConfig, charts
from reglab.widgets import Choice, Explorer, IntRange, LogRange
from reglab.widgets.controls import config_for, label, parse_assignments, resolve
from reglab.widgets.session import infer_divergence

# A tiny real config: the default run is reglab.train itself.
TINY = RunConfig(data="mnist1d", n_train=200, width=16, depth=1, steps=20, eval_every=5, batch_size=32)


def fake_frame(config, steps=None, diverge_at=None):
    """Tidy rows of a made-up loss curve (NaN from `diverge_at` on)."""
    steps = steps or config.steps
    rows = []
    for step in range(0, steps + 1, config.eval_every):
        loss = float("nan") if diverge_at is not None and step >= diverge_at else 1.0 / (1 + config.step_size * step)
        rows += [{"run": 0, "step": step, "metric": "train_loss", "value": loss},
                 {"run": 0, "step": step, "metric": "test_loss", "value": loss * 1.1}]
    return rows


class Recorder:
    """A run function that records the configs it was called with; optionally slow and cancellable."""

    def __init__(self, slow=()):
        self.configs, self.stops, self.slow = [], [], set(slow)  # step sizes whose runs take 50 ms per eval
        self.finished = []

    def __call__(self, config, on_eval, stop):
        self.configs.append(config)
        self.stops.append(stop)
        rows = []
        for row_pair in zip(*[iter(fake_frame(config))] * 2):
            if stop.is_set():
                break
            rows += row_pair
            on_eval(list(row_pair), row_pair[0]["step"])
            if config.step_size in self.slow:
                time.sleep(0.05)
        self.finished.append(config)
        return pd.DataFrame(rows)


def explorer(run=None, **kwargs):
    kwargs.setdefault("debounce", 0.01)
    ex = Explorer(kwargs.pop("config", TINY), run=run, headless=False, n_train=200, **kwargs)
    ex.widget  # builds the panel and starts the first run
    assert ex.wait(30)
    return ex


def test_slider_value_gives_config_and_run():
    rec = Recorder()
    ex = explorer(rec)
    try:
        assert rec.configs[-1] == TINY
        assert ex.inputs["step_size"].options[ex.inputs["step_size"].index - 1:][:3] == (("0.05", 0.05), ("0.1", 0.1), ("0.2", 0.2))
        ex.inputs["step_size"].value = 0.2  # log sliders stop at 1, 2, 5 per decade: the value used is exact
        assert ex.config.step_size == 0.2 and ex.readouts["step_size"].value == "0.2"
        assert ex.wait(10)
        assert rec.configs[-1].step_size == 0.2
        assert rec.configs[-1].replace(step_size=TINY.step_size) == TINY  # nothing else changed
        assert ex.session.current.config == ex.config and ex.session.current.status == "done"
        assert set(ex.frame["label"]) == {label(ex.config, ex.names)}
        assert ex.stamp_text.value == ex.config.to_text()
        # the batch-size selection: index -> value, "full batch" is None
        ex.inputs["batch_size"].value = len(ex.specs["batch_size"].options) - 1
        assert ex.wait(10) and rec.configs[-1].batch_size is None and ex.readouts["batch_size"].value == "full batch (200)"
        # weight decay exactly 0 through its checkbox
        assert ex.offs["weight_decay"].value  # TINY has no decay: "λ = 0" is ticked
        assert ex.readouts["weight_decay"].value == "0"  # the readout shows the value used, not the slider's rest
        ex.inputs["weight_decay"].value = 1e-3  # moving the slider unticks it
        assert ex.wait(10) and rec.configs[-1].weight_decay == pytest.approx(1e-3) and not ex.offs["weight_decay"].value
        assert ex.readouts["weight_decay"].value == "0.001"
        ex.offs["weight_decay"].value = True
        assert ex.wait(10) and ex.session.current.config.weight_decay == 0.0  # visited before: from the cache
        assert ex.readouts["weight_decay"].value == "0"
    finally:
        ex.close()


def test_default_run_is_reglab_train_streaming_live():
    ex = explorer()
    try:
        current = ex.session.current
        assert current.status == "done" and set(current.frame["metric"]) >= {"train_loss", "test_loss"}
        assert ex.chart_widget.spec is not None and ex.progress_bar.value == 1.0
    finally:
        ex.close()


def test_new_value_cancels_the_running_one():
    rec = Recorder(slow={0.2})
    ex = explorer(rec, config=TINY.replace(steps=200))  # the 0.2 run would take 2 s if not stopped
    try:
        ex.set(step_size=0.2)
        deadline = time.time() + 5
        while len(rec.configs) < 2 and time.time() < deadline:  # wait until the 0.2 run is under way
            time.sleep(0.01)
        first_stop = rec.stops[-1]
        t0 = time.time()
        ex.set(step_size=0.4)
        assert first_stop.is_set()  # cancelled at once, not after the debounce
        assert ex.wait(10)
        assert rec.configs[-1].step_size == pytest.approx(0.4)
        assert time.time() - t0 < 5
        assert rec.finished[-2].step_size == pytest.approx(0.2)  # the old run returned early...
        assert TINY.replace(steps=200, step_size=0.2).short_hash() not in ex.session.cache  # ...and was not cached
        assert ex.session.current.config.step_size == pytest.approx(0.4)
    finally:
        ex.close()


def test_stop_holds_the_run_and_continue_resumes_it():
    rec = Recorder(slow={0.3})
    ex = explorer(rec, config=TINY.replace(steps=100, eval_every=5))
    try:
        ex.set(step_size=0.3)
        time.sleep(0.3)
        ex.stop_button.click()  # stop: held at the next evaluation, drawn
        assert ex.wait(10)
        held = ex.session.current
        assert held.status == "paused" and "paused at step" in ex.status_label.value and held.key not in ex.session.cache
        assert ex.stop_button.description == "continue"
        calls = len(rec.configs)
        ex.step_button.click()  # one evaluation further, held again
        assert ex.wait(10) and ex.session.current.step == held.step + 5 and ex.session.current.status == "paused"
        ex.stop_button.click()  # continue: the same run goes on from the same weights
        assert ex.wait(10)
        assert len(rec.configs) == calls and ex.session.current.status == "done"
        assert ex.session.current.key in ex.session.cache and ex.session.current.frame["step"].max() == 100
        ex.set(step_size=0.2)  # a new value releases nothing: the held run is gone, the new one runs
        assert ex.wait(10) and ex.session.current.status == "done"
        ex.reset_button.click()  # back to the starting settings
        assert ex.wait(10) and ex.config == TINY.replace(steps=100, eval_every=5) and ex.readouts["step_size"].value == "0.1"
    finally:
        ex.close()


def test_a_cancelled_run_can_be_run_again():
    rec = Recorder(slow={0.3})
    ex = explorer(rec, config=TINY.replace(steps=100, eval_every=5))
    try:
        ex.set(step_size=0.3)
        time.sleep(0.3)
        ex.stop()
        assert ex.wait(10) and ex.session.current.status == "stopped" and ex.stop_button.description == "run"
        ex.stop_button.click()
        assert ex.wait(10) and ex.session.current.status == "done" and ex.session.current.config.step_size == 0.3
    finally:
        ex.close()


@pytest.mark.parametrize("typed, expected", [
    ({"step_size": -1.0}, "The 'step_size' parameter of RunConfig must be a float in the range (0, inf). Got -1.0 instead."),
    ({"batch_size": 5000}, "The 'batch_size' parameter of RunConfig must be an int in the range [1, 200] (the number of training examples)"),
    ({"rank": 17}, "The 'rank' parameter of RunConfig must be an int in the range [1, 16] (the layer width) or None. Got 17 instead."),
    ({"step_size": "fast"}, "The 'step_size' parameter of RunConfig must be a float"),
])
def test_bad_typed_values_are_refused_with_the_config_message(typed, expected):
    ex = Explorer(TINY, n_train=200, headless=False)
    before = ex.config
    messages = ex.set(**typed)  # never raises
    assert len(messages) == 1 and messages[0].startswith(expected) and "Keeping" in messages[0]
    assert ex.config == before


def test_out_of_range_values_are_refused_with_a_message_and_stamps_clamped():
    ex = Explorer(TINY, n_train=200, headless=False)
    [m1] = ex.set(step_size=50)
    assert ex.config.step_size == TINY.step_size and "above this control's range" in m1 and "Keeping step_size = 0.1" in m1
    [m2] = ex.set(batch_size=37)
    assert ex.config.batch_size == 32 and "nearest option" in m2
    assert ex.set(weight_decay=0) == [] and ex.config.weight_decay == 0.0
    assert ex.set(rank=None) == [] and ex.config.rank is None
    assert ex.set(step_size=0.3) == [] and ex.config.step_size == 0.3  # in range, off the grid: used exactly
    [m3] = ex.restore(TINY.replace(step_size=50.0).to_text())
    assert ex.config.step_size == 10.0 and "using 10" in m3


def test_typed_box_and_stamp_show_messages_in_the_panel():
    rec = Recorder()
    ex = explorer(rec)
    try:
        ex.typed_text.value = "step_size=-1"
        assert "(0, inf)" in ex.message_line.value and ex.typed_text.value == ""
        ex.typed_text.value = "step_size=0.05 batch_size=full"
        assert ex.wait(10) and rec.configs[-1].step_size == pytest.approx(0.05) and rec.configs[-1].batch_size is None
        ex.stamp_text.value = "reglab:{not json"
        assert "Not a reglab config stamp" in ex.message_line.value
        stamp = TINY.replace(step_size=0.2, weight_decay=1e-4).to_text()
        ex.stamp_text.value = stamp
        assert ex.wait(10) and ex.config.to_text() == stamp and rec.configs[-1].to_text() == stamp
        assert ex.inputs["step_size"].value == pytest.approx(0.2) and not ex.offs["weight_decay"].value
        ex.stamp_text.value = TINY.replace(width=64).to_text()  # another panel's stamp
        assert "another panel" in ex.message_line.value and ex.config.width == TINY.width
    finally:
        ex.close()


def test_revisit_is_served_from_the_cache():
    rec = Recorder()
    ex = explorer(rec)
    try:
        ex.set(step_size=0.3)
        assert ex.wait(10)
        calls = len(rec.configs)
        t0 = time.perf_counter()
        ex.inputs["step_size"].value = TINY.step_size
        elapsed = time.perf_counter() - t0
        assert len(rec.configs) == calls  # no new run
        assert ex.session.current.config == TINY and ex.status.startswith("cached")
        assert elapsed < 1.0  # drawn synchronously (the benchmark measures it properly)
    finally:
        ex.close()


def test_initial_frame_is_drawn_without_training():
    rec = Recorder()
    initial = pd.DataFrame(fake_frame(TINY))
    ex = explorer(rec, initial=initial)
    try:
        assert rec.configs == [] and ex.status.startswith("cached")
        assert len(ex.frame) == len(initial)
    finally:
        ex.close()


def test_divergence_is_labelled_and_reported():
    def diverging(config, on_eval, stop):
        return pd.DataFrame(fake_frame(config, diverge_at=10 if config.step_size > 1 else None))

    ex = explorer(diverging)
    try:
        ex.set(step_size=5.0)
        assert ex.wait(10)
        assert ex.session.current.diverged_at == {0: 10}
        # one message (the line under the chart), one marker per chart (a cross whose tooltip says it)
        assert ex.message_line.value.count("diverged at step 10") == 1 and ex.status_label.value == "diverged"
        spec = ex.chart_widget.spec
        assert "diverged at step 10" in str(spec) and "'text': {'field': 'note'" not in str(spec)
        assert "'shape': 'cross'" in str(spec)
        assert ex.frame["budget"].iloc[0] == TINY.steps  # the x axis spans the whole budget from the start
    finally:
        ex.close()


def test_real_divergence_stops_early_and_is_cached():
    ex = explorer(config=TINY.replace(steps=200, eval_every=5))
    try:
        ex.set(step_size=10.0)
        assert ex.wait(30)
        current = ex.session.current
        assert current.status == "diverged" and current.diverged_at[0] <= 10
        assert current.step < 200  # stopped once every run was frozen
        assert current.key in ex.session.cache
    finally:
        ex.close()


def test_compare_mode_keeps_faded_runs():
    rec = Recorder()
    ex = explorer(rec)
    try:
        ex.compare_box.value = True
        ex.set(step_size=0.3)
        assert ex.wait(10)
        frame = ex.frame
        assert set(frame["current"]) == {True, False} and frame["label"].nunique() == 2
        assert frame.groupby("label")["run"].nunique().sum() == frame["run"].nunique()  # distinct run ids
        assert '"value": 0.25' in str(ex.chart_widget.spec).replace("'", '"')  # the faded opacity
        ex.compare_box.value = False
        assert set(ex.frame["current"]) == {True}
    finally:
        ex.close()


def test_export_png_svg_csv_carry_the_stamp(tmp_path):
    import base64
    import re

    ex = explorer(Recorder())
    try:
        png, svg, csv = (ex.export(k, tmp_path / f"x.{k}") for k in ("png", "svg", "csv"))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        stamp = ex.config.to_text()
        svg_text = svg.read_text()
        assert "<svg" in svg_text and stamp[:60] in html_unescape(svg_text)  # the caption names the settings
        text = csv.read_text()
        assert text.startswith("# ") and stamp[:60] in text
        assert set(pd.read_csv(csv, comment="#").columns) >= {"run", "step", "metric", "value", "label"}
        ex.export_buttons[2].click()  # the panel's button: a browser download of the CSV
        link = ex.export_line.value
        assert "download=" in link and ".csv" in link
        data = base64.b64decode(re.search(r"base64,([^']+)", link).group(1)).decode()
        assert data.startswith("# ") and stamp[:60] in data
        ex.set(step_size=0.2)  # a new run clears the old link
        assert ex.export_line.value == ""
    finally:
        ex.close()


def html_unescape(text):
    import html

    return html.unescape(text)


def test_preset_sets_hides_and_locks():
    ex = Explorer(TINY, run=Recorder(), n_train=200, headless=False, debounce=0.01,
                  preset={"step_size": 0.5, "hide": ["rank"], "lock": ["batch_size"]})
    try:
        ex.widget
        assert ex.wait(10)
        assert ex.config.step_size == 0.5 and ex.inputs["step_size"].value == pytest.approx(0.5)
        assert ex.inputs["batch_size"].disabled
        assert ex.rows["rank"].layout.display == "none"
        ex.typed_text.value = "batch_size=8"  # a locked control cannot be typed around
        assert "locked" in ex.message_line.value and ex.config.batch_size == TINY.batch_size
        assert "fixed in this explorer" in ex.set(width=64)[0] and ex.config.width == TINY.width
    finally:
        ex.close()


def _widget_count():
    from ipywidgets.widgets import widget

    return len(widget._instances)


def test_headless_show_is_one_static_image_and_no_widgets(monkeypatch, capsys):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: shown.extend(objs))
    monkeypatch.setenv("REGLAB_HEADLESS", "1")
    rec = Recorder()
    before = _widget_count()
    ex = Explorer(TINY, run=rec, initial=pd.DataFrame(fake_frame(TINY)))
    ex.show()
    Explorer(TINY.replace(step_size=0.2), run=rec).show()  # no initial: runs once, quietly
    assert _widget_count() == before
    assert [type(o) for o in shown] == [IPython.display.Image] * 2
    assert all(o.data[:4] == b"\x89PNG" for o in shown)
    assert [c.step_size for c in rec.configs] == [0.2]
    assert capsys.readouterr() == ("", "")  # no progress bars, no prints


# ---------------------------------------------------------------------------------------------
# pure pieces


def test_config_for_sets_dict_keys():
    base = RunConfig(data="modular", data_options={"p": 13})
    assert config_for(base, {"data_options.p": 31, "step_size": 0.2}).data_options == {"p": 31}
    assert base.data_options == {"p": 13}


def test_extra_specs_for_theme_controls():
    base = RunConfig(data="modular", data_options={"p": 13}, loss="mse")
    ex = Explorer(base, run=Recorder(), n_train=100, headless=False, controls=("step_size",),
                  extra={"data_options.p": IntRange(7, 97), "loss": Choice(["mse", "ce"]), "steps": IntRange(100, 5000)})
    assert ex.set(**{"data_options.p": 200}) == ["data_options.p = 200 is above this control's range [7, 97]. "
                                                  "Keeping data_options.p = 13."]
    assert ex.config.data_options == {"p": 13}
    assert ex.set(loss="ce") == [] and ex.config.loss == "ce"
    assert "one of" in ex.set(loss="hinge2")[0]


def test_resolve_and_parse_helpers():
    spec = LogRange(1e-5, 1, off=0.0)
    assert resolve("weight_decay", 0, spec, TINY, {}, 200).value == 0.0
    out = resolve("weight_decay", -1.0, spec, TINY, {"weight_decay": 0.0}, 200)
    assert not out.accepted and "[0, inf)" in out.message
    assert parse_assignments("step_size=0.3, batch_size=full rank=None seed=2") == {
        "step_size": 0.3, "batch_size": None, "rank": None, "seed": 2}


def test_infer_divergence_from_nan_rows():
    frame = pd.DataFrame(fake_frame(TINY, diverge_at=10))
    assert infer_divergence(frame) == {0: 10}
    assert infer_divergence(pd.DataFrame(fake_frame(TINY))) == {}


def test_charts_curves_mark_divergence_and_render_offline(tmp_path):
    frame = pd.DataFrame(fake_frame(TINY, diverge_at=10)).assign(diverged_at=10.0)
    chart = charts.curves(frame, "train_loss", log_y=True) + charts.reference_rule(0.5, "½")
    spec = str(chart.to_dict())
    assert "diverged at step 10" in spec and "nan" not in spec.lower()
    assert charts.to_png(chart, tmp_path / "c.png")[:4] == b"\x89PNG"
    assert "<svg" in charts.to_svg(chart)
    sweep = pd.DataFrame({"step_size": [0.1, 0.1, 1.0, 1.0], "batch_size": [8, None, 8, None], "acc": np.arange(4.0)})
    assert "full" in str(charts.heatmap(sweep, "step_size", "batch_size", "acc").to_dict())


def test_declared_parameters_become_controls_with_their_hints():
    import math

    from reglab.config import Interval, OneOf
    from reglab.theme import Param
    from reglab.widgets.controls import Choice, IntRange, LogRange, spec_for

    decay = spec_for(Param(2.0, Interval(float, 0, math.inf), "weight decay λ", log=True, slider=(1e-3, 20),
                           off=(0.0, "λ = 0")))
    assert isinstance(decay, LogRange) and (decay.low, decay.high, decay.off, decay.off_label) == (1e-3, 20, 0.0, "λ = 0")
    rank = spec_for(Param(None, Interval(int, 1, 100, allow_none=True), "rank r", step=5, off=(None, "full rank")))
    assert isinstance(rank, IntRange) and rank.step == 5 and rank.off is None and rank.off_label == "full rank"
    loss = spec_for(Param("ce", OneOf(("ce", "stablemax_ce")), "loss", labels=("softmax", "StableMax")))
    assert isinstance(loss, Choice) and loss.text("stablemax_ce") == "StableMax"


def test_presets_set_values_lock_and_hide_and_the_learned_view_is_drawn():
    import altair as alt

    from reglab import RunConfig
    from reglab.widgets import Explorer

    cfg = RunConfig(data="digits", n_train=200, width=16, depth=1, steps=20, eval_every=10)
    learned = lambda frame, config: alt.Chart(alt.Data(values=[{"a": 1}])).mark_point().encode(x="a:Q")
    ex = Explorer(cfg, headless=True, learned=learned,
                  presets={"edge": {"question": "where does λ_max stop?", "values": {"step_size": 0.5},
                                    "lock": ("batch_size",), "hide": ("rank",)}})
    try:
        ex.apply_preset("edge")
        assert ex.values["step_size"] == 0.5 and ex.locked == {"batch_size"} and ex.hidden == {"rank"}
        with pytest.raises(ConfigError, match="No preset named 'nope'"):
            ex.apply_preset("nope")
        assert isinstance(ex.static_chart(), alt.VConcatChart)
    finally:
        ex.close()


def test_log_sliders_stop_at_round_values_and_readouts_show_the_value_used():
    from reglab.widgets.controls import round_grid, show_value

    assert round_grid(1e-4, 10)[:4] == [1e-4, 2e-4, 5e-4, 1e-3] and 0.2 in round_grid(1e-4, 10)
    assert round_grid(1e-3, 0.2, include=[0.15]) == [1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2]
    decay = LogRange(1e-5, 1, off=0.0, off_label="λ = 0")
    assert show_value(decay, 0.0) == "0" and show_value(decay, 0.2) == "0.2" and show_value(decay, 1.9953e-3) == "0.0019953"
    assert show_value(IntRange(1, 16, off=None, off_label="full rank"), None) == "full"


def test_the_set_box_takes_the_names_people_see():
    from reglab.widgets.controls import FloatRange, aliases

    specs = {"step_size": LogRange(1e-4, 10, label="step size η"),
             "data_options.corrupt_fraction": FloatRange(0, 0.5, label="corrupted fraction")}
    names = aliases(specs)
    assert parse_assignments("corrupted fraction = 0.2, η=0.3", names) == {"data_options.corrupt_fraction": 0.2, "step_size": 0.3}
    assert parse_assignments("step size=0.05 corrupt_fraction=0.1", names) == {"step_size": 0.05, "data_options.corrupt_fraction": 0.1}


def test_a_refused_entry_does_not_restart_the_run_in_progress():
    rec = Recorder(slow={0.3})
    ex = explorer(rec, config=TINY.replace(steps=200, eval_every=5))
    try:
        ex.set(step_size=0.3)
        deadline = time.time() + 5
        while len(rec.configs) < 2 and time.time() < deadline:
            time.sleep(0.01)
        started, stop = ex.session.runs_started, rec.stops[-1]
        ex.typed_text.value = "garbage"
        ex.typed_text.value = "step_size=-1"
        ex.readouts["step_size"].value = "-0.1"  # typed beside the slider: refused, not clamped to 0.0001
        assert "(0, inf)" in ex.message_line.value and ex.readouts["step_size"].value == "0.3"
        assert ex.session.runs_started == started and not stop.is_set()  # the run goes on
        assert ex.typed_text.value == ""
        ex.readouts["step_size"].value = "0.25"  # in range: used exactly
        assert ex.config.step_size == 0.25 and stop.is_set()
    finally:
        ex.close()


def test_batch_sizes_follow_the_data_size():
    base = RunConfig(data="modular", data_options={"p": 31, "train_fraction": 0.5}, width=16, depth=1, steps=10,
                     batch_size=256)
    ex = Explorer(base, run=Recorder(), headless=False, extra={"data_options.p": IntRange(7, 97)})
    n = ex.n_train
    assert ex.specs["batch_size"].labels[-1] == f"full batch ({n})"
    [message] = ex.set(**{"data_options.p": 13})
    assert ex.n_train < n and ex.config.batch_size is None and "full batch" in message
    assert ex.specs["batch_size"].labels[-1] == f"full batch ({ex.n_train})"
    assert max(o for o in ex.specs["batch_size"].options if o) < ex.n_train


def test_compare_labels_name_only_the_differing_setting_and_charts_fit_the_column():
    rec = Recorder()
    ex = explorer(rec, chart=lambda f, c: charts.row(*(charts.curves(f, m, title=m) for m in ("train_loss", "test_loss") * 2)))
    try:
        ex.compare_box.value = True
        ex.set(step_size=0.2)
        assert ex.wait(10)
        assert set(ex.frame["label"]) == {"η=0.1", "η=0.2"}
        spec = ex.chart_widget.spec
        assert "concat" in spec and spec["columns"] < 4 and charts.estimated_width(ex.last_chart) <= 940
        assert "'title': 'run'" in str(spec)  # the legend of the compared runs
    finally:
        ex.close()


def test_small_multiples_draw_one_panel_per_kept_run_on_shared_axes():
    rec = Recorder()
    ex = explorer(rec)
    try:
        ex.multiples_box.value = True  # a compare-mode view: it turns compare on
        assert ex.compare_box.value and ex.compare
        for eta in (0.2, 0.5):
            ex.set(step_size=eta)
            assert ex.wait(10)
        spec = ex.chart_widget.spec
        titles = [panel["title"] for panel in spec["concat"]]
        assert titles == ["η=0.5 (current)", "η=0.2", "η=0.1"]  # one panel per run, named by the setting that differs
        assert spec["resolve"]["scale"] == {"x": "shared", "y": "shared"} and spec["columns"] == 3
        assert charts.estimated_width(ex.last_chart) <= 940
        assert "datum.current" not in str(spec["concat"])  # nothing faded: each panel is one run
        assert set(ex.frame["label"]) == {"η=0.1", "η=0.2", "η=0.5"}  # the export still has every run's rows
        charts.to_png(ex.last_chart)  # renders offline
        ex.multiples_box.value = False  # overlaid again
        assert "concat" not in ex.chart_widget.spec and ex.compare
    finally:
        ex.close()


def test_small_multiples_of_a_chart_of_several_views_share_each_views_axes():
    rec = Recorder()
    ex = explorer(rec, chart=lambda f, c: charts.row(charts.curves(f, "train_loss", title="train"),
                                                     charts.curves(f, "test_loss", title="test")))
    try:
        ex.multiples_box.value = True
        ex.set(step_size=0.2)
        assert ex.wait(10)
        columns = ex.chart_widget.spec["hconcat"]  # a row per run, a column per view
        assert len(columns) == 2 and all(len(c["vconcat"]) == 2 for c in columns)
        assert [p["title"] for p in columns[1]["vconcat"]] == ["η=0.2 (current) · test", "η=0.1 · test"]
        assert all(c["resolve"]["scale"] == {"x": "shared", "y": "shared"} for c in columns)
        assert charts.estimated_width(ex.last_chart) <= 940
    finally:
        ex.close()

"""The explorer: one panel of controls over a live chart, knowing nothing of any theme.

    from reglab.widgets import Explorer, IntRange
    Explorer(config, chart=my_chart, extra={"steps": IntRange(100, 5000)})

A theme gives a starting RunConfig and a chart spec `chart(frame, config) -> alt.Chart` over the tidy
frame (run, step, metric, value, plus label/current/diverged_at, see reglab.charts). Moving a control
cancels the running training and starts the new one after a short debounce; the chart redraws while
rows stream in; finished runs are cached by config hash so a revisit redraws at once.

Headless (REGLAB_HEADLESS set, or no kernel) `show()` draws one static PNG and creates no widgets.

The pure logic lives in controls.py (specs, clamping, config from values) and session.py (worker,
cancellation, cache); this file is the widget plumbing.
"""
from __future__ import annotations

import html
import math
import threading
from pathlib import Path
from typing import Callable

import altair as alt
import pandas as pd

from reglab import charts
from reglab.config import ConfigError, RunConfig, validate
from reglab.theme import Param

from .controls import (COMMON, NO_OFF, Choice, FloatRange, IntRange, LogRange, Toggle, config_for, default_spec,
                       get_value, label, parse_assignments, resolve, spec_for)
from .session import LiveRun, Session, normalize

MAX_KEPT = 6  # earlier runs kept as faded lines in compare mode
COLORS = {"info": "#555", "warn": "#b9770e", "error": "#c0392b"}


def train_run(config: RunConfig, on_eval, stop):
    """The default run: one reglab.train, streaming rows, cancellable, without a tqdm bar."""
    from reglab.engine import train

    return train(config, on_eval=on_eval, stop=stop, progress=False)


def default_chart(frame: pd.DataFrame, config: RunConfig):
    """Train and test loss against step, log scale."""
    losses = [m for m in ("train_loss", "test_loss") if m in set(frame["metric"])]
    return charts.curves(frame, losses or None, log_y=bool(losses), title="loss")


def view_frame(current: LiveRun, kept: list, names) -> pd.DataFrame:
    """The frame a chart gets: the current result plus the kept ones, with `label` (the control values),
    `current` (False for kept runs) and `diverged_at`; kept runs get run ids after the current ones so
    that a spec's `detail="run:N"` still separates every line."""
    parts, offset = [], 0
    for result, is_current in [(current, True), *((k, False) for k in kept)]:
        f = result.frame.copy()
        f["diverged_at"] = f["run"].map(result.diverged_at).astype(float)
        f["run"] = f["run"] + offset
        f["label"] = label(result.config, names)
        f["current"] = is_current
        offset = int(f["run"].max()) + 1 if len(f) else offset
        parts.append(f)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


class Explorer:
    """Controls over a live chart of one config's run.

    config: the starting values. chart: `chart(frame, config) -> alt.Chart`, a spec over the tidy frame
    (default: train/test loss). run: `run(config, on_eval, stop) -> Run | DataFrame`, streaming rows
    through `on_eval(rows, step)` and returning soon after `stop` (a threading.Event) is set; default
    `reglab.train(config, on_eval=on_eval, stop=stop, progress=False)` (a custom run should also keep
    tqdm quiet). A returned frame reports divergence in a `diverged_at` column (a Run in its summary).
    controls: common controls shown, by name. extra: {name: spec} for theme controls ("steps",
    "data_options.p", ...) or to override a common control's spec. preset: values to set, plus
    "hide": [names] and "lock": [names]. n_train: the training set size (default: from the data).
    initial: a Run or tidy frame of `config` already computed (drawn without training; used headless).
    debounce, redraw_every: seconds. headless: force the static mode (default: REGLAB_HEADLESS or no kernel).
    """

    def __init__(self, config: RunConfig, chart: Callable | None = None, run: Callable | None = None,
                 controls=COMMON, extra: dict | None = None, preset: dict | None = None,
                 n_train: int | None = None, initial=None, *, presets: dict | None = None,
                 learned: Callable | None = None, debounce: float = 0.25, redraw_every: float = 0.2,
                 headless: bool | None = None):
        validate(config, n_train=n_train)
        self.base = self._initial_config = config
        self.chart_fn = chart or default_chart
        self.learned_fn = learned
        self.presets = dict(presets or {})
        self.run_fn = run or train_run
        self.extra = {}
        for name, spec in (extra or {}).items():  # a theme's declared Param becomes its control
            if isinstance(spec, Param):
                name, spec = spec.field or name, spec_for(spec)
            self.extra[name] = spec
        self.names = list(dict.fromkeys([*controls, *self.extra]))
        self.initial = initial
        self.headless = charts.headless() if headless is None else headless
        self.lock = threading.RLock()
        self.session = Session(self.run_fn, self, debounce=debounce, redraw_every=redraw_every, lock=self.lock)
        self.values = {n: get_value(config, n) for n in self.names}
        self.compare = False
        self.kept: list[LiveRun] = []
        self.status = ""
        self.lines: list[tuple[str, str]] = []  # (level, text) shown under the chart
        self.last_chart = None
        self.last_frame: pd.DataFrame | None = None
        self.inputs: dict = {}  # name -> the control's value widget (built on first display)
        self.offs: dict = {}  # name -> its "off" checkbox
        self.rows: dict = {}  # name -> the control's row (hidden by a preset's "hide")
        self._n_train = n_train
        self._specs = None
        self._panel = None
        self._syncing = False
        preset = dict(preset or {})
        self.hidden = set(preset.pop("hide", ()))
        self.locked = set(preset.pop("lock", ()))
        values = {**preset.pop("values", {}), **preset}
        if values:
            self.set(**values)

    # -- plain state ---------------------------------------------------------------------------
    @property
    def n_train(self) -> int:
        if self._n_train is None:
            if self.base.n_train is not None:
                self._n_train = self.base.n_train
            else:
                from reglab.data import make_dataset

                self._n_train = make_dataset(self.base.data, None, self.base.data_seed, **self.base.data_options).n_train
        return self._n_train

    @property
    def specs(self) -> dict:
        if self._specs is None:
            self._specs = {n: self.extra.get(n) or default_spec(n, self.base, self.n_train) for n in self.names}
        return self._specs

    @property
    def config(self) -> RunConfig:
        """The config the controls describe now."""
        return config_for(self.base, {n: v for n, v in self.values.items() if not ("." in n and v is None)})

    @property
    def stamp(self) -> str:
        return self.config.to_text()

    @property
    def frame(self) -> pd.DataFrame | None:
        """The tidy frame drawn last (current run and, in compare mode, the kept ones)."""
        return self.last_frame

    def set(self, **values) -> list:
        """Set controls (or other RunConfig fields) by name; returns the messages shown. A value the core
        refuses is refused with its ConfigError message, one outside a slider's range is clamped."""
        with self.lock:
            messages, fields = [], {}
            for name, value in values.items():
                if name in STRUCTURE and name not in self.names:
                    messages.append(f"{name} is fixed in this explorer ({name}={getattr(self.base, name)!r}); "
                                    f"its controls were built for it.")
                    continue
                spec = self.specs.get(name) if name in self.names else None
                outcome = resolve(name, value, spec, self.base, self.values, self.n_train)
                if outcome.accepted:
                    if name in self.names:
                        self.values[name] = outcome.value
                    else:
                        fields[name] = outcome.value
                if outcome.message:
                    messages.append(outcome.message)
            if fields:
                self.base = config_for(self.base, fields)
            self._say(messages, "warn")
            self._sync_widgets()
        self._request()
        return messages

    def restore(self, text: str) -> list:
        """Restore the view from a config stamp (RunConfig.to_text); a bad stamp is refused with a message."""
        with self.lock:
            try:
                cfg = RunConfig.from_text(text)
                validate(cfg, n_train=self.n_train)
                other = [f for f in STRUCTURE if f not in self.names and getattr(cfg, f) != getattr(self.base, f)]
                if other:
                    raise ConfigError(f"This stamp is for another panel: it changes {', '.join(other)}, which this "
                                      f"explorer keeps fixed ({', '.join(f'{f}={getattr(self.base, f)!r}' for f in other)}).")
            except ConfigError as err:
                return self._say([f"{err} The view is unchanged."], "error")
            except Exception as err:  # JSON that is not an object of RunConfig fields
                return self._say([f"Not a reglab config stamp ({type(err).__name__}: {err}). The view is unchanged."], "error")
            messages, values = [], {}
            for name in self.names:
                if name in self.locked:
                    values[name] = self.values[name]
                    if get_value(cfg, name) != self.values[name]:
                        messages.append(f"{name} is locked in this panel; keeping {name} = {self.values[name]!r}.")
                    continue
                outcome = resolve(name, get_value(cfg, name), self.specs[name], cfg, {}, self.n_train)
                values[name] = outcome.value if outcome.accepted else self.values[name]
                if outcome.message:
                    messages.append(outcome.message)
            fields = {f for f, v in cfg.to_dict().items() if v != self.base.to_dict()[f]} - {n.split(".")[0] for n in self.names}
            if fields:
                messages.append(f"The stamp also sets {', '.join(sorted(fields))} (not controls of this panel).")
            self.base, self.values = cfg, values
            self._say(messages or ["Restored."], "info" if not messages else "warn")
            self._sync_widgets()
        self._request()
        return messages

    def apply_preset(self, name: str) -> list:
        """Set a named preset's values and lock / hide the controls it names; returns the messages."""
        if name not in self.presets:
            raise ConfigError(f"No preset named {name!r}; presets: {', '.join(self.presets) or 'none'}.")
        preset = dict(self.presets[name])
        self.hidden, self.locked = set(preset.get("hide", ())), set(preset.get("lock", ()))
        return self.set(**preset.get("values", {}))

    def stop(self) -> None:
        self.session.stop()

    def wait(self, timeout: float | None = 60) -> bool:
        """Block until the current view is fully drawn (for scripts and tests)."""
        return self.session.wait(timeout)

    def close(self) -> None:
        self.session.close()
        if self._panel is not None:
            self._panel.close()

    def export(self, kind: str = "png", path=None) -> Path | None:
        """Write the chart (png, svg) or the run data (csv) to `path`, by default reglab-<hash>.<kind>
        in the working directory; the path is shown in the panel."""
        with self.lock:
            current = self.session.current
            chart, frame = self.last_chart, self.last_frame
        if current is None or chart is None:
            self._say(["Nothing to export yet."], "warn")
            return None
        target = Path(path or f"reglab-{current.key}.{kind}").resolve()
        try:
            if kind == "png":
                charts.to_png(chart, target)
            elif kind == "svg":
                charts.to_svg(chart, target)
            elif kind == "csv":
                frame.to_csv(target, index=False)
            else:
                raise ConfigError(f"export takes kind 'png', 'svg' or 'csv'. Got {kind!r} instead.")
        except Exception as err:
            self._say([f"Export failed: {err}"], "error")
            return None
        if self._panel is not None:
            self.export_line.value = f"Saved <code>{html.escape(str(target))}</code>"
        return target

    # -- the session's view (called under self.lock, possibly from the worker thread) ------------
    def draw(self, result: LiveRun) -> None:
        kept = self.kept if self.compare else []
        if not kept and result.view is not None:  # drawn before (a cached revisit): reuse it
            chart, frame = result.view
            self.last_chart, self.last_frame = chart, frame
            if self._panel is not None:
                self.chart_widget.chart = chart
            return
        frame = view_frame(result, kept, self.names)
        try:
            chart = self._chart(result, frame, faded=bool(kept))
        except Exception as err:  # a theme's chart bug is shown, not raised into the worker
            self.message(f"The chart failed: {type(err).__name__}: {err}", "error")
            return
        self.last_chart, self.last_frame = chart, frame
        if not kept and result.complete:
            result.view = (chart, frame)
        if self._panel is not None:
            self.chart_widget.chart = chart

    def _chart(self, result: LiveRun, frame: pd.DataFrame, faded: bool = False):
        """The theme's spec over the frame (its builders mark diverged runs), with the theme's view of
        what the model learned below it; earlier runs faded. The divergence message itself is one line
        under the chart (see Session)."""
        chart = self.chart_fn(frame, result.config)
        if self.learned_fn is not None:
            chart = alt.vconcat(chart, self.learned_fn(frame, result.config))
        return charts.fade_previous(chart) if faded else chart

    def progress(self, fraction: float, text: str) -> None:
        self.status = text
        if self._panel is not None:
            self.progress_bar.value = max(0.0, min(1.0, fraction))
            self.status_label.value = text

    def message(self, text: str, level: str = "info") -> None:
        if (level, text) not in self.lines:
            self.lines.append((level, text))
        self._render_lines()

    # -- display -------------------------------------------------------------------------------
    def show(self) -> None:
        """Display the panel; headless: one static image of the current config, no widgets."""
        from IPython.display import display

        if self.headless:
            charts.show_static(self.static_chart())
        else:
            display(self.widget)

    def _ipython_display_(self) -> None:
        self.show()

    def static_chart(self):
        """The chart of the current config, from `initial` when it is that config's, else from one quiet
        run (no progress bar). Errors are raised: in a headless run they should fail the notebook."""
        cfg = self.config
        if self.initial is not None and cfg == self._initial_config:
            result = self._initial_result()
        else:
            out = self.run_fn(cfg, lambda rows, step: None, threading.Event())
            frame, diverged, _ = normalize(out, cfg, [])
            result = LiveRun(cfg, frame, "diverged" if diverged else "done", int(frame["step"].max()) if len(frame) else 0, diverged)
        frame = view_frame(result, [], self.names)
        chart = self._chart(result, frame)
        with self.lock:
            self.session.current, self.last_chart, self.last_frame = result, chart, frame
        return chart

    def _initial_result(self) -> LiveRun:
        cfg = self._initial_config
        frame, diverged, _ = normalize(self.initial, cfg, [])
        return LiveRun(cfg, frame, "diverged" if diverged else "done", int(frame["step"].max()) if len(frame) else 0, diverged)

    @property
    def widget(self):
        """The panel (an ipywidgets VBox), built on first use; the first run starts then."""
        if self._panel is None:
            self._build()
            if self.initial is not None:
                self.session.add(self._initial_result())
            self.session.request(self.config, delay=0)
        return self._panel

    # -- widget plumbing ---------------------------------------------------------------------------
    def _build(self) -> None:
        import altair as alt
        import ipywidgets as W

        charts.offline_widgets()
        rows = []
        for name in self.names:
            row, value_widget, off = _control_widget(W, name, self.specs[name], self.values[name])
            self.inputs[name] = value_widget
            value_widget.observe(lambda change, n=name: self._from_widget(n, moved=True), names="value")
            if off is not None:
                self.offs[name] = off
                off.observe(lambda change, n=name: self._from_widget(n), names="value")
            if name in self.hidden:
                row.layout.display = "none"
            if name in self.locked:
                for w in row.children:
                    w.disabled = True
            rows.append(row)
            self.rows[name] = row
        self.stop_button = W.Button(description="Stop", icon="stop", layout=W.Layout(width="80px"), tooltip="stop this run")
        self.stop_button.on_click(lambda _: self.stop())
        self.progress_bar = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="220px"))
        self.status_label = W.Label(self.status)
        self.compare_box = W.Checkbox(value=self.compare, description="compare (keep earlier runs, faded)", indent=False)
        self.compare_box.observe(lambda change: self._set_compare(change["new"]), names="value")
        placeholder = alt.Chart({"values": [{"t": "training…"}]}).mark_text(size=14, color="gray").encode(
            text="t:N").properties(width=charts.WIDTH, height=charts.HEIGHT)
        self.chart_widget = alt.JupyterChart(placeholder, embed_options={"renderer": "svg", "actions": False})
        self.message_line = W.HTML("")
        self.stamp_text = W.Text(value=self.stamp, description="config", continuous_update=False,
                                 layout=W.Layout(width="760px"), tooltip="copy this stamp; paste one here to restore")
        self.stamp_text.observe(lambda change: self._from_stamp(change["new"]), names="value")
        self.typed_text = W.Text(value="", description="set", continuous_update=False, layout=W.Layout(width="760px"),
                                 placeholder="paste a stamp (reglab:{…}) or type name=value, e.g. step_size=0.05 batch_size=full; Enter")
        self.typed_text.observe(lambda change: self._from_typed(change["new"]), names="value")
        buttons = []
        for kind in ("png", "svg", "csv"):
            b = W.Button(description=kind.upper(), icon="download", layout=W.Layout(width="80px"),
                         tooltip=f"save the {'run data' if kind == 'csv' else 'chart'} as {kind.upper()} in the working directory")
            b.on_click(lambda _, k=kind: self.export(k))
            buttons.append(b)
        self.export_buttons = buttons
        self.export_line = W.HTML("")
        self._panel = W.VBox([
            W.VBox(rows),
            W.HBox([self.stop_button, self.progress_bar, self.status_label], layout=W.Layout(align_items="center")),
            self.compare_box,
            self.chart_widget,
            self.message_line,
            self.stamp_text,
            self.typed_text,
            W.HBox([W.Label("export"), *buttons, self.export_line], layout=W.Layout(align_items="center")),
        ])
        self._panel.add_class("reglab-explorer")
        self._render_lines()

    def _widget_value(self, name: str):
        spec, widget = self.specs[name], self.inputs[name]
        off = self.offs.get(name)
        if off is not None and off.value:
            return spec.off
        if isinstance(spec, Choice):
            return spec.options[widget.value]
        return widget.value

    def _from_widget(self, name: str, moved: bool = False) -> None:
        if self._syncing:
            return
        off = self.offs.get(name)
        if moved and off is not None and off.value:  # moving the slider turns "off" (λ = 0, full rank) off
            self._syncing = True
            try:
                off.value = False
            finally:
                self._syncing = False
        self.set(**{name: self._widget_value(name)})

    def _from_stamp(self, text: str) -> None:
        if self._syncing or text.strip() == self.stamp:
            return
        self.restore(text)

    def _from_typed(self, text: str) -> None:
        if self._syncing or not text.strip():
            return
        if text.strip().startswith(("reglab:", "{")):
            self.restore(text)
        else:
            try:
                values = parse_assignments(text)
            except ConfigError as err:
                self._say([str(err)], "error")
                values = {}
            locked = [n for n in values if n in self.locked]
            for n in locked:
                del values[n]
            if values:
                self.set(**values)
            if locked:
                self.message(f"{', '.join(locked)} {'is' if len(locked) == 1 else 'are'} locked in this panel.", "warn")
        with self.lock:
            self._syncing = True
            try:
                self.typed_text.value = ""
            finally:
                self._syncing = False

    def _set_compare(self, on: bool) -> None:
        with self.lock:
            self.compare = bool(on)
            if not on:
                self.kept = []
            if self.session.current is not None:
                self.draw(self.session.current)

    def _request(self) -> None:
        if self._panel is None:
            return  # nothing displayed: nothing to run (headless, or before show)
        with self.lock:
            config = self.config
            current = self.session.current
            if self.compare and current is not None and current.complete:
                self.kept = [k for k in self.kept if k.key not in (current.key, config.short_hash())]
                self.kept = ([current] + self.kept)[:MAX_KEPT]
            elif self.compare:
                self.kept = [k for k in self.kept if k.key != config.short_hash()]
            self.session.request(config)

    def _sync_widgets(self) -> None:
        """Show self.values in the widgets (after a clamp, a refusal or a restore) without re-triggering."""
        if self._panel is None:
            return
        self._syncing = True
        try:
            for name, widget in self.inputs.items():
                spec, value = self.specs[name], self.values[name]
                off = self.offs.get(name)
                is_off = off is not None and (value is spec.off or value == spec.off)
                if off is not None:
                    off.value = is_off
                if isinstance(spec, Choice):
                    widget.value = spec.options.index(value)
                elif not is_off and value is not None:
                    widget.value = value
            self.stamp_text.value = self.stamp
        finally:
            self._syncing = False

    def _say(self, messages, level: str) -> list:
        """Replace the message line with this action's messages; returns them."""
        self.lines = [(level, m) for m in messages]
        self._render_lines()
        return list(messages)

    def _render_lines(self) -> None:
        if self._panel is None:
            return
        self.message_line.value = "<br>".join(
            f"<span style='color:{COLORS.get(level, '#555')}'>{html.escape(text)}</span>" for level, text in self.lines)


STRUCTURE = ("data", "n_train", "data_seed", "model", "width", "depth")  # what the controls' ranges were built for


def _control_widget(W, name: str, spec, value):
    """(row, value widget, off checkbox or None) for one control spec."""
    text = spec.label or name
    common = dict(description=text, continuous_update=False, style={"description_width": "110px"},
                  layout=W.Layout(width="440px"))
    off = None
    if isinstance(spec, Choice):
        options = [(spec.text(o), i) for i, o in enumerate(spec.options)]
        index = spec.options.index(value) if value in spec.options else 0
        if spec.numeric:
            widget = W.SelectionSlider(options=options, value=index, **common)
        elif len(options) <= 4:
            widget = W.ToggleButtons(options=options, value=index, description=text, style={"description_width": "110px"})
        else:
            widget = W.Dropdown(options=options, value=index, description=text, style={"description_width": "110px"})
    elif isinstance(spec, Toggle):
        widget = W.Checkbox(value=bool(value), description=text, indent=False)
    else:
        is_off = spec.has_off and (value is spec.off or value == spec.off)
        if is_off or value is None:  # the slider rests at the end nearest the "off" value: λ = 0 low, full rank high
            shown = spec.low if spec.off == 0 else spec.high
        else:
            shown = value
        if isinstance(spec, LogRange):
            widget = W.FloatLogSlider(value=shown, base=10, min=math.log10(spec.low), max=math.log10(spec.high),
                                      step=spec.step, readout_format=spec.fmt, **common)
        elif isinstance(spec, IntRange):
            widget = W.IntSlider(value=int(shown), min=int(spec.low), max=int(spec.high), step=int(spec.step or 1), **common)
        elif isinstance(spec, FloatRange):
            widget = W.FloatSlider(value=shown, min=spec.low, max=spec.high, step=spec.step or (spec.high - spec.low) / 100,
                                   readout_format=".3g", **common)
        else:
            raise ConfigError(f"Unknown control spec for '{name}': {spec!r}.")
        if spec.has_off:
            off = W.Checkbox(value=is_off, description=spec.off_label, indent=False, layout=W.Layout(width="140px"))
    parts = [widget] + ([off] if off is not None else [])
    return W.HBox(parts), widget, off

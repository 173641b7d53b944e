"""The explorer: one panel of controls over a live chart, knowing nothing of any theme.

    from reglab.widgets import Explorer, IntRange
    Explorer(config, chart=my_chart, extra={"steps": IntRange(100, 5000)})

A theme gives a starting RunConfig and a chart spec `chart(frame, config) -> alt.Chart` over the tidy
frame (run, step, metric, value, plus label/current/diverged_at, see reglab.charts). Moving a control
cancels the running training and starts the new one after a short debounce; the chart redraws while
rows stream in; finished runs are cached by config hash so a revisit redraws at once.

One source of truth: `self.values` (control name -> value used). Every widget shows it (the slider, a
readout that is exactly the value, the "off" checkbox), the stamp is made from it, and every change,
from a slider, a typed number, the set box, a stamp or a preset, goes through `set`/`restore`, which
refuse what they cannot use with a message and start a run only when the config actually changed.
The layout fits a ~960 px notebook column or a Voilà page (`charts.fit` wraps wide rows of charts).
Run controls: stop holds the run at its next evaluation (continue resumes it from the same weights),
step runs to the next evaluation and holds, reset goes back to the starting settings. "keep weights"
(off by default) makes a change of an optimization setting (step size, batch size, weight decay, ...)
go on from the current run's weights, its curve continuing along the step axis, as TensorFlow
Playground does; a change of the model's shape, the data or the seed restarts from fresh weights and the
message line says why (session.KEEPS_WEIGHTS, session.carry_over). In compare mode "small multiples"
draws each kept run in its own panel on shared axes instead of overlaying them. Presets are
named guided scenarios (a question, values, locked and hidden controls) in a chooser at the top.
Exports are browser downloads whose image caption and CSV header carry the settings stamp.

Headless (REGLAB_HEADLESS set, or no kernel) `show()` draws one static PNG and creates no widgets.

The pure logic lives in controls.py (specs, clamping, config from values) and session.py (worker,
cancellation, cache); this file is the widget plumbing.
"""
from __future__ import annotations

import base64
import html
import re
import threading
from pathlib import Path
from typing import Callable

import altair as alt
import pandas as pd

from reglab import charts
from reglab.config import ConfigError, RunConfig, validate
from reglab.theme import Param

from .controls import (COMMON, NO_OFF, Choice, FloatRange, IntRange, LogRange, Toggle, aliases, batch_options,
                       config_for, default_spec, get_value, label, parse_assignments, resolve, round_grid, show_value,
                       spec_for)
from .session import LiveRun, Session, normalize, weights

MAX_KEPT = 6  # earlier runs kept as faded lines in compare mode
PANEL_WIDTH = 940  # px: a Jupyter notebook column or a Voilà page is ~960–1000 px
LABEL_WIDTH, SLIDER_WIDTH, READOUT_WIDTH = "190px", "300px", "130px"
COLORS = {"info": "#555", "warn": "#b9770e", "error": "#c0392b"}


def train_run(config: RunConfig, on_eval, stop, start=None):
    """The default run: one reglab.train, streaming rows, cancellable, without a tqdm bar; `start`: the
    weights to begin from (keep weights)."""
    from reglab.engine import train

    return train(config, on_eval=on_eval, stop=stop, progress=False, start=start)


def default_chart(frame: pd.DataFrame, config: RunConfig):
    """Train and test loss against step, log scale."""
    losses = [m for m in ("train_loss", "test_loss") if m in set(frame["metric"])]
    return charts.curves(frame, losses or None, log_y=bool(losses), title="loss")


def view_frame(current: LiveRun, kept: list, names, specs: dict | None = None) -> pd.DataFrame:
    """The frame a chart gets: the current result plus the kept ones, with `label` (the control values;
    when comparing, only those that differ between the runs shown, e.g. "η=0.2"), `current` (False for
    kept runs), `diverged_at` and `budget` (the step budget: the x axis spans it from the start); kept
    runs get run ids after the current ones so that a spec's `detail="run:N"` still separates every line."""
    parts = view_parts(current, kept, names, specs)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def view_parts(current: LiveRun, kept: list, names, specs: dict | None = None) -> list:
    """view_frame's rows, one frame per result (the current one first)."""
    results = [current, *kept]
    differ = [n for n in names if len({repr(get_value(r.config, n)) for r in results}) > 1]
    budget = max(r.end for r in results)
    parts, offset = [], 0
    for result, is_current in [(current, True), *((k, False) for k in kept)]:
        f = result.frame.copy()
        f["diverged_at"] = f["run"].map(result.diverged_at).astype(float)
        f["run"] = f["run"] + offset
        f["label"] = label(result.config, differ if kept else names, specs)
        f["current"] = is_current
        f["budget"] = budget
        offset = int(f["run"].max()) + 1 if len(f) else offset
        parts.append(f)
    return parts


def small_multiples(parts: list, configs: list, chart: Callable, width: int = PANEL_WIDTH):
    """One panel per run instead of overlaid lines: `chart(part, config)` of each run's rows (view_parts),
    titled by its label (the settings that differ), the first marked "current". Panels share their axes
    (x and y scales, legends): a one-view chart wraps into a grid of up to three columns; a chart of
    several views (loss beside accuracy) gives each run a row and shares each view's axes down its
    column. Sized so that the whole fits `width` pixels across."""
    labels = [str(p["label"].iloc[0]) if len(p) else "" for p in parts]
    titles = [f"{t} (current)" if i == 0 else t for i, t in enumerate(labels)]
    panels = [chart(p.assign(current=True), c) for p, c in zip(parts, configs)]  # nothing faded in its own panel
    views = [_views(p) for p in panels]
    k = len(views[0]) if views[0] else 0
    if not k or any(v is None or len(v) != k for v in views):  # panels of differing shapes: side by side as they are
        return alt.concat(*(p.properties(title=t) for p, t in zip(panels, titles)), columns=min(len(panels), 2))
    n, spacing = len(panels), 20
    side = max(charts.estimated_width(p) - charts.estimated_width(p, False) for p in panels)  # a legend at the right
    columns = (n if n <= 3 else 2 if n == 4 else 3) if k == 1 else k
    across = max(120, min(charts.WIDTH, int((width - side - spacing * (columns - 1)) / columns) - 60))
    height = int(charts.HEIGHT * 0.7)

    def titled(view, text):
        old = view.title if view.title is not alt.Undefined else None
        old = getattr(old, "text", old)
        return _resize(view, across, height).properties(title=f"{text} · {old}" if old and k > 1 else text)

    if k == 1:
        return alt.concat(*(titled(v[0], t) for v, t in zip(views, titles)), columns=columns,
                          spacing=spacing).resolve_scale(x="shared", y="shared")
    return alt.hconcat(*(alt.vconcat(*(titled(v[j], t) for v, t in zip(views, titles)), spacing=spacing)
                         .resolve_scale(x="shared", y="shared") for j in range(k)), spacing=spacing)


def _views(chart) -> list | None:
    """The single views (charts and layers) of a chart, in reading order; None for a facet or repeat."""
    if isinstance(chart, (alt.Chart, alt.LayerChart)):
        return [chart]
    for attr in ("hconcat", "vconcat", "concat"):
        parts = getattr(chart, attr, alt.Undefined)
        if parts is not alt.Undefined:
            out = [_views(c) for c in parts]
            return None if any(v is None for v in out) else [v for vs in out for v in vs]
    return None


def _resize(view, width: int, height: int):
    """A chart or layer at this size (layers inside it that set a size get it too)."""
    view = view.copy(deep=False)
    if isinstance(view, alt.LayerChart):
        view.layer = [_resize(c, width, height) if c.width is not alt.Undefined or c.height is not alt.Undefined else c
                      for c in view.layer]
    return view.properties(width=width, height=height)


class Explorer:
    """Controls over a live chart of one config's run.

    config: the starting values. chart: `chart(frame, config) -> alt.Chart`, a spec over the tidy frame
    (default: train/test loss). run: `run(config, on_eval, stop) -> Run | DataFrame`, streaming rows
    through `on_eval(rows, step)` and returning soon after `stop` (a threading.Event) is set; default
    `reglab.train(config, on_eval=on_eval, stop=stop, progress=False)` (a custom run should also keep
    tqdm quiet). A returned frame reports divergence in a `diverged_at` column (a Run in its summary).
    "keep weights" needs a run that returns a Run and takes `start=None`, passed on to reglab.train.
    controls: common controls shown, by name. extra: {name: spec or Param} for theme controls ("steps",
    "data_options.p", ...) or to override a common control's spec. preset: values to set, plus
    "hide": [names] and "lock": [names]. presets: {name: {"question", "values", "lock", "hide"}}, offered
    in a chooser. learned: `(frame, config) -> chart` of what the model learned, drawn under the curves.
    n_train: the training set size (default: from the data, followed when a control changes it).
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
        self._initial_values = dict(self.values)
        self.compare = False
        self.small_multiples = False  # compare mode: one panel per run instead of overlaid lines
        self.keep_weights = False  # a change of an optimization setting goes on from the current weights
        self.kept: list[LiveRun] = []
        self.status = ""
        self.lines: list[tuple[str, str]] = []  # (level, text) shown under the chart
        self.last_chart = None
        self.last_frame: pd.DataFrame | None = None
        self.inputs: dict = {}  # name -> the control's value widget (built on first display)
        self.offs: dict = {}  # name -> its "off" checkbox
        self.readouts: dict = {}  # name -> the text box beside the slider: the value used, typed values
        self.rows: dict = {}  # name -> the control's row (hidden by a preset's "hide")
        self.preset_name: str | None = None
        self._fixed_n = n_train
        self._n_cache: dict = {}
        self._specs = None
        self._panel = None
        self._syncing = False
        self._requested: str | None = None  # hash of the config last asked of the session
        preset = dict(preset or {})
        self.hidden = set(preset.pop("hide", ()))
        self.locked = set(preset.pop("lock", ()))
        values = {**preset.pop("values", {}), **preset}
        if values:
            self.set(**values)

    # -- plain state ---------------------------------------------------------------------------
    @property
    def n_train(self) -> int:
        """The training-set size of the config the controls describe (follows p, a train fraction…)."""
        if self._fixed_n is not None:
            return self._fixed_n
        cfg = config_for(self.base, {n: v for n, v in self.values.items() if n.split(".")[0] in
                                     ("data", "n_train", "data_seed", "data_options") and not ("." in n and v is None)})
        if cfg.n_train is not None:
            return cfg.n_train
        key = (cfg.data, cfg.data_seed, repr(sorted(cfg.data_options.items())))
        if key not in self._n_cache:
            from reglab.data import make_dataset

            self._n_cache[key] = make_dataset(cfg.data, None, cfg.data_seed, **cfg.data_options).n_train
        return self._n_cache[key]

    @property
    def specs(self) -> dict:
        if self._specs is None:
            self._specs = {n: self.extra.get(n) or default_spec(n, self.base, self.n_train) for n in self.names}
            self._specs_n = self.n_train
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
        refuses, or one outside its control's range, is refused with a message and the old value kept;
        a run starts only when the config changed (with keep weights, from the current weights)."""
        return self._set(values)

    def _set(self, values: dict, keep: bool | None = None) -> list:
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
            messages += self._follow_data_size()
            self._say(messages, "warn")
            self._sync_widgets()
        self._request(keep=keep)
        return messages

    def _follow_data_size(self) -> list:
        """After p or a train fraction changed the training-set size: the batch-size control offers the
        sizes of the new data, and a batch larger than it becomes the full batch (said so)."""
        if self._specs is None or self.n_train == getattr(self, "_specs_n", None):
            return []
        n, messages = self.n_train, []
        self._specs_n = n
        if "batch_size" in self.names and "batch_size" not in self.extra:
            b = self.values["batch_size"]
            if b is not None and b >= n:
                self.values["batch_size"] = None
                messages.append(f"batch size {b} is not below the {n} training examples now; using the full batch.")
            self._specs["batch_size"] = batch_options(n, self.values["batch_size"])
        return messages

    def restore(self, text: str) -> list:
        """Restore the view from a config stamp (RunConfig.to_text); a bad stamp is refused with a message,
        a value outside a control's range is clamped with one."""
        with self.lock:
            try:
                cfg = RunConfig.from_text(text)
                other = [f for f in STRUCTURE if f not in self.names and getattr(cfg, f) != getattr(self.base, f)]
                if other:
                    raise ConfigError(f"This stamp is for another panel: it changes {', '.join(other)}, which this "
                                      f"explorer keeps fixed ({', '.join(f'{f}={getattr(self.base, f)!r}' for f in other)}).")
                old = self.values
                self.values = {n: get_value(cfg, n) for n in self.names}
                try:
                    n = self.n_train
                finally:
                    self.values = old
                validate(cfg, n_train=n)
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
                outcome = resolve(name, get_value(cfg, name), self.specs[name], cfg, {}, n, clamp=True)
                values[name] = outcome.value if outcome.accepted else self.values[name]
                if outcome.message:
                    messages.append(outcome.message)
            fields = {f for f, v in cfg.to_dict().items() if v != self.base.to_dict()[f]} - {n.split(".")[0] for n in self.names}
            if fields:
                messages.append(f"The stamp also sets {', '.join(sorted(fields))} (not controls of this panel).")
            self.base, self.values = cfg, values
            messages += self._follow_data_size()
            self._say(messages or ["Restored."], "info" if not messages else "warn")
            self._sync_widgets()
        self._request(keep=False)  # the stamped run itself, not a continuation of the current one
        return messages

    def apply_preset(self, name: str | None) -> list:
        """Set a named preset's values and lock / hide the controls it names (None: free exploration,
        every control unlocked and shown); returns the messages."""
        if name is not None and name not in self.presets:
            raise ConfigError(f"No preset named {name!r}; presets: {', '.join(self.presets) or 'none'}.")
        preset = dict(self.presets[name]) if name is not None else {}
        with self.lock:
            self.preset_name = name
            self.hidden, self.locked = set(preset.get("hide", ())), set(preset.get("lock", ()))
            self._apply_access()
            if self._panel is not None:
                self._syncing = True
                try:
                    self.preset_box.value = name or FREE
                finally:
                    self._syncing = False
                self.question.value = (f"<b>{html.escape(name)}</b> — {html.escape(preset.get('question', ''))}"
                                       if name else "")
        messages = self._set(preset.get("values", {}), keep=False)  # a scenario starts from fresh weights
        return messages

    def reset(self) -> list:
        """Back to the starting settings (the notebook's own run, drawn from the cache)."""
        with self.lock:
            self.base = self._initial_config
            self.values = {n: v for n, v in self._initial_values.items()}
            self._follow_data_size()
            self._say(["Back to the starting settings."], "info")
            self._sync_widgets()
        self._request(keep=False)
        return []

    def stop(self) -> None:
        """Cancel the current run (what it drew stays, marked stopped)."""
        self.session.stop()

    def pause(self) -> bool:
        """Hold the run at its next evaluation (`resume` continues it from the same weights)."""
        return self.session.pause()

    def resume(self) -> bool:
        """Continue a held run; a stopped one (cancelled) is run again from step 0, or with keep weights
        goes on from where it stopped."""
        if self.session.resume():
            return True
        current = self.session.current
        if current is not None and current.status == "stopped":
            self._request(force=True)
            return True
        return False

    def step(self) -> bool:
        """Run to the next evaluation (config.eval_every steps) and hold there."""
        return self.session.advance()

    def wait(self, timeout: float | None = 60) -> bool:
        """Block until the current view is fully drawn, or held (for scripts and tests)."""
        return self.session.wait(timeout)

    def close(self) -> None:
        self.session.close()
        if self._panel is not None:
            self._panel.close()

    def export(self, kind: str = "png", path=None) -> Path | bytes | None:
        """The chart (png, svg) or the run data (csv), its settings stamp in the image's caption and in the
        CSV's header (lines starting with #). With `path`: written there, the path returned. Without (the
        panel's buttons): the bytes, offered in the panel as a browser download."""
        with self.lock:
            current = self.session.current
            chart, frame = self.last_chart, self.last_frame
        if current is None or chart is None:
            self._say(["Nothing to export yet."], "warn")
            return None
        lines = self._caption_lines(current.config)
        try:
            if kind == "png":
                data = charts.to_png(charts.caption(chart, lines))
            elif kind == "svg":
                data = charts.to_svg(charts.caption(chart, lines)).encode()
            elif kind == "csv":
                data = ("".join(f"# {line}\n" for line in lines) + frame.to_csv(index=False)).encode()
            else:
                raise ConfigError(f"export takes kind 'png', 'svg' or 'csv'. Got {kind!r} instead.")
        except Exception as err:
            self._say([f"Export failed: {err}"], "error")
            return None
        name = f"reglab-{_slug(label(current.config, self.names))}-{current.key[:8]}.{kind}"
        if path is not None:
            target = Path(path).resolve()
            target.write_bytes(data)
            if self._panel is not None:
                self.export_line.value = f"Saved <code>{html.escape(str(target))}</code>"
            return target
        if self._panel is not None:
            mime = {"png": "image/png", "svg": "image/svg+xml", "csv": "text/csv"}[kind]
            href = f"data:{mime};base64,{base64.b64encode(data).decode()}"
            self.export_line.value = (f"<a class='reglab-download' download='{html.escape(name)}' href='{href}' "
                                      f"style='font-weight:600'>⬇ save {html.escape(name)}</a>")
        return data

    def _caption_lines(self, config: RunConfig) -> list:
        stamp = config.to_text()
        lines = [label(config, self.names)] + [stamp[i:i + 110] for i in range(0, len(stamp), 110)]
        current = self.session.current
        if current is not None and current.start:  # the stamp alone does not reproduce a run that kept weights
            lines.append(f"from step {current.start}: went on from the weights of the run before it (keep weights)")
        return lines

    # -- the session's view (called under self.lock, possibly from the worker thread) ------------
    def draw(self, result: LiveRun):
        """Draw a result (a new run's first evaluation draws as points on axes that already span its budget)."""
        kept = self.kept if self.compare else []
        if not kept and result.view is not None:  # drawn before (a cached revisit): reuse its spec
            chart, frame, spec = result.view
            self.last_chart, self.last_frame = chart, frame
            self._show(chart, spec)
            return True
        parts = view_parts(result, kept, self.names, self.specs)
        frame = pd.concat(parts, ignore_index=True)
        multiples = (parts, [result.config, *(k.config for k in kept)]) if kept and self.small_multiples else None
        try:
            chart = self._chart(result, frame, faded=bool(kept), multiples=multiples)
            spec = chart.to_dict(validate=False) if self._panel is not None else None
        except Exception as err:  # a theme's chart bug is shown, not raised into the worker
            self.message(f"The chart failed: {type(err).__name__}: {err}", "error")
            return False
        self.last_chart, self.last_frame = chart, frame
        if not kept and result.complete:
            result.view = (chart, frame, spec)
        self._show(chart, spec)
        return True

    def _show(self, chart, spec) -> None:
        """Send the chart to the page: its spec as is (no second schema validation: ~0.05–0.1 s a draw),
        or through JupyterChart's own path when it has parameters (selections) to wire up."""
        if self._panel is None:
            return
        if spec is None or _has_params(spec):
            self.chart_widget.chart = chart
        else:
            self.chart_widget.spec = spec

    def _chart(self, result: LiveRun, frame: pd.DataFrame, faded: bool = False, multiples=None):
        """The theme's spec over the frame (its builders mark diverged runs), with the theme's view of
        what the model learned below it, fitted to the panel's width; earlier runs faded, or with
        `multiples` (view_parts, their configs) drawn as small multiples. A diverged run keeps its marker
        on every chart, its "diverged at step k" is said once, in the message line."""
        if multiples is not None:
            chart, faded = small_multiples(*multiples, self.chart_fn, PANEL_WIDTH), False
        else:
            chart = self.chart_fn(frame, result.config)
        if self.learned_fn is not None:
            chart = alt.vconcat(chart, self.learned_fn(frame, result.config))
        if result.diverged_at or (self.compare and any(k.diverged_at for k in self.kept)):
            chart = _without_divergence_text(chart)
        chart = charts.fit(chart, PANEL_WIDTH)
        return charts.fade_previous(chart) if faded else chart

    def progress(self, fraction: float, text: str) -> None:
        self.status = text
        if self._panel is not None:
            self.progress_bar.value = max(0.0, min(1.0, fraction))
            self.status_label.value = text
            self._update_buttons()

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
        frame = view_frame(result, [], self.names, self.specs)
        chart = self._chart(result, frame)
        with self.lock:
            self.session.current, self.last_chart, self.last_frame = result, chart, frame
        return chart

    def _initial_result(self) -> LiveRun:
        cfg = self._initial_config
        frame, diverged, _ = normalize(self.initial, cfg, [])
        params, taken = weights(self.initial, frame)
        return LiveRun(cfg, frame, "diverged" if diverged else "done", int(frame["step"].max()) if len(frame) else 0, diverged,
                       params=params, taken=taken)

    @property
    def widget(self):
        """The panel (an ipywidgets VBox), built on first use; the first run starts then."""
        if self._panel is None:
            self._build()
            if self.initial is not None:
                self.session.add(self._initial_result())
            self._request(force=True)
        return self._panel

    # -- widget plumbing ---------------------------------------------------------------------------
    def _build(self) -> None:
        import altair as alt
        import ipywidgets as W

        charts.offline_widgets()
        self._W = W
        rows = []
        for name in self.names:
            row, value_widget, off, readout = _control_widget(W, name, self.specs[name], self.values[name])
            self.inputs[name], self.readouts[name] = value_widget, readout
            value_widget.observe(lambda change, n=name: self._from_widget(n, moved=True), names="value")
            if readout is not None:
                readout.observe(lambda change, n=name: self._from_readout(n, change["new"]), names="value")
            if off is not None:
                self.offs[name] = off
                off.observe(lambda change, n=name: self._from_widget(n), names="value")
            row.add_class(f"reglab-control-{re.sub(r'[^A-Za-z0-9_-]', '-', name)}")  # hooks for the browser tests
            rows.append(row)
            self.rows[name] = row
        button = lambda text, icon, tip, width="96px": W.Button(description=text, icon=icon, tooltip=tip,
                                                               layout=W.Layout(width=width))
        self.stop_button = button("stop", "stop", "stop here; continue resumes from the same weights")
        self.stop_button.on_click(lambda _: self._play_pause())
        self.play_button = self.stop_button
        self.step_button = button("step", "step-forward", "run to the next evaluation and hold")
        self.step_button.on_click(lambda _: self.step())
        self.reset_button = button("reset", "undo", "back to the starting settings")
        self.reset_button.on_click(lambda _: self.reset())
        self.progress_bar = W.FloatProgress(value=0.0, min=0.0, max=1.0, layout=W.Layout(width="180px"))
        self.status_label = W.Label(self.status, layout=W.Layout(width="240px"))
        self.compare_box = W.Checkbox(value=self.compare, description="compare: keep earlier runs (faded), labelled "
                                      "by the settings that differ", indent=False, layout=W.Layout(width="auto"))
        self.compare_box.observe(lambda change: self._set_compare(change["new"]), names="value")
        self.multiples_box = W.Checkbox(value=self.small_multiples, description="small multiples: one panel per run, "
                                        "shared axes", indent=False, layout=W.Layout(width="auto"))
        self.multiples_box.observe(lambda change: self._set_multiples(change["new"]), names="value")
        takes = self.session.takes_start
        self.keep_box = W.Checkbox(value=self.keep_weights, description="keep weights", indent=False,
                                   disabled=not takes, layout=W.Layout(width="auto"),
                                   tooltip="on: a new step size, batch size, weight decay... goes on training the current "
                                           "weights; a new width, rank, depth, data or seed restarts" if takes else
                                           "this panel's run function takes no start= weights: every change restarts")
        self.keep_box.observe(lambda change: self._set_keep(change["new"]), names="value")
        placeholder = alt.Chart({"values": [{"t": "training…"}]}).mark_text(size=14, color="gray").encode(
            text="t:N").properties(width=charts.WIDTH, height=charts.HEIGHT)
        self.chart_widget = alt.JupyterChart(placeholder, embed_options={"renderer": "svg", "actions": False})
        self.chart_widget.layout = W.Layout(max_width=f"{PANEL_WIDTH + 20}px", overflow="hidden")
        self.message_line = W.HTML("")
        wide = dict(style={"description_width": "60px"}, layout=W.Layout(width="100%", max_width=f"{PANEL_WIDTH}px"))
        self.stamp_text = W.Text(value=self.stamp, description="config", continuous_update=False,
                                 tooltip="copy this stamp; paste one here to restore", **wide)
        self.stamp_text.observe(lambda change: self._from_stamp(change["new"]), names="value")
        self.typed_text = W.Text(value="", description="set", continuous_update=False,
                                 placeholder="a stamp (reglab:{…}) or name = value as shown, e.g. step size = 0.05, "
                                             "batch size = full; Enter", **wide)
        self.typed_text.observe(lambda change: self._from_typed(change["new"]), names="value")
        buttons = []
        for kind in ("png", "svg", "csv"):
            b = W.Button(description=kind.upper(), icon="download", layout=W.Layout(width="80px"),
                         tooltip=f"download the {'run data' if kind == 'csv' else 'chart'} as {kind.upper()}, "
                                 f"with its settings")
            b.on_click(lambda _, k=kind: self.export(k))
            buttons.append(b)
        self.export_buttons = buttons
        self.export_line = W.HTML("")
        self.preset_box = W.Dropdown(options=[FREE, *self.presets], value=FREE, description="scenario",
                                     style={"description_width": "60px"}, layout=W.Layout(width="420px"))
        self.preset_box.observe(lambda change: self._from_preset(change["new"]), names="value")
        self.question = W.HTML("", layout=W.Layout(max_width=f"{PANEL_WIDTH}px"))
        header = [W.HBox([self.preset_box]), self.question] if self.presets else []
        self._panel = W.VBox([
            *header,
            W.VBox(rows),
            W.HBox([self.stop_button, self.step_button, self.reset_button, self.progress_bar, self.status_label,
                    self.keep_box], layout=W.Layout(align_items="center", flex_flow="row wrap")),
            W.HBox([self.compare_box, self.multiples_box], layout=W.Layout(align_items="center", flex_flow="row wrap",
                                                                           grid_gap="16px")),
            self.chart_widget,
            self.message_line,
            self.stamp_text,
            self.typed_text,
            W.HBox([W.Label("download"), *buttons, self.export_line],
                   layout=W.Layout(align_items="center", flex_flow="row wrap")),
        ], layout=W.Layout(width="100%", max_width=f"{PANEL_WIDTH + 20}px", overflow="hidden"))
        self._panel.add_class("reglab-explorer")
        for widget, hook in [(self.stamp_text, "stamp"), (self.typed_text, "set"), (self.status_label, "status"),
                             (self.message_line, "messages"), (self.compare_box, "compare"), (self.preset_box, "presets"),
                             (self.multiples_box, "multiples"), (self.keep_box, "keep-weights"),
                             (self.question, "question"), (self.export_line, "download"), (self.stop_button, "stop"),
                             (self.step_button, "step"), (self.reset_button, "reset"), (self.chart_widget, "chart"),
                             *((b, f"export-{k}") for b, k in zip(buttons, ("png", "svg", "csv")))]:
            widget.add_class(f"reglab-{hook}")
        if self.preset_name is not None:
            self.apply_preset(self.preset_name)
        self._apply_access()
        self._render_lines()

    def _apply_access(self) -> None:
        """Hidden controls' rows are not shown; locked ones are disabled (slider, readout and checkbox)."""
        if self._panel is None:
            return
        for name, row in self.rows.items():
            row.layout.display = "none" if name in self.hidden else None
            for w in [self.inputs[name], self.offs.get(name), self.readouts.get(name)]:
                if w is not None:
                    w.disabled = name in self.locked

    def _update_buttons(self) -> None:
        s = self.session
        if s.held is not None:
            self.stop_button.description, self.stop_button.icon = "continue", "play"
        elif s.current is not None and s.current.status == "stopped":
            self.stop_button.description, self.stop_button.icon = "run", "play"
        else:
            self.stop_button.description, self.stop_button.icon = "stop", "stop"
        running = s.held is None and not s._idle.is_set()
        self.stop_button.disabled = not (running or s.held is not None or self.stop_button.description == "run")
        self.step_button.disabled = not (running or s.held is not None)

    def _play_pause(self) -> None:
        if self.session.held is not None or (self.session.current is not None and self.session.current.status == "stopped"
                                             and self.session._idle.is_set()):
            self.resume()
        elif not self.session.pause():
            self.message("Nothing is running.", "info")

    def _from_preset(self, name) -> None:
        if self._syncing:
            return
        self.apply_preset(None if name == FREE else name)

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

    def _from_readout(self, name: str, text: str) -> None:
        """A number typed beside a slider: used exactly when the control can take it, else refused with
        a message (never clamped silently); the box then shows the value used."""
        if self._syncing:
            return
        spec, raw = self.specs[name], text.strip()
        if raw == show_value(spec, self.values[name]):
            return
        words = {"full": None, "none": None, "off": getattr(spec, "off", None)}
        if isinstance(spec, Choice):
            value = next((o for o in spec.options if spec.text(o).lower() == raw.lower()), NO_OFF)
            if value is NO_OFF:
                value = words.get(raw.lower().split(" ")[0], NO_OFF) if raw.lower().startswith(("full", "none")) else NO_OFF
        elif getattr(spec, "has_off", False) and raw.lower() in {spec.off_label.lower(), "off", *(
                ("full", "none") if spec.off is None else ())} | ({str(spec.off)} if spec.off is not None else set()):
            value = spec.off
        else:
            value = NO_OFF
        if value is NO_OFF:
            try:
                value = parse_assignments(f"x={raw}")["x"]
            except ConfigError:
                value = raw
        if isinstance(spec, Choice) and value not in spec.options:  # a batch size between the offered ones
            messages = [f"{spec.label or name} offers {', '.join(spec.text(o) for o in spec.options)}. Got {raw!r}; "
                        f"keeping {show_value(spec, self.values[name])}."]
            self._say(messages, "error")
            self._sync_widgets()
            return
        self.set(**{name: value})

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
                values = parse_assignments(text, aliases(self.specs))
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
        self._clear_typed()

    def _clear_typed(self) -> None:
        """Empty the set box once its text is handled (also after a refusal: the message says what it was)."""
        def clear():
            with self.lock:
                self._syncing = True
                try:
                    self.typed_text.value = ""
                finally:
                    self._syncing = False

        clear()
        timer = threading.Timer(0.05, clear)  # again after the page's own echo of what was typed
        timer.daemon = True
        timer.start()

    def _set_compare(self, on: bool) -> None:
        with self.lock:
            self.compare = bool(on)
            if not on:
                self.kept = []
            if self.session.current is not None:
                self.draw(self.session.current)

    def _set_multiples(self, on: bool) -> None:
        """Small multiples on or off (a compare-mode view: turning it on turns compare on)."""
        with self.lock:
            self.small_multiples = bool(on)
            if on and not self.compare and self._panel is not None:
                self.compare_box.value = True  # draws through _set_compare
            elif self.session.current is not None:
                self.draw(self.session.current)

    def _set_keep(self, on: bool) -> None:
        with self.lock:
            self.keep_weights = bool(on)

    def _request(self, force: bool = False, keep: bool | None = None) -> None:
        """Ask the session for the config the controls describe; keep: go on from the current weights
        (default: the "keep weights" box)."""
        if self._panel is None:
            return  # nothing displayed: nothing to run (headless, or before show)
        with self.lock:
            config = self.config
            if config.short_hash() == self._requested and not force:
                return  # nothing changed (a refused entry): the run in progress goes on
            self._requested = config.short_hash()
            current = self.session.current
            if self.compare and current is not None and current.complete:
                self.kept = [k for k in self.kept if k.key not in (current.key, config.short_hash())]
                self.kept = ([current] + self.kept)[:MAX_KEPT]
            elif self.compare:
                self.kept = [k for k in self.kept if k.key != config.short_hash()]
            self.export_line.value = ""
            if force and current is not None and current.key == config.short_hash() and not current.complete:
                self.session.cache.pop(current.key, None)
            self.session.request(config, delay=0 if force else None, keep=self.keep_weights if keep is None else keep)

    def _sync_widgets(self) -> None:
        """Show self.values in every widget (slider, readout, checkbox, stamp) without re-triggering."""
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
                    options = [(spec.text(o), i) for i, o in enumerate(spec.options)]
                    if list(widget.options) != options:
                        widget.options = options
                    widget.value = spec.options.index(value)
                elif isinstance(spec, LogRange):
                    if not is_off and value is not None:
                        stops = [v for _, v in widget.options]
                        if value not in stops:
                            widget.options = _log_options(spec, value)
                        widget.value = value
                elif not is_off and value is not None:
                    widget.value = value
                if self.readouts.get(name) is not None:
                    self.readouts[name].value = show_value(spec, value)
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
FREE = "free exploration"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=_-]+", "_", text.replace("η", "eta").replace("λ", "lambda").replace("·", "")).strip("_")[:60]


def _without_divergence_text(chart):
    """The chart without the "diverged at step k" texts of charts.diverged_marks (its crosses stay, with
    the text in their tooltip): the explorer says it once, in its message line."""
    def is_note(c):
        if not isinstance(c, alt.Chart):
            return False
        mark = c.mark if isinstance(c.mark, str) else getattr(c.mark, "type", None)
        text = getattr(c.encoding, "text", alt.Undefined) if c.encoding is not alt.Undefined else alt.Undefined
        return mark == "text" and text is not alt.Undefined and "note" in str(text.to_dict() if hasattr(text, "to_dict") else text)

    if isinstance(chart, alt.LayerChart):
        chart = chart.copy(deep=False)
        chart.layer = [_without_divergence_text(c) for c in chart.layer if not is_note(c)]
        return chart
    for attr in ("hconcat", "vconcat", "concat"):
        parts = getattr(chart, attr, alt.Undefined)
        if parts is not alt.Undefined:
            chart = chart.copy(deep=False)
            setattr(chart, attr, [_without_divergence_text(c) for c in parts])
            return chart
    return chart


def _has_params(spec) -> bool:
    """Whether a Vega-Lite spec declares parameters anywhere (its data left unread)."""
    if isinstance(spec, dict):
        return "params" in spec or any(_has_params(v) for k, v in spec.items() if k not in ("data", "datasets", "values"))
    if isinstance(spec, list):
        return any(_has_params(v) for v in spec)
    return False


def _log_options(spec: LogRange, value=None) -> list:
    return [(show_value(spec, v), v) for v in round_grid(spec.low, spec.high, [] if value is None else [value])]


def _control_widget(W, name: str, spec, value):
    """(row, value widget, off checkbox or None, readout text or None) for one control spec: a label
    column that wraps instead of cutting, the slider, the exact value (typed values go there), the
    "off" checkbox."""
    text = spec.label or name
    head = W.HTML(f"<span title='{html.escape(name)}'>{html.escape(text)}</span>",
                  layout=W.Layout(width=LABEL_WIDTH, min_width=LABEL_WIDTH))
    common = dict(continuous_update=False, readout=False, layout=W.Layout(width=SLIDER_WIDTH))
    off, readout = None, None
    if isinstance(spec, Choice):
        options = [(spec.text(o), i) for i, o in enumerate(spec.options)]
        index = spec.options.index(value) if value in spec.options else 0
        if spec.numeric:
            widget = W.SelectionSlider(options=options, value=index, **common)
            readout = W.Text(value=show_value(spec, value), continuous_update=False, layout=W.Layout(width=READOUT_WIDTH))
            readout.add_class("reglab-readout")
        elif len(options) <= 4:
            widget = W.ToggleButtons(options=options, value=index, style={"button_width": "auto"})
        else:
            widget = W.Dropdown(options=options, value=index, layout=W.Layout(width=SLIDER_WIDTH))
    elif isinstance(spec, Toggle):
        widget = W.Checkbox(value=bool(value), description="", indent=False, layout=W.Layout(width="40px"))
    else:
        is_off = spec.has_off and (value is spec.off or value == spec.off)
        if is_off or value is None:  # the slider rests at the end nearest the "off" value: λ = 0 low, full rank high
            shown = spec.low if spec.off == 0 else spec.high
        else:
            shown = value
        if isinstance(spec, LogRange):
            options = _log_options(spec, shown)
            widget = W.SelectionSlider(options=options, value=float(shown), **common)
        elif isinstance(spec, IntRange):
            widget = W.IntSlider(value=int(shown), min=int(spec.low), max=int(spec.high), step=int(spec.step or 1), **common)
        elif isinstance(spec, FloatRange):
            widget = W.FloatSlider(value=shown, min=spec.low, max=spec.high, step=spec.step or (spec.high - spec.low) / 100,
                                   **common)
        else:
            raise ConfigError(f"Unknown control spec for '{name}': {spec!r}.")
        readout = W.Text(value=show_value(spec, value), continuous_update=False, layout=W.Layout(width=READOUT_WIDTH))
        readout.add_class("reglab-readout")
        if spec.has_off:
            off = W.Checkbox(value=is_off, description=spec.off_label, indent=False, layout=W.Layout(width="auto"))
            off.add_class("reglab-off")
    parts = [head, widget] + ([readout] if readout is not None else []) + ([off] if off is not None else [])
    row = W.HBox(parts, layout=W.Layout(align_items="center", flex_flow="row wrap"))
    return row, widget, off, readout

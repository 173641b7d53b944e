"""Chart specs over tidy frames, shared by every theme notebook and the explorer.

A chart is a declarative Altair spec over the tidy rows training streams out (run, step, metric, value).
The same spec renders live in the explorer (`alt.JupyterChart`) and static here (PNG/SVG through
vl-convert). Nothing needs the internet: static images come from vl-convert, live charts load their
JavaScript from vl-convert's bundle (`offline_widgets`), never from a CDN.

    from reglab import charts
    chart = charts.curves(run.history, ["train_loss", "test_loss"], log_y=True, title="loss")
    chart += charts.reference_rule(2 / eta, "2/η")
    charts.show(chart)                       # live in Jupyter, a PNG when headless
    charts.to_png(chart, "loss.png")

Columns the builders understand when present (the explorer adds them; a `Run` gets them from `tidy`):
`label` (which configuration a row belongs to), `current` (False marks earlier runs, drawn faded) and
`diverged_at` (the step a run diverged, else NaN: the run is drawn up to it and labelled).

This module imports no widget code.
"""
from __future__ import annotations

import io
import math
import os
from typing import Iterable, Sequence

import altair as alt
import numpy as np
import pandas as pd

FADED = 0.25  # opacity of earlier runs kept for comparison
DIVERGED_COLOR = "#c0392b"
WIDTH, HEIGHT = 320, 200
SERIES = ("label", "run", "metric")  # fields that separate one line from another


# ---------------------------------------------------------------------------------------------
# rendering set-up: offline, and static when headless


def headless() -> bool:
    """True in batch runs (`reglab.notebook.batch`) or outside a Jupyter kernel."""
    from .notebook import batch

    if batch():
        return True
    try:
        from IPython import get_ipython
    except ImportError:
        return True
    shell = get_ipython()
    return shell is None or getattr(shell, "kernel", None) is None


def setup() -> None:
    """Make plain chart display work without the internet: PNG images when headless (so HTML reports
    hold pictures, not scripts), the offline JupyterChart widget in a live kernel."""
    if headless():
        alt.renderers.enable("png", scale_factor=2)
    else:
        offline_widgets()
        alt.renderers.enable("jupyter", offline=True)


_OFFLINE = []  # set once this process has loaded JupyterChart's JavaScript from vl-convert's bundle


def offline_widgets() -> None:
    """Load JupyterChart's JavaScript from vl-convert's bundle (no CDN), once per process (~3 s)."""
    if not _OFFLINE:
        alt.JupyterChart.enable_offline()
        _OFFLINE.append(True)


# ---------------------------------------------------------------------------------------------
# frames


def tidy(run_or_frame) -> pd.DataFrame:
    """A tidy frame from a `reglab.engine.Run` (history with each member's `diverged_at`) or a frame."""
    if isinstance(run_or_frame, pd.DataFrame):
        return run_or_frame
    history, summary = run_or_frame.history, run_or_frame.summary
    return history.merge(summary[["run", "diverged_at"]], on="run", how="left")


def inline(frame: pd.DataFrame) -> dict:
    """Inline rows for a spec's `data`: non-finite numbers become null (Vega-Lite breaks lines there).
    A plain {"values": [...]} is used, not a DataFrame: no 5000-row limit, and no per-row schema
    validation (which costs seconds on a few thousand rows)."""
    clean = frame.copy()
    for col in clean.columns:
        if pd.api.types.is_float_dtype(clean[col]):
            clean[col] = clean[col].where(np.isfinite(clean[col].to_numpy(dtype=float)))
    clean = clean.astype(object).where(clean.notna(), None)
    return {"values": clean.to_dict("records")}


def _series(frame: pd.DataFrame, exclude: Iterable[str] = ()) -> list:
    return [f for f in SERIES if f in frame.columns and f not in exclude]


def diverged_steps(column: pd.Series) -> np.ndarray:
    """A `diverged_at` column (nullable integers, None or NaN for runs that did not diverge) as floats
    with NaN for "did not diverge"."""
    return pd.to_numeric(column.astype(object).where(column.notna(), np.nan), errors="coerce").to_numpy(dtype=float)


def up_to_divergence(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of diverged runs after their divergence step are dropped; non-finite values are dropped."""
    keep = pd.Series(np.isfinite(pd.to_numeric(frame["value"], errors="coerce").to_numpy(dtype=float)), index=frame.index)
    if "diverged_at" in frame.columns:
        d = diverged_steps(frame["diverged_at"])
        keep &= np.isnan(d) | (frame["step"].to_numpy() <= d)
    return frame[keep]


# ---------------------------------------------------------------------------------------------
# builders


def pretty(name: str) -> str:
    """A metric's shown name: "train_acc" -> "train accuracy", "zero_grad_frac" -> "zero grad frac"."""
    return " ".join(PRETTY.get(w, w) for w in str(name).split("_"))


PRETTY = {"acc": "accuracy", "frac": "fraction", "norm": "norm"}
_PRETTY_EXPR = "replace(replace(datum.label, /_acc$/, ' accuracy'), /_/g, ' ')"  # the same, in Vega


def _is_accuracy(metrics) -> bool:
    return bool(metrics) and all(str(m).endswith(("_acc", "accuracy")) for m in metrics)


def _by_split(metrics) -> bool:
    splits = [str(m).split("_")[0] for m in metrics]
    return len(metrics) > 1 and set(splits) <= {"train", "test"} and len(set(splits)) == len(splits)


def curves(frame: pd.DataFrame, metric: str | Sequence[str] | None = None, *, color: str | None = None,
           log_x: bool = False, log_y: bool = False, title: str | None = None, x: str = "step",
           y_title: str | None = None, width: int = WIDTH, height: int = HEIGHT) -> alt.LayerChart | alt.Chart:
    """Lines of value against step, one per run (and per metric, and per label when comparing).

    metric: one name, a list, or None for every metric in the frame. color: the field that colours
    the lines; default `label` when the frame compares several labelled runs (the metrics then differ
    by dash), else `metric` when several metrics are drawn, else `run` when runs vary. Axes hold still
    while rows stream: x spans the frame's `budget` column (the run's step budget) when present, an
    accuracy spans 0–1. Earlier runs (`current` False) are faded; a run with `diverged_at` is drawn up
    to that step and marked "diverged at step k".
    """
    metrics = list(frame["metric"].unique()) if metric is None else [metric] if isinstance(metric, str) else list(metric)
    rows = up_to_divergence(frame[frame["metric"].isin(metrics)])
    if log_y:
        rows = rows[rows["value"] > 0]
    dash = None
    if color is None:
        compared = "label" in rows.columns and rows["label"].nunique() > 1
        color = "label" if compared else "metric" if len(metrics) > 1 else next(
            (f for f in ("run",) if f in rows.columns and rows[f].nunique() > 1), None)
        dash = "metric" if compared and len(metrics) > 1 else None
    x_domain = alt.Undefined
    if x == "step" and "budget" in frame.columns and frame["budget"].notna().any():
        x_domain = [0, float(frame["budget"].max())]
    x_scale = alt.Scale(type="symlog", domain=x_domain) if log_x else alt.Scale(domain=x_domain, nice=False) \
        if x_domain is not alt.Undefined else alt.Undefined
    y_scale = alt.Scale(type="log") if log_y else alt.Scale(domain=[0, 1]) if _is_accuracy(metrics) else alt.Scale(zero=False)
    tooltip = [alt.Tooltip(f"{f}:N", title="run" if f == "label" else f) for f in _series(rows)] + [
        alt.Tooltip(f"{x}:Q"), alt.Tooltip("value:Q", format=".4g")]
    default_title = pretty(metrics[0]) if len(metrics) == 1 else "accuracy" if _is_accuracy(metrics) else \
        "loss" if all(str(m).endswith("loss") for m in metrics) else ", ".join(map(pretty, metrics))
    encoding = dict(
        x=alt.X(f"{x}:Q", title=x, scale=x_scale),
        y=alt.Y("value:Q", title=y_title or default_title, scale=y_scale),
        detail=[alt.Detail(f"{f}:N") for f in _series(rows, exclude=[c for c in (color, dash) if c])],
        tooltip=tooltip,
    )
    if color:
        legend = alt.Legend(labelExpr=_PRETTY_EXPR, labelLimit=220) if color == "metric" else alt.Legend(labelLimit=260)
        encoding["color"] = alt.Color(f"{color}:N", title="run" if color == "label" else None if color == "metric" else color,
                                      legend=legend)
    if dash:
        encoding["strokeDash"] = alt.StrokeDash(f"{dash}:N", title=None, legend=alt.Legend(labelExpr=_PRETTY_EXPR))
    if "current" in rows.columns and not rows["current"].all():
        encoding["opacity"] = alt.condition("datum.current", alt.value(1.0), alt.value(FADED))
    lines = alt.Chart(inline(rows))
    if color == "metric" and _by_split(metrics):  # one colour per split on every chart: train is train everywhere
        lines = lines.transform_calculate(split="split(datum.metric, '_')[0]")
        encoding["color"] = alt.Color("split:N", title=None, scale=alt.Scale(domain=["train", "test"]))
        encoding["detail"] = [*encoding["detail"], alt.Detail("metric:N")]
    first = len(rows) and rows[x].nunique() == 1  # a run's first evaluation: points, not an empty chart
    lines = (lines.mark_point(filled=True, size=40) if first else lines.mark_line()).encode(**encoding)
    marks = diverged_marks(frame, metrics[0], x=x)
    chart = lines if marks is None else alt.layer(lines, marks)
    return chart.properties(width=width, height=height, **({"title": title} if title else {}))


def diverged_marks(frame: pd.DataFrame, metric: str, x: str = "step") -> alt.LayerChart | None:
    """A red cross at each diverged run's last finite value of `metric`, with "diverged at step k"."""
    if "diverged_at" not in frame.columns:
        return None
    rows = up_to_divergence(frame[(frame["metric"] == metric) & ~np.isnan(diverged_steps(frame["diverged_at"]))])
    if rows.empty:
        return None
    last = rows.sort_values(x).groupby(_series(rows, exclude=["metric"]) or ["metric"], as_index=False).last()
    last["note"] = [f"diverged at step {int(k)}" for k in last["diverged_at"]]
    base = alt.Chart(inline(last)).encode(x=f"{x}:Q", y="value:Q")
    cross = base.mark_point(shape="cross", size=90, color=DIVERGED_COLOR, filled=True).encode(tooltip=["note:N"])
    text = base.mark_text(align="left", dx=7, dy=-7, color=DIVERGED_COLOR, fontWeight="bold").encode(text="note:N")
    return alt.layer(cross, text)


def reference_rule(value: float | pd.DataFrame, label: str | None = None, *, color: str = "gray") -> alt.LayerChart:
    """Horizontal dashed rule(s) at y = value with a text label, e.g. `reference_rule(2 / eta, "2/η")`.
    A frame with columns `value` and `label` draws one rule per row. Layer it over a chart with `+`."""
    rules = value if isinstance(value, pd.DataFrame) else pd.DataFrame({"value": [float(value)], "label": [label or f"{value:g}"]})
    base = alt.Chart(inline(rules)).encode(y="value:Q")
    rule = base.mark_rule(strokeDash=[5, 4], color=color)
    text = base.mark_text(align="left", baseline="bottom", dy=-2, color=color).encode(x=alt.value(4), text="label:N")
    return alt.layer(rule, text)


def heatmap(frame: pd.DataFrame, x: str, y: str, color: str = "value", *, log_color: bool = False,
            annotate: bool = True, fmt: str = ".3g", title: str | None = None, scheme: str = "viridis",
            width: int = WIDTH, height: int = HEIGHT) -> alt.LayerChart | alt.Chart:
    """A sweep as coloured cells: one rectangle per (x, y) pair, coloured by `color`, values written in."""
    rows = frame[[x, y, color]].copy()
    rows[x], rows[y] = rows[x].map(_fmt), rows[y].map(_fmt)
    order = lambda col: sorted(frame[col].unique(), key=lambda v: (_missing(v), 0 if _missing(v) else v))
    base = alt.Chart(inline(rows)).encode(
        x=alt.X(f"{x}:O", title=x, sort=[_fmt(v) for v in order(x)]),
        y=alt.Y(f"{y}:O", title=y, sort=[_fmt(v) for v in order(y)][::-1]))
    cells = base.mark_rect().encode(
        color=alt.Color(f"{color}:Q", title=color, scale=alt.Scale(type="log" if log_color else "linear", scheme=scheme)),
        tooltip=[f"{x}:O", f"{y}:O", alt.Tooltip(f"{color}:Q", format=fmt)])
    chart = alt.layer(cells, base.mark_text(fontSize=9).encode(text=alt.Text(f"{color}:Q", format=fmt))) if annotate else cells
    return chart.properties(width=width, height=height, **({"title": title} if title else {}))


def against(frame: pd.DataFrame, x: str, y: str = "value", *, color: str | None = None, log_x: bool = False,
            log_y: bool = False, title: str | None = None, x_title: str | None = None, y_title: str | None = None,
            tooltip: Sequence[str] = (), width: int = WIDTH, height: int = HEIGHT) -> alt.LayerChart:
    """A measured value against a setting (η, λ, width, …): one dot per row (e.g. per seed) and a line
    through the median of each x, one per `color` group. Non-finite values are left out."""
    rows = frame[np.isfinite(pd.to_numeric(frame[y], errors="coerce").to_numpy(dtype=float))]
    if log_y:
        rows = rows[rows[y] > 0]
    groups = [x] + ([color] if color else [])
    median = rows.groupby(groups, as_index=False)[y].median()
    enc = dict(x=alt.X(f"{x}:Q", title=x_title or x, scale=alt.Scale(type="log") if log_x else alt.Scale(zero=False)),
               y=alt.Y(f"{y}:Q", title=y_title or y, scale=alt.Scale(type="log") if log_y else alt.Scale(zero=False)))
    if color:
        enc["color"] = alt.Color(f"{color}:N", title=color)
    tips = [alt.Tooltip(f"{f}:N") for f in tooltip] + [alt.Tooltip(f"{x}:Q", format="g"), alt.Tooltip(f"{y}:Q", format=".4g")]
    dots = alt.Chart(inline(rows)).mark_point(filled=True, size=45, opacity=0.7).encode(**enc, tooltip=tips)
    line = alt.Chart(inline(median)).mark_line().encode(**enc)
    return alt.layer(line, dots).properties(width=width, height=height, **({"title": title} if title else {}))


def vertical_rule(value: float, label: str | None = None, *, color: str = "gray") -> alt.LayerChart:
    """A vertical dashed rule at x = value with a text label (e.g. the interpolation threshold N = n);
    label "" draws the rule alone."""
    base = alt.Chart({"values": [{"x": float(value), "label": f"{value:g}" if label is None else label}]}).encode(x="x:Q")
    rule = base.mark_rule(strokeDash=[5, 4], color=color)
    if label == "":
        return alt.layer(rule)
    return alt.layer(rule, base.mark_text(align="left", dx=4, baseline="top", color=color).encode(y=alt.value(2), text="label:N"))


def bars(frame: pd.DataFrame, x: str, y: str = "value", *, color: str | None = None, title: str | None = None,
         y_title: str | None = None, fmt: str = ".3g", width: int = WIDTH, height: int = HEIGHT) -> alt.LayerChart:
    """One bar per row (categories on x, in the frame's order), its value written above it."""
    enc = dict(x=alt.X(f"{x}:N", title=None, sort=list(dict.fromkeys(frame[x]))),
               y=alt.Y(f"{y}:Q", title=y_title or y))
    if color:
        enc["color"] = alt.Color(f"{color}:N", title=color)
    base = alt.Chart(inline(frame)).encode(**enc)
    text = base.mark_text(dy=-4, baseline="bottom").encode(text=alt.Text(f"{y}:Q", format=fmt))
    return alt.layer(base.mark_bar(), text).properties(width=width, height=height, **({"title": title} if title else {}))


def empty(text: str, width: int = WIDTH, height: int = 40) -> alt.Chart:
    """A placeholder for a view with nothing to draw, saying why (e.g. "every run diverged")."""
    return alt.Chart({"values": [{"note": text}]}).mark_text(align="left", color="#57606a", fontSize=13).encode(
        text="note:N", x=alt.value(0), y=alt.value(height / 2)).properties(
        width=width, height=height, view=alt.ViewBackground(stroke=None))


def row(*charts, spacing: int = 24) -> alt.HConcatChart:
    """Charts side by side (keep a row to two or three WIDTH-wide charts: a notebook column is ~960 px)."""
    return alt.hconcat(*charts, spacing=spacing)


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _fmt(v) -> str:
    """Cell labels: None (or NaN, which pandas makes of None) reads "full", as in batch size or rank."""
    return "full" if _missing(v) else f"{v:g}" if isinstance(v, float) else str(v)


def layer(*charts) -> alt.LayerChart:
    """Charts drawn on shared axes (same as `a + b + c`)."""
    return alt.layer(*charts)


def grid(*charts, columns: int = 2) -> alt.ConcatChart:
    """Charts side by side, wrapping after `columns`."""
    return alt.concat(*charts, columns=columns)


def note(chart, text: str, color: str = DIVERGED_COLOR) -> alt.VConcatChart:
    """The chart with a line of text under it (the explorer uses it for "diverged at step k")."""
    line = alt.Chart({"values": [{"note": text}]}).mark_text(align="left", color=color, fontWeight="bold",
                                                                  fontSize=13).encode(text="note:N", x=alt.value(0))
    return alt.vconcat(chart, line.properties(height=16, width=10, view=alt.ViewBackground(stroke=None)))


def estimated_width(chart, legend: bool = True) -> float:
    """About how many pixels a chart takes across: its views' widths, the spacing between them, a y axis
    each and, where a colour or dash legend sits at the right, one legend (a concatenation shares it)."""
    side = 130 if legend and _has_side_legend(chart) else 0
    spacing = 20 if getattr(chart, "spacing", alt.Undefined) is alt.Undefined else chart.spacing
    if isinstance(chart, alt.HConcatChart):
        return sum(estimated_width(c, False) for c in chart.hconcat) + spacing * (len(chart.hconcat) - 1) + side
    if isinstance(chart, alt.ConcatChart):
        cols = chart.columns if chart.columns is not alt.Undefined else len(chart.concat)
        widths = [estimated_width(c, False) for c in chart.concat]
        return max((sum(widths[i:i + cols]) + spacing * (cols - 1) for i in range(0, len(widths), max(cols, 1))),
                   default=0) + side
    if isinstance(chart, alt.VConcatChart):
        return max((estimated_width(c, False) for c in chart.vconcat), default=0) + side
    width = chart.width if isinstance(getattr(chart, "width", None), (int, float)) else WIDTH
    return width + 60 + side


def _has_side_legend(chart) -> bool:
    for attr in ("layer", "hconcat", "vconcat", "concat"):
        parts = getattr(chart, attr, alt.Undefined)
        if parts is not alt.Undefined:
            return any(_has_side_legend(c) for c in parts)
    enc = getattr(chart, "encoding", alt.Undefined)
    if enc is alt.Undefined:
        return False
    for channel in ("color", "strokeDash", "shape", "size", "opacity"):
        e = getattr(enc, channel, alt.Undefined)
        if e is alt.Undefined or not hasattr(e, "to_dict"):
            continue
        d = e.to_dict()
        if "field" in d and d.get("legend", {}) is not None and (d.get("legend") or {}).get("orient", "right") in ("right", "left"):
            return True
    return False


def fit(chart, width: float = 940):
    """The chart rearranged to fit `width` pixels across: a row of charts too wide wraps into rows
    (a grid with as many columns as fit), inside rows and columns alike; one chart too wide shrinks."""
    if isinstance(chart, alt.VConcatChart):
        chart = chart.copy(deep=False)
        chart.vconcat = [fit(c, width) for c in chart.vconcat]
        return chart
    if isinstance(chart, (alt.HConcatChart, alt.ConcatChart)):
        parts = list(chart.hconcat if isinstance(chart, alt.HConcatChart) else chart.concat)
        if estimated_width(chart) <= width:
            return chart
        spacing = 20 if chart.spacing is alt.Undefined else chart.spacing
        side = 130 if _has_side_legend(chart) else 0
        parts = [fit(c, width - side) for c in parts]
        widths = [estimated_width(c, False) for c in parts]
        columns = len(parts)
        while columns > 1 and max(sum(widths[i:i + columns]) + spacing * (columns - 1)
                                  for i in range(0, len(widths), columns)) + side > width:
            columns -= 1
        out = alt.concat(*parts, columns=columns, spacing=spacing)
        for key in ("title", "resolve", "config", "data"):
            value = getattr(chart, key, alt.Undefined)
            if value is not alt.Undefined:
                setattr(out, key, value)
        return out
    if isinstance(chart, (alt.Chart, alt.LayerChart)) and estimated_width(chart) > width:
        extra = estimated_width(chart) - (chart.width if isinstance(getattr(chart, "width", None), (int, float)) else WIDTH)
        return chart.properties(width=max(120, int(width - extra)))
    return chart


def caption(chart, lines: Sequence[str]):
    """The chart with lines of small grey text under it (the explorer's exports carry their settings)."""
    rows = [{"i": i, "line": t} for i, t in enumerate(lines)]
    text = alt.Chart({"values": rows}).mark_text(align="left", baseline="top", fontSize=10, color="#57606a").encode(
        text="line:N", x=alt.value(0), y=alt.Y("i:O", axis=None)).properties(
        width=max(200, int(estimated_width(chart)) - 60), height=14 * len(rows), view=alt.ViewBackground(stroke=None))
    return alt.vconcat(chart, text, spacing=6)


def fade_previous(chart, field: str = "current", opacity: float = FADED):
    """Rows whose `field` is False drawn at low opacity, in any chart whose marks set no opacity of their
    own (the explorer applies it to theme charts in compare mode)."""
    if isinstance(chart, alt.Chart):
        encoding = chart.encoding if chart.encoding is not alt.Undefined else None
        if encoding is not None and getattr(encoding, "opacity", alt.Undefined) is not alt.Undefined:
            return chart
        return chart.encode(opacity=alt.condition(f"datum.{field} !== false", alt.value(1.0), alt.value(opacity)))
    chart = chart.copy(deep=False)
    for attr in ("layer", "hconcat", "vconcat", "concat"):
        parts = getattr(chart, attr, alt.Undefined)
        if parts is not alt.Undefined:
            setattr(chart, attr, [fade_previous(c, field, opacity) for c in parts])
    spec = getattr(chart, "spec", alt.Undefined)  # facet and repeat charts hold one inner spec
    if isinstance(spec, (alt.Chart, alt.LayerChart)):
        chart.spec = fade_previous(spec, field, opacity)
    return chart


# ---------------------------------------------------------------------------------------------
# output


def to_png(chart, path: str | os.PathLike | None = None, scale: float = 2.0) -> bytes:
    """The chart as PNG bytes (vl-convert, offline); also written to `path` when given."""
    buf = io.BytesIO()
    chart.save(buf, format="png", scale_factor=scale)
    data = buf.getvalue()
    if path is not None:
        with open(path, "wb") as f:
            f.write(data)
    return data


def to_svg(chart, path: str | os.PathLike | None = None) -> str:
    """The chart as SVG text (vl-convert, offline); also written to `path` when given."""
    buf = io.StringIO()
    chart.save(buf, format="svg")
    text = buf.getvalue()
    if path is not None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    return text


def show_static(chart, scale: float = 2.0) -> None:
    """Display the chart as a PNG image (IPython.display.Image): what headless reports embed."""
    from IPython.display import Image, display

    png = to_png(chart, scale=scale)
    width = int.from_bytes(png[16:20], "big")  # the PNG header's width, drawn at 1/scale for crisp pixels
    display(Image(data=png, format="png", width=int(width / scale) if width else None))


def show(chart) -> None:
    """Display a chart: a static PNG when headless, the offline live widget otherwise."""
    if headless():
        show_static(chart)
    else:
        from IPython.display import display

        offline_widgets()
        display(alt.JupyterChart(chart, embed_options={"renderer": "svg", "actions": False}))


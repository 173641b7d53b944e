"""Claims a notebook checks, and the one call that records them.

A `Claim` is computed from a run, never written by hand: the measured value, the threshold as text,
and whether it held. `record(metrics, claims)` shows the verdict table and writes the same numbers
as a structured output (mime type MIME) that `reglab report` and the regression tests read back
from the executed notebook.
"""
from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass, field

MIME = "application/vnd.reglab.results+json"


@dataclass
class Claim:
    claim: str  # what the paper says, in one line
    value: float | str | None  # what this run measured
    threshold: str  # the check, as text ("≥ 0.9", "within [0.9, 1.15]")
    held: bool
    note: str = ""

    def __post_init__(self):
        self.held = bool(self.held)


@dataclass
class Result:
    """What a theme's `run` returns: headline metrics, claims, tidy frames for charts, raw runs."""

    metrics: dict = field(default_factory=dict)
    claims: list = field(default_factory=list)
    frames: dict = field(default_factory=dict)
    runs: dict = field(default_factory=dict)

    def verdicts(self) -> str:
        """A short, rounded text of the verdicts (what the golden notebook cells print)."""
        return "\n".join(f"{'HELD    ' if c.held else 'NOT HELD'}  {c.claim}" for c in self.claims)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _finite(value.item())
    return value


def payload(metrics: dict, claims: list) -> dict:
    return {"metrics": {k: _finite(v) for k, v in metrics.items()},
            "claims": [{**asdict(c), "value": _finite(c.value)} for c in claims]}


def fmt_number(value, spec: str = ".3g") -> str:
    """A measured number for claim notes: `spec` formatting, "—" when it is missing or not finite; a
    list or tuple is formatted item by item and joined with commas (one value per seed)."""
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt_number(v, spec) for v in value)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return format(value, spec)


def fmt_value(value) -> str:
    """A measured value as the verdict tables show it: 4 significant digits, "—" for none."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def claims_table_html(claims: list) -> str:
    """The verdict table of recorded claims (the dicts of `payload`), shared by notebooks and the report."""
    rows = "".join(
        f"<tr><td>{html.escape(c['claim'])}</td><td>{html.escape(fmt_value(c['value']))}</td>"
        f"<td>{html.escape(c['threshold'])}</td><td style='color:{'#1a7f37' if c['held'] else '#cf222e'};"
        f"font-weight:600'>{'held' if c['held'] else 'not held'}</td></tr>"
        for c in claims)
    return ("<table><thead><tr><th>claim</th><th>measured</th><th>check</th><th>verdict</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>")


def record(result_or_metrics, claims: list | None = None) -> None:
    """Display the verdict table and emit the structured results of this notebook."""
    if isinstance(result_or_metrics, Result):
        metrics, claims = result_or_metrics.metrics, result_or_metrics.claims
    else:
        metrics, claims = result_or_metrics, claims or []
    data = payload(metrics, claims)
    try:
        from IPython.display import display

        text = "\n".join(f"{'held' if c.held else 'NOT held'}: {c.claim} ({fmt_value(c.value)} vs {c.threshold})" for c in claims)
        display({MIME: data, "text/html": claims_table_html(data["claims"]), "text/plain": text or "no claims"}, raw=True)
    except ImportError:  # plain Python: nothing to display on
        pass
    json.dumps(data)  # fail here, not in the report, if something is not serializable

"""Claims: a stable id, the sentence a paper says, a pure predicate, and the verdict computed from a run.

A claim's logic is a `Rule` — a pure function from measured values to held / not held — built from
threshold checks and, for several seeds, one aggregation written once here:

    EOS_BAND = within(0.9, 1.15)                   # one number
    every_seed(EOS_BAND)([0.98, 1.02, 1.07])        # every seed's value passes (None fails)
    median_of(at_least(0.9))([0.95, 0.7, 0.93])     # the median of the seeds passes

`verdict(id, sentence, value, rule, diverged=...)` applies the rule and returns a `Claim`. A claim whose
runs diverged is not held and says "diverged at step k" instead of a verdict on the number;
an informational claim (`informational=True`) reports a value with no verdict.

`record(result)` shows the verdict table and writes the same numbers as a structured output (mime type
MIME) that `reglab report` and the regression tests read back from the executed notebook.
"""
from __future__ import annotations

import html
import json
import math
import statistics
from dataclasses import asdict, dataclass

MIME = "application/vnd.reglab.results+json"
HELD, NOT_HELD, DIVERGED, INFO = "held", "not held", "diverged", "informational"
STATUS_COLOR = {HELD: "#1a7f37", NOT_HELD: "#cf222e", DIVERGED: "#b9770e", INFO: "#57606a"}


def finite(value) -> float | None:
    """The value as a float, or None when it is missing or not finite."""
    if value is None or isinstance(value, str):
        return None
    value = float(value.item() if hasattr(value, "item") else value)
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------------------------------
# rules: pure predicates with their text


@dataclass(frozen=True)
class Rule:
    """A named predicate: `rule(value) -> bool`, `str(rule)` is the check as the verdict table shows it."""

    text: str
    test: object  # value -> bool

    def __call__(self, value) -> bool:
        return bool(self.test(value))

    def __str__(self) -> str:
        return self.text


def _number_rule(text: str, test) -> Rule:
    return Rule(text, lambda v: (x := finite(v)) is not None and test(x))


def at_least(t: float) -> Rule:
    return _number_rule(f"≥ {t:g}", lambda x: x >= t)


def above(t: float) -> Rule:
    return _number_rule(f"> {t:g}", lambda x: x > t)


def at_most(t: float) -> Rule:
    return _number_rule(f"≤ {t:g}", lambda x: x <= t)


def below(t: float) -> Rule:
    return _number_rule(f"< {t:g}", lambda x: x < t)


def within(low: float, high: float) -> Rule:
    return _number_rule(f"in [{low:g}, {high:g}]", lambda x: low <= x <= high)


def is_true(text: str = "true") -> Rule:
    return Rule(text, lambda v: v is True or v == 1)


def decreasing() -> Rule:
    """A sequence of values (in the order of the setting that should lower them) falls strictly at
    every step; a missing value fails."""
    def test(vs):
        xs = [finite(v) for v in vs]
        return len(xs) >= 2 and None not in xs and all(b < a for a, b in zip(xs, xs[1:]))
    return Rule("strictly decreasing", test)


def every_seed(rule: Rule) -> Rule:
    """Every value passes (a missing value, e.g. from a diverged seed, fails)."""
    return Rule(f"each {rule}", lambda vs: len(vs) > 0 and all(rule(v) for v in vs))


def median_of(rule: Rule) -> Rule:
    """The median of the values passes (missing values fail the whole rule)."""
    def test(vs):
        xs = [finite(v) for v in vs]
        return len(xs) > 0 and None not in xs and rule(statistics.median(xs))
    return Rule(f"median {rule}", test)


# ---------------------------------------------------------------------------------------------
# claims


@dataclass
class Claim:
    id: str  # stable key: expected outputs and claims.json use it, not the sentence
    claim: str  # what the paper says, in one line, with this run's settings
    value: float | list | str | None  # what this run measured (a list: one value per seed)
    threshold: str  # the check, as text
    status: str  # HELD, NOT_HELD, DIVERGED or INFO
    note: str = ""

    @property
    def held(self) -> bool:
        return self.status == HELD


def diverged_note(diverged: dict) -> str:
    """{label: step} of diverged runs as one sentence ("diverged at step 12 (η = 0.3, seed 1)")."""
    return "; ".join(f"diverged at step {step}" + (f" ({label})" if label else "") for label, step in diverged.items())


def verdict(id: str, claim: str, value, rule: Rule, note: str = "", diverged: dict | None = None,
            informational: bool = False) -> Claim:
    """Apply `rule` to `value`. `diverged` ({label: step}, steps of None ignored) marks the claim as
    unevaluable: it is not held and its note says where the runs diverged."""
    diverged = {k: v for k, v in (diverged or {}).items() if v is not None}
    if isinstance(value, tuple):
        value = list(value)
    if diverged:
        status, note = DIVERGED, "; ".join(filter(None, [diverged_note(diverged), note]))
    elif informational:
        status = INFO
    else:
        status = HELD if rule(value) else NOT_HELD
    return Claim(id, claim, value, str(rule), status, note)


def key(name: str, **qualifiers) -> str:
    """The one metric-key format: `key("eos_ratio", seed=0)` → "eos_ratio@seed=0"."""
    if not qualifiers:
        return name
    return name + "@" + ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in qualifiers.items())


def per_seed(name: str, values, seeds) -> dict:
    """{key(name, seed=s): value} for each seed."""
    return {key(name, seed=s): v for s, v in zip(seeds, values)}


# ---------------------------------------------------------------------------------------------
# display and recording


def fmt_number(value, spec: str = ".3g") -> str:
    """A measured number for notes: `spec` formatting, "—" when it is missing or not finite; a list is
    formatted item by item and joined with commas (one value per seed)."""
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt_number(v, spec) for v in value)
    if isinstance(value, str):
        return value
    x = finite(value)
    return "—" if x is None else format(x, spec)


def fmt_value(value) -> str:
    """A measured value as the verdict tables show it: 4 significant digits, "—" for none."""
    return fmt_number(value, ".4g")


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (str, bool)) or value is None else finite(value)


def payload(metrics: dict, claims: list) -> dict:
    return {"metrics": {k: _plain(v) for k, v in metrics.items()},
            "claims": [{**asdict(c), "value": _plain(c.value), "held": c.held} for c in claims]}


def claims_table_html(claims: list) -> str:
    """The verdict table of recorded claims (the dicts of `payload`), shared by notebooks and the report."""
    rows = "".join(
        f"<tr><td>{html.escape(c['claim'])}</td><td>{html.escape(fmt_value(c['value']))}</td>"
        f"<td>{html.escape(c['threshold'])}</td><td style='color:{STATUS_COLOR[c['status']]};font-weight:600'>"
        f"{c['status']}</td><td>{html.escape(c.get('note', ''))}</td></tr>"
        for c in claims)
    return ("<table><thead><tr><th>claim</th><th>measured</th><th>check</th><th>verdict</th><th>note</th></tr>"
            f"</thead><tbody>{rows}</tbody></table>")


def verdict_text(claims: list) -> str:
    """One line per claim: its status and sentence (what the golden notebook cells print)."""
    return "\n".join(f"{c.status.upper():<13} {c.claim}" for c in claims)


def show_claims(claims: list) -> None:
    """Display some claims as a verdict table (next to the chart they are about)."""
    from IPython.display import HTML, display

    display(HTML(claims_table_html(payload({}, claims)["claims"])))


def record(result) -> None:
    """Display the verdict table and emit the structured results of this notebook."""
    data = payload(result.metrics, result.claims)
    json.dumps(data)  # fail here, not in the report, if something is not serializable
    try:
        from IPython.display import display
    except ImportError:  # plain Python: nothing to display on
        return
    text = "\n".join(f"{c.status}: {c.claim} ({fmt_value(c.value)} vs {c.threshold})" for c in result.claims)
    display({MIME: data, "text/html": claims_table_html(data["claims"]), "text/plain": text or "no claims"}, raw=True)

"""The batch report: every theme notebook run headless, one HTML page each, an index of verdicts."""
from __future__ import annotations

import html
import json
import time
from pathlib import Path

from .claims import DIVERGED, INFO, claims_table_html, fmt_value
from .experiments import theme_of
from .notebook import check_parameters, execute, notebook_paths, read_results


# nbconvert's lab template loads require.js, MathJax and mermaid from a CDN; the pages hold no widgets, math
# or diagrams, so these blocks are dropped and a page opens offline, from the file system.
OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def _to_html(notebook, path: Path) -> None:
    import jinja2
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(extra_loaders=[jinja2.DictLoader({"reglab_offline.html.j2": OFFLINE_TEMPLATE})],
                            template_file="reglab_offline.html.j2")
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(notebook)
    path.write_text(body, encoding="utf-8")


def check_all(paths: list, parameters: dict) -> dict:
    """Refuse, before anything runs, a -p name no chosen notebook declares and a value outside a notebook's
    declared range. Returns each notebook's declared parameters."""
    from .config import ConfigError

    declared = {p: theme_of(p.stem).params for p in paths}
    unused = [name for name in parameters if not any(name in d for d in declared.values())]
    if unused:
        valid = sorted({n for d in declared.values() for n in d})
        raise ConfigError(f"Unknown parameter(s) {', '.join(unused)}; valid ones are: {', '.join(valid)}.")
    for p in paths:
        check_parameters(p, {k: v for k, v in parameters.items() if k in declared[p]})
    return declared


def build(only=None, parameters: dict | None = None, out="reports", progress=True) -> tuple[list, bool]:
    """Run the notebooks and write out/index.html, out/claims.json and one page per notebook.
    A -p parameter goes to the notebooks that declare it. Returns (records, all_ok)."""
    parameters = parameters or {}
    paths = notebook_paths(only)
    declared = check_all(paths, parameters)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pages, claims = [], []
    from tqdm.auto import tqdm

    bar = tqdm(paths, desc="reglab report", unit="notebook", disable=not progress)
    for path in bar:
        bar.set_postfix_str(path.stem)
        own = {k: v for k, v in parameters.items() if k in declared[path]}
        page = {"notebook": path.stem, "html": f"{path.stem}.html", "parameters": own, "error": None}
        start = time.perf_counter()
        try:
            nb = execute(path, out / path.name, own)
        except Exception as err:  # a failing notebook is reported; the others still run
            page["error"] = f"{type(err).__name__}: {err}".strip()[:4000]
            nb = None
            failed = out / path.name
            if failed.exists():
                import nbformat

                nb = nbformat.read(str(failed), as_version=4)
        page["seconds"] = round(time.perf_counter() - start, 1)
        if nb is not None:
            found = read_results(nb)
            page["metrics"] = found["metrics"]
            for c in found["claims"]:
                claims.append({"notebook": path.stem, **c})
            page["claims"] = found["claims"]
            _to_html(nb, out / page["html"])
        pages.append(page)
    (out / "claims.json").write_text(json.dumps(claims, indent=1, ensure_ascii=False), encoding="utf-8")
    (out / "index.html").write_text(_index(pages), encoding="utf-8")
    return pages, all(p["error"] is None for p in pages)


def tally(claims: list) -> str:
    """"5/6 claims held · 1 diverged · 1 informational": informational claims are not counted as failed."""
    judged = [c for c in claims if c["status"] != INFO]
    parts = [f"{sum(c['held'] for c in judged)}/{len(judged)} claims held"]
    for status in (DIVERGED, INFO):
        n = sum(c["status"] == status for c in claims)
        if n:
            parts.append(f"{n} {status}")
    return " · ".join(parts)


def _index(pages) -> str:
    blocks = []
    for p in pages:
        status = ("<span class=bad>failed</span>" if p["error"] else
                  tally(p.get("claims", [])))
        metrics = ", ".join(f"{k} = {fmt_value(v)}" for k, v in p.get("metrics", {}).items())
        error = f"<pre class=bad>{html.escape(p['error'])}</pre>" if p["error"] else ""
        params = f" · parameters {html.escape(json.dumps(p['parameters']))}" if p["parameters"] else ""
        link = f"<a href='{p['html']}'>{p['notebook']}</a>" if "claims" in p else p["notebook"]
        blocks.append(f"<h2>{link}</h2><p>{status} · {p['seconds']} s{params}</p>{error}"
                      f"{claims_table_html(p.get('claims', []))}"
                      f"<details class=metrics><summary>recorded metrics</summary>{html.escape(metrics)}</details>")
    style = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}"
             "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.3rem;text-align:left}"
             ".bad{color:#cf222e;font-weight:600}.metrics{color:#666;font-size:.9em}")
    return (f"<!doctype html><meta charset=utf-8><title>reglab report</title><style>{style}</style>"
            f"<h1>reglab report</h1><p>Generated {time.strftime('%Y-%m-%d %H:%M')}.</p>{''.join(blocks)}")

"""Recorded expected outputs of notebooks, compared with per-key tolerances (never string equality).

A case file `tests/expected/<notebook>/<case>.json` holds the parameters of the case, the tolerances,
and the metrics and claim verdicts (by claim id) recorded from a reviewed run:

    {"parameters": {"steps": 300}, "tolerances": {"default": {"rtol": 0.05, "atol": 0.01}},
     "metrics": {"test_acc": 0.61}, "claims": {"beats_chance": "held"}}

Re-record after a reviewed change with `reglab record-expected <notebook> --case <case>`.
"""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from .notebook import NOTEBOOKS, execute, notebook_paths, read_results

EXPECTED = NOTEBOOKS.parent / "tests" / "expected"
DEFAULT_TOLERANCE = {"rtol": 0.05, "atol": 0.01}


def case_path(notebook: str, case: str) -> Path:
    return EXPECTED / notebook / f"{case}.json"


def load_case(path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def run_case(notebook: str, case: dict) -> dict:
    path = notebook_paths([notebook])[0]
    with tempfile.TemporaryDirectory() as tmp:
        nb = execute(path, Path(tmp) / path.name, case.get("parameters", {}))
    return read_results(nb)


def record_case(notebook: str, case: str = "ci") -> Path:
    target = case_path(notebook, case)
    spec = load_case(target) if target.exists() else {"parameters": {}, "tolerances": {"default": DEFAULT_TOLERANCE}}
    found = run_case(notebook, spec)
    spec["metrics"] = found["metrics"]
    spec["claims"] = {c["id"]: c["status"] for c in found["claims"]}
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(spec, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return target


def compare(spec: dict, found: dict) -> list:
    """Every difference between a recorded case and a fresh run, as readable lines (empty: equal)."""
    problems = []
    tolerances = spec.get("tolerances", {})
    default = tolerances.get("default", DEFAULT_TOLERANCE)
    for key, want in spec.get("metrics", {}).items():
        got = found["metrics"].get(key, "missing")
        tol = tolerances.get(key, default)
        if want is None or got is None or isinstance(want, str) or isinstance(got, str):
            if got != want:
                problems.append(f"{key}: expected {want!r}, got {got!r}")
            continue
        if isinstance(want, bool) or isinstance(got, bool):
            if bool(got) != bool(want):
                problems.append(f"{key}: expected {want}, got {got}")
            continue
        if not math.isclose(got, want, rel_tol=tol.get("rtol", 0), abs_tol=tol.get("atol", 0)):
            problems.append(f"{key}: expected {want:.6g} ± (rtol {tol.get('rtol', 0)}, atol {tol.get('atol', 0)}), got {got:.6g}")
    status = {c["id"]: c["status"] for c in found["claims"]}
    for claim, want in spec.get("claims", {}).items():
        if status.get(claim, "missing") != want:
            problems.append(f"claim {claim!r}: expected {want}, got {status.get(claim, 'missing')}")
    return problems

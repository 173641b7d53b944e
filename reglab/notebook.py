"""Running theme notebooks headless (papermill) and reading back what they recorded.

`execute` is the one path the report, the tests and users' scripts share: it rejects parameter names the
notebook's theme does not declare (papermill itself only warns), validates values against the theme's
declared parameters (reglab.theme), and runs the kernel with REGLAB_HEADLESS=1 so widgets render static charts and
progress bars stay quiet.
"""
from __future__ import annotations

import ast
import os
from contextlib import contextmanager
from pathlib import Path

from .claims import MIME
from .config import ConfigError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def notebook_paths(only: list | None = None) -> list:
    """The theme notebooks in order; `only` selects by name or number prefix ("00_quickstart", "01")."""
    paths = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if not only:
        return paths
    named = lambda p, o: p.stem.startswith(o) or p.name == o
    chosen = [p for p in paths if any(named(p, o) for o in only)]
    missing = [o for o in only if not any(named(p, o) for p in paths)]
    if missing:
        raise ConfigError(f"No notebook named {', '.join(missing)}; available: {', '.join(p.stem for p in paths)}.")
    return chosen


def declared_parameters(path) -> dict:
    """Names and default values of the notebook's `parameters` cell (papermill reads the cell)."""
    import papermill

    return {name: parse_value(str(info["default"])) for name, info in papermill.inspect_notebook(str(path)).items()}


def parse_value(text: str):
    """A -p value as papermill's CLI would read it: Python literals, else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def check_parameters(path, parameters: dict) -> dict:
    """Validate parameters against the notebook's theme declaration (before any kernel starts);
    returns them as the theme will see them."""
    from .experiments import theme_of

    theme = theme_of(Path(path).stem)
    checked = theme.validate(parameters, owner=Path(path).stem)
    return {name: checked[name] for name in parameters}


def batch() -> bool:
    """True in a batch run: papermill through `execute` (REGLAB_HEADLESS) or nbgrader's autograder and
    validator (NBGRADER_EXECUTION). Progress bars stay quiet there (nbgrader scores a graded cell that writes
    to stderr as zero) and charts render as static images."""
    return os.environ.get("REGLAB_HEADLESS", "") not in ("", "0") or grading()


def grading() -> bool:
    """True while nbgrader's autograder or validator runs the notebook (it sets NBGRADER_EXECUTION)."""
    return os.environ.get("NBGRADER_EXECUTION", "") != ""


@contextmanager
def _headless_env():
    """REGLAB_HEADLESS=1 for the kernel papermill starts, restored afterwards in this process."""
    saved = {k: os.environ.get(k) for k in ("REGLAB_HEADLESS", "PYDEVD_DISABLE_FILE_VALIDATION")}
    os.environ["REGLAB_HEADLESS"] = "1"
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute(path, output=None, parameters: dict | None = None, timeout: int = 1800):
    """Run a notebook with papermill after checking its parameters; returns the executed notebook."""
    import papermill

    parameters = check_parameters(path, parameters or {})
    with _headless_env():
        return papermill.execute_notebook(str(path), str(output) if output else None, parameters=parameters,
                                          progress_bar=False, log_output=False, kernel_name="python3",
                                          cwd=str(Path(path).parent), execution_timeout=timeout,
                                          # the kernel app's own start-up notices are not the notebook's output
                                          extra_arguments=["--IPKernelApp.log_level=ERROR"])


def read_results(notebook) -> dict:
    """The metrics and claims a notebook recorded with reglab.record (a notebook node or a path)."""
    if not hasattr(notebook, "cells"):
        import nbformat

        notebook = nbformat.read(str(notebook), as_version=4)
    found = {"metrics": {}, "claims": []}
    for cell in notebook.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if MIME in data:
                found["metrics"].update(data[MIME]["metrics"])
                found["claims"].extend(data[MIME]["claims"])
    return found


def setup_notebook() -> None:
    """Switch on the notebook conveniences: a ConfigError (a person's bad input) prints its one-line
    message instead of a traceback (the cell still fails, so papermill and nbval see it), and charts
    render offline (PNG when headless)."""
    from . import charts

    charts.setup()
    try:
        ip = get_ipython()  # noqa: F821 (defined inside IPython only)
    except NameError:
        return

    def handler(shell, etype, value, tb, tb_offset=None):
        from IPython.display import HTML, display

        display(HTML(f"<div style='color:#cf222e;font-weight:600'>⚠ {value}</div>"))
        return [f"{etype.__name__}: {value}"]

    ip.set_custom_exc((ConfigError,), handler)


def refresh_golden(path) -> list:
    """Run a notebook at its defaults and keep only the outputs of its golden cells (metadata
    keep_output, checked by nbval): the committed form of a notebook. Returns the golden texts."""
    import subprocess
    import sys
    import tempfile

    import nbformat

    with tempfile.TemporaryDirectory() as tmp:
        executed = execute(path, Path(tmp) / Path(path).name)
    source = nbformat.read(str(path), as_version=4)
    golden = []
    for cell, ran in zip(source.cells, executed.cells):
        if cell.cell_type != "code":
            continue
        cell.execution_count = None
        if cell.metadata.get("keep_output"):
            cell.execution_count = 1  # nbval compares only cells that were run
            cell.outputs = [o for o in ran.outputs if o.output_type == "stream"]
            golden.append("".join(o.get("text", "") for o in cell.outputs))
        else:
            cell.outputs = []
    nbformat.write(source, str(path))
    subprocess.run([sys.executable, "-m", "nbstripout", "--keep-count", str(path)], check=True)
    return golden

"""Notebook conventions: stripped outputs except golden cells, one literal parameters cell."""
import ast
import subprocess
import sys

import nbformat
import pytest

from reglab.notebook import notebook_paths

PATHS = notebook_paths()


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_committed_stripped_except_golden_cells(path):
    out = subprocess.run([sys.executable, "-m", "nbstripout", "--verify", "--keep-count", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, f"{path.name} has outputs: run `reglab golden {path.stem}`"
    nb = nbformat.read(str(path), as_version=4)
    golden = [c for c in nb.cells if c.cell_type == "code" and c.metadata.get("keep_output")]
    assert golden and all(c.source.startswith("# NBVAL_CHECK_OUTPUT") and c.outputs for c in golden)


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_one_parameters_cell_of_literals(path):
    nb = nbformat.read(str(path), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    names = set()
    for node in ast.parse(cells[0].source).body:
        assert isinstance(node, ast.Assign), "only assignments in the parameters cell"
        ast.literal_eval(node.value)  # literals only: papermill does not recompute derived values
        names.add(node.targets[0].id)
    assert {"seed", "device"} <= names
    # papermill must see every one of them (a comment with '=' on a line hides it from papermill)
    from reglab.notebook import declared_parameters

    assert set(declared_parameters(path)) == names


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_parameters_cell_matches_the_theme_declaration(path):
    from reglab.experiments import theme_of
    from reglab.notebook import declared_parameters

    assert declared_parameters(path) == theme_of(path.stem).defaults()

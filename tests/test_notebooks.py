"""Papermill regression: every notebook, under each recorded case, reproduces its expected outputs."""
import pytest

from reglab.expected import EXPECTED, compare, load_case, run_case

CASES = sorted(EXPECTED.glob("*/*.json"))


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.stem}" for p in CASES])
def test_notebook_matches_expected(path):
    spec = load_case(path)
    problems = compare(spec, run_case(path.parent.name, spec))
    assert not problems, "\n".join(problems)


def test_every_notebook_has_a_case():
    from reglab.notebook import notebook_paths

    missing = [p.stem for p in notebook_paths() if not (EXPECTED / p.stem).is_dir()]
    assert not missing, f"notebooks without recorded expected outputs: {missing}"

"""The CLI refuses user mistakes with one line, before any notebook runs; expected outputs bite."""
import subprocess
import sys

from reglab.expected import compare


def reglab(*args):
    return subprocess.run([sys.executable, "-m", "reglab.cli", *args], capture_output=True, text=True, timeout=120)


def test_negative_step_size_is_one_line_naming_the_parameter():
    out = reglab("report", "--only", "00_quickstart", "-p", "step_size", "-1")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "'step_size'" in lines[0] and "Got -1" in lines[0]
    assert "Traceback" not in out.stderr


def test_unknown_parameter_lists_the_valid_ones():
    out = reglab("report", "--only", "00_quickstart", "-p", "stepsize", "0.1")
    assert out.returncode == 2
    assert "Unknown parameter(s) stepsize" in out.stderr and "step_size" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_notebook_is_clear():
    out = reglab("report", "--only", "99_nothing")
    assert out.returncode == 2 and "No notebook named 99_nothing" in out.stderr


def test_out_of_range_theme_parameter_is_refused_before_a_kernel_starts():
    out = reglab("report", "--only", "00_quickstart", "-p", "seed", "-1")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "'seed'" in out.stderr and "Got -1" in out.stderr


def test_compare_flags_a_value_beyond_tolerance_and_a_flipped_claim():
    spec = {"tolerances": {"default": {"rtol": 0.05, "atol": 0.0}, "loss": {"rtol": 0.0, "atol": 0.1}},
            "metrics": {"acc": 0.60, "loss": 1.00, "diverged_at": None}, "claims": {"beats_chance": "held"}}
    same = {"metrics": {"acc": 0.62, "loss": 1.05, "diverged_at": None},
            "claims": [{"id": "beats_chance", "status": "held"}]}
    assert compare(spec, same) == []
    off = {"metrics": {"acc": 0.70, "loss": 1.2, "diverged_at": 12},
           "claims": [{"id": "beats_chance", "status": "diverged"}]}
    problems = compare(spec, off)
    assert len(problems) == 4 and any(p.startswith("acc:") for p in problems)
    assert compare(spec, {"metrics": {}, "claims": []})  # missing values are failures too


def test_zero_seeds_is_refused_in_seconds_before_a_kernel_starts():
    out = reglab("report", "--only", "04_grokking", "-p", "seeds", "0")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "'seeds'" in out.stderr and "Got 0" in out.stderr and "Traceback" not in out.stderr


def test_output_is_accepted_as_a_spelling_of_out():
    out = reglab("report", "--only", "00_quickstart", "--output", "/tmp/x", "-p", "step_size", "-1")
    assert out.returncode == 2 and "unrecognized" not in out.stderr and "'step_size'" in out.stderr

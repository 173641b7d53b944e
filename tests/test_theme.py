"""The theme protocol: rules at, just inside and just outside their thresholds; verdicts; declared
parameters; no import-time side effects; a cache key that covers the data's content."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from reglab import ConfigError, RunConfig, from_arrays, train
from reglab.claims import (DIVERGED, HELD, INFO, NOT_HELD, above, at_least, at_most, below, decreasing, every_seed, key,
                           median_of, per_seed, verdict, within)
from reglab.experiments import MODULES, theme_of

EPS = 1e-9


@pytest.mark.parametrize("make, t, at, inside, outside", [
    (at_least, 0.9, True, 0.9 + EPS, 0.9 - EPS),
    (above, 0.9, False, 0.9 + EPS, 0.9 - EPS),
    (at_most, 1.0, True, 1.0 - EPS, 1.0 + EPS),
    (below, 1.0, False, 1.0 - EPS, 1.0 + EPS),
])
def test_threshold_rules(make, t, at, inside, outside):
    rule = make(t)
    assert rule(t) is at and rule(inside) and not rule(outside)
    assert not rule(None) and not rule(math.nan) and not rule(math.inf if make in (at_most, below) else -math.inf)


def test_within_has_both_edges():
    band = within(0.9, 1.15)
    assert band(0.9) and band(1.15) and band(1.0)
    assert not band(0.9 - EPS) and not band(1.15 + EPS)
    assert str(band) == "in [0.9, 1.15]"


def test_every_seed_needs_every_value_and_fails_on_a_missing_one():
    rule = every_seed(at_least(0.9))
    assert rule([0.95, 0.9, 1.0])
    assert not rule([0.95, 0.89, 1.0])
    assert not rule([0.95, None])
    assert not rule([])


def test_median_of_seeds():
    rule = median_of(at_least(0.9))
    assert rule([0.95, 0.1, 0.92]) and not rule([0.95, 0.1, 0.89]) and not rule([0.95, None, 1.0])


def test_decreasing_needs_every_step_down():
    rule = decreasing()
    assert rule([3.0, 2.0, 1.0]) and not rule([3.0, 3.0, 1.0]) and not rule([1.0, 2.0]) and not rule([3.0, None])
    assert not rule([1.0])


def test_verdict_status_and_divergence():
    assert verdict("a", "x", 1.0, at_least(1)).status == HELD
    assert verdict("a", "x", 0.5, at_least(1)).status == NOT_HELD
    c = verdict("a", "x", 1.0, at_least(1), diverged={"η = 2": 7, "η = 1": None})
    assert c.status == DIVERGED and not c.held and "diverged at step 7 (η = 2)" in c.note
    assert verdict("a", "x", 0.5, at_least(1), informational=True).status == INFO


def test_metric_keys_have_one_format():
    assert key("eos_ratio", seed=0) == "eos_ratio@seed=0"
    assert key("loss", wd=0.5, seed=1) == "loss@wd=0.5,seed=1"
    assert per_seed("acc", [0.5, 0.6], [0, 1]) == {"acc@seed=0": 0.5, "acc@seed=1": 0.6}


@pytest.mark.parametrize("notebook", list(MODULES))
def test_every_declared_default_passes_its_own_check(notebook):
    theme = theme_of(notebook)
    assert theme.validate({}) == theme.defaults()
    assert {"seed", "device"} <= set(theme.params)


@pytest.mark.parametrize("notebook", [n for n in MODULES if "seeds" in theme_of(n).params])
def test_zero_seeds_is_refused_naming_the_parameter(notebook):
    with pytest.raises(ConfigError, match=r"'seeds'.*Got 0"):
        theme_of(notebook).validate({"seeds": 0})


def test_importing_reglab_changes_nothing_around_it():
    code = ("import os, altair as alt; before = alt.renderers.active; import reglab, reglab.charts;"
            "from IPython.core.interactiveshell import InteractiveShell;"
            "assert alt.renderers.active == before, alt.renderers.active;"
            "assert 'REGLAB_HEADLESS' not in os.environ")
    env = {k: v for k, v in os.environ.items() if k != "REGLAB_HEADLESS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr


def test_two_array_data_sets_of_one_name_never_share_a_cache_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("REGLAB_CACHE", str(tmp_path))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 5)).astype("float32"), rng.integers(0, 2, 64)
    a = from_arrays(x[:48], y[:48], x[48:], y[48:])
    b = from_arrays(-x[:48], y[:48], -x[48:], y[48:])  # same name ("arrays"), other values
    assert a.name == b.name and a.fingerprint() != b.fingerprint()
    cfg = RunConfig(data="arrays", width=8, steps=20, eval_every=10, step_size=0.5)
    ra, rb = train(cfg, data=a, cache=True, progress=False), train(cfg, data=b, cache=True, progress=False)
    assert ra.summary.train_loss[0] != rb.summary.train_loss[0]
    again = train(cfg, data=a, cache=True, progress=False)
    assert again.summary.train_loss[0] == ra.summary.train_loss[0]


def test_mlp_decay_mask_decays_matrices_not_biases_unless_asked():
    # one step from the same start: only weight decay can make two runs differ
    cfg = RunConfig(data="digits", n_train=64, width=8, depth=1, step_size=0.1, steps=1, eval_every=1)
    plain = train(cfg, progress=False).params
    decayed = train(cfg.replace(weight_decay=0.5), progress=False).params
    all_decayed = train(cfg.replace(weight_decay=0.5, decay_biases=True), progress=False).params
    for name in plain:
        changed = lambda other: not np.array_equal(other[name].numpy(), plain[name].numpy())
        assert changed(decayed) == name.startswith("W"), name
        assert changed(all_decayed), name

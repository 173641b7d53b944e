"""Explorer latency: from a slider change to the first chart update, and a cached revisit, against the
bare `reglab.train` time of the same config (quickstart settings: MNIST-1D, 2×100 MLP, B=32, 300 steps), with
the quickstart's explorer as a notebook shows it: its charts, its learned view (weight spectrum, confusion
matrix, from a probe at every evaluation) and its run.

The panel is built without a browser (ipywidgets work without a kernel); a "chart update" is the moment
the live JupyterChart receives its new spec, i.e. what would be sent to the page. Measured: a single
change after a quiet spell (starts at once), the last of three quick key presses (waits for the
debounce), the whole run drawn, and a revisit served from the cache. Ends with
`RESULT explorer <first update / bare train time>` (< 1: the picture starts moving before a plain
train() call would have returned). Targets on the 2-core CPU: first update ≤ 0.5 s, revisit ≤ 0.1 s.

    .venv/bin/python benchmarks/explorer.py
"""
import statistics
import threading
import time

from reglab import train
from reglab.experiments import quickstart
from reglab.experiments.quickstart import config as quickstart_config
from reglab.widgets import Explorer

STEP_SIZES = [0.05, 0.2, 0.02, 0.01, 0.5]  # stops of the log slider (1, 2, 5 per decade)
BURSTS = [(1e-4, 2e-4, 5e-4), (1e-3, 2e-3, 5e-3), (2.0, 5.0, 1.0)]
FIRST_UPDATE_TARGET, REVISIT_TARGET = 0.5, 0.1


def bare_train(cfg, repeats=3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        train(cfg, progress=False)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    cfg = quickstart_config(steps=300)  # eval every 10 steps
    train(cfg.replace(steps=5, eval_every=5), progress=False)  # warm up data and kernels
    baseline = bare_train(cfg)

    ex = Explorer(cfg, chart=quickstart.chart, run=quickstart.explore, learned=quickstart.learned,
                  presets=quickstart.PRESETS, headless=False)
    ex.widget  # builds the panel; runs the initial config
    assert ex.wait(120), "the initial run did not finish"

    updated, target = threading.Event(), {"step_size": None}

    def on_spec(change):  # called in the thread that drew, right after the new spec is set
        current = ex.session.current
        if current is not None and current.config.step_size == target["step_size"]:
            updated.set()

    ex.chart_widget.observe(on_spec, names="spec")

    def change_to(value) -> float:
        slider = ex.inputs["step_size"]
        target["step_size"] = None
        updated.clear()
        t = time.perf_counter()
        slider.value = value
        target["step_size"] = ex.config.step_size  # what the slider snapped to
        if ex.session.current is not None and ex.session.current.config.step_size == target["step_size"]:
            updated.set()  # a cached redraw happens synchronously inside the assignment
        assert updated.wait(60), f"no chart update for step size {value}"
        return time.perf_counter() - t

    first, burst, revisit, full = [], [], [], []
    previous = cfg.step_size
    for value in STEP_SIZES:
        time.sleep(2 * ex.session.debounce)  # a deliberate change after a quiet spell starts at once
        first.append(change_to(value))
        t = time.perf_counter()
        assert ex.wait(120)
        full.append(first[-1] + time.perf_counter() - t)
        revisit.append(change_to(previous))  # back to the last setting: served from the cache
        assert ex.status.startswith("cached"), ex.status
        change_to(value)  # and forward again (cached too)
        previous = value
    for presses in BURSTS:  # three key presses in a row: only the last trains, after the debounce
        assert ex.wait(120)
        time.sleep(2 * ex.session.debounce)
        for value in presses[:-1]:
            ex.inputs["step_size"].value = value
        burst.append(change_to(presses[-1]))
    assert ex.wait(120)
    ex.close()

    f, b, r, w = (statistics.median(x) for x in (first, burst, revisit, full))
    print(f"bare reglab.train, same config:           {baseline:.3f} s")
    print(f"slider change -> first chart update:      {f:.3f} s  (median of {len(first)}; max {max(first):.3f})   "
          f"ratio to train {f / baseline:.2f}")
    print(f"  ...during a burst (debounce {ex.session.debounce:.2f} s):    {b:.3f} s  (max {max(burst):.3f})   "
          f"ratio to train {b / baseline:.2f}")
    print(f"slider change -> run fully drawn:         {w:.3f} s  ratio to train {w / baseline:.2f}")
    print(f"cached revisit -> chart update:           {r * 1000:.1f} ms (median; max {max(revisit) * 1000:.1f} ms)   "
          f"ratio to train {r / baseline:.3f}")
    print(f"targets: first update ≤ {FIRST_UPDATE_TARGET} s: {'PASS' if max(f, b) <= FIRST_UPDATE_TARGET else 'FAIL'}; "
          f"revisit ≤ {REVISIT_TARGET} s: {'PASS' if r <= REVISIT_TARGET else 'FAIL'}")
    print(f"RESULT explorer {f / baseline:.2f}")


if __name__ == "__main__":
    main()

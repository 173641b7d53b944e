"""The explorer in a real browser: Voilà serves a notebook on 127.0.0.1, Debian's Chromium (driven by
Playwright, never `playwright install`) moves a slider with the keyboard, the live chart redraws.

Skipped when /usr/bin/chromium, voila or playwright is missing. Server and browser are always shut down.
"""
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
STARTUP_S = float(os.environ.get("REGLAB_BROWSER_STARTUP_S", 45))  # kernel start + torch import, 2 cores

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); the real-browser test needs it",
                allow_module_level=True)
if importlib.util.find_spec("voila") is None:
    pytest.skip("voila is not installed (pip install voila)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")

INTRO = """\
import reglab
from reglab import RunConfig, charts
from reglab.widgets import Explorer

reglab.setup_notebook()
config = RunConfig(data="mnist1d", n_train=200, width=16, depth=1, steps=40, eval_every=5, batch_size=32)
run = reglab.train(config.replace(steps=10))  # a notebook's own run, with its progress bar
"""

NOTEBOOK_CODE = """\
Explorer(config, chart=lambda frame, c: charts.row(
             charts.curves(frame, ["train_loss", "test_loss"], log_y=True, title=f"step size {c.step_size:.3g}"),
             charts.curves(frame, ["train_acc", "test_acc"], title="accuracy"),
             charts.curves(frame, "train_loss", title="third chart")),
         learned=lambda frame, c: charts.row(charts.curves(frame, "test_acc", title="learned view"),
                                             charts.curves(frame, "train_acc", title="another view")),
         presets={"large step": {"question": "what happens at η = 5?", "values": {"step_size": 5.0},
                                 "lock": ("batch_size",), "hide": ("rank",)}},
         debounce=0.1)
"""

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def voila_url(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("voila")
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# An explorer"), nbformat.v4.new_code_cell(INTRO),
                nbformat.v4.new_code_cell(NOTEBOOK_CODE)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "explorer.ipynb")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "REGLAB_HEADLESS"}  # the served kernel is interactive
    env["REGLAB_THREADS"] = "1"
    log = open(tmp_path / "voila.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "voila", "explorer.ipynb", "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
         "--show_tracebacks=True"],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.time() + STARTUP_S
        while True:
            try:
                urllib.request.urlopen(url + "api", timeout=2)
                break
            except urllib.error.HTTPError:  # any answer means the server is up (GET / would start a kernel)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    pytest.fail("voila did not start:\n" + (tmp_path / "voila.log").read_text()[-3000:])
                time.sleep(0.3)
        yield url, tmp_path / "voila.log"
    finally:
        _shut_down(server)
        log.close()


def _shut_down(server: subprocess.Popen) -> None:
    """Stop the server (its process group) and the kernels it started (their own sessions), by pid."""
    try:
        import psutil

        kernels = psutil.Process(server.pid).children(recursive=True)
    except Exception:  # psutil missing or the server already gone
        kernels = []
    try:
        os.killpg(server.pid, signal.SIGTERM)  # voila shuts its kernels down on SIGTERM
        server.wait(timeout=3)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
    for child in kernels:
        try:
            child.kill()
        except Exception:  # already exited
            pass


@pytest.fixture(scope="module")
def page(voila_url):
    """One page (one kernel) for the module's tests, in a 968 px wide window: a notebook column."""
    url, log = voila_url
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": 900}, accept_downloads=True)
            page.console = []
            page.on("console", lambda m: page.console.append(f"{m.type}: {m.text}"))
            page.log = log
            t0 = time.time()
            try:
                page.goto(url, timeout=STARTUP_S * 1000)
                error = "document.querySelector('[data-mime-type=\"application/vnd.jupyter.error\"]')"
                page.wait_for_function(f"() => ({_has_text('step size 0.1')})() || {error}", timeout=STARTUP_S * 1000)
            except Exception as err:
                _explain(page, err, t0)
            errors = page.locator('[data-mime-type="application/vnd.jupyter.error"]')
            assert errors.count() == 0, "the notebook failed:\n" + errors.first.inner_text()[-2000:]
            yield page
        finally:
            browser.close()


WIDTH = 968  # px: a Jupyter notebook column


def _explain(page, err, t0):
    """Fail saying what the server and the page saw."""
    page.screenshot(path=str(page.log.with_name("failure.png")), full_page=True)
    raise AssertionError(f"{type(err).__name__} after {time.time() - t0:.1f} s: {err}\n--- voila log\n"
                         f"{page.log.read_text()[-3000:]}\n--- browser console\n" + "\n".join(page.console[-30:])) from None


def _checked(page, test):
    t0 = time.time()
    try:
        test(page)
    except AssertionError:
        page.screenshot(path=str(page.log.with_name("failure.png")), full_page=True)
        raise
    except Exception as err:
        _explain(page, err, t0)


def _chart_texts(page) -> list:
    return page.locator(".reglab-explorer svg text").all_text_contents()


def _has_text(text: str) -> str:
    return ("() => [...document.querySelectorAll('.reglab-explorer svg text')]"
            f".some(t => t.textContent === {json.dumps(text)})")


def _stamp(page) -> dict:
    return json.loads(page.locator(".reglab-stamp input").input_value().removeprefix("reglab:"))


def _readout(page, name) -> str:
    return page.locator(f".reglab-control-{name} .reglab-readout input").input_value()


def _enter(page, selector, text):
    box = page.locator(selector)
    box.fill(text)
    box.press("Enter")


def _wait_status(page, pattern, timeout=30_000):
    page.wait_for_function("p => new RegExp(p).test(document.querySelector('.reglab-status').textContent)", arg=pattern,
                           timeout=timeout)


BROKEN = ("Error displaying widget", "Loading widget")  # a widget whose model is gone (closed) or never came


def test_voila_shows_every_explorer_widget(page):
    page.wait_for_function(_has_text("learned view"), timeout=20_000)
    panel = page.locator(".jp-OutputArea-output", has=page.locator(".reglab-explorer")).first.inner_text()
    assert not any(b in panel for b in BROKEN), panel[:2000]
    assert page.locator(".reglab-explorer").count() == 1


def test_voila_page_has_no_broken_widgets(page):
    text = page.locator("body").inner_text()
    assert not any(b in text for b in BROKEN), text[:2000]


def test_the_panel_fits_a_968px_column_and_labels_are_whole(page):
    def check(page):
        page.wait_for_function(_has_text("learned view"), timeout=20_000)  # the learned view is drawn too
        over = page.evaluate("""() => {
            const limit = document.documentElement.clientWidth;
            const bad = [...document.querySelectorAll('.reglab-explorer *')]
                .filter(e => e.getBoundingClientRect().width > 0 && e.getBoundingClientRect().right > limit + 1)
                .map(e => e.tagName + '.' + e.className.baseVal + e.className + ' ' + Math.round(e.getBoundingClientRect().right));
            return {scroll: document.documentElement.scrollWidth, limit, bad: bad.slice(0, 5)};
        }""")
        assert over["scroll"] <= WIDTH and not over["bad"], over
        cut = page.evaluate("""() => [...document.querySelectorAll('.reglab-explorer .widget-html-content, .reglab-explorer label')]
            .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)""")
        assert not cut, f"labels cut: {cut}"
        assert "third chart" in _chart_texts(page) and "another view" in _chart_texts(page)
        if os.environ.get("REGLAB_BROWSER_SHOTS"):  # a picture of the page for a person to look at
            page.screenshot(path=str(Path(os.environ["REGLAB_BROWSER_SHOTS"]) / "explorer-968px.png"), full_page=True)

    _checked(page, check)


def test_keyboard_slider_snaps_to_round_values_and_redraws(page):
    def check(page):
        assert _stamp(page).get("step_size") is None  # the default, 0.1
        handle = page.locator(".reglab-control-step_size .noUi-handle").first
        handle.focus()
        page.keyboard.press("ArrowRight")  # the next round stop: 0.1 -> 0.2
        page.wait_for_function(_has_text("step size 0.2"), timeout=20_000)
        assert "step size 0.1" not in _chart_texts(page)
        page.wait_for_function("() => document.querySelector('.reglab-stamp input').value.includes('0.2')", timeout=10_000)
        assert _stamp(page)["step_size"] == 0.2 and _readout(page, "step_size") == "0.2"

    _checked(page, check)


def test_readouts_equal_the_state_after_a_stamp_and_toggles(page):
    def check(page):
        stamp = "reglab:" + json.dumps({**_stamp(page), "weight_decay": 0.01, "rank": 5})
        _enter(page, ".reglab-stamp input", stamp)
        page.wait_for_function("() => document.querySelector('.reglab-control-rank .reglab-readout input').value === '5'",
                               timeout=10_000)
        assert _readout(page, "weight_decay") == "0.01"
        assert not page.locator(".reglab-control-weight_decay .reglab-off input").is_checked()
        assert not page.locator(".reglab-control-rank .reglab-off input").is_checked()
        page.locator(".reglab-control-weight_decay .reglab-off input").check()  # λ = 0
        page.wait_for_function("() => document.querySelector('.reglab-control-weight_decay .reglab-readout input').value === '0'",
                               timeout=10_000)
        assert _stamp(page).get("weight_decay", 0.0) == 0.0
        page.locator(".reglab-control-rank .reglab-off input").check()  # full rank
        page.wait_for_function("() => document.querySelector('.reglab-control-rank .reglab-readout input').value === 'full'",
                               timeout=10_000)
        assert _stamp(page).get("rank") is None
        _enter(page, ".reglab-control-step_size .reglab-readout input", "-0.1")  # typed beside the slider: refused
        page.wait_for_function("() => document.querySelector('.reglab-messages').textContent.includes('step_size')",
                               timeout=10_000)
        assert _readout(page, "step_size") == "0.2" and _stamp(page)["step_size"] == 0.2
        _enter(page, ".reglab-control-step_size .reglab-readout input", "0.3")  # in range: used exactly
        page.wait_for_function("() => document.querySelector('.reglab-stamp input').value.includes('0.3')", timeout=10_000)
        assert _readout(page, "step_size") == "0.3"

    _checked(page, check)


def test_a_refused_entry_does_not_restart_the_run(page):
    def check(page):
        _enter(page, ".reglab-set input", "step size = 0.5, steps = 4000")  # the names people see
        _wait_status(page, r"^step [1-9]\d*/4000")
        before = int(page.locator(".reglab-status").text_content().split()[1].split("/")[0])
        _enter(page, ".reglab-set input", "garbage")
        page.wait_for_function("() => document.querySelector('.reglab-messages').textContent.includes('garbage')",
                               timeout=10_000)
        time.sleep(0.5)
        status = page.locator(".reglab-status").text_content()
        assert status.startswith(("step", "done")) and "starting" not in status, status
        if status.startswith("step"):
            assert int(status.split()[1].split("/")[0]) >= before, (status, before)
        page.wait_for_function("() => document.querySelector('.reglab-set input').value === ''", timeout=5_000)
        page.locator(".reglab-stop").click()  # stop holds the run; continue resumes it
        _wait_status(page, r"^paused at step")
        page.locator(".reglab-stop").click()
        _wait_status(page, r"^(step|done)")
        _enter(page, ".reglab-set input", "steps = 40")

    _checked(page, check)


def test_compare_legend_names_the_differing_setting(page):
    def check(page):
        _wait_status(page, r"done|cached")
        page.locator(".reglab-compare input").check()
        _enter(page, ".reglab-set input", "η = 0.1")
        page.wait_for_function(_has_text("η=0.1"), timeout=30_000)
        texts = _chart_texts(page)
        assert "η=0.1" in texts and "η=0.5" in texts, texts  # the legend names the setting that differs
        page.locator(".reglab-compare input").uncheck()

    _checked(page, check)


def test_presets_and_export_as_a_download(page):
    def check(page):
        page.locator(".reglab-presets select").select_option("large step")
        page.wait_for_function("() => document.querySelector('.reglab-question').textContent.includes('η = 5')",
                               timeout=10_000)
        assert _readout(page, "step_size") == "5"
        assert page.locator(".reglab-control-batch_size .reglab-readout input").is_disabled()
        assert not page.locator(".reglab-control-rank").is_visible()
        _wait_status(page, r"diverged|done")
        page.locator(".reglab-export-csv").click()
        link = page.locator(".reglab-download a")
        link.wait_for(timeout=10_000)
        with page.expect_download() as info:
            link.click()
        download = info.value
        assert download.suggested_filename.endswith(".csv")
        text = Path(download.path()).read_text()
        assert text.startswith("# ") and '"step_size":5.0' in text.replace(" ", "")

    _checked(page, check)

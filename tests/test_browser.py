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

NOTEBOOK_CODE = """\
from reglab import RunConfig, charts
from reglab.widgets import Explorer

config = RunConfig(data="mnist1d", n_train=200, width=16, depth=1, steps=40, eval_every=5, batch_size=32)
Explorer(config, chart=lambda frame, c: charts.curves(frame, "train_loss", title=f"step size {c.step_size:.3g}"),
         debounce=0.1)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def voila_url(tmp_path):
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(NOTEBOOK_CODE)]
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


@pytest.fixture
def page():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.console = []
            page.on("console", lambda m: page.console.append(f"{m.type}: {m.text}"))
            yield page
        finally:
            browser.close()


def _chart_texts(page) -> list:
    return page.locator(".reglab-explorer svg text").all_text_contents()


def test_keyboard_slider_redraws_the_live_chart(voila_url, page):
    url, log = voila_url
    t0 = time.time()
    try:
        _drive(url, page)
    except Exception as err:  # say what the server and the page saw
        page.screenshot(path=str(log.with_name("failure.png")), full_page=True)
        raise AssertionError(f"{type(err).__name__} after {time.time() - t0:.1f} s: {err}\n--- voila log\n"
                             f"{log.read_text()[-3000:]}\n--- browser console\n" + "\n".join(page.console[-30:])) from None


def _has_text(text: str) -> str:
    return ("() => [...document.querySelectorAll('.reglab-explorer svg text')]"
            f".some(t => t.textContent === {json.dumps(text)})")


def _drive(url, page):
    page.goto(url, timeout=STARTUP_S * 1000)
    error = "document.querySelector('[data-mime-type=\"application/vnd.jupyter.error\"]')"
    page.wait_for_function(f"() => ({_has_text('step size 0.1')})() || {error}", timeout=STARTUP_S * 1000)
    errors = page.locator('[data-mime-type="application/vnd.jupyter.error"]')
    assert errors.count() == 0, "the notebook failed:\n" + errors.first.inner_text()[-2000:]
    stamp = page.locator(".reglab-explorer input[type=text]").first
    assert json.loads(stamp.input_value().removeprefix("reglab:")).get("step_size") is None  # the default, 0.1

    handle = page.locator(".reglab-explorer .noUi-handle").first  # the step-size slider comes first
    handle.focus()
    page.keyboard.press("ArrowRight")  # one stop of 0.1 decade: 0.1 -> 0.126

    page.wait_for_function(_has_text("step size 0.126"), timeout=20_000)
    assert "step size 0.1" not in _chart_texts(page)
    page.wait_for_function("() => document.querySelector('.reglab-explorer input[type=text]').value.includes('0.125')",
                           timeout=10_000)
    assert json.loads(stamp.input_value().removeprefix("reglab:"))["step_size"] == pytest.approx(10 ** -0.9)

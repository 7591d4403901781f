"""App mode: `python -m workbench app` serves the explorer with Voila; a headless Chromium clicks INT8 and sees the
result and a plotly figure. Needs Debian chromium, pip playwright and voila (see tests/test_browser.py).
WORKBENCH_SCREENSHOTS=docs/images refreshes the README's app.png."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from workbench.app import app_notebook, is_loopback
from workbench.cli import main



def test_app_refuses_a_remote_address_unless_asked(capsys):
    pytest.importorskip("voila")
    assert main(["app", "digits-cnn", "--host", "0.0.0.0"]) == 2
    error = capsys.readouterr().err
    assert "Refusing to serve the app on 0.0.0.0" in error and "--allow-remote" in error
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")


def test_app_notebook_is_one_explorer_cell():
    notebook = app_notebook("digits-cnn", cache_dir="/c", shared_cache="/s", runs=3)
    [cell] = [c for c in notebook["cells"] if c["cell_type"] == "code"]
    assert cell["cell_type"] == "code"
    assert "Explorer('digits-cnn', backend='onnxruntime', cache_dir='/c', shared_cache='/s'" in cell["source"]


@pytest.fixture(scope="module")
def browser_setup():
    """tests/test_browser.py's Chromium and free-port helpers (importing it skips when Chromium is missing)."""
    import test_browser

    pytest.importorskip("voila")
    return test_browser


@pytest.fixture(scope="module")
def app_server(tmp_path_factory, browser_setup):
    psutil = browser_setup.psutil
    home = tmp_path_factory.mktemp("app")
    port = browser_setup._free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_DATA_DIR=str(home / "data"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), IPYTHONDIR=str(home / "ipython"), PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "workbench", "app", "digits-cnn", "--runs", "3",
                                "--cache", str(home / "cache"), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in process.stdout:
            log.append(line)
            if f"http://127.0.0.1:{port}/" in line and "running" in "".join(log[-3:]):
                ready.set()
        ready.set()
    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(90) or process.poll() is not None:
            raise RuntimeError("the app did not start:\n" + "".join(log[-30:]))
        yield f"http://127.0.0.1:{port}/", log
    finally:
        children = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        _gone, alive = psutil.wait_procs(children, timeout=20)
        for child in alive:
            child.kill()
        assert not alive, f"processes left after the app stopped: {[c.pid for c in alive]}"
    listening = [c for c in psutil.net_connections("inet") if c.laddr and c.laddr.port == port
                 and c.status == psutil.CONN_LISTEN]
    assert not listening


# Resolves once every visible figure in the panel spans >= 90 % of it, or after `timeout` ms (then rejects).
FIGURES_FIT_JS = """(panel, timeout) => new Promise((resolve, reject) => {
  const start = performance.now();
  const check = () => {
    const total = panel.getBoundingClientRect().width;
    const svgs = [...panel.querySelectorAll('.js-plotly-plot')].filter(f => f.offsetParent !== null)
      .map(f => f.querySelector('.main-svg')).filter(Boolean);
    if (svgs.length && svgs.every(s => s.getBoundingClientRect().width >= 0.9 * total)) return resolve(true);
    if (performance.now() - start > timeout) return reject(new Error('figures do not fit'));
    requestAnimationFrame(check);
  };
  check();
})"""


@pytest.mark.browser
def test_app_page_switches_to_int8_and_draws_a_figure(app_server, browser_setup, tmp_path):
    from playwright.sync_api import sync_playwright

    url, log = app_server
    assert any("127.0.0.1" in line for line in log) and not any("0.0.0.0" in line for line in log)
    readme_images = Path(os.environ["WORKBENCH_SCREENSHOTS"]) if os.environ.get("WORKBENCH_SCREENSHOTS") else None
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(browser_setup.CHROMIUM), args=browser_setup.CHROMIUM_ARGS,
                                     headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc) + "\n" + (exc.stack or "")))
            page.goto(url, timeout=90_000)
            page.locator(".workbench-status", has_text="median").wait_for(timeout=120_000)
            assert page.locator(".jp-CodeMirrorEditor, .cm-editor").count() == 0  # no code cells
            assert "import Explorer" not in page.inner_text("body")
            assert "fp32" in page.locator(".workbench-status").inner_text().lower()
            assert page.get_by_text("TensorRT Workbench").count() >= 1
            int8 = page.locator(".widget-toggle-button", has_text=re.compile(r"^INT8$"))
            int8.click()
            page.locator(".workbench-status", has_text=re.compile(r"int8.*median", re.IGNORECASE)).wait_for(
                timeout=120_000)
            assert "mod-active" in (int8.get_attribute("class") or "")
            page.locator(".lm-TabBar-tab, .p-TabBar-tab", has_text="Per-layer latency").click()
            bars = page.locator(".js-plotly-plot:visible .bars path")  # FP32's figure is kept, hidden
            bars.first.wait_for(timeout=60_000)
            assert bars.count() >= 2  # FP32 and INT8 per-layer bars
            assert not errors, errors
            for width, height in ((1024, 768), (1400, 1000)):
                page.set_viewport_size({"width": width, "height": height})
                page.locator(".js-plotly-plot:visible").first.wait_for()
                panel = page.locator(".widget-tab-contents > .lm-Widget:not(.lm-mod-hidden)").first
                try:  # plotly re-lays out after a resize, debounced (slower on a loaded machine)
                    panel.evaluate(FIGURES_FIT_JS, 20_000)
                except Exception:  # noqa: BLE001 - _check_figures below says which figure does not fit
                    pass
                # every figure spans >= 90 % of its panel, no overlapping labels
                assert browser_setup._check_figures(page, panel, f"app {width}x{height}") >= 1
                page.screenshot(path=str(tmp_path / f"app-{width}x{height}.png"))
                if os.environ.get("WORKBENCH_SHOTS_KEEP"):
                    page.screenshot(path=str(Path(os.environ["WORKBENCH_SHOTS_KEEP"]) / f"app-{width}x{height}.png"))
            if readme_images:  # the README shows the large one
                page.screenshot(path=str(readme_images / "app.png"))
            assert (tmp_path / "app-1400x1000.png").stat().st_size > 10_000
        finally:
            browser.close()


def test_remote_address_with_the_flag_warns_and_binds_there(monkeypatch, tmp_path):
    pytest.importorskip("voila")
    import workbench.app as app

    started = []

    class FakeVoila:
        def __init__(self, command, **kwargs):
            started.append((command, kwargs["cwd"]))

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(app.subprocess, "Popen", FakeVoila)
    said: list[str] = []
    assert app.serve("digits-cnn", host="0.0.0.0", port=9999, allow_remote=True, cache_dir=tmp_path,
                     echo=said.append) == 0
    assert said[0].startswith("warning: the app listens on 0.0.0.0:9999 without a password")
    [(command, folder)] = started
    assert "--Voila.ip=0.0.0.0" in command and "--port=9999" in command and "--strip_sources=True" in command
    assert not Path(folder).exists()  # the generated notebook's private folder is removed afterwards

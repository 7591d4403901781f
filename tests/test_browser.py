"""The explorer and the HTML report as a person sees them: JupyterLab and a report file in headless Chromium.

Needs Debian `chromium` (/usr/bin/chromium) and pip `playwright` (no `playwright install`: the system browser is
used). Set WORKBENCH_SCREENSHOTS=docs/images to refresh the README screenshots (explorer.png, report.png).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPORT_SECTIONS = ("Summary", "Layer fusion", "Per-layer latency", "Per-layer accuracy drift",
                   "Regional precision policies", "Cost model", "How this report was made")
# Browser console errors that mean the widgets did not render (JupyterLab logs unrelated ones, e.g. missing
# optional server endpoints, which are not this test's business).
WIDGET_ERRORS = re.compile(r"widget|plotly|anywidget|Class \S+ not found|jupyter-widgets", re.IGNORECASE)

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (scripts/setup.sh does)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no `playwright install`)")
pytest.importorskip("jupyterlab", reason="pip install -e '.[notebook]'")
psutil = pytest.importorskip("psutil")

NOTEBOOK_CODE = """\
from workbench.ui import Explorer
explorer = Explorer("digits-cnn", runs=3, cache_dir={cache!r})
explorer"""


def _screenshot_dirs(tmp: Path) -> list[Path]:
    dirs = [tmp]
    if os.environ.get("WORKBENCH_SCREENSHOTS"):
        dirs.append(Path(os.environ["WORKBENCH_SCREENSHOTS"]))
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    return dirs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_notebook(path: Path, code: str) -> None:
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(code)]
    nbformat.write(nb, path)


class _JupyterLab:
    """A JupyterLab server from this venv on 127.0.0.1, no token, no password, config and settings in `home`."""

    def __init__(self, home: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log: list[str] = []
        self.leftovers: list[int] = []
        self._started = False
        self._ready = threading.Event()
        settings = home / "config" / "lab" / "user-settings" / "@jupyterlab"
        # no "get Jupyter news?" toast over the page, no update checks, no "Select Kernel" dialog
        for plugin, values in {"apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
                               "notebook-extension/tracker": {"autoStartDefaultKernel": True}}.items():
            path = settings / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_RUNTIME_DIR=str(home / "runtime"),
                   IPYTHONDIR=str(home / "ipython"), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", "--IdentityProvider.token=",
             "--PasswordIdentityProvider.hashed_password=", f"--ServerApp.root_dir={home / 'root'}",
             f"--LabApp.user_settings_dir={settings.parent}", f"--LabApp.workspaces_dir={home / 'workspaces'}",
             "--LabApp.extension_manager=readonly", "--LabApp.news_url=None",
             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=home)
        threading.Thread(target=self._read_log, daemon=True).start()

    def _read_log(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line)
            if f"127.0.0.1:{self.port}/lab" in line:
                self._started = True
                self._ready.set()
        self._ready.set()  # the server exited: stop waiting

    def wait_ready(self, timeout: float) -> None:
        if not (self._ready.wait(timeout) and self._started):
            raise RuntimeError("JupyterLab did not start:\n" + "".join(self.log[-30:]))

    def stop(self) -> None:
        """SIGINT twice (Jupyter's own clean shutdown, kernels included), then make sure no child is left."""
        children = psutil.Process(self.proc.pid).children(recursive=True)
        for _ in range(2):
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        _gone, alive = psutil.wait_procs(children, timeout=10)
        for child in alive:
            child.kill()
        self.leftovers = [c.pid for c in alive]


@pytest.fixture(scope="module")
def pw():
    with sync_api.sync_playwright() as pw:
        yield pw


def _new_context(pw, user_data: Path):
    return pw.chromium.launch_persistent_context(
        str(user_data), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
        viewport={"width": 1280, "height": 900})


@contextlib.contextmanager
def running_lab(home: Path):
    """A started JupyterLab serving `home`/root (create the notebooks there first); stopped, nothing left, after."""
    server = _JupyterLab(home)
    try:
        server.wait_ready(timeout=60)
        yield server
    finally:
        server.stop()
    assert not server.leftovers, f"processes left after JupyterLab shut down: {server.leftovers}"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    home = tmp_path_factory.mktemp("jupyterlab")
    (home / "root").mkdir()
    _write_notebook(home / "root" / "explorer.ipynb", NOTEBOOK_CODE.format(cache=str(home / "cache")))
    with running_lab(home) as server:
        yield server


def run_notebook(context, url: str) -> tuple:
    """Open the notebook at `url` in a page of `context` and run all its cells; returns (page, console errors)."""
    page = context.pages[0] if context.pages else context.new_page()
    console_errors: list[str] = []
    page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: console_errors.append(str(exc)))
    page.goto(url, timeout=60_000)
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    page.get_by_text(re.compile(r"\| Idle$")).first.wait_for(timeout=60_000)  # kernel started
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    return page, console_errors


def test_explorer_in_jupyterlab_switches_to_int8(lab, pw, tmp_path):
    context = _new_context(pw, tmp_path / "chromium")
    try:
        page, console_errors = run_notebook(context, f"{lab.url}/doc/tree/explorer.ipynb")

        # the widget manager rendered the explorer, and the FP32 result arrived
        status = page.locator(".workbench-status", has_text="median")
        status.wait_for(timeout=60_000)
        assert "fp32" in status.inner_text().lower()
        int8 = page.locator(".widget-toggle-button", has_text=re.compile(r"^INT8$"))
        int8.click()
        page.locator(".workbench-status", has_text=re.compile(r"int8.*median", re.IGNORECASE)).wait_for(
            timeout=60_000)
        assert "mod-active" in (int8.get_attribute("class") or "")

        page.locator(".lm-TabBar-tab", has_text="Summary").click()
        rows = page.locator(".widget-tab table tr:visible")  # the Summary tab (Mixed precision has a table too)
        rows.nth(2).wait_for(timeout=10_000)
        assert rows.count() == 3, "Summary should list FP32 and INT8 under one header row"
        assert "int8" in rows.nth(2).inner_text().lower() or "int8" in rows.nth(1).inner_text().lower()

        # plotly FigureWidget (anywidget) drew the FP32-vs-INT8 per-layer bars
        page.locator(".lm-TabBar-tab", has_text="Per-layer latency").click()
        bars = page.locator(".widget-tab .js-plotly-plot .bars path")
        bars.first.wait_for(timeout=30_000)
        assert bars.count() >= 2
        assert page.locator(".widget-tab .js-plotly-plot .legend .traces").count() >= 2

        widget_errors = [e for e in console_errors if WIDGET_ERRORS.search(e)]
        assert not widget_errors, widget_errors
        page.locator(".jp-InputCollapser").first.click()  # hide the code: the picture is about the widget
        page.set_viewport_size({"width": 1280, "height": 1000})
        for folder in _screenshot_dirs(tmp_path / "shots"):
            page.screenshot(path=str(folder / "explorer.png"))
        assert (tmp_path / "shots" / "explorer.png").stat().st_size > 10_000
    finally:
        context.close()


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    from workbench.cli import main

    out = tmp_path_factory.mktemp("report")
    path = out / "report.html"
    code = main(["report", "digits-cnn", "--precision", "fp32", "--precision", "int8", "--runs", "3", "--quiet",
                 "--cache-dir", str(out / "cache"), "--out", str(path)])
    assert code == 0 and path.is_file()
    return path


def test_report_is_self_contained_offline(report_html, pw, tmp_path):
    context = _new_context(pw, tmp_path / "chromium")
    blocked: list[str] = []

    def block(route):
        blocked.append(route.request.url)
        route.abort()

    context.route(re.compile(r"^(?!file://).*"), block)
    page = context.pages[0] if context.pages else context.new_page()
    try:
        page.goto(report_html.as_uri(), timeout=30_000)
        page.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=30_000)
        assert page.locator(".js-plotly-plot").count() >= 3
        headings = [h.strip() for h in page.locator("h2").all_inner_texts()]
        for section in REPORT_SECTIONS:
            assert any(h.startswith(section) for h in headings), f"section {section!r} missing from {headings}"
        assert not blocked, f"the report fetched from the network: {blocked}"
        page.set_viewport_size({"width": 1280, "height": 1000})
        for folder in _screenshot_dirs(tmp_path / "shots"):
            page.screenshot(path=str(folder / "report.png"))
    finally:
        context.close()

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
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPORT_SECTIONS = ("Summary", "Layer fusion", "Per-layer latency", "Per-layer accuracy drift",
                   "Why layers drift", "Regional precision policies", "Cost model", "How this report was made")
# Browser console errors that mean the widgets did not render (JupyterLab logs unrelated ones, e.g. missing
# optional server endpoints, which are not this test's business).
WIDGET_ERRORS = re.compile(r"widget|plotly|anywidget|Class \S+ not found|jupyter-widgets", re.IGNORECASE)

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium (scripts/setup.sh does)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no `playwright install`)")
pytest.importorskip("jupyterlab", reason="pip install -e '.[notebook]'")
psutil = pytest.importorskip("psutil")

MODELS = ("fashion-cnn", "efficientnet-lite0-fashion")
SIZES = ((1400, 1000), (1024, 768))
EXPLORER_CODE = """\
from workbench.ui import Explorer
explorer = Explorer({model!r}, runs=10, cache_dir={cache!r})
explorer"""
APPEAR_S = 2.0  # the explorer panel is on screen this soon after its cell starts
STALE_MS = 300  # a status already in flight when a button is clicked may show this long, no longer

# Text boxes (plotly <text> and table cells) that overlap by more than 2 px in both directions.
OVERLAPS_JS = """(root) => {
  const boxes = [];
  for (const t of root.querySelectorAll('text')) {
    const s = getComputedStyle(t);
    if (!t.textContent.trim() || s.visibility === 'hidden' || s.display === 'none' || s.opacity === '0') continue;
    const r = t.getBoundingClientRect();
    if (r.width < 1 || r.height < 1) continue;
    boxes.push({text: t.textContent.slice(0, 40), l: r.left, t: r.top, r: r.right, b: r.bottom});
  }
  const out = [];
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const a = boxes[i], b = boxes[j];
    if (Math.min(a.r, b.r) - Math.max(a.l, b.l) > 2 && Math.min(a.b, b.b) - Math.max(a.t, b.t) > 2)
      out.push([a.text, b.text]);
  }
  return out;
}"""
# The first engine layer (graphviz node "a<k>") of the "After fusion" column.
AFTER_FIRST_JS = """(root) => {
  const column = root.querySelector('.workbench-fusion-after');
  if (!column) return null;
  const node = [...column.querySelectorAll('g.node')].find(g => /^a\\d+$/.test(g.querySelector('title').textContent));
  const r = node.getBoundingClientRect();
  return {left: r.left, right: r.right, top: r.top, bottom: r.bottom};
}"""


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


def _write_notebook(path: Path, *cells: str) -> None:
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(code) for code in cells]
    nbformat.write(nb, path)


class _JupyterLab:
    """A JupyterLab server from this venv on 127.0.0.1, no token, no password, config and settings in `home`."""

    def __init__(self, home: Path):
        self.home = home
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


def _new_context(pw, user_data: Path, size=SIZES[0]):
    return pw.chromium.launch_persistent_context(
        str(user_data), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
        viewport={"width": size[0], "height": size[1]})


def _page_collecting_errors(context) -> tuple[object, list[str]]:
    """The context's page, and the list its console errors and uncaught page errors are appended to."""
    page = context.pages[0] if context.pages else context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, errors


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """Every configuration the browser tests click, computed once by an explorer with the notebook's settings."""
    from workbench.ui import Explorer

    # WORKBENCH_BROWSER_CACHE: reuse a cache between runs while working on the views (CI starts empty)
    folder = Path(os.environ.get("WORKBENCH_BROWSER_CACHE") or tmp_path_factory.mktemp("cache"))
    for model in MODELS:
        explorer = Explorer(model, runs=10, cache_dir=folder, background=False)
        for precision in ("fp32", "fp16", "int8"):
            explorer.precision.value = precision
            assert explorer.wait() is not None, explorer.error
    return folder


@pytest.fixture(scope="module")
def lab(tmp_path_factory, cache):
    home = tmp_path_factory.mktemp("jupyterlab")
    (home / "root").mkdir()
    for model in MODELS:
        _write_notebook(home / "root" / f"{model}.ipynb", "print('kernel ready')",
                        EXPLORER_CODE.format(model=model, cache=str(cache)))
    with running_lab(home) as server:
        yield server


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


def run_notebook(context, url: str) -> tuple:
    """Open the notebook at `url` in a page of `context` and run all its cells; returns (page, console errors)."""
    page, console_errors = _page_collecting_errors(context)
    page.goto(url, timeout=60_000)
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
    page.get_by_text(re.compile(r"\| Idle$")).first.wait_for(timeout=60_000)  # kernel started
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    return page, console_errors


def _run_cell(page, index: int) -> None:
    page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")


def _no_page_scroll(page) -> None:
    widths = page.evaluate("""() => [document.documentElement.scrollWidth - document.documentElement.clientWidth,
        ...[...document.querySelectorAll('.jp-WindowedPanel-outer')].map(e => e.scrollWidth - e.clientWidth)]""")
    assert max(widths) <= 1, f"page-level horizontal scroll of {max(widths)} px"


def _check_figures(page, root, where: str) -> int:
    """Every plotly figure in `root` spans >= 90 % of it and has no overlapping text; returns the count."""
    figures = root.locator(".js-plotly-plot")
    root.locator(".js-plotly-plot:visible").first.wait_for(timeout=30_000)  # the explorer keeps hidden ones too
    total = root.evaluate("e => e.getBoundingClientRect().width")
    for i in range(figures.count()):
        figure = figures.nth(i)
        if not figure.is_visible():
            continue
        width = figure.evaluate("e => e.querySelector('.main-svg').getBoundingClientRect().width")  # as drawn
        assert width >= 0.9 * total, f"{where}: figure {i} is {width:.0f} px in a {total:.0f} px container"
        overlaps = figure.evaluate(OVERLAPS_JS)
        assert not overlaps, f"{where}: figure {i} has overlapping labels {overlaps[:5]}"
    return figures.count()


def _shot(page, tmp_path: Path, name: str, readme_name: str | None = None) -> None:
    page.screenshot(path=str(tmp_path / "shots" / f"{name}.png"))
    if os.environ.get("WORKBENCH_SHOTS_KEEP"):  # every screenshot, for looking at them
        Path(os.environ["WORKBENCH_SHOTS_KEEP"]).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(os.environ["WORKBENCH_SHOTS_KEEP"]) / f"{name}.png"))
    if readme_name and os.environ.get("WORKBENCH_SCREENSHOTS"):
        for folder in _screenshot_dirs(tmp_path / "shots")[1:]:
            page.screenshot(path=str(folder / readme_name))


def _tab(page, title: str):
    page.locator(".workbench-explorer .lm-TabBar-tab", has_text=title).first.click()
    return page.locator(".workbench-explorer .widget-tab-contents > .lm-Widget:not(.lm-mod-hidden)").first


RECORD_STATUS_JS = """() => {
  window.statusLog = [];
  const status = document.querySelector('.workbench-status');
  new MutationObserver(() => {
    const active = document.querySelector('.workbench-explorer .widget-toggle-button.mod-active');
    window.statusLog.push({t: performance.now(), text: status.innerText, selected: active && active.innerText});
  }).observe(status, {subtree: true, childList: true, characterData: true});
}"""


@pytest.mark.parametrize("model", MODELS)
def test_explorer_in_jupyterlab(lab, pw, tmp_path, model):
    """The explorer at 1400x1000 and 1024x768: on screen fast, figures fill their tab, readable fusion view with
    working page buttons, a summary table that fits, and quick clicking never shows a result not selected."""
    (tmp_path / "shots").mkdir()
    _screenshot_dirs(tmp_path / "shots")
    context = _new_context(pw, tmp_path / "chromium")
    page, console_errors = _page_collecting_errors(context)
    try:
        page.goto(f"{lab.url}/doc/tree/{model}.ipynb", timeout=60_000)
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
        page.get_by_text(re.compile(r"\| Idle$")).first.wait_for(timeout=60_000)  # kernel started
        _run_cell(page, 0)
        page.get_by_text("kernel ready").first.wait_for(timeout=60_000)
        started = time.perf_counter()
        _run_cell(page, 1)
        page.locator(".workbench-explorer").wait_for(state="visible", timeout=60_000)
        appeared = time.perf_counter() - started
        assert appeared <= APPEAR_S, f"the explorer took {appeared:.1f} s to appear"

        page.locator(".workbench-status", has_text="median").wait_for(timeout=120_000)
        assert page.locator(".workbench-status").inner_text().lower().startswith("fp32")
        page.locator(".jp-InputCollapser").nth(1).click()  # hide the code: the picture is about the widget
        page.locator(".jp-InputCollapser").first.click()
        int8 = page.locator(".widget-toggle-button", has_text=re.compile(r"^INT8$"))
        calibration = page.locator(".workbench-explorer .widget-dropdown select").nth(3)
        assert calibration.is_disabled()  # INT8-only controls are off at FP32
        int8.click()
        page.locator(".workbench-status", has_text=re.compile(r"^int8.*median", re.IGNORECASE)).wait_for(
            timeout=120_000)
        assert calibration.is_enabled()
        # the status gives INT8's speed-up over FP32 with its interval and the within-noise verdict
        assert re.search(r"vs FP32: (×[\d.]+ \(95% CI ×[\d.]+–[\d.]+\), (faster|slower)"
                         r"|no measurable difference \(×[\d.]+)", page.locator(".workbench-status").inner_text()), \
            page.locator(".workbench-status").inner_text()

        for width, height in SIZES:
            page.set_viewport_size({"width": width, "height": height})
            size = f"{model}-{width}x{height}"
            readme = width == SIZES[0][0] and model == MODELS[1]
            panel = _tab(page, "Fusion")
            page.locator(".workbench-explorer .lm-TabBar").first.evaluate("e => e.scrollIntoView({block: 'start'})")
            first = panel.evaluate(AFTER_FIRST_JS)
            assert first is not None, "no 'After fusion' column"
            assert 0 <= first["left"] and first["right"] <= width and 0 <= first["top"] < height, \
                f"{size}: the first 'After fusion' layer is outside the viewport: {first}"
            _no_page_scroll(page)
            _shot(page, tmp_path, f"{size}-fusion", "fusion.png" if readme else None)
            pager = page.locator(".workbench-page-next")
            if pager.is_visible():
                label = panel.locator("text=/page 1 of \\d+/")
                assert label.count() >= 1
                pager.click()
                panel.locator("text=/page 2 of \\d+/").first.wait_for(timeout=30_000)
                _shot(page, tmp_path, f"{size}-fusion-page2")
                page.locator(".workbench-page-previous").click()
                panel.locator("text=/page 1 of \\d+/").first.wait_for(timeout=30_000)
            elif model == MODELS[1]:
                raise AssertionError(f"{model} should need more than one fusion page")

            for title, name in (("Per-layer latency", "latency"), ("Drift", "drift"),
                                ("Latency vs accuracy", "tradeoff")):
                panel = _tab(page, title)
                page.wait_for_timeout(300)  # plotly re-lays out after its tab is shown (an animation frame)
                assert _check_figures(page, panel, f"{size} {title}") >= 1
                _no_page_scroll(page)
                _shot(page, tmp_path, f"{size}-{name}", "explorer.png" if readme and name == "latency" else None)

            panel = _tab(page, "Summary")
            last = panel.locator(".workbench-table th").last
            last.wait_for(timeout=10_000)
            box = last.bounding_box()
            assert box["x"] + box["width"] <= width, f"{size}: the summary's last column is cut off: {box}"
            rows = panel.locator(".workbench-table tbody tr")
            assert rows.count() == 2  # FP32 and INT8, one row each
            _no_page_scroll(page)
            _shot(page, tmp_path, f"{size}-summary")

        # quick clicks FP16 -> INT8 -> FP32 -> FP16: a finished result's status never stays up while another
        # precision is selected (all cached, so each finishes fast and could race the next click)
        _tab(page, "Fusion")
        page.evaluate(RECORD_STATUS_JS)
        for name in ("FP16", "INT8", "FP32", "FP16"):
            page.locator(".widget-toggle-button", has_text=re.compile(f"^{name}$")).click()
        page.locator(".workbench-status", has_text=re.compile(r"^fp16.*median", re.IGNORECASE)).wait_for(
            timeout=120_000)
        page.wait_for_timeout(1000)  # anything still in flight arrives
        log = page.evaluate("window.statusLog")
        assert log[-1]["text"].lower().startswith("fp16") and log[-1]["selected"] == "FP16"
        for entry, following in zip(log, log[1:] + [None]):
            if "median" in entry["text"] and not entry["text"].lower().startswith(entry["selected"].lower()):
                shown_ms = (following["t"] if following else float("inf")) - entry["t"]
                assert shown_ms <= STALE_MS, f"{entry['text']!r} stayed {shown_ms:.0f} ms with {entry['selected']}"

        widget_errors = [e for e in console_errors if WIDGET_ERRORS.search(e)]
        assert not widget_errors, widget_errors
    finally:
        context.close()


@pytest.fixture(scope="module", params=MODELS)
def report_html(request, tmp_path_factory, cache) -> tuple[str, Path]:
    from workbench.cli import main

    out = tmp_path_factory.mktemp("report")
    path = out / "report.html"
    code = main(["report", request.param, "--precision", "fp32", "--precision", "int8", "--runs", "10", "--quiet",
                 "--cache-dir", str(cache), "--out", str(path)])
    assert code == 0 and path.is_file() and (out / "results.json").is_file()
    return request.param, path


def test_report_is_readable_and_self_contained_offline(report_html, pw, tmp_path):
    model, report_html = report_html
    (tmp_path / "shots").mkdir()
    _screenshot_dirs(tmp_path / "shots")
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
        headings = [h.strip() for h in page.locator("h2").all_inner_texts()]
        for section in REPORT_SECTIONS:
            assert any(h.startswith(section) for h in headings), f"section {section!r} missing from {headings}"
        assert not blocked, f"the report fetched from the network: {blocked}"
        for width, height in SIZES:
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(500)  # plotly's responsive re-layout follows the window resize
            body = page.locator("main")
            assert _check_figures(page, body, f"report {width}x{height}") >= 3
            _no_page_scroll(page)
            last = page.locator(".workbench-table").first.locator("th").last
            last.scroll_into_view_if_needed()
            box = last.bounding_box()
            assert box["x"] + box["width"] <= width, f"the summary's last column is cut off at {width}: {box}"
            fusion = page.locator(".fusion").first
            fusion.evaluate("e => e.scrollIntoView({block: 'start'})")
            first = fusion.evaluate(AFTER_FIRST_JS)
            assert first and 0 <= first["left"] and first["right"] <= width and first["top"] < height, first
            next_page = fusion.locator(".workbench-page-next")
            if next_page.count():
                next_page.click()
                fusion.locator("text=/page 2 of \\d+/").first.wait_for(state="visible", timeout=5_000)
                fusion.locator(".workbench-page-previous").click()
                fusion.locator("text=/page 1 of \\d+/").first.wait_for(state="visible", timeout=5_000)
            page.locator("#inside").evaluate("e => e.scrollIntoView({block: 'start'})")
            _shot(page, tmp_path, f"report-inside-{model}-{width}x{height}")
            page.evaluate("window.scrollTo(0, 0)")
            _shot(page, tmp_path, f"report-{model}-{width}x{height}",
                  "report.png" if width == SIZES[0][0] and model == MODELS[1] else None)
    finally:
        context.close()


def test_toggling_back_shows_the_live_figure_drawn_before(lab, pw, tmp_path):
    """FP32 -> INT8 -> FP32 -> INT8 on the per-layer latency tab: each toggle is seen drawn by the detection of
    benchmarks/bench_browser.py; toggling back shows the very plot drawn before (same element, live SVG, not
    plotly's static PNG snapshot, no redraw), at the window's current width even when it changed while hidden."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import bench_browser

    model = MODELS[0]
    (tmp_path / "shots").mkdir()
    context = _new_context(pw, tmp_path / "chromium")
    page, errors = _page_collecting_errors(context)
    try:
        bench_browser.open_explorer(page, f"{lab.url}/doc/tree/{model}.ipynb")
        for label in ("INT8", "FP32"):
            timing = bench_browser.toggle(page, label)
            assert not timing.get("failed"), f"no {label} figure seen drawn: {timing}"
            assert timing["status_ms"] <= timing["figure_ms"]
            if label == "INT8":  # mark the INT8 plot element to find it again
                page.evaluate("""() => [...window.workbenchPanel().querySelectorAll('.js-plotly-plot')]
                  .find(gd => getComputedStyle(gd).visibility !== 'hidden').workbenchMark = 'int8'""")
        page.set_viewport_size({"width": SIZES[1][0], "height": SIZES[1][1]})  # resized while INT8 is hidden
        page.wait_for_timeout(500)  # plotly's responsive re-layout follows the window resize
        timing = bench_browser.toggle(page, "INT8")
        assert not timing.get("failed"), timing
        assert timing["afterplot_ms"] is None  # shown again, not drawn again
        panel = page.locator(".workbench-explorer .widget-tab-contents > .lm-Widget:not(.lm-mod-hidden)").first
        shown = panel.evaluate("""p => [...p.querySelectorAll('.js-plotly-plot')]
          .filter(gd => getComputedStyle(gd).visibility !== 'hidden' && gd.getBoundingClientRect().height > 0)
          .map(gd => ({mark: gd.workbenchMark || null, picture: !!gd.querySelector('.plot-img[src]')
                       && gd.querySelector('.plot-img').style.display !== 'none',
                       title: gd._fullLayout.title.text}))""")
        assert shown == [{"mark": "int8", "picture": False, "title": "Per-layer latency comparison"}], shown
        assert _check_figures(page, panel, "INT8 shown again at 1024x768") >= 1  # it followed the resize
        _no_page_scroll(page)
        _shot(page, tmp_path, f"{model}-toggled-back-{SIZES[1][0]}x{SIZES[1][1]}")
        page.set_viewport_size({"width": SIZES[0][0], "height": SIZES[0][1]})
        page.wait_for_timeout(500)
        assert _check_figures(page, panel, "INT8 shown again at 1400x1000") >= 1
        _shot(page, tmp_path, f"{model}-toggled-back-{SIZES[0][0]}x{SIZES[0][1]}")
        assert not [e for e in errors if WIDGET_ERRORS.search(e) or "Resize must be passed" in e], errors
    finally:
        context.close()


def _show_explorer(page, url: str) -> None:
    """Open an EXPLORER_CODE notebook, run its two cells, wait for the first result and hide the code."""
    page.goto(url, timeout=60_000)
    page.get_by_text(re.compile(r"\| Idle$")).first.wait_for(timeout=60_000)
    _run_cell(page, 0)
    page.get_by_text("kernel ready").first.wait_for(timeout=60_000)
    _run_cell(page, 1)
    page.locator(".workbench-status", has_text="median").wait_for(timeout=120_000)
    page.locator(".jp-InputCollapser").nth(1).click()
    page.locator(".jp-InputCollapser").first.click()


def test_dynamic_int8_for_a_transformer_in_jupyterlab(lab, pw, cache, tmp_path):
    """MiniLM: INT8 with method "dynamic" (run-time ranges) is offered, greys out the calibration set and Q/DQ style
    it does not use, and the summary shows it beside calibrated INT8, at 1400x1000 and 1024x768."""
    from workbench.ui import Explorer

    model = "minilm-l6"
    explorer = Explorer(model, runs=10, cache_dir=cache, background=False)  # the clicked configurations, cached
    for precision, method in (("fp32", None), ("int8", "minmax"), ("int8", "dynamic")):
        explorer.precision.value = precision
        explorer.wait()
        if method:
            explorer.method.value = method
        assert explorer.wait() is not None, explorer.error
    _write_notebook(lab.home / "root" / f"{model}.ipynb", "print('kernel ready')",
                    EXPLORER_CODE.format(model=model, cache=str(cache)))
    (tmp_path / "shots").mkdir()
    context = _new_context(pw, tmp_path / "chromium")
    page, errors = _page_collecting_errors(context)
    try:
        _show_explorer(page, f"{lab.url}/doc/tree/{model}.ipynb")
        selects = page.locator(".workbench-explorer .widget-dropdown select")
        calibration, method, style = selects.nth(3), selects.nth(4), selects.nth(5)
        page.locator(".widget-toggle-button", has_text=re.compile(r"^INT8$")).click()
        page.locator(".workbench-status", has_text=re.compile(r"^int8 \(minmax.*median", re.IGNORECASE)).wait_for(
            timeout=120_000)
        assert "dynamic" in method.locator("option").all_inner_texts()
        assert calibration.is_enabled() and style.is_enabled()
        method.select_option("dynamic")
        page.locator(".workbench-status", has_text=re.compile(r"^int8 \(dynamic.*median", re.IGNORECASE)).wait_for(
            timeout=120_000)
        assert calibration.is_disabled() and style.is_disabled() and method.is_enabled()
        assert "mostly FP32" not in page.locator(".workbench-status").inner_text()  # its MatMuls run in INT8
        for width, height in SIZES:
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(300)
            panel = _tab(page, "Per-layer latency")
            page.wait_for_timeout(300)
            assert _check_figures(page, panel, f"{model} dynamic {width}x{height}") >= 1
            _no_page_scroll(page)
            _shot(page, tmp_path, f"{model}-dynamic-{width}x{height}-latency")
            panel = _tab(page, "Summary")
            rows = panel.locator(".workbench-table tbody tr")
            rows.first.wait_for(timeout=10_000)
            texts = rows.all_inner_texts()
            assert len(texts) == 3 and any("dynamic" in t for t in texts) and any("minmax" in t for t in texts), texts
            last = panel.locator(".workbench-table th").last.bounding_box()
            assert last["x"] + last["width"] <= width, f"{width}x{height}: the summary's last column is cut off"
            _no_page_scroll(page)
            _shot(page, tmp_path, f"{model}-dynamic-{width}x{height}-summary")
        assert not [e for e in errors if WIDGET_ERRORS.search(e)], errors
    finally:
        context.close()


def test_mixed_precision_search_in_jupyterlab(lab, pw, tmp_path):
    """The Mixed precision tab: "Find the fastest within budget" runs the search, says what it chose with the speed-up
    re-timed in turns with FP32, and draws the Pareto view across the tab, at 1400x1000 and 1024x768."""
    model = MODELS[0]
    (tmp_path / "shots").mkdir()
    context = _new_context(pw, tmp_path / "chromium")
    page, errors = _page_collecting_errors(context)
    try:
        _show_explorer(page, f"{lab.url}/doc/tree/{model}.ipynb")
        page.locator(".widget-toggle-button", has_text=re.compile(r"^INT8$")).click()
        page.locator(".workbench-status", has_text=re.compile(r"^int8.*median", re.IGNORECASE)).wait_for(
            timeout=120_000)
        panel = _tab(page, "Mixed precision")
        panel.get_by_role("button", name="Find the fastest within budget").click()
        summary = panel.get_by_text(re.compile(r"configurations measured"))
        summary.wait_for(timeout=300_000)
        text = summary.inner_text()
        assert re.search(r"ms median re-timed in turns with FP32 \([\d.]+x FP32\)|FP32, [\d.]+ ms median", text), text
        for width, height in SIZES:
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(500)
            panel.locator(".js-plotly-plot").first.evaluate("e => e.scrollIntoView({block: 'center'})")
            _shot(page, tmp_path, f"{model}-mixed-search-{width}x{height}")
            assert _check_figures(page, panel, f"Mixed precision {width}x{height}") >= 1
            _no_page_scroll(page)
        assert not [e for e in errors if WIDGET_ERRORS.search(e)], errors
    finally:
        context.close()


def test_cost_panel_figure_fills_its_output_in_jupyterlab(lab, pw, cache, tmp_path):
    """Notebook 06's serving-cost panel: its figure spans the output at 1400x1000 and, after a resize, 1024x768."""
    code = ("from workbench import Workbench\nfrom workbench.ui.scenarios import CostPanel\n"
            f"wb = Workbench('digits-cnn', cache_dir={str(cache)!r}, progress=False)\n"
            "panel = CostPanel([wb.run('fp32', runs=5), wb.run('int8', runs=5)])\npanel")
    _write_notebook(lab.home / "root" / "cost.ipynb", code)
    (tmp_path / "shots").mkdir()
    context = _new_context(pw, tmp_path / "chromium")
    page, errors = _page_collecting_errors(context)
    try:
        page.goto(f"{lab.url}/doc/tree/cost.ipynb", timeout=60_000)
        page.get_by_text(re.compile(r"\| Idle$")).first.wait_for(timeout=60_000)
        _run_cell(page, 0)
        output = page.locator(".jp-Cell").first.locator(".jp-OutputArea-output").first
        output.locator(".js-plotly-plot").first.wait_for(timeout=180_000)
        page.locator(".jp-InputCollapser").first.click()
        for width, height in SIZES:
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(500)
            output.locator(".js-plotly-plot").first.evaluate("e => e.scrollIntoView({block: 'center'})")
            _shot(page, tmp_path, f"cost-panel-{width}x{height}")
            assert _check_figures(page, output, f"cost panel {width}x{height}") == 1
            _no_page_scroll(page)
        assert not [e for e in errors if WIDGET_ERRORS.search(e)], errors
    finally:
        context.close()

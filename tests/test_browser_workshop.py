"""What a class sees: JupyterLab with its file-browser sidebar open, at 1024x768 and 1400x1000, for every tab of the
explorer, the outputs of notebooks 01, 02, 04 and 06, the Voila app page and the HTML report.

Every view is checked the same way (`LAYOUT_JS`): nothing sticks out of its panel unless it scrolls inside it, every
plotly figure keeps a plotting area of at least 300 px, no two texts of a figure overlap, summary rows stay at most
60 px tall, tab titles are whole; the fusion view's "After fusion" graph is reachable on every page. The app page and
the report log no warning or error and request nothing that fails. Screenshots go to the test's folder (and to
WORKBENCH_SHOTS_KEEP when set, to look at them).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import test_browser as tb
from test_browser import pw  # noqa: F401  (the module's Playwright fixture)

pytestmark = [pytest.mark.slow, pytest.mark.browser]

SIZES = ((1024, 768), (1400, 1000))
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
TABS = ("Fusion", "Per-layer latency", "Drift", "Latency vs accuracy", "Summary", "Mixed precision")
MIN_PLOT_PX = 300
MAX_ROW_PX = 60

# Problems of one view (`root`): elements sticking out of it (unless a scroller inside it clips them), figures whose
# plotting area is narrower than `minPlot`, overlapping texts in a figure, summary rows taller than `maxRow`, table
# text running over its cell into the next column.
LAYOUT_JS = """([root, minPlot, maxRow]) => {
  const R = root.getBoundingClientRect();
  const out = {overflow: [], plots: [], overlaps: [], rows: [], cells: []};
  const shown = e => { for (let p = e; p && p !== root; p = p.parentElement) {
      const s = getComputedStyle(p); if (s.display === 'none' || s.visibility === 'hidden') return false; }
    return true; };
  const clipped = e => { for (let p = e.parentElement; p && p !== root.parentElement; p = p.parentElement) {
      if (/(auto|scroll|hidden|clip)/.test(getComputedStyle(p).overflowX)) {
        const q = p.getBoundingClientRect(); if (q.left >= R.left - 3 && q.right <= R.right + 3) return true; } }
    return false; };
  if (R.right > document.documentElement.clientWidth + 1) out.overflow.push(['(the panel itself)', R.left, R.right]);
  // (3 px: ipywidgets' own margin around a child of a box)
  for (const e of root.querySelectorAll('*')) {
    const r = e.getBoundingClientRect();
    if (r.width < 1 || r.height < 1 || (r.left >= R.left - 3 && r.right <= R.right + 3)) continue;
    if (!shown(e) || clipped(e)) continue;
    out.overflow.push([(e.className && e.className.baseVal !== undefined ? e.className.baseVal : e.className)
                       || e.tagName, Math.round(r.left - R.left), Math.round(r.right - R.right)]);
  }
  for (const gd of root.querySelectorAll('.js-plotly-plot')) {
    if (!shown(gd) || gd.getBoundingClientRect().height < 1) continue;
    const drag = [...gd.querySelectorAll('.nsewdrag')].map(d => d.getBoundingClientRect());
    if (drag.length) {
      const width = Math.max(...drag.map(d => d.right)) - Math.min(...drag.map(d => d.left));
      if (width < minPlot) out.plots.push([gd._fullLayout && gd._fullLayout.title.text, Math.round(width)]);
    }
    const boxes = [];
    for (const t of gd.querySelectorAll('text')) {
      const s = getComputedStyle(t);
      if (!t.textContent.trim() || s.visibility === 'hidden' || s.display === 'none' || s.opacity === '0') continue;
      const r = t.getBoundingClientRect();
      if (r.width >= 1 && r.height >= 1) boxes.push([t.textContent.slice(0, 40), r]);
    }
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i][1], b = boxes[j][1];
      if (Math.min(a.right, b.right) - Math.max(a.left, b.left) > 2 && Math.min(a.bottom, b.bottom) -
          Math.max(a.top, b.top) > 2) out.overlaps.push([boxes[i][0], boxes[j][0]]);
    }
  }
  // table cells whose text runs over their border into the next column (long names, headers)
  for (const cell of root.querySelectorAll('.workbench-table th, .workbench-table td')) {
    if (shown(cell) && cell.scrollWidth > cell.clientWidth + 1) out.cells.push([cell.innerText.slice(0, 40),
                                                                                cell.scrollWidth - cell.clientWidth]);
  }
  for (const tr of root.querySelectorAll('.workbench-summary tbody tr')) {
    const h = tr.getBoundingClientRect().height;
    if (shown(tr) && h > maxRow) out.rows.push([tr.innerText.slice(0, 50), Math.round(h)]);
  }
  return out;
}"""
# Tab titles cut short ("Latency vs acc…") or clipped.
TRUNCATED_TABS_JS = """(root) => [...root.querySelectorAll('.lm-TabBar-tab')].filter(t => {
  const label = t.querySelector('.lm-TabBar-tabLabel') || t;
  return label.scrollWidth > label.clientWidth + 1 || label.scrollHeight > label.clientHeight + 1;
}).map(t => t.innerText)"""
# Bring the first engine layer of the "After fusion" column (of the page on display) on screen as a person would:
# the column into view, then the column's own scrollbars; where that layer then is, with the column's visible box.
AFTER_REACHABLE_JS = """(root) => {
  const page = [...root.querySelectorAll('.workbench-fusion-view')].find(v => v.offsetParent !== null);
  const column = page && page.querySelector('.workbench-fusion-after');
  if (!column) return null;
  column.scrollIntoView({block: 'start', inline: 'nearest'});
  const node = [...column.querySelectorAll('g.node')].find(g => /^a\\d+$/.test(g.querySelector('title').textContent));
  node.scrollIntoView({block: 'nearest', inline: 'nearest'});
  const r = node.getBoundingClientRect(), c = column.getBoundingClientRect();
  const inside = r.left >= c.left - 1 && r.right <= c.right + 1 && r.top >= c.top - 1 && r.bottom <= c.bottom + 1;
  return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, inside,
          width: document.documentElement.clientWidth, height: document.documentElement.clientHeight};
}"""
DRIFT_X_JS = """(root) => [...root.querySelectorAll('.js-plotly-plot')].filter(gd => gd.offsetParent !== null &&
  getComputedStyle(gd).visibility !== 'hidden').flatMap(gd => gd.data.map(t => ({name: t.name, x: [...t.x]})))"""


def _layout_problems(root, where: str) -> list[str]:
    """What is wrong with the view `root` (empty when it holds); collected so that one run reports every view."""
    found = root.evaluate(f"(e) => ({LAYOUT_JS})([e, {MIN_PLOT_PX}, {MAX_ROW_PX}])")
    labels = {"overflow": "sticks out of its panel", "plots": f"plotting area under {MIN_PLOT_PX} px",
              "overlaps": "overlapping figure texts", "rows": f"summary rows over {MAX_ROW_PX} px",
              "cells": "table text running over its cell"}
    return [f"{where}: {text}: {found[key][:6]}" for key, text in labels.items() if found[key]]


def _open_with_sidebar(page, url: str) -> None:
    """Open a notebook in the full JupyterLab interface (a fresh workspace: no other notebook open) with the file
    browser shown in the left sidebar."""
    page.goto(url + "?reset", timeout=120_000)
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=120_000)
    browser = page.locator("#filebrowser")
    if not browser.is_visible():
        page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab[data-id='filebrowser']").click()
    browser.wait_for(state="visible", timeout=30_000)
    assert browser.bounding_box()["width"] >= 200, "the file browser sidebar is not open"
    page.get_by_text(re.compile(r"\| Idle$")).first.wait_for(timeout=120_000)


def _size(page, width: int, height: int) -> None:
    page.set_viewport_size({"width": width, "height": height})
    page.wait_for_timeout(600)  # plotly's responsive re-layout follows the window resize


def _shot(page, tmp_path: Path, name: str) -> None:
    tb._shot(page, tmp_path, name)


@pytest.fixture(scope="module")
def class_cache(tmp_path_factory) -> Path:
    """The cache of the explorers and notebooks (WORKBENCH_BROWSER_CACHE reuses one between runs)."""
    return Path(os.environ.get("WORKBENCH_BROWSER_CACHE") or tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def class_lab(tmp_path_factory, class_cache):
    """JupyterLab serving the two explorer notebooks and copies of notebooks 01, 02, 04 and 06."""
    home = tmp_path_factory.mktemp("classlab")
    root = home / "root"
    root.mkdir()
    for model in tb.MODELS:
        tb._write_notebook(root / f"{model}.ipynb", tb.EXPLORER_CODE.format(model=model, cache=str(class_cache)))
    for name in NOTEBOOK_OUTPUTS:
        shutil.copy(NOTEBOOKS / name, root / name)
    previous = os.environ.get("WORKBENCH_CACHE")
    os.environ["WORKBENCH_CACHE"] = str(class_cache)  # the notebooks' kernels compute into the same cache
    try:
        with tb.running_lab(home) as server:
            # every cell drawn, not only those on screen (JupyterLab's windowing), so every output can be checked
            tracker = home / "config" / "lab" / "user-settings" / "@jupyterlab" / "notebook-extension" / \
                "tracker.jupyterlab-settings"
            tracker.write_text(json.dumps({**json.loads(tracker.read_text()), "windowingMode": "none"}))
            yield server
    finally:
        if previous is None:
            os.environ.pop("WORKBENCH_CACHE")
        else:
            os.environ["WORKBENCH_CACHE"] = previous


NOTEBOOK_OUTPUTS = ("01_quickstart.ipynb", "02_layer_fusion.ipynb", "04_profiling_and_drift.ipynb",
                    "06_deployment_scenarios.ipynb")


@pytest.mark.parametrize("model", tb.MODELS)
def test_every_explorer_tab_holds_at_workshop_sizes(class_lab, pw, tmp_path, model):
    """FP32, then INT8, then FP16 (a class's natural order), then every tab at 1024x768 with the sidebar open and
    at 1400x1000: whole tab titles, nothing out of its panel, plots of at least 300 px, no overlapping texts,
    summary rows of at most 60 px, every fusion page's "After fusion" graph reachable, drift lines left to right."""
    (tmp_path / "shots").mkdir()
    context = tb._new_context(pw, tmp_path / "chromium", SIZES[0])
    page, errors = tb._page_collecting_errors(context)
    try:
        _open_with_sidebar(page, f"{class_lab.url}/lab/tree/{model}.ipynb")
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        page.locator(".workbench-status", has_text=re.compile(r"^fp32.*median", re.IGNORECASE)).wait_for(
            timeout=300_000)
        for name in ("INT8", "FP16"):
            page.locator(".widget-toggle-button", has_text=re.compile(f"^{name}$")).click()
            page.locator(".workbench-status", has_text=re.compile(f"^{name}.*median", re.IGNORECASE)).wait_for(
                timeout=600_000)
        explorer = page.locator(".workbench-explorer").first
        problems: list[str] = []
        for width, height in SIZES:
            _size(page, width, height)
            size = f"{model}-{width}x{height}"
            truncated = explorer.evaluate(TRUNCATED_TABS_JS)
            if truncated:
                problems.append(f"{size}: tab titles cut short: {truncated}")
            for title in TABS:
                panel = tb._tab(page, title)
                page.wait_for_timeout(400)
                if title == "Mixed precision":
                    panel.get_by_text(re.compile("Why is it not faster")).first.wait_for(timeout=120_000)
                where = f"{size} {title}"
                panel.evaluate("e => e.scrollIntoView({block: 'start'})")
                problems += _layout_problems(panel, where) + _layout_problems(explorer, f"{where} (explorer)")
                name = title.lower().replace(" ", "-")
                _shot(page, tmp_path, f"{size}-{name}")
                if title == "Fusion":
                    problems += _fusion_page_problems(page, panel, tmp_path, size)
                if title == "Drift":
                    problems += [f"{where}: {trace['name']} zig-zags" for trace in panel.evaluate(DRIFT_X_JS)
                                 if trace["x"] != sorted(trace["x"])]
        assert not problems, "\n".join(problems)
        assert not [e for e in errors if tb.WIDGET_ERRORS.search(e)], errors
    finally:
        context.close()


def _fusion_page_problems(page, panel, tmp_path: Path, size: str) -> list[str]:
    """Every fusion page: its layout holds and its first "After fusion" layer can be brought on screen."""
    problems, pages = [], 1
    label = panel.get_by_text(re.compile(r"page 1 of (\d+)")).first
    match = re.search(r"page 1 of (\d+)", label.inner_text()) if label.count() else None
    if match:
        pages = int(match.group(1))
    for number in range(1, pages + 1):
        if number > 1:
            page.locator(".workbench-page-next").first.click()
            panel.get_by_text(re.compile(f"page {number} of {pages}")).first.wait_for(timeout=60_000)
        where = f"{size} fusion page {number}"
        problems += _layout_problems(panel, where)
        box = panel.evaluate(AFTER_REACHABLE_JS)
        if box is None:
            problems.append(f"{where}: no 'After fusion' column")
        elif not (box["inside"] and 0 <= box["left"] and box["right"] <= box["width"]
                  and 0 <= box["top"] < box["height"]):
            problems.append(f"{where}: the first 'After fusion' layer cannot be brought on screen: {box}")
        _shot(page, tmp_path, f"{size}-fusion-page{number}-after")
    for _ in range(pages - 1):
        page.locator(".workbench-page-previous").first.click()
    panel.evaluate("e => e.scrollIntoView({block: 'start'})")
    return problems


@pytest.mark.parametrize("name", NOTEBOOK_OUTPUTS)
def test_notebook_outputs_hold_at_workshop_sizes(class_lab, pw, tmp_path, name):
    """Every output of notebooks 01, 02, 04 and 06 run in JupyterLab with the sidebar open: nothing out of its
    output area, plots of at least 300 px, no overlapping texts, at 1024x768 and 1400x1000."""
    (tmp_path / "shots").mkdir()
    context = tb._new_context(pw, tmp_path / "chromium", SIZES[0])
    page, errors = tb._page_collecting_errors(context)
    try:
        _open_with_sidebar(page, f"{class_lab.url}/lab/tree/{name}")
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        cells = page.locator(".jp-Notebook .jp-CodeCell")
        last = cells.last.locator(".jp-InputPrompt")
        page.wait_for_function(r"""(e) => /\[\d+\]/.test(e.innerText)""", arg=last.element_handle(),
                               timeout=900_000)
        page.wait_for_timeout(1500)  # the last widgets and figures draw
        assert not page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'] "
                                ":text('Traceback')").count()
        stem, problems = name.split("_")[0], []
        for width, height in SIZES:
            _size(page, width, height)
            outputs = page.locator(".jp-Notebook .jp-OutputArea-output")
            for i in range(outputs.count()):
                output = outputs.nth(i)
                if not output.evaluate("e => (e.scrollIntoView({block: 'start'}), e.offsetParent !== null)"):
                    continue  # an output kept hidden (e.g. an explorer's figure of another configuration)
                problems += _layout_problems(output, f"notebook {stem} output {i} at {width}x{height}")
                if output.locator(".js-plotly-plot, .workbench-table, .workbench-fusion-view, "
                                  ".widget-box").count():
                    _shot(page, tmp_path, f"nb{stem}-{width}x{height}-output{i}")
        assert not problems, "\n".join(problems)
        assert not [e for e in errors if tb.WIDGET_ERRORS.search(e)], errors
    finally:
        context.close()


def _quiet_page(page) -> tuple[list, list]:
    """Lists that collect the page's console warnings/errors and its failed or non-local requests."""
    messages, requests = [], []
    page.on("console", lambda m: messages.append(f"{m.type}: {m.text[:300]}") if m.type in ("warning", "error")
            else None)
    page.on("pageerror", lambda exc: messages.append(f"pageerror: {exc}"))
    page.on("requestfailed", lambda r: requests.append(f"failed: {r.url}"))
    page.on("request", lambda r: requests.append(f"remote: {r.url}")
            if not re.match(r"^(https?://127\.0\.0\.1[:/]|file:|data:|blob:)", r.url) else None)
    return messages, requests


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """`python -m workbench app digits-cnn` on a free port of 127.0.0.1, stopped (nothing left) after."""
    home = tmp_path_factory.mktemp("app")
    port = tb._free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / "config"), JUPYTER_DATA_DIR=str(home / "data"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), IPYTHONDIR=str(home / "ipython"), PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "workbench", "app", "digits-cnn", "--runs", "3", "--cache",
                                str(home / "cache"), "--port", str(port)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env)
    log: list[str] = []
    ready = threading.Event()

    def read() -> None:
        for line in process.stdout:
            log.append(line)
            if f"127.0.0.1:{port}/" in line and "running" in "".join(log[-3:]).lower():
                ready.set()
        ready.set()
    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(120) or process.poll() is not None:
            raise RuntimeError("the app did not start:\n" + "".join(log[-30:]))
        yield f"http://127.0.0.1:{port}/"
    finally:
        children = tb.psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        _gone, alive = tb.psutil.wait_procs(children, timeout=20)
        for child in alive:
            child.kill()
        assert not alive, f"processes left after the app stopped: {[c.pid for c in alive]}"


def test_app_page_is_offline_quiet_and_holds(app_url, pw, tmp_path):
    """The Voila app page: no request leaves 127.0.0.1 (no CDN), none fails, no console warning or error; its
    layout holds at both sizes."""
    (tmp_path / "shots").mkdir()
    context = tb._new_context(pw, tmp_path / "chromium", SIZES[1])
    page = context.pages[0] if context.pages else context.new_page()
    messages, requests = _quiet_page(page)
    problems: list[str] = []
    try:
        page.goto(app_url, timeout=180_000)
        page.locator(".workbench-status", has_text="median").wait_for(timeout=300_000)
        page.locator(".workbench-explorer .js-plotly-plot, .workbench-fusion-view").first.wait_for(timeout=60_000)
        for width, height in SIZES:
            _size(page, width, height)
            explorer = page.locator(".workbench-explorer").first
            for title in TABS[:5]:
                panel = tb._tab(page, title)
                page.wait_for_timeout(400)
                problems += _layout_problems(panel, f"app {width}x{height} {title}")
                problems += _layout_problems(explorer, f"app {width}x{height} {title} (explorer)")
            tb._tab(page, "Fusion")
            _shot(page, tmp_path, f"app-{width}x{height}")
        assert not problems, "\n".join(problems)
        assert not requests, requests
        assert not messages, messages
    finally:
        context.close()


def test_report_is_quiet_in_the_console(class_cache, pw, tmp_path):
    """The HTML report of FP32 and INT8: no console warning or error, no request at all beyond the file."""
    from workbench.cli import main

    report = tmp_path / "report.html"
    assert main(["report", "fashion-cnn", "--precision", "fp32", "--precision", "int8", "--runs", "10", "--quiet",
                 "--cache-dir", str(class_cache), "--out", str(report)]) == 0
    (tmp_path / "shots").mkdir()
    context = tb._new_context(pw, tmp_path / "chromium", SIZES[0])
    page = context.pages[0] if context.pages else context.new_page()
    messages, requests = _quiet_page(page)
    try:
        page.goto(report.as_uri(), timeout=60_000)
        page.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=60_000)
        problems = []
        for width, height in SIZES:
            _size(page, width, height)
            problems += _layout_problems(page.locator("main"), f"report {width}x{height}")
            _shot(page, tmp_path, f"report-{width}x{height}")
        assert not problems, "\n".join(problems)
        assert not requests, requests
        assert not messages, messages
    finally:
        context.close()

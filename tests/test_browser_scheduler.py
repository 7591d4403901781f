"""Scheduling as a person feels it, in JupyterLab in headless Chromium (efficientnet-lite0-fashion, 1400x1000):

- while an uncached INT8 setting computes, clicking the cached FP32 shows FP32's figure and status at once (<= 0.5 s
  median over rounds), and progress shows from the first second of each computation;
- quick clicks FP16, INT8, FP32, FP16 100 ms apart never paint a finished status of a selection not selected;
- the Mixed precision search shows one progress over the whole search and stops within 2 s of its Cancel button.

Times are taken inside the page (click to painted state, polled every animation frame) and written to
$WORKBENCH_SCHEDULER_TIMES (JSON) when set: benchmarks/scheduler_browser.json comes from this test.
Screenshots at 1400x1000 and 1024x768 (WORKBENCH_SHOTS_KEEP=folder keeps them).
"""
from __future__ import annotations

import json
import os
import random
import re
import socket
import statistics
from pathlib import Path

import pytest

from tests import test_browser as browser
from tests.test_browser import (WIDGET_ERRORS, _new_context, _page_collecting_errors, _run_cell, _shot, _tab,
                                _write_notebook, running_lab)

MODEL = "efficientnet-lite0-fashion"
CACHED_ANSWER_S = 0.5  # issue 25: a cached selection shows this soon while another computes
PROGRESS_S = 1.0  # issue 26: progress from the first second of every long step
CANCEL_S = 2.0  # issue 25: the search stops this soon after its Cancel button
ROUNDS = 5
CODE = """\
from workbench.ui import Explorer
explorer = Explorer({model!r}, runs=10, cache_dir={cache!r})
explorer"""

# Click `selector` (the n-th match), then poll every animation frame until `done()` holds; ms from click to then.
CLICK_UNTIL_JS = """async ([selector, index, done, limitMs]) => {
  const condition = new Function('return (' + done + ')();');
  const t0 = performance.now();
  document.querySelectorAll(selector)[index].click();
  return await new Promise(resolve => {
    const poll = () => {
      const t = performance.now() - t0;
      if (condition()) resolve(t); else if (t > limitMs) resolve(-1); else requestAnimationFrame(poll);
    };
    poll();
  });
}"""
JOB_STEP = r"/^step \d+ of \d+: (precision|build|latency|accuracy|profile|drift)/"  # a step of the job itself
ANY_STEP = r"/^step \d+ of \d+: /"
STATUS_JS = "document.querySelector('.workbench-status').innerText.trim()"  # as painted: hidden text is left out
VISIBLE_LATENCY_TITLE_JS = """(() => {
  for (const plot of document.querySelectorAll('.workbench-views .js-plotly-plot')) {
    const box = plot.getBoundingClientRect();
    if (box.height > 0 && getComputedStyle(plot.closest('.widget-output')).visibility === 'visible') {
      const title = plot.querySelector('.gtitle');
      return title ? title.textContent : '';
    }
  }
  return null;
})()"""
PROGRESS_TEXT_JS = """(() => {
  const bar = document.querySelector('.workbench-progress');
  return bar && getComputedStyle(bar).visibility === 'visible' ? bar.innerText.trim() : '';
})()"""
# Every animation frame: the status as painted and the precision button selected then.
RECORD_FRAMES_JS = """() => {
  window.frames_seen = [];
  const record = () => {
    const active = document.querySelector('.workbench-precision .widget-toggle-button.mod-active');
    window.frames_seen.push({t: performance.now(), text: %s, selected: active && active.innerText.trim()});
    if (!window.stop_recording) requestAnimationFrame(record);
  };
  window.stop_recording = false;
  record();
}""" % STATUS_JS
# Clicks FP16, INT8, FP32, FP16 100 ms apart (in the page: no round trips between them).
QUICK_CLICKS_JS = """async () => {
  const click = label => [...document.querySelectorAll('.workbench-precision .widget-toggle-button')]
      .find(b => b.innerText.trim() === label).click();
  for (const label of ['FP16', 'INT8', 'FP32', 'FP16']) {
    click(label);
    await new Promise(resolve => setTimeout(resolve, 100));
  }
}"""


def _port() -> int:
    """A free port of our own in 20000-30000 (other engineers' servers run on this machine too)."""
    for _ in range(50):
        port = random.randint(20000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-30000")


@pytest.fixture(scope="module")
def pw():
    from playwright import sync_api

    with sync_api.sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """FP32, FP16 and INT8 (minmax) of the model computed with the notebook's settings; INT8 percentile is not."""
    from workbench.ui import Explorer

    folder = Path(os.environ.get("WORKBENCH_BROWSER_CACHE") or tmp_path_factory.mktemp("cache"))
    explorer = Explorer(MODEL, runs=10, cache_dir=folder, background=False)
    for precision in ("fp32", "fp16", "int8"):
        explorer.precision.value = precision
        assert explorer.wait() is not None, explorer.error
    explorer.scheduler.close()
    return folder


@pytest.fixture(scope="module")
def lab(tmp_path_factory, cache):
    home = tmp_path_factory.mktemp("jupyterlab")
    (home / "root").mkdir()
    _write_notebook(home / "root" / "explorer.ipynb", "print('kernel ready')", CODE.format(model=MODEL,
                                                                                         cache=str(cache)))
    original = browser._free_port
    browser._free_port = _port
    try:
        with running_lab(home) as server:
            yield server
    finally:
        browser._free_port = original


@pytest.fixture(scope="module")
def times() -> dict:
    measured: dict = {}
    yield measured
    if os.environ.get("WORKBENCH_SCHEDULER_TIMES"):
        Path(os.environ["WORKBENCH_SCHEDULER_TIMES"]).write_text(json.dumps(measured, indent=2))


def _open(page, url: str) -> None:
    page.goto(url, timeout=60_000)
    page.get_by_text(re.compile(r"\| Idle$")).first.wait_for(timeout=60_000)
    _run_cell(page, 0)
    page.get_by_text("kernel ready").first.wait_for(timeout=60_000)
    _run_cell(page, 1)
    page.locator(".workbench-status", has_text="median").wait_for(timeout=180_000)
    page.locator(".jp-InputCollapser").nth(1).click()
    page.locator(".jp-InputCollapser").first.click()


def _button(label: str) -> tuple[str, int]:
    return f".workbench-precision .widget-toggle-button[data-value='{label}']", 0


def _click_until(page, target: tuple[str, int], done: str, limit_ms: float = 120_000) -> float:
    elapsed = page.evaluate(CLICK_UNTIL_JS, [target[0], target[1], done, limit_ms])
    assert elapsed >= 0, f"not reached within {limit_ms / 1000:.0f} s: {done}"
    return elapsed / 1000


def _status(precision: str) -> str:
    return f"() => /^{precision}.*median/i.test({STATUS_JS})"


def test_a_cached_selection_answers_at_once_while_another_computes(lab, pw, tmp_path, times):
    (tmp_path / "shots").mkdir()
    context = _new_context(pw, tmp_path / "chromium")
    page, errors = _page_collecting_errors(context)
    try:
        _open(page, f"{lab.url}/doc/tree/explorer.ipynb")
        _tab(page, "Per-layer latency")
        _click_until(page, _button("INT8"), _status("int8"))  # cached: minmax
        method = page.locator(".workbench-explorer .widget-dropdown select").nth(4)
        assert method.input_value() == "minmax"
        method.select_option("percentile")  # not cached: computes (calibration first)
        page.wait_for_function(f"() => {JOB_STEP}.test({PROGRESS_TEXT_JS})", timeout=int(PROGRESS_S * 1000))
        answers, first_progress, job_steps = [], [], []
        for round_ in range(ROUNDS):
            page.wait_for_timeout(1500)  # well into the computation (not a test wait: the worker is busy)
            assert re.search(r"^computing int8 \(percentile", page.evaluate(STATUS_JS), re.IGNORECASE), \
                page.evaluate(STATUS_JS)
            if round_ == 0:
                _shot(page, tmp_path, "computing-1400x1000")
            fp32_shown = (f"() => ({_status('fp32')})() && "
                          f"/^Per-layer latency: fp32/.test({VISIBLE_LATENCY_TITLE_JS} || '')")
            answers.append(_click_until(page, _button("FP32"), fp32_shown, limit_ms=60_000))
            if round_ == 0:
                _shot(page, tmp_path, "fp32-while-int8-was-computing-1400x1000")
            clicked = page.evaluate("performance.now()") / 1000
            # INT8 percentile again: still not cached (it was superseded, nothing was stored), so it computes anew.
            # Progress shows at once ("stopping the previous selection" until it reaches its next check),
            # then the job's own first step.
            first_progress.append(_click_until(page, _button("INT8"), f"() => {ANY_STEP}.test({PROGRESS_TEXT_JS})",
                                               limit_ms=30_000))
            page.wait_for_function(f"() => {JOB_STEP}.test({PROGRESS_TEXT_JS})", timeout=30_000)
            job_steps.append(page.evaluate("performance.now()") / 1000)
            job_steps[-1] -= clicked
        times["cached_answer_while_computing_s"] = answers
        times["progress_after_click_s"] = first_progress
        times["job_step_after_click_s"] = job_steps
        assert statistics.median(answers) <= CACHED_ANSWER_S, answers
        assert max(first_progress) <= PROGRESS_S, first_progress
        # the job's own first step follows once the superseded one has stopped (recorded for docs/benchmarks.md:
        # it includes the piece of work the superseded job was in, e.g. ONNX Runtime building a session)
        # the superseded INT8 never shows up later under the FP32 selection
        _click_until(page, _button("FP32"), _status("fp32"))
        page.wait_for_timeout(2000)
        assert re.match(r"^fp32.*median", page.evaluate(STATUS_JS), re.IGNORECASE)
        assert page.evaluate(PROGRESS_TEXT_JS) == ""  # its progress bar went with it
        page.set_viewport_size({"width": 1024, "height": 768})
        _click_until(page, _button("INT8"), f"() => {ANY_STEP}.test({PROGRESS_TEXT_JS})")  # percentile: computes
        method.select_option("minmax")  # cached: shown at once, the percentile job is superseded
        page.wait_for_function(f"() => ({_status('int8')})()", timeout=60_000)
        page.locator(".workbench-status").scroll_into_view_if_needed()
        _shot(page, tmp_path, "int8-1024x768")
        assert not [e for e in errors if WIDGET_ERRORS.search(e)], errors
    finally:
        context.close()


def test_quick_clicks_never_paint_a_superseded_status(lab, pw, tmp_path, times):
    (tmp_path / "shots").mkdir()
    context = _new_context(pw, tmp_path / "chromium")
    page, errors = _page_collecting_errors(context)
    try:
        _open(page, f"{lab.url}/doc/tree/explorer.ipynb")
        stale_frames = 0
        for attempt in range(3):
            page.evaluate(RECORD_FRAMES_JS)
            page.evaluate(QUICK_CLICKS_JS)
            page.wait_for_function(f"() => ({_status('fp16')})()", timeout=120_000)
            page.wait_for_timeout(1000)  # anything still in flight arrives
            page.evaluate("window.stop_recording = true")
            frames = page.evaluate("window.frames_seen")
            stale = [f for f in frames if "median" in f["text"]
                     and not f["text"].lower().startswith(f["selected"].lower())]
            stale_frames += len(stale)
            assert not stale, f"attempt {attempt}: {stale[:3]}"
            assert frames[-1]["selected"] == "FP16" and frames[-1]["text"].lower().startswith("fp16")
            _click_until(page, _button("FP32"), _status("fp32"))
        times["quick_click_stale_frames"] = stale_frames
        _shot(page, tmp_path, "after-quick-clicks-1400x1000")
        assert not [e for e in errors if WIDGET_ERRORS.search(e)], errors
    finally:
        context.close()


def test_the_search_shows_overall_progress_and_stops_at_its_cancel_button(lab, pw, tmp_path, times):
    (tmp_path / "shots").mkdir()
    context = _new_context(pw, tmp_path / "chromium")
    page, errors = _page_collecting_errors(context)
    try:
        _open(page, f"{lab.url}/doc/tree/explorer.ipynb")
        _click_until(page, _button("INT8"), _status("int8"))
        panel = _tab(page, "Mixed precision")
        panel.get_by_role("button", name="Find the fastest within budget").click()
        text = panel.locator(".workbench-search-progress")
        # the first configuration not cached yet (which one depends on what earlier runs left in the cache)
        text.filter(has_text=re.compile(r"configuration \d+ of \d+")).wait_for(timeout=300_000)
        seen = []
        for _ in range(6):  # the bar's value over the whole search only ever grows
            page.wait_for_timeout(500)
            seen.append(text.inner_text())
        steps = [int(m.group(1)) for s in seen if (m := re.search(r"step (\d+) of (\d+)", s))]
        assert steps == sorted(steps) and all(re.search(r"configuration \d+ of \d+", s) for s in seen), seen
        for width, height in ((1400, 1000), (1024, 768)):
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(300)
            panel.locator(".workbench-search-progress").scroll_into_view_if_needed()
            _shot(page, tmp_path, f"search-progress-{width}x{height}")
        page.set_viewport_size({"width": 1400, "height": 1000})
        stopped = _click_until(page, (".workbench-explorer button.mod-warning", 0),
                               "() => /stopped [\\d.]+ s after Cancel/.test(document.querySelector("
                               "'.workbench-search-status').innerText)", limit_ms=60_000)
        times.setdefault("search_cancel_s", []).append(stopped)
        _shot(page, tmp_path, "search-cancelled-1400x1000")
        assert stopped <= CANCEL_S, f"the search stopped {stopped:.1f} s after Cancel"
        assert panel.get_by_role("button", name="Find the fastest within budget").is_enabled()
        assert not [e for e in errors if WIDGET_ERRORS.search(e)], errors
    finally:
        context.close()

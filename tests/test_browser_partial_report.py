"""The HTML report of a run where a precision is refused, on a model with a node name too long for graphviz, as a
person sees it in headless Chromium at 1400x1000 and 1024x768: the headline from interleaved rounds, the summary
with the rounds' column, the "Not measured" row with its reason, and the fusion view with the name cut in the
drawing and whole in the hover. Screenshots go to the test's folder (and $WORKBENCH_SHOTS_KEEP when set)."""
from __future__ import annotations

import re
from pathlib import Path

import onnx
import pytest
from conftest import make_tiny_cnn

from test_browser import CHROMIUM, SIZES, _check_figures, _new_context, _no_page_scroll, _shot  # noqa: F401

pytestmark = pytest.mark.browser

sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.browser
HUGE = "block/" * 4000 + "conv2"  # 24,005 characters: one DOT string may hold 16,384


@pytest.fixture(scope="module")
def pw():
    with sync_api.sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def partial_report(tmp_path_factory) -> Path:
    from workbench.cli import main

    out = tmp_path_factory.mktemp("partial-report")
    proto = make_tiny_cnn()
    for node in proto.graph.node:
        if node.name == "conv2":
            node.name = HUGE
    onnx.save(proto, out / "long-names.onnx")
    code = main(["report", str(out / "long-names.onnx"), "--calibration", "no-such-set", "--runs", "5", "--quiet",
                 "--cache-dir", str(out / "cache"), "--out", str(out / "report.html")])
    assert code == 0  # FP16 was measured: one refused precision does not fail the run
    return out / "report.html"


def test_partial_report_in_the_browser(partial_report, pw, tmp_path):
    (tmp_path / "shots").mkdir()
    context = _new_context(pw, tmp_path / "chromium")
    page = context.pages[0] if context.pages else context.new_page()
    try:
        page.goto(partial_report.as_uri(), timeout=30_000)
        page.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=30_000)
        headline = page.locator("p.headline").inner_text()
        assert "in 7 interleaved rounds" in headline and "(median of the rounds)" in headline
        warning = page.locator("p.warning", has_text="could not be measured")
        assert warning.is_visible() and "int8" in warning.inner_text()
        summary = page.locator(".workbench-table", has=page.locator("th", has_text="speed-up vs FP32")).first
        headers = summary.locator("th").all_inner_texts()
        assert any("speed-up timed in" in h for h in headers)
        assert any("median in interleaved rounds" in h for h in headers)
        missing = page.locator("#not-measured + .workbench-table, #not-measured ~ div .workbench-table").first
        text = missing.inner_text() if missing.count() else page.locator("#not-measured").evaluate(
            "h => h.nextElementSibling.innerText")
        assert "CalibrationError" in text and "no-such-set" in text
        # the node name is cut in the drawing and whole in the hover
        drawn = page.evaluate("""() => [...document.querySelectorAll('.fusion svg text')]
            .map(t => t.textContent).filter(t => t.includes('block/'))""")
        assert drawn and max(map(len, drawn)) < 300, drawn[:3]
        hovers = page.evaluate("""() => [...document.querySelectorAll('.fusion svg a')]
            .map(a => a.getAttribute('xlink:title') || a.getAttribute('title') || '')
            .filter(t => t.includes('block/'))""")
        assert any(HUGE in hover for hover in hovers)
        for width, height in SIZES:
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(500)
            assert _check_figures(page, page.locator("main"), f"partial report {width}x{height}") >= 3
            _no_page_scroll(page)
            page.evaluate("window.scrollTo(0, 0)")
            _shot(page, tmp_path, f"partial-report-top-{width}x{height}")
            page.locator("#summary").evaluate("e => e.scrollIntoView({block: 'start'})")
            _shot(page, tmp_path, f"partial-report-summary-{width}x{height}")
            page.locator("#not-measured").evaluate("e => e.scrollIntoView({block: 'start'})")
            box = page.locator("#not-measured").bounding_box()
            assert box and -2 <= box["y"] < height
            _shot(page, tmp_path, f"partial-report-not-measured-{width}x{height}")
            page.locator(".fusion").first.evaluate("e => e.scrollIntoView({block: 'start'})")
            _shot(page, tmp_path, f"partial-report-fusion-{width}x{height}")
    finally:
        context.close()

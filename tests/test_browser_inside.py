"""The explorer's Inside tab in JupyterLab, in headless Chromium: fashion-cnn switched to INT8, the tab shows where
its error comes from, the worst tensor's histogram with each method's range and its layer's weight ranges; a second
calibration set picked from the list is drawn too. Screenshots at 1400x1000 and 1024x768."""
from __future__ import annotations

import re

import pytest

from tests.test_browser import (EXPLORER_CODE, SIZES, WIDGET_ERRORS, _check_figures, _new_context, _no_page_scroll,
                                _page_collecting_errors, _shot, _show_explorer, _tab, _write_notebook, running_lab)

MODEL = "fashion-cnn"


@pytest.fixture(scope="module")
def pw():
    from playwright import sync_api

    with sync_api.sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    home = tmp_path_factory.mktemp("jupyterlab")
    (home / "root").mkdir()
    _write_notebook(home / "root" / f"{MODEL}.ipynb", "print('kernel ready')",
                    EXPLORER_CODE.format(model=MODEL, cache=str(home / "cache")))
    with running_lab(home) as server:
        yield server


def test_inside_tab_shows_why_int8_drifts(lab, pw, tmp_path):
    (tmp_path / "shots").mkdir()
    context = _new_context(pw, tmp_path / "chromium")
    page, errors = _page_collecting_errors(context)
    try:
        _show_explorer(page, f"{lab.url}/doc/tree/{MODEL}.ipynb")
        page.locator(".widget-toggle-button", has_text=re.compile(r"^INT8$")).click()
        page.locator(".workbench-status", has_text=re.compile(r"^int8.*median", re.IGNORECASE)).wait_for(
            timeout=300_000)
        panel = _tab(page, "Inside")
        panel.get_by_text("Where the error of").wait_for(timeout=60_000)
        panel.get_by_text(re.compile(r"minmax \[")).first.wait_for(timeout=300_000)  # the histogram's legend
        panel.locator(".js-plotly-plot").nth(2).wait_for(timeout=60_000)  # error sources, histogram, weight ranges
        assert panel.get_by_text("weights only").count() >= 1
        compare = panel.locator("select").nth(1)
        compare.select_option(index=1)
        other = compare.evaluate("e => e.options[e.selectedIndex].text")
        panel.locator(".legendtext", has_text=other).first.wait_for(timeout=300_000)  # drawn beside the first set
        for width, height in SIZES:
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(800)
            assert _check_figures(page, panel, f"Inside {width}x{height}") >= 3
            _no_page_scroll(page)
            for index in range(3):
                panel.locator(".js-plotly-plot").nth(index).evaluate("e => e.scrollIntoView({block: 'start'})")
                _shot(page, tmp_path, f"{MODEL}-inside-{index}-{width}x{height}")
        assert not [e for e in errors if WIDGET_ERRORS.search(e)], errors
    finally:
        context.close()

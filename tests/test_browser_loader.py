"""The explorer's loading panel in JupyterLab, in headless Chromium: type a model path and load it, upload an .npz
calibration set, switch to INT8 on it. Screenshots at 1400x1000 and 1024x768 (WORKBENCH_SCREENSHOTS to keep them)."""
from __future__ import annotations

import re

import numpy as np
import onnx
import pytest

from tests.conftest import make_tiny_cnn
from tests.test_browser import WIDGET_ERRORS, _new_context, _screenshot_dirs, _write_notebook, run_notebook, running_lab

pytestmark = pytest.mark.browser

NOTEBOOK_CODE = """\
from workbench.ui import Explorer
explorer = Explorer("digits-cnn", runs=2, drift=False, cache_dir={cache!r})
explorer"""


@pytest.fixture(scope="module")
def pw():
    from playwright import sync_api

    with sync_api.sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    home = tmp_path_factory.mktemp("jupyterlab")
    root = home / "root"
    root.mkdir()
    _write_notebook(root / "explorer.ipynb", NOTEBOOK_CODE.format(cache=str(home / "cache")))
    onnx.save(make_tiny_cnn(), root / "my-cnn.onnx")
    rng = np.random.default_rng(0)
    np.savez(root / "my-calibration.npz", input=rng.standard_normal((16, 1, 8, 8)).astype(np.float32))
    with running_lab(home) as server:
        server.root = root
        yield server


def test_load_a_model_and_a_calibration_set_from_the_explorer(lab, pw, tmp_path):
    context = _new_context(pw, tmp_path / "chromium")
    try:
        page, console_errors = run_notebook(context, f"{lab.url}/doc/tree/explorer.ipynb")
        page.locator(".workbench-status", has_text="median").wait_for(timeout=180_000)

        loader = page.locator(".workbench-loader")
        message = page.locator(".workbench-loader-status")
        # a path that does not exist: the error shows in the panel, the explorer stays as it was
        loader.get_by_role("textbox", name="Load model").fill(str(lab.root / "missing.onnx"))
        loader.get_by_role("button", name="Load", exact=True).click()
        message.filter(has_text="does not exist").wait_for(timeout=30_000)

        loader.get_by_role("textbox", name="Load model").fill(str(lab.root / "my-cnn.onnx"))
        loader.get_by_role("button", name="Load", exact=True).click()
        message.filter(has_text="Loaded my-cnn").wait_for(timeout=30_000)
        page.locator(".workbench-status", has_text=re.compile(r"fp32 @ onnxruntime: .* median")).wait_for(
            timeout=60_000)

        with page.expect_file_chooser() as chooser:  # the upload button opens the browser's file picker
            loader.locator(".widget-upload", has_text="Calibration .npz").click()
        chooser.value.set_files(str(lab.root / "my-calibration.npz"))
        message.filter(has_text="my-calibration.npz added (16 samples)").wait_for(timeout=30_000)
        page.locator(".widget-toggle-button", has_text=re.compile(r"^INT8$")).click()
        page.locator(".workbench-status", has_text=re.compile(r"int8 .*my-calibration\.npz.*median")).wait_for(
            timeout=60_000)

        widget_errors = [e for e in console_errors if WIDGET_ERRORS.search(e)]
        assert not widget_errors, widget_errors
        page.locator(".jp-InputCollapser").first.click()
        for width, height in ((1400, 1000), (1024, 768)):
            page.set_viewport_size({"width": width, "height": height})
            page.wait_for_timeout(300)  # let the layout settle before the picture (not a test wait)
            for folder in _screenshot_dirs(tmp_path / "shots"):
                page.screenshot(path=str(folder / f"explorer-loader-{width}x{height}.png"))
        assert (tmp_path / "shots" / "explorer-loader-1400x1000.png").stat().st_size > 10_000
    finally:
        context.close()

"""The HTML report of models whose outputs are not class scores, as a person sees it in headless Chromium: the
headline names its metric, the summary shows each result's metric with units, "n/a" where none applies, and the
per-output table gives every output's task and metrics. Screenshots at 1400x1000 and 1024x768 go to the test's
folder (and to WORKBENCH_SCREENSHOTS when set)."""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no `playwright install`)")
pytestmark = pytest.mark.browser
SIZES = ((1400, 1000), (1024, 768))


def _segmentation_model(path: Path) -> None:
    """[N, 1, 16, 16] image -> [N, 3, 16, 16] per-pixel class scores (a 3x3 convolution)."""
    weights = np.random.default_rng(0).standard_normal((3, 1, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["out"], pads=[1, 1, 1, 1])], "seg",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 16, 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [onnx.numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def _digits_model(folder: Path) -> None:
    pytest.importorskip("skl2onnx")
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    model = LogisticRegression(max_iter=300).fit(x[:1000], y[:1000])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx.save(to_onnx(model, x[:1], options={id(model): {"zipmap": False}}), folder / "digits.onnx")
    np.savez(folder / "digits.npz", X=x[1000:1400], labels=y[1000:1400])


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    from workbench.cli import main

    folder = tmp_path_factory.mktemp("task-reports")
    _segmentation_model(folder / "seg.onnx")
    _digits_model(folder)
    runs = {"segmentation": [str(folder / "seg.onnx")],
            "digits": [str(folder / "digits.onnx"), "--eval-data", str(folder / "digits.npz")]}
    paths = {}
    for name, args in runs.items():
        path = folder / f"{name}.html"
        code = main(["report", *args, "--precision", "fp32", "--precision", "fp16", "--runs", "5", "--quiet",
                     "--no-drift", "--cache-dir", str(folder / "cache"), "--out", str(path)])
        assert code == 0 and path.is_file()
        paths[name] = path
    return paths


@pytest.mark.parametrize(("model", "metric", "absent"), [
    ("segmentation", "mean IoU vs FP32", "top-1 accuracy"),
    ("digits", "top-1 accuracy (label)", None),
])
def test_report_shows_the_metric_of_each_task(reports, tmp_path, model, metric, absent):
    shots = [tmp_path]
    if os.environ.get("WORKBENCH_SCREENSHOTS"):
        shots.append(Path(os.environ["WORKBENCH_SCREENSHOTS"]))
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium"), executable_path=str(CHROMIUM), headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
            viewport={"width": SIZES[0][0], "height": SIZES[0][1]})
        page = context.pages[0] if context.pages else context.new_page()
        try:
            page.goto(reports[model].as_uri(), timeout=30_000)
            page.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=30_000)
            headline = page.locator(".headline").inner_text()
            assert metric in headline, headline
            if absent:
                assert absent not in headline
            summary = page.locator(".workbench-table").nth(1)  # after the "accelerated" table
            headers = summary.locator("th").all_inner_texts()
            if model == "segmentation":  # its metric in the accuracy column; no top-1 of a segmentation map
                column = next(i for i, h in enumerate(headers) if h.startswith("accuracy"))
                cells = summary.locator(f"tbody tr td:nth-child({column + 1})").all_inner_texts()
                assert cells and all(metric in c and re.search(r"\d+\.\d+ %", c) for c in cells), cells
                assert not any(h.startswith("top-1") for h in headers), headers
            else:  # class scores: the top-1 columns say it, no extra column
                assert not any(h.startswith("accuracy") for h in headers), headers
                column = next(i for i, h in enumerate(headers) if h.startswith("top-1 accuracy"))
                cells = summary.locator(f"tbody tr td:nth-child({column + 1})").all_inner_texts()
                assert cells and all(re.fullmatch(r"\d+\.\d %", c) for c in cells), cells
            outputs = page.locator("h2#outputs ~ div.workbench-table-wrap").first
            text = outputs.inner_text()
            assert ("segmentation" in text and "pixel agreement" in text and "mean IoU vs labels n/a" in text) \
                if model == "segmentation" else \
                ("label" in text and "classification" in text and "top-1 accuracy" in text)
            for width, height in SIZES:
                page.set_viewport_size({"width": width, "height": height})
                page.wait_for_timeout(400)
                wide = page.evaluate("document.documentElement.scrollWidth")
                assert wide <= width, f"the page scrolls sideways at {width}: {wide}"
                for target in ("top", "outputs"):
                    page.evaluate("window.scrollTo(0, 0)" if target == "top" else
                                  "document.getElementById('outputs').scrollIntoView({block: 'start'})")
                    name = f"report-{model}-{target}-{width}x{height}.png"
                    for folder in shots:
                        page.screenshot(path=str(folder / name))
        finally:
            context.close()

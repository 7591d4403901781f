"""The explorer widget driven as a notebook user would: set widget values, wait, assert on what it shows."""
from __future__ import annotations

import pytest

pytest.importorskip("ipywidgets")

from workbench.calibration import CalibrationSet  # noqa: E402
from workbench.ui import Explorer  # noqa: E402


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    ex = Explorer("digits-cnn", cache_dir=tmp_path_factory.mktemp("cache"), runs=3)
    ex.wait()
    return ex


def test_opens_on_fp32_with_figures(explorer):
    assert explorer.current.precision == "fp32" and explorer.current.model == "digits-cnn"
    bars = explorer.figures["latency"].data
    assert {trace.type for trace in bars} == {"bar"}  # one trace per layer type
    assert sum(len(trace.y) for trace in bars) == len(explorer.current.engine.layers)
    assert "<svg" in explorer.fusion.value
    assert explorer.calibration.options == tuple(explorer.session().calibration_sets)


def test_int8_shows_comparison_drift_and_accumulates_summary(explorer):
    explorer.precision.value = "int8"
    shown = explorer.wait()
    assert shown.precision == "int8" and shown.calibration == explorer.calibration.value
    assert len(explorer.figures["latency"].data) >= 2  # FP32 vs INT8, layer by layer
    assert len(explorer.figures["drift"].data) >= 1
    assert len(explorer._figure_widgets["drift"].data) == len(explorer.figures["drift"].data)
    assert {r.precision for r in explorer.results} >= {"fp32", "int8"}
    assert explorer.summary.value.count("<tr>") == len(explorer.results) + 1


def test_rapid_toggling_shows_only_the_newest_selection(explorer):
    explorer.precision.value = "int8"
    explorer.method.value = "entropy"
    explorer.qdq_style.value = "tensorrt"
    explorer.precision.value = "fp16"  # the last change wins; the earlier ones must never be displayed
    shown = explorer.wait()
    assert shown.precision == "fp16" and explorer.current is shown
    assert "fp16" in explorer.status.value


def test_toggling_back_returns_the_cached_result(explorer):
    explorer.precision.value = "fp32"
    first = explorer.wait()
    fusion = explorer.fusion.value
    explorer.precision.value = "int8"
    explorer.wait()
    assert explorer.fusion.value != fusion
    explorer.precision.value = "fp32"
    assert explorer.wait().cache_key == first.cache_key
    assert explorer.fusion.value == fusion  # the rendered graph comes back too, not re-laid-out


def test_a_calibration_set_that_does_not_fit_shows_an_error_and_the_panel_keeps_working(explorer):
    session = explorer.session()
    bad = CalibrationSet.from_arrays("wrong-shape", {"input": session.eval.arrays["input"][:8, :, :4, :4]})
    session.calibration_sets[bad.name] = bad  # bypasses add_calibration_set's check, as a stale list would
    explorer._refresh_calibration_options()
    explorer.precision.value = "int8"
    explorer.calibration.value = "wrong-shape"
    assert explorer.wait() is None
    assert "Error" in explorer.status.value and "wrong-shape" in explorer.error
    explorer.calibration.value = "digits-train"
    assert explorer.wait().calibration == "digits-train"
    del session.calibration_sets[bad.name]


def test_progress_follows_the_session_steps(explorer):
    seen = []
    explorer.progress.observe(lambda change: seen.append(change["new"]), names="description")
    explorer.precision.value = "int8"
    explorer.method.value = "percentile"  # not computed yet in this module: a real measurement with steps
    explorer.wait()
    assert {"precision", "build", "latency", "accuracy"} <= set(seen)
    assert explorer.progress.layout.visibility == "hidden"  # done: the bar goes away

"""Every result states what precision really ran; an "INT8" result that runs in FP32 says so loudly (issue 18.2)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_tiny_cnn
from workbench.engine import EngineGraph, EngineLayer
from workbench.calibration import CalibrationSet
from workbench.cli import _print_summary
from workbench.models.spec import Model
from workbench.results import RunResult, precision_share
from workbench.session import Workbench


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    model = Model.from_proto(make_tiny_cnn(), name="tiny", source="test")
    wb = Workbench(model, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    rng = np.random.default_rng(0)
    huge = CalibrationSet.from_arrays("huge", {"input": (rng.standard_normal((16, 1, 8, 8)) * 1e6).astype(np.float32)})
    normal = wb.run("int8", runs=2, drift=False)
    fallback = wb.run("int8", calibration=huge, runs=2, drift=False)
    return wb, normal, fallback


def test_reduced_precision_graphs_computed_in_float_are_not_flagged(runs):
    wb, _, _ = runs
    fp16, tensorrt_style = wb.run("fp16", runs=2, drift=False), wb.run("int8", qdq_style="tensorrt", runs=2, drift=False)
    assert fp16.precision_share["nodes"] == {"fp32": 1.0}  # ONNX Runtime's CPU provider computes FP16 in FP32 ...
    assert fp16.precision_share["graph"] == {"fp16": 1.0, "fp32": 0.0}  # ... but the graph is FP16: accuracy is
    assert tensorrt_style.precision_share["graph"]["int8"] == 1.0
    assert fp16.precision_warning is None and tensorrt_style.precision_warning is None


def test_int8_that_fell_back_to_fp32_says_so_with_the_reason(runs):
    _, normal, fallback = runs
    assert fallback.precision_share["nodes"] == {"fp32": 1.0}
    assert fallback.precision_share["time"]["fp32"] == pytest.approx(1.0)
    assert fallback.precision_share["graph"] == {"int8": 0.0, "fp32": 1.0}
    warning = fallback.precision_warning
    assert warning and "is mostly FP32" in warning and "left 100% of its compute ops" in warning
    assert "calibrated range exceeds the FP16 maximum" in warning  # the precision step's own reason
    assert normal.precision_share["graph"] == {"int8": 1.0, "fp32": 0.0} and normal.precision_warning is None


def test_share_and_warning_are_json_keys_and_survive_the_cache(runs):
    wb, _, fallback = runs
    data = json.loads(json.dumps(fallback.to_json()))
    assert data["precision_share"]["nodes"] == {"fp32": 1.0} and data["precision_warning"] == fallback.precision_warning
    assert data["graph_precision"] == {"int8": 0.0, "fp32": 1.0}
    assert any("FP16 maximum" in note for note in data["precision_notes"])
    again = RunResult.from_json(data)
    assert again.precision_warning == fallback.precision_warning


def test_cli_summary_and_report_show_the_warning(runs, capsys):
    from workbench.report import build_report

    wb, normal, fallback = runs
    _print_summary([normal, fallback])
    out = capsys.readouterr().out
    assert out.count("WARNING:") == 1 and fallback.label in out.split("WARNING:")[1]
    page = build_report([wb], [normal, fallback])
    assert "class=\"warning\"" in page and "is mostly FP32" in page
    from workbench.report import headline

    assert fallback.label not in headline([normal, fallback, wb.run("fp32", runs=2, drift=False)])


def test_share_counts_each_node_once_and_ignores_bad_times():
    layers = [EngineLayer("a", "Conv", "int8", ["conv", "relu"], latency_ms=3.0),
              EngineLayer("b", "Gemm", "fp32", ["fc"], latency_ms=1.0),
              EngineLayer("c", "Copy", "fp32", ["fc"], latency_ms=float("nan")),
              EngineLayer("d", "Reformat", "fp32", [], inserted=True)]
    share = precision_share(EngineGraph("x", layers, ["conv", "relu", "fc"]))
    assert share == {"nodes": {"fp32": pytest.approx(1 / 3), "int8": pytest.approx(2 / 3)},
                     "time": {"fp32": 0.25, "int8": 0.75}}
    assert precision_share(EngineGraph("x", [EngineLayer("a", "Conv", "int8", ["conv"])], ["conv"]))["time"] is None


def test_explorer_status_carries_the_warning(tmp_path):
    pytest.importorskip("ipywidgets")
    from workbench.ui import Explorer

    model = Model.from_proto(make_tiny_cnn(), name="tiny", source="test")
    explorer = Explorer("tiny", models={"tiny": model}, cache_dir=tmp_path, runs=2, drift=False, background=False)
    rng = np.random.default_rng(0)
    explorer.session().add_calibration_set(CalibrationSet.from_arrays(
        "huge", {"input": (rng.standard_normal((16, 1, 8, 8)) * 1e6).astype(np.float32)}))
    explorer.precision.value = "int8"
    assert "Warning" not in explorer.status.value
    explorer.calibration.options = tuple(explorer.session().calibration_sets)
    explorer.calibration.value = "huge"
    explorer.wait()
    assert explorer.current.calibration == "huge"
    assert "<b>Warning:</b>" in explorer.status.value and "is mostly FP32" in explorer.status.value


def test_keeping_the_weighted_ops_in_fp32_is_flagged_with_that_reason(runs):
    wb, _, _ = runs
    kept = wb.run("int8", keep_fp32=["Conv", "Gemm"], runs=2, drift=False)
    assert kept.precision_share["graph"] == {"int8": 0.0, "fp32": 1.0}
    assert "Kept in FP32: Conv, Gemm" in kept.precision_warning
    half = wb.run("int8", keep_fp32=["conv1"], runs=2, drift=False)  # 1 of 3 weighted ops: not mostly FP32
    assert half.precision_share["graph"]["fp32"] == pytest.approx(1 / 3) and half.precision_warning is None

"""The workbench calibrator gives onnxruntime's ranges (same algorithms), augments big graphs in linear time and
keeps memory per batch."""
from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnxruntime.quantization import create_calibrator
from onnxruntime.quantization.calibrate import CalibrationDataReader

from conftest import make_tiny_cnn
from workbench.precision.calibrate import (CALIBRATION_METHODS, CALIBRATION_OPTIONS, _calibrate,
                                           calibrated_tensors)


class _Reader(CalibrationDataReader):
    def __init__(self, batches):
        self._iter = iter(batches)

    def get_next(self):
        return next(self._iter, None)


def _ort_ranges(proto: onnx.ModelProto, batches, method: str):
    """onnxruntime's own calibrator, fed one batch per call as the workbench did before."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(proto, path)
        calibrator = create_calibrator(path, None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=CALIBRATION_METHODS[method],
                                       extra_options=CALIBRATION_OPTIONS[method])
        with contextlib.redirect_stdout(io.StringIO()):
            for batch in batches:
                calibrator.collect_data(_Reader([batch]))
            ranges = calibrator.compute_data()
        del calibrator
    return ranges


def _batches(n: int = 4, size: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    # growing scale: later batches widen the histograms, exercising the merge paths
    return [{"input": (rng.standard_normal((size, 1, 8, 8)) * (1 + i)).astype(np.float32)} for i in range(n)]


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_ranges_match_onnxruntime_calibrators(method):
    proto = make_tiny_cnn()
    batches = _batches()
    ours, theirs = _calibrate(proto, batches, method, progress=False), _ort_ranges(proto, batches, method)
    assert ours.calibration_method == theirs.calibration_method
    assert set(ours.data) == set(theirs.data) == set(calibrated_tensors(proto))
    for name, expected in theirs.data.items():
        low, high = (float(np.ravel(v)[0]) for v in ours.data[name].range_value)
        exp_low, exp_high = (float(np.ravel(v)[0]) for v in expected.range_value)
        # optimised kernels round differently in the last bits; a histogram threshold may move by one bin then
        scale = max(abs(exp_low), abs(exp_high))
        tolerance = scale * (2.0 / CALIBRATION_OPTIONS[method]["num_bins"] if method != "minmax" else 1e-4)
        assert abs(low - exp_low) <= tolerance + 1e-6 and abs(high - exp_high) <= tolerance + 1e-6, \
            f"{method} range of {name}: {(low, high)} vs onnxruntime's {(exp_low, exp_high)}"


def _chain(nodes: int) -> onnx.ModelProto:
    """A chain of `nodes` element-wise ops: a large graph with trivial compute."""
    ops = []
    for i in range(nodes):
        ops.append(helper.make_node("Relu" if i % 2 else "Neg", [f"t{i}"], [f"t{i + 1}"], name=f"n{i}"))
    graph = helper.make_graph(ops, "chain", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, ["b", 4])],
                              [helper.make_tensor_value_info(f"t{nodes}", TensorProto.FLOAT, ["b", 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_calibrates_every_tensor_of_a_long_chain():
    proto = _chain(2000)
    batch = {"t0": np.array([[1.0, -2.0, 3.0, -4.0]], dtype=np.float32)}
    ranges = _calibrate(proto, [batch], "minmax", progress=False)
    assert len(ranges.data) == 2001
    value = lambda name, i: float(ranges.data[name].range_value[i].ravel()[0])  # noqa: E731
    assert (value("t1", 0), value("t1", 1)) == (-3.0, 4.0)  # Neg: [-1, 2, -3, 4]
    assert (value("t2", 0), value("t2", 1)) == (0.0, 4.0)  # Relu: [0, 2, 0, 4]
    assert value("t2000", 1) == 0.0  # the second Neg + Relu leaves only zeros


def test_float16_tensors_keep_their_type():
    nodes = [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16, name="to16"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT, name="to32")]
    graph = helper.make_graph(nodes, "fp16", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    ranges = _calibrate(proto, [{"x": np.array([[-1.0, 0.5, 2.0]], np.float32)}], "minmax", progress=False)
    low, high = ranges.data["r"].range_value
    assert low.dtype == np.float16 and float(low.ravel()[0]) == 0.0 and float(high.ravel()[0]) == 2.0



def test_fast_percentile_histograms_give_onnxruntimes_ranges():
    """FastHistogramCollector counts percentile histograms on evenly spaced bins instead of ORT's (float32-rounded)
    edge array: the edges, min and max are ORT's exactly, counts move only at bin edges, and the percentile ranges
    stay within one bin of ORT's (equal on these tensors)."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    from workbench.precision.calibrate import FastHistogramCollector

    rng = np.random.default_rng(3)
    batches = [{"wide": (rng.standard_normal((4, 16, 32, 32)) * scale).astype(np.float32),
                "positive": (rng.random((4, 100)) * scale).astype(np.float32)} for scale in (1, 0.5, 3, 2.9, 7)]
    batches[2]["wide"].flat[7] = np.nan  # NaN is not counted, as in ORT
    collectors = [cls(method="percentile", symmetric=True, num_bins=2048, num_quantized_bins=128,
                      percentile=99.999, scenario="same") for cls in (HistogramCollector, FastHistogramCollector)]
    with contextlib.redirect_stdout(io.StringIO()):
        for collector in collectors:
            for batch in batches:
                collector.collect(batch)
        theirs, ours = (collector.compute_collection_result() for collector in collectors)
    for name in theirs:
        (ort_hist, ort_edges, ort_min, ort_max), (hist, edges, low, high) = (c.histogram_dict[name] for c in collectors)
        assert np.array_equal(edges, ort_edges) and edges.dtype == ort_edges.dtype
        assert (low, high) == (ort_min, ort_max) and hist.sum() == ort_hist.sum()
        width = float(edges[1] - edges[0])
        for mine, expected in zip(ours[name], theirs[name]):
            assert abs(float(mine) - float(expected)) <= width, (name, mine, expected)
        assert [float(v) for v in ours[name]] == [float(v) for v in theirs[name]]


def test_vectorised_entropy_threshold_is_onnxruntimes():
    """FastHistogramCollector's entropy threshold search (all candidates at once) picks ORT's threshold exactly, on
    dense, sparse, nearly empty, heavy-tailed and grown histograms, float32 and float16 edges, and ORT's
    collect/compute path gives the same ranges end to end."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    from workbench.precision.calibrate import FastHistogramCollector

    collectors = [cls(method="entropy", symmetric=False, num_bins=128, num_quantized_bins=128, percentile=99.999,
                      scenario="same") for cls in (HistogramCollector, FastHistogramCollector)]
    rng = np.random.default_rng(5)
    for case in range(40):
        bins = int(rng.integers(128, 320))
        hist = [rng.poisson(rng.random(bins) * 50),  # dense
                np.histogram(rng.standard_normal(20000) * rng.random(), bins, range=(-4, 4))[0],
                (rng.random(bins) < 0.05) * rng.integers(1, 1000, bins),  # sparse: smoothing matters
                np.bincount(rng.integers(0, bins, 3), minlength=bins),  # three values
                np.histogram(rng.standard_cauchy(5000), bins, range=(-20, 20))[0]][case % 5].astype(np.int64)
        dtype = np.float16 if case % 4 == 0 else np.float32  # float16: divergences rounded, many ties
        edges = np.linspace(-3, 3, bins + 1).astype(dtype)
        histogram = (hist, edges, edges[1], edges[-2])  # min/max inside the edges: the clipping is exercised
        theirs, ours = (c.get_entropy_threshold(histogram, 128) for c in collectors)
        assert [(float(v), v.dtype) for v in ours] == [(float(v), v.dtype) for v in theirs], (case, ours, theirs)
    batches = _batches(6)
    with contextlib.redirect_stdout(io.StringIO()):
        for collector in collectors:
            for batch in batches:
                collector.collect({"x": batch["input"], "relu": np.maximum(batch["input"], 0)})
        theirs, ours = (c.compute_collection_result() for c in collectors)
    assert {k: [float(v) for v in r[:2]] for k, r in ours.items()} == \
        {k: [float(v) for v in r[:2]] for k, r in theirs.items()}


def test_minmax_tensor_empty_or_nan_in_every_batch_gets_a_zero_range(recwarn):
    """A tensor with no finite value in any batch (here NaN everywhere: log of negatives) gets (0, 0), finite so its
    cached ranges are served again, without numpy's All-NaN warning; a batch with a NaN is skipped for the others."""
    nodes = [helper.make_node("Log", ["x"], ["lg"], name="log"), helper.make_node("Relu", ["lg"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "nan", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 2])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    batches = [{"x": np.array([[-1.0, -2.0]], np.float32)}, {"x": np.array([[-3.0, np.nan]], np.float32)}]
    ranges = _calibrate(proto, batches, "minmax", progress=False)
    value = lambda name: [float(v.ravel()[0]) for v in ranges.data[name].range_value]  # noqa: E731
    assert value("lg") == [0.0, 0.0] and value("y") == [0.0, 0.0]
    assert value("x") == [-2.0, -1.0]  # the second batch (with its NaN) skipped, as before
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]

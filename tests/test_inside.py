"""Seeing inside INT8 error: histograms with each method's range, weight ranges per channel, and the split of each
tensor's error into weights and activations (checked against numpy on planted data and on the quantised graphs)."""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from workbench import Workbench, inside
from workbench.errors import Cancelled, InputSpecError, PrecisionError
from workbench.jobs import CancelToken
from workbench.measure.decomposition import ACTIVATIONS, BOTH, WEIGHTS, decompose
from workbench.measure.histograms import quantise, tensor_histogram, weight_ranges
from workbench.precision import calibrate
from workbench.precision.decompose import activations_only, quantised_constants, weights_only
from workbench.precision.plan import PrecisionPlan
from workbench.results import DriftPoint


def _relu_model() -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "planted",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 16])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _batches(values: np.ndarray, size: int = 4) -> list[dict[str, np.ndarray]]:
    return [{"x": values[i:i + size]} for i in range(0, len(values), size)]


def test_quantise_uses_the_int8_step_of_the_range_and_saturates_outside_it():
    values = np.array([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0])
    rounded, step = quantise(values, 0.0, 2.55)  # uint8 activations: 255 steps over [0, 2.55]
    assert step == pytest.approx(0.01, rel=1e-6)
    assert rounded[0] == 0.0 and rounded[-1] == pytest.approx(2.55, rel=1e-6)  # clipped to the range's ends
    assert np.allclose(rounded[1:4], values[1:4], atol=step / 2)
    _, symmetric_step = quantise(values, -1.27, 1.27, qdq_style="tensorrt")  # int8 [-127, 127]
    assert symmetric_step == pytest.approx(0.01, rel=1e-6)


def test_histogram_counts_clipping_and_sqnr_match_numpy_on_planted_values():
    rng = np.random.default_rng(0)
    first = rng.normal(1.0, 1.0, size=(64, 16)).astype(np.float32)
    second = rng.normal(3.0, 2.0, size=(32, 16)).astype(np.float32)  # another "region": wider, shifted
    ranges = {"narrow": (0.0, 2.0), "wide": (0.0, float(np.maximum(first, 0).max()))}
    seen = []
    hist = tensor_histogram(_relu_model(), "y", {"first": _batches(first), "second": _batches(second)}, ranges,
                            bins=32, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (2 * (16 + 8), 2 * (16 + 8))  # both passes over both sets' batches
    edges = np.asarray(hist.edges)
    for name, data in (("first", first), ("second", second)):
        y = np.maximum(data, 0).astype(np.float64).ravel()
        got = hist.set(name)
        assert got.counts == np.histogram(y, bins=edges)[0].tolist() and got.values == y.size
        for method, (low, high) in ranges.items():
            effect = got.effect(method)
            assert effect.clipped_share == pytest.approx(np.mean((y < low) | (y > high)))
            rounded, step = quantise(y, low, high)
            assert effect.step == pytest.approx(step)
            expected = 10 * np.log10(np.sum(y ** 2) / np.sum((y - rounded) ** 2))
            assert effect.sqnr_db == pytest.approx(expected, rel=1e-9)
    # the planted second set spills out of the first set's narrow range far more often
    assert hist.set("second").effect("narrow").clipped_share > 3 * hist.set("first").effect("narrow").clipped_share


def test_histogram_is_cancellable_and_rejects_unknown_tensors():
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        tensor_histogram(_relu_model(), "y", {"a": _batches(np.ones((8, 16), np.float32))}, {}, cancel=token)
    with pytest.raises(InputSpecError, match="No tensor named 'nope'"):
        tensor_histogram(_relu_model(), "nope", {"a": _batches(np.ones((8, 16), np.float32))}, {})


def test_weight_ranges_per_channel_against_one_per_tensor_range():
    weight = np.zeros((4, 2, 1, 1), np.float32)
    weight[:, 0, 0, 0] = [0.01, -0.02, 0.5, 12.7]  # one channel 100x-1000x wider than the others
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])],
                              [numpy_helper.from_array(weight, "w")])
    ranges = weight_ranges(helper.make_model(graph), "conv")
    assert ranges.axis == 0 and ranges.channel_high == pytest.approx([0.01, 0.0, 0.5, 12.7])
    assert ranges.per_tensor_step == pytest.approx(0.1)  # 12.7 / 127
    assert ranges.per_channel_steps == pytest.approx([0.01 / 127, 0.02 / 127, 0.5 / 127, 0.1])
    assert ranges.per_channel_sqnr_db > ranges.per_tensor_sqnr_db + 20  # per-channel scales keep the small ones
    with pytest.raises(InputSpecError, match="is a Conv|No node named"):
        weight_ranges(helper.make_model(graph), "missing")


def test_decompose_names_the_source_that_explains_most_noise():
    both = [DriftPoint(t, None, 20.0, 0.99, 0.1) for t in ("a", "b", "c")]
    weights = [DriftPoint("a", None, 21.0, 0.99, 0.1), DriftPoint("b", None, 40.0, 1, 0),
               DriftPoint("c", None, 23, 1, 0)]
    activations = [DriftPoint("a", None, 40.0, 1, 0), DriftPoint("b", None, 21.0, 1, 0),
                   DriftPoint("c", None, 23, 1, 0)]
    rows = decompose(both, weights, activations)
    assert [r.cause for r in rows] == [WEIGHTS, ACTIVATIONS, BOTH]
    assert rows[0].weights_share == pytest.approx(10 ** -2.1 / (10 ** -2.1 + 10 ** -4.0))
    assert all(r.fix and r.fix.startswith("none needed") for r in rows)  # 20 dB: under 1 % noise, nothing to fix
    low = decompose([DriftPoint("a", None, 12.0, 0.9, 1.0)], weights[:1], activations[:1])[0]
    assert low.cause == WEIGHTS and "GPTQ" in low.fix
    assert decompose(both, [], activations)[0].cause is None  # a missing split decides nothing


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    session = Workbench("fashion-cnn", cache_dir=tmp_path_factory.mktemp("cache"), progress=False, eval_limit=64)
    return session


@pytest.mark.parametrize("style", ["onnxruntime", "tensorrt"])
def test_weight_only_and_activation_only_graphs_quantise_exactly_what_they_claim(fashion, style):
    result = fashion.run(PrecisionPlan("int8", qdq_style=style), batch=8, runs=2, profile=False, drift=False)
    int8 = fashion.variant_model(result).proto
    prepared, _ = calibrate.prepare(fashion.model)
    constants = quantised_constants(int8)
    assert constants  # the plan quantises weights
    weights = weights_only(prepared, int8)
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in weights.graph.node)
    values = {i.name: numpy_helper.to_array(i) for i in weights.graph.initializer}
    nodes = {n.name: n for n in weights.graph.node}
    for (node, position), dequantised in constants.items():
        assert np.allclose(values[nodes[node].input[position]], dequantised, rtol=1e-6, atol=1e-9)  # float32 of it
    activations = activations_only(prepared, int8)
    count = lambda model, op: sum(n.op_type == op for n in model.graph.node)  # noqa: E731
    assert count(activations, "QuantizeLinear") == count(int8, "QuantizeLinear") > 0
    assert not quantised_constants(activations)  # no weight or bias goes through a DequantizeLinear any more
    floats = {i.name: numpy_helper.to_array(i) for i in prepared.graph.initializer}
    act_values = {i.name: numpy_helper.to_array(i) for i in activations.graph.initializer}
    float_nodes = {n.name: n for n in prepared.graph.node}
    for node in activations.graph.node:
        for position, name in enumerate(node.input):
            if (node.name, position) in constants:
                assert np.array_equal(act_values[name], floats[float_nodes[node.name].input[position]])
    onnx.checker.check_model(weights)
    onnx.checker.check_model(activations)


def test_error_sources_are_measured_once_then_cached(fashion, monkeypatch):
    result = fashion.run(PrecisionPlan("int8", method="entropy"), batch=8, runs=2, profile=False)
    rows = inside.error_sources(fashion, result)
    assert [r.tensor for r in rows] == [p.tensor for p in result.drift]
    combined = [r for r in rows if r.weights_sqnr_db is not None and math.isfinite(r.sqnr_db)]
    assert combined and all(r.cause in (WEIGHTS, ACTIVATIONS, BOTH) for r in combined)
    # each source alone loses less than both together (noise adds), within measurement rounding
    assert all(r.weights_sqnr_db >= r.sqnr_db - 0.5 and r.activations_sqnr_db >= r.sqnr_db - 0.5 for r in combined)
    monkeypatch.setattr(Workbench, "drift", lambda *a, **k: pytest.fail("measured again"))
    assert inside.error_sources(fashion, result) == rows
    fp32 = fashion.run("fp32", batch=8, runs=2, profile=False)
    with pytest.raises(InputSpecError, match="not INT8"):
        inside.error_sources(fashion, fp32)


def test_dynamic_int8_cannot_be_split():
    proto = onnx.ModelProto()
    proto.CopyFrom(_relu_model())
    with pytest.raises(PrecisionError, match="calibrated Q/DQ plan"):
        activations_only(proto, proto)


def test_session_histogram_draws_each_methods_cached_range_on_two_sets(fashion):
    tensor = fashion.run(PrecisionPlan("int8"), batch=8, runs=2, profile=False).drift[0].tensor
    hist = inside.histogram(fashion, tensor, compare="mnist-digits", calibration_size=32)
    assert [s.name for s in hist.sets] == ["fashion-train", "mnist-digits"]
    assert {e.method for e in hist.sets[0].effects} == {"minmax", "entropy", "percentile"}
    minmax = hist.sets[0].effect("minmax")
    assert minmax.clipped_share == 0.0 and minmax.high == pytest.approx(hist.sets[0].max, rel=1e-5)
    with pytest.raises(InputSpecError, match="is the calibration set itself"):
        inside.histogram(fashion, tensor, compare="fashion-train")
    with pytest.raises(InputSpecError, match="Unknown calibration method"):
        inside.histogram(fashion, tensor, methods=("dynamic",))


def test_weight_ranges_of_a_tensor_name_find_the_conv_that_computes_it(fashion):
    result = fashion.run(PrecisionPlan("int8"), batch=8, runs=2, profile=False)
    ranges = inside.weight_ranges(fashion, result.drift[0].tensor)  # a Relu output: Conv+BN folded computes it
    assert ranges.op_type in ("Conv", "Gemm") or pytest.fail(ranges)
    by_method = inside.method_ranges(fashion, methods=("minmax",))
    low, high = by_method["minmax"][result.drift[0].tensor]
    assert low <= high

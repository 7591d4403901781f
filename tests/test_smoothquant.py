"""SmoothQuant (workbench.precision.smoothquant): the FP32 function is kept, activation ranges move into the
weights as the formula says, and INT8 of activations with outlier channels gets better."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from workbench.calibration import CalibrationSet
from workbench.models.spec import Model
from workbench.precision import apply_plan, precision_notes, smoothquant
from workbench.precision.apply import STEPS_KEY
from workbench.precision.plan import PrecisionPlan

K = 16


def _transformer_block() -> onnx.ModelProto:
    """x [batch, seq, K] -> LayerNorm -> (MatMul q, MatMul k sharing the LN output, residual Add) -> Relu -> Gemm
    (transB) on the flattened first token: two smoothable activations, one read by two MatMuls and an Add."""
    rng = np.random.default_rng(0)
    scale, shift = 1 + 0.1 * rng.standard_normal(K), 0.1 * rng.standard_normal(K)
    scale[3], shift[11] = 40, -25  # outlier channels of the LayerNorm output, as trained transformers have
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("ln_s", scale), ("ln_b", shift),
        ("wq", rng.standard_normal((K, K)) * 0.3), ("wk", rng.standard_normal((K, K)) * 0.3),
        ("fc_w", rng.standard_normal((4, K)) * 0.3), ("fc_b", rng.standard_normal(4) * 0.1)]]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "first"))
    nodes = [helper.make_node("LayerNormalization", ["x", "ln_s", "ln_b"], ["ln"], name="ln", axis=-1),
             helper.make_node("MatMul", ["ln", "wq"], ["q"], name="q"),
             helper.make_node("MatMul", ["ln", "wk"], ["k"], name="k"),
             helper.make_node("Add", ["q", "k"], ["qk"], name="qk"),
             helper.make_node("Add", ["qk", "ln"], ["res"], name="residual"),
             helper.make_node("Relu", ["res"], ["act"], name="act"),
             helper.make_node("Gather", ["act", "first"], ["token"], name="token", axis=1),
             helper.make_node("Flatten", ["token"], ["flat"], name="flat"),
             helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 6, K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto


def _inputs(n: int = 32, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 6, K)).astype(np.float32)


def _run(proto: onnx.ModelProto, x: np.ndarray, names: list[str] | None = None) -> list[np.ndarray]:
    if names:
        proto = onnx.ModelProto.FromString(proto.SerializeToString())
        proto.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(names or None, {"x": x})


def test_groups_are_the_constant_weight_matmuls_and_gemms_by_their_input():
    found = smoothquant.groups(_transformer_block())
    assert {tensor: [n.name for n in nodes] for tensor, nodes in found.items()} == {"ln": ["q", "k"], "flat": ["fc"]}


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_smoothing_keeps_the_fp32_function_and_moves_the_ranges_as_the_formula_says(alpha):
    proto, x = _transformer_block(), _inputs()
    batches = [{"x": x[:16]}, {"x": x[16:]}]
    peaks = smoothquant.channel_max(proto, ["ln", "flat"], batches)
    assert peaks["ln"].shape == (K,) and peaks["ln"][3] > 5 * np.median(peaks["ln"])  # the planted outlier
    smoothed, muls = smoothquant.smooth(proto, peaks, alpha)
    onnx.checker.check_model(smoothed)
    assert len(muls) == 2

    fresh = _inputs(8, seed=7)
    (before,), (after,) = _run(proto, fresh), _run(smoothed, fresh)
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())

    new_peaks = smoothquant.channel_max(smoothed, ["ln_smoothed", "flat_smoothed"], batches)
    weights = {i.name: numpy_helper.to_array(i) for i in smoothed.graph.initializer}
    old_weights = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    w_rows = np.maximum(np.abs(weights["wq"]).max(axis=1), np.abs(weights["wk"]).max(axis=1))
    if alpha == 1.0:  # every channel of the activation now peaks at 1: all difficulty in the weights
        np.testing.assert_allclose(new_peaks["ln_smoothed"], 1.0, rtol=1e-4)
    else:  # activation and weight ranges meet: max|X_k / s_k| == max|s_k W_k| == sqrt(max|X_k| max|W_k|)
        np.testing.assert_allclose(new_peaks["ln_smoothed"], w_rows, rtol=1e-4)
        old_rows = np.maximum(np.abs(old_weights["wq"]).max(axis=1), np.abs(old_weights["wk"]).max(axis=1))
        np.testing.assert_allclose(w_rows, np.sqrt(peaks["ln"] * old_rows), rtol=1e-4)
    spread = lambda v: v.max() / v.min()  # noqa: E731
    assert spread(new_peaks["ln_smoothed"]) < 0.5 * spread(peaks["ln"])
    # Gemm with transB: its weight's columns are the input channels; a channel that never fires keeps scale 1
    column_peak = np.abs(old_weights["fc_w"]).max(axis=0)
    expected = np.where(peaks["flat"] > 0, peaks["flat"] ** alpha / column_peak ** (1 - alpha), 1.0)
    assert (peaks["flat"] == 0).any()
    np.testing.assert_allclose(weights["fc_w"], old_weights["fc_w"] * expected[None, :], rtol=1e-4)


@pytest.mark.parametrize("style", ["onnxruntime", "tensorrt"])
def test_smoothquant_in_a_plan_lowers_the_int8_error_of_the_matmuls_reading_outlier_channels(tmp_path, style):
    model = Model.from_proto(_transformer_block(), name="block", source="test")
    calibration = CalibrationSet.from_arrays("noise", _inputs(), input_name="x")
    fresh = _inputs(16, seed=3)
    reference = _run(model.proto, fresh, ["q", "k"])

    def error(result: Model) -> float:  # mean relative error of the MatMuls' outputs
        return float(np.mean([np.abs(out - ref).mean() / np.abs(ref).mean()
                              for out, ref in zip(_run(result.proto, fresh, ["q", "k"]), reference)]))

    smoothed = apply_plan(model, PrecisionPlan("int8", qdq_style=style, algorithms=("smoothquant",)), calibration,
                          progress=False, cache_dir=tmp_path)
    plain = apply_plan(model, PrecisionPlan("int8", qdq_style=style), calibration, progress=False,
                       cache_dir=tmp_path)
    assert error(smoothed) < 0.7 * error(plain)
    steps = {p.key: p.value for p in smoothed.proto.metadata_props}[STEPS_KEY].split("|")
    assert steps[:3] == ["prepare", "smoothquant/alpha=0.5", "ranges/minmax"]
    assert any(n.startswith("SmoothQuant (alpha 0.5): 2 activation(s)") for n in precision_notes(smoothed))
    muls = [n for n in smoothed.proto.graph.node if n.name.endswith("_SmoothQuant")]
    assert len(muls) == 2 and all(n.op_type == "Mul" for n in muls)
    producers = {o: n for n in smoothed.proto.graph.node for o in n.output}
    assert all(producers[m.input[0]].op_type != "DequantizeLinear" for m in muls)  # they read X in float
    readers = [n for n in smoothed.proto.graph.node if n.name in ("q", "k", "fc")]
    assert all(producers[n.input[0]].op_type == "DequantizeLinear" for n in readers)  # ... and X/s is quantised


def test_a_graph_without_constant_weight_matmuls_is_left_alone_with_a_note():
    conv = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "relu",
                             [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])])
    proto = helper.make_model(conv, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    model = Model.from_proto(proto, name="relu", source="test")
    calibration = CalibrationSet.from_arrays("noise", np.random.default_rng(0).standard_normal((8, 4)).astype(
        np.float32), input_name="x")
    result = apply_plan(model, PrecisionPlan("int8", algorithms=("smoothquant",)), calibration, progress=False)
    assert "smoothquant: this graph has nothing it applies to; skipped" in precision_notes(result)

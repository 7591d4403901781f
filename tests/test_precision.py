"""Precision transforms: FP16 and INT8 Q/DQ graphs are valid, honest, cached, and reject bad input."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from workbench.calibration import CalibrationSet
from workbench.errors import CalibrationError, PrecisionError
from workbench.models.spec import Model
from workbench.precision import (PrecisionPlan, apply_plan, cache_stats, clear_cache, cpu_latency_representative,
                                 precision_notes)

QDQ = ("QuantizeLinear", "DequantizeLinear")


def run(model: Model, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.serialized(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def producers(model: Model) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.proto.graph.node for out in node.output}


def node(model: Model, name: str) -> onnx.NodeProto:
    return next(n for n in model.proto.graph.node if n.name == name)


def initializers(model: Model) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in model.proto.graph.initializer}


@pytest.fixture
def calib(tiny_cnn) -> CalibrationSet:
    rng = np.random.default_rng(7)
    return CalibrationSet.from_arrays("tiny-calib", rng.standard_normal((48, 1, 8, 8)).astype(np.float32),
                                      input_name="input")


def assert_same_io(original: Model, result: Model) -> None:
    assert [(s.name, s.dtype) for s in result.inputs] == [(s.name, s.dtype) for s in original.inputs]
    assert [(s.name, s.dtype) for s in result.outputs] == [(s.name, s.dtype) for s in original.outputs]
    onnx.checker.check_model(result.proto)


# ---- fp32 / fp16 -----------------------------------------------------------------------------------------------
def test_fp32_returns_model_unchanged(tiny_cnn):
    assert apply_plan(tiny_cnn, PrecisionPlan("fp32")) is tiny_cnn


def test_fp16_rounds_weights_keeps_fp32_io_and_stays_close(tiny_cnn, tiny_inputs):
    fp16 = apply_plan(tiny_cnn, PrecisionPlan("fp16"))
    assert_same_io(tiny_cnn, fp16)
    weights = [i for i in fp16.proto.graph.initializer if i.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert weights and all(i.data_type == TensorProto.FLOAT16 for i in weights)
    assert {n.op_type for n in fp16.proto.graph.node} >= {"Cast"}
    ref, out = run(tiny_cnn, tiny_inputs), run(fp16, tiny_inputs)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref, atol=5e-3)
    assert not np.array_equal(out, ref)  # really rounded, not a relabelled FP32 graph
    assert "fp16" in fp16.source and any("FP16" in note for note in precision_notes(fp16))
    assert cpu_latency_representative(tiny_cnn) and not cpu_latency_representative(fp16)


def test_fp16_keep_fp32_by_node_name_and_op_type(tiny_cnn, tiny_inputs):
    mixed = apply_plan(tiny_cnn, PrecisionPlan("fp16", keep_fp32=("fc", "Softmax")))
    assert_same_io(tiny_cnn, mixed)
    inits, made_by = initializers(mixed), producers(mixed)
    fc = node(mixed, "fc")
    assert inits["fc_w"].data_type == TensorProto.FLOAT and inits["fc_b"].data_type == TensorProto.FLOAT
    cast_in = made_by[fc.input[0]]
    assert cast_in.op_type == "Cast" and onnx.helper.get_attribute_value(cast_in.attribute[0]) == TensorProto.FLOAT
    assert inits["w2"].data_type == TensorProto.FLOAT16  # the rest is still FP16
    # The blocked Softmax writes the FP32 graph output itself (no FP16 round trip at the end).
    assert made_by["probs"].op_type == "Softmax"
    np.testing.assert_allclose(run(mixed, tiny_inputs), run(tiny_cnn, tiny_inputs), atol=5e-3)
    assert any("fc" in note and "Softmax" in note for note in precision_notes(mixed))


# ---- int8 ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
@pytest.mark.parametrize("style", ["onnxruntime", "tensorrt"])
def test_int8_each_method_and_style_runs_and_agrees(tiny_cnn, tiny_inputs, calib, method, style):
    plan = PrecisionPlan("int8", method=method, qdq_style=style)
    q = apply_plan(tiny_cnn, plan, calib, progress=False)
    assert_same_io(tiny_cnn, q)
    assert sum(n.op_type in QDQ for n in q.proto.graph.node) >= 6
    ref, out = run(tiny_cnn, tiny_inputs), run(q, tiny_inputs)
    assert (ref.argmax(1) == out.argmax(1)).mean() >= 0.8
    assert np.abs(out - ref).max() < 0.1
    props = {p.key: p.value for p in q.proto.metadata_props}
    assert json.loads(props["workbench.precision_plan"])["qdq_style"] == style
    assert q.source.endswith(plan.label)


def test_tensorrt_style_structure(tiny_cnn, calib):
    q = apply_plan(tiny_cnn, PrecisionPlan("int8", qdq_style="tensorrt"), calib, progress=False)
    inits, made_by = initializers(q), producers(q)
    qdq_nodes = [n for n in q.proto.graph.node if n.op_type in QDQ]
    for n in qdq_nodes:
        zero_point = inits[n.input[2]]
        assert zero_point.data_type == TensorProto.INT8
        assert not onnx.numpy_helper.to_array(zero_point).any()
    for n in q.proto.graph.node:
        if n.op_type in ("Conv", "Gemm"):
            assert made_by[n.input[0]].op_type == "DequantizeLinear"  # activation
            assert made_by[n.input[1]].op_type == "DequantizeLinear"  # weight
            assert inits[n.input[2]].data_type == TensorProto.FLOAT  # bias left for TensorRT to fold
            consumers = [c for c in q.proto.graph.node if n.output[0] in c.input]
            assert all(c.op_type != "QuantizeLinear" for c in consumers)  # no Q/DQ on weighted-op outputs
    add = node(q, "add")
    sources = [made_by[name].op_type for name in add.input]
    assert sorted(sources) == ["Conv", "DequantizeLinear"]  # only the residual branch is quantised
    assert any("NOT representative" in note for note in precision_notes(q))
    assert not cpu_latency_representative(q)


def test_onnxruntime_style_uses_uint8_activations(tiny_cnn, calib):
    q = apply_plan(tiny_cnn, PrecisionPlan("int8", qdq_style="onnxruntime"), calib, progress=False)
    inits, made_by = initializers(q), producers(q)
    conv1 = node(q, "conv1")
    act_dq, weight_dq = made_by[conv1.input[0]], made_by[conv1.input[1]]
    assert inits[act_dq.input[2]].data_type == TensorProto.UINT8
    assert inits[weight_dq.input[0]].data_type == TensorProto.INT8
    assert inits[weight_dq.input[2]].data_type == TensorProto.INT8
    assert len(onnx.numpy_helper.to_array(inits[weight_dq.input[1]])) == 8  # per-channel scales (8 filters)
    assert cpu_latency_representative(q)


def test_int8_per_tensor_weights(tiny_cnn, calib):
    q = apply_plan(tiny_cnn, PrecisionPlan("int8", per_channel=False), calib, progress=False)
    weight_dq = producers(q)[node(q, "conv1").input[1]]
    assert onnx.numpy_helper.to_array(initializers(q)[weight_dq.input[1]]).size == 1


def test_int8_keep_fp32_node_keeps_float_weights(tiny_cnn, tiny_inputs, calib):
    q = apply_plan(tiny_cnn, PrecisionPlan("int8", keep_fp32=("conv2",)), calib, progress=False)
    inits = initializers(q)
    conv1, conv2 = node(q, "conv1"), node(q, "conv2")
    assert conv2.input[1] in inits and inits[conv2.input[1]].data_type == TensorProto.FLOAT
    assert conv1.input[1] not in inits  # conv1 still reads dequantised int8 weights
    assert (run(q, tiny_inputs).argmax(1) == run(tiny_cnn, tiny_inputs).argmax(1)).mean() >= 0.8


def test_int8_shows_calibration_progress(tiny_cnn, calib, capsys):
    clear_cache()
    apply_plan(tiny_cnn, PrecisionPlan("int8"), calib, progress=True)
    assert "Calibrating (minmax)" in capsys.readouterr().err


# ---- calibration errors ----------------------------------------------------------------------------------------
def test_int8_without_calibration_says_to_pass_one(tiny_cnn):
    with pytest.raises(CalibrationError, match="calibration="):
        apply_plan(tiny_cnn, PrecisionPlan("int8"))


@pytest.mark.parametrize("arrays, match", [
    ({"image": np.zeros((4, 1, 8, 8), np.float32)}, "expects"),
    ({"input": np.zeros((4, 1, 6, 6), np.float32)}, "shape"),
    ({"input": np.zeros((4, 1, 8, 8), np.float64)}, "dtype"),
    ({"input": np.full((4, 1, 8, 8), np.nan, np.float32)}, "NaN"),
])
def test_mismatched_or_nan_calibration_is_rejected(tiny_cnn, arrays, match):
    with pytest.raises(CalibrationError, match=match):
        apply_plan(tiny_cnn, PrecisionPlan("int8"), CalibrationSet("bad", arrays), progress=False)


def test_empty_calibration_is_rejected():
    with pytest.raises(CalibrationError, match="empty"):
        CalibrationSet("empty", {"input": np.zeros((0, 1, 8, 8), np.float32)})


def test_fixed_batch_model_needs_a_full_batch(tiny_cnn):
    proto = onnx.ModelProto()
    proto.CopyFrom(tiny_cnn.proto)
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 8
    fixed = Model.from_proto(proto, name="tiny-fixed", source="test")
    small = CalibrationSet("small", {"input": np.zeros((4, 1, 8, 8), np.float32)})
    with pytest.raises(CalibrationError, match="at least 8"):
        apply_plan(fixed, PrecisionPlan("int8"), small, progress=False)


# ---- calibration cache -----------------------------------------------------------------------------------------
def test_switching_style_per_channel_or_keep_reuses_ranges(tiny_cnn, calib):
    clear_cache()
    apply_plan(tiny_cnn, PrecisionPlan("int8", qdq_style="onnxruntime"), calib, progress=False)
    assert cache_stats.calibrations == 1
    for plan in (PrecisionPlan("int8", qdq_style="tensorrt"), PrecisionPlan("int8", per_channel=False),
                 PrecisionPlan("int8", keep_fp32=("Gemm",))):
        apply_plan(tiny_cnn, plan, calib, progress=False)
    assert cache_stats.calibrations == 1 and cache_stats.memory_hits == 3
    apply_plan(tiny_cnn, PrecisionPlan("int8", method="entropy"), calib, progress=False)
    assert cache_stats.calibrations == 2  # another method is another calibration


def test_disk_cache_survives_memory_and_rebuilds_corrupt_entries(tiny_cnn, calib, tmp_path):
    clear_cache()
    plan = PrecisionPlan("int8", method="percentile")
    first = apply_plan(tiny_cnn, plan, calib, progress=False, cache_dir=tmp_path)
    entries = list(tmp_path.glob("calibration-*.ranges.json"))
    assert len(entries) == 1 and cache_stats.calibrations == 1

    clear_cache()  # a new process: memory empty, disk kept
    again = apply_plan(tiny_cnn, plan, calib, progress=False, cache_dir=tmp_path)
    assert cache_stats.calibrations == 0 and cache_stats.disk_hits == 1
    assert again.content_hash == first.content_hash

    entries[0].write_text('{"data": {"input": [1, 2')  # truncated write
    clear_cache()
    rebuilt = apply_plan(tiny_cnn, plan, calib, progress=False, cache_dir=tmp_path)
    assert cache_stats.calibrations == 1 and rebuilt.content_hash == first.content_hash
    json.loads(entries[0].read_text())  # replaced by a whole file


# ---- invalid plans ---------------------------------------------------------------------------------------------
def test_unknown_keep_fp32_entry_is_rejected(tiny_cnn):
    with pytest.raises(PrecisionError, match="neither node names nor op types"):
        apply_plan(tiny_cnn, PrecisionPlan("fp16", keep_fp32=("conv9",)))


def test_invalid_plans_raise_precision_error(tiny_cnn):
    with pytest.raises(PrecisionError, match="choose one of"):
        apply_plan(tiny_cnn, "int4")
    with pytest.raises(PrecisionError, match="PrecisionPlan"):
        apply_plan(tiny_cnn, 16)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_graph_onnxruntime_cannot_run_gives_precision_error(precision):
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Frobnicate", ["x"], ["y"], name="mystery", domain="example.custom")], "custom",
        [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [onnx.helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17),
                                                         onnx.helper.make_opsetid("example.custom", 1)])
    model = Model.from_proto(proto, name="custom-op", source="test")
    calibration = CalibrationSet("ok", {"x": np.ones((4, 4), np.float32)})
    with pytest.raises(PrecisionError, match="custom-op"):
        apply_plan(model, PrecisionPlan(precision), calibration, progress=False)


# ---- the digits sample, when its loader is there ---------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    from workbench import samples

    if "digits-cnn" not in getattr(samples, "names", lambda: [])():
        pytest.skip("the digits-cnn sample is not registered yet")
    return samples.load("digits-cnn")


@pytest.mark.parametrize("plan", [PrecisionPlan("fp16"), PrecisionPlan("int8", method="entropy", qdq_style="tensorrt"),
                                  PrecisionPlan("int8", method="minmax", qdq_style="onnxruntime")],
                         ids=lambda plan: plan.label)
def test_digits_sample_accuracy_survives(digits, plan):
    calibration = digits.calibration_sets[digits.default_calibration]
    q = apply_plan(digits.model, plan, calibration, progress=False)
    assert_same_io(digits.model, q)
    top1 = {name: (run(m, digits.eval.arrays).argmax(1) == digits.eval.labels).mean()
            for name, m in (("fp32", digits.model), ("plan", q))}
    assert top1["fp32"] > 0.9
    assert top1["plan"] >= top1["fp32"] - 0.02


def _masked_model() -> Model:
    """x[b,4] float, mask[b,4] int64: y = MatMul(Relu(x), w) * (x + Cast(mask) * -3.4e38), a sentinel as in
    attention masks."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array(-3.4028235e38, np.float32), "neg")]
    nodes = [helper.make_node("Cast", ["mask"], ["maskf"], name="cast_mask", to=TensorProto.FLOAT),
             helper.make_node("Mul", ["maskf", "neg"], ["bias"], name="sentinel"),
             helper.make_node("Add", ["x", "bias"], ["masked"], name="apply_mask"),
             helper.make_node("Relu", ["x"], ["rx"], name="relu"),
             helper.make_node("MatMul", ["rx", "w"], ["h"], name="matmul"),
             helper.make_node("Mul", ["h", "masked"], ["y"], name="out")]
    graph = helper.make_graph(nodes, "masked", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
        helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return Model.from_proto(onnx.shape_inference.infer_shapes(proto), name="masked", source="test")


def test_fp16_retargets_the_models_own_float_casts():
    model = _masked_model()
    fp16 = apply_plan(model, PrecisionPlan("fp16"), progress=False)  # raised "does not load" before the fix
    cast = node(fp16, "cast_mask")
    assert next(a.i for a in cast.attribute if a.name == "to") == TensorProto.FLOAT16


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_int8_keeps_masking_sentinels_in_fp32(method):
    model = _masked_model()
    rng = np.random.default_rng(1)
    mask = rng.integers(0, 2, (32, 4)).astype(np.int64)
    mask[:8] = 0  # the first batch has no sentinel: a tensor turns out to hold sentinels in a later batch
    cal = CalibrationSet.from_arrays("masked", {"x": rng.standard_normal((32, 4)).astype(np.float32), "mask": mask})
    # entropy raised "Too many bins for data range" (np.histogram over +-3.4e38) before sentinels kept min/max
    int8 = apply_plan(model, PrecisionPlan("int8", method=method), cal, progress=False)
    assert any("sentinel" in note for note in precision_notes(int8))
    quantized_inputs = {n.input[0] for n in int8.proto.graph.node if n.op_type == "QuantizeLinear"}
    assert not quantized_inputs & {"bias", "masked"}
    assert "rx" in quantized_inputs  # the MatMul is still INT8


def test_the_quantisers_root_logger_lines_are_not_shown(caplog):
    import logging

    from workbench.precision.int8 import _quiet_root_logger

    with caplog.at_level(logging.WARNING):
        with _quiet_root_logger():
            logging.warning("Axis 1 is out-of-range for weight 'bias' with rank 1")  # what ONNX Runtime logs
        assert caplog.records == []
        logging.warning("Axis 1 is out-of-range for weight 'bias' with rank 1")  # outside: untouched
        assert len(caplog.records) == 1

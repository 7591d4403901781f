"""FP16 keeps graphs valid: If bodies with ops kept in FP32, already-quantised models (Q/DQ kept, scales float32),
and, where the converter's graph still does not load, the nodes that must stay FP32 found by bisection and named."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import make_tiny_cnn
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

from workbench.models.onnx_source import load_onnx_bytes
from workbench.precision import PrecisionPlan, apply_plan
from workbench.precision import fp16
from workbench.precision.apply import precision_notes


def _run(proto: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _model(nodes, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def nms_like_if_model() -> onnx.ModelProto:
    """MatMul, then an If (as detection post-processing has) whose then-body runs TopK (no FP16 form in the
    converter: kept FP32) on an outer-scope tensor, and whose else-body negates it."""
    rng = np.random.default_rng(0)
    then_body = helper.make_graph(
        [helper.make_node("TopK", ["h", "k"], ["t_v", "t_i"], name="then_topk", axis=1),
         helper.make_node("Relu", ["t_v"], ["t_out"], name="then_relu")], "then", [],
        [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, None)])
    else_body = helper.make_graph([helper.make_node("Neg", ["h"], ["e_out"], name="else_neg")], "else", [],
                                  [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("ReduceSum", ["h"], ["s"], name="sum", keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
             helper.make_node("If", ["cond"], ["y"], name="if", then_branch=then_body, else_branch=else_body),
             helper.make_node("Add", ["y", "x"], ["out"], name="add")]
    return _model(nodes, [numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w"),
                          numpy_helper.from_array(np.array([4], np.int64), "k"),
                          numpy_helper.from_array(np.array(0, np.float32), "zero")])


@pytest.mark.parametrize("keep", [(), ("if",), ("If",), ("sum", "add")])
def test_if_bodies_stay_valid_and_agree_on_both_branches(keep):
    source = nms_like_if_model()
    model = load_onnx_bytes(source.SerializeToString(), name="nms-like")
    variant = apply_plan(model, PrecisionPlan("fp16", keep_fp32=keep), progress=False)
    onnx.checker.check_model(variant.proto, full_check=True)  # sorted, typed, If bodies included
    half = {init.name for init in variant.proto.graph.initializer if init.data_type == TensorProto.FLOAT16}
    assert "w" in half  # the MatMul really runs in FP16
    w = numpy_helper.to_array(next(i for i in source.graph.initializer if i.name == "w"))
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    x *= np.sign((x @ w).sum())  # sum(x @ w) > 0: the then-branch; -x takes the else-branch
    for feed in (x, -x):
        np.testing.assert_allclose(_run(variant.proto, {"x": feed})[0], _run(source, {"x": feed})[0], atol=0.02,
                                   rtol=0.01)
    assert not any("bisection" in note for note in precision_notes(variant))


class _Reader(CalibrationDataReader):
    def __init__(self):
        self._feeds = iter([{"input": np.random.default_rng(i).standard_normal((1, 1, 8, 8)).astype(np.float32)}
                            for i in range(8)])

    def get_next(self):
        return next(self._feeds, None)


def test_already_quantised_model_keeps_qdq_and_float32_scales():
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(make_tiny_cnn(), Path(tmp) / "fp32.onnx")
        quantize_static(str(Path(tmp) / "fp32.onnx"), str(Path(tmp) / "qdq.onnx"), _Reader(),
                        quant_format=QuantFormat.QDQ)
        qdq = onnx.load(Path(tmp) / "qdq.onnx")
    model = load_onnx_bytes(qdq.SerializeToString(), name="already-quantised")
    variant = apply_plan(model, "fp16", progress=False)
    graph = onnx.shape_inference.infer_shapes(variant.proto).graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    types.update({init.name: init.data_type for init in graph.initializer})
    dequantize = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    assert len(dequantize) == sum(n.op_type == "DequantizeLinear" for n in qdq.graph.node)  # Q/DQ kept as they were
    for node in dequantize:
        assert types[node.input[1]] == TensorProto.FLOAT, node.name  # the scale stays float32 ...
        assert types.get(node.input[0]) != TensorProto.FLOAT16, node.name  # ... and no DQ is fed float16
    assert any(t == TensorProto.FLOAT16 for t in types.values())  # the float compute in between is FP16
    feeds = {"input": np.random.default_rng(9).standard_normal((4, 1, 8, 8)).astype(np.float32)}
    np.testing.assert_allclose(_run(variant.proto, feeds)[0], _run(qdq, feeds)[0], atol=0.02)


def eyelike_model() -> onnx.ModelProto:
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("MatMul", ["h", "w"], ["h2"], name="mm2"),
             helper.make_node("EyeLike", ["h2"], ["eye_out"], name="eye", dtype=TensorProto.FLOAT),
             helper.make_node("Add", ["h2", "eye_out"], ["out"], name="add")]
    return _model(nodes, [numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w")])


@pytest.mark.parametrize("named_rounds", [fp16.MAX_NAMED_ROUNDS, 0])  # 0: no help from the error text
def test_nodes_the_converter_breaks_are_found_and_named(monkeypatch, named_rounds):
    """EyeLike(dtype=float) keeps its declared float output while the converter retypes it FP16: that node alone
    must stay FP32, found from the error that names it or, without it, by bisection; the notes say which."""
    monkeypatch.setattr(fp16, "MAX_NAMED_ROUNDS", named_rounds)
    source = eyelike_model()
    model = load_onnx_bytes(source.SerializeToString(), name="eyelike")
    variant = apply_plan(model, "fp16", progress=False)
    notes = [n for n in precision_notes(variant) if "bisection" in n]
    assert notes and notes[0].endswith(": eye")
    assert {i.name for i in variant.proto.graph.initializer if i.data_type == TensorProto.FLOAT16} >= {"w"}
    x = {"x": np.random.default_rng(2).standard_normal((2, 4)).astype(np.float32)}
    np.testing.assert_allclose(_run(variant.proto, x)[0], _run(source, x)[0], atol=0.05, rtol=0.01)


def test_nodes_that_fail_only_together_are_found_by_shrinking(monkeypatch):
    """A Constant given by value_float stays float32 while the Mul reading it becomes FP16: no op type fails
    alone, so (the error's node name unused) the nodes to keep are found by shrinking "everything FP32"."""
    monkeypatch.setattr(fp16, "MAX_NAMED_ROUNDS", 0)
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Constant", [], ["two"], name="const", value_float=2.0),
             helper.make_node("Mul", ["h", "two"], ["out"], name="mul")]
    source = _model(nodes, [numpy_helper.from_array(rng.standard_normal((4, 4)).astype(np.float32), "w")])
    model = load_onnx_bytes(source.SerializeToString(), name="constant-attr")
    variant = apply_plan(model, "fp16", progress=False)
    kept = next(n for n in precision_notes(variant) if "bisection" in n).split(": ")[-1].split(", ")
    assert "mm" not in kept and 0 < len(kept) <= 2
    x = {"x": rng.standard_normal((2, 4)).astype(np.float32)}
    np.testing.assert_allclose(_run(variant.proto, x)[0], _run(source, x)[0], atol=0.05, rtol=0.01)


@pytest.mark.slow
def test_detection_model_with_nms_converts_and_agrees():
    """A torchvision detector (random weights) exported by the TorchScript exporter: NMS and an If whose body casts
    to float. FP16 loads without keeping anything in FP32, and its boxes agree with FP32's."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    detector = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=5).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ssdlite.onnx"
        torch.onnx.export(detector, (torch.rand(1, 3, 320, 320),), str(path), opset_version=17, dynamo=False,
                          input_names=["images"], output_names=["boxes", "scores", "labels"])
        model = load_onnx_bytes(path.read_bytes(), name="ssdlite")
    assert {"If", "NonMaxSuppression"} <= {n.op_type for n in fp16.all_nodes(model.proto.graph)}
    variant = apply_plan(model, "fp16", progress=False)
    assert not any("bisection" in note for note in precision_notes(variant))
    feeds = {"images": np.random.default_rng(0).random((1, 3, 320, 320), dtype=np.float32)}
    boxes32, scores32, _ = _run(model.proto, feeds)
    boxes16, scores16, _ = _run(variant.proto, feeds)
    assert boxes16.shape[1] == 4 and len(boxes16) > 0
    # each of FP16's best boxes has an FP32 box within a few pixels of 320 (near-tied scores may reorder them)
    for box in boxes16[:10]:
        assert np.abs(boxes32 - box).max(axis=1).min() < 4.0, box

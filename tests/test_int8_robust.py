"""INT8 of graphs ONNX Runtime's quantiser does not handle as they are: old opsets (version converter, else
per-tensor weights) and quantiser failures on some nodes (found by op type then node, kept FP32, named)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.conftest import make_tiny_cnn
from workbench.calibration import CalibrationSet
from workbench.errors import PrecisionError
from workbench.models.onnx_source import finalize
from workbench.precision import apply_plan, int8
from workbench.precision.apply import precision_notes
from workbench.precision.plan import PrecisionPlan


def _opset11_cnn():
    proto = make_tiny_cnn()
    proto.opset_import[0].version = 11
    proto.ir_version = 6
    return finalize(proto, name="cnn-opset11", source="test")


@pytest.fixture
def calib():
    rng = np.random.default_rng(0)
    return CalibrationSet.from_arrays("cal", {"input": rng.standard_normal((16, 1, 8, 8)).astype(np.float32)})


def _dq_axes(model) -> list:
    return [next((a.i for a in n.attribute if a.name == "axis"), None)
            for n in model.proto.graph.node if n.op_type == "DequantizeLinear"]


def test_opset11_model_is_converted_to_13_for_per_channel_int8(calib):
    model = _opset11_cnn()
    result = apply_plan(model, PrecisionPlan("int8"), calib, progress=False)
    notes = precision_notes(result)
    assert any("converted the model from opset 11 to 13" in n for n in notes)
    assert notes[0].startswith("INT8 (per-channel weights)")
    assert next(o.version for o in result.proto.opset_import if o.domain in ("", "ai.onnx")) >= 13
    assert 0 in _dq_axes(result)  # per-channel weight DequantizeLinear
    ort.InferenceSession(result.serialized(), providers=["CPUExecutionProvider"])


def test_failed_conversion_falls_back_to_per_tensor_weights(calib, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("converter cannot adapt this op")
    monkeypatch.setattr(onnx.version_converter, "convert_version", broken)
    result = apply_plan(_opset11_cnn(), PrecisionPlan("int8"), calib, progress=False)
    notes = precision_notes(result)
    assert notes[0].startswith("INT8 (per-tensor weights)")
    assert any("version converter failed (RuntimeError: converter cannot adapt this op)" in n for n in notes)
    assert all(axis is None for axis in _dq_axes(result))


def _quantiser_failing_on(monkeypatch, bad_nodes: set[str]):
    """ORT's quantize_static, raising like its real failures whenever one of `bad_nodes` gets quantised."""
    real = int8.quantize_static
    calls = []

    def flaky(model_input, model_output, reader, **kwargs):
        calls.append(kwargs)
        types = kwargs.get("op_types_to_quantize")
        target = onnx.load(model_input)
        quantised = {n.name for n in target.graph.node if (not types or n.op_type in types)
                     and n.name not in kwargs["nodes_to_exclude"]}
        if quantised & bad_nodes:
            raise KeyError(f"{sorted(quantised & bad_nodes)[0]}_output_scale")
        return real(model_input, model_output, reader, **kwargs)
    monkeypatch.setattr(int8, "quantize_static", flaky)
    return calls


def test_nodes_the_quantiser_fails_on_are_found_kept_fp32_and_named(tiny_cnn, calib, monkeypatch):
    calls = _quantiser_failing_on(monkeypatch, {"conv2"})
    result = apply_plan(tiny_cnn, PrecisionPlan("int8"), calib, progress=False)
    note = next(n for n in precision_notes(result) if "quantiser fails" in n)
    assert "1 node(s)" in note and "'conv2'" in note and "KeyError" in note
    by_name = {n.name: n for n in result.proto.graph.node}
    assert "conv1" in by_name and "conv2" in by_name
    producers = {out: n for n in result.proto.graph.node for out in n.output}
    conv2_weight = by_name["conv2"].input[1]
    assert conv2_weight not in producers or producers[conv2_weight].op_type != "DequantizeLinear"  # float weight
    conv1_weight = producers[by_name["conv1"].input[1]]
    assert conv1_weight.op_type == "DequantizeLinear"  # the rest is still INT8
    assert calls[-1]["nodes_to_exclude"] == ["conv2"] and calls[-1]["op_types_to_quantize"] is None
    types = len({n.op_type for n in tiny_cnn.proto.graph.node})
    assert len(calls) <= 1 + types + 3 + 1  # whole graph, each op type alone, bisect the Convs, the final run


def test_error_only_when_nothing_can_be_quantised(tiny_cnn, calib, monkeypatch):
    def always(*_args, **_kwargs):
        raise ValueError("The truth value of an array with more than one element is ambiguous")
    monkeypatch.setattr(int8, "quantize_static", always)
    with pytest.raises(PrecisionError, match="nothing can be quantised"):
        apply_plan(tiny_cnn, PrecisionPlan("int8"), calib, progress=False)


def test_if_bodies_reading_outer_tensors_are_sorted_after_their_producers():
    """ORT's quantiser sorts by explicit inputs only; a body reading 'a' must come after a's producer."""
    then = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["a"], ["t"])], "then", [],
                                  [onnx.helper.make_tensor_value_info("t", onnx.TensorProto.FLOAT, [1])])
    other = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["e"])], "else", [],
                                   [onnx.helper.make_tensor_value_info("e", onnx.TensorProto.FLOAT, [1])])
    nodes = [onnx.helper.make_node("If", ["c"], ["y"], name="if", then_branch=then, else_branch=other),
             onnx.helper.make_node("Relu", ["x"], ["a"], name="producer")]
    graph = onnx.helper.make_graph(nodes, "g", [
        onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1]),
        onnx.helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, [])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    int8._sort_with_subgraph_inputs(graph)
    assert [n.name for n in graph.node] == ["producer", "if"]


def test_a_graph_with_nothing_to_quantise_says_its_int8_runs_in_fp32():
    proto = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Neg", ["x"], ["y"], name="neg")], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 4])]),
        opset_imports=[onnx.helper.make_opsetid("", 17)])
    proto.ir_version = 8
    model = finalize(proto, name="neg", source="test")
    calib = CalibrationSet.from_arrays("cal", {"x": np.ones((8, 4), np.float32)})
    result = apply_plan(model, PrecisionPlan("int8"), calib, progress=False)
    assert any("found nothing to quantise" in n for n in precision_notes(result))

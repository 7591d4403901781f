"""INT8 of large graphs: ONNX Runtime's quantiser is quadratic in the node count, so graphs above
`int8.SPLIT_ABOVE` nodes get their Q/DQ placed segment by segment and stitched. The stitched graph must be the
graph quantised whole: same Q/DQ nodes, bit-identical outputs."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from workbench.calibration import CalibrationSet
from workbench.models.onnx_source import finalize
from workbench.precision import int8, pipeline
from workbench.precision.plan import PrecisionPlan

CHANNELS = 4


def _residual_chain(blocks: int) -> onnx.ModelProto:
    """Conv -> Relu -> Add(residual) blocks, then pool and Gemm. Random biases, and one bias shared by every third
    Conv: each Conv quantises it at its own scale under the same generated name, so segments clash on names."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal(CHANNELS).astype(np.float32), "shared_bias"),
             numpy_helper.from_array(rng.standard_normal((3, CHANNELS)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "fc_b")]
    nodes, current = [], "input"
    for i in range(blocks):
        inits.append(numpy_helper.from_array(
            (rng.standard_normal((CHANNELS, CHANNELS, 1, 1)) * 0.4).astype(np.float32), f"w{i}"))
        bias = "shared_bias" if i % 3 == 0 else f"b{i}"
        if bias != "shared_bias":
            inits.append(numpy_helper.from_array(rng.standard_normal(CHANNELS).astype(np.float32) * 0.1, bias))
        nodes += [helper.make_node("Conv", [current, f"w{i}", bias], [f"c{i}"], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"),
                  helper.make_node("Add", [f"r{i}", current], [f"a{i}"], name=f"add{i}")]
        current = f"a{i}"
    nodes += [helper.make_node("GlobalAveragePool", [current], ["gap"], name="gap"),
              helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "chain",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", CHANNELS, 6, 6])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto


@pytest.fixture
def chain():
    data = np.random.default_rng(2).standard_normal((24, CHANNELS, 6, 6)).astype(np.float32)
    model = finalize(_residual_chain(40), name="residual-chain", source="test")
    return model, CalibrationSet.from_arrays("cal", {"input": data[:16]}), {"input": data[16:]}


def _quantize_both_ways(monkeypatch, model, calibration, plan, segment_nodes):
    whole, _ = pipeline.quantize(model, plan, calibration, progress=False)
    monkeypatch.setattr(int8, "SPLIT_ABOVE", segment_nodes)
    monkeypatch.setattr(int8, "SEGMENT_NODES", segment_nodes)
    split, notes = pipeline.quantize(model, plan, calibration, progress=False)
    return whole, split, notes


def _qdq_counts(proto):
    return {op: sum(node.op_type == op for node in proto.graph.node) for op in ("QuantizeLinear", "DequantizeLinear")}


def _run(proto, feeds):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("style", ["onnxruntime", "tensorrt"])
def test_segmented_int8_is_the_whole_graph_quantised(monkeypatch, chain, style):
    model, calibration, feeds = chain
    plan = PrecisionPlan("int8", method="minmax", qdq_style=style)
    whole, split, notes = _quantize_both_ways(monkeypatch, model, calibration, plan, segment_nodes=20)

    assert any("segments of about 20 nodes" in note for note in notes), notes
    onnx.checker.check_model(split)
    assert _qdq_counts(split) == _qdq_counts(whole)
    assert _qdq_counts(whole)["QuantizeLinear"] > 40
    for a, b in zip(_run(split, feeds), _run(whole, feeds)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_segmented_int8_of_a_real_network(monkeypatch):
    """EfficientNet-Lite0 (depthwise convs, ReLU6 as Clip, residual Adds), cut every dozen nodes."""
    from workbench import samples

    sample = samples.load("efficientnet-lite0-fashion")
    calibration = next(iter(sample.calibration_sets.values()))
    plan = PrecisionPlan("int8", method="minmax", qdq_style="onnxruntime")
    whole, split, notes = _quantize_both_ways(monkeypatch, sample.model, calibration, plan, segment_nodes=12)

    assert any("segments" in note for note in notes)
    assert _qdq_counts(split) == _qdq_counts(whole)
    feeds = {"input": sample.eval.arrays["input"][:4]}
    for a, b in zip(_run(split, feeds), _run(whole, feeds)):
        np.testing.assert_array_equal(a, b)


def test_small_graphs_and_graphs_with_subgraphs_are_not_cut(chain, monkeypatch):
    model, _, _ = chain
    assert int8.segments(model.proto) == [model.proto]  # 123 nodes <= SPLIT_ABOVE (400)
    monkeypatch.setattr(int8, "SPLIT_ABOVE", 10)
    monkeypatch.setattr(int8, "SEGMENT_NODES", 10)
    assert len(int8.segments(model.proto)) > 1
    with_body = onnx.ModelProto()
    with_body.CopyFrom(model.proto)
    branch = helper.make_graph([helper.make_node("Identity", ["gap"], ["then_out"])], "then", [],
                               [helper.make_tensor_value_info("then_out", TensorProto.FLOAT, None)])
    with_body.graph.node.append(helper.make_node("If", ["cond"], ["unused"], then_branch=branch, else_branch=branch))
    assert int8.segments(with_body) == [with_body]


def test_a_graph_the_segments_do_not_suit_is_quantised_whole(monkeypatch, chain):
    model, calibration, feeds = chain
    plan = PrecisionPlan("int8", method="minmax", qdq_style="onnxruntime")
    whole, _ = pipeline.quantize(model, plan, calibration, progress=False)

    def fails(target, parts):
        raise ValueError("a graph the stitching does not understand")

    monkeypatch.setattr(int8, "_stitch", fails)
    monkeypatch.setattr(int8, "SPLIT_ABOVE", 20)
    monkeypatch.setattr(int8, "SEGMENT_NODES", 20)
    fallback, notes = pipeline.quantize(model, plan, calibration, progress=False)

    assert any("segment by segment failed (ValueError" in note and "quantised the graph whole" in note
               for note in notes), notes
    assert not any("placed Q/DQ in" in note for note in notes)
    for a, b in zip(_run(fallback, feeds), _run(whole, feeds)):
        np.testing.assert_array_equal(a, b)

"""FP16 of a graph that reads one of its own outputs (a decoder's present_* KV cache feeding its attention, as
torch exports GPT-2 with a cache): the converted graph loads, the output stays FP32 and the readers compute in FP16."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from workbench.precision.fp16 import to_fp16


def _cache_like() -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32), "weight")
    nodes = [
        helper.make_node("Concat", ["past", "x"], ["present"], name="concat", axis=1),  # an output...
        helper.make_node("Transpose", ["present"], ["t"], name="transpose", perm=[1, 0]),  # ...read inside
        helper.make_node("MatMul", ["t", "weight"], ["y"], name="matmul"),
    ]
    graph = helper.make_graph(
        nodes, "cache", [helper.make_tensor_value_info("past", TensorProto.FLOAT, [4, 2]),
                         helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4]),
         helper.make_tensor_value_info("present", TensorProto.FLOAT, [4, 4])], initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)  # value_info as exporters write it


def test_fp16_of_a_graph_reading_its_own_output_loads_without_fp32_fallback():
    model = _cache_like()
    converted, kept = to_fp16(model)
    assert kept == []  # no node had to stay FP32
    feeds = {"past": np.ones((4, 2), np.float32), "x": np.full((4, 2), 2.0, np.float32)}
    session = ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"])
    y, present = session.run(["y", "present"], feeds)
    assert present.dtype == np.float32 and y.dtype == np.float32
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(["y"], feeds)[0]
    np.testing.assert_allclose(y, reference, rtol=1e-2, atol=1e-2)
    transpose = next(n for n in converted.graph.node if n.name == "transpose")
    assert transpose.input[0] != "present"  # reads the FP16 tensor, not the FP32 output

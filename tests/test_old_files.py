"""Old and odd files: IR-3 models that list their initializers as graph inputs, and node names too long for
graphviz (one DOT string is limited to 16,384 characters)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import make_tiny_cnn
from onnx import TensorProto, helper, numpy_helper

from workbench.backends.onnxruntime import with_input_weights
from workbench.models.onnx_source import load_onnx_bytes
from workbench.session import Workbench


def ir3_model() -> onnx.ModelProto:
    """Conv-BN-Relu-pool-Gemm at opset 8 and IR 3, every initializer also a graph input (as IR 3 required)."""
    rng = np.random.default_rng(0)
    arrays = {"conv_w": rng.standard_normal((4, 3, 3, 3)), "conv_b": rng.standard_normal(4),
              "bn_scale": rng.uniform(0.5, 1.5, 4), "bn_bias": rng.standard_normal(4),
              "bn_mean": rng.standard_normal(4), "bn_var": rng.uniform(0.5, 1.5, 4),
              "fc_w": rng.standard_normal((3, 4)), "fc_b": rng.standard_normal(3)}
    nodes = [helper.make_node("Conv", ["data", "conv_w", "conv_b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["n"],
                              name="bn"),
             helper.make_node("Relu", ["n"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["scores"], name="fc", transB=1)]
    inputs = [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 8, 8])] + [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, a.shape) for name, a in arrays.items()]
    graph = helper.make_graph(nodes, "old_zoo", inputs,
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3])],
                              [numpy_helper.from_array(a.astype(np.float32), name) for name, a in arrays.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)], producer_name="old-zoo")
    model.ir_version = 3
    onnx.checker.check_model(model)
    return model


def test_ir3_model_measures_every_precision_with_layer_profiles(tmp_path):
    source = ir3_model()
    path = tmp_path / "old_zoo.onnx"
    onnx.save(source, path)
    wb = Workbench(str(path), cache_dir=tmp_path / "cache", progress=False)
    assert [s.name for s in wb.model.inputs] == ["data"]  # the weights are weights, not inputs to feed
    fp32 = wb.run("fp32", batch=1, runs=3, drift=False)
    assert fp32.engine and sum(layer.latency_ms or 0 for layer in fp32.engine.layers) > 0
    for precision in ("fp16", "int8"):
        result = wb.run(precision, batch=1, runs=3, drift=False)
        assert any(layer.latency_ms for layer in result.engine.layers), precision
        assert result.accuracy.cosine > 0.99, (precision, result.accuracy.cosine)
    # the FP32 outputs are the original file's: nothing about the weights changed
    feeds = {"data": np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    expected = ort.InferenceSession(source.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(wb.predict(fp32, feeds, batch=1)[0], expected, rtol=1e-5, atol=1e-5)


def test_ir3_inputs_dropped_only_for_old_files():
    assert [v.name for v in load_onnx_bytes(ir3_model().SerializeToString()).proto.graph.input] == ["data"]
    new = make_tiny_cnn()
    assert load_onnx_bytes(new.SerializeToString()).proto.graph.input == new.graph.input


def test_profiling_graph_gets_back_weights_its_inputs_lost():
    """What ORT's saved optimised graph of such a file can look like: the weights listed as inputs, their
    initializers gone. Unrepaired, a session asks for them as feeds; repaired, it runs on the data alone."""
    source = ir3_model()
    optimized = onnx.ModelProto()
    optimized.CopyFrom(source)
    optimized.ir_version = 4
    del optimized.graph.initializer[:]
    feeds = {"data": np.ones((1, 3, 8, 8), np.float32)}
    with pytest.raises(Exception, match="conv_w|Missing Input|missing"):
        ort.InferenceSession(optimized.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    repaired = with_input_weights(optimized, source)
    assert {i.name for i in repaired.graph.initializer} == {i.name for i in source.graph.initializer}
    out = ort.InferenceSession(repaired.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert out[0].shape == (1, 3)
    assert with_input_weights(source, source) is source  # nothing missing: untouched


def test_huge_node_name_draws_cut_and_hovers_whole(tmp_path):
    from workbench.views import fusion_pages_html

    proto = make_tiny_cnn()
    huge = "block/" * 4000 + "conv2"  # 24,005 characters: one DOT string may hold 16,384
    for node in proto.graph.node:
        if node.name == "conv2":
            node.name = huge
    wb = Workbench(proto, cache_dir=tmp_path / "cache", progress=False)
    result = wb.run("fp32", batch=2, runs=2, drift=False)
    page = fusion_pages_html(wb.variant_model(result), result.engine)
    assert "<svg" in page
    drawn = [line for line in page.split("<text") if "block/block" in line.split("</text>")[0]]
    assert drawn and all(len(text.split("</text>")[0]) < 300 for text in drawn)  # labels cut
    assert huge in page  # the hover (xlink:title) holds the whole name
    assert "workbenchlongtext" not in page  # every placeholder replaced
    assert any(huge in nodes for layer in result.to_json()["engine"]["layers"] for nodes in layer["onnx_nodes"])

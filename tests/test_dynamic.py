"""Dynamic INT8 (ranges measured at run time): the plan, the ONNX -> ONNX transform, the session, the search and the
explorer's choices."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from workbench.errors import PrecisionError
from workbench.models.spec import Model
from workbench.precision import PrecisionPlan, apply_plan, precision_notes
from workbench.precision.apply import graph_precision
from workbench.precision import dynamic


def make_mlp(seed: int = 0) -> Model:
    """x [batch, 16] -> MatMul -> Add -> Relu -> MatMul -> y [batch, 4]: two constant-weight MatMuls."""
    rng = np.random.default_rng(seed)
    weights = [numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)
               for name, shape in (("w1", (16, 32)), ("b1", (32,)), ("w2", (32, 4)))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Add", ["h", "b1"], ["hb"], name="bias1"),
             helper.make_node("Relu", ["hb"], ["a"], name="relu1"),
             helper.make_node("MatMul", ["a", "w2"], ["y"], name="fc2")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], weights)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return Model.from_proto(proto, name="mlp", source="test")


def _outputs(model: Model, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.serialized(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _ops(model: Model) -> list[str]:
    return [node.op_type for node in model.proto.graph.node]


def test_dynamic_plan_needs_no_calibration_and_rejects_what_it_cannot_do():
    plan = PrecisionPlan("int8", method="dynamic")
    assert not plan.needs_calibration and plan.qdq_style == "onnxruntime"
    assert PrecisionPlan("int8").needs_calibration
    with pytest.raises(PrecisionError, match="TensorRT cannot parse"):
        PrecisionPlan("int8", method="dynamic", qdq_style="tensorrt")
    with pytest.raises(PrecisionError, match="weight_rounding='nearest'"):
        PrecisionPlan("int8", method="dynamic", weight_rounding="gptq")


def test_dynamic_int8_quantises_the_weighted_matmuls_without_calibration():
    model = make_mlp()
    x = np.random.default_rng(1).normal(size=(64, 16)).astype(np.float32)
    quantized = apply_plan(model, PrecisionPlan("int8", method="dynamic"), progress=False)  # no calibration set
    ops = _ops(quantized)
    assert ops.count("MatMulInteger") == 2 and "DynamicQuantizeLinear" in ops and "MatMul" not in ops
    reference, result = _outputs(model, x), _outputs(quantized, x)
    error = np.abs(result - reference).max() / np.abs(reference).max()
    assert 0 < error < 0.05  # int8 arithmetic: close, but not the same numbers
    assert any("no calibration set" in note and "per-channel" in note for note in precision_notes(quantized))
    assert graph_precision(quantized, "int8") == {"int8": 1.0, "fp32": 0.0}  # MatMulInteger counts as INT8

    kept = apply_plan(model, PrecisionPlan("int8", method="dynamic", keep_fp32=("fc2",)), progress=False)
    assert _ops(kept).count("MatMulInteger") == 1 and "fc2" in [n.name for n in kept.proto.graph.node]


def test_dynamic_int8_says_when_a_model_has_nothing_it_quantises(tiny_cnn):
    assert not dynamic.applies(tiny_cnn.proto) and dynamic.applies(make_mlp().proto)
    quantized = apply_plan(tiny_cnn, PrecisionPlan("int8", method="dynamic"), progress=False)
    assert "DynamicQuantizeLinear" not in _ops(quantized)
    assert any("quantised nothing" in note for note in precision_notes(quantized))


def test_a_dynamic_run_ignores_the_calibration_set(tmp_path):
    from workbench import Workbench

    session = Workbench(make_mlp(), cache_dir=tmp_path, progress=False)
    fp32 = session.run("fp32", runs=3, drift=False, profile=False)
    result = session.run("int8", method="dynamic", runs=3, drift=False, profile=False)
    named = session.run("int8", method="dynamic", calibration=next(iter(session.calibration_sets)), runs=3,
                        drift=False, profile=False)
    assert result.calibration is None and result.method == "dynamic" and "dynamic" in result.label
    assert named.cache_key == result.cache_key  # no calibration enters the plan, so none enters the key
    assert 0.9 < result.accuracy.cosine < 1.0 and fp32.accuracy.cosine == pytest.approx(1.0)
    assert result.precision_warning is None  # its MatMuls are INT8: not "mostly FP32"


def test_the_search_tries_dynamic_int8_where_it_applies(tmp_path):
    from workbench import Workbench

    session = Workbench(make_mlp(), cache_dir=tmp_path, progress=False)
    found = session.tune("int8", metric="cosine", max_drop=0.01, budget=4, runs=3, drift=False)
    starts = [c for c in found.configurations if c.step == "quantise all"]
    assert {c.method for c in starts} == {"minmax", "dynamic"}
    only_minmax = session.tune("int8", metric="cosine", max_drop=0.01, budget=4, methods=("minmax",), runs=3,
                               drift=False)
    assert {c.method for c in only_minmax.configurations if c.step == "quantise all"} == {"minmax"}


def test_the_search_does_not_try_dynamic_int8_on_a_convolutional_model(tmp_path):
    from conftest import make_labelled_sample

    from workbench import Workbench

    session = Workbench(make_labelled_sample(), cache_dir=tmp_path, progress=False)
    found = session.tune("int8", metric="agreement", max_drop=100.0, budget=2, runs=3)
    assert [c.method for c in found.configurations if c.step == "quantise all"] == ["minmax"]


def test_the_explorer_offers_dynamic_only_for_models_it_quantises(tmp_path):
    pytest.importorskip("ipywidgets")
    from workbench.choices import explorer_methods
    from workbench.ui import Explorer

    assert "dynamic" in explorer_methods(make_mlp().proto)
    explorer = Explorer("mlp", models={"mlp": make_mlp()}, cache_dir=tmp_path, runs=3, background=False)
    explorer.wait()
    assert list(explorer.method.options) == ["minmax", "entropy", "percentile", "dynamic"]
    explorer.precision.value = "int8"
    explorer.method.value = "dynamic"
    explorer.wait()
    assert explorer.calibration.disabled and explorer.qdq_style.disabled and not explorer.method.disabled
    assert explorer.current.method == "dynamic" and explorer.current.calibration is None
    assert explorer.selection()["calibration"] is None and explorer.error is None
    explorer.method.value = "minmax"
    explorer.wait()
    assert not explorer.calibration.disabled and explorer.current.calibration is not None

"""Empirical bias correction (workbench.precision.bias_correction, weight_rounding="gptq+bc") and its plumbing."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import make_labelled_sample, make_tiny_cnn
from onnx import TensorProto, helper, numpy_helper

from workbench import Workbench
from workbench.calibration import CalibrationSet
from workbench.models.spec import Model
from workbench.precision import apply_plan, bias_correction, pipeline, precision_notes
from workbench.precision.calibrate import calibration_batches, prepare
from workbench.precision.plan import PrecisionPlan

FAST = {"runs": 3, "batch": 8}


def _calibration(size: int = 64) -> CalibrationSet:
    rng = np.random.default_rng(5)
    return CalibrationSet.from_arrays("noise", rng.standard_normal((size, 1, 8, 8)).astype(np.float32),
                                      input_name="input")


def _mean_errors(quantized, prepared, batches) -> dict[str, float]:
    """Per corrected layer: mean over channels of |mean(quantised output) - mean(FP32 output)| on `batches`."""
    targets = bias_correction._targets(quantized, prepared)
    reference = bias_correction._channel_means(prepared, [t[2] for t in targets], batches)
    observed = bias_correction._channel_means(quantized, [t[1] for t in targets], batches)
    return {node.name: float(np.abs(observed[seen] - reference[fp32]).mean())
            for node, seen, fp32, _, _ in targets}


@pytest.mark.parametrize("style", ["onnxruntime", "tensorrt"])
def test_bias_correction_removes_the_mean_error_of_every_layer_and_changes_only_biases(style):
    model = Model.from_proto(make_tiny_cnn(), name="tiny-cnn", source="tests/conftest.py")
    calibration = _calibration()
    batches = calibration_batches(calibration, model.inputs)
    quantized, _ = pipeline.quantize(model, PrecisionPlan("int8", qdq_style=style), calibration, progress=False)
    prepared, _ = prepare(model)
    before = _mean_errors(quantized, prepared, batches)
    original = {init.name: numpy_helper.to_array(init) for init in quantized.graph.initializer}
    assert bias_correction.correct_biases(quantized, prepared, batches) == len(before) == 3  # conv1, conv2, fc
    after = _mean_errors(quantized, prepared, batches)
    assert sum(after.values()) < 0.5 * sum(before.values())
    assert after["fc"] < 0.5 * before["fc"]  # the logits' mean error, which all earlier errors reach
    changed = [init.name for init in quantized.graph.initializer
               if not np.array_equal(numpy_helper.to_array(init), original[init.name])]
    biases = {t[3].name for t in bias_correction._targets(quantized, prepared)}
    assert changed and set(changed) <= biases  # weights, scales and zero points untouched
    onnx.checker.check_model(quantized)


def test_bias_correction_is_declared_when_there_is_nothing_to_correct():
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "matmul",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [weight])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    model = Model.from_proto(proto, name="matmul", source="test")
    assert not bias_correction.corrects_any(proto) and bias_correction.corrects_any(make_tiny_cnn())
    calibration = CalibrationSet.from_arrays("noise", np.random.default_rng(1).standard_normal((16, 8)).astype(
        np.float32), input_name="x")
    result = apply_plan(model, PrecisionPlan("int8", weight_rounding="gptq+bc"), calibration, progress=False)
    assert any(note.startswith("bias correction found no quantised Conv/Gemm") for note in precision_notes(result))


def test_the_plan_names_it_and_keeps_older_cache_keys():
    plan = PrecisionPlan("int8", weight_rounding="gptq+bc")
    assert plan.gptq and plan.bias_correction and plan.to_json()["weight_rounding"] == "gptq+bc"
    assert "gptq+bc" in plan.label
    assert PrecisionPlan("int8", weight_rounding="gptq").gptq and not PrecisionPlan("int8").bias_correction
    assert "weight_rounding" not in PrecisionPlan("int8").to_json()


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return Workbench(make_labelled_sample(), progress=False, cache_dir=tmp_path_factory.mktemp("bc-cache"))


def test_run_with_bias_correction_records_it_and_the_search_tries_it_last(session):
    corrected = session.run("int8", weight_rounding="gptq+bc", **FAST)
    assert corrected.weight_rounding == "gptq+bc" and "gptq+bc weights" in corrected.label
    assert any("corrected for the mean error" in note for note in corrected.precision_notes)
    assert any("rounded by GPTQ" in note for note in corrected.precision_notes)
    strict = session.tune(max_drop=0.0, metric="cosine", budget=3, **FAST)  # nothing quantised is exact
    starts = [c.weight_rounding for c in strict.configurations if c.step == "quantise all"]
    assert starts == ["nearest", "gptq", "gptq+bc"]

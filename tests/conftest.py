"""Shared fixtures. `tiny_cnn` is built with onnx.helper (no torch), so every layer can be tested fast."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from workbench.models.spec import Model



def make_tiny_cnn(seed: int = 0) -> onnx.ModelProto:
    """Conv-BN-Relu -> Conv-BN + residual Add -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> Softmax.

    Input "input" [batch, 1, 8, 8] float32, output "probs" [batch, 4]. Has the patterns engines fuse.
    """
    rng = np.random.default_rng(seed)

    def init(name, arr):
        return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)

    c = 8
    inits = [
        init("w1", rng.standard_normal((c, 1, 3, 3)) * 0.5), init("b1", np.zeros(c)),
        init("bn1_s", 1 + 0.1 * rng.standard_normal(c)), init("bn1_b", 0.1 * rng.standard_normal(c)),
        init("bn1_m", 0.1 * rng.standard_normal(c)), init("bn1_v", 1 + 0.1 * rng.random(c)),
        init("w2", rng.standard_normal((c, c, 3, 3)) * 0.2), init("b2", np.zeros(c)),
        init("bn2_s", 1 + 0.1 * rng.standard_normal(c)), init("bn2_b", 0.1 * rng.standard_normal(c)),
        init("bn2_m", 0.1 * rng.standard_normal(c)), init("bn2_v", 1 + 0.1 * rng.random(c)),
        init("fc_w", rng.standard_normal((4, c)) * 0.5), init("fc_b", np.zeros(4)),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn1_s", "bn1_b", "bn1_m", "bn1_v"], ["n1"], name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c2", "bn2_s", "bn2_b", "bn2_m", "bn2_v"], ["n2"], name="bn2"),
        helper.make_node("Add", ["n2", "r1"], ["s"], name="add"),
        helper.make_node("Relu", ["s"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="workbench-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return onnx.shape_inference.infer_shapes(model)


@pytest.fixture
def tiny_cnn() -> Model:
    return Model.from_proto(make_tiny_cnn(), name="tiny-cnn", source="tests/conftest.py")


@pytest.fixture
def tiny_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"input": rng.standard_normal((16, 1, 8, 8)).astype(np.float32)}


@pytest.fixture
def trt_plans_dir() -> Path:
    """The bundled example plans (workbench/data/trt-plans), found through the package as users find them."""
    from workbench.trtplan import example_plan_dir

    return example_plan_dir("a100-resnet18-fp32").parent


def make_labelled_sample():
    """The tiny CNN with 40 eval samples labelled by its own FP32 argmax (so FP32 top-1 is exactly 1.0) and a
    32-sample "noise" calibration set."""
    import onnxruntime as ort

    from workbench.calibration import CalibrationSet
    from workbench.samples.base import EvalData, Sample

    proto = make_tiny_cnn()
    rng = np.random.default_rng(3)
    inputs = rng.standard_normal((40, 1, 8, 8)).astype(np.float32)
    labels = ort.InferenceSession(proto.SerializeToString()).run(None, {"input": inputs})[0].argmax(1)
    model = Model.from_proto(proto, name="tiny-cnn", source="tests/conftest.py")
    calibration = CalibrationSet.from_arrays("noise", rng.standard_normal((32, 1, 8, 8)).astype(np.float32),
                                             input_name="input")
    return Sample(name="tiny", description="tiny CNN", model=model, eval=EvalData({"input": inputs}, labels),
                  calibration_sets={"noise": calibration})


@pytest.fixture
def no_builds(monkeypatch):
    """Make any engine build or precision transform fail the test."""
    import workbench.precision
    from workbench.backends.onnxruntime import OnnxRuntimeBackend

    def fail(*args, **kwargs):
        raise AssertionError("no engine build / precision transform expected here")

    monkeypatch.setattr(OnnxRuntimeBackend, "build", fail)
    monkeypatch.setattr(workbench.precision, "apply_plan", fail)


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    """An explorer on digits-cnn (its own cache, 3 timed runs), opened and done with its first FP32 result; one per
    test module."""
    pytest.importorskip("ipywidgets")
    from workbench.ui import Explorer

    ex = Explorer("digits-cnn", cache_dir=tmp_path_factory.mktemp("cache"), runs=3)
    ex.wait()
    return ex


def pytest_collection_modifyitems(config, items) -> None:
    """A test module that loads Playwright drives a browser: it must say so (`pytestmark = pytest.mark.browser`), or
    `make test-fast` would start Chromium."""
    unmarked = sorted({item.module.__name__ for item in items if item.get_closest_marker("browser") is None
                       and any(getattr(value, "__name__", "").startswith("playwright")
                               for value in vars(item.module).values())})
    if unmarked:
        raise pytest.UsageError(f"{', '.join(unmarked)} load(s) Playwright but is not marked browser: add "
                                "`pytestmark = pytest.mark.browser` under the imports (docs/testing.md).")

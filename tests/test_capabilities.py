"""Engines declare what they are and need (`Backend.capabilities`, `refusal(plan)`, `option_choices()`), and callers
ask them instead of testing engine names."""
from __future__ import annotations

import ast
from pathlib import Path

import onnxruntime as ort
import pytest
from conftest import make_labelled_sample

from workbench.backends import backend_names, capabilities, installed_backends
from workbench.backends.onnxruntime import CPU_PROVIDER, OnnxRuntimeBackend, OnnxRuntimeOptions
from workbench.backends.tensorrt import TensorRTBackend, TensorRTOptions
from workbench.engine import Capabilities
from workbench.errors import BackendError, PrecisionError
from workbench.precision.plan import PrecisionPlan
from workbench.session import Workbench

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"
TRITON_PLATFORMS = ("onnxruntime_onnx", "tensorrt_plan", "openvino", "pytorch_libtorch", "tensorflow_savedmodel")


@pytest.mark.parametrize("name", backend_names())
def test_every_engine_declares_its_capabilities(name):
    declared = capabilities(name)
    assert isinstance(declared, Capabilities)
    assert declared.device in ("cpu", "gpu") and declared.triton_platform in TRITON_PLATFORMS
    assert declared.serialized_engine == (declared.triton_platform == "tensorrt_plan")


def test_installed_engines_are_the_ones_whose_library_imports():
    cpu = installed_backends(device="cpu")
    assert "onnxruntime" in cpu and all(capabilities(n).device == "cpu" for n in cpu)
    assert set(cpu) <= set(installed_backends()) <= set(backend_names())


def test_onnxruntime_providers_come_from_onnxruntime(tiny_cnn, tiny_inputs):
    backend = OnnxRuntimeBackend()
    assert backend.option_choices()["provider"] == tuple(ort.get_available_providers())
    assert OnnxRuntimeOptions().to_json() == {"threads": None, "optimization_level": "all"}  # cache keys as before
    engine = backend.build(tiny_cnn, OnnxRuntimeOptions(provider=CPU_PROVIDER))
    assert engine.session.get_providers() == [CPU_PROVIDER] and engine.run(tiny_inputs)[0].shape[0] == 16
    with pytest.raises(BackendError, match=r"no execution provider 'NoSuchExecutionProvider'.*CPUExecutionProvider"):
        backend.build(tiny_cnn, OnnxRuntimeOptions(provider="NoSuchExecutionProvider"))
    assert OnnxRuntimeOptions(provider="NoSuchExecutionProvider").to_json()["provider"] == "NoSuchExecutionProvider"


class _RangeEngine(OnnxRuntimeBackend):
    """ONNX Runtime declaring TensorRT's needs: shape ranges, and no dynamic INT8 (a stand-in, builds nothing)."""

    name = "tensorrt"
    options_type = TensorRTOptions
    capabilities = TensorRTBackend.capabilities
    refusal = TensorRTBackend.refusal


def test_the_session_asks_capabilities_not_names(tmp_path):
    wb = Workbench(make_labelled_sample(), cache_dir=tmp_path, progress=False,
                   shape_range={"batch": (1, 8, 32)})
    engine = _RangeEngine()
    wb._backends[engine.name] = engine
    assert wb._options(engine).shape_range == wb._profile_ranges()  # given because it declares shape_ranges
    assert not hasattr(wb._options(wb._backend("onnxruntime")), "shape_range")
    with pytest.raises(PrecisionError, match="dynamic INT8"):
        wb.prepare(PrecisionPlan("int8", method="dynamic"), backend=engine.name)
    assert wb.prepare(PrecisionPlan("int8"), backend=engine.name).plan.method == "minmax"


def test_tensorrt_declares_a_gpu_with_shape_ranges_and_takes_calibrated_int8():
    assert TensorRTBackend.capabilities.device == "gpu" and TensorRTBackend.capabilities.shape_ranges
    assert TensorRTBackend.refusal(None, PrecisionPlan("int8")) is None


def _name_tests(source: str, where: str) -> list[str]:
    """Comparisons of something named like an engine (`backend`, `.backend`, `.name`) with an engine's name."""
    names = set(backend_names())
    found = []
    for node in ast.walk(ast.parse(source, where)):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        constants = {c.value for o in operands for c in ast.walk(o) if isinstance(c, ast.Constant)}
        subject = " ".join(ast.unparse(o) for o in operands if not isinstance(o, (ast.Constant, ast.Tuple, ast.Set)))
        if constants & names and ("backend" in subject or subject.endswith(".name") or subject == "name"):
            found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_caller_recognises_an_engine_by_its_name():
    callers = [p for p in PACKAGE.rglob("*.py") if "backends" not in p.relative_to(PACKAGE).parts]
    assert [problem for path in callers for problem in _name_tests(path.read_text(), str(path))] == []


def test_the_name_reader_sees_a_name_test():
    source = ('tensorrt = result.backend == "tensorrt"\nif backend.name in ("onnxruntime", "x"): pass\n'
              'style = plan.qdq_style == "tensorrt"\n')
    assert _name_tests(source, "sample.py") == ["sample.py:1: result.backend == 'tensorrt'",
                                                "sample.py:2: backend.name in ('onnxruntime', 'x')"]

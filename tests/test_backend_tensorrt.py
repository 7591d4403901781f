"""Our logic around TensorRT, tested with TEST DOUBLES injected as `tensorrt` (and `torch` where a GPU is
needed) in sys.modules. This is NOT a TensorRT run: no engine is built and nothing runs on a GPU. What is
checked: network flags for 10.x vs 11.x, profile shapes from shape_range, the build sequence (workspace,
verbosity, timing cache, optimisation profile), inspector JSON -> EngineGraph, IProfiler accumulation, the
engine cache with its sidecar metadata, and the errors without TensorRT or without a GPU.
"""
from __future__ import annotations

import json
import sys
import types

import pytest
from tensorrt_double import tensorrt_module

from workbench.backends import engine_options, get_backend
from workbench.backends.tensorrt import TensorRTOptions
from workbench.backends import tensorrt as trt_backend
from workbench.errors import BackendError, InputSpecError, MissingDependencyError

INSPECTOR_JSON = json.dumps({"Bindings": ["input", "probs"], "Layers": [
    {"Name": "conv1 + bn1 + relu1", "LayerType": "CaskConvolution", "Metadata": "[ONNX Layer: conv1]\x1f"
     "[ONNX Layer: bn1]\x1f[ONNX Layer: relu1]", "Inputs": [{"Name": "input", "Format/Datatype": "Float"}],
     "Outputs": [{"Name": "r1", "Format/Datatype": "Float"}], "TacticName": "sm80_conv"},
    {"Name": "{ForeignNode[conv2...softmax]}", "LayerType": "Myelin",
     "Inputs": [{"Name": "r1", "Format/Datatype": "Float"}], "Outputs": [{"Name": "probs", "Format/Datatype": "Float"}]},
]})


class _Recorder:
    """Collects every call the fakes receive, in order."""

    def __init__(self):
        self.calls = []

    def __call__(self, *args):
        self.calls.append(args)


def fake_tensorrt(version: str = "10.3.0", *, parse_ok: bool = True, build_ok: bool = True):
    """A stand-in for the `tensorrt` module with just the API the backend uses; it records calls."""
    trt = tensorrt_module(version)
    log = trt.log = _Recorder()

    class Logger:
        WARNING = "warning"

        def __init__(self, severity):
            self.severity = severity

    class IProfiler:
        def __init__(self):
            self.base_initialised = True

    class TimingCache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return self.data + b"|timed"

    class Config:
        profiling_verbosity = None

        def set_memory_pool_limit(self, pool, size):
            log("pool", pool, size)

        def create_timing_cache(self, data):
            log("timing cache in", bytes(data))
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache

        def get_timing_cache(self):
            return self.cache

        def add_optimization_profile(self, profile):
            log("profile", dict(profile.shapes))

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    class Parser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            pass

        def parse(self, data):
            log("parse", len(data))
            return parse_ok

        def get_error(self, i):
            return "In node 3 (Conv): unsupported auto_pad"

    class Builder:
        def __init__(self, logger):
            log("builder")

        def create_network(self, flags):
            log("network flags", flags)
            return object()

        def create_builder_config(self):
            self.config = Config()
            return self.config

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            log("verbosity", config.profiling_verbosity)
            return b"ENGINE-BYTES" if build_ok else None

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ["input", "probs"][i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "input" else trt.TensorIOMode.OUTPUT

        def create_execution_context(self):
            return object()

        def create_engine_inspector(self):
            inspector = types.SimpleNamespace()
            inspector.get_engine_information = lambda fmt: INSPECTOR_JSON if fmt == trt.LayerInformationFormat.JSON \
                else "conv1 + bn1 + relu1"
            return inspector

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            log("deserialize", bytes(data))
            return Engine()

    trt.Logger, trt.IProfiler, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, IProfiler, Builder, Parser, Runtime
    return trt


def fake_torch(gpu: bool):
    """A stand-in for `torch` whose torch.cuda reports one A100 (gpu=True) or no GPU."""
    torch = types.ModuleType("torch")
    torch.cuda = types.SimpleNamespace(is_available=lambda: gpu, device_count=lambda: int(gpu),
                                       get_device_name=lambda i: "NVIDIA A100 80GB PCIe",
                                       get_device_capability=lambda i: (8, 0))
    return torch


def test_network_flags_for_10x_and_11x():
    assert trt_backend.network_flags(fake_tensorrt("10.3.0")) == 1 << 1  # the STRONGLY_TYPED bit
    trt11 = fake_tensorrt("11.0.0")
    del trt11.NetworkDefinitionCreationFlag  # 11.x: strongly typed always, no flag needed
    assert trt_backend.network_flags(trt11) == 0
    with pytest.raises(BackendError, match="needs TensorRT 10.x or 11.x"):
        trt_backend.network_flags(fake_tensorrt("8.6.1"))


def test_profile_shapes_default_batch_and_shape_range(tiny_cnn):
    shapes = trt_backend.profile_shapes(tiny_cnn.inputs)
    assert shapes == {"input": ((1, 1, 8, 8), (8, 1, 8, 8), (32, 1, 8, 8))}
    shapes = trt_backend.profile_shapes(tiny_cnn.inputs, (("input", (2, 1, 8, 8), (4, 1, 8, 8), (16, 1, 8, 8)),))
    assert shapes["input"] == ((2, 1, 8, 8), (4, 1, 8, 8), (16, 1, 8, 8))
    assert trt_backend.profile_shapes(tiny_cnn.inputs, opt_batch=64, max_batch=16)["input"][1][0] == 16


@pytest.mark.parametrize("shape_range, message", [
    ((("image", (1, 1, 8, 8), (1, 1, 8, 8), (1, 1, 8, 8)),), "model's inputs are input"),
    ((("input", (1, 8, 8), (1, 8, 8), (1, 8, 8)),), "must give 4 dims"),
    ((("input", (4, 1, 8, 8), (2, 1, 8, 8), (8, 1, 8, 8)),), "min <= opt <= max"),
    ((("input", (1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8)),), "fixed size 1"),
    ((("input", (1, 1, 8, 8)),), "must be \\(input_name"),
])
def test_profile_shapes_rejects_bad_ranges(tiny_cnn, shape_range, message):
    with pytest.raises(InputSpecError, match=message):
        trt_backend.profile_shapes(tiny_cnn.inputs, shape_range)


def test_dynamic_non_batch_axis_needs_a_range():
    from workbench.models.spec import TensorSpec

    with pytest.raises(InputSpecError, match="dynamic axis 1 \\('seq'\\)"):
        trt_backend.profile_shapes([TensorSpec("ids", "int64", ("batch", "seq"))])


def test_build_sequence_and_timing_cache_persistence(tmp_path):
    trt = fake_tensorrt("10.3.0")
    shapes = {"input": ((1, 1, 8, 8), (8, 1, 8, 8), (32, 1, 8, 8))}
    cache = tmp_path / "timing.cache"
    data = trt_backend.build_serialized_engine(trt, b"onnx", shapes, workspace_mb=256, timing_cache=cache)
    assert data == b"ENGINE-BYTES"
    calls = {c[0]: c[1:] for c in trt.log.calls}
    assert calls["network flags"] == (2,)
    assert calls["pool"] == (trt.MemoryPoolType.WORKSPACE, 256 << 20)
    assert calls["verbosity"] == (trt.ProfilingVerbosity.DETAILED,)
    assert calls["profile"] == (shapes,)
    assert calls["timing cache in"] == (b"",) and cache.read_bytes() == b"|timed"
    trt_backend.build_serialized_engine(trt, b"onnx", shapes, workspace_mb=256, timing_cache=cache)
    assert [c for c in trt.log.calls if c[0] == "timing cache in"][-1] == ("timing cache in", b"|timed")


def test_build_failures_are_backend_errors():
    shapes = {"input": ((1, 1, 8, 8),) * 3}
    with pytest.raises(BackendError, match="parser rejected the model: In node 3 \\(Conv\\): unsupported auto_pad"):
        trt_backend.build_serialized_engine(fake_tensorrt(parse_ok=False), b"onnx", shapes, workspace_mb=64)
    with pytest.raises(BackendError, match="returned None"):
        trt_backend.build_serialized_engine(fake_tensorrt(build_ok=False), b"onnx", shapes, workspace_mb=64)


def test_layer_profiler_accumulates_means():
    trt = fake_tensorrt()
    profiler = trt_backend.make_layer_profiler(trt)
    assert isinstance(profiler, trt.IProfiler) and profiler.base_initialised
    for ms in (1.0, 2.0, 3.0):
        profiler.report_layer_time("conv", ms)
        profiler.report_layer_time("fc", ms / 10)
    timings = {t.name: t for t in profiler.timings()}
    assert timings["conv"].latency_ms == pytest.approx(2.0) and timings["conv"].count == 3
    assert timings["fc"].latency_ms == pytest.approx(0.2)


def test_inspector_json_to_engine_graph(tiny_cnn):
    graph = trt_backend.engine_graph_from_inspector(INSPECTOR_JSON, tiny_cnn.node_names)
    assert graph.backend == "tensorrt"
    assert graph.layers[0].onnx_nodes == ["conv1", "bn1", "relu1"] and graph.layers[0].kernel == "sm80_conv"
    assert graph.layers[1].onnx_nodes == ["conv2", "softmax"]  # a Myelin region: only first and last are named
    assert set(graph.unmapped_nodes()) == {"bn2", "add", "relu2", "gap", "flatten", "fc"}
    with pytest.raises(BackendError, match="not JSON"):
        trt_backend.engine_graph_from_inspector("conv1 + bn1", tiny_cnn.node_names)


def test_engine_cache_with_sidecar(tmp_path):
    meta = {"tensorrt_version": "10.3.0", "device": "A100", "compute_capability": [8, 0]}
    path = trt_backend.write_engine(tmp_path, "k", b"ENGINE", {**meta, "model_sha256": "abc"})
    sidecar = json.loads(path.with_name("k.engine.json").read_text())
    assert sidecar["model_sha256"] == "abc" and len(sidecar["engine_sha256"]) == 64
    assert trt_backend.read_engine(tmp_path, "k", meta) == b"ENGINE"
    assert trt_backend.read_engine(tmp_path, "k", {**meta, "tensorrt_version": "11.0.0"}) is None
    assert trt_backend.read_engine(tmp_path, "missing", meta) is None
    path.write_bytes(b"TRUNCATED")
    assert trt_backend.read_engine(tmp_path, "k", meta) is None


def test_accelerated_precisions_by_compute_capability():
    assert trt_backend.accelerated_for_capability((8, 0)) == {"fp32": True, "fp16": True, "bf16": True, "int8": True}
    assert trt_backend.accelerated_for_capability((7, 5)) == {"fp32": True, "fp16": True, "bf16": False, "int8": True}
    assert trt_backend.accelerated_for_capability((6, 1))["fp16"] is False


def test_without_tensorrt_installed_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    with pytest.raises(MissingDependencyError, match="pip install tensorrt") as info:
        get_backend("tensorrt")
    assert "NVIDIA GPU" in str(info.value)


def test_without_a_gpu_is_a_backend_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
    monkeypatch.setitem(sys.modules, "torch", fake_torch(gpu=False))
    with pytest.raises(BackendError, match="needs an NVIDIA GPU"):
        get_backend("tensorrt")


def test_build_uses_the_engine_cache_and_the_plan_parser(monkeypatch, tmp_path, tiny_cnn):
    trt = fake_tensorrt("11.0.0")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "torch", fake_torch(gpu=True))
    backend = get_backend("tensorrt", cache_dir=tmp_path)
    assert backend.version() == "11.0.0" and backend.accelerated("bf16")
    with pytest.raises(BackendError, match="no option 'threads' .it is an option of onnxruntime, openvino"):
        engine_options(backend, workspace_mb=128, threads=2)
    engine = backend.build(tiny_cnn.proto, engine_options(backend, workspace_mb=128))
    assert [c for c in trt.log.calls if c[0] == "network flags"] == [("network flags", 0)]
    assert engine.input_names == ["input"] and engine.output_names == ["probs"]
    assert engine.layers().layers[0].onnx_nodes == ["conv1", "bn1", "relu1"]
    sidecars = list((tmp_path / "tensorrt").glob("*.engine.json"))
    assert len(sidecars) == 1 and json.loads(sidecars[0].read_text())["device"] == "NVIDIA A100 80GB PCIe"
    again = backend.build(tiny_cnn.proto, TensorRTOptions(workspace_mb=128))
    assert sum(c[0] == "builder" for c in trt.log.calls) == 1  # second build came from the cache
    assert any("loaded from the cache" in n for n in again.notes)
    backend.build(tiny_cnn.proto, TensorRTOptions(workspace_mb=256))  # another workspace is another engine
    assert sum(c[0] == "builder" for c in trt.log.calls) == 2
    with pytest.raises(BackendError, match="needs a workbench Model"):
        backend.build("model.onnx")


def test_dynamic_int8_models_are_refused_with_the_fix(monkeypatch, tmp_path):
    from test_dynamic import make_mlp

    from workbench.precision import PrecisionPlan, apply_plan

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("11.0.0"))
    monkeypatch.setitem(sys.modules, "torch", fake_torch(gpu=True))
    backend = get_backend("tensorrt", cache_dir=tmp_path)
    dynamic = apply_plan(make_mlp(), PrecisionPlan("int8", method="dynamic"), progress=False)
    with pytest.raises(BackendError, match="DynamicQuantizeLinear, MatMulInteger: dynamic INT8.*calibrated INT8"):
        backend.build(dynamic)
    assert backend.build(make_mlp()).layers().layers  # the same model unquantised is not refused

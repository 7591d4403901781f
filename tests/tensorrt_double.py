"""A TEST DOUBLE of `tensorrt` and `torch.cuda` that really executes: NOT TensorRT, and nothing runs on a GPU.

`TensorRTDouble` stands in for the `tensorrt` module: its builder keeps the ONNX bytes as the "engine", its
execution contexts run that ONNX graph with ONNX Runtime on the CPU, its inspector describes one layer per ONNX node
(engine-inspector JSON, read by the real plan parser), and an attached IProfiler gets one time per layer per run.
`TorchDouble` stands in for `torch`: "device" tensors are numpy arrays with fake addresses, and it counts
allocations, so tests can check that the TensorRT engine allocates device buffers once per shape and reuses them.
With these, the TensorRT backend's own logic (binding, buffer reuse, warm-up, profiling, feed checks, close) runs
end to end in the engine-contract suite.
"""
from __future__ import annotations

import enum
import itertools
import json
import time
import types

import numpy as np
import onnx
import onnxruntime as ort


class _DeviceTensor:
    _addresses = itertools.count(0x1000, 0x100)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.address = next(self._addresses)

    @property
    def dtype(self):
        return self.array.dtype

    def data_ptr(self) -> int:
        return self.address

    def copy_(self, source: "_DeviceTensor") -> "_DeviceTensor":
        np.copyto(self.array, source.array.reshape(self.array.shape))
        return self

    def cpu(self) -> "_DeviceTensor":
        return _DeviceTensor(self.array.copy())

    def numpy(self) -> np.ndarray:
        return self.array


class TorchDouble(types.ModuleType):
    """`torch` with one fake CUDA device; `allocations` counts device buffers created with `empty`."""

    def __init__(self) -> None:
        super().__init__("torch")
        self.allocations = 0
        self.registry: dict[int, _DeviceTensor] = {}
        stream = types.SimpleNamespace(cuda_stream=0, synchronize=lambda: None)
        self.cuda = types.SimpleNamespace(
            is_available=lambda: True, device_count=lambda: 1, get_device_name=lambda i: "TensorRTDouble GPU",
            get_device_capability=lambda i: (8, 0), current_stream=lambda: stream, Event=_Event)

    def empty(self, shape, device=None, dtype=None) -> _DeviceTensor:
        self.allocations += 1
        tensor = _DeviceTensor(np.empty(tuple(int(d) for d in shape), dtype=dtype))
        self.registry[tensor.address] = tensor
        return tensor

    def from_numpy(self, array: np.ndarray) -> _DeviceTensor:
        return _DeviceTensor(np.asarray(array))


class _Event:
    def __init__(self, enable_timing: bool = False) -> None:
        self.t = 0.0

    def record(self) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end: "_Event") -> float:
        return (end.t - self.t) * 1e3


def _np_dtype(elem_type: int) -> np.dtype:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))


def tensorrt_module(version: str) -> types.ModuleType:
    """An empty `tensorrt` module with the version and the enums the backend reads (shared by the test fakes)."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag",
                                                     {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1})
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", ["WORKSPACE"])
    trt.ProfilingVerbosity = enum.Enum("ProfilingVerbosity", ["LAYER_NAMES_ONLY", "DETAILED"])
    trt.LayerInformationFormat = enum.Enum("LayerInformationFormat", ["ONELINE", "JSON"])
    trt.TensorIOMode = enum.Enum("TensorIOMode", ["INPUT", "OUTPUT"])
    return trt


def TensorRTDouble(torch: TorchDouble, version: str = "10.8.0") -> types.ModuleType:
    """The `tensorrt` module double, executing on ONNX Runtime; device memory comes from `torch` (a TorchDouble)."""
    trt = tensorrt_module(version)
    trt.nptype = lambda dtype: dtype  # the double's tensor dtypes are numpy dtypes already

    class Logger:
        WARNING = "warning"

        def __init__(self, severity) -> None:
            pass

    class IProfiler:
        def __init__(self) -> None:
            pass

    class _Config:
        profiling_verbosity = None

        def set_memory_pool_limit(self, pool, size) -> None:
            pass

        def create_timing_cache(self, data):
            return types.SimpleNamespace(serialize=lambda: b"timing")

        def set_timing_cache(self, cache, ignore_mismatch) -> None:
            self.cache = cache

        def get_timing_cache(self):
            return self.cache

        def add_optimization_profile(self, profile) -> None:
            pass

    class _Network:
        model_bytes = b""

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger) -> None:
            self.network = network

        def parse(self, data: bytes) -> bool:
            self.network.model_bytes = bytes(data)
            return True

    class Builder:
        def __init__(self, logger) -> None:
            pass

        def create_network(self, flags):
            return _Network()

        def create_builder_config(self):
            return _Config()

        def create_optimization_profile(self):
            return types.SimpleNamespace(set_shape=lambda *args: None)

        def build_serialized_network(self, network, config):
            return network.model_bytes

    class _Context:
        def __init__(self, engine: "_Engine") -> None:
            self.engine = engine
            self.shapes: dict[str, tuple] = {}
            self.addresses: dict[str, int] = {}
            self.profiler = None

        def set_input_shape(self, name: str, shape) -> bool:
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> tuple:
            feeds = {n: np.zeros(self.shapes[n], self.engine.dtypes[n]) for n in self.engine.input_names}
            return self.engine.session.run([name], feeds)[0].shape

        def set_tensor_address(self, name: str, address: int) -> None:
            self.addresses[name] = address

        def execute_async_v3(self, stream) -> bool:
            feeds = {n: torch.registry[self.addresses[n]].array for n in self.engine.input_names}
            start = time.perf_counter()
            outputs = self.engine.session.run(self.engine.output_names, feeds)
            elapsed_ms = (time.perf_counter() - start) * 1e3
            for name, value in zip(self.engine.output_names, outputs):
                np.copyto(torch.registry[self.addresses[name]].array, value)
            if self.profiler is not None:
                for layer in self.engine.layer_names:
                    self.profiler.report_layer_time(layer, elapsed_ms / len(self.engine.layer_names))
            return True

    class _Engine:
        def __init__(self, model_bytes: bytes) -> None:
            model = onnx.load_from_string(model_bytes)
            self.session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
            initializers = {init.name for init in model.graph.initializer}
            inputs = [v for v in model.graph.input if v.name not in initializers]
            self.input_names = [v.name for v in inputs]
            self.output_names = [v.name for v in model.graph.output]
            self.dtypes = {v.name: _np_dtype(v.type.tensor_type.elem_type) for v in [*inputs, *model.graph.output]}
            self.nodes = list(model.graph.node)
            self.layer_names = [f"layer {node.name}" for node in self.nodes]
            self.num_io_tensors = len(self.input_names) + len(self.output_names)

        def get_tensor_name(self, i: int) -> str:
            return [*self.input_names, *self.output_names][i]

        def get_tensor_mode(self, name: str):
            return trt.TensorIOMode.INPUT if name in self.input_names else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str):
            return self.dtypes[name]

        def create_execution_context(self):
            return _Context(self)

        def create_engine_inspector(self):
            layers = [{"Name": name, "LayerType": node.op_type, "Metadata": f"[ONNX Layer: {node.name}]",
                       "Inputs": [{"Name": t, "Format/Datatype": "Float"} for t in node.input if t],
                       "Outputs": [{"Name": t, "Format/Datatype": "Float"} for t in node.output if t]}
                      for name, node in zip(self.layer_names, self.nodes)]
            info = json.dumps({"Bindings": [*self.input_names, *self.output_names], "Layers": layers})
            return types.SimpleNamespace(get_engine_information=lambda fmt: info)

    class Runtime:
        def __init__(self, logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes):
            return _Engine(bytes(data))

    trt.Logger, trt.IProfiler, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, IProfiler, Builder, OnnxParser, Runtime
    return trt

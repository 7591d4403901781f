"""TensorRT backend (NVIDIA GPU): builds strongly typed engines from precision-baked ONNX models.

Written against the documented TensorRT 10.x/11.x Python API: `trt.Builder`, `create_network` (10.x with
`NetworkDefinitionCreationFlag.STRONGLY_TYPED`; 11.x networks are always strongly typed), `trt.OnnxParser`,
a WORKSPACE memory-pool limit, a timing cache persisted in the workbench cache dir, one optimisation profile
from `TensorRTOptions.shape_range` (default: batch 1 / opt / max), DETAILED profiling verbosity, the engine
inspector's JSON read by `workbench.trtplan.parse` (the same code that imports plans built elsewhere), per-layer
times from an `IProfiler` subclass and device time from CUDA events. GPU buffers, streams and events come from
torch.cuda. The serialised engine is cached with a sidecar JSON (TensorRT engines have no metadata field).

`import tensorrt` happens when the backend is constructed. The unit tests in tests/test_backend_tensorrt.py
exercise this module's own logic against a test double injected as `tensorrt`: they are NOT a TensorRT run,
and nothing here has been run on a GPU by those tests.
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .._version import __version__
from .._optional import require
from ..cache import ResultCache, atomic_write
from ..errors import BackendError, InputSpecError
from ..jobs import CancelToken
from ..jobs import check as check_cancel
from ..models.spec import Model, TensorSpec
from ..engine import Backend, Capabilities, Engine, EngineGraph, EngineOptions, LayerTiming
from ..trtplan.parse import engine_graph, parse_graph

NAME = "tensorrt"
NO_GPU = ("TensorRT needs an NVIDIA GPU with a working driver, and torch.cuda finds none on this machine. "
          "Use backend='onnxruntime' or 'openvino' here, or import engine plans built on a GPU with "
          "workbench.trtplan.load_plan_dir().")


# what dynamic INT8 (precision.dynamic) produces; TensorRT's parser supports none of them
ORT_INTEGER_OPS = frozenset({"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"})
DYNAMIC_REFUSED = ("TensorRT's ONNX parser does not take dynamic INT8 (ONNX Runtime's integer ops): TensorRT quantises "
                   "through Q/DQ nodes. Use a calibrated INT8 method (minmax, entropy, percentile), best with "
                   "qdq_style='tensorrt'.")


def import_tensorrt():
    """The `tensorrt` module, or MissingDependencyError saying what to install."""
    return require("tensorrt", pip="tensorrt",
                   purpose="the TensorRT backend; install it on a machine with an NVIDIA GPU and driver")


def tensorrt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


def network_flags(trt) -> int:
    """`create_network` flags: STRONGLY_TYPED on 10.x (precision comes from the ONNX casts and Q/DQ nodes, not
    builder flags); 0 on 11.x, where every network is strongly typed and EXPLICIT_BATCH is gone."""
    major = tensorrt_major(trt)
    if major < 10:
        raise BackendError(f"TensorRT {trt.__version__} is too old: the workbench needs TensorRT 10.x or 11.x "
                           "(pip install -U tensorrt).")
    if major == 10:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def accelerated_for_capability(capability: tuple[int, int]) -> dict[str, bool]:
    """Which precisions have fast kernels on a GPU of this CUDA compute capability."""
    cc = tuple(capability)
    return {"fp32": True, "fp16": cc >= (7, 0) or cc == (6, 0), "bf16": cc >= (8, 0), "int8": cc >= (6, 1)}


def profile_shapes(inputs: Sequence[TensorSpec], shape_range: Sequence = (), *, opt_batch: int = 8,
                   max_batch: int = 32) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shape per input for the optimisation profile.

    `shape_range` entries `(name, min, opt, max)` win; other inputs with a dynamic first axis get batch
    1 / opt_batch / max_batch; any other dynamic axis must be given in `shape_range`.
    """
    given = {}
    known = {spec.name: spec for spec in inputs}
    for entry in shape_range:
        if len(entry) != 4:
            raise InputSpecError(f"shape_range entry {entry!r} must be (input_name, min_shape, opt_shape, max_shape).")
        name, *triple = entry
        if name not in known:
            raise InputSpecError(f"shape_range names input {name!r}, but the model's inputs are "
                                 f"{', '.join(known)}: use one of those names.")
        given[name] = tuple(tuple(int(d) for d in shape) for shape in triple)
    shapes = {}
    for spec in inputs:
        if spec.name in given:
            shapes[spec.name] = _checked_range(spec, *given[spec.name])
            continue
        lo, opt, hi = [], [], []
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int):
                lo.append(dim), opt.append(dim), hi.append(dim)
            elif axis == 0:
                lo.append(1), opt.append(min(opt_batch, max_batch)), hi.append(max_batch)
            else:
                raise InputSpecError(f"Input {spec.name!r} has a dynamic axis {axis} ({dim!r}): give its range as "
                                     f"TensorRTOptions(shape_range=(({spec.name!r}, min_shape, opt_shape, max_shape),)) (or "
                                     "Workbench(shape_range={axis_name: (min, opt, max)})).")
        shapes[spec.name] = (tuple(lo), tuple(opt), tuple(hi))
    return shapes


def _checked_range(spec: TensorSpec, lo, opt, hi):
    if not len(lo) == len(opt) == len(hi) == len(spec.shape):
        raise InputSpecError(f"shape_range for {spec.name!r} must give {len(spec.shape)} dims per shape "
                             f"(model shape {list(spec.shape)}), got {list(lo)}, {list(opt)}, {list(hi)}.")
    for axis, dim in enumerate(spec.shape):
        if not lo[axis] <= opt[axis] <= hi[axis] or lo[axis] < 1:
            raise InputSpecError(f"shape_range for {spec.name!r} axis {axis}: need 1 <= min <= opt <= max, "
                                 f"got {lo[axis]}, {opt[axis]}, {hi[axis]}.")
        if isinstance(dim, int) and not lo[axis] == hi[axis] == dim:
            raise InputSpecError(f"shape_range for {spec.name!r} axis {axis} must stay at the model's fixed "
                                 f"size {dim}, got {lo[axis]}..{hi[axis]}.")
    return lo, opt, hi


def build_serialized_engine(trt, model_bytes: bytes, shapes: dict, *, workspace_mb: int,
                            timing_cache: Path | None = None, logger=None) -> bytes:
    """Parse ONNX bytes and build a serialised engine with one optimisation profile and DETAILED verbosity.

    The timing cache file is read before and rewritten after the build, so repeated builds skip kernel timing.
    """
    logger = logger or trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT's ONNX parser rejected the model: {errors or 'no details'}. Check the ops "
                           "against the TensorRT ONNX operator support list, or simplify the model.")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    previous = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(previous), False)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError("TensorRT could not build an engine (build_serialized_network returned None): see the "
                           "TensorRT log above; a larger TensorRTOptions.workspace_mb or smaller shape_range may help.")
    if timing_cache is not None:
        atomic_write(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(serialized))


def make_layer_profiler(trt):
    """An `IProfiler` that sums each layer's reported ms over inferences; `.timings()` gives the means."""

    class LayerProfiler(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.total_ms: dict[str, float] = defaultdict(float)
            self.calls: dict[str, int] = defaultdict(int)

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.total_ms[layer_name] += float(ms)
            self.calls[layer_name] += 1

        def timings(self) -> list[LayerTiming]:
            return [LayerTiming(name, self.total_ms[name] / self.calls[name], self.calls[name])
                    for name in self.total_ms]

    return LayerProfiler()


def engine_graph_from_inspector(info_json: str, source_nodes: Sequence[str]) -> EngineGraph:
    """Engine-inspector JSON text -> EngineGraph, through the same parser as imported plans."""
    try:
        data = json.loads(info_json)
    except json.JSONDecodeError as exc:
        raise BackendError(f"The TensorRT engine inspector returned text that is not JSON ({exc}).") from exc
    return engine_graph(parse_graph(data).layers, list(source_nodes), backend=NAME,
                        device=TensorRTBackend.capabilities.device)


def write_engine(directory: Path, key: str, engine_bytes: bytes, metadata: dict) -> Path:
    """Save `<key>.engine` and its sidecar `<key>.engine.json` (what built it, for which GPU)."""
    path = directory / f"{key}.engine"
    atomic_write(path, engine_bytes)
    sidecar = {**metadata, "engine_sha256": hashlib.sha256(engine_bytes).hexdigest()}
    atomic_write(path.with_name(path.name + ".json"), json.dumps(sidecar, indent=2, sort_keys=True).encode())
    return path


def read_engine(directory: Path, key: str, expect: dict) -> bytes | None:
    """Cached engine bytes when the sidecar matches `expect` (TensorRT version, device...) and the bytes are
    intact; else None (a miss: the caller rebuilds and overwrites)."""
    path = directory / f"{key}.engine"
    try:
        sidecar = json.loads(path.with_name(path.name + ".json").read_text())
        data = path.read_bytes()
    except (OSError, json.JSONDecodeError):
        return None
    if any(sidecar.get(k) != v for k, v in expect.items()):
        return None
    if sidecar.get("engine_sha256") != hashlib.sha256(data).hexdigest():
        return None
    return data


def _cuda(device: int):
    """torch with a usable CUDA device, and that device's name and compute capability."""
    torch = require("torch", extra="torch", purpose="GPU buffers, streams and CUDA-event timing for TensorRT")
    if not torch.cuda.is_available() or torch.cuda.device_count() <= device:
        raise BackendError(NO_GPU)
    return torch, {"device": torch.cuda.get_device_name(device),
                   "compute_capability": list(torch.cuda.get_device_capability(device))}


@dataclass(frozen=True)
class TensorRTOptions(EngineOptions):
    """`workspace_mb`: the builder's workspace pool limit; `shape_range`: ((input_name, min_shape, opt_shape,
    max_shape), ...) for the optimisation profile of inputs with dynamic axes (the session fills it from its
    `shape_range`). There is no precision option: engines are strongly typed, precision comes from the ONNX graph."""

    workspace_mb: int = 1024
    shape_range: tuple = ()


class TensorRTBackend(Backend):
    """NVIDIA TensorRT on the local GPU. Engines are strongly typed: precision comes from the ONNX model."""

    name = NAME
    options_type = TensorRTOptions
    revision = 1  # 1: engine graphs record their device (cached results from before read as CPU ones)
    capabilities = Capabilities(device="gpu", shape_ranges=True, triton_platform="tensorrt_plan",
                                serialized_engine=True, package="tensorrt")

    def refusal(self, plan) -> str | None:
        if plan.precision == "int8" and plan.method == "dynamic":
            return DYNAMIC_REFUSED
        return None

    def __init__(self, cache_dir: str | Path | None = None, device: int = 0, opt_batch: int = 8,
                 max_batch: int = 32) -> None:
        self.trt = import_tensorrt()
        network_flags(self.trt)  # fail early on TensorRT < 10
        self.torch, self.gpu = _cuda(device)
        self.device = device
        self.opt_batch, self.max_batch = opt_batch, max_batch
        self.directory = ResultCache(cache_dir).directory / "tensorrt"
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)

    def version(self) -> str:
        return str(self.trt.__version__)

    def accelerated(self, precision: str, qdq_style: str | None = None) -> bool:
        # Q/DQ of either style fuses into INT8 kernels; the naive QAT placement costs reformats (see the linter).
        return accelerated_for_capability(tuple(self.gpu["compute_capability"])).get(precision, False)

    def build(self, model: Model, options: TensorRTOptions | None = None) -> "TensorRTEngine":
        """Build (or load from the cache dir) an engine for `model`; raise BackendError with the parser's errors."""
        options = options or TensorRTOptions()
        proto = self.graph_of(model)
        integer_ops = sorted({node.op_type for node in proto.graph.node} & ORT_INTEGER_OPS)
        if integer_ops:
            raise BackendError(f"The model uses ONNX Runtime's integer ops ({', '.join(integer_ops)}: dynamic INT8), "
                               f"which {DYNAMIC_REFUSED}")
        spec = Model.from_proto(proto, name=proto.graph.name or "model", source="TensorRTBackend.build")
        shapes = profile_shapes(spec.inputs, options.shape_range, opt_batch=self.opt_batch, max_batch=self.max_batch)
        model_bytes = spec.serialized()
        expect = {"tensorrt_version": self.version(), **self.gpu}
        key = ResultCache.key(model_sha256=spec.content_hash, shapes=shapes, workspace_mb=options.workspace_mb,
                              **expect)
        notes = []
        engine_bytes = read_engine(self.directory, key, expect)
        if engine_bytes is None:
            engine_bytes = build_serialized_engine(self.trt, model_bytes, shapes, workspace_mb=options.workspace_mb,
                                                   timing_cache=self.directory / "timing.cache", logger=self.logger)
            write_engine(self.directory, key, engine_bytes, {
                **expect, "workbench_version": __version__, "model_sha256": spec.content_hash,
                "inputs": [s.to_json() for s in spec.inputs], "outputs": [s.to_json() for s in spec.outputs],
                "profile_shapes": {k: [list(s) for s in v] for k, v in shapes.items()},
                "workspace_mb": options.workspace_mb})
        else:
            notes.append("Engine loaded from the cache dir (same model, shapes, TensorRT version and GPU).")
        engine = self.trt.Runtime(self.logger).deserialize_cuda_engine(engine_bytes)
        if engine is None:
            raise BackendError("TensorRT could not deserialise the engine it built; delete "
                               f"{self.directory} and build again.")
        return TensorRTEngine(self, engine, spec, notes)


class TensorRTEngine(Engine):
    """A deserialised TensorRT engine. Device buffers are allocated once per input shape and reused, so `run`
    times host-to-device copy, execution and device-to-host copy, never allocation; `device_latency_ms` times the
    GPU work alone."""

    backend = NAME

    def __init__(self, owner: TensorRTBackend, engine, model: Model, notes: list[str]) -> None:
        super().__init__(model.inputs, notes)
        self.trt, self.torch, self.engine = owner.trt, owner.torch, engine
        self.source_nodes = model.node_names
        self.output_names = [s.name for s in model.outputs]
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == self.trt.TensorIOMode.INPUT]
        self.context = engine.create_execution_context()
        self._profiling_context = None
        self._buffers: dict[tuple, dict] = {}  # (context id, input shapes) -> device tensors bound to it

    def _device_buffers(self, context, feeds: dict[str, np.ndarray]) -> dict:
        """The device tensors for these input shapes on `context` (allocated and bound on first use)."""
        shapes = tuple((name, tuple(feeds[name].shape)) for name in self.input_names)
        key = (id(context), shapes)
        if key not in self._buffers:
            buffers = {}
            for name, shape in shapes:
                if not context.set_input_shape(name, shape):
                    raise InputSpecError(f"Input {name!r} shape {shape} is outside the engine's optimisation "
                                         "profile: rebuild with a shape_range that covers it.")
                buffers[name] = self._empty(name, shape)
            for name in self.output_names:
                buffers[name] = self._empty(name, tuple(context.get_tensor_shape(name)))
            self._buffers[key] = buffers
        buffers = self._buffers[key]
        for name, shape in shapes:  # a context holds one shape per input: rebind when it alternates
            context.set_input_shape(name, shape)
        for name, tensor in buffers.items():
            context.set_tensor_address(name, tensor.data_ptr())
        return buffers

    def _empty(self, name: str, shape: tuple):
        dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))
        return self.torch.empty(shape, device="cuda", dtype=self.torch.from_numpy(np.empty(0, dtype)).dtype)

    def _upload(self, context, feeds: dict[str, np.ndarray]) -> dict:
        buffers = self._device_buffers(context, feeds)
        for name in self.input_names:
            array = np.ascontiguousarray(feeds[name], dtype=np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name))))
            buffers[name].copy_(self.torch.from_numpy(array))
        return buffers

    def _execute(self, context) -> None:
        stream = self.torch.cuda.current_stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise BackendError("TensorRT execute_async_v3 failed: see the TensorRT log above.")
        stream.synchronize()

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        buffers = self._upload(self.context, feeds)
        self._execute(self.context)
        return [buffers[name].cpu().numpy() for name in self.output_names]

    def device_latency_ms(self, feeds: dict[str, np.ndarray], runs: int = 20, warmup: int = 3) -> list[float]:
        """GPU time per inference from CUDA events (inputs already on the device; no host copies timed)."""
        self._check_open()
        self.check_feeds(feeds)
        self._upload(self.context, feeds)
        for _ in range(warmup):
            self._execute(self.context)
        times = []
        for _ in range(runs):
            start, end = (self.torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
            self.context.execute_async_v3(self.torch.cuda.current_stream().cuda_stream)
            end.record()
            end.synchronize()
            times.append(float(start.elapsed_time(end)))
        return times

    def layers(self) -> EngineGraph:
        inspector = self.engine.create_engine_inspector()
        info = inspector.get_engine_information(self.trt.LayerInformationFormat.JSON)
        return engine_graph_from_inspector(info, self.source_nodes)

    def _profile(self, feeds: dict[str, np.ndarray], *, runs: int, warmup: int,
                 progress: bool, cancel: CancelToken | None = None) -> list[LayerTiming]:
        """Per-layer mean ms over `runs` inferences after `warmup`, from an IProfiler on a second execution context
        (profiling slows every layer; the timing context stays unprofiled)."""
        if self._profiling_context is None:
            self._profiling_context = self.engine.create_execution_context()
        context = self._profiling_context
        self._upload(context, feeds)
        context.profiler = None
        for _ in range(warmup):
            check_cancel(cancel)
            self._execute(context)
        profiler = make_layer_profiler(self.trt)
        context.profiler = profiler
        for _ in range(runs):
            check_cancel(cancel)
            self._execute(context)
        context.profiler = None
        return profiler.timings()

    def _close(self) -> None:
        self._buffers.clear()
        self.context = self._profiling_context = self.engine = None

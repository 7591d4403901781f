"""ONNX Runtime CPU backend: engines with layer-fusion provenance and per-node profiling."""
from __future__ import annotations

import errno
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from tqdm.auto import tqdm

from ..engine import Backend, Capabilities, Engine, EngineGraph, EngineLayer, EngineOptions, LayerTiming
from ..errors import BackendError
from ..jobs import CancelToken
from ..jobs import check as check_cancel
from ..models.onnx_source import with_unique_node_names
from ..models.spec import Model, TensorSpec
from .cpu_features import has_flag, has_int8_dot
from .provenance import declared_types, element_types, qualified_op, trace

_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "layout": ort.GraphOptimizationLevel.ORT_ENABLE_LAYOUT,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
CPU_PROVIDER = "CPUExecutionProvider"
_INT8 = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
_FP16 = {onnx.TensorProto.FLOAT16}
_BF16 = {onnx.TensorProto.BFLOAT16}
_ERRORS_ONLY = 3  # ORT log severity: hide the "optimised model is hardware specific" warning we already note
# ONNX Runtime (1.32 here) quantises the float weights (and bias) of a Conv/Gemm/MatMul between a
# DequantizeLinear and a QuantizeLinear ("WeightBiasQuantization"): a node kept in FP32 between INT8 ones would run
# with INT8 weights (measured on efficientnet-lite0-fashion: its depthwise convolutions kept in FP32 drop agreement
# with FP32 from 96.6 % to 88.4 %). The workbench runs what the precision plan says, so it is off.
_DISABLED_OPTIMIZERS = ["WeightBiasQuantization"]


@dataclass(frozen=True)
class OnnxRuntimeOptions(EngineOptions):
    """`threads`: intra-op threads (None: ONNX Runtime's default); `optimization_level`: graph optimisation
    (disable, basic, extended, layout, all; "disable" shows the unfused graph); `provider`: the execution provider,
    one of `onnxruntime.get_available_providers()` (speed notes and `accelerated` describe the CPU provider)."""

    threads: int | None = None
    optimization_level: str = "all"
    provider: str = CPU_PROVIDER

    def to_json(self) -> dict:
        data = super().to_json()
        if self.provider == CPU_PROVIDER:  # absent: cache keys of results from before the option stay valid
            del data["provider"]
        return data


def int8_kernels() -> bool:
    """MLAS has u8s8 GEMM kernels from AVX2 up (VNNI makes them faster)."""
    return has_int8_dot() or has_flag("avx2")


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on the CPU execution provider (the default backend)."""

    name = "onnxruntime"
    options_type = OnnxRuntimeOptions
    thread_independent_outputs = True  # MLAS splits work by output blocks: same outputs at any thread count
    revision = 1  # 1: WeightBiasQuantization off (FP32-kept nodes keep float weights)
    capabilities = Capabilities(device="cpu", triton_platform="onnxruntime_onnx")

    def option_choices(self) -> dict[str, tuple]:
        return {"optimization_level": tuple(_LEVELS), "provider": tuple(ort.get_available_providers())}

    def version(self) -> str:
        return ort.__version__

    def accelerated(self, precision: str, qdq_style: str | None = None) -> bool:
        # FP16/BF16 graphs run through FP32 kernels (ORT inserts casts) on the x86 CPU provider. Q/DQ placed for
        # TensorRT (symmetric int8 on inputs and residual Adds) does not fuse into ORT's integer kernels: its DQ
        # nodes run standalone and the convolutions stay FP32 (measured 2-5x slower than FP32).
        if precision == "int8":
            return qdq_style != "tensorrt" and int8_kernels()
        return precision == "fp32"

    def build(self, model: Model, options: OnnxRuntimeOptions | None = None) -> "OnnxRuntimeEngine":
        """Create a CPU InferenceSession at `options.optimization_level`; keep the optimised graph for inspection."""
        options = options or OnnxRuntimeOptions()
        proto = self.graph_of(model)
        if options.optimization_level not in _LEVELS:
            raise BackendError(f"Unknown ONNX Runtime optimization level {options.optimization_level!r}: "
                               f"choose one of {', '.join(_LEVELS)}.")
        providers = self.option_choices()["provider"]
        if options.provider not in providers:
            raise BackendError(f"ONNX Runtime has no execution provider {options.provider!r} here (this build has "
                               f"{', '.join(providers)}): pick one of those, or install the onnxruntime package "
                               "built with that provider.")
        return OnnxRuntimeEngine(with_unique_node_names(proto), options.optimization_level, options.threads,
                                 options.provider)


def _session_options(level: str, threads: int | None) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = _LEVELS[level]
    so.log_severity_level = _ERRORS_ONLY
    if threads:
        so.intra_op_num_threads = threads
    return so


def _write_problem(folder: Path, nbytes: int) -> str | None:
    """Why a file of `nbytes` cannot be written in `folder` (a file-size limit, a full disk), or None."""
    probe = folder / ".write-probe"
    try:
        with open(probe, "wb") as handle:
            handle.truncate(0)
            handle.write(b"\0" * nbytes)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        return "a file-size limit (ulimit -f)" if exc.errno == errno.EFBIG else (exc.strerror or str(exc))
    finally:
        probe.unlink(missing_ok=True)
    return None


class OnnxRuntimeEngine(Engine):
    """A built ONNX Runtime CPU session plus its optimised graph (`optimized_model()`) and caveats (`notes`)."""

    backend = "onnxruntime"

    def __init__(self, model: onnx.ModelProto, level: str, threads: int | None, provider: str = CPU_PROVIDER) -> None:
        initializers = {init.name for init in model.graph.initializer}
        super().__init__([TensorSpec.from_value_info(v) for v in model.graph.input if v.name not in initializers])
        self.source_model = model
        self.level = level
        self.threads = threads
        self.providers = [provider]
        so = _session_options(level, threads)
        with tempfile.TemporaryDirectory(prefix="workbench-ort-") as tmp:
            so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            try:
                self.session = ort.InferenceSession(model.SerializeToString(), so, providers=self.providers,
                                                    disabled_optimizers=_DISABLED_OPTIMIZERS)
            except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, NotImplemented...)
                problem = _write_problem(Path(tmp), model.ByteSize())
                if problem:  # ORT reports a failed write of its optimised graph as a bad protobuf
                    raise BackendError(f"ONNX Runtime could not write the optimised graph to {tmp} ({problem}): "
                                       "raise the file-size limit (ulimit -f) or free space in the temporary "
                                       "folder ($TMPDIR); the model itself is not at fault.") from exc
                raise BackendError(f"ONNX Runtime could not build an engine from this model: {exc}. "
                                   "Check it with onnx.checker.check_model, or re-export it.") from exc
            # Names made unique so profiler events ("<node>_kernel_time") identify exactly one layer.
            self._optimized = with_unique_node_names(onnx.load(so.optimized_model_filepath))
        self.notes = self._notes()
        self._graph: EngineGraph | None = None

    def _notes(self) -> list[str]:
        notes = []
        types = declared_types(self.source_model)
        if types & _FP16:
            notes.append("fp16: runs in FP32 inside ONNX Runtime's CPU provider (it inserts casts); "
                         "latency is not accelerated.")
        if types & _BF16:
            notes.append("bf16: runs in FP32 inside ONNX Runtime's CPU provider; latency is not accelerated.")
        if types & _INT8 and not int8_kernels():
            notes.append("int8: this CPU has neither VNNI nor AVX2, so INT8 kernels are not faster than FP32.")
        return notes

    def optimized_model(self) -> onnx.ModelProto:
        """ONNX Runtime's optimised graph (at levels "layout"/"all" it holds ops for this CPU, e.g. NCHWc)."""
        return self._optimized

    def _close(self) -> None:
        del self.session

    # ---- running -------------------------------------------------------------------------------
    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self.session.run(None, feeds)
        except Exception as exc:
            raise BackendError(f"ONNX Runtime failed while running the model: {exc}") from exc

    # ---- inspection ----------------------------------------------------------------------------
    def layers(self) -> EngineGraph:
        """One layer per node of the optimised graph (execution order) with the original nodes it covers."""
        if self._graph is None:
            graph = self._optimized.graph
            covers = trace(self.source_model.graph, graph)
            types = element_types(self._optimized)
            layers = [
                EngineLayer(
                    name=node.name,
                    type=qualified_op(node),
                    precision=_precision([types.get(t) for t in list(node.input) + list(node.output) if t]),
                    onnx_nodes=covered,
                    inputs=[t for t in node.input if t],
                    outputs=[t for t in node.output if t],
                    input_shapes=[_shape(types.get(t)) for t in node.input if t],
                    output_shapes=[_shape(types.get(t)) for t in node.output if t],
                    inserted=not covered,
                )
                for node, covered in zip(graph.node, covers)
            ]
            self._graph = EngineGraph(
                backend=self.backend,
                layers=layers,
                source_nodes=[node.name for node in self.source_model.graph.node],
                measured_graph=f"ONNX Runtime {ort.__version__} CPU, optimised graph (level {self.level!r})",
                device=OnnxRuntimeBackend.capabilities.device,
            )
        return self._graph

    def _profile(self, feeds: dict[str, np.ndarray], *, runs: int, warmup: int,
                 progress: bool, cancel: CancelToken | None = None) -> list[LayerTiming]:
        """Time per inference of each layer over the typical of `runs` runs (after `warmup`), from ORT's profiler.

        Profiling needs its own session; it loads the optimised graph with optimisations off, so its nodes
        and names are exactly those of `layers()` (checked; a mismatch raises BackendError).
        """
        with tempfile.TemporaryDirectory(prefix="workbench-ort-profile-") as tmp:
            so = _session_options("disable", self.threads)
            # even at 'disable', ORT gives each consumer of a shared DequantizeLinear its own copy ("/duplicated"),
            # so an already-quantised graph would differ from the one the layers name; this turns that off
            so.add_session_config_entry("session.disable_quant_qdq", "1")
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(tmp) / "profile")
            so.optimized_model_filepath = str(Path(tmp) / "profiled.onnx")
            try:
                graph = with_input_weights(self._optimized, self.source_model)
                session = ort.InferenceSession(graph.SerializeToString(), so, providers=self.providers)
            except Exception as exc:
                raise BackendError(f"ONNX Runtime could not reload the optimised graph for profiling: {exc}") from exc
            profiled = [(n.name, n.op_type) for n in onnx.load(so.optimized_model_filepath).graph.node]
            if sorted(profiled) != sorted((n.name, n.op_type) for n in self._optimized.graph.node):
                raise BackendError("The profiling session's graph differs from the engine's optimised graph, so "
                                   "its timings would not match the layers: rebuild at optimization_level='disable'.")
            for _ in tqdm(range(warmup + runs), desc="profiling (onnxruntime)", disable=not progress, leave=False):
                check_cancel(cancel)
                session.run(None, feeds)
            events = json.loads(Path(session.end_profiling()).read_text())
        return _typical_node_times(events, warmup, runs)


def with_input_weights(optimized: onnx.ModelProto, source: onnx.ModelProto) -> onnx.ModelProto:
    """`optimized`, or a copy where graph inputs that are weights of `source` (initializers listed as inputs, as
    IR < 4 files do) get their values back: ORT's saved optimised graph keeps such inputs but not always their
    initializers, and a session on it would then ask for them as feeds. Inputs no node reads are dropped."""
    present = {init.name for init in optimized.graph.initializer}
    weights = {init.name: init for init in source.graph.initializer}
    read = {name for node in optimized.graph.node for name in node.input}
    missing = [v.name for v in optimized.graph.input if v.name in weights and v.name not in present]
    if not missing:
        return optimized
    repaired = onnx.ModelProto()
    repaired.CopyFrom(optimized)
    kept = [v for v in repaired.graph.input if v.name not in missing or v.name in read]
    del repaired.graph.input[:]
    repaired.graph.input.extend(kept)
    repaired.graph.initializer.extend(weights[name] for name in missing if name in read)
    return repaired


def _typical_node_times(events: list[dict], warmup: int, runs: int) -> list[LayerTiming]:
    """Per-node time per run over the typical timed runs of a Chrome-trace profile from ORT: the middle half of the
    timed runs ranked by summed kernel time (at least one), averaged per node.

    Not each node's own median: on a busy 2-core machine every run loses time to preemption in some node, a
    different one each run, so per-node medians leave that time out and sum to well under the median run. Averaging
    over the middle runs keeps it, so the layer times add up to a median run; slow outlier runs stay out.
    """
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                     if e.get("cat") == "Session" and e.get("name") == "model_run")[warmup:warmup + runs]
    if not windows:
        raise BackendError("ONNX Runtime's profile has no 'model_run' events to time layers by: "
                           f"check that onnxruntime {ort.__version__} writes Chrome-trace profiles.")
    starts = np.array([start for start, _ in windows])
    per_run: dict[str, np.ndarray] = {}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        run = int(np.searchsorted(starts, event["ts"], side="right")) - 1
        if run >= 0 and event["ts"] <= windows[run][1]:
            times = per_run.setdefault(event["name"][: -len("_kernel_time")], np.zeros(len(windows)))
            times[run] += event["dur"]
    if not per_run:
        return []
    order = np.argsort(np.sum(list(per_run.values()), axis=0), kind="stable")  # runs by summed kernel time
    quarter = len(order) // 4
    typical = order[quarter:max(quarter + 1, len(order) - quarter)]  # the middle half, at least one run
    return [LayerTiming(name=name, latency_ms=float(times[typical].mean()) / 1000.0, count=len(windows))
            for name, times in per_run.items()]


def _precision(types: list[onnx.TypeProto | None]) -> str:
    elems = {t.tensor_type.elem_type for t in types if t is not None}
    if elems & _INT8:
        return "int8"
    if elems & _FP16:
        return "fp16"
    if elems & _BF16:
        return "bf16"
    return "fp32"


def _shape(value_type: onnx.TypeProto | None) -> list | None:
    if value_type is None or not value_type.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in value_type.tensor_type.shape.dim]

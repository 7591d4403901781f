"""OpenVINO CPU backend: explicit inference precision (real BF16 on AVX-512 BF16 / AMX CPUs), native fusion provenance.

Provenance: before compiling, every OpenVINO op is tagged (rt_info "originalLayersNames") with the ONNX node it was
translated from. The CPU plugin merges that attribute when it fuses ops, so each op of the compiled runtime model
lists the ONNX nodes it covers. ONNX nodes whose tag disappears (folded into constants: weight DequantizeLinear,
shape arithmetic, a bias folded into BatchNorm) are assigned to the layer of the nearest node they feed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from tqdm.auto import tqdm

from .._optional import require
from ..engine import Backend, Capabilities, Engine, EngineGraph, EngineLayer, EngineOptions, LayerTiming
from ..errors import BackendError
from ..jobs import CancelToken
from ..jobs import check as check_cancel
from ..graph import GraphIndex
from ..models.onnx_source import with_unique_node_names
from ..models.spec import Model, TensorSpec
from ..vocabulary import QDQ_OPS
from .cpu_features import has_bf16, has_int8_dot

_TAG = "onnx#"  # prefix of our provenance tags inside rt_info "originalLayersNames"
_NOT_LAYERS = {"Input", "Output", "Const", "Parameter", "Result", "Constant"}
_PRECISION_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "i8": "int8", "u8": "int8"}
_HINTS = ("f32", "bf16", "f16")
_QDQ_OPS = {*QDQ_OPS, "QLinearConv", "QLinearMatMul", "DynamicQuantizeLinear"}


def baked_precision(proto: onnx.ModelProto) -> str:
    """What a precision-baked ONNX graph holds: "int8" (Q/DQ), "fp16" (FP16 weights or casts) or "fp32"."""
    nodes = proto.graph.node
    if any(node.op_type in _QDQ_OPS for node in nodes):
        return "int8"
    fp16 = onnx.TensorProto.FLOAT16
    if any(init.data_type == fp16 for init in proto.graph.initializer) or any(
            node.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in node.attribute) for node in nodes):
        return "fp16"
    return "fp32"


def _ov_precision_name(value) -> str:
    """'f32' / 'bf16' / 'f16' from an OpenVINO Type or string property value."""
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value).lower()


@dataclass(frozen=True)
class OpenVinoOptions(EngineOptions):
    """`threads`: INFERENCE_NUM_THREADS (None: OpenVINO's default); `inference_precision`: "f32", "bf16" or "f16"
    (None: derived from the precision-baked graph: BF16 arithmetic for an FP16 graph where the CPU has it)."""

    threads: int | None = None
    inference_precision: str | None = None


class OpenVinoBackend(Backend):
    """OpenVINO on the CPU."""

    name = "openvino"
    options_type = OpenVinoOptions
    # Triton has no OpenVINO platform here: a bundle serves the same ONNX with ONNX Runtime
    capabilities = Capabilities(device="cpu", triton_platform="onnxruntime_onnx", triton_serves_measured=False,
                                package="openvino")

    def __init__(self, device: str = "CPU") -> None:
        self._ov = require("openvino", extra="openvino", purpose="the OpenVINO backend")
        self._core = self._ov.Core()
        if device not in self._core.available_devices:
            raise BackendError(f"OpenVINO device {device!r} is not available here "
                               f"(available: {', '.join(self._core.available_devices)}): use device='CPU'.")
        self.device = device

    def version(self) -> str:
        return self._ov.get_version()

    def accelerated(self, precision: str, qdq_style: str | None = None) -> bool:
        # OpenVINO folds Q/DQ of either placement into its INT8 kernels (VNNI/AMX); FP16 graphs run as BF16.
        if precision in ("fp16", "bf16"):
            return has_bf16()
        if precision == "int8":
            return has_int8_dot()
        return precision == "fp32"

    def build(self, model: Model, options: OpenVinoOptions | None = None) -> "OpenVinoEngine":
        proto = self.graph_of(model)
        return OpenVinoEngine(self._ov, self._core, self.device, proto, options or OpenVinoOptions())


class OpenVinoEngine(Engine):
    """A compiled OpenVINO model; `inference_precision` is what OpenVINO reports it runs ("f32", "bf16", "f16")."""

    backend = "openvino"

    def __init__(self, ov, core, device: str, proto: onnx.ModelProto, options: OpenVinoOptions) -> None:
        proto = with_unique_node_names(proto)  # same node names as the ONNX Runtime backend
        initializers = {init.name for init in proto.graph.initializer}
        super().__init__([TensorSpec.from_value_info(v) for v in proto.graph.input if v.name not in initializers])
        self._ov = ov
        self._proto = proto
        self._index = GraphIndex(proto)
        self._node_names = self._index.names
        self.graph_precision = baked_precision(proto)
        self.requested_precision = self._choose_hint(options.inference_precision)
        config = {
            "INFERENCE_PRECISION_HINT": self.requested_precision,
            "PERFORMANCE_HINT": "LATENCY",
            # Pinned OpenVINO threads and ONNX Runtime's spinning threads slow each other down in one process.
            "ENABLE_CPU_PINNING": False,
            # Always on: the overhead is within noise (ResNet-18), and one compiled model keeps layer names
            # consistent between layers() and profile() (plugin-made names change from compile to compile).
            "PERF_COUNT": True,
        }
        if options.threads:
            config["INFERENCE_NUM_THREADS"] = int(options.threads)
        try:
            ov_model = core.read_model(proto.SerializeToString(), b"")
            self._op_nodes = _tag_with_onnx_nodes(ov_model, self._index)
            self._compiled = core.compile_model(ov_model, device, config)
        except RuntimeError as exc:
            raise BackendError(f"OpenVINO could not build this model: {exc}. Check that every op is supported "
                               "(https://docs.openvino.ai, ONNX frontend) or use backend='onnxruntime'.") from exc
        self.inference_precision = _ov_precision_name(self._compiled.get_property("INFERENCE_PRECISION_HINT"))
        if self.inference_precision != self.requested_precision:
            self.notes.append(f"Asked OpenVINO for {self.requested_precision!r} inference precision; it runs "
                              f"{self.inference_precision!r}. Layer precisions show what actually executes.")
        self._request = self._compiled.create_infer_request()

    def _choose_hint(self, override: str | None) -> str:
        if override is not None:
            if override not in _HINTS:
                raise BackendError(f"Unknown OpenVINO inference precision {override!r}: "
                                   f"use one of {', '.join(_HINTS)}.")
            if override != "f32" and self.graph_precision != "fp16":
                self.notes.append(f"{self.graph_precision.upper()} graph run with inference precision {override!r} "
                                  "(OpenVinoOptions.inference_precision): accuracy is that of the reduced arithmetic.")
            return override
        if self.graph_precision != "fp16":
            return "f32"
        if has_bf16():
            # BF16 runs on AMX / AVX-512 BF16; OpenVINO's "f16" hint (AVX-512 FP16 arithmetic) measured slower than
            # FP32 on a Sapphire Rapids Xeon, so the fast reduced-precision path is BF16.
            self.notes.append("FP16 graph run with BF16 arithmetic, OpenVINO's fast reduced-precision path on this "
                              "CPU: accuracy is that of the FP16 weights plus BF16 arithmetic (a little below true "
                              "FP16). OpenVinoOptions(inference_precision='f16') runs true FP16 arithmetic where the CPU "
                              "has AVX-512 FP16, without a speed-up.")
            return "bf16"
        self.notes.append("FP16 graph runs in FP32 on this CPU (no AVX-512 BF16 or AMX): not accelerated.")
        return "f32"

    def _close(self) -> None:
        del self._request, self._compiled

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = _infer(self._request, feeds)
        return [np.array(results[port], copy=True) for port in self._compiled.outputs]

    def layers(self) -> EngineGraph:
        """The ops of OpenVINO's runtime model (execution order; shapes of the last run) with ONNX provenance."""
        runtime = self._compiled.get_runtime_model()
        ops = runtime.get_ordered_ops()
        skipped = set()  # Parameter/Result/Const ops and ops computed from constants only (folded at compile time)
        layers: list[EngineLayer] = []
        for op in ops:
            info = op.get_rt_info()
            layer_type = info["layerType"].astype(str)
            name = op.get_friendly_name()
            sources = [inp.get_source_output().get_node().get_friendly_name() for inp in op.inputs()]
            if layer_type in _NOT_LAYERS or (sources and all(s in skipped for s in sources)):
                if layer_type not in ("Input", "Parameter"):
                    skipped.add(name)
                continue
            nodes = _original_nodes(info["originalLayersNames"].astype(str), self._op_nodes)
            kernel = info["primitiveType"].astype(str)
            layers.append(EngineLayer(
                name=name, type=layer_type,
                precision=_PRECISION_NAMES.get(info["runtimePrecision"].astype(str), "unknown"),
                onnx_nodes=[self._node_names[i] for i in nodes],
                inputs=[_port_id(inp.get_source_output()) for inp in op.inputs()
                        if inp.get_source_output().get_node().get_friendly_name() not in skipped],
                outputs=[_port_id(out) for out in op.outputs()],
                input_shapes=[_shape(inp.get_partial_shape()) for inp in op.inputs()],
                output_shapes=[_shape(out.get_partial_shape()) for out in op.outputs()],
                kernel=None if kernel.startswith(("undef", "unknown")) else kernel,
            ))
        _claim_once(layers, self._index, self._op_nodes)
        return EngineGraph(backend=self.backend, layers=layers, source_nodes=list(self._node_names),
                           measured_graph=f"OpenVINO CPU runtime model ({self.inference_precision})",
                           device=OpenVinoBackend.capabilities.device)

    def _profile(self, feeds: dict[str, np.ndarray], *, runs: int, warmup: int,
                 progress: bool, cancel: CancelToken | None = None) -> list[LayerTiming]:
        """Per-layer mean time over `runs` inferences after `warmup` (OpenVINO's PERF_COUNT counters).

        OpenVINO reports, per infer request, a running mean (whole microseconds) over every inference on it. A
        fresh request keeps earlier runs out, and differencing its totals before and after the timed runs keeps
        warm-up out. Mean, not median: OpenVINO gives no per-run figures.
        """
        request = self._compiled.create_infer_request()
        with tqdm(total=warmup + runs, desc="profiling (openvino)", disable=not progress, leave=False) as bar:
            for _ in range(warmup):
                check_cancel(cancel)
                _infer(request, feeds)
                bar.update()
            before = self._running_totals(request, warmup)
            for _ in range(runs):
                check_cancel(cancel)
                _infer(request, feeds)
                bar.update()
            after = self._running_totals(request, warmup + runs)
        return [LayerTiming(name=name, latency_ms=max(total - before.get(name, 0.0), 0.0) / runs * 1e3, count=runs)
                for name, total in after.items()]

    def _running_totals(self, request, inferences: int) -> dict[str, float]:
        """Seconds spent in each executed layer over the `inferences` runs of `request` so far."""
        executed = self._ov.ProfilingInfo.Status.EXECUTED
        return {p.node_name: p.real_time.total_seconds() * inferences
                for p in request.get_profiling_info() if p.status == executed and p.node_type not in _NOT_LAYERS}


def _infer(request, feeds: dict[str, np.ndarray]):
    try:
        return request.infer(feeds)
    except RuntimeError as exc:
        raise BackendError(f"OpenVINO inference failed: {exc}. Check the input shapes against the model.") from exc


def _tag_with_onnx_nodes(ov_model, index: GraphIndex) -> dict[str, set[int]]:
    """Write "onnx#<node index>" tags into each op's rt_info "originalLayersNames" (before compiling).

    Returns op friendly name -> ONNX node indices, for the plugin passes that drop rt_info and name the new
    op after the one it replaces (e.g. MatMul + bias Add -> FullyConnected named like the Add).

    The ONNX frontend keeps ONNX tensor names on the outputs of the op that finishes each node; the helper ops
    it creates on the way (bias reshapes, ShapeOf, weight decompression) carry no names and inherit the tags
    of the ops they feed.
    """
    producer = index.producer_index
    ops = ov_model.get_ordered_ops()
    tags: dict[int, set[int]] = {}
    by_name: dict[str, set[int]] = {}
    for op in reversed(ops):  # consumers before producers
        if op.get_type_name() in ("Parameter", "Result"):
            continue
        found = {producer[n] for out in op.outputs() for n in out.get_names() if n in producer}
        if not found:
            for out in op.outputs():
                for target in out.get_target_inputs():
                    found |= tags.get(id(target.get_node()), set())
        tags[id(op)] = found
        if found:
            op.get_rt_info()["originalLayersNames"] = ",".join(f"{_TAG}{i}" for i in sorted(found))
            by_name.setdefault(op.get_friendly_name(), set()).update(found)
    return by_name


def _original_nodes(original_names: str, op_nodes: dict[str, set[int]]) -> list[int]:
    """ONNX node indices in a runtime op's "originalLayersNames": our tags, or names of ops we tagged."""
    seen: dict[int, None] = {}
    for part in original_names.split(","):
        part = part.strip()
        found = [int(part[len(_TAG):])] if part.startswith(_TAG) else sorted(op_nodes.get(part, ()))
        seen.update(dict.fromkeys(found))
    return list(seen)


def _claim_once(layers: list[EngineLayer], index: GraphIndex, op_nodes: dict[str, set[int]]) -> None:
    """Give every ONNX node exactly one layer.

    Among the layers that list a node, the one named after an op translated from that node wins, else the
    first in execution order; a node no layer lists (folded into constants) goes to the layer of the nearest
    node it feeds, else the nearest node that feeds it.
    """
    names = index.names
    owner: dict[str, EngineLayer] = {}
    for layer in layers:
        for node in layer.onnx_nodes:
            owner.setdefault(node, layer)
    for layer in layers:
        for i in op_nodes.get(layer.name, ()):
            if names[i] in layer.onnx_nodes:
                owner[names[i]] = layer
    owned = lambda i: names[i] in owner  # noqa: E731
    for i, name in enumerate(names):
        if name not in owner:
            found = index.nearest(i, owned)
            found = found if found is not None else index.nearest(i, owned, downstream=False)
            if found is not None:
                owner[name] = owner[names[found]]
    for layer in layers:
        layer.onnx_nodes = [n for n in names if owner.get(n) is layer]
        layer.inserted = not layer.onnx_nodes  # reorders, converts, Q/DQ glue the plugin made itself


def _port_id(output) -> str:
    node = output.get_node()
    name = node.get_friendly_name()
    return name if node.get_output_size() == 1 else f"{name}:{output.get_index()}"


def _shape(partial_shape) -> list:
    return [d.get_length() if d.is_static else None for d in partial_shape] if partial_shape.rank.is_static else []

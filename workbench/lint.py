"""Why is INT8 (or FP16) not faster? Rules over an engine's layer graph, each finding with the milliseconds at stake.

Works on every `EngineGraph`: engines built here (`RunResult.engine`) and TensorRT plans imported with
`workbench.trtplan` (there with the datatype of every tensor). The rules follow TensorRT's engine-explorer lint
rules and its ResNet QAT lesson (notebook 05): unfused Q/DQ, precision transitions, higher-precision residual Adds
and pooling between INT8 layers, misaligned channels, one dominant layer, many tiny layers, and a precision the engine
does not accelerate here. Times are the measured per-layer times; a finding's `ms` is what fixing it could save at
most (the time of the layers it blames).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .engine import REDUCED_PRECISIONS, EngineGraph, EngineLayer
from .results import RunResult
from .trtplan import TrtPlan
from .trtplan.parse import QDQ_OPS, node_op_type
from .vocabulary import POOL_OPS, WEIGHTED_OPS

DOMINANT_SHARE = 0.3  # one layer above this share of the summed layer time
TINY_SHARE = 0.01  # a layer below this share is tiny ...
TINY_MIN_COUNT = 10  # ... and this many of them ...
TINY_MIN_SHARE = 0.15  # ... taking this share together is a finding
# channel multiples fast kernels want: TensorRT tensor cores (INT8 32, FP16/BF16 8); CPU engines block channels by 16
GPU_ALIGNMENT = {"int8": 32, "fp16": 8, "bf16": 8, "mixed": 8}
CPU_ALIGNMENT = {"int8": 16, "fp16": 16, "bf16": 16, "mixed": 16}
_POOL_OPS = frozenset(POOL_OPS)
_WEIGHTED_OPS = frozenset(WEIGHTED_OPS)
_TRANSITION_TYPES = frozenset({"Reformat", "Cast", "Transpose", "Reorder", "Convert"})
_FLOAT = frozenset({"fp32", "fp16", "bf16"})


@dataclass
class LayerRef:
    """One layer a finding blames."""

    name: str
    onnx_nodes: list[str]
    precision: str
    latency_ms: float | None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Finding:
    """One lint finding: what, where (layers and their ONNX nodes), why it costs, what to change, ms at stake."""

    rule: str
    title: str
    why: str
    fix: str
    ms: float  # measured time of the blamed layers (0.0 without a profile)
    share: float | None  # of the summed layer time
    layers: list[LayerRef] = field(default_factory=list)

    @property
    def onnx_nodes(self) -> list[str]:
        return list(dict.fromkeys(n for layer in self.layers for n in layer.onnx_nodes))

    def to_json(self) -> dict:
        return {"rule": self.rule, "title": self.title, "why": self.why, "fix": self.fix, "ms": self.ms,
                "share": self.share, "layers": [layer.to_json() for layer in self.layers],
                "onnx_nodes": self.onnx_nodes}


class _View:
    """Links and datatypes over an EngineGraph's layers (tensor names connect them)."""

    def __init__(self, graph: EngineGraph, tensor_dtypes: dict[str, str] | None, op_types: dict[str, str] | None):
        self.layers = graph.layers
        self.device = graph.device
        self.dtypes = dict(tensor_dtypes or {})
        self.op_types = dict(op_types or {})
        self.producer: dict[str, EngineLayer] = {}
        self.consumers: dict[str, list[EngineLayer]] = {}
        for layer in self.layers:
            for tensor in layer.outputs:
                self.producer[tensor] = layer
            for tensor in layer.inputs:
                self.consumers.setdefault(tensor, []).append(layer)
        self.total = sum(layer.latency_ms or 0.0 for layer in self.layers)

    def ops(self, layer: EngineLayer) -> set[str]:
        found = {self.op_types.get(n) or node_op_type(n) for n in layer.onnx_nodes}
        if len(layer.onnx_nodes) == 1 and layer.type in (*QDQ_OPS, *_POOL_OPS, *_WEIGHTED_OPS, "Add"):
            found.add(layer.type)
        return {op for op in found if op}

    def is_qdq(self, layer: EngineLayer) -> bool:
        ops = self.ops(layer)
        return not layer.inserted and bool(ops) and ops <= QDQ_OPS

    def output_dtype(self, layer: EngineLayer) -> str:
        """'int8' when the layer writes INT8, else its float precision (from tensor datatypes when known)."""
        known = [self.dtypes[t] for t in layer.outputs if t in self.dtypes]
        if known:
            return "int8" if all(d == "int8" for d in known) else next(d for d in known if d != "int8")
        if self.is_qdq(layer):
            return "int8" if "QuantizeLinear" in self.ops(layer) else "fp32"
        return layer.precision

    def inputs_from(self, layer: EngineLayer) -> list[EngineLayer]:
        return [self.producer[t] for t in layer.inputs if t in self.producer]

    def users(self, layer: EngineLayer) -> list[EngineLayer]:
        return list({id(c): c for t in layer.outputs for c in self.consumers.get(t, ())}.values())

    def reads_network_input(self, layer: EngineLayer) -> bool:
        return bool(layer.inputs) and not self.inputs_from(layer)

    def ms(self, layers) -> float:
        return sum(layer.latency_ms or 0.0 for layer in layers)

    def finding(self, rule, title, why, fix, layers, ms=None) -> Finding:
        ms = self.ms(layers) if ms is None else ms
        return Finding(rule=rule, title=title, why=why, fix=fix, ms=ms,
                       share=ms / self.total if self.total else None,
                       layers=[LayerRef(l.name, list(l.onnx_nodes), l.precision, l.latency_ms) for l in layers])


def lint(graph: EngineGraph, *, tensor_dtypes: dict[str, str] | None = None, op_types: dict[str, str] | None = None,
         precision: str | None = None, accelerated: bool | None = None) -> list[Finding]:
    """Every finding for one engine graph, most milliseconds first. `tensor_dtypes` (tensor -> 'int8', 'fp16', ...;
    TensorRT plans have them) sharpen the precision rules; `op_types` (ONNX node -> op type) help where node names do
    not say their op; `precision`/`accelerated` (from a RunResult) enable the not-accelerated rule."""
    view = _View(graph, tensor_dtypes, op_types)
    findings = [f for rule in _RULES for f in rule(view)]
    if accelerated is False and precision and precision != "fp32":
        findings.append(view.finding(
            "not-accelerated", f"{precision.upper()} is not accelerated by this engine on this hardware",
            f"The engine has no fast {precision.upper()} kernels here, so reduced-precision layers run no faster "
            "than FP32 (often slower, with conversions around them): the ms at stake are the whole engine's.",
            "Use a precision the engine accelerates on this machine (see the report's 'accelerated' table), "
            "another engine, or hardware with those kernels.",
            [l for l in view.layers if l.precision in REDUCED_PRECISIONS]
            or [l for l in view.layers if not l.inserted], ms=view.total))
    return sorted(findings, key=lambda f: -f.ms)


def lint_plan(plan: TrtPlan) -> list[Finding]:
    """Findings for an imported TensorRT plan (with its tensor datatypes)."""
    return lint(plan.engine, tensor_dtypes=plan.tensor_dtypes)


def lint_result(result: RunResult, op_types: dict[str, str] | None = None) -> list[Finding]:
    """Findings for a measured configuration (its engine layers, precision and `accelerated`)."""
    if result.engine is None:
        return []
    return lint(result.engine, op_types=op_types, precision=result.precision, accelerated=result.accelerated)


def op_types_of(model) -> dict[str, str]:
    """ONNX node name -> op type of a Model or ModelProto (the graph an engine was built from), for `op_types`."""
    proto = getattr(model, "proto", model)
    return {node.name: node.op_type for node in proto.graph.node if node.name}


def findings_table(findings: list[Finding]) -> list[dict]:
    """Rows for a report or explorer table: rule, finding, ms at stake, layers, fix."""
    return [{"rule": f.rule, "finding": f.title, "ms at stake": round(f.ms, 4),
             "share": f"{f.share:.1%}" if f.share is not None else "n/a",
             "layers": ", ".join(l.name for l in f.layers[:4]) + (f" (+{len(f.layers) - 4})" if len(f.layers) > 4
                                                                  else ""),
             "why": f.why, "fix": f.fix} for f in findings]


# ---- rules --------------------------------------------------------------------------------------
def _deliberate_float(view: _View) -> set[int]:
    """Layers (by id) in a float region the model asked for: fed, through float layers, by an explicit standalone
    DequantizeLinear. Quantising again at the end of such a region is needed, not an accident."""
    marked: set[int] = set()
    for layer in view.layers:  # execution order: producers come first
        if view.is_qdq(layer) and view.ops(layer) == {"DequantizeLinear"}:
            marked.add(id(layer))
        elif view.output_dtype(layer) != "int8" and any(id(p) in marked for p in view.inputs_from(layer)):
            marked.add(id(layer))
    return marked


def _unfused_qdq(view: _View) -> list[Finding]:
    deliberate = _deliberate_float(view)
    blamed = []
    for layer in view.layers:
        if not view.is_qdq(layer) or view.reads_network_input(layer):
            continue
        ops = view.ops(layer)
        sources = view.inputs_from(layer)
        if "QuantizeLinear" in ops and not any(id(p) in deliberate for p in sources):
            blamed.append(layer)
        elif ops == {"DequantizeLinear"} and any(view.is_qdq(u) and "QuantizeLinear" in view.ops(u)
                                                 for u in _through_glue(view, layer)):
            blamed.append(layer)  # dequantised only to be quantised again
    if not blamed:
        return []
    return [view.finding(
        "unfused-qdq", f"{_count(len(blamed), 'standalone Quantize/Dequantize layer')} did not fuse",
        "Each one is a separate kernel that reads and writes a whole activation tensor to change its precision; "
        "a Q/DQ the engine can fuse into the neighbouring convolution or matmul costs nothing.",
        "Place Q/DQ where the engine fuses them: on the inputs of Conv/Gemm/MatMul and on both inputs of residual "
        "Adds (qdq_style='tensorrt' for TensorRT), so the producer can write INT8 directly.", blamed)]


def _through_glue(view: _View, layer: EngineLayer) -> list[EngineLayer]:
    """Consumers of `layer`, looking through inserted reformat/copy layers."""
    found, queue = [], view.users(layer)
    while queue:
        user = queue.pop()
        if user.inserted:
            queue.extend(view.users(user))
        else:
            found.append(user)
    return found


def _transitions(view: _View) -> list[Finding]:
    blamed = []
    for layer in view.layers:
        if not (layer.inserted or layer.type == "Cast" or view.ops(layer) == {"Cast"}):
            continue
        ins = {view.dtypes[t] for t in layer.inputs if t in view.dtypes}
        outs = {view.dtypes[t] for t in layer.outputs if t in view.dtypes}
        if ins or outs:
            changes = bool(ins and outs and ins != outs)
        else:
            around = {p.precision for p in view.inputs_from(layer)} | {u.precision for u in view.users(layer)}
            changes = layer.type == "Cast" or len(around - {"unknown"}) > 1
        if changes and (layer.type in _TRANSITION_TYPES or layer.inserted):
            blamed.append(layer)
    if not blamed:
        return []
    return [view.finding(
        "precision-transition", f"{_count(len(blamed), 'layer')} only converting between precisions",
        "Reformat/cast/transpose layers inserted where one layer's output precision differs from what the next "
        "layer reads: pure memory traffic with no compute.",
        "Keep neighbouring layers in one precision (quantise the whole chain, or keep the chain in FP32), so the "
        "engine needs no conversion between them.", blamed)]


def _float_between_int8(view: _View) -> list[Finding]:
    deliberate = _deliberate_float(view)
    blamed, requant = [], {}
    for layer in view.layers:
        ops = view.ops(layer)
        if view.is_qdq(layer) or not (ops & ({"Add"} | _POOL_OPS)) or view.output_dtype(layer) not in _FLOAT:
            continue
        if id(layer) in deliberate:
            continue
        upstream_int8 = any(view.output_dtype(p) == "int8" or p.precision in ("int8", "mixed")
                            for p in view.inputs_from(layer))
        path = _to_int8(view, layer)
        if upstream_int8 and path is not None:
            blamed.append(layer)
            requant.update({id(l): l for l in path})
    if not blamed:
        return []
    glue = list(requant.values())
    names = sorted({op for l in blamed for op in view.ops(l) if op == "Add" or op in _POOL_OPS})
    return [view.finding(
        "float-between-int8", f"{_count(len(blamed), 'residual Add / pooling layer')} in higher precision between "
                              "INT8 layers",
        f"These layers ({', '.join(names)}) read INT8 work but write {', '.join(sorted({view.output_dtype(l) for l in blamed}))}, "
        "so a standalone Quantize (and reformat copies) must run after them before the next INT8 layer: the ms "
        "at stake are those conversion layers.",
        "Quantise the residual branch too (Q/DQ on both Add inputs, qdq_style='tensorrt') and put Q/DQ before "
        "pooling, so the Add/pool fuses into the INT8 convolution and writes INT8 (NVIDIA's ResNet QAT lesson).",
        blamed, ms=view.ms(glue))]


def _to_int8(view: _View, layer: EngineLayer) -> list[EngineLayer] | None:
    """The conversion layers between `layer` and the next INT8 layer (through reformats, pooling and other float
    non-weighted layers), or None when its output does not go back into INT8."""
    queue, seen = [(u, []) for u in view.users(layer)], set()
    while queue:
        user, trail = queue.pop(0)
        if id(user) in seen:
            continue
        seen.add(id(user))
        if view.is_qdq(user) and "QuantizeLinear" in view.ops(user):
            return [*trail, user]
        if user.inserted or (view.ops(user) & _POOL_OPS and view.output_dtype(user) in _FLOAT):
            queue += [(u, [*trail, user] if user.inserted else trail) for u in view.users(user)]
    return None


def _channels(view: _View) -> list[Finding]:
    blamed, wasted = [], 0.0
    alignment = CPU_ALIGNMENT if view.device == "cpu" else GPU_ALIGNMENT
    for layer in view.layers:
        align = alignment.get(layer.precision)
        if align is None or layer.inserted or not (view.ops(layer) & _WEIGHTED_OPS or layer.type in _WEIGHTED_OPS):
            continue
        counts = [c for c in _channel_counts(layer, view) if c >= 8]  # RGB/grey inputs are padded by design
        bad = [c for c in counts if c % align]
        if bad:
            blamed.append(layer)
            worst = min(c / (-(-c // align) * align) for c in bad)
            wasted += (layer.latency_ms or 0.0) * (1.0 - worst)
    if not blamed:
        return []
    wanted = " / ".join(sorted({f"{alignment[l.precision]} ({l.precision.upper()})" for l in blamed}))
    return [view.finding(
        "channel-alignment", f"{_count(len(blamed), 'reduced-precision layer')} with channel counts not multiples "
                             f"of {wanted}",
        "Tensor-core and VNNI kernels work on vectors of channels; other counts are padded (wasted work) or fall "
        "back to slower kernels. The ms at stake are the padded share of these layers' time.",
        f"Round channel counts up to a multiple of {wanted} when designing or pruning the model, or keep these "
        "layers in FP32.", blamed, ms=wasted)]


def _channel_counts(layer: EngineLayer, view: _View) -> list[int]:
    """Input/output channels: from a weight shape when the engine lists one (ONNX Runtime), else axis 1 of the
    4-D NCHW activations (TensorRT plans)."""
    weights = [s for s in layer.input_shapes[1:] if s and len(s) in (2, 4) and all(isinstance(d, int) for d in s)]
    if weights:
        shape = weights[0]
        return [shape[0]] + ([shape[1]] if len(shape) == 2 or shape[1] > 1 else [])
    shapes = [s for s in (layer.input_shapes[:1] + layer.output_shapes[:1]) if s and len(s) == 4]
    return [s[1] for s in shapes if isinstance(s[1], int)]


def _dominant(view: _View) -> list[Finding]:
    if not view.total or len(view.layers) < 3:
        return []
    top = max(view.layers, key=lambda l: l.latency_ms or 0.0)
    if (top.latency_ms or 0.0) / view.total < DOMINANT_SHARE:
        return []
    return [view.finding(
        "dominant-layer", f"One layer takes {(top.latency_ms or 0.0) / view.total:.0%} of the time: {top.name}",
        "End-to-end speed is bounded by this layer: speeding up any other layer cannot gain much.",
        f"Look at this layer first: its precision ({top.precision}), kernel and shapes; quantise it if it is not, "
        "or check why it did not get a fast kernel.", [top])]


def _tiny(view: _View) -> list[Finding]:
    if not view.total:
        return []
    tiny = [l for l in view.layers if l.latency_ms is not None and 0 < l.latency_ms < TINY_SHARE * view.total]
    if len(tiny) < TINY_MIN_COUNT or view.ms(tiny) < TINY_MIN_SHARE * view.total:
        return []
    return [view.finding(
        "tiny-layers", f"{len(tiny)} tiny layers (each under {TINY_SHARE:.0%}) add up to "
                       f"{view.ms(tiny) / view.total:.0%} of the time",
        "Each layer is a kernel launch plus a read and write of its tensors; many small ones are dominated by "
        "that overhead rather than compute.",
        "Let the engine fuse more (highest optimisation level; keep element-wise chains in one precision so they "
        "fuse), or fold constant work out of the graph before building.", tiny)]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


_RULES = (_unfused_qdq, _transitions, _float_between_int8, _channels, _dominant, _tiny)

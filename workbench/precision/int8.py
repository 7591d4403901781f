"""INT8 transform: Q/DQ nodes placed by onnxruntime.quantization from calibrated activation ranges.

Two Q/DQ styles:

* ``onnxruntime``: ORT's defaults for x86: every quantisable op, asymmetric uint8 activations, symmetric int8
  weights, int32 biases. ORT fuses DQ -> op -> Q into real integer kernels, so its CPU latency is meaningful.
* ``tensorrt``: what TensorRT's explicit-quantisation guide asks for: symmetric int8 everywhere (zero points 0),
  Q/DQ only on the inputs of Conv/ConvTranspose/Gemm/MatMul (weights per channel when the plan says so, biases left
  float for TensorRT to fold) and on the residual input of Add; no Q/DQ on the outputs of those ops, so TensorRT fuses
  Conv + bias + Add + activation and picks the output precision itself. Adds with a constant input (bias adds) stay
  float. Without output Q nodes ORT cannot form integer kernels and runs these ops in float after dequantising:
  accuracy on CPU is what TensorRT would get, latency is not (the returned model's notes say so).
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import onnx.version_converter
import onnxruntime as ort
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data
from tqdm.auto import tqdm

from ..errors import PrecisionError
from ..graph import GraphIndex
from ..vocabulary import WEIGHTED_OPS
from .calibrate import CALIBRATION_METHODS, SENTINEL_ABOVE
from .plan import KEEP_FP32_HOW, PrecisionPlan

_TRT_OPS = (*WEIGHTED_OPS, "Add")

_STYLES = {
    "onnxruntime": {"activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8, "op_types_to_quantize": None,
                    "extra_options": {}},
    "tensorrt": {"activation_type": QuantType.QInt8, "weight_type": QuantType.QInt8,
                 "op_types_to_quantize": list(_TRT_OPS),
                 "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                                   "OpTypesToExcludeOutputQuantization": list(_TRT_OPS)}},
}

STYLE_NOTES = {
    "onnxruntime": "Q/DQ style 'onnxruntime': uint8 activations, int8 weights; ONNX Runtime runs it with integer "
                   "kernels, so its CPU latency is representative.",
    "tensorrt": "Q/DQ style 'tensorrt': symmetric int8 Q/DQ on Conv/Gemm/MatMul inputs and residual Add inputs only, "
                "for TensorRT to fuse. Its CPU latency is NOT representative (ONNX Runtime runs these ops in float "
                "after dequantising); its accuracy is.",
}


def place(prepared: onnx.ModelProto, plan: PrecisionPlan, ranges: TensorsData, *, model_name: str,
          keep_nodes: tuple[str, ...] = (), keep_ops: tuple[str, ...] = (),
          progress: bool = True) -> tuple[onnx.ModelProto, onnx.ModelProto, list[str]]:
    """Q/DQ nodes placed on `prepared` (the pre-processed FP32 graph of model `model_name`) from calibrated `ranges`,
    in the plan's style (the `place` step of precision.pipeline): segment by segment on large graphs, the nodes ONNX
    Runtime's quantiser fails on kept in FP32. Returns the quantised graph, the FP32 graph it was made from (converted
    to opset 13 for per-channel weights when needed) and notes."""
    notes = []
    names = {node.name for node in prepared.graph.node}
    exclude = [node.name for node in prepared.graph.node if node.name in keep_nodes or node.op_type in keep_ops]
    notes += [f"keep_fp32 node {name!r} was folded away by pre-processing (e.g. BatchNormalization into Conv): "
              "nothing left to keep" for name in keep_nodes if name not in names]
    sentinel_nodes = _sentinel_nodes(prepared.graph, ranges)
    if sentinel_nodes:
        exclude += sentinel_nodes
        notes.append(f"kept {len(sentinel_nodes)} nodes in FP32 around tensors whose calibrated range exceeds the FP16 "
                     "maximum (masking sentinels such as -3.4e38 in attention masks, or calibration data with a huge "
                     "range): INT8 cannot represent them")
    style = _STYLES[plan.qdq_style]
    if plan.qdq_style == "tensorrt":
        exclude += _bias_adds(prepared.graph)
    target, per_channel, opset_notes = _opset_for_int8(prepared, plan.per_channel)
    notes += opset_notes

    with tempfile.TemporaryDirectory(prefix="workbench-int8-") as tmp:
        files = (Path(tmp) / f"{kind}-{i}.{ext}" for i in itertools.count()
                 for kind, ext in (("source", "onnx"), ("ranges", "json"), ("int8", "onnx")))

        def attempt(source: Path, ranges_path: Path, excluded: list[str], op_types: list[str] | None = None) -> onnx.ModelProto:
            out_path = next(files)
            # a zero range divides by zero (caught below as a non-finite scale); the quantiser logs per-weight
            # warnings on the root logger ("Axis 1 is out-of-range ...") that say nothing to the user
            with np.errstate(all="ignore"), _quiet_root_logger():
                quantize_static(source, out_path, None, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                                calibrate_method=CALIBRATION_METHODS[plan.method],
                                calibration_cache_path=ranges_path, nodes_to_exclude=excluded,
                                activation_type=style["activation_type"], weight_type=style["weight_type"],
                                op_types_to_quantize=style["op_types_to_quantize"] if op_types is None else op_types,
                                extra_options=dict(style["extra_options"]))
            quantized = onnx.load(out_path)
            _sort_with_subgraph_inputs(quantized.graph)
            _check_scales(quantized.graph)
            _loads(quantized)
            return quantized

        def quantize_part(part: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str], Exception | None]:
            source, ranges_path = next(files), next(files)
            onnx.save(part, source)  # a path: given a proto, ORT may move its initialisers out in place
            # only the part's own tensors: the quantiser computes scales for every range it is given
            tensors = {name for node in part.graph.node for name in itertools.chain(node.input, node.output)}
            save_tensors_data(TensorsData(ranges.calibration_method,
                                          {name: value for name, value in ranges.data.items() if name in tensors}),
                              ranges_path)
            try:
                return attempt(source, ranges_path, exclude), [], None
            except Exception as exc:  # noqa: BLE001 - the quantiser fails with KeyError, ValueError, ...
                failing = _failing_nodes(part, exclude, style["op_types_to_quantize"],
                                         lambda *args: attempt(source, ranges_path, *args))
                try:
                    return attempt(source, ranges_path, exclude + failing), failing, exc
                except Exception as final:  # noqa: BLE001
                    raise PrecisionError(
                        f"ONNX Runtime's quantiser fails on {model_name!r} ({_describe(exc)}) and still fails with "
                        f"the nodes it fails on kept in FP32 ({_describe(final)}): nothing can be quantised. Keep "
                        f"more op types in FP32: {KEEP_FP32_HOW}.") from final

        parts = segments(target)
        try:
            results = [quantize_part(part) for part in tqdm(parts, desc="Placing Q/DQ", unit="segment",
                                                              disable=not progress or len(parts) == 1)]
            quantized = results[0][0] if len(parts) == 1 else _stitch(target, [r[0] for r in results])
            if len(parts) > 1:
                _loads(quantized)
        except Exception as exc:  # noqa: BLE001 - a graph the segments do not suit: quantise it whole
            if len(parts) == 1:
                raise
            notes.append(f"placing Q/DQ segment by segment failed ({_describe(exc)}): quantised the graph whole")
            parts, results = [target], [quantize_part(target)]
            quantized = results[0][0]
        if len(parts) > 1:
            notes.append(f"placed Q/DQ in {len(parts)} segments of about {SEGMENT_NODES} nodes (ONNX Runtime's "
                         "quantiser takes time quadratic in the node count); each tensor crossing a segment boundary "
                         "keeps one Q/DQ pair")
        failing = [name for r in results for name in r[1]]
        errors = [r[2] for r in results if r[2] is not None]
        if errors:
            notes.append(f"ONNX Runtime's quantiser fails on {len(failing)} node(s) of this graph "
                         f"({_describe(errors[0])}): kept in FP32 automatically: {_name_list(failing)}")
    if not any(node.op_type == "QuantizeLinear" for node in all_nodes(quantized.graph)):
        notes.append("ONNX Runtime's quantiser found nothing to quantise in this graph (e.g. every op sits inside "
                     "an If/Loop body or is not a quantisable type): the INT8 model computes in FP32")
    return quantized, target, notes


PER_CHANNEL_OPSET = 13  # DequantizeLinear's `axis` (per-channel weights) exists from opset 13


def _opset_for_int8(proto: onnx.ModelProto, per_channel: bool) -> tuple[onnx.ModelProto, bool, list[str]]:
    """The graph to quantise and whether weights can be per channel: per-channel Q/DQ needs opset 13, so an older
    model is converted with ONNX's version converter first; if that fails, weights fall back to per tensor."""
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), PER_CHANNEL_OPSET)
    if not per_channel or opset >= PER_CHANNEL_OPSET:
        return proto, per_channel, []
    try:
        converted = onnx.version_converter.convert_version(proto, PER_CHANNEL_OPSET)
        onnx.checker.check_model(converted)
        _loads(converted)
    except Exception as exc:  # noqa: BLE001 - the converter fails in many ways on exporters' graphs
        return proto, False, [f"INT8 per-channel weights need opset {PER_CHANNEL_OPSET}; the model has opset {opset} "
                              f"and ONNX's version converter failed ({_describe(exc)}): used per-tensor weights"]
    return converted, True, [f"converted the model from opset {opset} to {PER_CHANNEL_OPSET} with ONNX's version "
                             "converter before INT8 (per-channel weights need it)"]


def _failing_nodes(proto: onnx.ModelProto, exclude: list[str], op_types: list[str] | None,
                   attempt: Callable[..., onnx.ModelProto]) -> list[str]:
    """The nodes ONNX Runtime's quantiser fails on: first the op types that fail when quantised alone, then,
    bisecting within each, the nodes (a group that fails only as a whole is kept whole)."""
    nodes = [n for n in all_nodes(proto.graph) if n.name and n.name not in exclude]
    types = sorted({n.op_type for n in nodes if op_types is None or n.op_type in op_types})

    def fails(excluded: list[str], types_: list[str]) -> bool:
        try:
            attempt(excluded, types_)
            return False
        except Exception:  # noqa: BLE001
            return True

    failing: list[str] = []
    for op_type in types:
        of_type = [n.name for n in nodes if n.op_type == op_type]
        if not fails(exclude, [op_type]):
            continue

        def culprits(group: list[str], of_type=of_type, op_type=op_type) -> list[str]:
            others = [name for name in of_type if name not in group]
            if not fails(exclude + others, [op_type]):
                return []
            if len(group) == 1:
                return group
            half = len(group) // 2
            found = culprits(group[:half]) + culprits(group[half:])
            return found or group

        failing += culprits(of_type)
    return failing


def _sort_with_subgraph_inputs(graph: onnx.GraphProto) -> None:
    """Topologically sort `graph` counting the outer-scope tensors that If/Loop/Scan bodies read as inputs:
    ORT's quantiser re-sorts nodes by their explicit inputs only, which can put a body before its producer."""
    if not any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for node in graph.node for attr in node.attribute):
        return
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    users: list[list[int]] = [[] for _ in graph.node]
    waiting = [0] * len(graph.node)
    for i, node in enumerate(graph.node):
        needed = set(node.input)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                needed |= {name for inner in all_nodes(sub) for name in inner.input}
        for j in {producer[name] for name in needed if name in producer} - {i}:
            users[j].append(i)
            waiting[i] += 1
    ready = [i for i, count in enumerate(waiting) if count == 0]
    order: list[int] = []
    while ready:
        i = ready.pop(0)
        order.append(i)
        for j in users[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    if len(order) == len(graph.node) and order != sorted(order):  # (a cycle cannot happen in a valid graph)
        nodes = [onnx.NodeProto.FromString(graph.node[i].SerializeToString()) for i in order]
        del graph.node[:]
        graph.node.extend(nodes)


def weighted_nodes(model_proto, op_types=WEIGHTED_OPS) -> list[str]:
    """Nodes of `op_types` that multiply by a weight (Conv, ConvTranspose, Gemm, MatMul with a constant operand):
    where INT8 saves most of its time. Attention's activation-by-activation MatMuls, normalisations and element-wise
    ops are not among them."""
    index = GraphIndex(model_proto)

    def constant(tensor: str) -> bool:
        producer = index.producer(tensor)
        return tensor in index.initializers or (producer is not None and producer.op_type == "Constant")

    return [node.name for node in index.nodes
            if node.op_type in op_types and any(constant(t) for t in node.input[1:] if t)]


def all_nodes(graph: onnx.GraphProto):
    """Every node, those inside If/Loop/Scan bodies included."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                yield from all_nodes(sub)


@contextlib.contextmanager
def _quiet_root_logger():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _check_scales(graph: onnx.GraphProto) -> None:
    """Raise if a Q/DQ scale is zero or not finite (ORT's quantiser divides by a zero range without complaint)."""
    inits = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input[1] in inits:
            scale = onnx.numpy_helper.to_array(inits[node.input[1]])
            if not np.all(np.isfinite(scale)) or np.any(scale == 0):
                raise ValueError(f"Q/DQ node {node.name!r} has a zero or non-finite scale (a tensor with zero range)")


def _loads(proto: onnx.ModelProto) -> None:
    onnx.checker.check_model(proto)
    ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def _name_list(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _sentinel_nodes(graph: onnx.GraphProto, ranges) -> list[str]:
    """Producers and consumers of tensors whose range exceeds SENTINEL_ABOVE (the FP16 maximum): such values are
    sentinels, not data, and a scale stretched over them rounds every real value to zero."""
    huge = {name for name, value in ranges.data.items()
            if float(np.abs(np.asarray(value.range_value, dtype=np.float64)).max()) > SENTINEL_ABOVE}
    return [node.name for node in graph.node if huge & (set(node.input) | set(node.output))]


def _bias_adds(graph: onnx.GraphProto) -> list[str]:
    constants = {init.name for init in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    return [node.name for node in graph.node if node.op_type == "Add" and constants & set(node.input)]


def _unquantize_weighted_add_inputs(graph: onnx.GraphProto) -> None:
    """On each Add, feed the input that comes straight from a Conv/Gemm/MatMul without its Q/DQ pair.

    ORT quantises every Add input; TensorRT wants the weighted op's output unquantised so it can fuse the Add into
    that op, with Q/DQ only on the other (residual) branch. ORT has no per-input option for this, hence this pass.
    """
    index = GraphIndex(graph)
    for add in (node for node in graph.node if node.op_type == "Add"):
        for i, name in enumerate(add.input):
            dq = index.producer(name)
            q = index.producer(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            source = index.producer(q.input[0]) if q is not None and q.op_type == "QuantizeLinear" else None
            if source is not None and source.op_type in WEIGHTED_OPS:
                add.input[i] = q.input[0]
                break  # if both branches are weighted, the second keeps its Q/DQ as the residual input
    _drop_unused_qdq(graph)


def read_unquantized(graph: onnx.GraphProto, names: tuple[str, ...]) -> None:
    """Feed the nodes `names` each input that reaches them through a Quantize -> Dequantize pair from before the
    pair (the float tensor), dropping pairs nobody reads any more."""
    if not names:
        return
    index = GraphIndex(graph)
    for node in (node for node in graph.node if node.name in names):
        for i, name in enumerate(node.input):
            dq = index.producer(name)
            q = index.producer(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]
    _drop_unused_qdq(graph)


def _drop_unused_qdq(graph: onnx.GraphProto) -> None:
    while True:
        used = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
        dead = [node for node in graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not used & set(node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for init in [init for init in graph.initializer if init.name not in used]:
        graph.initializer.remove(init)
    produced = {name for node in graph.node for name in node.output}
    for info in [info for info in graph.value_info if info.name not in produced]:
        graph.value_info.remove(info)


SEGMENT_NODES = 200
SPLIT_ABOVE = 2 * SEGMENT_NODES  # nodes; ONNX Runtime's quantiser is quadratic in the node count (10,000 nodes: hours)


def segments(proto: onnx.ModelProto) -> list[onnx.ModelProto]:
    """`proto` cut into consecutive segments of about SEGMENT_NODES nodes for the quantiser, each a model whose inputs
    and outputs are the tensors crossing its boundaries; `[proto]` when small, when a node has a subgraph or the
    model has local functions, or when a crossing tensor has no inferred type and shape.

    Cuts are placed, within a quarter segment of each target, where the fewest tensors cross."""
    nodes = list(proto.graph.node)
    if (len(nodes) <= SPLIT_ABOVE or proto.functions
            or any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                   for node in nodes for attr in node.attribute)):
        return [proto]
    graph = proto.graph
    initializers = {init.name: init for init in graph.initializer}
    produced_at = {name: i for i, node in enumerate(nodes) for name in node.output if name}
    last_use: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            if name and name not in initializers:
                last_use[name] = i
    for out in graph.output:
        last_use[out.name] = len(nodes)
    crossing = np.zeros(len(nodes) + 2, np.int64)  # crossing[c]: tensors live across the cut before node c
    for name, last in last_use.items():
        crossing[produced_at.get(name, -1) + 1] += 1
        crossing[last + 1] -= 1
    crossing = np.cumsum(crossing)
    cuts, window = [0], SEGMENT_NODES // 4
    while len(nodes) - cuts[-1] > SEGMENT_NODES + window:
        low, high = cuts[-1] + SEGMENT_NODES - window, cuts[-1] + SEGMENT_NODES + window
        cuts.append(low + int(np.argmin(crossing[low:high + 1])))
    cuts.append(len(nodes))

    infos = {info.name: info for info in itertools.chain(graph.input, graph.value_info, graph.output)}
    parts = []
    for start, end in zip(cuts, cuts[1:]):
        inside = nodes[start:end]
        made = {name for node in inside for name in node.output if name}
        used = list(dict.fromkeys(name for node in inside for name in node.input if name))
        inputs = [name for name in used if name not in made and name not in initializers]
        outputs = [name for node in inside for name in node.output if name and last_use.get(name, -1) >= end]
        if not all(_has_tensor_shape(infos.get(name)) for name in inputs + outputs):
            return [proto]  # (the checker wants a shape, however partial, on graph inputs and outputs)
        part_graph = onnx.helper.make_graph(
            inside, f"{graph.name}-{start}", [infos[name] for name in inputs], [infos[name] for name in outputs],
            [initializers[name] for name in used if name in initializers],
            value_info=[infos[name] for name in made if name in infos and name not in outputs])
        part = onnx.helper.make_model(part_graph, opset_imports=proto.opset_import)
        part.ir_version = proto.ir_version
        parts.append(part)
    return parts


def _has_tensor_shape(info: onnx.ValueInfoProto | None) -> bool:
    return (info is not None and info.type.HasField("tensor_type") and info.type.tensor_type.elem_type != 0
            and info.type.tensor_type.HasField("shape"))


def _stitch(target: onnx.ModelProto, parts: list[onnx.ModelProto]) -> onnx.ModelProto:
    """One model from quantised segments. A tensor crossing a boundary is a segment output in its producer's segment
    (the quantiser gives graph outputs a Q/DQ pair ending in the tensor's own name) and a segment input in its
    consumers' (a Q/DQ pair of its own if they want a quantised input): it keeps one pair, as the whole graph
    quantised at once would, and none if its consumers take it in float.
    """
    final_outputs = {out.name for out in target.graph.output}
    boundary = {out.name for part in parts[:-1] for out in part.graph.output} - final_outputs
    producer: dict[str, onnx.NodeProto] = {}
    initializers: dict[str, onnx.TensorProto] = {}
    kept: list[onnx.NodeProto] = []
    wanted: set[str] = set()  # boundary tensors that a consumer's segment quantises

    def own_pair(name: str) -> tuple[onnx.NodeProto, onnx.NodeProto] | None:
        dq = producer.get(name)
        q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        return (q, dq) if q is not None and q.op_type == "QuantizeLinear" else None

    for part in parts:
        index = GraphIndex(part.graph)
        dropped: set[int] = set()
        for name in boundary & set(index.graph_inputs):
            qs = [node for node in index.consumers(name) if node.op_type == "QuantizeLinear"]
            wanted |= {name} if qs else set()
            if not qs or own_pair(name) is None:
                continue  # (without a pair upstream, this segment's pair is the tensor's only one)
            for q in qs:  # the upstream pair serves: read its dequantised tensor, which has the tensor's own name
                for dq in index.consumers(q.output[0]):
                    for reader in index.consumers(dq.output[0]):
                        reader.input[:] = [name if i == dq.output[0] else i for i in reader.input]
                    dropped.add(id(dq))
                dropped.add(id(q))
        renamed = _merge_part([node for node in index.nodes if id(node) not in dropped], part.graph.initializer,
                              producer, initializers, len(kept))
        kept += renamed
    dropped = set()
    for name in boundary - wanted:  # nobody downstream quantises it: the producer writes the float tensor again
        pair = own_pair(name)
        if pair is not None:
            q, dq = pair
            source = producer[q.input[0]]
            source.output[:] = [name if out == q.input[0] else out for out in source.output]
            dropped |= {id(q), id(dq)}
    graph = onnx.helper.make_graph(
        [node for node in kept if id(node) not in dropped], target.graph.name, target.graph.input,
        target.graph.output,
        list(initializers.values()),
        value_info=list({info.name: info for part in parts for info in part.graph.value_info}.values()))
    opsets: dict[str, int] = {}
    for part in parts:
        for opset in part.opset_import:
            opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
    stitched = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in opsets.items()])
    stitched.ir_version = max(part.ir_version for part in parts)
    stitched.metadata_props.extend(target.metadata_props)
    _drop_unused_qdq(stitched.graph)
    return stitched


def _merge_part(nodes: list[onnx.NodeProto], part_initializers, producer: dict[str, onnx.NodeProto],
                initializers: dict[str, onnx.TensorProto], serial: int) -> list[onnx.NodeProto]:
    """Add one segment's nodes and initialisers to `producer`/`initializers`; returns the nodes to keep.

    The quantiser names what it creates after the tensor (``w_quantized``, ``b298100`` for a bias shared by several
    Convs): the same name from two segments is one thing when its definition is equal (a shared weight), else the
    later segment's gets a fresh name."""
    renames: dict[str, str] = {}
    fresh = (f"_segment{serial}_{i}" for i in itertools.count())
    for init in part_initializers:
        if init.name in initializers and initializers[init.name].SerializeToString() != init.SerializeToString():
            renames[init.name] = init.name + next(fresh)
            init.name = renames[init.name]
        initializers.setdefault(init.name, init)
    kept = []
    for node in nodes:
        node.input[:] = [renames.get(name, name) for name in node.input]
        first = next((producer[name] for name in node.output if name in producer), None)
        if first is not None and first.SerializeToString() == node.SerializeToString():
            continue
        if first is not None:
            for i, name in enumerate(node.output):
                if name in producer:
                    renames[name] = name + next(fresh)
                    node.output[i] = renames[name]
            node.name += next(fresh)
        producer.update({name: node for name in node.output})
        kept.append(node)
    return kept

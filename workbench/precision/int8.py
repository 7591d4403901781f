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
from onnxruntime.quantization.calibrate import save_tensors_data

from ..calibration import CalibrationSet
from ..errors import PrecisionError
from ..graph import GraphIndex
from ..models.spec import Model
from .calibrate import CALIBRATION_METHODS, activation_ranges, calibration_batches, prepare, range_key
from .plan import PrecisionPlan

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
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


def quantize(model: Model, plan: PrecisionPlan, calibration: CalibrationSet, *, keep_nodes: tuple[str, ...] = (),
             keep_ops: tuple[str, ...] = (), progress: bool = True,
             cache_dir: str | Path | None = None) -> tuple[onnx.ModelProto, list[str]]:
    """Quantise `model` per `plan` (int8) from ranges calibrated on `calibration`; returns the graph and notes."""
    prepared, prep_notes = prepare(model)
    notes = list(prep_notes)
    batches = calibration_batches(calibration, model.inputs)
    key = range_key(model.content_hash, calibration, plan.method, len(next(iter(batches[0].values()))))
    ranges = activation_ranges(prepared, key, batches, plan.method, progress=progress, cache_dir=cache_dir)

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
        ranges_path, target_path = Path(tmp) / "ranges.json", Path(tmp) / "target.onnx"
        save_tensors_data(ranges, ranges_path)
        onnx.save(target, target_path)  # a path: given a proto, ORT may move its initialisers out in place
        attempts = iter(range(1_000_000))

        def attempt(excluded: list[str], op_types: list[str] | None = None) -> onnx.ModelProto:
            out_path = Path(tmp) / f"int8-{next(attempts)}.onnx"
            # a zero range divides by zero (caught below as a non-finite scale); the quantiser logs per-weight
            # warnings on the root logger ("Axis 1 is out-of-range ...") that say nothing to the user
            with np.errstate(all="ignore"), _quiet_root_logger():
                quantize_static(target_path, out_path, None, quant_format=QuantFormat.QDQ, per_channel=per_channel,
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

        try:
            quantized = attempt(exclude)
        except Exception as exc:  # noqa: BLE001 - the quantiser fails with KeyError, ValueError, ...
            failing = _failing_nodes(target, exclude, style["op_types_to_quantize"], attempt)
            try:
                quantized = attempt(exclude + failing)
            except Exception as final:  # noqa: BLE001
                raise PrecisionError(
                    f"ONNX Runtime's quantiser fails on {model.name!r} ({_describe(exc)}) and still fails with the "
                    f"nodes it fails on kept in FP32 ({_describe(final)}): nothing can be quantised. Keep more op "
                    "types in FP32 via PrecisionPlan(keep_fp32=...).") from final
            notes.append(f"ONNX Runtime's quantiser fails on {len(failing)} node(s) of this graph ({_describe(exc)}): "
                         f"kept in FP32 automatically: {_name_list(failing)}")
    if plan.qdq_style == "tensorrt":
        _unquantize_weighted_add_inputs(quantized.graph)
    if not any(node.op_type == "QuantizeLinear" for node in all_nodes(quantized.graph)):
        notes.append("ONNX Runtime's quantiser found nothing to quantise in this graph (e.g. every op sits inside "
                     "an If/Loop body or is not a quantisable type): the INT8 model computes in FP32")
    notes.append(STYLE_NOTES[plan.qdq_style])
    return quantized, notes


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
    """Producers and consumers of tensors whose range exceeds 65504 (the FP16 maximum): such values are sentinels,
    not data, and a scale stretched over them rounds every real value to zero."""
    huge = {name for name, value in ranges.data.items()
            if float(np.abs(np.asarray(value.range_value, dtype=np.float64)).max()) > 65504.0}
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

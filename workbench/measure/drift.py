"""Per-tensor drift of a lower-precision model from FP32: SQNR, cosine and max abs difference, in graph order.

Both graphs get their intermediate tensors added as graph outputs and run on the same feeds. This follows
onnxruntime.quantization.qdq_loss_debug, which is not used directly because it works on files only, always runs
ONNX Runtime with optimisations off (we want the chosen backend), matches tensors by Q/DQ name suffixes only (an FP16
graph has none) and clamps SQNR with an epsilon, so identical tensors never read as infinite.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..engine import Backend, EngineOptions
from ..graph import GraphIndex
from ..jobs import CancelToken
from ..jobs import check as check_cancel
from ..models.spec import Model
from ..results import DriftPoint
from .accuracy import cosine

_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}


@dataclass(frozen=True)
class _Match:
    reference: str  # tensor name in the FP32 graph
    variant: str  # tensor name in the lower-precision graph holding the same value
    layer: str | None  # original node producing the tensor
    position: int  # index of `reference` among the FP32 graph's node outputs


def measure_drift(reference_model: Model | onnx.ModelProto, variant_model: Model | onnx.ModelProto,
                  feeds: dict[str, np.ndarray], backend: Backend, options: EngineOptions | None = None, *,
                  cancel: CancelToken | None = None) -> tuple[list[DriftPoint], str]:
    """Compare every float tensor produced by an FP32 node with its counterpart in `variant_model`.

    Tensors are matched by name, else by the producing node's name, op type and output index (a Cast-wrapped output
    may be renamed); tensors fused away in the variant (e.g. a Conv output once BatchNormalization is folded) are
    skipped. When the variant quantizes a tensor (QuantizeLinear -> DequantizeLinear) the dequantized value, i.e.
    what the next layer reads, is compared. Returns the points in FP32 graph order and a note naming the graph that
    was measured (exposing tensors as outputs blocks fusions across them). `cancel` is checked between the two
    graphs' runs.
    """
    ref = reference_model.proto if isinstance(reference_model, Model) else reference_model
    var = variant_model.proto if isinstance(variant_model, Model) else variant_model
    ref_types = _tensor_types(ref)
    var_types = _tensor_types(var)
    matches = [m for m in _match_tensors(ref, var) if ref_types.get(m.reference) in _FLOAT_TYPES
               and var_types.get(m.variant) in _FLOAT_TYPES]
    ref_values = _run_exposed(backend, ref, [m.reference for m in matches], ref_types, feeds, options)
    check_cancel(cancel)
    var_values = _run_exposed(backend, var, [m.variant for m in matches], var_types, feeds, options)
    points = []
    for m in matches:
        a = ref_values[m.reference].astype(np.float64)
        b = var_values[m.variant].astype(np.float64)
        if a.shape != b.shape:
            continue  # same name, different meaning (e.g. a layout change): not comparable
        points.append(DriftPoint(tensor=m.reference, layer=m.layer, sqnr_db=sqnr_db(a, b), cosine=cosine(a, b),
                                 max_abs_diff=float(np.max(np.abs(a - b), initial=0.0)), position=m.position))
    settings = ", ".join(f"{k}={v!r}" for k, v in (options.to_json() if options else {}).items() if v)
    note = (f"{backend.name} graphs ({settings or 'default options'}) with {len(points)} intermediate "
            "tensors exposed as outputs: exposed tensors cannot be fused away, so this is close to the node-by-node "
            "graph, not the engine timed for latency.")
    if any(node.op_type == "DequantizeLinear" for node in var.graph.node):
        note += " Quantized tensors are compared after DequantizeLinear (the value the next layer reads)."
    return points, note


def sqnr_db(reference: np.ndarray, value: np.ndarray) -> float:
    """10*log10(sum(ref^2) / sum((ref - value)^2)) in dB; inf when identical."""
    reference, value = reference.astype(np.float64), value.astype(np.float64)  # integer tensors would overflow
    noise = float(np.sum((reference - value) ** 2))
    signal = float(np.sum(reference ** 2))
    if noise == 0.0:
        return math.inf
    ratio = signal / noise
    if signal == 0.0 or ratio == 0.0:  # (a ratio below the smallest float: as good as no signal)
        return -math.inf
    return 10.0 * math.log10(ratio)


def _match_tensors(ref: onnx.ModelProto, var: onnx.ModelProto) -> list[_Match]:
    ref_tensors = {out for node in ref.graph.node for out in node.output}
    by_node = {node.name: node for node in var.graph.node if node.name}
    links = GraphIndex(var)
    matches, seen = [], set()
    position = -1
    for node in ref.graph.node:
        for index, name in enumerate(node.output):
            position += 1
            if not name:
                continue
            found = name if name in links.producer_index else None
            twin = by_node.get(node.name)
            if (found is None and twin is not None and twin.op_type == node.op_type and index < len(twin.output)
                    and twin.output[index] and twin.output[index] not in ref_tensors):
                # Renamed output (e.g. the node now writes to a Cast). A twin writing another FP32 tensor's name
                # has had its successors fused into it (Conv+BN+Relu -> "r1"): that value is matched by name.
                found = twin.output[index]
            if found is None:
                continue
            found = _after_qdq(found, links)
            if found not in seen:
                seen.add(found)
                matches.append(_Match(name, found, node.name or None, position))
    return matches


def _after_qdq(name: str, index: GraphIndex) -> str:
    """The DequantizeLinear output when `name` only feeds a QuantizeLinear -> DequantizeLinear pair."""
    users = index.consumers(name)
    if len(users) == 1 and users[0].op_type == "QuantizeLinear":
        dq_users = index.consumers(users[0].output[0])
        if len(dq_users) == 1 and dq_users[0].op_type == "DequantizeLinear":
            return dq_users[0].output[0]
    return name


def _tensor_types(proto: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(proto)
    graph = inferred.graph
    return {v.name: v.type.tensor_type.elem_type
            for v in [*graph.input, *graph.value_info, *graph.output] if v.type.HasField("tensor_type")}


def _run_exposed(backend: Backend, proto: onnx.ModelProto, names: list[str], types: dict[str, int],
                 feeds: dict[str, np.ndarray], options: EngineOptions | None) -> dict[str, np.ndarray]:
    augmented = onnx.ModelProto()
    augmented.CopyFrom(proto)
    existing = {out.name for out in augmented.graph.output}
    for name in names:
        if name not in existing:
            augmented.graph.output.append(helper.make_tensor_value_info(name, types[name], None))
            existing.add(name)
    with backend.build(Model.from_proto(augmented, name="drift", source="tensor-exposing graph"), options) as engine:
        outputs = engine.run(feeds)
    return dict(zip([out.name for out in augmented.graph.output], outputs))

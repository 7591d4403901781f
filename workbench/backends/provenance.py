"""Provenance of an optimised ONNX graph: which original ONNX nodes each optimised node covers.

Backends that rewrite the graph themselves (ONNX Runtime's fusions, layout and QDQ passes) keep no record of
what they fused. We recover it from tensor names: fusion keeps the tensors at its boundary, so an optimised node
covers every original node between its input tensors and its output tensors. Where the engine renamed tensors
(layout reorders, inserted casts, duplicated DequantizeLinear nodes), names are mapped back through the engine's
pass-through nodes and its naming conventions. No library does this matching, hence the hand-written code.
"""
from __future__ import annotations

import re

import onnx
from onnx import helper

from ..graph import GraphIndex

# Tensor-name decorations ONNX Runtime adds when it copies a tensor (FP16 cast insertion, DQ duplication,
# Q/DQ pairs it inserts after a fused activation).
_TENSOR_PREFIXES = ("InsertedPrecisionFreeCast_",)
_TENSOR_SUFFIX = re.compile(r"(/duplicated|_pre_q|_post_dq)$")
# Node-name decorations of rewritten nodes: NCHWc convs are named after their output tensor plus "_nchwc";
# nodes re-created by a pass get "_token_<n>".
_NODE_SUFFIX = re.compile(r"(_nchwc|_token_\d+)$")
# Ops that, when the engine inserts them, carry the same values in another layout, type or quantization.
_PASS_THROUGH = {"ReorderInput", "ReorderOutput", "Transpose", "Cast", "MemcpyToHost", "MemcpyFromHost", "Identity",
                 "QuantizeLinear", "DequantizeLinear"}


def qualified_op(node: onnx.NodeProto) -> str:
    """Op type; prefixed with its domain for ops outside ai.onnx and com.microsoft (e.g. com.microsoft.nchwc.Conv)."""
    return node.op_type if node.domain in ("", "ai.onnx", "com.microsoft") else f"{node.domain}.{node.op_type}"


def _strip_tensor(name: str) -> str:
    for prefix in _TENSOR_PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
    return _TENSOR_SUFFIX.sub("", name)


def _strip_node(name: str) -> str:
    name = _strip_tensor(name)
    while _NODE_SUFFIX.search(name):
        name = _NODE_SUFFIX.sub("", name)
    return name


def trace(original: onnx.GraphProto, optimized: onnx.GraphProto) -> list[list[str]]:
    """For each node of `optimized` (in order), the names of the `original` nodes it covers.

    Every original node appears in exactly one list; an empty list means the engine inserted the node itself.
    Both graphs need unique node names (see `workbench.models.onnx_source.with_unique_node_names`).
    """
    index = GraphIndex(original)
    orig_nodes = index.nodes
    orig_index = {name: i for i, name in enumerate(index.names)}
    producer = index.producer_index
    orig_tensors = set(producer) | set(index.graph_inputs)

    opt_nodes = list(optimized.node)
    opt_activations = {v.name for v in optimized.input} - {init.name for init in optimized.initializer}
    opt_activations |= {out for node in opt_nodes for out in node.output if out}

    mapping = _map_tensors(opt_nodes, opt_activations, orig_tensors, orig_index, orig_nodes)

    claims: list[set[int]] = []
    mapped_activations = {mapping[t] for t in opt_activations if t in mapping}
    for node in opt_nodes:
        own = {mapping[t] for t in node.output if t in mapping}
        ins = {mapping[t] for t in node.input if t in mapping}
        stop = (mapped_activations - own) | ins
        claims.append(_cover(own - ins, stop, producer, orig_nodes))

    owner = _assign(claims, opt_nodes, orig_index)
    _attach_leftovers(owner, index, len(opt_nodes))

    covers: list[list[str]] = [[] for _ in opt_nodes]
    for orig, layer in sorted(owner.items()):
        covers[layer].append(orig_nodes[orig].name)
    return covers


def _map_tensors(opt_nodes, opt_activations, orig_tensors, orig_index, orig_nodes) -> dict[str, str]:
    """Optimised activation tensor name -> the original tensor holding the same values."""
    mapping = {}
    for name in opt_activations:
        if name in orig_tensors:
            mapping[name] = name
        elif _strip_tensor(name) in orig_tensors:
            mapping[name] = _strip_tensor(name)

    pass_through = [n for n in opt_nodes if n.op_type in _PASS_THROUGH and n.name not in orig_index
                    and n.input and n.output]

    def propagate() -> None:
        changed = True
        while changed:
            changed = False
            for node in pass_through:
                src, dst = node.input[0], node.output[0]
                if dst not in mapping and src in mapping:
                    mapping[dst] = mapping[src]
                    changed = True
                elif src not in mapping and dst in mapping and src in opt_activations:
                    mapping[src] = mapping[dst]
                    changed = True

    propagate()
    # Fall back to node names, strongest evidence first: a node that kept its name and op type keeps the
    # meaning of its input and output slots (QDQ passes rename tensors, e.g. "qdq_s8_to_u8_quant_token_1");
    # a rewritten node is named after the node or tensor it replaces (e.g. "r1_nchwc" writes "r1", blocked).
    def same_node(node):
        orig = orig_index.get(_strip_node(node.name))
        return orig if orig is not None and orig_nodes[orig].op_type == node.op_type else None

    for node in opt_nodes:
        orig = same_node(node)
        if orig is not None:
            for out, orig_out in zip(node.output, orig_nodes[orig].output):
                if out and out not in mapping:
                    mapping[out] = orig_out
    propagate()
    for node in opt_nodes:
        orig = same_node(node)
        if orig is not None:
            for inp, orig_inp in zip(node.input, orig_nodes[orig].input):
                if inp in opt_activations and inp not in mapping and orig_inp in orig_tensors:
                    mapping[inp] = orig_inp
    propagate()
    for node in opt_nodes:
        if node.op_type in _PASS_THROUGH or all(t in mapping for t in node.output if t):
            continue
        base = _strip_node(node.name)
        if base in orig_tensors and len(node.output) == 1:
            mapping[node.output[0]] = base
        elif base in orig_index and len(orig_nodes[orig_index[base]].output) == len(node.output):
            for out, orig_out in zip(node.output, orig_nodes[orig_index[base]].output):
                mapping.setdefault(out, orig_out)
    propagate()
    return mapping


def _cover(starts: set[str], stop: set[str], producer: dict[str, int], orig_nodes) -> set[int]:
    """Original nodes reached walking back from `starts` without crossing `stop` tensors."""
    covered: set[int] = set()
    pending = [t for t in starts if t in producer]
    while pending:
        index = producer[pending.pop()]
        if index in covered:
            continue
        covered.add(index)
        pending.extend(t for t in orig_nodes[index].input if t and t in producer and t not in stop)
    return covered


def _assign(claims: list[set[int]], opt_nodes, orig_index) -> dict[int, int]:
    """Give each claimed original node one owner: the optimised node of the same name, else the first claimant."""
    owner: dict[int, int] = {}
    for layer, claimed in enumerate(claims):
        for orig in claimed:
            owner.setdefault(orig, layer)
    for layer, node in enumerate(opt_nodes):
        orig = orig_index.get(node.name)
        if orig is not None and orig in claims[layer]:
            owner[orig] = layer
    return owner


def _attach_leftovers(owner: dict[int, int], index: GraphIndex, n_layers: int) -> None:
    """Original nodes no optimised node reached (dead code the engine removed): attach to a neighbour's layer."""
    if not n_layers:
        return
    leftovers = [i for i in range(len(index.nodes)) if i not in owner]
    for i in leftovers:  # topological order: chains of removed nodes follow their producer
        parents = [owner[p] for p in index.predecessors(i) if p in owner]
        if parents:
            owner[i] = parents[0]
    for i in reversed(leftovers):
        if i in owner:
            continue
        children = [owner[c] for c in index.successors(i) if c in owner]
        owner[i] = children[0] if children else 0


def element_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Tensor name -> type for every tensor of `model` whose type is known or can be inferred.

    onnx shape inference has no schemas for ONNX Runtime's contrib ops, so types it leaves unknown are filled
    by rule: quantizing ops take the zero point's type, DequantizeLinear gives the scale's, Cast its target,
    everything else its first input's.
    """
    try:
        inferred = onnx.shape_inference.infer_shapes(_without_weight_data(model), strict_mode=False)
    except Exception:  # inference is best effort: unknown types only mean "precision fp32, shape unknown"
        inferred = model
    graph = inferred.graph
    types: dict[str, onnx.TypeProto] = {}
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.type.tensor_type.elem_type:
            types[value.name] = value.type
    for init in graph.initializer:
        types.setdefault(init.name, helper.make_tensor_type_proto(init.data_type, list(init.dims)))
    for node in graph.node:
        source_type = _rule_type(node, types)
        for out in node.output:
            if out and out not in types and source_type is not None:
                types[out] = helper.make_tensor_type_proto(source_type, None)
    return types


def declared_types(model: onnx.ModelProto) -> set[int]:
    """Element types the model declares (inputs, outputs, value_info, initializers, Cast targets); no inference."""
    graph = model.graph
    types = {v.type.tensor_type.elem_type for v in list(graph.input) + list(graph.output) + list(graph.value_info)}
    types |= {init.data_type for init in graph.initializer}
    types |= {a.i for node in graph.node if node.op_type == "Cast" for a in node.attribute if a.name == "to"}
    return types - {0}


_SMALL = 4096  # bytes: initializers up to this size keep their data (shape constants that inference reads)


def _without_weight_data(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy for shape inference with large initializers' data dropped (types and dims kept): much faster."""
    graph = onnx.GraphProto(name=model.graph.name)
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    graph.value_info.extend(model.graph.value_info)
    for init in model.graph.initializer:
        if init.ByteSize() <= _SMALL:
            graph.initializer.append(init)
        else:
            graph.initializer.append(onnx.TensorProto(name=init.name, dims=init.dims, data_type=init.data_type))
    light = onnx.ModelProto(ir_version=model.ir_version, graph=graph)
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    return light


def _rule_type(node: onnx.NodeProto, types: dict[str, onnx.TypeProto]) -> int | None:
    def elem(position: int) -> int | None:
        if position < len(node.input) and node.input[position] in types:
            return types[node.input[position]].tensor_type.elem_type
        return None

    if node.op_type == "Cast":
        return next((a.i for a in node.attribute if a.name == "to"), None)
    if node.op_type == "DequantizeLinear":
        return elem(1)
    if node.op_type == "QuantizeLinear" or node.op_type.startswith("QLinear") or node.op_type == "QGemm":
        zero_point = {"QuantizeLinear": 2, "QLinearConv": 7, "QLinearMatMul": 7, "QGemm": 8}.get(node.op_type)
        if zero_point is None:  # QLinearAdd/Mul/Pool/Softmax...: the output zero point comes last
            zero_point = len(node.input) - 1
        return elem(zero_point) or onnx.TensorProto.UINT8  # a missing zero point means uint8
    return elem(0)

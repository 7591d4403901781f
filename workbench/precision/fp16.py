"""FP16 transform: weights and activations really rounded to FP16, graph inputs/outputs kept FP32."""
from __future__ import annotations

import re
import warnings

import onnx
import onnxruntime as ort

from .._optional import require
from ..errors import PrecisionError
from ..graph import GraphIndex
from ..vocabulary import INTEGER_OPS, QDQ_OPS
from .int8 import _failing_nodes, _sort_with_subgraph_inputs, all_nodes

# IEEE half limits. The converter's defaults (1e-7, 1e4) would clamp weights in [1e4, 65504] that a real FP16 engine
# keeps, so we clamp only what FP16 cannot represent: that is what rounding to FP16 does anyway.
_FP16_MAX = 65504.0
_FP16_MIN_SUBNORMAL = 2.0 ** -24


# Ops on integer data or quantisation parameters: an already-quantised model keeps them as they are (their float
# scales stay float32) and FP16 applies to its float compute only.
QUANTIZED_OPS = (*QDQ_OPS, "DynamicQuantizeLinear", *INTEGER_OPS, "QLinearAdd", "QLinearMul", "QLinearConcat",
                 "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearSigmoid", "QLinearLeakyRelu",
                 "DynamicQuantizeMatMul", "MatMulIntegerToFloat")


def to_fp16(proto: onnx.ModelProto, *, keep_nodes: tuple[str, ...] = (),
            keep_ops: tuple[str, ...] = ()) -> tuple[onnx.ModelProto, list[str]]:
    """`proto` in FP16 (`convert`) as a graph that checks and loads in ONNX Runtime, and the nodes that had to stay
    in FP32 for that (empty when none).

    When the converter's graph does not load (mixed types around If/Loop bodies, ops with no FP16 form...), the
    nodes that must stay FP32 are found in three steps, each only when the one before does not give a graph that
    loads: the nodes the error names (ONNX Runtime and the checker name the node they reject), kept one error at a
    time; bisection, first by op type then by node, as INT8 does for the quantiser (`int8._failing_nodes`, at most
    MAX_BISECT_ATTEMPTS conversions); shrinking an all-FP32 graph (`_shrink_kept`). Raises the last error when even
    that does not load."""
    names = {node.name for node in all_nodes(proto.graph) if node.name}
    tries = [0]

    def attempt(excluded: list[str], only_types: list[str] | None = None) -> onnx.ModelProto:
        others = () if only_types is None else tuple(sorted(_op_types(proto) - set(only_types)))
        converted = convert(proto, keep_nodes=tuple(excluded), keep_ops=(*keep_ops, *others))
        _check_loads(converted)
        return converted

    def bisect_attempt(excluded: list[str], only_types: list[str] | None = None) -> onnx.ModelProto:
        tries[0] += 1
        if tries[0] > MAX_BISECT_ATTEMPTS:  # counted as failing: whole groups stay FP32, no more conversions
            raise PrecisionError("out of bisection attempts")
        return attempt(excluded, only_types)

    named: list[str] = []
    for _ in range(MAX_NAMED_ROUNDS):
        try:
            return attempt([*keep_nodes, *named]), named
        except Exception as exc:  # noqa: BLE001 - the checker, shape inference and ORT raise many types
            culprits = [n for m in _NAMED_NODE.finditer(str(exc)) if (n := m.group(1) or m.group(2)) in names
                        and n not in (*keep_nodes, *named)]
        if not culprits:
            break
        named += dict.fromkeys(culprits)
    failing = named + _failing_nodes(proto, [*keep_nodes, *named], None, bisect_attempt)
    try:
        return attempt([*keep_nodes, *failing]), failing
    except Exception:  # noqa: BLE001 - nodes that fail only together: shrink "everything in FP32" instead
        failing = _shrink_kept(proto, list(keep_nodes), attempt)
        return attempt([*keep_nodes, *failing]), failing


# How ONNX Runtime ("... in node (NAME)", "Node (NAME) Op (If)") and the checker ("Name: NAME OpType:") name a node
_NAMED_NODE = re.compile(r"[Nn]ode \(([^()]+)\)|Name: (\S+) OpType")
MAX_NAMED_ROUNDS = 16  # conversions keeping the nodes errors name, one error at a time
MAX_BISECT_ATTEMPTS = 48  # conversions the bisection may try (each builds an ONNX Runtime session)
MAX_SHRINK_ATTEMPTS = 64  # conversions tried while shrinking; past it, more nodes than needed stay in FP32


def _shrink_kept(proto: onnx.ModelProto, keep_nodes: list[str], attempt) -> list[str]:
    """Nodes to keep in FP32, found from the other end: start with every node kept (a valid graph) and release
    halves, then quarters... of them to FP16 while the graph still loads (delta debugging, at most
    MAX_SHRINK_ATTEMPTS conversions). Raises the error of the all-FP32 graph when even that does not load."""
    kept = [n.name for n in all_nodes(proto.graph) if n.name and n.name not in keep_nodes]
    attempt([*keep_nodes, *kept])
    tries, chunk = 0, max(1, len(kept) // 2)
    while chunk >= 1 and tries < MAX_SHRINK_ATTEMPTS:
        start = 0
        while start < len(kept) and tries < MAX_SHRINK_ATTEMPTS:
            trial = kept[:start] + kept[start + chunk:]
            tries += 1
            try:
                attempt([*keep_nodes, *trial])
                kept = trial
            except Exception:  # noqa: BLE001
                start += chunk
        chunk //= 2
    return kept


def convert(proto: onnx.ModelProto, *, keep_nodes: tuple[str, ...] = (),
            keep_ops: tuple[str, ...] = ()) -> onnx.ModelProto:
    """Convert a float32 graph to float16 with `onnxconverter_common.float16` (the same code as ORT's transformer tool).

    Inputs and outputs stay float32 (Cast nodes at the boundary). Nodes named in `keep_nodes` and nodes whose op type
    is in `keep_ops` (on top of the converter's default block list of ML ops with no FP16 form, and QUANTIZED_OPS)
    stay float32, with Casts around them. ONNX Runtime's CPU provider adds its own Casts around ops that have no FP16
    kernel, so the result always runs; the values between ops are FP16-rounded either way. Nodes are sorted so that
    If/Loop/Scan bodies come after the producers of the outer tensors they read.
    """
    float16 = require("onnxconverter_common.float16", pip="onnxconverter-common", purpose="FP16 precision plans")
    source = onnx.ModelProto()
    source.CopyFrom(proto)  # the converter edits its argument in place
    with warnings.catch_warnings():
        # One warning per out-of-range weight value ("will be truncated to"): expected when rounding to FP16.
        warnings.filterwarnings("ignore", message=".*will be truncated to", category=UserWarning)
        converted = float16.convert_float_to_float16(
            source,
            min_positive_val=_FP16_MIN_SUBNORMAL,
            max_finite_val=_FP16_MAX,
            keep_io_types=True,
            op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST) + list(QUANTIZED_OPS) + list(keep_ops),
            node_block_list=list(keep_nodes),
        )
    blocked_ops = {*float16.DEFAULT_OP_BLOCK_LIST, *QUANTIZED_OPS, *keep_ops}
    _cast_blocked_inputs(converted.graph, lambda node: node.op_type in blocked_ops or node.name in keep_nodes, {})
    _drop_io_value_info(converted.graph)
    _restore_fp32_outputs(converted.graph, {out.name for out in proto.graph.output
                                            if out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT})
    _retarget_float_casts(converted.graph)
    _read_outputs_as_fp16_inside(converted.graph, lambda node: node.op_type in blocked_ops or node.name in keep_nodes)
    _restore_fp32_quantization_params(converted.graph, proto.graph)
    _sort_with_subgraph_inputs(converted.graph)
    return converted


def _cast_blocked_inputs(graph: onnx.GraphProto, blocked, outer: dict[str, int]) -> None:
    """Give every node kept in FP32 float32 inputs: the converter casts the inputs of kept nodes in the main graph
    but not those a node kept in FP32 inside an If/Loop/Scan body (every node of a kept node's body) reads from the
    outer graph, which are float16 there (and the body then fails type inference). Insert a Cast to float32 before
    each such read, at any depth."""
    types = dict(outer)
    types.update({v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info, *graph.output]})
    types.update({init.name: init.data_type for init in graph.initializer})
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == "Cast" and node.output:
            types[node.output[0]] = next((a.i for a in node.attribute if a.name == "to"), 0)
        if blocked(node):
            for k, name in enumerate(node.input):
                if types.get(name) == onnx.TensorProto.FLOAT16:
                    cast = onnx.helper.make_node("Cast", [name], [f"{name}_fp32_for_{node.name}"],
                                                 name=f"{node.name}_input{k}_to_fp32", to=onnx.TensorProto.FLOAT)
                    nodes.append(cast)
                    node.input[k] = cast.output[0]
        inner = (lambda _: True) if blocked(node) else blocked  # the converter leaves a kept node's body FP32
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)):
                _cast_blocked_inputs(sub, inner, types)
        nodes.append(node)
    if len(nodes) != len(graph.node):
        del graph.node[:]
        graph.node.extend(nodes)


def _op_types(proto: onnx.ModelProto) -> set[str]:
    return {node.op_type for node in all_nodes(proto.graph)}


def _check_loads(proto: onnx.ModelProto) -> None:
    onnx.checker.check_model(proto)
    ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def _restore_fp32_quantization_params(graph: onnx.GraphProto, original: onnx.GraphProto) -> None:
    """Scales (and float zero points) of Q/DQ and integer ops are quantisation parameters, not compute: where the
    converter rounded one of those initializers to float16 (it sees only a float tensor), put back the original
    float32 values, so a DequantizeLinear is never fed float16 unless its scale was float16 to begin with."""
    params = {name for node in all_nodes(graph) if node.op_type in QUANTIZED_OPS for name in node.input[1:]}
    before = {init.name: init for init in original.initializer}
    for k, init in enumerate(graph.initializer):
        old = before.get(init.name)
        if init.name in params and old is not None and init.data_type != old.data_type:
            graph.initializer[k].CopyFrom(old)


def _drop_io_value_info(graph: onnx.GraphProto) -> None:
    """Exporters (and shape inference) may list graph outputs in value_info too; the converter retypes those
    entries FP16 while the kept-FP32 output is FLOAT, and the graph does not load. The graph output says it all."""
    boundary = {v.name for v in graph.output} | {v.name for v in graph.input}
    for info in [info for info in graph.value_info if info.name in boundary]:
        graph.value_info.remove(info)


def _retarget_float_casts(graph: onnx.GraphProto) -> None:
    """Undo another converter slip: a model's own Cast(to=FLOAT) (e.g. an int64 attention mask cast to float) keeps
    to=FLOAT while the converter declares its output FLOAT16, so the graph does not load. Cast to FLOAT16 instead,
    in If/Loop/Scan bodies too."""
    fp16_values = {v.name for v in [*graph.value_info, *graph.output]
                   if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16}
    for node in graph.node:
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)):
                _retarget_float_casts(sub)
        if node.op_type != "Cast" or not node.output or node.output[0] not in fp16_values:
            continue
        for attribute in node.attribute:
            if attribute.name == "to" and attribute.i == onnx.TensorProto.FLOAT:
                attribute.i = onnx.TensorProto.FLOAT16


def _read_outputs_as_fp16_inside(graph: onnx.GraphProto, blocked) -> None:
    """Undo a converter slip: a graph output the graph also reads (a decoder's present_* KV cache feeding its own
    attention) is cast back to FP32 for the output, while the FP16 nodes reading it still name the FP32 tensor, so
    the graph does not load. Point those readers at the FP16 tensor the Cast reads."""
    fp16_values = {v.name for v in graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16}
    index = GraphIndex(graph)
    for output in graph.output:
        cast = index.producer(output.name)
        if cast is None or cast.op_type != "Cast" or cast.input[0] not in fp16_values:
            continue
        for node in graph.node:
            if node is not cast and not blocked(node) and output.name in node.input:
                node.input[:] = [cast.input[0] if name == output.name else name for name in node.input]


def _restore_fp32_outputs(graph: onnx.GraphProto, fp32_outputs: set[str]) -> None:
    """Undo a converter slip: with keep_io_types, an output made by a blocked (FP32) node gets a Cast to FP16 and
    the graph output is retyped FP16. Drop that Cast so the blocked node writes the FP32 output itself."""
    index = GraphIndex(graph)
    for output in graph.output:
        if output.name not in fp32_outputs or output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            continue
        cast = index.producer(output.name)
        if cast is None or cast.op_type != "Cast":
            raise ValueError(f"FP16 conversion retyped output {output.name!r} without a Cast")
        inner = cast.input[0]
        graph.node.remove(cast)
        for node in graph.node:
            node.input[:] = [output.name if name == inner else name for name in node.input]
            node.output[:] = [output.name if name == inner else name for name in node.output]
        output.type.tensor_type.elem_type = onnx.TensorProto.FLOAT

"""FP16 transform: weights and activations really rounded to FP16, graph inputs/outputs kept FP32."""
from __future__ import annotations

import warnings

import onnx

from .._optional import require
from ..graph import GraphIndex

# IEEE half limits. The converter's defaults (1e-7, 1e4) would clamp weights in [1e4, 65504] that a real FP16 engine
# keeps, so we clamp only what FP16 cannot represent: that is what rounding to FP16 does anyway.
_FP16_MAX = 65504.0
_FP16_MIN_SUBNORMAL = 2.0 ** -24


def to_fp16(proto: onnx.ModelProto, *, keep_nodes: tuple[str, ...] = (),
            keep_ops: tuple[str, ...] = ()) -> onnx.ModelProto:
    """Convert a float32 graph to float16 with `onnxconverter_common.float16` (the same code as ORT's transformer tool).

    Inputs and outputs stay float32 (Cast nodes at the boundary). Nodes named in `keep_nodes` and nodes whose op type
    is in `keep_ops` (on top of the converter's default block list of ML ops with no FP16 form) stay float32, with
    Casts around them. ONNX Runtime's CPU provider adds its own Casts around ops that have no FP16 kernel, so the
    result always runs; the values between ops are FP16-rounded either way.
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
            op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST) + list(keep_ops),
            node_block_list=list(keep_nodes),
        )
    _drop_io_value_info(converted.graph)
    _restore_fp32_outputs(converted.graph, {out.name for out in proto.graph.output
                                            if out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT})
    _retarget_float_casts(converted.graph)
    return converted


def _drop_io_value_info(graph: onnx.GraphProto) -> None:
    """Exporters (and shape inference) may list graph outputs in value_info too; the converter retypes those
    entries FP16 while the kept-FP32 output is FLOAT, and the graph does not load. The graph output says it all."""
    boundary = {v.name for v in graph.output} | {v.name for v in graph.input}
    for info in [info for info in graph.value_info if info.name in boundary]:
        graph.value_info.remove(info)


def _retarget_float_casts(graph: onnx.GraphProto) -> None:
    """Undo another converter slip: a model's own Cast(to=FLOAT) (e.g. an int64 attention mask cast to float) keeps
    to=FLOAT while the converter declares its output FLOAT16, so the graph does not load. Cast to FLOAT16 instead."""
    fp16_values = {v.name for v in graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16}
    for node in graph.node:
        if node.op_type != "Cast" or not node.output or node.output[0] not in fp16_values:
            continue
        for attribute in node.attribute:
            if attribute.name == "to" and attribute.i == onnx.TensorProto.FLOAT:
                attribute.i = onnx.TensorProto.FLOAT16


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

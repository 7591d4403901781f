"""Dynamic INT8: ONNX Runtime's `quantize_dynamic` on the model's MatMuls with constant weights (int8 weights, per
channel by default).

Each activation's range is measured at run time (DynamicQuantizeLinear) instead of calibrated, so there is no
calibration set and no clipping of long-tailed activations (GELU outputs, attention scores) by a range that
misses one batch's outliers; the price is a min/max pass per quantised input in every run. Transformers on CPU
are the case it suits (ONNX Runtime's advice for BERT-like models). Only MatMul: ONNX Runtime's dynamic Conv
(ConvInteger) ran 14x slower than FP32 on fashion-cnn and 18x on EfficientNet-Lite0 on this CPU (2026-12-02), and
ONNX Runtime has no dynamic Gemm.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from .int8 import _loads, _opset_for_int8, _quiet_root_logger, weighted_nodes
from .plan import PrecisionPlan

DYNAMIC_OPS = ("MatMul",)
NOTE = ("INT8 dynamic: ONNX Runtime's DynamicQuantizeLinear measures each MatMul input's range at run time and "
        "MatMulInteger computes in int8 ({weights} int8 weights); no calibration set. Other ops stay FP32.")


def applies(proto: onnx.ModelProto) -> bool:
    """Whether dynamic INT8 quantises anything: the graph has a MatMul with a constant weight."""
    return bool(weighted_nodes(proto, DYNAMIC_OPS))


def quantize(proto: onnx.ModelProto, plan: PrecisionPlan, *, keep_nodes: tuple[str, ...] = (),
             keep_ops: tuple[str, ...] = ()) -> tuple[onnx.ModelProto, list[str]]:
    """`proto` with its constant-weight MatMuls dynamically quantised, except `keep_nodes` / `keep_ops`."""
    # the graph as given, not `calibrate.prepare`'s: its fusions (MatMul + Add -> Gemm) would hide MatMuls
    target, per_channel, notes = _opset_for_int8(proto, plan.per_channel)
    weighted = set(weighted_nodes(target, DYNAMIC_OPS))
    exclude = [node.name for node in target.graph.node
               if node.name not in weighted or node.name in keep_nodes or node.op_type in keep_ops]
    # the dynamic quantiser rewrites each Gemm "g" as MatMul "g_MatMul" (+ Add) before it applies the exclusions
    exclude += [f"{node.name}_MatMul" for node in target.graph.node if node.op_type == "Gemm"]
    with tempfile.TemporaryDirectory(prefix="workbench-dynamic-") as tmp:
        source, out = Path(tmp) / "source.onnx", Path(tmp) / "int8.onnx"
        onnx.save(target, source)
        with np.errstate(all="ignore"), _quiet_root_logger():
            quantize_dynamic(source, out, op_types_to_quantize=list(DYNAMIC_OPS), per_channel=per_channel,
                             weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
        quantized = onnx.load(out)
    names = {node.name for node in quantized.graph.node}
    for node in quantized.graph.node:  # "fc1" became "fc1_quant": give each its name back, so the engine's layers,
        original = node.name.removesuffix("_quant")  # keep_fp32 and the sensitivity units map to the model's nodes
        if node.op_type == "MatMulInteger" and original in weighted and original not in names:
            node.name = original
    _loads(quantized)
    if not any(node.op_type == "DynamicQuantizeLinear" for node in quantized.graph.node):
        notes.append("this graph has no MatMul with constant weights outside keep_fp32: dynamic INT8 quantised "
                     "nothing and the model computes in FP32 (use a calibrated method for Conv/Gemm models)")
    notes.append(NOTE.format(weights="per-channel" if per_channel else "per-tensor"))
    return quantized, notes

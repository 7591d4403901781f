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
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import save_tensors_data

from ..calibration import CalibrationSet
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

    with tempfile.TemporaryDirectory(prefix="workbench-int8-") as tmp:
        ranges_path, out_path = Path(tmp) / "ranges.json", Path(tmp) / "int8.onnx"
        save_tensors_data(ranges, ranges_path)
        with _quiet_per_channel_fallback():
            quantize_static(prepared, out_path, None, quant_format=QuantFormat.QDQ, per_channel=plan.per_channel,
                            calibrate_method=CALIBRATION_METHODS[plan.method], calibration_cache_path=ranges_path,
                            nodes_to_exclude=exclude, activation_type=style["activation_type"],
                            weight_type=style["weight_type"], op_types_to_quantize=style["op_types_to_quantize"],
                            extra_options=dict(style["extra_options"]))
        quantized = onnx.load(out_path)
    if plan.qdq_style == "tensorrt":
        _unquantize_weighted_add_inputs(quantized.graph)
    notes.append(STYLE_NOTES[plan.qdq_style])
    return quantized, notes


class _PerChannelFallback(logging.Filter):
    """ONNX Runtime's quantiser logs "Axis 1 is out-of-range for weight ..." on the root logger for every 1-D weight
    (biases, LayerNorm scales) it then quantises per tensor, as intended: dozens of red lines that are not faults."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is out-of-range for weight" not in record.getMessage()


@contextlib.contextmanager
def _quiet_per_channel_fallback():
    root = logging.getLogger()
    quiet = _PerChannelFallback()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


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

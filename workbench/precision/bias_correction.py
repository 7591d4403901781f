"""Empirical bias correction for INT8 Conv and Gemm: shift each layer's integer bias so that the mean of what the
next layer reads matches FP32.

Rounding weights and activations shifts the *mean* of a layer's output per channel, and in networks of depthwise
convolutions (MobileNet, EfficientNet) these shifts add up layer after layer. Empirical bias correction (Nagel et
al., 2019, "Data-Free Quantization Through Weight Equalization and Bias Correction", section 4.2; "bias correction"
in AIMET and NNCF) runs the calibration set through the FP32 graph and through the quantised one and subtracts the
mean error per output channel from the layer's bias. Here it is done layer by layer in graph order, each layer
measured with every earlier correction in place, so a layer corrects only what is left of the error that reaches
it; the error is taken where the next layer reads the value (after the output's Quantize/Dequantize, so a ReLU6
folded into the output's range is accounted for). Only the int32 bias values change (same scales, Q/DQ placement
and kernels), so the plan runs exactly as fast as without it. Cost: one FP32 pass over the calibration set, then
one pass of the quantised graph per corrected layer (EfficientNet-Lite0, 50 layers, 256 images: about 30 s).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from ..graph import GraphIndex
from ..jobs import CancelToken
from ..jobs import check as check_cancel
from .calibrate import observe

OPS = ("Conv", "Gemm")  # layers with a bias to correct (MatMul has none)
_INT32 = (-2 ** 31, 2 ** 31 - 1)


def corrects_any(proto: onnx.ModelProto) -> bool:
    """Whether `proto` has a layer bias correction could act on: a Conv or Gemm with a bias, or a Conv whose bias
    pre-processing creates (it feeds a BatchNormalization, folded into it)."""
    index = GraphIndex(proto.graph)
    return any(node.op_type in OPS and (len(node.input) > 2 and node.input[2] or any(
        c.op_type == "BatchNormalization" for c in index.consumers(node.output[0]))) for node in proto.graph.node)


def _targets(quantized: onnx.ModelProto, prepared: onnx.ModelProto) -> list[tuple]:
    """(node, observed tensor, FP32 reference tensor, bias initialiser, its scale or None) per correctable layer, in
    graph order: Conv/Gemm of `quantized` with dequantised weights whose bias is an int32 initialiser of its own
    behind a DequantizeLinear (its scale: one bias step) or a float initialiser of its own (scale None)."""
    index = GraphIndex(quantized.graph)
    initializers = {init.name: init for init in quantized.graph.initializer}
    originals = {node.name: node for node in prepared.graph.node}
    fp32_tensors = {name for node in prepared.graph.node for name in node.output}
    found = []
    for node in quantized.graph.node:
        if node.op_type not in OPS or len(node.input) < 3 or node.name not in originals:
            continue
        weights, bias = index.producer(node.input[1]), index.producer(node.input[2])
        if weights is None or weights.op_type != "DequantizeLinear":
            continue  # a layer kept in FP32
        if bias is None and node.input[2] in initializers and len(index.consumers(node.input[2])) == 1 \
                and initializers[node.input[2]].data_type == onnx.TensorProto.FLOAT:
            stored, scale = initializers[node.input[2]], None  # a float bias (Q/DQ style tensorrt)
        elif bias is not None and bias.op_type == "DequantizeLinear" and bias.input[0] in initializers \
                and bias.input[1] in initializers and len(index.consumers(bias.input[0])) == 1 \
                and initializers[bias.input[0]].data_type == onnx.TensorProto.INT32:
            stored, scale = initializers[bias.input[0]], initializers[bias.input[1]]
        else:
            continue
        observed = node.output[0]
        readers = index.consumers(observed)
        if len(readers) == 1 and readers[0].op_type == "QuantizeLinear":
            dequantized = [c for c in index.consumers(readers[0].output[0]) if c.op_type == "DequantizeLinear"]
            observed = dequantized[0].output[0] if dequantized else observed
        # the FP32 value of the same tensor: the quantiser keeps names, except where it removed an activation
        # folded into the output's range (the Conv then writes the activation's output name) or renamed an output
        reference = next((name for name in (observed, node.output[0]) if name in fp32_tensors),
                         originals[node.name].output[0])
        found.append((node, observed, reference, stored, scale))
    return found


def correct_biases(quantized: onnx.ModelProto, prepared: onnx.ModelProto, batches: list[dict[str, np.ndarray]], *,
                   cancel: CancelToken | None = None) -> int:
    """Correct, in place, the biases of the quantised Conv/Gemm layers of `quantized` (quantised from `prepared`,
    the pre-processed FP32 graph) from the calibration `batches`; returns how many layers were corrected. `cancel`
    is checked before every layer and calibration batch."""
    targets = _targets(quantized, prepared)
    if not targets:
        return 0
    corrected = 0
    reference = _channel_means(prepared, [t[2] for t in targets], batches, cancel)
    for node, observed, fp32, bias, scale in targets:
        error = _channel_means(quantized, [observed], batches, cancel)[observed] - reference[fp32]
        values = numpy_helper.to_array(bias)
        if error.shape != values.shape:
            continue
        if scale is None:
            new = (values - error).astype(values.dtype)
        else:
            steps = np.broadcast_to(numpy_helper.to_array(scale).astype(np.float64).ravel(), values.shape)
            if np.any(steps <= 0):
                continue
            new = np.clip(values.astype(np.int64) - np.round(error / steps).astype(np.int64), *_INT32).astype(np.int32)
        bias.CopyFrom(numpy_helper.from_array(new, bias.name))
        corrected += 1
    return corrected


def _channel_means(proto: onnx.ModelProto, names: list[str], batches,
                   cancel: CancelToken | None = None) -> dict[str, np.ndarray]:
    """Mean of each tensor in `names` per channel (axis 1) over the batches and every other axis."""
    fetch = list(dict.fromkeys(names))
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    # as the ONNX Runtime engines run it: without re-quantising the weights of FP32-kept layers
    for values in observe(proto, fetch, batches, disabled_optimizers=("WeightBiasQuantization",)):
        check_cancel(cancel)
        for name, value in zip(fetch, values):
            value = np.asarray(value, np.float64)
            sums[name] = sums.get(name, 0) + value.mean(axis=(0, *range(2, value.ndim))) * value.shape[0]
            counts[name] = counts.get(name, 0) + value.shape[0]
    return {name: total / counts[name] for name, total in sums.items()}

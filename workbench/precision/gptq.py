"""GPTQ weight rounding for INT8 Conv weights: keep the quantiser's scales, choose the integer weights.

Rounding each weight to the nearest step (what ONNX Runtime's quantiser does) minimises the error of every weight
on its own; GPTQ (Frantar et al., 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
Transformers", after Optimal Brain Quantization) minimises the error of the layer's *output* on calibration inputs:
weights are rounded one input column at a time and the rounding error of each is compensated on the columns not
yet rounded, weighted by the inverse Hessian H = X X^T of the layer's inputs. Only the int8 values change (same
scales, zero points, Q/DQ placement and kernels), so the plan runs exactly as fast as nearest rounding.

Covers Conv with group 1 and depthwise Conv (group = channels, one Hessian per channel); other nodes keep ONNX
Runtime's rounding. Hessians come from the FP32 (pre-processed) graph run over the calibration set, at up to
POSITIONS sampled output positions per image.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
from numpy.lib.stride_tricks import sliding_window_view
from onnx import helper, numpy_helper

from ..graph import GraphIndex
from ..jobs import CancelToken
from ..jobs import check as check_cancel

POSITIONS = 512  # output positions sampled per image for each Conv's Hessian
CANCEL_COLUMNS = 64  # columns rounded between two cancel checks (a large Conv takes seconds)
DAMP = 0.1  # added to H's diagonal, as a share of its mean (GPTQ's percdamp)
_QRANGE = {onnx.TensorProto.INT8: (-128, 127), onnx.TensorProto.UINT8: (0, 255)}


def _attribute(node: onnx.NodeProto, name: str, default):
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else helper.get_attribute_value(found)


def _roundable(node: onnx.NodeProto, weights: dict[str, np.ndarray]) -> bool:
    if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in weights:
        return False
    weight = weights[node.input[1]]
    group = _attribute(node, "group", 1)
    return weight.ndim == 4 and (group == 1 or group == weight.shape[0] and weight.shape[1] == 1) and \
        list(_attribute(node, "dilations", [1, 1])) == [1, 1]


def _roundable_convs(proto: onnx.ModelProto, weights: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    return [node for node in proto.graph.node if _roundable(node, weights)]


def rounds_any(proto: onnx.ModelProto) -> bool:
    """Whether GPTQ would round any weights of `proto` (it has a Conv it covers); else the plan is nearest's."""
    return bool(_roundable_convs(proto, {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}))


def hessians(prepared: onnx.ModelProto, batches: list[dict[str, np.ndarray]], *,
             cancel: CancelToken | None = None) -> dict[str, np.ndarray]:
    """Per roundable Conv (by node name): H of its input patches over `batches`, [K, K] (group 1, K = C*kh*kw)
    or [C, kh*kw, kh*kw] (depthwise). `cancel` is checked before every batch."""
    weights = {init.name: numpy_helper.to_array(init) for init in prepared.graph.initializer}
    convs = _roundable_convs(prepared, weights)
    if not convs:
        return {}
    graph_inputs = {i.name for i in prepared.graph.input}
    fetch = list(dict.fromkeys(n.input[0] for n in convs if n.input[0] not in graph_inputs))
    augmented = onnx.ModelProto()
    augmented.CopyFrom(prepared)
    outputs = {o.name for o in augmented.graph.output}
    augmented.graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                                  for name in fetch if name not in outputs)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(augmented.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    found: dict[str, np.ndarray] = {}
    for batch in batches:
        check_cancel(cancel)
        values = {**batch, **dict(zip(fetch, session.run(fetch, batch)))}
        for node in convs:
            check_cancel(cancel)
            patches = _patches(node, np.asarray(values[node.input[0]], np.float64),
                               weights[node.input[1]].shape[2:], rng)  # [N, C, P, k]
            if _attribute(node, "group", 1) == 1:
                flat = patches.transpose(0, 2, 1, 3).reshape(-1, patches.shape[1] * patches.shape[3])
                update = flat.T @ flat
            else:
                update = np.einsum("ncpk,ncpl->ckl", patches, patches)
            found[node.name] = found.get(node.name, 0) + update
    return found


def _patches(node: onnx.NodeProto, x: np.ndarray, kernel, rng) -> np.ndarray:
    """The input patches one output position sees, [N, C, positions, kh*kw], at up to POSITIONS sampled ones."""
    pads = list(_attribute(node, "pads", [0, 0, 0, 0]))
    strides = list(_attribute(node, "strides", [1, 1]))
    padded = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    windows = sliding_window_view(padded, tuple(kernel), axis=(2, 3))[:, :, ::strides[0], ::strides[1]]
    n, c, height, width = windows.shape[:4]
    windows = windows.reshape(n, c, height * width, -1)
    if height * width > POSITIONS:
        windows = windows[:, :, np.sort(rng.choice(height * width, POSITIONS, replace=False))]
    return windows


def round_weights(quantized: onnx.ModelProto, prepared: onnx.ModelProto, found: dict[str, np.ndarray], *,
                  cancel: CancelToken | None = None) -> int:
    """Replace, in place, the integer weights of each Conv of `quantized` that has a Hessian in `found` by GPTQ's
    rounding of the float weights of the same node in `prepared`; returns how many Convs were rounded. `cancel` is
    checked before every Conv."""
    floats = {init.name: init for init in prepared.graph.initializer}
    originals = {node.name: node for node in prepared.graph.node}
    initializers = {init.name: init for init in quantized.graph.initializer}
    index = GraphIndex(quantized.graph)
    rounded = 0
    for node in quantized.graph.node:
        check_cancel(cancel)
        original = originals.get(node.name)
        if node.op_type != "Conv" or node.name not in found or original is None:
            continue
        dq = index.producer(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in initializers \
                or len(index.consumers(dq.input[0])) != 1:
            continue
        stored = initializers[dq.input[0]]
        zero = numpy_helper.to_array(initializers[dq.input[2]]) if len(dq.input) > 2 and dq.input[2] in \
            initializers else np.zeros(1)
        if stored.data_type not in _QRANGE or np.any(zero != 0):
            continue  # only symmetric int8/uint8 weights
        scale = numpy_helper.to_array(initializers[dq.input[1]]).astype(np.float64).ravel()
        weight = numpy_helper.to_array(floats[original.input[1]]).astype(np.float64)
        if scale.size not in (1, weight.shape[0]):
            continue
        scale = np.broadcast_to(scale, (weight.shape[0],))
        low, high = _QRANGE[stored.data_type]
        rows = weight.reshape(weight.shape[0], -1)
        hessian = found[node.name]
        values = _gptq(rows, scale, hessian if hessian.ndim == 3 else hessian[None], low, high, cancel=cancel)
        stored.CopyFrom(numpy_helper.from_array(
            values.reshape(weight.shape).astype(numpy_helper.to_array(stored).dtype), stored.name))
        rounded += 1
    return rounded


def _gptq(rows: np.ndarray, scale: np.ndarray, hessian: np.ndarray, low: int, high: int, *,
          cancel: CancelToken | None = None) -> np.ndarray:
    """Integer weights [rows, K] for float `rows` with per-row `scale`; `hessian` [1, K, K] shared by all rows or
    [rows, K, K] one per row (depthwise). `cancel` is checked every CANCEL_COLUMNS columns."""
    work = rows.copy()
    size = hessian.shape[-1]
    eye = np.eye(size)
    damped = hessian + (DAMP * np.mean(np.diagonal(hessian, axis1=1, axis2=2), axis=1) + 1e-12)[:, None, None] * eye
    # upper Cholesky factor of H^-1: row j holds how the error of column j spreads over columns j+1..
    upper = np.linalg.cholesky(np.linalg.inv(damped)).transpose(0, 2, 1)
    upper = np.broadcast_to(upper, (rows.shape[0], size, size))
    values = np.zeros_like(work)
    for j in range(size):
        if j % CANCEL_COLUMNS == 0:
            check_cancel(cancel)
        values[:, j] = np.clip(np.round(work[:, j] / scale), low, high)
        error = (work[:, j] - values[:, j] * scale) / upper[:, j, j]
        work[:, j + 1:] -= error[:, None] * upper[:, j, j + 1:]
    return values

"""SmoothQuant: move the quantisation difficulty of activations with outlier channels into the weights.

Transformer activations have a few channels whose values are 10-100x the others (Xiao et al., 2023, "SmoothQuant:
Accurate and Efficient Post-Training Quantization for Large Language Models"); one per-tensor INT8 scale stretched
over them rounds the other channels to a few steps. For each activation X read by MatMul/Gemm nodes with constant
weights W, SmoothQuant divides channel k of X by s_k and multiplies row k of every W by s_k: X W = (X / s)(s W),
the same function in FP32, with

    s_k = max|X_k| ** alpha / max|W_k| ** (1 - alpha)

from the per-channel maximum of |X| over the calibration set and of |W| over the nodes sharing X (alpha 0.5:
activation and weight ranges meet in the middle; 1: activations flat). Weights are quantised per channel of their
output, so scaling their rows costs little. As NNCF does for ONNX, the division is a Mul node inserted in front of
the nodes that read X (others, such as a residual Add, keep X): it runs in float and its output is what gets
quantised, so it is kept out of Q/DQ placement.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .calibrate import observe

ALPHA = 0.5
OPS = ("MatMul", "Gemm")
_FLOOR = 1e-5  # ranges below this count as this, so a dead channel neither divides by zero nor explodes


def _attribute(node: onnx.NodeProto, name: str, default):
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else helper.get_attribute_value(found)


def _input_rows(node: onnx.NodeProto, weight: np.ndarray) -> np.ndarray:
    """`weight` with one row per input channel of `node` ([K, N])."""
    return weight.T if node.op_type == "Gemm" and _attribute(node, "transB", 0) else weight


def groups(proto: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """Activations to smooth: tensor -> the MatMul/Gemm nodes reading it as their data input with a float 2-D
    constant weight (Gemm without transA)."""
    weights = {init.name: init for init in proto.graph.initializer}
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        weight = weights.get(node.input[1]) if node.op_type in OPS and len(node.input) > 1 else None
        if weight is None or len(weight.dims) != 2 or weight.data_type != onnx.TensorProto.FLOAT or \
                node.input[0] in weights or (node.op_type == "Gemm" and _attribute(node, "transA", 0)):
            continue
        found.setdefault(node.input[0], []).append(node)
    return found


def channel_max(proto: onnx.ModelProto, names: list[str],
                batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """max |x| per channel (last axis) of each tensor in `names` over the calibration `batches`."""
    found: dict[str, np.ndarray] = {}
    for values in observe(proto, names, batches):
        for name, value in zip(names, values):
            value = np.abs(np.asarray(value, np.float32))
            peak = value.reshape(-1, value.shape[-1]).max(axis=0)
            found[name] = np.maximum(found[name], peak) if name in found else peak
    return found


def smooth(proto: onnx.ModelProto, activation_max: dict[str, np.ndarray],
           alpha: float = ALPHA) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of `proto` with each activation in `activation_max` (per-channel max |x|, from `channel_max`) smoothed
    for the nodes `groups` finds reading it; returns the copy and the names of the Mul nodes inserted."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"SmoothQuant's alpha must be within [0, 1], got {alpha}")
    smoothed = onnx.ModelProto()
    smoothed.CopyFrom(proto)
    graph = smoothed.graph
    weights = {init.name: init for init in graph.initializer}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    inserted: list[tuple[int, onnx.NodeProto]] = []
    for tensor, nodes in groups(smoothed).items():
        peak = activation_max.get(tensor)
        rows = [_input_rows(node, numpy_helper.to_array(weights[node.input[1]])) for node in nodes]
        if peak is None or any(r.shape[0] != peak.shape[0] for r in rows):
            continue
        weight_peak = np.max([np.abs(r).max(axis=1) for r in rows], axis=0)
        scale = np.maximum(peak, _FLOOR) ** alpha / np.maximum(weight_peak, _FLOOR) ** (1 - alpha)
        scale = np.where((peak > 0) & (weight_peak > 0), scale, 1.0).astype(np.float32)
        for node, row in zip(nodes, rows):
            name = node.input[1]
            scaled = row * scale[:, None]
            scaled = scaled.T if node.op_type == "Gemm" and _attribute(node, "transB", 0) else scaled
            if readers[name] > 1:  # a weight shared with other nodes: this node gets its own copy
                name = f"{name}_smoothed_{node.name}"
                node.input[1] = name
                graph.initializer.append(numpy_helper.from_array(scaled.astype(np.float32), name))
            else:
                weights[name].CopyFrom(numpy_helper.from_array(scaled.astype(np.float32), name))
        mul = helper.make_node("Mul", [tensor, f"{tensor}_smooth_scale"], [f"{tensor}_smoothed"],
                               name=f"{tensor}_SmoothQuant")
        graph.initializer.append(numpy_helper.from_array((1 / scale).astype(np.float32), mul.input[1]))
        for node in nodes:
            node.input[0] = mul.output[0]
        ids = {id(node) for node in nodes}
        first = min(i for i, node in enumerate(graph.node) if id(node) in ids)
        inserted.append((first, mul))
    for position, mul in sorted(inserted, key=lambda item: -item[0]):
        graph.node.insert(position, mul)
    used = {name for node in graph.node for name in node.input}
    for init in [init for init in graph.initializer if init.name not in used]:
        graph.initializer.remove(init)
    return smoothed, [mul.name for _, mul in inserted]


class SmoothQuant:
    """Pipeline step (precision.pipeline), after pre-processing and before calibration."""

    name = "smoothquant"
    after = "prepare"

    def __init__(self, alpha: float = ALPHA) -> None:
        self.alpha = alpha

    def applies(self, model, plan):
        return bool(groups(model))

    def apply(self, model, plan, ctx):
        found = groups(model)
        smoothed, muls = smooth(model, channel_max(model, list(found), ctx.batches), self.alpha)
        ctx.float_nodes += tuple(muls)  # the division reads X in float; its output is what gets quantised
        ctx.notes.append(f"SmoothQuant (alpha {self.alpha}): {len(muls)} activation(s) read by "
                         f"{sum(map(len, found.values()))} MatMul/Gemm node(s) divided per channel by scales moved "
                         "into their weights (same FP32 function; a float Mul in front of each)")
        return smoothed

    def key(self, plan):
        return f"smoothquant/alpha={self.alpha}"

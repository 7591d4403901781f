"""Cross-layer equalisation: rescale consecutive convolutions so their per-channel weight ranges match.

In depthwise-separable convnets (MobileNet, EfficientNet) with BatchNorm folded into the convolutions, the weight
ranges of one output channel and the next differ by 100x and more, so one per-tensor INT8 weight scale rounds the
small channels to a few steps. For Conv1 -> (ReLU) -> Conv2 with channel c of Conv1's output read as input channel c
of Conv2, ReLU(x / s) = ReLU(x) / s for s > 0, so dividing Conv1's output channel c (weights and bias) by s_c and
multiplying Conv2's weights of input channel c by s_c keeps the function; with

    s_c = sqrt(r1_c / r2_c),  r1_c = max|W1[c]|,  r2_c = max|W2[:, c]|

both ranges become sqrt(r1_c r2_c) (Nagel et al., 2019, "Data-Free Quantization Through Weight Equalization and
Bias Correction", section 4.1; AIMET's "cross-layer scaling"). Pairs are equalised in graph order, sweeping until
the scales settle, since a depthwise convolution is the second layer of one pair and the first of the next.

Runs after pre-processing, which folds BatchNormalization into the convolutions (a pair with a BatchNormalization
left between its layers is not equalised). ReLU6 (Clip 0..6) is not scale-invariant: clip(x / s, 0, 6) differs from
clip(x, 0, 6) / s. AIMET (and Nagel et al. for MobileNetV2) replace each ReLU6 between equalised layers by a ReLU
(`relu6="relu"`), which changes the FP32 function wherever an activation exceeded 6: on efficientnet-lite0-fashion
that alone changes the FP32 top-1 of 56 % of the eval images (benchmarks/algorithms.json). Two choices that keep
ReLU6 instead: `relu6="bound"` moves the bound with the scale, clip(x, 0, 6) / s = min(relu(x / s), 6 / s) per
channel (a ReLU and a Min by a per-channel constant: exact for any input, but the Min runs in float between integer
layers); `relu6="calibrated"` (the pipeline step's default) keeps the ReLU6 and limits the scales from the
calibration set: a channel whose input to the ReLU6 reaches 6 keeps scale 1, any other channel c gets s_c >= max x_c
/ 6, so no value seen in calibration is clipped differently (exact on the calibration set; 99.55 % FP32 top-1
agreement on the eval images of efficientnet-lite0-fashion, where an input beyond the calibration maxima is clipped
differently). High-bias absorption (the paper's section 4.1.1) is not done.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..graph import GraphIndex
from .calibrate import observe

SWEEPS = 20
SETTLED = 1e-3  # stop when no scale of a sweep moves a range by more than this (log scale)
ACTIVATIONS = ("Relu", "LeakyRelu", "Clip")  # between the layers: scale-invariant, or ReLU6 made so
RELU6_MODES = ("calibrated", "bound", "relu")


def _constant(index: GraphIndex, weights: dict, name: str) -> np.ndarray | None:
    if not name:
        return None
    if name in weights:
        return numpy_helper.to_array(weights[name])
    producer = index.producer(name)
    if producer is not None and producer.op_type == "Constant":
        return numpy_helper.to_array(next(a.t for a in producer.attribute if a.name == "value"))
    return None


def _clip_bounds(node: onnx.NodeProto, index: GraphIndex, weights: dict) -> tuple[float, float | None] | None:
    """(min, max) of a Clip (max None when unbounded), or None when a bound is not a constant."""
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if "min" in attributes or "max" in attributes:  # opset < 11
        return float(attributes.get("min", -np.inf)), attributes.get("max")
    bounds = []
    for position in (1, 2):
        name = node.input[position] if len(node.input) > position else ""
        value = _constant(index, weights, name)
        if name and value is None:
            return None
        bounds.append(None if value is None else float(value))
    return (-np.inf if bounds[0] is None else bounds[0]), bounds[1]


def pairs(proto: onnx.ModelProto) -> list[tuple[onnx.NodeProto, onnx.NodeProto | None, onnx.NodeProto]]:
    """(Conv1, activation or None, Conv2) where Conv2 (group 1 or depthwise) alone reads Conv1's output through at
    most one ReLU, LeakyReLU or Clip with lower bound 0, and each weight belongs to its Conv alone."""
    index = GraphIndex(proto)
    weights = {init.name: init for init in proto.graph.initializer}
    outputs = {o.name for o in proto.graph.output}
    readers: dict[str, int] = {}
    for node in proto.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1

    def own_weight(node: onnx.NodeProto) -> bool:
        return node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in weights and \
            readers[node.input[1]] == 1 and len(weights[node.input[1]].dims) >= 3 and \
            (len(node.input) < 3 or not node.input[2] or node.input[2] in weights and readers[node.input[2]] == 1)

    def only_reader(tensor: str) -> onnx.NodeProto | None:
        found = index.consumers(tensor)
        return found[0] if len(found) == 1 and tensor not in outputs else None

    found = []
    for first in (node for node in proto.graph.node if own_weight(node)):
        activation, second = None, only_reader(first.output[0])
        if second is not None and second.op_type in ACTIVATIONS:
            if second.op_type == "Clip" and (_clip_bounds(second, index, weights) or (None,))[0] != 0:
                continue
            activation, second = second, only_reader(second.output[0])
        if second is None or not own_weight(second) or second.input[0] != (activation or first).output[0]:
            continue
        channels = weights[first.input[1]].dims[0]
        second_weight = weights[second.input[1]].dims
        group = next((a.i for a in second.attribute if a.name == "group"), 1)
        if group == 1 and second_weight[1] == channels or group == channels and second_weight[1] == 1:
            found.append((first, activation, second))
    return found


def peaks(proto: onnx.ModelProto, batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """max x per channel (axis 1) of each tensor a bounded Clip (ReLU6) between a pair reads, over `batches`."""
    index = GraphIndex(proto)
    weights = {init.name: init for init in proto.graph.initializer}
    names = list(dict.fromkeys(activation.input[0] for _, activation, _ in pairs(proto) if activation is not None
                               and activation.op_type == "Clip" and _clip_bounds(activation, index, weights)[1]
                               is not None))
    if not names:
        return {}
    found: dict[str, np.ndarray] = {}
    for values in observe(proto, names, batches):
        for name, value in zip(names, values):
            peak = np.moveaxis(np.asarray(value), 1, 0).reshape(value.shape[1], -1).max(axis=1)
            found[name] = np.maximum(found[name], peak) if name in found else peak
    return found


def equalize(proto: onnx.ModelProto, sweeps: int = SWEEPS, relu6: str = "bound",
             maxima: dict[str, np.ndarray] | None = None) -> tuple[onnx.ModelProto, int, int, int]:
    """A copy of `proto` with every pair `pairs` finds equalised; returns it, the number of pairs, the number of
    bounded Clips (ReLU6) between them and the number of channels held at scale 1 by their bound.

    ReLU6 (see the module's docstring): `relu6="calibrated"` keeps it, with `maxima` (from `peaks`) limiting the
    scales; "bound" makes it a ReLU and a Min by per-channel bounds; "relu" a ReLU, as AIMET does."""
    if relu6 not in RELU6_MODES:
        raise ValueError(f"relu6={relu6!r}: choose one of {', '.join(RELU6_MODES)}")
    if relu6 == "calibrated" and maxima is None:
        raise ValueError('relu6="calibrated" needs the maxima of the ReLU6 inputs: pass maxima=peaks(proto, batches)')
    equalized = onnx.ModelProto()
    equalized.CopyFrom(proto)
    found = pairs(equalized)
    if not found:
        return equalized, 0, 0, 0
    inits = {init.name: init for init in equalized.graph.initializer}
    arrays = {name: numpy_helper.to_array(inits[name]).astype(np.float64)
              for first, _, second in found for node in (first, second) for name in node.input[1:3] if name}

    def input_view(node: onnx.NodeProto) -> np.ndarray:
        """Conv2's weights with input channels first ([C, ...]: depthwise weights are already)."""
        weight = arrays[node.input[1]]
        return weight if next((a.i for a in node.attribute if a.name == "group"), 1) > 1 else np.swapaxes(weight, 0, 1)

    index = GraphIndex(equalized)
    highs = [_clip_bounds(activation, index, inits)[1] if activation is not None and activation.op_type == "Clip"
             else None for _, activation, _ in found]
    total = [np.ones(arrays[first.input[1]].shape[0]) for first, _, _ in found]  # each pair's scale so far
    lowest, held = [None] * len(found), 0  # relu6="calibrated": the least scale each channel may have
    for pair, ((_, activation, _), high) in enumerate(zip(found, highs)):
        if relu6 == "calibrated" and high is not None:
            peak = maxima[activation.input[0]]
            lowest[pair] = np.where(peak >= high, np.inf, peak / high)  # inf: reaches the bound, keeps scale 1
            held += int(np.sum(peak >= high))
    for _ in range(sweeps):
        moved = 0.0
        for pair, (first, _, second) in enumerate(found):
            w1, w2 = arrays[first.input[1]], input_view(second)
            r1 = np.abs(w1).reshape(w1.shape[0], -1).max(axis=1)
            r2 = np.abs(w2).reshape(w2.shape[0], -1).max(axis=1)
            scale = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.where(r2 > 0, r2, 1)), 1.0)
            if lowest[pair] is not None:
                wanted = total[pair] * scale
                scale = np.where(np.isinf(lowest[pair]), 1.0, np.maximum(wanted, lowest[pair])) / total[pair]
            arrays[first.input[1]] = w1 / scale.reshape((-1,) + (1,) * (w1.ndim - 1))
            if len(first.input) > 2 and first.input[2]:
                arrays[first.input[2]] = arrays[first.input[2]] / scale
            w2 *= scale.reshape((-1,) + (1,) * (w2.ndim - 1))  # a view: scales Conv2's weights in place
            total[pair] *= scale
            moved = max(moved, float(np.abs(np.log(scale)).max()))
        if moved < SETTLED:
            break
    for name, value in arrays.items():
        inits[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
    bounds = []
    for (first, activation, _), scale, high in zip(found, total, highs):
        if high is None or relu6 == "calibrated":  # scale-invariant, or kept exact on calibration data by the scales
            continue
        output = activation.output[0]
        if relu6 == "relu":
            activation.CopyFrom(helper.make_node("Relu", [activation.input[0]], [output], name=activation.name))
            continue
        spatial = (1,) * (arrays[first.input[1]].ndim - 2)  # broadcast over the positions of [N, C, ...]
        limit = numpy_helper.from_array((high / scale).astype(np.float32).reshape(-1, *spatial), f"{output}_bound")
        equalized.graph.initializer.append(limit)
        activation.CopyFrom(helper.make_node("Relu", [activation.input[0]], [f"{output}_relu"], name=activation.name))
        bounds.append((activation, helper.make_node("Min", [f"{output}_relu", limit.name], [output],
                                                    name=f"{activation.name}_bound")))
    for activation, bound in bounds:
        position = next(i for i, node in enumerate(equalized.graph.node) if node is activation)
        equalized.graph.node.insert(position + 1, bound)
    used = {name for node in equalized.graph.node for name in node.input}
    for init in [init for init in equalized.graph.initializer if init.name not in used]:
        equalized.graph.initializer.remove(init)
    return equalized, len(found), sum(high is not None for high in highs), held


class CrossLayerEqualization:
    """Pipeline step (precision.pipeline), after pre-processing (BatchNormalization folded) and before calibration."""

    name = "cle"
    after = "prepare"

    def __init__(self, relu6: str = "calibrated") -> None:
        self.relu6 = relu6

    def applies(self, model, plan):
        return bool(pairs(model))

    def apply(self, model, plan, ctx):
        maxima = peaks(model, ctx.batches) if self.relu6 == "calibrated" else None
        equalized, count, bounded, held = equalize(model, relu6=self.relu6, maxima=maxima)
        what = {"calibrated": f"kept, with scales that clip no calibration value differently ({held} channel(s) "
                              "reaching 6 keep scale 1)",
                "bound": "given per-channel bounds (a ReLU and a Min: the same function)",
                "relu": "replaced by ReLU as AIMET does, so FP32 outputs change where an activation exceeded 6"}
        ctx.notes.append(f"cross-layer equalisation: weight ranges of {count} Conv pair(s) equalised per channel"
                         + (f"; {bounded} ReLU6 between them {what[self.relu6]}" if bounded else ""))
        return equalized

    def key(self, plan):
        return f"cle/sweeps={SWEEPS}/relu6={self.relu6}"

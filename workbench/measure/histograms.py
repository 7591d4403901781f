"""Why a tensor quantises well or badly: its activation histogram over calibration sets, the range each calibration
method chose drawn on it, the share of values that range clips, its INT8 step and the SQNR it gives; and, for
weights, the range of every output channel against the one per-tensor range.

Histograms are streamed: the graph calibration uses (`precision.calibrate.prepare`) runs once per batch with only the
asked tensors exposed, one pass for the extremes (so every set shares the same bins) and one to count and quantise;
no more than one batch of those tensors is held at a time.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType

from ..errors import InputSpecError
from ..jobs import CancelToken
from ..jobs import check as check_cancel
from ..models.spec import Model
from .drift import sqnr_db

DEFAULT_BINS = 128
# The activation integer type of each Q/DQ style (workbench.precision.int8's styles) and whether it is symmetric.
ACTIVATION_TYPES = {"onnxruntime": (TensorProto.UINT8, False), "tensorrt": (TensorProto.INT8, True)}
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")  # ops whose second input is a weight with output channels


@dataclass
class RangeEffect:
    """One calibration range applied to one set's values: what INT8 with that range does to them."""

    method: str
    low: float
    high: float
    step: float  # the INT8 step size (scale), in the tensor's units
    clipped_share: float  # fraction of values outside [low, high] (they saturate)
    sqnr_db: float  # SQNR of the values after quantise-dequantise with this range (inf: exact)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class SetHistogram:
    """One set's values of a tensor on the histogram's shared bins."""

    name: str
    counts: list[int]
    values: int  # how many values were counted
    min: float
    max: float
    effects: list[RangeEffect] = field(default_factory=list)

    def effect(self, method: str) -> RangeEffect:
        return next(e for e in self.effects if e.method == method)

    def to_json(self) -> dict:
        return {**asdict(self), "effects": [e.to_json() for e in self.effects]}


@dataclass
class TensorHistogram:
    """A tensor's values over one or more sets, on shared bin `edges`, with each method's range's effect."""

    tensor: str
    edges: list[float]
    sets: list[SetHistogram]
    qdq_style: str

    def set(self, name: str) -> SetHistogram:
        return next(s for s in self.sets if s.name == name)

    def to_json(self) -> dict:
        return {"tensor": self.tensor, "edges": self.edges, "qdq_style": self.qdq_style,
                "sets": [s.to_json() for s in self.sets]}


@dataclass
class WeightRanges:
    """A weight's range per output channel against its single per-tensor range."""

    node: str
    op_type: str
    weight: str
    axis: int
    channel_low: list[float]
    channel_high: list[float]
    per_tensor_step: float  # symmetric INT8 step of one range for the whole tensor
    per_channel_steps: list[float]  # the same for each channel's own range
    per_tensor_sqnr_db: float  # SQNR of the weights rounded with one per-tensor scale
    per_channel_sqnr_db: float  # ... with one scale per output channel

    @property
    def spread(self) -> float:
        """Largest channel step / median channel step: far above 1, per-tensor scales waste most channels' levels."""
        steps = np.asarray(self.per_channel_steps)
        middle = float(np.median(steps))
        return float(steps.max() / middle) if middle > 0 else float("inf")

    def to_json(self) -> dict:
        return {**asdict(self), "spread": self.spread}


def quantise(values: np.ndarray, low: float, high: float, qdq_style: str = "onnxruntime") -> tuple[np.ndarray, float]:
    """`values` after QuantizeLinear -> DequantizeLinear with the range [low, high] as ONNX Runtime's quantiser sets
    its scale and zero point for the style's activation type; and the step (scale)."""
    if qdq_style not in ACTIVATION_TYPES:
        raise InputSpecError(f"Unknown Q/DQ style {qdq_style!r}: choose one of {', '.join(ACTIVATION_TYPES)}.")
    qtype, symmetric = ACTIVATION_TYPES[qdq_style]
    qmin, qmax = get_qmin_qmax_for_qType(qtype, symmetric=symmetric)
    zero, scale = compute_scale_zp(np.array(low, np.float32), np.array(high, np.float32), qmin, qmax,
                                   symmetric=symmetric)
    scale, zero = float(scale), int(zero)
    if scale == 0.0:
        return np.zeros_like(values, dtype=np.float64), 0.0
    q = np.clip(np.rint(values / scale) + zero, int(qmin), int(qmax))
    return (q - zero) * scale, scale


def tensor_histogram(model: Model | onnx.ModelProto, tensor: str, sets: dict[str, Sequence[dict[str, np.ndarray]]],
                     ranges: dict[str, tuple[float, float]], *, qdq_style: str = "onnxruntime",
                     bins: int = DEFAULT_BINS, cancel: CancelToken | None = None,
                     progress: Callable[[int, int], None] | None = None) -> TensorHistogram:
    """Histogram of `tensor` over each named set of feeds (batches), on bins shared by all sets, with the effect of
    every `ranges` entry (method -> (low, high), e.g. from the calibration cache) on each set's values.

    `model` is the graph calibration ran on; `progress(done, total)` counts batches over both passes."""
    proto = model.proto if isinstance(model, Model) else model
    if bins < 2:
        raise InputSpecError(f"bins={bins}: use at least 2 bins.")
    if not sets or any(len(batches) == 0 for batches in sets.values()):
        raise InputSpecError("tensor_histogram needs at least one set with at least one batch of feeds.")
    session = _exposing_session(proto, [tensor])
    total = 2 * sum(len(batches) for batches in sets.values())
    done = 0

    def each_batch(batches):
        nonlocal done
        for feeds in batches:
            check_cancel(cancel)
            values = np.asarray(session.run([tensor], feeds)[0], dtype=np.float64).ravel()
            done += 1
            if progress is not None:
                progress(done, total)
            yield values[np.isfinite(values)]

    extremes = {}
    for name, batches in sets.items():
        low, high = np.inf, -np.inf
        for values in each_batch(batches):
            if values.size:
                low, high = min(low, values.min()), max(high, values.max())
        extremes[name] = (low, high)
    low = min([lo for lo, _ in extremes.values()] + [r[0] for r in ranges.values()])
    high = max([hi for _, hi in extremes.values()] + [r[1] for r in ranges.values()])
    if not np.isfinite(low) or not np.isfinite(high):
        raise InputSpecError(f"Tensor {tensor!r} has no finite values in these sets: nothing to histogram.")
    if high == low:
        high = low + 1.0
    edges = np.linspace(low, high, bins + 1)
    result = []
    for name, batches in sets.items():
        counts = np.zeros(bins, np.int64)
        signal = 0.0
        noise = {method: 0.0 for method in ranges}
        clipped = {method: 0 for method in ranges}
        steps = {}
        count = 0
        for values in each_batch(batches):
            counts += np.histogram(values, bins=edges)[0]
            count += values.size
            signal += float(np.sum(values ** 2))
            for method, (lo, hi) in ranges.items():
                rounded, steps[method] = quantise(values, lo, hi, qdq_style)
                noise[method] += float(np.sum((values - rounded) ** 2))
                clipped[method] += int(np.count_nonzero((values < lo) | (values > hi)))
        effects = [RangeEffect(method=method, low=float(lo), high=float(hi),
                               step=steps.get(method, quantise(np.zeros(1), lo, hi, qdq_style)[1]),
                               clipped_share=clipped[method] / count if count else 0.0,
                               sqnr_db=_sqnr_from_sums(signal, noise[method]))
                   for method, (lo, hi) in ranges.items()]
        result.append(SetHistogram(name=name, counts=counts.tolist(), values=count, min=float(extremes[name][0]),
                                   max=float(extremes[name][1]), effects=effects))
    return TensorHistogram(tensor=tensor, edges=edges.tolist(), sets=result, qdq_style=qdq_style)


def weight_ranges(model: Model | onnx.ModelProto, node_name: str) -> WeightRanges:
    """Per-output-channel ranges of the constant weight of `node_name` (Conv, ConvTranspose, Gemm or MatMul)."""
    proto = model.proto if isinstance(model, Model) else model
    node = next((n for n in proto.graph.node if n.name == node_name), None)
    if node is None:
        raise InputSpecError(f"No node named {node_name!r} in the model: pick one of its Conv/Gemm/MatMul nodes.")
    if node.op_type not in WEIGHT_OPS:
        raise InputSpecError(f"Node {node_name!r} is a {node.op_type}: weight ranges are for "
                             f"{', '.join(WEIGHT_OPS)} nodes.")
    initializers = {init.name: init for init in proto.graph.initializer}
    weight_name = node.input[1] if len(node.input) > 1 else ""
    if weight_name not in initializers:
        raise InputSpecError(f"Node {node_name!r} has no constant weight (its second input {weight_name!r} is "
                             "computed): weight ranges need a weight stored in the model.")
    weight = numpy_helper.to_array(initializers[weight_name]).astype(np.float64)
    axis = _output_channel_axis(node, weight.ndim)
    channels = np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1)
    low, high = channels.min(axis=1), channels.max(axis=1)
    qmax = 127.0
    per_tensor_step = float(np.abs(weight).max() / qmax)
    per_channel_steps = np.maximum(np.abs(low), np.abs(high)) / qmax

    def rounded_with(steps: np.ndarray) -> np.ndarray:
        safe = np.where(steps > 0, steps, 1.0)[:, None]
        return np.clip(np.rint(channels / safe), -qmax, qmax) * safe

    return WeightRanges(node=node_name, op_type=node.op_type, weight=weight_name, axis=axis,
                        channel_low=low.tolist(), channel_high=high.tolist(), per_tensor_step=per_tensor_step,
                        per_channel_steps=per_channel_steps.tolist(),
                        per_tensor_sqnr_db=sqnr_db(channels, rounded_with(np.full(len(channels), per_tensor_step))),
                        per_channel_sqnr_db=sqnr_db(channels, rounded_with(per_channel_steps)))


def _output_channel_axis(node: onnx.NodeProto, rank: int) -> int:
    """Conv: [out, in, ...]; ConvTranspose: [in, out, ...]; Gemm: [in, out] unless transB; MatMul: [..., in, out]."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "Gemm":
        return 0 if any(a.name == "transB" and a.i for a in node.attribute) else 1
    return rank - 1


def _sqnr_from_sums(signal: float, noise: float) -> float:
    if noise == 0.0:
        return float("inf")
    if signal == 0.0:
        return float("-inf")
    return float(10.0 * np.log10(signal / noise))


def _exposing_session(proto: onnx.ModelProto, tensors: list[str]) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session of `proto` whose outputs include `tensors` (float tensors the graph computes)."""
    inferred = onnx.shape_inference.infer_shapes(proto)
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info, *graph.output]
             if v.type.HasField("tensor_type")}
    produced = {out for node in graph.node for out in node.output} | {i.name for i in graph.input}
    missing = [t for t in tensors if t not in produced]
    if missing:
        raise InputSpecError(f"No tensor named {missing[0]!r} in the calibrated graph: pick one of the tensors a node "
                             "computes (the drift view lists them).")
    augmented = onnx.ModelProto()
    augmented.CopyFrom(proto)
    outputs = {out.name for out in augmented.graph.output}
    for name in tensors:
        if name not in outputs:
            augmented.graph.output.append(helper.make_tensor_value_info(name, types.get(name, TensorProto.FLOAT),
                                                                        None))
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(augmented.SerializeToString(), options, providers=["CPUExecutionProvider"])

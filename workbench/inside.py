"""See inside a model's INT8 error, for one session: a tensor's histogram over calibration sets with every calibration
method's range on it, a weight's per-channel ranges, and each tensor's error split into weights and activations.

Each works on the graph calibration and quantisation work on (`precision.calibrate.prepare`: BatchNormalization
folded into Conv, constants folded), so tensor and node names are the ones INT8 results and drift show.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

import numpy as np

from .calibration import DEFAULT_SIZE, CalibrationSet
from .errors import InputSpecError
from .jobs import CancelToken
from .measure.decomposition import LayerError, decompose
from .graph import GraphIndex
from .measure.histograms import DEFAULT_BINS, WEIGHT_OPS, TensorHistogram, WeightRanges, tensor_histogram
from .measure.histograms import weight_ranges as channel_ranges
from .models.spec import Model
from .precision import calibrate
from .precision.decompose import activations_only, weights_only
from .precision.pipeline import fp32_graph
from .results import DriftPoint, RunResult
from .session import Workbench
from .vocabulary import CALIBRATED_METHODS

DECOMPOSITION_REVISION = 2  # in the cache key: change when the split or its rows change


def method_ranges(session: Workbench, *, calibration: str | CalibrationSet | None = None,
                  methods: tuple[str, ...] = CALIBRATED_METHODS,
                  calibration_size: int = DEFAULT_SIZE) -> dict[str, dict[str, tuple[float, float]]]:
    """method -> tensor -> (low, high): the INT8 range each calibration method picks for every calibrated tensor
    (computed once per method and set, then served from the calibration cache, as INT8 runs use them)."""
    unknown = [m for m in methods if m not in CALIBRATED_METHODS]
    if unknown:
        raise InputSpecError(f"Unknown calibration method {unknown[0]!r}: choose from {', '.join(CALIBRATED_METHODS)}.")
    prepared, _ = calibrate.prepare(session.model)
    chosen = session.calibration_set(calibration, calibration_size)
    batches = calibrate.calibration_batches(chosen, session.model.inputs)
    size = len(next(iter(batches[0].values())))
    ranges = {}
    for method in methods:
        key = calibrate.range_key(session.model.content_hash, chosen, method, size)
        found = calibrate.activation_ranges(prepared, key, batches, method, progress=False, cache_dir=session.cache)
        ranges[method] = {tensor: tuple(float(np.asarray(v).ravel()[0]) for v in data.range_value)
                          for tensor, data in found.data.items()}
    return ranges


def histogram(session: Workbench, tensor: str, *, calibration: str | CalibrationSet | None = None,
              compare: str | CalibrationSet | None = None, methods: tuple[str, ...] = CALIBRATED_METHODS,
              calibration_size: int = DEFAULT_SIZE, qdq_style: str = "onnxruntime", bins: int = DEFAULT_BINS,
              cancel: CancelToken | None = None,
              progress: Callable[[int, int], None] | None = None) -> TensorHistogram:
    """`tensor`'s values over the calibration set (and a second set to `compare`, e.g. another region's), with the
    range each of `methods` calibrates from the first set drawn on both (`method_ranges`)."""
    primary = session.calibration_set(calibration, calibration_size)
    by_method = method_ranges(session, calibration=calibration, methods=methods, calibration_size=calibration_size)
    if any(tensor not in found for found in by_method.values()):
        raise InputSpecError(f"Tensor {tensor!r} is not calibrated (not a float activation of the calibrated "
                             "graph): pick one the drift view lists.")
    sets = {primary.name: calibrate.calibration_batches(primary, session.model.inputs)}
    if compare is not None:
        other = session.calibration_set(compare, calibration_size)
        if other.name == primary.name:
            raise InputSpecError(f"compare={other.name!r} is the calibration set itself: pick another set.")
        sets[other.name] = calibrate.calibration_batches(other, session.model.inputs)
    prepared, _ = calibrate.prepare(session.model)
    return tensor_histogram(prepared, tensor, sets, {m: found[tensor] for m, found in by_method.items()},
                            qdq_style=qdq_style, bins=bins, cancel=cancel, progress=progress)


def weight_ranges(session: Workbench, layer: str) -> WeightRanges:
    """Per-output-channel ranges of a layer's weight (Conv, Gemm, MatMul) as INT8 quantises it. `layer` is a node of
    the calibrated graph or a tensor (e.g. a drift point's): the weighted node nearest upstream of what computes it
    (BatchNormalization is folded into its Conv, and a Relu after it fuses into the same INT8 layer)."""
    prepared, _ = calibrate.prepare(session.model)
    graph = GraphIndex(prepared)
    weighted = lambda i: graph.nodes[i].op_type in WEIGHT_OPS  # noqa: E731
    if layer in graph.producer_index:
        start = graph.producer_index[layer]
    elif layer in graph.names:
        start = graph.index(layer)
    else:
        raise InputSpecError(f"No node or tensor named {layer!r} in the calibrated graph: pick a layer the drift or "
                             "latency view lists.")
    found = start if weighted(start) else graph.nearest(start, weighted, downstream=False)
    if found is None:
        raise InputSpecError(f"No Conv, Gemm or MatMul computes {layer!r}: it has no weight to show.")
    return channel_ranges(prepared, graph.nodes[found].name)


def error_sources(session: Workbench, result: RunResult, *, cancel: CancelToken | None = None) -> list[LayerError]:
    """Each tensor's drift with everything / only weights / only activations of `result`'s INT8 plan quantised,
    and the cause; the two extra graphs are built and measured once, then cached with the result."""
    if result.precision != "int8":
        raise InputSpecError(f"{result.label} is not INT8: the weight/activation split is for INT8 results.")
    if not result.drift:
        raise InputSpecError(f"{result.label} was measured without drift: run it with drift=True first.")
    key = session.cache.key(kind="error-sources", result=result.cache_key, revision=DECOMPOSITION_REVISION)
    stored = session.cache.get(key)
    if stored is not None:
        return decompose(result.drift, [DriftPoint(**p) for p in stored["weights"]],
                         [DriftPoint(**p) for p in stored["activations"]])
    calibration = session.calibration_set(result.calibration, result.calibration_size) if result.plan.algorithms \
        else None  # (algorithms such as SmoothQuant rewrite the FP32 graph from calibration statistics)
    prepared = fp32_graph(session.model, result.plan, calibration)
    int8 = session.variant_model(result).proto
    weights = Model.from_proto(weights_only(prepared, int8), name=f"{session.model.name} [int8 weights only]",
                               source=f"{result.label}: weights quantised, activations FP32")
    activations = Model.from_proto(activations_only(prepared, int8), name=f"{session.model.name} [int8 "
                                   "activations only]", source=f"{result.label}: activations quantised, weights FP32")
    weights_drift, _ = session.drift(weights, backend=result.backend, cancel=cancel)
    activations_drift, _ = session.drift(activations, backend=result.backend, cancel=cancel)
    # the measurements, not the rows: causes and fixes are derived again on every read (Python's JSON keeps inf)
    session.cache.put(key, {"weights": [asdict(p) for p in weights_drift],
                            "activations": [asdict(p) for p in activations_drift]})
    return decompose(result.drift, weights_drift, activations_drift)

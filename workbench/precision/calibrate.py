"""Calibration: run the model over a calibration set once and cache the activation ranges it finds.

Calibration is the slow part of INT8, so it runs here rather than in onnxruntime's calibrators (whose algorithms it
keeps): the graph is augmented in one pass (ORT's MinMax calibrator re-walks the whole graph for every tensor, which
is quadratic: minutes for a few thousand nodes), run with graph optimisations on (ORT's run with none), and min/max
are taken in numpy (faster than ORT's ReduceMin/ReduceMax nodes). The ranges depend only on (model, calibration
set, method, method options, batch size, onnxruntime version), not on the Q/DQ style, per-channel weights or which
nodes stay FP32, so switching those reuses the cached ranges: `quantize_static(calibration_cache_path=...)`
(onnxruntime >= 1.31) quantises from a saved `TensorsData` without touching the model again.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper
from onnxruntime.quantization import CalibrationMethod, quant_pre_process
from onnxruntime.quantization.calibrate import (CalibrationCacheEncoder, HistogramCollector, TensorData, TensorsData,
                                               entropy)
from onnxruntime.quantization.quant_utils import smooth_distribution
from tqdm.auto import tqdm

from ..cache import ResultCache
from ..calibration import CalibrationSet
from ..errors import CalibrationError
from ..jobs import CancelToken
from ..jobs import check as check_cancel
from ..models.inputs import batch_axes, feeder
from ..models.spec import Model, TensorSpec

CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
# Explicit (onnxruntime's defaults) so they are part of the cache key.
CALIBRATION_OPTIONS: dict[str, dict] = {
    "minmax": {},
    "entropy": {"num_bins": 128, "num_quantized_bins": 128},
    "percentile": {"num_bins": 2048, "percentile": 99.999},
}
# Symmetric or not per method, as onnxruntime's create_calibrator sets them by default.
_SYMMETRIC = {"minmax": False, "entropy": False, "percentile": True}
_FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16)
# Every calibrated tensor of a batch is held at once: ResNet-18 at 224x224 adds about 0.8 GB at batch 8 (1.4 GB at 16).
DEFAULT_BATCH = 8
RANGES_SUFFIX = "ranges.json"
# Values beyond the FP16 maximum are sentinels (e.g. -3.4e38 in attention masks), not data: their tensors keep
# min/max ranges (np.histogram cannot even bin +-3.4e38) and quantisation leaves their nodes in FP32.
SENTINEL_ABOVE = 65504.0


@dataclass
class CacheStats:
    """How often ranges were computed (the model ran over the set) or served from memory or disk."""

    calibrations: int = 0
    memory_hits: int = 0
    disk_hits: int = 0


_memory: dict[str, TensorsData] = {}
_prepared: dict[str, tuple[onnx.ModelProto, tuple[str, ...]]] = {}
stats = CacheStats()


def clear_cache() -> None:
    """Forget every in-memory entry (ranges, pre-processed models) and reset `stats`; on-disk entries stay."""
    _memory.clear()
    _prepared.clear()
    stats.calibrations = stats.memory_hits = stats.disk_hits = 0


def prepare(model: Model) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """The graph calibration and quantisation work on: `quant_pre_process` output (shapes inferred, BatchNorm
    folded into Conv, constants folded), cached per model. If pre-processing fails, the original graph and a note.
    """
    if model.content_hash not in _prepared:
        with tempfile.TemporaryDirectory(prefix="workbench-prep-") as tmp:
            try:
                # A path, not the ModelProto: given a proto, ORT's pre-processing moves its initialisers out of the
                # caller's proto in place (external data "foo.bin"). skip_symbolic_shape: on failure ORT's symbolic
                # inference writes sym_shape_infer_temp.onnx into the working directory; ONNX's own shape inference
                # (still run) covers the standard ops exporters emit.
                source = Path(tmp) / "source.onnx"
                onnx.save(model.proto, source)
                quant_pre_process(source, Path(tmp) / "prepared.onnx", skip_symbolic_shape=True)
                _prepared[model.content_hash] = (onnx.load(Path(tmp) / "prepared.onnx"), ())
            except Exception as exc:  # noqa: BLE001 - any failure of the optional optimisation step
                note = f"quant_pre_process failed ({type(exc).__name__}: {exc}); quantised the graph as loaded"
                _prepared[model.content_hash] = (model.proto, (note,))
    return _prepared[model.content_hash]


def observe(proto: onnx.ModelProto, names: list[str], batches: list[dict[str, np.ndarray]], *,
            disabled_optimizers: tuple[str, ...] = ()) -> Iterator[list[np.ndarray]]:
    """The values of the tensors `names` of `proto` for each batch (the graph run on ONNX Runtime's CPU provider with
    those tensors as extra outputs): what the algorithms that gather statistics of a graph read."""
    augmented = onnx.ModelProto()
    augmented.CopyFrom(proto)
    outputs = {o.name for o in augmented.graph.output}
    augmented.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                                  for name in dict.fromkeys(names) if name not in outputs)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(augmented.SerializeToString(), options, providers=["CPUExecutionProvider"],
                                           disabled_optimizers=list(disabled_optimizers))
    for batch in batches:
        yield session.run(names, batch)


def calibration_batches(calibration: CalibrationSet, inputs: list[TensorSpec]) -> list[dict[str, np.ndarray]]:
    """Batches of the set sized for the model: its fixed batch dim if it has one (dropping a short tail), else
    DEFAULT_BATCH."""
    axes = batch_axes(inputs)
    fixed = next((spec.shape[0] for spec in inputs if axes[spec.name] == 0 and isinstance(spec.shape[0], int)), None)
    size = fixed or DEFAULT_BATCH
    to_feeds = feeder(inputs)  # samples-first arrays -> feeds (batch axes, shared scalars and states)
    batches = [to_feeds(b) for b in calibration.batches(size)
               if fixed is None or len(next(iter(b.values()))) == fixed]
    if not batches:
        raise CalibrationError(
            f"Calibration set {calibration.name!r} has {calibration.size} samples, fewer than the model's fixed batch "
            f"size {fixed}: give at least {fixed} samples.")
    return batches


def range_key(model_hash: str, calibration: CalibrationSet, method: str, batch_size: int) -> str:
    payload = {"model": model_hash, "calibration": calibration.content_hash, "method": method,
               "options": CALIBRATION_OPTIONS[method], "batch": batch_size, "onnxruntime": onnxruntime.__version__}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def activation_ranges(proto: onnx.ModelProto, key: str, batches: list[dict[str, np.ndarray]], method: str, *,
                      progress: bool = True, cache_dir: str | Path | ResultCache | None = None,
                      cancel: CancelToken | None = None) -> TensorsData:
    """Ranges of every float tensor of `proto` (all op types, so any Q/DQ style can use them), cached under `key`.

    Looks in memory, then in the cache (`cache_dir`: a folder or a layered ResultCache) as the hash-checked
    artefact `calibration-<key>.ranges.json`; an unreadable or swapped file is recomputed and replaced. `cancel` is
    checked before every calibration batch (`Cancelled` is raised and nothing is cached).
    """
    if key in _memory:
        stats.memory_hits += 1
        return _memory[key]
    cache = None if cache_dir is None else cache_dir if isinstance(cache_dir, ResultCache) else ResultCache(cache_dir)
    entry = f"calibration-{key}"
    ranges = cache.get_bytes(entry, RANGES_SUFFIX, decode=lambda data: _decode(data, method)) if cache else None
    if ranges is not None:
        stats.disk_hits += 1
    else:
        ranges = _calibrate(proto, batches, method, progress, cancel)
        if cache is not None:
            cache.put_bytes(entry, json.dumps(ranges.to_dict(), cls=CalibrationCacheEncoder).encode(), RANGES_SUFFIX)
    _memory[key] = ranges
    return ranges


def _decode(data: bytes, method: str) -> TensorsData:
    ranges = TensorsData.from_dict(json.loads(data))
    if ranges.calibration_method != CALIBRATION_METHODS[method]:
        raise ValueError(f"ranges of another method ({ranges.calibration_method})")
    for name, value in ranges.data.items():
        if not np.all(np.isfinite(np.asarray(value.range_value, dtype=np.float64))):
            raise ValueError(f"non-finite range for {name}")
    return ranges


def calibrated_tensors(proto: onnx.ModelProto) -> dict[str, int]:
    """The tensors onnxruntime's calibrators calibrate, in graph order, with their element types: every FLOAT or
    FLOAT16 input or output of a node that is not an initializer (types from shape inference)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # noqa: BLE001 - e.g. a graph over 2 GB: use the value_info it has
        inferred = proto
    graph = inferred.graph
    types = {info.name: info.type.tensor_type.elem_type
             for info in itertools.chain(graph.value_info, graph.output, graph.input)
             if info.type.HasField("tensor_type")}
    initializers = {init.name for init in graph.initializer}
    tensors: dict[str, int] = {}
    for node in graph.node:
        for name in itertools.chain(node.input, node.output):
            if name and name not in initializers and types.get(name) in _FLOAT_TYPES:
                tensors.setdefault(name, types[name])
    return tensors


class FastHistogramCollector(HistogramCollector):
    """onnxruntime's HistogramCollector, histograms of absolute values (percentile) counted on evenly spaced bins.

    ORT histograms each later batch on the first batch's bin edges (extended by bins of the same width when the
    range grows) with `np.histogram(values, bins=edges)`, which sorts every block of values: most of percentile
    calibration's histogram time. Those edges are evenly spaced up to float32 rounding, so the counts here use
    np.histogram's evenly-spaced path over the same first and last edge and number of bins (3-4x faster). A value
    within float32 rounding of an inner edge may be counted one bin over: a test bounds the effect on the ranges
    (ORT's own compute_collection_result, unchanged, computes them). Entropy's histograms are ORT's code unchanged;
    its threshold search (`get_entropy_threshold`) is vectorised over the candidate thresholds, giving ORT's choice.
    Tensors holding sentinels (|value| > SENTINEL_ABOVE) get their min/max instead of a histogram (either method).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sentinel_ranges: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _ordinary(self, name_to_arr) -> dict[str, tuple[np.ndarray, object, object]]:
        """The tensors of a batch to histogram, with their min and max (None if empty); sentinel tensors (now or
        in an earlier batch) only update their min/max in `sentinel_ranges`."""
        ordinary = {}
        for tensor, data in name_to_arr.items():
            values = np.asarray(data)
            low, high = _nan_extremes(values) if values.size else (None, None)
            if tensor not in self.sentinel_ranges and (low is None or not max(-low, high) > SENTINEL_ABOVE):
                ordinary[tensor] = (values, low, high)
                continue
            if tensor in self.histogram_dict:  # earlier batches were ordinary: keep their extremes
                entry = self.histogram_dict.pop(tensor)
                self.sentinel_ranges[tensor] = (entry[2], entry[3])
            if low is not None:
                old_low, old_high = self.sentinel_ranges.get(tensor, (low, high))
                self.sentinel_ranges[tensor] = (min(old_low, low), max(old_high, high))
        return ordinary

    def collect_value(self, name_to_arr):
        super().collect_value({tensor: values for tensor, (values, _, _) in self._ordinary(name_to_arr).items()})

    def compute_collection_result(self):
        ranges = super().compute_collection_result() if self.histogram_dict else {}
        return {**ranges, **{tensor: TensorData(lowest=np.array(low), highest=np.array(high))
                             for tensor, (low, high) in self.sentinel_ranges.items()}}

    def collect_absolute_value(self, name_to_arr):
        for tensor, (values, low, high) in self._ordinary(name_to_arr).items():
            if tensor not in self.histogram_dict or values.size == 0 or values.dtype == np.float64:
                super().collect_absolute_value({tensor: values})  # ORT's code (and its checks)
                continue
            values = np.absolute(values.ravel())
            hist, edges, old_low, old_high = self.histogram_dict[tensor]
            top = max(-low, high)  # the largest absolute value
            if top > edges[-1]:  # more bins of the same width, as ORT adds them
                width = edges[1] - edges[0]
                edges = np.hstack((edges, np.arange(edges[-1] + width, top + width, width)))
            counts, _ = np.histogram(values, len(edges) - 1, range=(edges[0], edges[-1]))
            counts[:len(hist)] += hist
            self.histogram_dict[tensor] = (counts, edges.astype(values.dtype), min(old_low, low), max(old_high, high))

    def get_entropy_threshold(self, histogram, num_quantized_bins):
        """ORT's entropy threshold (the candidate of least KL divergence), found with numpy over all candidates at
        once instead of ORT's Python loops over candidates and bins (8 ms a tensor for ResNet-18's histograms).

        The distributions p (the slice, outliers folded into its ends) and q (the slice merged into quantised bins
        and expanded back) are ORT's integers exactly, smoothed exactly as ORT smooths them (float32, element-wise),
        and their KL divergence is computed in float64 for every candidate. ORT sums in float32 and rounds the
        divergence to the histogram's dtype, so the candidates within a margin of the least (far wider than the
        float32 and rounding errors) are computed again with ORT's own `smooth_distribution` and `entropy` on
        ORT's arrays: the choice among them is ORT's, and none outside the margin can be ORT's choice. Histograms
        ORT's code would refuse (its smoothing asserts; fewer bins than quantised bins) go to ORT's code.
        """
        hist, edges = histogram[0], histogram[1]
        num_bins = hist.size
        zero = num_bins // 2
        half = num_quantized_bins // 2
        if zero < half or hist.dtype.kind not in "iu":
            return super().get_entropy_threshold(histogram, num_quantized_bins)
        chosen = _least_kl_candidate(np.asarray(hist, dtype=np.int64), num_quantized_bins, edges.dtype)
        if chosen is None:
            return super().get_entropy_threshold(histogram, num_quantized_bins)
        i = half + chosen
        optimal = (edges[zero - i], edges[min(zero + i + 1, num_bins)])
        if optimal[0] < histogram[2]:  # clipped to the values seen, as ORT does
            optimal = (histogram[2], optimal[1])
        if optimal[1] > histogram[3]:
            optimal = (optimal[0], histogram[3])
        return optimal


_SMOOTH_EPS = 0.0001  # smooth_distribution's default, which ORT's search uses
# Candidates whose float64 divergence is within this (relative to the sum of the absolute terms, plus an absolute
# part) of the least are recomputed with ORT's float32 code; float32 sums of a few thousand terms err by < 1e-5.
_KL_MARGIN = 1e-4
_CHUNK_ELEMENTS = 1 << 21  # candidates x bins per numpy block (memory stays small for histograms that grew)


def _least_kl_candidate(hist: np.ndarray, num_quantized: int, dtype: np.dtype) -> int | None:
    """Index (from the first candidate) of the threshold ORT's get_entropy_threshold picks, or None where ORT's
    smoothing would assert (let ORT's code raise)."""
    num_bins = hist.size
    zero, half = num_bins // 2, num_quantized // 2
    widths = np.arange(half, zero + 1)
    starts = zero - widths
    ends = np.minimum(zero + widths + 1, num_bins)
    cumulative = np.concatenate(([0], np.cumsum(hist)))
    approx, spread, rows = [], [], {}
    per_chunk = max(1, _CHUNK_ELEMENTS // int(ends[-1] - starts[-1]))
    for first in range(0, widths.size, per_chunk):
        chunk = slice(first, first + per_chunk)
        result = _kl_block(hist, cumulative, starts[chunk], ends[chunk], num_quantized)
        if result is None:
            return None
        kl, terms, p, q = result
        approx.append(kl)
        spread.append(terms)
        rows.update({first + r: (p[r], q[r]) for r in range(len(kl))})
    approx, spread = np.concatenate(approx), np.concatenate(spread)
    if not np.isfinite(approx).any():
        return 0  # every divergence infinite: np.argmin's first index, as in ORT
    finite = np.isfinite(approx)
    rounding = 2 * float(np.finfo(dtype).eps) * np.abs(approx, where=finite, out=np.zeros_like(approx))
    margin = np.where(finite, _KL_MARGIN * (spread + 1.0) + rounding, 0.0)  # ORT rounds each divergence to dtype
    best = np.min(approx + margin)
    near = np.flatnonzero(approx - margin <= best)
    exact = []
    for r in near:
        p, q = rows[r]
        length = int(ends[r] - starts[r])
        p, q = smooth_distribution(p[:length]), smooth_distribution(q[:length])
        exact.append(np.inf if p is None or q is None else float(np.array(entropy(p, q), dtype=dtype)))
    return int(near[int(np.argmin(exact))])


def _kl_block(hist, cumulative, starts, ends, num_quantized):
    """For candidate slices [starts, ends) of `hist`: the float64 KL divergence of ORT's smoothed p and q, the sum
    of its absolute terms, and ORT's integer p and q (zero-padded rows); None where ORT's smoothing would assert."""
    lengths = ends - starts
    width = int(lengths.max())
    column = np.arange(width)
    valid = column < lengths[:, None]
    index = np.minimum(starts[:, None] + column, hist.size - 1)
    sliced = np.where(valid, hist[index], 0)
    rows = np.arange(len(starts))
    p = sliced.copy()
    p[:, 0] += cumulative[starts]  # left outliers
    p[rows, lengths - 1] += cumulative[-1] - cumulative[ends]  # right outliers
    nonzero = (p != 0) & valid
    merged = lengths // num_quantized  # bins per quantised bin
    block_edges = starts[:, None] + merged[:, None] * np.arange(num_quantized + 1)
    quantized = cumulative[block_edges[:, 1:]] - cumulative[block_edges[:, :-1]]
    quantized[:, -1] += cumulative[ends] - cumulative[block_edges[:, -1]]  # the tail goes to the last bin
    counted = np.concatenate((np.zeros((len(starts), 1), np.int64), np.cumsum(nonzero, axis=1)), axis=1)
    local = merged[:, None] * np.arange(num_quantized + 1)
    norms = np.take_along_axis(counted, local[:, 1:], 1) - np.take_along_axis(counted, local[:, :-1], 1)
    # ORT assigns quantized / norm into an int64 array (truncating), 0 where a block has no non-zero p
    values = np.zeros(quantized.shape, np.int64)
    np.divide(quantized, norms, out=values, where=norms != 0, casting="unsafe")
    block = np.minimum(column // np.maximum(merged, 1)[:, None], num_quantized - 1)
    q = np.where(column < (merged * num_quantized)[:, None], np.take_along_axis(values, block, 1), 0)
    smoothed = []
    for dist in (p, q):
        zeros = (dist == 0) & valid
        n_zeros = zeros.sum(axis=1)
        n_nonzeros = lengths - n_zeros
        eps1 = _SMOOTH_EPS * n_zeros.astype(np.float64) / np.maximum(n_nonzeros, 1)
        if np.any((eps1 >= 1.0) & (n_nonzeros > 0)):
            return None
        values32 = dist.astype(np.float32) + np.where(zeros, np.float32(_SMOOTH_EPS),
                                                      (-eps1).astype(np.float32)[:, None])
        if np.any((values32 <= 0) & valid & (n_nonzeros > 0)[:, None]):
            return None
        values64 = np.where(valid, values32, 0).astype(np.float64)
        total = values64.sum(axis=1, keepdims=True)
        smoothed.append((values64 / np.where(total > 0, total, 1), n_nonzeros == 0))
    (pk, p_empty), (qk, q_empty) = smoothed
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(valid, pk * np.log(pk / np.where(valid, qk, 1)), 0)
    kl = terms.sum(axis=1)
    kl[p_empty | q_empty] = np.inf
    return kl, np.abs(terms).sum(axis=1), p, q


def _nan_extremes(values: np.ndarray):
    """np.nanmin and np.nanmax of a non-empty array; plain min/max (4x faster) when it holds no NaN."""
    low, high = values.min(), values.max()
    return (np.nanmin(values), np.nanmax(values)) if np.isnan(low) or np.isnan(high) else (low, high)


def _extremes(values: np.ndarray) -> tuple[float, float]:
    return (values.min(), values.max()) if values.size else (np.nan, np.nan)


def _calibrate(proto: onnx.ModelProto, batches: list[dict[str, np.ndarray]], method: str,
               progress: bool, cancel: CancelToken | None = None) -> TensorsData:
    """Run the graph with every calibrated tensor exposed over `batches`, one batch at a time (memory stays flat),
    and reduce the tensors to ranges: min/max for minmax (as ORT's ReduceMin/ReduceMax nodes would), onnxruntime's
    own HistogramCollector for entropy and percentile (tensors split over one thread per core). A tensor that is
    empty or NaN in every batch gets the range (0, 0) under minmax (finite, so its cache entry is served again)."""
    stats.calibrations += 1
    tensors = calibrated_tensors(proto)
    if not tensors:
        raise CalibrationError("The model has no float tensors to calibrate: INT8 quantisation needs float "
                               "activations (check the model's input and output types).")
    augmented = onnx.ModelProto()
    augmented.CopyFrom(proto)
    graph = augmented.graph
    outputs = {out.name for out in graph.output}
    for name, elem in tensors.items():
        if name not in outputs:
            graph.output.append(helper.make_tensor_value_info(name, elem, None))
    fetch = list(tensors)
    options = onnxruntime.SessionOptions()
    # Exposed tensors are graph outputs, which ORT never fuses away: its optimisations keep their values.
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # (ORT's errors propagate: apply_plan turns them into a PrecisionError naming the model)
    session = onnxruntime.InferenceSession(augmented.SerializeToString(), options, providers=["CPUExecutionProvider"])
    del augmented
    collector = FastHistogramCollector(method=method, symmetric=_SYMMETRIC[method], scenario="same",
                                   num_bins=CALIBRATION_OPTIONS[method].get("num_bins", 128),
                                   num_quantized_bins=CALIBRATION_OPTIONS[method].get("num_quantized_bins", 128),
                                   percentile=CALIBRATION_OPTIONS[method].get("percentile", 99.999))
    extremes: list[list[tuple[float, float]]] = []
    workers = max(1, min(len(fetch), os.cpu_count() or 1))
    # The collector print()s: tqdm shows the progress instead. numpy's reductions and histograms release the GIL,
    # so the tensors of a batch are reduced on one thread per core.
    with contextlib.redirect_stdout(io.StringIO()), ThreadPoolExecutor(workers) as pool:
        for batch in tqdm(batches, desc=f"Calibrating ({method})", unit="batch", disable=not progress):
            check_cancel(cancel)
            values = session.run(fetch, batch)
            if method == "minmax":
                extremes.append(list(pool.map(_extremes, values)))
            else:  # largest tensors spread over the threads
                by_size = sorted(zip(fetch, values), key=lambda item: -item[1].size)
                list(pool.map(collector.collect, [dict(by_size[i::workers]) for i in range(workers)]))
            del values
        if method != "minmax":
            return TensorsData(CALIBRATION_METHODS[method], collector.compute_collection_result())
    data = {}
    for (name, elem), per_batch in zip(tensors.items(), zip(*extremes)):
        dtype = np.float16 if elem == TensorProto.FLOAT16 else np.float32
        lows, highs = np.array(per_batch, dtype=dtype).T
        low, high = np.fmin.reduce(lows), np.fmax.reduce(highs)  # batches with a NaN (or empty) are skipped
        if np.isnan(low) or np.isnan(high):  # empty or NaN in every batch: the zero range ORT's histogram
            low = high = dtype(0)            # collectors give an empty tensor (its Q/DQ then has a zero scale)
        data[name] = (np.array([low], dtype), np.array([high], dtype))
    return TensorsData(CalibrationMethod.MinMax, data)

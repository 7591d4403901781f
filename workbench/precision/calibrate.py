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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper
from onnxruntime.quantization import CalibrationMethod, quant_pre_process
from onnxruntime.quantization.calibrate import CalibrationCacheEncoder, HistogramCollector, TensorData, TensorsData
from tqdm.auto import tqdm

from ..cache import ResultCache
from ..calibration import CalibrationSet
from ..errors import CalibrationError
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
                      progress: bool = True, cache_dir: str | Path | ResultCache | None = None) -> TensorsData:
    """Ranges of every float tensor of `proto` (all op types, so any Q/DQ style can use them), cached under `key`.

    Looks in memory, then in the cache (`cache_dir`: a folder or a layered ResultCache) as the hash-checked
    artefact `calibration-<key>.ranges.json`; an unreadable or swapped file is recomputed and replaced.
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
        ranges = _calibrate(proto, batches, method, progress)
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
    (ORT's own compute_collection_result, unchanged, computes them). Entropy's histograms are ORT's code unchanged,
    except that tensors holding sentinels (|value| > SENTINEL_ABOVE) get their min/max instead of a histogram.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sentinel_ranges: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _ordinary(self, name_to_arr) -> dict[str, np.ndarray]:
        """The tensors of a batch to histogram; sentinel tensors (now or in an earlier batch) only update their
        min/max in `sentinel_ranges`."""
        ordinary = {}
        for tensor, data in name_to_arr.items():
            values = np.asarray(data)
            low, high = (np.nanmin(values), np.nanmax(values)) if values.size else (None, None)
            if tensor not in self.sentinel_ranges and (low is None or not max(-low, high) > SENTINEL_ABOVE):
                ordinary[tensor] = values
                continue
            if tensor in self.histogram_dict:  # earlier batches were ordinary: keep their extremes
                entry = self.histogram_dict.pop(tensor)
                self.sentinel_ranges[tensor] = (entry[2], entry[3])
            if low is not None:
                old_low, old_high = self.sentinel_ranges.get(tensor, (low, high))
                self.sentinel_ranges[tensor] = (min(old_low, low), max(old_high, high))
        return ordinary

    def collect_value(self, name_to_arr):
        super().collect_value(self._ordinary(name_to_arr))

    def compute_collection_result(self):
        ranges = super().compute_collection_result() if self.histogram_dict else {}
        return {**ranges, **{tensor: TensorData(lowest=np.array(low), highest=np.array(high))
                             for tensor, (low, high) in self.sentinel_ranges.items()}}

    def collect_absolute_value(self, name_to_arr):
        for tensor, data in self._ordinary(name_to_arr).items():
            values = np.asarray(data)
            if tensor not in self.histogram_dict or values.size == 0 or values.dtype == np.float64:
                super().collect_absolute_value({tensor: values})  # ORT's code (and its checks)
                continue
            values = values.ravel()
            low, high = np.nanmin(values), np.nanmax(values)
            values = np.absolute(values)
            hist, edges, old_low, old_high = self.histogram_dict[tensor]
            top = np.nanmax(values)
            if top > edges[-1]:  # more bins of the same width, as ORT adds them
                width = edges[1] - edges[0]
                edges = np.hstack((edges, np.arange(edges[-1] + width, top + width, width)))
            counts, _ = np.histogram(values, len(edges) - 1, range=(edges[0], edges[-1]))
            counts[:len(hist)] += hist
            self.histogram_dict[tensor] = (counts, edges.astype(values.dtype), min(old_low, low), max(old_high, high))


def _extremes(values: np.ndarray) -> tuple[float, float]:
    return (values.min(), values.max()) if values.size else (np.nan, np.nan)


def _calibrate(proto: onnx.ModelProto, batches: list[dict[str, np.ndarray]], method: str,
               progress: bool) -> TensorsData:
    """Run the graph with every calibrated tensor exposed over `batches`, one batch at a time (memory stays flat),
    and reduce the tensors to ranges: min/max for minmax (as ORT's ReduceMin/ReduceMax nodes would), onnxruntime's
    own HistogramCollector for entropy and percentile (tensors split over one thread per core)."""
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
        data[name] = (np.array([np.nanmin(lows)], dtype), np.array([np.nanmax(highs)], dtype))
    return TensorsData(CalibrationMethod.MinMax, data)

"""Calibration: run the model over a calibration set once and cache the activation ranges it finds.

Calibration is the slow part of INT8. The ranges depend only on (model, calibration set, method, method options,
batch size, onnxruntime version), not on the Q/DQ style, per-channel weights or which nodes stay FP32, so switching
those reuses the cached ranges: `quantize_static(calibration_cache_path=...)` (onnxruntime >= 1.31) quantises from
a saved `TensorsData` without touching the model again.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, create_calibrator, quant_pre_process
from onnxruntime.quantization.calibrate import TensorsData, load_tensors_data, save_tensors_data
from tqdm.auto import tqdm

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
DEFAULT_BATCH = 16


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


class _Batches(CalibrationDataReader):
    """onnxruntime data reader over a list of feed dicts."""

    def __init__(self, batches: list[dict[str, np.ndarray]]):
        self._iter = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)


def calibration_batches(calibration: CalibrationSet, inputs: list[TensorSpec]) -> list[dict[str, np.ndarray]]:
    """Batches of the set sized for the model: its fixed batch dim if it has one (dropping a short tail), else 16."""
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
                      progress: bool = True, cache_dir: str | Path | None = None) -> TensorsData:
    """Ranges of every float tensor of `proto` (all op types, so any Q/DQ style can use them), cached under `key`.

    Looks in memory, then in `cache_dir`/calibration/<key>.json (an unreadable file is recomputed and replaced).
    """
    if key in _memory:
        stats.memory_hits += 1
        return _memory[key]
    path = Path(cache_dir) / "calibration" / f"{key}.json" if cache_dir is not None else None
    ranges = _load(path, method) if path is not None else None
    if ranges is not None:
        stats.disk_hits += 1
    else:
        ranges = _calibrate(proto, batches, method, progress)
        if path is not None:
            save_tensors_data(ranges, path)  # writes a temp file and renames it: atomic
    _memory[key] = ranges
    return ranges


def _load(path: Path, method: str) -> TensorsData | None:
    if not path.is_file():
        return None
    try:
        ranges = load_tensors_data(path)
    except (ValueError, KeyError, TypeError, AttributeError):  # truncated / hand-edited / other-version file
        return None
    return ranges if ranges.calibration_method == CALIBRATION_METHODS[method] else None


def _calibrate(proto: onnx.ModelProto, batches: list[dict[str, np.ndarray]], method: str,
               progress: bool) -> TensorsData:
    stats.calibrations += 1
    with tempfile.TemporaryDirectory(prefix="workbench-calib-") as tmp:
        model_path = Path(tmp) / "model.onnx"
        onnx.save_model(proto, model_path)
        calibrator = create_calibrator(model_path, None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=CALIBRATION_METHODS[method],
                                       extra_options=CALIBRATION_OPTIONS[method])
        # The histogram calibrators print() progress and keep every activation of a collect_data() call in
        # memory: feeding one batch per call bounds memory and lets tqdm show the progress instead.
        with contextlib.redirect_stdout(io.StringIO()):
            for batch in tqdm(batches, desc=f"Calibrating ({method})", unit="batch", disable=not progress):
                calibrator.collect_data(_Batches([batch]))
            ranges = calibrator.compute_data()
        del calibrator  # releases the augmented model's session before the temp dir goes
    return ranges


"""Typed, JSON-serialisable result objects. The `to_json` keys are a contract (see README, 'JSON keys')."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from .backends.base import EngineGraph


@dataclass
class LatencyStats:
    """End-to-end latency of one batch size, in milliseconds."""

    batch: int
    median: float
    p90: float
    min: float
    mean: float
    runs: int
    throughput: float  # samples per second at the median
    dims: dict[str, int] = field(default_factory=dict)  # sizes of other dynamic axes (e.g. sequence) when timed

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class OutputAgreement:
    """Agreement of one model output with FP32: mean per-sample cosine, max-abs error, and top-1 agreement only
    where the output is a class score ([samples, classes])."""

    name: str
    shape: list[int]
    cosine: float
    max_abs_diff: float
    top1_agreement: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class AccuracyStats:
    """Accuracy against labels (top1) and agreement with the FP32 reference."""

    top1: float | None  # None when the data has no labels
    top1_agreement: float | None  # fraction of samples whose argmax matches FP32
    cosine: float | None  # mean cosine similarity of outputs to FP32
    max_abs_diff: float | None
    samples: int
    outputs: list[OutputAgreement] = field(default_factory=list)  # every output, in graph order

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "AccuracyStats":
        outputs = [OutputAgreement(**o) for o in data.get("outputs", [])]
        return cls(**{k: v for k, v in data.items() if k != "outputs"}, outputs=outputs)


@dataclass
class DriftPoint:
    """Difference from FP32 at one intermediate tensor, in graph order."""

    tensor: str
    layer: str | None
    sqnr_db: float  # inf when identical
    cosine: float
    max_abs_diff: float

    def to_json(self) -> dict:
        # "identical" makes an infinite SQNR readable where strict JSON writes it as null (see strict_json).
        return {**asdict(self), "identical": self.sqnr_db == math.inf}


@dataclass
class RunResult:
    """Everything measured for one configuration (model, precision plan, calibration, backend)."""

    model: str
    precision: str
    method: str | None
    qdq_style: str | None
    calibration: str | None
    calibration_hash: str | None
    backend: str
    versions: dict[str, str]
    synthetic_data: bool
    latency: list[LatencyStats]  # one per batch size; the first is the headline
    accuracy: AccuracyStats | None
    engine: EngineGraph | None = None  # layers with provenance and joined per-layer latency
    layer_time_ratio: float | None = None  # summed per-layer time / end-to-end time
    drift: list[DriftPoint] = field(default_factory=list)
    drift_graph: str | None = None  # which graph the drift was measured on
    accelerated: bool = True  # False when the backend runs this precision no faster than FP32
    keep_fp32: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cache_key: str | None = None
    # where the data came from: {"eval": {"kind": "sample"|"user"|"synthetic", "path", "sha256", ...},
    # "calibration": the same for the INT8 calibration set, or None}
    data_source: dict | None = None

    @property
    def label(self) -> str:
        parts = [p for p in (self.method, self.qdq_style, self.calibration) if p]
        return f"{self.precision}" + (f" ({', '.join(parts)})" if parts else "") + f" @ {self.backend}"

    @property
    def headline_latency(self) -> LatencyStats:
        return self.latency[0]

    def to_json(self) -> dict:
        head = self.headline_latency
        layers = self.engine.layers if self.engine else []
        return {
            "model": self.model,
            "precision": self.precision,
            "calibration": self.calibration,
            "calibration_hash": self.calibration_hash,
            "method": self.method,
            "qdq_style": self.qdq_style,
            "keep_fp32": list(self.keep_fp32),
            "backend": self.backend,
            "versions": dict(self.versions),
            "synthetic_data": self.synthetic_data,
            "accelerated": self.accelerated,
            "latency_ms": {"median": head.median, "p90": head.p90, "min": head.min, "batch": head.batch,
                           "throughput": head.throughput},
            "latency_by_batch": [stats.to_json() for stats in self.latency],
            "accuracy": self.accuracy.to_json() if self.accuracy else
            {"top1": None, "top1_agreement": None, "cosine": None, "max_abs_diff": None, "samples": 0},
            "layers": [
                {"name": l.name, "type": l.type, "precision": l.precision, "onnx_nodes": list(l.onnx_nodes),
                 "latency_ms": l.latency_ms, "inserted": l.inserted, "kernel": l.kernel}
                for l in layers
            ],
            "layer_time_ratio": self.layer_time_ratio,
            "engine": self.engine.to_json() if self.engine else None,
            "drift": [point.to_json() for point in self.drift],
            "drift_graph": self.drift_graph,
            "notes": list(self.notes),
            "cache_key": self.cache_key,
            "data_source": self.data_source,
        }

    @classmethod
    def from_json(cls, data: dict) -> "RunResult":
        acc = data.get("accuracy")
        return cls(
            model=data["model"],
            precision=data["precision"],
            method=data.get("method"),
            qdq_style=data.get("qdq_style"),
            calibration=data.get("calibration"),
            calibration_hash=data.get("calibration_hash"),
            backend=data["backend"],
            versions=dict(data.get("versions", {})),
            synthetic_data=bool(data.get("synthetic_data", False)),
            latency=[LatencyStats(**d) for d in data["latency_by_batch"]],
            accuracy=AccuracyStats.from_json(acc) if acc and acc.get("samples") else None,
            engine=EngineGraph.from_json(data["engine"]) if data.get("engine") else None,
            layer_time_ratio=data.get("layer_time_ratio"),
            drift=[_drift_point(d) for d in data.get("drift", [])],
            drift_graph=data.get("drift_graph"),
            accelerated=bool(data.get("accelerated", True)),
            keep_fp32=list(data.get("keep_fp32", [])),
            notes=list(data.get("notes", [])),
            cache_key=data.get("cache_key"),
            data_source=data.get("data_source"),
        )


def _drift_point(data: dict) -> DriftPoint:
    names = {f.name for f in fields(DriftPoint)}
    point = {k: v for k, v in data.items() if k in names}
    if point.get("sqnr_db") is None:  # strict JSON wrote inf as null
        point["sqnr_db"] = math.inf if data.get("identical") else math.nan
    return DriftPoint(**point)


def strict_json(value):
    """Copy of a JSON-like value with non-finite floats replaced by None, so any JSON parser reads it."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value

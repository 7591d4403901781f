"""Typed, JSON-serialisable result objects. The `to_json` keys are a contract (see docs/reference.md, 'JSON keys')."""
from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from .engine import EngineGraph
from .precision.plan import PlanFields, PrecisionPlan

CONFIDENCE = 0.95  # of every latency and speed-up interval
BOOTSTRAP_RESAMPLES = 2000
# Smallest speed-up reported as a difference. The bootstrap treats runs as independent; on a shared machine the load
# also drifts between the timing windows of two configurations, which no within-window interval sees.
MIN_EFFECT = 0.05
NO_DIFFERENCE = "no measurable difference"
LAYER_TIME_BAND = (0.9, 1.1)  # summed per-layer time / end-to-end median inside which the per-layer bars add up

MOSTLY_FP32 = 0.5  # above this fraction in FP32, a reduced-precision result is flagged (precision_warning)
_FP32_REASON = re.compile(r"fp32|float", re.IGNORECASE)  # precision-step notes that say why nodes stayed FP32


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
    times_ms: list[float] = field(default_factory=list)  # every timed run, in order (empty in old results)
    median_ci: list[float] | None = None  # [low, high] bootstrap CONFIDENCE interval of the median

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class RetimedLatency:
    """A configuration timed again in interleaved rounds with others (`measure.interleaved_latency`), in ms."""

    batch: int
    runs: int  # timed runs per round
    median_ms: float  # median of the round medians
    min_round_ms: float
    max_round_ms: float
    round_medians_ms: list[float]

    @classmethod
    def of(cls, round_medians_ms: Sequence[float], *, batch: int, runs: int) -> "RetimedLatency":
        values = [float(v) for v in round_medians_ms]
        return cls(batch=batch, runs=runs, median_ms=float(np.median(values)), min_round_ms=min(values),
                   max_round_ms=max(values), round_medians_ms=values)

    def to_json(self) -> dict:
        return asdict(self)


def median_interval(times_ms: Sequence[float], *, seed: int = 0) -> list[float] | None:
    """[low, high] bootstrap (percentile) CONFIDENCE interval of the median of `times_ms`; None for < 2 runs."""
    if len(times_ms) < 2:
        return None
    medians = _bootstrap_medians(times_ms, np.random.default_rng(seed))
    return [float(v) for v in np.quantile(medians, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])]


def _bootstrap_medians(times_ms: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    times = np.asarray(times_ms, dtype=float)
    return np.median(times[rng.integers(0, len(times), size=(BOOTSTRAP_RESAMPLES, len(times)))], axis=1)


@dataclass
class Speedup:
    """Median latency of the baseline / median latency of a result (>1: the result is faster), with its
    bootstrap CONFIDENCE interval (None when either side kept no run times) and the within-noise verdict."""

    ratio: float
    low: float | None
    high: float | None
    verdict: str  # "faster", "slower" or NO_DIFFERENCE

    @property
    def measurable(self) -> bool:
        return self.verdict != NO_DIFFERENCE

    def text(self) -> str:
        """E.g. "×1.52 (95% CI ×1.41–1.63)", or "no measurable difference (×0.97, 95% CI ×0.90–1.05)"."""
        interval = "" if self.low is None else f"{CONFIDENCE:.0%} CI ×{self.low:.2f}–{self.high:.2f}"
        if self.measurable:
            return f"×{self.ratio:.2f}" + (f" ({interval})" if interval else "")
        return f"{NO_DIFFERENCE} (×{self.ratio:.2f}" + (f", {interval})" if interval else ")")

    def to_json(self) -> dict:
        return {"ratio": self.ratio, "ci": None if self.low is None else [self.low, self.high],
                "verdict": self.verdict}


def speedup_verdict(ratio: float, low: float | None, high: float | None) -> str:
    """THE within-noise rule: NO_DIFFERENCE when the interval contains 1.0 or the speed-up is under MIN_EFFECT
    either way; otherwise "faster" or "slower"."""
    if (low is not None and low <= 1.0 <= high) or abs(math.log(ratio)) < math.log1p(MIN_EFFECT):
        return NO_DIFFERENCE
    return "faster" if ratio > 1.0 else "slower"


def speedup(result_stats: LatencyStats, baseline_stats: LatencyStats, *, seed: int = 0) -> Speedup:
    """Speed-up of `result_stats` over `baseline_stats` (same batch): the ratio of medians, its interval from
    bootstrapping both samples of run times independently, and `speedup_verdict`."""
    ratio = baseline_stats.median / result_stats.median
    low = high = None
    if len(result_stats.times_ms) >= 2 and len(baseline_stats.times_ms) >= 2:
        rng = np.random.default_rng(seed)
        ratios = _bootstrap_medians(baseline_stats.times_ms, rng) / _bootstrap_medians(result_stats.times_ms, rng)
        low, high = (float(v) for v in np.quantile(ratios, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2]))
    return Speedup(ratio, low, high, speedup_verdict(ratio, low, high))


def paired_speedup(result: RetimedLatency, baseline: RetimedLatency) -> Speedup:
    """Speed-up of `result` over `baseline` timed in the same interleaved rounds: the median of the per-round ratios
    (baseline's round median / result's) and a distribution-free interval for it, from order statistics of those
    ratios with at least CONFIDENCE coverage (7 rounds: their lowest and highest ratio; 5 rounds: none, too few),
    then `speedup_verdict`. Load that comes and goes hits both sides of a round alike, so the ratios hold."""
    ratios = sorted(b / r for b, r in zip(baseline.round_medians_ms, result.round_medians_ms))
    rank = _median_interval_rank(len(ratios))
    low, high = (ratios[rank], ratios[-1 - rank]) if rank is not None else (None, None)
    ratio = float(np.median(ratios))
    return Speedup(ratio, low, high, speedup_verdict(ratio, low, high))


def _median_interval_rank(n: int) -> int | None:
    """Largest k with P(Binomial(n, 1/2) <= k) <= (1 - CONFIDENCE) / 2: [x_(k), x_(n-1-k)] (0-based, sorted) covers
    the median with at least CONFIDENCE. None when even [min, max] covers it less often (n < 6 for 95%)."""
    tail, rank = 0.0, None
    for k in range(n // 2):
        tail += math.comb(n, k) / 2 ** n
        if tail > (1 - CONFIDENCE) / 2:
            break
        rank = k
    return rank


def speedup_over(result: "RunResult", baseline: "RunResult") -> Speedup | None:
    """`speedup` of `result`'s headline latency over `baseline`'s latency at the same batch and dims (None if the
    baseline was not timed there). Find the baseline with `baseline_of`."""
    head = result.headline_latency
    same = next((s for s in baseline.latency if s.batch == head.batch and s.dims == head.dims), None)
    return None if same is None else speedup(head, same)


@dataclass
class OutputAgreement:
    """Agreement of one model output with FP32 (and labels), by the output's task (`vocabulary.OUTPUT_TASKS`):
    `metrics` maps metric names (`vocabulary.ACCURACY_METRICS`) to values, None where a metric cannot apply.
    `cosine` / `max_abs_diff` only for float outputs, `top1_agreement` only for class scores and labels; None
    otherwise. `note` says why an output has no metrics of its own (e.g. scores scored with their boxes)."""

    name: str
    shape: list[int]
    cosine: float | None
    max_abs_diff: float | None
    top1_agreement: float | None = None
    task: str | None = None  # None in results from before tasks
    metrics: dict[str, float | None] = field(default_factory=dict)
    note: str | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "OutputAgreement":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class AccuracyStats:
    """Accuracy against labels (top1) and agreement with the FP32 reference, per output and overall.

    `top1` / `top1_agreement` are those of the first class-score or label output (None without labels, or when no
    output is class scores or labels); `cosine` that of the first float output; `headline_metric` ({"name",
    "output", "value"}) the one number that speaks for the model (`measure.accuracy.headline_of`, or your own
    metric's, `custom_metric`); None when no metric applies."""

    top1: float | None  # None when the data has no labels
    top1_agreement: float | None  # fraction of samples whose class (argmax of scores, or label) matches FP32
    cosine: float | None  # mean cosine similarity of the first float output to FP32
    max_abs_diff: float | None
    samples: int
    outputs: list[OutputAgreement] = field(default_factory=list)  # every output, in graph order
    headline_metric: dict | None = None
    custom_metric: dict | None = None  # {"name", "output": None, "value"} of a metric callable

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "AccuracyStats":
        names = {f.name for f in fields(cls)} - {"outputs"}
        outputs = [OutputAgreement.from_json(o) for o in data.get("outputs", [])]
        return cls(**{k: v for k, v in data.items() if k in names}, outputs=outputs)

    @property
    def headline(self) -> tuple[str, float | None, str | None]:
        """(metric name, value, output) that speaks for the model: `headline_metric` (value None where no metric
        applies); for results from before tasks, top1, else top1_agreement."""
        if self.headline_metric is not None or (self.outputs and self.outputs[0].task is not None):
            chosen = self.headline_metric or {}
            return chosen.get("name", "agreement"), chosen.get("value"), chosen.get("output")
        return ("top1", self.top1, None) if self.top1 is not None else ("agreement", self.top1_agreement, None)


@dataclass
class DriftPoint:
    """Difference from FP32 at one intermediate tensor, in graph order."""

    tensor: str
    layer: str | None
    sqnr_db: float  # inf when identical
    cosine: float
    max_abs_diff: float
    position: int | None = None  # index among the FP32 graph's node outputs: one x axis for every variant

    def to_json(self) -> dict:
        # "identical" makes an infinite SQNR readable where strict JSON writes it as null (see strict_json).
        return {**asdict(self), "identical": self.sqnr_db == math.inf}


@dataclass
class RunResult(PlanFields):
    """Everything measured for one configuration (model, precision plan, calibration, backend)."""

    model: str
    plan: PrecisionPlan  # its fields are keys of the JSON (precision, method, qdq_style, keep_fp32, ...)
    calibration: str | None
    calibration_hash: str | None
    backend: str
    versions: dict[str, str]
    synthetic_data: bool
    latency: list[LatencyStats]  # one per batch size; the first is the headline
    accuracy: AccuracyStats | None
    engine: EngineGraph | None = None  # layers with provenance and joined per-layer latency
    layer_time_ratio: float | None = None  # summed per-layer time / profile_end_to_end_ms
    drift: list[DriftPoint] = field(default_factory=list)
    drift_graph: str | None = None  # which graph the drift was measured on
    accelerated: bool = True  # False when the backend runs this precision no faster than FP32
    notes: list[str] = field(default_factory=list)
    cache_key: str | None = None
    precision_notes: list[str] = field(default_factory=list)  # what the precision step recorded (apply_plan)
    variant_sha256: str | None = None  # content hash of the precision-baked ONNX that was measured
    model_sha256: str | None = None  # content hash of the model (its identity: names repeat, e.g. model.onnx)
    graph_precision: dict[str, float] | None = None  # share of the variant's compute ops in each precision
    calibration_size: int | None = None  # samples of the calibration set used
    profile_end_to_end_ms: float | None = None  # end-to-end median of runs timed just before and after the profile
    machine: dict | None = None  # where it was measured (workbench.machine.this_machine); None in older results
    # where the data came from: {"eval": {"kind": "sample"|"user"|"synthetic", "path", "sha256", ...},
    # "calibration": the same for the INT8 calibration set, or None}
    data_source: dict | None = None

    @property
    def label(self) -> str:
        """Names the configuration uniquely: precision, method, Q/DQ style, calibration set and size, the nodes kept
        in FP32 (a few by name, more by count and a short digest) and engine. Batch sizes are shown beside it."""
        calibration = self.calibration and (f"{self.calibration}×{self.calibration_size}" if self.calibration_size
                                            else self.calibration)
        style = self.qdq_style if self.method != "dynamic" else None  # dynamic INT8 has no Q/DQ style to name
        parts = [p for p in (self.method, style, calibration) if p]
        if self.weight_rounding not in (None, "nearest"):
            parts.append(f"{self.weight_rounding} weights")
        parts += self.plan.algorithms  # optional pipeline steps (precision.pipeline), e.g. smoothquant
        if self.keep_fp32:
            parts.append(_kept_text(self.keep_fp32))
        return f"{self.precision}" + (f" ({', '.join(parts)})" if parts else "") + f" @ {self.backend}"

    @property
    def is_baseline(self) -> bool:
        """A plain FP32 configuration: what reduced-precision results are compared with."""
        return self.precision == "fp32" and not self.keep_fp32

    @property
    def headline_latency(self) -> LatencyStats:
        return self.latency[0]

    @property
    def precision_share(self) -> dict | None:
        """What really ran: {"nodes": {precision: fraction of the ONNX nodes}, "time": {precision: fraction of the
        profiled layer time} or None, as the engine's layers report them, and "graph": the share of the precision-
        baked graph's compute ops the plan put in reduced precision (`graph_precision`)}; None when nothing is known.
        An engine may report FP32 layers for a reduced-precision graph it computes in float (FP16 on ONNX Runtime's
        CPU provider): "graph" says what the plan did, "nodes" and "time" what the engine ran."""
        engine = precision_share(self.engine)
        if engine is None and self.graph_precision is None:
            return None
        return {**(engine or {"nodes": {}, "time": None}), "graph": self.graph_precision}

    @property
    def precision_warning(self) -> str | None:
        """A loud note when the precision step left most of a reduced-precision plan's compute ops in FP32, with
        its reason: then the result's accuracy and speed are largely FP32's, whatever its precision says."""
        graph = self.graph_precision
        if self.precision == "fp32" or not graph or graph.get("fp32", 0.0) <= MOSTLY_FP32:
            return None
        engine = precision_share(self.engine)
        time = (engine or {}).get("time") or {}
        reasons = [n for n in self.precision_notes if _FP32_REASON.search(n)]
        return (f"{self.label} is mostly FP32: the precision step left {graph['fp32']:.0%} of its compute ops "
                f"(Conv/Gemm/MatMul where the model has them) in FP32"
                + (f" and the engine spent {time.get('fp32', 0.0):.0%} of its layer time in FP32" if time else "")
                + f", so its accuracy and speed are largely FP32's, not {self.precision.upper()}'s. Reason: "
                + ("; ".join(r.rstrip(".") for r in reasons) if reasons
                   else "the precision step gave none; check keep_fp32 and the layers")
                + ".")

    @property
    def layer_times_agree(self) -> bool | None:
        """Whether the per-layer times add up to the end-to-end time (ratio inside LAYER_TIME_BAND); None if
        not profiled."""
        if self.layer_time_ratio is None:
            return None
        return LAYER_TIME_BAND[0] <= self.layer_time_ratio <= LAYER_TIME_BAND[1]

    def to_json(self) -> dict:
        head = self.headline_latency
        layers = self.engine.layers if self.engine else []
        return {
            "model": self.model,
            **self.plan.to_record(),
            "calibration": self.calibration,
            "calibration_hash": self.calibration_hash,
            "calibration_size": self.calibration_size,
            "backend": self.backend,
            "versions": dict(self.versions),
            "synthetic_data": self.synthetic_data,
            "accelerated": self.accelerated,
            "latency_ms": {"median": head.median, "p90": head.p90, "min": head.min, "batch": head.batch,
                           "throughput": head.throughput, "median_ci": head.median_ci},
            "latency_by_batch": [stats.to_json() for stats in self.latency],
            "accuracy": self.accuracy.to_json() if self.accuracy else
            {"top1": None, "top1_agreement": None, "cosine": None, "max_abs_diff": None, "samples": 0},
            "layers": [
                {"name": l.name, "type": l.type, "precision": l.precision, "onnx_nodes": list(l.onnx_nodes),
                 "latency_ms": l.latency_ms, "inserted": l.inserted, "kernel": l.kernel}
                for l in layers
            ],
            "layer_time_ratio": self.layer_time_ratio,
            "profile_end_to_end_ms": self.profile_end_to_end_ms,
            "engine": self.engine.to_json() if self.engine else None,
            "drift": [point.to_json() for point in self.drift],
            "drift_graph": self.drift_graph,
            "notes": list(self.notes),
            "cache_key": self.cache_key,
            "precision_share": self.precision_share,
            "precision_notes": list(self.precision_notes),
            "precision_warning": self.precision_warning,
            "variant_sha256": self.variant_sha256,
            "model_sha256": self.model_sha256,
            "graph_precision": self.graph_precision,
            "machine": self.machine,
            "data_source": self.data_source,
        }

    @classmethod
    def from_json(cls, data: dict) -> "RunResult":
        acc = data.get("accuracy")
        return cls(
            model=data["model"],
            plan=PrecisionPlan.from_json(data),
            calibration=data.get("calibration"),
            calibration_hash=data.get("calibration_hash"),
            backend=data["backend"],
            versions=dict(data.get("versions", {})),
            synthetic_data=bool(data.get("synthetic_data", False)),
            latency=[LatencyStats(**d) for d in data["latency_by_batch"]],
            accuracy=AccuracyStats.from_json(acc) if acc and acc.get("samples") else None,
            engine=EngineGraph.from_json(data["engine"]) if data.get("engine") else None,
            layer_time_ratio=data.get("layer_time_ratio"),
            profile_end_to_end_ms=data.get("profile_end_to_end_ms"),
            drift=[_drift_point(d) for d in data.get("drift", [])],
            drift_graph=data.get("drift_graph"),
            accelerated=bool(data.get("accelerated", True)),
            notes=list(data.get("notes", [])),
            cache_key=data.get("cache_key"),
            precision_notes=list(data.get("precision_notes", [])),
            variant_sha256=data.get("variant_sha256"),
            model_sha256=data.get("model_sha256"),
            graph_precision=data.get("graph_precision"),
            calibration_size=data.get("calibration_size"),
            machine=data.get("machine"),
            data_source=data.get("data_source"),
        )


def precision_share(engine: EngineGraph | None) -> dict | None:
    """Fractions of ONNX nodes (each counted once, under the first layer that covers it) and of profiled layer
    time per layer precision; "time" is None when no layer has a time. None without layers."""
    if engine is None or not engine.layers:
        return None
    nodes: dict[str, int] = {}
    seen: set[str] = set()
    for layer in engine.layers:
        for node in layer.onnx_nodes:
            if node not in seen:
                seen.add(node)
                nodes[layer.precision] = nodes.get(layer.precision, 0) + 1
    times: dict[str, float] = {}
    for layer in engine.layers:
        if layer.latency_ms is not None and math.isfinite(layer.latency_ms) and layer.latency_ms >= 0:
            times[layer.precision] = times.get(layer.precision, 0.0) + layer.latency_ms
    node_total, time_total = sum(nodes.values()), sum(times.values())
    return {"nodes": {k: v / node_total for k, v in sorted(nodes.items())} if node_total else {},
            "time": {k: v / time_total for k, v in sorted(times.items())} if time_total > 0 else None}


def baseline_of(result: RunResult, candidates: Iterable[RunResult], *, batch: int | None = None) -> RunResult | None:
    """THE rule for the FP32 baseline of `result`: the first plain FP32 result among `candidates` of the same model
    (by content hash when both results carry one, else by name) and engine, timed at `batch` (default: `result`'s
    headline batch) with the same dynamic-axis sizes; a plain FP32 result is its own baseline. None if there is
    none."""
    batch = batch or result.headline_latency.batch
    dims = result.headline_latency.dims
    for other in candidates:
        if (other.is_baseline and same_model(other, result) and other.backend == result.backend
                and any(s.batch == batch and s.dims == dims for s in other.latency)):
            return other
    return None


def same_model(a: RunResult, b: RunResult) -> bool:
    """Were `a` and `b` measured on the same model? By content hash when both know it (two files named model.onnx
    are different models), else by name (results from before the hash was recorded)."""
    if a.model_sha256 and b.model_sha256:
        return a.model_sha256 == b.model_sha256
    return a.model == b.model


def _kept_text(nodes: list[str]) -> str:
    if len(nodes) <= 2:
        return "FP32: " + ", ".join(nodes)
    digest = hashlib.sha256("\n".join(sorted(nodes)).encode()).hexdigest()[:6]
    return f"{len(nodes)} nodes FP32 #{digest}"


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

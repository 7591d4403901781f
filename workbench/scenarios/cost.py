"""Serving cost of a configuration from its measured latency.

Formulas (one engine instance serves full batches back to back):

    batches per engine-hour      = 3,600,000 / latency_ms                 (latency_ms: median per batch)
    requests per engine-hour     = batch_size * 3,600,000 / latency_ms * utilisation
                                 = throughput_per_s * 3,600 * utilisation  (when a throughput is given)
    engine-hours per day         = requests_per_day / requests per engine-hour
    cost per month (on demand)   = engine-hours per day * 30.4 days * price_per_hour
    instances (provisioned)      = ceil(engine-hours per day / 24)
    cost per month (provisioned) = instances * 24 h * 30.4 days * price_per_hour
    savings vs FP32              = 1 - cost / cost of the FP32 result on the same backend

`utilisation` in (0, 1] is the fraction of an engine-hour spent on useful batches: it covers idle time
between requests, partly filled batches and headroom for peaks. The on-demand figure assumes billing per
engine-hour used (autoscaling); the provisioned figure counts whole instances running all month, which
dominates at low volumes. Latencies measured on this machine stand for whatever engine the price is for:
use the price of the hardware the latency was measured on.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from ..errors import WorkbenchError
from ..results import RunResult, baseline_of
from .policy import common_batch, latency_at

DAYS_PER_MONTH = 30.4
MS_PER_HOUR = 3_600_000.0
DEFAULT_VOLUMES = (1e5, 1e6, 1e7, 1e8)


class CostInputError(WorkbenchError, ValueError):
    """A cost-model input is out of range (negative volume, zero utilisation, ...)."""


def _positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) \
            or value < 0 or (value == 0 and not allow_zero) or math.isinf(value):
        bound = ">= 0" if allow_zero else "> 0"
        raise CostInputError(f"{name}={value!r} is invalid: it must be a finite number {bound}.")
    return float(value)


def _utilisation(value: float) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1:
        return float(value)
    raise CostInputError(f"utilisation={value!r} is invalid: it is the busy fraction of an engine-hour, in (0, 1], "
                         "e.g. 0.6.")


def requests_per_engine_hour(batch_size: int, *, latency_ms: float | None = None, throughput: float | None = None,
                             utilisation: float = 1.0) -> float:
    """Requests one engine serves per hour from latency per batch (ms) or throughput (samples/s)."""
    if (latency_ms is None) == (throughput is None):
        raise CostInputError("Give exactly one of latency_ms (ms per batch) or throughput (samples per second).")
    utilisation = _utilisation(utilisation)
    batch_size = _positive("batch_size", batch_size)
    if latency_ms is not None:
        return batch_size * MS_PER_HOUR / _positive("latency_ms", latency_ms) * utilisation
    return _positive("throughput", throughput) * 3600.0 * utilisation


def engine_hours_per_day(requests_per_day: float, batch_size: int, *, latency_ms: float | None = None,
                         throughput: float | None = None, utilisation: float = 1.0) -> float:
    """Engine-hours needed per day to serve `requests_per_day` (see the module docstring)."""
    requests_per_day = _positive("requests_per_day", requests_per_day, allow_zero=True)
    return requests_per_day / requests_per_engine_hour(batch_size, latency_ms=latency_ms, throughput=throughput,
                                                       utilisation=utilisation)


def monthly_cost(requests_per_day: float, batch_size: int, price_per_hour: float, *, latency_ms: float | None = None,
                 throughput: float | None = None, utilisation: float = 1.0) -> dict[str, float]:
    """On-demand and provisioned cost per month, engine-hours per day and instances for one configuration."""
    price = _positive("price_per_hour", price_per_hour, allow_zero=True)
    hours = engine_hours_per_day(requests_per_day, batch_size, latency_ms=latency_ms, throughput=throughput,
                                 utilisation=utilisation)
    instances = max(1, math.ceil(hours / 24)) if requests_per_day > 0 else 0
    return {"engine_hours_per_day": hours, "instances": instances,
            "cost_per_month": hours * DAYS_PER_MONTH * price,
            "provisioned_cost_per_month": instances * 24 * DAYS_PER_MONTH * price}


def cost_table(results: Iterable[RunResult], volumes: Sequence[float] = DEFAULT_VOLUMES, *,
               price_per_hour: float = 1.0, utilisation: float = 0.6, batch: int | None = None) -> list[dict]:
    """One row per (configuration, daily volume) from the median latency at `batch` (default: the most common
    batch). `price_per_hour` is per engine-hour in your currency; 1.0 gives costs in engine-hours.
    `savings_vs_fp32` is a fraction (0.4 = 40 % cheaper), None without an FP32 result on the same backend."""
    results = list(results)
    if not volumes:
        raise CostInputError("volumes is empty: give at least one requests-per-day value, e.g. (1e5, 1e6).")
    for volume in volumes:
        _positive("requests_per_day", volume, allow_zero=True)
    _positive("price_per_hour", price_per_hour, allow_zero=True)
    _utilisation(utilisation)
    batch = batch or common_batch(results)
    rows = []
    for result in results:
        stats = latency_at(result, batch)
        if stats is None:
            continue  # not comparable at this batch; the policy matrix reports these explicitly
        baseline = baseline_of(result, results, batch=batch)
        base_stats = latency_at(baseline, batch) if baseline else None
        for volume in volumes:
            cost = monthly_cost(volume, batch, price_per_hour, latency_ms=stats.median, utilisation=utilisation)
            savings = None
            if base_stats is not None and volume > 0:
                # cost is linear in latency, so the saving is the latency ratio at every volume
                savings = 1.0 - stats.median / base_stats.median
            rows.append({"config": result.label, "model": result.model, "precision": result.precision,
                         "backend": result.backend, "batch": batch, "latency_ms": stats.median,
                         "requests_per_day": float(volume), "price_per_hour": float(price_per_hour),
                         "utilisation": float(utilisation), **cost, "savings_vs_fp32": savings})
    return rows

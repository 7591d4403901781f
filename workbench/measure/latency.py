"""End-to-end latency of an engine: wall-clock around `engine.run`, after warm-up, with the spread of the runs."""
from __future__ import annotations

import time

import numpy as np

from ..engine import Engine
from ..errors import InputSpecError
from ..jobs import CancelToken
from ..jobs import check as check_cancel
from ..results import LatencyStats, RetimedLatency, median_interval


def measure_latency(engine: Engine, feeds: dict[str, np.ndarray], *, batch: int, warmup: int = 5,
                    runs: int = 50, cancel: CancelToken | None = None) -> LatencyStats:
    """Time `runs` calls of `engine.run(feeds)` after `warmup` untimed calls; milliseconds per batch. Keeps every
    run time and the bootstrap interval of the median. `cancel` is checked between calls."""
    if runs < 1 or warmup < 0:
        raise InputSpecError(f"measure_latency needs runs >= 1 and warmup >= 0 (got runs={runs}, warmup={warmup}).")
    if batch < 1:
        raise InputSpecError(f"measure_latency needs batch >= 1 (got {batch}): pass the batch size of `feeds`.")
    for _ in range(warmup):
        check_cancel(cancel)
        engine.run(feeds)
    times = np.empty(runs)
    for i in range(runs):
        check_cancel(cancel)
        start = time.perf_counter()
        engine.run(feeds)
        times[i] = time.perf_counter() - start
    times_ms = times * 1000.0
    median = float(np.median(times_ms))
    return LatencyStats(
        batch=batch,
        median=median,
        p90=float(np.percentile(times_ms, 90)),
        min=float(times_ms.min()),
        mean=float(times_ms.mean()),
        runs=runs,
        throughput=batch / (median / 1000.0) if median > 0 else float("inf"),
        times_ms=[round(float(t), 6) for t in times_ms],
        median_ci=median_interval(times_ms),
    )


def interleaved_latency(engines: dict[str, Engine], feeds: dict[str, np.ndarray], *, batch: int, rounds: int = 5,
                        runs: int = 10, warmup: int = 3) -> dict[str, RetimedLatency]:
    """Each engine's median over `rounds` rounds, one `measure_latency(runs=runs)` per engine per round, in turn:
    load that comes and goes slows every engine alike, so their ratios hold where separate timings drift apart."""
    if rounds < 1:
        raise InputSpecError(f"interleaved_latency needs rounds >= 1 (got {rounds}).")
    medians: dict[str, list[float]] = {key: [] for key in engines}
    for _ in range(rounds):
        for key, engine in engines.items():
            medians[key].append(measure_latency(engine, feeds, batch=batch, warmup=warmup, runs=runs).median)
    return {key: RetimedLatency.of(values, batch=batch, runs=runs) for key, values in medians.items()}

"""Benchmark: the scheduler as the kernel sees it (no browser), on efficientnet-lite0-fashion.

- cached answer while computing: the explorer computes an uncached INT8 setting (percentile) on its worker; FP32
  (cached) is picked: seconds until FP32 is the result on display, and until the superseded INT8 job has really
  stopped (its worker free again);
- search cancel: `Workbench.tune` runs on a thread and is cancelled at a random moment: seconds from `cancel()` to
  the search's end (the uncancellable pieces between checks: an engine build, one ONNX Runtime quantiser call).

Writes JSON and prints a Markdown table. Run:
`python benchmarks/bench_scheduler.py --cache /tmp/cache --out benchmarks/scheduler.json`
(the browser side comes from tests/test_browser_scheduler.py with WORKBENCH_SCHEDULER_TIMES=...json).
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import threading
import time
from pathlib import Path

MODEL = "efficientnet-lite0-fashion"


def _spread(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"median_s": statistics.median(ordered), "min_s": ordered[0], "max_s": ordered[-1], "n": len(ordered),
            "samples_s": ordered}


def _until(condition, limit: float = 600.0, poll: float = 0.005) -> None:
    end = time.perf_counter() + limit
    while not condition():
        if time.perf_counter() > end:
            raise TimeoutError("condition not reached")
        time.sleep(poll)


def cached_answer(cache: str, rounds: int) -> tuple[list[float], list[float]]:
    from workbench.ui import Explorer

    explorer = Explorer(MODEL, runs=10, cache_dir=cache)
    assert explorer.wait() is not None, explorer.error
    for precision in ("int8", "fp32"):
        explorer.precision.value = precision
        assert explorer.wait() is not None, explorer.error
    answers, stops = [], []
    explorer.precision.value = "int8"
    explorer.wait()
    explorer.method.value = "percentile"  # not cached: it computes on the worker
    for _ in range(rounds):
        computing = explorer._ticket
        _until(lambda: computing.progress is not None and computing.progress.step != "starting")
        time.sleep(random.uniform(1.0, 8.0))  # somewhere inside the job
        start = time.perf_counter()
        explorer.precision.value = "fp32"  # cached: answered on this thread
        assert explorer.current is not None and explorer.current.precision == "fp32"
        answers.append(time.perf_counter() - start)
        _until(lambda: computing.done)
        stops.append(time.perf_counter() - start)
        explorer.precision.value = "int8"  # percentile again: still not cached (nothing of it was stored)
    explorer.scheduler.close()
    return answers, stops


def search_cancel(cache: str, rounds: int) -> list[float]:
    from workbench import Workbench
    from workbench.errors import Cancelled
    from workbench.jobs import CancelToken

    session = Workbench(MODEL, cache_dir=cache, progress=False)
    stops = []
    for _ in range(rounds):
        token, ended = CancelToken(), threading.Event()

        def search() -> None:
            try:  # a budget that is never reached: every cancel falls inside real work
                session.tune("int8", max_drop=0.0, metric="agreement", budget=50, batch=8, runs=10,
                             cancel=token)
            except Cancelled:
                pass
            finally:
                ended.set()

        threading.Thread(target=search, daemon=True).start()
        time.sleep(random.uniform(5.0, 40.0))
        start = time.perf_counter()
        token.cancel()
        assert ended.wait(600)
        stops.append(time.perf_counter() - start)
    session.close()
    return stops


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True, help="a cache folder (FP32 and INT8 minmax are computed first)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    random.seed(args.seed)
    answers, stops = cached_answer(args.cache, args.rounds)
    cancels = search_cancel(args.cache, args.rounds)
    payload = {"machine": {"processor": platform.processor() or platform.machine(), "python": platform.python_version(),
                           "note": "2 cores shared with other engineers' work while measured"},
               "model": MODEL,
               "cached_answer_while_computing": _spread(answers),
               "superseded_job_stopped": _spread(stops),
               "search_cancel_to_stop": _spread(cancels)}
    if args.out:
        Path(args.out).write_text(json.dumps(payload, indent=2))
    print("| measure | median s | min–max s | n |")
    print("|---|---|---|---|")
    for name in ("cached_answer_while_computing", "superseded_job_stopped", "search_cancel_to_stop"):
        row = payload[name]
        print(f"| {name.replace('_', ' ')} | {row['median_s']:.3f} | {row['min_s']:.3f}–{row['max_s']:.3f} | "
              f"{row['n']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: how fast the explorer reacts, Python side (no browser): time to build the panel (before any work), and
time to show an already computed configuration again (a cached toggle FP32 <-> INT8, views kept per result).

Writes JSON and prints a Markdown table. Run:
`python benchmarks/bench_explorer.py --out benchmarks/explorer.json [--models ...] [--toggles 20]`.
The first pass of each model computes and caches its results (not timed). Browser rendering comes on top of these.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_MODELS = ("fashion-cnn", "efficientnet-lite0-fashion")
BUILD_SNIPPET = ("import time; t = time.perf_counter(); from workbench.ui import Explorer; "
                 "e = Explorer({model!r}); e.widget._repr_mimebundle_(); print(time.perf_counter() - t)")


def _spread(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"median_ms": 1000 * statistics.median(ordered), "p90_ms": 1000 * ordered[int(0.9 * (len(ordered) - 1))],
            "min_ms": 1000 * ordered[0], "max_ms": 1000 * ordered[-1], "n": len(ordered)}


def build_times(model: str, repeats: int) -> list[float]:
    """Seconds from a fresh interpreter's import to the panel's display bundle (what the 2 s target is about)."""
    return [float(subprocess.run([sys.executable, "-c", BUILD_SNIPPET.format(model=model)], check=True,
                                 capture_output=True, text=True).stdout) for _ in range(repeats)]


def toggle_times(model: str, toggles: int, cache_dir: str | None) -> list[float]:
    from workbench.ui import Explorer

    explorer = Explorer(model, runs=3, cache_dir=cache_dir, background=False)
    for precision in ("fp32", "int8", "fp32", "int8"):  # compute, cache and render both once
        explorer.precision.value = precision
        assert explorer.wait() is not None, explorer.error
    times = []
    for k in range(toggles):
        start = time.perf_counter()
        explorer.precision.value = "fp32" if k % 2 == 0 else "int8"  # background=False: returns once shown
        times.append(time.perf_counter() - start)
        assert explorer.current.precision == explorer.precision.value
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--toggles", type=int, default=20)
    parser.add_argument("--builds", type=int, default=5)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = []
    for model in args.models:
        rows.append({"model": model, "panel_build": _spread(build_times(model, args.builds)),
                     "cached_toggle": _spread(toggle_times(model, args.toggles, args.cache_dir))})
    payload = {"machine": {"processor": platform.processor() or platform.machine(), "python": platform.python_version()},
               "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(payload, indent=2))
    print("| model | panel build median ms (p90) | cached toggle median ms (p90, max) |")
    print("|---|---|---|")
    for row in rows:
        b, t = row["panel_build"], row["cached_toggle"]
        print(f"| {row['model']} | {b['median_ms']:.0f} ({b['p90_ms']:.0f}) | "
              f"{t['median_ms']:.1f} ({t['p90_ms']:.1f}, {t['max_ms']:.1f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

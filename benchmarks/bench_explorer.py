"""Benchmark: how soon the explorer's panel exists, Python side (no browser): from a fresh interpreter's import to
the display bundle, before any work starts (the cached toggle is timed by bench_workflow.py).

Writes JSON and prints a Markdown table. Run: `python benchmarks/bench_explorer.py --out benchmarks/explorer.json`.
Browser rendering comes on top of this (tests/test_browser.py checks the panel is on screen within 2 s).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--builds", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = []
    for model in args.models:
        rows.append({"model": model, "panel_build": _spread(build_times(model, args.builds))})
    payload = {"machine": {"processor": platform.processor() or platform.machine(), "python": platform.python_version()},
               "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(payload, indent=2))
    print("| model | panel build median ms (p90, max) |")
    print("|---|---|")
    for row in rows:
        b = row["panel_build"]
        print(f"| {row['model']} | {b['median_ms']:.0f} ({b['p90_ms']:.0f}, {b['max_ms']:.0f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

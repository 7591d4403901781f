"""Benchmark: resident memory while a session cycles through 20 configurations, as the explorer does.

Each configuration is measured (or read from the cache) and its engine is fetched, like the explorer's fusion and
latency views do. With the session's engine LRU (`workbench.session.OPEN_ENGINES`) memory stays flat; with every
engine kept (`--keep-all`, the behaviour before the LRU) it grows with each configuration. Run:
`python benchmarks/bench_memory.py --out benchmarks/memory.json` (both modes, one after the other, each in a fresh
process so neither inherits the other's memory).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIGS = [{"precision": "fp32"}, {"precision": "fp16"}] + [
    {"precision": "int8", "method": method, "qdq_style": style, "calibration_size": size}
    for method in ("minmax", "entropy", "percentile") for style in ("onnxruntime", "tensorrt") for size in (64, 128, 256)]


def cycle(model: str, keep_all: bool, cache_dir: str) -> dict:
    import psutil

    import workbench.session
    from workbench import Workbench

    if keep_all:
        workbench.session.OPEN_ENGINES = 10**6
    process = psutil.Process()
    wb = Workbench(model, cache_dir=cache_dir, progress=False, eval_limit=200)
    start = process.memory_info().rss
    rss = []
    for config in CONFIGS:
        result = wb.run(**config, batch=8, runs=5, profile=False, drift=False)
        wb.engine(result).run(wb._feeds(8))
        rss.append(process.memory_info().rss)
    return {"model": model, "keep_all_engines": keep_all, "configs": len(CONFIGS), "open_engines": len(wb._engines),
            "rss_start_mb": start / 2**20, "rss_mb": [r / 2**20 for r in rss],
            "growth_last_10_mb": (rss[-1] - rss[9]) / 2**20, "growth_total_mb": (rss[-1] - start) / 2**20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet-lite0-fashion")
    parser.add_argument("--out", default="benchmarks/memory.json")
    parser.add_argument("--child", choices=["lru", "keep-all"], help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(cycle(args.model, args.child == "keep-all", args.cache_dir)))
        return 0
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="workbench-bench-memory-")
    runs = []
    for mode in ("lru", "keep-all"):  # the second reads the first's cache: both time the same engines
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--model", args.model, "--cache-dir",
                              cache_dir], capture_output=True, text=True, check=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
        r = runs[-1]
        print(f"{mode:9s}: {r['open_engines']} engines open after {r['configs']} configurations; RSS "
              f"{r['rss_start_mb']:.0f} -> {r['rss_mb'][-1]:.0f} MB, last 10 configurations {r['growth_last_10_mb']:+.0f} MB")
    Path(args.out).write_text(json.dumps({"model": args.model, "runs": runs}, indent=2))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: wall time of one sweep, sequential vs on a local Ray, and Ray's overhead per configuration.

Three runs of the same grid, each into a fresh cache (so everything is measured): sequential in this process; on a
local Ray with one task at a time (each task reserves every core); on a local Ray with one task per core
(`threads=1`). Overhead per configuration = (Ray one-at-a-time wall - sequential wall) / configurations: worker
start-up, session rebuild, task round trips. Ray's own start-up is timed apart. Repeats give medians and spread.
Run: `python benchmarks/bench_sweep.py --out benchmarks/sweep.json [--model digits-cnn fashion-cnn] [--repeats 3]`.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from workbench.machine import this_machine, usable_cores
from workbench.session import Workbench

GRID = [{"precision": "fp32"}, {"precision": "fp16"}] + [
    {"precision": "int8", "method": method, "qdq_style": style}
    for method in ("minmax", "entropy", "percentile") for style in ("onnxruntime", "tensorrt")]


def timed_sweep(model: str, executor: str, threads: int, runs: int) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as cache:
        session = Workbench(model, cache_dir=cache, threads=threads, progress=False)
        configs = [{**config, "runs": runs, "batch": 8} for config in GRID]
        start = time.perf_counter()
        results = session.sweep(configs, executor=executor)
        wall = time.perf_counter() - start
        if len(results) != len(configs) or session.failures:
            raise SystemExit(f"{executor} sweep failed: {session.failures}")
        return wall


def summary(values: list[float]) -> dict:
    return {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values), "runs": values}


def measure(model: str, args, cores: int) -> dict:
    walls: dict[str, list[float]] = {"sequential": [], "ray_one_task_at_a_time": [], "ray_one_task_per_core": []}
    for _ in range(args.repeats):
        walls["sequential"].append(timed_sweep(model, "sequential", cores, args.runs))
        walls["ray_one_task_at_a_time"].append(timed_sweep(model, "ray", cores, args.runs))
        walls["ray_one_task_per_core"].append(timed_sweep(model, "ray", 1, args.runs))
    n = len(GRID)
    sequential = statistics.median(walls["sequential"])
    return {"model": model, "configurations": n, "runs_per_configuration": args.runs,
            "wall": {name: summary(values) for name, values in walls.items()},
            "overhead_per_configuration_s": (statistics.median(walls["ray_one_task_at_a_time"]) - sequential) / n,
            "speedup_one_task_per_core_vs_sequential": sequential / statistics.median(walls["ray_one_task_per_core"])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["digits-cnn", "fashion-cnn"])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per configuration (the explorer's 20)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/sweep.json")
    args = parser.parse_args(argv)

    import ray

    cores = usable_cores()
    start = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    ray_start_s = time.perf_counter() - start
    try:
        measured = [measure(model, args, cores) for model in args.model]
    finally:
        ray.shutdown()
    payload = {"cores": cores, "machine": this_machine(), "ray_version": ray.__version__, "ray_start_s": ray_start_s,
               "models": measured,
               "note": "measured on a shared 2-core machine under load from other work: ratios are indicative"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=2))
    print(f"{cores} cores; Ray start-up {ray_start_s:.1f} s (not in the walls below)")
    print("| model | configurations | sequential s | Ray, one task at a time s | Ray, one task per core s | "
          "overhead per configuration s | speed-up per core vs sequential |")
    print("|---|---|---|---|---|---|---|")
    for row in measured:
        wall = row["wall"]
        print(f"| {row['model']} | {row['configurations']} | {wall['sequential']['median_s']:.1f} | "
              f"{wall['ray_one_task_at_a_time']['median_s']:.1f} | {wall['ray_one_task_per_core']['median_s']:.1f} | "
              f"{row['overhead_per_configuration_s']:.2f} | {row['speedup_one_task_per_core_vs_sequential']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

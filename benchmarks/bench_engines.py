"""Benchmark: latency (batch 1 and 8), speed-up over FP32 and accuracy for each model, precision and engine.

Writes a JSON file and prints a Markdown table (pasted into docs/benchmarks.md). Run: `make bench`, or
`python benchmarks/bench_engines.py --out benchmarks/results.json [--models ...] [--backends ...]`;
`--table benchmarks/results.json` prints the table of an earlier run again. `*` marks configurations the engine does
not accelerate (`RunResult.accelerated`).
Figures hold for the machine they were measured on (its CPU model and instruction set are recorded).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from workbench.backends.cpu_features import has_flag
from workbench.errors import MissingDependencyError
from workbench.results import baseline_of, strict_json
from workbench.session import Workbench

DEFAULT_MODELS = ("digits-cnn", "fashion-cnn", "efficientnet-lite0-fashion", "torchvision:resnet18")
DEFAULT_BACKENDS = ("onnxruntime", "openvino")
INSTRUCTION_SETS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
CONFIGS = (
    {"precision": "fp32"},
    {"precision": "fp16"},
    {"precision": "int8", "qdq_style": "onnxruntime"},
    {"precision": "int8", "qdq_style": "tensorrt"},
)


def run(models, backends, runs: int, cache_dir: str | None) -> list[dict]:
    rows = []
    for model in models:
        for backend in backends:
            try:
                wb = Workbench(model, backend=backend, cache_dir=cache_dir, progress=False)
            except MissingDependencyError as exc:
                print(f"skip {backend}: {exc}", file=sys.stderr)
                continue
            for config in CONFIGS:
                start = time.perf_counter()
                result = wb.run(**config, batch=8, batches=(1,), runs=runs, drift=False)
                by_batch = {s.batch: s for s in result.latency}
                fp32 = baseline_of(result, wb.results)
                base = {s.batch: s for s in fp32.latency}
                acc = result.accuracy
                rows.append({
                    "model": model, "backend": backend, "precision": result.precision,
                    "qdq_style": result.qdq_style, "accelerated": result.accelerated,
                    "synthetic_data": result.synthetic_data,
                    "latency_ms_b1": by_batch[1].median, "latency_ms_b8": by_batch[8].median,
                    "speedup_b1": base[1].median / by_batch[1].median,
                    "speedup_b8": base[8].median / by_batch[8].median,
                    "top1": acc.top1 if acc else None,
                    "top1_drop_points": (fp32.accuracy.top1 - acc.top1) * 100
                    if acc and acc.top1 is not None and fp32.accuracy and fp32.accuracy.top1 is not None else None,
                    "top1_agreement": acc.top1_agreement if acc else None,
                    "seconds": round(time.perf_counter() - start, 1),
                })
                print(_row(rows[-1]), flush=True)
    return rows


def _row(r: dict) -> str:
    def pct(v):
        return "n/a" if v is None else f"{v * 100:.2f}%"
    drop = "n/a" if r["top1_drop_points"] is None else f"{r['top1_drop_points']:+.2f}"
    prec = r["precision"] + (f" ({r['qdq_style']})" if r["qdq_style"] else "") + ("" if r["accelerated"] else " *")
    return (f"| {r['model']} | {r['backend']} | {prec} | {r['latency_ms_b1']:.3f} | {r['latency_ms_b8']:.3f} | "
            f"{r['speedup_b1']:.2f}x | {r['speedup_b8']:.2f}x | {pct(r['top1'])} | {drop} | {pct(r['top1_agreement'])} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results.json")
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--backends", nargs="+", default=list(DEFAULT_BACKENDS))
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--table", metavar="JSON", help="print the Markdown table of an earlier run and exit")
    args = parser.parse_args()
    print("| model | engine | precision | b1 median ms | b8 median ms | speed-up b1 | speed-up b8 | top-1 | "
          "drop (points) | agreement |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    if args.table:
        for row in json.loads(Path(args.table).read_text())["rows"]:
            print(_row(row))
        return 0
    rows = run(args.models, args.backends, args.runs, args.cache_dir)
    machine = {"cpu": platform.processor() or platform.machine(), "flags": {f: has_flag(f) for f in INSTRUCTION_SETS},
               "python": platform.python_version()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(strict_json({"machine": machine, "rows": rows}), indent=2))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

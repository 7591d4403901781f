"""Benchmark: what OpenVINO's inference precision does on this CPU, next to ONNX Runtime.

For one model (default torchvision ResNet-18, random weights) and batch 1 and 8: median latency and cosine
similarity to the ONNX Runtime FP32 outputs of
  - the FP32 graph with the "f32", "bf16" and "f16" hints (f16 runs as f16 only on CPUs with AVX-512 FP16),
  - the FP16 plan's graph (apply_plan) with the default hint (bf16 where the CPU has it),
  - INT8 Q/DQ graphs (onnxruntime- and tensorrt-style, synthetic calibration) on OpenVINO and on ONNX Runtime,
plus the per-layer profile sum over end-to-end latency for each OpenVINO engine.
Run: `python benchmarks/bench_openvino.py [--model torchvision:resnet18] [--runs 30] [--out results.json]`.
Inputs are random, so cosine measures agreement with FP32, not accuracy.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from workbench.backends import get_backend
from workbench.backends.onnxruntime import OnnxRuntimeOptions
from workbench.backends.openvino import OpenVinoOptions
from workbench.backends.cpu_features import cpu_flags
from workbench.calibration import CalibrationSet
from workbench.models import load_model
from workbench.precision import PrecisionPlan, apply_plan

FLAGS = ("avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def interleaved_times(engines: list, feeds: dict[str, np.ndarray], runs: int, warmup: int = 5) -> list[np.ndarray]:
    """Milliseconds per run of each engine, timed in interleaved rounds.

    Not `measure_latency` (one engine after the other): on a shared machine the load changes over minutes, and
    round-robin timing makes those changes hit every configuration alike, so the ratios stay meaningful.
    """
    for engine in engines:
        for _ in range(warmup):
            engine.run(feeds)
    times = np.empty((len(engines), runs))
    for r in range(runs):
        for i, engine in enumerate(engines):
            start = time.perf_counter()
            engine.run(feeds)
            times[i, r] = (time.perf_counter() - start) * 1e3
    return list(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="torchvision:resnet18")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()

    model = load_model(args.model)
    calibration = CalibrationSet.synthetic_for(model.inputs, size=16)
    graphs = {
        "fp32": model,
        "fp16": apply_plan(model, "fp16", progress=False),
        "int8 onnxruntime-style": apply_plan(model, PrecisionPlan("int8", qdq_style="onnxruntime"), calibration,
                                             progress=False),
        "int8 tensorrt-style": apply_plan(model, PrecisionPlan("int8", qdq_style="tensorrt"), calibration,
                                          progress=False),
    }
    openvino, onnxruntime = get_backend("openvino"), get_backend("onnxruntime")
    ov_options, ort_options = OpenVinoOptions(threads=args.threads), OnnxRuntimeOptions(threads=args.threads)
    options = {openvino: ov_options, onnxruntime: ort_options}
    configs = [  # (label, graph, backend, options)
        ("openvino f32 hint", "fp32", openvino, ov_options),
        ("openvino bf16 hint", "fp32", openvino, OpenVinoOptions(threads=args.threads, inference_precision="bf16")),
        ("openvino f16 hint", "fp32", openvino, OpenVinoOptions(threads=args.threads, inference_precision="f16")),
        ("openvino fp16 graph", "fp16", openvino, ov_options),
        ("onnxruntime", "fp32", onnxruntime, ort_options),
    ] + [(f"{backend.name} {key}", key, backend, options[backend])
         for key in ("int8 onnxruntime-style", "int8 tensorrt-style") for backend in (openvino, onnxruntime)]

    print(f"{args.model}, openvino {openvino.version()}, onnxruntime {onnxruntime.version()}, "
          f"{args.threads} threads, CPU flags: {', '.join(f for f in FLAGS if f in cpu_flags()) or 'none'}")
    rows = []
    for batch in (1, 8):
        spec = model.inputs[0]
        feeds = {spec.name: np.random.default_rng(batch).standard_normal(spec.concrete_shape(batch))
                 .astype(spec.dtype)}
        reference = onnxruntime.build(model.proto, ort_options).run(feeds)[0]
        engines = [(label, backend, backend.build(graphs[key].proto, opts)) for label, key, backend, opts in configs]
        times = interleaved_times([engine for _, _, engine in engines], feeds, args.runs)
        for (label, backend, engine), ms in zip(engines, times):
            row = {"config": label, "batch": batch, "median_ms": round(float(np.median(ms)), 3),
                   "min_ms": round(float(ms.min()), 3),
                   "cosine_to_fp32": round(cosine(engine.run(feeds)[0], reference), 6)}
            if backend is openvino:
                timings = engine.profile(feeds, runs=max(args.runs // 3, 3), progress=False)
                row["ran_as"] = engine.inference_precision
                row["profile_sum_over_e2e"] = round(sum(t.latency_ms for t in timings) / row["median_ms"], 3)
            rows.append(row)
            print(json.dumps(row))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()

"""Benchmark: the optional quantisation algorithms (precision.pipeline steps) on the bundled samples.

Rows: minilm-l6 static INT8 (minmax, onnxruntime Q/DQ) with and without SmoothQuant: cosine of the embeddings to
FP32 and the speed-up over FP32; efficientnet-lite0-fashion INT8 with and without cross-layer equalisation, weights
per channel (the default) and per tensor (what CLE is for): top-1 agreement with FP32 and the speed-up over FP32.
Speed-ups come from one interleaved timing (`Workbench.retime`: FP32 and the two INT8 variants alternate in each
round): the median of the per-round ratios, with their min and max as the spread.

Run: `python benchmarks/bench_algorithms.py [--rounds 5] [--runs 10] [--out benchmarks/algorithms.json]`.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time

import numpy as np
import onnxruntime

from workbench import Workbench, samples
from workbench.precision import equalization
from workbench.precision.calibrate import calibration_batches, prepare
from workbench.precision.plan import PrecisionPlan

CASES = [  # (sample, calibration size, metric, groups of [(row label, plan of the op types besides MatMul)])
    ("minilm-l6", 32, "cosine", [
        [("static int8", lambda others: PrecisionPlan("int8")),
         ("static int8 + smoothquant", lambda others: PrecisionPlan("int8", algorithms=("smoothquant",)))],
        # the MatMuls alone in INT8 (every other op type kept FP32): where SmoothQuant acts, without the rest's error
        [("static int8, MatMuls only", lambda others: PrecisionPlan("int8", keep_fp32=others)),
         ("static int8, MatMuls only + smoothquant",
          lambda others: PrecisionPlan("int8", keep_fp32=others, algorithms=("smoothquant",)))]]),
    ("efficientnet-lite0-fashion", 256, "top1_agreement", [
        [("int8, per-channel weights", lambda others: PrecisionPlan("int8")),
         ("int8, per-channel weights + cle", lambda others: PrecisionPlan("int8", algorithms=("cle",)))],
        [("int8, per-tensor weights", lambda others: PrecisionPlan("int8", per_channel=False)),
         ("int8, per-tensor weights + cle",
          lambda others: PrecisionPlan("int8", per_channel=False, algorithms=("cle",)))]]),
]


def fp32_after_cle(sample) -> dict[str, float]:
    """Top-1 agreement with FP32 of the FP32 graph after cross-layer equalisation alone, per ReLU6 choice: what
    each costs before any quantisation."""
    prepared, _ = prepare(sample.model)
    calibration = next(iter(sample.calibration_sets.values()))  # (the whole set: the benchmark's size)
    maxima = equalization.peaks(prepared, calibration_batches(calibration, sample.model.inputs))

    def top1(proto) -> np.ndarray:
        session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, dict(sample.eval.arrays))[0].argmax(axis=1)

    reference = top1(prepared)
    return {mode: float(np.mean(top1(equalization.equalize(prepared, relu6=mode, maxima=maxima)[0]) == reference))
            for mode in equalization.RELU6_MODES}


def speedups(fp32: list[float], other: list[float]) -> list[float]:
    """FP32 / INT8 per interleaved round: the median, min and max."""
    ratios = [a / b for a, b in zip(fp32, other)]
    return [statistics.median(ratios), min(ratios), max(ratios)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = parser.parse_args()
    rows, checks = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-algorithms-") as cache:
        for name, calibration_size, metric, groups in CASES:
            sample = samples.load(name)
            wb = Workbench(sample, progress=False, cache_dir=cache)
            others = tuple(sorted({node.op_type for node in sample.model.proto.graph.node} - {"MatMul"}))
            if name == "efficientnet-lite0-fashion":
                checks["efficientnet-lite0-fashion fp32 top1 agreement after cle alone, by relu6"] = \
                    fp32_after_cle(sample)
                print(json.dumps(checks))
            fp32 = wb.run("fp32", batch=args.batch, runs=args.runs, profile=False, drift=False)
            for group in groups:
                results = []
                for label, plan_of in group:
                    plan = plan_of(others)
                    start = time.perf_counter()
                    result = wb.run(plan, calibration_size=calibration_size, batch=args.batch, runs=args.runs,
                                    profile=False, drift=False)
                    results.append((label, plan, result, time.perf_counter() - start))
                timed = wb.retime([fp32] + [r[2] for r in results], rounds=args.rounds, runs=args.runs, fresh=True)
                base = timed[fp32.cache_key].round_medians_ms
                for label, plan, result, seconds in results:
                    own = timed[result.cache_key]
                    row = {"model": name, "variant": label, "plan": plan.to_json(), "metric": metric,
                           "value": getattr(result.accuracy, metric), "eval_samples": result.accuracy.samples,
                           "calibration_samples": calibration_size, "batch": args.batch,
                           "fp32_ms": timed[fp32.cache_key].median_ms, "int8_ms": own.median_ms,
                           "speedup_vs_fp32": speedups(base, own.round_medians_ms),
                           "quantise_and_measure_s": seconds, "notes": result.notes}
                    rows.append(row)
                    print(json.dumps({k: v for k, v in row.items() if k != "notes"}))
            wb.close()
    result = {"what": "accuracy vs FP32 of each INT8 variant; speed-up = FP32 / INT8 latency per interleaved round "
                      "(median, min, max over rounds) from one Workbench.retime per group; measured on a shared 2-core "
                      "machine under load from other work, so ratios are noisy",
              "rounds": args.rounds, "runs_per_round": args.runs, "python": platform.python_version(),
              "onnxruntime": onnxruntime.__version__, "rows": rows, "checks": checks}
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
            handle.write("\n")


if __name__ == "__main__":
    main()

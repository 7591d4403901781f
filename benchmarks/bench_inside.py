"""Memory and time of a tensor histogram (`workbench.inside.histogram`) as the calibration set grows: streamed per
batch, so peak memory should not grow with the number of batches.

    python benchmarks/bench_inside.py --out benchmarks/inside.json

Each case runs in a fresh process: the session, the calibration ranges of every method and one warm-up histogram
first, then the peak resident memory is reset (/proc/self/clear_refs) and one histogram is measured per set size.
Cases: the MiniLM-L6 sample (its first sentence set, repeated) and the 5,000-node graph of bench_large_graph.py
(synthetic calibration data), each on the tensor in the middle of its calibrated graph.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = (32, 256)  # calibration samples (4 and 32 batches of 8)


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def run_case(case: str) -> dict:
    import numpy as np

    from workbench import Workbench, inside
    from workbench.calibration import CalibrationSet
    from workbench.precision import calibrate

    cache = tempfile.mkdtemp(prefix="bench-inside-")
    if case == "minilm-l6":
        session = Workbench("minilm-l6", cache_dir=cache, progress=False)
        base = session.calibration_set(None, 10_000)
        arrays = {k: np.resize(v, (max(SIZES), *v.shape[1:])) for k, v in base.arrays.items()}
    else:
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_large_graph import build_model

        from workbench.models import load_model

        path = Path(cache) / "large.onnx"
        import onnx
        onnx.save(build_model(5000), path)
        session = Workbench(load_model(str(path)), cache_dir=cache, progress=False)
        arrays = dict(session.calibration_set(None, 10_000).arrays)
        arrays = {k: np.resize(v, (max(SIZES), *v.shape[1:])) for k, v in arrays.items()}
    session.add_calibration_set(CalibrationSet("bench", arrays))
    prepared, _ = calibrate.prepare(session.model)
    tensors = list(calibrate.calibrated_tensors(prepared))
    tensor = tensors[len(tensors) // 2]
    inside.histogram(session, tensor, calibration="bench", calibration_size=min(SIZES))  # ranges + warm-up
    rows = []
    for size in SIZES:
        inside.histogram(session, tensor, calibration="bench", calibration_size=size)  # this size's ranges
        _reset_peak()
        start_mb = _peak_mb()
        began = time.perf_counter()
        inside.histogram(session, tensor, calibration="bench", calibration_size=size)
        rows.append({"samples": size, "batches": size // 8, "seconds": round(time.perf_counter() - began, 3),
                     "peak_mb_over_start": round(_peak_mb() - start_mb, 1)})
    return {"case": case, "nodes": len(prepared.graph.node), "tensor": tensor, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/inside.json"))
    parser.add_argument("--case", action="append", choices=("minilm-l6", "graph-5000"), default=None)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_case(args.child)))
        return 0
    cases = []
    for case in args.case or ("minilm-l6", "graph-5000"):
        done = subprocess.run([sys.executable, __file__, "--child", case], capture_output=True, text=True, check=True)
        cases.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(cases[-1]))
    load = os.getloadavg()
    args.out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                    "load_average": [round(v, 1) for v in load], "cases": cases}, indent=1) + "\n")
    for case in cases:
        for row in case["rows"]:
            print(f"| {case['case']} ({case['nodes']} nodes) | {row['samples']} | {row['batches']} | "
                  f"{row['seconds']:.2f} | {row['peak_mb_over_start']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

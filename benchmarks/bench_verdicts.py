"""Does the report's headline verdict hold while load comes and goes? `make report`'s comparison (fashion-cnn,
batch 64, ONNX Runtime + OpenVINO, FP32/FP16/INT8), run REPEATS times, each with a fresh cache (everything
measured again), while a CPU-burning process alternates between busy and idle phases (bounded: it stops itself
at a deadline, and is stopped after each run).

For every run it records the headline's verdict as the report now makes it (speed-ups from interleaved rounds,
`report.headline_choice` with the comparison) and, from the same run's results, the verdict the report made before
(each configuration timed once, one after another: the same choice without the comparison). The claim: the
interleaved verdict never flips between "faster" and "slower" across runs (moving to "no measurable difference"
is allowed).

    python benchmarks/bench_verdicts.py --out benchmarks/verdicts.json
    python benchmarks/bench_verdicts.py --repeats 2 --out /tmp/verdicts.json   # a quick check
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench.cli import main as cli_main  # noqa: E402
from workbench.report import Comparison, headline_choice  # noqa: E402
from workbench.results import RetimedLatency, RunResult, baseline_of, speedup_over, strict_json  # noqa: E402

# Busy for `on` seconds, idle for `off`, until `deadline` (epoch seconds): stops by itself even if never killed.
BURNER = """
import sys, time
on, off, deadline = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
while time.time() < deadline:
    busy_until = min(time.time() + on, deadline)
    while time.time() < busy_until:
        pass
    time.sleep(max(0.0, min(off, deadline - time.time())))
"""


def one_run(index: int, *, on: float, off: float, max_seconds: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-verdicts-") as tmp:
        path = Path(tmp) / "results.json"
        burner = subprocess.Popen([sys.executable, "-c", BURNER, str(on), str(off), str(time.time() + max_seconds)])
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the report's own table: the JSON has it all
                code = cli_main(["report", "--quiet", "--no-drift", "--json", str(path), "--cache-dir",
                                 f"{tmp}/cache"])
        finally:
            burner.terminate()
            burner.wait(timeout=10)
        seconds = time.perf_counter() - start
        data = json.loads(path.read_text())
    results = [RunResult.from_json(r) for r in data["results"]]
    rows = {row["label"]: row for row in data["summary"]}
    timings = {r.cache_key: RetimedLatency(**{k: v for k, v in rows[r.label]["interleaved"].items() if k != "rounds"})
               for r in results}
    first = next(iter(rows.values()))["interleaved"]
    comparison = Comparison(first["rounds"], first["runs"], timings)
    now = headline_choice(results, comparison=comparison)
    before = headline_choice(results)
    return {"run": index, "exit_code": code, "seconds": round(seconds, 1), "load_1min_before": load_before,
            "load_1min_after": os.getloadavg()[0], "headline": data["headline"],
            "interleaved": now.to_json() if now else None, "separate": before.to_json() if before else None,
            "configurations": {r.label: _both(r, results, rows[r.label]) for r in results}}


def _both(result: RunResult, results: list[RunResult], row: dict) -> dict:
    """One configuration's speed-up over its FP32 baseline both ways: interleaved rounds and separate runs."""
    base = baseline_of(result, results)
    separate = speedup_over(result, base) if base is not None and base is not result else None
    return {"interleaved": {"speedup": row["speedup_vs_fp32"], "ci": row["speedup_ci"],
                            "verdict": row["speedup_verdict"], "median_ms": row["interleaved_median_ms"]},
            "separate": {"speedup": separate.ratio if separate else None,
                         "ci": [separate.low, separate.high] if separate and separate.low is not None else None,
                         "verdict": separate.verdict if separate else "baseline",
                         "median_ms": row["latency_median_ms"]}}


def flips(verdicts: list[str]) -> bool:
    """Whether both "faster" and "slower" occur (the verdict changed sign)."""
    return "faster" in verdicts and "slower" in verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--burn-on", type=float, default=1.0, help="seconds busy per burner cycle")
    parser.add_argument("--burn-off", type=float, default=1.0, help="seconds idle per burner cycle")
    parser.add_argument("--max-burn-seconds", type=float, default=300.0, help="the burner stops itself after this")
    parser.add_argument("--out", default="benchmarks/verdicts.json")
    args = parser.parse_args()
    runs = []
    for i in range(args.repeats):
        runs.append(one_run(i + 1, on=args.burn_on, off=args.burn_off, max_seconds=args.max_burn_seconds))
        r = runs[-1]
        print(f"run {i + 1}: interleaved {r['interleaved']['configuration']} {r['interleaved']['verdict']} "
              f"x{r['interleaved']['speedup'] or 1:.2f}; separate {r['separate']['configuration']} "
              f"{r['separate']['verdict']} x{r['separate']['speedup'] or 1:.2f} ({r['seconds']} s, load "
              f"{r['load_1min_before']:.1f})", flush=True)
    verdicts = {kind: [r[kind]["verdict"] for r in runs] for kind in ("interleaved", "separate")}
    labels = list(runs[0]["configurations"])
    per_configuration = {label: {kind: [r["configurations"][label][kind]["verdict"] for r in runs
                                        if label in r["configurations"]] for kind in ("interleaved", "separate")}
                         for label in labels}
    leaders = {kind: [r[kind]["configuration"] for r in runs] for kind in ("interleaved", "separate")}
    payload = {
        "what": "make report's comparison (fashion-cnn, batch 64, onnxruntime + openvino, fp32/fp16/int8, no drift) "
                f"run {args.repeats} times with a fresh cache each, a CPU burner {args.burn_on:g} s busy / "
                f"{args.burn_off:g} s idle running throughout; headline verdicts from interleaved rounds (the report "
                "now) and from the same run's separate timings (the report before)",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "shared": "2 cores shared with other engineers' jobs; the 1-minute load average is recorded"},
        "verdicts": verdicts, "leaders": leaders,
        "interleaved_flips": flips(verdicts["interleaved"]), "separate_flips": flips(verdicts["separate"]),
        "per_configuration": per_configuration,
        "configurations_flipping": {kind: [label for label, v in per_configuration.items() if flips(v[kind])]
                                    for kind in ("interleaved", "separate")},
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(strict_json(payload), indent=2) + "\n")
    print(f"interleaved verdicts {verdicts['interleaved']} (flips: {payload['interleaved_flips']}); "
          f"separate {verdicts['separate']} (flips: {payload['separate_flips']}); json: {args.out}")
    for label, v in per_configuration.items():
        print(f"  {label}: interleaved {v['interleaved']}; separate {v['separate']}")
    return 1 if payload["interleaved_flips"] else 0


if __name__ == "__main__":
    sys.exit(main())

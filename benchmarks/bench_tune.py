"""Accuracy-budgeted mixed precision (`Workbench.tune`) on the samples, with honest timing.

For each case: run the search, then re-time FP32, fully quantised INT8 and the chosen plan interleaved
(`--rounds` rounds of `--runs` timed runs each, engines built once), so the speed-ups compare medians taken under
the same load. Writes JSON (`--out`) and prints a docs/benchmarks.md table row per case.

    python benchmarks/bench_tune.py --out benchmarks/tune_results.json
    python benchmarks/bench_tune.py --case fashion-cnn-top1 --budget 4 --rounds 3   # a quick check
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workbench import Workbench  # noqa: E402
from workbench.results import strict_json  # noqa: E402
from workbench.tune import speedup_kept  # noqa: E402

# name -> (sample, tune arguments, session arguments, goal in words)
CASES = {
    "fashion-cnn-top1": ("fashion-cnn", {"metric": "top1", "max_drop": 0.5}, {}, "tune --max-drop 0.5 within budget"),
    "efficientnet-lite0-fashion-top1": ("efficientnet-lite0-fashion", {"metric": "top1", "max_drop": 0.5}, {},
                                        "tune --max-drop 0.5 within budget"),
    "efficientnet-lite0-fashion-agreement": (
        "efficientnet-lite0-fashion", {"metric": "agreement", "max_drop": 1.0}, {},
        "agreement >= 99 % keeping >= 80 % of full INT8's speed-up at batch 8"),
    "minilm-l6-cosine": ("minilm-l6", {"metric": "cosine", "max_drop": 0.01, "dims": {"sequence": 64}},
                         {"shape_range": {"sequence": (8, 64, 128)}},
                         "embedding cosine >= 0.99 and >= 1.3x faster than FP32 (batch 8, sequence 64)"),
}


def retime(wb: Workbench, results: dict, *, rounds: int, runs: int) -> dict:
    """Interleaved re-timing (`Workbench.retime`, timed now even if cached): per configuration the median of each
    round, their median and range."""
    timed = wb.retime(list(results.values()), rounds=rounds, runs=runs, fresh=True)
    return {name: {"median_ms": t.median_ms, "min_round_ms": t.min_round_ms, "max_round_ms": t.max_round_ms,
                   "rounds": t.round_medians_ms}
            for name, t in ((name, timed[result.cache_key]) for name, result in results.items())}


def run_case(name: str, budget: int, rounds: int, runs: int, cache_dir: str | None) -> dict:
    sample, tune_args, session_args, goal = CASES[name]
    tune_args = dict(tune_args)
    dims = tune_args.pop("dims", {})
    wb = Workbench(sample, cache_dir=cache_dir, progress=False, **session_args)
    start = time.perf_counter()
    found = wb.tune("int8", budget=budget, batch=8, dims=dims or None, **tune_args)
    seconds = time.perf_counter() - start
    full = [c for c in found.configurations if c.step == "quantise all"]
    calibrated = [c for c in full if c.method != "dynamic"]
    full_int8 = min(calibrated or full, key=lambda c: c.drop)  # the calibrated start the speed-up kept refers to
    dynamic = next((c for c in full if c.method == "dynamic"), None)
    chosen = found.chosen
    picked = {"fp32": found.configurations[0], "int8": full_int8, "chosen": chosen,
              **({"int8_dynamic": dynamic} if dynamic else {})}
    timing = retime(wb, {k: found.result_of(c) for k, c in picked.items()}, rounds=rounds, runs=runs)
    fp32_ms = timing["fp32"]["median_ms"]
    speedup = {k: fp32_ms / v["median_ms"] for k, v in timing.items()}
    ratio_kept, gain_kept = speedup_kept(fp32_ms, timing["int8"]["median_ms"], timing["chosen"]["median_ms"])
    row = {"case": name, "model": sample, "goal": goal, "metric": found.metric, "max_drop": found.max_drop,
           "budget": budget, "configurations": len(found.configurations), "stopped": found.stopped,
           "search_seconds": round(seconds, 1), "chosen": chosen.to_json() if chosen else None,
           "chosen_within_budget": bool(chosen and chosen.within_budget),
           "chosen_is_reduced_precision": bool(chosen and chosen.precision != "fp32"),
           "full_int8": full_int8.to_json(), "full_int8_dynamic": dynamic.to_json() if dynamic else None,
           "load_average_after": os.getloadavg(), "retimed": timing, "speedup_vs_fp32": speedup,
           "speedup_ratio_chosen_vs_full_int8": ratio_kept,
           "speedup_gain_kept": gain_kept,
           "frontier": [c.to_json() for c in found.frontier]}
    print(f"| {name} | {found.metric} <= {found.max_drop:g} | {len(found.configurations)} | "
          f"{chosen.kept_text if chosen else 'none'} | {chosen.value if chosen else float('nan'):.4f} | "
          f"{full_int8.value:.4f} | {speedup['int8']:.2f}x | {speedup['chosen']:.2f}x | "
          f"{timing['chosen']['min_round_ms']:.3f}-{timing['chosen']['max_round_ms']:.3f} ms | {found.stopped} |",
          flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", choices=list(CASES), help="cases to run (default all)")
    parser.add_argument("--budget", type=int, default=10, help="configurations per search (default 10)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved re-timing rounds (default 5)")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per round (default 30)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", default=None, help="write JSON here")
    args = parser.parse_args()
    print("| case | budget on | measured | chosen keeps | chosen metric | full INT8 metric | full INT8 speed-up | "
          "chosen speed-up | chosen round medians | stopped |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = [run_case(name, args.budget, args.rounds, args.runs, args.cache_dir) for name in args.case or CASES]
    if args.out:
        payload = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                               "note": "a shared 2-core machine: see each case's load_average_after"},
                   "command": " ".join(sys.argv), "cases": rows}
        Path(args.out).write_text(json.dumps(strict_json(payload), indent=2, allow_nan=False))
        print(f"json: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

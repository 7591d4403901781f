"""Benchmark: comparing two large TensorRT plans (issue 18: 55,000 layers took 207 s with quadratic matching).

Builds two synthetic engine-inspector graphs (+ trtexec profiles) of N layers each, an FP16 plan and an INT8 plan
of the same ONNX export (fused Conv+Relu layers, reformat copies, standalone Q/DQ layers), then times
`load_plan` of both, `compare_plans` by name and by ordinal, and the whole HTML plan report (what
`python -m workbench plan a b --out r.html` does after loading). Medians over `--repeats`, min-max as spread.
Run: `python benchmarks/bench_plan_compare.py [--layers 5500 55000] [--repeats 3] [--out benchmarks/plan_compare.json]`.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

from workbench.report import build_plan_report
from workbench.trtplan import load_plan
from workbench.trtplan.report import compare_plans


def synthetic_plan(layers: int, precision: str) -> tuple[dict, list]:
    """Inspector JSON and profile of `layers` layers: every 10th a reformat copy, in INT8 every 7th a Q/DQ layer."""
    dtype = {"fp16": "Half", "int8": "Int8"}[precision]
    graph, profile = [], [{"count": 100}]
    for i in range(layers):
        if i % 10 == 9:
            name = f"Reformatting CopyNode for Input Tensor 0 to Conv_{i}"
        elif precision == "int8" and i % 7 == 3:
            name = f"QuantizeLinear_{i}"
        else:
            name = f"Conv_{i} + Relu_{i}"
        graph.append({"Name": name, "LayerType": "CaskConvolution",
                      "Inputs": [{"Name": f"t{i}", "Dimensions": [8, 64, 56, 56], "Format/Datatype": dtype}],
                      "Outputs": [{"Name": f"t{i + 1}", "Dimensions": [8, 64, 56, 56], "Format/Datatype": dtype}]})
        profile.append({"name": name, "averageMs": 0.01 + (i % 13) * 0.001, "medianMs": 0.01, "percentage": 0.01})
    return {"Layers": graph, "Bindings": ["t0", f"t{layers}"]}, profile


def timed(fn, repeats: int) -> tuple[float, float, float, object]:
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[5500, 55000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--report", action="store_true", help="also time the whole HTML plan report")
    parser.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = parser.parse_args()
    rows = []
    for layers in args.layers:
        (g16, p16), (g8, p8) = synthetic_plan(layers, "fp16"), synthetic_plan(layers, "int8")
        load = timed(lambda: (load_plan(g16, p16, name="fp16"), load_plan(g8, p8, name="int8")), args.repeats)
        plans = {plan.name: plan for plan in load[3]}
        by_name = timed(lambda: compare_plans(plans, match="name"), args.repeats)
        by_ordinal = timed(lambda: compare_plans(plans, match="ordinal"), args.repeats)
        row = {"layers_per_plan": layers, "matched_rows": len(by_name[3].rows),
               "load_s": load[:3], "compare_name_s": by_name[:3], "compare_ordinal_s": by_ordinal[:3]}
        if args.report:
            row["html_report_s"] = timed(lambda: build_plan_report(list(plans.values())), 1)[:3]
        rows.append(row)
        print(json.dumps(row))
    base = rows[0]
    for row in rows[1:]:
        scale = row["layers_per_plan"] / base["layers_per_plan"]
        row["compare_name_time_ratio"] = row["compare_name_s"][0] / base["compare_name_s"][0]
        row["size_ratio"] = scale
    result = {"what": "median, min, max seconds over repeats (triples); measured on a shared 2-core machine under "
                      "load from other work", "python": platform.python_version(), "repeats": args.repeats,
              "rows": rows}
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
            handle.write("\n")


if __name__ == "__main__":
    main()

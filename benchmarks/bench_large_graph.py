"""A 5,000-node model from `report` to HTML: how long each stage takes (load, FP32, INT8, HTML report).

    python benchmarks/bench_large_graph.py --nodes 5000 --out benchmarks/large_graph.json

The model is a chain of residual blocks (1x1 Conv -> Clip(0, 1) -> Add), built with onnx.helper, dynamic batch
(Clip, i.e. a ReLU6-style bounded activation, keeps 1,666 residual additions finite in FP16):
wide enough to be realistic for ONNX Runtime, long enough that anything quadratic in the node count shows. Each
stage runs `repeats` times from an empty result cache (calibration and the precision-baked model included), the
way `python -m workbench report MODEL.onnx --precision fp32 --precision int8` runs it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CHANNELS = 8


def build_model(nodes: int, seed: int = 0) -> onnx.ModelProto:
    """About `nodes` nodes: (nodes - 3) // 3 blocks of Conv -> Clip -> Add, then pool, flatten, Gemm."""
    rng = np.random.default_rng(seed)
    graph_nodes, inits = [], []
    current = "input"
    for i in range((nodes - 3) // 3):
        weight = numpy_helper.from_array((rng.standard_normal((CHANNELS, CHANNELS, 1, 1)) * 0.3).astype(np.float32),
                                         f"w{i}")
        bias = numpy_helper.from_array(np.zeros(CHANNELS, np.float32), f"b{i}")
        inits += [weight, bias]
        graph_nodes += [helper.make_node("Conv", [current, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}"),
                        helper.make_node("Clip", [f"c{i}", "zero", "one"], [f"r{i}"], name=f"clip{i}"),
                        helper.make_node("Add", [f"r{i}", current], [f"a{i}"], name=f"add{i}")]
        current = f"a{i}"
    inits += [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
              numpy_helper.from_array(np.array(1.0, np.float32), "one"),
              numpy_helper.from_array((rng.standard_normal((10, CHANNELS)) * 0.3).astype(np.float32), "fc_w"),
              numpy_helper.from_array(np.zeros(10, np.float32), "fc_b")]
    graph_nodes += [helper.make_node("GlobalAveragePool", [current], ["gap"], name="gap"),
                    helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
                    helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(graph_nodes, "large_chain",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", CHANNELS, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="bench_large_graph")
    model.ir_version = 8
    return model


def measure(nodes: int, repeats: int, runs: int, precisions=("fp32", "int8"), out: Path | None = None) -> dict:
    """Stage timings; with `out`, the JSON is rewritten after every stage (`"complete": false` until the end), so
    a run stopped part-way still records what it measured."""
    from workbench.report import write_report
    from workbench.session import Workbench

    stages: dict[str, list[float]] = {"load": [], **{p: [] for p in precisions}, "html": []}

    def record(complete: bool) -> dict:
        summary = {name: {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values),
                          "repeats": len(values)} for name, values in stages.items() if values}
        result = {"nodes": nodes, "timed_runs_per_config": runs, "precisions": list(precisions), "complete": complete,
                  "stages": summary,
                  "machine": {"python": platform.python_version(), "processor": platform.processor() or
                              platform.machine(), "load_average_1min": os.getloadavg()[0]}}
        if out is not None:
            out.write_text(json.dumps(result, indent=2) + "\n")
        return result

    html_bytes = 0
    with tempfile.TemporaryDirectory(prefix="bench-large-") as tmp:
        model_path = Path(tmp) / "large.onnx"
        onnx.save(build_model(nodes), model_path)
        for repeat in range(repeats):
            cache = Path(tmp) / f"cache{repeat}"
            start = time.perf_counter()
            wb = Workbench(str(model_path), cache_dir=cache, progress=False, eval_limit=8)
            stages["load"].append(time.perf_counter() - start)
            nodes = len(wb.model.proto.graph.node)
            record(False)
            results = []
            for precision in precisions:
                start = time.perf_counter()
                results.append(wb.run(precision, batch=1, runs=runs, calibration_size=16))
                stages[precision].append(time.perf_counter() - start)
                record(False)
            start = time.perf_counter()
            path = write_report([wb], results, Path(tmp) / "report.html", command="bench_large_graph")
            stages["html"].append(time.perf_counter() - start)
            html_bytes = path.stat().st_size
    stages["total"] = [sum(values[i] for values in stages.values()) for i in range(repeats)]
    result = record(True)
    result["html_bytes"] = html_bytes
    if out is not None:
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per configuration")
    parser.add_argument("--precision", action="append", choices=("fp32", "fp16", "int8"), default=None,
                        help="precisions in the report (default fp32 and int8)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here (rewritten after each stage)")
    args = parser.parse_args(argv)
    result = measure(args.nodes, args.repeats, args.runs, tuple(args.precision or ("fp32", "int8")), args.out)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

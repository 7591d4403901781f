"""Command line: `python -m workbench report|plan|samples|tune|lint|warm|app|sweep`. JSON keys written here are a contract
(README)."""
from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import threading
import traceback
from pathlib import Path

from . import output
from .backends import DEFAULT_BACKEND, backend_names, installed_backends
from .errors import WorkbenchError
from .output import atomic_write, check_outputs
from .precision.plan import INT8_FIELDS, PLAN_CHOICES, PLAN_FIELDS, PrecisionPlan
from .results import strict_json
from .vocabulary import (DEFAULT_BUDGET, DEFAULT_MAX_DROP, DEFAULT_METRIC, DEFAULT_RUNS, METHODS, PRECISIONS,
                         OUTPUT_TASKS, QDQ_STYLES, TUNE_METRICS)

DEFAULT_PRECISIONS = PRECISIONS
DEFAULT_REPORT = "reports/report.html"  # the same place for `make report` and a bare `python -m workbench report`
# The main job (`report` with no model): the default sample at a batch where reduced precision is measurably faster
# on a 2-core CPU (at batch 8 it runs in ~0.3 ms, dominated by per-call overhead), on every installed CPU engine.
MAIN_JOB_BATCH = 64


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m workbench",
        description="TensorRT Workbench: see what layer fusion, FP16 and INT8 do to a model.")
    parser.add_argument("--traceback", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    report = sub.add_parser(
        "report", help="measure precisions of a model and write an HTML report and/or JSON results",
        description="Build FP32/FP16/INT8 variants of MODEL, measure latency, accuracy and per-layer drift, and "
                    "write a self-contained HTML report. With no options: FP32, FP16 and INT8 of the default sample "
                    f"on its default calibration set, at batch {MAIN_JOB_BATCH}, on ONNX Runtime and (when "
                    "installed) OpenVINO.")
    report.add_argument("model", nargs="?", default=None,
                        help="sample name (see `samples`), path to an ONNX file, or torchvision:NAME "
                             "(default: the default sample)")
    report.add_argument("--precision", action="append", choices=DEFAULT_PRECISIONS,
                        help="precision to measure; repeat for several (default: fp32, fp16, int8)")
    report.add_argument("--calibration", help="calibration set name (default: the sample's first set)")
    report.add_argument("--calibration-size", type=int, default=256, help="calibration samples (default 256)")
    _plan_flags(report, repeat=False)
    report.add_argument("--keep-fp32", action="append", default=None, metavar="NODE|OPTYPE",
                        help="keep a node (by name) or every node of an op type in FP32 in the FP16 and INT8 "
                             "variants; repeat for several")
    report.add_argument("--per-tensor", action="store_true",
                        help="INT8 weights with one scale per tensor (default: one per output channel)")
    report.add_argument("--strict", action="store_true",
                        help="exit 1 when any configuration could not be measured (default: only when nothing "
                             "but FP32 could be)")
    report.add_argument("--batch", type=int, default=None,
                        help=f"batch size for latency (default 8; {MAIN_JOB_BATCH} for the default sample)")
    report.add_argument("--runs", type=int, default=DEFAULT_RUNS,
                        help=f"timed runs per configuration (default {DEFAULT_RUNS})")
    report.add_argument("--threads", type=int, default=None, help="engine threads (default: backend's)")
    report.add_argument("--backend", action="append", default=None, choices=backend_names(),
                        help="onnxruntime (default), openvino or tensorrt; repeat to compare engines side by side "
                             "(default for the default sample: onnxruntime and, when installed, openvino)")
    report.add_argument("--no-drift", action="store_true", help="skip per-layer drift (faster)")
    report.add_argument("--cache-dir", default=None, help="result cache directory (default $WORKBENCH_CACHE "
                                                          "or ~/.cache/tensorrt-workbench)")
    report.add_argument("--shared-cache", default=None, help="read-only cache read first (default "
                                                             "$WORKBENCH_SHARED_CACHE), e.g. one a teacher warmed")
    report.add_argument("--out", default=None, help=f"HTML report path (default {DEFAULT_REPORT} unless --json "
                        "only); the JSON results go beside it unless --json says where")
    report.add_argument("--json", dest="json_path", default=None, help="write machine-readable results here "
                        "(default: beside the report, results.json for report.html, else the report's name .json)")
    report.add_argument("--quiet", action="store_true", help="no progress bars")
    data = report.add_argument_group("your data and inputs")
    data.add_argument("--data", help=".npz of arrays by input name (optional 'labels') or a folder of images "
                                     "(labels from sub-folder names): split into calibration/eval halves (seed 0)")
    data.add_argument("--calibration-data", help="calibration data only (.npz or image folder)")
    data.add_argument("--eval-data", help="evaluation data only (.npz or image folder)")
    data.add_argument("--image-preprocessing", default=None,
                      help="for image folders, e.g. size=224x224,mean=0.485:0.456:0.406,std=0.229:0.224:0.225,"
                           "order=rgb,scale=255 (default: RGB, the model's size, /255, no mean/std)")
    data.add_argument("--input", action="append", default=None, metavar="NAME=SHAPE",
                      help="shape for an input's synthetic data (e.g. images=1,3,640,640) or a scalar input's value "
                           "(e.g. sr=16000); repeat for several inputs")
    data.add_argument("--task", action="append", default=None, type=_task_arg, metavar="[OUTPUT=]TASK",
                      help="what an output is, so accuracy uses its metrics (docs/accuracy.md): TASK for the first "
                           f"output or OUTPUT=TASK (repeat); TASK is one of {', '.join(OUTPUT_TASKS)} (default: "
                           "inferred from each output's name, type and shape)")

    plan = sub.add_parser(
        "plan", help="import TensorRT engine plans built elsewhere (engine inspector + trtexec JSON)",
        description="Read engine-inspector graph JSON (and trtexec --exportProfile JSON) for one or more plans; "
                    "with several, compare them layer by layer.")
    plan.add_argument("graph_json", nargs="+", help="*.graph.json file(s) or folder(s) holding one plan each")
    plan.add_argument("--profile", action="append", default=None,
                      help="*.profile.json for each graph (default: found beside the graph file)")
    plan.add_argument("--out", default=None, help="HTML report path")
    plan.add_argument("--json", dest="json_path", default=None, help="write plan JSON here")

    sub.add_parser("samples", help="list the bundled samples", description="List the bundled sample models.")
    _warm_parser(sub)
    _app_parser(sub)
    _sweep_parser(sub)
    _tune_parsers(sub)
    return parser


def _plan_flags(parser, *, repeat: bool, names=INT8_FIELDS) -> None:
    """One flag per INT8-only plan field (--method, --qdq-style, --weight-rounding, ...), choices from the vocabulary,
    the default an INT8 plan's."""
    for name in names:
        default = getattr(PrecisionPlan("int8"), name)
        parser.add_argument("--" + name.replace("_", "-"), action="append" if repeat else "store",
                            choices=PLAN_CHOICES[name], default=None,
                            help=f"INT8 {name.replace('_', ' ').replace('qdq', 'Q/DQ')} (default {default or 'none'}"
                            + ("; repeat for several)" if repeat else ")"))


def _int8_options(args, precision: str) -> dict:
    """The INT8-only plan fields given on the command line, for a run at `precision`."""
    return {name: getattr(args, name) for name in INT8_FIELDS} if precision == "int8" else {}


# --grid keys: the plan's fields that take one of a few words, then the job's
GRID_KEYS = {**{name: str for name in PLAN_FIELDS if name in PLAN_CHOICES}, "calibration": str,
             "calibration_size": int, "batch": int, "backend": str, "runs": int}
INT8_ONLY = ("calibration", "calibration_size", *INT8_FIELDS)


def _sweep_parser(sub) -> None:
    sweep = sub.add_parser(
        "sweep", help="measure a grid of configurations of one model, sequentially or on a Ray cluster",
        description="Measure every combination of the --grid values (INT8-only keys apply to INT8), one after another "
                    "or, with --ray, as Ray tasks (a local Ray when no address is given). Each task reserves as many "
                    "CPUs as --threads (default: all cores of a node). Prints a summary; --json writes the results "
                    "and the failed configurations.")
    sweep.add_argument("model", help="sample name, ONNX file or torchvision:NAME")
    sweep.add_argument("--grid", action="append", default=None, metavar="KEY=V1,V2",
                       help=f"values to sweep; keys: {', '.join(GRID_KEYS)} (repeat; default precision=fp32,fp16,int8)")
    sweep.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                       help="run on Ray: the cluster at ADDRESS (e.g. ray://head:10001 or auto), or a local Ray")
    sweep.add_argument("--max-retries", type=int, default=2, help="Ray retries of a task whose worker died")
    sweep.add_argument("--threads", type=int, default=None, help="engine threads = CPUs reserved per task")
    sweep.add_argument("--cache-dir", default=None, help="result cache directory (workers must see the same path)")
    sweep.add_argument("--shared-cache", default=None, help="read-only cache read first")
    sweep.add_argument("--no-drift", action="store_true", help="skip per-layer drift (faster)")
    sweep.add_argument("--json", dest="json_path", default=None, help="write results and failures here")
    sweep.add_argument("--quiet", action="store_true", help="no progress bars")


def grid_configs(grid: list[str] | None) -> list[dict]:
    """`run` keyword arguments for every combination of KEY=V1,V2 grid entries (INT8-only keys dropped elsewhere,
    duplicates removed, order kept)."""
    from itertools import product

    axes: dict[str, list] = {}
    for entry in grid or ["precision=fp32,fp16,int8"]:
        key, sep, values = entry.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in GRID_KEYS or not values.strip():
            raise WorkbenchError(f"--grid {entry!r}: write KEY=V1,V2 with KEY one of {', '.join(GRID_KEYS)}.")
        try:
            axes[key] = [GRID_KEYS[key](v.strip()) for v in values.split(",") if v.strip()]
        except ValueError:
            raise WorkbenchError(f"--grid {entry!r}: {key} takes integers.") from None
    configs: list[dict] = []
    for combination in product(*axes.values()):
        config = dict(zip(axes, combination))
        if config.get("precision", "fp32") != "int8":
            config = {k: v for k, v in config.items() if k not in INT8_ONLY}
        if config not in configs:
            configs.append(config)
    return configs


def _app_parser(sub) -> None:
    from .app import DEFAULT_CULL_IDLE_S, DEFAULT_CULL_INTERVAL_S, DEFAULT_HOST, DEFAULT_PORT

    app = sub.add_parser(
        "app", help="serve the explorer as a standalone web page (Voila), e.g. for workshop participants",
        description="Serve the explorer (model, engine, precision, calibration, method, Q/DQ style, batch) as a web "
                    "page without code cells. Listens on 127.0.0.1 unless --host and --allow-remote say otherwise.")
    app.add_argument("model", nargs="?", default=None, help="sample shown first (default: the default sample)")
    app.add_argument("--backend", default=DEFAULT_BACKEND, help=f"engine shown first (default {DEFAULT_BACKEND})")
    app.add_argument("--cache", dest="cache_dir", default=None,
                     help="private, writable cache (default $WORKBENCH_CACHE or ~/.cache/tensorrt-workbench)")
    app.add_argument("--shared-cache", default=None,
                     help="read-only cache read first, e.g. one a teacher filled with `warm`")
    app.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    app.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    app.add_argument("--allow-remote", action="store_true",
                     help="needed to listen on an address other than loopback (the app has no password)")
    app.add_argument("--token", default=None, help="require this token in the page URL (?token=...)")
    app.add_argument("--cull-idle", type=int, default=DEFAULT_CULL_IDLE_S,
                     help=f"shut a closed page's kernel down after this many idle seconds (default {DEFAULT_CULL_IDLE_S})")
    app.add_argument("--cull-interval", type=int, default=DEFAULT_CULL_INTERVAL_S,
                     help=f"seconds between checks for such kernels (default {DEFAULT_CULL_INTERVAL_S})")
    app.add_argument("--runs", type=int, default=None, help="timed runs per configuration (default: the explorer's)")
    app.add_argument("--threads", type=int, default=None, help="engine threads (default: backend's)")


def _warm_parser(sub) -> None:
    from .choices import BATCH_SIZES, EXPLORER_RUNS

    warm = sub.add_parser(
        "warm", help="pre-compute every configuration the explorer can show into a cache (for a workshop)",
        description="Measure every configuration the explorer offers (precisions, calibration sets, methods, Q/DQ "
                    "styles, batch sizes, engines) for the chosen samples into --cache, so explorers reading that "
                    "cache (--shared-cache / $WORKBENCH_SHARED_CACHE) answer every toggle at once. Options narrow "
                    "the grid; already-cached configurations are skipped.")
    warm.add_argument("--samples", nargs="+", default=None, help="sample names (default: every bundled sample)")
    warm.add_argument("--cache", dest="cache_dir", default=None,
                      help="cache folder to fill (default $WORKBENCH_CACHE or ~/.cache/tensorrt-workbench)")
    warm.add_argument("--shared-cache", default=None, help="an existing read-only cache to build on")
    warm.add_argument("--backend", action="append", default=None, help="engine (repeat; default: the explorer's)")
    warm.add_argument("--precision", action="append", choices=DEFAULT_PRECISIONS, default=None,
                      help="precision (repeat; default all)")
    warm.add_argument("--calibration", action="append", default=None,
                      help="calibration set name (repeat; default: every set of each sample)")
    warm.add_argument("--method", action="append", choices=METHODS, default=None, help="INT8 method (repeat)")
    warm.add_argument("--qdq-style", action="append", choices=QDQ_STYLES, default=None, help="Q/DQ style (repeat)")
    warm.add_argument("--batch", action="append", type=int, choices=BATCH_SIZES, default=None,
                      help="batch size (repeat; default: the explorer's 1, 8, 32)")
    warm.add_argument("--runs", type=int, default=EXPLORER_RUNS,
                      help=f"timed runs per configuration (default {EXPLORER_RUNS}, the explorer's)")
    warm.add_argument("--threads", type=int, default=None, help="engine threads (default: backend's)")
    warm.add_argument("--json", dest="json_path", default=None, help="write what was done as JSON here")
    warm.add_argument("--quiet", action="store_true", help="no progress bar")


def _tune_parsers(sub) -> None:
    tune = sub.add_parser(
        "tune", help="find the fastest INT8/FP32 mix within an accuracy budget",
        description="Rank MODEL's quantised layers by sensitivity and search for the fastest mixed-precision plan "
                    "whose accuracy drops at most --max-drop below FP32 (top1/agreement in points, cosine "
                    "absolute). Every configuration is cached: running it again is instant.")
    tune.add_argument("model", help="sample name, ONNX file or torchvision:NAME")
    tune.add_argument("--precision", choices=[p for p in PRECISIONS if p != "fp32"], default="int8",
                      help="precision to search (int8)")
    tune.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP,
                      help=f"accuracy you can afford to lose (default {DEFAULT_MAX_DROP})")
    tune.add_argument("--metric", choices=TUNE_METRICS, default=DEFAULT_METRIC,
                      help=f"accuracy measure (default {DEFAULT_METRIC}; top1 needs labels)")
    tune.add_argument("--budget", type=int, default=DEFAULT_BUDGET,
                      help=f"configurations to measure at most (default {DEFAULT_BUDGET})")
    # to try, each repeatable; without --method, dynamic is tried too for models with constant-weight MatMuls
    _plan_flags(tune, repeat=True, names=("method", "qdq_style", "weight_rounding"))  # tune's methods=, ...
    tune.add_argument("--calibration", default=None, help="calibration set name (default: the sample's first)")
    tune.add_argument("--batch", type=int, default=8, help="batch size for latency (default 8)")
    tune.add_argument("--runs", type=int, default=DEFAULT_RUNS,
                      help=f"timed runs per configuration (default {DEFAULT_RUNS})")
    tune.add_argument("--backend", default=DEFAULT_BACKEND, help=f"engine (default {DEFAULT_BACKEND})")
    tune.add_argument("--cache-dir", default=None, help="result cache directory")
    tune.add_argument("--json", dest="json_path", default=None, help="write chosen plan, frontier, sensitivity")
    tune.add_argument("--bundle", default=None, help="export the chosen plan as a deployment bundle here")
    tune.add_argument("--quiet", action="store_true", help="no progress bars")

    lint = sub.add_parser(
        "lint", help="explain why a reduced-precision engine is not faster",
        description="Lint rules over engine layers (unfused Q/DQ, precision transitions, float Adds/pooling "
                    "between INT8 layers, channel alignment, dominant and tiny layers, unaccelerated precision). "
                    "TARGET is a model (measured here, at --precision) or a folder / *.graph.json of a TensorRT plan.")
    lint.add_argument("target", help="sample name, ONNX file, torchvision:NAME, or TensorRT plan folder/graph")
    lint.add_argument("--precision", choices=PRECISIONS, default="int8", help="for a model (int8)")
    lint.add_argument("--qdq-style", choices=QDQ_STYLES, default=None, help="INT8 Q/DQ style")
    lint.add_argument("--backend", default=DEFAULT_BACKEND, help=f"engine for a model (default {DEFAULT_BACKEND})")
    lint.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    lint.add_argument("--cache-dir", default=None, help="result cache directory")
    lint.add_argument("--json", dest="json_path", default=None, help="write the findings here")
    lint.add_argument("--quiet", action="store_true", help="no progress bars")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    command_line = "python -m workbench " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    previous = _terminate_as_interrupt()
    try:
        if args.command == "samples":
            return _samples()
        if args.command == "plan":
            return _plan(args, command_line)
        if args.command == "tune":
            return _tune(args, command_line)
        if args.command == "lint":
            return _lint(args, command_line)
        if args.command == "warm":
            return _warm(args)
        if args.command == "app":
            return _app(args)
        if args.command == "sweep":
            return _sweep(args, command_line)
        return _report(args, command_line)
    except WorkbenchError as exc:
        if args.traceback:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("error: terminated (SIGTERM); nothing half-written was kept", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the work is so that it unwinds like Ctrl-C (temporary files removed, Ray tasks
    cancelled) instead of dying mid-write."""


def _terminate_as_interrupt():
    """Turn SIGTERM into Terminated for this command (main thread only); returns the previous handler or None."""
    def terminate(_signum, _frame):
        raise Terminated

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, terminate)


def _samples() -> int:
    from . import samples

    for info in samples.describe():
        default = " (default)" if info["name"] == samples.DEFAULT_SAMPLE else ""
        print(f"{info['name']}{default}: {info['description']}")
        print(f"    calibration sets: {', '.join(info['calibration_sets'])}")
    return 0


def _report(args, command_line: str) -> int:
    """Measure every precision on every engine; a configuration that is refused or fails becomes a failure row
    (HTML, JSON `failures`) while the rest is measured and written. Exit 1 when nothing but FP32 was measured (or,
    with --strict, when anything failed)."""
    from . import samples
    from .report import Failure, build_report, headline, headline_choice, interleaved_comparison
    from .session import Workbench
    from .views import summary_table

    model = args.model or samples.DEFAULT_SAMPLE
    out = args.out or (None if args.json_path else DEFAULT_REPORT)
    json_path = args.json_path or (_json_beside(out) if out else None)
    check_outputs({"--out": out, "--json": json_path},
                  inputs=[model, args.data, args.calibration_data, args.eval_data])
    precisions = list(dict.fromkeys(args.precision or DEFAULT_PRECISIONS))
    backends, batch = engines_and_batch(args.model, args.backend, args.batch)
    backends = list(dict.fromkeys(backends))
    progress = not args.quiet
    results, sessions, failures = [], [], []
    for backend in backends:
        wb = Workbench(model, backend=backend, cache_dir=args.cache_dir, shared_cache=args.shared_cache,
                       threads=args.threads, progress=progress, **_data_options(args))
        sessions.append(wb)
        for precision in precisions:
            reduced = precision != "fp32"
            options = {"calibration": args.calibration if precision == "int8" else None,
                       **_int8_options(args, precision),
                       "keep_fp32": tuple(args.keep_fp32 or ()) if reduced else (),
                       "per_channel": False if args.per_tensor and precision == "int8" else None}
            try:
                results.append(wb.run(precision=precision, calibration_size=args.calibration_size, batch=batch,
                                      runs=args.runs, drift=not args.no_drift, **options))
            except Exception as exc:  # noqa: BLE001 - any refusal or engine failure is a row; the others go on
                if args.traceback:
                    traceback.print_exc()
                failures.append(Failure.of(exc, precision=precision, backend=backend,
                                           label=f"{_plan_label(precision, options)} @ {backend}"))
                print(f"not measured: {failures[-1].label}: {failures[-1].error_type}: {failures[-1].reason}",
                      file=sys.stderr)
    try:
        comparison = interleaved_comparison(sessions, results)
    except WorkbenchError as exc:  # the separate runs still stand; say why the turns are missing
        comparison = None
        print(f"warning: speed-ups from separate runs, the interleaved re-timing failed: {exc}", file=sys.stderr)
    retimed = comparison.timings if comparison else None
    if results:
        _print_summary(results, retimed=retimed, comparison=comparison)
    files = {}
    if json_path:
        rows = summary_table(results, retimed=retimed) if results else []
        for row, result in zip(rows, results):
            row["interleaved"] = comparison.to_json(result) if comparison else None
        payload = {
            "model": {"name": sessions[0].model.name,
                      "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype}
                                 for s in sessions[0].model.inputs],
                      "outputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype}
                                  for s in sessions[0].model.outputs],
                      "sha256": sessions[0].model.content_hash},
            "command": command_line,
            "results": [r.to_json() for r in results],
            # per result: speed-up over its FP32 baseline, interval, verdict (from interleaved rounds when re-timed:
            # speedup_timing says which, "interleaved" holds the rounds)
            "summary": rows,
            "headline": headline(results, comparison=comparison),
            # what the headline claims, for tools: configuration, baseline, verdict, speedup, ci, timing (or null)
            "headline_verdict": choice.to_json() if (choice := headline_choice(results, comparison=comparison))
            else None,
            "failures": [f.to_json() for f in failures],  # configurations refused or failed, with the reason
        }
        files[json_path] = _json_bytes(payload)
    if out and results:
        files[out] = build_report(sessions, results, command=command_line, failures=failures,
                                  comparison=comparison).encode("utf-8")
    output.write_group(files)  # the JSON and the HTML of this run, swapped in together
    if json_path:
        print(f"json: {json_path}")
    if out and results:
        print(f"report: {out}")
    measured_reduced = any(r.precision != "fp32" for r in results)
    if failures and (args.strict or not measured_reduced):
        what = "" if measured_reduced else "; nothing but FP32 was measured" if results else "; nothing was measured"
        print(f"error: {len(failures)} configuration(s) not measured{what}: see above.", file=sys.stderr)
        return 1
    return 0


def _task_arg(text: str) -> tuple[str | None, str]:
    """`TASK` (the first output) or `OUTPUT=TASK`, TASK from vocabulary.OUTPUT_TASKS."""
    output, _, task = text.rpartition("=")
    if task not in OUTPUT_TASKS:
        raise argparse.ArgumentTypeError(f"{task!r} is not a task: use one of {', '.join(OUTPUT_TASKS)}, as TASK "
                                         "(the first output) or OUTPUT=TASK")
    return output or None, task


def _tasks(pairs) -> dict | str | None:
    """--task values as Workbench(tasks=...): one task for the first output, or output name -> task."""
    if not pairs:
        return None
    first = [task for output, task in pairs if output is None]
    named = {output: task for output, task in pairs if output is not None}
    if first and named:
        raise WorkbenchError("--task: give either one TASK (the first output) or OUTPUT=TASK pairs, not both.")
    return first[-1] if first else named


def _plan_label(precision: str, options: dict) -> str:
    """The label of the plan `run` was asked for (the plain precision when the options do not make a plan)."""
    try:
        return PrecisionPlan(precision, **{name: value for name, value in options.items()
                                           if name in PLAN_FIELDS and value is not None}).label
    except WorkbenchError:
        return precision


def _data_options(args) -> dict:
    from .models.inputs import parse_override
    from .userdata import ImagePreprocessing

    preprocessing = ImagePreprocessing.parse(args.image_preprocessing) if args.image_preprocessing else None
    return {"inputs": dict(parse_override(text) for text in args.input or []) or None, "data": args.data,
            "tasks": _tasks(getattr(args, "task", None)),
            "calibration_data": args.calibration_data, "eval_data": args.eval_data,
            "image_preprocessing": preprocessing}


def engines_and_batch(model: str | None, backends: list[str] | None, batch: int | None) -> tuple[list[str], int]:
    """The engines and batch of a `report`: as given; else the main job's (no model given: MAIN_JOB_BATCH on every
    installed CPU engine), else the default engine at batch 8."""
    main_job = model is None
    engines = backends or (installed_backends(device="cpu") if main_job else [DEFAULT_BACKEND])
    return engines, batch if batch is not None else (MAIN_JOB_BATCH if main_job else 8)


def _warm(args) -> int:
    from .choices import BATCH_SIZES
    from .warm import warm

    check_outputs({"--json": args.json_path})
    report = warm(args.samples, cache_dir=args.cache_dir, shared_cache=args.shared_cache, backends=args.backend,
                  precisions=args.precision or PRECISIONS, calibrations=args.calibration,
                  methods=args.method or METHODS, qdq_styles=args.qdq_style or QDQ_STYLES,
                  batches=args.batch or BATCH_SIZES, runs=args.runs, threads=args.threads, progress=not args.quiet)
    if args.json_path:
        _write_json(args.json_path, report.to_json())
    return 1 if report.failed else 0


def _sweep(args, command_line: str) -> int:
    from .session import Workbench

    configs = [{**config, "drift": not args.no_drift} for config in grid_configs(args.grid)]
    check_outputs({"--json": args.json_path}, inputs=[args.model])
    if args.ray is not None:
        from .distributed import check_ray_options

        check_ray_options(args.ray or None, args.max_retries)
    wb = Workbench(args.model, cache_dir=args.cache_dir, shared_cache=args.shared_cache, threads=args.threads,
                   progress=not args.quiet)
    executor = "sequential" if args.ray is None else "ray"
    results = wb.sweep(configs, executor=executor, ray_address=args.ray or None, max_retries=args.max_retries)
    if results:
        _print_summary(results)
    for failure in wb.failures:
        print(f"failed: {failure.label}: {failure.error}", file=sys.stderr)
    if args.json_path:
        _write_json(args.json_path, {"model": {"name": wb.model.name, "sha256": wb.model.content_hash},
                                     "command": command_line, "executor": executor,
                                     "results": [r.to_json() for r in results],
                                     "failures": [f.to_json() for f in wb.failures]})
    return 1 if wb.failures else 0


def _app(args) -> int:
    from . import samples
    from .app import serve

    return serve(args.model or samples.DEFAULT_SAMPLE, backend=args.backend, cache_dir=args.cache_dir,
                 shared_cache=args.shared_cache, host=args.host, port=args.port, allow_remote=args.allow_remote,
                 runs=args.runs, threads=args.threads, token=args.token, cull_idle_s=args.cull_idle,
                 cull_interval_s=args.cull_interval)


def _plan(args, command_line: str) -> int:
    from .report import write_plan_report
    from .trtplan import example_plans, load_plan, load_plan_dir, plan_files

    profiles = args.profile or []
    if profiles and len(profiles) != len(args.graph_json):
        raise WorkbenchError(f"Got {len(args.graph_json)} graph files but {len(profiles)} --profile files: "
                             "give one --profile per graph, or none to find them beside the graph files.")
    check_outputs({"--out": args.out, "--json": args.json_path},
                  inputs=[*profiles, *(p for graph in args.graph_json for p in plan_files(graph))])
    plans = []
    for i, source in enumerate(args.graph_json):
        path = Path(source)
        if path.is_dir() or source in example_plans():  # a folder, or a bundled example plan's name
            plans.append(load_plan_dir(path))
        else:
            plans.append(load_plan(path, profiles[i] if profiles else None))
    for plan in plans:
        latency = plan.latency_ms.get("median") if plan.latency_ms else None
        total = sum(layer.latency_ms or 0.0 for layer in plan.engine.layers)
        print(f"{plan.name}: {len(plan.engine.layers)} layers, summed layer time {total:.3f} ms"
              + (f", end-to-end median {latency:.3f} ms" if latency is not None else ""))
    if args.json_path:
        payload = plans[0].to_json() if len(plans) == 1 else {"plans": [p.to_json() for p in plans],
                                                              **plans[0].to_json()}
        _write_json(args.json_path, payload)
    if args.out:
        print(f"report: {write_plan_report(plans, args.out, command=command_line)}")
    return 0


def _json_beside(report: str) -> Path:
    """Where the JSON results go when only the report's path is known (make report's pair for report.html)."""
    path = Path(report)
    return path.with_name("results.json") if path.name == "report.html" else path.with_suffix(".json")


def _tune(args, command_line: str) -> int:
    from .session import Workbench
    from .tune import check_max_drop

    check_max_drop(args.max_drop)
    check_outputs({"--json": args.json_path}, inputs=[args.model])
    if args.bundle:
        from .scenarios.bundle import check_bundle_target

        check_bundle_target(args.bundle)
    wb = Workbench(args.model, backend=args.backend, cache_dir=args.cache_dir, progress=not args.quiet)
    found = wb.tune(args.precision, max_drop=args.max_drop, metric=args.metric, budget=args.budget,
                    methods=tuple(args.method or (None,)), qdq_styles=tuple(args.qdq_style or (None,)),
                    **({"weight_roundings": tuple(args.weight_rounding)} if args.weight_rounding else {}),
                    calibration=args.calibration, batch=args.batch,
                    runs=args.runs)
    unit = "" if args.metric == "cosine" else " points"
    for config in found.configurations:
        mark = "*" if config is found.chosen else ("f" if config.on_frontier else " ")
        speedup = f"{config.speedup_vs_fp32:5.2f}x" if config.speedup_vs_fp32 else "  n/a"
        print(f"{mark} {config.latency_ms:9.3f} ms {speedup}  {args.metric} {config.value:8.4f}  drop "
              f"{config.drop:+.4f}{unit}  {config.kept_text}"
              + (f" ({config.method}, {config.qdq_style})" if config.method else "") + f"  [{config.step}]")
    chosen = found.chosen
    for warning in dict.fromkeys(c.precision_warning for c in found.configurations if c.precision_warning):
        print(f"WARNING: {warning}")
    print(f"search stopped: {found.stopped}; chosen (*): {chosen.label if chosen else 'none'}"
          + (f", {chosen.timing_text} at batch {chosen.batch}" if chosen else "")
          + "; f = on the latency/accuracy frontier")
    finalists = [c for c in found.configurations if c.retimed]
    if finalists:
        print(f"chosen after timing FP32 and the {len(finalists) - 1} fastest plan(s) within budget again, "
              f"interleaved ({len(finalists[0].retimed.round_medians_ms)} rounds of {finalists[0].retimed.runs} runs): "
              + "; ".join(f"{c.kept_text} {c.retimed.median_ms:.3g} ms ({c.retimed.min_round_ms:.3g}-"
                          f"{c.retimed.max_round_ms:.3g}), {c.retimed_speedup_vs_fp32:.2f}x FP32" for c in finalists))
    if args.json_path:
        _write_json(args.json_path, {**found.to_json(), "command": command_line,
                                     "model": {"name": wb.model.name, "sha256": wb.model.content_hash}})
    if args.bundle and chosen is not None:
        from .scenarios.bundle import export_bundle

        print(f"bundle: {export_bundle(wb, found.result_of(chosen), args.bundle)}")
    return 0


def _lint(args, command_line: str) -> int:
    from .lint import lint_plan, lint_result, op_types_of

    from .trtplan import plan_files

    target = Path(args.target)
    check_outputs({"--json": args.json_path}, inputs=[args.target, *plan_files(target)])
    from .trtplan import example_plans

    if target.is_dir() or target.name.endswith(".graph.json") or args.target in example_plans():
        from .trtplan import load_plan, load_plan_dir

        plan = load_plan(target) if target.name.endswith(".graph.json") else load_plan_dir(target)
        name, findings = plan.name, lint_plan(plan)
    else:
        from .session import Workbench

        wb = Workbench(args.target, backend=args.backend, cache_dir=args.cache_dir, progress=not args.quiet)
        result = wb.run(args.precision, qdq_style=args.qdq_style if args.precision == "int8" else None,
                        batch=args.batch)
        name, findings = result.label, lint_result(result, op_types_of(wb.variant_model(result)))
    print(f"{name}: {len(findings)} findings" + (":" if findings else " (nothing to flag)"))
    for finding in findings:
        share = f" ({finding.share:.0%} of layer time)" if finding.share is not None else ""
        print(f"- [{finding.rule}] {finding.title}: {finding.ms:.3f} ms at stake{share}")
        print(f"    layers: {', '.join(l.name for l in finding.layers[:6])}"
              + (f" (+{len(finding.layers) - 6} more)" if len(finding.layers) > 6 else ""))
        print(f"    why: {finding.why}")
        print(f"    fix: {finding.fix}")
    if args.json_path:
        _write_json(args.json_path, {"target": name, "command": command_line,
                                     "findings": [f.to_json() for f in findings]})
    return 0


def _write_json(path: str, payload: dict) -> None:
    atomic_write(path, _json_bytes(payload))
    print(f"json: {path}")


def _json_bytes(payload: dict) -> bytes:
    return json.dumps(strict_json(payload), indent=2, allow_nan=False).encode("utf-8")


def _print_summary(results, *, retimed=None, comparison=None) -> None:
    from .report import headline
    from .results import Speedup
    from .views import summary_table
    from .views.accuracy_text import metric_text

    def pct(value) -> str:
        return "    n/a" if value is None else f"{value * 100:6.2f}%"

    def gain(row) -> str:
        if row["speedup_verdict"] in (None, "baseline"):
            return "n/a" if row["speedup_verdict"] is None else "baseline"
        return Speedup(row["speedup_vs_fp32"], *(row["speedup_ci"] or (None, None)), row["speedup_verdict"]).text()

    def interval(row) -> str:
        ci = row["latency_median_ci_ms"]
        return "n/a" if ci is None else f"{ci[0]:.3f}-{ci[1]:.3f}"

    rows = summary_table(results, retimed=retimed)
    width = max(len("configuration"), *(len(r.label) for r in results))
    gains = [gain(row) for row in rows]
    gain_width = max(len("speed-up vs FP32 (95% CI)"), *(len(g) for g in gains))
    turns = retimed is not None  # a column for the median of the interleaved rounds the speed-ups come from

    def rounds_ms(row) -> str:
        value = row.get("interleaved_median_ms")
        return f" {value:9.3f}" if value is not None else f" {'n/a':>9}" * turns

    header = (f"{'configuration':{width}} {'median ms':>10} {'95% CI ms':>13} {'p90 ms':>8}"
              + f" {'rounds ms':>9}" * turns
              + f" {'speed-up vs FP32 (95% CI)':{gain_width}} {'top1':>7} {'agree':>7}  accuracy (metric used)")
    print(header)
    print("-" * len(header))
    for r, row, text in zip(results, rows, gains):
        flag = "" if r.accelerated else "  (not accelerated here)"
        metric = metric_text(row["headline_metric"], row["headline_value"], row["headline_output"]) \
            if row["headline_metric"] else "n/a"
        print(f"{r.label:{width}} {row['latency_median_ms']:10.3f} {interval(row):>13} {row['latency_p90_ms']:8.3f}"
              f"{rounds_ms(row)} {text:{gain_width}} {pct(row['top1'])} {pct(row['agreement'])}  "
              f"{metric}{flag}")
    if comparison is not None:
        print(f"speed-ups from {comparison.rounds} interleaved rounds of {comparison.runs} runs per configuration")
    print(headline(results, comparison=comparison))
    for r in results:
        if r.precision_warning:
            print(f"WARNING: {r.precision_warning}")
    if any(r.synthetic_data for r in results):
        print("note: measured on synthetic inputs (no data came with the model); accuracy is agreement only.")

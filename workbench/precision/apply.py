"""`apply_plan`: bake a precision plan into the ONNX graph (the TensorRT 10/11 way: no builder precision flags)."""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import onnx
import onnxruntime as ort

from ..calibration import CalibrationSet
from ..errors import CalibrationError, PrecisionError, WorkbenchError
from ..graph import GraphIndex
from ..jobs import CancelToken
from ..models.spec import Model
from ..vocabulary import INTEGER_OPS, QDQ_OPS, WEIGHTED_OPS
from . import int8, pipeline
from .plan import KEEP_FP32_HOW, PrecisionPlan

PLAN_KEY = "workbench.precision_plan"
NOTES_KEY = "workbench.precision_notes"
CPU_LATENCY_KEY = "workbench.cpu_latency_representative"
STEPS_KEY = "workbench.precision_steps"  # the keys of the pipeline steps that ran, e.g. "prepare|ranges/minmax|..."

def apply_plan(model: Model, plan: PrecisionPlan | str, calibration: CalibrationSet | None = None, *,
               progress: bool = True, cache_dir: str | Path | None = None, cancel: CancelToken | None = None) -> Model:
    """Return `model` with `plan` applied as a new ONNX graph (FP32 returns `model` itself).

    FP16 converts weights and activations; INT8 inserts Q/DQ nodes from ranges calibrated on `calibration`
    (required), cached in memory and, with `cache_dir`, on disk; INT8 with method "dynamic" measures ranges at run
    time (no calibration). The steps are those of `precision.pipeline`; `cancel` stops the work between them
    (`errors.Cancelled`). The result keeps the original input/output names and dtypes; its `source` ends with the
    plan label and `precision_notes(result)` says what was done.
    """
    if isinstance(plan, str):
        plan = PrecisionPlan(plan)
    if not isinstance(plan, PrecisionPlan):
        raise PrecisionError(f"apply_plan needs a PrecisionPlan (or 'fp32'/'fp16'/'int8'), got {type(plan).__name__}: "
                             "pass e.g. PrecisionPlan('int8', method='entropy').")
    keep_nodes, keep_ops = _split_keep(model, plan)
    if plan.precision == "fp32":
        return model
    if plan.needs_calibration:
        if calibration is None:
            raise CalibrationError(f"INT8 needs a calibration set to find activation ranges: pass calibration="
                                   f"CalibrationSet.from_arrays(...) (or CalibrationSet.synthetic_for(model.inputs) "
                                   f"to try it without data) to apply_plan for {model.name!r}.")
        calibration.validate(model.inputs)
    ctx = pipeline.Context(model, calibration, keep_nodes, keep_ops, progress=progress, cache_dir=cache_dir,
                           cancel=cancel)
    with _failures_as_precision_errors(model, plan):
        proto = pipeline.run(plan, ctx)
    notes = ctx.notes
    if plan.needs_calibration:
        fell_back = any(note.endswith("used per-tensor weights") for note in notes)
        weights = "per-channel" if plan.per_channel and not fell_back else "per-tensor"
        notes.insert(0, f"INT8 ({weights} weights) from {plan.method} calibration on {calibration.name!r} "
                        f"({calibration.size} samples)")
        if calibration.synthetic:
            notes.append("Calibrated on synthetic random inputs: INT8 ranges and accuracy do not reflect real data.")
    if keep_nodes or keep_ops:
        notes.append(f"Kept in FP32: {', '.join((*keep_nodes, *keep_ops))}")
    representative = plan.precision == "int8" and plan.qdq_style == "onnxruntime"
    _set_metadata(proto, {PLAN_KEY: json.dumps(plan.to_json()), NOTES_KEY: json.dumps(notes),
                          CPU_LATENCY_KEY: json.dumps(representative), STEPS_KEY: "|".join(ctx.ran)})
    result = Model.from_proto(proto, name=model.name, source=f"{model.source} | {plan.label}")
    _check(model, result, plan)
    return result


def precision_notes(model: Model) -> list[str]:
    """What `apply_plan` recorded about a model it produced (empty for an untransformed model)."""
    return json.loads(_props(model).get(NOTES_KEY, "[]"))


def graph_precision(model: Model, precision: str) -> dict[str, float] | None:
    """What the plan really put in reduced precision: fractions of the graph's weighted ops (Conv, ConvTranspose,
    Gemm, MatMul and their integer forms: nearly all the arithmetic; every compute node when there are none) in
    `precision` and in "fp32".

    An op counts as INT8 when it is an integer op or reads its data input (and, for weighted ops, its weights) from
    DequantizeLinear: an op kept in FP32 may still read a dequantised activation, but not dequantised weights. It
    counts as FP16 when it reads a float16 tensor. None for FP32 plans and graphs without compute nodes.
    """
    if precision not in ("fp16", "int8"):
        return None
    index = GraphIndex(model.proto)
    compute = [node for node in index.nodes if node.op_type not in _GLUE_OPS]
    counted = [node for node in compute if node.op_type in _WEIGHTED_OPS | _INTEGER_OPS] or compute
    if not counted:
        return None
    if precision == "int8":
        def reduced(node) -> bool:
            inputs = node.input[:2] if node.op_type in _WEIGHTED_OPS else node.input[:1]
            producers = [index.producer(t) for t in inputs]
            return node.op_type in _INTEGER_OPS or bool(producers) and all(
                p is not None and p.op_type == "DequantizeLinear" for p in producers)
    else:
        fp16 = _float16_tensors(model.proto)

        def reduced(node) -> bool:
            return any(t in fp16 for t in node.input)
    share = sum(map(reduced, counted)) / len(counted)
    return {precision: share, "fp32": 1.0 - share}


_WEIGHTED_OPS = frozenset(WEIGHTED_OPS)
_INTEGER_OPS = frozenset(INTEGER_OPS)
_GLUE_OPS = frozenset({*QDQ_OPS, "Cast", "Constant", "Identity"})


def _float16_tensors(proto: onnx.ModelProto) -> set[str]:
    """Names of float16 tensors: initialisers, typed values (inferred when the graph has none) and Cast outputs."""
    graph = proto.graph
    if not graph.value_info:
        try:
            graph = onnx.shape_inference.infer_shapes(proto).graph
        except Exception:  # noqa: BLE001 - types are best effort: initialisers and casts still say a lot
            pass
    half = onnx.TensorProto.FLOAT16
    names = {init.name for init in graph.initializer if init.data_type == half}
    names |= {v.name for v in [*graph.value_info, *graph.input, *graph.output] if v.type.tensor_type.elem_type == half}
    names |= {node.output[0] for node in graph.node if node.op_type == "Cast" and node.output
              and any(a.name == "to" and a.i == half for a in node.attribute)}
    return names


def cpu_latency_representative(model: Model) -> bool:
    """False when ONNX Runtime CPU latency of this model says little about its precision's real speed (FP16 and
    TensorRT-style INT8 run largely as float on CPU); True for untransformed and ORT-style INT8 models."""
    return json.loads(_props(model).get(CPU_LATENCY_KEY, "true"))


def _props(model: Model) -> dict[str, str]:
    return {prop.key: prop.value for prop in model.proto.metadata_props}


def _split_keep(model: Model, plan: PrecisionPlan) -> tuple[tuple[str, ...], tuple[str, ...]]:
    names = set(model.node_names)
    ops = {node.op_type for node in model.proto.graph.node}
    unknown = [entry for entry in plan.keep_fp32 if entry not in names and entry not in ops]
    if unknown:
        raise PrecisionError(
            f"keep_fp32 entries {unknown} are neither node names nor op types of {model.name!r}. Use names from "
            f"model.node_names or op types present in the graph ({', '.join(sorted(ops))}).")
    return (tuple(e for e in plan.keep_fp32 if e in names), tuple(e for e in plan.keep_fp32 if e not in names))


@contextlib.contextmanager
def _failures_as_precision_errors(model: Model, plan: PrecisionPlan) -> Iterator[None]:
    try:
        yield
    except WorkbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - converter/quantiser failures come as many exception types
        raise PrecisionError(f"Could not apply {plan.label} to {model.name!r} ({type(exc).__name__}: {exc}). Keep the "
                             f"op types or nodes it names in FP32: {KEEP_FP32_HOW}.") from exc


def _set_metadata(proto: onnx.ModelProto, entries: dict[str, str]) -> None:
    onnx.helper.set_model_props(proto, {**{prop.key: prop.value for prop in proto.metadata_props}, **entries})


def _check(original: Model, result: Model, plan: PrecisionPlan) -> None:
    """The result must be valid ONNX, load in ONNX Runtime CPU and take/give the same names and dtypes."""
    try:
        onnx.checker.check_model(result.proto)
        ort.InferenceSession(result.serialized(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnx and onnxruntime raise many exception types
        raise PrecisionError(f"Applying {plan.label} to {original.name!r} produced a graph that does not load "
                             f"({type(exc).__name__}: {exc}). Keep the failing nodes or op types in "
                             f"FP32: {KEEP_FP32_HOW}.") from exc
    io_before = [(s.name, s.dtype) for s in original.inputs + original.outputs]
    io_after = [(s.name, s.dtype) for s in result.inputs + result.outputs]
    if io_before != io_after:
        raise PrecisionError(f"Applying {plan.label} to {original.name!r} changed the graph inputs/outputs from "
                             f"{io_before} to {io_after}; keep the boundary nodes in FP32: {KEEP_FP32_HOW}.")

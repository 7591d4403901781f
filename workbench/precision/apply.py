"""`apply_plan`: bake a precision plan into the ONNX graph (the TensorRT 10/11 way: no builder precision flags)."""
from __future__ import annotations

import json
from pathlib import Path

import onnx
import onnxruntime as ort

from ..calibration import CalibrationSet
from ..errors import CalibrationError, PrecisionError
from ..models.spec import Model
from . import int8
from .fp16 import to_fp16
from .plan import PrecisionPlan

PLAN_KEY = "workbench.precision_plan"
NOTES_KEY = "workbench.precision_notes"

FP16_NOTE = ("FP16 weights and activations, FP32 graph inputs/outputs (Cast at the boundary). ONNX Runtime's CPU "
             "provider lacks FP16 kernels for many ops and computes them in FP32 from the FP16-rounded values, so "
             "the accuracy is honest but CPU FP16 latency is not representative of a GPU engine.")


def apply_plan(model: Model, plan: PrecisionPlan | str, calibration: CalibrationSet | None = None, *,
               progress: bool = True, cache_dir: str | Path | None = None) -> Model:
    """Return `model` with `plan` applied as a new ONNX graph (FP32 returns `model` itself).

    FP16 converts weights and activations; INT8 inserts Q/DQ nodes from ranges calibrated on `calibration`
    (required), cached in memory and, with `cache_dir`, on disk. The result keeps the original input/output names
    and dtypes; its `source` ends with the plan label and `precision_notes(result)` says what was done.
    """
    if isinstance(plan, str):
        plan = PrecisionPlan(plan)
    if not isinstance(plan, PrecisionPlan):
        raise PrecisionError(f"apply_plan needs a PrecisionPlan (or 'fp32'/'fp16'/'int8'), got {type(plan).__name__}: "
                             "pass e.g. PrecisionPlan('int8', method='entropy').")
    keep_nodes, keep_ops = _split_keep(model, plan)
    if plan.precision == "fp32":
        return model
    if plan.precision == "fp16":
        proto, notes = to_fp16(model.proto, keep_nodes=keep_nodes, keep_ops=keep_ops), [FP16_NOTE]
    else:
        if calibration is None:
            raise CalibrationError(f"INT8 needs a calibration set to find activation ranges: pass calibration="
                                   f"CalibrationSet.from_arrays(...) (or CalibrationSet.synthetic_for(model.inputs) "
                                   f"to try it without data) to apply_plan for {model.name!r}.")
        calibration.validate(model.inputs)
        proto, notes = int8.quantize(model, plan, calibration, keep_nodes=keep_nodes, keep_ops=keep_ops,
                                     progress=progress, cache_dir=cache_dir)
        notes.insert(0, f"INT8 ({'per-channel' if plan.per_channel else 'per-tensor'} weights) from {plan.method} calibration on {calibration.name!r} ({calibration.size} samples)")
        if calibration.synthetic:
            notes.append("Calibrated on synthetic random inputs: INT8 ranges and accuracy do not reflect real data.")
    if keep_nodes or keep_ops:
        notes.append(f"Kept in FP32: {', '.join((*keep_nodes, *keep_ops))}")
    _set_metadata(proto, plan, notes)
    result = Model.from_proto(proto, name=model.name, source=f"{model.source} | {plan.label}")
    _check(model, result, plan)
    return result


def precision_notes(model: Model) -> list[str]:
    """What `apply_plan` recorded about a model it produced (empty for an untransformed model)."""
    props = {prop.key: prop.value for prop in model.proto.metadata_props}
    return json.loads(props.get(NOTES_KEY, "[]"))


def _split_keep(model: Model, plan: PrecisionPlan) -> tuple[tuple[str, ...], tuple[str, ...]]:
    names = set(model.node_names)
    ops = {node.op_type for node in model.proto.graph.node}
    unknown = [entry for entry in plan.keep_fp32 if entry not in names and entry not in ops]
    if unknown:
        raise PrecisionError(
            f"keep_fp32 entries {unknown} are neither node names nor op types of {model.name!r}. Use names from "
            f"model.node_names or op types present in the graph ({', '.join(sorted(ops))}).")
    return (tuple(e for e in plan.keep_fp32 if e in names), tuple(e for e in plan.keep_fp32 if e not in names))


def _set_metadata(proto: onnx.ModelProto, plan: PrecisionPlan, notes: list[str]) -> None:
    props = {prop.key: prop.value for prop in proto.metadata_props}
    onnx.helper.set_model_props(proto, {**props, PLAN_KEY: json.dumps(plan.to_json()), NOTES_KEY: json.dumps(notes)})


def _check(original: Model, result: Model, plan: PrecisionPlan) -> None:
    """The result must be valid ONNX, load in ONNX Runtime CPU and take/give the same names and dtypes."""
    try:
        onnx.checker.check_model(result.proto)
        ort.InferenceSession(result.serialized(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnx and onnxruntime raise many exception types
        raise PrecisionError(f"Applying {plan.label} to {original.name!r} produced a graph that does not load "
                             f"({type(exc).__name__}: {exc}). Keep the failing nodes or op types in FP32 via "
                             "keep_fp32.") from exc
    io_before = [(s.name, s.dtype) for s in original.inputs + original.outputs]
    io_after = [(s.name, s.dtype) for s in result.inputs + result.outputs]
    if io_before != io_after:
        raise PrecisionError(f"Applying {plan.label} to {original.name!r} changed the graph inputs/outputs from "
                             f"{io_before} to {io_after}; keep the boundary nodes in FP32 via keep_fp32.")

"""The precision transform as a pipeline of steps, as NNCF composes its post-training algorithms (min-max ranges,
SmoothQuant, bias correction, ...) into one pipeline.

Each step is ONNX -> ONNX and says three things: whether it `applies(model, plan)`, how it `apply(model, plan,
ctx)`s itself, and its part of the cache `key(plan)`. `steps(plan)` lists the built-in steps in order with the
optional algorithms the plan selects (`PrecisionPlan(algorithms=...)`, names from `vocabulary.ALGORITHM_STEPS`) placed
after the built-in step each names in its `after`; `run` folds the model through those that apply. The steps that
rewrite the FP32 graph before calibration (SmoothQuant, cross-layer equalisation) change the calibration cache
key, so ranges are measured on the graph that is quantised.

    FP32 graph -> [fp16] | [dynamic] | prepare -> (algorithms after "prepare") -> ranges -> place -> gptq
               -> tensorrt-adds -> bias-correction
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx
from onnxruntime.quantization.calibrate import TensorsData

from ..calibration import CalibrationSet
from ..jobs import CancelToken, check
from ..models.spec import Model
from . import bias_correction, dynamic, gptq, int8
from .calibrate import activation_ranges, calibration_batches, prepare, range_key
from .fp16 import to_fp16
from ..vocabulary import ALGORITHM_STEPS
from .plan import PrecisionPlan

FP16_NOTE = ("FP16 weights and activations, FP32 graph inputs/outputs (Cast at the boundary). ONNX Runtime's CPU "
             "provider lacks FP16 kernels for many ops and computes them in FP32 from the FP16-rounded values, so "
             "the accuracy is honest but CPU FP16 latency is not representative of a GPU engine.")


@dataclass
class Context:
    """What the steps of one `run` share: the model as given, the calibration set and options, the notes said so
    far, and what earlier steps found (the FP32 graph being quantised, its activation ranges)."""

    source: Model
    calibration: CalibrationSet | None = None
    keep_nodes: tuple[str, ...] = ()
    keep_ops: tuple[str, ...] = ()
    float_nodes: tuple[str, ...] = ()  # nodes a step added that stay float and read their inputs unquantised
    progress: bool = True
    cache_dir: str | Path | None = None
    cancel: CancelToken | None = None  # checked before each step
    notes: list[str] = field(default_factory=list)
    closing_notes: list[str] = field(default_factory=list)  # said after every step's own notes
    reference: onnx.ModelProto | None = None  # the FP32 graph Q/DQ was placed on (GPTQ and bias correction read it)
    ranges: TensorsData | None = None
    ran: list[str] = field(default_factory=list)  # keys of the steps run so far: what the transform did, in short
    rewrites: list[str] = field(default_factory=list)  # keys of the algorithms that changed the FP32 graph so far
    _batches: list[dict[str, np.ndarray]] | None = None

    @property
    def batches(self) -> list[dict[str, np.ndarray]]:
        """The calibration set as model feeds, batched as calibration runs it."""
        if self._batches is None:
            self._batches = calibration_batches(self.calibration, self.source.inputs)
        return self._batches

    @property
    def graph_key(self) -> str:
        """Names the FP32 graph the later steps see: the model's hash, plus the rewrites applied to it."""
        return "|".join([self.source.content_hash, *self.rewrites])


class Step(Protocol):
    """One ONNX -> ONNX step. An optional algorithm (registered in vocabulary.ALGORITHM_STEPS) also names, as `after`, the
    built-in step it follows, and returns a new graph rather than changing the one it is given."""

    name: str

    def applies(self, model: onnx.ModelProto, plan: PrecisionPlan) -> bool: ...

    def apply(self, model: onnx.ModelProto, plan: PrecisionPlan, ctx: Context) -> onnx.ModelProto: ...

    def key(self, plan: PrecisionPlan) -> str: ...


class FP16:
    """FP16 weights and activations (precision.fp16)."""

    name = "fp16"

    def applies(self, model, plan):
        return plan.precision == "fp16"

    def apply(self, model, plan, ctx):
        proto, failing = to_fp16(model, keep_nodes=ctx.keep_nodes, keep_ops=ctx.keep_ops)
        ctx.notes.append(FP16_NOTE)
        if failing:
            ctx.notes.append(f"Kept in FP32 because the FP16 graph does not load with them in FP16 (found from "
                             f"the loader's errors, by bisection): {', '.join(failing)}")
        return proto

    def key(self, plan):
        return "fp16"


class Dynamic:
    """Dynamic INT8 of constant-weight MatMuls (precision.dynamic): ranges measured at run time."""

    name = "dynamic"

    def applies(self, model, plan):
        return plan.precision == "int8" and plan.method == "dynamic"

    def apply(self, model, plan, ctx):
        quantized, notes = dynamic.quantize(model, plan, keep_nodes=ctx.keep_nodes, keep_ops=ctx.keep_ops)
        ctx.notes += notes
        return quantized

    def key(self, plan):
        return f"dynamic/{'per-channel' if plan.per_channel else 'per-tensor'}"


class Prepare:
    """ONNX Runtime's pre-processing (shapes inferred, BatchNormalization folded into Conv), cached per model."""

    name = "prepare"

    def applies(self, model, plan):
        return plan.needs_calibration

    def apply(self, model, plan, ctx):
        prepared, notes = prepare(ctx.source)
        ctx.notes += notes
        return prepared

    def key(self, plan):
        return "prepare"


class Ranges:
    """Activation ranges of every float tensor from the calibration set (precision.calibrate), cached by the graph,
    set, method and batch size; the graph is unchanged."""

    name = "ranges"

    def applies(self, model, plan):
        return plan.needs_calibration

    def apply(self, model, plan, ctx):
        batches = ctx.batches
        key = range_key(ctx.graph_key, ctx.calibration, plan.method, len(next(iter(batches[0].values()))))
        ctx.ranges = activation_ranges(model, key, batches, plan.method, progress=ctx.progress,
                                       cache_dir=ctx.cache_dir, cancel=ctx.cancel)
        return model

    def key(self, plan):
        return f"ranges/{plan.method}"


class Place:
    """Q/DQ nodes from the ranges, in the plan's style (precision.int8): segment by segment on large graphs, the
    nodes ONNX Runtime's quantiser fails on found by bisection and kept in FP32."""

    name = "place"

    def applies(self, model, plan):
        return plan.needs_calibration

    def apply(self, model, plan, ctx):
        quantized, ctx.reference, notes = int8.place(model, plan, ctx.ranges, model_name=ctx.source.name,
                                                     keep_nodes=ctx.keep_nodes + ctx.float_nodes,
                                                     keep_ops=ctx.keep_ops, progress=ctx.progress)
        int8.read_unquantized(quantized.graph, ctx.float_nodes)
        ctx.notes += notes
        ctx.closing_notes.append(int8.STYLE_NOTES[plan.qdq_style])
        return quantized

    def key(self, plan):
        return f"place/{plan.qdq_style}/{'per-channel' if plan.per_channel else 'per-tensor'}"


_hessians: dict[tuple, dict] = {}  # (graph key, calibration hash, batch size) -> gptq.hessians, for this process


class GPTQ:
    """GPTQ's integer Conv weights in place of nearest rounding, same scales (precision.gptq)."""

    name = "gptq"

    def applies(self, model, plan):
        return plan.gptq

    def apply(self, model, plan, ctx):
        batches = ctx.batches
        key = (ctx.graph_key, ctx.calibration.content_hash, len(next(iter(batches[0].values()))))
        if key not in _hessians:
            _hessians[key] = gptq.hessians(ctx.reference, batches, cancel=ctx.cancel)
        rounded = gptq.round_weights(model, ctx.reference, _hessians[key], cancel=ctx.cancel)
        int8._loads(model)
        ctx.notes.append(f"weights of {rounded} Conv node(s) rounded by GPTQ (error-compensating rounding from the "
                         "calibration set's input statistics) instead of to nearest; same scales and kernels")
        return model

    def key(self, plan):
        return "gptq"


class TensorRTAdds:
    """TensorRT-style Q/DQ: each Add reads the output of a Conv/Gemm/MatMul without Q/DQ, for TensorRT to fuse."""

    name = "tensorrt-adds"

    def applies(self, model, plan):
        return plan.needs_calibration and plan.qdq_style == "tensorrt"

    def apply(self, model, plan, ctx):
        int8._unquantize_weighted_add_inputs(model.graph)
        return model

    def key(self, plan):
        return "tensorrt-adds"


class BiasCorrection:
    """Each quantised Conv/Gemm bias shifted by its output's mean error (precision.bias_correction)."""

    name = "bias-correction"

    def applies(self, model, plan):
        return plan.bias_correction

    def apply(self, model, plan, ctx):
        corrected = bias_correction.correct_biases(model, ctx.reference, ctx.batches, cancel=ctx.cancel)
        int8._loads(model)
        ctx.notes.append(
            f"biases of {corrected} Conv/Gemm node(s) corrected for the mean error of their output on the calibration "
            "set (empirical bias correction, layer by layer); same scales and kernels" if corrected else
            "bias correction found no quantised Conv/Gemm with a bias of its own to correct: biases as quantised")
        return model

    def key(self, plan):
        return "bias-correction"


BUILT_IN: tuple[Step, ...] = (FP16(), Dynamic(), Prepare(), Ranges(), Place(), GPTQ(), TensorRTAdds(),
                              BiasCorrection())


def algorithm(name: str) -> Step:
    """The registered optional step `name` (vocabulary.ALGORITHM_STEPS), its module imported now."""
    module, _, attribute = ALGORITHM_STEPS[name].partition(":")
    return getattr(importlib.import_module(f".{module}", __package__), attribute)()


def steps(plan: PrecisionPlan) -> list[Step]:
    """The pipeline for `plan`: the built-in steps with the plan's algorithms each after the step it names."""
    chosen = [algorithm(name) for name in plan.algorithms]
    ordered: list[Step] = []
    for step in BUILT_IN:
        ordered.append(step)
        ordered += [extra for extra in chosen if extra.after == step.name]
    return ordered


def run(plan: PrecisionPlan, ctx: Context) -> onnx.ModelProto:
    """`ctx.source` through every step of `plan`'s pipeline that applies; the result's notes go to `ctx.notes`.

    A selected algorithm with nothing to act on in the graph is skipped with a note saying so. Raises
    `errors.Cancelled` before the next step once `ctx.cancel` is cancelled."""
    model = ctx.source.proto
    for step in steps(plan):
        check(ctx.cancel)
        if step.applies(model, plan):
            model = step.apply(model, plan, ctx)
            ctx.ran.append(step.key(plan))
            if step.name in plan.algorithms:
                ctx.rewrites.append(step.key(plan))
        elif step.name in plan.algorithms:
            ctx.notes.append(f"{step.name}: this graph has nothing it applies to; skipped")
    ctx.notes += ctx.closing_notes
    return model


def fp32_graph(model: Model, plan: PrecisionPlan, calibration: CalibrationSet | None = None) -> onnx.ModelProto:
    """The FP32 graph a calibrated INT8 plan places its Q/DQ nodes on: `model` pre-processed, then rewritten by the
    plan's algorithms that run before calibration (their statistics from `calibration`). What an INT8 result's
    graph compares with, node by node."""
    ctx, graph, ordered = Context(model, calibration, progress=False), model.proto, steps(plan)
    for step in ordered[:[step.name for step in ordered].index("ranges")]:
        if step.name in ("prepare", *plan.algorithms) and step.applies(graph, plan):
            graph = step.apply(graph, plan, ctx)
    return graph


def quantize(model: Model, plan: PrecisionPlan, calibration: CalibrationSet | None = None, *,
             keep_nodes: tuple[str, ...] = (), keep_ops: tuple[str, ...] = (), progress: bool = True,
             cache_dir: str | Path | None = None) -> tuple[onnx.ModelProto, list[str]]:
    """`model` through `plan`'s pipeline: the transformed graph and the notes of its steps."""
    ctx = Context(model, calibration, keep_nodes, keep_ops, progress=progress, cache_dir=cache_dir)
    return run(plan, ctx), ctx.notes

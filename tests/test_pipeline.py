"""The precision transform as a pipeline of steps (workbench.precision.pipeline): which steps a plan runs, in what
order, what they record, and that an algorithm plugs in through the registry alone."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import make_tiny_cnn

from workbench import vocabulary
from workbench.calibration import CalibrationSet
from workbench.errors import Cancelled, PrecisionError
from workbench.jobs import CancelToken
from workbench.models.spec import Model
from workbench.precision import apply_plan, pipeline, precision_notes
from workbench.precision.apply import STEPS_KEY
from workbench.precision.plan import PrecisionPlan


def _calibration() -> CalibrationSet:
    return CalibrationSet.from_arrays("noise", np.random.default_rng(5).standard_normal((16, 1, 8, 8)).astype(
        np.float32), input_name="input")


def _ran(model: Model) -> list[str]:
    return {p.key: p.value for p in model.proto.metadata_props}[STEPS_KEY].split("|")


def _applicable(plan: PrecisionPlan) -> list[str]:
    proto = make_tiny_cnn()
    return [step.name for step in pipeline.steps(plan) if step.applies(proto, plan)]


def test_each_plan_runs_the_steps_it_needs_in_order():
    assert _applicable(PrecisionPlan("fp16")) == ["fp16"]
    assert _applicable(PrecisionPlan("int8", method="dynamic")) == ["dynamic"]
    assert _applicable(PrecisionPlan("int8")) == ["prepare", "ranges", "place"]
    assert _applicable(PrecisionPlan("int8", weight_rounding="gptq")) == ["prepare", "ranges", "place", "gptq"]
    # "gptq+bc" is two steps that apply, and TensorRT-style Add inputs a third
    assert _applicable(PrecisionPlan("int8", qdq_style="tensorrt", weight_rounding="gptq+bc")) == [
        "prepare", "ranges", "place", "gptq", "tensorrt-adds", "bias-correction"]
    assert _applicable(PrecisionPlan("fp32")) == []


def test_the_result_records_the_steps_that_ran_and_their_notes():
    model = Model.from_proto(make_tiny_cnn(), name="tiny-cnn", source="test")
    result = apply_plan(model, PrecisionPlan("int8", weight_rounding="gptq+bc"), _calibration(), progress=False)
    assert _ran(result) == ["prepare", "ranges/minmax", "place/onnxruntime/per-channel", "gptq", "bias-correction"]
    notes = precision_notes(result)
    assert notes[0].startswith("INT8 (per-channel weights) from minmax calibration")
    assert any("rounded by GPTQ" in n for n in notes) and any(n.startswith("biases of") for n in notes)
    assert notes[-1].startswith("Q/DQ style 'onnxruntime'")  # the style is said last, after every step's notes


def test_plans_validate_algorithms_against_the_registry_and_keep_their_json():
    assert vocabulary.ALGORITHMS == tuple(vocabulary.ALGORITHM_STEPS)  # one list: the registry's
    with pytest.raises(PrecisionError, match="Unknown algorithm"):
        PrecisionPlan("int8", algorithms=("no-such-thing",))
    assert "algorithms" not in PrecisionPlan("int8").to_json()  # absent when none: older cache keys stay
    assert PrecisionPlan("fp16", algorithms=("anything",)).algorithms == ()  # like method: int8 only


class _Negate:
    """A toy algorithm: y = -(-x), spelled as two Neg nodes in front of the graph; changes no values."""

    name = "double-negation"
    after = "prepare"

    def applies(self, model, plan):
        return True

    def apply(self, model, plan, ctx):
        rewritten = onnx.ModelProto()
        rewritten.CopyFrom(model)
        first = rewritten.graph.input[0].name
        for node in rewritten.graph.node:
            node.input[:] = ["neg2" if name == first else name for name in node.input]
        nodes = [onnx.helper.make_node("Neg", [first], ["neg1"], name="neg1"),
                 onnx.helper.make_node("Neg", ["neg1"], ["neg2"], name="neg2"), *rewritten.graph.node]
        del rewritten.graph.node[:]
        rewritten.graph.node.extend(nodes)
        ctx.notes.append("negated twice")
        return rewritten

    def key(self, plan):
        return "double-negation"


def test_a_registered_algorithm_runs_where_it_says_and_changes_the_calibration_key(monkeypatch):
    import sys
    monkeypatch.setitem(vocabulary.ALGORITHM_STEPS, "double-negation", f"{__name__}:_Negate")
    monkeypatch.setattr(vocabulary, "ALGORITHMS", tuple(vocabulary.ALGORITHM_STEPS))
    monkeypatch.setattr(sys.modules["workbench.precision.plan"], "ALGORITHMS", tuple(vocabulary.ALGORITHM_STEPS))
    monkeypatch.setattr(pipeline, "algorithm", lambda name: _Negate())
    plan = PrecisionPlan("int8", algorithms=["double-negation"])
    assert plan.to_json()["algorithms"] == ["double-negation"] and "double-negation" in plan.label
    assert [s.name for s in pipeline.steps(plan)][:4] == ["fp16", "dynamic", "prepare", "double-negation"]
    model = Model.from_proto(make_tiny_cnn(), name="tiny-cnn", source="test")
    ctx = pipeline.Context(model, _calibration(), progress=False)
    quantized = pipeline.run(plan, ctx)
    assert ctx.rewrites == ["double-negation"] and ctx.graph_key == f"{model.content_hash}|double-negation"
    assert "negated twice" in ctx.notes and {"neg1", "neg2"} <= {n.name for n in quantized.graph.node}
    assert json.loads(json.dumps(plan.to_json())) == plan.to_json()


def test_a_cancelled_token_stops_the_pipeline_before_its_next_step(monkeypatch):
    token, placed = CancelToken(), []
    real_ranges = pipeline.Ranges.apply

    def ranges_then_cancel(self, model, plan, ctx):
        token.cancel()  # e.g. a newer selection arrives while calibration runs
        return real_ranges(self, model, plan, ctx)

    monkeypatch.setattr(pipeline.Ranges, "apply", ranges_then_cancel)
    monkeypatch.setattr(pipeline.Place, "apply", lambda *args: placed.append(args))
    model = Model.from_proto(make_tiny_cnn(), name="tiny-cnn", source="test")
    with pytest.raises(Cancelled):
        apply_plan(model, PrecisionPlan("int8"), _calibration(), progress=False, cancel=token)
    assert placed == []


def test_algorithms_ride_through_run_the_result_json_and_the_command_line(tmp_path):
    from conftest import make_labelled_sample

    from workbench.cli import _parser
    from workbench.results import RunResult
    from workbench.schema import check_run_json
    from workbench.session import Workbench

    session = Workbench(make_labelled_sample(), progress=False, cache_dir=tmp_path)
    options = {"batch": 8, "runs": 3, "drift": False, "profile": False}
    plain, equalised = session.run("int8", **options), session.run("int8", algorithms=("cle",), **options)
    assert equalised.plan == PrecisionPlan("int8", algorithms=("cle",)) and plain.cache_key != equalised.cache_key
    assert "cle" in equalised.label and "cle" not in plain.label
    data = json.loads(json.dumps(equalised.to_json()))
    check_run_json(data)
    assert data["algorithms"] == ["cle"] and RunResult.from_json(data).plan == equalised.plan
    # (the tiny CNN's only Conv -> ReLU -> Conv also feeds a residual Add: no pair to equalise, and it says so)
    assert "cle: this graph has nothing it applies to; skipped" in equalised.precision_notes
    args = _parser().parse_args(["report", "--algorithms", "smoothquant"])
    assert PrecisionPlan("int8", algorithms=args.algorithms).algorithms == ("smoothquant",)


def test_the_fp32_graph_of_a_plan_is_the_one_its_qdq_were_placed_on():
    from workbench.precision.calibrate import prepare

    model = Model.from_proto(make_tiny_cnn(), name="tiny-cnn", source="test")
    assert pipeline.fp32_graph(model, PrecisionPlan("int8")) is prepare(model)[0]
    assert pipeline.fp32_graph(model, PrecisionPlan("fp16")) is model.proto
    smoothed = pipeline.fp32_graph(model, PrecisionPlan("int8", algorithms=("smoothquant",)), _calibration())
    assert [n.op_type for n in smoothed.graph.node if n.name.endswith("_SmoothQuant")] == ["Mul"]  # before the Gemm

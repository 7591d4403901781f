"""GPTQ weight rounding (workbench.precision.gptq) and its plumbing through run, results and tune."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_labelled_sample
from onnx import numpy_helper

from workbench import Workbench
from workbench.errors import PrecisionError
from workbench.precision.gptq import _gptq
from workbench.precision.plan import PrecisionPlan
from workbench.results import RunResult

FAST = {"runs": 3, "batch": 8}


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return Workbench(make_labelled_sample(), progress=False, cache_dir=tmp_path_factory.mktemp("gptq-cache"))


def _output_error(values, scale, rows, inputs):
    return float(np.sum(((values * scale[:, None] - rows) @ inputs.T) ** 2))


@pytest.mark.parametrize("depthwise", [False, True])
def test_gptq_rounding_has_less_output_error_than_nearest(depthwise):
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((16, 27))
    mixing = rng.standard_normal((27, 27))  # correlated inputs, as image patches are
    inputs = rng.standard_normal((2000, 27)) @ mixing
    scale = np.abs(rows).max(axis=1) / 127 * 8  # coarse steps, so rounding matters
    hessian = (inputs.T @ inputs)[None]
    if depthwise:  # one Hessian per row
        hessian = np.repeat(hessian, len(rows), axis=0)
    values = _gptq(rows, scale, hessian, -128, 127)
    nearest = np.clip(np.round(rows / scale[:, None]), -128, 127)
    assert np.array_equal(values, np.round(values)) and values.min() >= -128 and values.max() <= 127
    assert _output_error(values, scale, rows, inputs) < 0.7 * _output_error(nearest, scale, rows, inputs)


def _weights(session, result):
    proto = session.variant_model(result).proto
    return {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}


def test_gptq_changes_the_integer_weights_only(session):
    nearest = session.run("int8", **FAST)
    rounded = session.run("int8", weight_rounding="gptq", **FAST)
    assert nearest.weight_rounding == "nearest" and rounded.weight_rounding == "gptq"
    assert "gptq weights" in rounded.label and "gptq" not in nearest.label
    assert any("rounded by GPTQ" in note for note in rounded.precision_notes)
    before, after = _weights(session, nearest), _weights(session, rounded)
    assert before.keys() == after.keys()
    changed = [name for name in before if before[name].dtype == np.int8 and not np.array_equal(before[name], after[name])]
    assert changed  # some int8 weights differ ...
    assert all(np.abs(before[n].astype(int) - after[n].astype(int)).max() <= 8 for n in changed)  # ... by a few steps
    floats = [name for name in before if before[name].dtype == np.float32 and "scale" in name]
    assert floats and all(np.array_equal(before[n], after[n]) for n in floats)  # same scales
    again = RunResult.from_json(json.loads(json.dumps(rounded.to_json())))
    assert again.weight_rounding == "gptq" and again.label == rounded.label


def test_nearest_rounding_keeps_the_plan_json_and_bad_rounding_is_a_typed_error():
    assert "weight_rounding" not in PrecisionPlan("int8").to_json()  # cache keys from before GPTQ stay valid
    assert PrecisionPlan("int8", weight_rounding="gptq").to_json()["weight_rounding"] == "gptq"
    assert PrecisionPlan("fp16", weight_rounding="gptq").weight_rounding is None
    with pytest.raises(PrecisionError, match="weight rounding"):
        PrecisionPlan("int8", weight_rounding="stochastic")


def test_tune_tries_gptq_only_when_no_nearest_start_is_within_budget(session):
    strict = session.tune(max_drop=0.0, metric="cosine", budget=2, **FAST)  # nothing quantised is exact
    starts = [c for c in strict.configurations if c.step == "quantise all"]
    assert [c.weight_rounding for c in starts] == ["nearest", "gptq"]
    assert json.loads(json.dumps(strict.to_json()))["configurations"][2]["weight_rounding"] == "gptq"
    generous = session.tune(max_drop=100.0, metric="agreement", budget=3, **FAST)
    assert [c.weight_rounding for c in generous.configurations if c.step == "quantise all"] == ["nearest"]

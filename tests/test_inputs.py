"""Input plans for models exported by anyone: dynamic dims written every which way, rank-0 inputs, integer and
boolean inputs, per-input batch axes, default sizes that the model runs with, and user overrides."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from workbench.errors import InputSpecError
from workbench.models.inputs import batch_axes, parse_override, plan_inputs
from workbench.models.onnx_source import finalize
from workbench.models.spec import TensorSpec
from workbench.session import Workbench


def _model(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def test_dims_written_as_minus_one_zero_empty_or_strings_are_dynamic():
    value_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, 0, "?"])
    value_info.type.tensor_type.shape.dim.add()  # a dim with neither value nor name
    spec = TensorSpec.from_value_info(value_info)
    assert spec.shape == (None, 3, None, "?", None)


def test_rank0_input_has_no_batch_axis_and_a_recurrent_state_is_not_batched():
    specs = [TensorSpec("input", "float32", ("batch", 512)), TensorSpec("state", "float32", (2, "batch", 128)),
             TensorSpec("h", "float32", (1, 1, 128)), TensorSpec("sr", "int64", ())]
    assert batch_axes(specs) == {"input": 0, "state": 1, "h": None, "sr": None}
    # unnamed dynamic dims count as the batch too (spox exports: input [None, None], state [2, None, 128])
    unnamed = [TensorSpec("input", "float32", (None, None)), TensorSpec("state", "float32", (2, None, 128))]
    assert batch_axes(unnamed) == {"input": 0, "state": 1}
    # every input fixes axis 0: it is the batch where it matches the first input's
    fixed = [TensorSpec("input", "float32", (1, 576)), TensorSpec("state", "float32", (2, 1, 128))]
    assert batch_axes(fixed) == {"input": 0, "state": None}


def _id_model() -> onnx.ModelProto:
    """ids [batch, seq] int64 -> Gather(table 50x4); mask bool; sr scalar compared with 16000; lengths int32."""
    table = numpy_helper.from_array(np.arange(200, dtype=np.float32).reshape(50, 4), "table")
    rate = numpy_helper.from_array(np.array(16000, dtype=np.int64), "rate")
    nodes = [
        helper.make_node("Cast", ["ids"], ["ids32"], to=TensorProto.INT32),
        helper.make_node("Gather", ["table", "ids32"], ["emb"], axis=0),
        helper.make_node("Cast", ["mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axes"], ["mask3"]),
        helper.make_node("Mul", ["emb", "mask3"], ["masked"]),
        helper.make_node("Equal", ["sr", "rate"], ["is16k"]),
        helper.make_node("Cast", ["is16k"], ["scale"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["masked", "scale"], ["out"]),
        helper.make_node("Cast", ["lengths"], ["lenf"], to=TensorProto.FLOAT),
    ]
    axes = numpy_helper.from_array(np.array([2], dtype=np.int64), "axes")
    return _model(nodes, [
        helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", "seq"]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        helper.make_tensor_value_info("lengths", TensorProto.INT32, ["batch"]),
    ], [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "seq", 4]),
        helper.make_tensor_value_info("lenf", TensorProto.FLOAT, ["batch"])], [table, rate, axes])


def test_integer_inputs_get_ids_within_the_gather_table_masks_of_ones_and_the_compared_scalar():
    model = finalize(_id_model(), name="ids", source="test")
    plans = {p.name: p for p in plan_inputs(model.inputs, model.proto, probe=True)}
    assert (plans["ids"].values, plans["ids"].low, plans["ids"].high) == ("integers", 0, 50)
    assert plans["mask"].values == "ones"
    assert (plans["sr"].values, plans["sr"].value, plans["sr"].batch_axis) == ("constant", 16000, None)
    seq = plans["ids"].sample_shape[0]
    assert plans["lengths"].values == "constant" and plans["lengths"].value == seq  # fits the sequence fed
    assert any("Gather" in c for c in plans["ids"].choices)
    data = plans["ids"].synthetic(64, np.random.default_rng(0))
    assert data.min() >= 0 and data.max() < 50 and data.max() > 2


def test_a_session_runs_the_id_model_out_of_the_box_and_states_its_choices(tmp_path):
    wb = Workbench(_id_model(), cache_dir=tmp_path, progress=False, eval_limit=4)
    result = wb.run("fp32", batch=2, runs=1, drift=False, profile=False)
    assert any("fixed value 16000" in note for note in result.notes)
    assert any("ids in [0, 50)" in note for note in result.notes)
    assert wb.eval.arrays["sr"].shape == (4,)  # one value per sample, fed as a scalar


def _dynamic_image_model() -> onnx.ModelProto:
    """A stride-32 'detector': fails unless height and width are multiples of 32 (Reshape to /32 tiles)."""
    weight = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["images", "w"], ["c"]),
             helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[32, 32], strides=[32, 32]),
             helper.make_node("Mul", ["p", "p"], ["out"])]
    return _model(nodes, [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
                  [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 2, "h", "w"])], [weight])


def test_dynamic_height_and_width_get_a_default_image_size_and_overrides_win(tmp_path):
    model = finalize(_dynamic_image_model(), name="det", source="test")
    plan = plan_inputs(model.inputs, model.proto, probe=True)[0]
    assert plan.sample_shape == (3, 224, 224) and plan.batch_axis == 0
    assert "image height/width" in plan.choices[0] and "--input images=1,3,224,224" in plan.choices[0]
    wb = Workbench(_dynamic_image_model(), cache_dir=tmp_path, progress=False, eval_limit=2,
                   inputs={"images": (1, 3, 64, 96)})
    assert wb.eval.arrays["images"].shape == (2, 3, 64, 96)
    result = wb.run("fp32", batch=1, runs=1, drift=False, profile=False)
    assert result.accuracy.outputs[0].shape == [2, 2, 2, 3]


def test_the_default_size_is_probed_until_the_model_runs():
    """Height must be exactly 48 (a Reshape to a fixed size): 224, 320, ... fail, 48 runs."""
    shape = numpy_helper.from_array(np.array([1, 3 * 48], np.int64), "shape")
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[3], keepdims=0),
             helper.make_node("Reshape", ["m", "shape"], ["out"])]
    proto = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "?", "?"])],
                   [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 144])], [shape], opset=13)
    model = finalize(proto, name="rec", source="test")
    plan = plan_inputs(model.inputs, model.proto, probe=True)[0]
    assert plan.sample_shape == (3, 48, 48)


def test_overrides_are_checked_against_the_model():
    specs = [TensorSpec("images", "float32", ("batch", 3, "h", "w")), TensorSpec("sr", "int64", ())]
    with pytest.raises(InputSpecError, match="fixes at 3"):
        plan_inputs(specs, overrides={"images": (1, 4, 64, 64)})
    with pytest.raises(InputSpecError, match="rank 4"):
        plan_inputs(specs, overrides={"images": (1, 3, 64)})
    with pytest.raises(InputSpecError, match="name no input"):
        plan_inputs(specs, overrides={"image": (1, 3, 64, 64)})
    with pytest.raises(InputSpecError, match="scalar"):
        plan_inputs(specs, overrides={"sr": (1, 2)})
    plans = plan_inputs(specs, overrides={"images": (1, 3, 64, 32), "sr": 8000})
    assert plans[0].sample_shape == (3, 64, 32) and plans[1].value == 8000


def test_parse_override():
    assert parse_override("images=1,3,640,640") == ("images", (1, 3, 640, 640))
    assert parse_override("images=1x3x640x640") == ("images", (1, 3, 640, 640))
    assert parse_override("sr=16000") == ("sr", 16000)
    assert parse_override("temperature=0.5") == ("temperature", 0.5)
    for bad in ("images", "images=", "=3", "x=a,b"):
        with pytest.raises(InputSpecError, match="--input"):
            parse_override(bad)

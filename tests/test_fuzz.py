"""Fuzz and fault suite (Hypothesis): generated ONNX graphs, calibration arrays, plan JSON and policy files.

The invariant is the same everywhere: a result or one clear typed error (a WorkbenchError with a message), the
previous outputs intact, nothing unrelated written. Example counts are bounded for CI (about two minutes on two
cores); WORKBENCH_FUZZ_SCALE=10 runs ten times as many. Hypothesis' example database is off, so nothing is written
to the repository, and runs are derandomised, so CI is reproducible.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from conftest import make_tiny_cnn  # noqa: E402
from workbench.calibration import CalibrationSet  # noqa: E402
from workbench.cli import main  # noqa: E402
from workbench.errors import WorkbenchError  # noqa: E402
from workbench.models import load_model  # noqa: E402
from workbench.models.spec import TensorSpec  # noqa: E402
from workbench.scenarios.policy import PolicyTable  # noqa: E402
from workbench.trtplan import load_plan  # noqa: E402
from workbench.trtplan.parse import (parse_build_metadata, parse_device_metadata, parse_profile,  # noqa: E402
                                     parse_profile_metadata)
from workbench.trtplan.report import compare_plans, plan_summary  # noqa: E402

SCALE = float(os.environ.get("WORKBENCH_FUZZ_SCALE", "1"))
# examples per test; docs/reference.md's "Reliability" section lists the totals
COUNTS = {"onnx_bytes": 400, "onnx_graphs": 60, "calibration": 600, "synthetic_specs": 300, "plan_json": 700,
          "plan_structured": 600, "plan_cli": 150, "policy_text": 500, "policy_structured": 500}


def fuzz(name: str):
    return settings(max_examples=max(1, int(COUNTS[name] * SCALE)), deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


@contextlib.contextmanager
def one_clear_error_or_result():
    """Passes on success or a WorkbenchError with a message; anything else (a traceback) fails the example."""
    try:
        yield
    except WorkbenchError as exc:
        assert str(exc).strip(), f"{type(exc).__name__} without a message"


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=12) | \
    st.sampled_from(["<b>", "a\\", 'q"', "x:y", "{}", "  ", "\n", "Conv_1", "input"])
JSON_SCALARS = st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=True) | NAMES
PLAN_KEYS = ["Layers", "Bindings", "I/O Tensors", "Name", "Inputs", "Outputs", "Metadata", "LayerType", "Dimensions",
             "Format/Datatype", "DataType", "Format", "TacticName", "Origin", "count", "name", "averageMs",
             "medianMs", "timeMs", "percentage", "performance_summary", "Latency", "Throughput", "inference_options",
             "device_information", "Selected Device", "build_options", "Precision", "model_options", "Model"]
JSON = st.recursive(JSON_SCALARS, lambda children: st.lists(children, max_size=4) | st.dictionaries(
    st.sampled_from(PLAN_KEYS) | NAMES, children, max_size=4), max_leaves=20)


# ---- ONNX graphs --------------------------------------------------------------------------------------------------

_VALID = make_tiny_cnn().SerializeToString()


@fuzz("onnx_bytes")
@given(st.data())
def test_mutated_onnx_bytes_load_or_fail_clearly(data):
    raw = bytearray(_VALID)
    for _ in range(data.draw(st.integers(1, 8))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if kind == "flip" and raw:
            raw[at] ^= data.draw(st.integers(1, 255))
        elif kind == "cut":
            del raw[at:at + data.draw(st.integers(1, 64))]
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    with one_clear_error_or_result():
        model = load_model(bytes(raw))
        assert model.inputs is not None


_UNARY = ["Relu", "Sigmoid", "Tanh", "Abs", "Neg", "Exp", "Sqrt", "Identity", "Softmax"]
_BINARY = ["Add", "Mul", "Sub", "Div", "Max"]


@st.composite
def onnx_graphs(draw):
    width = draw(st.sampled_from([1, 3, 4, 0, "features"]))
    batch = draw(st.sampled_from(["batch", 1, 2]))
    shape = [batch, width]
    tensors, nodes, inits = ["x"], [], []
    for i in range(draw(st.integers(1, 6))):
        name = draw(NAMES) + f"#{i}"
        out = draw(NAMES) + f":{i}"
        if draw(st.booleans()):
            op = draw(st.sampled_from(_UNARY))
            nodes.append(helper.make_node(op, [draw(st.sampled_from(tensors))], [out], name=name))
        else:
            op = draw(st.sampled_from(_BINARY))
            a = draw(st.sampled_from(tensors))
            if draw(st.booleans()) and isinstance(width, int):
                value = draw(st.sampled_from([0.0, 1.0, -2.5, 1e30, float("nan")]))
                inits.append(numpy_helper.from_array(np.full([width], value, np.float32), f"w{i}"))
                b = f"w{i}"
            else:
                b = draw(st.sampled_from(tensors))
            nodes.append(helper.make_node(op, [a, b], [out], name=name))
        tensors.append(out)
    graph = helper.make_graph(nodes, "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(tensors[-1], TensorProto.FLOAT, shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@fuzz("onnx_graphs")
@given(onnx_graphs(), st.sampled_from(["fp32", "fp16", "int8"]), st.sampled_from([1, 3, 8]))
def test_generated_graphs_give_a_report_or_one_error(proto, precision, batch):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = folder / "model.onnx"
        model.write_bytes(proto.SerializeToString())
        previous = folder / "results.json"
        previous.write_text('{"previous": true}')
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(["report", str(model), "--precision", precision, "--runs", "1", "--batch", str(batch),
                         "--calibration-size", "8", "--no-drift", "--quiet", "--cache-dir", str(folder / "cache"),
                         "--json", str(previous)])
        assert code in (0, 2), stderr.getvalue()
        event(f"exit {code}" + (f": {stderr.getvalue().split(':')[1][:40]}" if code else ""))
        if code == 2:
            assert stderr.getvalue().count("error:") == 1
            assert previous.read_text() == '{"previous": true}'
        else:
            json.loads(previous.read_text())
        assert {p.name for p in folder.iterdir()} <= {"model.onnx", "results.json", "cache"}
        assert model.read_bytes() == proto.SerializeToString()


# ---- calibration arrays -------------------------------------------------------------------------------------------

_SPECS = [TensorSpec("input", "float32", ("batch", 1, 8, 8)), TensorSpec("x", "float32", ("batch", 4))]
ARRAYS = hnp.arrays(dtype=st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.uint8, np.bool_]),
                    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=8))


@fuzz("calibration")
@given(st.one_of(
    st.dictionaries(st.sampled_from(["input", "x", "other", ""]), ARRAYS, max_size=2),
    ARRAYS, st.lists(st.floats(allow_nan=True), max_size=5), st.lists(st.lists(st.integers(), max_size=3), max_size=3),
    st.dictionaries(st.sampled_from(["input", "x"]), st.lists(st.lists(st.floats(), max_size=2), max_size=3))),
    st.sampled_from([None, "input", "x"]), st.sampled_from([None, 1, 4]), st.sampled_from(_SPECS))
def test_calibration_arrays_are_accepted_or_refused_clearly(arrays, input_name, limit, spec):
    with one_clear_error_or_result():
        calibration = CalibrationSet.from_arrays("fuzz", arrays, input_name=input_name, limit=limit)
        calibration.validate([spec])
        assert calibration.size >= 1 and len(calibration.content_hash) == 64
        assert all(np.isfinite(a).all() for a in calibration.arrays.values() if a.dtype.kind == "f")


@fuzz("synthetic_specs")
@given(st.lists(st.sampled_from([0, 1, 3, 8, 10**11, "batch", "seq", None]), max_size=4),  # 10**11: refused
       st.sampled_from(["float32", "int64", "bool", "float16"]), st.integers(1, 64))
def test_synthetic_data_for_any_declared_shape(dims, dtype, size):
    with one_clear_error_or_result():
        calibration = CalibrationSet.synthetic_for([TensorSpec("x", dtype, tuple(dims))], size=size)
        assert calibration.size == (size if dims else 1) or calibration.size >= 1


# ---- TensorRT plan JSON -------------------------------------------------------------------------------------------


@fuzz("plan_json")
@given(JSON, st.sampled_from(["graph", "profile", "profile_metadata", "build_metadata", "device_metadata"]),
       st.booleans())
def test_arbitrary_json_as_plan_files(data, kind, as_text):
    source = json.dumps(data) if as_text and isinstance(data, (dict, list)) else data
    reader = {"graph": load_plan, "profile": parse_profile, "profile_metadata": parse_profile_metadata,
              "build_metadata": parse_build_metadata, "device_metadata": parse_device_metadata}[kind]
    with one_clear_error_or_result():
        reader(source)


@st.composite
def plan_files(draw):
    """A valid graph + profile; half of them get one part replaced by an arbitrary value."""
    layers, profile = [], [{"count": draw(st.integers(0, 100))}]
    for i in range(draw(st.integers(0, 6))):
        name = draw(st.sampled_from([f"Conv_{i} + Relu_{i}", f"QuantizeLinear_{i}", f"PWN(Add_{i})",
                                     f"Reformatting CopyNode for Input Tensor 0 to Conv_{i}", f"{{ForeignNode[a...b]}}"]))
        layers.append({"Name": name, "LayerType": "CaskConvolution",
                       "Inputs": [{"Name": f"t{i}", "Dimensions": [1, 8], "Format/Datatype": draw(
                           st.sampled_from(["Row major linear FP32", "Half", "Int8", "Float"]))}],
                       "Outputs": [{"Name": f"t{i + 1}", "Dimensions": [1, 8]}],
                       "Metadata": f"[ONNX Layer: Conv_{i}]"})
        profile.append({"name": name, "averageMs": draw(st.floats(0, 10)), "medianMs": draw(st.floats(0, 10))})
    graph = {"Layers": layers, "Bindings": ["t0"]}
    where = draw(st.sampled_from(["none", "none", "none", "layer field", "layer", "profile field", "graph key"]))
    if where == "layer field" and layers:
        layer = draw(st.sampled_from(layers))
        layer[draw(st.sampled_from(sorted(layer)))] = draw(JSON)
    elif where == "layer" and layers:
        layers[draw(st.integers(0, len(layers) - 1))] = draw(JSON)
    elif where == "profile field":
        entry = draw(st.sampled_from(profile))
        entry[draw(st.sampled_from(sorted(entry) + ["averageMs"]))] = draw(JSON)
    elif where == "graph key":
        graph[draw(st.sampled_from(["Layers", "Bindings", "I/O Tensors"]))] = draw(JSON)
    return graph, profile


@fuzz("plan_structured")
@given(plan_files())
def test_nearly_valid_plans_load_and_compare_or_fail_clearly(files):
    graph, profile = files
    with one_clear_error_or_result():
        plan = load_plan(graph, profile)
        summary = plan_summary(plan)
        assert summary["total_layer_ms"] is None or (math.isfinite(summary["total_layer_ms"])
                                                     and summary["total_layer_ms"] >= 0)
        comparison = compare_plans({"a": plan, "b": plan})
        json.dumps(comparison.to_json(), allow_nan=False)
        json.dumps(plan.to_json(), allow_nan=False)


@fuzz("plan_cli")
@given(plan_files())
def test_plan_cli_keeps_previous_output_on_failure(files):
    graph, profile = files
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "e.graph.json").write_text(json.dumps(graph))
        (folder / "e.profile.json").write_text(json.dumps(profile))
        out = folder / "plan.json"
        out.write_text("previous")
        before = _listing(folder)
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(["plan", str(folder / "e.graph.json"), "--json", str(out)])
        assert code in (0, 2), stderr.getvalue()
        event(f"exit {code}")
        after = _listing(folder)
        assert set(after) == set(before)  # nothing unrelated written
        assert {k: v for k, v in after.items() if k != "plan.json"} == \
            {k: v for k, v in before.items() if k != "plan.json"}
        if code == 2:
            assert out.read_text() == "previous" and stderr.getvalue().count("error:") == 1
        else:
            json.loads(out.read_text())


# ---- policy files -------------------------------------------------------------------------------------------------


@fuzz("policy_text")
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode), st.sampled_from([".yaml", ".yml", ".json"]))
def test_arbitrary_policy_files(content, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"policy{suffix}"
        path.write_bytes(content)
        with one_clear_error_or_result():
            PolicyTable.load(path)
        assert path.read_bytes() == content and _listing(Path(tmp)) == {path.name: content}


REGION = st.fixed_dictionaries(
    {"region": NAMES | JSON_SCALARS,
     "allowed_precisions": st.lists(st.sampled_from(["fp32", "FP16", "int8", "int4", ""]), max_size=3) | JSON_SCALARS,
     "max_accuracy_drop": st.floats(allow_nan=True) | st.integers(-5, 200) | JSON_SCALARS},
    optional={"calibration_set": NAMES | JSON_SCALARS, "extra": JSON_SCALARS})


@fuzz("policy_structured")
@given(st.fixed_dictionaries({"regions": st.lists(REGION, max_size=4) | JSON}), st.sampled_from([".yaml", ".json"]))
def test_nearly_valid_policies_round_trip_or_fail_clearly(data, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / f"policy{suffix}"
        try:
            text = json.dumps(data) if suffix == ".json" else yaml.safe_dump(data)
        except ValueError:  # NaN has no strict-JSON spelling; json.dumps writes NaN, which json.loads reads back
            return
        path.write_text(text, encoding="utf-8")
        saved = folder / "out" / f"saved{suffix}"
        with one_clear_error_or_result():
            table = PolicyTable.load(path)
            assert PolicyTable.load(table.save(saved)).to_json() == table.to_json()
        assert {p.name for p in folder.iterdir()} <= {path.name, "out"}

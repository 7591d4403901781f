"""Deployment scenarios: region policies, cost model, Triton bundle, calibration mismatch."""
from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from google.protobuf import descriptor_pb2, message_factory, text_format
from onnx import TensorProto, helper

from workbench.errors import PolicyError, WorkbenchError
from workbench.models.spec import Model
from workbench.precision.plan import PrecisionPlan
from workbench.results import AccuracyStats, LatencyStats, RunResult
from workbench.scenarios import (BundleError, CostInputError, PolicyTable, RegionPolicy, calibration_mismatch, choose,
                                 cost_table, default_policies, engine_hours_per_day, export_bundle, monthly_cost,
                                 verify_bundle)
from workbench.views.scenario_figures import cost_figure, mismatch_figure, policy_matrix_figure


def make_result(precision: str, median: float, *, top1: float | None = None, agreement: float | None = None,
                backend: str = "onnxruntime", calibration: str | None = None, batches=(8,),
                model: str = "m") -> RunResult:
    latency = [LatencyStats(batch=b, median=median * b / batches[0], p90=median * 1.1, min=median * 0.9,
                            mean=median, runs=10, throughput=1000 * b / median) for b in batches]
    accuracy = AccuracyStats(top1=top1, top1_agreement=1.0 if agreement is None else agreement, cosine=1.0,
                             max_abs_diff=0.0, samples=100)
    return RunResult(model=model, plan=PrecisionPlan(precision), calibration=calibration,
                     calibration_hash="abc123" if calibration else None, backend=backend, versions={"onnx": "1"},
                     synthetic_data=False, latency=latency, accuracy=accuracy, cache_key=f"{precision}-{median}")


@pytest.fixture
def results() -> list[RunResult]:
    """FP32 90.0 % at 10 ms, FP16 89.3 % (drop 0.7) at 6 ms, INT8 88.5 % (drop 1.5) at 3 ms."""
    return [make_result("fp32", 10.0, top1=0.900), make_result("fp16", 6.0, top1=0.893),
            make_result("int8", 3.0, top1=0.885, calibration="studio")]


# ---- policies ---------------------------------------------------------------------------------------------------


def test_default_policies_encode_the_regional_rules():
    table = default_policies()
    assert table.regions == ["North America", "EU", "South-East Asia"]
    assert table["North America"].allows("int8") and table["North America"].max_accuracy_drop == 2.0
    assert not table["EU"].allows("int8") and table["EU"].allows("fp16") and table["EU"].max_accuracy_drop == 0.5
    assert table["South-East Asia"].allows("int8") and table["South-East Asia"].max_accuracy_drop == 3.0


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_policy_table_round_trips(tmp_path, suffix):
    table = PolicyTable([RegionPolicy("LATAM", ("fp32", "int8"), 1.25, calibration_set="street"),
                         RegionPolicy("EU", ("fp32", "fp16"), 0.5)])
    loaded = PolicyTable.load(table.save(tmp_path / f"policies{suffix}"))
    assert loaded.policies == table.policies


@pytest.mark.parametrize("entry, field", [
    ({"region": "EU", "allowed_precisions": ["fp16", "int4"], "max_accuracy_drop": 0.5}, "allowed_precisions"),
    ({"region": "EU", "allowed_precisions": "fp16", "max_accuracy_drop": 0.5}, "allowed_precisions"),
    ({"region": "EU", "allowed_precisions": ["fp16"], "max_accuracy_drop": "half a point"}, "max_accuracy_drop"),
    ({"region": "EU", "allowed_precisions": ["fp16"], "max_accuracy_drop": -1}, "max_accuracy_drop"),
    ({"region": "EU", "allowed_precisions": ["fp16"]}, "max_accuracy_drop"),
    ({"region": "EU", "allowed_precisions": ["fp16"], "max_accuracy_drop": 1, "calibration_set": 3}, "calibration_set"),
    ({"region": "EU", "allowed_precisions": ["fp16"], "max_accuracy_drop": 1, "max_drop": 1}, "max_drop"),
])
def test_malformed_policy_file_names_file_region_and_field(tmp_path, entry, field):
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({"regions": [entry]}))  # JSON is valid YAML
    with pytest.raises(PolicyError) as info:
        PolicyTable.load(path)
    message = str(info.value)
    assert str(path) in message and "'EU'" in message and field in message


def test_policy_file_syntax_and_structure_errors_name_the_file(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("regions: [\n  - region: EU\n")
    with pytest.raises(PolicyError, match="broken.yaml"):
        PolicyTable.load(broken)
    duplicate = tmp_path / "dup.json"
    policy = {"region": "EU", "allowed_precisions": ["fp32"], "max_accuracy_drop": 1}
    duplicate.write_text(json.dumps({"regions": [policy, policy]}))
    with pytest.raises(PolicyError, match=r"dup\.json.*EU.*more than once"):
        PolicyTable.load(duplicate)
    with pytest.raises(PolicyError, match="missing.yaml"):
        PolicyTable.load(tmp_path / "missing.yaml")


def test_choose_picks_the_fastest_configuration_each_policy_allows(results):
    choices = {c.region: c for c in choose(default_policies(), results)}
    assert choices["North America"].choice is results[2]  # int8 drops 1.5 <= 2
    assert choices["South-East Asia"].choice is results[2]
    eu = choices["EU"]
    assert eu.choice is results[0]  # int8 not allowed, fp16 drops 0.7 > 0.5: only fp32 remains
    checks = {c.precision: c for c in eu.checks}
    assert checks["int8"].reason == "no INT8 allowed"
    assert checks["fp16"].drop_points == pytest.approx(0.7) and "0.70 > 0.5 points" in checks["fp16"].reason
    assert eu.to_json()["choice"] == "fp32 @ onnxruntime"


def test_choose_returns_none_with_every_reason_when_nothing_qualifies(results):
    strict = RegionPolicy("strict EU", ("fp16",), 0.5)
    (choice,) = choose([strict], results)
    assert choice.choice is None
    assert "no FP32 allowed" in choice.reason and "no INT8 allowed" in choice.reason
    assert "fp16 @ onnxruntime drops 0.70 > 0.5 points" in choice.reason


def test_choose_requires_the_named_calibration_set(results):
    policy = RegionPolicy("NA street", ("fp32", "fp16", "int8"), 2.0, calibration_set="street")
    (choice,) = choose([policy], results)
    assert choice.choice is results[1]  # int8 was calibrated on "studio": next fastest is fp16 (drop 0.7 <= 2)
    int8 = next(c for c in choice.checks if c.precision == "int8")
    assert "'studio'" in int8.reason and "'street'" in int8.reason


def test_choose_compares_latency_at_the_same_batch():
    fp32 = make_result("fp32", 10.0, top1=0.9, batches=(8, 1))
    int8_batch1 = make_result("int8", 0.5, top1=0.9, batches=(1,))
    fp16 = make_result("fp16", 7.0, top1=0.9, batches=(8,))
    (choice,) = choose([RegionPolicy("NA", ("fp32", "fp16", "int8"), 2.0)], [fp32, int8_batch1, fp16])
    assert choice.batch == 8 and choice.choice is fp16
    assert "not measured at batch 8" in next(c for c in choice.checks if c.precision == "int8").reason
    (at_one,) = choose([RegionPolicy("NA", ("fp32", "fp16", "int8"), 2.0)], [fp32, int8_batch1, fp16], batch=1)
    assert at_one.choice is int8_batch1


def test_choose_treats_latency_within_tolerance_as_a_tie_won_by_precision():
    fp32, fp16 = make_result("fp32", 10.0, top1=0.9), make_result("fp16", 9.8, top1=0.9)
    policy = RegionPolicy("EU", ("fp32", "fp16"), 0.5)
    (tie,) = choose([policy], [fp32, fp16])
    assert tie.choice is fp32 and "within 5% of fp16 @ onnxruntime" in tie.reason
    (strict,) = choose([policy], [fp32, fp16], tie_tolerance=0.0)
    assert strict.choice is fp16
    (clear,) = choose([policy], [fp32, make_result("fp16", 9.0, top1=0.9)])
    assert clear.choice.precision == "fp16"
    with pytest.raises(ValueError, match="tie_tolerance"):
        choose([policy], [fp32], tie_tolerance=1.5)


def test_choose_uses_agreement_without_labels():
    fp32 = make_result("fp32", 10.0)
    int8 = make_result("int8", 4.0, agreement=0.97)  # 3 points of disagreement
    na, sea = choose([RegionPolicy("NA", ("fp32", "int8"), 2.0), RegionPolicy("SEA", ("fp32", "int8"), 3.0)],
                     [fp32, int8])
    assert na.choice is fp32 and sea.choice is int8
    assert next(c for c in sea.checks if c.precision == "int8").metric == "top1_agreement"


def test_choose_uses_cosine_for_embedding_models():
    def embedding(precision, median, cosine):
        result = make_result(precision, median)
        result.accuracy = AccuracyStats(top1=None, top1_agreement=None, cosine=cosine, max_abs_diff=0.1, samples=40)
        return result

    fp32, int8 = embedding("fp32", 10.0, 1.0), embedding("int8", 3.0, 0.985)
    (choice,) = choose([RegionPolicy("NA", ("fp32", "int8"), 2.0)], [fp32, int8])
    assert choice.choice is int8
    check = next(c for c in choice.checks if c.precision == "int8")
    assert check.metric == "cosine" and check.drop_points == pytest.approx(1.5)


def test_choose_without_fp32_baseline_says_so():
    (choice,) = choose([RegionPolicy("NA", ("int8",), 2.0)], [make_result("int8", 3.0, top1=0.8)])
    assert choice.choice is None and "no FP32 result" in choice.reason


def test_policy_matrix_figure_marks_allowed_violating_and_chosen(results):
    choices = choose(default_policies(), results)
    fig = policy_matrix_figure(choices, results)
    heatmap = fig.data[0]
    assert list(heatmap.y) == ["North America", "EU", "South-East Asia"]
    assert list(heatmap.x) == ["fp32 @ onnxruntime", "fp16 @ onnxruntime",
                               "int8 (minmax, onnxruntime, studio) @ onnxruntime"]
    eu = [list(row) for row in heatmap.z][1]
    assert eu == [2, 0, 0]  # fp32 chosen, fp16 and int8 violate
    assert heatmap.text[1][0].startswith("★") and "drop 0.70 pts" in heatmap.text[1][1]
    assert "no INT8 allowed" in heatmap.customdata[1][2]
    with pytest.raises(WorkbenchError, match="different results"):
        policy_matrix_figure(choices, results[:2])


# ---- cost -------------------------------------------------------------------------------------------------------


def test_engine_hours_follow_the_documented_formula():
    # 8 per batch every 10 ms at 50 % utilisation: 8 * 360,000 * 0.5 = 1.44 M requests per engine-hour
    hours = engine_hours_per_day(1e6, 8, latency_ms=10.0, utilisation=0.5)
    assert hours == pytest.approx(1e6 / 1.44e6)
    assert engine_hours_per_day(1e6, 8, throughput=800.0, utilisation=0.5) == pytest.approx(hours)
    cost = monthly_cost(1e8, 8, 2.5, latency_ms=10.0, utilisation=0.5)
    assert cost["engine_hours_per_day"] == pytest.approx(1e8 / 1.44e6)
    assert cost["cost_per_month"] == pytest.approx(1e8 / 1.44e6 * 30.4 * 2.5)
    assert cost["instances"] == math.ceil(1e8 / 1.44e6 / 24) == 3
    assert cost["provisioned_cost_per_month"] == pytest.approx(3 * 24 * 30.4 * 2.5)


@pytest.mark.parametrize("kwargs, name", [
    (dict(requests_per_day=-1, batch_size=8, latency_ms=1.0), "requests_per_day"),
    (dict(requests_per_day=1e6, batch_size=0, latency_ms=1.0), "batch_size"),
    (dict(requests_per_day=1e6, batch_size=8, latency_ms=-2.0), "latency_ms"),
    (dict(requests_per_day=1e6, batch_size=8, latency_ms=1.0, utilisation=0), "utilisation"),
    (dict(requests_per_day=1e6, batch_size=8, latency_ms=1.0, utilisation=1.5), "utilisation"),
    (dict(requests_per_day=1e6, batch_size=8), "latency_ms"),
    (dict(requests_per_day=1e6, batch_size=8, latency_ms=1.0, throughput=5.0), "throughput"),
])
def test_invalid_cost_inputs_raise_value_errors_naming_the_input(kwargs, name):
    with pytest.raises(CostInputError, match=name) as info:
        engine_hours_per_day(**kwargs)
    assert isinstance(info.value, ValueError)


def test_cost_table_rows_and_savings(results):
    rows = cost_table(results, volumes=(1e6, 1e7), price_per_hour=3.0, utilisation=0.75)
    assert len(rows) == 6
    by_key = {(r["precision"], r["requests_per_day"]): r for r in rows}
    int8 = by_key[("int8", 1e7)]
    assert int8["savings_vs_fp32"] == pytest.approx(0.7)  # 3 ms vs 10 ms
    assert by_key[("fp32", 1e6)]["savings_vs_fp32"] == pytest.approx(0.0)
    assert int8["cost_per_month"] == pytest.approx(1e7 / (8 * 3.6e6 / 3.0 * 0.75) * 30.4 * 3.0)
    assert int8["cost_per_month"] == pytest.approx(10 * by_key[("int8", 1e6)]["cost_per_month"])
    with pytest.raises(CostInputError, match="utilisation"):
        cost_table(results, utilisation=0)
    with pytest.raises(CostInputError, match="volumes"):
        cost_table(results, volumes=())


def test_cost_figure_has_log_axes_one_line_per_configuration_and_a_caption(results):
    fig = cost_figure(results, volumes=(1e5, 1e6, 1e7), price_per_hour=2.0)
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert [t.name for t in fig.data] == [r.label for r in results]
    assert list(fig.data[2].x) == [1e5, 1e6, 1e7]
    assert fig.data[2].y[1] == pytest.approx(1e6 / (8 * 3.6e6 / 3.0 * 0.6) * 30.4 * 2.0)
    assert "3,600,000" in fig.layout.annotations[0].text
    assert "70.0% saved" in fig.data[2].customdata[0][2]


# ---- bundle -----------------------------------------------------------------------------------------------------


def _triton_config_class():
    """A subset of Triton's ModelConfig proto (field and enum names as in model_config.proto), so config.pbtxt
    is parsed by protobuf's own text-format parser rather than a hand-written one."""
    fdp = descriptor_pb2.FileDescriptorProto(name="triton_subset.proto", package="inference", syntax="proto3")
    data_type = fdp.enum_type.add(name="DataType")
    for number, name in enumerate(["TYPE_INVALID", "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32",
                                   "TYPE_UINT64", "TYPE_INT8", "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16",
                                   "TYPE_FP32", "TYPE_FP64", "TYPE_STRING", "TYPE_BF16"]):
        data_type.value.add(name=name, number=number)
    F = descriptor_pb2.FieldDescriptorProto

    def message(name, fields):
        msg = fdp.message_type.add(name=name)
        for number, (field_name, kind, label, type_name) in enumerate(fields, start=1):
            msg.field.add(name=field_name, number=number, type=kind, label=label, type_name=type_name)
        return msg

    one, many = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("ModelTensorReshape", [("shape", F.TYPE_INT64, many, None)])
    tensor = [("name", F.TYPE_STRING, one, None), ("data_type", F.TYPE_ENUM, one, ".inference.DataType"),
              ("dims", F.TYPE_INT64, many, None), ("reshape", F.TYPE_MESSAGE, one, ".inference.ModelTensorReshape")]
    message("ModelInput", tensor)
    message("ModelOutput", tensor)
    message("ModelDynamicBatching", [("preferred_batch_size", F.TYPE_INT32, many, None),
                                     ("max_queue_delay_microseconds", F.TYPE_UINT64, one, None)])
    group = message("ModelInstanceGroup", [("kind", F.TYPE_ENUM, one, ".inference.ModelInstanceGroup.Kind"),
                                           ("count", F.TYPE_INT32, one, None)])
    kind = group.enum_type.add(name="Kind")
    for number, name in enumerate(["KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"]):
        kind.value.add(name=name, number=number)
    message("ModelConfig", [("name", F.TYPE_STRING, one, None), ("platform", F.TYPE_STRING, one, None),
                            ("backend", F.TYPE_STRING, one, None), ("max_batch_size", F.TYPE_INT32, one, None),
                            ("input", F.TYPE_MESSAGE, many, ".inference.ModelInput"),
                            ("output", F.TYPE_MESSAGE, many, ".inference.ModelOutput"),
                            ("dynamic_batching", F.TYPE_MESSAGE, one, ".inference.ModelDynamicBatching"),
                            ("instance_group", F.TYPE_MESSAGE, many, ".inference.ModelInstanceGroup")])
    pool = __import__("google.protobuf.descriptor_pool", fromlist=["DescriptorPool"]).DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


@pytest.fixture(scope="module")
def model_config_class():
    return _triton_config_class()


def _parse_config(path, config_class):
    return text_format.Parse(path.read_text(), config_class())


def test_bundle_writes_triton_entry_matching_the_model(tmp_path, tiny_cnn, model_config_class):
    result = make_result("int8", 3.0, top1=0.885, calibration="studio", model="tiny-cnn")
    out = export_bundle(tiny_cnn, result, tmp_path / "bundle", region="North America", max_batch=16,
                        preferred_batch_sizes=(4, 8))
    entry = out / "model_repository" / "tiny-cnn_int8"
    config = _parse_config(entry / "config.pbtxt", model_config_class)
    assert config.name == "tiny-cnn_int8" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 16
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("input", 11, [1, 8, 8])]  # 11: TYPE_FP32
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [("probs", 11, [4])]
    saved = onnx.load(entry / "1" / "model.onnx")
    assert Model.from_proto(saved, "x", "y").content_hash == tiny_cnn.content_hash

    meta = json.loads((out / "metadata.json").read_text())
    assert meta["region"] == "North America" and meta["backend"] == "onnxruntime"
    assert meta["precision_plan"]["precision"] == "int8"
    assert meta["calibration"] == {"name": "studio", "sha256": "abc123"}
    assert meta["latency_ms"]["median"] == 3.0 and meta["accuracy"]["top1"] == 0.885
    assert set(meta["files"]) == {"model_repository/tiny-cnn_int8/1/model.onnx",
                                  "model_repository/tiny-cnn_int8/config.pbtxt"}
    assert verify_bundle(out) == []
    (entry / "1" / "model.onnx").write_bytes(b"tampered")
    assert verify_bundle(out) == ["model_repository/tiny-cnn_int8/1/model.onnx has changed (sha256 differs from "
                                  "metadata.json)"]


def test_bundle_of_a_fixed_batch_model_disables_batching(tmp_path, tiny_cnn, model_config_class):
    graph = helper.make_graph(
        [helper.make_node("ArgMax", ["x"], ["idx"], axis=1, keepdims=0)], "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [1, 10])],
        [helper.make_tensor_value_info("idx", TensorProto.INT64, [1])])
    model = Model.from_proto(helper.make_model(graph), name="fixed", source="test")
    out = export_bundle(model, make_result("fp16", 1.0, model="fixed"), tmp_path, name="argmax")
    config = _parse_config(out / "model_repository" / "argmax" / "config.pbtxt", model_config_class)
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("x", 10, [1, 10])]  # 10: TYPE_FP16
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [("idx", 9, [1])]  # 9: TYPE_INT64
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["triton"]["max_batch_size"] == 0 and any("batching is off" in n for n in meta["notes"])
    unbatched = export_bundle(tiny_cnn, make_result("fp32", 1.0),
                              tmp_path / "unbatched", max_batch=0, name="tiny")
    config = _parse_config(unbatched / "model_repository" / "tiny" / "config.pbtxt", model_config_class)
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [-1, 1, 8, 8]  # -1: the free batch dim


def test_bundle_for_tensorrt_needs_the_engine_plan(tmp_path, tiny_cnn, model_config_class):
    result = make_result("fp16", 1.0, backend="tensorrt", model="tiny-cnn")
    with pytest.raises(BundleError, match="plan="):
        export_bundle(tiny_cnn, result, tmp_path)
    plan = b"serialized engine bytes"
    out = export_bundle(tiny_cnn, result, tmp_path, plan=plan)
    entry = out / "model_repository" / "tiny-cnn_fp16"
    assert (entry / "1" / "model.plan").read_bytes() == plan
    config = _parse_config(entry / "config.pbtxt", model_config_class)
    assert config.platform == "tensorrt_plan" and config.instance_group[0].kind == 1  # KIND_GPU
    assert verify_bundle(out) == [] and "source.onnx" in json.loads((out / "metadata.json").read_text())["files"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_batch=4, preferred_batch_sizes=(4, 8)), "preferred_batch_sizes"),
    (dict(max_batch=-1), "max_batch"),
])
def test_bundle_rejects_bad_batch_settings(tmp_path, tiny_cnn, kwargs, match):
    with pytest.raises(BundleError, match=match):
        export_bundle(tiny_cnn, make_result("fp32", 1.0), tmp_path, **kwargs)


def test_bundle_rejects_an_unknown_model_source(tmp_path):
    with pytest.raises(BundleError, match="Workbench"):
        export_bundle("model.onnx", make_result("fp32", 1.0), tmp_path)


# ---- end to end with the session ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """digits-cnn on 200 eval samples, plus a calibration set 50x too wide and a noisy labelled eval set."""
    from workbench.calibration import CalibrationSet
    from workbench.samples.base import EvalData
    from workbench.session import Workbench

    wb = Workbench("digits-cnn", cache_dir=tmp_path_factory.mktemp("cache"), progress=False, eval_limit=200)
    train = wb.calibration_sets["digits-train"]
    wb.add_calibration_set(CalibrationSet("too-wide", {k: v * 50 for k, v in train.arrays.items()}))
    images = wb.eval.arrays["input"]
    noisy = images + np.random.default_rng(0).normal(0, 0.25, images.shape).astype(np.float32)
    return wb, {"noisy": EvalData({"input": noisy}, wb.eval.labels, "eval split + Gaussian noise (sigma 0.25)")}


@pytest.fixture(scope="module")
def matrix(session):
    wb, extra = session
    return calibration_mismatch(wb, eval_sets=extra, batch=8, runs=3, progress=False)


def test_calibration_mismatch_runs_every_calibration_set_through_the_session(session, matrix):
    wb, extra = session
    assert matrix.calibration_sets == ["digits-train", "mnist-downscaled", "noise", "too-wide"]
    assert matrix.eval_sets == ["eval", "noisy"] and matrix.metric == ["top1", "top1"]
    assert [r.calibration for r in matrix.results] == matrix.calibration_sets
    assert all(r in wb.results for r in matrix.results)  # session results: cached, reusable
    assert [row[0] for row in matrix.accuracy] == [r.accuracy.top1 for r in matrix.results]
    wide = matrix.calibration_sets.index("too-wide")
    assert matrix.drop_points()[wide][0] > 2  # coarse INT8 steps cost real accuracy
    assert matrix.drop_points()[0][0] < 1  # calibrating on the training distribution does not

    import onnxruntime as ort
    probs = ort.InferenceSession(wb.model.serialized()).run(None, extra["noisy"].arrays)[0]
    assert matrix.fp32[1] == pytest.approx(np.mean(probs.argmax(1) == extra["noisy"].labels))
    assert matrix.drop_points()[wide][1] == pytest.approx(100 * (matrix.fp32[1] - matrix.accuracy[wide][1]))

    fig = mismatch_figure(matrix)
    assert list(fig.data[0].y) == ["FP32 (no calibration)"] + [f"INT8 calibrated on {n}" for n in
                                                               matrix.calibration_sets]
    assert fig.data[0].z[1 + wide][0] == pytest.approx(100 * matrix.accuracy[wide][0])
    assert json.loads(json.dumps(matrix.to_json()))["eval_sets"] == ["eval", "noisy"]


def test_mismatch_reuses_cached_runs(session, matrix):
    wb, extra = session
    before = len(wb.results)
    again = calibration_mismatch(wb, eval_sets=extra, batch=8, runs=3, progress=False)
    assert len(wb.results) == before and again.accuracy == matrix.accuracy


def test_session_results_flow_into_choice_cost_and_bundle(session, matrix, tmp_path, model_config_class):
    wb, _ = session
    fp16 = wb.run("fp16", batch=8, runs=3, profile=False, drift=False)
    choices = choose(default_policies(), wb.results)
    eu = next(c for c in choices if c.region == "EU")
    assert eu.choice.precision in ("fp32", "fp16")  # never INT8 in the EU
    too_wide = next(c for c in eu.checks if "too-wide" in c.config)
    assert not too_wide.ok
    assert len(cost_table(wb.results, volumes=(1e6,))) == len(wb.results)
    out = export_bundle(wb, fp16, tmp_path, region=eu.region)
    entry = out / "model_repository" / "digits-cnn_fp16"
    config = _parse_config(entry / "config.pbtxt", model_config_class)
    saved = onnx.load(entry / "1" / "model.onnx")
    assert Model.from_proto(saved, "x", "y").content_hash == wb.variant_model(fp16).content_hash
    assert [(i.name, list(i.dims)) for i in config.input] == [("input", [1, 8, 8])]
    assert verify_bundle(out) == []

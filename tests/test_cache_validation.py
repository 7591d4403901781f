"""The session never trusts its cache: edited, mis-structured, swapped or misplaced entries are measured again,
a cache that cannot be written degrades to no cache, and results say which machine measured them."""
from __future__ import annotations

import json
import warnings

import numpy as np
import onnxruntime as ort
import pytest
from conftest import make_tiny_cnn

import workbench.precision
from workbench import CalibrationSet, Workbench
from workbench.cache import CacheWarning, ResultCache, _json_hash
from workbench.machine import other_machine_note, same_machine, this_machine
from workbench.models.spec import Model
from workbench.samples.base import EvalData, Sample
from workbench.schema import SchemaError, check_run_json

FAST = {"runs": 3, "batch": 8, "drift": False}


@pytest.fixture(scope="module")
def sample():
    proto = make_tiny_cnn()
    rng = np.random.default_rng(3)
    inputs = rng.standard_normal((24, 1, 8, 8)).astype(np.float32)
    labels = ort.InferenceSession(proto.SerializeToString()).run(None, {"input": inputs})[0].argmax(1)
    calibration = CalibrationSet.from_arrays("noise", rng.standard_normal((16, 1, 8, 8)).astype(np.float32),
                                             input_name="input")
    return Sample(name="tiny", description="tiny CNN", model=Model.from_proto(proto, name="tiny-cnn", source="t"),
                  eval=EvalData({"input": inputs}, labels), calibration_sets={"noise": calibration})


class Spy:
    """Counts calls of Workbench._measure (a real measurement) while passing them through."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = Workbench._measure

        def measure(session, job, **steps):
            self.calls += 1
            return original(session, job, **steps)
        monkeypatch.setattr(Workbench, "_measure", measure)


def _edit(cache: ResultCache, key: str, change) -> None:
    """Change a stored entry and re-seal it with a matching hash: only the schema can catch what was changed."""
    path = cache.path(key)
    entry = json.loads(path.read_text())["entry"]
    change(entry)
    path.write_text(json.dumps({"sha256": _json_hash(entry), "entry": entry}))


def _negative_top1(entry):
    entry["accuracy"]["top1"] = -0.5


def _absurd_speedup(entry):  # 20,000x faster, with every latency field made consistent
    for stats in entry["latency_by_batch"]:
        for name in ("median", "p90", "min", "mean"):
            stats[name] = 1e-5
        stats["throughput"] = stats["batch"] * 1000 / 1e-5


def _wrong_structure(entry):
    entry["latency_by_batch"] = "fast"


def _nan_latency(entry):
    entry["latency_by_batch"][0]["median"] = float("nan")


def _inconsistent_throughput(entry):
    entry["latency_by_batch"][0]["throughput"] *= 50


def _other_configuration(entry):
    entry["precision"] = "fp16"


def _edited_layer_time(entry):
    entry["layers"][0]["latency_ms"] = (entry["layers"][0]["latency_ms"] or 0) + 5.0


@pytest.mark.parametrize("change", [_negative_top1, _absurd_speedup, _wrong_structure, _nan_latency,
                                    _inconsistent_throughput, _other_configuration, _edited_layer_time])
def test_invalid_cached_result_is_discarded_and_measured_again(sample, tmp_path, monkeypatch, change):
    first = Workbench(sample, cache_dir=tmp_path, progress=False).run("int8", **FAST)
    spy = Spy(monkeypatch)
    _edit(ResultCache(tmp_path), first.cache_key, change)
    again = Workbench(sample, cache_dir=tmp_path, progress=False).run("int8", **FAST)
    assert spy.calls == 1  # measured again, not shown
    assert 0.0 <= again.accuracy.top1 <= 1.0 and again.precision == "int8"
    assert again.headline_latency.median >= 1e-3
    check_run_json(json.loads(ResultCache(tmp_path).path(first.cache_key).read_text())["entry"])  # replaced
    Workbench(sample, cache_dir=tmp_path, progress=False).run("int8", **FAST)
    assert spy.calls == 1  # and the replacement is a hit


def test_deeply_nested_result_entry_is_a_miss_not_a_crash(sample, tmp_path, monkeypatch):
    first = Workbench(sample, cache_dir=tmp_path, progress=False).run("fp32", **FAST)
    spy = Spy(monkeypatch)
    nested: list = []
    for _ in range(50_000):
        nested = [nested]
    with pytest.raises(RecursionError):  # the payload really is too deep for recursive code
        json.dumps(nested)
    deep = '{"sha256": "x", "entry": {"latency_by_batch": ' + "[" * 50_000 + "]" * 50_000 + "}}"
    ResultCache(tmp_path).path(first.cache_key).write_text(deep)
    assert Workbench(sample, cache_dir=tmp_path, progress=False).run("fp32", **FAST).accuracy.top1 == 1.0
    assert spy.calls == 1


def test_schema_error_names_the_field():
    with pytest.raises(SchemaError, match=r"accuracy.top1 is -0.5, outside \[0, 1\]"):
        check_run_json({"model": "m", "precision": "fp32", "backend": "onnxruntime",
                        "latency_by_batch": [{"batch": 1, "runs": 3, "median": 1.0, "p90": 1.0, "min": 1.0,
                                              "mean": 1.0, "throughput": 1000.0}],
                        "accuracy": {"top1": -0.5, "samples": 1}})


def test_swapped_cached_model_is_rebuilt(sample, tmp_path, monkeypatch):
    session = Workbench(sample, cache_dir=tmp_path, progress=False)
    result = session.run("int8", **FAST)
    honest = session.variant_model(result).content_hash
    cache = ResultCache(tmp_path)
    other = Workbench(sample, cache_dir=tmp_path, progress=False).run("fp16", **FAST)
    cache.path(result.cache_key, "onnx").write_bytes(cache.path(other.cache_key, "onnx").read_bytes())
    transforms = []
    original = workbench.precision.apply_plan
    monkeypatch.setattr(workbench.precision, "apply_plan", lambda *a, **k: transforms.append(1) or original(*a, **k))
    variant = Workbench(sample, cache_dir=tmp_path, progress=False).variant_model(result)
    assert transforms == [1] and variant.content_hash == honest  # the FP16 graph was not served as INT8


def test_swapped_calibration_ranges_are_recomputed(sample, tmp_path):
    plan = workbench.precision.PrecisionPlan("int8", method="minmax")
    workbench.precision.clear_cache()
    workbench.precision.apply_plan(sample.model, plan, sample.calibration_sets["noise"], progress=False,
                                   cache_dir=tmp_path)
    [ranges] = tmp_path.glob("calibration-*.ranges.json")
    ranges.write_text(ranges.read_text().replace("[", "[1e30, ", 1))  # edited ranges, stale hash
    workbench.precision.clear_cache()
    workbench.precision.apply_plan(sample.model, plan, sample.calibration_sets["noise"], progress=False,
                                   cache_dir=tmp_path)
    assert workbench.precision.cache_stats.calibrations == 1 and workbench.precision.cache_stats.disk_hits == 0


@pytest.mark.parametrize("layout", ["cache_is_a_file", "cache_under_a_file"])
def test_unusable_cache_runs_int8_without_a_cache(sample, tmp_path, layout):
    (tmp_path / "file").write_text("x")
    directory = tmp_path / "file" if layout == "cache_is_a_file" else tmp_path / "file" / "cache"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = Workbench(sample, cache_dir=directory, progress=False)
        int8 = session.run("int8", **FAST)
        fp32 = session.run("fp32", **FAST)
    assert int8.precision == "int8" and fp32.accuracy.top1 == 1.0 and int8.layer_time_ratio is not None
    assert session.variant_model(int8).content_hash != sample.model.content_hash
    cache_warnings = [w for w in caught if issubclass(w.category, CacheWarning)]
    assert len(cache_warnings) == 1 and "is a file, not a folder" in str(cache_warnings[0].message)


def test_results_record_their_machine(sample, tmp_path):
    result = Workbench(sample, cache_dir=tmp_path, progress=False).run("fp32", **FAST)
    machine = result.to_json()["machine"]
    assert machine["cores"] >= 1 and machine["cpu_model"] and isinstance(machine["flags"], list)
    assert machine["engine_versions"]["onnxruntime"] == ort.__version__
    assert same_machine(machine, this_machine()) and other_machine_note(machine) is None
    elsewhere = {**machine, "cpu_model": "Ampere Altra", "cores": 64, "flags": ["asimd"]}
    note = other_machine_note(elsewhere)
    assert "another machine (Ampere Altra, 64 cores)" in note and f"{machine['cores']} cores" in note
    assert other_machine_note(None) is None  # results from before the record say nothing


def test_real_results_pass_the_schema_and_edited_layers_do_not(sample, tmp_path):
    session = Workbench(sample, cache_dir=tmp_path, progress=False)
    for precision in ("fp32", "fp16", "int8"):
        data = session.run(precision, runs=3, batch=8).to_json()
        check_run_json(json.loads(json.dumps(data)))  # as stored: drift, engine graph, run times, intervals
    data["engine"]["layers"][0]["onnx_nodes"] = "conv1"
    with pytest.raises(SchemaError, match=r"engine.layers\[0\].onnx_nodes is not a list of strings"):
        check_run_json(data)
    data["engine"]["layers"][0]["onnx_nodes"] = ["conv1"]
    stats = data["latency_by_batch"][0]
    stats["times_ms"] = [t * 2 for t in stats["times_ms"]]  # run times that do not give the stated median
    with pytest.raises(SchemaError, match="do not give the stated runs and median"):
        check_run_json(data)
    stats["times_ms"][0] = -1.0
    with pytest.raises(SchemaError, match=r"times_ms\[0\] is -1.0, outside"):
        check_run_json(data)

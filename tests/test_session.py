"""The Workbench session end to end on the tiny CNN (and the digits sample when it is installed)."""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from conftest import make_labelled_sample, make_tiny_cnn

from workbench import CalibrationError, CalibrationSet, Workbench
from workbench.errors import PrecisionError
from workbench.backends.onnxruntime import OnnxRuntimeBackend
from workbench.models.spec import Model
from workbench.results import RunResult

FAST = {"runs": 3, "batch": 8}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """WORKBENCH_CACHE in a temporary directory, so no test reads or writes the user's cache."""
    with pytest.MonkeyPatch.context() as mp:
        directory = tmp_path_factory.mktemp("workbench-cache")
        mp.setenv("WORKBENCH_CACHE", str(directory))
        yield directory


@pytest.fixture(scope="module")
def labelled_sample():
    return make_labelled_sample()


@pytest.fixture(scope="module")
def session(env, labelled_sample):
    return Workbench(labelled_sample, progress=False)


@pytest.fixture(scope="module")
def runs(session):
    """fp32, fp16 and int8 measured once for the module."""
    return {p: session.run(p, batches=(1,), **FAST) for p in ("fp32", "fp16", "int8")}


def test_fp32_is_its_own_reference(runs):
    result = runs["fp32"]
    assert result.precision == "fp32" and result.backend == "onnxruntime" and not result.synthetic_data
    assert [s.batch for s in result.latency] == [8, 1]
    assert all(0 < s.min <= s.median <= s.p90 for s in result.latency)
    assert result.accuracy.samples == 40
    assert result.accuracy.top1 == 1.0 and result.accuracy.top1_agreement == 1.0
    assert result.accuracy.max_abs_diff == 0.0 and result.accuracy.cosine == pytest.approx(1.0)
    assert result.drift == [] and result.drift_graph is None
    assert set(result.versions) >= {"onnx", "onnxruntime", "numpy", "workbench"}
    assert result.accelerated is True


def test_engine_layers_carry_profiled_latency(runs):
    for result in runs.values():
        timed = [layer for layer in result.engine.layers if layer.latency_ms is not None]
        assert timed, f"{result.label}: no layer got a profiled latency"
        assert all(layer.latency_ms >= 0 for layer in timed)
        assert result.profile_end_to_end_ms > 0  # end-to-end runs timed around the profile, under its load
        assert result.layer_time_ratio == pytest.approx(
            sum(layer.latency_ms for layer in timed) / result.profile_end_to_end_ms)


def test_fp16_and_int8_measure_drift_from_fp32(runs):
    fp16, int8 = runs["fp16"], runs["int8"]
    assert fp16.accelerated is False  # ORT's CPU provider runs FP16 graphs through FP32 kernels
    assert any("fp16" in note for note in fp16.notes)
    assert fp16.accuracy.top1_agreement == 1.0 and fp16.accuracy.cosine > 0.9999
    assert all(40 < p.sqnr_db < math.inf for p in fp16.drift)
    assert int8.calibration == "noise" and int8.calibration_hash is not None
    assert int8.drift and all(5 < p.sqnr_db < 60 and p.layer for p in int8.drift)
    assert 0 < int8.accuracy.max_abs_diff < 0.5 and int8.accuracy.top1 == int8.accuracy.top1_agreement
    for result in (fp16, int8):
        assert "exposed as outputs" in result.drift_graph


def test_rerun_is_served_from_memory_and_disk(session, runs, env, labelled_sample, no_builds):
    count = len(session.results)
    again = session.run("int8", batches=(1,), **FAST)
    assert again.to_json() == runs["int8"].to_json()
    assert len(session.results) == count  # no duplicate for the same configuration
    fresh = Workbench(labelled_sample, progress=False)  # new session, same cache directory
    from_disk = fresh.run("int8", batches=(1,), **FAST)
    assert from_disk.to_json() == runs["int8"].to_json()
    assert fresh.results == [from_disk]
    variant = fresh.variant_model(from_disk)  # the precision-baked model comes back from the disk cache too
    assert "QuantizeLinear" in {node.op_type for node in variant.proto.graph.node}


def test_optimized_model_is_rebuilt_lazily(env, labelled_sample, runs):
    fresh = Workbench(labelled_sample, progress=False)
    result = fresh.run("fp16", batches=(1,), **FAST)
    optimized = fresh.optimized_model(result)
    assert isinstance(optimized, onnx.ModelProto) and len(optimized.graph.node) > 0


def test_changed_calibration_data_gives_a_new_result(session, runs, labelled_sample):
    changed = labelled_sample.calibration_sets["noise"].arrays["input"] * 3
    other = CalibrationSet.from_arrays("noise x3", changed, input_name="input")
    result = session.run("int8", calibration=other, **FAST)
    assert result.cache_key != runs["int8"].cache_key
    assert result.calibration == "noise x3" and result.calibration_hash == other.content_hash
    assert "noise x3" in session.calibration_sets
    smaller = session.run("int8", calibration_size=8, batches=(1,), **FAST)  # a subset is different data too
    assert smaller.cache_key not in {result.cache_key, runs["int8"].cache_key}


@pytest.mark.parametrize("bad, message", [
    (CalibrationSet.from_arrays("renamed", {"x": np.zeros((4, 1, 8, 8), np.float32)}), "does not fit the model"),
    (CalibrationSet.from_arrays("nan", {"input": np.full((4, 1, 8, 8), np.nan, np.float32)}), "NaN"),
    (CalibrationSet.from_arrays("shape", {"input": np.zeros((4, 1, 6, 6), np.float32)}), "sample shape"),
    ("no-such-set", "No calibration set 'no-such-set'"),
])
def test_bad_calibration_fails_before_any_build(session, no_builds, bad, message):
    count = len(session.results)
    with pytest.raises(CalibrationError, match=message):
        session.run("int8", calibration=bad, **FAST)
    with pytest.raises(CalibrationError, match=message):  # a sweep validates every config before running any
        session.sweep([{"precision": "fp32"}, {"precision": "int8", "calibration": bad}])
    assert len(session.results) == count


def test_sweep_returns_one_result_per_config(session, runs, no_builds):
    results = session.sweep([{"precision": "fp32", "batches": (1,), **FAST},
                             {"precision": "int8", "batches": (1,), **FAST}])
    assert [r.cache_key for r in results] == [runs["fp32"].cache_key, runs["int8"].cache_key]


def test_a_failing_configuration_does_not_stop_a_sequential_sweep(env, labelled_sample):
    class BrokenFP16(Workbench):
        def _measure(self, job, **steps):
            if job.plan.precision == "fp16":
                raise PrecisionError("FP16 broken on purpose")
            return super()._measure(job, **steps)

    session = BrokenFP16(labelled_sample, progress=False)  # batch 2: not in the cache, so every config is measured
    results = session.sweep([{"precision": p, "batches": (2,), **FAST} for p in ("fp16", "fp32", "int8")])

    assert [r.precision for r in results] == ["fp32", "int8"]
    [failure] = session.failures
    assert failure.config["precision"] == "fp16" and failure.error == "PrecisionError: FP16 broken on purpose"
    assert failure.to_json()["configuration"].startswith("fp16 @ onnxruntime")


def test_model_without_data_is_marked_synthetic(env, tiny_cnn):
    wb = Workbench(tiny_cnn, progress=False, eval_limit=16)
    assert wb.sample is None and list(wb.calibration_sets) == ["synthetic"]
    result = wb.run("int8", runs=2, batch=4, profile=False, drift=False)
    assert result.synthetic_data is True
    assert result.accuracy.top1 is None and result.accuracy.samples == 16
    assert 0 <= result.accuracy.top1_agreement <= 1
    assert result.engine is not None and result.layer_time_ratio is None and result.drift == []
    assert any("synthetic" in note for note in result.notes)
    assert RunResult.from_json(result.to_json()).synthetic_data is True


def test_fixed_batch_model_is_measured_at_its_batch(env):
    proto = make_tiny_cnn()
    for value_info in (*proto.graph.input, *proto.graph.output):
        value_info.type.tensor_type.shape.dim[0].dim_value = 2
    wb = Workbench(Model.from_proto(proto, name="fixed", source="test"), progress=False, eval_limit=5)
    result = wb.run("fp32", batch=8, batches=(1,), runs=2, profile=False)
    assert [s.batch for s in result.latency] == [2]
    assert result.accuracy.samples == 5  # the last, partial batch is padded and trimmed
    assert any("fixed batch size of 2" in note for note in result.notes)


def test_digits_sample_end_to_end(env):
    from workbench import samples

    if "digits-cnn" not in samples.names():
        pytest.skip("the digits-cnn sample is not available in this checkout")
    wb = Workbench("digits-cnn", progress=False, eval_limit=128)
    fp32 = wb.run("fp32", runs=3)
    int8 = wb.run("int8", runs=3)
    assert fp32.accuracy.top1 > 0.8 and not fp32.synthetic_data
    assert int8.accuracy.top1_agreement > 0.9 and int8.drift


def _sequence_model() -> Model:
    """tokens[batch, sequence] float -> squared -> summed over the sequence: [batch]."""
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Mul", ["tokens", "tokens"], ["squares"], name="square"),
             helper.make_node("ReduceSum", ["squares", "axes"], ["total"], name="sum", keepdims=0)]
    graph = helper.make_graph(nodes, "seq", [helper.make_tensor_value_info("tokens", TensorProto.FLOAT,
                                                                            ["batch", "sequence"])],
                              [helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch"])],
                              [numpy_helper.from_array(np.array([1], np.int64), "axes")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return Model.from_proto(proto, name="seq", source="test")


def test_dims_choose_dynamic_axis_sizes_within_the_stated_range(env):
    from workbench.backends.tensorrt import profile_shapes  # pure function: no TensorRT needed
    from workbench.errors import InputSpecError

    wb = Workbench(_sequence_model(), cache_dir=env, progress=False, shape_range={"sequence": (4, 16, 64)})
    assert wb._feeds(2, {"sequence": 40})["tokens"].shape == (2, 40)
    short = wb.run("fp32", batch=2, runs=2, profile=False, drift=False, dims={"sequence": 4})
    long = wb.run("fp32", batch=2, runs=2, profile=False, drift=False, dims={"sequence": 64})
    assert short.headline_latency.dims == {"sequence": 4} and long.headline_latency.dims == {"sequence": 64}
    assert short.cache_key != long.cache_key
    assert RunResult.from_json(long.to_json()).headline_latency.dims == {"sequence": 64}
    with pytest.raises(InputSpecError, match="outside the shape range"):
        wb.run("fp32", dims={"sequence": 65})
    with pytest.raises(InputSpecError, match="dynamic axes"):
        wb.run("fp32", dims={"tokens": 8})
    ranges = wb._profile_ranges()
    assert ranges == (("tokens", (1, 4), (8, 16), (32, 64)),)
    shapes = profile_shapes(wb.model.inputs, ranges)  # what the TensorRT backend turns into an optimisation profile
    assert shapes["tokens"] == ((1, 4), (8, 16), (32, 64))


# ---- the engine contract as the session uses it ------------------------------------------------------------------
def test_results_carry_the_precision_steps_notes(runs):
    assert any("from minmax calibration on 'noise'" in note for note in runs["int8"].notes)
    assert any("FP16" in note or "fp16" in note for note in runs["fp16"].notes)
    assert runs["int8"].calibration_size == 32 and "noise×32" in runs["int8"].label


def test_accelerated_needs_fast_kernels_and_a_reduced_precision_graph(session, runs):
    from workbench.backends.onnxruntime import int8_kernels
    from workbench.engine import EngineGraph, EngineLayer
    from workbench.precision.plan import PrecisionPlan
    from workbench.session import runs_accelerated

    assert runs["fp32"].accelerated and not runs["fp16"].accelerated  # ORT's CPU provider runs FP16 in FP32
    assert runs["int8"].accelerated == int8_kernels()
    trt_style = session.run("int8", qdq_style="tensorrt", **FAST, profile=False, drift=False)
    assert trt_style.accelerated is False  # TensorRT-placed Q/DQ does not fuse into ORT's integer kernels
    backend = OnnxRuntimeBackend()
    plan = PrecisionPlan("int8")
    all_fp32 = EngineGraph("onnxruntime", [EngineLayer("conv", "Conv", "fp32", ["conv"]),
                                           EngineLayer("q", "QuantizeLinear", "int8", [], inserted=True)], ["conv"])
    assert runs_accelerated(backend, plan, all_fp32) is False  # a plan that ended up all FP32 is not accelerated
    some_int8 = EngineGraph("onnxruntime", [EngineLayer("conv", "QLinearConv", "int8", ["conv"])], ["conv"])
    assert runs_accelerated(backend, plan, some_int8) == int8_kernels()


def test_session_keeps_a_few_engines_and_closes_the_rest(env, labelled_sample):
    from workbench.session import OPEN_ENGINES

    with Workbench(labelled_sample, progress=False) as wb:
        results = [wb.run("int8", method=m, **FAST, profile=False, drift=False)
                   for m in ("minmax", "entropy", "percentile")] + [wb.run("fp32", **FAST, profile=False)]
        engines = [wb.engine(r) for r in results]
        assert len(wb._engines) == OPEN_ENGINES
        assert engines[0].closed and not engines[-1].closed  # least recently used first
        again = wb.engine(results[0])  # a closed engine is rebuilt on demand
        assert not again.closed and again is not engines[0]
    assert all(engine.closed for engine in wb._engines.values()) and not wb._engines


def test_an_option_an_engine_lacks_is_an_error_naming_who_has_it(env, labelled_sample):
    from workbench.errors import BackendError

    wb = Workbench(labelled_sample, progress=False, engine_options={"onnxruntime": {"inference_precision": "f16"}})
    with pytest.raises(BackendError, match="no option 'inference_precision' .it is an option of openvino"):
        wb.run("fp32", **FAST)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("batch", [1, 8, 7])
def test_eval_pass_on_parallel_engines_equals_one_engine(session, runs, monkeypatch, precision, batch):
    """The accuracy pass runs one single-thread engine per core on contiguous shares of the same batches: its
    outputs are those of the timed engine run over every batch in turn (so accuracy does not depend on it)."""
    from workbench.session import _run_all

    monkeypatch.setattr("os.cpu_count", lambda: 3)  # three shares, whatever the machine
    backend = session._backend("onnxruntime")
    model = session.variant_model(runs[precision])
    built = []
    real_build = backend.build
    monkeypatch.setattr(backend, "build", lambda *a, **k: built.append(a[1].threads) or real_build(*a, **k))
    with real_build(model, session._options(backend)) as engine:
        alone = _run_all(engine, session.eval.arrays, batch, session._to_feeds)
        parallel = session._eval_outputs(backend, model, engine, batch)
    assert built == [1, 1, 1]
    assert len(parallel) == len(alone) and all(p.shape == a.shape for p, a in zip(parallel, alone))
    assert all(np.array_equal(p, a) for p, a in zip(parallel, alone))

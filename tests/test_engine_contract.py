"""One contract, every engine: ONNX Runtime, OpenVINO and the TensorRT backend driven by a TEST DOUBLE of
`tensorrt`/`torch.cuda` (tests/tensorrt_double.py: it executes on ONNX Runtime; it is not TensorRT)."""
from __future__ import annotations

import json
import sys
from collections import Counter

import numpy as np
import pytest

from tensorrt_double import TensorRTDouble, TorchDouble
from workbench.backends import get_backend
from workbench.engine import Backend, Engine, EngineGraph
from workbench.errors import BackendError, InputSpecError

ENGINES = ["onnxruntime", "openvino", "tensorrt-double"]


@pytest.fixture
def torch_double(monkeypatch):
    torch = TorchDouble()
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "tensorrt", TensorRTDouble(torch))
    return torch


@pytest.fixture(params=ENGINES)
def engine(request, tiny_cnn, tmp_path, monkeypatch):
    if request.param == "openvino":
        pytest.importorskip("openvino")
        backend = get_backend("openvino")
    elif request.param == "tensorrt-double":
        torch = TorchDouble()
        monkeypatch.setitem(sys.modules, "torch", torch)
        monkeypatch.setitem(sys.modules, "tensorrt", TensorRTDouble(torch))
        backend = get_backend("tensorrt", cache_dir=tmp_path)
    else:
        backend = get_backend(request.param)
    assert isinstance(backend, Backend)
    built = backend.build(tiny_cnn)
    yield built
    built.close()


def test_is_an_engine_with_the_models_inputs(engine, tiny_cnn):
    assert isinstance(engine, Engine)
    assert [s.name for s in engine.input_specs] == [s.name for s in tiny_cnn.inputs]


def test_run_checks_feeds_before_running(engine, tiny_inputs):
    (x,) = tiny_inputs.values()
    (probs,) = engine.run(tiny_inputs)
    assert probs.shape == (x.shape[0], 4) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    with pytest.raises(InputSpecError, match="Missing input 'input'"):
        engine.run({})
    with pytest.raises(InputSpecError, match="Unknown input 'other'"):
        engine.run({**tiny_inputs, "other": x})
    with pytest.raises(InputSpecError, match="expects float32"):
        engine.run({"input": x.astype(np.float64)})
    with pytest.raises(InputSpecError, match="expects shape"):
        engine.run({"input": x[0]})
    with pytest.raises(InputSpecError):
        engine.profile({"input": x[0]}, runs=1)


def test_every_onnx_node_belongs_to_exactly_one_layer(engine, tiny_cnn):
    graph = engine.layers()
    claims = Counter(node for layer in graph.layers for node in layer.onnx_nodes)
    assert set(claims) == set(tiny_cnn.node_names) == set(graph.source_nodes)
    assert set(claims.values()) == {1}


def test_profile_names_are_layer_names(engine, tiny_inputs):
    timings = engine.profile(tiny_inputs, runs=3, warmup=1)
    names = {layer.name for layer in engine.layers().layers}
    assert timings and {t.name for t in timings} <= names
    assert all(t.latency_ms >= 0 and np.isfinite(t.latency_ms) for t in timings)
    with pytest.raises(BackendError, match="runs >= 1"):
        engine.profile(tiny_inputs, runs=0)


def test_close_is_idempotent_and_final(engine, tiny_inputs):
    engine.close()
    engine.close()
    assert engine.closed
    with pytest.raises(BackendError, match="was closed"):
        engine.run(tiny_inputs)


def test_context_manager_closes(engine, tiny_inputs):
    with engine as same:
        same.run(tiny_inputs)
    assert engine.closed


def test_layer_graph_round_trips_through_json(engine):
    graph = engine.layers()
    again = EngineGraph.from_json(json.loads(json.dumps(graph.to_json())))
    assert again == graph


# ---- TensorRT engine logic, on the double ---------------------------------------------------------------------------
def test_tensorrt_device_buffers_are_allocated_once_per_shape(torch_double, tiny_cnn, tiny_inputs, tmp_path):
    engine = get_backend("tensorrt", cache_dir=tmp_path).build(tiny_cnn)
    engine.run(tiny_inputs)
    after_first = torch_double.allocations
    assert after_first == 2  # one input and one output buffer
    for _ in range(5):
        engine.run(tiny_inputs)
    assert torch_double.allocations == after_first  # timed runs never allocate
    small = {"input": tiny_inputs["input"][:2]}
    (probs,) = engine.run(small)
    assert probs.shape == (2, 4) and torch_double.allocations == after_first + 2
    engine.run(tiny_inputs)
    assert torch_double.allocations == after_first + 2  # the first shape's buffers are reused again


def test_tensorrt_profile_warms_up_outside_the_profiler(torch_double, tiny_cnn, tiny_inputs, tmp_path):
    engine = get_backend("tensorrt", cache_dir=tmp_path).build(tiny_cnn)
    timings = engine.profile(tiny_inputs, runs=4, warmup=3)
    assert {t.count for t in timings} == {4}  # the three warm-up runs were not profiled
    assert len(timings) == len(engine.layers().layers)


@pytest.mark.parametrize("name", ENGINES)
def test_session_results_round_trip_through_json(name, tiny_cnn, tmp_path, monkeypatch):
    from workbench import Workbench
    from workbench.results import RunResult, strict_json

    if name == "openvino":
        pytest.importorskip("openvino")
    if name == "tensorrt-double":
        torch = TorchDouble()
        monkeypatch.setitem(sys.modules, "torch", torch)
        monkeypatch.setitem(sys.modules, "tensorrt", TensorRTDouble(torch))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    backend = "tensorrt" if name == "tensorrt-double" else name
    with Workbench(tiny_cnn, backend=backend, progress=False, eval_limit=16) as wb:
        result = wb.run("fp32", batch=4, runs=3)
        assert result.engine is not None and result.engine.layers and not result.engine.unmapped_nodes()
        assert result.layer_time_ratio is not None
    again = RunResult.from_json(json.loads(json.dumps(strict_json(result.to_json()))))
    assert again.to_json() == result.to_json()

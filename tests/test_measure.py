"""Latency, accuracy and drift measurements on constructed arrays and the tiny CNN."""
from __future__ import annotations

import math

import numpy as np
import pytest

from workbench.backends import get_backend
from workbench.calibration import CalibrationSet
from workbench.errors import InputSpecError
from workbench.measure import measure_accuracy, measure_drift, measure_latency, sqnr_db
from workbench.precision import PrecisionPlan, apply_plan


class _CountingEngine:
    """A real computation (matrix product) with a call counter, to check warm-up + timed runs."""

    backend = "numpy"
    notes: list[str] = []

    def __init__(self) -> None:
        self.calls = 0
        self.weight = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)

    def run(self, feeds):
        self.calls += 1
        return [feeds["x"] @ self.weight]


def test_latency_stats_are_ordered_and_count_runs():
    engine = _CountingEngine()
    feeds = {"x": np.ones((4, 64), np.float32)}
    stats = measure_latency(engine, feeds, batch=4, warmup=2, runs=7)
    assert engine.calls == 9
    assert stats.runs == 7 and stats.batch == 4
    assert 0 < stats.min <= stats.median <= stats.p90
    assert stats.min <= stats.mean
    assert stats.throughput == pytest.approx(4 / (stats.median / 1000))


def test_latency_rejects_zero_runs():
    with pytest.raises(InputSpecError, match="runs >= 1"):
        measure_latency(_CountingEngine(), {"x": np.ones((1, 64), np.float32)}, batch=1, runs=0)


def test_accuracy_on_constructed_outputs():
    reference = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.5, 0.4, 0.1]])
    outputs = np.array([[0.8, 0.2, 0.0], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.5, 0.4, 0.1]])
    labels = np.array([0, 1, 2, 1])
    stats = measure_accuracy([outputs], [reference], labels)

    pred = outputs.argmax(1)
    cosines = [np.dot(o, r) / (np.linalg.norm(o) * np.linalg.norm(r)) for o, r in zip(outputs, reference)]
    assert stats.samples == 4
    assert stats.top1 == pytest.approx(np.mean(pred == labels))  # 2 of 4
    assert stats.top1 == pytest.approx(0.5)
    assert stats.top1_agreement == pytest.approx(np.mean(pred == reference.argmax(1)))  # 3 of 4
    assert stats.top1_agreement == pytest.approx(0.75)
    assert stats.cosine == pytest.approx(np.mean(cosines))
    assert stats.max_abs_diff == pytest.approx(np.abs(outputs - reference).max())


def test_accuracy_without_labels_and_for_embeddings():
    reference = np.array([[1.0, 0.0], [0.0, 2.0]])
    outputs = np.array([[1.0, 1.0], [0.0, 2.0]])
    unlabelled = measure_accuracy(outputs, reference)
    assert unlabelled.top1 is None and unlabelled.top1_agreement == pytest.approx(1.0)
    embedding = measure_accuracy(outputs, reference, task="embedding")
    assert embedding.top1 is None and embedding.top1_agreement is None
    assert embedding.cosine == pytest.approx((1 / math.sqrt(2) + 1.0) / 2)
    assert embedding.max_abs_diff == pytest.approx(1.0)


def test_accuracy_identical_is_perfect_and_shape_mismatch_is_an_error():
    out = np.random.default_rng(0).standard_normal((5, 3))
    same = measure_accuracy([out], [out.copy()], np.zeros(5, int))
    assert same.top1_agreement == 1.0 and same.cosine == pytest.approx(1.0) and same.max_abs_diff == 0.0
    with pytest.raises(InputSpecError, match="shape"):
        measure_accuracy([out], [out[:4]])


def test_sqnr_definition():
    ref = np.array([3.0, 4.0])
    noisy = np.array([3.0, 5.0])
    assert sqnr_db(ref, noisy) == pytest.approx(10 * math.log10(25 / 1))
    assert sqnr_db(ref, ref.copy()) == math.inf


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    """Calibration ranges cached by the INT8 transform go to a temporary directory, not the user's cache."""
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))


@pytest.fixture(scope="module")
def ort():
    return get_backend("onnxruntime")


def test_drift_fp32_against_itself_is_identical(tiny_cnn, tiny_inputs, ort):
    points, note = measure_drift(tiny_cnn, tiny_cnn, tiny_inputs, ort)
    assert [p.tensor for p in points] == [t for n in tiny_cnn.proto.graph.node for t in n.output]
    assert [p.layer for p in points] == tiny_cnn.node_names
    assert all(p.sqnr_db == math.inf and p.cosine == pytest.approx(1.0) and p.max_abs_diff == 0.0 for p in points)
    assert "exposed as outputs" in note and "onnxruntime" in note


def test_drift_int8_is_finite_and_sane(tiny_cnn, tiny_inputs, ort):
    calibration = CalibrationSet.from_arrays("cal", tiny_inputs)
    variant = apply_plan(tiny_cnn, PrecisionPlan("int8"), calibration, progress=False)
    points, note = measure_drift(tiny_cnn, variant, tiny_inputs, ort)
    assert points, "no tensors matched between the FP32 and INT8 graphs"
    assert points[-1].tensor == "probs" and points[-1].layer == "softmax"
    order = {name: i for i, name in enumerate(t for n in tiny_cnn.proto.graph.node for t in n.output)}
    assert [order[p.tensor] for p in points] == sorted(order[p.tensor] for p in points)
    for p in points:
        assert 5.0 < p.sqnr_db < 60.0, p
        assert 0.9 < p.cosine < 1.0 and p.max_abs_diff > 0
    assert "DequantizeLinear" in note


def test_drift_fp16_matches_cast_wrapped_tensors(tiny_cnn, tiny_inputs, ort):
    variant = apply_plan(tiny_cnn, PrecisionPlan("fp16", keep_fp32=("conv2",)), progress=False)
    points, _ = measure_drift(tiny_cnn, variant, tiny_inputs, ort)
    by_tensor = {p.tensor: p for p in points}
    # every original tensor has a counterpart (c2 and probs are written through Casts in the FP16 graph)
    assert set(by_tensor) == {t for n in tiny_cnn.proto.graph.node for t in n.output}
    assert all(40.0 < p.sqnr_db < math.inf and p.cosine > 0.9999 for p in points)

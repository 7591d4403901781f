"""Honest timings: the median's bootstrap interval, speed-ups with intervals and the within-noise rule, on synthetic
run times (nothing here is timed)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from workbench.cli import _print_summary
from workbench.engine import EngineGraph, EngineLayer
from workbench.report import headline
from workbench.precision.plan import PrecisionPlan
from workbench.results import (MIN_EFFECT, NO_DIFFERENCE, AccuracyStats, LatencyStats, RunResult, Speedup,
                               median_interval, speedup, speedup_over, speedup_verdict)
from workbench.views import layer_latency_figure, summary_html, summary_table


def _stats(times, batch: int = 8) -> LatencyStats:
    times = [float(t) for t in times]
    median = float(np.median(times))
    return LatencyStats(batch=batch, median=median, p90=float(np.percentile(times, 90)), min=min(times),
                        mean=float(np.mean(times)), runs=len(times), throughput=batch / median * 1000,
                        times_ms=times, median_ci=median_interval(times))


def _times(median: float, spread: float, n: int = 30, seed: int = 0) -> np.ndarray:
    """Log-normal run times (right-skewed like real ones) with the given median."""
    return median * np.exp(np.random.default_rng(seed).normal(0.0, spread, n))


def _result(precision: str, times, *, top1: float = 0.9, ratio: float | None = 1.0, backend="onnxruntime"):
    layer = EngineLayer("conv", "FusedConv", precision, ["conv", "relu"], latency_ms=1.0)
    return RunResult(model="m", plan=PrecisionPlan(precision), calibration=None,
                     calibration_hash=None, backend=backend, versions={}, synthetic_data=False,
                     latency=[_stats(times)], accuracy=AccuracyStats(top1, 1.0, 1.0, 0.0, 100),
                     engine=EngineGraph(backend, [layer], ["conv", "relu"]), layer_time_ratio=ratio)


def test_median_interval_brackets_the_median_and_narrows_with_runs():
    few, many = _times(2.0, 0.2, n=10), _times(2.0, 0.2, n=400)
    low, high = median_interval(few)
    assert low <= np.median(few) <= high
    low_many, high_many = median_interval(many)
    assert low_many <= np.median(many) <= high_many
    assert high_many - low_many < (high - low) / 2
    assert median_interval(few) == median_interval(few)  # seeded: the same runs give the same interval
    assert median_interval([1.0]) is None and median_interval([]) is None


def test_median_interval_covers_the_true_median_about_95_percent_of_the_time():
    hits = 0
    for seed in range(200):
        low, high = median_interval(_times(1.0, 0.3, n=31, seed=seed))
        hits += low <= 1.0 <= high
    assert 0.88 <= hits / 200 <= 0.995


def test_a_clear_speedup_is_faster_with_an_interval_around_it():
    gain = speedup(_stats(_times(1.0, 0.1, seed=1)), _stats(_times(2.0, 0.1, seed=2)))
    assert gain.verdict == "faster" and gain.measurable
    assert gain.ratio == pytest.approx(2.0, rel=0.1)
    assert 1.0 < gain.low < gain.ratio < gain.high
    assert gain.text().startswith("×2.") and "CI" in gain.text()
    slower = speedup(_stats(_times(2.0, 0.1, seed=3)), _stats(_times(1.0, 0.1, seed=4)))
    assert slower.verdict == "slower" and slower.high < 1.0


def test_differences_inside_the_noise_are_no_measurable_difference():
    # the same run times in another order: ratio 1, interval around it
    times = _times(1.0, 0.3, seed=5)
    same = speedup(_stats(times), _stats(np.random.default_rng(6).permutation(times)))
    assert same.ratio == 1.0 and same.low < 1.0 < same.high
    assert same.verdict == NO_DIFFERENCE and not same.measurable
    assert same.text().startswith(NO_DIFFERENCE)
    # tiny noise: the interval excludes 1.0, but 3% is below the smallest effect reported
    small = speedup(_stats(_times(1.0, 0.001, seed=7)), _stats(_times(1.03, 0.001, seed=8)))
    assert small.low > 1.0 and small.verdict == NO_DIFFERENCE
    assert speedup_verdict(1.0 + MIN_EFFECT * 1.2, 1.01, 1.2) == "faster"
    assert speedup_verdict(1 / (1.0 + MIN_EFFECT * 1.2), 0.8, 0.99) == "slower"
    assert speedup_verdict(0.97, None, None) == NO_DIFFERENCE  # no run times kept: the effect size alone decides


@pytest.mark.slow
def test_equal_configurations_are_rarely_called_different():
    verdicts = [speedup(_stats(_times(1.0, 0.3, seed=2 * i)), _stats(_times(1.0, 0.3, seed=2 * i + 1))).verdict
                for i in range(200)]
    assert verdicts.count(NO_DIFFERENCE) / len(verdicts) >= 0.9


def test_speedup_without_run_times_has_no_interval():
    old = LatencyStats(batch=8, median=1.0, p90=1.1, min=0.9, mean=1.0, runs=30, throughput=8000)
    gain = speedup(old, LatencyStats(batch=8, median=2.0, p90=2.2, min=1.8, mean=2.0, runs=30, throughput=4000))
    assert gain == Speedup(2.0, None, None, "faster")
    assert gain.text() == "×2.00"


def test_speedup_over_uses_the_baseline_timed_at_the_same_batch():
    base = _result("fp32", _times(2.0, 0.05))
    base.latency.insert(0, _stats(_times(20.0, 0.05), batch=64))
    int8 = _result("int8", _times(1.0, 0.05))
    assert speedup_over(int8, base).ratio == pytest.approx(2.0, rel=0.05)
    int8.latency[0].batch = 16
    assert speedup_over(int8, base) is None


@pytest.fixture
def results():
    return [_result("fp32", _times(2.0, 0.1, seed=10)), _result("fp16", _times(2.0, 0.1, seed=11)),
            _result("int8", _times(1.0, 0.1, seed=12), ratio=0.6)]


def test_summary_table_carries_intervals_and_verdicts(results):
    rows = summary_table(results)
    assert [row["speedup_verdict"] for row in rows] == ["baseline", NO_DIFFERENCE, "faster"]
    for row, result in zip(rows, results):
        low, high = row["latency_median_ci_ms"]
        assert low <= result.headline_latency.median <= high
    low, high = rows[2]["speedup_ci"]
    assert 1.0 < low <= rows[2]["speedup_vs_fp32"] <= high
    table = summary_html(results)  # the table people see: verdicts, intervals shown as low–high under the value
    assert NO_DIFFERENCE in table and ">verdict</th>" in table
    assert re.search(r"<span[^>]*>×\d\.\d\d–×\d\.\d\d</span>", table)


def test_run_times_and_intervals_survive_json(results):
    data = json.loads(json.dumps(results[2].to_json()))
    assert data["latency_ms"]["median_ci"] == results[2].headline_latency.median_ci
    assert data["latency_by_batch"][0]["times_ms"] == results[2].headline_latency.times_ms
    loaded = RunResult.from_json(data)
    assert summary_table([RunResult.from_json(r.to_json()) for r in results]) == summary_table(results)
    assert loaded.headline_latency.times_ms == results[2].headline_latency.times_ms


def test_cli_summary_says_no_measurable_difference_instead_of_a_ratio(results, capsys):
    _print_summary(results)
    lines = capsys.readouterr().out.splitlines()
    fp16 = next(line for line in lines if line.startswith("fp16"))
    int8 = next(line for line in lines if line.startswith("int8"))
    assert NO_DIFFERENCE in fp16 and "×" in fp16  # the verdict first, the ratio only in brackets
    ratio = summary_table(results)[2]["speedup_vs_fp32"]
    assert f"×{ratio:.2f} (95% CI" in int8 and NO_DIFFERENCE not in int8


def test_layer_time_ratio_outside_the_band_is_flagged(results):
    assert results[0].layer_times_agree is True and results[2].layer_times_agree is False
    def subtitle(fig) -> str:  # the subtitle is the annotation above the plot
        return " ".join(a.text for a in fig.layout.annotations).replace("<br>", " ")

    assert "outside 90%–110%" in subtitle(layer_latency_figure(results[2]))
    assert "outside" not in subtitle(layer_latency_figure(results[0]))


# ---- the report's headline ------------------------------------------------------------------------------------
def test_headline_names_the_fastest_configuration_within_half_a_point():
    fp32 = _result("fp32", _times(4.0, 0.05, seed=20), top1=0.900)
    fp16 = _result("fp16", _times(2.0, 0.05, seed=21), top1=0.897)  # 0.3 points lower: inside the margin
    int8 = _result("int8", _times(1.0, 0.05, seed=22), top1=0.890)  # faster, but 1 point lower
    text = headline([fp32, fp16, int8])
    assert text.startswith("Fastest within 0.5 points of FP32 on top-1 accuracy: fp16 @ onnxruntime")
    gain = speedup_over(fp16, fp32)
    assert gain.verdict == "faster" and f"×{gain.ratio:.2f} (95% CI ×{gain.low:.2f}–{gain.high:.2f}) faster" in text
    assert "top-1 accuracy 89.70 % (FP32 90.00 %)" in text
    assert "Fused: 2 ONNX nodes into 1 layer (FusedConv ×1)" in text


def test_headline_reports_within_noise_and_fp32_cases_honestly():
    fp32 = _result("fp32", _times(2.0, 0.2, seed=30))
    same = _result("int8", np.random.default_rng(31).permutation(fp32.headline_latency.times_ms) * 0.99)
    text = headline([fp32, same])
    assert "int8 (minmax, onnxruntime) @ onnxruntime" in text and f"{NO_DIFFERENCE} (×1.01" in text and "faster" not in text
    slow = _result("int8", _times(4.0, 0.05, seed=32))
    assert "FP32 itself, no reduced precision within that margin is faster" in headline([fp32, slow])
    assert "Run FP32 too".lower() in headline([slow]).lower()


def test_headline_compares_each_engine_with_its_own_fp32():
    ort = _result("fp32", _times(2.0, 0.05, seed=40))
    ov = _result("fp32", _times(3.0, 0.05, seed=41), backend="openvino")
    ov_int8 = _result("int8", _times(1.0, 0.05, seed=42), backend="openvino")
    text = headline([ort, ov, ov_int8])
    assert "int8 (minmax, onnxruntime) @ openvino" in text and "faster than FP32 on openvino" in text
    assert f"×{speedup_over(ov_int8, ov).ratio:.2f}" in text


# ---- per-layer profiles that add up ----------------------------------------------------------------------------
def _trace(run_node_times: list[dict[str, float]]) -> list[dict]:
    """A Chrome-trace profile as ONNX Runtime writes it: one model_run per run, kernel events inside (µs)."""
    events, ts = [], 0.0
    for nodes in run_node_times:
        start = ts
        for name, dur in nodes.items():
            events.append({"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur})
            ts += dur
        events.append({"cat": "Session", "name": "model_run", "ts": start, "dur": ts - start + 1})
        ts += 10
    return events


def test_profiled_layer_times_add_up_to_a_typical_run_when_preemption_moves_around():
    from workbench.backends.onnxruntime import _typical_node_times

    nodes = ("a", "b", "c", "d")
    runs = []
    for i in range(8):  # every run has one node preempted (+300 µs), a different one each time
        runs.append({name: 100.0 + (300.0 if j == i % 4 else 0.0) for j, name in enumerate(nodes)})
    runs.append({name: 5000.0 for name in nodes})  # one run stalled throughout: not typical
    timings = _typical_node_times(_trace([{n: 1.0 for n in nodes}] + runs), warmup=1, runs=len(runs))
    assert {t.name for t in timings} == set(nodes)
    total_ms = sum(t.latency_ms for t in timings)
    assert total_ms == pytest.approx(0.7)  # what a typical run took, not the 0.4 ms that per-node medians sum to
    assert all(t.count == 9 for t in timings)  # summarises every timed run


def test_main_job_runs_the_default_sample_at_batch_64_on_every_cpu_engine(monkeypatch):
    from workbench import _optional
    from workbench.cli import MAIN_JOB_BATCH, engines_and_batch

    monkeypatch.setattr(_optional, "available", lambda name: name == "openvino")
    assert MAIN_JOB_BATCH == 64
    assert engines_and_batch(None, None, None) == (["onnxruntime", "openvino"], 64)
    monkeypatch.setattr(_optional, "available", lambda name: False)
    assert engines_and_batch(None, None, None) == (["onnxruntime"], 64)  # without OpenVINO: ONNX Runtime alone
    assert engines_and_batch("digits-cnn", None, None) == (["onnxruntime"], 8)  # a named model: the usual defaults
    assert engines_and_batch(None, ["openvino"], 16) == (["openvino"], 16)  # given options always win


def test_a_result_whose_layer_times_do_not_add_up_gets_a_note():
    from workbench.session import _layer_time_notes

    note, = _layer_time_notes(0.62)
    assert "62%" in note and "outside 90%-110%" in note
    assert _layer_time_notes(1.04) == [] and _layer_time_notes(None) == []


def test_profiled_layer_times_from_few_runs_are_finite():
    from workbench.backends.onnxruntime import _typical_node_times

    for runs in ([{"a": 100.0, "b": 50.0}, {"a": 300.0, "b": 50.0}], [{"a": 100.0, "b": 50.0}]):
        timings = _typical_node_times(_trace(runs), warmup=0, runs=len(runs))
        assert all(np.isfinite(t.latency_ms) and t.latency_ms > 0 for t in timings)
    two = {t.name: t.latency_ms for t in _typical_node_times(_trace([{"a": 100.0}, {"a": 300.0}]), warmup=0, runs=2)}
    assert two["a"] == pytest.approx(0.2)  # two runs: both are the middle half

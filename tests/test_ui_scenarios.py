"""The cost panel (workbench.ui.scenarios.CostPanel), driven through its controls' `.value`."""
from __future__ import annotations

import math

import pytest

pytest.importorskip("ipywidgets")

from workbench import Workbench  # noqa: E402
from workbench.precision.plan import PrecisionPlan
from workbench.results import AccuracyStats, LatencyStats, RunResult  # noqa: E402
from workbench.scenarios.cost import DAYS_PER_MONTH, CostInputError, monthly_cost  # noqa: E402
from workbench.ui.scenarios import CostPanel  # noqa: E402


def make_result(precision: str, medians: dict[int, float]) -> RunResult:
    """A result with the given median latency (ms per batch) per batch size."""
    latency = [LatencyStats(batch=b, median=m, p90=m, min=m, mean=m, runs=5, throughput=1000 * b / m)
               for b, m in medians.items()]
    return RunResult(model="m", plan=PrecisionPlan(precision),
                     calibration="cal" if precision == "int8" else None, calibration_hash=None,
                     backend="onnxruntime", versions={}, synthetic_data=False, latency=latency,
                     accuracy=AccuracyStats(top1=0.9, top1_agreement=1.0, cosine=1.0, max_abs_diff=0.0, samples=10),
                     cache_key=f"{precision}-{sorted(medians.items())}")


@pytest.fixture
def results() -> list[RunResult]:
    """FP32 at 10 ms per batch of 8, INT8 at 4 ms; only FP32 was also timed at batch 32."""
    return [make_result("fp32", {8: 10.0, 32: 30.0}), make_result("int8", {8: 4.0})]


def by_precision(panel: CostPanel) -> dict[str, dict]:
    return {row["precision"]: row for row in panel.rows}


def test_panel_numbers_follow_the_cost_formulas(results):
    panel = CostPanel(results, requests_per_day=1e6, price_per_hour=2.0, utilisation=0.5)
    rows = by_precision(panel)
    assert set(rows) == {"fp32", "int8"} and panel.batch.value == 8
    # requests per engine-hour = 8 * 3.6e6 / 10 ms * 0.5 = 1.44e6
    assert rows["fp32"]["engine_hours_per_day"] == pytest.approx(1e6 / 1.44e6)
    assert rows["fp32"]["cost_per_month"] == pytest.approx(1e6 / 1.44e6 * DAYS_PER_MONTH * 2.0)
    assert rows["int8"]["savings_vs_fp32"] == pytest.approx(0.6)
    assert rows["int8"] == {**rows["int8"], **monthly_cost(1e6, 8, 2.0, latency_ms=4.0, utilisation=0.5)}
    assert "+60.0%" in panel.table.value and "$" in panel.table.value


def test_doubling_requests_doubles_engine_hours_and_moves_the_marker(results):
    panel = CostPanel(results, requests_per_day=1e6)
    before = {p: r["engine_hours_per_day"] for p, r in by_precision(panel).items()}
    panel.requests_per_day.value = 2e6
    after = by_precision(panel)
    assert all(after[p]["engine_hours_per_day"] == pytest.approx(2 * before[p]) for p in before)
    assert panel.figure.layout.shapes[0].x0 == pytest.approx(2e6)
    assert all(2e6 in trace.x for trace in panel.figure.data)  # the chosen volume is a point on every line
    assert "2,000,000 requests/day" in panel.status.value


def test_price_and_utilisation_scale_cost(results):
    panel = CostPanel(results, price_per_hour=1.0, utilisation=0.6)
    base = by_precision(panel)["fp32"]
    panel.price_per_hour.value = 3.0
    assert by_precision(panel)["fp32"]["cost_per_month"] == pytest.approx(3 * base["cost_per_month"])
    panel.utilisation.value = 0.3  # half the useful time per engine-hour: twice the engine-hours
    assert by_precision(panel)["fp32"]["engine_hours_per_day"] == pytest.approx(2 * base["engine_hours_per_day"])
    assert "utilisation 0.3" in panel.figure.layout.title.text and "$3/engine-hour" in panel.figure.layout.title.text


def test_provisioned_toggle_plots_whole_instances(results):
    panel = CostPanel(results, requests_per_day=1e6)
    on_demand = {t.name: list(t.y) for t in panel.figure.data}
    panel.provisioned.value = True
    provisioned = {t.name: list(t.y) for t in panel.figure.data}
    assert on_demand.keys() == provisioned.keys()
    for name in on_demand:
        assert all(p >= o for p, o in zip(provisioned[name], on_demand[name]))  # whole instances cost at least as much
        assert all(math.isclose(p / (24 * DAYS_PER_MONTH), round(p / (24 * DAYS_PER_MONTH))) for p in provisioned[name])


def test_batch_without_every_configuration_leaves_them_out_and_says_so(results):
    panel = CostPanel(results)
    assert list(panel.batch.options) == [8, 32]
    panel.batch.value = 32
    assert [r["precision"] for r in panel.rows] == ["fp32"] and panel.rows[0]["latency_ms"] == 30.0
    assert "1 configuration(s) not timed at batch 32" in panel.status.value
    assert len(panel.figure.data) == 1


def test_zero_price_gives_zero_cost_and_keeps_engine_hours(results):
    panel = CostPanel(results)
    hours = by_precision(panel)["int8"]["engine_hours_per_day"]
    panel.price_per_hour.value = 0.0
    row = by_precision(panel)["int8"]
    assert row["cost_per_month"] == 0.0 and row["engine_hours_per_day"] == pytest.approx(hours)
    assert panel.error is None


@pytest.mark.parametrize("kwargs, words", [
    ({"batch": 16}, "batch=16 was not measured"),
    ({"requests_per_day": 5.0}, "requests_per_day=5.0 is outside"),
])
def test_bad_settings_raise_a_typed_error_naming_the_fix(results, kwargs, words):
    with pytest.raises(CostInputError, match=words):
        CostPanel(results, **kwargs)


def test_results_without_latency_are_rejected():
    with pytest.raises(CostInputError, match="measured latency"):
        CostPanel([])


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    session = Workbench("digits-cnn", cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    return [session.run(p, runs=3, profile=False, drift=False) for p in ("fp32", "int8")]


def test_panel_on_measured_results_matches_their_latency(measured):
    panel = CostPanel(measured, requests_per_day=1e5, utilisation=1.0)
    for result, row in zip(measured, panel.rows):
        median = result.headline_latency.median
        assert row["latency_ms"] == median
        assert row["engine_hours_per_day"] == pytest.approx(1e5 / (8 * 3_600_000 / median))
    assert {t.name for t in panel.figure.data} == {r["config"] for r in panel.rows}

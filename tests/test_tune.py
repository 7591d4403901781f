"""Sensitivity ranking and the accuracy-budgeted search, on the tiny CNN (fast) and on hand-made drift."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import make_labelled_sample, make_tiny_cnn

from workbench import Workbench
from workbench.engine import EngineGraph, EngineLayer
from workbench.errors import InputSpecError
from workbench.models.spec import Model
from workbench.precision.plan import PrecisionPlan
from workbench.results import AccuracyStats, DriftPoint, LatencyStats, RetimedLatency, RunResult
from workbench.tune import dequantised_readers, metric_value, quantised_units, rank_by_drift

FAST = {"runs": 3, "batch": 8}


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    sample = make_labelled_sample()
    return Workbench(sample, progress=False, cache_dir=tmp_path_factory.mktemp("tune-cache"))


def _result(layers, drift, accuracy=None) -> RunResult:
    return RunResult(model="tiny-cnn", plan=PrecisionPlan("int8"), calibration="noise", calibration_hash="x",
                     backend="onnxruntime", versions={},
                     synthetic_data=False, latency=[LatencyStats(8, 1.0, 1.1, 0.9, 1.0, 3, 8000.0)],
                     accuracy=accuracy, engine=EngineGraph("onnxruntime", layers, []), drift=drift)


def test_drift_proxy_ranks_units_by_the_noise_each_adds():
    # conv1 adds 1e-4 of noise; conv2 (+ the folded BN, residual Add, Relu, pool it feeds) brings it to 1e-2;
    # fc adds the rest. GAP/Flatten are outside every unit, so they belong to the unit feeding them (conv2).
    layers = [EngineLayer("conv1_token", "QLinearConv", "int8", ["conv1"], latency_ms=0.2),
              EngineLayer("conv2_token", "QLinearConv", "int8", ["conv2", "add"], latency_ms=0.6),
              EngineLayer("Transpose", "Transpose", "int8", [], inserted=True, latency_ms=0.1),
              EngineLayer("fc", "QGemm", "int8", ["fc", "fc_QuantizeLinear"], latency_ms=0.1),
              EngineLayer("softmax", "Softmax", "fp32", ["softmax"], latency_ms=0.0)]
    drift = [DriftPoint("r1", "relu1", 40.0, 1.0, 0.0), DriftPoint("r2", "relu2", 20.0, 1.0, 0.0),
             DriftPoint("logits", "fc", 10 * math.log10(1 / 0.0125), 1.0, 0.0)]
    result = _result(layers, drift)
    units = quantised_units(result, make_tiny_cnn_names())
    assert [u.nodes for u in units] == [["conv1"], ["conv2", "add"], ["fc"]]  # no inserted/fp32 layers, no Q/DQ
    assert units[1].latency_share == pytest.approx(0.6 / 1.0)
    ranked = rank_by_drift(result, make_tiny_cnn(), units)
    assert [r.unit.layer for r in ranked] == ["conv2_token", "fc", "conv1_token"]
    assert ranked[0].noise_added == pytest.approx(1e-2 - 1e-4)
    assert ranked[1].noise_added == pytest.approx(0.0125 - 1e-2)
    assert ranked[2].noise_added == pytest.approx(1e-4) and ranked[2].output_sqnr_db == 40.0


def test_float_layers_reading_dequantised_weights_are_units_too(session):
    int8 = session.run("int8", **FAST)
    variant = session.variant_model(int8).proto
    readers = dequantised_readers(variant)
    assert readers and all(n.op_type != "DequantizeLinear" for n in variant.graph.node if n.name in readers)
    float_layer = EngineLayer("ln", "LayerNormalization", "fp32", ["relu2"], latency_ms=0.1)
    result = _result([float_layer], [])
    assert quantised_units(result, make_tiny_cnn_names()) == []  # by precision alone: not quantised
    assert [u.nodes for u in quantised_units(result, make_tiny_cnn_names(), {"relu2"})] == [["relu2"]]


def make_tiny_cnn_names() -> list[str]:
    return [node.name for node in make_tiny_cnn().graph.node]


def test_metric_values_and_a_missing_metric_is_a_typed_error():
    result = _result([], [], AccuracyStats(top1=None, top1_agreement=0.975, cosine=0.99, max_abs_diff=0.1,
                                           samples=40))
    assert metric_value(result, "agreement") == pytest.approx(97.5)
    assert metric_value(result, "cosine") == pytest.approx(0.99)
    with pytest.raises(InputSpecError, match="no labels"):
        metric_value(result, "top1")
    with pytest.raises(InputSpecError, match="choose one of"):
        metric_value(result, "f1")


def test_sensitivity_confirms_the_top_units_by_rebuilding(session):
    int8 = session.run("int8", **FAST)
    report = session.sensitivity(int8, metric="cosine", confirm=2, **FAST)
    confirmed = [u for u in report.units if u.recovered is not None]
    assert len(confirmed) == 2 and len(report.units) >= 3
    assert [u.recovered for u in confirmed] == sorted((u.recovered for u in confirmed), reverse=True)
    best = confirmed[0]
    again = session.run("int8", keep_fp32=best.unit.nodes, **FAST)  # the same configuration: from the cache
    assert again.label == best.confirmed_label
    assert best.recovered == pytest.approx(metric_value(again, "cosine") - metric_value(int8, "cosine"))
    json.dumps(report.to_json())


def test_tune_reverts_units_until_budget_and_chooses_the_fastest_within(session):
    found = session.tune(max_drop=0.0, metric="cosine", budget=4, **FAST)  # nothing quantised is exact
    assert 2 <= len(found.configurations) <= 5  # FP32 + at most the budget
    assert found.configurations[0].precision == "fp32" and found.configurations[0].drop == 0
    assert found.configurations[0].speedup_verdict == "baseline"
    assert found.chosen is not None and found.chosen.within_budget
    assert found.chosen.latency_ms == min(c.latency_ms for c in found.configurations if c.within_budget)
    assert found.stopped in ("budget used up", "no unit left to revert")
    frontier = found.frontier
    assert frontier and all(c.on_frontier for c in frontier)
    fastest = min(found.configurations, key=lambda c: c.latency_ms)
    assert fastest in frontier  # nothing beats the fastest on latency
    accepted = [c for c in found.configurations if c.step.startswith("keep")]
    for config in accepted:
        assert config.keep_fp32 and set(config.kept_units[-1].split(" + ")) <= set(config.keep_fp32)
    data = json.loads(json.dumps(found.to_json()))
    assert set(data) >= {"chosen", "frontier", "sensitivity", "configurations"}


def test_tune_a_second_time_is_served_from_the_cache(session, no_builds):
    first = session.tune(max_drop=0.0, metric="cosine", budget=4, **FAST)  # measured by the test above
    assert first.chosen is not None and len(first.configurations) >= 2


def test_a_generous_budget_keeps_everything_quantised(session):
    found = session.tune(max_drop=100.0, metric="agreement", budget=3, **FAST)
    assert found.stopped == "fully quantised is within budget"
    assert [c.step for c in found.configurations] == ["FP32 baseline", "quantise all"]
    assert found.sensitivity is not None and all(u.recovered is None for u in found.sensitivity.units)
    assert found.result_of(found.configurations[1]).precision == "int8"


@pytest.mark.parametrize("bad, message", [({"budget": 0}, "budget"), ({"max_drop": -1}, "max_drop"),
                                          ({"metric": "f1"}, "metric"), ({"precision": "fp32"}, "reduced")])
def test_bad_tune_arguments_are_typed_errors(session, no_builds, bad, message):
    options = {"max_drop": 1.0, "metric": "agreement", "budget": 2, **bad}
    with pytest.raises(InputSpecError, match=message):
        session.tune(options.pop("precision", "int8"), **options, **FAST)


def _stand_in_result(model, precision, keep, agreement, latency, layers, drift) -> RunResult:
    """A result of the stand-in sessions below: one timing, agreement with FP32, the engine's layers, drift."""
    return RunResult(model=model, plan=PrecisionPlan(precision, keep_fp32=tuple(keep)), calibration=None,
                     calibration_hash=None, backend="onnxruntime", versions={}, synthetic_data=True,
                     latency=[LatencyStats(8, latency, latency, latency, latency, 3, 1.0)],
                     accuracy=AccuracyStats(None, agreement, 0.99, 0.1, 40),
                     engine=EngineGraph("onnxruntime", layers, [n for layer in layers for n in layer.onnx_nodes]),
                     drift=drift, cache_key=f"{precision}:{','.join(keep)}")


class _StandInWorkbench:
    """What the search needs of a session, without engines: `model`, `results`, `variant_model`, and the job API
    (`prepare_run`, `execute`) on top of `run`."""

    progress = False

    def prepare_run(self, precision="fp32", **options) -> dict:
        return {"precision": precision, **options}

    def execute(self, job: dict, *, progress=None, cancel=None) -> RunResult:
        if cancel is not None:
            cancel.check()
        return self.run(**job)

    def variant_model(self, _result) -> Model:
        return self.model  # no Q/DQ nodes: which layers are quantised comes from their precision

    def retime(self, results, *, rounds, runs) -> dict:
        """Each result's own timing again (an idle machine): the finalists' order stays."""
        return {r.cache_key: RetimedLatency.of([r.headline_latency.median] * rounds, batch=8, runs=runs)
                for r in results}

    def _recorded(self, result: RunResult) -> RunResult:
        if all(r.cache_key != result.cache_key for r in self.results):
            self.results.append(result)
        return result


class _SpreadLossWorkbench(_StandInWorkbench):
    """A stand-in session whose INT8 loss is spread over 8 units: agreement recovers only once >= 5 of them are
    kept in FP32, whichever they are; each kept unit costs 0.1 ms. Tests the search logic without engines."""

    def __init__(self):
        from onnx import TensorProto, helper

        nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"], name=f"relu{i}") for i in range(8)]
        graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("t8", TensorProto.FLOAT, [1])])
        self.model = Model.from_proto(helper.make_model(graph), name="chain", source="test")
        self.results: list[RunResult] = []
        self.runs: list[tuple[str, ...]] = []

    def run(self, precision="fp32", *, keep_fp32=(), **_options) -> RunResult:
        keep = tuple(sorted(keep_fp32))
        self.runs.append(keep)
        kept = {n for n in keep}
        layers = [EngineLayer(f"relu{i}_layer", "Relu", "fp32" if f"relu{i}" in kept or precision == "fp32"
                              else "int8", [f"relu{i}"], latency_ms=1.0) for i in range(8)]
        drift = [] if precision == "fp32" else [
            DriftPoint(f"t{i + 1}", f"relu{i}", 30.0 - i, 1.0, 0.0) for i in range(8) if f"relu{i}" not in kept]
        agreement = 1.0 if precision == "fp32" else (0.995 if len(kept) >= 5 else 0.95)
        latency = 10.0 if precision == "fp32" else 5.0 + 0.1 * len(kept)
        return self._recorded(_stand_in_result("chain", precision, keep, agreement, latency, layers, drift))


def test_spread_loss_switches_to_group_reverts_and_bisects_to_the_smallest_group():
    from workbench.tune import tune

    fake = _SpreadLossWorkbench()
    found = tune(fake, max_drop=1.0, metric="agreement", budget=12, confirm=1, progress=False)
    steps = [c.step for c in found.configurations]
    assert steps[:3] == ["FP32 baseline", "quantise all", "confirm relu7"]  # the proxy's most harmful unit first
    assert any(s.startswith("keep 8 units") for s in steps)  # 2 and 4 were not enough
    assert found.stopped == "within budget"
    assert len(found.chosen.keep_fp32) == 5  # bisected down to the smallest group that is within budget
    assert found.chosen.latency_ms == pytest.approx(5.5) and found.chosen.drop == pytest.approx(0.5)
    assert len(found.configurations) - 1 <= 12


def test_group_reverts_stop_at_the_budget():
    from workbench.tune import tune

    found = tune(_SpreadLossWorkbench(), max_drop=1.0, metric="agreement", budget=4, confirm=1, progress=False)
    assert found.stopped == "budget used up" and len(found.configurations) == 1 + 4
    assert found.chosen.precision == "fp32"  # nothing within budget was found: FP32 is the honest answer


def test_figures_show_sensitivity_beside_time_and_the_frontier():
    from workbench.tune import tune
    from workbench.views.tuning import pareto_figure, sensitivity_figure

    found = tune(_SpreadLossWorkbench(), max_drop=1.0, metric="agreement", budget=12, confirm=1, progress=False)
    figure = sensitivity_figure(found.sensitivity)
    measured, proxy, share = figure.data
    assert list(measured.y) == [u.unit.name for u in found.sensitivity.units]
    assert measured.x[0] == found.sensitivity.units[0].recovered and proxy.x[1] > 0
    assert share.x[0] == pytest.approx(100 / 8)  # each of the 8 layers takes 1 ms
    pareto = pareto_figure(found)
    frontier = next(t for t in pareto.data if t.name == "frontier")
    assert list(frontier.x) == sorted(frontier.x) and len(frontier.x) == len(found.frontier)
    star = next(t for t in pareto.data if t.name == "chosen")
    assert star.x[0] == found.chosen.latency_ms and star.customdata[0] == found.chosen.cache_key
    labelled = [text for t in pareto.data if t.text is not None for text in t.text]
    assert "all int8" in labelled and "FP32" in labelled


def test_speedup_kept_is_the_ratio_of_speedups_and_the_share_of_the_gain():
    from workbench.tune import speedup_kept

    ratio, gain = speedup_kept(100.0, 50.0, 62.5)  # full INT8 2x, the plan 1.6x
    assert ratio == pytest.approx(0.8)
    assert gain == pytest.approx(0.6)
    assert speedup_kept(100.0, 120.0, 100.0)[1] is None  # full INT8 slower than FP32: no gain to keep
    with pytest.raises(InputSpecError):
        speedup_kept(100.0, 0.0, 50.0)


class _RoleLossWorkbench(_StandInWorkbench):
    """A stand-in session of 4 repeated blocks (proj: MatMul with a weight, act and gate: Relu) whose INT8 loss sits
    in one role, every block's `proj`: agreement is within budget only once all four are FP32. The drift proxy
    blames the gates (each adds the most noise), as it does when a transformer's noise saturates."""

    ROLES = ("proj", "act", "gate")

    def __init__(self):
        from onnx import TensorProto, helper, numpy_helper

        nodes, inits, tensor = [], [], "t0"
        for block in range(4):
            for role in self.ROLES:
                name, out = f"/block{block}/{role}", f"/block{block}/{role}_out"
                if role == "proj":
                    inits.append(numpy_helper.from_array(np.ones((1, 1), np.float32), f"w{block}"))
                    nodes.append(helper.make_node("MatMul", [tensor, f"w{block}"], [out], name=name))
                else:
                    nodes.append(helper.make_node("Relu", [tensor], [out], name=name))
                tensor = out
        graph = helper.make_graph(nodes, "blocks", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, 1])],
                                  [helper.make_tensor_value_info(tensor, TensorProto.FLOAT, [1, 1])], inits)
        self.model = Model.from_proto(helper.make_model(graph), name="blocks", source="test")
        self.results: list[RunResult] = []

    def run(self, precision="fp32", *, keep_fp32=(), **_options) -> RunResult:
        keep = tuple(sorted(keep_fp32))
        names = [n.name for n in self.model.proto.graph.node]
        layers = [EngineLayer(f"{n}_layer", "x", "fp32" if n in keep or precision == "fp32" else "int8", [n],
                              latency_ms=1.0) for n in names]
        drift, noise = [], 0.0
        for node in self.model.proto.graph.node:
            if precision != "fp32" and node.name not in keep:
                noise += 1e-2 if node.name.endswith("gate") else 1e-4
            if precision != "fp32" and noise:
                drift.append(DriftPoint(node.output[0], node.name, -10 * math.log10(noise), 1.0, 0.0))
        proj_kept = all(f"/block{b}/proj" in keep for b in range(4))
        # each kept gate helps a little (a weak revert) while its block's act is quantised
        gates_kept = sum(n.endswith("gate") and n.replace("gate", "act") not in keep for n in keep)
        agreement = 1.0 if precision == "fp32" else (0.995 if proj_kept else 0.95) + 0.0001 * gates_kept
        latency = 10.0 if precision == "fp32" else 5.0 + 0.1 * len(keep)
        return self._recorded(_stand_in_result("blocks", precision, keep, agreement, latency, layers, drift))


def test_weighted_nodes_are_the_layers_with_a_constant_operand():
    from onnx import TensorProto, helper, numpy_helper

    from workbench.precision.int8 import weighted_nodes

    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"], name="linear"),
             helper.make_node("MatMul", ["a", "x"], ["b"], name="scores"),  # activation x activation
             helper.make_node("Constant", [], ["k"], name="k", value=w),
             helper.make_node("MatMul", ["b", "k"], ["c"], name="linear_const"),
             helper.make_node("Add", ["c", "w"], ["y"], name="bias_add")]  # a weight, but not a weighted op
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])], [w])
    assert weighted_nodes(helper.make_model(graph)) == ["linear", "linear_const"]


def test_roles_group_the_same_layer_of_repeated_blocks():
    from workbench.tune import QuantUnit, UnitSensitivity, role_of, roles

    def entry(name, noise, ms=1.0):
        return UnitSensitivity(QuantUnit(name + "_layer", "x", [name], ms, None), noise, None)

    ranking = [entry("/layer.0/ffn/out", 0.1), entry("/layer.1/ffn/out", 0.1), entry("/layer.0/query", 0.5),
               entry("/layer.1/query", 0.5, ms=10.0), entry("/head", 1.0), entry("/layer.0/key", 0.0)]
    assert role_of(ranking[0].unit) == "/layer.*/ffn/out"
    groups = roles(ranking)  # /head and the lone key are not repeated roles
    assert [[u.unit.name for u in g] for g in groups] == [["/layer.0/ffn/out", "/layer.1/ffn/out"],
                                                          ["/layer.0/query", "/layer.1/query"]]  # per ms: 0.1 vs 0.09
    chain = [entry(f"/relu{i}", 1.0) for i in range(4)]
    assert roles(chain) == []  # one "role" covering every unit is the whole model, not a role


def test_a_loss_in_one_role_is_found_by_keeping_that_role_in_fp32():
    from workbench.tune import tune

    fake = _RoleLossWorkbench()
    found = tune(fake, max_drop=1.0, metric="agreement", budget=12, confirm=1, progress=False)
    steps = [c.step for c in found.configurations]
    assert steps[:3] == ["FP32 baseline", "quantise all", "quantise weighted layers only"]
    assert steps[3].startswith("confirm /block") and steps[3].endswith("/gate")  # the proxy blames a gate
    assert any(s.startswith("keep role /block*/gate") for s in steps)
    assert found.stopped == "within budget (one role kept in FP32)"
    released = [s for s in steps if s.endswith(" again")]  # the gates kept by weak reverts are quantised again
    assert len(released) == 2 and all(s.startswith("quantise /block") for s in released)
    assert sorted(found.chosen.keep_fp32) == [f"/block{b}/proj" for b in range(4)]
    assert sorted(found.chosen.kept_units) == [f"/block{b}/proj" for b in range(4)]
    assert len(found.configurations) - 1 <= 12


def test_kept_text_says_what_stays_in_fp32():
    from workbench.tune import UNWEIGHTED, TunedConfig

    def text(kept, rounding=None):
        plan = PrecisionPlan("int8") if rounding is None else PrecisionPlan("int8", weight_rounding=rounding)
        return TunedConfig("x", plan, kept, 1.0, 1.0, 8, 1.0, None, "faster", 1.0, 0.0, True).kept_text

    assert text([]) == "all int8" and text(["a"]) == "FP32: a" and text(["a", "b", "c"]) == "3 layers FP32"
    assert text([UNWEIGHTED]) == "weighted layers int8"
    assert text([UNWEIGHTED, "a", "b", "c"]) == "weighted layers int8, 3 layers FP32"
    # the starts of one search differ by weight rounding: each names its own (notebook 07 once showed three
    # identical "all int8" rows)
    assert [text([], r) for r in ("nearest", "gptq", "gptq+bc")] == \
        ["all int8", "all int8 (gptq weights)", "all int8 (gptq+bc weights)"]


class _TimedUnderLoadWorkbench(_SpreadLossWorkbench):
    """The spread-loss session, but its INT8 plans were timed while the machine was busy (25-33 ms, FP32 10 ms);
    timed again interleaved, they take half of FP32's time."""

    def run(self, precision="fp32", **options) -> RunResult:
        result = super().run(precision, **options)
        if precision != "fp32":
            busy = 25.0 + len(result.keep_fp32)
            result.latency = [LatencyStats(8, busy, busy, busy, busy, 3, 1.0)]
        return result

    def retime(self, results, *, rounds, runs) -> dict:
        self.retimed = [r.cache_key for r in results]
        return {r.cache_key: RetimedLatency.of([10.0 if r.precision == "fp32" else 5.0 + len(r.keep_fp32) / 10]
                                               * rounds, batch=8, runs=runs) for r in results}


def test_the_choice_comes_from_timing_the_finalists_again_with_fp32():
    from workbench.tune import FINALISTS, tune

    fake = _TimedUnderLoadWorkbench()
    found = tune(fake, max_drop=1.0, metric="agreement", budget=12, confirm=1, progress=False)
    inside = [c for c in found.configurations if c.within_budget and c.precision != "fp32"]
    assert inside and all(c.latency_ms > found.configurations[0].latency_ms for c in inside)  # "slower" as timed
    assert len(fake.retimed) == 1 + min(FINALISTS, len(inside)) and fake.retimed[0] == found.configurations[0].cache_key
    assert found.chosen.precision == "int8" and found.chosen.retimed.median_ms == pytest.approx(5.5)
    assert found.chosen.retimed_speedup_vs_fp32 == pytest.approx(10 / 5.5)
    assert found.chosen.to_json()["retimed"]["round_medians_ms"] == [5.5] * 5
    assert found.chosen.timing_text == "5.5 ms median re-timed in turns with FP32 (1.82x FP32)"
    assert found.configurations[1].timing_text == "25 ms median (0.40x FP32)"  # quantise all, as the search timed it


def test_retime_interleaves_caches_and_limits_what_it_holds_open(tmp_path, tiny_cnn, request):
    session = Workbench(tiny_cnn, cache_dir=tmp_path, progress=False)
    fp32, int8 = session.run("fp32", runs=3), session.run("int8", runs=3)
    timed = session.retime([fp32, int8, fp32], rounds=3, runs=4)
    assert set(timed) == {fp32.cache_key, int8.cache_key}
    assert all(len(t.round_medians_ms) == 3 and t.min_round_ms <= t.median_ms <= t.max_round_ms and t.runs == 4
               for t in timed.values())
    request.getfixturevalue("no_builds")
    again = Workbench(tiny_cnn, cache_dir=tmp_path, progress=False)
    assert again.retime([fp32, int8], rounds=3, runs=4) == timed  # from the cache: no engine is built
    with pytest.raises(AssertionError, match="no engine build"):
        again.retime([fp32, int8], rounds=3, runs=4, fresh=True)  # timed now: its engines are built
    with pytest.raises(InputSpecError, match="retime takes 1 to 3 results"):
        session.retime([])

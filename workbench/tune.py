"""Layer sensitivity and accuracy-budgeted mixed precision: which units to keep in FP32, and the fastest plan that
stays within an accuracy budget.

A *unit* is what an engine runs as one layer: the original ONNX nodes a reduced-precision engine layer covers
(`EngineLayer.onnx_nodes` that are nodes of the model), so keeping a unit in FP32 (`keep_fp32=unit.nodes`) removes
exactly one quantised layer. Sensitivity is ranked first by a free proxy (the quantisation noise each unit adds,
from the per-tensor drift every reduced-precision result already carries), then confirmed for the top candidates by
really rebuilding with that unit in FP32 and measuring. The search (after NNCF's accuracy-controlled quantisation)
quantises everything, reverts the unit that helps most, re-measures, and re-ranks from the new configuration's
drift until the accuracy drop is within budget. It also tries the weighted layers (Conv, Gemm, MatMul with weights)
alone quantised; when single reverts help little (the loss is spread over many units) it keeps one role of the
repeated blocks at a time in FP32 (the same layer in every block), then groups ranked by harm per millisecond,
doubling the group and then bisecting it. Every
configuration goes through `Workbench.run`, so it is cached: a second call with the same arguments is instant.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, replace

from tqdm.auto import tqdm

from .calibration import DEFAULT_SIZE
from .engine import REDUCED_PRECISIONS
from .errors import InputSpecError
from .graph import GraphIndex
from .jobs import CancelToken, Progress, ProgressCallback
from .jobs import check as check_cancel
from .limits import OPEN_ENGINES
from .precision import bias_correction, dynamic, gptq
from .precision.int8 import weighted_nodes
from .precision.plan import WEIGHT_ROUNDINGS, PlanFields, PrecisionPlan
from .results import RetimedLatency, RunResult, baseline_of, speedup_over
from .vocabulary import DEFAULT_BUDGET, DEFAULT_CONFIRM, DEFAULT_MAX_DROP, DEFAULT_METRIC, DEFAULT_RUNS
from .vocabulary import TUNE_METRICS as METRICS

METRIC_UNITS = {"top1": "points of top-1", "agreement": "points of agreement with FP32",
                "cosine": "cosine to FP32 (absolute)"}
PATIENCE = 2  # single-unit reverts in a row that do not help (or help little) before the search reverts groups
WEAK_STEP = 0.25  # a revert closing less than this share of the remaining accuracy gap helps little
FINALISTS = OPEN_ENGINES - 1  # reduced configurations re-timed with FP32 before choosing (the engines kept open)
RETIME_ROUNDS = 5
_QUANTISED = (*REDUCED_PRECISIONS, "mixed")
UNWEIGHTED = "every unweighted node"  # the kept unit of the "weighted layers only" configurations


@dataclass
class QuantUnit:
    """Original ONNX nodes that one reduced-precision engine layer runs: kept in FP32 together."""

    layer: str  # engine layer name
    layer_type: str
    nodes: list[str]  # node names of the original model (the keep_fp32 entries)
    latency_ms: float | None  # the layer's measured time per inference
    latency_share: float | None  # of the summed layer time

    @property
    def name(self) -> str:
        """Stable across configurations (engine layer names are not): the nodes it covers."""
        return " + ".join(self.nodes)

    def to_json(self) -> dict:
        return {**asdict(self), "name": self.name}


@dataclass
class UnitSensitivity:
    """How much one unit hurts: the proxy from drift, and (for the top candidates) the measured recovery."""

    unit: QuantUnit
    noise_added: float  # proxy: noise-to-signal power ratio this unit adds (output minus worst input), >= 0
    output_sqnr_db: float | None  # SQNR at the unit's output in the measured configuration (None: not measured)
    recovered: float | None = None  # metric gained when this unit alone stays FP32 (measured), in metric units
    confirmed_label: str | None = None  # the configuration that measured it
    confirmed_latency_ms: float | None = None  # its median latency

    @property
    def score(self) -> float:
        """What the ranking sorts by: the measured recovery where there is one, else the proxy."""
        return self.recovered if self.recovered is not None else self.noise_added

    def to_json(self) -> dict:
        return {"unit": self.unit.to_json(), "noise_added": self.noise_added, "output_sqnr_db": self.output_sqnr_db,
                "recovered": self.recovered, "confirmed_label": self.confirmed_label,
                "confirmed_latency_ms": self.confirmed_latency_ms}


@dataclass
class SensitivityReport:
    """Units of one reduced-precision result ranked by harm: confirmed units first (by measured recovery), then the
    others by the drift proxy."""

    model: str
    backend: str
    configuration: str  # label of the ranked result
    metric: str
    baseline_value: float  # FP32 value of the metric
    value: float  # the ranked result's value
    units: list[UnitSensitivity]

    def to_json(self) -> dict:
        return {"model": self.model, "backend": self.backend, "configuration": self.configuration,
                "metric": self.metric, "metric_unit": METRIC_UNITS[self.metric],
                "baseline_value": self.baseline_value, "value": self.value,
                "units": [u.to_json() for u in self.units]}


@dataclass
class TunedConfig(PlanFields):
    """One configuration the search measured, with its speed and accuracy against FP32."""

    label: str
    plan: PrecisionPlan  # its fields are keys of the JSON
    kept_units: list[str]  # units (their nodes) kept in FP32, in the order the search kept them
    latency_ms: float  # headline median
    latency_p90_ms: float
    batch: int
    speedup_vs_fp32: float | None  # FP32 median / this median
    speedup_ci: list[float] | None  # its bootstrap confidence interval (results.speedup)
    speedup_verdict: str  # "faster", "slower", within noise (THE rule of workbench.results) or "baseline"
    value: float  # the metric
    drop: float  # baseline minus value, in metric units (positive = worse than FP32)
    within_budget: bool
    on_frontier: bool = False
    step: str = ""  # how the search got here
    cache_key: str | None = None
    retimed: RetimedLatency | None = None  # finalists only: timed again interleaved with FP32 before choosing
    retimed_speedup_vs_fp32: float | None = None  # FP32's re-timed median / this one's
    precision_share: dict | None = None  # what really ran (RunResult.precision_share)
    precision_warning: str | None = None  # set when the plan left most compute in FP32 (RunResult.precision_warning)

    @property
    def kept_text(self) -> str:
        """What this configuration keeps in FP32, for labels: 'all int8', or the kept layers; a plan whose graph
        holds nothing in reduced precision says so, whatever its precision is called; a weight rounding other than
        the first ('nearest') is named, so the starts of one search read apart."""
        if self.precision == "fp32":
            return "FP32"
        graph = (self.precision_share or {}).get("graph") or {}
        if graph and not graph.get(self.precision):
            return f"FP32 (nothing in {self.precision.upper()})"
        units = [u for u in self.kept_units if u != UNWEIGHTED]
        kept = ("FP32: " + ", ".join(units)) if len(units) <= 2 else f"{len(units)} layers FP32"
        if len(units) < len(self.kept_units):
            text = f"weighted layers {self.precision}" + (f", {kept}" if units else "")
        else:
            text = kept if units else f"all {self.precision}"
        rounding = self.weight_rounding not in (None, WEIGHT_ROUNDINGS[0])
        return text + (f" ({self.weight_rounding} weights)" if rounding else "")

    @property
    def timing_text(self) -> str:
        """Its latency and speed-up for people: the interleaved re-timing when it has one, else its own median."""
        if self.retimed is not None:
            return (f"{self.retimed.median_ms:.3g} ms median re-timed in turns with FP32 "
                    f"({self.retimed_speedup_vs_fp32:.2f}x FP32)")
        return f"{self.latency_ms:.3g} ms median" + (f" ({self.speedup_vs_fp32:.2f}x FP32)"
                                                      if self.speedup_vs_fp32 else "")

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("plan")
        return {**data, **self.plan.to_record(), "kept_text": self.kept_text}


@dataclass
class TuneResult:
    """What `Workbench.tune` found: the chosen (fastest within budget) configuration and everything measured."""

    model: str
    backend: str
    precision: str
    metric: str
    max_drop: float
    budget: int
    chosen: TunedConfig | None  # None only if not even FP32 was measured
    configurations: list[TunedConfig]
    sensitivity: SensitivityReport | None
    stopped: str  # why the search ended
    fp32_median_ms: float
    results: list[RunResult] = field(default_factory=list, repr=False)  # in the order of `configurations`

    @property
    def frontier(self) -> list[TunedConfig]:
        """Configurations no other one beats on both latency and drop, fastest first."""
        return sorted((c for c in self.configurations if c.on_frontier), key=lambda c: c.latency_ms)

    def result_of(self, config: TunedConfig) -> RunResult:
        """The RunResult behind one of `configurations` (e.g. `chosen`), for views, bundles and engines."""
        return next(r for r in self.results if r.cache_key == config.cache_key)

    def to_json(self) -> dict:
        return {"model": self.model, "backend": self.backend, "precision": self.precision, "metric": self.metric,
                "metric_unit": METRIC_UNITS[self.metric], "max_drop": self.max_drop, "budget": self.budget,
                "stopped": self.stopped, "fp32_median_ms": self.fp32_median_ms,
                "chosen": self.chosen.to_json() if self.chosen else None,
                "frontier": [c.to_json() for c in self.frontier],
                "configurations": [c.to_json() for c in self.configurations],
                "sensitivity": self.sensitivity.to_json() if self.sensitivity else None}


# ---- metrics ------------------------------------------------------------------------------------
def metric_value(result: RunResult, metric: str) -> float:
    """`metric` of a result: top1 and agreement in percent, cosine as is."""
    if metric not in METRICS:
        raise InputSpecError(f"Unknown metric {metric!r}: choose one of {', '.join(METRICS)}.")
    accuracy = result.accuracy
    value = None if accuracy is None else {"top1": accuracy.top1, "agreement": accuracy.top1_agreement,
                                           "cosine": accuracy.cosine}[metric]
    if value is None:
        hint = " (the data has no labels: use metric='agreement' or 'cosine')" if metric == "top1" else ""
        raise InputSpecError(f"{result.label} has no {metric} measurement{hint}.")
    return 100.0 * value if metric in ("top1", "agreement") else float(value)


def speedup_kept(fp32_ms: float, full_ms: float, plan_ms: float) -> tuple[float, float | None]:
    """How much of the fully quantised plan's speed-up a mixed plan keeps, from medians timed in one run: the ratio
    of speed-ups (FP32/plan over FP32/full, the issue's "keeps 80 % of INT8's speed-up" is this >= 0.8), and the
    share of the gain over FP32 kept, (FP32/plan - 1) / (FP32/full - 1) (None when full is not faster than FP32)."""
    if min(fp32_ms, full_ms, plan_ms) <= 0:
        raise InputSpecError("speedup_kept needs positive latencies (medians in ms).")
    plan_x, full_x = fp32_ms / plan_ms, fp32_ms / full_ms
    return plan_x / full_x, ((plan_x - 1) / (full_x - 1)) if full_x > 1 else None


# ---- units and the drift proxy -----------------------------------------------------------------
def quantised_units(result: RunResult, node_names, dequantised=()) -> list[QuantUnit]:
    """The units of a reduced-precision result, in engine order: layers covering nodes of the original model
    (`node_names`) that run in reduced precision (or mixed) or read a dequantised value (`dequantised`: nodes of the variant
    graph fed by a DequantizeLinear, e.g. a float LayerNormalization with INT8 weights); inserted layers and
    standalone Q/DQ glue are not units."""
    if result.engine is None:
        raise InputSpecError(f"{result.label} has no engine layers: run it with profile=True to rank its units.")
    known = set(node_names)
    kept = set(result.keep_fp32)
    reads_int8 = set(dequantised)
    total = sum(layer.latency_ms or 0.0 for layer in result.engine.layers)
    units = []
    for layer in result.engine.layers:
        nodes = [n for n in layer.onnx_nodes if n in known and n not in kept]
        quantised = layer.precision in _QUANTISED or any(n in reads_int8 for n in nodes)
        if layer.inserted or not nodes or not quantised:
            continue
        units.append(QuantUnit(layer=layer.name, layer_type=layer.type, nodes=nodes, latency_ms=layer.latency_ms,
                               latency_share=(layer.latency_ms / total) if layer.latency_ms is not None and total
                               else None))
    return units


def role_of(unit: QuantUnit) -> str:
    """What a unit does regardless of which repeated block it sits in: its name with every number as '*'
    ('/bert/encoder/layer.*/output/dense/MatMul', '/_blocks.*/_project_conv/Conv')."""
    return re.sub(r"\d+", "*", unit.name)


def roles(ranking: list[UnitSensitivity]) -> list[list[UnitSensitivity]]:
    """Units that share a role in two or more repeated blocks, one group per role, most proxy harm per ms first. A
    "role" covering more than half of the units is not one (a chain of numbered nodes): the group reverts handle it."""
    groups: dict[str, list[UnitSensitivity]] = {}
    for entry in ranking:
        groups.setdefault(role_of(entry.unit), []).append(entry)
    repeated = [g for g in groups.values() if 2 <= len(g) <= len(ranking) / 2]

    def harm_per_ms(group: list[UnitSensitivity]) -> float:
        return sum(u.noise_added for u in group) / max(sum(u.unit.latency_ms or 0.0 for u in group), 1e-6)

    return sorted(repeated, key=lambda g: -harm_per_ms(g))


def dequantised_readers(variant_proto) -> set[str]:
    """Nodes of a precision-baked graph that read the output of a DequantizeLinear (they compute on INT8 data)."""
    index = GraphIndex(variant_proto)
    return {node.name for node in index.nodes if node.op_type != "QuantizeLinear" and any(
        (producer := index.producer(t)) is not None and producer.op_type == "DequantizeLinear"
        for t in node.input if t)}


def units_of(workbench, result: RunResult) -> list[QuantUnit]:
    """`quantised_units` of a result of `workbench` (its precision-baked graph says which nodes read INT8)."""
    return quantised_units(result, workbench.model.node_names,
                           dequantised_readers(workbench.variant_model(result).proto))


def _noise(sqnr_db: float) -> float:
    if math.isnan(sqnr_db):
        return math.nan
    return 0.0 if sqnr_db == math.inf else 10.0 ** (-sqnr_db / 10.0)


def rank_by_drift(result: RunResult, model_proto, units: list[QuantUnit]) -> list[UnitSensitivity]:
    """Proxy ranking: noise each unit adds (noise-to-signal ratio at its outputs minus the worst at its inputs).

    Tensors without a drift point (fused away) inherit the worst noise of their inputs; nodes outside every unit
    (folded BatchNorm, a fused Relu) belong to the unit that feeds them."""
    index = GraphIndex(model_proto)
    measured = {p.tensor: p.sqnr_db for p in result.drift}
    unit_of = {node: i for i, unit in enumerate(units) for node in unit.nodes}
    noise: dict[str, float] = {}
    owner: dict[str, int | None] = {}  # tensor -> unit that produced it
    outputs: dict[int, list[str]] = {i: [] for i in range(len(units))}
    inputs: dict[int, list[str]] = {i: [] for i in range(len(units))}
    for position in index.topological_order():
        node = index.nodes[position]
        sources = [t for t in node.input if t and t not in index.initializers]
        inherited = max((noise.get(t, 0.0) for t in sources), default=0.0)
        unit = unit_of.get(node.name)
        if unit is None:
            unit = next((owner[t] for t in sources if owner.get(t) is not None), None)
        if unit is not None:
            inputs[unit] += [t for t in sources if owner.get(t) != unit]
        for tensor in (t for t in node.output if t):
            value = _noise(measured[tensor]) if tensor in measured else math.nan
            noise[tensor] = inherited if math.isnan(value) else value
            owner[tensor] = unit
            if unit is not None:
                outputs[unit].append(tensor)
    ranked = []
    for i, unit in enumerate(units):
        out = max((noise.get(t, 0.0) for t in outputs[i]), default=0.0)
        into = max((noise.get(t, 0.0) for t in inputs[i]), default=0.0)
        seen = [measured[t] for t in outputs[i] if t in measured]
        ranked.append(UnitSensitivity(unit=unit, noise_added=max(0.0, out - into),
                                      output_sqnr_db=min(seen) if seen else None))
    return sorted(ranked, key=lambda s: -s.noise_added)


# ---- session-level work ---------------------------------------------------------------------------
def sensitivity(workbench, result: RunResult, *, metric: str = DEFAULT_METRIC, confirm: int = DEFAULT_CONFIRM,
                progress: bool | None = None, cancel: CancelToken | None = None,
                on_progress: ProgressCallback | None = None, **run_options) -> SensitivityReport:
    """Rank the units of `result` (a reduced-precision result of `workbench`) by harm: the drift proxy for all,
    confirmed for the `confirm` top ones by running `result`'s configuration with that unit also kept in FP32.
    `run_options` (batch, runs, ...) are passed to every `Workbench.run`; each confirmation is a job executed with
    `cancel` and `on_progress` (`Workbench.execute`)."""
    if result.precision == "fp32":
        raise InputSpecError("Sensitivity ranks a reduced-precision result: pass an FP16 or INT8 result.")
    baseline = _baseline(workbench, result, run_options)
    units = rank_by_drift(result, workbench.model.proto, units_of(workbench, result))
    value = metric_value(result, metric)
    show = workbench.progress if progress is None else progress
    for entry in tqdm(units[:max(confirm, 0)], desc="sensitivity", unit="unit", disable=not show):
        job = workbench.prepare_run(**_plan_options(result), keep_fp32=[*result.keep_fp32, *entry.unit.nodes],
                                    **run_options)
        trial = workbench.execute(job, progress=on_progress, cancel=cancel)
        entry.recovered = metric_value(trial, metric) - value
        entry.confirmed_label, entry.confirmed_latency_ms = trial.label, trial.headline_latency.median
    confirmed = sorted((u for u in units if u.recovered is not None), key=lambda u: -u.recovered)
    return SensitivityReport(model=result.model, backend=result.backend, configuration=result.label, metric=metric,
                             baseline_value=metric_value(baseline, metric), value=value,
                             units=confirmed + [u for u in units if u.recovered is None])


def _baseline(workbench, result: RunResult, run_options: dict) -> RunResult:
    return baseline_of(result, workbench.results) or workbench.run("fp32", **run_options)


def check_max_drop(max_drop: float) -> None:
    """A drop budget is a finite number of points (or cosine units) of 0 or more: NaN would accept everything."""
    if not isinstance(max_drop, (int, float)) or not math.isfinite(max_drop) or max_drop < 0:
        raise InputSpecError(f"--max-drop / max_drop={max_drop}: give the accuracy you can afford to lose as a finite "
                             "number of 0 or more (e.g. 0.5 points).")


def tune(workbench, precision: str = "int8", *, max_drop: float = DEFAULT_MAX_DROP, metric: str = DEFAULT_METRIC,
         budget: int = DEFAULT_BUDGET, methods=(None,), qdq_styles=(None,), calibration=None,
         weight_roundings=WEIGHT_ROUNDINGS, confirm: int = DEFAULT_CONFIRM, progress: bool | None = None,
         cancel: CancelToken | None = None, on_progress: ProgressCallback | None = None,
         **run_options) -> TuneResult:
    """Fastest configuration of `precision` (mixed with FP32 where needed) whose `metric` drops at most `max_drop`
    below FP32 (top1/agreement in points, cosine absolute), measuring at most `budget` configurations besides FP32.

    Each combination of `methods` x `qdq_styles` is measured fully quantised first (by default, for INT8 of a model
    with constant-weight MatMuls, also method "dynamic": ranges at run time, `precision.dynamic`), with the first of
    `weight_roundings` (int8: "nearest", then "gptq", then "gptq+bc", which only change the integer weights and
    biases, so they cost no speed);
    when none is within budget, again with the next rounding, and so on. The search then starts from
    the fastest within budget, else the most accurate, ranks its units (`sensitivity`, `confirm` of them
    measured), keeps the unit whose revert helps most in FP32, re-ranks from the new configuration's drift, and
    repeats while the drop exceeds `max_drop` and budget remains. Before reverting units it tries quantising the
    weighted layers alone (`weighted_nodes`); after PATIENCE reverts that help little it keeps one role of the
    repeated blocks at a time in FP32 (`_Search.revert_roles`), then groups ranked by harm per ms
    (`_Search.revert_groups`). `run_options` (batch, runs, dims, drift, ...) go to every
    `Workbench.run`. The chosen configuration is the fastest within budget (FP32 itself when no other is): FP32 and
    the FINALISTS fastest plans within budget are timed again in turns (`Workbench.retime`) and the fastest of those
    timings wins; each configuration carries its speed-up verdict against FP32.

    Every configuration is a job (`Workbench.prepare_run` / `execute`): `cancel` stops the search between
    configurations and inside each one's steps (`Cancelled` is raised; what was measured stays cached), and
    `on_progress` gets one `Progress` over the whole search: configuration k of `budget` and its step, done of
    total steps across the search.
    """
    if metric not in METRICS:
        raise InputSpecError(f"Unknown metric {metric!r}: choose one of {', '.join(METRICS)}.")
    if budget < 1:
        raise InputSpecError(f"budget={budget}: allow at least one configuration to be measured.")
    check_max_drop(max_drop)
    if precision == "fp32":
        raise InputSpecError("tune searches a reduced precision: pass precision='int8' (or 'fp16').")
    search = _Search(workbench, metric, max_drop, budget, run_options,
                     workbench.progress if progress is None else progress, cancel=cancel, on_progress=on_progress)
    try:
        stopped, report = search.run_all(precision, calibration, methods, qdq_styles,
                                         weight_roundings if precision == "int8" else (None,), confirm)
    finally:
        search.bar.close()
    configs = [search.config(r, kept, step) for r, kept, step in search.measured.values()]
    _mark_frontier(configs)
    check_cancel(cancel)
    search.report_retime()
    chosen = _choose(workbench, configs, [r for r, _, _ in search.measured.values()],
                     run_options.get("runs", DEFAULT_RUNS))
    return TuneResult(model=workbench.model.name, backend=search.baseline.backend, precision=precision,
                      metric=metric, max_drop=max_drop, budget=budget, chosen=chosen, configurations=configs,
                      sensitivity=report, stopped=stopped,
                      fp32_median_ms=search.baseline.headline_latency.median,
                      results=[r for r, _, _ in search.measured.values()])


class _Search:
    """State of one accuracy-controlled search: every configuration measured, by cache key, in order."""

    def __init__(self, workbench, metric: str, max_drop: float, budget: int, run_options: dict, progress: bool, *,
                 cancel: CancelToken | None = None, on_progress: ProgressCallback | None = None):
        self.workbench, self.metric, self.max_drop, self.budget = workbench, metric, max_drop, budget
        self.run_options = run_options
        self.cancel, self.on_progress = cancel, on_progress
        self.measured: dict[str, tuple[RunResult, list[str], str]] = {}
        self._started: list[str] = []  # jobs that reported progress since the last configuration was recorded
        self._steps = 1  # steps of one configuration (from its progress), for the search-wide done of total
        fp32 = self.run(precision="fp32")
        self.baseline = baseline_of(fp32, [fp32]) or fp32
        self.base_value = metric_value(self.baseline, metric)
        self.measured[self.baseline.cache_key] = (self.baseline, [], "FP32 baseline")
        self._started.clear()
        self.bar = tqdm(total=budget, desc="tune", unit="config", disable=not progress)

    @property
    def spent(self) -> int:
        return len(self.measured) - 1  # the FP32 baseline is free

    def drop(self, result: RunResult) -> float:
        return self.base_value - metric_value(result, self.metric)

    def run(self, **options) -> RunResult:
        """One configuration as a job, cancellable and reporting search-wide progress."""
        check_cancel(self.cancel)
        job = self.workbench.prepare_run(**options, **self.run_options)
        return self.workbench.execute(job, progress=self.forward, cancel=self.cancel)

    def forward(self, progress: Progress) -> None:
        """A configuration's step as progress of the whole search: configuration k of budget, step done of
        budget x steps."""
        if self.on_progress is None:
            return
        if progress.job not in self._started:
            self._started.append(progress.job)
        if not self.measured:  # the FP32 baseline, before configuration 1
            self.on_progress(Progress(f"search: FP32 baseline ({progress.job})", progress.step, 0,
                                      self.budget * self._steps))
            return
        self._steps = max(self._steps, progress.total)
        k = min(self.budget, self.spent + len(self._started))
        total = self.budget * self._steps
        self.on_progress(Progress(f"search: configuration {k} of {self.budget} ({progress.job})", progress.step,
                                  min((k - 1) * self._steps + progress.done, total - 1), total))

    def report_retime(self) -> None:
        if self.on_progress is not None:
            total = self.budget * self._steps
            self.on_progress(Progress("search: re-timing the finalists in turns with FP32", "retime", total - 1,
                                      total))

    def measure(self, step: str, kept: list[str], **options) -> RunResult:
        result = self.run(**options)
        if result.cache_key not in self.measured:
            self.measured[result.cache_key] = (result, kept, step)
            self.bar.update()
        self._started.clear()
        return result

    def run_all(self, precision, calibration, methods, qdq_styles, roundings, confirm):
        if tuple(methods) == (None,) and precision == "int8" and dynamic.applies(self.workbench.model.proto):
            # transformers: run-time ranges often keep the accuracy that calibrated ranges lose, at INT8 speed
            methods = (None, "dynamic")
        starts: list[RunResult] = []
        for rounding in roundings:  # a later rounding only when no start so far is within budget
            if any(self.drop(r) <= self.max_drop for r in starts):
                break
            if (rounding == "gptq" and not gptq.rounds_any(self.workbench.model.proto)) or (
                    rounding == "gptq+bc" and not bias_correction.corrects_any(self.workbench.model.proto)):
                continue  # it would rebuild the previous rounding's plan
            combos = [(method, style) for method in methods for style in qdq_styles if method != "dynamic"
                      or (style in (None, "onnxruntime") and rounding in (None, "nearest"))][:self.budget - self.spent]
            starts += [self.measure("quantise all", [], precision=precision, calibration=calibration, method=method,
                                    qdq_style=style, weight_rounding=rounding) for method, style in combos]
        within = [r for r in starts if self.drop(r) <= self.max_drop]
        if within:  # reverting units only slows a plan down: the fastest full plan within budget is the answer
            fastest = min(within, key=lambda r: r.headline_latency.median)
            return "fully quantised is within budget", self.sensitivity(fastest, confirm=0)
        current = min(starts, key=self.drop)
        weighted = set(weighted_nodes(self.workbench.model.proto))
        others = [n for n in self.workbench.model.node_names if n not in weighted]
        if weighted and others and self.spent < self.budget:
            # outliers in normalisation, attention and activation outputs (transformers) often cost most of the
            # accuracy while the weighted layers hold most of the time: try quantising those alone
            light = self.measure("quantise weighted layers only", [UNWEIGHTED],
                                 **_plan_options(current), keep_fp32=[*current.keep_fp32, *others])
            if self.drop(light) <= self.max_drop:
                return "weighted layers alone are within budget", self.sensitivity(light, confirm=0)
            current = min((current, light), key=self.drop)
        report = self.sensitivity(current, confirm=min(confirm, self.budget - self.spent))
        kept = self.measured[current.cache_key][1]
        for entry in report.units:  # the confirmations ran through the cache: record them (no new work)
            if entry.recovered is not None:
                self.measure(f"confirm {entry.unit.name}", [*kept, entry.unit.name], **_plan_options(current),
                             keep_fp32=[*current.keep_fp32, *entry.unit.nodes])
        return self.revert(current, report.units), report

    def sensitivity(self, result: RunResult, *, confirm: int) -> SensitivityReport:
        return sensitivity(self.workbench, result, metric=self.metric, confirm=confirm, progress=False,
                           cancel=self.cancel, on_progress=self.forward, **self.run_options)

    def revert(self, current: RunResult, ranking: list[UnitSensitivity]) -> str:
        """Keep the most harmful unit in FP32 while the drop exceeds the budget and reverting helps; after
        PATIENCE reverts in a row that do not help, or help little (the loss is spread), revert groups."""
        kept, tried, misses, ranked = list(self.measured[current.cache_key][1]), set(), 0, list(ranking)
        while self.drop(current) > self.max_drop:
            candidate = next((u for u in ranking if u.unit.name not in tried), None)
            if candidate is None:
                return "no unit left to revert"
            if misses >= PATIENCE:
                current, kept, ranked, stopped = self.revert_roles(current, kept, ranked)
                return stopped or self.revert_groups(current, kept, ranked)
            keep = [*current.keep_fp32, *candidate.unit.nodes]
            if self.spent >= self.budget and not self._has(current, keep):
                return "budget used up"
            tried.add(candidate.unit.name)
            trial = self.measure(f"keep {candidate.unit.name}", [*kept, candidate.unit.name],
                                 **_plan_options(current), keep_fp32=keep)
            gain, gap = self.drop(current) - self.drop(trial), self.drop(current) - self.max_drop
            if gain > 0:
                # a revert that closes less than WEAK_STEP of the gap still counts, but as a sign that the loss is
                # spread over many units: after PATIENCE such steps the search reverts groups instead
                misses = misses + 1 if gain < WEAK_STEP * gap else 0
                current, kept = trial, [*kept, candidate.unit.name]
                # re-rank from the new configuration's own drift (free: every reduced result carries it)
                fresh = rank_by_drift(current, self.workbench.model.proto, units_of(self.workbench, current))
                ranked, ranking = fresh, [u for u in fresh if u.unit.name not in tried]
            else:
                misses += 1
        return "within budget"

    def revert_roles(self, current: RunResult, kept: list[str], ranking: list[UnitSensitivity]):
        """Keep one role (the same layer in every repeated block, `roles`) in FP32 at a time, at most half the budget
        left; transformers typically lose their accuracy in one role (e.g. the feed-forward output projection, fed
        by GELU's long-tailed outputs) that the drift proxy cannot single out once noise saturates. Returns the
        best configuration (the start if no role helps), its kept units, its ranking and a stop reason if done."""
        best, best_kept = current, kept
        for group in roles(ranking)[:max(0, (self.budget - self.spent) // 2)]:
            names = [*kept, *(u.unit.name for u in group)]
            trial = self.measure(f"keep role {role_of(group[0].unit)} ({len(group)} units)", names,
                                 **_plan_options(current),
                                 keep_fp32=[*current.keep_fp32, *(n for u in group for n in u.unit.nodes)])
            if self.drop(trial) < self.drop(best):
                best, best_kept = trial, names
        if best is current:
            return current, kept, ranking, None
        if self.drop(best) <= self.max_drop:
            best, best_kept = self.release(best, best_kept, [u for u in kept if u != UNWEIGHTED])
            return best, best_kept, ranking, "within budget (one role kept in FP32)"
        fresh = rank_by_drift(best, self.workbench.model.proto, units_of(self.workbench, best))
        return best, best_kept, fresh, None

    def release(self, current: RunResult, kept: list[str], earlier: list[str]) -> tuple[RunResult, list[str]]:
        """Quantise again, one at a time, units kept in FP32 before a later step made the plan fit the budget (each
        FP32 island costs Dequantize/Quantize steps); keep each release that stays within budget."""
        for unit in earlier:
            nodes = set(unit.split(" + "))
            keep = [n for n in current.keep_fp32 if n not in nodes]
            if self.spent >= self.budget and not self._has(current, keep):
                break
            trial = self.measure(f"quantise {unit} again", [u for u in kept if u != unit], **_plan_options(current),
                                 keep_fp32=keep)
            if self.drop(trial) <= self.max_drop:
                current, kept = trial, [u for u in kept if u != unit]
        return current, kept

    def revert_groups(self, current: RunResult, kept: list[str], ranking: list[UnitSensitivity]) -> str:
        """Keep the k units with the most harm per millisecond in FP32, k = 2, 4, 8, ... until within budget, then
        bisect k down to the smallest group that still is (Polygraphy-style, in ranked order)."""
        order = sorted(ranking, key=lambda u: -u.noise_added / max(u.unit.latency_ms or 0.0, 1e-6))

        def within(k: int) -> bool | None:
            keep = [*current.keep_fp32, *(n for u in order[:k] for n in u.unit.nodes)]
            if self.spent >= self.budget and not self._has(current, keep):
                return None
            names = [*kept, *(u.unit.name for u in order[:k])]
            trial = self.measure(f"keep {k} units with most harm per ms", names, **_plan_options(current),
                                 keep_fp32=keep)
            return self.drop(trial) <= self.max_drop

        low, k = 0, min(2, len(order))  # `low` units are known not to be enough
        while True:
            ok = within(k)
            if ok is None:
                return "budget used up"
            if ok:
                break
            if k == len(order):
                return "no unit left to revert"
            low, k = k, min(2 * k, len(order))
        while k - low > 1:
            middle = (low + k) // 2
            ok = within(middle)
            if ok is None:
                return "within budget (budget used up while narrowing the group)"
            low, k = (low, middle) if ok else (middle, k)
        return "within budget"

    def _has(self, current: RunResult, keep: list[str]) -> bool:
        wanted = replace(current.plan, keep_fp32=tuple(sorted(keep)))
        return any(replace(r.plan, keep_fp32=tuple(sorted(r.keep_fp32))) == wanted for r, _, _ in self.measured.values())

    def config(self, result: RunResult, kept: list[str], step: str) -> TunedConfig:
        head = result.headline_latency
        drop = self.drop(result)
        gain = speedup_over(result, self.baseline)
        return TunedConfig(label=result.label, plan=result.plan, kept_units=list(kept),
                           latency_ms=head.median, latency_p90_ms=head.p90, batch=head.batch,
                           speedup_vs_fp32=gain.ratio if gain else None,
                           speedup_ci=None if gain is None or gain.low is None else [gain.low, gain.high],
                           speedup_verdict="baseline" if result is self.baseline else
                           gain.verdict if gain else "not comparable",
                           value=metric_value(result, self.metric), drop=drop,
                           within_budget=drop <= self.max_drop, step=step, cache_key=result.cache_key,
                           precision_share=result.precision_share, precision_warning=result.precision_warning)


def _choose(workbench, configs: list[TunedConfig], results: list[RunResult], runs: int) -> TunedConfig | None:
    """The fastest configuration within budget. Each was timed when the search reached it, under whatever load the
    machine had then, so the FINALISTS fastest reduced ones are timed again interleaved with FP32
    (`Workbench.retime`) and the fastest of those timings wins (FP32 when it is)."""
    inside = [c for c in configs if c.within_budget]
    reduced = sorted((c for c in inside if c.precision != "fp32"), key=lambda c: c.latency_ms)[:FINALISTS]
    if not reduced:
        return min(inside, key=lambda c: c.latency_ms) if inside else None
    finalists = [configs[0], *reduced]  # configs[0] is the FP32 baseline
    by_key = {r.cache_key: r for r in results}
    timed = workbench.retime([by_key[c.cache_key] for c in finalists], rounds=RETIME_ROUNDS, runs=max(5, runs // 3))
    for config in finalists:
        config.retimed = timed[config.cache_key]
        config.retimed_speedup_vs_fp32 = timed[configs[0].cache_key].median_ms / config.retimed.median_ms
    return min(finalists, key=lambda c: c.retimed.median_ms)


def _plan_options(result: RunResult) -> dict:
    """The run() arguments that rebuild `result`'s precision plan (every field but keep_fp32) and calibration."""
    plan = {name: value for name, value in result.plan.to_record().items() if name != "keep_fp32"}
    return {**plan, "calibration": result.calibration, "calibration_size": result.calibration_size or DEFAULT_SIZE}


def _mark_frontier(configs: list[TunedConfig]) -> None:
    for config in configs:
        config.on_frontier = not any(
            other is not config and other.latency_ms <= config.latency_ms and other.drop <= config.drop
            and (other.latency_ms < config.latency_ms or other.drop < config.drop) for other in configs)

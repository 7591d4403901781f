"""Self-contained HTML reports (plotly.js and SVGs inlined; opens offline) from stored results."""
from __future__ import annotations

import contextlib
import html
import json
import math
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from .backends import get_backend
from .output import atomic_write, check_outputs
from .backends.cpu_features import cpu_flags
from .calibration import DEFAULT_SIZE
from .errors import InputSpecError, MissingDependencyError, WorkbenchError
from .results import RetimedLatency, RunResult, Speedup, baseline_of, paired_speedup, speedup_over
from .vocabulary import ACCURACY_METRICS
from .views.accuracy_text import metric_text, metric_value_text, metrics_text
from .views.tables import html_table, summary_html

_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#222;line-height:1.45}
main{max-width:1200px;margin:1.5rem auto;padding:0 1rem;box-sizing:border-box}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.3rem;margin-top:2.5rem}
p{max-width:60rem}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.4rem .8rem;margin:.5rem 0}
.warning{background:#fdecea;border-left:4px solid #b00020;padding:.4rem .8rem;margin:.5rem 0;font-weight:600}
code,pre{background:#f4f4f4;padding:.1rem .3rem;border-radius:3px} pre{padding:.6rem;overflow-x:auto;white-space:pre-wrap}
.fusion{max-width:100%;overflow-x:auto}
.not-measured .workbench-table td.wrap:last-child{max-width:36rem;overflow-wrap:anywhere}
.headline{font-size:1.15rem;background:#eef6ee;border-left:4px solid #2e7d32;padding:.6rem .9rem;max-width:60rem}
"""


_NOTABLE_FLAGS = frozenset({"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8"})


class _Html:
    """Accumulates report sections; the first plotly figure carries the inlined plotly.js."""

    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []
        self._plotly_included = False

    def heading(self, text: str, section_id: str) -> None:
        self.parts.append(f'<h2 id="{section_id}">{html.escape(text)}</h2>')

    def text(self, text: str, css: str = "") -> None:
        cls = f' class="{css}"' if css else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def raw(self, markup: str) -> None:
        self.parts.append(markup)

    def figure(self, fig: go.Figure) -> None:
        self.parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=not self._plotly_included,
                                      default_width="100%", config={"displaylogo": False, "responsive": True}))
        self._plotly_included = True

    def table(self, rows: Sequence[dict], columns: Sequence[str] | None = None) -> None:
        self.parts.append(html_table(rows, columns=columns))

    def section(self, title: str, section_id: str, build: Callable[[], None]) -> None:
        """A section whose optional dependency may be missing: say so in the report instead of failing."""
        self.heading(title, section_id)
        try:
            build()
        except MissingDependencyError as exc:
            self.text(f"Not shown: {exc}", "note")

    def render(self) -> str:
        return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
                f"<style>{_STYLE}</style></head><body><main><h1>{html.escape(self.title)}</h1>"
                + "\n".join(self.parts) + "</main></body></html>")


def _versions(results) -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for result in results:
        versions.update({f"{k}": v for k, v in result.versions.items()})
    return versions


@dataclass
class Failure:
    """A configuration a report could not measure (refused by the precision step, or its engine failed to build or
    run), kept as a row with its reason while everything else is measured."""

    precision: str
    backend: str
    label: str
    error_type: str
    reason: str

    @classmethod
    def of(cls, exc: BaseException, *, precision: str, backend: str, label: str) -> "Failure":
        return cls(precision, backend, label, type(exc).__name__, str(exc).strip() or repr(exc))

    def to_json(self) -> dict:
        return asdict(self)


COMPARISON_ROUNDS = 7  # the fewest rounds whose lowest and highest speed-up bound a 95 % interval of the median
COMPARISON_RUNS = 10  # timed runs per configuration per round


@dataclass
class Comparison:
    """Every configuration of a report timed again in the same interleaved rounds (`measure.interleaved_latency`:
    FP32 and each variant of every engine in turn, `rounds` times): the report's speed-ups, their intervals and
    its headline come from these rounds (`results.paired_speedup`), not from runs timed minutes apart."""

    rounds: int
    runs: int  # timed runs per configuration in each round
    timings: dict[str, RetimedLatency]  # by result cache key

    def speedup(self, result: RunResult, base: RunResult) -> Speedup | None:
        mine, theirs = self.timings.get(result.cache_key), self.timings.get(base.cache_key)
        return None if mine is None or theirs is None else paired_speedup(mine, theirs)

    def to_json(self, result: RunResult) -> dict | None:
        """What the summary row of `result` adds under "interleaved" (None when it was not re-timed)."""
        timing = self.timings.get(result.cache_key)
        return None if timing is None else {"rounds": self.rounds, **timing.to_json()}


def interleaved_comparison(sessions, results: Sequence[RunResult], *, rounds: int = COMPARISON_ROUNDS,
                           runs: int = COMPARISON_RUNS, fresh: bool = False) -> Comparison | None:
    """Time every result of a report again, all engines in turns in the same rounds (so the fastest is chosen, and
    each speed-up measured, under the same load). Cached in the first session's cache like `Workbench.retime`
    (asking again is instant) unless `fresh`. None when there is nothing to compare (no two results)."""
    from .measure import interleaved_latency

    if len(results) < 2:
        return None
    session_of = {s.backend_name: s for s in sessions}
    head = results[0].headline_latency
    keys = [r.cache_key for r in results]
    cache = sessions[0].cache
    key = cache.key(kind="report-comparison", results=keys, rounds=rounds, runs=runs, batch=head.batch,
                    dims=head.dims or None)
    stored = None if fresh else cache.get(key)
    if stored is None:
        engines = {r.cache_key: session_of[r.backend].engine(r) for r in results}
        timed = interleaved_latency(engines, session_of[results[0].backend].latency_feeds(results[0]),
                                    batch=head.batch, rounds=rounds, runs=runs)
        cache.put(key, {k: v.to_json() for k, v in timed.items()})
    else:
        timed = {k: RetimedLatency(**v) for k, v in stored.items()}
    return Comparison(rounds, runs, timed)


def build_report(sessions, results, *, command: str = "", failures: Sequence[Failure] = (),
                 comparison: Comparison | None = None) -> str:
    """HTML for a `report` run: summary (with the configurations that could not be measured and why), fusion,
    per-layer latency, drift, policies, cost, provenance. With `comparison`, speed-ups and the headline come
    from its interleaved rounds."""
    from . import views
    from .scenarios import cost, policy
    from .views import scenario_figures

    model = sessions[0].model
    doc = _Html(f"TensorRT Workbench report: {model.name}")
    doc.text(headline(results, comparison=comparison), "headline")
    if failures:
        doc.text(f"{len(failures)} configuration{'s' * (len(failures) != 1)} could not be measured: "
                 + ", ".join(f.label for f in failures) + " (see “Not measured” below). Everything else was.",
                 "warning")
    doc.text(f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}. Model source: {model.source}.")
    if any(r.synthetic_data for r in results):
        doc.text("These results were measured on synthetic inputs generated from the model's input specs: "
                 "accuracy is agreement with FP32 only.", "note")

    doc.heading("Summary", "summary")
    for result in results:
        if result.precision_warning:
            doc.text(result.precision_warning, "warning")
    doc.text("Which precisions each engine really runs faster on this machine's CPU "
             f"({', '.join(sorted(cpu_flags() & _NOTABLE_FLAGS)) or 'no VNNI/BF16/AMX'}):")
    doc.table([accelerated_row(get_backend(name)) for name in dict.fromkeys(r.backend for r in results)])
    doc.raw(summary_html(results, retimed=comparison.timings if comparison else None))
    if comparison is not None:
        doc.text(f"Speed-ups, their 95 % intervals and verdicts come from {comparison.rounds} interleaved rounds: in "
                 f"each round every configuration above ran {comparison.runs} timed runs in turn, so load that comes "
                 "and goes slows them alike. The interval is that of the median of the per-round ratios. The median "
                 "latency, its interval and p90 are from each configuration's own runs, timed one after another.", "note")
    colors = views.config_colors(results)
    doc.figure(views.tradeoff_figure(results, colors=colors))
    if failures:
        doc.raw('<h3 id="not-measured">Not measured</h3><div class="not-measured">')
        doc.table([{"configuration": f.label, "engine": f.backend, "error": f.error_type, "reason": f.reason}
                   for f in failures])
        doc.raw("</div>")
    _outputs_and_data(doc, results)

    def fusion() -> None:
        for result in results:
            if result.engine is None:
                continue
            session = next(s for s in sessions if s.backend_name == result.backend)
            pages = views.fusion_pages_html(session.variant_model(result), result.engine)
            doc.raw(f"<h3>{html.escape(result.label)}</h3><div class='fusion'>{pages}</div>")
    doc.section("Layer fusion: graph before and after", "fusion", fusion)

    doc.heading("Per-layer latency", "layers")
    for result in results:
        if result.engine is not None:
            doc.figure(views.layer_latency_figure(result, order="sorted", top=30))
    by_backend: dict[str, list] = {}
    for result in results:
        by_backend.setdefault(result.backend, []).append(result)
    for group in by_backend.values():
        for other in group:
            base = baseline_of(other, group)
            if base is not None and other is not base and other.engine and base.engine:
                doc.figure(views.layer_latency_comparison(base, other, colors=colors))

    engines = list(by_backend)
    if len(engines) > 1:  # the same plan on two engines, layer by layer (matched by the ONNX nodes each covers)
        doc.raw("<h3>Engines side by side</h3>")
        first = {r.precision: r for r in by_backend[engines[0]]}
        for other in engines[1:]:
            for result in by_backend[other]:
                base = first.get(result.precision)
                if base is not None and base.engine and result.engine:
                    doc.figure(views.layer_latency_comparison(base, result, colors=colors))

    doc.heading("Per-layer accuracy drift", "drift")
    drifting = [r for r in results if r.drift]
    if drifting:
        doc.text(views.SQNR_COSINE_EXPLANATION)
        doc.figure(views.drift_figure(drifting, colors=colors))
    else:
        doc.text("No reduced-precision configuration with drift measurements in this run.")

    doc.section("Why layers drift: weights or activations", "inside", lambda: inside_section(doc, sessions, results))

    doc.heading("Why is it not faster? Engine lint", "lint")
    lint_section(doc, sessions, results)

    doc.heading("Regional precision policies", "policy")
    policies = policy.default_policies()
    choices = policy.choose(policies, results)
    doc.figure(scenario_figures.policy_matrix_figure(choices, results))
    doc.table([policy_row(c) for c in choices])

    doc.heading("Cost model", "cost")
    doc.table(cost.cost_table(results), columns=_COST_COLUMNS)
    doc.text(cost.__doc__.strip().splitlines()[0] if cost.__doc__ else "")

    _provenance(doc, command, results)
    return doc.render()


def _outputs_and_data(doc: _Html, results) -> None:
    """Every output's metrics by its task (detection, segmentation, labels, sequences, states: not only class
    scores) and where each result's data came from."""
    def number(value, spec: str) -> str:  # NaN outputs come back from the cache as null
        return "n/a" if value is None or not math.isfinite(value) else format(value, spec)

    rows = [{"configuration": r.label, "output": o.name, "task": o.task or "n/a",
             "shape": "x".join(map(str, o.shape)),
             "metrics": o.note if o.note and not o.metrics else metrics_text(o.metrics) if o.task else "n/a",
             "cosine": number(o.cosine, ".5f"), "max-abs error": number(o.max_abs_diff, ".3g")}
            for r in results if r.accuracy and (r.precision != "fp32" or any(
                o.metrics.get(name) is not None for o in r.accuracy.outputs for name in _VS_LABELS))
            for o in r.accuracy.outputs]
    if rows:
        doc.heading("Every output: metrics by task", "outputs")
        doc.text("Each output is measured with the metrics of its task (declared with --task OUTPUT=TASK or "
                 "tasks=, else inferred from its name, type and shape); \"vs FP32\" compares with the FP32 engine's "
                 "outputs on the same data, the others with the labels. n/a: the metric does not apply.")
        doc.table(rows)
    rows = {}
    for result in results:
        for part, source in (result.data_source or {}).items():
            if source:
                row = {"used for": part, **{k: v for k, v in source.items() if k != "classes"}}
                rows.setdefault(json.dumps(row, sort_keys=True), row)
    if rows:
        doc.heading("Data", "data")
        doc.table(list(rows.values()))


ACCURACY_MARGIN = 0.005  # "within 0.5 points of FP32 accuracy" (the headline metric: top-1, agreement, mean IoU...)
_VS_LABELS = ("top1", "pixel_accuracy", "mean_iou_labels", "map50_labels", "token_accuracy")  # FP32 rows show these


@dataclass
class HeadlineChoice:
    """What the headline claims: the fastest configuration within ACCURACY_MARGIN of its FP32 baseline's accuracy,
    that baseline, and the speed-up over it (None when it is FP32 itself), from interleaved rounds or separate runs."""

    result: RunResult
    base: RunResult
    gain: Speedup | None
    timing: str  # "interleaved rounds" or "separate runs"
    reduced_within_margin: bool  # whether any reduced-precision result was within the margin at all

    def to_json(self) -> dict:
        gain = self.gain
        return {"configuration": self.result.label, "baseline": self.base.label,
                "verdict": "baseline" if gain is None else gain.verdict, "speedup": gain.ratio if gain else None,
                "ci": [gain.low, gain.high] if gain and gain.low is not None else None, "timing": self.timing}


def headline_choice(results: Sequence[RunResult], *, comparison: Comparison | None = None) -> HeadlineChoice | None:
    """The configuration `headline` opens with (None when none has an FP32 baseline): the highest throughput, or
    with `comparison` the lowest median of its interleaved rounds, among results within ACCURACY_MARGIN."""
    candidates = []
    for result in results:
        base = baseline_of(result, results)
        if base is not None and _within_margin(result, base) and not result.precision_warning:  # not really FP16/INT8
            candidates.append((result, base))
    if not candidates:
        return None
    reduced = any(r is not b for r, b in candidates)
    timings = comparison.timings if comparison else {}
    if all(r.cache_key in timings for r, _ in candidates):
        result, base = min(candidates, key=lambda pair: timings[pair[0].cache_key].median_ms)
        gain = None if result is base else comparison.speedup(result, base)
        return HeadlineChoice(result, base, gain, "interleaved rounds", reduced)
    result, base = max(candidates, key=lambda pair: pair[0].headline_latency.throughput)
    gain = None if result is base else speedup_over(result, base)
    return HeadlineChoice(result, base, gain, "separate runs", reduced)


def headline(results: Sequence[RunResult], *, comparison: Comparison | None = None) -> str:
    """One or two sentences opening the report: the fastest configuration within ACCURACY_MARGIN of its FP32
    baseline's accuracy (`headline_choice`), its speed-up over that baseline with the interval (or "no measurable
    difference"), and what its engine fused. With `comparison`, "fastest" and the speed-up come from its
    interleaved rounds (and the text says so)."""
    choice = headline_choice(results, comparison=comparison)
    if not results:
        return "Nothing could be measured: see the configurations not measured and why."
    if choice is None:
        if any(baseline_of(r, results) is not None for r in results) and \
                all(_metric(r)[1] is None for r in results):
            return ("No accuracy metric applies to this model's outputs, so no configuration can be called as "
                    "accurate as FP32: declare what the outputs are (--task OUTPUT=TASK, Python tasks= or metric=); "
                    "speeds are in the summary.")
        return ("No configuration could be compared with an FP32 baseline of the same model, engine and batch: "
                "run FP32 too to see what reduced precision changes.")
    result, base, gain = choice.result, choice.base, choice.gain
    batch = result.headline_latency.batch
    if choice.timing == "interleaved rounds":
        rounds = f" in {comparison.rounds} interleaved rounds"
        median = comparison.timings[result.cache_key].median_ms
        per_batch = f"{median:.3f} ms per batch of {batch} (median of the rounds)"
    else:
        rounds, per_batch = "", f"{result.headline_latency.median:.3f} ms per batch of {batch}"
    text = (f"Fastest within {_margin_text(result)} of FP32 on {_metric_words(result)}{rounds}: {result.label}, "
            f"{per_batch}")
    if gain is None:
        text += (": FP32 itself, no reduced precision within that margin is faster."
                 if choice.reduced_within_margin else ": FP32 itself, no reduced-precision result is within that margin.")
    else:
        relation = "faster than" if gain.verdict == "faster" else "slower than" if gain.measurable else "from"
        text += (f"; {gain.text()} {relation} FP32 on {result.backend}, {_accuracy_text(result)} "
                 f"(FP32 {metric_value_text(_metric(base)[0], _metric(base)[1])}).")
    return text + _fused_text(result)


def _metric(result: RunResult) -> tuple[str, float | None, str | None]:
    """(metric name, value, output) that decides the headline (`AccuracyStats.headline`)."""
    return result.accuracy.headline if result.accuracy is not None else ("agreement", None, None)


def _within_margin(result: RunResult, base: RunResult) -> bool:
    (name, value, output), (base_name, base_value, base_output) = _metric(result), _metric(base)
    return value is not None and base_value is not None and (name, output) == (base_name, base_output) and \
        value >= base_value - ACCURACY_MARGIN


def _margin_text(result: RunResult) -> str:
    kind = ACCURACY_METRICS.get(_metric(result)[0], ("", "number", True))[1]
    return f"{ACCURACY_MARGIN * 100:.1f} points" if kind == "fraction" else f"{ACCURACY_MARGIN:g}"


def _metric_words(result: RunResult) -> str:
    name, _, output = _metric(result)
    return metric_text(name, None, output).removesuffix(" n/a")


def _accuracy_text(result: RunResult) -> str:
    name, value, output = _metric(result)
    return metric_text(name, value, output)


def _fused_text(result: RunResult) -> str:
    fused = [layer for layer in (result.engine.layers if result.engine else []) if len(layer.onnx_nodes) > 1]
    if not fused:
        return "" if result.engine is None else " Its engine fused no ONNX nodes together."
    types: dict[str, int] = {}
    for layer in fused:
        types[layer.type] = types.get(layer.type, 0) + 1
    common = ", ".join(f"{name} ×{count}" for name, count in sorted(types.items(), key=lambda t: -t[1])[:3])
    layers = f"{len(fused)} layer" + "s" * (len(fused) != 1)
    return (f" Fused: {sum(len(l.onnx_nodes) for l in fused)} ONNX nodes into {layers} ({common}"
            + (", …" if len(types) > 3 else "") + ").")


def lint_section(doc: _Html, sessions, results) -> None:
    """Lint findings (workbench.lint) of each reduced-precision result: what costs time and what to change."""
    from .lint import findings_table, lint_result, op_types_of

    reduced = [r for r in results if r.precision != "fp32" and r.engine is not None]
    if not reduced:
        doc.text("No reduced-precision configuration in this run.")
    for result in reduced:
        session = next((s for s in sessions if s.backend_name == result.backend), None)
        op_types = op_types_of(session.variant_model(result)) if session is not None else None
        findings = lint_result(result, op_types)
        doc.raw(f"<h3>{html.escape(result.label)}</h3>")
        if findings:
            doc.table(findings_table(findings))
        else:
            doc.text("Nothing to flag: no rule found time lost to conversions, misaligned channels or layer shape.")


def inside_section(doc: _Html, sessions, results) -> None:
    """For the first calibrated INT8 result: where its error comes from (weights or activations, worst tensors
    first), the histogram of the worst tensor with every method's range, and the weight ranges of its layer."""
    from . import inside
    from .measure.decomposition import worst
    from .views import inside as inside_views

    result = next((r for r in results if r.precision == "int8" and r.method != "dynamic" and r.drift), None)
    if result is None:
        doc.text("No calibrated INT8 configuration with drift measurements in this run.")
        return
    session = next(s for s in sessions if s.backend_name == result.backend)
    size = result.calibration_size or DEFAULT_SIZE
    doc.raw(f"<h3>{html.escape(result.label)}</h3>")
    try:
        rows = inside.error_sources(session, result)
        calibrated = inside.method_ranges(session, calibration=result.calibration, methods=(result.method,),
                                          calibration_size=size)[result.method]
    except WorkbenchError as exc:  # e.g. a plan whose graph cannot be split: say so, keep the rest of the report
        doc.text(f"Not shown: {exc}", "note")
        return
    doc.figure(inside_views.error_sources_figure(rows))
    doc.table(inside_views.error_sources_table(rows, count=5))
    tensor = next((row for row in worst(rows, len(rows)) if row.tensor in calibrated), None)
    if tensor is None:
        doc.text("No calibrated tensor among the drift points: no histogram to show.", "note")
        return
    try:
        histogram = inside.histogram(session, tensor.tensor, calibration=result.calibration, calibration_size=size,
                                     qdq_style=result.qdq_style)
        doc.figure(inside_views.histogram_figure(histogram))
    except WorkbenchError as exc:
        doc.text(f"No histogram of {tensor.tensor}: {exc}", "note")
    with contextlib.suppress(InputSpecError):  # a layer without a constant weight (pooling, Add) has none
        doc.figure(inside_views.weight_ranges_figure(inside.weight_ranges(session, tensor.tensor)))


def build_plan_report(plans, *, command: str = "") -> str:
    """HTML for imported TensorRT plans: per-plan summary and, with several, a layer-by-layer comparison."""
    from .trtplan import report as plan_report

    doc = _Html("TensorRT Workbench: engine plans " + ", ".join(p.name for p in plans))
    doc.heading("Summary", "summary")
    for plan in plans:
        summary = plan_report.plan_summary(plan)
        doc.raw(f"<h3>{html.escape(plan.name)}</h3>")
        doc.table(summary.get("by_type", []))
        doc.figure(plan_report.plan_latency_by_type_figure(plan))
    if len(plans) > 1:
        doc.heading("Comparison", "comparison")
        doc.figure(plan_report.plan_comparison_figure({p.name: p for p in plans}))
    _provenance(doc, command, [])
    return doc.render()


def _provenance(doc: _Html, command: str, results) -> None:
    doc.heading("How this report was made", "provenance")
    if command:
        doc.raw(f"<pre>{html.escape(command)}</pre>")
    doc.table([{"package": k, "version": v} for k, v in _versions(results).items()])


def write_report(sessions, results, path: str | Path, *, command: str = "", failures: Sequence[Failure] = (),
                 comparison: Comparison | None = None) -> Path:
    """Write the HTML report of `results` to `path`; never onto a file the sessions read (model, data)."""
    check_outputs({"path": path}, inputs=[p for session in sessions for p in session.input_paths])
    return _write(path, build_report(sessions, results, command=command, failures=failures, comparison=comparison))


def write_plan_report(plans, path: str | Path, *, command: str = "") -> Path:
    return _write(path, build_plan_report(plans, command=command))


def _write(path: str | Path, text: str) -> Path:
    return atomic_write(path, text.encode("utf-8"))


_COST_COLUMNS = ("config", "batch", "latency_ms", "requests_per_day", "engine_hours_per_day", "instances",
                 "cost_per_month", "provisioned_cost_per_month", "savings_vs_fp32")


def policy_row(choice) -> dict:
    """A region's policy and its chosen configuration, as a reader wants to see it (no cache keys)."""
    return {"region": choice.region, "allowed precisions": ", ".join(choice.policy.allowed_precisions),
            "max top-1 drop (points)": choice.policy.max_accuracy_drop, "choice": choice.config or "none allowed",
            "batch": choice.batch, "why": choice.reason}


def accelerated_row(backend) -> dict:
    """Which precisions (and INT8 Q/DQ styles) `backend` runs faster than FP32 on this machine."""
    row = {"engine": backend.name}
    for precision in ("fp16", "bf16"):
        row[precision] = backend.accelerated(precision)
    for style in ("onnxruntime", "tensorrt"):
        row[f"int8 ({style} Q/DQ)"] = backend.accelerated("int8", style)
    return row

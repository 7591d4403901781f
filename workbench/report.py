"""Self-contained HTML reports (plotly.js and SVGs inlined; opens offline) from stored results."""
from __future__ import annotations

import contextlib
import html
import json
import math
import platform
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from .backends import get_backend
from .output import atomic_write
from .backends.cpu_features import cpu_flags
from .errors import InputSpecError, MissingDependencyError
from .results import RunResult, baseline_of, speedup_over
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


def build_report(sessions, results, *, command: str = "") -> str:
    """HTML for a `report` run: summary, fusion, per-layer latency, drift, policies, cost, provenance."""
    from . import views
    from .scenarios import cost, policy
    from .views import scenario_figures

    model = sessions[0].model
    doc = _Html(f"TensorRT Workbench report: {model.name}")
    doc.text(headline(results), "headline")
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
    doc.raw(summary_html(results))
    colors = views.config_colors(results)
    doc.figure(views.tradeoff_figure(results, colors=colors))
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
    """Agreement with FP32 for every output (detection maps, sequences, states: not only class scores) and where
    each result's data came from."""
    def number(value, spec: str) -> str:  # NaN outputs come back from the cache as null
        return "n/a" if value is None or not math.isfinite(value) else format(value, spec)

    rows = [{"configuration": r.label, "output": o.name, "shape": "x".join(map(str, o.shape)),
             "cosine": number(o.cosine, ".5f"), "max-abs error": number(o.max_abs_diff, ".3g"),
             "top-1 agreement": "n/a (not class scores)" if o.top1_agreement is None else f"{o.top1_agreement:.2%}"}
            for r in results if r.precision != "fp32" and r.accuracy for o in r.accuracy.outputs]
    if rows:
        doc.heading("Every output: agreement with FP32", "outputs")
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


ACCURACY_MARGIN = 0.005  # "within 0.5 points of FP32 accuracy" (top-1, or agreement with FP32 without labels)


def headline(results: Sequence[RunResult]) -> str:
    """One or two sentences opening the report: the fastest configuration (highest throughput) within
    ACCURACY_MARGIN of its FP32 baseline's accuracy, its speed-up over that baseline with the interval (or "no
    measurable difference"), and what its engine fused."""
    candidates = []
    for result in results:
        base = baseline_of(result, results)
        if base is not None and _within_margin(result, base) and not result.precision_warning:  # not really FP16/INT8
            candidates.append((result, base))
    if not candidates:
        return ("No configuration could be compared with an FP32 baseline of the same model, engine and batch: "
                "run FP32 too to see what reduced precision changes.")
    result, base = max(candidates, key=lambda pair: pair[0].headline_latency.throughput)
    head = result.headline_latency
    text = (f"Fastest within {ACCURACY_MARGIN * 100:.1f} points of FP32 accuracy: {result.label}, "
            f"{head.median:.3f} ms per batch of {head.batch}")
    if result is base:
        reduced = any(r is not b for r, b in candidates)
        text += (": FP32 itself, no reduced precision within that margin is faster." if reduced else
                 ": FP32 itself, no reduced-precision result is within that margin.")
    else:
        gain = speedup_over(result, base)
        relation = "faster than" if gain.verdict == "faster" else "slower than" if gain.measurable else "from"
        text += (f"; {gain.text()} {relation} FP32 on {result.backend}, {_accuracy_text(result)} "
                 f"(FP32 {_accuracy_text(base)}).")
    return text + _fused_text(result)


def _metric(result: RunResult) -> tuple[str, float | None]:
    acc = result.accuracy
    if acc is None:
        return "agreement", None
    return ("top-1", acc.top1) if acc.top1 is not None else ("agreement", acc.top1_agreement)


def _within_margin(result: RunResult, base: RunResult) -> bool:
    (name, value), (base_name, base_value) = _metric(result), _metric(base)
    return value is not None and base_value is not None and name == base_name and \
        value >= base_value - ACCURACY_MARGIN


def _accuracy_text(result: RunResult) -> str:
    name, value = _metric(result)
    return f"{name} {value * 100:.2f}%"


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
    rows = inside.error_sources(session, result)
    doc.raw(f"<h3>{html.escape(result.label)}</h3>")
    doc.figure(inside_views.error_sources_figure(rows))
    doc.table(inside_views.error_sources_table(rows, count=5))
    tensor = worst(rows, 1)[0]
    doc.figure(inside_views.histogram_figure(inside.histogram(session, tensor.tensor, calibration=result.calibration,
                                                              qdq_style=result.qdq_style)))
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


def write_report(sessions, results, path: str | Path, *, command: str = "") -> Path:
    return _write(path, build_report(sessions, results, command=command))


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

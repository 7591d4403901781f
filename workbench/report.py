"""Self-contained HTML reports (plotly.js and SVGs inlined; opens offline) from stored results."""
from __future__ import annotations

import html
import json
import platform
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio

from .backends import get_backend
from .cache import atomic_write
from .backends.cpu_features import cpu_flags
from .errors import MissingDependencyError
from .views.tables import html_table

_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1400px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.3rem;margin-top:2.5rem}
table.meta{border-collapse:collapse;font-size:.9rem;margin:.8rem 0} table.meta td,table.meta th{border:1px solid #ddd;padding:.25rem .6rem;text-align:left}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.4rem .8rem;margin:.5rem 0}
code,pre{background:#f4f4f4;padding:.1rem .3rem;border-radius:3px} pre{padding:.6rem;overflow-x:auto}
.fusion{overflow-x:auto}
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
                                      config={"displaylogo": False}))
        self._plotly_included = True

    def table(self, rows: Sequence[dict]) -> None:
        self.parts.append(html_table(rows, css_class="meta"))

    def section(self, title: str, section_id: str, build: Callable[[], None]) -> None:
        """A section whose optional dependency may be missing: say so in the report instead of failing."""
        self.heading(title, section_id)
        try:
            build()
        except MissingDependencyError as exc:
            self.text(f"Not shown: {exc}", "note")

    def render(self) -> str:
        return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>"
                + "\n".join(self.parts) + "</body></html>")


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
    doc.text(f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}. Model source: {model.source}.")
    if any(r.synthetic_data for r in results):
        doc.text("These results were measured on synthetic inputs generated from the model's input specs: "
                 "accuracy is agreement with FP32 only.", "note")

    doc.heading("Summary", "summary")
    doc.text("Which precisions each engine really runs faster on this machine's CPU "
             f"({', '.join(sorted(cpu_flags() & _NOTABLE_FLAGS)) or 'no VNNI/BF16/AMX'}):")
    doc.table([{"engine": name, **get_backend(name).accelerated_precisions()}
               for name in dict.fromkeys(r.backend for r in results)])
    doc.table([{k: v for k, v in row.items() if k != "notes"} for row in views.summary_table(results)])
    doc.figure(views.tradeoff_figure(results))
    for note in sorted({n for r in results for n in r.notes}):
        doc.text(note, "note")
    _outputs_and_data(doc, results)

    def fusion() -> None:
        for result in results:
            if result.engine is None:
                continue
            session = next(s for s in sessions if s.backend_name == result.backend)
            view = views.fusion_graph(session.variant_model(result), result.engine)
            doc.raw(f"<h3>{html.escape(result.label)}</h3><div class='fusion'>{view._repr_html_()}</div>")
    doc.section("Layer fusion: graph before and after", "fusion", fusion)

    doc.heading("Per-layer latency", "layers")
    for result in results:
        if result.engine is not None:
            doc.figure(views.layer_latency_figure(result, order="sorted", top=30))
    by_backend: dict[str, list] = {}
    for result in results:
        by_backend.setdefault(result.backend, []).append(result)
    for group in by_backend.values():
        base = next((r for r in group if r.precision == "fp32"), None)
        for other in group:
            if base is not None and other is not base and other.engine and base.engine:
                doc.figure(views.layer_latency_comparison(base, other))

    engines = list(by_backend)
    if len(engines) > 1:  # the same plan on two engines, layer by layer (matched by the ONNX nodes each covers)
        doc.raw("<h3>Engines side by side</h3>")
        first = {r.precision: r for r in by_backend[engines[0]]}
        for other in engines[1:]:
            for result in by_backend[other]:
                base = first.get(result.precision)
                if base is not None and base.engine and result.engine:
                    doc.figure(views.layer_latency_comparison(base, result))

    doc.heading("Per-layer accuracy drift", "drift")
    drifting = [r for r in results if r.drift]
    if drifting:
        doc.figure(views.drift_figure(drifting))
        doc.text("Measured graph: " + "; ".join(sorted({r.drift_graph or "" for r in drifting})))
    else:
        doc.text("No reduced-precision configuration with drift measurements in this run.")

    doc.heading("Regional precision policies", "policy")
    policies = policy.default_policies()
    choices = policy.choose(policies, results)
    doc.figure(scenario_figures.policy_matrix_figure(choices, results))
    doc.table([c.to_json() for c in choices])

    doc.heading("Cost model", "cost")
    doc.table(cost.cost_table(results))
    doc.text(cost.__doc__.strip().splitlines()[0] if cost.__doc__ else "")

    _provenance(doc, command, results)
    return doc.render()


def _outputs_and_data(doc: _Html, results) -> None:
    """Agreement with FP32 for every output (detection maps, sequences, states: not only class scores) and where
    each result's data came from."""
    rows = [{"configuration": r.label, "output": o.name, "shape": "x".join(map(str, o.shape)),
             "cosine": f"{o.cosine:.5f}", "max-abs error": f"{o.max_abs_diff:.3g}",
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

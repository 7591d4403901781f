"""Plotly figures: pure functions of result objects (RunResult, EngineGraph). They never run a model."""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from ..engine import EngineGraph, EngineLayer
from ..errors import WorkbenchError
from ..results import LAYER_TIME_BAND, RunResult, baseline_of, speedup_over

PRECISION_COLORS = {
    "fp32": "#636EFA", "fp16": "#EF553B", "bf16": "#AB63FA", "int8": "#00CC96",
    "mixed": "#FFA15A", "unknown": "#9E9E9E",
}
_MAX_HOVER_NODES = 8


def _results(results: RunResult | Iterable[RunResult]) -> list[RunResult]:
    items = [results] if isinstance(results, RunResult) else list(results)
    if not items:
        raise WorkbenchError("No results to plot: pass one RunResult or a non-empty list (e.g. Workbench.results).")
    return items


def _engine(result: RunResult | EngineGraph) -> EngineGraph:
    engine = result if isinstance(result, EngineGraph) else result.engine
    if engine is None or not engine.layers:
        raise WorkbenchError(f"{getattr(result, 'label', 'This result')} has no engine layers: run it with per-layer "
                             "profiling (Workbench.run keeps the engine graph) before plotting layers.")
    return engine


def _title(result: RunResult | EngineGraph) -> str:
    return result.label if isinstance(result, RunResult) else result.backend


def _nodes_text(nodes: Sequence[str]) -> str:
    shown = ", ".join(nodes[:_MAX_HOVER_NODES])
    more = len(nodes) - _MAX_HOVER_NODES
    return (shown + (f" … (+{more})" if more > 0 else "")) or "none (inserted by the engine)"


def _unique_labels(names: Sequence[str]) -> list[str]:
    """Category axes merge equal labels; number repeated ones so every bar keeps its own row."""
    seen: dict[str, int] = {}
    labels = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        labels.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return labels


def _layer_hover(layer: EngineLayer) -> str:
    ms = "not timed" if layer.latency_ms is None else f"{layer.latency_ms:.4f} ms"
    parts = [f"<b>{layer.name}</b>", f"type: {layer.type}", f"precision: {layer.precision}", f"latency: {ms}",
             f"ONNX nodes: {_nodes_text(layer.onnx_nodes)}"]
    if layer.kernel:
        parts.append(f"kernel: {layer.kernel}")
    if layer.inserted:
        parts.append("inserted by the engine")
    return "<br>".join(parts)


# ---- per-layer latency -------------------------------------------------------------------------------------
def layer_latency_figure(result: RunResult | EngineGraph, *, order: str = "graph", color_by: str = "type",
                         top: int | None = None) -> go.Figure:
    """Horizontal bars of per-layer latency, in execution order ("graph") or slowest first ("sorted").

    Colour by layer "type" or "precision"; `top` keeps only the N slowest layers. Untimed layers show as 0 ms.
    """
    if order not in ("graph", "sorted"):
        raise WorkbenchError(f"order={order!r} is not supported: use 'graph' or 'sorted'.")
    if color_by not in ("type", "precision"):
        raise WorkbenchError(f"color_by={color_by!r} is not supported: use 'type' or 'precision'.")
    engine = _engine(result)
    rows = list(zip(_unique_labels([l.name for l in engine.layers]), engine.layers))
    if top is not None:
        keep = {id(l) for _, l in sorted(rows, key=lambda r: -(r[1].latency_ms or 0.0))[:top]}
        rows = [r for r in rows if id(r[1]) in keep]
    if order == "sorted":
        rows.sort(key=lambda r: -(r[1].latency_ms or 0.0))

    palette = qualitative.Plotly + qualitative.D3
    groups: dict[str, list] = {}
    for label, layer in rows:
        groups.setdefault(getattr(layer, color_by), []).append((label, layer))
    fig = go.Figure()
    for i, (key, members) in enumerate(groups.items()):
        color = PRECISION_COLORS.get(key, PRECISION_COLORS["unknown"]) if color_by == "precision" \
            else palette[i % len(palette)]
        fig.add_bar(
            name=key, orientation="h", marker_color=color,
            y=[label for label, _ in members], x=[layer.latency_ms or 0.0 for _, layer in members],
            hovertext=[_layer_hover(layer) for _, layer in members], hoverinfo="text",
        )
    ratio = result.layer_time_ratio if isinstance(result, RunResult) else None
    subtitle = f"measured on: {engine.measured_graph}" + (
        f"; layer times sum to {ratio:.0%} of end-to-end latency" if ratio is not None else "")
    if isinstance(result, RunResult) and result.layer_times_agree is False:
        low, high = LAYER_TIME_BAND
        subtitle += f" ⚠ outside {low:.0%}–{high:.0%}: the bars do not add up to the latency"
    fig.update_layout(
        title=dict(text=f"Per-layer latency: {_title(result)}", subtitle=dict(text=subtitle)),
        xaxis_title="latency per inference (ms)", legend_title=color_by, barmode="overlay",
        height=max(320, 22 * len(rows) + 160),
        yaxis=dict(categoryorder="array", categoryarray=[label for label, _ in rows], autorange="reversed"),
    )
    return fig


@dataclass
class LayerMatch:
    """Layers of two engines that cover the same (or overlapping) original ONNX nodes."""

    nodes: list[str]
    layers_a: list[EngineLayer] = field(default_factory=list)
    layers_b: list[EngineLayer] = field(default_factory=list)

    @property
    def latency_a_ms(self) -> float:
        return sum(l.latency_ms or 0.0 for l in self.layers_a)

    @property
    def latency_b_ms(self) -> float:
        return sum(l.latency_ms or 0.0 for l in self.layers_b)

    @property
    def speedup(self) -> float | None:
        """Latency A / latency B (>1: B is faster); None when either side has no time."""
        if self.latency_a_ms > 0 and self.latency_b_ms > 0:
            return self.latency_a_ms / self.latency_b_ms
        return None

    @property
    def label(self) -> str:
        names = [l.name for l in (self.layers_a or self.layers_b)]
        text = " + ".join(names)
        return text if len(text) <= 48 else f"{names[0]} (+{len(names) - 1} layers)"


def match_layers(engine_a: EngineGraph, engine_b: EngineGraph) -> list[LayerMatch]:
    """Group the layers of two engines by the ONNX nodes they cover; overlapping sets join one group.

    Layers covering no ONNX node (engine-inserted glue) get a group of their own. Ordered by engine A.
    """
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for layer in engine_a.layers + engine_b.layers:
        for node in layer.onnx_nodes[1:]:
            parent[find(node)] = find(layer.onnx_nodes[0])
    groups: dict[str, LayerMatch] = {}
    matches: list[LayerMatch] = []
    for side, engine in (("a", engine_a), ("b", engine_b)):
        for layer in engine.layers:
            if layer.onnx_nodes:
                root = find(layer.onnx_nodes[0])
                if root not in groups:
                    groups[root] = LayerMatch(nodes=[])
                    matches.append(groups[root])
                match = groups[root]
            else:
                match = LayerMatch(nodes=[])
                matches.append(match)
            getattr(match, f"layers_{side}").append(layer)
            match.nodes.extend(n for n in layer.onnx_nodes if n not in match.nodes)
    return matches


def layer_latency_comparison(result_a: RunResult, result_b: RunResult) -> go.Figure:
    """Per-layer latency of two configurations side by side, matched by covered ONNX nodes, speed-up annotated."""
    matches = match_layers(_engine(result_a), _engine(result_b))
    labels = _unique_labels([m.label for m in matches])
    name_a, name_b = _title(result_a), _title(result_b)
    if name_a == name_b:
        name_a, name_b = f"A: {name_a}", f"B: {name_b}"

    def hover(m: LayerMatch, side: str) -> str:
        layers = m.layers_a if side == "a" else m.layers_b
        head = f"{len(layers)} layer(s): " + (", ".join(l.name for l in layers) or "none")
        precisions = ", ".join(sorted({l.precision for l in layers})) or "-"
        return "<br>".join([head, f"precision: {precisions}", f"ONNX nodes: {_nodes_text(m.nodes)}"])

    speedups = [m.speedup for m in matches]
    fig = go.Figure()
    fig.add_bar(name=name_a, orientation="h", y=labels, x=[m.latency_a_ms for m in matches],
                hovertext=[hover(m, "a") for m in matches], hoverinfo="text+x")
    fig.add_bar(name=name_b, orientation="h", y=labels, x=[m.latency_b_ms for m in matches],
                customdata=speedups, text=["" if s is None else f"×{s:.2f}" for s in speedups],
                textposition="outside", hovertext=[hover(m, "b") for m in matches], hoverinfo="text+x")
    total_a, total_b = sum(m.latency_a_ms for m in matches), sum(m.latency_b_ms for m in matches)
    overall = f"; summed layer time ×{total_a / total_b:.2f}" if total_a and total_b else ""
    fig.update_layout(
        title=dict(text="Per-layer latency comparison",
                   subtitle=dict(text=f"layers matched by the ONNX nodes they cover; ×N = A/B speed-up{overall}")),
        barmode="group", xaxis_title="latency per inference (ms)", height=max(360, 34 * len(matches) + 180),
        yaxis=dict(categoryorder="array", categoryarray=labels, autorange="reversed"),
    )
    return fig


# ---- drift -------------------------------------------------------------------------------------------------
def drift_figure(results: RunResult | Iterable[RunResult]) -> go.Figure:
    """SQNR (dB, top) and cosine similarity (bottom) to FP32 per tensor in graph order, one line per configuration.

    Identical tensors (SQNR = inf) are drawn at a capped value with a star marker and an "identical" hover.
    """
    items = [r for r in _results(results) if r.drift]
    if not items:
        raise WorkbenchError("None of these results has drift data: run a non-FP32 configuration with drift "
                             "measurement enabled (FP32 compared with itself has none).")
    order: list[str] = []
    for r in items:
        order.extend(p.tensor for p in r.drift if p.tensor not in order)
    finite = [p.sqnr_db for r in items for p in r.drift if math.isfinite(p.sqnr_db)]
    cap = (max(finite) if finite else 0.0) + 10.0

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.65, 0.35],
                        subplot_titles=("SQNR vs FP32 (dB, higher is closer)", "cosine similarity vs FP32"))
    palette = qualitative.Plotly
    for i, r in enumerate(items):
        color = palette[i % len(palette)]
        identical = [p.sqnr_db == math.inf for p in r.drift]
        sqnr = [cap if same else (p.sqnr_db if math.isfinite(p.sqnr_db) else None)
                for p, same in zip(r.drift, identical)]
        hover = [f"<b>{p.tensor}</b><br>layer: {p.layer or '-'}<br>"
                 + ("SQNR: inf (identical to FP32)" if same else f"SQNR: {p.sqnr_db:.2f} dB")
                 + f"<br>cosine: {p.cosine:.6f}<br>max |diff|: {p.max_abs_diff:.4g}"
                 for p, same in zip(r.drift, identical)]
        fig.add_scatter(row=1, col=1, x=[p.tensor for p in r.drift], y=sqnr, name=r.label, legendgroup=r.label,
                        mode="lines+markers", line_color=color, hovertext=hover, hoverinfo="text",
                        customdata=["identical" if same else "" for same in identical],
                        marker=dict(symbol=["star" if same else "circle" for same in identical],
                                    size=[11 if same else 6 for same in identical]))
        fig.add_scatter(row=2, col=1, x=[p.tensor for p in r.drift], y=[p.cosine for p in r.drift], name=r.label,
                        legendgroup=r.label, showlegend=False, mode="lines+markers", line_color=color,
                        hovertext=hover, hoverinfo="text")
    fig.add_hline(y=cap, row=1, col=1, line_dash="dot", line_color="gray",
                  annotation_text="identical to FP32 (SQNR = inf)", annotation_position="top left")
    graphs = sorted({r.drift_graph for r in items if r.drift_graph})
    fig.update_layout(title=dict(text="Numerical drift over depth",
                                 subtitle=dict(text="measured on: " + (", ".join(graphs) or "model graph"))),
                      height=620, hovermode="closest")
    fig.update_xaxes(categoryorder="array", categoryarray=order, showticklabels=len(order) <= 60)
    fig.update_xaxes(title_text="tensor (graph order)", row=2, col=1)
    return fig


# ---- latency vs accuracy -----------------------------------------------------------------------------------
def tradeoff_figure(results: RunResult | Iterable[RunResult]) -> go.Figure:
    """Median latency vs accuracy (top1, or agreement with FP32 when any result lacks labels), one point each.

    Hollow markers: precision not accelerated on that backend; diamonds: measured on synthetic data.
    """
    items = _results(results)
    scored = [r for r in items if r.accuracy is not None]
    use_top1 = bool(scored) and all(r.accuracy.top1 is not None for r in scored)
    metric = "top1" if use_top1 else "top1_agreement"
    fig = go.Figure()
    for r in scored:  # one trace per configuration: the legend names it, the colour says its precision
        notes = ([] if r.accelerated else ["not accelerated on this backend (runs no faster than FP32)"]) + \
                (["synthetic data: accuracy is not meaningful"] if r.synthetic_data else [])
        value = getattr(r.accuracy, metric)
        hover = "<br>".join([f"<b>{r.label}</b>", f"median latency: {r.headline_latency.median:.3f} ms "
                             f"(batch {r.headline_latency.batch})",
                             f"{metric}: {'-' if value is None else f'{value:.4f}'}", *notes])
        color = PRECISION_COLORS.get(r.precision, PRECISION_COLORS["unknown"])
        fig.add_scatter(
            name=r.label, mode="markers", x=[r.headline_latency.median], y=[value], hovertext=[hover],
            hoverinfo="text", marker=dict(size=13, color=color, line=dict(width=2, color=color),
                                          symbol=[("diamond" if r.synthetic_data else "circle")
                                                  + ("" if r.accelerated else "-open")]))
    missing = len(items) - len(scored)
    subtitle = "hollow: not accelerated on this backend · diamond: synthetic data" + (
        f" · {missing} result(s) without accuracy not shown" if missing else "")
    fig.update_layout(title=dict(text="Latency vs accuracy", subtitle=dict(text=subtitle)),
                      xaxis_title="median latency per batch (ms)",
                      yaxis_title="top-1 accuracy" if use_top1 else "top-1 agreement with FP32", height=480)
    values = [getattr(r.accuracy, metric) for r in scored if getattr(r.accuracy, metric) is not None]
    if values:  # accuracies live in [0, 1]: never let autorange stretch the axis past 1
        low = min(values)
        fig.update_yaxes(range=[max(0.0, low - max(0.05, (1 - low) * 0.5)), 1.02])
    return fig


# ---- summary -----------------------------------------------------------------------------------------------
SUMMARY_COLUMNS = ("model", "precision", "method", "style", "calibration", "backend", "latency_median_ms",
                   "latency_median_ci_ms", "latency_p90_ms", "speedup_vs_fp32", "speedup_ci", "speedup_verdict",
                   "top1", "top1_drop", "agreement", "cosine", "accelerated", "notes")


def summary_table(results: RunResult | Iterable[RunResult], baseline: RunResult | None = None) -> list[dict]:
    """One row per result (keys in SUMMARY_COLUMNS); speed-up and top1 drop are against `baseline`, else the
    FP32 result of the same model, backend and batch size in `results` (None when there is none). Intervals are
    [low, high] bootstrap intervals; `speedup_verdict` is "faster", "slower", "no measurable difference" or
    "baseline"."""
    items = _results(results)
    rows = []
    for r in items:
        base = baseline or baseline_of(r, items)
        gain = speedup_over(r, base) if base else None
        acc, base_acc = r.accuracy, (base.accuracy if base else None)
        top1 = acc.top1 if acc else None
        rows.append({
            "model": r.model, "precision": r.precision, "method": r.method, "style": r.qdq_style,
            "calibration": r.calibration, "backend": r.backend,
            "latency_median_ms": r.headline_latency.median, "latency_median_ci_ms": r.headline_latency.median_ci,
            "latency_p90_ms": r.headline_latency.p90, "speedup_vs_fp32": gain.ratio if gain else None,
            "speedup_ci": [gain.low, gain.high] if gain and gain.low is not None and base is not r else None,
            "speedup_verdict": None if gain is None else "baseline" if base is r else gain.verdict,
            "top1": top1,
            "top1_drop": base_acc.top1 - top1 if base_acc and base_acc.top1 is not None and top1 is not None
            else None,
            "agreement": acc.top1_agreement if acc else None, "cosine": acc.cosine if acc else None,
            "accelerated": r.accelerated, "notes": "; ".join(r.notes),
        })
    return rows


def _fmt(key: str, value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):  # an interval
        return "–".join(_fmt(key, v) for v in value)
    if isinstance(value, float):
        if key in ("speedup_vs_fp32", "speedup_ci"):
            return f"×{value:.2f}"
        if key in ("top1", "top1_drop", "agreement"):
            return f"{value * 100:.2f}%"
        return f"{value:.6f}" if key == "cosine" else f"{value:.3f}"
    return str(value)


def summary_figure(results: RunResult | Iterable[RunResult], baseline: RunResult | None = None) -> go.Figure:
    """`summary_table` as a plotly Table."""
    rows = summary_table(results, baseline)
    fig = go.Figure(go.Table(
        header=dict(values=[c.replace("_", " ") for c in SUMMARY_COLUMNS], align="left", fill_color="#E5ECF6"),
        cells=dict(values=[[_fmt(c, row[c]) for row in rows] for c in SUMMARY_COLUMNS], align="left"),
    ))
    fig.update_layout(title="Configurations", height=120 + 30 * len(rows), margin=dict(l=10, r=10, t=50, b=10))
    return fig

"""Plotly figures: pure functions of result objects (RunResult, EngineGraph). They never run a model."""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from ..engine import EngineGraph, EngineLayer
from ..errors import WorkbenchError
from ..results import LAYER_TIME_BAND, RetimedLatency, RunResult, baseline_of, paired_speedup, speedup_over
from ..vocabulary import ACCURACY_METRICS
from .accuracy_text import metric_text

PRECISION_COLORS = {
    "fp32": "#636EFA", "fp16": "#EF553B", "bf16": "#AB63FA", "int8": "#00CC96",
    "mixed": "#FFA15A", "unknown": "#9E9E9E",
}
_MAX_HOVER_NODES = 8
MAX_ROWS = 40  # bar rows drawn before the rest is summed into one "other layers" row
# Shades per precision family: the n-th configuration of a precision gets the n-th shade, so INT8 variants differ.
_FAMILIES = {
    "fp32": ("#1f5fbf", "#6f9be8", "#0b2f6b"), "fp16": ("#d62728", "#ff7f0e", "#9c1b1b"),
    "bf16": ("#9467bd", "#c5a3e6", "#5b2d8a"),
    "int8": ("#2ca02c", "#17becf", "#8c564b", "#bcbd22", "#e377c2", "#0f6b4f", "#7f7f7f", "#393b79", "#637939",
             "#843c39", "#9edae5", "#c49c94"),
    "mixed": ("#ff9f1c", "#b8860b", "#ffbf69"),
}
SQNR_COSINE_EXPLANATION = (
    "SQNR: signal-to-quantisation-noise ratio of a tensor against FP32, 10·log10(‖FP32‖² / ‖FP32 − variant‖²) "
    "in dB; higher is closer, every +6 dB halves the error. Cosine: how well the tensor's direction matches FP32 "
    "(1 = identical).")


def config_colors(results: Iterable[RunResult]) -> dict[str, str]:
    """A distinct colour per configuration label, stable for a given list of results: pass the same mapping
    to every figure of one explorer, notebook or report so a configuration keeps its colour across views."""
    colors: dict[str, str] = {}
    used: dict[str, int] = {}
    for r in results:
        if r.label in colors:
            continue
        family = "mixed" if r.keep_fp32 and r.precision != "fp32" else r.precision
        shades = _FAMILIES.get(family, qualitative.Dark24)
        colors[r.label] = shades[used.get(family, 0) % len(shades)]
        used[family] = used.get(family, 0) + 1
    return colors


_LEGEND_CHARS = 40  # legend lines (the legend sits under the plot, so the plot keeps the width)


def _layout(fig: go.Figure, *, title: str, subtitle: str = "", rows: int = 0, row_px: int = 22,
            min_height: int = 320, max_height: int = 1400, legend: bool = True, **layout) -> go.Figure:
    """Common layout: width follows the container (autosize), height follows the rows (capped), the legend
    sits under the plot (the bottom margin grows to fit it) so it never covers data and, at 1024 px with
    JupyterLab's sidebar open, leaves the plot its width."""
    top = titled(fig, title, subtitle)
    fig.update_layout(
        autosize=True, height=min(max_height, max(min_height, row_px * rows + 94 + top)),
        margin=dict(l=10, r=10, t=top, b=50),
        legend=dict(orientation="h", xref="container", x=0.01, xanchor="left", yref="container", y=0.0,
                    yanchor="bottom", title_text=""),
        showlegend=legend, **layout)
    for trace in fig.data:  # long configuration labels wrap in the legend instead of squeezing the plot
        if trace.name and len(trace.name) > _LEGEND_CHARS and "<br>" not in trace.name:
            trace.name = wrap_label(trace.name, _LEGEND_CHARS)
    fig.update_yaxes(automargin=True)
    fig.update_xaxes(automargin=True)
    return fig


def wrap_label(text: str, width: int = 22) -> str:
    """Break a long configuration label into lines of about `width` characters (plotly axis labels do not wrap)."""
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return "<br>".join(lines + [line])


def titled(fig: go.Figure, title: str, subtitle: str = "") -> int:
    """Set a title with a smaller subtitle that wraps at about 60 characters (it starts at the plot's left edge:
    so it fits over the plot of a 560 px figure); returns the top margin it needs (px).

    The subtitle is an annotation sitting on the plot area and growing upwards, the title hangs from the top edge:
    plotly's own subtitle does not wrap, and wrapped by hand it grows up into the title in a FigureWidget.
    """
    lines = [line for part in subtitle.split("<br>") for line in wrap_label(part, 60).split("<br>")] \
        if subtitle else []
    fig.update_layout(title=dict(text=title, x=0.01, xanchor="left", xref="container", y=1, yanchor="top",
                                 yref="container", pad=dict(t=10)))
    if lines:
        fig.add_annotation(text="<br>".join(lines), xref="paper", x=0, xanchor="left", yref="paper", y=1,
                           yanchor="bottom", yshift=6, showarrow=False, align="left", font=dict(size=12))
    return 52 + 17 * len(lines)


def short_name(text: str, limit: int = 34) -> str:
    """A long layer or tensor name shortened for a label, keeping the part that tells it apart (the block):
    the leading "/" and scopes repeated by the next one ("features/features.0/features.0.0" -> "features.0.0")
    go first, then the end is cut. Hovers and tooltips keep the whole name."""
    if len(text) <= limit:
        return text
    parts = text.strip("/").split("/")
    parts = [p for p, following in zip(parts, parts[1:] + [""]) if not following.startswith((p + ".", p + "_"))]
    short = "/".join(parts)
    return short if len(short) <= limit else short[:limit - 1] + "…"


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
                         top: int | None = None, max_rows: int = MAX_ROWS) -> go.Figure:
    """Horizontal bars of per-layer latency, in execution order ("graph") or slowest first ("sorted").

    Colour by layer "type" or "precision"; `top` keeps only the N slowest layers. With more than `max_rows`
    layers the slowest `max_rows` are drawn and the rest summed into one "other layers" bar. Untimed: 0 ms.
    """
    if order not in ("graph", "sorted"):
        raise WorkbenchError(f"order={order!r} is not supported: use 'graph' or 'sorted'.")
    if color_by not in ("type", "precision"):
        raise WorkbenchError(f"color_by={color_by!r} is not supported: use 'type' or 'precision'.")
    engine = _engine(result)
    rows = list(zip(_unique_labels([l.name for l in engine.layers]), engine.layers))
    limit = min(top, max_rows) if top is not None else max_rows
    slowest = sorted(rows, key=lambda r: -(r[1].latency_ms or 0.0))
    keep = {id(l) for _, l in slowest[:limit]}
    rest = [l for _, l in slowest[limit:]] if top is None else []
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
    categories = [label for label, _ in rows]
    if rest:
        rest_label = f"other {len(rest)} layers (summed)"
        fig.add_bar(name="other layers", orientation="h", marker_color=PRECISION_COLORS["unknown"],
                    y=[rest_label], x=[sum(l.latency_ms or 0.0 for l in rest)], hoverinfo="text",
                    hovertext=[f"<b>{len(rest)} faster layers</b><br>{_nodes_text([l.name for l in rest])}"])
        categories.append(rest_label)
    ratio = result.layer_time_ratio if isinstance(result, RunResult) else None
    shown = f"slowest {len(rows)} of {len(engine.layers)} layers; " if rest or top is not None else ""
    subtitle = f"{shown}measured on: {engine.measured_graph}" + (
        f"; layer times sum to {ratio:.0%} of end-to-end latency" if ratio is not None else "")
    if isinstance(result, RunResult) and result.layer_times_agree is False:
        low, high = LAYER_TIME_BAND
        subtitle += f" ⚠ outside {low:.0%}–{high:.0%}: the bars do not add up to the latency"
    _layout(fig, title=f"Per-layer latency: {_title(result)}", subtitle=subtitle, rows=len(categories),
            xaxis_title="latency per inference (ms)", barmode="overlay")
    fig.update_layout(legend_title_text=f"layer {color_by}:")
    fig.update_yaxes(categoryorder="array", categoryarray=categories, autorange="reversed",
                     tickvals=categories, ticktext=[short_name(c) for c in categories])
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
        """What the group computes (its engine layer types) and its first layer's name, e.g. "FusedConv ·
        /conv1/Conv": engine-made names such as "/6/Relu_output_0_nchwc" alone do not say it is a convolution."""
        layers = self.layers_a or self.layers_b
        kinds = "+".join(dict.fromkeys(re.split(r"[:.]", layer.type)[-1] for layer in layers))  # no op domain
        more = f" (+{len(layers) - 1})" if len(layers) > 1 else ""
        return f"{short_name(kinds, 14)} · {short_name(layers[0].name, 30 - min(len(kinds), 14) - len(more))}{more}"


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


def layer_latency_comparison(result_a: RunResult, result_b: RunResult, *, colors: dict[str, str] | None = None,
                              names: tuple[str, str] | None = None, max_rows: int = MAX_ROWS) -> go.Figure:
    """Per-layer latency of two configurations side by side, matched by covered ONNX nodes, speed-up annotated.

    `names` labels the two sides (default: their configuration labels, e.g. to tell apart an unfused and a fused
    run of one configuration). With more than `max_rows` matched groups, the slowest are drawn in graph order and
    the rest summed in one row.
    """
    matches = match_layers(_engine(result_a), _engine(result_b))
    colors = colors or config_colors([result_a, result_b])
    slowest = sorted(matches, key=lambda m: -max(m.latency_a_ms, m.latency_b_ms))
    keep = {id(m) for m in slowest[:max_rows]}
    rest = [m for m in matches if id(m) not in keep]
    shown = [m for m in matches if id(m) in keep]
    if rest:
        other = LayerMatch(nodes=[n for m in rest for n in m.nodes],
                           layers_a=[l for m in rest for l in m.layers_a], layers_b=[l for m in rest for l in m.layers_b])
        shown.append(other)
    labels = _unique_labels([m.label for m in shown])
    if rest:
        labels[-1] = f"other {len(rest)} layer groups (summed)"
    name_a, name_b = names or (_title(result_a), _title(result_b))
    color_a, color_b = colors.get(_title(result_a)), colors.get(_title(result_b))
    if _title(result_a) == _title(result_b):  # one configuration measured twice (e.g. unfused vs fused)
        family = _FAMILIES.get(result_b.precision, qualitative.Dark24)
        color_b = family[1] if family[0] == color_a else family[0]
        if names is None:
            name_a, name_b = f"A: {name_a}", f"B: {name_b}"

    def hover(m: LayerMatch, side: str) -> str:
        layers = m.layers_a if side == "a" else m.layers_b
        head = f"{len(layers)} layer(s): " + _nodes_text([l.name for l in layers])
        precisions = ", ".join(sorted({l.precision for l in layers})) or "-"
        return "<br>".join([head, f"precision: {precisions}", f"ONNX nodes: {_nodes_text(m.nodes)}"])

    speedups = [m.speedup for m in shown]
    fig = go.Figure()
    fig.add_bar(name=name_a, orientation="h", y=labels, x=[m.latency_a_ms for m in shown],
                marker_color=color_a, hovertext=[hover(m, "a") for m in shown],
                hoverinfo="text+x")
    fig.add_bar(name=name_b, orientation="h", y=labels, x=[m.latency_b_ms for m in shown],
                marker_color=color_b, customdata=speedups,
                text=["" if s is None else f"×{s:.2f}" for s in speedups], textposition="outside", cliponaxis=False,
                hovertext=[hover(m, "b") for m in shown], hoverinfo="text+x")
    total_a, total_b = sum(m.latency_a_ms for m in matches), sum(m.latency_b_ms for m in matches)
    overall = f"; summed layer time ×{total_a / total_b:.2f}" if total_a and total_b else ""
    subset = f"slowest {len(shown) - 1} of {len(matches)} groups; " if rest else ""
    _layout(fig, title="Per-layer latency comparison", rows=len(shown), row_px=30, barmode="group",
            subtitle=f"{subset}layers matched by the ONNX nodes they cover; ×N = A/B speed-up{overall}",
            xaxis_title="latency per inference (ms)")
    longest = max([m.latency_a_ms for m in shown] + [m.latency_b_ms for m in shown] + [0.0])
    fig.update_xaxes(range=[0, longest * 1.15 or 1])  # room for the ×N labels right of the longest bar
    fig.update_yaxes(categoryorder="array", categoryarray=labels, autorange="reversed", tickvals=labels,
                     ticktext=[short_name(c, 38) for c in labels])  # labels keep their "#2"
    return fig


# ---- drift -------------------------------------------------------------------------------------------------
def drift_figure(results: RunResult | Iterable[RunResult], *, colors: dict[str, str] | None = None) -> go.Figure:
    """SQNR (dB, top) and cosine similarity (bottom) to FP32 per tensor, one line per configuration.

    The x axis is the tensor's position in graph order (names and layers on hover), so the figure reads the same
    for 10 tensors or 1,000. Identical tensors (SQNR = inf) are drawn at a capped value with a star marker.
    """
    items = [r for r in _results(results) if r.drift]
    if not items:
        raise WorkbenchError("None of these results has drift data: run a non-FP32 configuration with drift "
                             "measurement enabled (FP32 compared with itself has none).")
    colors = colors or config_colors(items)
    order = _graph_order([r.drift for r in items])
    position = {t: i + 1 for i, t in enumerate(order)}
    finite = [p.sqnr_db for r in items for p in r.drift if math.isfinite(p.sqnr_db)]
    cap = (max(finite) if finite else 0.0) + 10.0

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.62, 0.38])
    for r in items:
        color = colors.get(r.label, PRECISION_COLORS["unknown"])
        identical = [p.sqnr_db == math.inf for p in r.drift]
        sqnr = [cap if same else (p.sqnr_db if math.isfinite(p.sqnr_db) else None)
                for p, same in zip(r.drift, identical)]
        hover = [f"<b>{r.label}</b><br>tensor #{position[p.tensor]}: {p.tensor}<br>layer: {p.layer or '-'}<br>"
                 + ("SQNR: inf (identical to FP32)" if same else f"SQNR: {p.sqnr_db:.2f} dB")
                 + f"<br>cosine: {p.cosine:.6f}<br>max |diff|: {p.max_abs_diff:.4g}"
                 for p, same in zip(r.drift, identical)]
        x = [position[p.tensor] for p in r.drift]
        fig.add_scatter(row=1, col=1, x=x, y=sqnr, name=r.label, legendgroup=r.label,
                        mode="lines+markers", line_color=color, hovertext=hover, hoverinfo="text",
                        customdata=["identical" if same else "" for same in identical],
                        marker=dict(symbol=["star" if same else "circle" for same in identical],
                                    size=[11 if same else 6 for same in identical]))
        fig.add_scatter(row=2, col=1, x=x, y=[p.cosine for p in r.drift], name=r.label,
                        legendgroup=r.label, showlegend=False, mode="lines+markers", line_color=color,
                        hovertext=hover, hoverinfo="text")
    fig.add_hline(y=cap, row=1, col=1, line_dash="dot", line_color="gray")
    # the first clause names the graph; the rest (how tensors were exposed) is in each point's result
    graphs = sorted({r.drift_graph.split(" with ")[0].split(":")[0] for r in items if r.drift_graph})
    _layout(fig, title="Numerical drift over depth", min_height=560, max_height=600, hovermode="closest",
            subtitle=f"{len(order)} tensors in graph order (hover for names) · ★ on the dotted line: identical to "
                     "FP32 (SQNR = ∞) · measured on: " + (", ".join(graphs) or "model graph"))
    fig.update_yaxes(title_text="SQNR vs FP32 (dB)", row=1, col=1)
    fig.update_yaxes(title_text="cosine vs FP32", row=2, col=1)
    fig.update_xaxes(title_text="tensor position in graph order", row=2, col=1)
    return fig


def _graph_order(point_lists: Sequence[Sequence]) -> list[str]:
    """Every tensor of the drift point lists in the FP32 graph's order, whichever variant was computed first.

    Points carry their position in the FP32 graph; results cached before they did are merged so that each list's
    own (graph) order is kept: a topological order of "comes right after" pairs, ties in order of appearance.
    """
    points = [p for pts in point_lists for p in pts]
    if all(p.position is not None for p in points):
        return list(dict.fromkeys(p.tensor for p in sorted(points, key=lambda p: p.position)))
    first = list(dict.fromkeys(p.tensor for p in points))
    after: dict[str, set[str]] = {t: set() for t in first}
    before = dict.fromkeys(first, 0)
    for pts in point_lists:
        for a, b in zip(pts, pts[1:]):
            if b.tensor not in after[a.tensor]:
                after[a.tensor].add(b.tensor)
                before[b.tensor] += 1
    rank = {t: i for i, t in enumerate(first)}
    ready, order = sorted((t for t in first if not before[t]), key=rank.get), []
    while ready:
        tensor = ready.pop(0)
        order.append(tensor)
        for nxt in after[tensor]:
            before[nxt] -= 1
            if not before[nxt]:
                ready.append(nxt)
        ready.sort(key=rank.get)
    return order + [t for t in first if t not in order]  # (a cycle cannot happen for subsequences of one order)


# ---- latency vs accuracy -----------------------------------------------------------------------------------
def tradeoff_figure(results: RunResult | Iterable[RunResult], *, colors: dict[str, str] | None = None) -> go.Figure:
    """Median latency vs accuracy, one point each: the results' headline metric (`AccuracyStats.headline`: top-1,
    mean IoU, matched boxes, cosine...) when they share one, else top-1 agreement with FP32.

    Hollow markers: precision not accelerated on that backend; diamonds: measured on synthetic data.
    """
    items = _results(results)
    scored = [r for r in items if r.accuracy is not None]
    shared = {(r.accuracy.headline[0], r.accuracy.headline[2]) for r in scored}
    metric, output = next(iter(shared)) if len(shared) == 1 else ("agreement", None)
    words, kind, _ = ACCURACY_METRICS.get(metric, (metric, "number", True))
    colors = colors or config_colors(items)
    several_batches = len({r.headline_latency.batch for r in scored}) > 1
    fig = go.Figure()
    for r in scored:  # one trace per configuration: the legend names it, its colour is the configuration's
        notes = ([] if r.accelerated else ["not accelerated on this backend (runs no faster than FP32)"]) + \
                (["synthetic data: accuracy is not meaningful"] if r.synthetic_data else [])
        value = _plotted(r, metric)
        hover = "<br>".join([f"<b>{r.label}</b>", f"median latency: {r.headline_latency.median:.3f} ms "
                             f"(batch {r.headline_latency.batch})", metric_text(metric, value, output), *notes])
        color = colors.get(r.label, PRECISION_COLORS["unknown"])
        fig.add_scatter(
            name=r.label + (f", batch {r.headline_latency.batch}" if several_batches else ""), mode="markers", x=[r.headline_latency.median], y=[value], hovertext=[hover],
            hoverinfo="text", marker=dict(size=13, color=color, line=dict(width=2, color=color),
                                          symbol=[("diamond" if r.synthetic_data else "circle")
                                                  + ("" if r.accelerated else "-open")]))
    missing = len(items) - len(scored)
    subtitle = "hollow: not accelerated on this backend · diamond: synthetic data" + (
        f" · {missing} result(s) without accuracy not shown" if missing else "")
    _layout(fig, title="Latency vs accuracy", subtitle=subtitle, min_height=480, xaxis_title="median latency per batch (ms)",
            yaxis_title=words + (f" ({output})" if output else ""))
    values = [v for v in (_plotted(r, metric) for r in scored) if v is not None]
    if values and kind in ("fraction", "cosine"):  # these live in [0, 1]: the axis ends at 1 (100 %), markers
        low = min(values)                           # there are drawn whole over its edge
        # the bottom sits a little under a tick: a tick label in the corner would overlap the first latency tick
        fig.update_yaxes(range=[max(0.0, low - max(0.05, (1 - low) * 0.5)) - 0.01, 1.0],
                         tickformat=".0%" if kind == "fraction" else None)
        fig.update_traces(cliponaxis=False)
    return fig


def _plotted(result: RunResult, metric: str) -> float | None:
    name, value, _ = result.accuracy.headline
    return value if name == metric else result.accuracy.top1_agreement


# ---- summary -----------------------------------------------------------------------------------------------
SUMMARY_COLUMNS = ("label", "model", "precision", "method", "style", "weight_rounding", "calibration", "backend",
                   "batch", "latency_median_ms", "latency_median_ci_ms", "latency_p90_ms", "speedup_vs_fp32", "speedup_ci",
                   "speedup_verdict", "top1", "top1_drop", "agreement", "cosine", "headline_metric",
                   "headline_output", "headline_value", "accelerated", "notes")


def summary_table(results: RunResult | Iterable[RunResult], baseline: RunResult | None = None, *,
                  retimed: Mapping[str, RetimedLatency] | None = None) -> list[dict]:
    """One row per result (keys in SUMMARY_COLUMNS); speed-up and top1 drop are against `baseline`, else the
    FP32 result of the same model, backend and batch size in `results` (None when there is none). Intervals are
    [low, high] bootstrap intervals; `speedup_verdict` is "faster", "slower", "no measurable difference" or
    "baseline". `retimed` (by cache key): timings of the same interleaved rounds (`measure.interleaved_latency`);
    where a result and its baseline both have one, the speed-up, interval and verdict come from those rounds
    (`results.paired_speedup`) instead of the separate runs, `speedup_timing` says which ("interleaved rounds" or
    "separate runs") and `interleaved_median_ms` is the median of the result's round medians (both keys only with
    `retimed`).
    `views.tables.summary_html` shows it as a table for people."""
    items = _results(results)
    rows = []
    for r in items:
        base = baseline or baseline_of(r, items)
        timed = retimed or {}
        paired = paired_speedup(timed[r.cache_key], timed[base.cache_key]) if (
            base is not None and base is not r and r.cache_key in timed and base.cache_key in timed) else None
        gain = paired or (speedup_over(r, base) if base else None)
        acc, base_acc = r.accuracy, (base.accuracy if base else None)
        top1 = acc.top1 if acc else None
        rows.append({
            "label": r.label, "model": r.model, "precision": r.precision, "method": r.method, "style": r.qdq_style,
            "weight_rounding": r.weight_rounding, "calibration": r.calibration, "backend": r.backend, "batch": r.headline_latency.batch,
            "latency_median_ms": r.headline_latency.median, "latency_median_ci_ms": r.headline_latency.median_ci,
            "latency_p90_ms": r.headline_latency.p90, "speedup_vs_fp32": gain.ratio if gain else None,
            "speedup_ci": [gain.low, gain.high] if gain and gain.low is not None and base is not r else None,
            "speedup_verdict": None if gain is None else "baseline" if base is r else gain.verdict,
            "top1": top1,
            "top1_drop": base_acc.top1 - top1 if base_acc and base_acc.top1 is not None and top1 is not None
            else None,
            "agreement": acc.top1_agreement if acc else None, "cosine": acc.cosine if acc else None,
            # the metric the headline uses for this result (by its outputs' tasks): name, output, value
            "headline_metric": acc.headline[0] if acc else None, "headline_output": acc.headline[2] if acc else None,
            "headline_value": acc.headline[1] if acc else None,
            "accelerated": r.accelerated, "notes": "; ".join(r.notes),
        })
        if retimed is not None:  # each beside the column it explains
            extra = {"latency_p90_ms": ("interleaved_median_ms",
                                        timed[r.cache_key].median_ms if r.cache_key in timed else None),
                     "speedup_verdict": ("speedup_timing", None if gain is None or base is r else
                                         "interleaved rounds" if paired else "separate runs")}
            rows[-1] = {k: v for key, value in rows[-1].items()
                        for k, v in [(key, value), *([extra[key]] if key in extra else [])]}
    return rows

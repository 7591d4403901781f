"""Why a layer drifts, as figures and tables (pure functions of `measure.histograms` and `measure.decomposition`
results): a tensor's histogram with each calibration method's range, a weight's per-channel ranges, and the split of
each tensor's INT8 error into weights and activations."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from ..measure.decomposition import LayerError, worst
from ..measure.histograms import TensorHistogram, WeightRanges
from .figures import _layout

METHOD_COLORS = {"minmax": "#1f5fbf", "entropy": "#d62728", "percentile": "#2ca02c"}
SET_COLORS = ("#7f7f7f", "#ff9f1c", "#9467bd")
_DASHES = ("solid", "dash", "dot")


def db_text(value: float | None) -> str:
    """An SQNR for people: '36.3 dB', 'exact' for an identical tensor, 'n/a' where none was measured."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if value == math.inf:
        return "exact"
    return f"{value:.1f} dB"


def histogram_figure(histogram: TensorHistogram, *, log: bool = True) -> go.Figure:
    """Each set's share of values per bin (log scale by default: ReLU outputs pile up at 0; the first set as bars, a
    second as a line), with every method's calibrated range drawn as a pair of lines (`histogram_table` gives each
    range's step, clipped share and SQNR)."""
    edges = np.asarray(histogram.edges)
    centres, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig = go.Figure()
    for i, part in enumerate(histogram.sets):  # the first set as bars, a second one as a line over them
        share = np.asarray(part.counts, dtype=float) / max(part.values, 1) * 100
        name = f"{part.name} ({part.values:,} values)"
        hover = "%{x:.4g}: %{y:.3g} % of values<extra>" + part.name + "</extra>"
        color = SET_COLORS[i % len(SET_COLORS)]
        if i == 0:
            fig.add_bar(x=centres, y=share, width=widths, name=name, marker_color=color, opacity=0.8,
                        hovertemplate=hover)
        else:
            fig.add_scatter(x=centres, y=np.where(share > 0, share, np.nan), mode="lines", line_shape="hvh",
                            name=name, line=dict(color=color, width=2), hovertemplate=hover)
    first = histogram.sets[0]
    top = 100.0
    for j, effect in enumerate(first.effects):
        color = METHOD_COLORS.get(effect.method, "#444")
        label = f"{effect.method} [{effect.low:.3g}, {effect.high:.3g}]"  # step, clipping, SQNR: histogram_table
        for k, edge in enumerate((effect.low, effect.high)):
            fig.add_scatter(x=[edge, edge], y=[1e-6 if log else 0, top], mode="lines", name=label,
                            legendgroup=effect.method, showlegend=k == 0,
                            line=dict(color=color, width=2, dash=_DASHES[j % len(_DASHES)]),
                            hovertemplate=f"{effect.method} range edge %{{x:.4g}}<extra></extra>")
    subtitle = f"{first.name}: min {first.min:.3g}, max {first.max:.3g}; Q/DQ style {histogram.qdq_style}"
    if len(histogram.sets) > 1:
        other = histogram.sets[1]
        subtitle += f" · {other.name}: min {other.min:.3g}, max {other.max:.3g} (ranges from {first.name})"
    _layout(fig, title=f"Values of {histogram.tensor} and each calibration method's INT8 range",
            subtitle=subtitle, min_height=380, barmode="overlay",
            xaxis_title="value", yaxis_title="share of values (%)")
    shares = [c / max(p.values, 1) * 100 for p in histogram.sets for c in p.counts if c]
    if log:
        fig.update_yaxes(type="log", exponentformat="none", tickformat="~g", range=[math.log10(max(min(shares, default=1e-4), 1e-6)) - 0.2, 2.05])
        fig.update_xaxes(ticklabelstandoff=8)  # the lowest y label sits on the bottom edge: keep "0" clear of it
    else:
        fig.update_yaxes(range=[0, max(shares, default=100) * 1.05])
    return fig


def histogram_table(histogram: TensorHistogram) -> list[dict]:
    """One row per set and method: the range, INT8 step, clipped share and SQNR, with units."""
    return [{"set": part.name, "method": e.method, "range": f"[{e.low:.4g}, {e.high:.4g}]", "step": f"{e.step:.3g}",
             "clipped": f"{e.clipped_share * 100:.3f} %", "SQNR": db_text(e.sqnr_db)}
            for part in histogram.sets for e in part.effects]


def weight_ranges_figure(ranges: WeightRanges) -> go.Figure:
    """Every output channel's [min, max] as a bar, against the one range a per-tensor scale must cover."""
    channels = np.arange(len(ranges.channel_low))
    low, high = np.asarray(ranges.channel_low), np.asarray(ranges.channel_high)
    fig = go.Figure()
    fig.add_bar(x=channels, y=high - low, base=low, name="channel range", marker_color="#1f5fbf",
                hovertemplate="channel %{x}: [%{base:.3g}, %{customdata:.3g}]<extra></extra>", customdata=high)
    bound = ranges.per_tensor_step * 127
    for sign in (1, -1):
        fig.add_scatter(x=[channels[0] - 0.5, channels[-1] + 0.5], y=[sign * bound] * 2, mode="lines",
                        name="per-tensor range", showlegend=sign == 1, line=dict(color="#d62728", dash="dash"))
    subtitle = (f"{ranges.op_type} {ranges.node}, weight {ranges.weight}: widest channel step / median "
                f"{ranges.spread:.1f}x; INT8 weights per tensor {db_text(ranges.per_tensor_sqnr_db)}, "
                f"per channel {db_text(ranges.per_channel_sqnr_db)}")
    return _layout(fig, title="Weight range per output channel", subtitle=subtitle, min_height=340,
                   xaxis_title="output channel", yaxis_title="weight value", bargap=0.1)


def error_sources_figure(rows: Sequence[LayerError]) -> go.Figure:
    """SQNR to FP32 per tensor in graph order with everything, only weights and only activations quantised."""
    fig = go.Figure()
    x = list(range(len(rows)))
    text = [row.tensor for row in rows]
    for name, values, color in (("weights and activations", [r.sqnr_db for r in rows], "#00CC96"),
                                ("weights only", [r.weights_sqnr_db for r in rows], "#1f5fbf"),
                                ("activations only", [r.activations_sqnr_db for r in rows], "#d62728")):
        finite = [v if v is not None and math.isfinite(v) else None for v in values]
        fig.add_scatter(x=x, y=finite, mode="lines+markers", name=name, line=dict(color=color), text=text,
                        hovertemplate="%{text}: %{y:.1f} dB<extra>" + name + "</extra>")
    return _layout(fig, title="Where INT8 error comes from",
                   subtitle="SQNR to FP32 per tensor (higher is closer); the lower of the two single-source lines "
                            "is the larger source", min_height=360, xaxis_title="tensor (FP32 graph order)",
                   yaxis_title="SQNR (dB)")


def error_sources_table(rows: Sequence[LayerError], count: int = 10) -> list[dict]:
    """The `count` tensors with most error: SQNR with everything, only weights and only activations quantised, the
    source that explains most of it, and the fix that usually helps."""
    return [{"tensor": row.tensor, "SQNR": db_text(row.sqnr_db),
             "weights only": db_text(row.weights_sqnr_db), "activations only": db_text(row.activations_sqnr_db),
             "cause": row.cause or "n/a", "usual fix": row.fix or ""} for row in worst(list(rows), count)]

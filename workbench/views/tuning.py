"""Figures for mixed precision: unit sensitivity beside latency share, and the latency/accuracy Pareto frontier.

Pure functions of `workbench.tune` results (SensitivityReport, TuneResult).
"""
from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..tune import METRIC_UNITS, SensitivityReport, TuneResult
from .figures import PRECISION_COLORS, titled, wrap_label

_MEASURED, _PROXY, _TIME = "#c62828", "#ef9a9a", "#1565c0"
_COLUMN_TITLES_PX = 36  # two lines of 12 px subplot titles


def sensitivity_figure(report: SensitivityReport, *, top: int = 25) -> go.Figure:
    """Each unit's harm (measured recovery when kept FP32, else the drift proxy) beside its share of layer time:
    long red and short blue = keep it in FP32 cheaply; short red and long blue = quantising it pays."""
    units = report.units[:top]
    names = [u.unit.name if len(u.unit.name) <= 40 else u.unit.name[:37] + "…" for u in units]
    # three narrow columns: short titles on two lines each, the unit on the axis, so neighbours never overlap
    fig = make_subplots(rows=1, cols=3, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=("recovered when<br>kept FP32", "proxy: noise<br>added (drift)",
                                        "share of<br>layer time"))
    hover = [f"<b>{u.unit.name}</b><br>engine layer: {u.unit.layer} ({u.unit.layer_type})<br>"
             f"time: {'-' if u.unit.latency_ms is None else f'{u.unit.latency_ms:.4f} ms'}<br>"
             f"output SQNR: {'-' if u.output_sqnr_db is None else f'{u.output_sqnr_db:.1f} dB'}<br>"
             f"noise added: {u.noise_added:.2e}"
             + ("" if u.recovered is None else f"<br>measured: {u.recovered:+.4f} ({u.confirmed_label})")
             for u in units]
    fig.add_bar(x=[u.recovered if u.recovered is not None else 0.0 for u in units], y=names, orientation="h",
                name="measured recovery", marker_color=_MEASURED, hovertext=hover, hoverinfo="text", row=1, col=1)
    fig.add_bar(x=[u.noise_added for u in units], y=names, orientation="h", name="drift proxy",
                marker_color=_PROXY, hovertext=hover, hoverinfo="text", row=1, col=2)
    fig.add_bar(x=[100.0 * (u.unit.latency_share or 0.0) for u in units], y=names, orientation="h",
                name="latency share (%)", marker_color=_TIME, hovertext=hover, hoverinfo="text", row=1, col=3)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_xaxes(title_text=wrap_label(METRIC_UNITS[report.metric], 18), row=1, col=1)
    fig.update_xaxes(title_text="noise / signal", row=1, col=2)
    fig.update_xaxes(title_text="% of layer time", row=1, col=3)
    fig.update_xaxes(nticks=4)
    confirmed = sum(u.recovered is not None for u in report.units)
    top = titled(fig, f"Sensitivity of {report.configuration}",
                 f"{len(report.units)} units, most harmful first; {confirmed} confirmed by rebuilding with the unit "
                 "in FP32, the rest ranked by drift")
    # the subplot titles (two lines) sit right above the plots; the subtitle goes above them
    for annotation in fig.layout.annotations[:3]:
        annotation.update(font=dict(size=12), yshift=2)
    if len(fig.layout.annotations) > 3:
        fig.layout.annotations[3].yshift += _COLUMN_TITLES_PX
    fig.update_layout(height=max(360, 150 + top + 22 * len(units)), showlegend=False, autosize=True,
                      margin=dict(l=10, r=10, t=top + _COLUMN_TITLES_PX, b=60))
    fig.update_yaxes(automargin=True)
    return fig


def pareto_figure(found: TuneResult) -> go.Figure:
    """Median latency against accuracy drop for every configuration the search measured; the frontier (nothing
    faster and more accurate) joined by a line, the chosen plan starred, each point labelled by what it keeps in
    FP32. Each point's customdata is its cache key, so a click can select that configuration."""
    configs = found.configurations
    unit = METRIC_UNITS[found.metric]
    fig = go.Figure()
    frontier = found.frontier
    fig.add_scatter(x=[c.latency_ms for c in frontier], y=[c.drop for c in frontier], mode="lines",
                    name="frontier", line=dict(color="#555", dash="dot"), hoverinfo="skip")
    for within in (True, False):
        group = [c for c in configs if c.within_budget == within]
        if not group:
            continue
        fig.add_scatter(
            x=[c.latency_ms for c in group], y=[c.drop for c in group], mode="markers+text",
            name="within budget" if within else "over budget", text=[c.kept_text for c in group],
            textposition="top center", customdata=[c.cache_key for c in group],
            hovertext=[f"<b>{c.label}</b><br>{c.latency_ms:.3f} ms median (p90 {c.latency_p90_ms:.3f}) at batch "
                       f"{c.batch}" + (f", {c.speedup_vs_fp32:.2f}x FP32" if c.speedup_vs_fp32 else "")
                       + f"<br>{found.metric}: {c.value:.4f}, drop {c.drop:+.4f} ({unit})<br>{c.step}"
                       for c in group], hoverinfo="text",
            marker=dict(size=[16 if c.on_frontier else 10 for c in group],
                        color=[PRECISION_COLORS.get(c.precision, PRECISION_COLORS["unknown"]) for c in group],
                        symbol="circle" if within else "x", line=dict(width=1, color="#222")))
    if found.chosen is not None:
        fig.add_scatter(x=[found.chosen.latency_ms], y=[found.chosen.drop], mode="markers", name="chosen",
                        marker=dict(symbol="star", size=22, color="gold", line=dict(width=1, color="#222")),
                        customdata=[found.chosen.cache_key], hovertext=[f"chosen: {found.chosen.label}"],
                        hoverinfo="text")
    fig.add_hline(y=found.max_drop, line=dict(color="#c62828", dash="dash"),
                  annotation_text=f"max drop {found.max_drop:g} {unit}", annotation_position="top left")
    fig.update_layout(
        title=dict(text=f"{found.model}: latency vs accuracy of {len(configs)} configurations",
                   subtitle=dict(text=f"search stopped: {found.stopped} · star: fastest within budget"
                                 + (" (re-timed in turns with FP32)" if found.chosen and found.chosen.retimed
                                    else ""))),
        xaxis_title="median latency per batch (ms)", yaxis_title=f"{found.metric} drop from FP32<br>({unit})",
        height=480)
    return fig

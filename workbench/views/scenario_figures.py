"""Plotly figures for deployment scenarios: region policy matrix, calibration mismatch, serving cost."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import plotly.graph_objects as go

from ..errors import WorkbenchError
from ..results import RunResult
from ..scenarios.cost import DEFAULT_VOLUMES, cost_table
from ..scenarios.mismatch import MismatchMatrix
from ..scenarios.policy import RegionChoice
from .figures import titled, wrap_label

VIOLATES, ALLOWED, CHOSEN = 0, 1, 2
_POLICY_COLORS = {VIOLATES: "#F4B6B6", ALLOWED: "#B7E4C7", CHOSEN: "#2D9D5B"}


def _discrete_scale(colors: dict[int, str]) -> list:
    """A stepped colorscale so z values 0, 1, 2 map to exactly one colour each."""
    n = len(colors)
    scale = []
    for i, color in enumerate(colors.values()):
        scale += [[i / n, color], [(i + 1) / n, color]]
    return scale


def policy_matrix_figure(choices: Sequence[RegionChoice], results: Sequence[RunResult]) -> go.Figure:
    """Regions x configurations: median latency and accuracy drop per cell, green when the policy allows it,
    red when it violates it, dark green with a star for the region's choice. `choices` come from
    `workbench.scenarios.choose(policies, results)` with the same `results`."""
    results = list(results)
    if not choices or not results:
        raise WorkbenchError("Nothing to plot: pass the choices from choose(policies, results) and those results.")
    if any(len(c.checks) != len(results) for c in choices):
        raise WorkbenchError("The choices were computed from different results: call choose(policies, results) "
                             "with the results you pass here.")
    columns = [r.label for r in results]
    z, text, hover = [], [], []
    for choice in choices:
        z_row, text_row, hover_row = [], [], []
        for result, check in zip(results, choice.checks):
            chosen = choice.choice is result
            z_row.append(CHOSEN if chosen else ALLOWED if check.ok else VIOLATES)
            latency = "—" if check.latency_ms is None else f"{check.latency_ms:.3f} ms"
            drop = "—" if check.drop_points is None else f"drop {check.drop_points:.2f} pts"
            text_row.append(("★ " if chosen else "") + f"{latency}<br>{drop}")
            hover_row.append(f"<b>{choice.region}</b> × {check.config}<br>"
                             + ("chosen: fastest allowed" if chosen else "allowed" if check.ok else check.reason))
        z.append(z_row)
        text.append(text_row)
        hover.append(hover_row)
    fig = go.Figure(go.Heatmap(
        z=z, x=columns, y=[c.region for c in choices], text=text, texttemplate="%{text}", customdata=hover,
        hovertemplate="%{customdata}<extra></extra>", zmin=0, zmax=2, colorscale=_discrete_scale(_POLICY_COLORS),
        showscale=False, xgap=2, ygap=2))
    batch = choices[0].batch
    # the key goes in the subtitle, never under the axis where it would collide with its title
    top = titled(fig, f"Regional precision policies: ★ fastest allowed configuration (median latency, batch {batch})",
                 "green: allowed · red: violates the policy (hover for why) · drop vs FP32 in percentage points")
    fig.update_layout(xaxis_title="configuration", yaxis_title="region", yaxis_autorange="reversed",
                      autosize=True, height=220 + top + 70 * len(choices), margin=dict(t=top))
    fig.update_xaxes(tickvals=columns, ticktext=[wrap_label(c) for c in columns], tickangle=0, automargin=True)
    fig.update_yaxes(automargin=True)
    return fig


def mismatch_figure(matrix: MismatchMatrix) -> go.Figure:
    """Heatmap of accuracy per calibration set (rows, with the FP32 reference on top) and evaluation set (columns),
    with the drop vs FP32 in each cell."""
    drops = matrix.drop_points()
    rows = ["FP32 (no calibration)"] + [f"INT8 calibrated on {name}" for name in matrix.calibration_sets]
    z = [[None if v is None else 100.0 * v for v in matrix.fp32]]
    text = [["—" if v is None else f"{100 * v:.2f}%<br>reference" for v in matrix.fp32]]
    for row, drop_row in zip(matrix.accuracy, drops):
        z.append([None if v is None else 100.0 * v for v in row])
        text.append(["—" if v is None else f"{100 * v:.2f}%<br>drop {d:.2f} pts" for v, d in zip(row, drop_row)])
    columns = [f"{name} ({metric})" for name, metric in zip(matrix.eval_sets, matrix.metric)]
    fig = go.Figure(go.Heatmap(z=z, x=columns, y=rows, text=text, texttemplate="%{text}", colorscale="RdYlGn",
                               colorbar_title="accuracy %", xgap=2, ygap=2,
                               hovertemplate="%{y}<br>evaluated on %{x}<br>%{text}<extra></extra>"))
    fig.update_layout(
        title=f"Calibration mismatch: {matrix.model}, INT8 ({matrix.method}, {matrix.qdq_style}) @ {matrix.backend}",
        xaxis_title="evaluated on", yaxis_title="calibrated on", yaxis_autorange="reversed", autosize=True,
        height=200 + 60 * len(rows))
    fig.update_yaxes(automargin=True)
    return fig


COST_CAPTION = ("cost/month = requests/day ÷ (batch × 3,600,000 ÷ latency_ms × utilisation) × 30.4 days × "
                "price per engine-hour{provisioned}. Latency: measured median per batch.")


def cost_figure(results: Iterable[RunResult], volumes: Sequence[float] = DEFAULT_VOLUMES, *,
                price_per_hour: float = 1.0, utilisation: float = 0.6, batch: int | None = None,
                provisioned: bool = False, currency: str = "$") -> go.Figure:
    """Cost per month vs daily request volume (log-log), one line per configuration; hover shows savings vs FP32.
    `provisioned=True` plots whole always-on instances instead of engine-hours billed on demand."""
    rows = cost_table(results, volumes, price_per_hour=price_per_hour, utilisation=utilisation, batch=batch)
    if not rows:
        raise WorkbenchError("No result was measured at a common batch size: pass batch= with a size every "
                             "configuration was timed at.")
    key = "provisioned_cost_per_month" if provisioned else "cost_per_month"
    fig = go.Figure()
    for config in dict.fromkeys(row["config"] for row in rows):
        mine = [row for row in rows if row["config"] == config]
        savings = ["no FP32 baseline" if r["savings_vs_fp32"] is None else f"{100 * r['savings_vs_fp32']:+.1f}% "
                   "saved vs FP32" for r in mine]
        fig.add_trace(go.Scatter(
            x=[r["requests_per_day"] for r in mine], y=[r[key] for r in mine], mode="lines+markers", name=config,
            customdata=[[r["engine_hours_per_day"], r["instances"], s] for r, s in zip(mine, savings)],
            hovertemplate=(f"{config}<br>%{{x:,.0f}} requests/day<br>{currency}%{{y:,.2f}} per month<br>"
                           "%{customdata[0]:.2f} engine-hours/day, %{customdata[1]} instance(s)<br>"
                           "%{customdata[2]}<extra></extra>")))
    caption = COST_CAPTION.format(provisioned=" (provisioned: whole instances × 24 h)" if provisioned else "")
    # the formula goes in the subtitle (two lines), never under the axis where it would collide with its title
    top = titled(fig, f"Serving cost per month at batch {rows[0]['batch']}, utilisation {utilisation:g}, "
                      f"{currency}{price_per_hour:g}/engine-hour", caption.replace(". Latency", ".<br>Latency"))
    # the legend goes under the plot (its margin grows to fit): long configuration names never squeeze the lines
    fig.update_layout(
        xaxis=dict(type="log", title="requests per day", automargin=True),
        yaxis=dict(type="log", title=f"cost per month ({currency})", automargin=True), autosize=True,
        height=460 + top, margin=dict(t=top, l=10, r=10, b=50),
        legend=dict(orientation="h", xref="container", x=0.01, xanchor="left", yref="container", y=0.0,
                    yanchor="bottom"))
    return fig

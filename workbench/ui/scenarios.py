"""The serving-cost panel: requests per day, batch size, price per engine-hour and utilisation -> cost figure and
table, re-rendered on every change.

Thin by design: every number comes from `workbench.scenarios.cost.cost_table` and the figure from
`workbench.views.scenario_figures.cost_figure`; this module only wires controls to them.
"""
from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence

from .._optional import require
from ..errors import WorkbenchError
from ..results import RunResult
from ..scenarios.cost import DEFAULT_VOLUMES, CostInputError, cost_table
from ..scenarios.policy import common_batch
from ..views.scenario_figures import cost_figure
from .figures import figure_widget, fit_after_display

# FloatLogSlider range, as powers of ten: 100 to 10 billion requests per day
MIN_EXPONENT, MAX_EXPONENT = 2, 10
TABLE_COLUMNS = (("config", "configuration"), ("latency_ms", "latency ms / batch"),
                 ("engine_hours_per_day", "engine-hours / day"), ("instances", "instances"),
                 ("cost_per_month", "cost / month (on demand)"),
                 ("provisioned_cost_per_month", "cost / month (provisioned)"), ("savings_vs_fp32", "saved vs FP32"))


class CostPanel:
    """`CostPanel(results)` then display it (last expression of a cell, or `display(panel)`).

    `results`: RunResults with measured latency (e.g. `Workbench.results`). Controls are public attributes
    (`requests_per_day`, `batch`, `price_per_hour`, `utilisation`, `provisioned`) so code can drive them via
    `.value`; after each change `rows` holds the `cost_table` rows at the chosen volume, `figure` the cost figure
    (the chosen volume marked by a dotted line) and `error` the message of a rejected input (else None).
    """

    def __init__(self, results: Iterable[RunResult], *, requests_per_day: float = 1e6, batch: int | None = None,
                 price_per_hour: float = 1.0, utilisation: float = 0.6, provisioned: bool = False,
                 currency: str = "$", volumes: Sequence[float] = DEFAULT_VOLUMES):
        widgets = require("ipywidgets", extra="notebook", purpose="the cost panel")
        go = require("plotly.graph_objects", extra="notebook")

        self.results = list(results)
        batches = sorted({stats.batch for r in self.results for stats in r.latency})
        if not batches:
            raise CostInputError("CostPanel needs results with measured latency: pass the RunResults returned by "
                                 "Workbench.run (or Workbench.results).")
        batch = batch or common_batch(self.results)
        if batch not in batches:
            raise CostInputError(f"batch={batch!r} was not measured: pick one of {batches}, or run the "
                                 f"configurations with Workbench.run(..., batches=[{batch}]).")
        if not (isinstance(requests_per_day, (int, float)) and
                10 ** MIN_EXPONENT <= requests_per_day <= 10 ** MAX_EXPONENT):
            raise CostInputError(f"requests_per_day={requests_per_day!r} is outside the panel's range: give a "
                                 f"number between {10 ** MIN_EXPONENT:,} and {10 ** MAX_EXPONENT:,}.")
        self.currency = currency
        self.volumes = tuple(volumes)
        self.rows: list[dict] = []
        self.figure = go.Figure()
        self.error: str | None = None

        whole = {"style": {"description_width": "initial"}}  # control labels are never cut short
        self.requests_per_day = widgets.FloatLogSlider(
            value=requests_per_day, base=10, min=MIN_EXPONENT, max=MAX_EXPONENT, step=0.05,
            description="Requests per day", readout_format=",.3g", continuous_update=False, **whole)
        self.batch = widgets.Dropdown(options=batches, value=batch, description="Batch", **whole,
                                      layout=widgets.Layout(width="auto"))
        self.price_per_hour = widgets.BoundedFloatText(value=price_per_hour, min=0.0, max=1e6, step=0.1,
                                                       description=f"Price per engine-hour ({currency})", **whole,
                                                       layout=widgets.Layout(width="auto"))
        self.utilisation = widgets.FloatSlider(value=utilisation, min=0.05, max=1.0, step=0.05,
                                               description="Utilisation", continuous_update=False, **whole)
        self.provisioned = widgets.Checkbox(value=provisioned, description="Plot provisioned (always-on) cost",
                                            indent=False, layout=widgets.Layout(width="auto"))
        self.status = widgets.HTML()
        self.table = widgets.HTML()
        self._figure_widget = figure_widget(go.Figure())
        rows = widgets.Layout(flex_flow="row wrap", align_items="center")  # controls wrap on narrow screens
        self.table.layout = widgets.Layout(overflow="auto hidden", max_width="100%")
        self.widget = widgets.VBox([
            widgets.HBox([self.requests_per_day, self.batch], layout=rows),
            widgets.HBox([self.price_per_hour, self.utilisation, self.provisioned], layout=rows),
            self.status, self._figure_widget, self.table], layout=widgets.Layout(max_width="100%"))
        for control in (self.requests_per_day, self.batch, self.price_per_hour, self.utilisation, self.provisioned):
            control.observe(self._on_change, names="value")
        self.update()

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.widget._repr_mimebundle_(**kwargs)
        fit_after_display(self._figure_widget)
        return bundle

    def settings(self) -> dict:
        """The cost-model inputs for the current control values."""
        return {"requests_per_day": float(self.requests_per_day.value), "batch": self.batch.value,
                "price_per_hour": float(self.price_per_hour.value), "utilisation": float(self.utilisation.value),
                "provisioned": bool(self.provisioned.value)}

    def update(self) -> None:
        """Recompute the table and figure from the current control values."""
        s = self.settings()
        volume = s["requests_per_day"]
        try:
            rows = cost_table(self.results, [volume], price_per_hour=s["price_per_hour"],
                              utilisation=s["utilisation"], batch=s["batch"])
            figure = cost_figure(self.results, sorted({*self.volumes, volume}), price_per_hour=s["price_per_hour"],
                                 utilisation=s["utilisation"], batch=s["batch"], provisioned=s["provisioned"],
                                 currency=self.currency)
        except WorkbenchError as exc:
            self.error = str(exc)
            self.status.value = f"<span style='color:#b00020'><b>Error:</b> {html.escape(self.error)}</span>"
            return
        # shapes use data coordinates even on log axes (annotations would not), so no annotation text here
        figure.add_vline(x=volume, line_dash="dot", line_color="#555")
        self.rows, self.figure, self.error = rows, figure, None
        left_out = len(self.results) - len(rows)
        self.status.value = (f"{volume:,.0f} requests/day at batch {s['batch']}, utilisation {s['utilisation']:g}, "
                             f"{html.escape(self.currency)}{s['price_per_hour']:g} per engine-hour"
                             + (f"; {left_out} configuration(s) not timed at batch {s['batch']} are left out"
                                if left_out else ""))
        self.table.value = self._table_html(rows)
        with self._figure_widget.batch_update():
            self._figure_widget.data = []
            self._figure_widget.add_traces(figure.data)
            self._figure_widget.layout = figure.layout

    def _on_change(self, _change) -> None:
        self.update()

    def _table_html(self, rows: list[dict]) -> str:
        head = "".join(f"<th>{html.escape(title)}</th>" for _, title in TABLE_COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(self._cell(key, row[key]))}</td>"
                                        for key, _ in TABLE_COLUMNS) + "</tr>" for row in rows)
        return f"<table style='border-collapse:collapse'><tr>{head}</tr>{body}</table>"

    def _cell(self, key: str, value) -> str:
        if value is None:
            return "—"
        if key == "savings_vs_fp32":
            return f"{100 * value:+.1f}%"
        if key in ("cost_per_month", "provisioned_cost_per_month"):
            return f"{self.currency}{value:,.2f}"
        if isinstance(value, float) and math.isfinite(value):
            return f"{value:.4g}"
        return str(value)

"""The explorer's "Mixed precision" tab: units ranked by sensitivity with a check box each to keep it in FP32 (the
explorer's selection then includes `keep_fp32`, so the result updates like any other selection), a "find the
fastest within budget" control running `Workbench.tune`, the Pareto view of what the search measured (clicking
a point selects that configuration), and the lint findings of the result on display.

Thin like the explorer: ranking and search are `workbench.tune`, figures are `workbench.views.tuning`. A tab of the
explorer's protocol (`workbench.ui.tabs`): it uses the explorer's public API only. The search is one job on the
explorer's scheduler (group "search"), showing its progress over the whole search, and its Cancel button stops it.
"""
from __future__ import annotations

import html
import time

from .._optional import require
from ..errors import Cancelled, WorkbenchError
from ..jobs import Progress
from ..results import RunResult
from ..vocabulary import DEFAULT_BUDGET, DEFAULT_MAX_DROP, DEFAULT_METRIC, TUNE_METRICS
from .figures import figure_widget, fit_to_panel
from .tabs import SEARCH, SPINNER, TabContext

MAX_UNITS = 40  # check boxes shown (the most sensitive units)
PICK_INT8 = "<i>Pick INT8 to rank its layers by sensitivity.</i>"


class MixedPrecisionTab:
    """Embedded by `Explorer` (its `mixed` attribute); `widget` is the tab's content. Widgets are public so code
    can drive them: `checks` (unit name -> Checkbox), `metric`, `max_drop`, `budget`, `find`, `cancel`,
    `progress`."""

    title = "Mixed precision"

    def __init__(self, explorer) -> None:
        widgets = require("ipywidgets", extra="notebook", purpose="the explorer widget")
        require("plotly.graph_objects", extra="notebook")  # for the Pareto view: fail now, not after a search
        self.explorer = explorer
        self.report = None  # SensitivityReport behind the check boxes
        self.found = None  # TuneResult of the last search
        self.ticket = None  # scheduler Ticket of the search in progress (or the last one)
        self._cancelled_at: float | None = None  # when Cancel was pressed (the worker says when it stopped)
        self.checks: dict[str, object] = {}
        self._units: dict[str, list[str]] = {}  # unit name -> its nodes
        self._owner: tuple | None = None  # (model, backend) the units belong to
        self._pinned: tuple[str, ...] | None = None  # exact keep_fp32 chosen by the search or a click
        self._quiet = False  # set while boxes are changed by code, so that does not trigger a run
        self._lint: dict[str, str] = {}  # lint findings (HTML) by result
        self._intro = ""  # what the intro says about the ranking on display
        self.intro = widgets.HTML(PICK_INT8)
        self.units_box = widgets.VBox(layout=widgets.Layout(max_height="360px", overflow="auto"))
        self.metric = widgets.Dropdown(options=list(TUNE_METRICS), value=DEFAULT_METRIC,
                                       description="Metric")
        self.max_drop = widgets.BoundedFloatText(value=DEFAULT_MAX_DROP, min=0.0, max=100.0, step=0.1,
                                                 description="Max drop")
        from ..tune import METRIC_UNITS  # (the tab is built with the first work, the tuner already loaded)

        # the drop's unit follows the metric ("points of agreement with FP32", ...)
        self.drop_unit = widgets.HTML(f"<span style='color:#555'>{METRIC_UNITS[self.metric.value]}</span>")
        self.metric.observe(lambda change: setattr(
            self.drop_unit, "value", f"<span style='color:#555'>{METRIC_UNITS[change['new']]}</span>"), names="value")
        self.budget = widgets.BoundedIntText(value=DEFAULT_BUDGET, min=1, max=50, description="Budget",
                                             style={"description_width": "initial"})
        self.find = widgets.Button(description="Find the fastest within budget", button_style="primary",
                                   layout=widgets.Layout(width="260px"))
        self.clear = widgets.Button(description="Quantise all", layout=widgets.Layout(width="120px"))
        self.cancel = widgets.Button(description="Cancel search", button_style="warning", disabled=True,
                                     layout=widgets.Layout(width="140px"))
        self.progress = widgets.IntProgress(value=0, min=0, max=1, bar_style="info",
                                            layout=widgets.Layout(width="260px", visibility="hidden"))
        self.progress_text = widgets.HTML()
        self.progress_text.add_class("workbench-search-progress")
        self.status = widgets.HTML()
        self.status.add_class("workbench-search-status")
        self.lint = widgets.HTML()  # lint findings of the result on display
        self.pareto = None  # the Pareto view (a FigureWidget, for its click events), built by each search
        self._pareto_box = widgets.VBox(layout=widgets.Layout(width="100%"))
        self.find.on_click(lambda _: self.search())
        self.clear.on_click(lambda _: self.select(()))
        self.cancel.on_click(lambda _: self.stop())
        self.widget = widgets.VBox([
            self.intro, self.units_box,
            widgets.HBox([self.metric, self.max_drop, self.drop_unit, self.budget],
                         layout=widgets.Layout(flex_flow="row wrap", align_items="center")),
            widgets.HBox([self.find, self.cancel, self.clear]),
            widgets.HBox([self.progress, self.progress_text], layout=widgets.Layout(align_items="center")),
            self.status, self._pareto_box, self.lint])

    # ---- what the explorer asks -----------------------------------------------------------------
    def keep_fp32(self) -> tuple[str, ...]:
        """Nodes the current selection keeps in FP32 (only for the model and engine the units belong to)."""
        if self._owner != (self.explorer.model.value, self.explorer.backend.value):
            return ()
        if self._pinned is not None:
            return self._pinned
        return tuple(n for name, box in self.checks.items() if box.value for n in self._units[name])

    def show(self, context: TabContext) -> None:
        """Called by the explorer with every result it shows: rank a fully quantised INT8 result's units (an FP32 or
        FP16 result clears them). Without a result (a model switch) everything of another model goes: its ranking,
        its search (cancelled if running), its Pareto view and lint."""
        session, result, owner = context.session, context.result, (context.model, context.backend)
        if result is None:
            if owner != self._owner:
                self._clear(owner)
            return
        self._show_lint(result)
        if result.precision != "int8":  # the explorer's selection keeps nodes in FP32 for INT8 only
            if owner != self._owner:
                self._set_units(None, owner)
            else:  # the ranking stays (hidden), so toggling back to its INT8 result shows it without re-ranking
                self._pinned = None  # INT8 picked again is quantised all through, as after a fresh ranking
                self._reflect(())
                self.units_box.layout.display = "none"
                self.intro.value = PICK_INT8
            return
        self.units_box.layout.display = None
        if not result.keep_fp32 and (self.report is None or owner != self._owner
                                     or self.report.configuration != result.label):
            from ..tune import sensitivity

            try:
                report = sensitivity(session, result, metric=self._metric(result), confirm=0, progress=False,
                                     batch=result.headline_latency.batch, **self.explorer.run_options)
            except WorkbenchError as exc:
                self.intro.value = f"<i>No sensitivity ranking: {html.escape(str(exc))}</i>"
                return
            self._set_units(report, owner)
        elif self.report is not None:
            self.intro.value = self._intro
        self._reflect(result.keep_fp32)

    # ---- actions ----------------------------------------------------------------------------------
    def select(self, keep_fp32) -> None:
        """Select the configuration keeping exactly `keep_fp32` in FP32 (the explorer recomputes and shows it)."""
        self._pinned = tuple(keep_fp32) or None
        self._reflect(keep_fp32)
        self.explorer.request()

    def search(self):
        """Run `Workbench.tune` with the explorer's INT8 settings as a job of the explorer's scheduler (after the
        work in progress); select the chosen plan. Returns the search's Future (None when INT8 is not selected)."""
        explorer = self.explorer
        config = explorer.selection()
        if config["precision"] != "int8":
            self.status.value = "<i>Pick INT8 first: the search mixes INT8 with FP32.</i>"
            return None
        model, backend = explorer.model.value, explorer.backend.value
        self.status.value = f"{SPINNER}Searching (budget {self.budget.value} configurations)…"
        self._show_progress(Progress("search", "waiting for the engine", 0, 1))
        self.find.disabled, self.cancel.disabled = True, False
        self._cancelled_at = None
        self.ticket = explorer.scheduler.submit(lambda ticket: self._search(ticket, model, backend, config),
                                                label=f"search on {model}", group=SEARCH,
                                                on_progress=self._show_progress)
        return self.ticket.future

    def stop(self) -> None:
        """Cancel the search in progress; it stops at its next check (between steps, inside long loops) and the
        panel then says how long that took."""
        ticket = self.ticket
        if ticket is None or ticket.done:
            return
        self._cancelled_at = time.perf_counter()
        ticket.cancel.cancel()
        self.cancel.disabled = True
        self.status.value = f"{SPINNER}Cancelling the search…"

    def _show_progress(self, progress: Progress) -> None:
        self.progress.max, self.progress.value = max(progress.total, 1), min(progress.done, progress.total)
        self.progress.layout.visibility = "visible"
        self.progress_text.value = html.escape(progress.text)

    def _finish(self, message: str) -> None:
        self.find.disabled, self.cancel.disabled = False, True
        self.progress.layout.visibility = "hidden"
        self.progress_text.value = ""
        self.status.value = message

    def _search(self, ticket, model: str, backend: str, config: dict) -> None:
        from ..tune import METRIC_UNITS
        from ..views.tuning import pareto_figure

        try:
            found = self.explorer.session(model, backend).tune(
                config["precision"], max_drop=self.max_drop.value, metric=self.metric.value,
                budget=self.budget.value, calibration=config["calibration"], methods=(config["method"],),
                qdq_styles=(config["qdq_style"],), batch=config["batch"], progress=False, cancel=ticket.cancel,
                on_progress=ticket.report, **self.explorer.run_options)
        except Cancelled:
            if self.ticket is ticket and self._cancelled_at is not None:  # (a model switch clears the panel itself)
                reached = f" during {ticket.progress.job}" if ticket.progress is not None else ""
                self._finish(html.escape(f"Search cancelled{reached}: stopped "
                                         f"{time.perf_counter() - self._cancelled_at:.1f} s after Cancel."))
            raise
        except WorkbenchError as exc:
            self._finish(f"<span style='color:#b00020'><b>Error:</b> {html.escape(str(exc))}</span>")
            return
        if ticket.cancel.cancelled:  # cancelled after its last check: nothing is selected
            if self._cancelled_at is not None:
                self._finish(f"Search cancelled as it finished: stopped "
                             f"{time.perf_counter() - self._cancelled_at:.1f} s after Cancel.")
            raise Cancelled("search cancelled")
        self.found = found
        figure = pareto_figure(found)
        self.pareto = figure_widget(figure)  # a new widget per search: no empty plot before the first one
        self._pareto_box.children = (self.pareto,)
        fit_to_panel(self.pareto)
        for trace in self.pareto.data:
            if trace.customdata is not None:
                trace.on_click(self._on_point)
        chosen = found.chosen
        self._finish(html.escape(
            f"{len(found.configurations)} configurations measured ({found.stopped}); fastest with at most "
            f"{found.max_drop:g} {METRIC_UNITS[found.metric]} lost: {chosen.kept_text if chosen else 'none'}"
            + (f", {chosen.timing_text}" if chosen else "") + ". Click a point to select it."))
        if chosen is not None and chosen.precision != "fp32":
            self.select(chosen.keep_fp32)

    def _on_point(self, trace, points, _state) -> None:
        if not points.point_inds or self.found is None:
            return
        key = trace.customdata[points.point_inds[0]]
        config = next((c for c in self.found.configurations if c.cache_key == key), None)
        if config is not None and config.precision != "fp32":
            self.select(config.keep_fp32)

    # ---- rendering --------------------------------------------------------------------------------
    def _show_lint(self, result: RunResult) -> None:
        from ..lint import findings_table, lint_result
        from ..views.tables import html_table

        key = result.cache_key or result.label
        if key not in self._lint:
            rows = [{k: v for k, v in row.items() if k != "why"} for row in findings_table(lint_result(result))]
            self._lint[key] = (f"<h4>Why is it not faster? Lint of {html.escape(result.label)}</h4>"
                               + (html_table(rows) if rows else "<p>Nothing to flag.</p>"))
        self.lint.value = self._lint[key]

    def _metric(self, result: RunResult) -> str:
        if self.metric.value == "top1" and (result.accuracy is None or result.accuracy.top1 is None):
            self.metric.value = "agreement"
        return self.metric.value

    def _clear(self, owner) -> None:
        """Nothing of another model: its search stopped, its ranking, Pareto view, lint and messages gone."""
        if self.ticket is not None and not self.ticket.done:
            self.ticket.cancel.cancel()
        self._finish("")
        self.found, self.pareto = None, None
        self._pareto_box.children = ()
        self.lint.value = ""
        self._set_units(None, owner)

    def _set_units(self, report, owner) -> None:
        widgets = require("ipywidgets", extra="notebook")
        self.report, self._owner, self._pinned = report, owner, None
        self.checks, self._units = {}, {}
        if report is None:
            self.units_box.children = []
            self.intro.value = PICK_INT8
            return
        rows = []
        for entry in report.units[:MAX_UNITS]:
            unit = entry.unit
            share = "" if unit.latency_share is None else f"{unit.latency_share:5.1%} of time · "
            box = widgets.Checkbox(value=False, indent=False, layout=widgets.Layout(width="auto"),
                                   description=f"{unit.name[:60]}  ({share}noise {entry.noise_added:.1e})")
            box.observe(self._on_check, names="value")
            self.checks[unit.name], self._units[unit.name] = box, list(unit.nodes)
            rows.append(box)
        self.units_box.children = rows
        self._intro = html.escape(
            f"{len(report.units)} quantised units of {report.configuration}, most harmful first (drift proxy: "
            "noise each adds). Tick a unit to keep it in FP32.")
        self.intro.value = self._intro

    def _reflect(self, keep_fp32) -> None:
        """Tick exactly the units whose nodes are all kept."""
        kept = set(keep_fp32)
        self._quiet = True
        try:
            for name, box in self.checks.items():
                box.value = bool(kept) and set(self._units[name]) <= kept
        finally:
            self._quiet = False

    def _on_check(self, _change) -> None:
        if self._quiet:
            return
        self._pinned = None  # the boxes now say what to keep
        self.explorer.request()

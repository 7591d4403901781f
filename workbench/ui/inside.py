"""The explorer's "Inside" tab: why the INT8 result on display drifts. Where each tensor's error comes from (only
weights / only activations quantised), the worst tensors, and for a chosen tensor its values over the calibration set
(and a second set) with every calibration method's range drawn on them, and its layer's weight range per channel.

Thin like the explorer: the numbers are `workbench.inside`, the figures `workbench.views.inside`. A tab of the
explorer's protocol (`workbench.ui.tabs`), using its public API; its work runs on the explorer's scheduler (group
"inside"), so a newer pick supersedes it and a cached selection never waits behind it. `select(tensor)` picks a
tensor from code.
"""
from __future__ import annotations

import html

from .._optional import require
from ..calibration import DEFAULT_SIZE
from ..errors import Cancelled, WorkbenchError
from ..results import RunResult
from ..views.tables import html_table
from .figures import figure_output
from .tabs import SPINNER, TabContext

GROUP = "inside"  # scheduler group: a newer pick in this tab supersedes the older one
NO_OTHER = "(none)"
PICK_INT8 = "<i>Pick a calibrated INT8 configuration (minmax, entropy or percentile) to see where its error comes " \
            "from.</i>"


class InsideTab:
    """Embedded by `Explorer` (its `inside` attribute). Widgets are public so code can drive them: `tensor`
    (Dropdown, worst tensors first), `compare` (a second calibration set), `figures` (the plotly figures on display:
    "sources", "histogram", "weights"), `table`, `histogram_table`, `status`. `ticket` is the scheduler ticket of
    the latest work."""

    title = "Inside"

    def __init__(self, explorer) -> None:
        widgets = require("ipywidgets", extra="notebook", purpose="the explorer widget")
        self.explorer = explorer
        self.result: RunResult | None = None
        self.rows = []  # LayerError of the result on display, graph order
        self.ticket = None
        self._session = None
        self._pending: TabContext | None = None  # a result to explain once the tab is opened
        self._quiet = False
        self.intro = widgets.HTML(PICK_INT8)
        self.status = widgets.HTML()
        self.table = widgets.HTML(layout=widgets.Layout(width="100%", overflow="auto"))
        self.tensor = widgets.Dropdown(description="Tensor", options=[], layout=widgets.Layout(width="min(100%, 640px)"))
        self.compare = widgets.Dropdown(description="Compare with", options=[NO_OTHER],
                                        layout=widgets.Layout(width="min(100%, 360px)"))
        for control in (self.tensor, self.compare):
            control.style.description_width = "initial"
        self.figures: dict[str, object] = {}  # name -> plotly Figure on display
        box = lambda: widgets.VBox(layout=widgets.Layout(width="100%"))  # noqa: E731
        self._sources_box, self._histogram_box, self._weights_box = box(), box(), box()
        self.histogram_table = widgets.HTML(layout=widgets.Layout(width="100%", overflow="auto"))
        self.tensor.observe(lambda _: self._on_pick(), names="value")
        self.compare.observe(lambda _: self._on_pick(), names="value")
        self.widget = widgets.VBox([self.intro, self.status, self._sources_box, self.table,
                                    widgets.HBox([self.tensor, self.compare], layout=widgets.Layout(flex_flow="row wrap")),
                                    self._histogram_box, self.histogram_table, self._weights_box],
                                   layout=widgets.Layout(width="100%"))
        explorer.tabs.observe(lambda _: self._start_if_open(), names="selected_index")

    # ---- what the explorer asks -----------------------------------------------------------------
    def show(self, context: TabContext) -> None:
        """Called with every result the explorer shows: a calibrated INT8 result with drift gets its error sources
        (computed on the scheduler once the tab is open, so a hidden tab never delays a selection; cached with the
        result); anything else clears the tab."""
        result = context.result
        if result is not None and self.result is not None and result.cache_key == self.result.cache_key:
            return
        self.explorer.scheduler.cancel(GROUP)
        self.result, self.rows, self._session, self._pending = None, [], context.session, None
        self._clear_figures()
        if result is None or result.precision != "int8" or result.method == "dynamic" or not result.drift:
            self.intro.value = PICK_INT8
            self.status.value = ""
            return
        self.result = result
        self.intro.value = f"Where the error of <b>{html.escape(result.label)}</b> comes from:"
        self._pending = context
        self.status.value = "<i>Measured when this tab is open.</i>"
        self._start_if_open()

    @property
    def is_open(self) -> bool:
        """Whether this tab is the explorer's selected tab."""
        tabs = self.explorer.tabs
        shown = tabs.children[tabs.selected_index] if tabs.selected_index is not None else None
        return shown is not None and (shown is self.widget or self.widget in getattr(shown, "children", ()))

    def _start_if_open(self) -> None:
        context = self._pending
        if context is None or not self.is_open:
            return
        self._pending = None
        result = context.result
        self._run(lambda ticket: self._sources(ticket, context.session, result), f"error sources of {result.label}")

    def select(self, tensor: str) -> None:
        """Show `tensor`'s histogram and weight ranges (as picking it in the dropdown does)."""
        if tensor not in [value for _, value in self.tensor.options]:
            raise WorkbenchError(f"{tensor!r} is not a tensor of the result on display: pick one of its drift "
                                 "points (the Tensor list).")
        self.tensor.value = tensor

    # ---- work on the scheduler ------------------------------------------------------------------
    def _run(self, work, label: str):
        self.status.value = f"{SPINNER}{html.escape(label)}…"
        self.ticket = self.explorer.scheduler.submit(work, label=label, group=GROUP)
        return self.ticket.future

    def _sources(self, ticket, session, result: RunResult) -> None:
        from .. import inside
        from ..measure.decomposition import worst
        from ..views import inside as views

        rows = self._attempt(lambda: inside.error_sources(session, result, cancel=ticket.cancel))
        if rows is None or result is not self.result:
            return
        self.rows = rows
        self._draw("sources", self._sources_box, views.error_sources_figure(rows))
        self.table.value = html_table(views.error_sources_table(rows, count=5))
        ordered = worst(rows, len(rows))
        self._quiet = True
        try:
            self.compare.options = [NO_OTHER, *[n for n in session.calibration_sets if n != result.calibration]]
            self.compare.value = NO_OTHER
            self.tensor.options = [(f"{row.tensor} ({views.db_text(row.sqnr_db)}, {row.cause or 'n/a'})", row.tensor)
                                   for row in ordered]
            self.tensor.value = ordered[0].tensor if ordered else None
        finally:
            self._quiet = False
        self.status.value = ""
        if ordered:
            self._detail(ticket, session, result, ordered[0].tensor, None)

    def _on_pick(self) -> None:
        if self._quiet or self.result is None or self.tensor.value is None:
            return
        session, result, tensor = self._session, self.result, self.tensor.value
        other = None if self.compare.value == NO_OTHER else self.compare.value
        self._run(lambda ticket: self._detail(ticket, session, result, tensor, other), f"histogram of {tensor}")

    def _detail(self, ticket, session, result: RunResult, tensor: str, other: str | None) -> None:
        from .. import inside
        from ..views import inside as views

        histogram = self._attempt(lambda: inside.histogram(
            session, tensor, calibration=result.calibration, compare=other,
            calibration_size=result.calibration_size or DEFAULT_SIZE, qdq_style=result.qdq_style or "onnxruntime",
            cancel=ticket.cancel, progress=lambda done, total: self._progress(ticket, tensor, done, total)))
        if histogram is None or result is not self.result:
            return
        self._draw("histogram", self._histogram_box, views.histogram_figure(histogram))
        self.histogram_table.value = html_table(views.histogram_table(histogram))
        try:
            self._draw("weights", self._weights_box, views.weight_ranges_figure(inside.weight_ranges(session, tensor)))
        except WorkbenchError:  # nothing weighted computes it (an input, a pooling or an Add): no weights to show
            self._weights_box.children = ()
            self.figures.pop("weights", None)
        self.status.value = ""

    def _attempt(self, work):
        """`work()`, or None when it was cancelled or failed (the failure is shown in the status line)."""
        try:
            return work()
        except Cancelled:
            return None
        except WorkbenchError as exc:
            self.status.value = f"<span style='color:#b00020'>{html.escape(str(exc))}</span>"
            return None

    def _progress(self, ticket, tensor: str, done: int, total: int) -> None:
        if not ticket.cancel.cancelled:
            self.status.value = f"{SPINNER}histogram of {html.escape(tensor)}: batch {done} of {total}"

    # ---- drawing --------------------------------------------------------------------------------
    def _draw(self, name: str, box, figure) -> None:
        """Show `figure` in `box` the way the explorer's views are shown (it follows the panel's width)."""
        self.figures[name] = figure
        box.children = (figure_output(figure),)

    def _clear_figures(self) -> None:
        for box in (self._sources_box, self._histogram_box, self._weights_box):
            box.children = ()
        self.figures = {}
        self.table.value = self.histogram_table.value = ""
        self._quiet = True
        try:
            self.tensor.options, self.compare.options = [], [NO_OTHER]
        finally:
            self._quiet = False

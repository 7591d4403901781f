"""The interactive explorer: pick model, precision, calibration, method, Q/DQ style, batch and engine; see fusion,
per-layer latency, drift and a summary of every configuration tried so far.

Thin by design: all computation is a `Workbench` job (prepare -> is_cached -> execute), all figures are
`workbench.views` functions of results. The widgets are built first and work starts once the explorer is displayed
(or `wait()` is called). Every selection goes to the explorer's `Scheduler`: a cached one is answered at once on the
calling thread, never behind work in progress; the rest runs on its worker thread, and a newer selection cancels
the one running (between steps and inside its long loops). Each request carries a generation number, and every
update of the panel (status, figures, progress) re-checks under a lock that its generation is still the newest; in
the browser, a finished status is hidden the moment its precision or batch button is no longer the selected one
(STALE_STYLE), before the kernel hears of the click, so quick clicks never flash a superseded result. Rendered
views are kept per result, and the browser keeps the figures it drew, so toggling back to a computed configuration
only switches which drawn figure a tab shows (`_show_view`). Tabs follow a small protocol (`workbench.ui.tabs`).
"""
from __future__ import annotations

import html
import threading
import time
import traceback
from concurrent.futures import Future

from typing import TYPE_CHECKING

from .._optional import require
from ..choices import BATCH_SIZES, dynamic_selection, explorer_methods
from ..errors import Cancelled, WorkbenchError
from ..jobs import Progress
from ..scheduler import SELECTION, Scheduler, Ticket
from ..vocabulary import PRECISIONS
from .figures import figure_output
from .layout import LAYOUT_STYLE
from .loader import Loader
from .tabs import SEARCH, SPINNER, DeferredTab, StaticTab, Tab, TabContext

if TYPE_CHECKING:
    from ..precision.plan import PrecisionPlan
    from ..results import RunResult
    from ..session import Job

# Controls that only mean something for INT8; disabled (and ignored) at other precisions.
INT8_CONTROLS = ("calibration", "method", "qdq_style")
# Figures kept drawn per tab (only the one its panel's class names is shown). Hidden ones keep their place in the
# layout at zero height, not display:none, so plotly still sees their width and follows window resizes.
KEPT_VIEWS = 6
VIEWS_STYLE = ("<style>.workbench-views>.widget-output{height:0;overflow:hidden;visibility:hidden}"
               + "".join(f".workbench-views.workbench-show-{i}>.widget-output:nth-child({i + 1})"
                         "{height:auto;overflow:visible;visibility:inherit}" for i in range(KEPT_VIEWS))
               + "</style>")
PRECISION_BUTTONS = tuple((p.upper(), p) for p in PRECISIONS)
# A finished status names the precision and batch it is for (classes of its span); the browser hides it as soon as
# another button or batch is selected there, without a round trip to the kernel (no stale flash on quick clicks).
STALE_STYLE = ("<style>" + ",".join(
    [f".workbench-explorer:has(.workbench-precision button.mod-active:not([data-value='{label}'])) "
     f".workbench-done.workbench-for-{value}" for label, value in PRECISION_BUTTONS]
    + [f".workbench-explorer:has(.workbench-batch option:checked:not([value='{size}'])) "
       f".workbench-done.workbench-batch-{size}" for size in BATCH_SIZES])
    + "{visibility:hidden}"
    ".workbench-spinner{display:inline-block;width:11px;height:11px;margin-right:6px;vertical-align:-1px;"
    "border:2px solid #c5cae9;border-top-color:#1565c0;border-radius:50%;animation:workbench-spin .8s linear infinite}"
    "@keyframes workbench-spin{to{transform:rotate(360deg)}}"
    ".workbench-computing{opacity:.5;transition:opacity .3s}</style>")  # the views shown are of an older selection


class Explorer:
    """`Explorer("fashion-cnn")` then display it (it is the last expression of a cell, or `display(explorer)`).

    `models`: sample names and/or `{name: Model}` for models loaded by the user. Widgets are public attributes
    (`model`, `backend`, `precision`, `calibration`, `method`, `qdq_style`, `batch`) so code can drive them; `wait()`
    blocks until the current selection is shown; `figures` holds the plotly figures on display; `plan()` is the
    selected `PrecisionPlan`; `scheduler` runs its work. `add_tab(tab)` adds a tab of your own (a `Tab`: title,
    widget, show(context); or `add_tab(title, widget)`) beside the built-in ones.
    """

    def __init__(self, model="fashion-cnn", *, models=None, backend: str = "onnxruntime", cache_dir=None,
                 shared_cache=None, threads: int | None = None, runs: int | None = None, drift: bool = True,
                 background: bool = True):
        # Only ipywidgets and the lists of choices are imported here: the engines, plotly and the tuner load in
        # the background after display, so the panel is on screen at once.
        widgets = require("ipywidgets", extra="notebook", purpose="the explorer widget")
        from ..choices import BATCH_SIZES, DEFAULT_BATCH, EXPLORER_RUNS
        from ..precision.plan import METHODS, PRECISIONS, QDQ_STYLES

        self._session_kwargs = {"cache_dir": cache_dir, "shared_cache": shared_cache, "threads": threads,
                                "progress": False}
        self._runs, self._drift = EXPLORER_RUNS if runs is None else runs, drift
        self._user_models = dict(models) if isinstance(models, dict) else {}
        self._user_inputs: dict[str, dict] = {}  # input overrides of loaded models (the loading panel's "Inputs")
        self._model_names = list(models) if models is not None and not isinstance(models, dict) else None
        if not isinstance(model, str):
            model = (self._model_names or _sample_names())[0]
        names = list(dict.fromkeys([model, *(self._model_names or []), *self._user_models]))
        self._choices_filled = False
        self._sessions: dict[tuple[str, str], object] = {}
        self._session_lock = threading.Lock()
        self._results: dict[str, RunResult] = {}  # every configuration tried, by cache key
        self._views: dict[tuple, object] = {}  # rendered widgets and HTML, by what they show
        self._methods: dict[str, list[str]] = {}  # INT8 methods offered, by model content hash
        self.scheduler = Scheduler(name="workbench-explorer")
        self._generation = 0
        self._ticket: Ticket | None = None  # of the newest selection
        self._lock = threading.RLock()  # held while the panel is updated and while a new request is registered
        self._refreshing = False  # set while calibration options are replaced, so that does not trigger a run
        self._background = background
        self._started = False
        self._fusion_page = 0
        self.current: RunResult | None = None
        self.error: str | None = None
        self.figures: dict[str, object] = {}
        self._figure_widgets: dict[str, object] = {}

        self.model = widgets.Dropdown(options=names, value=model, description="Model")
        self.backend = widgets.Dropdown(options=[backend], value=backend, description="Engine")
        self.precision = widgets.ToggleButtons(options=list(PRECISION_BUTTONS), value="fp32", description="Precision")
        self.precision.add_class("workbench-precision")
        self.calibration = widgets.Dropdown(options=_calibration_names(model), description="Calibration")
        # "dynamic" joins the calibrated methods once the model is known to have a MatMul it quantises
        self.method = widgets.Dropdown(options=[m for m in METHODS if m != "dynamic"], value=METHODS[0],
                                       description="Method")
        self.qdq_style = widgets.Dropdown(options=list(QDQ_STYLES), value=QDQ_STYLES[0], description="Q/DQ style")
        self.batch = widgets.Dropdown(options=list(BATCH_SIZES), value=DEFAULT_BATCH, description="Batch")
        self.batch.add_class("workbench-batch")
        self.status = widgets.HTML()
        self.status.add_class("workbench-status")  # a stable hook for browser tests and custom styling
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="", bar_style="info",
                                            style={"description_width": "initial"},
                                            layout=widgets.Layout(width="340px", visibility="hidden"))
        self.progress.add_class("workbench-progress")
        self.summary = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.fusion = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.fusion.add_class("workbench-fusion")
        self._page_previous = widgets.Button(description="◀ previous page", layout=widgets.Layout(width="auto"))
        self._page_next = widgets.Button(description="next page ▶", layout=widgets.Layout(width="auto"))
        self._page_label = widgets.HTML()
        self._page_previous.add_class("workbench-page-previous")
        self._page_next.add_class("workbench-page-next")
        self._page_previous.on_click(lambda _: self.show_fusion_page(self._fusion_page - 1))
        self._page_next.on_click(lambda _: self.show_fusion_page(self._fusion_page + 1))
        self._pager = widgets.HBox([self._page_previous, self._page_label, self._page_next],
                                   layout=widgets.Layout(display="none", align_items="center"))
        self._panels = {name: widgets.VBox(layout=widgets.Layout(width="100%"))
                        for name in ("latency", "drift", "tradeoff")}
        for panel in self._panels.values():
            panel.add_class("workbench-views")
        self._drawn: set = set()  # figure widgets that have been on display (see _show_view)
        # the Mixed precision tab is built with the first work (it needs plotly and the tuner)
        self._mixed_tab = DeferredTab("Mixed precision", _mixed_precision_tab)
        self._inside_tab = DeferredTab("Inside", _inside_tab)
        drift_note = widgets.HTML(layout=widgets.Layout(width="100%"))  # filled with the first figures
        self._drift_note = drift_note
        # The tab list, in one place. add_tab() appends to it; every tab is shown each result (Tab.show).
        self._tab_list: list[Tab] = [
            StaticTab("Fusion", widgets.VBox([self._pager, self.fusion], layout=widgets.Layout(width="100%"))),
            StaticTab("Per-layer latency", self._panels["latency"]),
            StaticTab("Drift", widgets.VBox([drift_note, self._panels["drift"]], layout=widgets.Layout(width="100%"))),
            StaticTab("Latency vs accuracy", self._panels["tradeoff"]),
            StaticTab("Summary", self.summary),
            self._mixed_tab,
            self._inside_tab,
        ]
        self.tabs = widgets.Tab(layout=widgets.Layout(width="100%"))
        self._update_tabs()
        self._int8_box = widgets.HBox([self.calibration, self.method, self.qdq_style])
        self.loader = Loader(self)  # load a model (path, torchvision:NAME, upload) or a calibration .npz
        self.widget = widgets.VBox([
            widgets.HTML(VIEWS_STYLE + LAYOUT_STYLE + STALE_STYLE, layout=widgets.Layout(display="none")), self.loader.widget,
            widgets.HBox([self.model, self.backend, self.batch]), self.precision, self._int8_box,
            widgets.HBox([self.progress, self.status], layout=widgets.Layout(align_items="center")), self.tabs],
            layout=widgets.Layout(width="100%"))
        self.widget.add_class("workbench-explorer")
        self._sync_int8_controls()
        self._set_status("Starting…", busy=True)

        self.model.observe(self._on_model, names="value")
        self.backend.observe(self._on_model, names="value")
        for control in (self.precision, self.calibration, self.method, self.qdq_style, self.batch):
            control.observe(self._on_setting, names="value")

    # ---- display ------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        bundle = self.widget._repr_mimebundle_(**kwargs)
        self._start()  # the bundle is built: the panel shows at once, the (background) work follows
        return bundle

    def add_tab(self, tab: Tab | str, widget=None) -> None:
        """Add a tab after the built-in ones: a `Tab` (title, widget, show(context): shown every result), or a title
        and a widget you fill yourself."""
        self._tab_list.append(StaticTab(tab, widget) if isinstance(tab, str) else tab)
        self._update_tabs()

    def _update_tabs(self) -> None:
        self.tabs.children = [tab.widget for tab in self._tab_list]
        self.tabs.titles = [tab.title for tab in self._tab_list]

    @property
    def mixed(self):
        """The Mixed precision tab (`MixedPrecisionTab`; None until the first work has started)."""
        return self._mixed_tab.tab

    @property
    def inside(self):
        """The Inside tab (`InsideTab`; None until the first work has started)."""
        return self._inside_tab.tab

    @property
    def run_options(self) -> dict:
        """The job options every selection is measured with (timed runs, drift)."""
        return {"runs": self._runs, "drift": self._drift}

    @property
    def results(self) -> list[RunResult]:
        """Every configuration computed so far, in the order tried."""
        return list(self._results.values())

    def selection(self) -> dict:
        """The run() arguments for the current widget values."""
        int8 = self.precision.value == "int8"
        selection = {"precision": self.precision.value, "batch": self.batch.value,
                     "calibration": self.calibration.value if int8 else None,
                     "method": self.method.value if int8 else None,
                     "qdq_style": self.qdq_style.value if int8 else None,
                     "keep_fp32": self.mixed.keep_fp32() if int8 and self.mixed is not None else ()}
        return dynamic_selection(selection) if selection["method"] == "dynamic" else selection

    def plan(self) -> PrecisionPlan:
        """The `PrecisionPlan` of the current widget values."""
        return _plan_of(self.selection())

    def job(self, session, config: dict | None = None) -> Job:
        """The `Workbench` job of a selection (default: the current one) in `session`; no work is done."""
        config = self.selection() if config is None else config
        return session.prepare(_plan_of(config), batch=config["batch"], calibration=config["calibration"],
                               **self.run_options)

    def add_model(self, name: str, model, *, inputs: dict | None = None) -> None:
        """Offer a loaded `Model` as `name` (with input overrides for its synthetic data) and select it; a model
        loaded again under the same name replaces the old one."""
        with self._session_lock:
            self._user_inputs[name] = inputs
            self._user_models[name] = model
            for key in [key for key in self._sessions if key[0] == name]:
                del self._sessions[key]
        if name not in self.model.options:
            self.model.options = [*self.model.options, name]
        if self.model.value == name:
            self._on_model(None)
        else:
            self.model.value = name  # refreshes the calibration sets and runs the selection

    def add_calibration_set(self, calibration) -> None:
        """Add a `CalibrationSet` to the current model's session, offer it and select it (runs INT8 on it)."""
        self.session().add_calibration_set(calibration)
        self._refresh_calibration_options()
        self.calibration.value = calibration.name

    # ---- work ---------------------------------------------------------------------------------
    def session(self, model: str | None = None, backend: str | None = None):
        """The cached Workbench session for a model and engine (created on first use)."""
        from ..session import Workbench

        key = (model or self.model.value, backend or self.backend.value)
        with self._session_lock:
            if key not in self._sessions:
                source = self._user_models.get(key[0], key[0])
                self._sessions[key] = Workbench(source, backend=key[1], inputs=self._user_inputs.get(key[0]),
                                                **self._session_kwargs)
            for other_key, other in self._sessions.items():  # results stay; only the engines of other models go
                if other_key[0] != key[0]:
                    other.close()
            return self._sessions[key]

    def request(self) -> Future:
        """Compute and show the current selection: at once when it is cached, else on the scheduler's worker
        (in the calling thread with background=False), superseding the selection computing before it."""
        self._started = True
        requested = time.perf_counter()  # the status says how long the person waited, queueing included
        with self._lock:
            self._generation += 1
            generation = self._generation
            model, backend, config = self.model.value, self.backend.value, self.selection()
            cached = self._background and self._is_cached(model, backend, config)
            what = f"{html.escape(_config_text(config))} on {html.escape(model)} ({html.escape(backend)})"
            running = self.scheduler.running
            waiting = "" if cached or running is None or running.group != SEARCH else \
                " (waiting for the running search: cancel it in the Mixed precision tab to go first)"
            self._set_status(f"{SPINNER}Computing {what}…{waiting}", busy=True)
            if not cached:
                self.tabs.add_class("workbench-computing")
                waits_for = "starting" if running is None else "stopping the previous selection" \
                    if running.group == SELECTION else f"waiting for {running.label}"
                self._show_progress(generation, Progress(what, waits_for, 0, 1))
        self._ticket = self.scheduler.submit(
            lambda ticket: self._compute(ticket, generation, model, backend, config, requested),
            label=f"{_config_text(config)} on {model}", cached=cached or not self._background,
            on_progress=lambda progress: self._show_progress(generation, progress))
        return self._ticket.future

    def _start(self) -> None:
        if not self._started:
            self.request()

    def wait(self, timeout: float | None = 600) -> RunResult | None:
        """Block until the newest selection is computed and shown; returns its result (None on error)."""
        self._start()
        while True:
            ticket = self._ticket
            try:
                ticket.future.result(timeout=timeout)
            except Cancelled:  # superseded while it waited: the newer one is waited for
                pass
            if ticket is self._ticket:
                return self.current

    def _current(self, generation: int) -> bool:
        return generation == self._generation

    def _is_cached(self, model: str, backend: str, config: dict) -> bool:
        """Whether the selection is answered from the cache without loading anything (its session exists)."""
        session = self._sessions.get((model, backend))
        if session is None or not self._choices_filled:
            return False
        try:
            job = self.job(session, config)
        except Exception:  # noqa: BLE001 - an invalid selection is reported by the worker, like any failure
            return False
        return job.key in self._results or session.is_cached(job)

    def _compute(self, ticket: Ticket, generation: int, model: str, backend: str, config: dict,
                 requested: float) -> RunResult | None:
        if not self._current(generation):  # a newer selection arrived before this one started
            return None
        try:
            if not self._choices_filled or (model, backend) not in self._sessions:
                ticket.report(Progress(model, f"loading {model} ({backend})", 0, 1))
            self._fill_choices()
            session = self.session(model, backend)
            config = self._fit_calibration(session, generation, config)
            job = self.job(session, config)
            result = self._results.get(job.key) or session.execute(job, progress=ticket.report,
                                                                     cancel=ticket.cancel)
            self._results[result.cache_key or result.label] = result
            shown = self._prepare_views(session, result) if self._current(generation) else None
        except Cancelled:  # superseded: the newer selection says what the panel shows
            return None
        except Exception as exc:  # noqa: BLE001 - any failure goes to the panel, never into the notebook
            self._show_error(generation, model, config, exc)
            return None
        with self._lock:
            if not self._current(generation):  # superseded: keep it in the summary only
                self._show_summary()
                return None
            self._apply(result, shown)
            warning = result.precision_warning
            from ..machine import other_machine_note

            elsewhere = other_machine_note(result.machine)
            self._set_status(f"{html.escape(result.label)}: {_ms(result.headline_latency.median)} median at batch "
                             f"{result.headline_latency.batch}{html.escape(self._verdict_text(result))} "
                             f"({_seconds(time.perf_counter() - requested)})"
                             + (f"<br><b>Warning:</b> {html.escape(warning)}" if warning else "")
                             + (f"<br><i class='workbench-other-machine'>{html.escape(elsewhere)}</i>"
                                if elsewhere else ""), error=bool(warning),
                             done_for=(config["precision"], config["batch"]))
        try:  # the other tabs (Mixed precision: ranking, lint) follow the figures and the status, not before them
            if self._current(generation):
                self._show_tabs(TabContext(self, model, backend, session, result))
        except Exception as exc:  # noqa: BLE001 - any failure goes to the panel, never into the notebook
            self._show_error(generation, model, config, exc)
            return None
        return result

    def _fill_choices(self) -> None:
        """Offer every sample model and installed engine (looked up after display: it imports onnx and the engines)."""
        if self._choices_filled:
            return
        from ..choices import explorer_backends

        self._mixed_tab.ready(self)
        models = self._model_names if self._model_names is not None else _sample_names()
        engines = explorer_backends()
        with self._lock:
            self._refreshing = True
            try:
                for dropdown, more in ((self.model, models), (self.backend, engines)):
                    chosen = dropdown.value  # replacing the options would select the first one
                    dropdown.options = list(dict.fromkeys([*dropdown.options, *more]))
                    dropdown.value = chosen
            finally:
                self._refreshing = False
        self._choices_filled = True

    def _fit_calibration(self, session, generation: int, config: dict) -> dict:
        """Offer the session's calibration sets and the INT8 methods its model takes; a set name from another model
        becomes this model's first set, and "dynamic" for a model it does not suit becomes the first method."""
        names = list(session.calibration_sets)
        methods = self._methods.setdefault(session.model.content_hash, explorer_methods(session.model.proto))
        with self._lock:
            if self._current(generation):
                self._refreshing = True
                try:
                    for control, options in ((self.calibration, names), (self.method, methods)):
                        if tuple(options) != tuple(control.options):
                            current = control.value
                            control.options = options
                            control.value = current if current in options else (options[0] if options else None)
                    self._sync_int8_controls()
                finally:
                    self._refreshing = False
        if config["method"] is not None and config["method"] not in methods:
            config = {**config, "method": methods[0], "calibration": names[0] if names else None,
                      "qdq_style": self.qdq_style.value}
        if config["calibration"] is not None and config["calibration"] not in names:
            config = {**config, "calibration": names[0] if names else None}
        return config

    def _show_error(self, generation: int, model: str, config: dict, exc: Exception) -> None:
        """Status: a short message, the traceback behind a toggle; the views are hidden so none disagrees."""
        message = str(exc) or type(exc).__name__
        if not isinstance(exc, WorkbenchError):
            message = f"{type(exc).__name__}: {message}"
        details = "".join(traceback.format_exception(exc))
        with self._lock:
            if not self._current(generation):
                return
            self.current, self.error = None, message
            self.tabs.layout.display = "none"
            self.tabs.remove_class("workbench-computing")
            self._set_status(
                f"<b>Error</b> for {html.escape(_config_text(config))} on {html.escape(model)}: "
                f"{html.escape(_shorten(message, 300))}<details><summary>details (traceback)</summary>"
                f"<pre style='font-size:11px;white-space:pre-wrap;max-height:300px;overflow:auto'>"
                f"{html.escape(details)}</pre></details>", error=True)

    # ---- rendering ----------------------------------------------------------------------------
    def _prepare_views(self, session, result: RunResult) -> dict:
        """Build (or reuse) every view of `result`; only widget assignment is left for `_apply`."""
        from .. import views
        from ..results import same_model as is_same_model

        colors = views.config_colors(self.results)
        key = result.cache_key or result.label
        baseline = self._baseline(result)
        same_model = [r for r in self.results if is_same_model(r, result) and r.backend == result.backend]
        drifting = [r for r in same_model if r.drift]
        specs = {
            "latency": (("latency", key, baseline.cache_key if baseline else None),
                        lambda: views.layer_latency_comparison(baseline, result, colors=colors)
                        if baseline is not None else views.layer_latency_figure(result, order="graph")),
            "drift": (("drift", *(r.cache_key for r in drifting)),
                      lambda: views.drift_figure(drifting, colors=colors) if drifting else _placeholder(
                          "No drift yet: FP32 is the reference. Pick FP16 or INT8 to see where precision is lost, "
                          "layer by layer.")),
            "tradeoff": (("tradeoff", *(r.cache_key for r in same_model)),
                         lambda: views.tradeoff_figure(same_model, colors=colors)),
        }
        shown = {}
        for name, (view_key, build) in specs.items():
            if view_key not in self._views:
                figure = build()
                self._views[view_key] = (figure, figure_output(figure))
            shown[name] = self._views[view_key]
        shown["fusion"] = self._fusion(session, result, 0) if result.engine is not None else None
        return shown

    def _fusion(self, session, result: RunResult, page: int) -> tuple[str, int]:
        """(HTML, page count) of one page of the result's fusion view; graphviz layout happens once per page."""
        from .. import views

        view_key = ("fusion", result.cache_key or result.label, page)
        if view_key not in self._views:
            try:
                view = views.fusion_graph(session.variant_model(result), result.engine, page=page)
                self._views[view_key] = (view._repr_html_(), view.pages)
            except WorkbenchError as exc:
                self._views[view_key] = (f"<p>Fusion graph not available: {html.escape(str(exc))}</p>", 1)
        return self._views[view_key]

    def show_fusion_page(self, page: int) -> None:
        """Show page `page` (0-based) of the current result's fusion view."""
        result = self.current
        if result is None or result.engine is None:
            return
        session = self.session(result.model, result.backend)
        _, pages = self._fusion(session, result, 0)
        page = max(0, min(page, pages - 1))
        markup, pages = self._fusion(session, result, page)
        with self._lock:
            if self.current is result:
                self._show_fusion(markup, page, pages)

    def _show_fusion(self, markup: str, page: int, pages: int) -> None:
        self._fusion_page = page
        self.fusion.value = markup
        self._pager.layout.display = "flex" if pages > 1 else "none"
        self._page_label.value = f"page {page + 1} of {pages}"
        self._page_previous.disabled = page == 0
        self._page_next.disabled = page >= pages - 1

    def _apply(self, result: RunResult, shown: dict) -> None:
        self.current, self.error = result, None
        self.tabs.remove_class("workbench-computing")
        if shown["fusion"] is not None:
            self._show_fusion(shown["fusion"][0], 0, shown["fusion"][1])
        for name in ("latency", "drift", "tradeoff"):
            figure, widget = shown[name]
            self.figures[name], self._figure_widgets[name] = figure, widget
            self._show_view(self._panels[name], widget)
        self.tabs.layout.display = None
        if not self._drift_note.value:
            from ..views.figures import SQNR_COSINE_EXPLANATION

            self._drift_note.value = (f"<div style='font-size:12px;color:#444'>{html.escape(SQNR_COSINE_EXPLANATION)}"
                                      "</div>")
        self._show_summary()

    def _show_view(self, panel, widget) -> None:
        """Show `widget` in `panel`, keeping the figures drawn there before (hidden by the panel's CSS class, see
        VIEWS_STYLE): toggling back to one only switches a class, so the browser shows the very plot it drew, live,
        at the panel's current width (hidden plots still follow resizes), without drawing it again. Children are only
        ever appended (ipywidgets re-creates every view after the first changed child) until KEPT_VIEWS, then the
        panel starts over with `widget` alone."""
        children = list(panel.children)
        if widget not in children:
            if len(children) >= KEPT_VIEWS:
                children = []
            if widget in self._drawn:  # a new view of it would show plotly's static picture, not the plot
                outputs = widget.outputs
                widget.outputs = ()
                widget.outputs = outputs
            self._drawn.add(widget)
            children.append(widget)
            panel.children = tuple(children)
        shown = f"workbench-show-{children.index(widget)}"
        if shown not in panel._dom_classes:
            panel._dom_classes = (*(c for c in panel._dom_classes if not c.startswith("workbench-show-")), shown)

    def _baseline(self, result: RunResult) -> RunResult | None:
        from ..results import baseline_of

        return None if result.is_baseline else baseline_of(result, self.results)

    def _verdict_text(self, result: RunResult) -> str:
        """"; vs FP32: ×1.52 (95% CI ×1.41–1.63), faster" or "; vs FP32: no measurable difference (…)": the one
        within-noise rule (`speedup_over`), so the status never calls noise a speed-up. Empty for FP32 itself."""
        from ..results import speedup_over

        baseline = self._baseline(result)
        speedup = None if baseline is None else speedup_over(result, baseline)
        if speedup is None:
            return ""
        return f"; vs FP32: {speedup.text()}" + (f", {speedup.verdict}" if speedup.measurable else "")

    def _show_summary(self) -> None:
        from ..views.tables import summary_html

        self.summary.value = summary_html(self.results) if self._results else ""

    def _show_tabs(self, context: TabContext) -> None:
        for tab in self._tab_list:
            tab.show(context)

    def _show_progress(self, generation: int, progress: Progress) -> None:
        """A step of the selection's job (loading, precision transform, build, latency, accuracy, profile, drift),
        shown the moment it starts; a superseded selection's progress is not news."""
        with self._lock:
            if generation != self._generation:
                return
            self.progress.max, self.progress.value = max(progress.total, 1), min(progress.done, progress.total)
            self.progress.description = _shorten(f"step {progress.done + 1} of {progress.total}: {progress.step}", 48)
            self.progress.layout.visibility = "visible"

    def _set_status(self, text: str, *, busy: bool = False, error: bool = False,
                    done_for: tuple[str, int] | None = None) -> None:
        """`done_for`: (precision, batch) of a finished result, so the browser hides it once another is picked."""
        colour = "#b00020" if error else ("#555" if busy else "#1b5e20")
        if not busy:
            self.progress.layout.visibility = "hidden"
        done = "" if done_for is None else f" class='workbench-done workbench-for-{done_for[0]} " \
                                           f"workbench-batch-{done_for[1]}'"
        self.status.value = f"<span{done} style='color:{colour}'>{text}</span>"

    def _sync_int8_controls(self) -> None:
        int8 = self.precision.value == "int8"
        for name in INT8_CONTROLS:
            getattr(self, name).disabled = not int8
        if self.method.value == "dynamic":  # run-time ranges: no calibration set, ONNX Runtime's ops only
            self.calibration.disabled = self.qdq_style.disabled = True

    def _on_setting(self, change) -> None:
        if change["owner"] in (self.precision, self.method):
            self._sync_int8_controls()
        if change["owner"] in (self.calibration, self.method, self.qdq_style) and self.precision.value != "int8":
            return  # INT8-only settings change nothing at FP32/FP16
        if change["owner"] in (self.calibration, self.qdq_style) and self.method.value == "dynamic":
            return  # dynamic INT8 uses neither
        if not self._refreshing:
            self.request()

    def _on_model(self, _change) -> None:
        if self._refreshing:
            return
        with self._lock:  # a clean panel: nothing of the previous model stays on screen while the new one loads
            self.current = None
            self.tabs.layout.display = "none"
            self.progress.value, self.progress.description = 0, ""
        self._show_tabs(TabContext(self, self.model.value, self.backend.value))
        self.request()  # the worker loads the model and refreshes the calibration sets

    def _refresh_calibration_options(self) -> None:
        """Offer the current session's calibration sets (e.g. after adding one to the session)."""
        self._fit_calibration(self.session(), self._generation, {"calibration": None, "method": None})


def _mixed_precision_tab(explorer) -> Tab:
    from .mixed import MixedPrecisionTab

    return MixedPrecisionTab(explorer)


def _inside_tab(explorer) -> Tab:
    from .inside import InsideTab

    return InsideTab(explorer)


def _plan_of(config: dict) -> PrecisionPlan:
    """The plan of a selection: its keys named like plan fields (unset ones at the plan's defaults)."""
    from ..precision.plan import PLAN_FIELDS, PrecisionPlan

    return PrecisionPlan(**{name: tuple(value) if name == "keep_fp32" else value for name, value in config.items()
                            if name in PLAN_FIELDS and value is not None})


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _sample_names() -> list[str]:
    from .. import samples

    return samples.names()


def _calibration_names(model: str) -> list[str]:
    """A sample's calibration set names without loading it (other models get theirs when their session loads)."""
    from .. import samples

    return next((info["calibration_sets"] for info in samples.describe() if info["name"] == model), [])


def _config_text(config: dict) -> str:
    text = config["precision"].upper()
    if config["method"] == "dynamic":
        text += " (dynamic ranges, no calibration)"
    elif config["precision"] == "int8":
        text += f" ({config['method']}, {config['qdq_style']} Q/DQ, {config['calibration']})"
    return f"{text}, batch {config['batch']}"


def _ms(value: float) -> str:
    from ..views.tables import significant

    return f"{significant(value)} ms"


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _placeholder(text: str):
    import plotly.graph_objects as go

    figure = go.Figure()
    figure.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    figure.update_layout(xaxis_visible=False, yaxis_visible=False, height=250, autosize=True)
    return figure


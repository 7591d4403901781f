"""The interactive explorer: pick model, precision, calibration, method, Q/DQ style, batch and engine; see fusion,
per-layer latency, drift and a summary of every configuration tried so far.

Thin by design: all computation is `Workbench.run` (cached), all figures are `workbench.views` functions of results.
Work runs on one background thread; each request carries a generation number and only the newest selection's
result is ever displayed, so rapid toggling never shows a stale result.
"""
from __future__ import annotations

import html
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from .._optional import require
from ..choices import BATCH_SIZES, DEFAULT_BATCH, EXPLORER_RUNS, explorer_backends
from ..errors import WorkbenchError
from ..machine import other_machine_note
from ..precision.plan import METHODS, QDQ_STYLES
from ..results import RunResult, baseline_of
from ..views.tables import html_table
from .loader import Loader
from .mixed import MixedPrecisionTab


class Explorer:
    """`Explorer("fashion-cnn")` then display it (it is the last expression of a cell, or `display(explorer)`).

    `models`: sample names and/or `{name: Model}` for models loaded by the user. Widgets are public attributes
    (`model`, `backend`, `precision`, `calibration`, `method`, `qdq_style`, `batch`) so code can drive them; `wait()`
    blocks until the current selection is shown; `figures` holds the plotly figures on display.
    """

    def __init__(self, model="fashion-cnn", *, models=None, backend: str = "onnxruntime", cache_dir=None,
                 shared_cache=None, threads: int | None = None, runs: int = EXPLORER_RUNS, drift: bool = True,
                 background: bool = True):
        widgets = require("ipywidgets", extra="notebook", purpose="the explorer widget")
        go = require("plotly.graph_objects", extra="notebook")
        from .. import samples

        self._session_kwargs = {"cache_dir": cache_dir, "shared_cache": shared_cache, "threads": threads,
                                "progress": False}
        self._runs, self._drift = runs, drift
        self._user_models = dict(models) if isinstance(models, dict) else {}
        self._user_inputs: dict[str, dict] = {}  # input overrides of loaded models (the loading panel's "Inputs")
        names = list(models) if models is not None and not isinstance(models, dict) else samples.names()
        names += [n for n in self._user_models if n not in names]
        if isinstance(model, str) and model not in names:
            names.insert(0, model)
        self._sessions: dict[tuple[str, str], object] = {}
        self._results: dict[str, RunResult] = {}  # every configuration tried, by cache key
        self._fusion_html: dict[str, str] = {}  # rendered fusion view, by cache key
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="workbench-explorer")
        self._generation = 0
        self._future: Future | None = None
        self._lock = threading.Lock()
        self._refreshing = False  # set while calibration options are replaced, so that does not trigger a run
        self._background = background
        self.current: RunResult | None = None
        self.error: str | None = None

        available = explorer_backends()
        self.model = widgets.Dropdown(options=names, value=model if isinstance(model, str) else names[0],
                                      description="Model")
        self.backend = widgets.Dropdown(options=available, value=backend, description="Engine")
        self.precision = widgets.ToggleButtons(options=[("FP32", "fp32"), ("FP16", "fp16"), ("INT8", "int8")],
                                               value="fp32", description="Precision")
        self.calibration = widgets.Dropdown(options=[], description="Calibration")
        self.method = widgets.Dropdown(options=list(METHODS), value=METHODS[0], description="Method")
        self.qdq_style = widgets.Dropdown(options=list(QDQ_STYLES), value=QDQ_STYLES[0], description="Q/DQ style")
        self.batch = widgets.Dropdown(options=list(BATCH_SIZES), value=DEFAULT_BATCH, description="Batch")
        self.status = widgets.HTML()
        self.status.add_class("workbench-status")  # a stable hook for browser tests and custom styling
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="", bar_style="info",
                                            layout=widgets.Layout(width="240px", visibility="hidden"))
        self.summary = widgets.HTML()
        self.fusion = widgets.HTML()
        self.figures = {name: go.Figure() for name in ("latency", "drift", "tradeoff")}
        self._figure_widgets = {name: go.FigureWidget() for name in self.figures}
        self.mixed = MixedPrecisionTab(self)
        tabs = widgets.Tab(children=[self.fusion, self._figure_widgets["latency"], self._figure_widgets["drift"],
                                     self._figure_widgets["tradeoff"], self.summary, self.mixed.widget])
        for i, title in enumerate(("Fusion", "Per-layer latency", "Drift", "Latency vs accuracy", "Summary",
                                   "Mixed precision")):
            tabs.set_title(i, title)
        int8_box = widgets.HBox([self.calibration, self.method, self.qdq_style])
        self.loader = Loader(self)  # load a model (path, torchvision:NAME, upload) or a calibration .npz
        self.widget = widgets.VBox([
            self.loader.widget, widgets.HBox([self.model, self.backend, self.batch]), self.precision, int8_box,
            widgets.HBox([self.progress, self.status]), tabs])

        self._refresh_calibration_options()
        self.model.observe(self._on_model, names="value")
        self.backend.observe(self._on_model, names="value")
        for control in (self.precision, self.calibration, self.method, self.qdq_style, self.batch):
            control.observe(self._on_setting, names="value")
        self.request()

    # ---- display ------------------------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    @property
    def results(self) -> list[RunResult]:
        """Every configuration computed so far, in the order tried."""
        return list(self._results.values())

    def selection(self) -> dict:
        """The run() arguments for the current widget values."""
        int8 = self.precision.value == "int8"
        return {"precision": self.precision.value, "batch": self.batch.value,
                "calibration": self.calibration.value if int8 else None,
                "method": self.method.value if int8 else None,
                "qdq_style": self.qdq_style.value if int8 else None,
                "keep_fp32": self.mixed.keep_fp32() if int8 else ()}

    # ---- work ---------------------------------------------------------------------------------
    def session(self, model: str | None = None, backend: str | None = None):
        """The cached Workbench session for a model and engine (created on first use)."""
        from ..session import Workbench

        key = (model or self.model.value, backend or self.backend.value)
        if key not in self._sessions:
            source = self._user_models.get(key[0], key[0])
            self._sessions[key] = Workbench(source, backend=key[1], on_step=self._on_step,
                                            inputs=self._user_inputs.get(key[0]), **self._session_kwargs)
        for other_key, other in self._sessions.items():  # results stay; only the engines of other models go
            if other_key[0] != key[0]:
                other.close()
        return self._sessions[key]

    def request(self) -> Future:
        """Compute and show the current selection (in the background unless background=False)."""
        with self._lock:
            self._generation += 1
            generation = self._generation
        model, backend, config = self.model.value, self.backend.value, self.selection()
        self._set_status(f"Computing {html.escape(config['precision'])} on {html.escape(model)} "
                         f"({html.escape(backend)})…", busy=True)
        if self._background:
            self._future = self._executor.submit(self._compute, generation, model, backend, config)
        else:
            self._future = Future()
            self._future.set_result(self._compute(generation, model, backend, config))
        return self._future

    def wait(self, timeout: float | None = 600) -> RunResult | None:
        """Block until the newest selection is computed and shown; returns its result (None on error)."""
        future = self._future
        if future is not None:
            future.result(timeout=timeout)
        return self.current

    def _compute(self, generation: int, model: str, backend: str, config: dict) -> RunResult | None:
        if generation != self._generation:  # a newer selection arrived before this one started
            return None
        start = time.perf_counter()
        try:
            session = self.session(model, backend)
            result = session.run(**config, runs=self._runs, drift=self._drift)
            self._results[result.cache_key or result.label] = result
            if generation != self._generation:  # superseded while computing: keep it in the summary only
                self._show_summary()
                return None
            self._show(session, result)
        except WorkbenchError as exc:
            if generation == self._generation:
                self.current, self.error = None, str(exc)
                self._set_status(f"<b>Error:</b> {html.escape(str(exc))}", error=True)
            return None
        warning = result.precision_warning
        elsewhere = other_machine_note(result.machine)
        self._set_status(f"{html.escape(result.label)}: {result.headline_latency.median:.3f} ms median at batch "
                         f"{result.headline_latency.batch} ({time.perf_counter() - start:.1f} s)"
                         + (f"<br><b>Warning:</b> {html.escape(warning)}" if warning else "")
                         + (f"<br><i class='workbench-other-machine'>{html.escape(elsewhere)}</i>" if elsewhere else ""),
                         error=bool(warning))
        return result

    # ---- rendering ----------------------------------------------------------------------------
    def _show(self, session, result: RunResult) -> None:
        from .. import views

        self.current, self.error = result, None
        if result.engine is not None:
            key = result.cache_key or result.label
            if key not in self._fusion_html:  # graphviz layout of a large graph takes a while: once per result
                try:
                    self._fusion_html[key] = views.fusion_graph(session.variant_model(result),
                                                                result.engine)._repr_html_()
                except WorkbenchError as exc:
                    self._fusion_html[key] = f"<p>Fusion graph not available: {html.escape(str(exc))}</p>"
            self.fusion.value = self._fusion_html[key]
        baseline = self._baseline(result)
        self.figures["latency"] = (views.layer_latency_comparison(baseline, result) if baseline is not None
                                   else views.layer_latency_figure(result, order="graph"))
        same_model = [r for r in self.results if r.model == result.model]
        drifting = [r for r in same_model if r.drift]
        self.figures["drift"] = views.drift_figure(drifting) if drifting else _placeholder(
            "No drift yet: FP32 is the reference. Pick FP16 or INT8 to see where precision is lost, layer by layer.")
        self.figures["tradeoff"] = views.tradeoff_figure(same_model)
        self.mixed.show(session, result)
        for name, figure in self.figures.items():
            target = self._figure_widgets[name]
            with target.batch_update():
                target.data = []
                target.add_traces(figure.data)
                target.layout = figure.layout
        self._show_summary()

    def _baseline(self, result: RunResult) -> RunResult | None:
        return None if result.is_baseline else baseline_of(result, self.results)

    def _show_summary(self) -> None:
        from .. import views

        self.summary.value = html_table(views.summary_table(self.results))

    def _on_step(self, name: str, done: int, total: int) -> None:
        """Session progress (one step: precision transform, build, latency, accuracy, profile, drift)."""
        self.progress.max, self.progress.value, self.progress.description = total, done, name
        self.progress.layout.visibility = "visible"

    def _set_status(self, text: str, *, busy: bool = False, error: bool = False) -> None:
        colour = "#b00020" if error else ("#555" if busy else "#1b5e20")
        if not busy:
            self.progress.layout.visibility = "hidden"
        self.status.value = f"<span style='color:{colour}'>{text}</span>"

    def _on_setting(self, _change) -> None:
        if not self._refreshing:
            self.request()

    def _on_model(self, _change) -> None:
        self._refresh_calibration_options()
        self.request()

    def _refresh_calibration_options(self) -> None:
        try:
            names = list(self.session().calibration_sets)
        except WorkbenchError as exc:
            names = []
            self._set_status(f"<b>Error:</b> {html.escape(str(exc))}", error=True)
        # not unobserve_all(): that also drops ipywidgets' own handlers and breaks the Dropdown
        self._refreshing = True
        try:
            self.calibration.options = names
            self.calibration.value = names[0] if names else None
        finally:
            self._refreshing = False


def _placeholder(text: str):
    import plotly.graph_objects as go

    figure = go.Figure()
    figure.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    figure.update_layout(xaxis_visible=False, yaxis_visible=False, height=250)
    return figure


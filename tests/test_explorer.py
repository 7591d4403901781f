"""The explorer widget driven as a notebook user would: set widget values, wait, assert on what it shows."""
from __future__ import annotations

import threading

import pytest

pytest.importorskip("ipywidgets")

from workbench.calibration import CalibrationSet  # noqa: E402
from workbench.ui import Explorer  # noqa: E402


def test_opens_on_fp32_with_figures(explorer):
    assert explorer.current.precision == "fp32" and explorer.current.model == "digits-cnn"
    bars = explorer.figures["latency"].data
    assert {trace.type for trace in bars} == {"bar"}  # one trace per layer type
    assert sum(len(trace.y) for trace in bars) == len(explorer.current.engine.layers)
    assert "<svg" in explorer.fusion.value
    assert explorer.calibration.options == tuple(explorer.session().calibration_sets)


def test_int8_shows_comparison_drift_and_accumulates_summary(explorer):
    explorer.precision.value = "int8"
    shown = explorer.wait()
    assert shown.precision == "int8" and shown.calibration == explorer.calibration.value
    assert len(explorer.figures["latency"].data) >= 2  # FP32 vs INT8, layer by layer
    assert len(explorer.figures["drift"].data) >= 1
    drawn = explorer._figure_widgets["drift"].outputs[0]["data"]["application/vnd.plotly.v1+json"]
    assert len(drawn["data"]) == len(explorer.figures["drift"].data)  # the panel shows the figure it holds
    assert {r.precision for r in explorer.results} >= {"fp32", "int8"}
    assert explorer.summary.value.count("<tr>") == len(explorer.results) + 1


def test_rapid_toggling_shows_only_the_newest_selection(explorer):
    explorer.precision.value = "int8"
    explorer.method.value = "entropy"
    explorer.qdq_style.value = "tensorrt"
    explorer.precision.value = "fp16"  # the last change wins; the earlier ones must never be displayed
    shown = explorer.wait()
    assert shown.precision == "fp16" and explorer.current is shown
    assert "fp16" in explorer.status.value


def test_toggling_back_returns_the_cached_result(explorer):
    explorer.precision.value = "fp32"
    first = explorer.wait()
    fusion = explorer.fusion.value
    explorer.precision.value = "int8"
    explorer.wait()
    assert explorer.fusion.value != fusion
    explorer.precision.value = "fp32"
    assert explorer.wait().cache_key == first.cache_key
    assert explorer.fusion.value == fusion  # the rendered graph comes back too, not re-laid-out


def test_toggling_back_keeps_the_drawn_figures_and_only_switches_which_one_shows(explorer):
    from workbench.ui.explorer import KEPT_VIEWS

    panel = explorer._panels["latency"]
    explorer.precision.value = "fp32"
    explorer.wait()
    fp32 = explorer._figure_widgets["latency"]
    explorer.precision.value = "int8"
    explorer.wait()
    int8 = explorer._figure_widgets["latency"]
    kept = panel.children
    assert fp32 in kept and int8 in kept and fp32 is not int8
    assert f"workbench-show-{kept.index(int8)}" in panel._dom_classes
    explorer.precision.value = "fp32"
    explorer.wait()
    assert panel.children == kept  # nothing re-created in the browser: same children, same order
    shown = [c for c in panel._dom_classes if c.startswith("workbench-show-")]
    assert shown == [f"workbench-show-{kept.index(fp32)}"]  # exactly one figure shows: FP32's
    assert len(panel.children) <= KEPT_VIEWS


def test_a_figure_shown_again_after_its_view_was_dropped_is_sent_again(explorer):
    """Past KEPT_VIEWS the panel starts over; a figure re-added gets its outputs re-sent, so the browser draws the
    plot again instead of showing plotly's static PNG snapshot of its earlier view."""
    from workbench.ui.explorer import KEPT_VIEWS
    import ipywidgets as widgets

    panel = widgets.VBox()
    figures = [widgets.Output() for _ in range(KEPT_VIEWS + 1)]
    sent = []
    figures[0].observe(lambda change: sent.append(change["new"]), names="outputs")
    figures[0].outputs = ({"output_type": "display_data", "metadata": {}, "data": {"text/plain": "fp32"}},)
    sent.clear()
    for figure in figures:
        explorer._show_view(panel, figure)
    assert panel.children == (figures[-1],)  # started over at KEPT_VIEWS + 1
    explorer._show_view(panel, figures[0])
    assert panel.children == (figures[-1], figures[0]) and "workbench-show-1" in panel._dom_classes
    assert sent[-2:] == [(), figures[0].outputs]  # emptied, then the same outputs again


def test_a_calibration_set_that_does_not_fit_shows_an_error_and_the_panel_keeps_working(explorer):
    session = explorer.session()
    bad = CalibrationSet.from_arrays("wrong-shape", {"input": session.eval.arrays["input"][:8, :, :4, :4]})
    session.calibration_sets[bad.name] = bad  # bypasses add_calibration_set's check, as a stale list would
    explorer._refresh_calibration_options()
    explorer.precision.value = "int8"
    explorer.calibration.value = "wrong-shape"
    assert explorer.wait() is None
    assert "Error" in explorer.status.value and "wrong-shape" in explorer.error
    explorer.calibration.value = "digits-train"
    assert explorer.wait().calibration == "digits-train"
    del session.calibration_sets[bad.name]


def test_progress_follows_the_session_steps(explorer):
    seen = []
    explorer.progress.observe(lambda change: seen.append(change["new"]), names="description")
    explorer.precision.value = "int8"
    explorer.method.value = "percentile"  # not computed yet in this module: a real measurement with steps
    explorer.wait()
    steps = [text for text in seen if text.startswith("step") and not text.endswith(("starting", "selection"))]
    total = len(steps)
    assert steps[:4] == [f"step {k} of {total}: {name}"
                         for k, name in enumerate(("precision", "build", "latency", "accuracy"), 1)]
    assert explorer.progress.layout.visibility == "hidden"  # done: the bar goes away


def test_int8_only_controls_are_disabled_and_ignored_at_other_precisions(explorer):
    explorer.precision.value = "fp32"
    explorer.wait()
    assert all(getattr(explorer, name).disabled for name in ("calibration", "method", "qdq_style"))
    generation = explorer._generation
    explorer.method.value = "entropy"  # means nothing at FP32: no recomputation
    assert explorer._generation == generation
    explorer.precision.value = "int8"
    assert not any(getattr(explorer, name).disabled for name in ("calibration", "method", "qdq_style"))
    assert explorer.wait().method == "entropy"


def test_the_panel_is_built_before_any_work_starts(tmp_path):
    ex = Explorer("digits-cnn", cache_dir=tmp_path, runs=3)
    assert ex._ticket is None and not ex._sessions  # nothing loaded, measured or queued yet
    ex.widget._repr_mimebundle_()  # what displaying it sends does not wait for the work either
    assert ex._ticket is None
    ex._repr_mimebundle_()
    assert ex._ticket is not None  # displayed: now the work starts
    assert ex.wait().precision == "fp32"


class _GatedSession:
    """A real session whose fusion input for one precision waits until the test lets it go: the explorer is
    then mid-way through showing that result when the user picks something else."""

    def __init__(self, real, gated: str):
        self.real, self.gated = real, gated
        self.entered, self.released = threading.Event(), threading.Event()
        self.calibration_sets = real.calibration_sets

    def __getattr__(self, name):  # everything else (results, tuning, ...) is the real session's
        return getattr(self.real, name)

    def execute(self, job, **options):
        return self.real.execute(job, **options)

    def variant_model(self, result):
        if result.precision == self.gated:
            self.entered.set()
            assert self.released.wait(timeout=120)
        return self.real.variant_model(result)


def test_quick_clicks_never_show_a_superseded_result(explorer):
    for precision in ("fp32", "fp16", "int8"):  # computed (cached) by the real session first
        explorer.precision.value = precision
        explorer.wait()
    fresh = Explorer("digits-cnn", cache_dir=explorer.session().cache.directory, runs=3)
    gated = _GatedSession(explorer.session(), "fp32")
    fresh._sessions[("digits-cnn", "onnxruntime")] = gated
    history = []  # (status text, precision selected when the status was set)
    fresh.status.observe(lambda change: history.append((change["new"], fresh.precision.value)), names="value")
    fresh.precision.value = "fp16"
    assert fresh.wait() is not None, fresh.error
    assert fresh.current.precision == "fp16"
    fresh.calibration.value = explorer.calibration.value
    fresh.precision.value = "int8"
    fresh.precision.value = "fp32"
    assert gated.entered.wait(timeout=120)  # FP32 is computed and is being shown...
    fresh.precision.value = "fp16"  # ...when FP16 is picked again
    gated.released.set()
    shown = fresh.wait()
    assert shown.precision == "fp16" and fresh.current is shown
    finished = [(text, selected) for text, selected in history if "median" in text]
    assert finished and all(text.split(">", 1)[1].lower().startswith(selected) for text, selected in finished), \
        finished
    assert "fp16" in fresh.status.value


class _FailingSession:
    def __init__(self, real):
        self.real, self.calibration_sets = real, real.calibration_sets

    def __getattr__(self, name):
        return getattr(self.real, name)

    def is_cached(self, job):
        return False  # every selection goes to the worker, which fails on FP16

    def execute(self, job, **options):
        if job.plan.precision == "fp16":
            raise RuntimeError("the engine fell over")
        return self.real.execute(job, **options)

    def variant_model(self, result):
        return self.real.variant_model(result)


def test_any_failure_shows_in_the_panel_with_its_traceback(explorer):
    explorer.precision.value = "fp32"
    explorer.wait()
    ex = Explorer("digits-cnn", models={"digits-cnn": explorer.session().model, "broken": object()},
                  cache_dir=explorer.session().cache.directory, runs=3)
    ex._sessions[("digits-cnn", "onnxruntime")] = _FailingSession(explorer.session())
    assert ex.wait().precision == "fp32"
    ex.precision.value = "fp16"
    assert ex.wait() is None
    assert "RuntimeError: the engine fell over" in ex.error and "<details>" in ex.status.value
    assert "Traceback" in ex.status.value
    assert ex.tabs.layout.display == "none"  # the FP32 views are not left standing under "FP16"
    ex.precision.value = "fp32"
    assert ex.wait().precision == "fp32" and ex.tabs.layout.display != "none"
    ex.model.value = "broken"  # loading this model fails: said in the panel, not raised into the notebook
    assert ex.wait() is None and "broken" in ex.status.value and ex.model.value == "broken"
    assert ex.tabs.layout.display == "none"

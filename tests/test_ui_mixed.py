"""The explorer's Mixed precision tab driven as a user would: tick a unit, run the search, click a point."""
from __future__ import annotations

import re

import pytest

pytest.importorskip("ipywidgets")



def test_fp32_has_no_units_and_int8_ranks_them(explorer):
    assert explorer.mixed.checks == {} and "Pick INT8" in explorer.mixed.intro.value
    explorer.precision.value = "int8"
    shown = explorer.wait()
    assert shown.precision == "int8" and not shown.keep_fp32
    report = explorer.mixed.report
    assert report is not None and report.configuration == shown.label
    assert list(explorer.mixed.checks) == [u.unit.name for u in report.units][:len(explorer.mixed.checks)]
    assert explorer.selection()["keep_fp32"] == ()
    assert "Why is it not faster?" in explorer.mixed.lint.value and shown.label in explorer.mixed.lint.value


def test_ticking_a_unit_keeps_it_in_fp32(explorer):
    name, box = next(iter(explorer.mixed.checks.items()))
    box.value = True
    shown = explorer.wait()
    nodes = explorer.mixed._units[name]
    assert shown.keep_fp32 == nodes and explorer.current is shown
    assert explorer.mixed.report.units[0].unit.name == name  # the ranking stays that of the fully quantised plan
    assert "FP32" in shown.label
    box.value = False
    assert explorer.wait().keep_fp32 == []


@pytest.mark.slow
def test_find_the_fastest_within_budget_selects_the_chosen_plan(explorer):
    explorer.mixed.max_drop.value = 0.0
    explorer.mixed.metric.value = "cosine"
    explorer.mixed.budget.value = 4  # three full plans (nearest, gptq, gptq+bc), then one with units kept FP32
    explorer.mixed.search().result(timeout=600)
    found = explorer.mixed.found
    assert found is not None and 2 <= len(found.configurations) <= 5
    assert "configurations measured" in explorer.mixed.status.value
    assert any(trace.customdata is not None for trace in explorer.mixed.pareto.data)
    shown = explorer.wait()
    chosen = found.chosen
    if chosen.precision == "fp32":  # nothing quantised is exact: the search says FP32, the selection stays
        assert shown.precision == "int8"
    else:
        assert sorted(shown.keep_fp32) == sorted(chosen.keep_fp32)


@pytest.mark.slow
def test_clicking_a_point_selects_that_configuration(explorer):
    found = explorer.mixed.found
    target = next(c for c in found.configurations if c.precision != "fp32" and c.keep_fp32)
    trace = next(t for t in explorer.mixed.pareto.data if t.customdata is not None
                 and target.cache_key in t.customdata)

    class Points:
        point_inds = [list(trace.customdata).index(target.cache_key)]

    explorer.mixed._on_point(trace, Points(), None)
    shown = explorer.wait()
    assert sorted(shown.keep_fp32) == sorted(target.keep_fp32)
    explorer.mixed.clear.click()
    assert explorer.wait().keep_fp32 == []


def test_fp16_hides_the_units_and_the_search_asks_for_int8(explorer):
    explorer.precision.value = "int8"
    explorer.wait()
    boxes = dict(explorer.mixed.checks)
    next(iter(boxes.values())).value = True  # keep one unit in FP32
    assert explorer.wait().keep_fp32
    explorer.precision.value = "fp16"
    assert explorer.wait().precision == "fp16"
    assert explorer.mixed.units_box.layout.display == "none" and "Pick INT8" in explorer.mixed.intro.value
    assert not any(box.value for box in explorer.mixed.checks.values())
    assert explorer.mixed.search() is None and "Pick INT8" in explorer.mixed.status.value
    explorer.precision.value = "int8"  # back to the ranked result: fully quantised, the same boxes, not re-ranked
    assert explorer.wait().keep_fp32 == []
    assert explorer.mixed.checks == boxes and explorer.mixed.units_box.layout.display is None
    assert "quantised units of" in explorer.mixed.intro.value


def test_the_search_shows_progress_over_the_whole_search_and_its_cancel_button_stops_it(explorer):
    import threading

    from workbench.errors import Cancelled

    explorer.precision.value = "int8"
    explorer.batch.value = 1  # nothing of the search is cached at batch 1 but this INT8 plan
    assert explorer.wait().headline_latency.batch == 1
    mixed = explorer.mixed
    mixed.max_drop.value, mixed.metric.value, mixed.budget.value = 0.0, "cosine", 6  # INT8 is never exact
    reached, clicked, texts = threading.Event(), threading.Event(), []
    show = mixed._show_progress

    def hold_at_the_first_configuration(progress):  # the worker waits here until Cancel has been pressed
        show(progress)
        texts.append(mixed.progress_text.value)
        if progress.job.startswith("search: configuration") and not reached.is_set():
            reached.set()
            assert clicked.wait(120)

    mixed._show_progress = hold_at_the_first_configuration
    try:
        future = mixed.search()
        assert reached.wait(300), texts
        assert mixed.find.disabled and not mixed.cancel.disabled
        assert re.search(r"configuration \d of 6 .*: step \d+ of \d+: ", mixed.progress_text.value), texts
        assert mixed.progress.layout.visibility == "visible" and mixed.progress.max >= 6
        mixed.cancel.click()
        assert "Cancelling" in mixed.status.value
        clicked.set()
        with pytest.raises(Cancelled):
            future.result(timeout=300)
    finally:
        mixed._show_progress = show
    assert "Search cancelled during search: configuration" in mixed.status.value
    assert "after Cancel" in mixed.status.value
    assert not mixed.find.disabled and mixed.cancel.disabled and mixed.progress.layout.visibility == "hidden"
    assert explorer.wait().precision == "int8"  # the explorer is free again
    explorer.batch.value = 8
    assert explorer.wait().headline_latency.batch == 8


def test_a_model_switch_leaves_nothing_of_the_previous_model_in_the_tab(explorer):
    from tests.conftest import make_tiny_cnn
    from workbench.models import load_model

    explorer.precision.value = "int8"
    explorer.wait()
    assert explorer.mixed.checks and explorer.mixed.lint.value
    explorer.mixed.status.value = "an old search's summary"
    explorer.add_model("tiny", load_model(make_tiny_cnn()))
    assert explorer.mixed.checks == {} and explorer.mixed.found is None and explorer.mixed.pareto is None
    assert explorer.mixed.status.value == "" and explorer.mixed.lint.value == ""
    shown = explorer.wait()
    assert explorer.model.value == "tiny" and shown.model == explorer.session().model.name
    assert explorer.progress.layout.visibility == "hidden"
    explorer.model.value = "digits-cnn"
    assert explorer.wait().model == "digits-cnn"

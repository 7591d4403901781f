"""The explorer's Inside tab driven as a user would: pick INT8, read where its error comes from, pick a tensor and a
second calibration set, click a point of the error figure."""
from __future__ import annotations

import pytest

pytest.importorskip("ipywidgets")

from workbench.errors import WorkbenchError  # noqa: E402


def _settle(explorer):
    """Wait for the selection, then for the Inside tab's latest work."""
    shown = explorer.wait()
    ticket = explorer.inside.ticket
    if ticket is not None:
        ticket.future.result(timeout=600)
    return shown


def test_fp32_shows_nothing_and_int8_its_error_sources(explorer):
    explorer.wait()
    assert explorer.inside is not None and "Pick a calibrated INT8" in explorer.inside.intro.value
    explorer.precision.value = "int8"
    shown = explorer.wait()
    tab = explorer.inside
    assert tab.ticket is None and "when this tab is open" in tab.status.value  # a hidden tab computes nothing
    explorer.tabs.selected_index = explorer.tabs.titles.index("Inside")
    shown = _settle(explorer)
    ticket = tab.ticket
    ticket.future.result(timeout=600)  # the first tensor's histogram follows the error sources
    assert [row.tensor for row in tab.rows] == [p.tensor for p in shown.drift]
    assert shown.label in tab.intro.value and "sources" in tab.figures
    assert tab.tensor.value == min(tab.rows, key=lambda r: r.sqnr_db).tensor  # the worst tensor first
    assert "histogram" in tab.figures and "minmax" in tab.histogram_table.value
    assert "weights only" in tab.table.value


def test_picking_a_tensor_and_a_second_set_draws_both_sets(explorer):
    tab = explorer.inside
    other = tab.compare.options[1]
    tab.compare.value = other
    tab.ticket.future.result(timeout=600)
    names = {trace.name.split(" (")[0] for trace in tab.figures["histogram"].data if "values)" in (trace.name or "")}
    assert names == {explorer.calibration.value, other}
    assert other in tab.histogram_table.value


def test_selecting_a_tensor_draws_its_histogram(explorer):
    tab = explorer.inside
    target = tab.rows[0]
    tab.select(target.tensor)
    tab.ticket.future.result(timeout=600)
    assert tab.tensor.value == target.tensor
    assert target.tensor in tab.figures["histogram"].layout.title.text
    with pytest.raises(WorkbenchError, match="not a tensor of the result on display"):
        tab.select("no-such-tensor")


def test_an_fp16_result_clears_the_tab(explorer):
    explorer.precision.value = "fp16"
    explorer.wait()
    assert explorer.inside.rows == [] and explorer.inside.figures == {}
    assert "Pick a calibrated INT8" in explorer.inside.intro.value

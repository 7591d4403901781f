"""HTML tables for people (the explorer, notebooks and the report use this one function): human headers with units,
numbers with sensible digits, sortable by clicking a header, horizontal scrolling inside the table only."""
from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..vocabulary import ACCURACY_METRICS
from .accuracy_text import metric_text


@dataclass(frozen=True)
class Column:
    """How one key of a row is shown: header text (with unit) and number format.

    kind: "text", "ms" (3 significant digits), "fraction" (shown as %), "points" (a fraction shown as percentage
    points), "speedup" (×N.NN), "count" (integer), "number" (3 significant digits), "bool" (yes/no),
    "cosine" (6 decimals: the interesting digits are near 1).
    """

    header: str
    kind: str = "text"
    missing: str = "–"  # shown for None (accuracy columns: "n/a", the metric does not apply)


COLUMNS: dict[str, Column] = {
    "label": Column("configuration"), "config": Column("configuration"), "model": Column("model"),
    "precision": Column("precision"), "method": Column("method"), "style": Column("Q/DQ style"),
    "weight_rounding": Column("weight rounding"),
    "calibration": Column("calibration"), "backend": Column("engine"), "engine": Column("engine"),
    "batch": Column("batch", "count"),
    "latency_median_ms": Column("median latency (ms)", "ms"), "latency_p90_ms": Column("p90 latency (ms)", "ms"),
    "latency_ms": Column("median latency (ms)", "ms"),
    "speedup_vs_fp32": Column("speed-up vs FP32", "speedup"),
    "latency_median_ci_ms": Column("median 95 % interval (ms)", "ms"),
    "speedup_ci": Column("speed-up 95 % interval", "speedup"), "speedup_verdict": Column("verdict"),
    "speedup_timing": Column("speed-up timed in"),
    "interleaved_median_ms": Column("median in interleaved rounds (ms)", "ms"),
    "top1": Column("top-1 accuracy", "fraction", "n/a"),
    "top1_drop": Column("top-1 drop (points)", "points", "n/a"),
    "agreement": Column("agreement with FP32", "fraction", "n/a"),
    "cosine": Column("cosine vs FP32", "cosine", "n/a"),
    "accuracy": Column("accuracy (metric the headline uses)"), "accelerated": Column("accelerated", "bool"),
    "notes": Column("notes"),
    "requests_per_day": Column("requests per day", "number"), "price_per_hour": Column("price per engine-hour"),
    "utilisation": Column("utilisation", "fraction"), "engine_hours_per_day": Column("engine-hours per day", "number"),
    "instances": Column("instances", "count"), "cost_per_month": Column("cost per month (on demand)", "number"),
    "provisioned_cost_per_month": Column("cost per month (provisioned)", "number"),
    "savings_vs_fp32": Column("saving vs FP32", "fraction"),
}

# Intervals shown small under the value they bound, not as columns of their own.
_INTERVALS = {"latency_median_ms": "latency_median_ci_ms", "speedup_vs_fp32": "speedup_ci"}
# Summary columns of class-score accuracy, and how the headline metric starts when it is one of them.
_TOP1_KEYS = ("top1", "top1_drop", "agreement")
_TOP1_WORDS = (ACCURACY_METRICS["top1"][0], ACCURACY_METRICS["agreement"][0])
# Keys of views.summary_table that the configuration label already says; the table shows the label instead.
_IN_LABEL = ("precision", "method", "style", "weight_rounding", "calibration", "backend")

_STYLE = ("<style>.workbench-table-wrap{overflow-x:auto;max-width:100%;margin:.4rem 0}"
          ".workbench-table{border-collapse:collapse;font-size:12.5px;line-height:1.35;width:auto}"
          # (inside the wrapper: beats JupyterLab's right-aligned cells of rendered HTML)
          ".workbench-table-wrap .workbench-table th,.workbench-table-wrap .workbench-table td{border:1px solid #ddd;"
          "padding:3px 5px;vertical-align:top;text-align:left}.workbench-table td{white-space:nowrap}"
          ".workbench-table th{background:#eef2f8;font-weight:600;cursor:pointer;user-select:none;white-space:normal;"
          "min-width:3em;max-width:9em;vertical-align:bottom;overflow-wrap:break-word}"
          ".workbench-table-wrap .workbench-table td.num{text-align:right;font-variant-numeric:tabular-nums}"
          # long names wrap inside their cell (anywhere, they have no spaces) instead of running over the next
          ".workbench-table td.wrap{white-space:normal;min-width:8em;max-width:26em;overflow-wrap:anywhere}"
          # the summary's configuration label on at most two lines, so its rows stay short
          ".workbench-summary td:first-child{min-width:18em}"
          ".workbench-table th[data-dir=asc]::after{content:' ▲'}.workbench-table th[data-dir=desc]::after"
          "{content:' ▼'}</style>")
# Inline so it works inside widget HTML and saved reports alike (no <script> needed); sorts by each cell's data-v.
_SORT_JS = ("var t=this.closest('table'),b=t.tBodies[0],i=this.cellIndex,d=this.dataset.dir==='asc'?'desc':'asc';"
            "t.querySelectorAll('th').forEach(function(h){delete h.dataset.dir});this.dataset.dir=d;"
            "Array.from(b.rows).sort(function(x,y){var a=x.cells[i].dataset.v,c=y.cells[i].dataset.v,"
            "p=parseFloat(a),q=parseFloat(c),r=(isNaN(p)||isNaN(q))?String(a).localeCompare(String(c)):p-q;"
            "return d==='asc'?r:-r}).forEach(function(r){b.appendChild(r)})")


class HtmlTable(str):
    """The table's HTML; displays as a table in a notebook."""

    def _repr_html_(self) -> str:
        return str(self)


def html_table(rows: Sequence[Mapping], *, columns: Iterable[str] | None = None, css_class: str = "workbench-table",
               caption: str | None = None, beneath: Mapping[str, str] | None = None) -> HtmlTable:
    """One sortable <table>: header from `COLUMNS` (else the key made readable), cells formatted by column kind.

    `columns` picks and orders keys (default: the first row's keys); `beneath` maps a column to another key shown
    small under its value (e.g. a latency's interval). Empty string when there are no rows.
    """
    beneath = dict(beneath or {})
    if not rows:
        return HtmlTable("")
    keys = list(columns) if columns is not None else list(rows[0])
    specs = [COLUMNS.get(k) or Column(k.replace("_", " ")) for k in keys]
    head = "".join(f'<th title="click to sort" onclick="{html.escape(_SORT_JS)}">{html.escape(s.header)}</th>'
                   for s in specs)
    body = "".join("<tr>" + "".join(_cell(row.get(k), s, row.get(beneath[k]) if k in beneath else None)
                                    for k, s in zip(keys, specs)) + "</tr>" for row in rows)
    cap = f"<caption style='text-align:left;caption-side:bottom;font-size:12px;color:#555'>" \
          f"{html.escape(caption)}</caption>" if caption else ""
    return HtmlTable(f'{_STYLE}<div class="workbench-table-wrap"><table class="{css_class}">{cap}'
                     f'<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')


def summary_html(results, baseline=None, *, retimed=None) -> HtmlTable:
    """`views.summary_table` as a table for people: one row per configuration and batch, the label naming it."""
    from .figures import summary_table

    rows = [_with_accuracy_text(row) for row in summary_table(results, baseline, retimed=retimed)]
    keys = [k for k in rows[0] if k not in (*_IN_LABEL, "label", "notes", *_INTERVALS.values())]
    if len({row["model"] for row in rows}) == 1:
        keys.remove("model")
    if all(row["accuracy"].startswith(_TOP1_WORDS) for row in rows):  # top-1 columns already show it
        keys.remove("accuracy")
    else:  # another task's metric: top-1 columns that are n/a in every row make way for it
        keys = [k for k in keys if k not in _TOP1_KEYS or any(row[k] is not None for row in rows)]
    # notes are long and shared by several rows: numbered under the table, the number beside the configuration
    notes = list(dict.fromkeys(n for r in _results_list(results) for n in r.notes))
    marked = []
    for row, result in zip(rows, _results_list(results)):
        refs = ",".join(str(notes.index(n) + 1) for n in dict.fromkeys(result.notes))
        marked.append({**row, "label": row["label"] + (f" [{refs}]" if refs else "")})
    listed = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    footnotes = (f'<ol class="workbench-table-notes" style="font-size:12px;margin:.2rem 0 .6rem 1.2rem;'
                 f'padding:0;max-width:60rem">{listed}</ol>') if notes else ""
    return HtmlTable(html_table(marked, columns=["label", *keys], beneath=_INTERVALS,
                                css_class="workbench-table workbench-summary") + footnotes)


def _with_accuracy_text(row: dict) -> dict:
    """The summary row with its headline metric as one text column ("accuracy") after the verdict."""
    name, value, output = (row.get(k) for k in ("headline_metric", "headline_value", "headline_output"))
    shown = {}
    for key, cell in row.items():
        if key not in ("headline_metric", "headline_value", "headline_output"):
            shown[key] = cell
        if key == "speedup_verdict":
            shown["accuracy"] = metric_text(name, value, output) if name else "n/a"
    return shown


def _results_list(results) -> list:
    return [results] if hasattr(results, "label") else list(results)


def format_value(value, kind: str = "number") -> str:
    """A value as text for people, by column kind (see `Column`)."""
    if value is None:
        return "–"
    if isinstance(value, bool) or kind == "bool":
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):  # two numbers are an interval [low, high]
        numbers = len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        return ("–" if numbers else ", ").join(format_value(v, kind) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {format_value(v, kind)}" for k, v in value.items())
    if not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "∞" if value > 0 else ("−∞" if value < 0 else "–")
    if kind == "speedup":
        return f"×{value:.2f}"
    if kind == "fraction":
        return f"{value * 100:.1f} %" if abs(value) >= 0.1 else f"{value * 100:.2f} %"
    if kind == "points":
        return f"{value * 100:.2f}"
    if kind == "cosine":
        return f"{value:.6f}"
    if kind == "count" or isinstance(value, int):
        return f"{value:,}"
    return significant(value)


def significant(value: float, digits: int = 3) -> str:
    """`value` to `digits` significant digits (all integer digits kept) without scientific notation (1234.6 -> "1,235", 0.0123 -> "0.0123")."""
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:,.{decimals}f}"


def _cell(value, spec: Column, under=None) -> str:
    text = spec.missing if value is None else format_value(value, spec.kind)
    small = "" if under is None else \
        f'<br><span style="font-size:11px;color:#666">{html.escape(format_value(under, spec.kind))}</span>'
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (int, float)):
        value = value[0]  # an interval sorts by its low end
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    sort_key = (repr(float(value)) if numeric and math.isfinite(value) else ("1e308" if numeric else text))
    css = ' class="num"' if numeric else (' class="wrap"' if len(text) > 12 else "")
    return f'<td{css} data-v="{html.escape(sort_key)}">{html.escape(text)}{small}</td>'

"""Plain HTML tables (for the report and the widgets): rows of dicts, numbers to 4 significant digits."""
from __future__ import annotations

import html
from collections.abc import Sequence


def html_table(rows: Sequence[dict], *, css_class: str = "workbench-table") -> str:
    """One <table> with a header row from the first row's keys; empty string when there are no rows."""
    if not rows:
        return ""
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(row.get(c)))}</td>" for c in cols) + "</tr>"
                   for row in rows)
    return f'<table class="{css_class}"><tr>{head}</tr>{body}</table>'


def _cell(value) -> str:
    if isinstance(value, list):  # an interval [low, high]
        return "–".join(_cell(v) for v in value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)

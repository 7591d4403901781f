"""Numbers and accuracy metrics as text for people (units, sensible digits, "n/a"): shared by tables and figures."""
from __future__ import annotations

import math
from collections.abc import Mapping

from ..vocabulary import ACCURACY_METRICS


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


def metric_text(name: str, value: float | None, output: str | None = None) -> str:
    """An accuracy metric for people: its words, output and value with unit, e.g. "mean IoU vs FP32 (out) 98.70 %";
    "n/a" for a metric that does not apply."""
    words = ACCURACY_METRICS.get(name, (name,))[0]
    return f"{words}" + (f" ({output})" if output else "") + f" {metric_value_text(name, value)}"


def metric_value_text(name: str, value: float | None) -> str:
    """A metric's value with its unit ("98.70 %", "0.999812", "0.0123"), or "n/a"."""
    kind = ACCURACY_METRICS.get(name, (name, "number"))[1]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    # two decimals of a percentage: the headline's margin is half a point
    return f"{value * 100:.2f} %" if kind == "fraction" else format_value(value, kind)


def metrics_text(metrics: Mapping[str, float | None]) -> str:
    """Every metric of one output, e.g. "matched boxes vs FP32 97.5 %, mAP@0.5 vs FP32 96.1 %", n/a included."""
    return ", ".join(metric_text(name, value) for name, value in metrics.items()) or "n/a"


def significant(value: float, digits: int = 3) -> str:
    """`value` to `digits` significant digits (all integer digits kept) without scientific notation (1234.6 -> "1,235", 0.0123 -> "0.0123")."""
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:,.{decimals}f}"

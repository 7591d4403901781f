"""Accuracy metrics as text for people (tables, figures, the report's headline): words, output and value with unit."""
from __future__ import annotations

import math
from collections.abc import Mapping

from ..vocabulary import ACCURACY_METRICS


def metric_text(name: str, value: float | None, output: str | None = None) -> str:
    """An accuracy metric for people: its words, output and value with unit, e.g. "mean IoU vs FP32 (out) 98.70 %";
    "n/a" for a metric that does not apply."""
    words = ACCURACY_METRICS.get(name, (name,))[0]
    return f"{words}" + (f" ({output})" if output else "") + f" {metric_value_text(name, value)}"


def metric_value_text(name: str, value: float | None) -> str:
    """A metric's value with its unit ("98.70 %", "0.999812", "0.0123"), or "n/a"."""
    kind = ACCURACY_METRICS.get(name, (name, "number"))[1]
    if value is None or not math.isfinite(value):
        return "n/a" if value is None or math.isnan(value) else ("∞" if value > 0 else "−∞")
    if kind == "fraction":  # two decimals of a percentage: the headline's margin is half a point
        return f"{value * 100:.2f} %"
    return f"{value:.6f}" if kind == "cosine" else f"{value:.3g}"


def metrics_text(metrics: Mapping[str, float | None]) -> str:
    """Every metric of one output, e.g. "matched boxes vs FP32 97.50 %, mAP@0.5 vs FP32 96.10 %", n/a included."""
    return ", ".join(metric_text(name, value) for name, value in metrics.items()) or "n/a"

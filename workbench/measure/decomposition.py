"""Attribute each tensor's INT8 error to weights or activations, from drift measured three times: with everything
quantised, with only the weights quantised and with only the activations quantised (precision.decompose)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..results import DriftPoint

WEIGHTS, ACTIVATIONS, BOTH = "weights", "activations", "both"
DOMINANT = 2 / 3  # share of the error noise above which one source is called the cause
NOTABLE_DB = 20.0  # below this SQNR (noise over 1 % of the signal's power) a tensor's error is worth a fix
FIXES = {
    WEIGHTS: "per-channel weights; GPTQ (weight_rounding='gptq'); equalisation for depthwise convs; or FP32",
    ACTIVATIONS: "percentile or entropy ranges; a calibration set like the data; SmoothQuant (MatMul); or FP32",
    BOTH: "keep the layer in FP32",
}


@dataclass
class LayerError:
    """One tensor's error with everything / only weights / only activations quantised (SQNR to FP32, dB; higher is
    closer). Errors accumulate down the graph: each tensor's numbers include what earlier layers added."""

    tensor: str
    layer: str | None
    sqnr_db: float
    weights_sqnr_db: float | None
    activations_sqnr_db: float | None
    weights_share: float | None  # weights-only noise / (weights-only + activations-only noise)
    cause: str | None  # WEIGHTS, ACTIVATIONS, BOTH, or None where a split is missing
    fix: str | None

    def to_json(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def decompose(both: list[DriftPoint], weights: list[DriftPoint], activations: list[DriftPoint]) -> list[LayerError]:
    """One LayerError per tensor of `both` (graph order), with the share of its noise each source explains alone."""
    by_weights = {p.tensor: p.sqnr_db for p in weights}
    by_activations = {p.tensor: p.sqnr_db for p in activations}
    rows = []
    for point in both:
        w, a = by_weights.get(point.tensor), by_activations.get(point.tensor)
        share = cause = None
        if w is not None and a is not None:
            noise_w, noise_a = _noise(w), _noise(a)
            if noise_w + noise_a > 0:
                share = noise_w / (noise_w + noise_a)
                cause = WEIGHTS if share >= DOMINANT else ACTIVATIONS if share <= 1 - DOMINANT else BOTH
        fix = None
        if cause:
            fix = FIXES[cause] if point.sqnr_db < NOTABLE_DB else f"none needed (SQNR above {NOTABLE_DB:.0f} dB)"
        rows.append(LayerError(tensor=point.tensor, layer=point.layer, sqnr_db=point.sqnr_db, weights_sqnr_db=w,
                               activations_sqnr_db=a, weights_share=share, cause=cause, fix=fix))
    return rows


def worst(rows: list[LayerError], count: int = 10) -> list[LayerError]:
    """The `count` rows of lowest SQNR (most error), worst first."""
    return sorted(rows, key=lambda row: row.sqnr_db)[:count]


def _noise(sqnr: float) -> float:
    """Noise power relative to the signal: 10^(-SQNR/10), 0 for an identical tensor, capped for a lost one."""
    return 0.0 if sqnr == math.inf else min(10.0 ** (-sqnr / 10.0), 1e30) if sqnr != -math.inf else 1e30

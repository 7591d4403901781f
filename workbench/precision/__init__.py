"""Precision transforms, pure ONNX -> ONNX: FP16 conversion and INT8 Q/DQ from calibration, composed as the steps of
`workbench.precision.pipeline` (optional algorithms such as SmoothQuant registered in `vocabulary.ALGORITHM_STEPS`).

Lazy: `workbench.precision.plan` (the choices: precisions, methods, Q/DQ styles) imports without onnx, so the
explorer panel can list them before the heavy modules load.
"""
from __future__ import annotations

import importlib

_EXPORTS = {"apply_plan": ".apply", "cpu_latency_representative": ".apply", "precision_notes": ".apply",
            "CacheStats": ".calibrate", "clear_cache": ".calibrate", "cache_stats": ".calibrate",
            "PrecisionPlan": ".plan"}
_RENAMED = {"cache_stats": "stats"}

__all__ = ["PrecisionPlan", "apply_plan", "precision_notes", "cpu_latency_representative", "clear_cache",
           "cache_stats", "CacheStats"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), _RENAMED.get(name, name))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

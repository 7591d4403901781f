"""Precision transforms, pure ONNX -> ONNX: FP16 conversion and INT8 Q/DQ from calibration."""
from __future__ import annotations

from .apply import apply_plan, cpu_latency_representative, precision_notes
from .calibrate import CacheStats, clear_cache, stats as cache_stats
from .plan import PrecisionPlan

__all__ = ["PrecisionPlan", "apply_plan", "precision_notes", "cpu_latency_representative", "clear_cache",
           "cache_stats", "CacheStats"]

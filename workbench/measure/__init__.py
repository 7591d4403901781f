"""Measurements: end-to-end latency, accuracy against labels and FP32, per-tensor drift from FP32."""
from .accuracy import measure_accuracy
from .drift import measure_drift, sqnr_db
from .latency import interleaved_latency, measure_latency

__all__ = ["interleaved_latency", "measure_accuracy", "measure_drift", "measure_latency", "sqnr_db"]

"""The workbench's words, defined once: precisions, INT8 methods, Q/DQ styles, weight roundings, search metrics and
their defaults. Plans validate against these; CLI flags and widget options are generated from them."""
from __future__ import annotations

PRECISIONS = ("fp32", "fp16", "int8")
METHODS = ("minmax", "entropy", "percentile", "dynamic")  # dynamic: ranges measured at run time, no calibration
CALIBRATED_METHODS = tuple(m for m in METHODS if m != "dynamic")  # ranges from a calibration set
QDQ_STYLES = ("onnxruntime", "tensorrt")
# int8 weights: ONNX Runtime's round-to-nearest, GPTQ (precision.gptq), or GPTQ then bias correction
# (precision.bias_correction: the int32 biases shifted so each layer's mean output matches FP32)
WEIGHT_ROUNDINGS = ("nearest", "gptq", "gptq+bc")

TUNE_METRICS = ("top1", "agreement", "cosine")  # what the mixed-precision search keeps within max_drop
DEFAULT_MAX_DROP = 0.5  # points (top1, agreement) or hundredths of cosine the search may lose
DEFAULT_BUDGET = 8  # configurations the search measures at most

"""The workbench's words, defined once: precisions, INT8 methods, Q/DQ styles, weight roundings, optional algorithms
(their registry), search metrics and their defaults. Plans validate against these; CLI flags and widget options are
generated from them."""
from __future__ import annotations

PRECISIONS = ("fp32", "fp16", "int8")
METHODS = ("minmax", "entropy", "percentile", "dynamic")  # dynamic: ranges measured at run time, no calibration
CALIBRATED_METHODS = tuple(m for m in METHODS if m != "dynamic")  # ranges from a calibration set
QDQ_STYLES = ("onnxruntime", "tensorrt")
# int8 weights: ONNX Runtime's round-to-nearest, GPTQ (precision.gptq), or GPTQ then bias correction
# (precision.bias_correction: the int32 biases shifted so each layer's mean output matches FP32)
WEIGHT_ROUNDINGS = ("nearest", "gptq", "gptq+bc")
# The registry of optional steps of calibrated INT8's pipeline (precision.pipeline), in the order they run: the name
# a plan selects one by (PrecisionPlan(algorithms=...)) -> "module:Class" in workbench.precision, imported only when a
# plan uses it. Adding an algorithm: its module, one line here, its tests.
ALGORITHM_STEPS = {
    "smoothquant": "smoothquant:SmoothQuant",
    "cle": "equalization:CrossLayerEqualization",
}
ALGORITHMS = tuple(ALGORITHM_STEPS)

TUNE_METRICS = ("top1", "agreement", "cosine")  # what the mixed-precision search keeps within max_drop
DEFAULT_MAX_DROP = 0.5  # points (top1, agreement) or hundredths of cosine the search may lose
DEFAULT_BUDGET = 8  # configurations the search measures at most
DEFAULT_CONFIRM = 3  # units whose harm the search confirms by measuring them kept in FP32
DEFAULT_METRIC = "agreement"  # of TUNE_METRICS: needs no labels
DEFAULT_RUNS = 30  # timed runs per configuration (Workbench.run, the command line)

# Op types by role, declared once (precision, lint, views and engines test membership in these).
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")  # layers with weights: quantised, rounded, counted
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
POOL_OPS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")
# ONNX Runtime's integer kernels (QOperator graphs, dynamic INT8): their compute is INT8 whatever the graph's Q/DQ
INTEGER_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm")

# What one model output is, so its accuracy is measured with metrics that mean something (workbench.measure.accuracy):
# classification: class scores (probabilities/logits); label: integer (or string) class labels, compared as labels;
# segmentation: per-pixel class scores or class maps; detection: boxes (with their scores and classes);
# embedding / regression: vectors compared by cosine, relative L2 and max-abs; sequence: per-token scores or ids.
OUTPUT_TASKS = ("classification", "label", "segmentation", "detection", "embedding", "regression", "sequence")

# Accuracy metrics by name (the keys of `accuracy.outputs[*].metrics` in result JSON): words for people, how the
# value is shown ("fraction": as %, "cosine": near 1, "number": 3 significant digits) and whether higher is better.
ACCURACY_METRICS = {
    "top1": ("top-1 accuracy", "fraction", True),
    "agreement": ("top-1 agreement with FP32", "fraction", True),
    "cosine": ("cosine vs FP32", "cosine", True),
    "relative_l2": ("relative L2 error vs FP32", "number", False),
    "max_abs_diff": ("max-abs error vs FP32", "number", False),
    "pixel_agreement": ("pixel agreement with FP32", "fraction", True),
    "mean_iou": ("mean IoU vs FP32", "fraction", True),
    "pixel_accuracy": ("pixel accuracy", "fraction", True),
    "mean_iou_labels": ("mean IoU vs labels", "fraction", True),
    "matched_box_rate": ("matched boxes vs FP32", "fraction", True),
    "box_iou": ("mean IoU of matched boxes", "fraction", True),
    "map50": ("mAP@0.5 vs FP32", "fraction", True),
    "map50_labels": ("mAP@0.5 vs labels", "fraction", True),
    "token_agreement": ("token agreement with FP32", "fraction", True),
    "token_accuracy": ("token accuracy", "fraction", True),
}
# Per task, the metrics that may decide the headline, best first (the first one measured is used).
HEADLINE_METRICS = {
    "classification": ("top1", "agreement"),
    "label": ("top1", "agreement"),
    "segmentation": ("mean_iou_labels", "mean_iou", "pixel_agreement"),
    "detection": ("map50_labels", "matched_box_rate"),
    "sequence": ("token_accuracy", "token_agreement"),
    "embedding": ("cosine",),
    "regression": ("cosine",),
}

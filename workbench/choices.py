"""The configurations the explorer offers, defined once: the widget shows them, `warm` pre-computes them."""
from __future__ import annotations

from itertools import product

from ._optional import available
from .precision.plan import METHODS, PRECISIONS, QDQ_STYLES

BATCH_SIZES = (1, 8, 32)
DEFAULT_BATCH = 8
EXPLORER_RUNS = 20  # timed runs per configuration in the explorer


def explorer_backends() -> list[str]:
    """Engines the explorer lists: every CPU engine (choosing a missing one says what to install), GPU engines only
    where their package imports."""
    from .backends import backend_names, capabilities  # here, not at the top: importing the engines loads onnx

    return [name for name in backend_names() if capabilities(name).device == "cpu"
            or available(capabilities(name).package)]


def explorer_methods(model_proto) -> list[str]:
    """INT8 methods the explorer offers for a model: the calibrated ones, and "dynamic" where it quantises
    anything (a MatMul with constant weights)."""
    from .precision import dynamic  # here, not at the top: it imports onnxruntime's quantiser

    return [m for m in METHODS if m != "dynamic" or dynamic.applies(model_proto)]


def explorer_configs(calibration_sets, *, precisions=PRECISIONS, methods=METHODS, qdq_styles=QDQ_STYLES,
                     batches=BATCH_SIZES) -> list[dict]:
    """`Workbench.run` keyword arguments of every selection the explorer can make, as `Explorer.selection()` builds
    them (so a pre-computed result has the explorer's cache key): FP32/FP16 per batch size, INT8 per calibration set,
    method, Q/DQ style and batch size (dynamic INT8 once per batch size: it has no calibration and one op style).
    Mixed plans (layers the user keeps in FP32 in the explorer's mixed-precision tab) are combinatorial and not
    pre-computed: INT8 here keeps no layer in FP32."""
    configs = []
    for precision, batch in product(precisions, batches):
        if precision != "int8":
            configs.append({"precision": precision, "batch": batch, "calibration": None, "method": None,
                            "qdq_style": None, "keep_fp32": ()})
            continue
        for calibration, method, style in product(calibration_sets, methods, qdq_styles):
            if method != "dynamic":
                configs.append({"precision": precision, "batch": batch, "calibration": calibration,
                                "method": method, "qdq_style": style, "keep_fp32": ()})
        if "dynamic" in methods:
            configs.append(dynamic_selection({"precision": precision, "batch": batch, "keep_fp32": ()}))
    return configs


def dynamic_selection(config: dict) -> dict:
    """A selection as dynamic INT8 runs it: no calibration set, ONNX Runtime's op style."""
    return {**config, "method": "dynamic", "calibration": None, "qdq_style": "onnxruntime"}

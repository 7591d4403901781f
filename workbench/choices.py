"""The configurations the explorer offers, defined once: the widget shows them, `warm` pre-computes them."""
from __future__ import annotations

from itertools import product

from ._optional import available
from .backends import backend_names
from .precision.plan import METHODS, PRECISIONS, QDQ_STYLES

BATCH_SIZES = (1, 8, 32)
DEFAULT_BATCH = 8
EXPLORER_RUNS = 20  # timed runs per configuration in the explorer


def explorer_backends() -> list[str]:
    """Engines the explorer lists: every backend, TensorRT only where its package imports."""
    return [name for name in backend_names() if name != "tensorrt" or available("tensorrt")]


def explorer_configs(calibration_sets, *, precisions=PRECISIONS, methods=METHODS, qdq_styles=QDQ_STYLES,
                     batches=BATCH_SIZES) -> list[dict]:
    """`Workbench.run` keyword arguments of every selection the explorer can make, as `Explorer.selection()` builds
    them (so a pre-computed result has the explorer's cache key): FP32/FP16 per batch size, INT8 per calibration set,
    method, Q/DQ style and batch size. Mixed plans (layers the user keeps in FP32 in the explorer's mixed-precision
    tab) are combinatorial and not pre-computed: INT8 here keeps no layer in FP32."""
    configs = []
    for precision, batch in product(precisions, batches):
        if precision != "int8":
            configs.append({"precision": precision, "batch": batch, "calibration": None, "method": None,
                            "qdq_style": None, "keep_fp32": ()})
            continue
        for calibration, method, style in product(calibration_sets, methods, qdq_styles):
            configs.append({"precision": precision, "batch": batch, "calibration": calibration, "method": method,
                            "qdq_style": style, "keep_fp32": ()})
    return configs

"""TensorRT Workbench: see what inference optimisation (fusion, FP16, INT8) does to a model.

The package imports lazily: `import workbench.trtplan` (or `workbench.engine`) loads neither onnxruntime nor torch;
`workbench.Workbench` and the other names below are imported on first use.
"""
from __future__ import annotations

import importlib

from ._version import __version__

_LAZY = {
    "Workbench": "workbench.session",
    "load_model": "workbench.samples",
    "PrecisionPlan": "workbench.precision.plan",
    "CalibrationSet": "workbench.calibration",
    **{name: "workbench.errors" for name in (
        "WorkbenchError", "ModelLoadError", "InputSpecError", "CalibrationError", "PrecisionError", "BackendError",
        "MissingDependencyError", "PolicyError", "PlanImportError")},
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

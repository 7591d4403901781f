"""TensorRT Workbench: see what inference optimisation (fusion, FP16, INT8) does to a model."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tensorrt-workbench")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.1.0"

# __version__ is set before these imports: workbench.cache reads it while the package is still importing.
from .calibration import CalibrationSet  # noqa: E402
from .errors import (BackendError, CalibrationError, InputSpecError, MissingDependencyError,  # noqa: E402
                     ModelLoadError, PlanImportError, PolicyError, PrecisionError, WorkbenchError)
from .models import load_model  # noqa: E402
from .precision.plan import PrecisionPlan  # noqa: E402
from .session import Workbench  # noqa: E402

__all__ = [
    "__version__", "Workbench", "load_model", "PrecisionPlan", "CalibrationSet",
    "WorkbenchError", "ModelLoadError", "InputSpecError", "CalibrationError", "PrecisionError", "BackendError",
    "MissingDependencyError", "PolicyError", "PlanImportError",
]

"""Typed errors. Every message names the problem and the fix."""
from __future__ import annotations


class WorkbenchError(Exception):
    """Base class of every error the workbench raises on purpose."""


class ModelLoadError(WorkbenchError):
    """A model could not be loaded: missing file, not ONNX, truncated, failed export."""


class InputSpecError(WorkbenchError):
    """Data does not fit the model's inputs (shape, dtype, name)."""


class CalibrationError(WorkbenchError):
    """A calibration set is empty, mismatched, or holds NaN/Inf values."""


class PrecisionError(WorkbenchError):
    """A precision plan is invalid or could not be applied to the model."""


class BackendError(WorkbenchError):
    """An engine could not be built or run."""


class MissingDependencyError(WorkbenchError):
    """An optional package is not installed; the message says what to install."""


class PolicyError(WorkbenchError):
    """A regional precision policy file is malformed."""


class PlanImportError(WorkbenchError):
    """A TensorRT engine graph or profile JSON could not be read."""


class OutputError(WorkbenchError, OSError):
    """An output file cannot be written where asked (a device, a folder, an input, an unwritable place).

    Also an OSError, so code that degrades on write failures (the cache) keeps catching it."""


class Cancelled(WorkbenchError):
    """Work was cancelled (`CancelToken.cancel`) before it finished; nothing half-done was cached."""


class CacheError(WorkbenchError):
    """A cache was asked for that cannot be used safely: a missing shared layer, a planted link inside it."""


class ClusterError(WorkbenchError):
    """A Ray cluster cannot be used as asked: unreachable address, missing client support, bad retry count."""

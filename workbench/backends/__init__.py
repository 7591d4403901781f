"""Backends: ONNX Runtime (default, CPU), OpenVINO (CPU), TensorRT (NVIDIA GPU). Imported lazily."""
from __future__ import annotations

import importlib

from ..errors import BackendError
from .base import Backend, BuildOptions, Engine, EngineGraph, EngineLayer, LayerTiming

_BACKENDS = {
    "onnxruntime": ("workbench.backends.onnxruntime", "OnnxRuntimeBackend"),
    "openvino": ("workbench.backends.openvino", "OpenVinoBackend"),
    "tensorrt": ("workbench.backends.tensorrt", "TensorRTBackend"),
}
DEFAULT_BACKEND = "onnxruntime"


def backend_names() -> list[str]:
    return list(_BACKENDS)


def get_backend(name: str = DEFAULT_BACKEND, **kwargs) -> Backend:
    """Instantiate a backend by name; a missing optional package raises MissingDependencyError."""
    if name not in _BACKENDS:
        raise BackendError(f"Unknown backend {name!r}: choose one of {', '.join(_BACKENDS)}.")
    module_name, class_name = _BACKENDS[name]
    return getattr(importlib.import_module(module_name), class_name)(**kwargs)


__all__ = ["Backend", "BuildOptions", "Engine", "EngineGraph", "EngineLayer", "LayerTiming",
           "backend_names", "get_backend", "DEFAULT_BACKEND"]

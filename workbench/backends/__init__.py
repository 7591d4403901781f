"""Engines: ONNX Runtime (default, CPU), OpenVINO (CPU), TensorRT (NVIDIA GPU). Each module is imported on first use.

Every engine subclasses `workbench.engine.Backend` / `Engine` and has its own options dataclass; the shared types
(layer graph, timings) live in `workbench.engine`.
"""
from __future__ import annotations

import importlib
from dataclasses import fields

from .. import _optional
from ..engine import Backend, Capabilities, EngineOptions
from ..errors import BackendError

_BACKENDS = {
    "onnxruntime": ("workbench.backends.onnxruntime", "OnnxRuntimeBackend", "OnnxRuntimeOptions"),
    "openvino": ("workbench.backends.openvino", "OpenVinoBackend", "OpenVinoOptions"),
    "tensorrt": ("workbench.backends.tensorrt", "TensorRTBackend", "TensorRTOptions"),
}
DEFAULT_BACKEND = "onnxruntime"


def backend_names() -> list[str]:
    return list(_BACKENDS)


def _check_name(name: str) -> tuple[str, str, str]:
    if name not in _BACKENDS:
        raise BackendError(f"Unknown backend {name!r}: choose one of {', '.join(_BACKENDS)}.")
    return _BACKENDS[name]


def get_backend(name: str = DEFAULT_BACKEND, **kwargs) -> Backend:
    """Instantiate a backend by name; a missing optional package raises MissingDependencyError."""
    module_name, class_name, _ = _check_name(name)
    return getattr(importlib.import_module(module_name), class_name)(**kwargs)


def option_names(name: str) -> list[str]:
    """The build options of engine `name` (importing its module, never its engine library)."""
    module_name, _, options_name = _check_name(name)
    return [f.name for f in fields(getattr(importlib.import_module(module_name), options_name))]


def capabilities(name: str) -> Capabilities:
    """What engine `name` is and needs, from its Backend class (never importing an optional engine library)."""
    module_name, class_name, _ = _check_name(name)
    return getattr(importlib.import_module(module_name), class_name).capabilities


def installed_backends(*, device: str | None = None) -> list[str]:
    """Engines whose library imports here (optionally only those running on `device`), in declaration order."""
    return [name for name in _BACKENDS if (device is None or capabilities(name).device == device)
            and (capabilities(name).package is None or _optional.available(capabilities(name).package))]


def engines_with_option(option: str) -> list[str]:
    """Names of the engines that have build option `option`."""
    return [name for name in _BACKENDS if option in option_names(name)]


def engine_options(backend: Backend, **settings) -> EngineOptions:
    """`backend`'s own options from keyword settings; a setting it does not have is a BackendError that names the
    engines which have it."""
    known = [f.name for f in fields(backend.options_type)]
    for option in settings:
        if option not in known:
            others = [n for n in engines_with_option(option) if n != backend.name]
            where = f"it is an option of {', '.join(others)}" if others else "no engine has it"
            raise BackendError(f"The {backend.name} engine has no option {option!r} ({where}); its options are "
                               f"{', '.join(known) or 'none'}.")
    return backend.options_type(**settings)


__all__ = ["DEFAULT_BACKEND", "backend_names", "capabilities", "engine_options", "engines_with_option", "get_backend",
           "installed_backends", "option_names"]

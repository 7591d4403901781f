"""Lazy imports of heavy optional packages (torch, openvino, tensorrt, ipywidgets, graphviz)."""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError


def require(module: str, *, extra: str | None = None, pip: str | None = None, purpose: str = "") -> ModuleType:
    """Import `module` or raise MissingDependencyError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        how = f"pip install -e '.[{extra}]'" if extra else f"pip install {pip or module}"
        why = f" (needed for {purpose})" if purpose else ""
        raise MissingDependencyError(f"Python package '{module}' is not installed{why}: {how}. ({exc})") from exc


def available(module: str) -> bool:
    """True when `module` can be imported."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True

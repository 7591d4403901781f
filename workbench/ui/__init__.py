"""Jupyter widgets (ipywidgets 8). Importing this package needs the `notebook` extra.

Lazy: `from workbench.ui import Explorer` imports only what the explorer panel needs to appear.
"""
from __future__ import annotations

import importlib

_EXPORTS = {"Explorer": ".explorer", "CostPanel": ".scenarios"}
__all__ = ["CostPanel", "Explorer"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

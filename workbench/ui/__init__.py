"""Jupyter widgets (ipywidgets 8). Importing this package needs the `notebook` extra."""
from .explorer import Explorer
from .scenarios import CostPanel

__all__ = ["CostPanel", "Explorer"]

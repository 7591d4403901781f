"""Jupyter widgets (ipywidgets 8). Importing this package needs the `notebook` extra."""
from .explorer import Explorer

__all__ = ["Explorer"]

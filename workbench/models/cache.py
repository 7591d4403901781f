"""Content-keyed files built at load time (e.g. exported ONNX graphs), kept in the workbench cache directory."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..cache import ResultCache


def cache_dir() -> Path:
    """`$WORKBENCH_CACHE`, else ~/.cache/tensorrt-workbench."""
    return ResultCache().directory


def cached_bytes(filename: str, build: Callable[[], bytes]) -> Path:
    """cache_dir()/filename; when absent, `build()` is called and its bytes written atomically.

    Put a content key (a hash of weights and settings) in `filename`, so a stale file is never reused.
    """
    cache = ResultCache()
    stem, _, suffix = filename.rpartition(".")
    path = cache.path(stem, suffix)
    if path.is_file():
        return path
    return cache.put_bytes(stem, build(), suffix)

"""Content-keyed files built at load time (e.g. exported ONNX graphs), kept in the workbench cache directory."""
from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from ..cache import ResultCache


def cache_dir() -> Path:
    """`$WORKBENCH_CACHE`, else ~/.cache/tensorrt-workbench."""
    return ResultCache().directory


def cached_bytes(filename: str, build: Callable[[], bytes]) -> Path:
    """A file holding the bytes `build()` returns, from the cache when a hash-checked copy is there (shared layer
    first), else built and written to the private layer (or, when that cannot be written, to a private temporary
    folder).

    Put a content key (a hash of weights and settings) in `filename`, so a stale file is never reused.
    """
    cache = ResultCache()
    stem, _, suffix = filename.rpartition(".")
    found = cache.find(stem, suffix)
    if found is not None:
        return found
    payload = build()
    written = cache.put_bytes(stem, payload, suffix)
    if written is not None:
        return written
    fallback = Path(tempfile.mkdtemp(prefix="workbench-")) / filename
    fallback.write_bytes(payload)
    return fallback

"""The workbench cache directory and atomic, content-keyed file caching (for models built at load time)."""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

ENV_VAR = "WORKBENCH_CACHE"


def cache_dir() -> Path:
    """`$WORKBENCH_CACHE`, else ~/.cache/tensorrt-workbench (created on demand)."""
    path = Path(os.environ.get(ENV_VAR) or Path.home() / ".cache" / "tensorrt-workbench").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_bytes(filename: str, build: Callable[[], bytes]) -> Path:
    """Return cache_dir()/filename, calling `build` and writing its bytes atomically when the file is absent.

    Put a content key (e.g. a hash of weights and settings) in `filename`: a stale file is never reused.
    """
    target = cache_dir() / filename
    if target.is_file():
        return target
    data = build()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{filename}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)  # atomic: concurrent loaders never see a half-written file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target

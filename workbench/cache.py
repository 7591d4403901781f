"""On-disk cache of run results (JSON) and artefacts (bytes), keyed by a content hash of the configuration."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ._version import __version__
from .output import atomic_write  # the one safe writer (also imported from here by backends)

ENV_VAR = "WORKBENCH_CACHE"
DEFAULT_DIR = Path("~/.cache/tensorrt-workbench")


class ResultCache:
    """Directory of `<key>.json` results and `<key>.<suffix>` artefacts.

    Writes are atomic (temporary file + os.replace). A corrupt or unreadable entry is a miss: it is removed so the
    caller rebuilds it; reading never raises.
    """

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        chosen = directory or os.environ.get(ENV_VAR) or DEFAULT_DIR
        self.directory = Path(chosen).expanduser()

    @staticmethod
    def key(**parts) -> str:
        """sha256 of the canonical JSON of `parts` plus the workbench version."""
        canonical = json.dumps({**parts, "workbench_version": __version__}, sort_keys=True,
                               separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def path(self, key: str, suffix: str = "json") -> Path:
        return self.directory / f"{key}.{suffix}"

    def get(self, key: str) -> dict | None:
        path = self.path(key)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            self._discard(path)
            return None
        if not isinstance(data, dict):
            self._discard(path)
            return None
        return data

    def put(self, key: str, data: dict) -> Path:
        return atomic_write(self.path(key), json.dumps(data, sort_keys=True).encode())

    def get_bytes(self, key: str, suffix: str = "bin") -> bytes | None:
        try:
            return self.path(key, suffix).read_bytes()
        except OSError:
            return None

    def put_bytes(self, key: str, data: bytes, suffix: str = "bin") -> Path:
        return atomic_write(self.path(key, suffix), data)

    def discard(self, key: str, suffix: str = "json") -> None:
        """Remove an entry (e.g. an artefact that no longer parses); missing entries are ignored."""
        self._discard(self.path(key, suffix))

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    @staticmethod
    def _discard(path: Path) -> None:
        try:
            path.unlink()
        except OSError:
            pass


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

"""On-disk cache of run results (JSON) and artefacts (bytes), keyed by a content hash of the configuration.

Two layers: an optional read-only shared directory (a teacher's or team's pre-computed cache) is read first, then
the per-user private directory, which takes every write. Every entry carries the sha256 of its content (JSON
entries inside an envelope, byte artefacts in a `.sha256` sidecar) and is checked before use: a corrupt, truncated,
swapped or hand-edited entry is a miss, never trusted. A cache that cannot be written (read-only, the path is a
file, no permission, disk full) degrades to "no cache" with one warning; reading and writing never raise.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ._version import __version__
from .output import atomic_write  # the one safe writer (also imported from here by backends)

ENV_VAR = "WORKBENCH_CACHE"
SHARED_ENV_VAR = "WORKBENCH_SHARED_CACHE"
DEFAULT_DIR = Path("~/.cache/tensorrt-workbench")
HASH_SUFFIX = "sha256"
# What a decode function may raise on an entry that does not fit its schema (the entry is then skipped).
DECODE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError)

T = TypeVar("T")
_warned: set[str] = set()  # directories already warned about in this process: one warning each


class CacheWarning(UserWarning):
    """The cache could not be used as asked (it then works as "no cache")."""


@dataclass
class CacheCounters:
    """What the cache served: hits per layer, misses, entries rejected (failed hash or schema), writes."""

    shared_hits: int = 0
    private_hits: int = 0
    misses: int = 0
    rejected: int = 0
    writes: int = 0


class ResultCache:
    """`<key>.json` results and `<key>.<suffix>` artefacts in a private directory, read through a shared one.

    `directory`: the private, writable layer (default `$WORKBENCH_CACHE`, else ~/.cache/tensorrt-workbench).
    `shared`: a read-only layer read first (default `$WORKBENCH_SHARED_CACHE`); it is never written to.
    """

    def __init__(self, directory: str | os.PathLike | None = None, shared: str | os.PathLike | None = None) -> None:
        chosen = directory or os.environ.get(ENV_VAR) or DEFAULT_DIR
        self.directory = Path(chosen).expanduser()
        shared = shared or os.environ.get(SHARED_ENV_VAR) or None
        self.shared = Path(shared).expanduser() if shared else None
        if self.shared is not None and _same_place(self.shared, self.directory):
            self.shared = None  # one directory, used as the private layer
        self.counters = CacheCounters()
        self.usable: bool | None = None  # None until the first write decides it
        self.problem: str | None = None  # why the private layer is not usable, when it is not

    @staticmethod
    def key(**parts) -> str:
        """sha256 of the canonical JSON of `parts` plus the workbench version."""
        canonical = json.dumps({**parts, "workbench_version": __version__}, sort_keys=True,
                               separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def layers(self) -> list[Path]:
        """Directories read, in order: the shared layer (if any), then the private one."""
        return [self.shared, self.directory] if self.shared is not None else [self.directory]

    def path(self, key: str, suffix: str = "json") -> Path:
        """Where an entry lives in the private layer."""
        return self.directory / f"{key}.{suffix}"

    # ---- JSON entries -------------------------------------------------------------------------
    def get(self, key: str, decode: Callable[[dict], T] | None = None) -> T | dict | None:
        """The first entry under `key`, shared layer first, whose hash checks and that `decode` accepts
        (`decode(data)` returns the object to use or raises one of DECODE_ERRORS); None when there is none."""
        for layer in self.layers:
            path = layer / f"{key}.json"
            try:
                raw = path.read_bytes()
            except OSError:  # absent, a directory, no permission, the layer is a file: a miss here
                continue
            try:
                data = _unwrap(json.loads(raw))
                value = decode(data) if decode is not None else data
            except DECODE_ERRORS:  # corrupt, edited, other schema, or nested too deeply to parse
                self._reject(layer, path)
                continue
            self._hit(layer)
            return value
        self.counters.misses += 1
        return None

    def put(self, key: str, data: dict) -> Path | None:
        """Store `data` (JSON-serialisable) in the private layer; None when the cache is not usable."""
        envelope = {HASH_SUFFIX: _json_hash(data), "entry": data}
        return self._write(self.path(key), json.dumps(envelope, sort_keys=True).encode())

    def __contains__(self, key: str) -> bool:
        return any((layer / f"{key}.json").is_file() for layer in self.layers)

    # ---- byte artefacts -----------------------------------------------------------------------
    def get_bytes(self, key: str, suffix: str = "bin", decode: Callable[[bytes], T] | None = None) -> T | bytes | None:
        """The artefact's bytes (or `decode(bytes)`), from the first layer where its content hash checks."""
        for layer in self.layers:
            data = _verified_bytes(layer / f"{key}.{suffix}")
            if data is None:
                continue
            try:
                value = decode(data) if decode is not None else data
            except Exception:  # noqa: BLE001 - any parser of a bad artefact (onnx, numpy, json) fails its own way
                self._reject(layer, layer / f"{key}.{suffix}")
                continue
            self._hit(layer)
            return value
        self.counters.misses += 1
        return None

    def find(self, key: str, suffix: str = "bin") -> Path | None:
        """Path of a verified artefact (for readers that need a file), shared layer first; None on a miss."""
        for layer in self.layers:
            path = layer / f"{key}.{suffix}"
            if _verified_bytes(path) is not None:
                self._hit(layer)
                return path
        self.counters.misses += 1
        return None

    def put_bytes(self, key: str, data: bytes, suffix: str = "bin") -> Path | None:
        """Store an artefact and its sha256 in the private layer; None when the cache is not usable."""
        path = self.path(key, suffix)
        written = self._write(path, data)
        if written is None or self._write(_hash_path(path), hashlib.sha256(data).hexdigest().encode()) is None:
            return None
        return written

    def discard(self, key: str, suffix: str = "json") -> None:
        """Remove a private entry (and its hash); missing entries are ignored, the shared layer is never touched."""
        self._discard(self.path(key, suffix))

    # ---- internals ----------------------------------------------------------------------------
    def _write(self, path: Path, payload: bytes) -> Path | None:
        if self.usable is None:
            self.usable = self._probe()
        if not self.usable:
            return None
        try:
            written = atomic_write(path, payload)
        except OSError as exc:  # e.g. disk full after the probe succeeded
            self._unusable(exc)
            return None
        self.counters.writes += 1
        return written

    def _probe(self) -> bool:
        """Can the private layer take files? Tried by writing one (as root, permission bits alone say yes)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.directory, prefix=".probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            self._unusable(exc)
            return False
        return True

    def _unusable(self, exc: OSError) -> None:
        self.usable = False
        blocker = next((p for p in (self.directory, *self.directory.parents) if p.exists()), None)
        self.problem = (f"{blocker} is a file, not a folder" if blocker is not None and not blocker.is_dir()
                        else f"{type(exc).__name__}: {exc.strerror or exc}")
        if str(self.directory) not in _warned:
            _warned.add(str(self.directory))
            warnings.warn(f"The workbench cache {self.directory} cannot be written ({self.problem}): results are "
                          f"computed but not kept. Point {ENV_VAR} or --cache-dir at a writable folder to keep them.",
                          CacheWarning, stacklevel=4)

    def _hit(self, layer: Path) -> None:
        if layer == self.shared:
            self.counters.shared_hits += 1
        else:
            self.counters.private_hits += 1

    def _reject(self, layer: Path, path: Path) -> None:
        self.counters.rejected += 1
        if layer != self.shared:  # a bad private entry is removed so it is rebuilt; shared files are read-only
            self._discard(path)

    @staticmethod
    def _discard(path: Path) -> None:
        for target in (path, _hash_path(path)):
            try:
                target.unlink()
            except OSError:
                pass


def _hash_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.{HASH_SUFFIX}")


def _json_hash(data) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _unwrap(envelope) -> dict:
    """The entry of a `{"sha256", "entry"}` envelope whose hash matches; ValueError otherwise."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("entry"), dict):
        raise ValueError("not a cache envelope")
    if envelope.get(HASH_SUFFIX) != _json_hash(envelope["entry"]):
        raise ValueError("content hash mismatch")
    return envelope["entry"]


def _verified_bytes(path: Path) -> bytes | None:
    """The file's bytes when its `.sha256` sidecar matches them; None when either is missing or they differ."""
    try:
        expected = _hash_path(path).read_text().strip()
        data = path.read_bytes()
    except (OSError, UnicodeDecodeError):
        return None
    return data if hashlib.sha256(data).hexdigest() == expected else None


def _same_place(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

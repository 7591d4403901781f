"""On-disk cache of run results (JSON) and artefacts (bytes), keyed by a content hash of the configuration.

Two layers: an optional read-only shared directory (a teacher's or team's pre-computed cache) is read first, then
the per-user private directory, which takes every write. Every entry carries the sha256 of its content (JSON
entries inside an envelope, byte artefacts in a `.sha256` sidecar) and is checked before use: a corrupt, truncated,
swapped or hand-edited entry is a miss, never trusted. A cache that cannot be written (read-only, the path is a
file, no permission, disk full) degrades to "no cache" with one warning; reading and writing never raise.

Trust (docs/reliability.md): entries are opened without following links and must be regular files; writes replace
whatever name is there (a planted link is replaced, never written through). A sha256 is a checksum anyone can
recompute, so with a key (`$WORKBENCH_CACHE_KEY`, or the file named by `$WORKBENCH_CACHE_KEY_FILE`) every entry is
also sealed with an HMAC-SHA256 of that key and only sealed entries are used. Without a key, a shared layer is
trusted only when it is read-only by construction: a layer writable by anyone but its owner is ignored with a
warning (a private layer so exposed is used, with a warning).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ._version import __version__
from .errors import CacheError
from .output import atomic_write  # the one safe writer (also imported from here by backends)

ENV_VAR = "WORKBENCH_CACHE"
SHARED_ENV_VAR = "WORKBENCH_SHARED_CACHE"
DEFAULT_DIR = Path("~/.cache/tensorrt-workbench")
HASH_SUFFIX = "sha256"
TAG_SUFFIX = "hmac"
KEY_ENV_VAR = "WORKBENCH_CACHE_KEY"
KEY_FILE_ENV_VAR = "WORKBENCH_CACHE_KEY_FILE"
MAX_ENTRY_BYTES = 4 << 30  # an entry larger than this is not read (nothing the workbench writes comes close)
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

    def __init__(self, directory: str | os.PathLike | None = None, shared: str | os.PathLike | None = None, *,
                 key: bytes | str | None = None) -> None:
        chosen = directory or os.environ.get(ENV_VAR) or DEFAULT_DIR
        self.directory = Path(chosen).expanduser()
        where = "--shared-cache" if shared else f"${SHARED_ENV_VAR}"
        shared = shared or os.environ.get(SHARED_ENV_VAR) or None
        self.shared = Path(shared).expanduser() if shared else None
        if self.shared is not None and _same_place(self.shared, self.directory):
            self.shared = None  # one directory, used as the private layer
        if self.shared is not None and not self.shared.is_dir():
            raise CacheError(f"{where} {self.shared} does not exist or is not a folder: give the folder a teacher "
                             f"filled with `python -m workbench warm --cache FOLDER`, or leave {where} unset.")
        self.key_bytes = _cache_key(key)
        self.counters = CacheCounters()
        self.usable: bool | None = None  # None until the first write decides it
        self.problem: str | None = None  # why the private layer is not usable, when it is not
        if self.shared is not None and self.key_bytes is None and _writable_by_others(self.shared):
            _warn_once(self.shared, f"The shared cache {self.shared} is writable by others than its owner, so its "
                       f"entries could have been edited: it is not used. Make it read-only (chmod go-w) or set "
                       f"{KEY_ENV_VAR} to the key it was sealed with.")
            self.shared = None
        if self.key_bytes is None and self.directory.is_dir() and _writable_by_others(self.directory):
            _warn_once(self.directory, f"The cache {self.directory} is writable by others than its owner: they "
                       f"can edit its results. Use a private folder, or set {KEY_ENV_VAR} (shared with every "
                       "process that writes it) so only sealed entries are used.")

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

    def subfolder(self, name: str) -> Path:
        """A folder inside the private layer (created), refused when something planted a link or a file there."""
        folder = self.directory / name
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            pass
        except OSError as exc:
            raise CacheError(f"Cannot create {folder} ({exc.strerror or exc}): point --cache-dir at a writable "
                             "folder.") from exc
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode):
            raise CacheError(f"{folder} is a link or a file, not a folder of this cache: remove it (someone may "
                             "have planted it to redirect writes), or use another --cache-dir.")
        return folder

    # ---- JSON entries -------------------------------------------------------------------------
    def get(self, key: str, decode: Callable[[dict], T] | None = None) -> T | dict | None:
        """The first entry under `key`, shared layer first, whose hash checks and that `decode` accepts
        (`decode(data)` returns the object to use or raises one of DECODE_ERRORS); None when there is none."""
        for layer in self.layers:
            path = layer / f"{key}.json"
            try:
                raw = _read_entry(path, trusted_mode=layer != self.shared or self.key_bytes is not None)
            except FileNotFoundError:  # absent, or the layer is missing: a miss here
                continue
            except OSError:  # a link, a FIFO, a device, no permission: never followed or trusted
                self._reject(layer, path)
                continue
            try:
                data = _unwrap(json.loads(raw), self.key_bytes)
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
        if self.key_bytes is not None:
            envelope[TAG_SUFFIX] = _tag(self.key_bytes, envelope[HASH_SUFFIX])
        return self._write(self.path(key), json.dumps(envelope, sort_keys=True).encode())

    def __contains__(self, key: str) -> bool:
        return any(_is_regular(layer / f"{key}.json") for layer in self.layers)

    # ---- byte artefacts -----------------------------------------------------------------------
    def get_bytes(self, key: str, suffix: str = "bin", decode: Callable[[bytes], T] | None = None) -> T | bytes | None:
        """The artefact's bytes (or `decode(bytes)`), from the first layer where its content hash checks."""
        for layer in self.layers:
            data = self._verified_bytes(layer, layer / f"{key}.{suffix}")
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
            if self._verified_bytes(layer, path) is not None:
                self._hit(layer)
                return path
        self.counters.misses += 1
        return None

    def put_bytes(self, key: str, data: bytes, suffix: str = "bin") -> Path | None:
        """Store an artefact and its sha256 in the private layer; None when the cache is not usable."""
        path = self.path(key, suffix)
        digest = hashlib.sha256(data).hexdigest()
        written = self._write(path, data)
        if written is None or self._write(_hash_path(path), digest.encode()) is None:
            return None
        if self.key_bytes is not None and self._write(_tag_path(path), _tag(self.key_bytes, digest).encode()) is None:
            return None
        return written

    def discard(self, key: str, suffix: str = "json") -> None:
        """Remove a private entry (and its hash); missing entries are ignored, the shared layer is never touched."""
        self._discard(self.path(key, suffix))

    # ---- internals ----------------------------------------------------------------------------
    def _verified_bytes(self, layer: Path, path: Path) -> bytes | None:
        """The file's bytes when its `.sha256` sidecar (and, with a key, its `.hmac` seal) match; None when either
        is missing or they differ. Links and special files are never read (and count as rejected)."""
        trusted_mode = layer != self.shared or self.key_bytes is not None
        try:
            expected = _read_entry(_hash_path(path), trusted_mode).decode().strip()
            data = _read_entry(path, trusted_mode)
            seal = _read_entry(_tag_path(path), trusted_mode).decode().strip() if self.key_bytes else None
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError):
            self.counters.rejected += 1
            return None
        if hashlib.sha256(data).hexdigest() != expected or (
                seal is not None and not hmac.compare_digest(seal, _tag(self.key_bytes, expected))):
            self.counters.rejected += 1
            return None
        return data

    def _write(self, path: Path, payload: bytes) -> Path | None:
        if self.usable is None:
            self.usable = self._probe()
        if not self.usable:
            return None
        try:
            written = atomic_write(path, payload, follow_links=False)
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
        for target in (path, _hash_path(path), _tag_path(path)):
            try:
                target.unlink()
            except OSError:
                pass


def _hash_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.{HASH_SUFFIX}")


def _tag_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.{TAG_SUFFIX}")


def _tag(key: bytes, digest: str) -> str:
    """HMAC-SHA256 of an entry's sha256 under the cache key: only key holders can seal an entry."""
    return hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


def _cache_key(key: bytes | str | None) -> bytes | None:
    """The sealing key: as given, else $WORKBENCH_CACHE_KEY, else the contents of $WORKBENCH_CACHE_KEY_FILE."""
    if key is None and os.environ.get(KEY_ENV_VAR):
        key = os.environ[KEY_ENV_VAR]
    if key is None and os.environ.get(KEY_FILE_ENV_VAR):
        path = Path(os.environ[KEY_FILE_ENV_VAR]).expanduser()
        try:
            key = path.read_bytes().strip()
        except OSError as exc:
            raise CacheError(f"${KEY_FILE_ENV_VAR} names {path}, which cannot be read ({exc.strerror or exc}): "
                             "point it at the key file, or unset it.") from exc
        if not key:
            raise CacheError(f"The cache key file {path} is empty: write a long random secret into it "
                             "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`).")
    return key.encode() if isinstance(key, str) else key


def _read_entry(path: Path, trusted_mode: bool = True) -> bytes:
    """A cache file's bytes, opened without following a link and without blocking on a FIFO; OSError for a link,
    anything but a regular file, an entry too large, or (`trusted_mode` False) a file others than its owner may
    write."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_ENTRY_BYTES:
            raise OSError(f"{path} is not a regular file of a sensible size")
        if not trusted_mode and info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise OSError(f"{path} is writable by others than its owner")
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read()
    finally:
        os.close(fd)


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _writable_by_others(folder: Path) -> bool:
    """Can anyone but the folder's owner create or replace entries in it (group/other write, no sticky bit)?"""
    try:
        info = os.stat(folder)
    except OSError:
        return False
    return bool(info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)) and not info.st_mode & stat.S_ISVTX


def _warn_once(where: Path, message: str) -> None:
    if str(where) not in _warned:
        _warned.add(str(where))
        warnings.warn(message, CacheWarning, stacklevel=4)


def _json_hash(data) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _unwrap(envelope, key: bytes | None = None) -> dict:
    """The entry of a `{"sha256", "entry"[, "hmac"]}` envelope whose hash (and, with a key, seal) matches;
    ValueError otherwise."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("entry"), dict):
        raise ValueError("not a cache envelope")
    digest = _json_hash(envelope["entry"])
    if envelope.get(HASH_SUFFIX) != digest:
        raise ValueError("content hash mismatch")
    if key is not None and not hmac.compare_digest(str(envelope.get(TAG_SUFFIX, "")), _tag(key, digest)):
        raise ValueError("not sealed with this cache's key")
    return envelope["entry"]


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

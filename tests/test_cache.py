"""The on-disk result cache: keys, hits and misses, corrupt entries, atomic writes."""
from __future__ import annotations

import os

import numpy as np
import pytest

from workbench import __version__
from workbench.cache import ResultCache
from workbench.calibration import CalibrationSet


def _parts(calibration: CalibrationSet) -> dict:
    return {"model": "abc", "plan": {"precision": "int8", "method": "minmax"}, "calibration": calibration.content_hash,
            "backend": "onnxruntime", "backend_version": "1.0", "batches": [8], "runs": 10, "threads": None}


def test_key_is_canonical_and_content_addressed():
    cal = CalibrationSet.from_arrays("cal", {"input": np.zeros((4, 1, 8, 8), np.float32)})
    parts = _parts(cal)
    key = ResultCache.key(**parts)
    assert len(key) == 64 and int(key, 16) >= 0
    assert ResultCache.key(**dict(reversed(list(parts.items())))) == key  # order of parts does not matter
    assert ResultCache.key(**{**parts, "runs": 11}) != key
    assert ResultCache.key(**{**parts, "plan": {"precision": "int8", "method": "entropy"}}) != key


def test_key_changes_when_calibration_data_changes():
    arrays = np.zeros((4, 1, 8, 8), np.float32)
    before = CalibrationSet.from_arrays("cal", {"input": arrays})
    changed = arrays.copy()
    changed[0, 0, 0, 0] = 1.0
    after = CalibrationSet.from_arrays("cal", {"input": changed})  # same name, different data
    assert ResultCache.key(**_parts(before)) != ResultCache.key(**_parts(after))


def test_key_includes_workbench_version(monkeypatch):
    import workbench.cache as cache_module

    key = ResultCache.key(model="abc")
    monkeypatch.setattr(cache_module, "__version__", __version__ + ".post1")
    assert ResultCache.key(model="abc") != key


def test_miss_then_hit(tmp_path):
    cache = ResultCache(tmp_path)
    key = ResultCache.key(model="abc")
    assert cache.get(key) is None and key not in cache
    cache.put(key, {"latency": [1.5, float("inf")], "name": "x"})
    assert key in cache
    assert cache.get(key) == {"latency": [1.5, float("inf")], "name": "x"}


def test_default_directory_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "env-cache"))
    assert ResultCache().directory == tmp_path / "env-cache"
    monkeypatch.delenv("WORKBENCH_CACHE")
    assert ResultCache().directory == (tmp_path.home() / ".cache" / "tensorrt-workbench")


@pytest.mark.parametrize("content", [b'{"truncated": [1, 2', b"\x00\xff\xfe not json", b"[1, 2, 3]"])
def test_corrupt_entry_is_a_miss_and_removed(tmp_path, content):
    cache = ResultCache(tmp_path)
    key = ResultCache.key(model="abc")
    cache.path(key).write_bytes(content)
    assert cache.get(key) is None
    assert not cache.path(key).exists()
    cache.put(key, {"rebuilt": True})
    assert cache.get(key) == {"rebuilt": True}


def test_unreadable_entry_is_a_miss(tmp_path):
    cache = ResultCache(tmp_path)
    key = ResultCache.key(model="abc")
    cache.path(key).mkdir(parents=True)  # a directory where the file should be: reading raises OSError
    assert cache.get(key) is None


def test_writes_are_atomic(tmp_path, monkeypatch):
    cache = ResultCache(tmp_path)
    key = ResultCache.key(model="abc")
    cache.put(key, {"version": 1})

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        cache.put(key, {"version": 2})
    monkeypatch.undo()
    assert cache.get(key) == {"version": 1}  # the old entry is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{key}.json"]  # no temporary file left behind


def test_bytes_artefacts(tmp_path):
    cache = ResultCache(tmp_path)
    key = ResultCache.key(model="abc")
    assert cache.get_bytes(key, "onnx") is None
    cache.put_bytes(key, b"\x08\x07onnx", "onnx")
    assert cache.get_bytes(key, "onnx") == b"\x08\x07onnx"
    cache.discard(key, "onnx")
    assert cache.get_bytes(key, "onnx") is None

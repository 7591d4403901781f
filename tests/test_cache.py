"""The on-disk result cache: keys, hits and misses, corrupt entries, atomic writes."""
from __future__ import annotations

import os

import numpy as np
import pytest

from workbench import __version__
from workbench.cache import CacheWarning, ResultCache
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
    with pytest.warns(CacheWarning, match="disk full"):  # a failed write degrades to "no cache", never raises
        assert cache.put(key, {"version": 2}) is None
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
    assert cache.get_bytes(key, "onnx") is None and not list(tmp_path.iterdir())  # the hash went with it


# ---- layers: a read-only shared directory read first, a private one taking the writes ----------------------------
def _snapshot(directory) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in directory.iterdir()}


def test_shared_layer_is_read_first_and_never_written(tmp_path):
    shared, private = tmp_path / "shared", tmp_path / "private"
    teacher = ResultCache(shared)
    key, other = ResultCache.key(model="abc"), ResultCache.key(model="def")
    teacher.put(key, {"from": "teacher"})
    teacher.put_bytes(key, b"model bytes", "onnx")
    before = _snapshot(shared)

    participant = ResultCache(private, shared=shared)
    assert participant.layers == [shared, private]
    assert participant.get(key) == {"from": "teacher"}
    assert participant.get_bytes(key, "onnx") == b"model bytes"
    assert participant.find(key, "onnx") == shared / f"{key}.onnx"
    assert participant.counters.shared_hits == 3 and participant.counters.private_hits == 0
    participant.put(key, {"from": "participant"})  # writes go to the private layer only
    participant.put(other, {"from": "participant"})
    participant.discard(key)  # discarding never reaches into the shared layer
    assert _snapshot(shared) == before
    assert sorted(p.name for p in private.iterdir()) == [f"{other}.json"]
    assert participant.get(other) == {"from": "participant"} and participant.counters.private_hits == 1


def test_shared_layer_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_SHARED_CACHE", str(tmp_path / "shared"))
    assert ResultCache(tmp_path / "shared").layers == [tmp_path / "shared"]  # not there yet: it is the private one
    (tmp_path / "shared").mkdir()
    assert ResultCache(tmp_path / "private").shared == tmp_path / "shared"
    assert ResultCache(tmp_path / "shared").layers == [tmp_path / "shared"]  # the same folder is one layer


def test_edited_shared_entry_is_skipped_for_the_private_one(tmp_path):
    shared, private = tmp_path / "shared", tmp_path / "private"
    key = ResultCache.key(model="abc")
    ResultCache(shared).put(key, {"top1": 0.9})
    ResultCache(private).put(key, {"top1": 0.8})
    path = shared / f"{key}.json"
    path.write_text(path.read_text().replace("0.9", "9.9"))  # numbers edited, the content hash no longer matches
    before = _snapshot(shared)
    cache = ResultCache(private, shared=shared)
    assert cache.get(key) == {"top1": 0.8}
    assert cache.counters.rejected == 1 and cache.counters.private_hits == 1
    assert _snapshot(shared) == before  # a bad shared entry is skipped, not removed


def test_swapped_artefact_is_a_miss(tmp_path):
    cache = ResultCache(tmp_path)
    key = ResultCache.key(model="abc")
    cache.put_bytes(key, b"the real model", "onnx")
    cache.path(key, "onnx").write_bytes(b"another model")  # swapped behind the cache's back
    assert cache.get_bytes(key, "onnx") is None and cache.find(key, "onnx") is None
    cache.path(key, "onnx").write_bytes(b"the real model")
    cache.path(key, "onnx.sha256").unlink()  # an artefact without its hash is not trusted either
    assert cache.get_bytes(key, "onnx") is None


def test_decode_rejects_entries_of_the_wrong_schema(tmp_path):
    cache = ResultCache(tmp_path)
    key = ResultCache.key(model="abc")
    cache.put(key, {"latency": "fast"})

    def decode(data):
        return float(data["latency"])

    assert cache.get(key, decode=decode) is None
    assert not cache.path(key).exists() and cache.counters.rejected == 1  # discarded, so the next run rebuilds it


def test_deeply_nested_entry_is_a_miss(tmp_path):
    cache = ResultCache(tmp_path)
    key = ResultCache.key(model="abc")
    cache.path(key).write_text('{"entry": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert cache.get(key) is None  # no RecursionError


@pytest.mark.parametrize("make_unusable", ["is_a_file", "under_a_file"])
def test_unusable_cache_degrades_to_no_cache_with_one_warning(tmp_path, make_unusable):
    (tmp_path / "file").write_text("not a folder")
    directory = tmp_path / "file" if make_unusable == "is_a_file" else tmp_path / "file" / "cache"
    cache = ResultCache(directory)
    key = ResultCache.key(model="abc")
    assert cache.get(key) is None and cache.get_bytes(key) is None
    with pytest.warns(CacheWarning, match="cannot be written") as caught:
        assert cache.put(key, {"a": 1}) is None
        assert cache.put_bytes(key, b"x") is None
        assert ResultCache(directory).put(key, {"a": 1}) is None  # another cache on the same folder: no new warning
    assert len(caught) == 1 and cache.usable is False and cache.problem == f"{tmp_path / 'file'} is a file, not a folder"
    assert (tmp_path / "file").read_text() == "not a folder"


# ---- many processes at once ----------------------------------------------------------------------------------------
def _hammer(directory: str, shared: str, worker: int, rounds: int, queue) -> None:
    cache = ResultCache(directory, shared=shared)
    keys = [ResultCache.key(entry=i) for i in range(4)]
    seen_bad = 0
    for round_ in range(rounds):
        for i, key in enumerate(keys):
            payload = {"worker": worker, "round": round_, "blob": [worker] * 200}
            cache.put(key, payload)
            cache.put_bytes(key, bytes([worker]) * 5000, "onnx")
            data = cache.get(keys[(i + 1) % 4])
            blob = cache.get_bytes(keys[(i + 2) % 4], "onnx")
            if data is not None and data["blob"] != [data["worker"]] * 200:
                seen_bad += 1
            if blob is not None and blob != bytes([blob[0]]) * 5000:
                seen_bad += 1
    queue.put((worker, seen_bad, cache.counters.private_hits + cache.counters.shared_hits))


@pytest.mark.slow
def test_many_processes_reading_and_writing_at_once(tmp_path):
    import multiprocessing

    shared, private = tmp_path / "shared", tmp_path / "private"
    teacher = ResultCache(shared)
    for i in range(4):
        teacher.put(ResultCache.key(entry=i), {"worker": -1, "round": 0, "blob": [-1] * 200})
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_hammer, args=(str(private), str(shared), w, 25, queue)) for w in range(4)]
    for process in workers:
        process.start()
    reports = [queue.get(timeout=120) for _ in workers]
    for process in workers:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert all(bad == 0 for _, bad, _ in reports)  # every entry read was one writer's whole entry
    assert all(hits > 0 for _, _, hits in reports)
    for i in range(4):  # what is left is whole, and nothing temporary is left behind
        data = ResultCache(private).get(ResultCache.key(entry=i))
        assert data is not None and data["blob"] == [data["worker"]] * 200
    assert not [p for p in private.iterdir() if p.name.startswith(".")]


def test_cache_without_write_permission_degrades_with_one_warning(tmp_path, monkeypatch):
    """As root, permission bits do not stop writes, so the refusal is simulated where the probe writes."""
    import workbench.cache as cache_module

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    cache = ResultCache(tmp_path / "readonly")
    monkeypatch.setattr(cache_module.tempfile, "mkstemp", refuse)
    with pytest.warns(CacheWarning, match="PermissionError: Permission denied") as caught:
        assert cache.put(ResultCache.key(model="abc"), {"a": 1}) is None
        assert cache.put_bytes(ResultCache.key(model="abc"), b"x", "onnx") is None
    assert len(caught) == 1 and cache.usable is False

"""Workshop flow: a teacher warms a cache once; a participant's explorer reads it as a read-only shared layer."""
from __future__ import annotations

import json
import os

import pytest

import workbench.precision
from workbench import Workbench
from workbench.cache import CacheWarning
from workbench.choices import BATCH_SIZES, explorer_backends, explorer_configs, explorer_methods
from workbench.cli import main
from workbench.errors import WorkbenchError
from workbench.precision.plan import METHODS, QDQ_STYLES
from workbench.warm import warm

GRID = ["--samples", "digits-cnn", "--backend", "onnxruntime", "--precision", "fp32", "--precision", "int8",
        "--calibration", "digits-train", "--method", "minmax", "--qdq-style", "onnxruntime", "--batch", "8",
        "--runs", "3", "--quiet"]


class WorkSpy:
    """Counts the work functions (a measurement, a precision transform) while passing the calls through."""

    def __init__(self, monkeypatch):
        self.measured, self.transformed = [], []
        measure, transform = Workbench._measure, workbench.precision.apply_plan

        def spy_measure(session, job, **steps):
            self.measured.append(job.plan.label)
            return measure(session, job, **steps)

        def spy_transform(*args, **kwargs):
            self.transformed.append(args[1])
            return transform(*args, **kwargs)
        monkeypatch.setattr(Workbench, "_measure", spy_measure)
        monkeypatch.setattr(workbench.precision, "apply_plan", spy_transform)


def _snapshot(directory) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def teacher_cache(tmp_path_factory):
    """Cache A, warmed with the CLI for a small grid, then made read-only."""
    directory = tmp_path_factory.mktemp("teacher")
    assert main(["warm", *GRID, "--cache", str(directory), "--json", str(directory.parent / "warm.json")]) == 0
    report = json.loads((directory.parent / "warm.json").read_text())
    assert report["configurations"] == 2 and report["computed"] == 2 and report["failed"] == []
    assert report["estimate_s"] > 0
    os.chmod(directory, 0o555)
    yield directory
    os.chmod(directory, 0o755)


def test_warm_grid_is_the_explorers(tmp_path):
    configs = explorer_configs(["a", "b"])
    int8 = [c for c in configs if c["precision"] == "int8"]
    calibrated = [m for m in METHODS if m != "dynamic"]
    # dynamic INT8 once per batch size: no calibration set, one op style
    assert len(int8) == (2 * len(calibrated) * len(QDQ_STYLES) + 1) * len(BATCH_SIZES)
    assert [c for c in int8 if c["method"] == "dynamic"] == [
        {"precision": "int8", "batch": b, "calibration": None, "method": "dynamic", "qdq_style": "onnxruntime",
         "keep_fp32": ()} for b in BATCH_SIZES]
    assert len(configs) - len(int8) == 2 * len(BATCH_SIZES)  # fp32 and fp16 at every batch size
    assert "onnxruntime" in explorer_backends()
    pytest.importorskip("ipywidgets")
    from workbench.ui import Explorer

    explorer = Explorer("digits-cnn", cache_dir=tmp_path, runs=3, background=False)
    explorer.wait()  # the work (and the lookup of installed engines) starts once shown or waited for
    assert tuple(explorer.batch.options) == BATCH_SIZES
    assert list(explorer.method.options) == explorer_methods(explorer.session().model.proto) == calibrated
    assert tuple(explorer.qdq_style.options) == QDQ_STYLES and list(explorer.backend.options) == explorer_backends()
    assert explorer.selection() in explorer_configs(explorer.calibration.options)


def test_warm_skips_what_is_cached_and_reports_it(teacher_cache, tmp_path, monkeypatch, capsys):
    spy = WorkSpy(monkeypatch)
    report = warm(["digits-cnn"], cache_dir=tmp_path, shared_cache=teacher_cache, backends=["onnxruntime"],
                  precisions=["fp32", "int8"], calibrations=["digits-train"], methods=["minmax"],
                  qdq_styles=["onnxruntime", "tensorrt"], batches=[8], runs=3, progress=False)
    assert report.configurations == 3 and report.cached == 2 and report.computed == 1
    assert spy.measured == ["int8 (minmax, tensorrt)"]
    assert "3 configurations of 1 sample(s), 2 already cached, 1 to compute; estimated" in capsys.readouterr().out


def test_warm_refuses_an_unwritable_cache_and_unknown_samples(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(WorkbenchError, match="cannot write to the cache .* is a file, not a folder"), \
            pytest.warns(CacheWarning):
        warm(["digits-cnn"], cache_dir=tmp_path / "file", backends=["onnxruntime"], progress=False)
    with pytest.raises(WorkbenchError, match="Unknown sample"):
        warm(["no-such-sample"], cache_dir=tmp_path, progress=False)


def test_second_user_reads_the_shared_layer_without_computing(teacher_cache, tmp_path, monkeypatch):
    pytest.importorskip("ipywidgets")
    from workbench.ui import Explorer

    before = _snapshot(teacher_cache)
    private = tmp_path / "participant"
    spy = WorkSpy(monkeypatch)
    explorer = Explorer("digits-cnn", cache_dir=private, shared_cache=teacher_cache, runs=3, background=False)
    explorer.calibration.value = "digits-train"
    explorer.precision.value = "int8"  # the participant's toggle
    shown = explorer.wait()
    assert shown.precision == "int8" and shown.calibration == "digits-train" and explorer.error is None
    assert spy.measured == [] and spy.transformed == []  # nothing computed: results and the INT8 graph were shared
    assert "<svg" in explorer.fusion.value and len(explorer.figures["latency"].data) >= 2
    assert explorer.session().cache.counters.shared_hits >= 2
    assert _snapshot(teacher_cache) == before  # the shared layer is only read
    assert not private.exists() or not list(private.glob("*.json"))  # and nothing had to be written privately


def test_sweep_grid_expands_int8_keys_for_int8_only():
    from workbench.cli import grid_configs

    configs = grid_configs(["precision=fp32,int8", "method=minmax,entropy", "batch=1,8"])
    assert configs == [{"precision": "fp32", "batch": 1}, {"precision": "fp32", "batch": 8},
                       {"precision": "int8", "method": "minmax", "batch": 1},
                       {"precision": "int8", "method": "minmax", "batch": 8},
                       {"precision": "int8", "method": "entropy", "batch": 1},
                       {"precision": "int8", "method": "entropy", "batch": 8}]
    for bad in ("precision", "colour=red", "batch=eight"):
        with pytest.raises(WorkbenchError, match="--grid"):
            grid_configs([bad])


def test_sweep_command_sequential_writes_results(tmp_path, capsys):
    out = tmp_path / "sweep.json"
    assert main(["sweep", "digits-cnn", "--grid", "precision=fp32,int8", "--grid", "runs=3", "--quiet",
                 "--cache-dir", str(tmp_path / "cache"), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [r["precision"] for r in data["results"]] == ["fp32", "int8"] and data["failures"] == []
    assert data["executor"] == "sequential" and all(r["machine"]["cores"] >= 1 for r in data["results"])
    assert "int8 (minmax, onnxruntime, digits-train" in capsys.readouterr().out


def test_explorer_says_when_a_timing_came_from_another_machine(tmp_path):
    pytest.importorskip("ipywidgets")
    from workbench.cache import ResultCache, _json_hash
    from workbench.ui import Explorer

    shared = tmp_path / "teacher"
    warm(["digits-cnn"], cache_dir=shared, backends=["onnxruntime"], precisions=["fp32"], batches=[8], runs=3,
         progress=False, echo=lambda _: None)
    for path in shared.glob("*.json"):  # the teacher's machine was another one
        entry = json.loads(path.read_text())["entry"]
        if "machine" in entry:
            entry["machine"] = {**entry["machine"], "cpu_model": "Teacher's CPU", "cores": 96}
            path.write_text(json.dumps({"sha256": _json_hash(entry), "entry": entry}))
    explorer = Explorer("digits-cnn", cache_dir=tmp_path / "mine", shared_cache=shared, runs=3, background=False)
    explorer.wait()
    assert explorer.current.machine["cpu_model"] == "Teacher's CPU"
    assert "timing measured on another machine (Teacher&#x27;s CPU, 96 cores)" in explorer.status.value
    assert ResultCache(tmp_path / "mine", shared=shared).get(explorer.current.cache_key) is not None

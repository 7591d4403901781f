"""Sweeps on a local Ray with 2 workers: same accuracy as the sequential sweep, latency present, a failing
configuration reported while the others go on, a killed worker's task retried, nothing computed twice."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from workbench import PrecisionError, Workbench

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")

CONFIGS = [{"precision": "fp32"},
           {"precision": "int8", "calibration": "digits-train", "method": "minmax", "qdq_style": "onnxruntime"},
           {"precision": "int8", "calibration": "digits-train", "method": "minmax", "qdq_style": "tensorrt"}]
FAST = {"runs": 3, "batch": 8}


class Flaky(Workbench):
    """Breaks FP16 on purpose, and kills its worker process on the first TensorRT-style INT8 run; logs each
    measurement with its process's calibration count to `<cache>/measured.log`."""

    def _measure(self, job, **steps):
        from workbench.precision import cache_stats

        log = Path(self._settings["cache_dir"]) / "measured.log"
        if job.plan.precision == "fp16":
            raise PrecisionError("FP16 broken on purpose")
        killed = log.with_name("killed")
        if job.plan.qdq_style == "tensorrt" and not killed.exists():
            killed.write_text(str(os.getpid()))
            os._exit(1)  # the worker process dies mid-task
        result = super()._measure(job, **steps)
        with log.open("a") as handle:
            handle.write(f"{job.plan.label} {os.getpid()} {cache_stats.calibrations}\n")
        return result


@pytest.fixture(scope="module")
def local_ray():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the test module
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def sequential(tmp_path_factory):
    session = Workbench("digits-cnn", cache_dir=tmp_path_factory.mktemp("sequential"), threads=1, progress=False)
    return session.sweep([{**c, **FAST} for c in CONFIGS])


def test_ray_sweep_matches_sequential_reports_failures_and_retries(local_ray, sequential, tmp_path):
    session = Flaky("digits-cnn", cache_dir=tmp_path, threads=1, progress=False)
    configs = [{**c, **FAST} for c in CONFIGS]
    results = session.sweep([*configs, {"precision": "fp16", **FAST}, configs[0]], executor="ray", max_retries=2)

    assert [r.label for r in results] == [r.label for r in sequential] + [sequential[0].label]
    for ray_result, seq_result in zip(results, sequential):
        assert ray_result.cache_key == seq_result.cache_key
        assert ray_result.accuracy.top1 == seq_result.accuracy.top1
        assert ray_result.accuracy.top1_agreement == seq_result.accuracy.top1_agreement
        assert ray_result.headline_latency.median > 0 and ray_result.engine is not None
    [failure] = session.failures
    assert failure.config["precision"] == "fp16" and "FP16 broken on purpose" in failure.error

    assert (tmp_path / "killed").exists()  # the TensorRT-style task's first worker died, and the retry finished it
    lines = [line.split() for line in (tmp_path / "measured.log").read_text().splitlines()]
    assert sorted(line[0] for line in lines) == ["fp32", "int8", "int8"]  # each configuration measured once
    calibrations = {}
    for *_, pid, count in lines:
        calibrations[pid] = max(calibrations.get(pid, 0), int(count))
    assert sum(calibrations.values()) == 1  # the shared INT8 ranges were calibrated once, across workers

    again = Flaky("digits-cnn", cache_dir=tmp_path, threads=1, progress=False).sweep(configs, executor="ray")
    assert [r.cache_key for r in again] == [r.cache_key for r in results[:3]]
    assert len((tmp_path / "measured.log").read_text().splitlines()) == 3  # all served from the cache


def test_local_ray_serves_no_dashboard_or_client_port(local_ray):
    """What `start_ray` controls: no dashboard (8265) and no Ray client server (10001) listen. (Ray's own gRPC
    servers bind every interface in this Ray version, token authentication on; docs/scaling.md says so.)"""
    ports = set()
    for process in psutil.process_iter(["cmdline"]):
        if "ray" not in " ".join(process.info["cmdline"] or []):
            continue
        try:
            ports |= {c.laddr.port for c in process.net_connections("inet") if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            continue
    assert ports and not ports & {8265, 10001}


def test_sweep_command_on_ray(local_ray, tmp_path):
    from workbench.cli import main

    out = tmp_path / "sweep.json"
    assert main(["sweep", "digits-cnn", "--grid", "precision=fp32,int8", "--grid", "runs=3", "--ray", "--threads",
                 "1", "--quiet", "--no-drift", "--cache-dir", str(tmp_path / "cache"), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["executor"] == "ray" and [r["precision"] for r in data["results"]] == ["fp32", "int8"]
    assert all(r["latency_ms"]["median"] > 0 for r in data["results"]) and data["failures"] == []

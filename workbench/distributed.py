"""Sweeps on Ray: each configuration is one Ray task on a worker that rebuilds the session and runs it.

- Each task reserves as many CPUs as its engine runs threads (`Workbench(threads=N)`; the whole node's cores when
  threads is None), so timings of concurrent tasks never share cores. For latency-critical sweeps, give
  `threads` = the cores of a node: one task per node.
- Results and calibration ranges go to the content-addressed cache (which every worker must see at the same path:
  one machine, or a shared file system). Configurations already cached are not sent; duplicates are sent once;
  INT8 configurations sharing calibration ranges wait for the first of them, so the ranges are calibrated once.
- A configuration that fails is reported (`SweepFailure`) and the others go on; a task whose worker process dies
  is retried `max_retries` times by Ray.
"""
from __future__ import annotations

import importlib.util
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from ._optional import require
from .cache import ResultCache
from .calibration import DEFAULT_SIZE
from .errors import ClusterError
from .machine import usable_cores
from .results import RunResult

LOOPBACK = "127.0.0.1"
CONNECT_TIMEOUT_S = 5.0  # to reach a cluster's address before handing it to Ray (which retries for minutes)
RAY_CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")  # where `ray start` notes the address `auto` finds
# Ray kills its raylet with the driver (PR_SET_PDEATHSIG), but the raylet's agents then linger for minutes. This
# watcher, a child of the driver, notes the raylet's children while the driver lives and kills them once it is gone.
_REAPER = """
import os, signal, sys, time
parent, raylet, known = int(sys.argv[1]), int(sys.argv[2]), [int(pid) for pid in sys.argv[3:]]
signal.signal(signal.SIGTERM, signal.SIG_IGN)
def children():  # a standalone copy of distributed._children: this watcher imports nothing of the workbench
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1] == str(raylet):
                found.append(int(entry))
        except (OSError, IndexError):
            pass
    return found
while os.getppid() == parent:
    known = children() or known
    time.sleep(0.5)
for pid in known:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
"""


@dataclass
class SweepFailure:
    """A configuration that did not produce a result, and why."""

    config: dict
    label: str
    error: str

    def to_json(self) -> dict:
        return {"config": self.config, "configuration": self.label, "error": self.error}


def failure_of(job, exc: Exception) -> SweepFailure:
    """What a sweep reports for a prepared job that raised `exc` (in this process or in a Ray task)."""
    return SweepFailure(job_config(job), f"{job.plan.label} @ {job.backend} b{job.batches[0]}", _cause(exc))


def job_config(job) -> dict:
    """`Workbench.run` keyword arguments that rebuild a prepared job (in another process)."""
    return {**job.plan.to_record(),
            "calibration": job.calibration.name if job.calibration is not None else None,
            "calibration_size": job.calibration.size if job.calibration is not None else DEFAULT_SIZE,
            "batch": job.batches[0], "batches": job.batches[1:], "runs": job.runs, "profile": job.profile,
            "drift": job.drift, "backend": job.backend, "dims": dict(job.dims) or None}


def session_spec(session) -> dict:
    """What a worker needs to rebuild `session`: its class, model source, settings and the user's calibration sets."""
    from . import samples

    named_sample = session.sample is not None and session.sample.name in samples.names() \
        and samples.load(session.sample.name) is session.sample
    source = session.sample.name if named_sample else (session.sample or session.model)
    own = session.sample.calibration_sets if named_sample else {}
    extra = {name: cal for name, cal in session.calibration_sets.items() if own.get(name) is not cal}
    identity = ResultCache.key(cls=f"{type(session).__module__}.{type(session).__qualname__}",
                               model=session.model.content_hash, settings=session._settings,
                               calibration_sets={name: cal.content_hash for name, cal in extra.items()})
    return {"id": identity, "cls": type(session), "source": source, "settings": dict(session._settings),
            "calibration_sets": extra}


_sessions: dict[str, object] = {}  # per worker process: sessions by spec id, reused by later tasks


def _run_on_worker(spec: dict, config: dict) -> dict:
    """The body of a Ray task: rebuild (or reuse) the session, run one configuration, return its JSON."""
    session = _sessions.get(spec["id"])
    if session is None:
        session = spec["cls"](spec["source"], progress=False, **spec["settings"])
        for calibration in spec["calibration_sets"].values():
            session.add_calibration_set(calibration)
        _sessions[spec["id"]] = session
    return session.run(**config).to_json()


def check_ray_options(address: str | None, max_retries: int) -> None:
    """Before any work: Ray installed, a retry count of 0 or more, client support for ray:// addresses, and an
    address that answers within CONNECT_TIMEOUT_S. ClusterError (one line, with the fix) otherwise."""
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ClusterError(f"--max-retries {max_retries}: give 0 or more (how often Ray retries a task whose worker "
                           "died).")
    require("ray", extra="ray", purpose="sweeps on Ray")
    if address and address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
        raise ClusterError(f"--ray {address}: Ray's client mode needs pip install 'ray[client]'; or give the "
                           "cluster's GCS address (HOST:6379) from a machine of the cluster.")
    if address:
        _reachable(address)


def _reachable(address: str) -> None:
    """Raise ClusterError unless the host:port behind `address` (also `auto`, ray://host:port) accepts a TCP
    connection within CONNECT_TIMEOUT_S."""
    target = address
    if address == "auto":
        target = os.environ.get("RAY_ADDRESS") or ""
        if not target and RAY_CURRENT_CLUSTER.is_file():
            target = RAY_CURRENT_CLUSTER.read_text(errors="replace").strip()
        if not target:
            raise ClusterError("--ray auto: no running Ray cluster found on this machine (no $RAY_ADDRESS, no "
                               f"{RAY_CURRENT_CLUSTER}); start one with `ray start --head` or give --ray with no "
                               "address for a local Ray.")
    host, _, port = target.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            return
    except (OSError, ValueError) as exc:
        reason = "not HOST:PORT" if isinstance(exc, ValueError) else (exc.strerror or type(exc).__name__).lower()
        stale = f" (found via {'$RAY_ADDRESS' if os.environ.get('RAY_ADDRESS') else RAY_CURRENT_CLUSTER}, which " \
                "may be stale)" if address == "auto" else ""
        raise ClusterError(f"Cannot reach the Ray cluster at {target}{stale}: {reason} within "
                           f"{CONNECT_TIMEOUT_S:.0f} s. Check the address and that the cluster runs (`ray status`), "
                           "or give --ray with no address for a local Ray.") from None


def start_ray(address: str | None = None):
    """Connect to the Ray cluster at `address`, or start a local one bound to loopback with no dashboard."""
    ray = require("ray", extra="ray", purpose="sweeps on Ray")
    if not ray.is_initialized():
        if address:
            _reachable(address)
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=usable_cores(), include_dashboard=False, _node_ip_address=LOOPBACK,
                     log_to_driver=False)
            _reap_agents_after_us(ray)
    return ray


def _reap_agents_after_us(ray) -> None:
    """Start the watcher (_REAPER) for the local Ray just started (Linux; skipped when Ray's layout differs)."""
    import subprocess
    import sys

    try:
        raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    except (AttributeError, KeyError, IndexError):
        return
    if Path("/proc").is_dir():  # the agents already running are passed in: the driver may die before it looks
        subprocess.Popen([sys.executable, "-c", _REAPER, str(os.getpid()), str(raylet),
                          *map(str, _children(raylet))], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)


def _children(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(pid):
                found.append(int(entry))
        except (OSError, IndexError):
            pass
    return found


def ray_sweep(session, jobs, *, address: str | None = None, max_retries: int = 2,
              progress: bool | None = None) -> tuple[list[RunResult], list[SweepFailure]]:
    """Run prepared `jobs` of `session` as Ray tasks; returns the results (in job order) and the failures."""
    ray = start_ray(address)
    results: dict[str, RunResult] = {}
    todo = []
    for job in jobs:
        if job.key in results or any(job.key == other.key for other in todo):
            continue
        if session.is_cached(job):
            results[job.key] = session.execute(job)
        else:
            todo.append(job)
    largest_node = max((node["Resources"].get("CPU", 1) for node in ray.nodes() if node.get("Alive")), default=1)
    cpus = min(session.threads or usable_cores(), int(largest_node))
    task = ray.remote(num_cpus=cpus, max_retries=max_retries)(_run_on_worker)
    spec = ray.put(session_spec(session))

    # INT8 jobs sharing calibration ranges: the first is sent, the others when it is done (the ranges are cached).
    waiting: dict[tuple, list] = {}
    leaders = []
    for job in todo:
        group = _range_group(job)
        if group is None or group not in waiting:
            leaders.append(job)
            if group is not None:
                waiting[group] = []
        else:
            waiting[group].append(job)
    pending = {task.remote(spec, job_config(job)): job for job in leaders}
    failures: list[SweepFailure] = []
    show = session.progress if progress is None else progress
    with tqdm(total=len(todo), desc=f"sweep on Ray ({cpus} CPU per task)", unit="config", disable=not show) as bar, \
            _cancelled_on_interrupt(ray, pending):
        while pending:
            [done], _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(done)
            try:
                results[job.key] = RunResult.from_json(ray.get(done))
            except Exception as exc:  # noqa: BLE001 - a task's own error, or its worker died max_retries + 1 times
                failures.append(failure_of(job, exc))
                bar.write(f"failed: {failures[-1].label}: {failures[-1].error}")
            for follower in waiting.pop(_range_group(job), []):
                pending[task.remote(spec, job_config(follower))] = follower
            bar.update()
    ordered = [results[job.key] for job in jobs if job.key in results]
    for result in ordered:
        if all(r.cache_key != result.cache_key for r in session.results):
            session.results.append(result)
    return ordered, failures


class _cancelled_on_interrupt:
    """On Ctrl-C or SIGTERM (raised as KeyboardInterrupt by the CLI): cancel the tasks still pending, so no
    worker keeps measuring for a sweep that is gone."""

    def __init__(self, ray, pending: dict) -> None:
        self.ray, self.pending = ray, pending

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, *_) -> None:
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            for ref in list(self.pending):
                try:
                    self.ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort while shutting down
                    pass


def _range_group(job) -> tuple | None:
    if job.plan.precision != "int8" or job.calibration is None:
        return None
    return job.calibration.content_hash, job.plan.method


def _cause(exc: Exception) -> str:
    """The message of the exception raised inside the task (Ray wraps it), else Ray's own."""
    cause = getattr(exc, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"

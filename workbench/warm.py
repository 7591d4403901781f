"""Pre-compute every configuration the explorer can show, so that a class or a team reads them from a cache.

`warm(["digits-cnn"], cache_dir="/srv/workbench-cache")` (or `python -m workbench warm`) measures each sample on each
engine at every precision, calibration set, method, Q/DQ style and batch size the explorer offers, with the
explorer's own run settings, so every toggle of an explorer pointed at that cache (as its shared layer) is a hit.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from .choices import BATCH_SIZES, EXPLORER_RUNS, explorer_backends, explorer_configs, explorer_methods
from .errors import WorkbenchError
from .jobs import CancelToken, Progress
from .scheduler import execute_all
from .precision.plan import METHODS, PRECISIONS, QDQ_STYLES


@dataclass
class WarmReport:
    """What `warm` did: configurations found cached, computed, failed (label and message), and the time taken
    against the estimate printed before it started."""

    configurations: int = 0
    cached: int = 0
    computed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    estimate_s: float = 0.0
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"configurations": self.configurations, "cached": self.cached, "computed": self.computed,
                "failed": [{"configuration": label, "error": error} for label, error in self.failed],
                "estimate_s": self.estimate_s, "seconds": self.seconds}


@dataclass
class _Task:
    session: object
    config: dict
    job: object
    cached: bool


def warm(samples: list[str] | None = None, *, cache_dir=None, shared_cache=None, backends: list[str] | None = None,
         precisions=PRECISIONS, calibrations: list[str] | None = None, methods=METHODS, qdq_styles=QDQ_STYLES,
         batches=BATCH_SIZES, runs: int = EXPLORER_RUNS, threads: int | None = None, progress: bool = True,
         echo: Callable[[str], None] = print, cancel: CancelToken | None = None) -> WarmReport:
    """Measure every explorer configuration of `samples` (default: all bundled samples) on `backends` (default:
    the explorer's engines) into `cache_dir`; already-cached ones are skipped. The grid can be narrowed by
    precision, calibration set name, method, Q/DQ style and batch size. A failing configuration is reported in the
    returned WarmReport and the others go on. The jobs go through a `workbench.scheduler`; `cancel` stops the
    warming (`Cancelled`; what was measured stays cached)."""
    from . import samples as sample_registry
    from .session import Workbench

    names = list(samples or sample_registry.names())
    unknown = [n for n in names if n not in sample_registry.names()]
    if unknown:
        raise WorkbenchError(f"Unknown sample(s) {', '.join(unknown)}: warm takes bundled sample names "
                             f"({', '.join(sample_registry.names())}).")
    tasks: list[_Task] = []
    probes: dict[int, tuple[float, float]] = {}
    for name in names:
        for backend in backends or explorer_backends():
            session = Workbench(name, backend=backend, cache_dir=cache_dir, shared_cache=shared_cache,
                                threads=threads, progress=False)
            if not session.cache._probe():
                raise WorkbenchError(f"warm cannot write to the cache {session.cache.directory} "
                                     f"({session.cache.problem}): give --cache a writable folder.")
            sets = [c for c in session.calibration_sets if calibrations is None or c in calibrations]
            offered = explorer_methods(session.model.proto)
            for config in explorer_configs(sets, precisions=precisions, methods=[m for m in methods if m in offered],
                                           qdq_styles=qdq_styles, batches=batches):
                job = session.prepare_run(**config, runs=runs)
                tasks.append(_Task(session, config, job, session.is_cached(job)))
    report = WarmReport(configurations=len(tasks), cached=sum(t.cached for t in tasks))
    todo = [t for t in tasks if not t.cached]
    report.estimate_s = sum(_estimate(t, probes) for t in todo)
    echo(f"warm: {len(tasks)} configurations of {len(names)} sample(s), {report.cached} already cached, "
         f"{len(todo)} to compute; estimated {_duration(report.estimate_s)} (one pass over each model's evaluation "
         "data timed here, times the passes a configuration needs; a rough guide)")
    start = time.perf_counter()
    with tqdm(total=len(todo), desc="warm", unit="config", disable=not progress) as bar:
        def done(session, job, outcome) -> None:
            if isinstance(outcome, WorkbenchError):
                report.failed.append((f"{session.model.name} {job.plan.label} @ {job.backend}", str(outcome)))
            elif isinstance(outcome, Exception):
                raise outcome
            elif not session.is_cached(job):  # e.g. the disk filled up: computed, but not kept
                report.failed.append((f"{session.model.name} {job.plan.label} @ {job.backend}",
                                      f"computed but not written to the cache {session.cache.directory} "
                                      f"({session.cache.problem or 'the write failed'}): free some space and warm "
                                      "again"))
            else:
                report.computed += 1
            bar.update()

        def step(progress: Progress) -> None:
            bar.set_postfix_str(f"{progress.job}: {progress.step}")

        execute_all([(t.session, t.job) for t in todo], cancel=cancel, on_progress=step, on_done=done)
    report.seconds = time.perf_counter() - start
    echo(f"warm: computed {report.computed}, cached before {report.cached}, failed {len(report.failed)} in "
         f"{_duration(report.seconds)}")
    for label, error in report.failed:
        echo(f"  failed: {label}: {error}")
    return report


# Passes over the evaluation data a configuration costs, besides engine builds: the accuracy pass, the timed runs
# and profiling (counted as batches), drift on a few samples; INT8 adds the calibration passes of its set once.
_PASSES = {"fp32": 1.5, "fp16": 2.5, "int8": 3.0}


def _estimate(task: _Task, probes: dict[int, tuple[float, float]]) -> float:
    """Seconds one configuration should take: engine build + passes over the eval data, from one timed FP32 pass
    per session (done once, on the first configuration of that session that is not cached)."""
    from .session import _run_all

    session = task.session
    if id(session) not in probes:
        backend = session._backend(task.job.backend)
        start = time.perf_counter()
        with backend.build(session.model, session._options(backend)) as engine:
            built = time.perf_counter()
            _run_all(engine, session.eval.arrays, task.config["batch"], session._to_feeds)
            probes[id(session)] = (built - start, time.perf_counter() - built)
    build_s, pass_s = probes[id(session)]
    samples = max(1, len(next(iter(session.eval.arrays.values()))))
    per_batch = pass_s * task.config["batch"] / samples
    timed = (task.job.runs + 10) * per_batch  # timed runs + profile runs
    calibration = pass_s * task.job.calibration.size / samples if task.job.calibration is not None else 0.0
    return 2 * build_s + _PASSES[task.job.plan.precision] * pass_s + timed + calibration


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"

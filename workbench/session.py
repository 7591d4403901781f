"""The session API: one model, one backend, many precision configurations, each measured once and cached."""
from __future__ import annotations

import contextlib
import hashlib
import io
import marshal
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
from tqdm.auto import tqdm

from ._version import __version__
from .backends import DEFAULT_BACKEND, engine_options, get_backend, option_names
from .cache import ResultCache
from .calibration import DEFAULT_SIZE, CalibrationSet
from .errors import CalibrationError, InputSpecError, PrecisionError
from .jobs import CancelToken, Progress, ProgressCallback
from .jobs import check as check_cancel
from .engine import REDUCED_PRECISIONS, Backend, Engine, EngineGraph, EngineOptions, LayerTiming
from .limits import OPEN_ENGINES, array_bytes, capped_threads, check_memory
from .machine import this_machine
from .measure import interleaved_latency, measure_accuracy, measure_drift, measure_latency
from .measure.accuracy import Metric, metric_name, resolve_tasks
from .models.inputs import InputPlan, Override, batch_axes, feeder, image_axes, plan_inputs
from .models.spec import Model
from .precision.apply import graph_precision, precision_notes
from .precision.plan import PLAN_FIELDS, PrecisionPlan
from .results import LAYER_TIME_BAND, RetimedLatency, RunResult
from .samples import load_model
from .samples.base import EvalData, Sample
from .schema import SchemaError, check_run_json
from .userdata import ImagePreprocessing, load_data, split
from .vocabulary import DEFAULT_BUDGET, DEFAULT_CONFIRM, DEFAULT_MAX_DROP, DEFAULT_METRIC, DEFAULT_RUNS

SYNTHETIC_SIZE = 64  # samples of synthetic calibration / evaluation data for models without data
DRIFT_SAMPLES = 4  # samples run through the tensor-exposing graphs (every intermediate tensor is kept in memory)
PROFILE_RUNS = 20
LATENCY_STATS = 2  # in the cache key: results cached before run times and intervals were kept are re-measured
ACCURACY_STATS = 2  # in the cache key: results cached before per-output tasks and metrics are re-measured
REFERENCE_LAYOUT = 2  # in the reference key: outputs without a sample axis are kept whole, one array per sample


@dataclass
class Job:
    """A validated configuration: everything `execute` needs, resolved before any work starts. `key` is its cache
    key (model hash, plan, calibration, engine and options, batches, data)."""

    plan: PrecisionPlan
    calibration: CalibrationSet | None
    backend: str
    batches: list[int]
    runs: int
    profile: bool
    drift: bool
    notes: list[str]
    key: str
    dims: dict[str, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.plan.label} on {self.backend}, batch {self.batches[0]}"


class Workbench:
    """Measure precision configurations of one model on one backend.

    `model`: a sample name or `Sample` (its eval data and calibration sets come along), a `Model`, or anything
    `load_model` accepts (then inputs are synthetic, drawn from the input specs, and every result says
    `synthetic_data=True`). `threads` and `optimization_level` (ONNX Runtime: disable, basic, extended, layout,
    all; "disable" shows the unfused graph) are engine options, given to the engines that have them (None: the
    engine's default); `engine_options` gives any engine's own options by engine name, e.g.
    {"openvino": {"inference_precision": "f16"}}; an option an engine does not have is a BackendError.
    `shape_range` states, once, the range of each dynamic
    axis by its symbolic name, e.g. {"sequence": (8, 64, 128)} as (min, opt, max): engines that build for a range
    (TensorRT optimisation profiles) use it, and `run(dims=...)` must stay inside it. `cache_dir` is the private,
    writable cache; `shared_cache` (default `$WORKBENCH_SHARED_CACHE`) a read-only one read first (see ResultCache).
    `inputs` overrides, per input name, the shape synthetic data is drawn at (e.g. {"images": (1, 3, 640, 640)})
    or, for a scalar input, its value (e.g. {"sr": 16000}); without it dynamic axes get stated default sizes that the
    model runs with. `data`: your own data (an .npz by input name with optional `labels`, a folder of images with
    labels from sub-folder names and `image_preprocessing`, a dict of arrays, or any iterable of batches such as a
    torch DataLoader), validated against the model's inputs, and split into calibration and evaluation halves with a
    fixed seed; or give them separately as `calibration_data` / `eval_data`.

    `tasks` says what outputs are, so accuracy uses metrics that mean something for them (docs/accuracy.md):
    {"output name": task} with tasks from `vocabulary.OUTPUT_TASKS`, or one task for the first output; outputs not
    named get the sample's task (first output) or one inferred from their name, dtype and shape. `metric`, a
    callable `metric(fp32_outputs, variant_outputs, labels) -> float` (higher is better), is measured for every
    result, reported under its function name, and decides the headline.
    """

    def __init__(self, model, *, backend: str = DEFAULT_BACKEND, cache_dir=None, shared_cache=None,
                 threads: int | None = None, optimization_level: str | None = None,
                 shape_range: dict[str, tuple[int, int, int]] | None = None,
                 engine_options: dict[str, dict] | None = None, progress: bool = True, eval_limit: int | None = None,
                 on_step: Callable[[str, int, int], None] | None = None,
                 inputs: dict[str, Override] | None = None, data=None, calibration_data=None, eval_data=None,
                 image_preprocessing: ImagePreprocessing | None = None, tasks: dict[str, str] | str | None = None,
                 metric: Metric | None = None) -> None:
        from . import samples

        self.backend_name = backend
        self.threads = capped_threads(threads)
        self.optimization_level = optimization_level
        self.engine_options = {name: dict(options) for name, options in (engine_options or {}).items()}
        self.shape_range = dict(shape_range or {})
        self.progress = progress
        self.on_step = on_step  # called as on_step(step_name, steps_done, steps_total) while measuring (widgets)
        self.cache = ResultCache(cache_dir, shared=shared_cache)
        # what a worker process needs to rebuild this session (sweeps on Ray)
        self._settings = {"backend": backend, "cache_dir": str(self.cache.directory),
                          "shared_cache": str(self.cache.shared) if self.cache.shared else None, "threads": threads,
                          "optimization_level": optimization_level, "shape_range": self.shape_range,
                          "engine_options": self.engine_options, "eval_limit": eval_limit}
        self.failures: list = []  # SweepFailure of the last sweep
        self.sample: Sample | None = None
        self.input_plans: list[InputPlan] = []  # how synthetic inputs were drawn (empty for samples)
        if inputs and (isinstance(model, Sample) or (isinstance(model, str) and model in samples.names())):
            raise InputSpecError("inputs= sets the shapes of synthetic data for a model without data; a sample "
                                 "comes with its own data: pass the model file (or give data=) instead.")
        if isinstance(model, Sample):
            self.sample = model
            self.model = model.model
        elif isinstance(model, str) and model in samples.names():
            self.sample = samples.load(model)
            self.model = self.sample.model
        else:
            self.model = load_model(model)
        _check_no_empty_inputs(self.model)
        if eval_limit is not None and eval_limit < 1:
            raise InputSpecError(f"eval_limit={eval_limit}: give a positive number of evaluation samples or None.")
        if self.sample is not None:
            self.calibration_sets: dict[str, CalibrationSet] = dict(self.sample.calibration_sets)
            self.eval = self.sample.eval.head(eval_limit) if eval_limit else self.sample.eval
            self.task = self.sample.task
        else:
            own_eval = data is not None or eval_data is not None  # no need to find sizes the model runs at
            self.input_plans = plan_inputs(self.model.inputs, self.model.proto, overrides=inputs, probe=not own_eval)
            synthetic = CalibrationSet.synthetic_for(self.model.inputs, size=SYNTHETIC_SIZE, plans=self.input_plans)
            self.calibration_sets = {synthetic.name: synthetic}
            drawn = CalibrationSet.synthetic_for(self.model.inputs, size=eval_limit or SYNTHETIC_SIZE, seed=1,
                                                 plans=self.input_plans)
            self.eval = EvalData(drawn.arrays, None, drawn.description)
            self.task = None  # inferred per output
        self.tasks = resolve_tasks([spec.name for spec in self.model.outputs], tasks)
        self._settings["tasks"] = self.tasks or None  # Ray workers measure with the same tasks
        if metric is not None and not callable(metric):
            raise InputSpecError(f"metric={metric!r} is not callable: pass a function metric(fp32_outputs, "
                                 "variant_outputs, labels) -> float.")
        self.metric = metric
        self._to_feeds = feeder(self.model.inputs)
        self._use_data(data, calibration_data, eval_data, image_preprocessing, eval_limit)
        self.results: list[RunResult] = []
        self._eval_hash = CalibrationSet("eval", self.eval.arrays).content_hash + _labels_hash(self.eval.labels)
        self._backends: dict[str, Backend] = {}
        self._variants: dict[str, Model] = {}
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._jobs: dict[str, Job] = {}
        self._references: dict[tuple[str, int], list[np.ndarray]] = {}
        self._subsets: dict[tuple[str, int], tuple[CalibrationSet, CalibrationSet]] = {}
        # Guards the dicts above and `results`: a scheduler answers cached jobs on one thread while another measures.
        # Held only around lookups and updates, never across a measurement, so a cached answer never waits for one.
        self._state_lock = threading.RLock()

    @property
    def synthetic(self) -> bool:
        return self.data_source["eval"]["kind"] == "synthetic"

    def _use_data(self, data, calibration_data, eval_data, preprocessing, eval_limit) -> None:
        """Where eval and calibration data come from: the sample's, synthetic, or the user's (validated first)."""
        kind = "sample" if self.sample is not None else "synthetic"
        self.data_source = {"eval": {"kind": kind, "description": self.eval.description}}
        self._calibration_sources = {name: {"kind": "synthetic" if cal.synthetic and self.sample is None else kind,
                                            "description": cal.description}
                                     for name, cal in self.calibration_sets.items()}
        self._data_paths = [Path(p) for p in (data, calibration_data, eval_data) if isinstance(p, (str, os.PathLike))]
        if data is None and calibration_data is None and eval_data is None:
            return
        inputs, classes = self.model.inputs, class_count(self.model)
        calibration = evaluation = None
        if data is not None:
            calibration, evaluation = split(load_data(data, inputs, preprocessing=preprocessing, classes=classes))
        if calibration_data is not None:
            calibration = load_data(calibration_data, inputs, preprocessing=preprocessing, classes=classes)
        if eval_data is not None:
            evaluation = load_data(eval_data, inputs, preprocessing=preprocessing, classes=classes)
        if evaluation is not None:
            self.eval = EvalData(evaluation.arrays, evaluation.labels, f"{evaluation.size} samples from "
                                 f"{evaluation.source.get('path', 'user data')}")
            if eval_limit:
                self.eval = self.eval.head(eval_limit)
            self.data_source = {"eval": evaluation.source}
        if calibration is None:  # only eval data given: calibrate on it (and say so)
            calibration = replace(evaluation, source={**evaluation.source, "part": "evaluation (also calibration)"})
        name = f"{calibration.source.get('name', 'user data')} ({calibration.source.get('part', 'calibration')})"
        user_set = calibration.calibration_set(name)
        self.calibration_sets = {name: user_set, **{k: v for k, v in self.calibration_sets.items()
                                                    if self.sample is not None}}
        self._calibration_sources[name] = calibration.source

    @property
    def input_paths(self) -> list[Path]:
        """The files this session reads (the model file, user data): what no output of it may overwrite."""
        model = Path(self.model.source) if self.model.source and Path(self.model.source).is_file() else None
        return ([model] if model else []) + self._data_paths

    def add_calibration_set(self, calibration: CalibrationSet) -> CalibrationSet:
        """Validate `calibration` against the model inputs and make it selectable by name."""
        calibration.validate(self.model.inputs)
        self.calibration_sets[calibration.name] = calibration
        return calibration

    # ---- running ------------------------------------------------------------------------------
    def run(self, precision: str | PrecisionPlan = "fp32", **options) -> RunResult:
        """Measure one configuration (or return it from the cache): latency per batch size, accuracy, engine layers
        with per-layer latency and, for reduced precision, drift from FP32.

        `precision` is a whole `PrecisionPlan`, or a precision name with the plan's other fields as keywords
        (`method`, `qdq_style`, `keep_fp32`, `weight_rounding`, ...: see `PrecisionPlan`). The other keywords are
        `prepare`'s: `calibration`, `calibration_size`, `batch`, `batches`, `runs`, `profile`, `drift`, `backend`,
        `dims`. E.g. `run("int8", method="entropy", weight_rounding="gptq+bc", batch=1)`.
        """
        return self.execute(self.prepare_run(precision, **options))

    def sweep(self, configs: list[dict], *, executor: str = "sequential", ray_address: str | None = None,
              max_retries: int = 2, cancel: CancelToken | None = None,
              progress: ProgressCallback | None = None) -> list[RunResult]:
        """`run(**config)` for every config; all configs are validated before the first one runs. Locally, the
        jobs go through a `workbench.scheduler` (cached ones answered first), with `progress` of each job's steps;
        `cancel` stops the sweep (`Cancelled`; what was measured stays cached).

        `executor="ray"` hands the configurations to Ray tasks (a local Ray when `ray_address` is None), each
        reserving the cores its engine uses; results and calibration ranges go through the cache, and a task whose
        worker dies is retried `max_retries` times. On either executor a failing configuration is reported in
        `self.failures` and the others still run (the returned list holds their results). See
        workbench.distributed.
        """
        jobs = [self.prepare_run(**config) for config in configs]
        if executor == "ray":
            from .distributed import ray_sweep

            if self.metric is not None:
                raise InputSpecError("A metric callable is not sent to Ray workers: sweep with "
                                     "executor='sequential', or leave metric= out for the Ray sweep.")
            results, self.failures = ray_sweep(self, jobs, address=ray_address, max_retries=max_retries)
            return results
        if executor != "sequential":
            raise InputSpecError(f"executor={executor!r}: use 'sequential' or 'ray'.")
        from .distributed import failure_of
        from .scheduler import execute_all

        self.failures = []
        with tqdm(total=len(jobs), desc="sweep", unit="config", disable=not self.progress) as bar:
            def done(_session, job: Job, outcome) -> None:
                if isinstance(outcome, Exception):  # reported like a Ray task's failure; the others go on
                    self.failures.append(failure_of(job, outcome))
                    bar.write(f"failed: {self.failures[-1].label}: {self.failures[-1].error}")
                bar.update()

            outcomes = execute_all([(self, job) for job in jobs], cancel=cancel, on_progress=progress, on_done=done)
        return [outcome for outcome in outcomes if not isinstance(outcome, Exception)]

    def tune(self, precision: str = "int8", *, max_drop: float = DEFAULT_MAX_DROP, metric: str = DEFAULT_METRIC,
             budget: int = DEFAULT_BUDGET, **options):
        """The fastest `precision` configuration (mixed with FP32 where needed) whose `metric` (top1 | agreement |
        cosine) drops at most `max_drop` below FP32, measuring at most `budget` configurations; returns a
        `workbench.tune.TuneResult` with every configuration measured. See `workbench.tune.tune` for options."""
        from .tune import tune

        return tune(self, precision, max_drop=max_drop, metric=metric, budget=budget, **options)

    def sensitivity(self, result: RunResult, *, metric: str = DEFAULT_METRIC, confirm: int = DEFAULT_CONFIRM,
                    **run_options):
        """Units of a reduced-precision result ranked by harm (`workbench.tune.sensitivity`)."""
        from .tune import sensitivity

        return sensitivity(self, result, metric=metric, confirm=confirm, **run_options)

    def retime(self, results: list[RunResult], *, rounds: int = 5, runs: int = 10,
               fresh: bool = False) -> dict[str, RetimedLatency]:
        """Time up to OPEN_ENGINES results again in interleaved rounds (`measure.interleaved_latency`) at the first
        one's headline batch and sequence sizes; by cache key. Cached like runs, so asking again is instant, unless
        `fresh` (time now and store that)."""
        unique = list({r.cache_key: r for r in results}.values())
        if not 1 <= len(unique) <= OPEN_ENGINES:
            raise InputSpecError(f"retime takes 1 to {OPEN_ENGINES} results at once (the engines kept open), got "
                                 f"{len(unique)}: time them in groups.")
        head = unique[0].headline_latency
        keys = [r.cache_key for r in unique]
        key = self.cache.key(kind="retime", results=keys, rounds=rounds, runs=runs, batch=head.batch,
                             dims=head.dims or None)
        stored = None if fresh else self.cache.get(key)
        if stored is not None:
            return {k: RetimedLatency(**v) for k, v in stored.items()}
        engines = {k: self.engine(r) for k, r in zip(keys, unique)}
        timed = interleaved_latency(engines, self._feeds(head.batch, head.dims), batch=head.batch, rounds=rounds,
                                    runs=runs)
        self.cache.put(key, {k: v.to_json() for k, v in timed.items()})
        return timed

    def latency_feeds(self, result: RunResult) -> dict[str, np.ndarray]:
        """The inputs `result`'s headline latency is timed on (its batch and dynamic-axis sizes), e.g. to time its
        engine in turns with engines of other sessions (`report.interleaved_comparison`)."""
        head = result.headline_latency
        return self._feeds(head.batch, head.dims)

    def drift(self, variant: Model, *, backend: str | None = None, cancel: CancelToken | None = None):
        """Per-tensor drift of any variant of this session's model from FP32 (`measure.measure_drift`) on the
        first DRIFT_SAMPLES eval samples, on `backend` (default: the session's): (points, note). `cancel` is checked
        between the two graphs' runs."""
        engine_backend = self._backend(backend or self.backend_name)
        feeds = self._feeds(self._fixed_batch() or DRIFT_SAMPLES)
        return measure_drift(self.model, variant, feeds, engine_backend, self._options(engine_backend), cancel=cancel)

    # ---- artefacts behind a result --------------------------------------------------------------
    def variant_model(self, result: RunResult) -> Model:
        """The precision-baked model a result was measured on (from memory, the disk cache, or rebuilt)."""
        job = self._job_of(result)
        with self._state_lock:
            variant = self._variants.get(job.key)
        if variant is None:
            variant = self._variant(job)
            with self._state_lock:
                variant = self._variants.setdefault(job.key, variant)
        return variant

    def engine(self, result: RunResult) -> Engine:
        """The engine a result was measured on (rebuilt lazily when the result came from the cache or was closed).

        The session keeps the last OPEN_ENGINES engines built and closes older ones."""
        job = self._job_of(result)
        with self._state_lock:
            engine = self._engines.get(job.key)
        if engine is None or engine.closed:
            backend = self._backend(job.backend)
            engine = backend.build(self.variant_model(result), self._options(backend))
        self._keep_engine(job.key, engine)
        return engine

    def close(self) -> None:
        """Close every engine this session holds (they are rebuilt on demand)."""
        with self._state_lock:
            while self._engines:
                self._engines.popitem(last=False)[1].close()

    def __enter__(self) -> "Workbench":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _keep_engine(self, key: str, engine: Engine) -> None:
        with self._state_lock:
            self._engines[key] = engine
            self._engines.move_to_end(key)
            while len(self._engines) > OPEN_ENGINES:
                self._engines.popitem(last=False)[1].close()

    def predict(self, result: RunResult, arrays: dict[str, np.ndarray], batch: int | None = None) -> list[np.ndarray]:
        """Outputs of a result's engine on any data (name -> array, samples on axis 0), run in batches of `batch`
        (default: the result's headline batch): arrays with samples on axis 0, or for outputs without a sample axis
        a list of whole arrays, one per run (`_run_all`)."""
        return _run_all(self.engine(result), arrays, batch or result.headline_latency.batch, self._to_feeds,
                        self.model.output_arrays, self._whole_outputs())

    def optimized_model(self, result: RunResult) -> onnx.ModelProto | None:
        """The backend's optimised graph of a result's engine, when the backend can show it (else None)."""
        return self.engine(result).optimized_model()

    # ---- jobs: prepare, look up, execute ---------------------------------------------------------------
    def prepare_run(self, precision: str | PrecisionPlan = "fp32", **options) -> Job:
        """The Job that `run` with these same arguments would execute: keywords named like `PrecisionPlan` fields
        make the plan, the others go to `prepare`."""
        fields = {name: options.pop(name) for name in PLAN_FIELDS if name in options and name != "precision"}
        if isinstance(precision, PrecisionPlan):
            if any(value not in (None, (), []) for value in fields.values()):
                raise InputSpecError(f"run() got a PrecisionPlan and plan keywords ({', '.join(fields)}): put them "
                                     "in the plan (dataclasses.replace(plan, ...)).")
            plan = precision
        else:
            plan = PrecisionPlan(precision, **{name: value for name, value in fields.items() if value is not None})
        return self.prepare(plan, **options)

    def prepare(self, plan: PrecisionPlan, *, backend: str | None = None, batch: int = 8, batches=None,
                calibration=None, calibration_size: int = DEFAULT_SIZE, runs: int = DEFAULT_RUNS,
                profile: bool = True, drift: bool = True, dims: dict[str, int] | None = None) -> Job:
        """Validate one configuration (plan, engine, batch sizes, calibration set) and give it its cache key; no
        work is done. `is_cached(job)` says whether `execute(job)` answers at once."""
        # an explicitly given set is validated for every precision; the default one only when it is used
        needed = plan.needs_calibration or calibration is not None
        chosen = self.calibration_set(calibration, calibration_size) if needed else None
        cal = chosen if plan.needs_calibration else None
        if runs < 1:
            raise InputSpecError(f"runs={runs}: time at least one run.")
        sizes, notes = self._batch_sizes(batch, batches)
        dims = self._check_dims(dims or {})
        self._check_feed_memory(max(sizes), dims)
        backend_name = backend or self.backend_name
        backend_obj = self._backend(backend_name)
        refusal = backend_obj.refusal(plan)
        if refusal is not None:
            raise PrecisionError(f"{plan.label} on {backend_name}: {refusal}")
        key = self.cache.key(kind="run", model=self.model.content_hash, plan=plan.to_json(),
                             calibration=cal.content_hash if cal else None, backend=backend_name,
                             backend_version=backend_obj.version(), backend_revision=backend_obj.revision,
                             batches=sizes, runs=runs,
                             options=self._options(backend_obj).to_json(),
                             eval=self._eval_hash, profile=profile, drift=drift, dims=dims or None,
                             latency_stats=LATENCY_STATS, accuracy_stats=ACCURACY_STATS, tasks=self.tasks or None,
                             metric=_metric_identity(self.metric))
        job = Job(plan, cal, backend_name, sizes, runs, profile, drift, notes, key, dims)
        with self._state_lock:
            self._jobs[key] = job
        return job

    def is_cached(self, job: Job) -> bool:
        """Whether `execute(job)` is answered from the cache (no engine is built, nothing is measured)."""
        return self._cached(job) is not None

    def execute(self, job: Job, *, progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None) -> RunResult:
        """Measure `job`, or return it from the cache. `progress` is called with a `Progress` at the start of every
        step; `cancel` is checked between steps and inside long loops (calibration batches, the accuracy pass,
        timed runs): `Cancelled` is raised and nothing is cached. Safe to call for a cached job on one thread while
        another thread measures (see `workbench.scheduler`)."""
        result = self._cached(job)
        if result is None:
            result = self._measure(job, progress=progress, cancel=cancel)
            self.cache.put(job.key, result.to_json())
        with self._state_lock:
            if all(r.cache_key != job.key for r in self.results):
                self.results.append(result)
        return result

    def _cached(self, job: Job) -> RunResult | None:
        """The cached result of `job` when one passes the schema and describes this very configuration."""
        def decode(data: dict) -> RunResult:
            check_run_json(data)
            result = RunResult.from_json(data)
            if (result.cache_key, result.precision, result.backend, [s.batch for s in result.latency]) != \
                    (job.key, job.plan.precision, job.backend, job.batches):
                raise SchemaError(f"the entry under {job.key} describes another configuration ({result.label})")
            result.model_sha256 = self.model.content_hash  # the key holds it, also for entries from before
            return result
        return self.cache.get(job.key, decode=decode)

    # ---- internals ------------------------------------------------------------------------------
    def _measure(self, job: Job, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> RunResult:
        plan = job.plan
        backend = self._backend(job.backend)
        steps = ["precision", "build", "latency", "accuracy"] + ["profile"] * job.profile + \
            ["drift"] * (job.drift and plan.precision != "fp32")
        with tqdm(total=len(steps), desc=plan.label, unit="step", leave=False, disable=not self.progress) as bar:
            def step(name: str) -> None:
                check_cancel(cancel)
                bar.set_postfix_str(name)
                if progress is not None:
                    progress(Progress(job.label, name, steps.index(name), len(steps)))
                if self.on_step is not None:  # not bar.n: a disabled bar does not count
                    self.on_step(name, steps.index(name), len(steps))

            step("precision")
            variant = self._variant(job, cancel=cancel)
            with self._state_lock:
                self._variants[job.key] = variant
            bar.update()
            step("build")
            engine = backend.build(variant, self._options(backend))
            self._keep_engine(job.key, engine)
            bar.update()
            step("latency")
            latency = [measure_latency(engine, self._feeds(size, job.dims), batch=size, runs=job.runs, cancel=cancel)
                       for size in job.batches]
            for stats in latency:
                stats.dims = dict(job.dims)
            bar.update()
            step("accuracy")
            headline = job.batches[0]
            outputs = self._eval_outputs(backend, variant, engine, headline, cancel=cancel)
            if plan.precision == "fp32":
                with self._state_lock:
                    self._references.setdefault((job.backend, headline), outputs)
            reference = self._reference(job.backend, headline, cancel=cancel)
            accuracy = measure_accuracy(outputs, reference, self.eval.labels, task=self.task, tasks=self.tasks,
                                        metric=self.metric, output_names=[spec.name for spec in self.model.outputs],
                                        samples=self.eval.size, image_sizes=self._image_sizes())
            bar.update()
            graph, ratio, around = engine.layers(), None, None
            if job.profile:
                step("profile")
                timings, around = self._profile(engine, self._feeds(headline, job.dims), headline, cancel=cancel)
                ratio = _join_timings(graph, timings, around)
                bar.update()
            drift, drift_graph = [], None
            if job.drift and plan.precision != "fp32":
                step("drift")
                drift, drift_graph = self.drift(variant, backend=job.backend, cancel=cancel)
                bar.update()
        check_cancel(cancel)  # cancelled during the last step: nothing is cached
        step_notes = precision_notes(variant) if plan.precision != "fp32" else []
        notes = list(dict.fromkeys([*step_notes, *engine.notes, *job.notes, *self._notes(plan),
                                    *_layer_time_notes(ratio)]))
        versions = self._versions(backend)
        return RunResult(
            model=self.model.name, plan=plan,
            calibration=job.calibration.name if job.calibration else None,
            calibration_hash=job.calibration.content_hash if job.calibration else None,
            calibration_size=job.calibration.size if job.calibration else None,
            backend=job.backend, versions=versions,
            synthetic_data=self.synthetic,
            data_source={"eval": self.data_source["eval"],
                         "calibration": self._calibration_sources.get(job.calibration.name) if job.calibration
                         else None},
            latency=latency, accuracy=accuracy, engine=graph, layer_time_ratio=ratio, profile_end_to_end_ms=around,
            drift=drift, drift_graph=drift_graph, accelerated=runs_accelerated(backend, plan, graph),
            notes=notes, cache_key=job.key,
            precision_notes=precision_notes(variant), variant_sha256=variant.content_hash,
            model_sha256=self.model.content_hash,
            graph_precision=graph_precision(variant, plan.precision), machine=this_machine(versions))

    def _profile(self, engine: Engine, feeds: dict[str, np.ndarray], batch: int, *,
                 cancel: CancelToken | None = None) -> tuple[list[LayerTiming], float]:
        """Per-layer timings over PROFILE_RUNS runs, and the end-to-end median of as many plain runs, half timed just
        before and half just after them: the layer times are compared with an end-to-end time under the same load."""
        before = measure_latency(engine, feeds, batch=batch, warmup=1, runs=PROFILE_RUNS // 2, cancel=cancel)
        timings = engine.profile(feeds, runs=PROFILE_RUNS, progress=self.progress, cancel=cancel)
        after = measure_latency(engine, feeds, batch=batch, warmup=0, runs=PROFILE_RUNS // 2, cancel=cancel)
        return timings, float(np.median(before.times_ms + after.times_ms))

    def _variant(self, job: Job, *, cancel: CancelToken | None = None) -> Model:
        """Apply the plan; reduced-precision models are kept on disk too, so the fusion view rebuilds them fast."""
        if job.plan.precision == "fp32":
            return self.model
        name = f"{self.model.name} [{job.plan.label}]"
        stored = self.cache.get_bytes(job.key, "onnx", decode=lambda data: Model.from_proto(
            onnx.load_from_string(data), name=name, source=f"cache:{job.key}"))
        if stored is not None:
            return stored
        if job.plan.needs_calibration and job.calibration is None:
            raise CalibrationError(f"The calibration data of {name} is not in this session and its model is not in "
                                   "the cache: run that configuration with Workbench.run first.")
        from .precision import apply_plan

        variant = apply_plan(self.model, job.plan, job.calibration, progress=self.progress, cache_dir=self.cache,
                             cancel=cancel)
        self.cache.put_bytes(job.key, variant.serialized(), "onnx")
        return variant

    def _reference(self, backend_name: str, batch: int, *, cancel: CancelToken | None = None) -> list[np.ndarray]:
        """FP32 outputs on the eval data: computed once per backend and batch size, kept in memory and on disk."""
        with self._state_lock:
            known = self._references.get((backend_name, batch))
        if known is not None:
            return known
        backend = self._backend(backend_name)
        key = self.cache.key(kind="fp32-reference", model=self.model.content_hash, backend=backend_name,
                             backend_version=backend.version(), batch=batch,
                             options=self._options(backend).to_json(), eval=self._eval_hash,
                             layout=REFERENCE_LAYOUT)
        outputs = self.cache.get_bytes(key, "npz", decode=_load_arrays)
        if outputs is None:
            with backend.build(self.model, self._options(backend)) as engine:
                outputs = self._eval_outputs(backend, self.model, engine, batch, cancel=cancel)
            self.cache.put_bytes(key, _save_arrays(outputs), "npz")
        with self._state_lock:
            return self._references.setdefault((backend_name, batch), outputs)

    def _eval_outputs(self, backend: Backend, model: Model, engine: Engine, batch: int, *,
                      cancel: CancelToken | None = None) -> list:
        """Outputs of `engine` (built from `model`) on the eval data in batches of `batch` (`_run_all`): arrays with
        samples on axis 0, or, for outputs without a sample axis (boxes after NMS), one whole array per sample (the
        samples are then run one by one when the model takes any batch size)."""
        outputs = self._batched_outputs(backend, model, engine, batch, cancel=cancel)
        if batch > 1 and self._fixed_batch() is None and any(isinstance(o, list) for o in outputs):
            outputs = self._batched_outputs(backend, model, engine, 1, cancel=cancel)
        return outputs

    def _batched_outputs(self, backend: Backend, model: Model, engine: Engine, batch: int, *,
                         cancel: CancelToken | None = None) -> list:
        """`_run_all` on the eval data. When the engine chose its own thread count and its outputs do not depend on
        it, one single-thread engine per core runs a contiguous share of the same batches side by side (small models
        barely use intra-op threads): same outputs, faster."""
        options = self._options(backend)
        workers = min(os.cpu_count() or 1, math.ceil(self.eval.size / batch))
        whole = self._whole_outputs()
        if workers < 2 or not backend.thread_independent_outputs or getattr(options, "threads", 1) is not None:
            return _run_all(engine, self.eval.arrays, batch, self._to_feeds, self.model.output_arrays, whole,
                            cancel=cancel)
        shares = np.array_split(np.arange(math.ceil(self.eval.size / batch)) * batch, workers)
        bounds = [(int(share[0]), int(min(share[-1] + batch, self.eval.size))) for share in shares]
        with contextlib.ExitStack() as stack:
            engines = [stack.enter_context(backend.build(model, replace(options, threads=1))) for _ in bounds]

            def run(index: int) -> list[np.ndarray]:
                start, end = bounds[index]
                return _run_all(engines[index], {k: v[start:end] for k, v in self.eval.arrays.items()}, batch,
                                self._to_feeds, self.model.output_arrays, whole, cancel=cancel)

            with ThreadPoolExecutor(workers) as pool:  # engines release the GIL while they run
                parts = list(pool.map(run, range(workers)))
        return [_joined(chunks) for chunks in zip(*parts)]

    def _whole_outputs(self) -> set[int]:
        """Outputs that have no sample axis whatever their size: scalars, and outputs of a fixed-batch model whose
        first axis is dynamic (its size is not the batch: e.g. the boxes left after NMS)."""
        fixed = self._fixed_batch() is not None
        return {i for i, spec in enumerate(self.model.outputs)
                if spec.kind == "tensor" and (not spec.shape or (fixed and not isinstance(spec.shape[0], int)))}

    def _image_sizes(self) -> list[tuple[int, int]]:
        """(height, width) of the image inputs as fed: outputs of that size are segmentation maps."""
        sizes = []
        for spec in self.model.inputs:
            axes = image_axes(spec)
            array = self.eval.arrays.get(spec.name)
            if axes is not None and array is not None and array.ndim == 4:
                sizes.append((int(array.shape[axes[0]]), int(array.shape[axes[1]])))
        return sizes

    def calibration_set(self, calibration: str | CalibrationSet | None = None,
                        size: int = DEFAULT_SIZE) -> CalibrationSet:
        """The first `size` samples of a calibration set of this session (by name; None: the first set), validated
        against the model's inputs; a CalibrationSet given is added first."""
        if size < 1:
            raise CalibrationError(f"calibration_size={size}: use at least one calibration sample.")
        if isinstance(calibration, CalibrationSet):
            chosen = self.add_calibration_set(calibration)
        elif calibration is None:
            chosen = next(iter(self.calibration_sets.values()))
        elif calibration in self.calibration_sets:
            chosen = self.calibration_sets[calibration]
        else:
            raise CalibrationError(
                f"No calibration set {calibration!r} in this session (it has {', '.join(self.calibration_sets)}). "
                "Pick one of those or add yours with Workbench.add_calibration_set(CalibrationSet.from_arrays(...)).")
        # Subsets are memoised: hashing and validating a large image set on every (cached) run would be slow.
        with self._state_lock:
            memo = self._subsets.get((chosen.name, size))
        if memo is not None and memo[0] is chosen:
            return memo[1]
        subset = chosen
        if chosen.size > size:
            subset = CalibrationSet(name=chosen.name, arrays={k: v[:size] for k, v in chosen.arrays.items()},
                                    description=chosen.description, synthetic=chosen.synthetic)
        subset.validate(self.model.inputs)
        with self._state_lock:
            self._subsets[(chosen.name, size)] = (chosen, subset)
        return subset

    def _batch_sizes(self, batch: int, batches) -> tuple[list[int], list[str]]:
        sizes = list(dict.fromkeys([batch, *(batches or ())]))
        if any(not isinstance(s, (int, np.integer)) or s < 1 for s in sizes):
            raise InputSpecError(f"Batch sizes {sizes} must be positive integers.")
        size = self._fixed_batch()
        if size is not None and sizes != [size]:
            return [size], [f"the model has a fixed batch size of {size}: measured at batch {size} instead of "
                            f"{', '.join(map(str, sizes))} (export it with a dynamic batch axis to try others)"]
        return [int(s) for s in sizes], []

    def _feeds(self, batch: int, dims: dict[str, int] | None = None) -> dict[str, np.ndarray]:
        """The first `batch` eval samples (repeated when the eval data is smaller), with dynamic axes named in
        `dims` repeated or cut to that size."""
        feeds = self._to_feeds({name: np.resize(arr, (batch, *arr.shape[1:])) for name, arr in self.eval.arrays.items()})
        axes = batch_axes(self.model.inputs)
        for spec in self.model.inputs:
            for axis, dim in enumerate(spec.shape):
                if axis != axes[spec.name] and isinstance(dim, str) and dim in (dims or {}):
                    array = feeds[spec.name]
                    feeds[spec.name] = np.take(array, np.arange(dims[dim]) % array.shape[axis], axis=axis)
        return feeds

    def _check_dims(self, dims: dict[str, int]) -> dict[str, int]:
        """Dynamic-axis sizes must name symbolic axes of the model and stay inside the declared shape_range."""
        axes = batch_axes(self.model.inputs)
        symbolic = {d for spec in self.model.inputs for axis, d in enumerate(spec.shape)
                    if isinstance(d, str) and axis != axes[spec.name]}
        for name, size in dims.items():
            if name not in symbolic:
                raise InputSpecError(f"dims names axis {name!r}, but the model's dynamic axes (besides batch) are "
                                     f"{sorted(symbolic) or 'none'}: use one of those names.")
            low, _, high = self.shape_range.get(name, (1, None, size))
            if not isinstance(size, (int, np.integer)) or not low <= size <= high:
                raise InputSpecError(f"dims[{name!r}]={size} is outside the shape range "
                                     f"{self.shape_range.get(name, '(1, any)')} of this session: pick a size inside "
                                     "it or widen shape_range.")
        return {name: int(size) for name, size in sorted(dims.items())}

    def _check_feed_memory(self, batch: int, dims: dict[str, int]) -> None:
        """Refuse a batch (and dynamic-axis sizes) whose input arrays alone would not fit in memory."""
        total = 0
        for spec in self.model.inputs:
            sample = self.eval.arrays[spec.name].shape[1:]
            shape = [dims.get(d, n) if isinstance(d, str) else n for d, n in zip(spec.shape[1:], sample)]
            total += array_bytes([batch, *shape], np.dtype(spec.dtype).itemsize)
        check_memory(total, f"batch {batch}" + (f" with dims {dims}" if dims else ""),
                     "use a smaller batch or smaller dims (the engine needs more again for activations)")

    def _notes(self, plan: PrecisionPlan) -> list[str]:
        notes = []
        if plan.qdq_style == "tensorrt":
            notes.append("int8 tensorrt-style Q/DQ: CPU speed not representative of TensorRT")
        if self.synthetic:
            notes.append("synthetic inputs from the model's input specs: accuracy is agreement with FP32 only")
            notes += [choice for plan in self.input_plans for choice in plan.choices]
        return notes

    def _versions(self, backend: Backend) -> dict[str, str]:
        import onnxruntime

        return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
                "workbench": __version__, backend.name: backend.version()}

    def _backend(self, name: str) -> Backend:
        with self._state_lock:
            if name not in self._backends:
                self._backends[name] = get_backend(name)
            return self._backends[name]

    def _options(self, backend: Backend) -> EngineOptions:
        """`backend`'s options: the session-wide settings that were given, then `engine_options[backend.name]`.

        Session-wide settings go to every engine that has them; the session's own engine must have them all."""
        settings = {name: value for name, value in (("threads", self.threads),
                                                    ("optimization_level", self.optimization_level))
                    if value is not None and (backend.name == self.backend_name
                                              or name in option_names(backend.name))}
        if backend.capabilities.shape_ranges:  # e.g. TensorRT's optimisation profiles
            settings["shape_range"] = self._profile_ranges()
        return engine_options(backend, **{**settings, **self.engine_options.get(backend.name, {})})

    def _profile_ranges(self) -> tuple:
        """((input, min_shape, opt_shape, max_shape), ...) for the inputs with an axis named in shape_range."""
        return tuple((spec.name, *self._shape_range_of(spec)) for spec in self.model.inputs
                     if any(isinstance(d, str) and d in self.shape_range for d in spec.shape))

    def _shape_range_of(self, spec) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) shapes of one input from shape_range; an unnamed batch axis gets 1 / 8 / 32."""
        def dim(axis: int, d, i: int) -> int:
            if isinstance(d, int):
                return d
            if isinstance(d, str) and d in self.shape_range:
                return self.shape_range[d][i]
            return (1, 8, 32)[i] if axis == 0 else 1
        return tuple(tuple(dim(axis, d, i) for axis, d in enumerate(spec.shape)) for i in range(3))

    def _job_of(self, result: RunResult) -> Job:
        """The configuration behind a result; for a result from elsewhere, rebuilt from its fields."""
        with self._state_lock:
            known = self._jobs.get(result.cache_key)
        if known is not None:
            return known
        if not result.cache_key:
            raise InputSpecError(f"{result.label} has no cache_key: pass a result returned by Workbench.run.")
        plan = result.plan
        known = self.calibration_sets.get(result.calibration)
        calibration = known if known is not None and known.content_hash == result.calibration_hash else None
        job = Job(plan, calibration, result.backend, [result.headline_latency.batch], result.headline_latency.runs,
                   bool(result.engine), bool(result.drift), [], result.cache_key)
        with self._state_lock:
            return self._jobs.setdefault(job.key, job)

    def _fixed_batch(self) -> int | None:
        axes = batch_axes(self.model.inputs)
        fixed = [spec.shape[0] for spec in self.model.inputs
                 if axes[spec.name] == 0 and isinstance(spec.shape[0], int)]
        return min(fixed) if fixed else None


def class_count(model: Model) -> int | None:
    """How many classes a classifier's labels index: the last axis of its one float output, when fixed and above 1;
    None when that is not clear (then labels are not bounded)."""
    floats = [spec for spec in model.outputs if spec.dtype.startswith("float")]
    if len(floats) != 1 or not floats[0].shape:
        return None
    last = floats[0].shape[-1]
    return last if isinstance(last, int) and last > 1 else None


def _check_no_empty_inputs(model: Model) -> None:
    if model.inputs and all(len(spec.shape) == 0 for spec in model.inputs):
        raise InputSpecError(f"Every input of {model.name!r} is a scalar (rank 0), so there is no sample axis to "
                             "batch, time or measure accuracy over: export the model with a batch axis (e.g. "
                             "shape ['batch'] instead of []).")
    empty = [spec for spec in model.inputs if 0 in spec.shape]
    if empty:
        raise InputSpecError(f"Input {empty[0].name!r} of {model.name!r} declares shape {list(empty[0].shape)} with a "
                             "zero-size dim, so every sample is empty and there is nothing to measure: export the "
                             "model with that dim set to its real size (or symbolic).")


def runs_accelerated(backend: Backend, plan: PrecisionPlan, graph: EngineGraph) -> bool:
    """True only where the engine has fast kernels for the plan's precision and Q/DQ style on this machine and its
    built graph really runs compute layers in reduced precision (not everything left in FP32)."""
    if plan.precision == "fp32":
        return True
    if not backend.accelerated(plan.precision, plan.qdq_style):
        return False
    return any(layer.precision in REDUCED_PRECISIONS for layer in graph.layers if not layer.inserted)


def _run_all(engine: Engine, arrays: dict[str, np.ndarray], batch: int,
             to_feeds: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
             to_arrays: Callable[[list], list] | None = None, whole: set[int] = frozenset(), *,
             cancel: CancelToken | None = None) -> list:
    """Run every sample (samples on axis 0) through `engine` in batches of `batch`, each made into feeds by
    `to_feeds` and its outputs into numpy by `to_arrays` (`Model.output_arrays`: ZipMap maps as probability
    matrices). An output whose first axis is the batch in every run is concatenated along axis 0; any other
    (and those numbered in `whole`) is a list with one whole array per run, never cut. `cancel` is checked
    before every batch."""
    total = len(next(iter(arrays.values())))
    chunks: list[list] = []
    counts: list[int] = []
    for start in range(0, total, batch):
        check_cancel(cancel)
        part = {k: v[start:start + batch] for k, v in arrays.items()}
        count = len(next(iter(part.values())))
        if count < batch:  # pad the last batch (fixed-batch engines need full batches), then drop the padding
            part = {k: np.resize(v, (batch, *v.shape[1:])) for k, v in part.items()}
        outputs = engine.run(to_feeds(part))
        chunks.append(to_arrays(outputs) if to_arrays is not None else outputs)
        counts.append(count)
    joined = []
    for index, runs in enumerate(zip(*chunks)):
        batched = index not in whole and all(isinstance(out, np.ndarray) and out.ndim and len(out) == batch
                                             for out in runs)
        joined.append(np.concatenate([out[:count] for out, count in zip(runs, counts)]) if batched else list(runs))
    return joined


def _joined(parts: Sequence) -> np.ndarray | list:
    """Outputs of consecutive shares of the samples (`_run_all`) as one: arrays concatenated, else one list."""
    if all(isinstance(part, np.ndarray) for part in parts):
        return np.concatenate(parts)
    return [item for part in parts for item in (list(part) if isinstance(part, (list, np.ndarray)) else [part])]


def _join_timings(graph: EngineGraph, timings: list[LayerTiming], end_to_end_ms: float) -> float | None:
    """Put each profiled layer time on its layer; returns summed layer time / end-to-end time."""
    by_name = {t.name: t.latency_ms for t in timings}
    for layer in graph.layers:
        layer.latency_ms = by_name.get(layer.name)
    total = sum(layer.latency_ms for layer in graph.layers if layer.latency_ms is not None)
    matched = any(layer.latency_ms is not None for layer in graph.layers)
    return total / end_to_end_ms if matched and end_to_end_ms > 0 and math.isfinite(total) else None


def _layer_time_notes(ratio: float | None) -> list[str]:
    low, high = LAYER_TIME_BAND
    if ratio is None or low <= ratio <= high:
        return []
    return [f"per-layer times sum to {ratio:.0%} of the end-to-end median timed around the profile (outside "
            f"{low:.0%}-{high:.0%}): the per-layer bars do not add up to the latency (a busy machine while "
            "profiling, or time the engine spends outside its layers)"]


def _labels_hash(labels: np.ndarray | None) -> str:
    return "" if labels is None else CalibrationSet("labels", {"labels": np.asarray(labels)}).content_hash


def _metric_identity(metric: Metric | None) -> str | None:
    """A metric callable in a cache key: its name and a digest of its code (a changed metric is measured again)."""
    if metric is None:
        return None
    code = getattr(metric, "__code__", None) or getattr(getattr(metric, "__call__", None), "__code__", None)
    digest = hashlib.sha256(marshal.dumps(code) if code is not None else repr(metric).encode()).hexdigest()[:16]
    return f"{metric_name(metric)}#{digest}"


def _save_arrays(outputs: list) -> bytes:
    """Outputs as an .npz: arrays as arr_I, per-sample lists as list_I_J (read back by `_load_arrays`)."""
    named = {}
    for i, output in enumerate(outputs):
        if isinstance(output, list):
            named.update({f"list_{i}_{j}": np.asarray(part) for j, part in enumerate(output)})
            named.setdefault(f"list_{i}_count", np.array(len(output)))
        else:
            named[f"arr_{i}"] = output
    buffer = io.BytesIO()
    np.savez(buffer, **named)
    return buffer.getvalue()


def _load_arrays(data: bytes) -> list:
    """Outputs saved by `_save_arrays` (no pickles: allow_pickle stays False)."""
    with np.load(io.BytesIO(data)) as archive:
        files = set(archive.files)
        outputs = []
        for i in range(len(files)):
            if f"arr_{i}" in files:
                outputs.append(archive[f"arr_{i}"])
            elif f"list_{i}_count" in files:
                outputs.append([archive[f"list_{i}_{j}"] for j in range(int(archive[f"list_{i}_count"]))])
            else:
                break
        return outputs

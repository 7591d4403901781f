"""The session API: one model, one backend, many precision configurations, each measured once and cached."""
from __future__ import annotations

import contextlib
import io
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
from tqdm.auto import tqdm

from ._version import __version__
from .backends import DEFAULT_BACKEND, engine_options, get_backend, option_names
from .cache import ResultCache
from .calibration import DEFAULT_SIZE, CalibrationSet
from .errors import CalibrationError, InputSpecError
from .jobs import CancelToken, Progress, ProgressCallback
from .jobs import check as check_cancel
from .engine import REDUCED_PRECISIONS, Backend, Engine, EngineGraph, EngineOptions, LayerTiming
from .limits import array_bytes, capped_threads, check_memory
from .machine import this_machine
from .measure import interleaved_latency, measure_accuracy, measure_drift, measure_latency
from .models.inputs import InputPlan, Override, batch_axes, feeder, plan_inputs
from .models.spec import Model
from .precision.apply import graph_precision, precision_notes
from .precision.plan import PrecisionPlan
from .results import LAYER_TIME_BAND, RetimedLatency, RunResult
from .samples import load_model
from .samples.base import EvalData, Sample
from .schema import SchemaError, check_run_json
from .userdata import ImagePreprocessing, load_data, split

SYNTHETIC_SIZE = 64  # samples of synthetic calibration / evaluation data for models without data
DRIFT_SAMPLES = 4  # samples run through the tensor-exposing graphs (every intermediate tensor is kept in memory)
PROFILE_RUNS = 20
LATENCY_STATS = 2  # in the cache key: results cached before run times and intervals were kept are re-measured
DEFAULT_RUNS = 30  # timed runs per configuration
OPEN_ENGINES = 3  # engines kept built per session (least recently used closed first): each holds its weights


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
    """

    def __init__(self, model, *, backend: str = DEFAULT_BACKEND, cache_dir=None, shared_cache=None,
                 threads: int | None = None, optimization_level: str | None = None,
                 shape_range: dict[str, tuple[int, int, int]] | None = None,
                 engine_options: dict[str, dict] | None = None, progress: bool = True, eval_limit: int | None = None,
                 on_step: Callable[[str, int, int], None] | None = None,
                 inputs: dict[str, Override] | None = None, data=None, calibration_data=None, eval_data=None,
                 image_preprocessing: ImagePreprocessing | None = None) -> None:
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
            self.task = "classification"
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
        if data is None and calibration_data is None and eval_data is None:
            return
        inputs = self.model.inputs
        calibration = evaluation = None
        if data is not None:
            calibration, evaluation = split(load_data(data, inputs, preprocessing=preprocessing))
        if calibration_data is not None:
            calibration = load_data(calibration_data, inputs, preprocessing=preprocessing)
        if eval_data is not None:
            evaluation = load_data(eval_data, inputs, preprocessing=preprocessing)
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

    def add_calibration_set(self, calibration: CalibrationSet) -> CalibrationSet:
        """Validate `calibration` against the model inputs and make it selectable by name."""
        calibration.validate(self.model.inputs)
        self.calibration_sets[calibration.name] = calibration
        return calibration

    # ---- running ------------------------------------------------------------------------------
    def run(self, precision: str | PrecisionPlan = "fp32", *, calibration: str | CalibrationSet | None = None,
            calibration_size: int = DEFAULT_SIZE, method: str | None = None, qdq_style: str | None = None,
            keep_fp32=(), batch: int = 8, batches=None, runs: int = DEFAULT_RUNS, profile: bool = True,
            drift: bool = True, backend: str | None = None, dims: dict[str, int] | None = None,
            weight_rounding: str | None = None) -> RunResult:
        """Measure one configuration (or return it from the cache): latency per batch size, accuracy, engine layers
        with per-layer latency and, for reduced precision, drift from FP32.

        `precision` is a precision name with the plan's fields as keywords (`method`, `qdq_style`, `keep_fp32`,
        `weight_rounding`), or a whole `PrecisionPlan` (then those keywords stay unset).

        `calibration` (int8): a set name or a CalibrationSet (default: the first set), of which the first
        `calibration_size` samples are used. `batches`: extra batch sizes to time besides `batch`. `dims`: sizes of
        dynamic axes other than batch for the latency and profile runs, by symbolic name (e.g. {"sequence": 64});
        the eval data is repeated or cut along those axes. Accuracy is always measured on the eval data as it is.
        `weight_rounding` (int8): "nearest" (default, ONNX Runtime's), "gptq" (error-compensating rounding of
        Conv weights from the calibration set, workbench.precision.gptq) or "gptq+bc" (GPTQ, then each Conv/Gemm
        bias corrected for its output's mean error, workbench.precision.bias_correction); same scales and kernels.
        """
        job = self.prepare_run(precision, calibration=calibration, calibration_size=calibration_size, method=method,
                               qdq_style=qdq_style, keep_fp32=keep_fp32, batch=batch, batches=batches, runs=runs,
                               profile=profile, drift=drift, backend=backend, dims=dims,
                               weight_rounding=weight_rounding)
        return self.execute(job)

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

    def tune(self, precision: str = "int8", *, max_drop: float = 1.0, metric: str = "agreement",
             budget: int = 8, **options):
        """The fastest `precision` configuration (mixed with FP32 where needed) whose `metric` (top1 | agreement |
        cosine) drops at most `max_drop` below FP32, measuring at most `budget` configurations; returns a
        `workbench.tune.TuneResult` with every configuration measured. See `workbench.tune.tune` for options."""
        from .tune import tune

        return tune(self, precision, max_drop=max_drop, metric=metric, budget=budget, **options)

    def sensitivity(self, result: RunResult, *, metric: str = "agreement", confirm: int = 3, **run_options):
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

    def drift(self, variant: Model, *, backend: str | None = None, cancel: CancelToken | None = None):
        """Per-tensor drift of any variant of this session's model from FP32 (`measure.measure_drift`) on the
        first DRIFT_SAMPLES eval samples, on `backend` (default: the session's): (points, note)."""
        engine_backend = self._backend(backend or self.backend_name)
        feeds = self._feeds(self._fixed_batch() or DRIFT_SAMPLES)
        return measure_drift(self.model, variant, feeds, engine_backend, self._options(engine_backend),
                             cancel=cancel)

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
        (default: the result's headline batch)."""
        return _run_all(self.engine(result), arrays, batch or result.headline_latency.batch, self._to_feeds)

    def optimized_model(self, result: RunResult) -> onnx.ModelProto | None:
        """The backend's optimised graph of a result's engine, when the backend can show it (else None)."""
        return self.engine(result).optimized_model()

    # ---- jobs: prepare, look up, execute ---------------------------------------------------------------
    def prepare_run(self, precision: str | PrecisionPlan = "fp32", *, method=None, qdq_style=None, keep_fp32=(),
                    weight_rounding: str | None = None, **job_options) -> Job:
        """The Job that `run` with these same arguments would execute."""
        if isinstance(precision, PrecisionPlan):
            if method or qdq_style or keep_fp32 or weight_rounding:
                raise InputSpecError("run() got a PrecisionPlan and plan keywords (method, qdq_style, keep_fp32, "
                                     "weight_rounding): put them in the plan (dataclasses.replace(plan, ...)).")
            plan = precision
        else:
            plan = PrecisionPlan(precision, method=method, qdq_style=qdq_style, keep_fp32=tuple(keep_fp32),
                                 weight_rounding=weight_rounding)
        return self.prepare(plan, **job_options)

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
        key = self.cache.key(kind="run", model=self.model.content_hash, plan=plan.to_json(),
                             calibration=cal.content_hash if cal else None, backend=backend_name,
                             backend_version=backend_obj.version(), backend_revision=backend_obj.revision,
                             batches=sizes, runs=runs,
                             options=self._options(backend_obj).to_json(),
                             eval=self._eval_hash, profile=profile, drift=drift, dims=dims or None,
                             latency_stats=LATENCY_STATS)
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
            accuracy = measure_accuracy(outputs, reference, self.eval.labels, task=self.task,
                                        output_names=[spec.name for spec in self.model.outputs])
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
            model=self.model.name, precision=plan.precision, method=plan.method, qdq_style=plan.qdq_style,
            weight_rounding=plan.weight_rounding,
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
            keep_fp32=list(plan.keep_fp32), notes=notes, cache_key=job.key,
            precision_notes=precision_notes(variant), variant_sha256=variant.content_hash,
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
                             options=self._options(backend).to_json(), eval=self._eval_hash)
        outputs = self.cache.get_bytes(key, "npz", decode=_load_arrays)
        if outputs is None:
            with backend.build(self.model, self._options(backend)) as engine:
                outputs = self._eval_outputs(backend, self.model, engine, batch, cancel=cancel)
            buffer = io.BytesIO()
            np.savez(buffer, *outputs)
            self.cache.put_bytes(key, buffer.getvalue(), "npz")
        with self._state_lock:
            return self._references.setdefault((backend_name, batch), outputs)

    def _eval_outputs(self, backend: Backend, model: Model, engine: Engine, batch: int, *,
                      cancel: CancelToken | None = None) -> list[np.ndarray]:
        """Outputs of `engine` (built from `model`) on the eval data in batches of `batch`. When the engine chose its
        own thread count and its outputs do not depend on it, one single-thread engine per core runs a contiguous
        share of the same batches side by side (small models barely use intra-op threads): same outputs, faster."""
        options = self._options(backend)
        workers = min(os.cpu_count() or 1, math.ceil(self.eval.size / batch))
        if workers < 2 or not backend.thread_independent_outputs or getattr(options, "threads", 1) is not None:
            return _run_all(engine, self.eval.arrays, batch, self._to_feeds, cancel=cancel)
        shares = np.array_split(np.arange(math.ceil(self.eval.size / batch)) * batch, workers)
        bounds = [(int(share[0]), int(min(share[-1] + batch, self.eval.size))) for share in shares]
        with contextlib.ExitStack() as stack:
            engines = [stack.enter_context(backend.build(model, replace(options, threads=1))) for _ in bounds]

            def run(index: int) -> list[np.ndarray]:
                start, end = bounds[index]
                return _run_all(engines[index], {k: v[start:end] for k, v in self.eval.arrays.items()}, batch,
                                self._to_feeds, cancel=cancel)

            with ThreadPoolExecutor(workers) as pool:  # engines release the GIL while they run
                parts = list(pool.map(run, range(workers)))
        return [np.concatenate(chunks) for chunks in zip(*parts)]

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
        if backend.name == "tensorrt":  # optimisation profiles come from the session's shape_range
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
        plan = PrecisionPlan(result.precision, method=result.method, qdq_style=result.qdq_style,
                             keep_fp32=tuple(result.keep_fp32), weight_rounding=result.weight_rounding)
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


def _check_no_empty_inputs(model: Model) -> None:
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
             to_feeds: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], *,
             cancel: CancelToken | None = None) -> list[np.ndarray]:
    """Run every sample (samples on axis 0) through `engine` in batches of `batch`, each made into feeds by
    `to_feeds`; outputs concatenated along axis 0. `cancel` is checked before every batch."""
    total = len(next(iter(arrays.values())))
    chunks: list[list[np.ndarray]] = []
    for start in range(0, total, batch):
        check_cancel(cancel)
        part = {k: v[start:start + batch] for k, v in arrays.items()}
        count = len(next(iter(part.values())))
        if count < batch:  # pad the last batch (fixed-batch engines need full batches), then drop the padding
            part = {k: np.resize(v, (batch, *v.shape[1:])) for k, v in part.items()}
        chunks.append([out[:count] for out in engine.run(to_feeds(part))])
    return [np.concatenate(parts) for parts in zip(*chunks)]


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


def _load_arrays(data: bytes) -> list[np.ndarray]:
    """Arrays saved with np.savez (no pickles: allow_pickle stays False)."""
    with np.load(io.BytesIO(data)) as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]

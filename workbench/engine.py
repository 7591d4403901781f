"""What every engine shares: the layer graph with ONNX provenance, per-layer timings, and the base engine.

Modelled on Polygraphy's runners: `Engine.run` checks the feeds against the model's input specs, then calls the
engine's own `_run`; `profile` does the same before `_profile`; `close()` releases what the engine holds (also on
leaving a `with` block). Results, views and the TensorRT plan reader import this module, never `backends`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from .errors import BackendError, InputSpecError
from .jobs import CancelToken
from .models.spec import Model, TensorSpec

REDUCED_PRECISIONS = ("fp16", "bf16", "int8")


@dataclass
class EngineLayer:
    """One layer of a built engine, in execution order, with the original ONNX nodes it covers."""

    name: str
    type: str
    precision: str  # "fp32", "fp16", "bf16", "int8", "mixed" or "unknown"
    onnx_nodes: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    input_shapes: list[list] = field(default_factory=list)
    output_shapes: list[list] = field(default_factory=list)
    inserted: bool = False  # reorder / cast / Q-DQ glue / reformat that the engine added itself
    kernel: str | None = None  # backend's kernel or implementation name, when known
    latency_ms: float | None = None  # time per inference, joined from profiling

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "EngineLayer":
        return cls(**data)


@dataclass
class EngineGraph:
    """Layers of an engine plus the original ONNX node names they were built from."""

    backend: str
    layers: list[EngineLayer]
    source_nodes: list[str]  # every node name of the ONNX graph the engine was built from
    measured_graph: str = "engine"  # which graph the numbers come from (e.g. "optimised, profiling session")
    device: str = "cpu"  # where it ran: its Backend's `capabilities.device`

    def unmapped_nodes(self) -> list[str]:
        """Original nodes that no layer claims (should be empty)."""
        covered = {n for layer in self.layers for n in layer.onnx_nodes}
        return [n for n in self.source_nodes if n not in covered]

    def layer_of(self, onnx_node: str) -> EngineLayer | None:
        for layer in self.layers:
            if onnx_node in layer.onnx_nodes:
                return layer
        return None

    def to_json(self) -> dict:
        return {
            "backend": self.backend,
            "measured_graph": self.measured_graph,
            "device": self.device,
            "source_nodes": list(self.source_nodes),
            "layers": [layer.to_json() for layer in self.layers],
        }

    @classmethod
    def from_json(cls, data: dict) -> "EngineGraph":
        return cls(
            backend=data["backend"],
            layers=[EngineLayer.from_json(d) for d in data["layers"]],
            source_nodes=list(data["source_nodes"]),
            measured_graph=data.get("measured_graph", "engine"),
            device=data.get("device", "cpu"),  # engines from before it ran on the CPU (TensorRT's revision 1 says so)
        )


@dataclass
class LayerTiming:
    """Time per inference of one engine layer (median over runs where the profiler gives runs), from the backend's
    own profiler."""

    name: str
    latency_ms: float
    count: int  # how many timed inferences it summarises


class Engine(ABC):
    """A built, runnable engine. Subclasses implement `_run`, `_profile`, `layers` and (if they hold resources)
    `_close`; the public methods check feeds and state first."""

    backend: str = "engine"

    def __init__(self, input_specs: list[TensorSpec], notes: list[str] | None = None) -> None:
        self.input_specs = list(input_specs)
        self.notes: list[str] = list(notes or [])  # honest caveats, e.g. "FP16 runs in FP32 here: not accelerated"
        self.closed = False

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """Raise InputSpecError unless `feeds` has exactly the model's inputs with matching dtype and shape."""
        check_feeds(feeds, self.input_specs)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch; returns outputs in the model's output order."""
        self._check_open()
        self.check_feeds(feeds)
        return self._run(feeds)

    def profile(self, feeds: dict[str, np.ndarray], *, runs: int = 20, warmup: int = 3,
                progress: bool = False, cancel: CancelToken | None = None) -> list[LayerTiming]:
        """Per-layer time per inference (median over `runs` timed runs after `warmup` untimed ones); the names
        are those of `layers()`. `cancel` is checked between runs (`Cancelled` is raised)."""
        self._check_open()
        self.check_feeds(feeds)
        if runs < 1 or warmup < 0:
            raise BackendError(f"profile needs runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}.")
        return self._profile(feeds, runs=runs, warmup=warmup, progress=progress, cancel=cancel)

    @abstractmethod
    def layers(self) -> EngineGraph:
        """The engine's layers with ONNX provenance (no timings)."""

    def optimized_model(self) -> onnx.ModelProto | None:
        """The engine's own optimised ONNX graph, where it has one (ONNX Runtime); else None."""
        return None

    def close(self) -> None:
        """Release what the engine holds (sessions, compiled models, device memory). Safe to call twice."""
        if not self.closed:
            self.closed = True
            self._close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @abstractmethod
    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...

    @abstractmethod
    def _profile(self, feeds: dict[str, np.ndarray], *, runs: int, warmup: int,
                 progress: bool, cancel: CancelToken | None = None) -> list[LayerTiming]: ...

    def _close(self) -> None:
        """Release resources; engines holding nothing beyond Python objects need not override it."""

    def _check_open(self) -> None:
        if self.closed:
            raise BackendError(f"This {self.backend} engine was closed: build it again (Workbench.engine(result) "
                               "rebuilds it on demand).")


@dataclass(frozen=True)
class Capabilities:
    """What an engine is and needs, declared on its Backend class, so callers ask it instead of testing its name."""

    device: str = "cpu"  # "cpu" or "gpu": where it runs (lint's alignment rules, Triton's instance kind)
    shape_ranges: bool = False  # builds for (min, opt, max) input shapes: gets the session's shape_range
    triton_platform: str = "onnxruntime_onnx"  # the Triton platform a bundle of its results is served by
    triton_serves_measured: bool = True  # that platform runs this very engine (else the bundle says so)
    serialized_engine: bool = False  # a bundle ships its serialized engine (export_bundle's `plan`)
    package: str | None = None  # import name of its library when that is optional (None: always installed)


@dataclass(frozen=True)
class EngineOptions:
    """Base of each engine's own build options (a frozen dataclass per engine)."""

    def to_json(self) -> dict:
        return asdict(self)


class Backend(ABC):
    """Builds engines from precision-baked models. `options_type` is the engine's own options dataclass."""

    name: str = "backend"
    options_type: type[EngineOptions] = EngineOptions
    # Its options have `threads` and an engine's outputs do not depend on it: whole-data passes (accuracy) may run
    # one single-thread engine per core side by side (more throughput than one engine's intra-op threads).
    thread_independent_outputs: bool = False
    # bumped when the workbench changes how it builds engines of the same library version (part of every cache key)
    revision: int = 0
    capabilities: Capabilities = Capabilities()

    def refusal(self, plan) -> str | None:
        """Why this engine cannot build precision plans like `plan` (a `PrecisionPlan`), or None when it can;
        `Workbench.prepare` asks before any work starts."""
        return None

    def option_choices(self) -> dict[str, tuple]:
        """The values some of its options take on this machine (e.g. ONNX Runtime's execution providers)."""
        return {}

    @abstractmethod
    def version(self) -> str:
        """Engine library version (part of every cache key)."""

    @abstractmethod
    def accelerated(self, precision: str, qdq_style: str | None = None) -> bool:
        """Does this engine run `precision` (with Q/DQ placed in `qdq_style`) faster than FP32 on this machine?"""

    @abstractmethod
    def build(self, model: Model, options: EngineOptions | None = None) -> Engine:
        """Build an engine; raise BackendError with a readable message on failure."""

    def graph_of(self, model: Model | onnx.ModelProto) -> onnx.ModelProto:
        """The ONNX graph to build from a workbench Model (a bare ModelProto is accepted too)."""
        proto = model.proto if isinstance(model, Model) else model
        if not isinstance(proto, onnx.ModelProto):
            raise BackendError(f"{type(self).__name__}.build needs a workbench Model, got {type(model).__name__}: "
                               "load it with workbench.load_model first.")
        return proto



def check_feeds(feeds: dict[str, np.ndarray], input_specs: list[TensorSpec]) -> None:
    """Raise InputSpecError unless `feeds` has exactly the model's inputs with matching dtype and shape."""
    expected = {spec.name: spec for spec in input_specs}
    described = ", ".join(f"{s.name} {s.dtype}{list(s.shape)}" for s in input_specs)
    for name in feeds:
        if name not in expected:
            raise InputSpecError(f"Unknown input {name!r}: the model's inputs are {described}. Rename the feed.")
    for spec in input_specs:
        if spec.name not in feeds:
            raise InputSpecError(f"Missing input {spec.name!r}: the model expects {described}.")
        array = feeds[spec.name]
        given = (f"got {type(array).__name__}" if not isinstance(array, np.ndarray)
                 else f"got {array.dtype}{list(array.shape)}")
        if not isinstance(array, np.ndarray) or array.dtype.name != spec.dtype:
            raise InputSpecError(f"Input {spec.name!r} expects {spec.dtype}{list(spec.shape)}, {given}: "
                                 f"pass a numpy array converted with .astype(np.{spec.dtype}).")
        fits = array.ndim == len(spec.shape) and all(
            not isinstance(dim, int) or dim == size for dim, size in zip(spec.shape, array.shape))
        if not fits:
            raise InputSpecError(f"Input {spec.name!r} expects shape {list(spec.shape)} (strings are free dims), "
                                 f"{given}: reshape or resize the data to match.")

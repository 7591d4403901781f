"""The backend protocol (build, run, layers, profile) and the backend-neutral engine graph.

Modelled on Polygraphy's loaders and runners: a Backend turns a precision-baked ONNX model into an
Engine; an Engine runs feeds, describes its own layers (with ONNX provenance) and profiles them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import onnx

from ..errors import InputSpecError
from ..models.spec import TensorSpec


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
        )


@dataclass
class LayerTiming:
    """Time per inference of one engine layer (median over runs where the profiler gives runs), from the backend's
    own profiler."""

    name: str
    latency_ms: float
    count: int  # how many timed inferences it summarises


@dataclass(frozen=True)
class BuildOptions:
    """Backend-neutral build settings; a backend ignores what it has no use for (and says so in notes)."""

    threads: int | None = None  # None: backend default
    optimization_level: str = "all"  # ONNX Runtime: disable | basic | extended | layout | all
    inference_precision: str | None = None  # OpenVINO hint: "f32" | "bf16"; None: derived from the plan
    workspace_mb: int = 1024  # TensorRT workspace pool limit
    shape_range: tuple = ()  # ((input_name, min_shape, opt_shape, max_shape), ...) for dynamic axes


@runtime_checkable
class Engine(Protocol):
    """A built, runnable engine."""

    backend: str
    notes: list[str]  # honest caveats, e.g. "FP16 runs in FP32 on this backend: not accelerated"

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run one batch; returns outputs in the model's output order."""

    def layers(self) -> EngineGraph:
        """The engine's layers with ONNX provenance (no timings)."""

    def profile(self, feeds: dict[str, np.ndarray], runs: int = 20) -> list[LayerTiming]:
        """Per-layer mean latency over `runs` inferences of `feeds`."""


@runtime_checkable
class Backend(Protocol):
    """Builds engines from precision-baked ONNX models."""

    name: str

    def version(self) -> str:
        """Backend library version (part of every cache key)."""

    def accelerated_precisions(self) -> dict[str, bool]:
        """For "fp32", "fp16", "bf16", "int8": does this backend really run it faster on this machine?"""

    def build(self, model: onnx.ModelProto, options: BuildOptions = BuildOptions()) -> Engine:
        """Build an engine; raise BackendError with a readable message on failure."""


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

"""Import TensorRT engine plans built elsewhere (no GPU or TensorRT needed).

`load_plan` / `load_plan_dir` read the engine-inspector graph JSON, the trtexec layer profile and the
metadata files written beside an engine, and return a `TrtPlan`: an `EngineGraph` (backend "tensorrt-plan")
whose layers carry their original ONNX node names, precision and mean per-layer time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from ..engine import EngineGraph
from ..errors import PlanImportError
from .parse import (PLAN_BACKEND, engine_graph, join_profile, parse_build_metadata, parse_device_metadata,
                    parse_graph, parse_profile, parse_profile_metadata, split_layer_name)

_SIBLINGS = {"profile": ".profile.json", "profile_metadata": ".profile.metadata.json",
             "build_metadata": ".build.metadata.json", "metadata": ".metadata.json"}


@dataclass
class TrtPlan:
    """One imported TensorRT engine: layers with ONNX provenance and timings, plus end-to-end latency."""

    name: str
    engine: EngineGraph
    latency_ms: dict | None = None  # end-to-end {"min","max","mean","median","p99",...} from trtexec, or None
    profile_count: int | None = None  # inferences the per-layer means are over
    precision_flags: dict[str, bool] = field(default_factory=dict)  # builder flags, e.g. {"fp16": True, ...}
    device: str | None = None
    batch: int | None = None
    schema: str = "8.x/10.x"  # inspector JSON schema: "8.x/10.x" (Bindings) or "11.x" (I/O Tensors)
    detailed: bool = True  # False when the inspector gave layer names only
    io_tensors: list[dict] = field(default_factory=list)
    tensor_dtypes: dict[str, str] = field(default_factory=dict)  # tensor name -> "fp32" | "fp16" | "int8" ...
    unmatched_profile: list[str] = field(default_factory=list)  # profile names that match no layer
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def layers(self):
        return self.engine.layers

    @property
    def total_layer_ms(self) -> float | None:
        """Sum of per-layer mean times (None without a profile)."""
        times = [layer.latency_ms for layer in self.layers if layer.latency_ms is not None]
        return sum(times) if times else None

    @property
    def layer_time_ratio(self) -> float | None:
        """Summed per-layer time / end-to-end median: above 1 because per-layer profiling adds sync overhead."""
        total, median = self.total_layer_ms, (self.latency_ms or {}).get("median")
        return total / median if total is not None and median else None

    def layer_dtypes(self, layer) -> tuple[list[str | None], list[str | None]]:
        """Datatypes of a layer's input and output tensors."""
        return ([self.tensor_dtypes.get(t) for t in layer.inputs], [self.tensor_dtypes.get(t) for t in layer.outputs])

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "device": self.device,
            "batch": self.batch,
            "schema": self.schema,
            "precision_flags": dict(self.precision_flags),
            "profile_count": self.profile_count,
            "latency_ms": dict(self.latency_ms) if self.latency_ms else None,
            "total_layer_ms": self.total_layer_ms,
            "layer_time_ratio": self.layer_time_ratio,
            "layers": [
                {"name": l.name, "type": l.type, "precision": l.precision, "onnx_nodes": list(l.onnx_nodes),
                 "latency_ms": l.latency_ms, "inserted": l.inserted, "kernel": l.kernel}
                for l in self.layers
            ],
            "io_tensors": [dict(t) for t in self.io_tensors],
            "unmatched_profile": list(self.unmatched_profile),
            "sources": dict(self.sources),
        }


def _stem(path: Path) -> str:
    return path.name[: -len(".graph.json")] if path.name.endswith(".graph.json") else path.stem


def load_plan(graph_json: Any, profile_json: Any = None, *, metadata_json: Any = None,
              build_metadata_json: Any = None, profile_metadata_json: Any = None, name: str | None = None,
              source_nodes: Sequence[str] | None = None, discover: bool = True) -> TrtPlan:
    """Read one engine plan. Each argument is a path, JSON text or parsed JSON.

    graph_json: engine-inspector JSON (*.graph.json). profile_json: trtexec --exportProfile (*.profile.json).
    profile_metadata_json: trtexec performance summary (end-to-end latency). build_metadata_json: precision flags.
    metadata_json: GPU properties. With `discover`, files left as None are looked up beside a
    `<stem>.graph.json` path. `source_nodes`: node names of the ONNX model, if you have it.
    """
    given = {"profile": profile_json, "profile_metadata": profile_metadata_json,
             "build_metadata": build_metadata_json, "metadata": metadata_json}
    graph_path = Path(graph_json) if isinstance(graph_json, (str, Path)) and \
        str(graph_json).lstrip()[:1] not in ("{", "[") else None
    info = parse_graph(graph_json)  # first: a bad graph path fails here, before looking for its siblings
    if discover and graph_path is not None:
        for key, suffix in _SIBLINGS.items():
            sibling = graph_path.with_name(_stem(graph_path) + suffix)
            if given[key] is None and sibling.is_file():
                given[key] = sibling
    plan = TrtPlan(name=name or (_stem(graph_path) if graph_path else "engine"),
                   engine=engine_graph(info.layers, list(source_nodes) if source_nodes is not None else None),
                   schema=info.schema, detailed=info.detailed, io_tensors=info.io_tensors,
                   tensor_dtypes=info.tensor_dtypes)
    plan.sources = {k: str(v) for k, v in {"graph": graph_path, **given}.items()
                    if isinstance(v, (str, Path)) and str(v).lstrip()[:1] not in ("{", "[")}
    if given["profile"] is not None:
        plan.profile_count, entries = parse_profile(given["profile"])
        plan.unmatched_profile = join_profile(plan.layers, entries)
    if given["profile_metadata"] is not None:
        summary = parse_profile_metadata(given["profile_metadata"])
        plan.latency_ms, plan.batch, plan.device = summary["latency_ms"], summary["batch"], summary["device"]
    if given["build_metadata"] is not None:
        plan.precision_flags = parse_build_metadata(given["build_metadata"])["precision_flags"]
    if given["metadata"] is not None:
        plan.device = plan.device or parse_device_metadata(given["metadata"])["device"]
    return plan


def plan_files(path: str | Path) -> list[Path]:
    """Every file a plan at `path` (a `*.graph.json` or a plan folder) may be read from: the graph and the profile
    and metadata files beside it that `load_plan` discovers; empty for anything else."""
    path = Path(path)
    graphs = sorted(path.glob("*.graph.json")) if path.is_dir() else [path] if path.name.endswith(".graph.json") else []
    return [file for graph in graphs
            for file in (graph, *(graph.with_name(_stem(graph) + suffix) for suffix in _SIBLINGS.values()))
            if file.is_file()]


def example_plans() -> list[str]:
    """Names of the bundled example plans: real A100 ResNet-18 (FP32, FP16, QAT, QAT with quantised residuals) and
    MobileNet QAT engines from NVIDIA's TensorRT Engine Explorer examples (Apache-2.0, see their LICENSE.txt)."""
    return sorted(p.name for p in _examples_root().iterdir() if p.is_dir())


def example_plan_dir(name: str) -> Path:
    """The folder of the bundled example plan `name` (see `example_plans()`), found through the package."""
    folder = _examples_root() / name
    if not folder.is_dir():
        raise PlanImportError(f"No bundled example plan named {name!r}: choose one of {', '.join(example_plans())}.")
    return folder


def _examples_root() -> Path:
    root = Path(str(resources.files("workbench") / "data" / "trt-plans"))
    if not root.is_dir():
        raise PlanImportError(f"The bundled example plans are missing from {root}: reinstall the workbench.")
    return root


def load_plan_dir(folder: str | Path, *, name: str | None = None) -> TrtPlan:
    """Load the one `*.graph.json` in `folder` with its sibling profile and metadata files; name = folder name.

    `folder` may also be the name of a bundled example plan (`example_plans()`), e.g. "a100-resnet18-qat".
    """
    folder = Path(folder)
    if not folder.is_dir() and len(folder.parts) == 1 and str(folder) in example_plans():
        folder = example_plan_dir(str(folder))
    if not folder.is_dir():
        raise PlanImportError(f"Plan folder not found: {folder}. Pass a folder holding one *.graph.json, or the "
                              f"name of a bundled example plan ({', '.join(example_plans())}).")
    graphs = sorted(folder.glob("*.graph.json"))
    if len(graphs) != 1:
        found = ", ".join(g.name for g in graphs) or "none"
        raise PlanImportError(f"{folder} must hold exactly one *.graph.json (found: {found}); pass the graph "
                              "file to load_plan() instead.")
    return load_plan(graphs[0], name=name or folder.name)


__all__ = ["TrtPlan", "load_plan", "load_plan_dir", "plan_files", "example_plans", "example_plan_dir",
           "split_layer_name", "PLAN_BACKEND"]

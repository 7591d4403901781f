"""Readers for TensorRT engine-plan JSON: engine-inspector graph, trtexec profile and metadata files.

No TensorRT is needed: these are the JSON files `trtexec --exportLayerInfo/--exportProfile` (or
`IEngineInspector.get_engine_information(LayerInformationFormat.JSON)`) write, read with `json`.
TREx (NVIDIA's trt-engine-explorer) reads the same files but is not on PyPI and pulls pandas/graphviz
views; we need only names, formats and times, so the readers are small and written here.

Inspector schemas handled:
- TensorRT 8.x/10.x: `{"Layers": [...], "Bindings": ["in", "out"]}`; layer tensors carry "Format/Datatype".
- TensorRT 11.x: `{"Layers": [...], "I/O Tensors": [{"Name", "IOMode", "DataType", ...}]}`; layer tensors may
  carry "Format" and "DataType" separately.
- Layers are dicts (ProfilingVerbosity.DETAILED) or plain name strings (LAYER_NAMES_ONLY).
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import vocabulary
from ..engine import EngineGraph, EngineLayer
from ..errors import PlanImportError
from ..limits import MAX_NESTING, too_deep

PLAN_BACKEND = "tensorrt-plan"
QDQ_OPS = frozenset(vocabulary.QDQ_OPS)

_PROFILE_SUFFIX = re.compile(r"\s*\[profile \d+\]$")
_REFORMAT = re.compile(r"^Reformatting CopyNode for (Input|Output) Tensor (\d+) to (.+)$")
_FOREIGN = re.compile(r"^\{ForeignNode\[(.*)\]\}$")
_UNNAMED = re.compile(r"\(Unnamed Layer\* \d+\) \[[^\]]*\]")
# Shuffles the ONNX parser adds around Gemm/MatMul/bias broadcasts: "reshape_after_Gemm_48",
# "unsqueeze_node_after_fc.bias", "copied_squeeze_after_(Unnamed Layer* 307) [ElementWise]".
_PARSER_GLUE = re.compile(r"^(?:copied_)?(?:reshape|squeeze|unsqueeze|shuffle)_(?:node_)?(?:after|before)_(.+)$")
_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]\x1f]*)\]")
_OP_SUFFIX = re.compile(r"^([A-Za-z][A-Za-z0-9]*?)(?:_(\d+))?$")

# Datatype words in "Format/Datatype" strings ("Row major linear FP32", "Channel major FP16 format where ...",
# "Thirty-two wide channel vectorized row major Int8 format") and 11.x/10.x "DataType" values ("Float", "Half").
_DTYPE_WORDS = (
    ("bf16", "bf16"), ("bfloat16", "bf16"), ("fp16", "fp16"), ("half", "fp16"), ("fp32", "fp32"),
    ("float", "fp32"), ("int8", "int8"), ("fp8", "fp8"), ("int4", "int4"), ("fp4", "fp4"),
    ("int32", "int32"), ("int64", "int64"), ("bool", "bool"), ("uint8", "uint8"),
)
_INDEX_DTYPES = frozenset({"int32", "int64", "bool", "uint8"})  # shapes/indices: not a compute precision


@dataclass
class NameSplit:
    """What a (possibly fused) TensorRT layer name says about its origin."""

    nodes: list[str]  # original ONNX node (or constant/initializer) names, in name order
    inserted: bool = False  # reformat/copy or parser glue that TensorRT added itself
    target: str | None = None  # for inserted layers: the layer or node they serve
    foreign_regions: list[tuple[str, str]] = field(default_factory=list)  # Myelin regions (first, last)
    internal: list[str] = field(default_factory=list)  # "(Unnamed Layer* N) [Type]" parts: no ONNX name


def strip_profile_suffix(name: str) -> str:
    """'conv1 [profile 1]' -> 'conv1' (engines with several optimisation profiles)."""
    return _PROFILE_SUFFIX.sub("", name)


def _split_top(text: str, separators: tuple[str, ...]) -> list[str]:
    """Split at separators that are outside (), [] and {}: fused names nest PWN(...) and ForeignNode[...]."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(depth - 1, 0)
        elif depth == 0:
            sep = next((s for s in separators if text.startswith(s, i)), None)
            if sep:
                parts.append(text[start:i])
                i += len(sep)
                start = i
                continue
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _split_into(expr: str, out: NameSplit, separators: tuple[str, ...]) -> None:
    """Split `expr` into `out`, in order. Nested PWN(...) are unwrapped with a work list, never by recursion (names
    can nest deeper than the interpreter's stack)."""
    stack: list[tuple[str, tuple[str, ...] | None]] = [(expr, separators)]  # separators None: one part
    while stack:
        text, seps = stack.pop()
        if seps is not None:
            stack.extend((part, None) for part in reversed(_split_top(text, seps)))
        elif text.startswith("PWN(") and text.endswith(")"):
            # Pointwise fusion: PWN(a, PWN(b, c)) or PWN(a + b); arguments are comma separated.
            stack.append((text[4:-1], (" + ", " || ", ", ")))
        else:
            _add_part(text, out)


def _add_part(part: str, out: NameSplit) -> None:
    foreign = _FOREIGN.match(part)
    if foreign:
        first, sep, last = foreign.group(1).partition("...")
        first, last = first.strip(), (last.strip() if sep else first.strip())
        out.foreign_regions.append((first, last))
        out.nodes.extend([first] if first == last else [first, last])
    elif _UNNAMED.search(part) or _PARSER_GLUE.match(part):  # no ONNX name / a parser shuffle fused in
        out.internal.append(part)
    else:
        out.nodes.append(part)


def split_layer_name(name: str) -> NameSplit:
    """Split a TensorRT layer name into the ONNX names it was built from.

    Handles vertical fusion `A + B`, horizontal fusion `A || B`, pointwise `PWN(A, PWN(B, C))`, Myelin regions
    `{ForeignNode[first...last]}` (only the first and last names are known), reformat copies
    `Reformatting CopyNode for Input Tensor 0 to X` (inserted), parser shuffles `reshape_after_X` (inserted),
    `(Unnamed Layer* N) [Type]` parts (no ONNX name) and `[profile N]` suffixes.
    """
    name = strip_profile_suffix(name.strip())
    reformat = _REFORMAT.match(name)
    if reformat:
        return NameSplit(nodes=[], inserted=True, target=reformat.group(3))
    glue = _PARSER_GLUE.match(name)
    if glue and len(_split_top(name, (" + ", " || "))) == 1:
        return NameSplit(nodes=[], inserted=True, target=glue.group(1))
    out = NameSplit(nodes=[])
    _split_into(name, out, (" + ", " || "))
    return out


def onnx_layers_from_metadata(metadata: str | None) -> list[str]:
    """Node names from a TensorRT 10 DETAILED layer's Metadata: '[ONNX Layer: a]\\x1f[ONNX Layer: b]'."""
    return _ONNX_LAYER.findall(metadata or "")


def node_op_type(node: str) -> str | None:
    """Op type from an exporter-style node name: 'Conv_9' -> 'Conv', '/layer1/conv1/Conv' -> 'Conv'; else None."""
    tail = node.rsplit("/", 1)[-1]
    match = _OP_SUFFIX.match(tail)
    if not match or (match.group(2) is None and "/" not in node):
        return None  # a bare word such as 'conv1.weight' or 'input' is a tensor name, not an op
    return match.group(1)


def dtype_of(description: str | None) -> str | None:
    """'Channel major FP16 format where channel % 8 == 0' -> 'fp16'; 'Float' -> 'fp32'; unknown -> None."""
    text = (description or "").lower()
    for word, dtype in _DTYPE_WORDS:
        if re.search(rf"(?<![a-z0-9]){word}(?![a-z0-9])", text):
            return dtype
    return None


def _tensor_dtype(tensor: dict) -> str | None:
    # 8.x/10.x: "Format/Datatype"; 11.x splits it into "Format" and "DataType".
    for key in ("DataType", "Format/Datatype", "Format/DataType", "Format"):
        dtype = dtype_of(tensor.get(key)) if isinstance(tensor.get(key), str) else None
        if dtype:
            return dtype
    return None


def layer_precision(input_dtypes: list[str | None], output_dtypes: list[str | None]) -> str:
    """One precision per layer from its input tensors (what the kernel reads); outputs if it has none.

    Index/shape tensors (int32, bool) are ignored; several float/int8 types give "mixed".
    """
    for dtypes in (input_dtypes, output_dtypes):
        kinds = {d for d in dtypes if d and d not in _INDEX_DTYPES}
        if len(kinds) == 1:
            return kinds.pop()
        if len(kinds) > 1:
            return "mixed"
    return "unknown"


def _read_json(source: Any, what: str) -> tuple[Any, str]:
    """(parsed JSON, label for messages) from a path, a JSON string, or already-parsed data."""
    if isinstance(source, (dict, list)):
        data, label = source, f"<{what} data>"
    elif isinstance(source, str) and source.lstrip()[:1] in ("{", "["):
        label = f"<{what} text>"
        try:
            data = json.loads(source)
        except json.JSONDecodeError as exc:
            raise PlanImportError(f"The {what} text is not valid JSON ({exc}): pass the inspector/trtexec output "
                                  "unchanged.") from exc
        except RecursionError as exc:
            raise _nesting_error(label) from exc
    elif not isinstance(source, (str, os.PathLike)):
        raise PlanImportError(f"Cannot read the {what} from a {type(source).__name__}: pass a path, JSON text or "
                              "the parsed JSON (a dict or list).")
    else:
        path = Path(source)
        label = str(path)
        if path.exists() and not path.is_file():
            raise PlanImportError(f"{path} is not a regular file (a folder, FIFO or device): pass the {what} file.")
        if not path.is_file():
            raise PlanImportError(f"{what} file not found: {path}. Pass the path of an existing file.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PlanImportError(f"{path} is not valid JSON ({exc}): expected the {what} written by trtexec or "
                                  "the TensorRT engine inspector.") from exc
        except RecursionError as exc:
            raise _nesting_error(label) from exc
    if too_deep(data):
        raise _nesting_error(label)
    return data, label


def _nesting_error(label: str) -> PlanImportError:
    return PlanImportError(f"{label} nests more than {MAX_NESTING} levels deep: TensorRT's JSON is a few levels "
                           "deep; pass the inspector/trtexec output unchanged.")


def _typed(value: Any, types: type | tuple[type, ...], where: str, expected: str) -> Any:
    """`value` when it is one of `types` (bool is never a number), else a PlanImportError naming `where`."""
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, types) and (bool in types or not isinstance(value, bool)):
        return value
    raise PlanImportError(f"{where} is {type(value).__name__} {_preview(value)}, expected {expected}: pass the "
                          "inspector/trtexec output unchanged.")


def _time(value: Any, where: str) -> float:
    """A finite, non-negative time in ms (NaN, infinite or negative times would corrupt every sum)."""
    number = float(_typed(value, (int, float), where, "a number of milliseconds"))
    if not math.isfinite(number) or number < 0:
        raise PlanImportError(f"{where} is {number!r}: times must be finite and non-negative milliseconds. "
                              "Re-export the profile with trtexec.")
    return number


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class GraphInfo:
    """The parsed inspector graph: layers with provenance, tensor dtypes and engine I/O."""

    layers: list[EngineLayer]
    tensor_dtypes: dict[str, str]
    io_tensors: list[dict]
    schema: str  # "8.x/10.x" or "11.x"
    detailed: bool  # False for LAYER_NAMES_ONLY inspector output


def parse_graph(source: Any) -> GraphInfo:
    """Parse engine-inspector JSON (path, JSON text or dict) into EngineLayers in execution order."""
    data, label = _read_json(source, "engine graph JSON (*.graph.json)")
    if not isinstance(data, dict) or "Layers" not in data:
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise PlanImportError(f"{label} has no 'Layers' key (found: {found}): expected engine-inspector JSON "
                              "from `trtexec --exportLayerInfo` or get_engine_information(LayerInformationFormat.JSON).")
    if not isinstance(data["Layers"], list):
        raise PlanImportError(f"{label}: 'Layers' must be a list of layer objects or names.")
    if "I/O Tensors" in data:
        schema = "11.x"
        tensors = _typed(data["I/O Tensors"], list, f"{label}: 'I/O Tensors'", "a list of tensor objects")
        io_tensors = [dict(_typed(t, dict, f"{label}: 'I/O Tensors' entry {i}", "an object with 'Name'"))
                      for i, t in enumerate(tensors)]
        for i, tensor in enumerate(io_tensors):
            _typed(tensor.get("Name"), str, f"{label}: 'I/O Tensors' entry {i} 'Name'", "a string")
    elif "Bindings" in data:
        schema = "8.x/10.x"
        bindings = _typed(data["Bindings"], list, f"{label}: 'Bindings'", "a list of tensor names")
        io_tensors = [{"Name": _typed(name, str, f"{label}: binding {i}", "a tensor name")}
                      for i, name in enumerate(bindings)]
    else:
        raise PlanImportError(f"{label} has neither 'Bindings' (TensorRT 8.x/10.x) nor 'I/O Tensors' (11.x): "
                              "export the whole engine information, not a single layer.")
    layers: list[EngineLayer] = []
    dtypes: dict[str, str] = {}
    detailed = False
    for index, raw in enumerate(data["Layers"]):
        if isinstance(raw, str):
            name, raw = raw, {}
        elif isinstance(raw, dict) and isinstance(raw.get("Name"), str):
            name, detailed = raw["Name"], True
        else:
            raise PlanImportError(f"{label}: layer {index} has no 'Name': each layer must be a name string or an "
                                  "object with 'Name'.")
        layers.append(_layer(name, raw, dtypes, f"{label}: layer {index} ({_preview(name)})"))
    for tensor in io_tensors:
        dtype = _tensor_dtype(tensor)
        if dtype:
            dtypes.setdefault(tensor["Name"], dtype)
    return GraphInfo(layers, dtypes, io_tensors, schema, detailed)


def _layer(name: str, raw: dict, dtypes: dict[str, str], where: str = "layer") -> EngineLayer:
    split = split_layer_name(name)
    for key in ("Metadata", "LayerType", "TacticName", "Origin"):
        if raw.get(key) is not None:
            _typed(raw[key], str, f"{where} field {key!r}", "a string")
    from_metadata = onnx_layers_from_metadata(raw.get("Metadata"))
    inputs, outputs = raw.get("Inputs", []), raw.get("Outputs", [])
    for key, tensors in (("Inputs", inputs), ("Outputs", outputs)):
        _typed(tensors, list, f"{where} field {key!r}", "a list of tensor objects")
        for i, tensor in enumerate(tensors):
            _typed(tensor, dict, f"{where} {key} entry {i}", "a tensor object")
            if "Name" in tensor:
                _typed(tensor["Name"], str, f"{where} {key} entry {i} 'Name'", "a string")
            for n in _typed(tensor.get("Dimensions", []), list, f"{where} {key} entry {i} 'Dimensions'",
                            "a list of ints"):
                _typed(n, int, f"{where} {key} entry {i} 'Dimensions'", "a list of ints")
    in_dtypes = [_tensor_dtype(t) for t in inputs]
    out_dtypes = [_tensor_dtype(t) for t in outputs]
    for tensor, dtype in zip([*inputs, *outputs], [*in_dtypes, *out_dtypes]):
        if dtype and "Name" in tensor:
            dtypes[tensor["Name"]] = dtype
    layer_type = raw.get("LayerType") or ("Reformat" if name.startswith("Reformatting CopyNode") else "unknown")
    return EngineLayer(
        name=name,
        type=layer_type,
        precision=layer_precision(in_dtypes, out_dtypes),
        onnx_nodes=from_metadata or split.nodes,
        inputs=[t.get("Name", "") for t in inputs],
        outputs=[t.get("Name", "") for t in outputs],
        input_shapes=[list(t.get("Dimensions", [])) for t in inputs],
        output_shapes=[list(t.get("Dimensions", [])) for t in outputs],
        inserted=split.inserted or raw.get("Origin") == "REFORMAT",
        kernel=raw.get("TacticName"),
    )


@dataclass
class ProfileEntry:
    name: str
    average_ms: float
    median_ms: float | None
    total_ms: float | None
    percentage: float | None


def parse_profile(source: Any) -> tuple[int | None, list[ProfileEntry]]:
    """trtexec --exportProfile JSON: `[{"count": N}, {"name", "timeMs", "averageMs", "medianMs", "percentage"}...]`."""
    data, label = _read_json(source, "layer profile JSON (*.profile.json)")
    if not isinstance(data, list) or not data:
        raise PlanImportError(f"{label} is not a non-empty list: expected trtexec --exportProfile output "
                              "([{\"count\": N}, {\"name\": ..., \"averageMs\": ...}, ...]).")
    count = None
    entries = []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise PlanImportError(f"{label}: entry {index} is not an object.")
        if "count" in item and "name" not in item:
            count = _typed(item["count"], int, f"{label}: entry {index} 'count'", "a whole number of runs")
            if count < 0:
                raise PlanImportError(f"{label}: entry {index} 'count' is {count}: a run count cannot be negative.")
            continue
        missing = [k for k in ("name", "averageMs") if k not in item]
        if missing:
            raise PlanImportError(f"{label}: entry {index} is missing {', '.join(missing)}: each layer entry "
                                  "needs 'name' and 'averageMs' (trtexec --exportProfile).")
        where = f"{label}: entry {index}"
        name = _typed(item["name"], str, f"{where} 'name'", "a layer name")
        optional = {key: None if item.get(key) is None else _time(item[key], f"{where} {key!r}")
                    for key in ("medianMs", "timeMs", "percentage")}
        entries.append(ProfileEntry(name, _time(item["averageMs"], f"{where} 'averageMs'"), optional["medianMs"],
                                    optional["timeMs"], optional["percentage"]))
    return count, entries


def parse_profile_metadata(source: Any) -> dict:
    """trtexec performance summary: end-to-end latency (ms), throughput, batch and device name."""
    data, label = _read_json(source, "profile metadata JSON (*.profile.metadata.json)")
    summary = data.get("performance_summary") if isinstance(data, dict) else None
    latency = summary.get("Latency") if isinstance(summary, dict) else None
    if not isinstance(latency, list) or len(latency) < 4:
        raise PlanImportError(f"{label} has no performance_summary.Latency list: expected trtexec's summary "
                              "with Latency = [min, max, mean, median, ..., p99] in ms.")
    latency = [_time(v, f"{label}: performance_summary.Latency[{i}]") for i, v in enumerate(latency)]
    # trtexec writes [min, max, mean, median, p99] or [min, max, mean, median, p90, p95, p99].
    stats = {"min": latency[0], "max": latency[1], "mean": latency[2], "median": latency[3], "p99": latency[-1]}
    if len(latency) == 7:
        stats.update(p90=latency[4], p95=latency[5])
    throughput = summary.get("Throughput")
    if throughput is not None:
        throughput = _typed(throughput, (int, float), f"{label}: performance_summary.Throughput", "a number")
    options = _typed(data.get("inference_options", {}), dict, f"{label}: inference_options", "an object")
    for key in ("Input inference shape", "Input inference shapes"):
        if options.get(key) is not None:
            _typed(options[key], str, f"{label}: inference_options.{key}", "a string such as 'input:8x3x224x224'")
    device_info = _typed(data.get("device_information", {}), dict, f"{label}: device_information", "an object")
    shape = options.get("Input inference shape") or options.get("Input inference shapes") or ""
    batch = re.search(r"=(\d+)x", shape)
    batch = int(batch.group(1)) if batch else (int(options["Batch"]) if str(options.get("Batch")).isdigit() else None)
    device = device_info.get("Selected Device")
    return {"latency_ms": stats,
            "throughput": throughput,
            "batch": batch,
            "device": device}


def parse_build_metadata(source: Any) -> dict:
    """trtexec build options: model path and precision flags ("Precision": "FP32+FP16+INT8")."""
    data, label = _read_json(source, "build metadata JSON (*.build.metadata.json)")
    if not isinstance(data, dict) or "build_options" not in data:
        raise PlanImportError(f"{label} has no 'build_options': expected the build metadata written beside the "
                              "engine (model_options + build_options).")
    build_options = _typed(data["build_options"], dict, f"{label}: build_options", "an object")
    model_options = _typed(data.get("model_options", {}), dict, f"{label}: model_options", "an object")
    precision = str(build_options.get("Precision", ""))
    flags = {p.strip().lower() for p in precision.split("+") if p.strip()}
    return {"model": model_options.get("Model"),
            "precision_flags": {p: p in flags for p in ("fp32", "fp16", "bf16", "int8", "fp8")},
            "build_options": dict(data["build_options"])}


def parse_device_metadata(source: Any) -> dict:
    """GPU properties file (a list with one object per device): name and compute capability of the first."""
    data, label = _read_json(source, "device metadata JSON (*.metadata.json)")
    device = data[0] if isinstance(data, list) and data else data
    if not isinstance(device, dict) or "Name" not in device:
        raise PlanImportError(f"{label} has no device 'Name': expected the GPU properties list written "
                              "beside the engine.")
    return {"device": _typed(device["Name"], str, f"{label}: device 'Name'", "a string"),
            "compute_capability": device.get("ComputeCapability")}


def join_profile(layers: list[EngineLayer], entries: list[ProfileEntry]) -> list[str]:
    """Set each layer's latency_ms from the profile (by exact name, then without '[profile N]'); return
    profile names that match no layer."""
    by_name = {layer.name: layer for layer in layers}
    by_stripped = {strip_profile_suffix(layer.name): layer for layer in layers}
    unmatched = []
    for entry in entries:
        layer = by_name.get(entry.name) or by_stripped.get(strip_profile_suffix(entry.name))
        if layer is None:
            unmatched.append(entry.name)
        else:
            layer.latency_ms = (layer.latency_ms or 0.0) + entry.average_ms
    return unmatched


def engine_graph(layers: list[EngineLayer], source_nodes: list[str] | None = None, *,
                 backend: str = PLAN_BACKEND, device: str = "gpu") -> EngineGraph:
    """Wrap parsed layers as an EngineGraph; without the ONNX model, source_nodes are the names the layers claim."""
    if source_nodes is None:
        source_nodes = list(dict.fromkeys(n for layer in layers for n in layer.onnx_nodes))
    return EngineGraph(backend=backend, layers=layers, source_nodes=list(source_nodes),
                       measured_graph="TensorRT engine (inspector JSON)", device=device)

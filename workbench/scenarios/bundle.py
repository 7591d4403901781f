"""Deployment bundle: precision-baked model, metadata sidecar and a Triton Inference Server repository entry.

Layout written by `export_bundle`:

    <out>/metadata.json                              region, plan, calibration, measurements, versions, sha256s
    <out>/model_repository/<name>/config.pbtxt       Triton model configuration (protobuf text format)
    <out>/model_repository/<name>/1/model.onnx       the precision-baked ONNX (onnxruntime / openvino results)
    <out>/model_repository/<name>/1/model.plan       the serialized TensorRT engine (tensorrt results)
    <out>/source.onnx                                the ONNX the TensorRT engine was built from (tensorrt only)

config.pbtxt is written directly rather than via tritonclient's ModelConfig proto so that no Triton
package is needed; it uses the documented fields only (name, platform, max_batch_size, input, output,
dynamic_batching, instance_group).
"""
from __future__ import annotations

import datetime as _dt
import json
import re
from pathlib import Path

import onnx

from ..cache import file_sha256
from ..errors import WorkbenchError
from ..models.spec import Model, TensorSpec
from ..results import RunResult

METADATA_FILE = "metadata.json"
BUNDLE_FORMAT = 1

# numpy dtype name -> Triton DataType enum name (model_config.proto)
TRITON_DTYPES = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
    "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64", "object": "TYPE_STRING",
    "str": "TYPE_STRING", "bfloat16": "TYPE_BF16",
}


class BundleError(WorkbenchError, ValueError):
    """A deployment bundle cannot be written as asked (bad batch settings, missing engine plan, ...)."""


def triton_name(text: str) -> str:
    """A Triton-safe model/directory name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "model"


def _resolve_model(source, result: RunResult) -> Model:
    if hasattr(source, "variant_model"):  # a workbench.session.Workbench
        model = source.variant_model(result)
    else:
        model = source
    if isinstance(model, onnx.ModelProto):
        model = Model.from_proto(model, name=result.model, source="export_bundle")
    if not isinstance(model, Model):
        raise BundleError(f"export_bundle needs a Workbench, a workbench Model or an onnx.ModelProto, got "
                          f"{type(source).__name__}. Pass the session that produced the result, or its variant model.")
    return model


def can_batch(model: Model) -> bool:
    """True when every input and output has a symbolic/unknown first dim, i.e. Triton may batch along it."""
    return all(spec.shape and not isinstance(spec.shape[0], int) for spec in model.inputs + model.outputs)


def _tensor_block(spec: TensorSpec, batching: bool) -> str:
    dtype = TRITON_DTYPES.get(spec.dtype)
    if dtype is None:
        raise BundleError(f"Tensor {spec.name!r} has dtype {spec.dtype}, which Triton has no type for; cast it to a "
                          f"supported dtype ({', '.join(sorted(TRITON_DTYPES))}) before exporting.")
    dims = [d if isinstance(d, int) else -1 for d in (spec.shape[1:] if batching else spec.shape)]
    lines = [f"    name: {json.dumps(spec.name)}", f"    data_type: {dtype}"]
    if dims:
        lines.append(f"    dims: [ {', '.join(map(str, dims))} ]")
    else:  # Triton needs at least one dim: a per-sample scalar is declared [1] and reshaped to []
        lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
    return "  {\n" + "\n".join(lines) + "\n  }"


def triton_config(name: str, model: Model, *, platform: str, max_batch: int,
                  preferred_batch_sizes: tuple[int, ...], kind: str) -> str:
    """config.pbtxt text for `model`; batching is enabled only when every input/output has a free first dim."""
    batching = max_batch > 0 and can_batch(model)
    parts = [f"name: {json.dumps(name)}", f"platform: {json.dumps(platform)}",
             f"max_batch_size: {max_batch if batching else 0}",
             "input [\n" + ",\n".join(_tensor_block(s, batching) for s in model.inputs) + "\n]",
             "output [\n" + ",\n".join(_tensor_block(s, batching) for s in model.outputs) + "\n]"]
    if batching and preferred_batch_sizes:
        parts.append("dynamic_batching {\n  preferred_batch_size: [ "
                     + ", ".join(map(str, preferred_batch_sizes)) + " ]\n}")
    parts.append(f"instance_group [\n  {{\n    kind: {kind}\n    count: 1\n  }}\n]")
    return "\n".join(parts) + "\n"


def export_bundle(workbench_or_parts, result: RunResult, out_dir: str | Path, *, region: str | None = None,
                  max_batch: int = 32, preferred_batch_sizes: tuple[int, ...] = (4, 8), name: str | None = None,
                  plan: bytes | str | Path | None = None) -> Path:
    """Write a deployment bundle for `result` into `out_dir` and return `out_dir`.

    `workbench_or_parts` is the Workbench session that produced `result` (its `variant_model(result)` is
    exported) or the precision-baked Model / onnx.ModelProto itself. For a TensorRT result pass the
    serialized engine as `plan` (bytes or a path); it becomes model.plan with platform "tensorrt_plan".
    """
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 0:
        raise BundleError(f"max_batch={max_batch!r} is invalid: give 0 (no batching) or a positive batch size.")
    preferred = tuple(int(b) for b in preferred_batch_sizes) if max_batch else ()  # max_batch 0: no batcher
    if any(b <= 0 or b > max_batch for b in preferred):
        raise BundleError(f"preferred_batch_sizes={list(preferred)} must be positive and <= max_batch={max_batch}: "
                          "drop the larger sizes or raise max_batch.")
    model = _resolve_model(workbench_or_parts, result)
    tensorrt = result.backend == "tensorrt"
    platform = "tensorrt_plan" if tensorrt else "onnxruntime_onnx"
    if tensorrt and plan is None:
        raise BundleError("This is a TensorRT result: pass the serialized engine as plan= (bytes or a .plan path) "
                          "so the bundle can hold model.plan.")
    name = triton_name(name or f"{result.model}_{result.precision}")
    out = Path(out_dir)
    version_dir = out / "model_repository" / name / "1"
    version_dir.mkdir(parents=True, exist_ok=True)

    written: list[Path] = []
    if tensorrt:
        plan_bytes = plan if isinstance(plan, bytes) else Path(plan).read_bytes()
        (version_dir / "model.plan").write_bytes(plan_bytes)
        (out / "source.onnx").write_bytes(model.serialized())
        written += [version_dir / "model.plan", out / "source.onnx"]
    else:
        (version_dir / "model.onnx").write_bytes(model.serialized())
        written.append(version_dir / "model.onnx")
    config_path = out / "model_repository" / name / "config.pbtxt"
    config_path.write_text(triton_config(
        name, model, platform=platform, max_batch=max_batch,
        preferred_batch_sizes=preferred, kind="KIND_GPU" if tensorrt else "KIND_CPU"), encoding="utf-8")
    written.append(config_path)

    summary = result.to_json()
    notes = []
    if result.backend == "openvino":
        notes.append("Measured on OpenVINO; the Triton entry serves the same ONNX with ONNX Runtime, whose latency "
                     "differs: re-measure before relying on the numbers.")
    batching = max_batch > 0 and can_batch(model)
    if max_batch and not batching:
        notes.append("The model has a fixed first dimension, so Triton batching is off (max_batch_size: 0).")
    meta = {
        "bundle_format": BUNDLE_FORMAT,
        "name": name,
        "region": region,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {**model.to_json(), "name": result.model},
        "precision_plan": {"precision": result.precision, "method": result.method, "qdq_style": result.qdq_style,
                           "keep_fp32": list(result.keep_fp32)},
        "calibration": {"name": result.calibration, "sha256": result.calibration_hash},
        "backend": result.backend,
        "versions": {"onnx": onnx.__version__, **result.versions},
        "synthetic_data": result.synthetic_data,
        "latency_ms": summary["latency_ms"],
        "latency_by_batch": summary["latency_by_batch"],
        "accuracy": summary["accuracy"],
        "accelerated": result.accelerated,
        "cache_key": result.cache_key,
        "triton": {"platform": platform,
                   "max_batch_size": max_batch if batching else 0,
                   "preferred_batch_size": list(preferred) if batching else []},
        "notes": list(result.notes) + notes,
        "files": {p.relative_to(out).as_posix(): file_sha256(p) for p in written},
    }
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def verify_bundle(out_dir: str | Path) -> list[str]:
    """Problems with a bundle (missing or changed files vs the sha256s in metadata.json); empty when intact."""
    out = Path(out_dir)
    meta_path = out / METADATA_FILE
    if not meta_path.is_file():
        return [f"{meta_path} is missing: this is not a bundle written by export_bundle."]
    problems = []
    for rel, digest in json.loads(meta_path.read_text(encoding="utf-8"))["files"].items():
        path = out / rel
        if not path.is_file():
            problems.append(f"{rel} is missing")
        elif file_sha256(path) != digest:
            problems.append(f"{rel} has changed (sha256 differs from metadata.json)")
    return problems

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
import os
import re
import shutil
import tempfile
from pathlib import Path

import onnx

from ..backends import capabilities
from ..cache import file_sha256
from ..engine import Capabilities
from ..errors import WorkbenchError
from ..models.spec import Model, TensorSpec
from ..output import current_umask
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
                  plan: bytes | str | Path | None = None, replace: bool = False) -> Path:
    """Write a deployment bundle for `result` into `out_dir` and return `out_dir`.

    `workbench_or_parts` is the Workbench session that produced `result` (its `variant_model(result)` is
    exported) or the precision-baked Model / onnx.ModelProto itself. For a TensorRT result pass the
    serialized engine as `plan` (bytes or a path); it becomes model.plan with platform "tensorrt_plan".
    `out_dir` must be missing or empty; with `replace=True` an existing bundle there is replaced whole (never
    merged: no stale model versions survive). The bundle is built beside `out_dir` and moved in at the end, so
    a failure leaves what was there before.
    """
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 0:
        raise BundleError(f"max_batch={max_batch!r} is invalid: give 0 (no batching) or a positive batch size.")
    preferred = tuple(int(b) for b in preferred_batch_sizes) if max_batch else ()  # max_batch 0: no batcher
    if any(b <= 0 or b > max_batch for b in preferred):
        raise BundleError(f"preferred_batch_sizes={list(preferred)} must be positive and <= max_batch={max_batch}: "
                          "drop the larger sizes or raise max_batch.")
    model = _resolve_model(workbench_or_parts, result)
    engine = capabilities(result.backend)
    if engine.serialized_engine and plan is None:
        raise BundleError(f"This is a {result.backend} result: pass the serialized engine as plan= (bytes or a .plan "
                          "path) so the bundle can hold model.plan.")
    if result.variant_sha256 and model.content_hash != result.variant_sha256:
        raise BundleError(f"The model to export (sha256 {model.content_hash[:12]}...) is not the one {result.label} was "
                          f"measured on ({result.variant_sha256[:12]}...): a cached ONNX was changed or another model "
                          "was passed. Clear that cache entry and run the configuration again, then export.")
    name = triton_name(name or f"{result.model}_{result.precision}")
    final = Path(os.path.realpath(out_dir))  # a link is followed: the bundle lands in its target, the link stays
    check_bundle_target(final, replace=replace)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        out = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.new-"))
    except OSError as exc:
        raise BundleError(f"Cannot create the bundle folder {final} ({exc.strerror or exc}): choose a writable "
                          "folder path.") from exc
    try:
        _write_bundle(out, model, result, name=name, region=region, max_batch=max_batch, preferred=preferred,
                      engine=engine, plan=plan)
        _move_into_place(out, final)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return final


def check_bundle_target(out: str | Path, *, replace: bool = False) -> None:
    """Raise BundleError unless `export_bundle` may write into `out` (missing, empty, or a bundle with replace:
    a folder whose metadata.json is a bundle manifest, not merely a file of that name). Links are resolved."""
    out = Path(os.path.realpath(out))
    if out.exists() and not out.is_dir():
        raise BundleError(f"{out} is a file, not a folder: give export_bundle a folder path (missing or empty).")
    if out.is_dir() and any(out.iterdir()):
        if not replace:
            raise BundleError(f"{out} is not empty: pass replace=True to replace the bundle there whole, or export "
                              "into a new folder (files are never merged into an existing bundle).")
        if not is_bundle(out):
            raise BundleError(f"{out} holds files but no bundle manifest ({METADATA_FILE} with bundle_format and "
                              "files written by export_bundle), so it is not a bundle: replace=True only replaces "
                              "bundles. Empty the folder yourself or choose another.")


def is_bundle(folder: Path) -> bool:
    """Does `folder` carry our manifest: a regular metadata.json (not a link) holding bundle_format and files?"""
    path = folder / METADATA_FILE
    if path.is_symlink() or not path.is_file():
        return False
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(meta, dict) and isinstance(meta.get("bundle_format"), int) and isinstance(meta.get("files"), dict)


def _move_into_place(new: Path, final: Path) -> None:
    """Swap the finished bundle in: the old one (if any) is moved aside first and removed only afterwards."""
    os.chmod(new, 0o777 & ~current_umask())  # mkdtemp made it private
    if final.is_dir() and any(final.iterdir()):
        old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-"))
        os.replace(final, old / final.name)
        os.replace(new, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, final)  # a missing or empty folder is replaced directly


def _write_bundle(out: Path, model: Model, result: RunResult, *, name: str, region: str | None, max_batch: int,
                  preferred: tuple[int, ...], engine: Capabilities, plan) -> None:
    platform, serialized = engine.triton_platform, engine.serialized_engine
    version_dir = out / "model_repository" / name / "1"
    version_dir.mkdir(parents=True)
    written: list[Path] = []
    onnx_path = (out / "source.onnx") if serialized else (version_dir / "model.onnx")
    onnx_path.write_bytes(model.serialized())
    if file_sha256(onnx_path) != model.content_hash:
        raise BundleError(f"{onnx_path.name} was not written intact (its sha256 differs from the model's): check "
                          "the disk and export again.")
    if serialized:
        try:
            plan_bytes = plan if isinstance(plan, bytes) else Path(plan).read_bytes()
        except OSError as exc:
            raise BundleError(f"Cannot read the engine plan {plan} ({exc.strerror or exc}): pass the serialized "
                              "engine as bytes or the path of a readable .plan file.") from exc
        (version_dir / "model.plan").write_bytes(plan_bytes)
        written.append(version_dir / "model.plan")
    written.append(onnx_path)
    config_path = out / "model_repository" / name / "config.pbtxt"
    config_path.write_text(triton_config(
        name, model, platform=platform, max_batch=max_batch,
        preferred_batch_sizes=preferred, kind=f"KIND_{engine.device.upper()}"), encoding="utf-8")
    written.append(config_path)

    summary = result.to_json()
    notes = []
    if not engine.triton_serves_measured:
        notes.append(f"Measured on {result.backend}; the Triton entry ({platform}) serves the same ONNX with another "
                     "engine, whose latency differs: re-measure before relying on the numbers.")
    batching = max_batch > 0 and can_batch(model)
    if max_batch and not batching:
        notes.append("The model has a fixed first dimension, so Triton batching is off (max_batch_size: 0).")
    meta = {
        "bundle_format": BUNDLE_FORMAT,
        "name": name,
        "region": region,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {**model.to_json(), "name": result.model},
        "precision_plan": result.plan.to_record(),
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


def _has_link(out: Path, rel: str) -> bool:
    """Is any component of `rel` below `out` a symlink?"""
    path = out
    for part in Path(rel).parts:
        path = path / part
        if path.is_symlink():
            return True
    return False


def verify_bundle(out_dir: str | Path) -> list[str]:
    """Problems with a bundle: files missing, changed (vs the sha256s in metadata.json) or not listed there;
    empty when intact."""
    out = Path(out_dir)
    meta_path = out / METADATA_FILE
    if not meta_path.is_file():
        return [f"{meta_path} is missing: this is not a bundle written by export_bundle."]
    try:
        files = json.loads(meta_path.read_text(encoding="utf-8"))["files"]
        listed = {str(rel): str(digest) for rel, digest in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        return [f"{METADATA_FILE} is not a bundle manifest ({type(exc).__name__}: {exc})"]
    problems = []
    root = Path(os.path.realpath(out))
    for rel, digest in listed.items():
        path = out / rel
        inside = not Path(rel).is_absolute() and ".." not in Path(rel).parts
        if not inside or root not in Path(os.path.realpath(path)).parents:
            problems.append(f"{rel} is outside the bundle: a manifest lists only files inside it (not read)")
        elif _has_link(out, rel):
            problems.append(f"{rel} is a link, not a file of the bundle (not followed)")
        elif not path.is_file():
            problems.append(f"{rel} is missing")
        elif file_sha256(path) != digest:
            problems.append(f"{rel} has changed (sha256 differs from metadata.json)")
    present = sorted((Path(folder) / file).relative_to(out).as_posix()
                     for folder, _, files in os.walk(out) for file in files)  # links to folders are not entered
    problems += [f"{rel} is not listed in {METADATA_FILE} (Triton may serve it, e.g. a stale model version)"
                 for rel in present if rel not in listed and rel != METADATA_FILE]
    return problems

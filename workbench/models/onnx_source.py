"""ONNX sources: files (with external data), bytes and ModelProto, checked and shape-inferred into a `Model`."""
from __future__ import annotations

from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from ..errors import ModelLoadError
from .spec import Model


def load_onnx_file(path: str | Path, *, name: str | None = None) -> Model:
    """Load an ONNX file, with any external weight files that sit next to it."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelLoadError(f"ONNX file {str(path)!r} does not exist: check the path "
                             "(relative paths are resolved from the current directory).")
    if path.is_dir():
        raise ModelLoadError(f"{str(path)!r} is a directory, not an ONNX file: pass the path of the .onnx file inside it.")
    if not path.is_file():
        raise ModelLoadError(f"{str(path)!r} is not a regular file (a FIFO, device or socket), so it cannot hold an "
                             "ONNX model: pass the path of a saved .onnx file.")
    proto = _parse(path.read_bytes(), str(path))
    _load_external_data(proto, path)
    return finalize(proto, name=name or path.stem, source=str(path))


def load_onnx_bytes(data: bytes, *, name: str | None = None) -> Model:
    """Load a serialized ONNX model (without external data)."""
    proto = _parse(bytes(data), "<bytes>")
    if any(external_data_helper.uses_external_data(t) for t in _tensors(proto)):
        raise ModelLoadError("The ONNX bytes reference external weight files, which cannot be found without a "
                             "directory: save the model next to its data files and load it by path.")
    return finalize(proto, name=name or proto.graph.name or "model", source="<bytes>")


def finalize(proto: onnx.ModelProto, *, name: str, source: str) -> Model:
    """Name unnamed nodes, drop initializers listed as graph inputs (old IR < 4 files), run the ONNX checker and
    shape inference, and wrap the result in a `Model`."""
    proto = without_initializer_inputs(with_unique_node_names(proto))
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as exc:  # ValueError: e.g. names that are not UTF-8
        raise ModelLoadError(f"ONNX model from {source} is not valid: {_first_line(exc)}. "
                             "Re-export it or repair the graph (e.g. with onnx-graphsurgeon).") from exc
    try:
        proto = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"ONNX shape inference failed on the model from {source}: {_first_line(exc)}. "
                             "Check the input shapes and operator attributes of the graph.") from exc
    return Model.from_proto(proto, name=name, source=source)


def _parse(data: bytes, where: str) -> onnx.ModelProto:
    if not data:
        raise ModelLoadError(f"{where} is empty (0 bytes): it is not an ONNX model. Re-export or re-download it.")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except DecodeError as exc:
        raise ModelLoadError(f"{where} is not a readable ONNX model: {_describe_bad_bytes(data)} ({exc}). "
                             "Pass a complete .onnx file, e.g. from torch.onnx.export.") from exc
    # A few stray bytes can parse as an empty protobuf message; a real model always has a graph and an opset.
    if not proto.graph.node or not proto.opset_import:
        raise ModelLoadError(f"{where} is not an ONNX model: {_describe_bad_bytes(data)}. "
                             "Pass a complete .onnx file, e.g. from torch.onnx.export.")
    return proto


def _describe_bad_bytes(data: bytes) -> str:
    head = data[:512]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(ch.isprintable() or ch.isspace() for ch in text):
        return "it looks like a text file"  # its content is never echoed (the app shows errors to its users)
    if head[:1] == b"\x08":  # field 1 (ir_version, varint): the start of every serialized ModelProto
        return "it starts like an ONNX file but is truncated or corrupted"
    return "its bytes are not an ONNX protobuf"


def _tensors(proto: onnx.ModelProto):
    return external_data_helper._get_all_tensors(proto)


def _load_external_data(proto: onnx.ModelProto, path: Path) -> None:
    base = path.parent
    tensors = [t for t in _tensors(proto) if external_data_helper.uses_external_data(t)]
    if not tensors:
        return
    missing = sorted({info.location for info in (external_data_helper.ExternalDataInfo(t) for t in tensors)
                      if not (base / info.location).is_file()})
    if missing:
        raise ModelLoadError(f"ONNX file {str(path)!r} stores its weights in external file(s) {missing}, which are "
                             f"missing from {str(base)!r}: copy them next to the .onnx file.")
    try:
        external_data_helper.load_external_data_for_model(proto, str(base))
    except (OSError, ValueError, onnx.checker.ValidationError) as exc:
        raise ModelLoadError(f"Could not read the external weight data of {str(path)!r}: {_first_line(exc)}. "
                             "The data file may be truncated: re-save the model.") from exc


FIRST_IR_WITHOUT_INITIALIZER_INPUTS = 4


def without_initializer_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model`, or for an IR < 4 file whose initializers are also graph inputs (as IR 3 required) a copy at IR 4
    with those inputs dropped: in IR >= 4 an initializer listed as an input is a default a caller may override, so
    converters retype or remove it (FP16, the INT8 quantiser) and saved optimised graphs keep the input without its
    value. The weights stay weights; the caller's proto is never changed."""
    weights = {init.name for init in model.graph.initializer}
    if model.ir_version >= FIRST_IR_WITHOUT_INITIALIZER_INPUTS or not any(v.name in weights for v in model.graph.input):
        return model
    upgraded = onnx.ModelProto()
    upgraded.CopyFrom(model)
    kept = [v for v in upgraded.graph.input if v.name not in weights]
    del upgraded.graph.input[:]
    upgraded.graph.input.extend(kept)
    upgraded.ir_version = FIRST_IR_WITHOUT_INITIALIZER_INPUTS
    return upgraded


def with_unique_node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model`, or a copy whose top-level nodes all have distinct, non-empty names ("<OpType>_<index>" if unnamed):
    engines and per-layer views key on node names. The caller's proto is never changed."""
    names = [node.name for node in model.graph.node]
    if all(names) and len(set(names)) == len(names):
        return model
    named = onnx.ModelProto()
    named.CopyFrom(model)
    seen: set[str] = set()
    for index, node in enumerate(named.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        while node.name in seen:
            node.name += "_"
        seen.add(node.name)
    return named


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

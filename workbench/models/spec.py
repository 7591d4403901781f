"""The loaded-model object every layer works on: an ONNX graph plus its input and output specs."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

Dim = int | str | None  # int: fixed; str: symbolic (e.g. "batch"); None: unknown

# Exporters write dynamic axes in many ways: a name (any string, "?" included), no value at all, or -1 / 0.


@dataclass(frozen=True)
class TensorSpec:
    """Name, numpy dtype name and shape (with symbolic dims) of one graph input or output.

    `kind` is "tensor", or for outputs that are not tensors: "sequence_of_maps" (scikit-learn's ZipMap: one
    {class: probability} map per sample; read as a [samples, classes] float matrix in `classes` order),
    "sequence" (a sequence of tensors) or "map". Strings are dtype "object".
    """

    name: str
    dtype: str
    shape: tuple[Dim, ...]
    kind: str = "tensor"
    classes: tuple | None = None  # class labels of a sequence_of_maps output, in column order

    def to_json(self) -> dict:
        data = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.kind != "tensor":
            data.update(kind=self.kind, classes=None if self.classes is None else list(self.classes))
        return data

    @classmethod
    def from_value_info(cls, value_info: onnx.ValueInfoProto, classes: tuple | None = None) -> "TensorSpec":
        """The spec of a graph input or output; `classes` names the columns of a sequence-of-maps output."""
        kind, tensor_type = _tensor_type_of(value_info.type)
        dtype = _dtype_name(tensor_type.elem_type) if tensor_type is not None else "object"
        if kind == "sequence_of_maps":
            return cls(value_info.name, dtype, (None, len(classes) if classes else None), kind, classes)
        dims: list[Dim] = []
        for dim in (tensor_type.shape.dim if tensor_type is not None and tensor_type.HasField("shape") else ()):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(int(dim.dim_value))
            elif dim.HasField("dim_param") and dim.dim_param:
                dims.append(dim.dim_param)
            else:
                dims.append(None)
        return cls(value_info.name, dtype, tuple(dims), kind)

    def as_array(self, value) -> np.ndarray | list[np.ndarray]:
        """An engine's value of this output as numpy: a sequence of maps as a [samples, classes] matrix in `classes`
        order, a sequence of tensors stacked (a list when their shapes differ), strings as a unicode array."""
        if self.kind == "sequence_of_maps":
            rows = list(value)
            classes = self.classes or (tuple(rows[0]) if rows else ())
            return np.array([[row[c] for c in classes] for row in rows], dtype=self.dtype).reshape(len(rows),
                                                                                                   len(classes))
        if self.kind == "sequence":
            parts = [np.asarray(v) for v in value]
            return np.stack(parts) if parts and len({p.shape for p in parts}) == 1 else parts
        if self.kind == "map":
            return np.array(list(value.values()))
        array = np.asarray(value)
        return array.astype(str) if array.dtype == object else array


def _tensor_type_of(type_proto: onnx.TypeProto):
    """(kind, the tensor type inside) of an ONNX type: tensor, sequence_of_maps, sequence or map."""
    which = type_proto.WhichOneof("value")
    if which == "sequence_type":
        elem = type_proto.sequence_type.elem_type
        if elem.WhichOneof("value") == "map_type":
            return "sequence_of_maps", _tensor_type_of(elem.map_type.value_type)[1]
        return "sequence", _tensor_type_of(elem)[1]
    if which == "map_type":
        return "map", _tensor_type_of(type_proto.map_type.value_type)[1]
    if which in ("tensor_type", "sparse_tensor_type"):
        return "tensor", getattr(type_proto, which)
    if which == "optional_type":
        return _tensor_type_of(type_proto.optional_type.elem_type)
    return "tensor", None


def _dtype_name(elem_type: int) -> str:
    if elem_type == onnx.TensorProto.STRING:
        return "object"
    if elem_type == onnx.TensorProto.UNDEFINED:
        return "float32"
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name


def zipmap_classes(proto: onnx.ModelProto) -> dict[str, tuple]:
    """Class labels of every ZipMap output (scikit-learn / onnxmltools exports), by output name, in column order."""
    found = {}
    for node in proto.graph.node:
        if node.op_type == "ZipMap":
            for attribute in node.attribute:
                if attribute.name == "classlabels_int64s":
                    found[node.output[0]] = tuple(int(v) for v in attribute.ints)
                elif attribute.name == "classlabels_strings":
                    found[node.output[0]] = tuple(v.decode() for v in attribute.strings)
    return found

    def concrete_shape(self, batch: int = 1, overrides: dict[str, int] | None = None) -> tuple[int, ...]:
        """Shape with the first symbolic/unknown dim set to `batch` and others from `overrides` (else 1)."""
        overrides = overrides or {}
        shape = []
        for i, dim in enumerate(self.shape):
            if isinstance(dim, int):
                shape.append(dim)
            elif isinstance(dim, str) and dim in overrides:
                shape.append(overrides[dim])
            else:
                shape.append(batch if i == 0 else 1)
        return tuple(shape)


@dataclass
class Model:
    """An ONNX model as loaded by `workbench.load_model`: graph, specs, and where it came from."""

    name: str
    proto: onnx.ModelProto
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    source: str
    _hash: str | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_proto(cls, proto: onnx.ModelProto, name: str, source: str) -> "Model":
        initializers = {init.name for init in proto.graph.initializer}
        inputs = [TensorSpec.from_value_info(v) for v in proto.graph.input if v.name not in initializers]
        classes = zipmap_classes(proto)
        outputs = [TensorSpec.from_value_info(v, classes.get(v.name)) for v in proto.graph.output]
        return cls(name=name, proto=proto, inputs=inputs, outputs=outputs, source=source)

    def serialized(self) -> bytes:
        return self.proto.SerializeToString(deterministic=True)

    @property
    def content_hash(self) -> str:
        """sha256 of the serialized graph (weights included)."""
        if self._hash is None:
            self._hash = hashlib.sha256(self.serialized()).hexdigest()
        return self._hash

    def output_arrays(self, values) -> list[np.ndarray | list[np.ndarray]]:
        """An engine's outputs of this model as numpy arrays (`TensorSpec.as_array`)."""
        return [spec.as_array(value) for spec, value in zip(self.outputs, values)]

    @property
    def node_names(self) -> list[str]:
        return [node.name for node in self.proto.graph.node]

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "inputs": [spec.to_json() for spec in self.inputs],
            "outputs": [spec.to_json() for spec in self.outputs],
            "sha256": self.content_hash,
        }

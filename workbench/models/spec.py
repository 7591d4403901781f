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
    """Name, numpy dtype name and shape (with symbolic dims) of one graph input or output."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_value_info(cls, value_info: onnx.ValueInfoProto) -> "TensorSpec":
        tensor_type = value_info.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).name
        dims: list[Dim] = []
        for dim in tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(int(dim.dim_value))
            elif dim.HasField("dim_param") and dim.dim_param:
                dims.append(dim.dim_param)
            else:
                dims.append(None)
        return cls(value_info.name, dtype, tuple(dims))

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
        outputs = [TensorSpec.from_value_info(v) for v in proto.graph.output]
        return cls(name=name, proto=proto, inputs=inputs, outputs=outputs, source=source)

    def serialized(self) -> bytes:
        return self.proto.SerializeToString(deterministic=True)

    @property
    def content_hash(self) -> str:
        """sha256 of the serialized graph (weights included)."""
        if self._hash is None:
            self._hash = hashlib.sha256(self.serialized()).hexdigest()
        return self._hash

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

"""Model sources: ONNX files/bytes/protos, PyTorch modules and torchvision architectures (samples sit above, in
`workbench.samples`, and resolve their names there)."""
from __future__ import annotations

import os
import sys

import onnx

from ..errors import ModelLoadError
from .onnx_source import finalize, load_onnx_bytes, load_onnx_file
from .spec import Model, TensorSpec

TORCHVISION_PREFIX = "torchvision:"


def load_model(source, *, name: str | None = None, example_input=None, opset: int = 17, weights=None) -> Model:
    """Load a model from any supported source and return it checked and shape-inferred.

    `source`: an ONNX path (str/Path; external data next to it is loaded), ONNX bytes, an `onnx.ModelProto`,
    a `torch.nn.Module` (needs `example_input`; exported with a dynamic "batch" axis, BatchNorm kept),
    "torchvision:NAME" (random weights, or `weights=` a state-dict path or "DEFAULT" from the local hub cache).
    Raises ModelLoadError naming the source and the cause. (`workbench.load_model` also takes sample names.)
    """
    if isinstance(source, Model):
        return source
    if isinstance(source, onnx.ModelProto):
        return finalize(source, name=name or source.graph.name or "model", source="<ModelProto>")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return load_onnx_bytes(bytes(source), name=name)
    if _is_torch_module(source):
        from .torch_source import load_module
        return load_module(source, example_input, name=name, opset=opset)
    if isinstance(source, str) and source.startswith(TORCHVISION_PREFIX):
        from .torch_source import load_torchvision
        return load_torchvision(source[len(TORCHVISION_PREFIX):], weights=weights, name=name, opset=opset)
    if isinstance(source, (str, os.PathLike)):
        return load_onnx_file(source, name=name)
    raise ModelLoadError(f"Cannot load a model from a {type(source).__name__}: pass an ONNX path, bytes, an "
                         "onnx.ModelProto, a torch.nn.Module with example_input, 'torchvision:NAME' or a sample name.")


def _is_torch_module(obj) -> bool:
    torch = sys.modules.get("torch")  # a Module instance implies torch is already imported
    return torch is not None and isinstance(obj, torch.nn.Module)


__all__ = ["Model", "TensorSpec", "load_model"]

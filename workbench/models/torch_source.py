"""PyTorch sources: export an nn.Module, or build a torchvision architecture, to an ONNX `Model`.

Export uses the TorchScript exporter (`dynamo=False`): in torch 2.14 it is ~50x faster than the dynamo exporter on
small models, emits the requested opset (17) natively, and with `do_constant_folding=False` keeps BatchNormalization
nodes in the graph (the dynamo exporter's optimiser folds them into the Conv), so the workbench can show the
Conv+BN fusion the engines do.
"""
from __future__ import annotations

import difflib
import io
import warnings
from pathlib import Path

import numpy as np
import onnx

from .._optional import require
from ..errors import ModelLoadError
from .onnx_source import finalize
from .spec import Model

MIN_OPSET = 17
BATCH = "batch"


def export_module(module, example_input, *, opset: int = MIN_OPSET) -> onnx.ModelProto:
    """Export `module` in eval mode to ONNX with a dynamic "batch" axis on every input and output.

    `example_input`: a tensor/array, or a tuple/list of them (one per forward argument).
    Inputs are named "input" (or "input_0", "input_1", ...), outputs "output" (or "output_0", ...).
    """
    torch = require("torch", extra="torch", purpose="exporting PyTorch modules to ONNX")
    if opset < MIN_OPSET:
        raise ModelLoadError(f"opset={opset} is too old: the workbench needs ONNX opset >= {MIN_OPSET}. Pass opset={MIN_OPSET}.")
    if example_input is None:
        raise ModelLoadError(f"Exporting {type(module).__name__} needs example_input= (a tensor shaped like one batch "
                             "of model input, e.g. torch.zeros(1, 3, 224, 224)).")
    args = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    args = tuple(torch.as_tensor(np.asarray(a)) if not isinstance(a, torch.Tensor) else a for a in args)
    module = module.eval()
    try:
        with torch.no_grad():
            outputs = module(*args)
    except Exception as exc:
        raise ModelLoadError(f"{type(module).__name__} failed on example_input (shapes "
                             f"{[tuple(a.shape) for a in args]}): {type(exc).__name__}: {exc}. "
                             "Pass an example_input the module's forward() accepts.") from exc
    n_out = len(outputs) if isinstance(outputs, (tuple, list)) else 1
    input_names = ["input"] if len(args) == 1 else [f"input_{i}" for i in range(len(args))]
    output_names = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter announces its deprecation on every call; it is the reliable path here.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            # emitted by shape inference for strided Slice even though constant folding is off
            warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
            torch.onnx.export(
                module, args, buffer, dynamo=False, opset_version=opset, do_constant_folding=False,
                training=torch.onnx.TrainingMode.EVAL, input_names=input_names, output_names=output_names,
                dynamic_axes={n: {0: BATCH} for n in input_names + output_names},
                # True skips the exporter's initializer de-duplication, which turns equal-valued parameters (e.g.
                # freshly initialised BatchNorm weights) into dozens of Identity nodes; the extra graph inputs it
                # adds are dropped below so runtimes still treat the weights as constants.
                keep_initializers_as_inputs=True)
    except Exception as exc:
        raise ModelLoadError(f"torch.onnx.export failed for {type(module).__name__}: {type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}. Replace the "
                             "unsupported operation in forward() or export the model to ONNX yourself and load the file.") from exc
    proto = onnx.load_from_string(buffer.getvalue())
    weights = {init.name for init in proto.graph.initializer}
    graph_inputs = [value for value in proto.graph.input if value.name not in weights]
    del proto.graph.input[:]
    proto.graph.input.extend(graph_inputs)
    return proto


def load_module(module, example_input, *, name: str | None = None, opset: int = MIN_OPSET) -> Model:
    """Export an nn.Module and return it as a checked `Model`."""
    proto = export_module(module, example_input, opset=opset)
    label = name or type(module).__name__
    return finalize(proto, name=label, source=f"torch:{type(module).__module__}.{type(module).__name__}")


def load_torchvision(arch: str, *, weights=None, name: str | None = None, opset: int = MIN_OPSET,
                     image_size: int = 224) -> Model:
    """A torchvision classification model: random weights (seed 0), a state-dict path, or cached pretrained weights.

    `weights`: None (random), a path to a state dict (loaded with weights_only=True), or "DEFAULT"/a weights enum
    name, used only when the file is already in the local torch hub cache: nothing is downloaded.
    """
    torch = require("torch", extra="torch", purpose="torchvision models")
    tv = require("torchvision", extra="torch", purpose="torchvision models")
    known = tv.models.list_models(module=tv.models)
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else f" Known: {', '.join(sorted(known)[:12])}, ..."
        raise ModelLoadError(f"Unknown torchvision architecture {arch!r}: it is not a torchvision classification "
                             f"model.{hint}")
    torch.manual_seed(0)
    module = tv.models.get_model(arch, weights=None)
    if weights is not None:
        try:
            module.load_state_dict(_state_dict(torch, tv, arch, weights))
        except RuntimeError as exc:
            raise ModelLoadError(f"weights={weights!r} do not fit torchvision {arch}: {str(exc).splitlines()[0]}. "
                                 "Pass a state dict saved from the same architecture.") from exc
    label = name or arch
    model = load_module(module, torch.zeros(1, 3, image_size, image_size), name=label, opset=opset)
    model.source = f"torchvision:{arch}" + ("" if weights is None else f" weights={weights}")
    return model


def _state_dict(torch, tv, arch: str, weights) -> dict:
    path = Path(str(weights)).expanduser()
    if not path.is_file():
        path = _cached_pretrained_path(torch, tv, arch, str(weights))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"Could not read weights file {str(path)!r} for {arch}: {type(exc).__name__}: {exc}. "
                             "Pass a state dict saved with torch.save(model.state_dict(), path).") from exc


def _cached_pretrained_path(torch, tv, arch: str, weights: str) -> Path:
    enum = tv.models.get_model_weights(arch)
    try:
        entry = enum.DEFAULT if weights.upper() in ("DEFAULT", "PRETRAINED") else enum[weights.split(".")[-1]]
    except KeyError as exc:
        raise ModelLoadError(f"weights={weights!r} is neither a file nor a known weights name for {arch}: use a "
                             f"state-dict path, 'DEFAULT', or one of {[w.name for w in enum]}.") from exc
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(entry.url).name
    if not cached.is_file():
        raise ModelLoadError(f"Pretrained weights {entry} for {arch} are not in the local torch hub cache "
                             f"({cached}); nothing is downloaded. Copy the file there, or pass weights=<path to a "
                             "state dict>, or weights=None for random weights.")
    return cached

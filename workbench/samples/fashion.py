"""`fashion-cnn`: a CNN with BatchNorm trained on Fashion-MNIST (sample_models/train_fashion_cnn.py)."""
from __future__ import annotations

import numpy as np

from ..calibration import CalibrationSet
from ..models.onnx_source import load_onnx_file
from ._data import FASHION_CLASSES, data_file, fashion_subset, mnist_subset, to_unit, uniform_noise
from .base import EvalData, Sample


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 28x28 images ([N,28,28]) -> model input float32 [N,1,28,28] in [0,1]."""
    return to_unit(np.asarray(images).reshape(-1, 28, 28))


def calibration_sets() -> list[CalibrationSet]:
    """Fashion-MNIST training images, MNIST digits (mismatched) and noise, as [N,1,28,28] float32 in [0,1]."""
    data = fashion_subset()
    mnist, _ = mnist_subset()
    return [
        CalibrationSet.from_arrays("fashion-train", to_unit(data["train_images"]), input_name="input",
                                   description="256 Fashion-MNIST training images (the model's own training data)"),
        CalibrationSet.from_arrays("mnist-digits", to_unit(mnist), input_name="input",
                                   description="256 MNIST handwritten digits: same size and format, wrong content"),
        CalibrationSet.from_arrays("noise", uniform_noise((256, 1, 28, 28), seed=0), input_name="input",
                                   description="256 images of uniform noise in [0,1]: deliberately unlike the data",
                                   synthetic=True),
    ]


def eval_data() -> EvalData:
    data = fashion_subset()
    return EvalData({"input": to_unit(data["test_images"])}, data["test_labels"].astype(np.int64),
                    f"{len(data['test_labels'])} random Fashion-MNIST test images (seed 0)")


def build() -> Sample:
    return Sample(
        name="fashion-cnn",
        description="CNN with BatchNorm (Conv-BN-ReLU x3, MaxPool, 2 Gemm) trained on Fashion-MNIST, 10 clothing classes.",
        model=load_onnx_file(data_file("fashion-cnn.onnx"), name="fashion-cnn"),
        eval=eval_data(),
        calibration_sets={c.name: c for c in calibration_sets()},
        class_names=list(FASHION_CLASSES),
        preprocess=preprocess,
    )

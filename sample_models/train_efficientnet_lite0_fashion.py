"""Train the linear head of `efficientnet-lite0-fashion` -> workbench/data/efficientnet-lite0-fashion-head.npz.

The pretrained EfficientNet-Lite0 backbone stays frozen: its pooled features for Fashion-MNIST images (upsampled in
the graph, see workbench/samples/efficientnet.py) are computed once with ONNX Runtime, then a multinomial logistic
regression (full-batch L-BFGS in torch, seconds) is fitted on them. Only the head (10 x 1280 weights + 10 biases) is committed.

Run: .venv/bin/python sample_models/train_efficientnet_lite0_fashion.py   (a few minutes on 2 CPU cores; fixed seeds)
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch
from tqdm.auto import tqdm

from workbench.models import load_model
from workbench.samples._data import DATA_DIR, fashion_full, fashion_subset, to_unit
from workbench.samples.efficientnet import FASHION_FEATURE_SIZE, HEAD_FILE, fashion_module

SEED = 0
N_TRAIN = 8000
L2_GRID = (1e-4, 1e-3, 1e-2)


def features(session: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
    batches = [images[i:i + 100] for i in range(0, len(images), 100)]
    return np.concatenate([session.run(None, {"input": to_unit(b)})[0] for b in tqdm(batches, desc="features")])


def fit_head(x: np.ndarray, y: np.ndarray, l2: float) -> torch.nn.Linear:
    """Multinomial logistic regression with an L2 penalty on the weights."""
    torch.manual_seed(SEED)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    head = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
    opt = torch.optim.LBFGS(head.parameters(), max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(xt), yt) + l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head


def top1(head: torch.nn.Linear, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((head(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def main() -> None:
    rng = np.random.default_rng(SEED)
    trunk = load_model(fashion_module(), example_input=torch.zeros(1, 1, 28, 28), name="lite0-features")
    session = ort.InferenceSession(trunk.serialized(), providers=["CPUExecutionProvider"])
    train_x, train_y = fashion_full("train")
    idx = rng.choice(len(train_x), N_TRAIN, replace=False)
    subset = fashion_subset()
    f_train, y_train = features(session, train_x[idx]), train_y[idx]
    f_test, y_test = features(session, subset["test_images"]), subset["test_labels"]
    # pick the penalty on a validation slice of the training features, never on the test images
    n_val = N_TRAIN // 5
    scores = {l2: top1(fit_head(f_train[n_val:], y_train[n_val:], l2), f_train[:n_val], y_train[:n_val])
              for l2 in L2_GRID}
    best = max(scores, key=scores.get)
    head = fit_head(f_train, y_train, best)
    print(f"validation top-1 by L2 penalty: {scores}; chose {best}")
    print(f"efficientnet-lite0-fashion top-1: {top1(head, f_test, y_test):.4f} on the committed {len(y_test)} test images")
    np.savez_compressed(DATA_DIR / HEAD_FILE, weight=head.weight.detach().numpy().astype(np.float32),
                        bias=head.bias.detach().numpy().astype(np.float32), image_size=np.int64(FASHION_FEATURE_SIZE))
    print("wrote", DATA_DIR / HEAD_FILE)


if __name__ == "__main__":
    main()

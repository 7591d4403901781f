"""Train the `fashion-cnn` sample on Fashion-MNIST (Debian's dataset-fashion-mnist) -> workbench/data/fashion-cnn.onnx.

Run: .venv/bin/python sample_models/train_fashion_cnn.py   (about 2-3 minutes on 2 CPU cores; fixed seeds)
"""
from __future__ import annotations

import numpy as np
import onnx
import torch
from torch import nn

from workbench.models import load_model
from workbench.samples._data import DATA_DIR, fashion_full, fashion_subset, to_unit

SEED = 0
EPOCHS = 3


def build() -> nn.Module:
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*block(1, 32), nn.MaxPool2d(2), *block(32, 64), nn.MaxPool2d(2), *block(64, 64),
                         nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def accuracy(net: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    net.eval()
    with torch.no_grad():
        preds = torch.cat([net(b).argmax(1) for b in torch.from_numpy(to_unit(images)).split(1000)])
    return float((preds.numpy() == labels).mean())


def main() -> None:
    torch.manual_seed(SEED)
    train_x, train_y = fashion_full("train")
    test_x, test_y = fashion_full("t10k")
    xt, yt = torch.from_numpy(to_unit(train_x)), torch.from_numpy(train_y)
    net = build()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    steps = EPOCHS * ((len(xt) + 127) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(EPOCHS):
        net.train()
        for idx in torch.randperm(len(xt), generator=gen).split(128):
            batch = xt[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5  # horizontal flips: clothes are left/right symmetric
            batch = torch.where(flip[:, None, None, None], batch.flip(3), batch)
            loss = nn.functional.cross_entropy(net(batch), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}: full test top-1 {accuracy(net, test_x, test_y):.4f}")
    subset = fashion_subset()
    print(f"fashion-cnn top-1: {accuracy(net, test_x, test_y):.4f} on all {len(test_y)} test images, "
          f"{accuracy(net, subset['test_images'], subset['test_labels']):.4f} on the committed 2000")
    model = load_model(net, example_input=torch.from_numpy(to_unit(test_x[:1])), name="fashion-cnn")
    model.proto.graph.name = "fashion_cnn"
    onnx.save_model(model.proto, DATA_DIR / "fashion-cnn.onnx")
    print("wrote", DATA_DIR / "fashion-cnn.onnx")


if __name__ == "__main__":
    main()

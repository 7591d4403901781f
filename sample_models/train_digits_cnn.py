"""Train the `digits-cnn` sample on scikit-learn's 8x8 digits and export it to workbench/data/digits-cnn.onnx.

Run: .venv/bin/python sample_models/train_digits_cnn.py   (about 20 s on 2 CPU cores; fixed seeds)
"""
from __future__ import annotations

import numpy as np
import onnx
import torch
from torch import nn

from workbench.models import load_model
from workbench.samples._data import DATA_DIR, digits_split

SEED = 0
EPOCHS = 40


def build() -> nn.Module:
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*block(1, 16), *block(16, 32), nn.MaxPool2d(2), *block(32, 64),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def main() -> None:
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    x_train, y_train, x_test, y_test = digits_split()
    net = build()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, EPOCHS)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(EPOCHS):
        net.train()
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            batch = xt[idx]
            shift = torch.randint(-1, 2, (2,), generator=gen)  # +-1 pixel translation augments the tiny set
            batch = torch.roll(batch, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
            loss = nn.functional.cross_entropy(net(batch), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        acc = (net(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()
    print(f"digits-cnn test top-1: {acc:.4f} on {len(y_test)} images")
    model = load_model(net, example_input=torch.from_numpy(x_test[:1]), name="digits-cnn")
    model.proto.graph.name = "digits_cnn"
    onnx.save_model(model.proto, DATA_DIR / "digits-cnn.onnx")
    print("wrote", DATA_DIR / "digits-cnn.onnx")


if __name__ == "__main__":
    main()

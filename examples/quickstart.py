"""Quick start: train a small CNN for a few seconds on embedded digits, then measure it.

    python examples/quickstart.py

Prints the per-layer invariance and equivariance under 90-degree rotations and small
translations (Bruintjes et al. 2023), and the mean per depth part.
"""
import argparse

import pandas as pd
import torch
from torch import nn

from lightning_equivariance import Rotation90, Translation, measure
from lightning_equivariance.data import digits


def small_cnn(classes: int = 10) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, classes),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--probe", type=int, default=256, help="number of probe images")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    x, y = digits(size=16)
    model = small_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(args.epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch}: loss {loss.item():.3f}")

    report = measure(model, x[: args.probe], groups=[Rotation90(), Translation(max_shift=2)])
    table = report.to_dataframe().pivot_table(
        index=["index", "layer", "part"], columns=["group", "measure"], values="value"
    )
    with pd.option_context("display.width", 160, "display.max_rows", 100, "display.float_format", "{:.3f}".format):
        print(table)
        print(report.parts())
    print(report)


if __name__ == "__main__":
    main()

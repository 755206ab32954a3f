"""Pieces shared by the examples: a Lightning classifier around any network, and data sets.

Kept in ``examples/`` on purpose: the library itself needs Lightning only for its callback.
"""
from __future__ import annotations

import math
from typing import Tuple

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from lightning_equivariance.data import digits


class Classifier(pl.LightningModule):
    """Cross-entropy classifier around ``net``; logs ``train_loss``, ``val_loss``, ``val_acc``.

    ``augment_rotations=True`` rotates every training image by a random multiple of 90 degrees.
    """

    def __init__(self, net: nn.Module, lr: float = 3e-3, weight_decay: float = 1e-4, augment_rotations: bool = False):
        super().__init__()
        self.net = net
        self.lr, self.weight_decay, self.augment_rotations = lr, weight_decay, augment_rotations

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.augment_rotations:
            k = torch.randint(0, 4, (x.shape[0],), device=x.device)
            x = x.clone()
            for r in range(1, 4):  # one batched rot90 per angle, not one per image
                x[k == r] = torch.rot90(x[k == r], r, (-2, -1))
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def rotated_variant(
    x: torch.Tensor, y: torch.Tensor, variant: str, seed: int = 0
) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Bruintjes et al. 2023 §4.3 data sets from upright digits (classes 0, 1, 6, 8 removed):

    * ``"upright"`` (Digits6): as is, 6 classes;
    * ``"rot-inv"`` (Digits6-Rot-Inv): each image rotated by a random multiple of 90 degrees,
      label = digit (the task is rotation invariant);
    * ``"rot-eq"`` (Digits6-Rot-Eq): the same images, label = (digit, rotation): 24 classes
      (the task is rotation equivariant).
    """
    keep = ~torch.isin(y, torch.tensor([0, 1, 6, 8]))
    x, y = x[keep], y[keep]
    digits6 = torch.tensor([2, 3, 4, 5, 7, 9])
    y = (y[:, None] == digits6[None]).float().argmax(1)
    if variant == "upright":
        return x, y, 6
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, 4, (x.shape[0],), generator=g)
    x = torch.stack([torch.rot90(img, int(r), (-2, -1)) for img, r in zip(x, k)])
    if variant == "rot-inv":
        return x, y, 6
    if variant == "rot-eq":
        return x, y * 4 + k, 24
    raise ValueError(f"variant must be 'upright', 'rot-inv' or 'rot-eq', got {variant!r}")


def load_dataset(name: str, size: int, root: str = "data") -> Tuple[torch.Tensor, torch.Tensor]:
    """``"digits"`` (embedded, scikit-learn) or ``"mnist"`` (torchvision, downloads to ``root``)."""
    if name == "digits":
        return digits(size=size)
    if name == "mnist":
        import torchvision

        sets = [torchvision.datasets.MNIST(root, train=t, download=True) for t in (True, False)]
        x = torch.cat([s.data for s in sets]).unsqueeze(1).float() / 255.0
        y = torch.cat([s.targets for s in sets])
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return x, y
    raise ValueError(f"--dataset must be 'digits' or 'mnist', got {name!r}")


def split(x: torch.Tensor, y: torch.Tensor, val_fraction: float = 0.2, seed: int = 0):
    """Seeded train/validation ``TensorDataset`` split."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    n_val = max(1, int(math.floor(len(x) * val_fraction)))
    val, train = perm[:n_val], perm[n_val:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[val], y[val])

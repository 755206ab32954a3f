"""A tiny LightningModule and generated 16x16 data for the callback tests and the DDP script."""
import random

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset


def make_data(n, seed, size=16, classes=5):
    """Smoothed noise images ``n x 1 x size x size`` and labels (deterministic)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size, size, generator=g)
    x = F.avg_pool2d(x, 3, stride=1, padding=1)  # some spatial structure
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


class AugmentedDataset(Dataset):
    """Random flips and noise drawn from the *global* torch, NumPy and Python RNGs (like torchvision transforms)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        import numpy as np

        img = self.x[i]
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        if random.random() < 0.5:
            img = img.flip(-2)
        return img + 0.01 * float(np.random.randn()), self.y[i]


class DictDataset(Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"label": self.y[i], "image": self.x[i]}


class LitCNN(pl.LightningModule):
    """conv-bn-relu-pool, conv-relu-dropout, GAP, linear (BatchNorm statistics and dropout RNG matter)."""

    def __init__(self, lr=0.05, n_train=64, n_val=48, batch_size=16, augment=False, dict_batches=False, width=6):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 8, 3, padding=1),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 5),
        )
        self.lr, self.batch_size = lr, batch_size
        self.n_train, self.n_val = n_train, n_val
        self.augment, self.dict_batches = augment, dict_batches
        self.losses = []

    def forward(self, x):
        return self.net(x)

    def _xy(self, batch):
        return (batch["image"], batch["label"]) if isinstance(batch, dict) else batch

    def training_step(self, batch, batch_idx):
        x, y = self._xy(batch)
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=False)
        self.losses.append(float(loss.detach()))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = self._xy(batch)
        self.log("val_loss", F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)

    def _dataset(self, n, seed):
        x, y = make_data(n, seed)
        if self.dict_batches:
            return DictDataset(x, y)
        return AugmentedDataset(x, y) if self.augment else TensorDataset(x, y)

    def train_dataloader(self):
        return DataLoader(self._dataset(self.n_train, 1), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self._dataset(self.n_val, 2), batch_size=self.batch_size)


def trainer_kwargs(tmp_path, **kw):
    out = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
        default_root_dir=str(tmp_path),
        num_sanity_val_steps=1,
    )
    out.update(kw)
    return out

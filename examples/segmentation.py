"""Dense prediction: how equivariant does a small segmentation network's *output* become while it trains?

    python examples/segmentation.py            # about a minute on 2 CPU cores, no download
    python examples/segmentation.py --quick    # a few seconds (the test's mode)

A small encoder-decoder learns to label every pixel of generated images (background, squares,
discs, triangles; no data set to download). Like torchvision's segmentation networks it
up-samples its logits with ``F.interpolate`` and returns ``{"out": logits}``: no module computes
that map, so the library measures it as the layer ``(output)`` (docs/layers.md), in the Final
depth part, beside every convolution. Segmenting shapes is a rotation-equivariant task
(rotating an image rotates its label map), so the output's equivariance under 90-degree
rotations is what to watch. An ``EquivarianceCallback`` measures it every few optimizer steps
and logs it to TensorBoard; then

    tensorboard --logdir lightning_logs --samples_per_plugin equivariance=0

and open the "Equivariance" tab: the Curves view's Final part is the output alone (or choose the
layer ``(output)``), its equivariance by step; the heatmap has it as the last row. The tidy CSV
``equivariance.csv`` beside the logs has the same values.
"""
from __future__ import annotations

import argparse
import math
import os
import time
import warnings

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_equivariance import EquivarianceCallback, Rotation90, Translation

CLASSES = ("background", "square", "disc", "triangle")
OUTPUT_KEY = "equivariance/{measure}/rotation90/(output)"


def shapes(n: int, size: int = 32, seed: int = 0):
    """``n`` noisy grey images ``1 x size x size`` with 1-3 shapes each, and their label maps (``size x size``, long).

    Shapes are drawn at random places, sizes and (for triangles) orientations; later shapes cover
    earlier ones, in the image and in the labels alike.
    """
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    images = torch.zeros(n, 1, size, size)
    labels = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        for _ in range(int(torch.randint(1, 4, (), generator=g))):
            kind = int(torch.randint(1, len(CLASSES), (), generator=g))
            r = float(torch.empty(()).uniform_(size / 10, size / 5, generator=g))
            cy, cx = (float(v) for v in torch.empty(2).uniform_(r, size - r, generator=g))
            if kind == 1:  # square
                inside = ((ys - cy).abs() <= r) & ((xs - cx).abs() <= r)
            elif kind == 2:  # disc
                inside = (ys - cy) ** 2 + (xs - cx) ** 2 <= r * r
            else:  # triangle: inside all three half-planes of its edges
                turn = float(torch.rand((), generator=g)) * 2 * math.pi
                angles = [turn + k * 2 * math.pi / 3 for k in range(3)]
                corners = [(cy + r * math.sin(a), cx + r * math.cos(a)) for a in angles]
                sides = []
                for (y0, x0), (y1, x1) in zip(corners, corners[1:] + corners[:1]):
                    sides.append((x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0))
                inside = torch.stack(sides).ge(0).all(0) | torch.stack(sides).le(0).all(0)
            brightness = float(torch.empty(()).uniform_(0.5, 1.0, generator=g))
            images[i, 0][inside] = brightness
            labels[i][inside] = kind
    images += 0.1 * torch.randn(images.shape, generator=g)
    return images, labels


class TinySegNet(nn.Module):
    """Encoder (two poolings) and a 1 x 1 head; logits up-sampled to the input size by ``F.interpolate``."""

    def __init__(self, classes: int = len(CLASSES), width: int = 16):
        super().__init__()

        def block(c_in, c_out):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())

        self.encoder = nn.Sequential(
            block(1, width), nn.MaxPool2d(2), block(width, 2 * width), nn.MaxPool2d(2), block(2 * width, 2 * width),
        )
        self.head = nn.Conv2d(2 * width, classes, 1)

    def forward(self, x: torch.Tensor):
        logits = self.head(self.encoder(x))
        return {"out": F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)}


class Segmenter(pl.LightningModule):
    """Per-pixel cross-entropy around ``net``; logs ``train_loss``, ``val_loss`` and ``val_pixel_acc``."""

    def __init__(self, net: nn.Module, lr: float = 3e-3):
        super().__init__()
        self.net, self.lr = net, lr

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x)["out"], y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)["out"]
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val_pixel_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few steps on few images (seconds; the test's mode)")
    parser.add_argument("--epochs", type=int, default=None, help="default 8 (1 with --quick)")
    parser.add_argument("--train-images", type=int, default=None, help="default 768 (64 with --quick)")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--num-samples", type=int, default=None,
                        help="probe images for the callback (default 64; 16 with --quick)")
    parser.add_argument("--every-n-steps", type=int, default=None,
                        help="measure every n optimizer steps (default 12; 2 with --quick)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a network this small, more threads mostly wait)")
    parser.add_argument("--logdir", default="lightning_logs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    quick = args.quick
    epochs = args.epochs or (1 if quick else 8)
    n_train = args.train_images or (64 if quick else 768)
    num_samples = args.num_samples or (16 if quick else 64)
    every = args.every_n_steps or (2 if quick else 12)
    warnings.filterwarnings("ignore", message=".*(does not have many workers|number of training batches).*")

    torch.set_num_threads(args.threads)
    pl.seed_everything(args.seed, workers=True)
    x, y = shapes(n_train + 64, args.size, seed=args.seed)
    train = TensorDataset(x[:n_train], y[:n_train])
    val = TensorDataset(x[n_train:], y[n_train:])
    net = TinySegNet()
    callback = EquivarianceCallback(
        groups=(Rotation90(), Translation(shifts=[(2, 0), (0, 2)])),  # 90-degree rotations, two 2-px shifts
        num_samples=num_samples,
        every_n_train_steps=every,
        measure_on_fit_start=True,  # the untrained network's values as step 0
        model_name=f"TinySegNet ({sum(p.numel() for p in net.parameters()):,} params)",
        submodule="net",
        progress=False,
    )
    logger = TensorBoardLogger(args.logdir, name="segmentation")
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=logger,
        callbacks=[callback],
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=not quick,
        accelerator="cpu",
        devices=1,
        log_every_n_steps=5,
    )
    t0 = time.time()
    trainer.fit(Segmenter(net), DataLoader(train, batch_size=32, shuffle=True), DataLoader(val, batch_size=64))
    minutes = (time.time() - t0) / 60

    print("\nThe model's output, (output), under 90-degree rotations, by optimizer step:")
    print(f"  {'step':>5s}  {'invariance':>10s}  {'equivariance':>12s}")
    for step in sorted(callback.step_history):
        values = callback.step_history[step]
        inv, eq = (values.get(OUTPUT_KEY.format(measure=m), float("nan")) for m in ("invariance", "equivariance"))
        print(f"  {step:5d}  {inv:10.3f}  {eq:12.3f}")
    acc = float(trainer.callback_metrics.get("val_pixel_acc", float("nan")))
    print(f"val_pixel_acc={acc:.3f} after {trainer.global_step} steps ({minutes:.1f} min)")
    print(f"\nTensorBoard logs in {os.path.abspath(logger.log_dir)}: "
          f"tensorboard --logdir {args.logdir} --samples_per_plugin equivariance=0")
    print(f"tidy CSV: {callback.csv_path(trainer)}")
    return callback, trainer


if __name__ == "__main__":
    main()

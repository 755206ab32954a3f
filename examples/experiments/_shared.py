"""Pieces shared by the paper-reproduction scripts in ``examples/experiments/``.

* models: :class:`CifarResNet` (He et al. 2016's CIFAR ResNet-{20,32,44,56,110}) and
  :class:`WideResNet` (Zagoruyko & Komodakis 2016's WRN-d-k), each with
  :meth:`block_layers`, the per-block layer list the scripts measure by default;
* data: CIFAR-10 (torchvision, downloads) or generated images (``FakeData``, no
  download) with the augmentations of Bruintjes et al. 2023 §4.4;
* :class:`ImageClassifier`: a LightningModule with SGD + step schedule (or Adam),
  batch-level augmentation (CutMix) and soft targets;
* measuring is the library's :class:`~lightning_equivariance.EquivarianceCallback`
  (``every_n_epochs`` plus the end of fit for the CIFAR scripts; ``every_n_train_steps`` and
  ``measure_on_fit_start`` for Kvinge et al. 2022 §4.1's every-200-iterations G-EED);
* argparse helpers and :func:`fit_and_measure`, one training run with its TensorBoard run.

Not part of the library: the experiments need things (CIFAR ResNets, CutMix) that
``lightning_equivariance`` does not.
"""
from __future__ import annotations

import argparse
import math
import os
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from lightning_equivariance import PARTS, EquivarianceCallback

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Training augmentations of Bruintjes et al. 2023 §4.4 (``standard`` = crop + flip, the usual CIFAR recipe).
AUGMENTATIONS = ("none", "crop", "flip", "standard", "cutmix", "randaugment")

_QUIET = (
    ".*(does not have many workers|indexing with dtype torch.uint8|tostring|torch.jit.script|isinstance\\(treespec).*"
)


def quiet_warnings() -> None:
    """Hide third-party warnings that say nothing about the experiment."""
    warnings.filterwarnings("ignore", message=_QUIET)
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")


# ---------------------------------------------------------------------- argparse helpers
def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    parse.__doc__ = f"argparse type: an integer >= {minimum}."
    return parse


positive_int = _int_at_least(1)
nonnegative_int = _int_at_least(0)


def nonnegative_float(text: str) -> float:
    """argparse type: a finite float >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0."""
    value = nonnegative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number > 0, got 0")
    return value


def add_common_arguments(parser: argparse.ArgumentParser, datasets: Sequence[str], default_dataset: str) -> None:
    """``--dataset --data-root --logdir --limit --seed --num-workers --accelerator --smoke``."""
    parser.add_argument(
        "--dataset",
        choices=tuple(datasets),
        default=default_dataset,
        help=f"data set; 'fake' is generated (no download) (default: {default_dataset})",
    )
    parser.add_argument(
        "--data-root", default="data", help="where torchvision stores/downloads the data set (default: data)"
    )
    parser.add_argument(
        "--logdir",
        default="lightning_logs",
        help="TensorBoard log directory, one run per model (default: lightning_logs)",
    )
    parser.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        help="use at most this many training and validation images (quick runs)",
    )
    parser.add_argument("--seed", type=nonnegative_int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--num-workers", type=nonnegative_int, default=min(4, os.cpu_count() or 1), help="data loader workers"
    )
    parser.add_argument(
        "--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu, mps (default: auto)"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=(
            "one tiny step end to end (1 batch of 8, 8 probe images, no workers, no checkpoints): "
            "checks the setup in seconds"
        ),
    )


def add_cifar_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """The CIFAR training recipe (SGD 0.1, momentum 0.9, weight decay 1e-4, batch 128, 200 epochs)
    and the translation measurement of Bruintjes et al. 2023 §4.4-4.5, shared by both CIFAR scripts."""
    parser.add_argument("--epochs", type=positive_int, default=200)
    parser.add_argument("--batch-size", type=positive_int, default=128)
    parser.add_argument("--lr", type=positive_float, default=0.1)
    parser.add_argument("--momentum", type=nonnegative_float, default=0.9)
    parser.add_argument("--weight-decay", type=nonnegative_float, default=1e-4)
    parser.add_argument("--num-samples", type=positive_int, default=2000, help="probe images from the test set")
    parser.add_argument("--max-shift", type=positive_int, default=16, help="diagonal shifts (1, 1) .. (s, s) in pixels")
    parser.add_argument(
        "--every-n-epochs", type=positive_int, default=10, help="measure every N epochs (and at the last)"
    )
    parser.add_argument(
        "--layers",
        choices=("blocks", "auto"),
        default="blocks",
        help="blocks: after every block; auto: every conv/BN/ReLU",
    )
    parser.add_argument(
        "--measure-batch-size",
        type=positive_int,
        default=1024,
        help="images per measuring forward, shifted copies included",
    )
    parser.add_argument("--per-channel", action="store_true", help="also log per-channel values (heatmaps in the tab)")


def check_cifar_recipe_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Validate :func:`add_cifar_recipe_arguments` and apply ``--smoke`` (one tiny step)."""
    if args.max_shift >= 32:
        parser.error(f"--max-shift must be < 32 (the image size), got {args.max_shift}")
    if args.smoke:
        args.epochs, args.batch_size, args.num_workers = 1, 8, 0
        args.num_samples = min(args.num_samples, 8)
        args.limit = min(args.limit or 32, 32)
        args.every_n_epochs = 1


# ---------------------------------------------------------------------- models
class _PadShortcut(nn.Module):
    """He et al. 2016 option A: stride-2 subsampling and zero channels (no parameters)."""

    def __init__(self, extra_channels: int):
        super().__init__()
        self.extra = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::2, ::2]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _PadShortcut(planes - in_planes) if stride != 1 or in_planes != planes else nn.Identity()
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()  # modules, so that layers="auto" sees them

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR-10 ResNet of He et al. 2016 §4.2: ``depth = 6n + 2``, three stages of ``n``
    basic blocks with ``width, 2 width, 4 width`` channels (16/32/64), parameter-free
    shortcuts (option A). ``depth=44``: 7 blocks per stage, 0.66 M parameters.

    Modules: ``stem``, ``stage1.{i}``, ``stage2.{i}``, ``stage3.{i}``, ``pool``, ``fc``.
    """

    def __init__(self, depth: int = 44, num_classes: int = 10, width: int = 16, in_channels: int = 3):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1 (8, 20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        stages, c = [], width
        for s, planes in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(c, planes, stride=2 if s > 0 and i == 0 else 1))
                c = planes
            stages.append(nn.Sequential(*blocks))
        self.stage1, self.stage2, self.stage3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        return self.fc(self.pool(x).flatten(1))

    def block_layers(self) -> List[str]:
        """The stem, every residual block's output (Bruintjes et al. 2023 measure "after each
        residual block"), the global pool and the logits."""
        names = ["stem"]
        for s in ("stage1", "stage2", "stage3"):
            names += [f"{s}.{i}" for i in range(len(getattr(self, s)))]
        return names + ["pool", "fc"]


class WideBasic(nn.Module):
    """Pre-activation wide block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3, plus the shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_planes, planes, 1, stride, bias=False) if stride != 1 or in_planes != planes else None
        )
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()  # modules, so that layers="auto" sees them

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.relu1(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(o)
        out = self.conv1(o)
        out = self.conv2(self.dropout(self.relu2(self.bn2(out))))
        return out + shortcut


class WideResNet(nn.Module):
    """WRN-depth-k of Zagoruyko & Komodakis 2016: ``depth = 6n + 4``, three stages of ``n``
    pre-activation blocks with ``16k, 32k, 64k`` channels after a 16-channel stem.
    ``WideResNet(40, k)``: 6 blocks per stage; 0.56 M (k=1), 2.2 M (k=2), 8.9 M (k=4),
    35.7 M (k=8) parameters.

    Modules: ``stem``, ``block1.{i}``, ``block2.{i}``, ``block3.{i}``, ``relu`` (final
    BN-ReLU), ``pool``, ``fc``.
    """

    def __init__(
        self, depth: int = 40, widen_factor: int = 1, num_classes: int = 10, dropout: float = 0.0, in_channels: int = 3
    ):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40), got {depth}")
        if widen_factor < 1:
            raise ValueError(f"widen_factor must be >= 1, got {widen_factor}")
        n = (depth - 4) // 6
        self.depth, self.widen_factor = depth, widen_factor
        self.stem = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        c = 16
        stages = []
        for s, planes in enumerate((16 * widen_factor, 32 * widen_factor, 64 * widen_factor)):
            blocks = []
            for i in range(n):
                blocks.append(WideBasic(c, planes, stride=2 if s > 0 and i == 0 else 1, dropout=dropout))
                c = planes
            stages.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = stages
        self.bn = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.stem(x))))
        return self.fc(self.pool(self.relu(self.bn(x))).flatten(1))

    def block_layers(self) -> List[str]:
        """The stem, every block's output, the final BN-ReLU, the global pool and the logits."""
        names = ["stem"]
        for s in ("block1", "block2", "block3"):
            names += [f"{s}.{i}" for i in range(len(getattr(self, s)))]
        return names + ["relu", "pool", "fc"]


# ---------------------------------------------------------------------- CIFAR data
def cifar_transforms(augmentation: str):
    """``(train_transform, val_transform, batch_augment)`` for one of :data:`AUGMENTATIONS`.

    Per image (torchvision.transforms.v2, on PIL images): ``crop`` = ``RandomCrop(32,
    padding=4)``, ``flip`` = ``RandomHorizontalFlip()``, ``standard`` = both,
    ``randaugment`` = ``RandAugment()`` (defaults: 2 ops, magnitude 9). ``cutmix`` mixes
    whole batches, so it is returned as ``batch_augment(x, y) -> (x, soft_y)`` for the
    training step. Every image is then scaled to [0, 1] and normalised with the CIFAR-10
    mean and std.
    """
    from torchvision.transforms import v2

    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {augmentation!r}")
    per_image = {
        "none": [],
        "cutmix": [],
        "crop": [v2.RandomCrop(32, padding=4)],
        "flip": [v2.RandomHorizontalFlip()],
        "standard": [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()],
        "randaugment": [v2.RandAugment()],
    }[augmentation]
    tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(CIFAR_MEAN, CIFAR_STD)]
    train = v2.Compose([v2.ToImage(), *per_image, *tail])
    val = v2.Compose([v2.ToImage(), *tail])
    batch_augment = CutMixBatch(num_classes=10) if augmentation == "cutmix" else None
    return train, val, batch_augment


class CutMixBatch:
    """``CutMix`` (Yun et al. 2019) on a batch: ``(x, y) -> (x_mixed, soft one-hot y)``."""

    def __init__(self, num_classes: int, alpha: float = 1.0):
        from torchvision.transforms import v2

        self.cutmix = v2.CutMix(num_classes=num_classes, alpha=alpha)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.cutmix(x, y)


def _first(dataset: Dataset, n: Optional[int]) -> Dataset:
    return dataset if n is None or n >= len(dataset) else Subset(dataset, range(n))


def cifar_datasets(
    dataset: str,
    root: str,
    train_transform,
    val_transform,
    limit: Optional[int] = None,
    fake_sizes: Tuple[int, int] = (5000, 2000),
) -> Tuple[Dataset, Dataset]:
    """CIFAR-10 train/test sets (``"cifar10"``, downloads to ``root``) or generated images
    of the same shape (``"fake"``: torchvision ``FakeData``, 10 classes, nothing downloaded).
    ``limit`` keeps the first ``limit`` images of each."""
    import torchvision

    if dataset == "cifar10":
        train = torchvision.datasets.CIFAR10(root, train=True, download=True, transform=train_transform)
        val = torchvision.datasets.CIFAR10(root, train=False, download=True, transform=val_transform)
    elif dataset == "fake":
        train = torchvision.datasets.FakeData(
            fake_sizes[0], (3, 32, 32), 10, transform=train_transform, random_offset=0
        )
        val = torchvision.datasets.FakeData(
            fake_sizes[1], (3, 32, 32), 10, transform=val_transform, random_offset=10**6
        )
    else:
        raise ValueError(f"dataset must be 'cifar10' or 'fake', got {dataset!r}")
    return _first(train, limit), _first(val, limit)


# ---------------------------------------------------------------------- training
class ImageClassifier(pl.LightningModule):
    """Cross-entropy classifier around ``net``; logs ``train_loss``, ``val_loss``, ``val_acc``.

    Args:
        optimizer: ``"sgd"`` (momentum, L2 weight decay, learning rate divided by 10 at
            each of ``milestones`` - fractions of ``max_epochs`` or absolute epochs) or ``"adam"``.
        batch_augment: ``f(x, y) -> (x, y)`` applied to every training batch (e.g. CutMix,
            whose ``y`` are class probabilities; ``F.cross_entropy`` takes both).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: str = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        milestones: Sequence[float] = (0.5, 0.75),
        batch_augment: Optional[Callable] = None,
    ):
        super().__init__()
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        self.net = net
        self.optimizer_name, self.lr, self.momentum, self.weight_decay = optimizer, lr, momentum, weight_decay
        self.milestones = tuple(milestones)
        self.batch_augment = batch_augment

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.batch_augment is not None:
            x, y = self.batch_augment(x, y)
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log("train_loss", loss, prog_bar=True)
        if y.dim() == 1:
            self.log("train_acc", (logits.argmax(1) == y).float().mean())
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        if self.optimizer_name == "adam":
            return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        epochs = self.trainer.max_epochs if self.trainer is not None and self.trainer.max_epochs else 1
        milestones = sorted({int(round(m * epochs)) if m < 1 else int(m) for m in self.milestones})
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


def smoke_trainer_options(smoke: bool) -> Dict[str, Any]:
    """Trainer options of ``--smoke``: one training and one validation batch, no sanity check."""
    if not smoke:
        return {}
    return dict(
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )


def fit_and_measure(
    *,
    run: str,
    module: pl.LightningModule,
    train: Dataset,
    val: Dataset,
    callback: Callback,
    logdir: str,
    max_epochs: int,
    batch_size: int,
    num_workers: int,
    accelerator: str = "auto",
    seed: int = 0,
    smoke: bool = False,
) -> Dict[str, Any]:
    """Train ``module`` with ``callback`` into the TensorBoard run ``{logdir}/{run}/version_{n}``.

    Returns ``{"log_dir", "val_acc", "minutes", "history"}`` (history: the callback's
    ``{epoch: {scalar: value}}``, the last measurement of each measured epoch).
    """
    pl.seed_everything(seed, workers=True)
    loader_kw = dict(num_workers=num_workers, persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available())
    logger = TensorBoardLogger(logdir, name=run)
    options = dict(
        max_epochs=max_epochs,
        logger=logger,
        callbacks=[callback],
        accelerator=accelerator,
        devices=1,
        log_every_n_steps=min(50, max(1, len(train) // batch_size)),
    )
    options.update(smoke_trainer_options(smoke))
    trainer = pl.Trainer(**options)
    t0 = time.time()
    trainer.fit(
        module,
        DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=len(train) > batch_size, **loader_kw),
        DataLoader(val, batch_size=max(batch_size, 256), **loader_kw),
    )
    history = callback.history if hasattr(callback, "history") else {}
    return {
        "log_dir": logger.log_dir,
        "val_acc": float(trainer.callback_metrics.get("val_acc", float("nan"))),
        "minutes": (time.time() - t0) / 60,
        "history": history,
    }


def train_cifar_net(
    args: argparse.Namespace, *, run: str, net: nn.Module, model_name: str, group, train: Dataset, val: Dataset,
    batch_augment=None,
) -> Dict[str, Any]:
    """Bruintjes et al.'s CIFAR recipe (SGD, steps at 50% and 75%) for ``net``, measured with the correlation
    measures under ``group`` (arguments of :func:`add_common_arguments` and :func:`add_cifar_recipe_arguments`);
    returns :func:`fit_and_measure`'s summary."""
    module = ImageClassifier(
        net, "sgd", lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
        milestones=(0.5, 0.75), batch_augment=batch_augment,
    )
    # every_n_epochs, and the end of fit (measure_on_fit_end): the papers report the trained model
    callback = EquivarianceCallback(
        measures=("invariance", "equivariance"),
        groups=(group,),
        layers=net.block_layers() if args.layers == "blocks" else "auto",
        num_samples=args.num_samples,
        every_n_epochs=args.every_n_epochs,
        batch_size=args.measure_batch_size,
        per_channel=args.per_channel,
        seed=args.seed,
        model_name=model_name,
        submodule="net",
    )
    return fit_and_measure(
        run=run, module=module, train=train, val=val, callback=callback, logdir=args.logdir,
        max_epochs=args.epochs, batch_size=args.batch_size, num_workers=args.num_workers,
        accelerator=args.accelerator, seed=args.seed, smoke=args.smoke,
    )


def print_cifar_summary(
    summary: Dict[str, Dict[str, Any]], group, max_shift: int, label: Callable[[str, Dict[str, Any]], str]
) -> None:
    """Print each run's correlation measures per depth part at its last measured epoch
    (``label(run, s)`` heads each run)."""
    print(f"\nTranslation (shifts 1..{max_shift}) at the last measured epoch, per depth part:")
    for run, s in summary.items():
        last = s["history"][max(s["history"])] if s["history"] else {}
        print(f"  {label(run, s)}  val_acc={s['val_acc']:.3f} ({s['minutes']:.1f} min)")
        for m in ("invariance", "equivariance"):
            print(f"    {m:12s} {part_summary(last, m, group.name)}")


def part_summary(scalars: Dict[str, float], measure_name: str, group: str) -> str:
    """``"Early=0.812 Middle=..."`` from callback scalars ``equivariance/{measure}/{group}/part/{part}``."""
    out = []
    for part in PARTS:
        key = f"equivariance/{measure_name}/{group}/part/{part}"
        if key in scalars:
            out.append(f"{part}={scalars[key]:.3f}")
    return " ".join(out)


# ---------------------------------------------------------------------- images
def rotate_batch(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image of ``x`` (``B x C x H x W``) counter-clockwise by ``degrees[b]``
    about its centre: bilinear interpolation, zeros outside."""
    theta = torch.deg2rad(degrees.to(x.dtype)).to(x.device)
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    # affine_grid maps output to input coordinates; counter-clockwise on screen (y down).
    mat = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)
    grid = F.affine_grid(mat, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class RandomRotationBatch:
    """Batch augmentation: every image rotated by an angle drawn uniformly from [0, 360)."""

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return rotate_batch(x, torch.rand(x.shape[0], device=x.device) * 360.0), y


def seeded_subset(n_total: int, n: int, seed: int) -> torch.Tensor:
    """``min(n, n_total)`` sorted indices drawn with a seeded generator (never the global RNG)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n_total, generator=g)[: min(n, n_total)].sort().values

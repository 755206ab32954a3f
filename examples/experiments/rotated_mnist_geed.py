"""Does a CNN trained with rotation augmentation learn C8-equivariant layers? G-EED on rotated MNIST.

Reproduces Kvinge, Emerson, Jorgenson, Vasquez, Doster & Lew 2022, "In What Ways Are Deep
Neural Networks Invariant and How Should We Measure This?", §4.1 (Figures 2 and 7)::

    python examples/experiments/rotated_mnist_geed.py                 # MNIST (downloads), 2000 steps per model
    python examples/experiments/rotated_mnist_geed.py --dataset digits  # scikit-learn digits, no download
    python examples/experiments/rotated_mnist_geed.py --dataset fake --smoke  # seconds, generated data

Setting of the paper: rotated MNIST - MNIST digits of the classes 0-8, each rotated by a random
angle (seeded, uniform in [0, 360), bilinear) and resized to 29 x 29 (odd, so the strided
pooling of the models stays centred) - and two models trained for 2000 iterations with random
rotation augmentation (every training image rotated again by a fresh random angle): ``cnn``, a
plain CNN, and ``c8``, an e2cnn C8 steerable CNN (``SteerableCNN(n_rotations=8)``; regular
fields, group pooling, then global pooling: equivariant blocks and an invariant head by
design) of matched depth and size. Adam, learning rate 1e-3, batch 64 (the paper gives no
optimiser; both reach > 98 % there). The paper trains 10 copies of each; run the script with
several ``--seed`` values and ``--logdir``s for confidence bands.

Measured every ``--every-n-steps`` (200, as in the paper) training iterations, plus before
the first and after the last, on ``--num-samples`` fixed rotated test images, for the group C8
(``Rotation.cyclic(8)``: 45-degree rotations, interpolated, compared on the inscribed disk):
G-EED (Kvinge et al. 2022, Eq. 4-6; *lower is more equivariant*): ``geed_channel`` (Eq. 5,
per feature map, with the e2cnn fields' channel permutation taken into account for the
steerable model), ``geed_latent_l2`` (Eq. 6, after global pooling and at the logits,
normalised by the mean distance M) and ``geed_softmax`` (KL of the softmax to its orbit mean;
``--measures`` also takes ``geed_latent_cosine``).

What you will see: one TensorBoard run per model, ``{logdir}/rotmnist_{cnn|c8}``
(``tensorboard --logdir lightning_logs --samples_per_plugin equivariance=0``, "Equivariance"
tab; tags ``equivariance_layers/{measure}/rotation8``, step = training iteration; the C8
model is flagged as a baseline and drawn dashed). The paper finds that the steerable model's
channelwise G-EED is much lower (more equivariant) in every block, that the CNN's channelwise
G-EED does not go down during training (augmentation does not teach layerwise equivariance),
while latent and softmax G-EED go down for both, the CNN catching up with the C8 model:
invariance learned through other means than layerwise equivariance.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Dict, List, Optional, Tuple

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _shared import (  # noqa: E402 - sys.path set first
    ImageClassifier,
    RandomRotationBatch,
    add_common_arguments,
    nonnegative_float,
    positive_float,
    positive_int,
    quiet_warnings,
    rotate_batch,
    seeded_subset,
    smoke_trainer_options,
)
from lightning_equivariance import EquivarianceCallback, Rotation  # noqa: E402 - sys.path set first
from lightning_equivariance.baselines import PlainCNN, SteerableCNN, count_parameters  # noqa: E402 - sys.path set first

MODELS = ("cnn", "c8")
GEED_MEASURES = ("geed_channel", "geed_latent_l2", "geed_latent_cosine", "geed_softmax")
NUM_CLASSES = 9  # digits 0-8


def rotated_mnist(dataset: str, root: str, size: int, seed: int, limit: Optional[int] = None):
    """``(train, val)`` ``TensorDataset``s of rotated digits 0-8, ``1 x size x size`` in [0, 1].

    ``"mnist"``: torchvision MNIST (downloads to ``root``; train / test split);
    ``"digits"``: scikit-learn's 8x8 digits up-sampled (no download; seeded 80/20 split);
    ``"fake"``: random images and labels (no download; for checking the setup).
    """
    g = torch.Generator().manual_seed(seed)
    if dataset == "mnist":
        import torchvision

        parts = []
        for train in (True, False):
            s = torchvision.datasets.MNIST(root, train=train, download=True)
            parts.append((s.data.unsqueeze(1).float() / 255.0, s.targets.clone()))
    elif dataset == "digits":
        from lightning_equivariance.data import digits

        x, y = digits(size=size)
        perm = torch.randperm(len(x), generator=g)
        n_val = len(x) // 5
        parts = [(x[perm[n_val:]], y[perm[n_val:]]), (x[perm[:n_val]], y[perm[:n_val]])]
    elif dataset == "fake":
        n = limit or 512
        parts = [
            (torch.rand(n, 1, size, size, generator=g), torch.randint(0, NUM_CLASSES, (n,), generator=g))
            for _ in range(2)
        ]
    else:
        raise ValueError(f"dataset must be 'mnist', 'digits' or 'fake', got {dataset!r}")
    out = []
    for x, y in parts:
        keep = y < NUM_CLASSES
        x, y = x[keep], y[keep]
        if limit:
            x, y = x[:limit], y[:limit]
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        angles = torch.rand(x.shape[0], generator=g) * 360.0
        x = torch.cat([rotate_batch(c, a) for c, a in zip(x.split(1024), angles.split(1024))]).clamp_(0, 1)
        out.append(TensorDataset(x, y))
    return out[0], out[1]


def build_models(run: str, fields: Tuple[int, ...]):
    steerable = SteerableCNN(n_rotations=8, num_classes=NUM_CLASSES, fields=fields)
    if run == "c8":
        return steerable
    return PlainCNN.matching(steerable, num_classes=NUM_CLASSES)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] + " (Kvinge et al. 2022 §4.1)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_common_arguments(parser, datasets=("mnist", "digits", "fake"), default_dataset="mnist")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), help="one run each")
    parser.add_argument(
        "--measures", nargs="+", choices=GEED_MEASURES, default=["geed_channel", "geed_latent_l2", "geed_softmax"],
        help="G-EED variants (Kvinge et al. 2022, Eq. 5, 6, softmax)",
    )
    parser.add_argument("--max-steps", type=positive_int, default=2000, help="training iterations")
    parser.add_argument(
        "--every-n-steps", type=positive_int, default=200, help="measure (and validate) every N iterations"
    )
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--lr", type=positive_float, default=1e-3)
    parser.add_argument("--weight-decay", type=nonnegative_float, default=0.0)
    parser.add_argument("--no-augment", action="store_true", help="train without random rotation augmentation")
    parser.add_argument("--size", type=positive_int, default=29, help="image size (odd keeps the pooling centred)")
    parser.add_argument(
        "--fields",
        nargs="+",
        type=positive_int,
        default=[6, 12, 16],
        help="regular C8 fields per block of the steerable CNN",
    )
    parser.add_argument("--num-samples", type=positive_int, default=500, help="probe images from the test set")
    parser.add_argument(
        "--measure-batch-size",
        type=positive_int,
        default=512,
        help="images per measuring forward, rotated copies included",
    )
    parser.add_argument("--per-channel", action="store_true", help="also log per-channel values (heatmaps in the tab)")
    return parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.size < 9:
        parser.error(f"--size must be >= 9, got {args.size}")
    if len(args.fields) > 4:
        parser.error(f"--fields: at most 4 blocks (each but the last halves the image), got {len(args.fields)}")
    for name in ("models", "measures"):
        values = getattr(args, name)
        if len(set(values)) != len(values):
            parser.error(f"--{name} has duplicates: {values}")
    if args.smoke:
        args.max_steps, args.every_n_steps, args.batch_size, args.num_workers = 1, 1, 8, 0
        args.num_samples = min(args.num_samples, 8)
        args.limit = min(args.limit or 32, 32)
    return args


def main(argv: Optional[List[str]] = None) -> Dict[str, dict]:
    """Train each model; returns ``{run: {"log_dir", "val_acc", "minutes", "params", "history"}}``
    with ``history = {step: {"equivariance/{measure}/rotation8/...": value}}``."""
    args = parse_args(argv)
    quiet_warnings()
    train, val = rotated_mnist(args.dataset, args.data_root, args.size, args.seed, args.limit)
    probe = val.tensors[0][seeded_subset(len(val), args.num_samples, args.seed)]
    group = Rotation.cyclic(8)  # "rotation8"
    summary = {}
    for model in args.models:
        run = f"rotmnist_{model}"
        pl.seed_everything(args.seed, workers=True)
        net = build_models(model, tuple(args.fields))
        params = count_parameters(net)
        module = ImageClassifier(
            net, "adam", lr=args.lr, weight_decay=args.weight_decay,
            batch_augment=None if args.no_augment else RandomRotationBatch(),
        )
        # every N optimizer steps, before the first one and at the end of fit, on the fixed probe set
        callback = EquivarianceCallback(
            measures=args.measures,
            groups=(group,),
            inputs=probe,
            num_samples=len(probe),
            every_n_train_steps=args.every_n_steps,
            measure_on_fit_start=True,
            submodule="net",
            model_name=f"{'C8 steerable CNN' if model == 'c8' else 'CNN'} ({params:,} params)",
            baseline=model == "c8",
            batch_size=args.measure_batch_size,
            per_channel=args.per_channel,
        )
        logger = TensorBoardLogger(args.logdir, name=run)
        options = dict(
            max_steps=args.max_steps,
            max_epochs=-1,
            val_check_interval=args.every_n_steps,
            check_val_every_n_epoch=None,
            logger=logger,
            callbacks=[callback],
            accelerator=args.accelerator,
            devices=1,
            log_every_n_steps=min(50, args.every_n_steps),
        )
        options.update(smoke_trainer_options(args.smoke))
        trainer = pl.Trainer(**options)
        loader_kw = dict(num_workers=args.num_workers, persistent_workers=args.num_workers > 0)
        t0 = time.time()
        trainer.fit(
            module,
            DataLoader(
                train, batch_size=args.batch_size, shuffle=True, drop_last=len(train) > args.batch_size, **loader_kw
            ),
            DataLoader(val, batch_size=256, **loader_kw),
        )
        summary[run] = {
            "log_dir": logger.log_dir,
            "val_acc": float(trainer.callback_metrics.get("val_acc", float("nan"))),
            "minutes": (time.time() - t0) / 60,
            "params": params,
            "history": callback.step_history,
        }

    print("\nC8 G-EED (lower = more equivariant) at the first and last measured step:")
    for run, s in summary.items():
        steps = sorted(s["history"])
        print(f"  {run:16s} {s['params']:>8,} params  val_acc={s['val_acc']:.3f} ({s['minutes']:.1f} min)")
        for m in args.measures:
            for part in ("Early", "Middle", "Late", "Pool", "Final"):
                key = f"equivariance/{m}/{group.name}/part/{part}"
                values = [s["history"][t].get(key) for t in (steps[0], steps[-1])] if steps else []
                if values and None not in values:
                    print(
                        f"    {m:18s} {part:6s} step {steps[0]}: {values[0]:8.4f}   step {steps[-1]}: {values[1]:8.4f}"
                    )
    print(f"\nTensorBoard: tensorboard --logdir {args.logdir} --samples_per_plugin equivariance=0")
    return summary


if __name__ == "__main__":
    main()

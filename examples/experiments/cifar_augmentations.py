"""Which data augmentations make a CIFAR-10 ResNet-44 learn translation equivariance?

Reproduces Bruintjes, Motyka & van Gemert 2023, "What Affects Learned Equivariance in Deep
Image Recognition Models?", §4.4 (Figure 6a)::

    python examples/experiments/cifar_augmentations.py                       # all five, 200 epochs each (GPU!)
    python examples/experiments/cifar_augmentations.py --augmentation crop cutmix --epochs 30
    python examples/experiments/cifar_augmentations.py --dataset fake --smoke  # seconds, no download

Setting of the paper: ResNet-44 for CIFAR (He et al. 2016: 3 stages x 7 basic blocks, 16/32/64
channels, 0.66 M parameters), trained on CIFAR-10 (downloaded by torchvision to
``--data-root``) with exactly one augmentation per run - ``none``, ``crop``
(``RandomCrop(32, padding=4)``), ``flip`` (``RandomHorizontalFlip``), ``cutmix`` (CutMix on
batches) or ``randaugment`` (``RandAugment``); ``standard`` (crop + flip) is offered too.
SGD, batch 128, learning rate 0.1 divided by 10 at epochs 100 and 150 (half and three
quarters of ``--epochs``), momentum 0.9, weight decay 1e-4, 200 epochs.

Measured: correlation invariance and equivariance (Bruintjes et al. 2023, Eq. 4 and 7) for
the diagonal shifts (1, 1) .. (16, 16) (``Translation(max_shift=16)``), on 2000 fixed
images of the CIFAR-10 test set, after the stem, after every residual block, after global
pooling and at the logits (``--layers auto`` measures every conv/BN/ReLU instead), every
``--every-n-epochs`` epochs and at the last epoch.

What you will see: one TensorBoard run per augmentation, ``{logdir}/resnet44_{augmentation}``
(``tensorboard --logdir lightning_logs --samples_per_plugin equivariance=0``, then the
"Equivariance" tab; tags ``equivariance_layers/{invariance|equivariance}/translation``).
The paper finds that random crops and RandAugment raise translation equivariance in the
Middle, Late and Final parts, flips and CutMix hardly change it (CutMix even lowers the
Middle part), and equivariance ~ invariance everywhere: what is learned is invariance.
The script prints the per-part values of the last measurement of every run.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _shared import (  # noqa: E402 - sys.path set first
    AUGMENTATIONS,
    CifarResNet,
    add_cifar_recipe_arguments,
    add_common_arguments,
    check_cifar_recipe_arguments,
    cifar_datasets,
    cifar_transforms,
    positive_int,
    print_cifar_summary,
    quiet_warnings,
    train_cifar_net,
)
from lightning_equivariance import Translation  # noqa: E402 - sys.path set first
from lightning_equivariance.baselines import count_parameters  # noqa: E402 - sys.path set first

PAPER_AUGMENTATIONS = ("none", "crop", "flip", "cutmix", "randaugment")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] + " (Bruintjes et al. 2023 §4.4)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_common_arguments(parser, datasets=("cifar10", "fake"), default_dataset="cifar10")
    parser.add_argument(
        "--augmentation",
        nargs="+",
        choices=AUGMENTATIONS,
        default=list(PAPER_AUGMENTATIONS),
        help="one training run (and TensorBoard run) per augmentation",
    )
    parser.add_argument("--depth", type=positive_int, default=44, help="ResNet depth 6n+2 (20, 32, 44, 56, 110)")
    parser.add_argument("--width", type=positive_int, default=16, help="channels of the first stage (16 in the paper)")
    add_cifar_recipe_arguments(parser)
    return parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.depth - 2) % 6 or args.depth < 8:
        parser.error(f"--depth must be 6n + 2 (8, 20, 32, 44, 56, 110), got {args.depth}")
    if len(set(args.augmentation)) != len(args.augmentation):
        parser.error(f"--augmentation has duplicates: {args.augmentation}")
    check_cifar_recipe_arguments(parser, args)
    return args


def main(argv: Optional[List[str]] = None) -> Dict[str, dict]:
    """Train one ResNet per augmentation; returns ``{run: {"log_dir", "val_acc", "minutes", "history"}}``."""
    args = parse_args(argv)
    quiet_warnings()
    group = Translation(max_shift=args.max_shift)
    summary = {}
    for augmentation in args.augmentation:
        run = f"resnet{args.depth}_{augmentation}"
        train_tf, val_tf, batch_augment = cifar_transforms(augmentation)
        train, val = cifar_datasets(args.dataset, args.data_root, train_tf, val_tf, limit=args.limit)
        net = CifarResNet(depth=args.depth, width=args.width, num_classes=10)
        summary[run] = train_cifar_net(
            args, run=run, net=net, group=group, train=train, val=val, batch_augment=batch_augment,
            model_name=f"ResNet-{args.depth} {augmentation} ({count_parameters(net):,} params)",
        )

    print_cifar_summary(summary, group, args.max_shift, lambda run, s: f"{run:24s}")
    print(f"\nTensorBoard: tensorboard --logdir {args.logdir} --samples_per_plugin equivariance=0")
    return summary


if __name__ == "__main__":
    main()

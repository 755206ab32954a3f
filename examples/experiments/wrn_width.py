"""Do smaller networks learn more translation equivariance? WideResNet-40-k on CIFAR-10.

Reproduces Bruintjes, Motyka & van Gemert 2023, "What Affects Learned Equivariance in Deep
Image Recognition Models?", §4.5 (Figure 6b)::

    python examples/experiments/wrn_width.py                      # k = 1, 2, 4, 8; 200 epochs each (GPU!)
    python examples/experiments/wrn_width.py --widths 1 2 --epochs 30
    python examples/experiments/wrn_width.py --dataset fake --smoke  # seconds, no download

Setting of the paper: WideResNet-40 (Zagoruyko & Komodakis 2016: 3 stages x 6 pre-activation
blocks) with every layer's channel count scaled by k in {1, 2, 4, 8} (0.56 M to 35.7 M
parameters), trained on CIFAR-10 (downloaded by torchvision to ``--data-root``) with the
hyper-parameters of §4.4: SGD, batch 128, learning rate 0.1 divided by 10 at epochs 100 and
150, momentum 0.9, weight decay 1e-4, 200 epochs. The paper does not say which augmentation
§4.5 uses; the default here is ``standard`` (random crop + horizontal flip, the usual CIFAR
recipe of the WRN paper); ``--augmentation`` takes any of §4.4's.

Measured: correlation invariance and equivariance (Bruintjes et al. 2023, Eq. 4 and 7) for
the diagonal shifts (1, 1) .. (16, 16), on 2000 fixed CIFAR-10 test images, after the stem,
every block, the final BN-ReLU, global pooling and the logits, every ``--every-n-epochs``
epochs and at the last epoch.

What you will see: one TensorBoard run per width, ``{logdir}/wrn40-{k}``
(``tensorboard --logdir lightning_logs --samples_per_plugin equivariance=0``, "Equivariance"
tab, tags ``equivariance_layers/{invariance|equivariance}/translation``; compare the runs'
layer profiles at the last epoch). The paper finds that the wider the model, the lower its
learned translation equivariance in the intermediate parts, while invariance at the Final
part is the same for every width: a smaller (more efficient) representation learns to be
more equivariant. The script prints the per-part values of the last measurement of every run.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _shared import (  # noqa: E402 - sys.path set first
    AUGMENTATIONS,
    WideResNet,
    add_cifar_recipe_arguments,
    add_common_arguments,
    check_cifar_recipe_arguments,
    cifar_datasets,
    cifar_transforms,
    nonnegative_float,
    positive_int,
    print_cifar_summary,
    quiet_warnings,
    train_cifar_net,
)
from lightning_equivariance import Translation  # noqa: E402 - sys.path set first
from lightning_equivariance.baselines import count_parameters  # noqa: E402 - sys.path set first


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] + " (Bruintjes et al. 2023 §4.5)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_common_arguments(parser, datasets=("cifar10", "fake"), default_dataset="cifar10")
    parser.add_argument(
        "--widths", nargs="+", type=positive_int, default=[1, 2, 4, 8], help="width factors k; one run each"
    )
    parser.add_argument("--depth", type=positive_int, default=40, help="WRN depth 6n+4 (10, 16, 22, 28, 40)")
    parser.add_argument(
        "--dropout", type=nonnegative_float, default=0.0, help="dropout between the convolutions of a block"
    )
    parser.add_argument(
        "--augmentation",
        choices=AUGMENTATIONS,
        default="standard",
        help="training augmentation (standard = crop + flip)",
    )
    add_cifar_recipe_arguments(parser)
    return parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.depth - 4) % 6 or args.depth < 10:
        parser.error(f"--depth must be 6n + 4 (10, 16, 22, 28, 40), got {args.depth}")
    if len(set(args.widths)) != len(args.widths):
        parser.error(f"--widths has duplicates: {args.widths}")
    if args.dropout >= 1:
        parser.error(f"--dropout must be < 1, got {args.dropout}")
    check_cifar_recipe_arguments(parser, args)
    return args


def main(argv: Optional[List[str]] = None) -> Dict[str, dict]:
    """Train one WRN per width; returns ``{run: {"log_dir", "val_acc", "minutes", "history", "params"}}``."""
    args = parse_args(argv)
    quiet_warnings()
    group = Translation(max_shift=args.max_shift)
    train_tf, val_tf, batch_augment = cifar_transforms(args.augmentation)
    train, val = cifar_datasets(args.dataset, args.data_root, train_tf, val_tf, limit=args.limit)
    summary = {}
    for k in args.widths:
        run = f"wrn{args.depth}-{k}"
        net = WideResNet(depth=args.depth, widen_factor=k, num_classes=10, dropout=args.dropout)
        params = count_parameters(net)
        summary[run] = train_cifar_net(
            args, run=run, net=net, group=group, train=train, val=val, batch_augment=batch_augment,
            model_name=f"WRN-{args.depth}-{k} ({params:,} params)",
        )
        summary[run]["params"] = params

    print_cifar_summary(summary, group, args.max_shift, lambda run, s: f"{run:12s} {s['params']:>12,} params")
    print(f"\nTensorBoard: tensorboard --logdir {args.logdir} --samples_per_plugin equivariance=0")
    return summary


if __name__ == "__main__":
    main()

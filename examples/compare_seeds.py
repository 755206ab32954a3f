"""Compare runs the way papers do: three seeds of each model, grouped, with intervals.

    python examples/compare_seeds.py            # 9 runs of 6 epochs, no download
                                                # (each about as long as a run of rotated_digits.py)
    python examples/compare_seeds.py --quick    # a tiny smoke run (seconds per run)

Three models on the embedded digits ("Digits6", as ``examples/rotated_digits.py``), each
trained with ``--seeds`` seeds (default 3) and measured by an ``EquivarianceCallback`` at every
epoch end, the seeds of one model recorded as one run group (``run_group=``):

* ``cnn`` - a plain CNN;
* ``cnn_rotaug`` - the same CNN trained with random 90-degree rotations;
* ``steerable_c4`` - the e2cnn C4 steerable baseline of matched size (drawn dashed).

Each run is a TensorBoard run ``{logdir}/{model}/seed{n}``. At the end the script prints each
group's mean and 95% Student-t interval over its seeds per depth part (Rotation90
equivariance at the last epoch) and writes one self-contained HTML report of all the runs
(``--report``; the same as ``lightning-equivariance report LOGDIR -o FILE``). Then
``tensorboard --logdir LOGDIR --samples_per_plugin equivariance=0``: the Equivariance tab shows
the three groups as bands (docs/compare.md).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Classifier, load_dataset, rotated_variant, split  # noqa: E402 - sys.path set first
from lightning_equivariance import PARTS, EquivarianceCallback, Rotation90  # noqa: E402 - sys.path set first
from lightning_equivariance.baselines import PlainCNN, SteerableCNN, count_parameters  # noqa: E402 - sys.path set first
from lightning_equivariance.html_report import human_size, write_logdir_report  # noqa: E402 - sys.path set first
from lightning_equivariance_tb.run_groups import INTERVAL_LABEL, group_statistics  # noqa: E402 - sys.path set first

MODELS = ("cnn", "cnn_rotaug", "steerable_c4")
QUICK = dict(epochs=2, limit=240, num_samples=16, fields=(2, 4, 4))


def build(model: str, classes: int, fields):
    """The network of ``model`` and whether its training images are rotated (augmentation)."""
    steerable = SteerableCNN(n_rotations=4, num_classes=classes, fields=tuple(fields))
    if model == "steerable_c4":
        return steerable, False
    return PlainCNN.matching(steerable, num_classes=classes), model == "cnn_rotaug"


def train_one(model: str, seed: int, args, data, classes: int):
    """Fit one (model, seed); returns ``{scalar: value}`` of its last measurement."""
    train, val = data
    pl.seed_everything(seed, workers=True, verbose=False)
    net, augment = build(model, classes, args.fields)
    callback = EquivarianceCallback(
        groups=(Rotation90(),),
        num_samples=args.num_samples,
        model_name=f"{type(net).__name__} ({count_parameters(net):,} params)",
        baseline=model.startswith("steerable"),
        submodule="net",
        run_group=model,  # the seeds of one model form a group
        progress=False,
    )
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        logger=TensorBoardLogger(args.logdir, name=model, version=f"seed{seed}", default_hp_metric=False),
        callbacks=[callback],
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=not args.quick,
        accelerator="cpu" if args.quick else "auto",
        devices=1,
        log_every_n_steps=5,
    )
    trainer.fit(Classifier(net, augment_rotations=augment),
                DataLoader(train, batch_size=64, shuffle=True), DataLoader(val, batch_size=256))
    last = callback.step_history
    return last[max(last)] if last else {}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a tiny smoke run: %s" % ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--seeds", type=int, default=3, help="seeds per model (0 .. N-1)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--limit", type=int, default=None, help="use at most this many images")
    parser.add_argument("--num-samples", type=int, default=256, help="probe images for the callback")
    parser.add_argument("--fields", type=int, nargs=3, default=(6, 12, 16), help="steerable fields per block")
    parser.add_argument("--logdir", default="compare_logs")
    parser.add_argument("--report", default=None, help="HTML report path (default: {logdir}/report.html)")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error("--seeds must be at least 2 (an interval over runs needs two of them)")
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    taken = [
        f"{m}/seed{s}"
        for m in args.models
        for s in range(args.seeds)
        if os.path.exists(os.path.join(args.logdir, m, f"seed{s}"))
    ]
    if taken:
        parser.error(f"--logdir {args.logdir!r} already holds {taken[0]}; pass another --logdir or delete it")
    warnings.filterwarnings(
        "ignore", message=".*(does not have many workers|indexing with dtype torch.uint8|tostring).*"
    )

    x, y = load_dataset("digits", 29)
    x, y, classes = rotated_variant(x, y, "upright")
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    data = split(x, y, seed=0)  # one split: the seeds change the weights and the batches

    last = {}
    t0 = time.time()
    for model in args.models:
        for seed in range(args.seeds):
            last[(model, seed)] = train_one(model, seed, args, data, classes)
            print(f"  {model} seed {seed}: done ({time.time() - t0:.0f} s so far)", flush=True)

    print(f"\nRotation90 equivariance at the last epoch, per depth part: mean [{INTERVAL_LABEL}]")
    for model in args.models:
        prefix = "equivariance/equivariance/rotation90/part/"
        keys = [prefix + p for p in PARTS if any(prefix + p in s for (m, _), s in last.items() if m == model)]
        cells = []
        for key in keys:
            stats = group_statistics({seed: {0: s[key]} for (m, seed), s in last.items() if m == model and key in s})[0]
            interval = "" if stats["low"] is None else f" [{stats['low']:.3f}, {stats['high']:.3f}]"
            cells.append(f"{key.rsplit('/', 1)[-1]}={stats['mean']:.3f}{interval}")
        print(f"  {model:13s} " + "  ".join(cells))

    report = args.report or os.path.join(args.logdir, "report.html")
    size = write_logdir_report(
        [args.logdir], report, title="Three seeds per model: plain CNN, rotation-augmented CNN, C4 steerable CNN"
    )
    print(f"\nHTML report: {report} ({human_size(size)}), opens offline in any browser")
    print(f"TensorBoard: tensorboard --logdir {args.logdir} --samples_per_plugin equivariance=0")
    return last


if __name__ == "__main__":
    main()

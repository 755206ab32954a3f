"""Cost of ``EquivarianceCallback`` at default settings, printed as JSON.

One training epoch of a small CNN on 10,000 generated 3x32x32 images (plus a 1,000-image
validation set, where the default ``stage="validation"`` draws its probe set) is timed
without and with the callback (default settings: 512 probe images, ``Rotation90``,
invariance + equivariance, ``layers="auto"``). Reported:

* ``epoch_seconds_*``: ``on_train_epoch_start`` -> ``on_train_epoch_end`` (training,
  validation and the callback), the best of ``--repeats`` runs of each, interleaved;
* ``callback_share_of_epoch``: the callback's wall time (probe-set reading on the first
  epoch, measurement, restoring, logging) / the epoch with the callback; target <= 0.05;
* ``share_of_epoch_at_1x_bare_forward``: the share a measurement costing exactly one bare
  forward would have - a floor set by ``num_samples`` x group elements against the epoch;
* ``measurement_over_bare_forward``: ``Measurement.update + compute`` on the probe images
  against a bare ``no_grad`` eval forward of the same probe images x group elements
  (identity included), stacked and chunked exactly as the engine does; target <= 1.5.
  ``callback_over_bare_forward`` is the same with the callback's in-training wall time.

``--fit example`` and ``--fit resnet50`` (issue 23, "the callback's share") instead time one whole
fit and report the share of it spent measuring, as the callback's own end-of-fit line says it
("measuring took X s of Y s of fit (Z%)": ``measuring_seconds``, ``fit_seconds``, ``share_of_fit``):

* ``example``: the main example's plain CNN run (``examples/rotated_digits.py``, run ``cnn``):
  ``PlainCNN.matching(SteerableCNN(4, 6, (6, 12, 16)))`` in the examples' ``Classifier``, Digits6
  (scikit-learn's embedded digits at 29x29, classes 0, 1, 6, 8 removed, 80/20 split), batch 64,
  the example's callback (``Rotation90`` + ``Translation(max_shift=2)``, 256 probe images,
  ``per_channel=True``, ``submodule="net"``), measured at every epoch end, ``--epochs`` epochs (the example: 8);
* ``resnet50``: torchvision ``resnet50(weights=None, num_classes=10)`` on generated 3x64x64 images
  (random tensors), ``--steps`` training steps (20) of batch ``--batch-size`` (16), measured every
  ``--every`` steps (5) on 64 training images (``stage="train"``), ``Rotation90`` + ``Translation(max_shift=4)``.

The machine is shared: ``load_average`` is printed with the result, and every time is
the best of its repeats.

    python benchmarks/bench_callback.py [--repeats 2] [--n-train 10000] [--threads 2]
    python benchmarks/bench_callback.py --fit example [--epochs 8] --threads 2
    python benchmarks/bench_callback.py --fit resnet50 [--steps 20 --every 5] --threads 2
"""
import argparse
import json
import os
import sys
import tempfile
import time
import warnings

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_equivariance import EquivarianceCallback, Measurement


def make_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = F.avg_pool2d(torch.randn(n, 3, 32, 32, generator=g), 3, stride=1, padding=1)
    return x, torch.randint(0, 10, (n,), generator=g)


class SmallCNN(pl.LightningModule):
    def __init__(self, n_train, n_val, batch_size):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10),
        )  # fmt: skip
        self.n_train, self.n_val, self.batch_size = n_train, n_val, batch_size

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        loss = F.cross_entropy(self(batch[0]), batch[1])
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)

    def train_dataloader(self):
        return DataLoader(TensorDataset(*make_data(self.n_train, 1)), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(TensorDataset(*make_data(self.n_val, 2)), batch_size=256)


class EpochTimer(pl.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        self.t0 = time.perf_counter()

    def on_validation_start(self, trainer, pl_module):
        self.train_seconds = time.perf_counter() - self.t0

    def on_train_epoch_end(self, trainer, pl_module):
        self.seconds = time.perf_counter() - self.t0


class TimedCallback(EquivarianceCallback):
    seconds = 0.0

    def measure_now(self, trainer, pl_module, epoch):
        t0 = time.perf_counter()
        try:
            return super().measure_now(trainer, pl_module, epoch)
        finally:
            self.seconds += time.perf_counter() - t0


def run_epoch(args, with_callback, logdir):
    pl.seed_everything(0, verbose=False)
    model = SmallCNN(args.n_train, args.n_val, args.batch_size)
    timer = EpochTimer()
    cb = TimedCallback() if with_callback else None
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        callbacks=([cb] if cb else []) + [timer],
        logger=CSVLogger(logdir, name="with" if with_callback else "without"),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model)
    print(f"# {'with' if with_callback else 'without'}: epoch {timer.seconds:.2f}s, training batches "
          f"{timer.train_seconds:.2f}s, callback {cb.seconds if cb else 0:.2f}s", file=sys.stderr)
    return timer.seconds, cb, model


def best_of(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


class ShareCallback(EquivarianceCallback):
    """The callback, keeping its own end-of-fit figures: seconds measuring, seconds of fit."""

    fit_seconds = measuring_seconds = float("nan")

    def on_train_end(self, trainer, pl_module):
        super().on_train_end(trainer, pl_module)
        self.fit_seconds = time.perf_counter() - self._clock[0]  # as the end-of-fit line computes it
        self.measuring_seconds = self._clock[1]


def example_fit(args):
    """The main example's ``cnn`` run (examples/rotated_digits.py), its model, data and callback."""
    import lightning_equivariance

    examples = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(lightning_equivariance.__file__))),
                            "examples")
    sys.path.insert(0, examples)
    from common import Classifier, load_dataset, rotated_variant, split
    from lightning_equivariance import Rotation90, Translation
    from lightning_equivariance.baselines import PlainCNN, SteerableCNN, count_parameters

    x, y = load_dataset("digits", 29)
    x, y, classes = rotated_variant(x, y, "upright", seed=0)
    train, val = split(x, y, seed=0)
    pl.seed_everything(0, workers=True, verbose=False)
    net = PlainCNN.matching(SteerableCNN(n_rotations=4, num_classes=classes, fields=(6, 12, 16)), num_classes=classes)
    callback = ShareCallback(
        groups=(Rotation90(), Translation(max_shift=2)),
        num_samples=256,
        model_name=f"{type(net).__name__} ({count_parameters(net):,} params)",
        baseline=False,
        submodule="net",
        per_channel=True,
    )
    loaders = (DataLoader(train, batch_size=64, shuffle=True), DataLoader(val, batch_size=256))
    setup = {"model": f"examples/rotated_digits.py run cnn: {callback.model_name}, Digits6 29x29 "
             f"({len(train)} train, {len(val)} val images, batch 64)", "epochs": args.epochs}
    return Classifier(net), callback, loaders, dict(max_epochs=args.epochs, log_every_n_steps=5), setup


class GeneratedClassifier(pl.LightningModule):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


def resnet50_fit(args):
    """ResNet-50 (random weights, 10 classes) on generated 3x64x64 images, measured every ``--every`` steps."""
    import torchvision

    from lightning_equivariance import Rotation90, Translation

    pl.seed_everything(0, workers=True, verbose=False)
    g = torch.Generator().manual_seed(0)
    n = args.steps * args.batch_size
    data = TensorDataset(torch.randn(n, 3, args.size, args.size, generator=g), torch.randint(0, 10, (n,), generator=g))
    callback = ShareCallback(
        groups=(Rotation90(), Translation(max_shift=4)),
        num_samples=64,
        every_n_train_steps=args.every,
        stage="train",
    )
    setup = {"model": f"torchvision resnet50(weights=None, num_classes=10), generated 3x{args.size}x{args.size} "
             f"random images, batch {args.batch_size}", "steps": args.steps, "every_n_train_steps": args.every}
    net = torchvision.models.resnet50(weights=None, num_classes=10)
    return GeneratedClassifier(net), callback, (DataLoader(data, batch_size=args.batch_size),), \
        dict(max_steps=args.steps, max_epochs=1), setup


def fit_share(args):
    """One whole fit with the callback: the share of its wall time spent measuring."""
    module, callback, loaders, trainer_args, setup = (example_fit if args.fit == "example" else resnet50_fit)(args)
    load_before = [round(v, 2) for v in os.getloadavg()]
    with tempfile.TemporaryDirectory() as logdir:
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, callbacks=[callback], logger=CSVLogger(logdir, name=args.fit),
            enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False, **trainer_args,
        )
        t0 = time.perf_counter()
        trainer.fit(module, *loaders)
        wall = time.perf_counter() - t0
    report = callback.last_report
    result = {
        "fit": args.fit,
        "setup": {
            **setup,
            "callback": {
                "measures": list(callback.measures),
                "groups": [getattr(g, "name", str(g)) for g in callback.groups],
                "num_samples": callback.num_samples,
                "layers_measured": len({r.layer for r in report.results}),
                "stage": callback.stage,
                "measurements_at_steps": sorted(callback._runs.steps),
            },
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average_before": load_before,
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
        },
        # the callback's own end-of-fit figures ("measuring took X s of Y s of fit (Z%)")
        "measuring_seconds": round(callback.measuring_seconds, 2),
        "fit_seconds": round(callback.fit_seconds, 2),
        "share_of_fit": round(callback.measuring_seconds / callback.fit_seconds, 4),
        "trainer_fit_wall_seconds": round(wall, 2),
        "training_seconds_without_measuring": round(callback.fit_seconds - callback.measuring_seconds, 2),
    }
    print(json.dumps(result, indent=2))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=10_000)
    parser.add_argument("--n-val", type=int, default=1_000)
    parser.add_argument("--batch-size", type=int, default=None, help="training batch (64; --fit resnet50: 16)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--fit", choices=("default", "example", "resnet50"), default="default",
                        help="default: the epoch with/without the callback; example / resnet50: one fit's share")
    parser.add_argument("--epochs", type=int, default=8, help="--fit example: epochs (the example's 8)")
    parser.add_argument("--steps", type=int, default=20, help="--fit resnet50: training steps")
    parser.add_argument("--every", type=int, default=5, help="--fit resnet50: measure every N steps")
    parser.add_argument("--size", type=int, default=64, help="--fit resnet50: image side")
    args = parser.parse_args()
    if args.batch_size is None:
        args.batch_size = 16 if args.fit == "resnet50" else 64
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    if args.fit != "default":
        return fit_share(args)

    without, with_, cb_seconds = [], [], []
    cb = model = None
    with tempfile.TemporaryDirectory() as logdir:
        for _ in range(args.repeats):  # interleaved, so slow phases of a shared machine hit both
            without.append(run_epoch(args, False, logdir)[0])
            seconds, cb, model = run_epoch(args, True, logdir)
            with_.append(seconds)
            cb_seconds.append(cb.seconds)
    i = min(range(len(with_)), key=with_.__getitem__)
    epoch_with, callback_seconds = with_[i], cb_seconds[i]

    # Measurement alone vs a bare forward of the same stacked images, on the trained model.
    net = model.eval()
    probe = cb._probes.cached()  # this process's probe images, read by the callback
    groups = cb.groups
    meas = Measurement(net, measures=cb.measures, groups=groups, layers=cb.layers, batch_size=cb.batch_size)
    assert not getattr(meas, "transforms", None), "the bare-forward comparison is for the stacked pass"

    chunk = meas.samples_per_forward
    stacked = [meas._stack(probe[s : s + chunk]) for s in range(0, probe.shape[0], chunk)]

    @torch.no_grad()
    def bare_forward():
        for x in stacked:
            net(x)

    def measurement():
        m = Measurement(net, measures=cb.measures, groups=groups, layers=cb.layers, batch_size=cb.batch_size)
        m.update(probe)
        m.compute()

    bare_forward()  # warm-up
    bare = best_of(bare_forward, 3)
    measured = best_of(measurement, 3)
    result = {
        "setup": {
            "model": "SmallCNN conv32-bn-relu-pool, conv64-bn-relu-pool, conv128-bn-relu, GAP, linear (3x32x32)",
            "train_images": args.n_train,
            "val_images": args.n_val,
            "train_batch_size": args.batch_size,
            "callback": {
                "measures": list(cb.measures),
                "groups": [g.name for g in meas.groups],
                "num_samples": cb.num_samples,
                "batch_size": cb.batch_size,
                "layers_measured": len({r.layer for r in cb.last_report.results}),
                "stage": cb.stage,
            },
            "forward_images": int(sum(x.shape[0] for x in stacked)),
            "torch_threads": torch.get_num_threads(),
            "repeats": args.repeats,
            "load_average": [round(v, 2) for v in os.getloadavg()],
        },
        "epoch_seconds_without_callback": round(min(without), 3),
        "epoch_seconds_with_callback": round(epoch_with, 3),
        "epoch_seconds_all_runs": {"without": [round(v, 3) for v in without], "with": [round(v, 3) for v in with_]},
        "callback_seconds_in_epoch": round(callback_seconds, 3),
        "callback_share_of_epoch": round(callback_seconds / epoch_with, 4),
        "epoch_slowdown": round(epoch_with / min(without) - 1, 4),
        "bare_forward_seconds": round(bare, 3),
        "measurement_seconds": round(measured, 3),
        "measurement_over_bare_forward": round(measured / bare, 3),
        "callback_over_bare_forward": round(callback_seconds / bare, 3),
        # The share even a measurement costing exactly one bare forward would have.
        "share_of_epoch_at_1x_bare_forward": round(bare / (min(without) + bare), 4),
        "targets": {"callback_share_of_epoch": 0.05, "over_bare_forward": 1.5},
    }
    result["meets_share_target"] = result["callback_share_of_epoch"] <= 0.05
    result["meets_forward_target"] = result["measurement_over_bare_forward"] <= 1.5
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""The main example: how much rotation equivariance do CNNs learn, layer by layer, epoch by epoch?

    python examples/rotated_digits.py                # ~3 minutes on 2 CPU cores, no download
    python examples/rotated_digits.py --tensorboard  # and watch the curves live
    python examples/rotated_digits.py --dataset mnist  # torchvision's MNIST (downloads)

After Bruintjes et al. 2023 §4.3: digits without the classes 0, 1, 6, 8 ("Digits6"; scikit-
learn's 8x8 digits up-sampled to 29x29 - an odd size keeps strided pooling exactly
rot90-equivariant). Three models are trained, each with an ``EquivarianceCallback``
measuring correlation invariance and equivariance (Eq. 4, 7) for 90-degree rotations and
small translations at every epoch end, each logged as one TensorBoard run under
``lightning_logs/``:

* ``cnn`` - a plain CNN;
* ``cnn_rotaug`` - the same CNN trained with random 90-degree rotations (augmentation);
* ``steerable_c4`` - an e2cnn C4 steerable CNN of matched depth and size (a baseline: its
  equivariance is designed in, so its curves are flat near 1).

``--task rot-inv`` / ``rot-eq`` train on the paper's rotated variants instead.
Then ``tensorboard --logdir lightning_logs --samples_per_plugin equivariance=0`` and open
the "Equivariance" tab.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import warnings

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Classifier, load_dataset, rotated_variant, split  # noqa: E402 - sys.path set first
from lightning_equivariance import EquivarianceCallback, Rotation90, Translation  # noqa: E402 - sys.path set first
from lightning_equivariance.baselines import PlainCNN, SteerableCNN, count_parameters  # noqa: E402 - sys.path set first

RUNS = ("cnn", "cnn_rotaug", "steerable_c4")


def build(run: str, classes: int):
    steerable = SteerableCNN(n_rotations=4, num_classes=classes, fields=(6, 12, 16))
    if run == "steerable_c4":
        return steerable, False
    return PlainCNN.matching(steerable, num_classes=classes), run == "cnn_rotaug"


def start_tensorboard(logdir: str, port: int):
    exe = shutil.which("tensorboard") or os.path.join(os.path.dirname(sys.executable), "tensorboard")
    cmd = [exe, "--logdir", logdir, "--port", str(port), "--samples_per_plugin", "equivariance=0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"TensorBoard: http://localhost:{port}/#equivariance  (pid {proc.pid})", flush=True)
    return proc


def _margin_text(part, margin, low, significant) -> str:
    """``Part=margin [low, inf)`` (``*`` when significant); ``-`` without a margin, no interval below 2 pairs."""
    if margin is None or margin != margin:
        return f"{part}=-"
    interval = f"[{low:+.3f}, inf)" if low is not None and low == low else "(no interval)"
    return f"{part}={margin:+.3f} {interval}{'*' if significant else ''}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("digits", "mnist"), default="digits")
    parser.add_argument("--task", choices=("upright", "rot-inv", "rot-eq"), default="upright")
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--size", type=int, default=29)
    parser.add_argument("--limit", type=int, default=None, help="use at most this many images (quick runs)")
    parser.add_argument("--num-samples", type=int, default=256, help="probe images for the callback")
    parser.add_argument("--logdir", default="lightning_logs")
    parser.add_argument("--tensorboard", action="store_true", help="start TensorBoard on --logdir and keep it running")
    parser.add_argument("--port", type=int, default=6006)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    warnings.filterwarnings(
        "ignore", message=".*(does not have many workers|indexing with dtype torch.uint8|tostring).*"
    )

    x, y = load_dataset(args.dataset, args.size)
    x, y, classes = rotated_variant(x, y, args.task, seed=args.seed)
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    train, val = split(x, y, seed=args.seed)
    tb = start_tensorboard(args.logdir, args.port) if args.tensorboard else None

    summary, above, margins, probes = {}, {}, {}, 0
    for run in args.runs:
        pl.seed_everything(args.seed, workers=True)
        net, augment = build(run, classes)
        module = Classifier(net, augment_rotations=augment)
        callback = EquivarianceCallback(
            groups=(Rotation90(), Translation(max_shift=2)),
            num_samples=args.num_samples,
            model_name=f"{type(net).__name__} ({count_parameters(net):,} params)",
            baseline=run.startswith("steerable"),
            submodule="net",
            per_channel=True,  # per-channel heatmaps in the Channels view
        )
        trainer = pl.Trainer(
            max_epochs=args.epochs,
            logger=TensorBoardLogger(args.logdir, name=run),  # lightning_logs/{run}/version_{n}
            callbacks=[callback],
            enable_checkpointing=False,
            enable_model_summary=False,
            accelerator="auto",
            devices=1,
            log_every_n_steps=5,
            # Lightning's bar redraws with carriage returns: a terminal only (piped or in CI
            # each measurement prints one line instead, lightning_equivariance/progress.py).
            enable_progress_bar=sys.stdout.isatty(),
        )
        t0 = time.time()
        trainer.fit(
            module,
            DataLoader(train, batch_size=64, shuffle=True),
            DataLoader(val, batch_size=256),
        )
        last = callback.history[max(callback.history)]
        detail = callback.last_report.parts(detail=True)
        rotation = detail[detail.group == "rotation90"]
        above[run] = {f"{r.measure[:3]}.{r.part}": r.above_chance for r in rotation.itertuples()}
        margins[run] = {(r.measure, r.part): (r.margin, r.margin_low, r.significant) for r in rotation.itertuples()}
        probes = callback.last_report.num_samples
        summary[run] = {
            "minutes": (time.time() - t0) / 60,
            "val_acc": float(trainer.callback_metrics.get("val_acc", float("nan"))),
            **{k.replace("equivariance/", "", 1): v for k, v in last.items() if "/part/" in k and "rotation90" in k},
        }

    print("\nRotation90 at the last epoch (per depth part):")
    for run, s in summary.items():
        parts = "  ".join(f"{k.split('/')[0][:3]}.{k.split('/')[-1]}={v:.3f}" for k, v in s.items() if "/part/" in k)
        print(f"  {run:14s} val_acc={s['val_acc']:.3f} ({s['minutes']:.1f} min)  {parts}")
    print("Above chance (docs/measures.md §7: 1 perfect, 0 at chance; '-' uninformative):")
    for run, levels in above.items():
        shown = "  ".join(f"{k}={'-' if v is None or v != v else f'{v:.2f}'}" for k, v in levels.items())
        print(f"  {run:14s} {shown}")
    print(f"Margin above chance with its one-sided 95% interval ({probes} probe images, {probes // 2} pairs; "
          "docs/measures.md §7; part = mean of its layers'; * = every layer of the part significantly above chance):")
    for run, rows in margins.items():
        for measure in dict.fromkeys(m for m, _ in rows):
            shown = "  ".join(_margin_text(part, *rows[(measure, part)]) for m, part in rows if m == measure)
            print(f"  {run:14s} {measure[:3]}  {shown}")
        significant = [f"{m[:3]}.{p}" for (m, p), (_, _, sig) in rows.items() if sig]
        print(f"  {'':14s} significant: {', '.join(significant) if significant else 'none'}")
    print(f"\nTensorBoard logs in {os.path.abspath(args.logdir)}: "
          f"tensorboard --logdir {args.logdir} --samples_per_plugin equivariance=0")
    if tb is not None:
        print("TensorBoard keeps running; Ctrl-C to stop.")
        try:
            tb.wait()
        except KeyboardInterrupt:
            tb.terminate()
    return summary


if __name__ == "__main__":
    main()

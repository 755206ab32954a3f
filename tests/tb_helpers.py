"""Test helpers for the TensorBoard plugin: fake reports and logdirs, real
tiny training runs, and a TensorBoard + headless Chromium harness.

The real report comes from ``lightning_equivariance.measure``; the writer
only duck-types it (``report.series()`` yielding objects with ``measure``,
``group``, ``layers``, ``parts``, ``values``, ``per_channel``,
``higher_is_better``), so the fakes stand in for it where exact, known
values are needed (route tests). The browser test serves real runs
(:func:`train_logdir`).
"""

import dataclasses
import os
from typing import List, Optional

import numpy as np

from lightning_equivariance_tb.summary import write_report, write_series

XSS_RUN = "<img src=x onerror=alert(1)>"
"""A hostile run name: must show as text everywhere."""


@dataclasses.dataclass
class FakeSeries:
    measure: str
    group: str
    layers: List[str]
    parts: List[str]
    values: np.ndarray
    per_channel: Optional[List[np.ndarray]] = None
    higher_is_better: Optional[bool] = True


@dataclasses.dataclass
class FakeReport:
    items: List[FakeSeries]

    def series(self):
        return iter(self.items)


def default_parts(n_layers):
    """Early/Middle/Late split of all but the last two layers, then Pool, Final."""
    if n_layers < 3:
        return ["Early"] * n_layers
    n_maps = n_layers - 2
    return [("Early", "Middle", "Late")[3 * i // n_maps] for i in range(n_maps)] + [
        "Pool",
        "Final",
    ]


def layer_names(n_layers):
    """``features.i.conv`` ..., then ``pool`` and ``fc`` (for 3+ layers)."""
    if n_layers < 3:
        return ["features.%d.conv" % i for i in range(n_layers)]
    return ["features.%d.conv" % i for i in range(n_layers - 2)] + ["pool", "fc"]


def fake_report(
    epoch,
    *,
    n_layers=6,
    channels=None,
    measures=("equivariance", "invariance"),
    groups=("rot90",),
    seed=0,
    offset=0.0,
    tilt=0.0,
    names=None,
):
    """A deterministic report whose values rise with ``epoch`` and depth.

    ``offset`` shifts a run's values, ``tilt`` adds ``tilt * (depth - 0.5)``
    (so runs rank differently per depth part). ``channels``: channel count
    per layer; when given, every series also carries per-channel values
    whose mean is the layer value.
    """
    names = list(names or layer_names(n_layers))
    parts = default_parts(len(names))
    items = []
    depth = np.linspace(0.0, 1.0, len(names))
    growth = 1 - np.exp(-0.3 * (epoch + 1))
    for mi, measure in enumerate(measures):
        for gi, group in enumerate(groups):
            values = (
                0.3
                + 0.4 * depth * growth
                + offset
                + tilt * (depth - 0.5)
                + 0.06 * np.sin(3 * np.pi * depth + offset * 20) * growth
                - 0.1 * mi
                + 0.05 * gi
            )
            values = np.clip(values, 0, 1)
            per_channel = None
            if channels is not None:
                rng = np.random.default_rng(seed + 1000 * epoch + 10 * mi + gi)
                per_channel = []
                for value, count in zip(values, channels):
                    noise = rng.normal(0, 0.05, size=count)
                    per_channel.append(value + noise - noise.mean())
            items.append(
                FakeSeries(
                    measure=measure,
                    group=group,
                    layers=names,
                    parts=parts,
                    values=values.astype(np.float32),
                    per_channel=per_channel,
                    higher_is_better=True,
                )
            )
    return FakeReport(items)


RUNS = {
    # run name: how fake_report draws it, and its final "val/acc"
    "resnet_a": dict(offset=0.00, tilt=0.20, model="resnet18", baseline=False, acc=0.71),
    "resnet_b": dict(offset=0.05, tilt=-0.10, model="resnet18", baseline=False, acc=0.74),
    "resnet_c": dict(offset=0.10, tilt=0.10, model="resnet18", baseline=False, acc=0.80),
    "steerable_baseline": dict(
        offset=0.25, tilt=0.0, model="C4 steerable CNN", baseline=True, acc=0.77
    ),
    XSS_RUN: dict(offset=-0.05, tilt=0.30, model="<b>evil</b> model", baseline=False, acc=0.65),
}


class EventWriter:
    """An open writer with ``add_summary`` over TensorBoard's EventFileWriter
    (what torch's FileWriter offers, without torch)."""

    def __init__(self, logdir):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._writer = EventFileWriter(str(logdir), max_queue_size=1000)

    def add_summary(self, summary_pb, global_step=None, walltime=None):
        import time

        from tensorboard.compat.proto import event_pb2

        wall_time = time.time() if walltime is None else walltime
        self._writer.add_event(
            event_pb2.Event(wall_time=wall_time, step=global_step, summary=summary_pb)
        )

    def flush(self):
        self._writer.flush()

    def close(self):
        self._writer.close()


def write_long_run(run_dir, epochs, n_layers=4):
    """One run with many epochs, through one open writer (fast)."""
    writer = EventWriter(run_dir)
    for epoch in range(epochs):
        write_report(writer, fake_report(epoch, n_layers=n_layers), epoch, walltime=1000.0 + epoch)
    writer.close()


def decode_values(body):
    """``body`` with its base64 float32 matrix (``values_base64``, ``values_shape``)
    as ``values``: nested lists in the routes' JSON spelling of numbers (infinities
    as ``"Infinity"``/``"-Infinity"``, NaN = missing as ``None``). Also inside
    ``{"series": [...]}`` bodies."""
    import base64

    if isinstance(body.get("series"), list):
        body["series"] = [decode_values(x) for x in body["series"]]
    if "values_base64" not in body:
        return body
    flat = np.frombuffer(base64.b64decode(body["values_base64"]), "<f4").astype(np.float64)
    spelled = [
        None if np.isnan(v) else "Infinity" if v == np.inf else "-Infinity" if v == -np.inf else v
        for v in flat.tolist()
    ]
    body["values"] = np.array(spelled, dtype=object).reshape(body["values_shape"]).tolist()
    del body["values_base64"]
    return body


def channel_counts(n_layers):
    return [4 + 2 * i for i in range(n_layers)]


def _report_for(run, epoch, n_layers, runs):
    spec = runs[run]
    return fake_report(
        epoch,
        n_layers=n_layers,
        channels=channel_counts(n_layers),
        offset=spec["offset"],
        tilt=spec["tilt"],
    )


def write_fake_logdir(logdir, *, epochs=4, n_layers=6, runs=RUNS):
    """Write a small multi-run logdir with ``write_report`` (path writer).

    Each run gets ``epochs`` epochs of two measures with per-channel data,
    and a ``val/acc`` scalar per epoch (for the Spearman view). Returns
    ``{run: final val/acc}``.
    """
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    for run, spec in runs.items():
        run_dir = os.path.join(logdir, run)
        for epoch in range(epochs):
            write_report(
                run_dir,
                _report_for(run, epoch, n_layers, runs),
                epoch,
                model=spec["model"],
                baseline=spec["baseline"],
                per_channel=True,
                walltime=1000.0 + epoch,
            )
        writer = EventFileWriter(run_dir)
        for epoch in range(epochs):
            value = spec["acc"] * (epoch + 1) / epochs
            summary = summary_pb2.Summary(
                value=[summary_pb2.Summary.Value(tag="val/acc", simple_value=value)]
            )
            writer.add_event(
                event_pb2.Event(wall_time=1000.0 + epoch, step=epoch, summary=summary)
            )
        writer.close()
    return {run: spec["acc"] for run, spec in runs.items()}


def append_epoch(logdir, run, epoch, *, n_layers=6, runs=RUNS):
    """Append one more epoch to ``run`` (the live-update test)."""
    spec = runs[run]
    write_report(
        os.path.join(logdir, run),
        _report_for(run, epoch, n_layers, runs),
        epoch,
        model=spec["model"],
        baseline=spec["baseline"],
        per_channel=True,
    )


# ------------------------------------------------- hand-written event files --
#
# What another program (or a corrupted file) may put into an event file: the
# routes must answer 4xx JSON or serve it, never 500, and the tab must show any
# string as text.

MARKUP_PART = "<b>Head</b><img src=x onerror=alert(2)>"
"""A depth-part name with markup: must show as text everywhere."""

MALFORMED_LAYERS = ["c0", "c1", "pool", "fc"]
MALFORMED_PARTS = ["Early", "Late", "Pool", "Final"]


def with_metadata(summary_pb, **changes):
    """A copy of a one-value summary whose metadata JSON has ``changes``."""
    import json

    from tensorboard.compat.proto import summary_pb2

    out = summary_pb2.Summary()
    out.CopyFrom(summary_pb)
    content = json.loads(out.value[0].metadata.plugin_data.content)
    content.update(changes)
    out.value[0].metadata.plugin_data.content = json.dumps(content).encode()
    return out


def with_tensor(summary_pb, array):
    """A copy of a one-value summary holding ``array`` (e.g. strings) instead."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.util import tensor_util

    out = summary_pb2.Summary()
    out.CopyFrom(summary_pb)
    out.value[0].tensor.CopyFrom(tensor_util.make_tensor_proto(array))
    return out


def write_events(run_dir, points, scalar=None):
    """Write ``points`` (``[(step, [summary, ...]), ...]``) into one event file;
    ``scalar``: a ``val/acc`` value logged at the last step."""
    from tensorboard.compat.proto import summary_pb2

    writer = EventWriter(run_dir)
    for step, summaries in points:
        for summary_pb in summaries:
            writer.add_summary(summary_pb, step, 1000.0 + step)
    if scalar is not None:
        writer.add_summary(
            summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="val/acc", simple_value=scalar)]),
            points[-1][0],
            1000.0 + points[-1][0],
        )
    writer.close()


def write_malformed_logdir(path, epochs=3):
    """Runs as another program may write them (``measure`` "equivariance", group
    "rot90" unless said), plus good runs for comparison:

    * ``string_tensor``: the layer and channel tensors hold strings;
    * ``bad_channels``: the channel metadata's counts are not integers;
    * ``bad_shape``: one point of the wrong length among good ones;
    * ``bad_record``: a step record that is no JSON;
    * ``markup_part``: a part named :data:`MARKUP_PART` (and per-channel data);
    * ``sv_run``: measure ``sv`` (no preferred direction, ``higher_is_better=None``)
      written by the writer, group "rot90";
    * ``good_a``, ``good_b``: plain runs (``val/acc`` in every run but
      ``string_tensor``).
    """
    from lightning_equivariance_tb import summary

    def layers(values, **kw):
        return summary.layers_pb("equivariance", "rot90", MALFORMED_LAYERS, MALFORMED_PARTS, values, **kw)

    def channels(values, **kw):
        rows = [[v, v + 0.01] for v in values]
        return summary.channels_pb("equivariance", "rot90", MALFORMED_LAYERS, MALFORMED_PARTS, rows, **kw)

    def values(epoch, offset):
        return np.linspace(0.2, 0.8, len(MALFORMED_LAYERS)) + 0.02 * epoch + offset

    strings = np.array([b"0.1", b"0.2", b"0.3", b"0.4"], dtype=object)
    steps = range(epochs)
    write_events(os.path.join(path, "string_tensor"), [
        (e, [with_tensor(layers(values(e, 0)), strings), with_tensor(channels(values(e, 0)), strings)])
        for e in steps
    ])
    write_events(os.path.join(path, "bad_channels"), [
        (e, [layers(values(e, 0.1)), with_metadata(channels(values(e, 0.1)), channels=[1.5, "x", 2, 2])])
        for e in steps
    ], scalar=0.6)
    write_events(os.path.join(path, "bad_shape"), [
        (e, [layers(values(e, 0.05)) if e != 1 else with_tensor(layers(values(e, 0)), np.zeros(3, np.float32))])
        for e in steps
    ], scalar=0.65)
    bad_record = summary.record_pb("equivariance", "rot90", MALFORMED_LAYERS, MALFORMED_PARTS, epoch=0)
    write_events(os.path.join(path, "bad_record"), [
        (e, [layers(values(e, 0.15)), with_tensor(bad_record, np.array(b"{not json", dtype=object))])
        for e in steps
    ], scalar=0.7)
    markup_parts = [MARKUP_PART, "Late", "Pool", "Final"]
    write_events(os.path.join(path, "markup_part"), [
        (e, [with_metadata(layers(values(e, 0.2)), parts=markup_parts),
             with_metadata(channels(values(e, 0.2)), parts=markup_parts)])
        for e in steps
    ], scalar=0.8)
    for run, offset, acc in (("good_a", 0.25, 0.75), ("good_b", 0.3, 0.85)):
        write_events(
            os.path.join(path, run),
            [(e, [layers(values(e, offset)), channels(values(e, offset))]) for e in steps],
            scalar=acc,
        )
    for e in steps:
        sv = FakeSeries("sv", "rot90", MALFORMED_LAYERS, MALFORMED_PARTS, values(e, 0.0),
                        [[v, 2 * v] for v in values(e, 0.0)], higher_is_better=None)
        write_report(os.path.join(path, "sv_run"), FakeReport([sv]), e, model="sv model", per_channel=True)


# ------------------------------------------------------- real training runs --
#
# The browser test serves what the Lightning callback really writes: a few
# small CNNs fitted for 2 epochs on generated 16x16 images with
# ``lightning.pytorch.Trainer`` + ``TensorBoardLogger`` + ``EquivarianceCallback``
# (layer names, parts, per-channel data, ``val_acc`` scalars), plus runs
# written from ``measure()`` reports of a trained model. torch and Lightning
# are imported lazily: only the browser test needs them.

IMAGE_SIZE = 16
N_TRAIN = 128
N_VAL = 64
NUM_SAMPLES = 32
EPOCHS = 2
CLASSES = 4
MEASURES = ("invariance", "equivariance")
GROUP = "rotation90"

# run name -> (seed, rotation augmentation, baseline flag, model name)
TRAINED_RUNS = {
    "cnn": (0, False, False, "tiny CNN"),
    "cnn_rotaug": (1, True, False, "tiny CNN + rot90 augmentation"),
    "cnn_wide": (2, False, True, "wide CNN (reference)"),
}


def make_images(n, seed):
    """``n`` noisy 16x16 images of a bright bar at one of the 4 edges; the
    label is the edge (rot90 permutes the classes)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = 0.3 * torch.randn(n, 1, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    offset = torch.randint(1, 4, (n,), generator=g)
    for i in range(n):
        bar = torch.zeros(IMAGE_SIZE, IMAGE_SIZE)
        bar[int(offset[i]) : int(offset[i]) + 2, 3:-3] = 1.0
        x[i, 0] += torch.rot90(bar, int(y[i]), (0, 1))
    return x, y


def _module_class():
    import lightning.pytorch as pl
    import torch
    import torch.nn.functional as F
    from torch import nn

    class TinyClassifier(pl.LightningModule):
        def __init__(self, width=8, augment=False):
            super().__init__()
            self.augment = augment
            self.net = nn.Sequential(
                nn.Conv2d(1, width, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1),
                nn.ReLU(),
                nn.AvgPool2d(2),
                nn.Conv2d(width, 2 * width, 3, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(2 * width, CLASSES),
            )

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            if self.augment:
                k = int(torch.randint(0, 4, ()))
                x = torch.rot90(x, k, (-2, -1))
                y = (y + k) % CLASSES  # rot90 turns the bar's edge
            loss = F.cross_entropy(self(x), y)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            self.log("val_loss", F.cross_entropy(logits, y))
            self.log("val_acc", (logits.argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    return TinyClassifier


def train_logdir(path, runs=TRAINED_RUNS, epochs=EPOCHS):
    """Fit every run of ``runs`` into ``path/{run}`` (one TensorBoard run each).

    Returns ``{run: {"module", "run_dir", "model_name", "baseline", "probe"}}``
    for :func:`append_measured_epoch`.
    """
    x_train, y_train = make_images(N_TRAIN, seed=100)
    x_val, y_val = make_images(N_VAL, seed=200)
    data = (x_train, y_train, x_val, y_val)
    classifier = _module_class()
    with _one_thread():
        return {run: _fit_one(path, run, spec, epochs, classifier, data) for run, spec in runs.items()}


def _fit_one(path, run, spec, epochs, classifier, data):
    import warnings

    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_equivariance import EquivarianceCallback, Rotation90

    seed, augment, baseline, model_name = spec
    x_train, y_train, x_val, y_val = data
    pl.seed_everything(seed, workers=False, verbose=False)
    module = classifier(width=16 if baseline else 8, augment=augment)
    callback = EquivarianceCallback(
        measures=MEASURES,
        groups=(Rotation90(),),
        num_samples=NUM_SAMPLES,
        per_channel=True,
        model_name=model_name,
        baseline=baseline,
        submodule="net",
        progress=False,
    )
    # version="" puts the events directly in path/run: the run is "run".
    logger = TensorBoardLogger(path, name=run, version="", default_hp_metric=False)
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=logger,
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        accelerator="cpu",
        devices=1,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(
            module,
            DataLoader(TensorDataset(x_train, y_train), batch_size=32, shuffle=True),
            DataLoader(TensorDataset(x_val, y_val), batch_size=64),
        )
    logger.experiment.flush()
    return {
        "module": module,
        "run_dir": os.path.join(path, run),
        "model_name": model_name,
        "baseline": baseline,
        "probe": x_val[:NUM_SAMPLES],
    }


class _one_thread:
    """torch on one thread inside the block: these nets are tiny, and on a
    busy 2-core machine torch's OpenMP threads wait on each other (a fit
    took 0.3 s with 1 thread, 6 s with 2, under load)."""

    def __enter__(self):
        import torch

        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.threads)
        return False


def append_measured_epoch(info, step):
    """Measure ``info["module"]`` now and write the report at ``step`` into
    its run directory (what the callback would log at the next epoch)."""
    from lightning_equivariance import Rotation90, measure
    from lightning_equivariance_tb.summary import write_report

    with _one_thread():
        report = measure(
            info["module"].net, info["probe"], measures=MEASURES, groups=(Rotation90(),)
        )
    write_report(
        info["run_dir"],
        report,
        step,
        model=info["model_name"],
        baseline=info["baseline"],
        per_channel=True,
    )
    return report


def write_measured_run(path, run, info, steps=EPOCHS, model="<b>evil</b> model"):
    """A run written without a Trainer: ``measure()`` reports of a trained
    module at ``steps`` points, and a ``val_acc`` scalar per point (for the
    hostile-name run)."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    target = dict(info, run_dir=os.path.join(path, run), model_name=model, baseline=False)
    for step in range(steps):
        append_measured_epoch(target, step)
    writer = EventFileWriter(target["run_dir"])
    for step in range(steps):
        value = 0.5 + 0.1 * step
        summary = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag="val_acc", simple_value=value)]
        )
        writer.add_event(event_pb2.Event(wall_time=1000.0 + step, step=step, summary=summary))
    writer.close()
    return run


def write_nv_run(path, module, run="nv_degenerate", steps=2):
    """A run of the normalised variance ``nv`` (docs/measures.md §5): a
    real ``measure()`` on real probe images for the first steps, then on a
    probe set of one image repeated, where every sample variance is 0 and
    ``nv = x/0 = +inf``. Returns the run name."""
    import torch

    from lightning_equivariance import Rotation90, measure
    from lightning_equivariance_tb.summary import write_report

    x, _ = make_images(8, seed=300)
    for step in range(steps):
        probe = x if step < steps - 1 else x[:1].repeat(8, 1, 1, 1)
        with torch.no_grad(), _one_thread():
            report = measure(module.net, probe, measures=("nv",), groups=(Rotation90(),))
        values = report.series()[0].values
        if step == steps - 1:
            assert np.isinf(values).any(), values
        write_report(os.path.join(path, run), report, step, model="tiny CNN (nv)", per_channel=True)
    return run


# ---------------------------------------------------------------- browser --

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TensorBoardProcess:
    """``tensorboard --logdir ...`` as a subprocess; use as a context manager.

    Keeps every epoch (``--samples_per_plugin=equivariance=0``) unless
    ``keep_all=False``, and reloads the logdir every second so live updates
    show quickly. ``command``: how to start TensorBoard (default: this
    Python's ``-m tensorboard.main``; e.g. another venv's ``bin/tensorboard``),
    run in ``cwd``.
    """

    def __init__(self, logdir, *, extra_args=(), keep_all=True, timeout=60.0, command=None, cwd=None):
        self.logdir = str(logdir)
        self.command = list(command) if command else None
        self.cwd = cwd
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.extra_args = list(extra_args)
        if keep_all:
            self.extra_args.append("--samples_per_plugin=equivariance=0")
        self.timeout = timeout
        self.proc = None

    def __enter__(self):
        import subprocess
        import sys
        import tempfile
        import time
        import urllib.request

        args = (self.command or [sys.executable, "-m", "tensorboard.main"]) + [
            "--logdir", self.logdir,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--reload_interval", "1",
        ] + self.extra_args
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            args, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.cwd
        )
        deadline = time.monotonic() + self.timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("tensorboard exited early:\n" + self.output())
            try:
                with urllib.request.urlopen(
                    self.url + "/data/plugin/equivariance/runs", timeout=5
                ) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise TimeoutError("tensorboard did not start in %.0f s" % self.timeout)
            time.sleep(0.3)
        return self

    def output(self):
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace")[-4000:]

    def __exit__(self, *exc):
        import subprocess

        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return False


def chrome_driver(width=1400, height=1000):
    """Headless Debian Chromium through /usr/bin/chromedriver (no downloads)."""
    import tempfile

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=%d,%d" % (width, height),
        "--user-data-dir=" + tempfile.mkdtemp(prefix="eq-chrome-"),
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


def open_plugin(driver, url, timeout=30):
    """Load TensorBoard at the Equivariance tab and switch into its iframe."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/#equivariance")
    frame = WebDriverWait(driver, timeout).until(
        EC.presence_of_element_located(
            (By.CSS_SELECTOR, 'iframe[src*="plugin_entry.html?name=equivariance"]')
        )
    )
    driver.switch_to.frame(frame)
    return frame


# ------------------------------------------------------------- statistics --

STATS_RUN = "deep_stats"
"""A 60-layer run with the v2 statistics (chance, stderr, above_chance, informative)."""


def write_stats_run(run_dir, *, n_layers=60, epochs=3, uninformative=(57, 58, 59)):
    """One deep run written with the statistics of docs/measures.md §7: chance
    ``0.2 + 0.3 * depth``, stderr 0.02, and the layers in ``uninformative`` at
    chance 0.97 (no room above it: ``above_chance`` missing, ``informative`` 0).
    Returns ``{"layers", "chance", "stderr"}`` of the last epoch."""
    from lightning_equivariance_tb.summary import Series

    names = ["backbone.layer%d.block%d.conv" % (i // 10, i) for i in range(n_layers)]
    parts = default_parts(n_layers)
    depth = np.linspace(0.0, 1.0, n_layers)
    writer = EventWriter(run_dir)
    for epoch in range(epochs):
        values = np.clip(0.45 + 0.4 * depth * (1 - np.exp(-0.5 * (epoch + 1))), 0, 1)
        chance = 0.2 + 0.3 * depth
        chance[list(uninformative)] = 0.97
        values[list(uninformative)] = 0.98
        informative = np.ones(n_layers)
        informative[list(uninformative)] = 0
        above = np.where(informative == 1, (values - chance) / (1 - chance), np.nan)
        stderr = np.full(n_layers, 0.02)
        series = Series(
            measure="equivariance", group="rot90", layers=names, parts=parts, values=values,
            higher_is_better=True, stderr=stderr, chance=chance, above_chance=above,
            informative=informative,
        )
        write_report(writer, FakeReport([series]), epoch, model="deep net", walltime=1000.0 + epoch)
    writer.close()
    return {"layers": names, "chance": chance, "stderr": stderr, "values": values}


MARGIN_RUN = "margins"


def write_margin_run(run_dir, *, epochs=2):
    """One run with margins above chance (docs/measures.md §7, issue 24): six layers, chance 0.3;
    layer 2 is not significantly above chance (margin 0.01, lower bound -0.02), layer 4 has no
    interval (margin 0.05, fewer than 2 scored pairs), the others are significant (margin 0.2,
    lower bound 0.15). Returns ``{"layers", "margin", "margin_low", "significant"}``."""
    from lightning_equivariance_tb.summary import Series

    n = 6
    names = ["layer%d" % i for i in range(n)]
    parts = default_parts(n)
    chance = np.full(n, 0.3)
    margin = np.full(n, 0.2)
    margin_low = np.full(n, 0.15)
    significant = np.ones(n)
    margin[2], margin_low[2], significant[2] = 0.01, -0.02, 0
    margin[4], margin_low[4], significant[4] = 0.05, np.nan, 0
    margin_stderr = np.where(np.isnan(margin_low), np.nan, 0.01)
    values = chance + margin
    writer = EventWriter(run_dir)
    for epoch in range(epochs):
        series = Series(
            measure="equivariance", group="rot90", layers=names, parts=parts, values=values,
            higher_is_better=True, stderr=np.full(n, 0.02), chance=chance, above_chance=margin / (1 - chance),
            informative=np.ones(n), margin=margin, margin_stderr=margin_stderr, margin_low=margin_low,
            significant=significant,
        )
        write_report(writer, FakeReport([series]), epoch, model="net", walltime=1000.0 + epoch)
    writer.close()
    return {"layers": names, "margin": margin, "margin_low": margin_low, "significant": significant}


# ------------------------------------------------------------------ groups --

GROUP_RUNS = {
    # run name: (recorded run_group, baseline, offset, epochs)
    "cnn_seed0": ("cnn", False, 0.00, 4),
    "cnn_seed1": ("cnn", False, 0.04, 4),
    "cnn_seed2": ("cnn", False, -0.03, 3),
    "rotaug_seed0": ("rotaug", False, 0.15, 4),
    "rotaug_seed1": ("rotaug", False, 0.20, 4),
    "steerable_seed0": ("steerable", True, 0.35, 4),
    "lone_run": ("", False, 0.10, 1),
}
"""Runs of :func:`write_group_logdir`: two groups of several seeds, a baseline group
of one run, a run in no group."""

GROUP_LAYERS = ["conv1", "conv2", "conv3", "conv4", "pool", "fc"]
GROUP_PARTS = ["Early", "Middle", "Late", "Late", "Pool", "Final"]


def group_values(run, epoch, runs=GROUP_RUNS):
    """The layer values :func:`write_group_logdir` logs (before float32); ``conv3`` of
    ``cnn_seed1`` is refused at epoch 1 (NaN, a missing layer)."""
    _, _, offset, _ = runs[run]
    depth = np.linspace(0.0, 1.0, len(GROUP_LAYERS))
    seed = sum(map(ord, run))
    noise = np.random.default_rng(seed + 97 * epoch).normal(0, 0.03, len(GROUP_LAYERS))
    values = 0.3 + offset + 0.4 * depth * (1 - np.exp(-0.6 * (epoch + 1))) + noise
    values = np.clip(values, 0.0, 1.0)
    if run == "cnn_seed1" and epoch == 1:
        values[2] = np.nan
    return values


def write_group_logdir(path, runs=GROUP_RUNS, measure="equivariance", group="rot90"):
    """Runs written with ``write_series`` and a recorded ``run_group`` (and a
    ``val/acc`` scalar); returns ``{run: [float32 values per epoch]}``."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    from lightning_equivariance_tb.summary import Series

    out = {}
    for run, (run_group, baseline, offset, epochs) in runs.items():
        run_dir = os.path.join(str(path), run)
        writer = EventWriter(run_dir)
        out[run] = []
        for epoch in range(epochs):
            values = group_values(run, epoch, runs)
            missing = {"conv3": ("refused", "dead output")} if np.isnan(values[2]) else {}
            series = Series(measure=measure, group=group, layers=GROUP_LAYERS, parts=GROUP_PARTS,
                            values=values, higher_is_better=True, missing=missing)
            write_series(writer, [series], epoch, model="tiny CNN", baseline=baseline,
                         run_group=run_group, epoch=epoch, global_step=10 * (epoch + 1),
                         walltime=1000.0 + epoch)
            out[run].append(values.astype(np.float32).astype(np.float64))
        writer.close()
        scalars = EventFileWriter(run_dir)
        summary = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag="val/acc", simple_value=0.6 + offset)])
        scalars.add_event(event_pb2.Event(wall_time=1000.0 + epochs, step=epochs - 1, summary=summary))
        scalars.close()
    return out

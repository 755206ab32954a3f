"""Test helpers for the TensorBoard plugin: a fake report and fake logdirs.

The real report comes from ``lightning_equivariance.measure``; the writer
only duck-types it (``report.series()`` yielding objects with ``measure``,
``group``, ``layers``, ``parts``, ``values``, ``per_channel``,
``higher_is_better``), so these fakes stand in for it.
"""

import dataclasses
import os
from typing import List, Optional

import numpy as np

from tb_plugin.summary import write_report

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
    higher_is_better: bool = True


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
    names=None,
):
    """A deterministic report whose values rise with ``epoch`` and depth.

    ``channels``: channel count per layer; when given, every series also
    carries per-channel values whose mean is the layer value.
    """
    names = list(names or layer_names(n_layers))
    parts = default_parts(len(names))
    items = []
    for mi, measure in enumerate(measures):
        for gi, group in enumerate(groups):
            depth = np.linspace(0.0, 1.0, len(names))
            base = 0.3 + 0.4 * depth * (1 - np.exp(-0.3 * (epoch + 1)))
            values = np.clip(base + offset - 0.1 * mi + 0.05 * gi, 0, 1)
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
    # run name: (value offset, model, baseline, final accuracy)
    "resnet_a": (0.00, "resnet18", False, 0.71),
    "resnet_b": (0.05, "resnet18", False, 0.74),
    "resnet_c": (0.10, "resnet18", False, 0.80),
    "steerable_baseline": (0.25, "C4 steerable CNN", True, 0.77),
    XSS_RUN: (-0.05, "<b>evil</b> model", False, 0.65),
}


def write_fake_logdir(logdir, *, epochs=4, n_layers=6, runs=RUNS):
    """Write a small multi-run logdir with ``write_report`` (path writer).

    Each run gets ``epochs`` epochs of two measures, per-channel data and
    an ``val/acc`` scalar per epoch (for the Spearman view). Returns
    ``{run: accuracy}``.
    """
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    channels = [4 + 2 * i for i in range(n_layers)]
    for run, (offset, model, baseline, acc) in runs.items():
        run_dir = os.path.join(logdir, run)
        for epoch in range(epochs):
            write_report(
                run_dir,
                fake_report(
                    epoch, n_layers=n_layers, channels=channels, offset=offset
                ),
                epoch,
                model=model,
                baseline=baseline,
                per_channel=True,
                walltime=1000.0 + epoch,
            )
        writer = EventFileWriter(run_dir)
        for epoch in range(epochs):
            value = acc * (epoch + 1) / epochs
            summary = summary_pb2.Summary(
                value=[summary_pb2.Summary.Value(tag="val/acc", simple_value=value)]
            )
            writer.add_event(
                event_pb2.Event(wall_time=1000.0 + epoch, step=epoch, summary=summary)
            )
        writer.close()
    return {run: spec[3] for run, spec in runs.items()}


def append_epoch(logdir, run, epoch, *, n_layers=6, offset=0.0, runs=RUNS):
    """Append one more epoch to ``run`` (the live-update test)."""
    offset, model, baseline, _ = runs[run]
    write_report(
        os.path.join(logdir, run),
        fake_report(
            epoch,
            n_layers=n_layers,
            channels=[4 + 2 * i for i in range(n_layers)],
            offset=offset,
        ),
        epoch,
        model=model,
        baseline=baseline,
        per_channel=True,
    )

"""Write per-layer equivariance into TensorBoard event files.

This is the public writer of the equivariance tab. It needs numpy and
TensorBoard only (never torch), so it also runs on machines that merely
post-process saved reports.

Typical use, from a training loop or the Lightning callback::

    from tb_plugin.summary import write_report

    report = measure(model, probe, groups)       # lightning_equivariance
    write_report(trainer.logger.experiment, report, step=epoch)

A reference model that does not train (e.g. a steerable CNN, which is
equivariant by construction) is logged into its *own run directory* beside
the trained runs, flagged as a baseline so the tab draws it dashed::

    baseline_report = measure(steerable_model, probe, groups)
    for epoch in range(max_epochs):   # or only once, at step 0
        write_report(
            "lightning_logs/steerable_baseline",   # a run directory
            baseline_report,
            step=epoch,
            model="C8 steerable CNN",
            baseline=True,
        )

Then ``tensorboard --logdir lightning_logs --samples_per_plugin
equivariance=0`` shows both (``equivariance=0`` keeps every epoch; without it
TensorBoard keeps a random sample of 100 points per tag, 10 with
``--load_fast=false``).

The format is described in :mod:`tb_plugin.metadata`.

Values may be ``+inf`` or ``-inf``: MEASURES.md §4 defines the normalised
ratios (``nv``, ``nd``) with ``x/0 = +inf``, a documented value, so such a
series is stored as is (float32 holds both infinities exactly; a finite value
beyond float32's range, ``|x| > 3.4e38``, is stored as the infinity of its
sign). NaN is refused with an error naming the measure, group and layer (in the
per-channel tensor NaN is reserved for the padding).
"""

import itertools
import os
import socket
import time

import numpy as np
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.util import tensor_util

from tb_plugin import metadata


def _where(measure, group, layer=None):
    where = "measure=%r, group=%r" % (measure, group)
    if layer is not None:
        where += ", layer=%r" % (layer,)
    return where


def _check_layers(measure, group, layers, parts):
    layers = list(layers)
    parts = list(parts)
    for name in layers:
        if not isinstance(name, str) or not name:
            raise ValueError(
                "layers must be non-empty strings, got %r (%s)"
                % (name, _where(measure, group))
            )
    return layers, parts


def _summary(kind, measure, group, layers, parts, tensor, **meta):
    smd = metadata.create_summary_metadata(
        kind, measure, group, layers, parts, **meta
    )
    tag = (
        metadata.layers_tag(measure, group)
        if kind == metadata.KIND_LAYERS
        else metadata.channels_tag(measure, group)
    )
    # Stored as float32: a finite value beyond its range (an nv of 1e300) becomes +-inf,
    # which the tab shows as it shows x/0 - on purpose, so numpy's warning is silenced.
    with np.errstate(over="ignore"):
        as_float32 = tensor.astype(np.float32)
    summary = summary_pb2.Summary()
    summary.value.add(
        tag=tag,
        metadata=smd,
        tensor=tensor_util.make_tensor_proto(as_float32),
    )
    return summary


def layers_pb(
    measure,
    group,
    layers,
    parts,
    values,
    *,
    model="",
    baseline=False,
    higher_is_better=True,
):
    """A ``Summary`` holding one value per layer.

    Args:
      measure: Measure name, e.g. ``"equivariance"`` (no ``/``).
      group: Transformation group name, e.g. ``"rot90"`` (no ``/``).
      layers: Layer names in depth order.
      parts: Depth part of each layer, one of ``Early``, ``Middle``,
        ``Late``, ``Pool``, ``Final``.
      values: Array-like of shape ``(len(layers),)``: numbers, ``+inf`` and
        ``-inf`` included (e.g. ``nv = x/0``); never NaN.
      model: Model name shown in the tab.
      baseline: Mark this run as a reference model (drawn dashed).
      higher_is_better: ``False`` for deviation measures (G-EED, LEE).

    Returns:
      A ``summary_pb2.Summary`` with the tag
      ``equivariance_layers/{measure}/{group}``.

    Raises:
      ValueError: on a length mismatch or a NaN value, naming the measure,
        group and layer.
    """
    layers, parts = _check_layers(measure, group, layers, parts)
    try:
        values = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(
            "values must be numbers (%s): %s" % (_where(measure, group), e)
        ) from None
    if values.shape != (len(layers),):
        raise ValueError(
            "values has shape %r, expected (%d,) = one value per layer (%s)"
            % (values.shape, len(layers), _where(measure, group))
        )
    for name, value in zip(layers, values):
        if np.isnan(value):
            raise ValueError(
                "values: NaN is not a value (+inf and -inf are allowed) (%s)"
                % _where(measure, group, name)
            )
    return _summary(
        metadata.KIND_LAYERS,
        measure,
        group,
        layers,
        parts,
        values,
        model=model,
        baseline=baseline,
        higher_is_better=higher_is_better,
    )


def channels_pb(
    measure,
    group,
    layers,
    parts,
    channel_values,
    *,
    model="",
    baseline=False,
    higher_is_better=True,
):
    """A ``Summary`` holding the per-channel values of every layer.

    Args:
      measure, group, layers, parts, model, baseline, higher_is_better:
        As for :func:`layers_pb`.
      channel_values: One 1-D array-like per layer (its channels; a vector
        layer has one entry per unit), at least one entry each; ``+inf``
        and ``-inf`` are allowed, NaN is not (it marks the padding).

    Returns:
      A ``summary_pb2.Summary`` with the tag
      ``equivariance_channels/{measure}/{group}`` holding a float32
      ``(L, Cmax)`` tensor, NaN-padded beyond each layer's channel count.

    Raises:
      ValueError: on a length mismatch, a non-1-D or empty entry, or a NaN
        value, naming the measure, group and layer.
    """
    layers, parts = _check_layers(measure, group, layers, parts)
    channel_values = list(channel_values)
    if len(channel_values) != len(layers):
        raise ValueError(
            "channel_values has %d entries, expected %d = one array per "
            "layer (%s)"
            % (len(channel_values), len(layers), _where(measure, group))
        )
    rows = []
    for name, row in zip(layers, channel_values):
        try:
            row = np.asarray(row, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(
                "channel_values must be numbers (%s): %s"
                % (_where(measure, group, name), e)
            ) from None
        if row.ndim != 1 or row.size == 0:
            raise ValueError(
                "channel_values: expected a non-empty 1-D array, got shape "
                "%r (%s)" % (row.shape, _where(measure, group, name))
            )
        bad = np.flatnonzero(np.isnan(row))
        if bad.size:
            raise ValueError(
                "channel_values: NaN at channel %d (NaN marks padding in the "
                "stored tensor; +inf and -inf are allowed) (%s)"
                % (bad[0], _where(measure, group, name))
            )
        rows.append(row)
    counts = [row.size for row in rows]
    padded = np.full((len(rows), max(counts)), np.nan)
    for i, row in enumerate(rows):
        padded[i, : row.size] = row
    return _summary(
        metadata.KIND_CHANNELS,
        measure,
        group,
        layers,
        parts,
        padded,
        model=model,
        baseline=baseline,
        higher_is_better=higher_is_better,
        channels=counts,
    )


_file_counter = itertools.count()


def _write_event_file(logdir, summaries, step, walltime):
    """Write ``summaries`` into a new, closed event file in ``logdir``.

    Not ``EventFileWriter``: its file names end in a process-wide counter
    that is not zero-padded (``.9`` sorts after ``.10``), and TensorBoard
    reads a run's files in name order, taking a step that goes backwards for
    a restart and dropping the later points. Files written within the same
    second would then lose data. These names sort in write order.
    """
    from tensorboard.compat import tf
    from tensorboard.summary.writer.record_writer import RecordWriter

    tf.io.gfile.makedirs(logdir)
    name = "events.out.tfevents.%010d.%s.%d.%08d.%s" % (
        time.time(),
        socket.gethostname(),
        os.getpid(),
        next(_file_counter),
        metadata.PLUGIN_NAME,
    )
    events = [event_pb2.Event(wall_time=walltime, file_version="brain.Event:2")]
    events += [
        event_pb2.Event(wall_time=walltime, step=step, summary=summary)
        for summary in summaries
    ]
    with tf.io.gfile.GFile(os.path.join(logdir, name), "wb") as f:
        record_writer = RecordWriter(f)
        for event in events:
            record_writer.write(event.SerializeToString())
        record_writer.flush()


def _report_summaries(report, model, baseline, per_channel):
    if not hasattr(report, "series"):
        raise TypeError(
            "report must have a series() method (a lightning_equivariance "
            "report), got %s" % type(report).__name__
        )
    summaries = []
    for s in report.series():
        higher = bool(getattr(s, "higher_is_better", True))
        summaries.append(
            layers_pb(
                s.measure,
                s.group,
                s.layers,
                s.parts,
                s.values,
                model=model,
                baseline=baseline,
                higher_is_better=higher,
            )
        )
        channel_values = getattr(s, "per_channel", None)
        if per_channel and channel_values is not None:
            summaries.append(
                channels_pb(
                    s.measure,
                    s.group,
                    s.layers,
                    s.parts,
                    channel_values,
                    model=model,
                    baseline=baseline,
                    higher_is_better=higher,
                )
            )
    return summaries


def write_report(
    writer,
    report,
    step,
    *,
    model="",
    baseline=False,
    per_channel=False,
    walltime=None,
):
    """Write every series of ``report`` at ``step`` and flush.

    Args:
      writer: Where to write. One of

        * a run directory (``str`` or ``os.PathLike``): a new event file is
          created in it (named to sort after earlier ones), written and
          closed. Fine for a baseline or for one write per epoch; a tight
          loop makes many small files and should pass an open writer;
        * a ``torch.utils.tensorboard.SummaryWriter`` (anything with
          ``_get_file_writer()``), e.g. Lightning's
          ``trainer.logger.experiment``;
        * any object with ``add_summary(summary, global_step, walltime)``,
          e.g. torch's or tensorboardX's ``FileWriter``.
      report: Anything whose ``series()`` yields objects with attributes
        ``measure``, ``group``, ``layers``, ``parts``, ``values`` (shape
        ``(L,)``), ``per_channel`` (list of 1-D arrays, or ``None``) and
        ``higher_is_better`` - the report of
        ``lightning_equivariance.measure``.
      step: Integer step of this point, normally the epoch.
      model: Model name shown in the tab (same for every point of a run).
      baseline: Mark the run as a reference model, drawn dashed.
      per_channel: Also write the per-channel tensors of the series that
        have them.
      walltime: Seconds since the epoch; defaults to now.

    Returns:
      The number of summaries written.

    Raises:
      TypeError: if ``writer``, ``report`` or ``step`` has the wrong type.
      ValueError: on inconsistent data or a NaN value (see
        :func:`layers_pb`); nothing is written in that case. ``+inf`` and
        ``-inf`` are written as they are.

    Example, a baseline beside trained runs (each in its own directory)::

        write_report("logs/baseline_steerable", report, step=0,
                     model="steerable C4", baseline=True)
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise TypeError("step must be an int, got %r" % (step,))
    step = int(step)
    walltime = time.time() if walltime is None else float(walltime)
    # Build everything first so a bad series writes nothing.
    summaries = _report_summaries(report, model, baseline, per_channel)

    if isinstance(writer, (str, os.PathLike)):
        _write_event_file(os.fspath(writer), summaries, step, walltime)
        return len(summaries)

    if hasattr(writer, "_get_file_writer"):  # torch SummaryWriter
        target = writer._get_file_writer()
    elif hasattr(writer, "add_summary"):
        target = writer
    else:
        raise TypeError(
            "writer must be a run directory (str/PathLike), a SummaryWriter "
            "(with _get_file_writer()) or an object with add_summary(); "
            "got %s" % type(writer).__name__
        )
    for summary in summaries:
        target.add_summary(summary, step, walltime)
    if hasattr(target, "flush"):
        target.flush()
    return len(summaries)

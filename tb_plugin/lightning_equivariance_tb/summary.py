"""Write per-layer equivariance into TensorBoard event files (format version 2).

This is the public writer of the "Equivariance" tab. It needs numpy and TensorBoard
only (never torch), so it also runs on machines that merely post-process saved
results. The format is described in :mod:`lightning_equivariance_tb.metadata`.

A :class:`Series` is the per-layer result of one (measure, group) at one step::

    from lightning_equivariance_tb.summary import Series, write_series

    series = Series("equivariance", "rot90", layers=["conv1", "conv2", "pool", "fc"],
                    parts=["Early", "Late", "Pool", "Final"],
                    values=[0.4, float("nan"), 0.8, 0.9],
                    missing={"conv2": ("refused", "non-square map under rot90")})
    write_series("lightning_logs/run_a", [series], step=epoch, epoch=epoch)

``write_report(writer, report, step)`` writes every series of a report whose
``series()`` yields such objects (``lightning_equivariance.measure()``'s report);
attributes a series lacks take their defaults. A reference model that does not train
(e.g. a steerable CNN) is logged into its *own run directory* beside the trained
runs with ``baseline=True``; the tab draws it dashed::

    write_report("lightning_logs/steerable_baseline", baseline_report, step=0,
                 model="C8 steerable CNN", baseline=True)

Then ``tensorboard --logdir lightning_logs --samples_per_plugin equivariance=0``
shows both (``equivariance=0`` keeps every step; without it TensorBoard keeps a
random sample of 100 points per tag, 10 with ``--load_fast=false``).

Values may be ``+inf`` or ``-inf``: docs/measures.md §5 defines the normalised
ratios (``nv``, ``nd``) with ``x/0 = +inf``, a documented value, so such a series is
stored as is (float32 holds both infinities exactly; a finite value beyond float32's
range, ``|x| > 3.4e38``, is stored as the infinity of its sign). NaN is refused for a
measured layer, with an error naming the measure, group and layer: a layer without a
value is named in ``missing`` with its reason, and stored as NaN.
"""

import dataclasses
import itertools
import json
import os
import socket
import time
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.util import tensor_util

from lightning_equivariance_tb import metadata


@dataclasses.dataclass
class Series:
    """The per-layer result of one (measure, group) at one step.

    Attributes:
      measure: Measure name, e.g. ``"equivariance"`` (no ``/``).
      group: Transformation group name, e.g. ``"rot90"`` (no ``/``).
      layers: The run's layer names in depth order - every selected layer, those
        not measured at this step included (see ``missing``), so that the list is
        the same at every step.
      parts: Depth part of each layer, one of :data:`metadata.PARTS`.
      values: One number per layer; ``+inf``/``-inf`` allowed. The value of a
        missing layer is ignored (stored as NaN); NaN anywhere else is an error.
      per_channel: ``None``, or one 1-D array per layer (its channels; a vector
        layer has one entry per unit); ``None`` or empty for a missing layer.
      higher_is_better: ``True``, ``False`` (deviations: G-EED, LEE) or ``None``
        (no preferred direction: ``sv``, ``sd``).
      stderr, chance, above_chance, informative, non_finite: Optional per-layer
        statistics, each ``None`` or one entry per layer (NaN = not available):
        the standard error of the value, the value expected by chance, how far above
        chance the value is (``(v - c) / (best - c)``: 1 perfect, 0 at chance; NaN
        where uninformative), whether the layer is informative (booleans or 0/1),
        and the number of probe images left out for NaN/Inf (a count).
      margin, margin_stderr, margin_low, significant: Optional per-layer statistics
        as above: the distance from chance in the better direction, its standard
        error over the probe pairs, its one-sided 95% lower bound and whether that
        bound is above 0 (booleans or 0/1).
      missing: ``{layer: (status, reason)}`` for the layers without a value at this
        step; ``status`` is one of :data:`metadata.MISSING_STATUSES`
        (``"refused"``, ``"not_called"``). A plain string is a reason with status
        ``"refused"``.
    """

    measure: str
    group: str
    layers: Sequence[str]
    parts: Sequence[str]
    values: Any
    per_channel: Optional[Sequence[Any]] = None
    higher_is_better: Optional[bool] = True
    stderr: Optional[Any] = None
    chance: Optional[Any] = None
    above_chance: Optional[Any] = None
    informative: Optional[Any] = None
    non_finite: Optional[Any] = None
    missing: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    margin: Optional[Any] = None
    margin_stderr: Optional[Any] = None
    margin_low: Optional[Any] = None
    significant: Optional[Any] = None

    @classmethod
    def from_object(cls, obj):
        """A :class:`Series` from any object with the same attribute names.

        ``measure``, ``group``, ``layers``, ``parts`` and ``values`` are required;
        the others take their defaults when absent.
        """
        if isinstance(obj, cls):
            return obj
        kwargs = {}
        for f in dataclasses.fields(cls):
            if hasattr(obj, f.name):
                kwargs[f.name] = getattr(obj, f.name)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise TypeError(
                    "a series needs the attribute %r, got %s" % (f.name, type(obj).__name__)
                )
        if kwargs.get("missing") is None:
            kwargs["missing"] = {}
        return cls(**kwargs)


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
                "layers must be non-empty strings, got %r (%s)" % (name, _where(measure, group))
            )
    return layers, parts


def _check_missing(measure, group, layers, missing):
    """``{layer: (status, reason)}``, validated against ``layers``."""
    out = {}
    for name, entry in dict(missing or {}).items():
        if name not in layers:
            raise ValueError(
                "missing names layer %r, which is not in layers (%s)" % (name, _where(measure, group))
            )
        if isinstance(entry, str):
            status, reason = "refused", entry
        else:
            try:
                status, reason = entry
            except (TypeError, ValueError):
                raise ValueError(
                    "missing[%r] must be (status, reason) or a reason string, got %r (%s)"
                    % (name, entry, _where(measure, group))
                ) from None
        if status not in metadata.MISSING_STATUSES:
            raise ValueError(
                "missing[%r]: status must be one of %r, got %r (%s)"
                % (name, metadata.MISSING_STATUSES, status, _where(measure, group))
            )
        if not isinstance(reason, str):
            raise ValueError(
                "missing[%r]: reason must be a string, got %r (%s)"
                % (name, reason, _where(measure, group))
            )
        out[name] = (status, reason)
    return out


def _summary(kind, measure, group, layers, parts, tensor_proto, meta):
    smd = metadata.create_summary_metadata(kind, measure, group, layers, parts, **meta)
    summary = summary_pb2.Summary()
    summary.value.add(tag=metadata.tag(kind, measure, group), metadata=smd, tensor=tensor_proto)
    return summary


def _float32_proto(array):
    # Stored as float32: a finite value beyond its range (an nv of 1e300) becomes +-inf,
    # which the tab shows as it shows x/0 - on purpose, so numpy's warning is silenced.
    with np.errstate(over="ignore"):
        as_float32 = np.asarray(array, dtype=np.float64).astype(np.float32)
    return tensor_util.make_tensor_proto(as_float32)


def _meta(model, baseline, higher_is_better, run_group):
    return dict(
        model=model,
        baseline=baseline,
        higher_is_better=metadata.check_direction(higher_is_better),
        run_group=run_group,
    )


def _numbers(name, measure, group, values, n_layers):
    try:
        values = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError("%s must be numbers (%s): %s" % (name, _where(measure, group), e)) from None
    if values.shape != (n_layers,):
        raise ValueError(
            "%s has shape %r, expected (%d,) = one value per layer (%s)"
            % (name, values.shape, n_layers, _where(measure, group))
        )
    return values


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
    run_group="",
    missing=None,
):
    """A ``Summary`` holding one value per layer (tag ``equivariance_layers/...``).

    Args:
      measure: Measure name, e.g. ``"equivariance"`` (no ``/``).
      group: Transformation group name, e.g. ``"rot90"`` (no ``/``).
      layers: Layer names in depth order.
      parts: Depth part of each layer, one of ``Early``, ``Middle``, ``Late``,
        ``Pool``, ``Final``.
      values: Array-like of shape ``(len(layers),)``: numbers, ``+inf`` and ``-inf``
        included (e.g. ``nv = x/0``); NaN only for layers named in ``missing``.
      model: Model name shown in the tab.
      baseline: Mark this run as a reference model (drawn dashed).
      higher_is_better: ``True``, ``False`` or ``None`` (no preferred direction).
      run_group: Optional group of runs.
      missing: ``{layer: (status, reason)}`` of layers without a value (see
        :class:`Series`); they are stored as NaN.

    Raises:
      ValueError: on a length mismatch or a NaN value of a measured layer, naming
        the measure, group and layer.
    """
    layers, parts = _check_layers(measure, group, layers, parts)
    missing = _check_missing(measure, group, layers, missing)
    values = _numbers("values", measure, group, values, len(layers)).copy()
    for i, (name, value) in enumerate(zip(layers, values)):
        if name in missing:
            values[i] = np.nan
        elif np.isnan(value):
            raise ValueError(
                "values: NaN is not a value (+inf and -inf are allowed) (%s); name a layer "
                "without a value in missing= with its reason" % _where(measure, group, name)
            )
    return _summary(
        metadata.KIND_LAYERS, measure, group, layers, parts, _float32_proto(values),
        _meta(model, baseline, higher_is_better, run_group),
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
    run_group="",
    missing=None,
):
    """A ``Summary`` holding the per-channel values of every layer.

    Args:
      measure, group, layers, parts, model, baseline, higher_is_better, run_group,
      missing: As for :func:`layers_pb`.
      channel_values: One 1-D array-like per layer (its channels; a vector layer has
        one entry per unit), at least one entry each (``None`` or empty for a layer
        in ``missing``); ``+inf`` and ``-inf`` are allowed, NaN is not (it marks
        the padding).

    Returns:
      A ``summary_pb2.Summary`` with the tag ``equivariance_channels/{measure}/{group}``
      holding a float32 ``(L, Cmax)`` tensor, NaN-padded beyond each layer's channel
      count.

    Raises:
      ValueError: on a length mismatch, a non-1-D or empty entry, or a NaN value,
        naming the measure, group and layer.
    """
    layers, parts = _check_layers(measure, group, layers, parts)
    missing = _check_missing(measure, group, layers, missing)
    channel_values = list(channel_values)
    if len(channel_values) != len(layers):
        raise ValueError(
            "channel_values has %d entries, expected %d = one array per layer (%s)"
            % (len(channel_values), len(layers), _where(measure, group))
        )
    rows = []
    for name, row in zip(layers, channel_values):
        if name in missing:
            rows.append(np.zeros(0))
            continue
        try:
            row = np.asarray(row, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(
                "channel_values must be numbers (%s): %s" % (_where(measure, group, name), e)
            ) from None
        if row.ndim != 1 or row.size == 0:
            raise ValueError(
                "channel_values: expected a non-empty 1-D array, got shape %r (%s)"
                % (row.shape, _where(measure, group, name))
            )
        bad = np.flatnonzero(np.isnan(row))
        if bad.size:
            raise ValueError(
                "channel_values: NaN at channel %d (NaN marks padding in the stored tensor; "
                "+inf and -inf are allowed) (%s)" % (bad[0], _where(measure, group, name))
            )
        rows.append(row)
    counts = [row.size for row in rows]
    padded = np.full((len(rows), max(max(counts), 1)), np.nan)
    for i, row in enumerate(rows):
        padded[i, : row.size] = row
    meta = _meta(model, baseline, higher_is_better, run_group)
    meta["channels"] = counts
    return _summary(
        metadata.KIND_CHANNELS, measure, group, layers, parts, _float32_proto(padded), meta
    )


def stats_pb(
    measure,
    group,
    layers,
    parts,
    stats,
    *,
    model="",
    baseline=False,
    higher_is_better=True,
    run_group="",
    missing=None,
):
    """A ``Summary`` holding optional per-layer statistics (tag ``equivariance_stats/...``).

    Args:
      stats: ``{field: one value per layer}`` for some fields of
        :data:`metadata.STAT_FIELDS`; NaN = not available. ``above_chance`` is a number
        (``(v - c) / (best - c)``: 1 perfect, 0 at chance, negative below), ``informative`` a
        boolean (or 0/1), ``non_finite`` a count >= 0, ``margin``, ``margin_stderr`` and
        ``margin_low`` numbers, ``significant`` a boolean (or 0/1).
      The others: as for :func:`layers_pb`; layers in ``missing`` are stored as NaN.

    Raises:
      ValueError: on an unknown field, a length mismatch or a value out of its
        field's range, naming the measure, group and field.
    """
    layers, parts = _check_layers(measure, group, layers, parts)
    missing = _check_missing(measure, group, layers, missing)
    unknown = [f for f in stats if f not in metadata.STAT_FIELDS]
    if unknown or not stats:
        raise ValueError(
            "stats must map some of %r to values, got %r (%s)"
            % (metadata.STAT_FIELDS, sorted(stats), _where(measure, group))
        )
    fields = [f for f in metadata.STAT_FIELDS if f in stats]
    rows = []
    for field in fields:
        row = _numbers(field, measure, group, stats[field], len(layers)).copy()
        known = row[~np.isnan(row)]
        if field in ("informative", "significant") and not np.isin(known, (0.0, 1.0)).all():
            raise ValueError("%s must be booleans (or 0/1) (%s)" % (field, _where(measure, group)))
        if field == "non_finite" and not (
            np.isfinite(known).all() and (known >= 0).all() and (known == np.round(known)).all()
        ):
            raise ValueError("non_finite must be counts >= 0 (%s)" % _where(measure, group))
        for i, name in enumerate(layers):
            if name in missing:
                row[i] = np.nan
        rows.append(row)
    meta = _meta(model, baseline, higher_is_better, run_group)
    meta["fields"] = fields
    return _summary(
        metadata.KIND_STATS, measure, group, layers, parts, _float32_proto(np.stack(rows)), meta
    )


def _check_step_number(name, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError("%s must be an int or None, got %r" % (name, value))
    return int(value)


def record_pb(
    measure,
    group,
    layers,
    parts,
    *,
    epoch=None,
    global_step=None,
    missing=None,
    model="",
    baseline=False,
    higher_is_better=True,
    run_group="",
):
    """A ``Summary`` holding the step's record (tag ``equivariance_record/...``): the
    epoch, the global step and the missing layers with their reasons, as a JSON
    string scalar (see :mod:`metadata`)."""
    layers, parts = _check_layers(measure, group, layers, parts)
    missing = _check_missing(measure, group, layers, missing)
    record = {
        "epoch": _check_step_number("epoch", epoch),
        "global_step": _check_step_number("global_step", global_step),
        "missing": {
            name: {"status": status, "reason": reason} for name, (status, reason) in missing.items()
        },
    }
    proto = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(),
        string_val=[json.dumps(record).encode("utf-8")],
    )
    return _summary(
        metadata.KIND_RECORD, measure, group, layers, parts, proto,
        _meta(model, baseline, higher_is_better, run_group),
    )


def series_summaries(
    series,
    *,
    model="",
    baseline=False,
    run_group="",
    per_channel=False,
    epoch=None,
    global_step=None,
):
    """The summaries of one :class:`Series` (or an object with its attributes): the
    layer values; the per-channel values (``per_channel=True`` and the series has
    them); the statistics it has; the record when there is an epoch, a global step
    or a missing layer."""
    s = Series.from_object(series)
    common = dict(
        model=model, baseline=baseline, higher_is_better=s.higher_is_better,
        run_group=run_group, missing=s.missing,
    )
    out = [layers_pb(s.measure, s.group, s.layers, s.parts, s.values, **common)]
    if per_channel and s.per_channel is not None:
        out.append(channels_pb(s.measure, s.group, s.layers, s.parts, s.per_channel, **common))
    stats = {f: getattr(s, f) for f in metadata.STAT_FIELDS if getattr(s, f) is not None}
    if stats:
        out.append(stats_pb(s.measure, s.group, s.layers, s.parts, stats, **common))
    if epoch is not None or global_step is not None or s.missing:
        out.append(
            record_pb(s.measure, s.group, s.layers, s.parts, epoch=epoch,
                      global_step=global_step, **common)
        )
    return out


_file_counter = itertools.count()


def _write_event_file(logdir, summaries, step, walltime):
    """Write ``summaries`` into a new, closed event file in ``logdir``.

    Not ``EventFileWriter``: its file names end in a process-wide counter that is
    not zero-padded (``.9`` sorts after ``.10``), and TensorBoard reads a run's
    files in name order, taking a step that goes backwards for a restart and
    dropping the later points. Files written within the same second would then
    lose data. These names sort in write order, after any file already in ``logdir``.
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
    # After every event file already there, whoever wrote it: another writer's file of the
    # same second may sort later (torch's counter, ".37" > ".00000005"), and TensorBoard would
    # then read this point first and drop it as orphaned when the earlier step follows.
    existing = [f for f in tf.io.gfile.listdir(logdir) if "tfevents" in f]
    if existing and max(existing) >= name:
        name = max(existing) + ".%08d.%s" % (next(_file_counter), metadata.PLUGIN_NAME)
    events = [event_pb2.Event(wall_time=walltime, file_version="brain.Event:2")]
    events += [
        event_pb2.Event(wall_time=walltime, step=step, summary=summary) for summary in summaries
    ]
    with tf.io.gfile.GFile(os.path.join(logdir, name), "wb") as f:
        record_writer = RecordWriter(f)
        for event in events:
            record_writer.write(event.SerializeToString())
        record_writer.flush()


def write_series(
    writer,
    series,
    step,
    *,
    model="",
    baseline=False,
    run_group="",
    per_channel=False,
    epoch=None,
    global_step=None,
    walltime=None,
):
    """Write every series of ``series`` at ``step`` and flush.

    Args:
      writer: Where to write. One of

        * a run directory (``str`` or ``os.PathLike``): a new event file is created
          in it (named to sort after earlier ones), written and closed. Fine for a
          baseline or for one write per epoch; a tight loop makes many small files
          and should pass an open writer;
        * a ``torch.utils.tensorboard.SummaryWriter`` (anything with
          ``_get_file_writer()``), e.g. Lightning's ``trainer.logger.experiment``;
        * any object with ``add_summary(summary, global_step, walltime)``, e.g.
          torch's or tensorboardX's ``FileWriter``.
      series: :class:`Series` objects (or objects with their attributes).
      step: Integer step of this point: the tab's x axis, normally the epoch.
      model: Model name shown in the tab (same for every point of a run).
      baseline: Mark the run as a reference model, drawn dashed.
      run_group: Optional name grouping runs.
      per_channel: Also write the per-channel values of the series that have them.
      epoch: Recorded with the point when given (an int).
      global_step: Recorded with the point when given (an int).
      walltime: Seconds since the epoch; defaults to now.

    Returns:
      The number of summaries written.

    Raises:
      TypeError: if ``writer`` or ``step`` has the wrong type.
      ValueError: on inconsistent data or a NaN value of a measured layer (see
        :func:`layers_pb`); nothing is written in that case.
    """
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise TypeError("step must be an int, got %r" % (step,))
    step = int(step)
    walltime = time.time() if walltime is None else float(walltime)
    # Build everything first so a bad series writes nothing.
    summaries = []
    for s in series:
        summaries += series_summaries(
            s, model=model, baseline=baseline, run_group=run_group, per_channel=per_channel,
            epoch=epoch, global_step=global_step,
        )

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


def write_report(writer, report, step, **kwargs):
    """Write every series of ``report`` at ``step`` and flush.

    ``report`` is anything whose ``series()`` yields :class:`Series` or objects with
    its attributes - the report of ``lightning_equivariance.measure``. The other
    arguments are those of :func:`write_series`.

    Example, a baseline beside trained runs (each in its own directory)::

        write_report("logs/baseline_steerable", report, step=0,
                     model="steerable C4", baseline=True)
    """
    if not hasattr(report, "series"):
        raise TypeError(
            "report must have a series() method (a lightning_equivariance report), got %s"
            % type(report).__name__
        )
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise TypeError("step must be an int, got %r" % (step,))
    return write_series(writer, list(report.series()), step, **kwargs)

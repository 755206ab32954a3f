"""The event format of the "Equivariance" TensorBoard tab (version 2): the contract.

Everything the writer (:mod:`lightning_equivariance_tb.summary`) and the reader
(:mod:`lightning_equivariance_tb.data`, :mod:`lightning_equivariance_tb.plugin`)
agree on lives here, and so do the constants other packages import
(:data:`PARTS`, :data:`MISSING_STATUSES`, :data:`STAT_FIELDS`). This module needs
only the standard library and TensorBoard's protos.

Tags
----
For one measure (e.g. ``"equivariance"``) and one transformation group (e.g.
``"rot90"``) a run holds up to four tensor time series, one point per logged step.
``{measure}`` and ``{group}`` contain no ``/``.

``equivariance_layers/{measure}/{group}`` (kind ``"layers"``, always written)
    float32, shape ``(L,)``: one value per layer of the metadata's ``layers``, in
    depth order. ``+inf``/``-inf`` are values (docs/measures.md §5: ``nv``/``nd``
    are ``x/0 = +inf``). NaN means *the layer was not measured at this step*; the
    step's record (below) says why. The writer never writes NaN for a measured layer.

``equivariance_channels/{measure}/{group}`` (kind ``"channels"``, optional)
    float32, shape ``(L, Cmax)``: row ``l`` holds the per-channel values of layer
    ``l`` in its first ``channels[l]`` entries; the rest is NaN *padding*. A layer
    not measured at a step has a row of NaN.

``equivariance_stats/{measure}/{group}`` (kind ``"stats"``, version 2, optional)
    float32, shape ``(F, L)``: row ``f`` is the statistic ``fields[f]`` of every
    layer; NaN = not available for that layer at that step. The statistics are
    :data:`STAT_FIELDS`: ``stderr`` (standard error of the value), ``chance`` (the
    value expected by chance), ``above_chance`` (``(v - c) / (best - c)``: 1 perfect,
    0 at chance, negative below; NaN where uninformative), ``informative`` (0 or 1),
    ``non_finite`` (how many probe images were left out of the layer for NaN/Inf, a
    count), and - added later, optional like every field, so a log written before
    them is read as it is - ``margin`` (how far the value is from chance in the
    measure's better direction), ``margin_stderr`` (its standard error over the
    probe pairs), ``margin_low`` (its one-sided 95% lower bound) and ``significant``
    (0 or 1: ``margin_low > 0``; 0 with ``margin_low`` NaN: fewer than 2 scored
    pairs). A reader takes the rows named in the tag's ``fields`` and ignores names
    it does not know.

``equivariance_record/{measure}/{group}`` (kind ``"record"``, version 2, optional)
    a string scalar holding UTF-8 JSON, one per step::

        {"epoch": int or null, "global_step": int or null,
         "missing": {layer name: {"status": "refused" | "not_called",
                                  "reason": str}}}

    ``missing`` names every layer whose value is NaN at this step: ``"refused"``
    (the measure could not be computed there - a non-square map under a 90-degree
    rotation, a dead output, every image non-finite) or ``"not_called"`` (the
    layer's hook never fired in the forward pass). A step without a record has no
    missing layer and no epoch/global step beyond the event's own step.

The event's ``step`` orders a run's points (the callback logs at the global step).
The tab's x axis is the recorded ``epoch`` or ``global_step`` (the user's choice); a
point without a record is at its event step, by convention the epoch.

Metadata
--------
Every tag carries a ``SummaryMetadata`` whose ``plugin_data.plugin_name`` is
:data:`PLUGIN_NAME` and whose ``plugin_data.content`` is UTF-8 JSON, constant for
the life of the tag (TensorBoard keeps the first one)::

    {"version": 2,
     "kind": "layers" | "channels" | "stats" | "record",
     "measure": str, "group": str,            # non-empty, no "/"
     "layers": [str, ...],                    # the run's stable layer list, depth order
     "parts": [str, ...],                     # one per layer: a name of PARTS
     "model": str,                            # free-form model name
     "baseline": bool,                        # a reference run, drawn dashed
     "run_group": str,                        # optional grouping of runs ("" = none)
     "higher_is_better": true | false | null, # null: no preferred direction (sv, sd)
     "channels": [int >= 0, ...],             # kind "channels": count per layer
     "fields": [str, ...]}                    # kind "stats": the rows of the tensor

The layer list is fixed by the first point of a tag: a later point whose tensor
does not have its shape is not shown (and counted). A layer's channel count is
fixed the same way (0 for a layer missing at the first point: no channel view).

Whether a run is a baseline is this flag alone, never the run's name.

Version 1 (lightning-equivariance before the plugin had its own distribution) is
read as well. It has the kinds ``"layers"`` and ``"channels"`` only, no NaN in
tensors, no records or stats, ``higher_is_better`` a bool (default true) and no
``run_group``. :func:`parse_plugin_metadata` maps it onto version 2: the same keys,
``run_group=""``, ``higher_is_better`` as written (true when absent).

Readers ignore keys they do not know (a later version may add some), and a reader
treats a part name that is not in :data:`PARTS` as an opaque label.
"""

import json

from tensorboard.compat.proto import summary_pb2

PLUGIN_NAME = "equivariance"
"""Name under which the data is stored and the plugin is served."""

PROTO_VERSION = 2
"""Version of the JSON metadata written by this package."""

READABLE_VERSIONS = (1, 2)
"""Versions :func:`parse_plugin_metadata` reads."""

KIND_LAYERS = "layers"
KIND_CHANNELS = "channels"
KIND_STATS = "stats"
KIND_RECORD = "record"
KINDS = (KIND_LAYERS, KIND_CHANNELS, KIND_STATS, KIND_RECORD)
KINDS_V1 = (KIND_LAYERS, KIND_CHANNELS)

TAG_PREFIXES = {
    KIND_LAYERS: "equivariance_layers",
    KIND_CHANNELS: "equivariance_channels",
    KIND_STATS: "equivariance_stats",
    KIND_RECORD: "equivariance_record",
}

PARTS = ("Early", "Middle", "Late", "Pool", "Final")
"""Depth parts of Bruintjes et al. 2023, Sec. 4.2, in depth order."""

MISSING_STATUSES = ("refused", "not_called")
"""Why a layer has no value at a step: refused by the measure, or never called."""

STAT_FIELDS = (
    "stderr", "chance", "above_chance", "informative", "non_finite",
    "margin", "margin_stderr", "margin_low", "significant",
)
"""The optional per-layer statistics of the ``stats`` tag, in the writer's order."""


def tag(kind, measure, group):
    """Tag of the ``kind`` series for ``measure`` and ``group``."""
    return "%s/%s/%s" % (TAG_PREFIXES[kind], measure, group)


def _check_name(argument, value):
    if not isinstance(value, str) or not value:
        raise ValueError("%s must be a non-empty string, got %r" % (argument, value))
    if "/" in value:
        raise ValueError(
            "%s must not contain '/' (it is one component of the tag "
            "'equivariance_layers/{measure}/{group}'), got %r" % (argument, value)
        )


def check_direction(value):
    """``higher_is_better`` as stored: ``True``, ``False`` or ``None`` (no direction).

    numpy booleans are accepted; anything else is a ``ValueError``.
    """
    if value is None:
        return None
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise ValueError("higher_is_better must be True, False or None, got %r" % (value,))


def create_summary_metadata(
    kind,
    measure,
    group,
    layers,
    parts,
    *,
    model="",
    baseline=False,
    higher_is_better=True,
    run_group="",
    channels=None,
    fields=None,
):
    """Build the ``SummaryMetadata`` proto of one equivariance tag (version 2).

    Args:
      kind: One of :data:`KINDS`.
      measure: Measure name, e.g. ``"equivariance"``; no ``/``.
      group: Transformation group name, e.g. ``"rot90"``; no ``/``.
      layers: Layer names in depth order (the run's whole layer list).
      parts: One of :data:`PARTS` per layer.
      model: Free-form model name shown in the tab.
      baseline: Whether the run is a reference model (drawn dashed).
      higher_is_better: ``True``, ``False`` (deviations: G-EED, LEE) or ``None``
        (no preferred direction: ``sv``, ``sd``).
      run_group: Optional name grouping runs (e.g. an experiment); ``""`` = none.
      channels: Channel count per layer (0 allowed); required for
        ``kind="channels"`` and refused otherwise.
      fields: Names of the rows of a ``stats`` tensor, each in
        :data:`STAT_FIELDS`; required for ``kind="stats"`` and refused otherwise.

    Returns:
      A ``summary_pb2.SummaryMetadata`` with ``data_class`` set to
      ``DATA_CLASS_TENSOR`` (TensorBoard drops plugin tensors without it).

    Raises:
      ValueError: naming the offending argument.
    """
    if kind not in KINDS:
        raise ValueError("kind must be one of %r, got %r" % (KINDS, kind))
    _check_name("measure", measure)
    _check_name("group", group)
    layers = [str(name) for name in layers]
    parts = [str(part) for part in parts]
    if not layers:
        raise ValueError(
            "layers must name at least one layer (measure=%r, group=%r)" % (measure, group)
        )
    if len(parts) != len(layers):
        raise ValueError(
            "parts has %d entries but layers has %d (measure=%r, group=%r)"
            % (len(parts), len(layers), measure, group)
        )
    for name, part in zip(layers, parts):
        if part not in PARTS:
            raise ValueError(
                "parts: layer %r has part %r, expected one of %r (measure=%r, group=%r)"
                % (name, part, PARTS, measure, group)
            )
    if not isinstance(run_group, str):
        raise ValueError("run_group must be a string, got %r" % (run_group,))
    content = {
        "version": PROTO_VERSION,
        "kind": kind,
        "measure": measure,
        "group": group,
        "layers": layers,
        "parts": parts,
        "model": str(model),
        "baseline": bool(baseline),
        "run_group": run_group,
        "higher_is_better": check_direction(higher_is_better),
    }
    if kind == KIND_CHANNELS:
        if channels is None or len(channels) != len(layers):
            raise ValueError(
                "channels must give one channel count per layer (%d), got %r "
                "(measure=%r, group=%r)" % (len(layers), channels, measure, group)
            )
        counts = [int(c) for c in channels]
        if any(c < 0 for c in counts):
            raise ValueError("channels must be counts >= 0, got %r" % (counts,))
        content["channels"] = counts
    elif channels is not None:
        raise ValueError('channels is only allowed with kind="channels"')
    if kind == KIND_STATS:
        fields = list(fields or ())
        unknown = [f for f in fields if f not in STAT_FIELDS]
        if not fields or unknown:
            raise ValueError(
                "fields must name the rows of the stats tensor, each one of %r, got %r"
                % (STAT_FIELDS, fields)
            )
        content["fields"] = fields
    elif fields is not None:
        raise ValueError('fields is only allowed with kind="stats"')
    return summary_pb2.SummaryMetadata(
        display_name="%s/%s" % (measure, group),
        summary_description="%s under %s (%s)" % (measure, group, kind),
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=PLUGIN_NAME,
            content=json.dumps(content).encode("utf-8"),
        ),
        data_class=summary_pb2.DATA_CLASS_TENSOR,
    )


def _fail(message, *args):
    raise ValueError("equivariance plugin metadata " + (message % args if args else message))


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _string_list(result, key):
    value = result.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        _fail("lacks %r (or it is not a list of strings)", key)
    return value


def parse_plugin_metadata(content):
    """Parse and validate the ``plugin_data.content`` of an equivariance tag.

    Every field is checked, so a reader never meets a value of the wrong type.

    Args:
      content: ``bytes`` (UTF-8 JSON) as stored in the event file.

    Returns:
      A ``dict`` with the keys of the version-2 format of this module's docstring
      (``channels`` only for kind ``"channels"``, ``fields`` only for ``"stats"``);
      version-1 content is mapped onto it (``run_group=""``; ``model=""``,
      ``baseline=False``, ``higher_is_better=True`` when absent). In version 2 an
      absent ``higher_is_better`` is ``None``. Unknown keys are kept and otherwise
      ignored; unknown ``fields`` of a stats tag are kept (readers skip them).

    Raises:
      TypeError: if ``content`` is not bytes.
      ValueError: if it is not JSON, has no or an unsupported ``version``, or a
        field is missing or has the wrong type.
    """
    if not isinstance(content, (bytes, bytearray)):
        raise TypeError("content must be bytes, got %s" % type(content).__name__)
    try:
        result = json.loads(bytes(content).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError("equivariance plugin metadata is not UTF-8 JSON: %s" % e) from None
    if not isinstance(result, dict):
        _fail("must be a JSON object, got %s", type(result).__name__)
    version = result.get("version")
    if not _is_int(version) or version not in READABLE_VERSIONS:
        _fail(
            "has version %r; this lightning_equivariance_tb reads versions %s "
            "(upgrade tensorboard-plugin-equivariance to read newer logs)",
            version,
            " and ".join(str(v) for v in READABLE_VERSIONS),
        )
    kinds = KINDS_V1 if version == 1 else KINDS
    for key in ("kind", "measure", "group"):
        if not isinstance(result.get(key), str) or not result[key]:
            _fail("lacks %r (or it is not a non-empty string)", key)
    if result["kind"] not in kinds:
        _fail("has kind %r, expected one of %r (version %d)", result["kind"], kinds, version)
    layers = _string_list(result, "layers")
    parts = _string_list(result, "parts")
    if not layers or not all(layers):
        _fail("'layers' must name at least one layer, by non-empty names")
    if len(parts) != len(layers):
        _fail("has %d parts for %d layers", len(parts), len(layers))
    result.setdefault("model", "")
    result.setdefault("baseline", False)
    if not isinstance(result["model"], str):
        _fail("'model' must be a string, got %r", result["model"])
    if not isinstance(result["baseline"], bool):
        _fail("'baseline' must be true or false, got %r", result["baseline"])
    if version == 1:
        result.setdefault("higher_is_better", True)
        if not isinstance(result["higher_is_better"], bool):
            _fail("'higher_is_better' must be true or false (version 1), got %r",
                  result["higher_is_better"])
        result["run_group"] = ""
    else:
        result.setdefault("higher_is_better", None)
        if not (result["higher_is_better"] is None or isinstance(result["higher_is_better"], bool)):
            _fail("'higher_is_better' must be true, false or null, got %r",
                  result["higher_is_better"])
        result.setdefault("run_group", "")
        if not isinstance(result["run_group"], str):
            _fail("'run_group' must be a string, got %r", result["run_group"])
    if result["kind"] == KIND_CHANNELS:
        channels = result.get("channels")
        if (
            not isinstance(channels, list)
            or len(channels) != len(layers)
            or not all(_is_int(c) and c >= 0 for c in channels)
        ):
            _fail("of kind 'channels' needs one integer channel count >= 0 per layer, got %r",
                  channels)
    if result["kind"] == KIND_STATS:
        fields = _string_list(result, "fields")
        if not fields:
            _fail("of kind 'stats' needs 'fields', the names of the tensor's rows")
    return result

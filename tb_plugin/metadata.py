"""The on-disk format of the equivariance TensorBoard plugin.

Everything the writer (:mod:`tb_plugin.summary`) and the reader
(:mod:`tb_plugin.plugin`) must agree on lives here. This module needs only
the standard library and TensorBoard's protos: no numpy, no torch.

Tags
----
For one measure (e.g. ``"equivariance"``) and one transformation group
(e.g. ``"rot90"``) a run holds up to two tensor time series, one point per
logged step (normally the epoch):

``equivariance_layers/{measure}/{group}``
    float32, shape ``(L,)``: one value per measured layer, in depth order.

``equivariance_channels/{measure}/{group}``
    float32, shape ``(L, Cmax)``: row ``l`` holds the per-channel values of
    layer ``l`` in its first ``channels[l]`` entries; the remaining
    ``Cmax - channels[l]`` entries are NaN *padding*. Real values are never
    NaN (the writer refuses NaN), so a NaN always means "this layer has no
    such channel".

Values in both tensors may be ``+inf`` or ``-inf``: MEASURES.md §4 defines
the normalised ratios ``nv``/``nd`` with ``x/0 = +inf``, a documented value.
The JSON routes of :mod:`tb_plugin.plugin` send them as the strings
``"Infinity"``/``"-Infinity"`` (plain JSON has no infinity), the base64
encoding as IEEE float32 infinities.

Metadata
--------
Every tag carries a ``SummaryMetadata`` whose ``plugin_data.plugin_name`` is
:data:`PLUGIN_NAME` and whose ``plugin_data.content`` is UTF-8 JSON, constant
for the life of the tag::

    {"version": 1, "kind": "layers" | "channels",
     "measure": str, "group": str,
     "layers": [layer names in depth order],
     "parts": ["Early" | "Middle" | "Late" | "Pool" | "Final", one per layer],
     "model": str, "baseline": bool, "higher_is_better": bool,
     "channels": [channel count per layer]}      # "channels" kind only

Readers must ignore keys they do not know (later versions may add some).
"""

import json

from tensorboard.compat.proto import summary_pb2

PLUGIN_NAME = "equivariance"
"""Name under which the data is stored and the plugin is served."""

PROTO_VERSION = 1
"""Version of the JSON metadata written by this package."""

LAYERS_TAG_PREFIX = "equivariance_layers"
CHANNELS_TAG_PREFIX = "equivariance_channels"

KIND_LAYERS = "layers"
KIND_CHANNELS = "channels"
KINDS = (KIND_LAYERS, KIND_CHANNELS)

PARTS = ("Early", "Middle", "Late", "Pool", "Final")
"""Depth parts of Bruintjes et al. 2023, Sec. 4.2, in depth order."""


def layers_tag(measure, group):
    """Tag of the per-layer series for ``measure`` and ``group``."""
    return "%s/%s/%s" % (LAYERS_TAG_PREFIX, measure, group)


def channels_tag(measure, group):
    """Tag of the per-channel series for ``measure`` and ``group``."""
    return "%s/%s/%s" % (CHANNELS_TAG_PREFIX, measure, group)


def _check_name(argument, value):
    if not isinstance(value, str) or not value:
        raise ValueError(
            "%s must be a non-empty string, got %r" % (argument, value)
        )
    if "/" in value:
        raise ValueError(
            "%s must not contain '/' (it is one component of the tag "
            "'equivariance_layers/{measure}/{group}'), got %r"
            % (argument, value)
        )


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
    channels=None,
):
    """Build the ``SummaryMetadata`` proto of one equivariance tag.

    Args:
      kind: ``"layers"`` or ``"channels"``.
      measure: Measure name, e.g. ``"equivariance"``; no ``/``.
      group: Transformation group name, e.g. ``"rot90"``; no ``/``.
      layers: Layer names in depth order.
      parts: One of ``PARTS`` per layer.
      model: Free-form model name shown in the UI.
      baseline: Whether the run is a reference model (e.g. steerable CNN)
        to be drawn distinctly.
      higher_is_better: ``False`` for deviation-type measures (G-EED, LEE).
      channels: Channel count per layer; required for ``kind="channels"``
        and refused otherwise.

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
            "layers must name at least one layer (measure=%r, group=%r)"
            % (measure, group)
        )
    if len(parts) != len(layers):
        raise ValueError(
            "parts has %d entries but layers has %d (measure=%r, group=%r)"
            % (len(parts), len(layers), measure, group)
        )
    for name, part in zip(layers, parts):
        if part not in PARTS:
            raise ValueError(
                "parts: layer %r has part %r, expected one of %r "
                "(measure=%r, group=%r)" % (name, part, PARTS, measure, group)
            )
    content = {
        "version": PROTO_VERSION,
        "kind": kind,
        "measure": measure,
        "group": group,
        "layers": layers,
        "parts": parts,
        "model": str(model),
        "baseline": bool(baseline),
        "higher_is_better": bool(higher_is_better),
    }
    if kind == KIND_CHANNELS:
        if channels is None or len(channels) != len(layers):
            raise ValueError(
                "channels must give one channel count per layer (%d), got %r "
                "(measure=%r, group=%r)"
                % (len(layers), channels, measure, group)
            )
        content["channels"] = [int(c) for c in channels]
    elif channels is not None:
        raise ValueError('channels is only allowed with kind="channels"')
    return summary_pb2.SummaryMetadata(
        display_name="%s/%s" % (measure, group),
        summary_description="%s under %s (%s)" % (measure, group, kind),
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=PLUGIN_NAME,
            content=json.dumps(content).encode("utf-8"),
        ),
        data_class=summary_pb2.DATA_CLASS_TENSOR,
    )


_REQUIRED = {
    "kind": str,
    "measure": str,
    "group": str,
    "layers": list,
    "parts": list,
}


def parse_plugin_metadata(content):
    """Parse the ``plugin_data.content`` of an equivariance tag.

    Args:
      content: ``bytes`` (UTF-8 JSON) as stored in the event file.

    Returns:
      A ``dict`` with at least the keys of the format description in this
      module's docstring; optional keys get their defaults (``model=""``,
      ``baseline=False``, ``higher_is_better=True``). Unknown keys are kept
      and otherwise ignored.

    Raises:
      TypeError: if ``content`` is not bytes.
      ValueError: if it is not JSON, has no or an unsupported ``version``,
        or lacks a required key.
    """
    if not isinstance(content, (bytes, bytearray)):
        raise TypeError(
            "content must be bytes, got %s" % type(content).__name__
        )
    try:
        result = json.loads(bytes(content).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(
            "equivariance plugin metadata is not UTF-8 JSON: %s" % e
        ) from None
    if not isinstance(result, dict):
        raise ValueError(
            "equivariance plugin metadata must be a JSON object, got %s"
            % type(result).__name__
        )
    version = result.get("version")
    if version != PROTO_VERSION:
        raise ValueError(
            "equivariance plugin metadata has version %r; this tb_plugin "
            "reads version %d only (upgrade lightning-equivariance to read "
            "newer logs)" % (version, PROTO_VERSION)
        )
    for key, kind in _REQUIRED.items():
        if not isinstance(result.get(key), kind):
            raise ValueError(
                "equivariance plugin metadata lacks %r (or it is not a %s)"
                % (key, kind.__name__)
            )
    if result["kind"] not in KINDS:
        raise ValueError(
            "equivariance plugin metadata has kind %r, expected one of %r"
            % (result["kind"], KINDS)
        )
    if len(result["parts"]) != len(result["layers"]):
        raise ValueError(
            "equivariance plugin metadata has %d parts for %d layers"
            % (len(result["parts"]), len(result["layers"]))
        )
    if result["kind"] == KIND_CHANNELS and (
        not isinstance(result.get("channels"), list)
        or len(result["channels"]) != len(result["layers"])
    ):
        raise ValueError(
            "equivariance plugin metadata of kind 'channels' needs one "
            "channel count per layer"
        )
    result.setdefault("model", "")
    result.setdefault("baseline", False)
    result.setdefault("higher_is_better", True)
    return result

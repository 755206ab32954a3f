"""The measurement engine: every selected layer, every measure, one stacked pass.

For each chunk of probe images ``x`` the engine builds one batch
``[x, T_{g_1} x, ..., T_{g_m} x]`` over the elements of *all* groups (the identity
once), runs a single forward under ``torch.no_grad`` with hooks on the selected
layers, and feeds each layer's activations straight into the measures' sum states
inside the hook, so nothing per-image is kept and memory does not grow with the
number of probe images. Before the first chunk, one image (with its transformed
copies) runs through the model only to create every layer's states, so the peak
memory of a measurement is reached in its first chunk and layer errors show early.

:func:`measure` is the one-call entry point; :class:`Measurement` is the same thing
split into ``update`` / ``compute`` / ``reset`` (what the Lightning callback uses, one
shard per process, states synced by torchmetrics).
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .groups import ChannelAction, Group, GroupActionError
from .lie import LieTransform, layer_lie_context, lie_pass, primal_of, split_groups
from .metrics import MEASURES, LayerContext, LayerMetric
from .metrics.base import ImagesLeftOut
from .steerable import e2cnn_channel_action, field_type_of, patch_e2cnn
from .probe_set import iter_images
from .probe import LayerSpec, Probe, as_activation, check_layout_overrides, first_tensor, select_layers

__all__ = ["measure", "Measurement", "MeasureReport", "LayerResult", "LayerSeries", "MeasureError", "PARTS"]

PARTS = ("Early", "Middle", "Late", "Pool", "Final")
_POOLING = (
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._MaxPoolNd,
)


class MeasureError(RuntimeError):
    """Measuring a layer failed; the message names the layer and the shape."""


@dataclass
class LayerInfo:
    name: str
    index: int
    kind: str
    shape: Tuple[int, ...]
    is_pool: bool = False
    part: str = ""
    layout: str = "channels_first"


@dataclass
class LayerResult:
    """One (layer, measure, group) result of a :class:`MeasureReport`."""

    layer: str
    index: int
    part: str
    kind: str
    shape: Tuple[int, ...]
    measure: str
    group: str
    value: float
    per_element: Dict[str, float]
    per_channel: Optional[np.ndarray]
    left_out: int
    higher_is_better: bool
    layout: str = "channels_first"
    non_finite: int = 0


@dataclass
class LayerSeries:
    """The per-layer vector of one (measure, group), in depth order (what TensorBoard summaries hold)."""

    measure: str
    group: str
    layers: List[str]
    parts: List[str]
    values: np.ndarray
    per_channel: Optional[List[np.ndarray]]
    higher_is_better: bool


def assign_parts(kinds: Sequence[str], is_pool: Optional[Sequence[bool]] = None) -> List[str]:
    """Depth parts of Bruintjes et al. 2023 §4.2 for layers in depth order.

    *Pool* is the output of global pooling: the last pooling module whose output is a
    vector (``B x D`` or ``B x C x 1 x 1``). Everything before it (feature maps, and maps
    already down-sampled to ``1 x 1``) is split uniformly into Early / Middle / Late;
    everything after it (the classifier head, ending in the output before softmax) is
    *Final*. Without a global pooling layer (a ViT's class token, a flatten-based head)
    there is no Pool part: the trailing vector layers are Final.
    """
    n = len(kinds)
    is_pool = list(is_pool) if is_pool is not None else [False] * n
    pools = [i for i in range(n) if is_pool[i] and kinds[i] == "vector"]
    if pools:
        head_start, pool = pools[-1] + 1, pools[-1]
    else:
        head_start, pool = n, None
        while head_start > 0 and kinds[head_start - 1] == "vector":
            head_start -= 1
        if head_start == 0:  # only vectors: nothing spatial to split
            head_start = n - 1
    body = pool if pool is not None else head_start
    parts = [PARTS[min(2, (3 * j) // body)] for j in range(body)]
    if pool is not None:
        parts.append("Pool")
    return parts + ["Final"] * (n - len(parts))


@dataclass
class MeasureReport:
    """What :func:`measure` returns: one :class:`LayerResult` per (layer, measure, group).

    Attributes:
        results: the results, in depth order of the layers.
        errors: ``{(layer, measure, group): reason}`` of what could not be measured
            (``on_error="warn"``, the default): a layer whose output is no map of the image
            grid, a non-square map under 90-degree rotations, a dead output for the
            correlation measures, a layer whose every image was non-finite, ...; the other
            measures and groups of the layer are still reported.
        notes: ``{(layer, measure, group): reason}`` of measures that are undefined on a layer
            and were skipped there by design (e.g. ``same_equivariance`` on vector layers,
            ``geed_softmax`` on feature maps); the layer's other measures are reported.
        not_called: selected layers whose forward hook never fired.
        seconds: wall time of the measurement.
        num_samples: probe images measured (on this process).
        layouts: ``{layer: "channels_first" | "channels_last" | "tokens" | "vector"}``: how each
            measured layer's output was read (``channels_last``: ``B x h x w x C``).
        non_finite: ``{layer: [probe positions]}`` of images left out of a layer because their
            input or activation there held NaN or Inf (MEASURES.md, "Non-finite values").
        non_finite_inputs: probe positions of images whose input held NaN or Inf (left out of
            every layer).
    """

    results: List[LayerResult]
    errors: Dict[Tuple[str, str, str], str] = field(default_factory=dict)
    not_called: List[str] = field(default_factory=list)
    seconds: float = 0.0
    num_samples: int = 0
    notes: Dict[Tuple[str, str, str], str] = field(default_factory=dict)
    layouts: Dict[str, str] = field(default_factory=dict)
    non_finite: Dict[str, List[int]] = field(default_factory=dict)
    non_finite_inputs: List[int] = field(default_factory=list)

    def to_dataframe(self, per_element: bool = False):
        """A ``pandas.DataFrame`` with columns ``layer, index, part, kind, layout, measure, group, value,
        left_out, non_finite``.

        ``value`` is averaged over the group's elements; ``per_element=True`` gives one row
        per element with an ``element`` column instead. ``layout`` says how the layer was read
        (``channels_last`` for ``B x h x w x C`` outputs), ``left_out`` counts dead channels
        left out, ``non_finite`` the images left out of the layer for NaN/Inf values.
        """
        import pandas as pd

        rows = []
        for r in self.results:
            base = dict(layer=r.layer, index=r.index, part=r.part, kind=r.kind, layout=r.layout, measure=r.measure, group=r.group)
            extra = dict(left_out=r.left_out, non_finite=r.non_finite)
            if per_element:
                rows += [dict(base, element=e, value=v, **extra) for e, v in r.per_element.items()]
            else:
                rows.append(dict(base, value=r.value, **extra))
        cols = ["layer", "index", "part", "kind", "layout", "measure", "group"] + (["element"] if per_element else [])
        return pd.DataFrame(rows, columns=cols + ["value", "left_out", "non_finite"])

    def parts(self):
        """Mean value per depth part: a DataFrame indexed by (measure, group) with columns Early..Final."""
        df = self.to_dataframe()
        table = df.pivot_table(index=["measure", "group"], columns="part", values="value", aggfunc="mean")
        return table.reindex(columns=[p for p in PARTS if p in table.columns])

    def scalars(self, prefix: str = "equivariance") -> Dict[str, float]:
        """Flat scalars as the callback logs them: ``{prefix}/{measure}/{group}/{layer}`` and
        ``{prefix}/{measure}/{group}/part/{Part}`` (the mean over the part's layers)."""
        scalars: Dict[str, float] = {}
        for s in self.series():
            base = f"{prefix}/{s.measure}/{s.group}"
            for layer, value in zip(s.layers, s.values):
                scalars[f"{base}/{layer}"] = float(value)
            for part in PARTS:
                vals = [float(v) for p, v in zip(s.parts, s.values) if p == part]
                if vals:
                    scalars[f"{base}/part/{part}"] = float(np.mean(vals))
        return scalars

    def per_channel(self, layer: str, measure: str, group: str) -> np.ndarray:
        """Per-channel values of one layer (for heatmaps); raises ``KeyError`` if not available."""
        for r in self.results:
            if (r.layer, r.measure, r.group) == (layer, measure, group):
                if r.per_channel is None:
                    raise KeyError(f"layer {layer!r} is a vector layer or {measure!r} has no per-channel values")
                return r.per_channel
        raise KeyError(f"no result for layer={layer!r}, measure={measure!r}, group={group!r}")

    def series(self) -> List[LayerSeries]:
        """One :class:`LayerSeries` per (measure, group), layers in depth order."""
        out: Dict[Tuple[str, str], List[LayerResult]] = {}
        for r in self.results:
            out.setdefault((r.measure, r.group), []).append(r)
        series = []
        for (m, g), rs in out.items():
            rs = sorted(rs, key=lambda r: r.index)
            chans = [r.per_channel for r in rs]
            series.append(
                LayerSeries(
                    m,
                    g,
                    [r.layer for r in rs],
                    [r.part for r in rs],
                    np.array([r.value for r in rs], dtype=np.float64),
                    None if all(c is None for c in chans) else [np.atleast_1d(c if c is not None else r.value) for c, r in zip(chans, rs)],
                    rs[0].higher_is_better,
                )
            )
        return series

    def plot(self, ax=None):
        """Plot value against layer depth, one line per (measure, group); returns ``(fig, ax)``. Needs matplotlib."""
        try:
            import matplotlib.pyplot as plt
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("MeasureReport.plot() needs matplotlib: pip install matplotlib") from e
        fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(8, 4))
        for s in self.series():
            ax.plot(range(len(s.layers)), s.values, marker="o", label=f"{s.measure} / {s.group}")
        if self.results:
            s = self.series()[0]
            ax.set_xticks(range(len(s.layers)))
            ax.set_xticklabels(s.layers, rotation=90, fontsize=7)
        ax.set_xlabel("layer (depth order)")
        ax.set_ylabel("value")
        ax.legend()
        fig.tight_layout()
        return fig, ax

    def __repr__(self) -> str:
        return (
            f"MeasureReport({len(self.results)} results, {len({r.layer for r in self.results})} layers, "
            f"{self.num_samples} samples, {self.seconds:.2f}s, errors={list(self.errors)})"
        )


def _model_device_dtype(model: nn.Module) -> Tuple[torch.device, Optional[torch.dtype]]:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device, (t.dtype if t.is_floating_point() else None)
    return torch.device("cpu"), None


class Measurement:
    """Streaming measurement of a model: ``update(images)`` any number of times, then ``compute()``.

    Args:
        model: any ``torch.nn.Module`` taking ``B x C x H x W`` images.
        measures: names from :data:`lightning_equivariance.metrics.MEASURES`
            (``"invariance"``, ``"equivariance"``, ...).
        groups: :class:`~lightning_equivariance.groups.Group` instances or names.
        layers: see :func:`~lightning_equivariance.probe.select_layers` (default ``"auto"``).
        batch_size: images per forward, transformed copies included (bounds memory).
        similarity: ``"pearson"`` (default) or ``"cosine"`` for the correlation measures.
        measure_options: further keyword options handed to every measure's ``for_layer``
            (each measure takes the ones it knows).
        channel_actions: ``{layer_name: channel_action}`` declared by the architecture.
        steerable_actions: use the field type's representation of e2cnn ``GeometricTensor``
            outputs as their channel action (see :mod:`lightning_equivariance.steerable`);
            ``False`` measures them like plain maps.
        layouts: ``{layer_name: "channels_first" | "channels_last"}``: how a layer's 4-D output
            is stored, overriding what :func:`~lightning_equivariance.probe.discover_layouts`
            infers (module evidence, then spatial sizes).
        on_error: ``"warn"`` (default): a (layer, measure, group) that cannot be measured is
            recorded with its reason in ``report.errors`` and the rest is measured, with one
            summary warning; ``"raise"``: stop at the first failure with an error.
        progress: show a progress bar over the chunks (tqdm).
        device: where to measure; must be the model's device (images are moved there).
    """

    def __init__(
        self,
        model: nn.Module,
        measures: Sequence[str] = ("invariance", "equivariance"),
        groups: Sequence[Union[str, Group]] = ("rotation90",),
        layers: LayerSpec = "auto",
        batch_size: int = 256,
        similarity: str = "pearson",
        measure_options: Optional[Mapping[str, Any]] = None,
        channel_actions: Optional[Mapping[str, ChannelAction]] = None,
        steerable_actions: bool = True,
        layouts: Optional[Mapping[str, str]] = None,
        on_error: str = "warn",
        progress: bool = False,
        device: Optional[Union[str, torch.device]] = None,
    ):
        if "e2cnn" in sys.modules:
            patch_e2cnn()  # e2cnn's bases hash with ndarray.tostring, gone in NumPy 2.3 (steerable.py)
        if isinstance(measures, str):
            measures = (measures,)
        unknown = [m for m in measures if m not in MEASURES]
        if unknown or not measures:
            raise ValueError(f"unknown measure(s) {unknown}: choose from {sorted(MEASURES)}")
        if isinstance(groups, (str, Group, LieTransform)):
            groups = (groups,)
        # Measure "lee" runs its own forward-mode pass per continuous transform (lie.py);
        # the others share the stacked pass over the discrete groups.
        self._lie_measures = [m for m in measures if getattr(MEASURES[m], "forward_mode", False)]
        self._stacked_measures = [m for m in measures if m not in self._lie_measures]
        self.groups, self.transforms = split_groups(groups, bool(self._lie_measures), bool(self._stacked_measures))
        names = [g.name for g in self.groups + self.transforms]
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"groups need distinct names, got {names}; pass name=... to tell them apart")
        if on_error not in ("raise", "warn"):
            raise ValueError(f"on_error must be 'raise' or 'warn', got {on_error!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        model_device, _ = _model_device_dtype(model)
        if device is not None and _has_tensors(model) and not _same_device(torch.device(device), model_device):
            raise ValueError(
                f"device={str(device)!r} but the model's parameters are on {model_device}; measure where the "
                f"model is (drop device=) or move the model first: model.to({str(device)!r})"
            )
        self.model = model
        self.measures = list(measures)
        self.layers = select_layers(model, layers)
        self.layout_overrides = check_layout_overrides(layouts, [n for n, _ in self.layers])
        self._modules_by_name = dict(self.layers)
        self.batch_size = int(batch_size)
        self.options = {"similarity": similarity, **dict(measure_options or {})}
        self.channel_actions = dict(channel_actions or {})
        self.steerable_actions = bool(steerable_actions)
        self._actions: Dict[Tuple[str, str], ChannelAction] = {}
        self.on_error = on_error
        self.progress = progress
        self.device = torch.device(device) if device is not None else None
        self.num_elements = 1 + sum(len(g) for g in self.groups)
        #: ``{layer: layout or refusal reason}`` of the 4-D outputs, decided at the first update.
        self.layouts: Optional[Dict[str, str]] = None
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget all accumulated states (layers are re-discovered on the next update)."""
        self.metrics: Dict[Tuple[str, str, str], LayerMetric] = {}
        self.infos: Dict[str, LayerInfo] = {}
        self.errors: Dict[Tuple[str, str, str], str] = {}
        self.notes: Dict[Tuple[str, str, str], str] = {}
        #: images left out for non-finite values: per layer, and ``"(input)"`` for the inputs
        self.images_left_out: Dict[str, ImagesLeftOut] = {}
        self.num_samples = 0
        self.seconds = 0.0
        self._called: set = set()
        self._allocating = False
        # (output, its version, {group: (affine_invariant, channel_action)}) of the last layer
        # measured in the current forward: a BatchNorm right after it may reuse its results.
        self._previous: Optional[Tuple[torch.Tensor, Optional[int], Dict[str, Tuple[Dict[str, Any], Any]]]] = None

    def state_keys(self) -> List[Tuple[str, ...]]:
        """The keys of every state that ``compute()`` syncs across processes (metrics and left-out images)."""
        return sorted(self.metrics) + sorted(("(images)", k) for k in self.images_left_out)

    def keep_only(self, keys, reason: str) -> None:
        """Drop the states whose keys are not in ``keys`` (e.g. not measured on every process), recording ``reason``."""
        keys = set(keys)
        for key in [k for k in self.metrics if k not in keys]:
            self._fail([key], f"layer {key[0]!r}: {reason}")
        for layer in [k for k in self.images_left_out if ("(images)", k) not in keys]:
            del self.images_left_out[layer]

    def agree(self, collectives, ok: bool = True) -> bool:
        """Agree with the other processes before ``compute()`` (which syncs every state it holds).

        ``collectives.all_gather_object(obj)`` returns every process's ``obj`` (the callback
        passes the strategy's). Each process offers its state keys, or ``None`` when its
        update failed (``ok=False``); returns ``False`` when some process failed, else keeps
        only the states every process has (a layer measured on one process only is recorded
        as an error) and returns ``True``. Every process must call it.
        """
        gathered = collectives.all_gather_object(self.state_keys() if ok else None)
        if any(keys is None for keys in gathered):
            return False
        common = set(map(tuple, gathered[0])).intersection(*(set(map(tuple, k)) for k in gathered[1:]))
        self.keep_only(common, "could not be measured on every process")
        return True

    def _fail(self, keys, msg: str) -> None:
        for key in keys:
            self.errors.setdefault(key, msg)
            self.metrics.pop(key, None)

    def _failure(self, e: Exception, name: str, output, keys) -> None:
        """Record ``e`` for ``keys`` of layer ``name``, or raise it (``on_error="raise"``)."""
        msg = str(e) if name in str(e) else f"layer {name!r} (output {_shape_of(output)}): {e}"
        if self.on_error == "raise":
            raise (e if isinstance(e, (GroupActionError, MeasureError)) and name in str(e) else MeasureError(msg)) from e
        self._fail(keys, msg)

    def _keys(self, name: str, groups, measures) -> List[Tuple[str, str, str]]:
        return [(name, m, g.name) for g in groups for m in measures]

    def _channel_action(self, name: str, output) -> Optional[ChannelAction]:
        """The layer's declared channel action: the user's, else an e2cnn field type's representation."""
        if name in self.channel_actions:
            return self.channel_actions[name]
        if not self.steerable_actions:
            return None
        field_type = field_type_of(output)
        if field_type is None:
            return None
        key = ("e2cnn", name)
        if key not in self._actions:
            self._actions[key] = e2cnn_channel_action(field_type)
        return self._actions[key]

    @property
    def samples_per_forward(self) -> int:
        return max(1, self.batch_size // self.num_elements)

    def _stack(self, x: torch.Tensor) -> torch.Tensor:
        views = [x]
        for g in self.groups:
            views += [g.act_input(x, e) for e in g.elements]
        return torch.cat(views)

    def _affine_source(self, prev, name: str, inputs, kind: str) -> Optional[Dict[str, Tuple[Dict[str, Any], Any]]]:
        """The previous layer's reusable results when this layer is a positive per-channel affine map of its output."""
        if prev is None or kind != "map" or not inputs or inputs[0] is not prev[0]:
            return None
        # the same tensor object, and no in-place op on it between the two layers
        unchanged = prev[1] is not None and _version_of(inputs[0]) == prev[1]
        module = self._modules_by_name[name.split(":")[0]]
        return prev[2] if unchanged and _positive_channel_affine(module) else None

    def _track_left_out(self, name: str, ok: torch.Tensor, chunk: Dict[str, Any]) -> None:
        if self._allocating:
            return
        if name not in self.images_left_out:
            self.images_left_out[name] = ImagesLeftOut().to(ok.device)
        self.images_left_out[name].update(chunk["positions"], ~ok)

    def _activation(self, name: str, output, expected: int):
        act = as_activation(output, name, (self.layouts or {}).get(name))
        t = act.tensor
        if t.shape[0] != expected:
            raise MeasureError(
                f"layer {name!r}: output batch dimension {t.shape[0]} is not the input batch "
                f"{expected}; only layers that keep the batch axis first can be measured (windows or "
                "heads folded into the batch axis are not maps of the image grid)"
            )
        if name not in self.infos:
            module = self._modules_by_name[name.split(":")[0]]
            is_pool = isinstance(module, _POOLING) or "Pool" in type(module).__name__
            self.infos[name] = LayerInfo(name, len(self.infos), act.kind, tuple(t.shape[1:]), is_pool, layout=act.layout)
        return act

    def _on_output(self, name: str, output, inputs, chunk: Dict[str, Any]) -> None:
        self._called.add(name)
        previous, self._previous = self._previous, None
        transform = chunk.get("transform")
        b = chunk["b"]
        if transform is not None:
            return self._on_lie_output(name, output, transform, chunk)
        keys = self._keys(name, self.groups, self._stacked_measures)
        if all(k in self.errors or k in self.notes for k in keys):
            return
        try:
            act = self._activation(name, output, self.num_elements * b)
        except Exception as e:  # noqa: BLE001 - recorded with the layer's name
            return self._failure(e, name, output, keys)
        t = act.tensor
        stacked = t.reshape(self.num_elements, b, *t.shape[1:])
        # MEASURES.md "Non-finite values": an image whose input or any view's activation holds
        # NaN/Inf is left out of this layer; masks stay on the device (no host sync).
        ok = torch.isfinite(stacked).flatten(2).all(-1).all(0) & chunk["finite"]
        self._track_left_out(name, ok, chunk)
        stacked = torch.where(ok.view(1, b, *([1] * (stacked.dim() - 2))), stacked, torch.zeros((), dtype=stacked.dtype, device=stacked.device))
        source = self._affine_source(previous, name, inputs, act.kind)
        reusable = {}
        start = 1
        for group in self.groups:
            m = len(group)
            a_gx, start = stacked[start : start + m], start + m
            group_keys = self._keys(name, [group], self._stacked_measures)
            if all(k in self.errors or k in self.notes for k in group_keys):
                continue
            try:
                if act.kind == "map":
                    group.check_feature(tuple(t.shape[1:]), name)
                ctx = LayerContext(
                    layer=name,
                    kind=act.kind,
                    group=group,
                    elements=group.elements,
                    a_x=stacked[0],
                    a_gx=a_gx,
                    input_size=chunk["size"],
                    channel_action=self._channel_action(name, output),
                    sample_mask=ok,
                )
            except Exception as e:  # noqa: BLE001 - this group's action is undefined on the layer
                self._failure(e, name, output, group_keys)
                continue
            if source is not None and group.name in source and source[group.name][1] is ctx.channel_action:
                ctx.affine_of = source[group.name][0]
            reusable[group.name] = (ctx.affine_invariant, ctx.channel_action)
            for key in group_keys:
                if key in self.notes or key in self.errors:
                    continue
                try:
                    self._update_metric(key, ctx)
                except Exception as e:  # noqa: BLE001 - this measure fails here, the others go on
                    self._failure(e, name, output, [key])
        self._previous = (output, _version_of(output), reusable) if isinstance(output, torch.Tensor) else None

    def _update_metric(self, key: Tuple[str, str, str], ctx) -> None:
        metric = self.metrics.get(key)
        measure_name = key[1]
        if metric is None:
            # A measure undefined on this kind of layer says why; skip it here, keep the rest.
            not_applicable = getattr(MEASURES[measure_name], "not_applicable", None)
            reason = not_applicable(ctx, **self.options) if not_applicable is not None else None
            if reason:
                self.notes[key] = reason
                return
            metric = MEASURES[measure_name].for_layer(ctx, **self.options)
            self.metrics[key] = metric
        if not self._allocating:
            metric.update_layer(ctx)

    def _on_lie_output(self, name: str, output, transform, chunk: Dict[str, Any]) -> None:
        """Forward-mode pass of measure "lee": the output is a dual tensor."""
        keys = self._keys(name, [transform], self._lie_measures)
        if all(k in self.errors for k in keys):
            return
        try:
            self._activation(name, primal_of(output), chunk["b"])
            ctx = layer_lie_context(name, output, transform, (self.layouts or {}).get(name))
        except Exception as e:  # noqa: BLE001
            return self._failure(e, name, output, keys)
        ok = ctx.sample_mask & chunk["finite"]
        self._track_left_out(name, ok, chunk)
        ctx.sample_mask = ok
        ctx.lie = torch.where(ok.view(-1, 1, 1), ctx.lie, torch.zeros((), dtype=ctx.lie.dtype, device=ctx.lie.device))
        for key in keys:
            if key in self.errors:
                continue
            try:
                if key not in self.metrics:
                    self.metrics[key] = MEASURES[key[1]].for_layer(ctx, **self.options)
                self.metrics[key].update_layer(ctx)
            except Exception as e:  # noqa: BLE001
                self._failure(e, name, output, [key])

    @contextlib.contextmanager
    def _discovering(self, probe: Probe, x: torch.Tensor):
        """Decide every layer's layout during the first forward (the probe's hooks fill
        :attr:`layouts` before the engine's hook on the same layer reads it), once."""
        if self.layouts is not None:
            yield
            return
        self.layouts = {}
        try:
            with probe.discovering(x, self.layout_overrides, self.layouts) as found:
                yield
        except Exception as e:
            self.layouts = None
            expected = _expected_channels(self.model)
            if expected is not None and expected[1] != x.shape[1] and not isinstance(e, (MeasureError, GroupActionError)):
                raise ValueError(
                    f"probe images of shape {tuple(x.shape)} have {x.shape[1]} channel(s), but the model's first "
                    f"convolution {expected[0]!r} takes {expected[1]}: give images with {expected[1]} channel(s) "
                    f"(the model failed with {type(e).__name__}: {e})"
                ) from e
            raise
        if found.undecided:
            warnings.warn(
                f"lightning_equivariance: the layout of {len(found.undecided)} layer(s) is ambiguous (C == h == w and "
                f"no module evidence): {found.undecided[:5]}{' ...' if len(found.undecided) > 5 else ''} are read "
                "channels-first; pass layouts={layer: 'channels_last'} where that is wrong",
                RuntimeWarning,
                stacklevel=4,
            )

    @torch.no_grad()
    def update(self, inputs, positions: Optional[Sequence[int]] = None) -> None:
        """Measure a tensor ``N x C x H x W``, a Dataset, or an iterable of batches (first tensor of each).

        Args:
            positions: the global probe positions of these images (in order), used to name
                images left out for non-finite values; by default they continue from the
                images measured so far.
        """
        t0 = time.perf_counter()
        device, dtype = _model_device_dtype(self.model)
        device = self.device or device
        chunk_size = self.samples_per_forward
        total = inputs.shape[0] if isinstance(inputs, torch.Tensor) else (len(inputs) if hasattr(inputs, "__len__") else None)
        chunks = iter_images(inputs, chunk_size)
        if self.progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, total=None if total is None else math.ceil(total / chunk_size), desc="equivariance", leave=False)
        chunk: Dict[str, Any] = {}
        offset = 0
        callback = lambda n, o, i: self._on_output(n, o, i, chunk)  # noqa: E731
        with Probe(self.model, self.layers, callback) as probe:
            for x in chunks:
                if x.dim() != 4:
                    raise ValueError(f"probe images must be B x C x H x W, got shape {tuple(x.shape)}")
                if not x.is_floating_point():
                    raise ValueError(
                        f"probe images have dtype {x.dtype} (shape {tuple(x.shape)}); the model needs floating-point "
                        "images: convert them first, e.g. images.float() / 255 for 8-bit images"
                    )
                x = x.to(device=device, dtype=dtype)
                for g in self.groups:
                    g.check_input(x)
                b = x.shape[0]
                if positions is None:
                    pos = torch.arange(self.num_samples, self.num_samples + b, device=x.device)
                else:
                    pos = torch.as_tensor(list(positions[offset : offset + b]), dtype=torch.long, device=x.device)
                    if pos.numel() != b:
                        raise ValueError(f"positions= has {len(positions)} entries, fewer than the images given")
                offset += b
                finite = torch.isfinite(x).flatten(1).all(1)
                if self._stacked_measures and not self.infos:
                    # One image first, only to create every layer's metric: all states then exist
                    # before the first full chunk, so the peak memory of a run is reached in its
                    # first chunk and does not step up in the second (and layer errors show early).
                    chunk.update(b=1, size=tuple(x.shape[-2:]), finite=finite[:1], positions=pos[:1], transform=None)
                    self._allocating = True
                    try:
                        probe.start_forward()
                        self._previous = None
                        with self._discovering(probe, x):
                            self.model(self._stack(x[:1]))
                    finally:
                        self._allocating = False
                chunk.update(b=b, size=tuple(x.shape[-2:]), finite=finite, positions=pos, transform=None)
                if "(input)" not in self.images_left_out:
                    self.images_left_out["(input)"] = ImagesLeftOut().to(x.device)
                self.images_left_out["(input)"].update(pos, ~finite)
                if self._stacked_measures:
                    probe.start_forward()
                    self._previous = None
                    self.model(self._stack(x))
                    self._previous = None  # drop the last output
                for transform in self.transforms:  # measure "lee": one forward-mode pass per transform
                    chunk["transform"] = transform
                    probe.start_forward()
                    try:
                        with self._discovering(probe, x):
                            lie_pass(self.model, x, transform)
                    finally:
                        chunk["transform"] = None
                self.num_samples += b
        self.seconds += time.perf_counter() - t0

    def _left_out_images(self) -> Tuple[List[int], Dict[str, List[int]]]:
        """Synced ``(input positions, {layer: positions})`` of images left out for non-finite values; layers
        that lost every image are recorded as errors."""
        inputs: List[int] = []
        per_layer: Dict[str, List[int]] = {}
        for name, tracker in self.images_left_out.items():
            bad, seen = tracker.compute()
            if name == "(input)":
                inputs = bad
                continue
            if bad:
                per_layer[name] = bad
            if seen and len(bad) == seen:
                keys = [k for k in self._all_keys(name) if k not in self.notes]
                self._fail(keys, f"layer {name!r}: every probe image's activation holds NaN or Inf; nothing to measure")
        return inputs, per_layer

    def _all_keys(self, name: str) -> List[Tuple[str, str, str]]:
        return self._keys(name, self.groups, self._stacked_measures) + self._keys(name, self.transforms, self._lie_measures)

    def compute(self) -> MeasureReport:
        """Synced results of everything seen since the last ``reset`` (torchmetrics syncs across processes)."""
        if not self.num_samples and not self.infos:
            raise ValueError(
                "Measurement.compute(): no probe images were measured (the inputs held 0 images, or update() was "
                "never called); give it at least one image"
            )
        bad_inputs, left_out = self._left_out_images()
        infos = sorted(self.infos.values(), key=lambda i: i.index)
        parts = assign_parts([i.kind for i in infos], [i.is_pool for i in infos])
        for info, part in zip(infos, parts):
            info.part = part
        results = []
        for info in infos:
            for group in self.groups + self.transforms:
                for measure_name in self.measures:
                    key = (info.name, measure_name, group.name)
                    metric = self.metrics.get(key)
                    if metric is None:
                        continue
                    try:
                        d = metric.compute_details()
                    except Exception as e:  # noqa: BLE001
                        msg = f"layer {info.name!r} ({info.kind} {info.shape}), {measure_name}/{group.name}: {e}"
                        if self.on_error == "raise":
                            raise MeasureError(msg) from e
                        self._fail([key], msg)
                        continue
                    pe = d["per_element"].detach().cpu().double().numpy()
                    element_names = d.get("element_names") or [e.name for e in group.elements]
                    pc = d.get("per_channel")
                    results.append(
                        LayerResult(
                            layer=info.name,
                            index=info.index,
                            part=info.part,
                            kind=info.kind,
                            shape=info.shape,
                            measure=measure_name,
                            group=group.name,
                            value=float(d["value"]),
                            per_element={e: float(v) for e, v in zip(element_names, pe)},
                            per_channel=None if pc is None else pc.detach().cpu().double().numpy(),
                            left_out=int(d.get("left_out", 0)),
                            higher_is_better=bool(MEASURES[measure_name].higher_is_better),
                            layout=info.layout,
                            non_finite=len(left_out.get(info.name, [])),
                        )
                    )
        selected = [n for n, _ in self.layers]
        not_called = [n for n in selected if n not in self._called]
        report = MeasureReport(
            results,
            dict(self.errors),
            not_called,
            self.seconds,
            self.num_samples,
            dict(self.notes),
            layouts={i.name: i.layout for i in infos},
            non_finite=left_out,
            non_finite_inputs=bad_inputs,
        )
        _warn_summary(report)
        return report


def _warn_summary(report: "MeasureReport") -> None:
    """One warning per measurement for what was left out (MEASURES.md: never silently)."""
    if report.errors:
        first = list(report.errors.items())[:3]
        shown = "; ".join(f"{'/'.join(k)}: {v}" for k, v in first)
        warnings.warn(
            f"lightning_equivariance: {len(report.errors)} (layer, measure, group) combination(s) could not be "
            f"measured and are in report.errors (the rest was measured). First: {shown}",
            RuntimeWarning,
            stacklevel=3,
        )
    if report.non_finite_inputs or report.non_finite:
        layers = {k: v for k, v in report.non_finite.items() if v != report.non_finite_inputs}
        parts = []
        if report.non_finite_inputs:
            parts.append(f"the probe image(s) at position(s) {report.non_finite_inputs} hold NaN or Inf and were left out of every layer")
        if layers:
            shown = ", ".join(f"{k!r}: {v}" for k, v in list(layers.items())[:3])
            parts.append(f"{len(layers)} layer(s) left out images whose activations hold NaN or Inf ({shown}{' ...' if len(layers) > 3 else ''})")
        warnings.warn("lightning_equivariance: " + "; ".join(parts) + " (report.non_finite)", RuntimeWarning, stacklevel=3)


def _has_tensors(model: nn.Module) -> bool:
    return any(True for _ in model.parameters()) or any(True for _ in model.buffers())


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _expected_channels(model: nn.Module) -> Optional[Tuple[str, int]]:
    """The first convolution's name and input channels (to explain a channel mismatch)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return name, int(module.in_channels)
        in_type = getattr(module, "in_type", None)
        if getattr(in_type, "size", None) is not None:  # e2cnn
            return name, int(in_type.size)
    return None


def _version_of(t: torch.Tensor) -> Optional[int]:
    """The tensor's in-place version counter (``None`` for inference tensors, which have none)."""
    try:
        return t._version
    except RuntimeError:
        return None


def _positive_channel_affine(module: nn.Module) -> bool:
    """Whether ``module`` maps every channel map by ``a * x + b`` with ``a > 0`` (per sample at most).

    BatchNorm (running or batch statistics) and GroupNorm with positive weights (or none):
    their scale is ``weight / std`` per channel (and per sample for GroupNorm).
    """
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
        weight = getattr(module, "weight", None)
        try:
            return weight is None or bool((weight > 0).all())
        except Exception:  # noqa: BLE001 - an unusual weight (sharded, lazy): just compute the layer's own scores
            return False
    return False


def _shape_of(output) -> str:
    t = output if isinstance(output, torch.Tensor) else getattr(output, "tensor", None)
    if t is None and isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        t = output[0]
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(output).__name__


def measure(
    model: nn.Module,
    inputs,
    measures: Sequence[str] = ("invariance", "equivariance"),
    groups: Sequence[Union[str, Group]] = ("rotation90",),
    layers: LayerSpec = "auto",
    batch_size: int = 256,
    **kwargs: Any,
) -> MeasureReport:
    """Measure learned equivariance of every selected layer of ``model`` on ``inputs``.

    One stacked forward per chunk of ``batch_size`` images (transformed copies included)
    feeds every layer, measure and group. The model is put in eval mode and restored;
    no autograd graph is built.

    Args:
        model: any ``nn.Module`` on images ``B x C x H x W``.
        inputs: a tensor ``N x C x H x W``, a Dataset, or an iterable of batches.
        measures: e.g. ``("invariance", "equivariance")`` (Bruintjes et al. 2023, Eq. 4 / Eq. 7);
            ``"lee"`` (Gruver et al. 2023, Eq. 4) runs one forward-mode pass per continuous
            transform (:mod:`lightning_equivariance.lie`).
        groups: e.g. ``(Rotation90(), Translation(max_shift=4))`` or names ``("rotation90",)``;
            for ``"lee"`` transform names (``("rotation", "translation_x")``) or ``LieTransform`` instances.
        layers: ``"auto"``, qualified names, module types, or a predicate.
        batch_size: images per forward (bounds memory).
        **kwargs: ``similarity``, ``measure_options``, ``channel_actions``, ``steerable_actions``, ``layouts``,
            ``on_error``, ``progress``, ``device`` (see :class:`Measurement`).

    A (layer, measure, group) that cannot be measured is recorded in ``report.errors`` with
    its reason and the rest is measured (``on_error="raise"`` stops instead); images whose
    values are NaN or Inf are left out where they are, and named in ``report.non_finite``.

    Returns:
        a :class:`MeasureReport`; ``report.to_dataframe()`` has columns
        ``layer, index, part, kind, layout, measure, group, value, left_out, non_finite``.

    Example::

        >>> import torch, torchvision
        >>> from lightning_equivariance import measure, Rotation90
        >>> model = torchvision.models.resnet18(num_classes=10)
        >>> report = measure(model, torch.randn(8, 3, 32, 32), groups=[Rotation90()])
        >>> report.to_dataframe().head()  # doctest: +SKIP
    """
    if isinstance(inputs, torch.Tensor) and inputs.dim() >= 1 and inputs.shape[0] == 0:
        raise ValueError(f"inputs holds no images (shape {tuple(inputs.shape)}); give at least one probe image")
    m = Measurement(model, measures=measures, groups=groups, layers=layers, batch_size=batch_size, **kwargs)
    m.update(inputs)
    return m.compute()

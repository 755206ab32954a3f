"""What the engine hands a measure for one layer, and the base class of layer measures.

The engine runs one stacked forward per chunk of probe images and, for every hooked
layer and group, builds a :class:`LayerContext`: the activations of the untransformed
images ``a(x)`` and of the transformed ones ``a(T_g x)`` for every element ``g``. Work
shared by several measures (the transformed maps ``T'_g a(x)``, the validity masks, the
correlation matrix, ST) is computed once, on first ask, by the context's
:class:`~.shared.SharedWork` (``ctx.work``).

A measure is a :class:`LayerMetric`: a ``torchmetrics.Metric`` whose states are sums
(``dist_reduce_fx="sum"``), so splitting the probe set over chunks or processes gives
the same result. It follows torchmetrics' protocol: created from the first context
(which fixes shapes) with :meth:`LayerMetric.for_layer`, fed through the wrapped
``update()`` - with a context, or with tensors as documented by each measure - and read
with ``compute()`` (the value) or :meth:`LayerMetric.compute_details` (everything the
report shows, synced with torchmetrics' public ``sync_context``).

A measure declares what the engine needs to know, so that the engine names no measure:
:attr:`LayerMetric.pass_kind` (which pass feeds it), :meth:`LayerMetric.not_applicable`
(where it is undefined), and what it reuses from the previous layer
(``LayerContext.previous``, a :class:`~.shared.Handoff`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torchmetrics import Metric

from ..groups import ChannelAction, Group, GroupElement
from ..significance import Significance
from .shared import Handoff, JointWork, SharedWork

__all__ = ["LayerContext", "LieContext", "LayerDetails", "LayerMetric", "NonFiniteImages", "STACKED", "FORWARD_MODE"]

#: ``LayerMetric.pass_kind``: one forward over images x group elements, or a forward-mode pass per transform.
STACKED, FORWARD_MODE = "stacked", "forward_mode"


@dataclass
class LayerContext:
    """One layer's activations for one chunk of probe images under one group.

    Attributes:
        layer: the layer's name (for error messages).
        kind: ``"map"`` (``b x C x h x w``) or ``"vector"`` (``b x D``).
        group: the group; ``elements`` its elements in the order of ``a_gx``'s first axis.
        a_x: activations of the untransformed images, ``b x ...``.
        a_gx: activations of the transformed images, ``m x b x ...``.
        input_size: ``(H, W)`` of the probe images (to scale translations).
        channel_action: the architecture's channel action for this layer, if any.
        module: the layer's module (measures may look at what it computes).
        previous: the previous measured layer's :class:`~.shared.Handoff` (same group) when this
            layer's input is exactly that layer's output (the same tensor, not changed in place
            since); a measure decides itself whether it may reuse something from it.
        sample_mask: ``b`` booleans on the activations' device, ``True`` for the images that
            count, or ``None`` when all do. An image whose input or activation at this layer
            (any view) holds NaN or Inf is left out of the layer (docs/measures.md §1.7). The engine
            hands the activations on as they are (zeroing them would copy every output once
            more), so the masked images' ``a_x`` and ``a_gx`` may hold anything, NaN and Inf
            included. A measure leaves the masked images out of every sum and count exactly -
            the result equals measuring only the unmasked images - with ``torch.where`` on the
            device (never a product with the mask: ``NaN * 0`` is NaN), keeping its per-image
            work per image (so a masked image cannot reach another's terms), never compacting
            the batch or synchronising with the host.
        partner: ``b`` int64 indices on the activations' device: the local index (in this chunk)
            of each image's chance-level partner (global probe positions ``2k`` and ``2k + 1``,
            docs/measures.md §7), ``-1`` where the partner is not in the chunk; ``None``: no
            chance level. The engine keeps pairs inside chunks.
        deferred: the chunk's :class:`~lightning_equivariance.deferred.DeferredWork`, run by the engine
            after the chunk's pass: a measure may defer its per-chunk bookkeeping there, to run once for
            every layer; ``None`` (a context built by hand): the measure does it at once.
        joint: the :class:`~.shared.JointWork` of the layer's contexts under every group of the pass, when
            the pass measures several groups there: what they may compute once for all their elements.
    """

    layer: str
    kind: str
    group: Group
    elements: List[GroupElement]
    a_x: torch.Tensor
    a_gx: torch.Tensor
    input_size: Tuple[int, int]
    channel_action: Optional[ChannelAction] = None
    module: Any = None
    previous: Optional[Handoff] = None
    sample_mask: Optional[torch.Tensor] = None
    partner: Optional[torch.Tensor] = None
    deferred: Any = None
    joint: Optional[JointWork] = None

    @cached_property
    def work(self) -> SharedWork:
        """The layer's shared intermediates for this chunk (:class:`~.shared.SharedWork`), each computed once."""
        return SharedWork(self, self.previous)

    @property
    def num_channels(self) -> int:
        return int(self.a_x.shape[1])

    def transformed_x(self) -> torch.Tensor:
        """``T'_g a(x)`` for every element, ``m x b x ...`` (vectors: ``a(x)`` repeated, the identity action)."""
        return self.work.transformed_x

    def transform(self, maps: torch.Tensor, g: int) -> torch.Tensor:
        """``T'_g`` (element ``g`` of :attr:`elements`) on ``... x C x h x w`` maps of this layer."""
        return self.group.act_feature(maps, self.elements[g], self.input_size, self.channel_action)

    def moves_entries(self) -> bool:
        """Whether every ``T'_g`` only moves a map's entries: the group permutes positions with
        no mask (rot90, flips, circular shifts) and the channel action, if any, permutes
        channels (it says so through ``permutes_channels(element)``, as e2cnn's regular and
        quotient fields do). Then centring and norms per channel commute with ``T'_g``."""
        if self.kind != "map" or not getattr(self.group, "permutes_positions", False):
            return False
        action = self.channel_action
        says = getattr(action, "permutes_channels", None)
        return action is None or (says is not None and all(says(e) for e in self.elements))

    def mixes_channels(self) -> bool:
        """Whether the channel action may mix channels with a float matrix: there is one on a map
        layer and it does not say it permutes channels for every element. Its round-off can then
        leak into a channel that is exactly 0 (docs/measures.md §1.5)."""
        action = self.channel_action
        if action is None or self.kind != "map":
            return False
        says = getattr(action, "permutes_channels", None)
        return not (says is not None and all(says(e) for e in self.elements))

    def mask(self) -> Optional[torch.Tensor]:
        """Boolean ``m x h x w`` validity mask, or ``None`` when every position is valid."""
        return self.work.position_mask


@dataclass
class LieContext:
    """One layer's Lie derivatives for one chunk of probe images under one transform (measure ``lee``).

    Attributes:
        layer: the layer's name (for error messages).
        kind: ``"map"`` (feature maps and ViT/Mixer tokens) or ``"vector"``.
        transform: the :class:`~lightning_equivariance.transforms.LieTransform`.
        lie: ``b x C x P``: ``C`` channels of ``P`` entries each (a map's ``h w`` positions,
            the tokens of a token layer, class tokens included); a vector is ``b x 1 x D``.
        sample_mask: ``b`` booleans, ``True`` for the images that count, or ``None`` (all):
            an image whose primal or tangent holds NaN or Inf at this layer is left out
            (its ``lie`` rows may hold anything), as for :class:`LayerContext`.
        grid: ``(h, w)`` of the grid the layer's generator acts on (a map's size, a token
            layer's token grid), ``None`` for vectors or when unknown.
        input_size: ``(H, W)`` of the probe images, or ``None`` when unknown.
    """

    layer: str
    kind: str
    transform: Any
    lie: torch.Tensor
    sample_mask: Optional[torch.Tensor] = None
    grid: Optional[Tuple[int, int]] = None
    input_size: Optional[Tuple[int, int]] = None

    @property
    def num_channels(self) -> int:
        return int(self.lie.shape[1])


@dataclass(frozen=True)
class LayerDetails(Significance):
    """A measure's synced results for one (layer, group): what the engine reads to build a
    :class:`~lightning_equivariance.report.LayerResult`, as typed fields instead of dictionary keys.

    Built from :meth:`LayerMetric.compute_details`' mapping with :meth:`from_mapping` (the
    measures still return a ``dict``; the keys are documented there and in docs/measures.md §7).

    Attributes:
        value: the layer's value.
        per_element: tensor ``m``, one value per group element (or transform).
        per_channel: tensor ``C`` or ``None``.
        left_out: dead channels (or units) left out.
        element_names: names of the ``per_element`` entries where they are not the group's elements.
        chance_per_element, chance_left_out: the chance level per element and the images without a
            chance term (docs/measures.md §7); ``None`` (and 0) without one.
        stderr, chance, above_chance, informative, margin, ...: the value's standard error, chance
            level and margin over it (:class:`~lightning_equivariance.significance.Significance`).
        extra: the measure's own further keys (e.g. ``F`` and ``critical_F`` of ``anova``).
    """

    value: float
    per_element: torch.Tensor
    per_channel: Optional[torch.Tensor] = None
    left_out: int = 0
    element_names: Optional[List[str]] = None
    chance_per_element: Optional[torch.Tensor] = None
    chance_left_out: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, details: Mapping[str, Any]) -> "LayerDetails":
        """The typed form of a ``compute_details()`` mapping: its known keys become fields (absent
        ones their defaults; ``None`` counts become 0), the rest goes to :attr:`extra`. Raises
        ``KeyError`` naming ``value`` or ``per_element`` when the mapping lacks one."""
        missing = [k for k in ("value", "per_element") if k not in details]
        if missing:
            raise KeyError(f"compute_details() returned no {' and no '.join(map(repr, missing))}")
        known = {f.name for f in fields(cls)} - {"extra"}
        typed = {k: v for k, v in details.items() if k in known}
        for count in ("left_out", "chance_left_out", "margin_pairs"):
            typed[count] = int(typed.get(count) or 0)
        typed["value"] = float(typed["value"])
        return cls(**typed, extra={k: v for k, v in details.items() if k not in known})


_CONSTANTS: Dict[Tuple[float, torch.dtype], torch.Tensor] = {}


def _constant(fill: float, dtype: torch.dtype) -> torch.Tensor:
    """A shared 0-d host tensor holding ``fill``: the kept default of :meth:`LayerMetric.add_filled_state`
    (torchmetrics' ``reset`` clones it to the state's device, ``.to()`` gives the metric its own copy)."""
    key = (float(fill), dtype)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.full((), fill, dtype=dtype, device="cpu")
    return _CONSTANTS[key]


# the measures' fills, made at import so that every measurement issues the same ATen calls
for _fill in (0.0, math.inf, -math.inf):
    _constant(_fill, torch.float64)


def metric_on(device: Union[str, torch.device], cls: Callable[..., Metric], *args: Any, **kwargs: Any) -> Metric:
    """``cls(*args, **kwargs)`` created under torch's device context of ``device`` (which torchmetrics also
    records as the metric's device): its states are made there, without ``.to(device)`` afterwards."""
    device = torch.device(device)
    if device == torch.get_default_device():  # the factories' device already (no context, no ATen call)
        return cls(*args, **kwargs)
    with torch.device(device):
        return cls(*args, **kwargs)


def all_finite(t: torch.Tensor) -> torch.Tensor:
    """Whether each row of ``t`` (``... x N``) holds only finite values, on the device (no host sync).

    Exactly ``isfinite(t).all(-1)``: the max and min of a row propagate NaN, ``+inf`` only
    shows in the max and ``-inf`` only in the min. Two reductions without a temporary are
    20-30x faster on CPU than ``isfinite`` (a full-size boolean tensor, then a reduction),
    which cost the engine as much as the convolutions of the forward it checks.
    ``(max - max + min) - min == 0`` holds exactly when both are finite (``x - x`` is exactly
    0 for a finite ``x`` and NaN for ``±inf`` or NaN, and NaN propagates): four element-wise
    operations on the row results, where two ``isfinite`` and an ``&`` are nine ATen calls.
    """
    if not t.is_floating_point() or t.shape[-1] == 0:
        return torch.isfinite(t).all(-1)
    mx, mn = t.amax(-1), t.amin(-1)
    return (mx - mx + mn - mn) == 0


class LayerMetric(Metric):
    """Base class of the per-layer measures the engine can run (see module docstring).

    Subclasses set ``measure_name`` (the name used in ``measures=``), ``higher_is_better``
    (``True``, ``False`` or ``None`` for no preferred direction), ``best_value`` where the
    measure has a best possible value, ``pass_kind`` if not
    stacked, and implement ``for_layer``, ``_update_context`` (from a context),
    ``_update_tensors`` (the documented tensor form of ``update``) and ``_compute_details``;
    ``not_applicable`` where the measure is undefined on some layers.
    """

    measure_name: str = ""
    #: The measure's best possible value (perfect equivariance in its direction), where it has one:
    #: the above-chance level is ``(value - chance) / (best_value - chance)``; ``None``: none.
    best_value: Optional[float] = None
    full_state_update = False
    is_differentiable = False
    #: Which pass feeds the measure: :data:`STACKED` or :data:`FORWARD_MODE`.
    pass_kind: str = STACKED

    @classmethod
    def not_applicable(cls, ctx, **options) -> Optional[str]:
        """Why the measure is undefined on ``ctx``'s layer, or ``None``; the engine records the
        reason in ``report.notes`` and skips the measure there (the layer's others go on)."""
        return None

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Add a chunk: ``update(ctx)`` with the engine's :class:`LayerContext` / :class:`LieContext`,
        or the tensor form documented on the measure's ``_update_tensors``."""
        if len(args) == 1 and not kwargs and isinstance(args[0], (LayerContext, LieContext)):
            self._update_context(args[0])
        else:
            self._update_tensors(*args, **kwargs)

    def _update_context(self, ctx) -> None:
        raise NotImplementedError

    def _update_tensors(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    def add_filled_state(
        self,
        name: str,
        shape,
        fill: float,
        dtype: torch.dtype = torch.float64,
        dist_reduce_fx: Union[str, Callable, None] = "sum",
        persistent: bool = False,
    ) -> None:
        """``add_state`` for a state of constant initial value: one ATen call (the state itself), no copy.

        torchmetrics' ``add_state`` keeps a deep copy of every default for ``reset``: seven ATen
        calls per state whatever its size (a kernel launch each on a GPU, paid for every state of
        every layer's metric), and for per-unit states (``k x C x h x w`` float64) a second copy of
        the largest thing a layer holds. Here the kept default is a shared 0-d constant that
        ``reset`` expands back to ``shape``; the state is created where tensor factories create
        them (:meth:`create_on` makes that the metric's device). The reduction is registered by
        torchmetrics' own ``add_state`` (with an empty list, which it copies for free).
        """
        super().add_state(name, [], dist_reduce_fx=dist_reduce_fx, persistent=persistent)
        self._defaults[name] = _constant(fill, dtype)  # never changed in place: reset() clones it
        if not hasattr(self, "_filled_shapes"):
            self._filled_shapes: Dict[str, Tuple[int, ...]] = {}
        self._filled_shapes[name] = tuple(int(s) for s in shape)
        setattr(self, name, torch.full(self._filled_shapes[name], fill, dtype=dtype))

    def reset(self) -> None:
        super().reset()
        for name, shape in getattr(self, "_filled_shapes", {}).items():
            setattr(self, name, getattr(self, name).expand(shape).clone())

    @classmethod
    def create_on(cls, device: Union[str, torch.device], *args: Any, **kwargs: Any) -> "LayerMetric":
        """``cls(*args, **kwargs)`` with its states created on ``device`` (torch's device context, which
        torchmetrics also records as the metric's device), instead of ``cls(...).to(device)``: that costs
        an ATen call per metric on the same device, and a copy of every state on another one."""
        return metric_on(device, cls, *args, **kwargs)

    @classmethod
    def for_layer(cls, ctx: LayerContext, **options) -> "LayerMetric":
        """A metric sized for ``ctx`` (element count, channels) on ``ctx.a_x``'s device.

        ``options`` are all of ``measure(..., measure_options=...)`` plus ``similarity``;
        take the ones this measure understands and ignore the rest (``**_``).
        """
        raise NotImplementedError

    def _compute_details(self) -> Dict[str, Any]:
        raise NotImplementedError

    def plot(self, val: Any = None, ax: Any = None) -> Any:
        """Plot ``compute()`` (or ``val``: one result or a list of results, e.g. one per epoch) as
        torchmetrics' own metrics do; returns ``(fig, ax)``. Needs matplotlib. The axis bounds
        are the measure's ``plot_lower_bound`` / ``plot_upper_bound`` where it has them
        (:func:`lightning_equivariance.figures.plot_metric`)."""
        from ..figures import plot_metric

        return plot_metric(self, val, ax)

    def compute_details(self) -> Dict[str, Any]:
        """Synced results: ``value`` (float), ``per_element`` (tensor ``m``), ``per_channel``
        (tensor ``C`` or ``None``), ``left_out`` (int: dead channels left out), and whatever
        else the measure reports (e.g. ``stderr``). Syncs across processes like ``compute()``
        (``sync_on_compute``), through torchmetrics' public ``sync_context``."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self.sync_on_compute):
            return self._compute_details()


class NonFiniteImages(Metric):
    """Which probe images a layer left out because their values were not finite (not a measure).

    ``update(positions, left_out)`` takes the global probe positions of a chunk and a
    boolean per image (on the device; nothing is synchronised with the host); the states
    are concatenated over chunks, passes and processes. ``compute()`` returns
    ``(left out positions, number of distinct images seen)``.
    """

    full_state_update = False

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.add_state("positions", default=[], dist_reduce_fx="cat")
        self.add_state("left_out", default=[], dist_reduce_fx="cat")

    def update(self, positions: torch.Tensor, left_out: torch.Tensor) -> None:
        self.positions.append(positions.to(left_out.device))
        self.left_out.append(left_out)

    def compute(self) -> Tuple[List[int], int]:
        # Read on the host (once per measurement): the sorted distinct positions, as torch.unique gave
        # them, from Python lists - on the host tolist() issues no ATen call where cat, index and unique
        # issued five per layer; on a device the chunks' pieces are concatenated first (one transfer).
        pos, bad = _host_list(self.positions), _host_list(self.left_out)
        return sorted({p for p, b in zip(pos, bad) if b}), len(set(pos))


def _host_list(state) -> list:
    """The entries of a ``cat`` state (a tensor once synced, else a list of per-chunk tensors) as a flat list."""
    pieces = [state] if isinstance(state, torch.Tensor) else list(state)
    if len(pieces) > 1 and pieces[0].device.type != "cpu":
        pieces = [torch.cat(pieces)]
    return [v for piece in pieces for v in (piece if piece.dim() == 1 else piece.reshape(-1)).tolist()]


def __getattr__(name):
    """``ImagesLeftOut`` is :class:`NonFiniteImages` (issue 22: "left out" of a layer's dead channels only);
    the old name resolves, with a ``DeprecationWarning``, for one release."""
    if name != "ImagesLeftOut":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import warnings

    warnings.warn("lightning_equivariance.metrics.base.ImagesLeftOut is now NonFiniteImages; the old name goes in "
                  "the next release", DeprecationWarning, stacklevel=2)
    return NonFiniteImages

"""The work several measures of one layer share, computed once per (layer, group, chunk).

Invariance and equivariance read one correlation matrix per image; every transformational
measure reads the same ST matrix and its column moments; the GEED measures one orbit
average. :class:`SharedWork` holds each such intermediate as a named, typed member that a
measure asks for: the first ask computes it, later asks (other measures of the same layer
and group) get the same tensor. It lives as long as its :class:`~.base.LayerContext`, that is
inside the engine's hook for one layer, so nothing outlives the layer it was computed for -
except :class:`Handoff`, the little a layer offers the next one (the Pearson scores that a
BatchNorm right after it reuses).

A new shared intermediate is one more member here; the engine never looks inside.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Dict, List, Optional, Tuple

import torch

from ..functional.correlation import _MAX_KEPT_SOURCES, _correlation_arrays, _moved_arrays, _permuted_arrays
from ..functional.geed import orbit_average
from ..functional.moments import LayerRows, layer_rows
from ..functional.moves import channels_last_entries, moved_maps, moved_sources
from ..functional.transformational import Distance, _checked_mask, _sd_block_update, _st_update, _td_update

__all__ = ["SharedWork", "JointWork", "Handoff", "CorrelationScores", "JointShare"]


@dataclass(frozen=True)
class CorrelationScores:
    """A chunk's per-image correlation scores of one layer and group
    (:func:`~lightning_equivariance.functional.correlation._layer_arrays`): ``values``, ``valid`` and the
    chunk's partner ``pairs``, computed without the layer's sample mask (the measures apply it where they sum)."""

    similarity: str
    values: torch.Tensor
    valid: torch.Tensor
    pairs: Any

    def arrays(self) -> Tuple[torch.Tensor, torch.Tensor, Any]:
        return self.values, self.valid, self.pairs


@dataclass(frozen=True)
class JointShare:
    """One group's share of :class:`CorrelationScores` computed for several groups of a layer together
    (:class:`JointWork`): its ``elements`` elements from ``start`` on; read as the group's own scores."""

    joint: CorrelationScores
    start: int
    elements: int

    @property
    def similarity(self) -> str:
        return self.joint.similarity

    @property
    def pairs(self) -> Any:
        return self.joint.pairs

    @cached_property
    def values(self) -> torch.Tensor:
        return self.joint.values.narrow(1, self.start, self.elements)

    @cached_property
    def valid(self) -> torch.Tensor:
        return self.joint.valid.narrow(0, self.start, self.elements)

    def arrays(self) -> Tuple[torch.Tensor, torch.Tensor, Any]:
        return self.values, self.valid, self.pairs


@dataclass(frozen=True)
class Handoff:
    """What a layer offers the next measured layer of the same forward and group, when the next
    layer's input is exactly this layer's output: its Pearson scores and the channel action they
    were computed under (a per-channel positive affine map such as BatchNorm leaves them unchanged)."""

    scores: CorrelationScores
    channel_action: Any


class SharedWork:
    """One layer's shared intermediates for one chunk and group, each computed on first ask.

    Args:
        ctx: the layer's :class:`~.base.LayerContext` (activations, group, masks), which creates it.
        previous: the previous layer's :class:`Handoff`, when this layer's input is that layer's output.
    """

    def __init__(self, ctx: Any, previous: Optional[Handoff] = None):
        self._ctx = ctx
        self.previous = previous
        self._scores: Optional[CorrelationScores] = None
        self._correlation_rows: Dict[str, Any] = {}
        self._st: Dict[bool, "STWork"] = {}
        #: the measure's per-layer constants (:meth:`correlation_scores`), while its scores are computed
        self.constants: Optional[Dict[Any, Any]] = None

    # ------------------------------------------------------------------ every measure
    @cached_property
    def transformed_x(self) -> torch.Tensor:
        """``T'_g a(x)`` for every element, ``m x b x ...`` (vectors: ``a(x)`` repeated, the identity action)."""
        ctx = self._ctx
        if ctx.kind == "vector":
            return ctx.a_x.unsqueeze(0).expand(len(ctx.elements), *ctx.a_x.shape)
        if ctx.moves_entries():
            return moved_maps(ctx.a_x, ctx.transform, len(ctx.elements))  # one gather per element
        return torch.stack([ctx.transform(ctx.a_x, g) for g in range(len(ctx.elements))])

    @cached_property
    def position_mask(self) -> Optional[torch.Tensor]:
        """Boolean ``m x h x w`` validity mask of a map's positions, or ``None`` when every position is valid."""
        ctx = self._ctx
        if ctx.kind != "map":
            return None
        size = tuple(ctx.a_x.shape[-2:])
        per = [ctx.group.feature_mask(g, size, ctx.input_size, ctx.a_x.device) for g in ctx.elements]
        if all(m is None for m in per):
            return None
        full = torch.ones(size, dtype=torch.bool, device=ctx.a_x.device)
        return torch.stack([full if m is None else m for m in per])

    @cached_property
    def sample_mask(self) -> Optional[torch.Tensor]:
        """The context's ``sample_mask`` checked to hold one boolean per image, on the activations' device."""
        mask = self._ctx.sample_mask
        return None if mask is None else _checked_mask(mask, self._ctx.a_x.shape[0], self._ctx.a_x.device)

    # ------------------------------------------------------------------ correlation measures
    def correlation_scores(
        self, similarity: str, reuse_previous: bool = False, constants: Optional[Dict[Any, Any]] = None
    ) -> CorrelationScores:
        """The chunk's correlation scores (own, and against the partner's map with a chance level).

        ``reuse_previous``: the measure decided (once per layer) that this layer maps every channel by a
        positive affine map of its input; then the previous layer's Pearson scores are these scores,
        when they were computed under the same channel action and with the chance column if needed.
        ``constants``: a dict the measure keeps for its layer and group, where what depends only on the
        layer's shape and the group's action (the moved maps' source indices) is kept from chunk to chunk.
        """
        if self._scores is not None and self._scores.similarity == similarity:
            return self._scores
        ctx, previous = self._ctx, self.previous
        if (
            reuse_previous
            and previous is not None
            and previous.scores.similarity == similarity
            and previous.channel_action is ctx.channel_action
            and (ctx.partner is None or previous.scores.valid.shape[2] == 2)
        ):
            scores = previous.scores
        else:
            self.constants = constants
            scores = None if ctx.joint is None else ctx.joint.correlation_scores(ctx, similarity)
            if scores is None:
                scores = CorrelationScores(similarity, *_layer_scores(ctx, similarity, self))
        self._scores = scores
        return scores

    def correlation_rows(self, similarity: str):
        """:func:`~lightning_equivariance.functional.moments.layer_rows` of the chunk's scores under this
        layer's sample mask, once for invariance and equivariance (they share valid pairs and counts)."""
        if similarity not in self._correlation_rows:
            scores = self.correlation_scores(similarity)
            if isinstance(scores, JointShare) and self._ctx.joint is not None:  # all groups' rows at once, its share
                rows = self._ctx.joint.correlation_rows(self._ctx, scores)
                if rows is not None:
                    self._correlation_rows[similarity] = rows
                    return rows
            values, valid, pairs = scores.arrays()
            if self._ctx.partner is None and valid.shape[2] == 2:  # (not reached by the engine) no chance column
                values, valid = values.narrow(3, 0, 1), valid.narrow(2, 0, 1)
            self._correlation_rows[similarity] = layer_rows(values, valid, self._ctx.sample_mask, pairs)
        return self._correlation_rows[similarity]

    def handoff(self) -> Optional[Handoff]:
        """What this layer offers the next one: its Pearson scores, if a measure computed them."""
        if self._scores is None or self._scores.similarity != "pearson":
            return None
        return Handoff(self._scores, self._ctx.channel_action)

    # ------------------------------------------------------------------ transformational measures
    def st(self, include_identity: bool) -> "STWork":
        """The chunk's sample-transformation matrix and its summaries (Quiroga et al., Eq. 1)."""
        if include_identity not in self._st:
            self._st[include_identity] = STWork(_st_of(self._ctx, include_identity), self.sample_mask)
        return self._st[include_identity]

    # ------------------------------------------------------------------ GEED measures
    @cached_property
    def orbit_average(self) -> torch.Tensor:
        """The mean over the orbit ``[a(x), a(T_g x) ...]`` per image (:func:`~..functional.geed.orbit_average`)."""
        return orbit_average(self._ctx.a_x, self._ctx.a_gx)


class JointWork:
    """What the contexts of one layer under the groups of one stacked pass share across groups.

    The groups whose action only moves a map's entries (:attr:`~lightning_equivariance.groups.Group.moves_positions`:
    rot90, flips, shifts) and that act on no channels are scored together: one centring, one blocked pass of
    products and one set of sums over all their elements (:func:`~..functional.correlation._moved_arrays`),
    each group taking its elements' share - the calls a layer costs then hardly grow with the number of groups.
    A single such group keeps its own path (:meth:`SharedWork.correlation_scores`).

    Args:
        a_gx: the layer's ``a(T_g x)`` of every group's elements, in the pass's order (``M x b x ...``).
        contexts: ``(context, first element in a_gx)`` of the groups measured on the layer.
        constants: a dict the pass keeps for all layers and chunks, where what depends only on a layer's
            shape and the groups' actions (where the moved maps' entries come from, the valid positions) is
            kept for every layer of that shape.
    """

    def __init__(self, a_gx: torch.Tensor, contexts, constants: Optional[Dict[Any, Any]] = None):
        self._a_gx = a_gx
        self._contexts = list(contexts)
        self._constants = constants
        self._scores: Dict[str, Optional[Dict[int, JointShare]]] = {}
        # per joint scores (by id; the entry keeps them alive): the sample mask its rows were summed under, the rows
        self._rows: Dict[int, Tuple[CorrelationScores, Any, LayerRows]] = {}

    def correlation_scores(self, ctx: Any, similarity: str) -> Optional[JointShare]:
        """``ctx``'s share of the joint scores, or ``None`` when its group is not scored jointly."""
        if similarity not in self._scores:
            self._scores[similarity] = None  # a failure below costs the asking measure; the others score alone
            self._scores[similarity] = self._joint_scores(similarity)
        shares = self._scores[similarity]
        return None if shares is None else shares.get(id(ctx))

    def _joint_scores(self, similarity: str):
        joined = [(c, start) for c, start in self._contexts if _joinable(c)]
        if len(joined) < 2:
            return None
        starts = [start for _, start in joined]
        stops = [start + len(c.elements) for c, start in joined]
        if starts[1:] != stops[:-1]:  # not one run of elements (a group between them is not joined)
            return None
        first = joined[0][0]
        a_gx = self._a_gx[starts[0]: stops[-1]]
        c, h, w = first.a_x.shape[1:]
        last = channels_last_entries(first.a_x)
        key = (tuple(starts), c, h, w, tuple(first.input_size), a_gx.device, a_gx.dtype, last)
        constants = self._constants
        kept = None if constants is None else constants.get(key)
        if kept is None:
            sources: List[torch.Tensor] = []
            for ctx, _ in joined:
                moved, shape = moved_sources((c, h, w), ctx.transform, len(ctx.elements), a_gx.device,
                                             channels_last=last)
                if shape != (c, h, w):
                    return None
                sources += moved
            masks = [ctx.work.position_mask for ctx, _ in joined]
            weight = None
            if any(mask is not None for mask in masks):
                full = torch.ones(1, h, w, dtype=torch.bool, device=a_gx.device)
                weight = torch.cat([full.expand(len(ctx.elements), h, w) if mask is None else mask
                                    for mask, (ctx, _) in zip(masks, joined)])
                weight = weight.reshape(-1, 1, 1, h * w).to(a_gx.dtype)
            kept = (sources, weight)
            if constants is not None and len(sources) * c * h * w <= _MAX_KEPT_SOURCES:
                constants[key] = kept
        values, valid, pairs = _moved_arrays(a_gx, first.a_x, kept[0], kept[1], similarity, first.partner)
        whole = CorrelationScores(similarity, values, valid, pairs)
        return {id(ctx): JointShare(whole, start - starts[0], len(ctx.elements)) for ctx, start in joined}

    def correlation_rows(self, ctx: Any, scores: JointShare):
        """``ctx``'s share of :func:`~..functional.moments.layer_rows` of the joint scores ``scores`` came from,
        computed once for every group under the layer's sample mask; ``None`` where ``ctx`` cannot share them."""
        whole = scores.joint
        values, valid, pairs = whole.arrays()
        if (ctx.partner is None) != (valid.shape[2] == 1):
            return None
        kept = self._rows.get(id(whole))
        if kept is None or kept[1] is not ctx.sample_mask:
            kept = self._rows[id(whole)] = (whole, ctx.sample_mask, layer_rows(values, valid, ctx.sample_mask, pairs))
        rows, start, m = kept[2], scores.start, scores.elements
        return LayerRows(tuple(s.narrow(0, start, m) for s in rows.sums), rows.per_element.narrow(1, start, m),
                         rows.cols, rows.pairs)


def _joinable(ctx: Any) -> bool:
    """Whether ``ctx``'s group is scored with the layer's other groups (:class:`JointWork`)."""
    return ctx.kind == "map" and ctx.channel_action is None and getattr(ctx.group, "moves_positions", False)


class STWork:
    """One ST matrix ``k x b x ...units`` and what the transformational measures compute from it, each once:
    the one-pass summaries (TV and the column moments), the float64 copy, and the distances."""

    def __init__(self, st: torch.Tensor, sample_mask: Optional[torch.Tensor] = None):
        self.matrix = st
        self.sample_mask = sample_mask
        # keyed by the distance (its name, or the id of a callable): one entry per distinct distance
        self._td: Dict[Any, torch.Tensor] = {}
        self._sd: Dict[Any, Any] = {}

    @cached_property
    def summaries(self) -> Dict[str, torch.Tensor]:
        """TV and the column moments of every measure from one pass over ST (``_st_update``)."""
        return _st_update(self.matrix, self.sample_mask)

    @cached_property
    def float64(self) -> torch.Tensor:
        """ST in float64: only the pairwise distances need the whole matrix at that precision."""
        return self.matrix.to(torch.float64)

    def transformation_distances(self, distance: Distance) -> torch.Tensor:
        """The batch's sum of row average distances (TD, Quiroga Eq. 4)."""
        key = _distance_key(distance)
        if key not in self._td:
            self._td[key] = _td_update(self.float64, distance, self.sample_mask)
        return self._td[key]

    def sample_distances(self, distance: Distance):
        """The batch's pairwise column distances and pair count (SD, Quiroga §2.5)."""
        key = _distance_key(distance)
        if key not in self._sd:
            self._sd[key] = _sd_block_update(self.float64, distance, self.sample_mask)
        return self._sd[key]


def _distance_key(distance: Distance):
    return distance if isinstance(distance, str) else id(distance)


def _layer_scores(ctx: Any, similarity: str, work: SharedWork):
    """The layer's ``(values, valid, pairs)``, with the chance column when ``ctx.partner`` is given
    (``work.constants``: the per-layer dict given to :meth:`SharedWork.correlation_scores`)."""
    if ctx.moves_entries():
        # A permutation of positions (rot90, flips, circular shifts), and of channels (the
        # regular fields of a steerable layer), commutes with the per-channel standardisation:
        # standardise a(x) once, then move it per element (no standardised copy per element).
        action = ctx.channel_action

        def permute_channels(maps: torch.Tensor, g: int) -> torch.Tensor:
            return action(maps, ctx.elements[g])

        constants = work.constants
        if constants is not None:  # the sources depend on the action and the input size too
            shared = _group_constants(ctx.group, tuple(ctx.input_size)) if action is None else None
            constants = shared if shared is not None else constants.setdefault((tuple(ctx.input_size), id(action)), {})
        return _permuted_arrays(ctx.a_gx, ctx.a_x, ctx.transform, similarity=similarity, partner=ctx.partner,
                                permute_channels=None if action is None else permute_channels, constants=constants)
    return _correlation_arrays(
        ctx.a_gx,
        work.transformed_x,
        mask=work.position_mask,
        similarity=similarity,
        vector=ctx.kind == "vector",
        check_mask=False,  # checked by the metric on its first update
        partner=ctx.partner,
        mixed_channels=ctx.mixes_channels(),
    )


# Per group (weakly held) and input size: what depends only on the group's action on a layer's shape (the moved
# maps' sources), shared by every layer of that shape - ConvNeXt-T's 101 layers have 8 map shapes.
_GROUP_CONSTANTS: "weakref.WeakKeyDictionary[Any, Dict[Any, Dict[Any, Any]]]" = weakref.WeakKeyDictionary()


def _group_constants(group: Any, input_size: Tuple[int, ...]) -> Optional[Dict[Any, Any]]:
    """The constants dict of ``group`` at ``input_size`` (without a channel action), or ``None`` for a group that
    cannot be held weakly (then each layer keeps its own)."""
    try:
        per_group = _GROUP_CONSTANTS.setdefault(group, {})
    except TypeError:
        return None
    return per_group.setdefault(input_size, {})


def _st_of(ctx: Any, include_identity: bool) -> torch.Tensor:
    """ST of the context's chunk (Eq. 1), ``k x b x ...units``: ``[a(x), a(t_1 x), ...]`` (without ``a(x)``
    when ``include_identity`` is false), in the activations' dtype.

    In the engine's stacked output ``a(x)`` is directly followed by the first group's ``a(T_g x)``
    in memory; ST is then a view of it (no copy of the layer's output), otherwise one ``cat``.
    """
    a_x, a_gx = ctx.a_x, ctx.a_gx
    if not include_identity:
        return a_gx
    step = a_x.numel()
    if (
        a_x.is_contiguous()
        and a_gx.is_contiguous()
        and a_gx.dtype == a_x.dtype
        and a_gx.device == a_x.device
        and a_gx.data_ptr() == a_x.data_ptr() + step * a_x.element_size()
    ):
        return a_x.as_strided((1 + a_gx.shape[0], *a_x.shape), (step, *a_x.stride()))
    return torch.cat([a_x.unsqueeze(0), a_gx])

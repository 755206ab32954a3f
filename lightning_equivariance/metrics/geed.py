"""G-EED metrics (Kvinge et al. 2022, §3.1): ``geed_channel``, ``geed_latent_l2``, ``geed_latent_cosine``,
``geed_softmax``.

Thin ``torchmetrics.Metric`` classes over :mod:`lightning_equivariance.functional.geed`.
:class:`GEEDChannel` keeps one stacked state ``stats`` (its ``sums``, ``images`` and ``moments`` are
read from it; see there). Every other state is a float64 sum with ``dist_reduce_fx="sum"`` except the
bounded point buffer of :class:`GEEDLatentL2` (see there) and ``image_moments``. Larger values mean *less*
equivariant (``higher_is_better = False``). ``value`` is the mean over the group's
non-identity elements of the per-element G-EED (docs/measures.md §3); ``per_element`` holds those.

Honest numbers (docs/measures.md §7). Every variant keeps ``image_moments`` (``moments[0]`` in
:class:`GEEDChannel`), the
``(n, mean, M2)`` of the images' own scores ``s_i`` (the mean over elements of image ``i``'s
mean over its valid channels), merged with Chan's parallel update over chunks and, through a
callable ``dist_reduce_fx``, over processes; ``compute_details()["stderr"]`` is
``std(s_i, ddof=1) / sqrt(n)`` (``None`` below 2 images; for the latent variants divided by
``|M|``, whose own uncertainty is left out). :class:`GEEDChannel` also keeps the chance level:
the same cosine sums against the partner's ``T'_g a`` (``LayerContext.partner``, or
``update(..., partner=)``; on vectors the partner's orbit average), with
``chance``, ``chance_per_element``, ``above_chance = (c - v) / (1 + c)`` (``None`` and
``informative`` False when ``c < -0.95``) and ``chance_left_out`` (images without a partner) in
``compute_details()``, and the margin ``chance - value`` with its one-sided 95% interval
(``moments[1]``: the pair margins ``D_k`` with ``d_i = c_i - s_i``, merged as ``image_moments``;
``margin``, ``margin_stderr``, ``margin_low``, ``significant``). The other variants report those
keys as missing.

Left-out images (docs/measures.md §1.7): every ``update`` takes an optional
``sample_mask`` (``b`` booleans on the activations' device, True = the image counts) and
``update(ctx)`` passes ``LayerContext.sample_mask``; a left-out image is out of every sum
and count (its scores in all views, its point in the latent ``M``), selected with
``torch.where`` on the device, without compacting the batch or reading values on the host.

Example::

    >>> import torch
    >>> from lightning_equivariance.metrics import GEEDLatentCosine
    >>> metric = GEEDLatentCosine(num_elements=3, dim=8)
    >>> z = torch.rand(6, 8)                       # untransformed latents of 6 images
    >>> metric.update(z, z.expand(3, 6, 8))        # every transformed image maps to the same point
    >>> float(metric.compute()) < -0.99 / float(metric.normaliser())   # -cos = -1 everywhere, divided by M
    True
"""
from __future__ import annotations

import functools
import threading
from typing import Any, Dict, Optional, Tuple

import torch

from ..functional.geed import (
    _SOFTMAX_INPUTS,
    _check_normaliser,
    _cosine_normaliser_compute,
    _cosine_normaliser_update,
    _moved_pairs,
    _per_element,
    _scores_update,
    channel_buffers,
    chunk_map,
    geed_channel_chunk,
    geed_latent_scores,
    geed_softmax_scores,
    looks_like_probabilities,
    mean_pairwise_distance,
    position_sources,
)
from ..functional.moments import (
    chance_details,
    combine_moments,
    image_moments,
    merge_moments,
    moments_from_shifted_sums,
    no_chance,
    stderr_from_moments,
)
from .base import LayerContext, LayerMetric
from .correlation import CorrelationInvariance

__all__ = ["GEEDChannel", "GEEDLatentL2", "GEEDLatentCosine", "GEEDSoftmax"]


def _orbit_average(ctx: LayerContext) -> torch.Tensor:
    return ctx.work.orbit_average


def _check_positive(name: str, **values: int) -> None:
    for k, v in values.items():
        if int(v) < 1:
            raise ValueError(f"{name}: {k} must be >= 1, got {v}")


class _GEED(LayerMetric):
    higher_is_better = False
    full_state_update = False
    #: ``None`` or the reason the measure is undefined on a kind of layer (the engine records it as a note).
    vector_only = False

    @classmethod
    def not_applicable(cls, ctx: LayerContext, **_: Any) -> Optional[str]:
        """Why this measure is undefined on ``ctx``'s layer, or ``None`` (the engine records the reason and skips)."""
        if cls.vector_only and ctx.kind != "vector":
            return (
                f"{cls.measure_name} is defined on vector layers only (Kvinge et al. 2022 §3.1: "
                f"{'the latent space R^k' if 'latent' in cls.measure_name else 'softmax outputs'}); layer "
                f"{ctx.layer!r} is a feature map - use geed_channel there"
            )
        return None

    @classmethod
    def _refuse(cls, ctx: LayerContext) -> None:
        reason = cls.not_applicable(ctx)
        if reason:
            raise ValueError(reason)

    def _add_moments_state(self) -> None:
        """``image_moments``: ``(n, mean, M2)`` of the images' own scores (the stderr, docs/measures.md
        §7), merged with Chan's parallel update - across chunks and, at compute, across processes."""
        self.add_filled_state("image_moments", (3,), 0.0, dist_reduce_fx=merge_moments)

    def _add_image_moments(self, score: torch.Tensor, valid: torch.Tensor, sample_mask: Optional[torch.Tensor]) -> None:
        """Merge the chunk's per-image scores (``m x b [x C]``, only where ``valid``) into ``image_moments``."""
        self.image_moments.copy_(combine_moments(self.image_moments, image_moments(score, valid, sample_mask)))


def _scaled_stderr(moments: torch.Tensor, M: torch.Tensor) -> Optional[float]:
    """The stderr of the terms divided by ``|M|`` (latent G-EED; ``M``'s own uncertainty is left open)."""
    se = stderr_from_moments(moments)
    return None if se is None else se / abs(float(M))


_SOURCES = threading.local()


def _aligning_index(ctx: LayerContext) -> Optional[torch.Tensor]:
    """``m x 1 x 1 x hw``: the inverse of where every position of ``T'_g a`` comes from
    (:func:`~lightning_equivariance.functional.geed.position_sources`), so that gathering ``a(gx)`` with it puts
    each entry where ``a(x)`` holds the one it is compared with (the cosine of two maps does not change when both
    are permuted alike); ``None`` when the moves are not one permutation of the positions. Set-up (reads on the
    host); the layers of one map size under one group share it (kept per thread for the last group seen)."""
    h, w = ctx.a_x.shape[-2:]
    cache = getattr(_SOURCES, "cache", None)
    if cache is None or cache[0] is not ctx.group:
        cache = _SOURCES.cache = (ctx.group, {})
    key = ((h, w), tuple(ctx.input_size), tuple(e.name for e in ctx.elements), ctx.a_x.device)
    if key not in cache[1]:
        m = len(ctx.elements)
        sources = position_sources(ctx.transform, m, (h, w), ctx.a_x.device)
        here = torch.arange(h * w, device=sources.device)
        moves = sources.shape[1] == h * w and bool((sources.sort(-1).values == here).all())
        cache[1][key] = torch.argsort(sources, -1).view(m, 1, 1, h * w) if moves else None
    return cache[1][key]


def _merge_stats(stacked: torch.Tensor, sums_size: int) -> torch.Tensor:
    """``dist_reduce_fx`` of :class:`GEEDChannel`'s ``stats``: the sums add, the tallies merge
    (:func:`_merge_tallies`)."""
    if stacked.dim() < 2:
        return stacked
    tallies = _merge_tallies(stacked[:, sums_size:].reshape(-1, 5, 2))
    return torch.cat([stacked[:, :sums_size].sum(0), tallies.reshape(-1)])


def _merge_tallies(stacked: torch.Tensor) -> torch.Tensor:
    """``dist_reduce_fx`` of :class:`GEEDChannel`'s ``tallies`` (``[world x] 5 x 2``): each process's moment sums
    are about its own references, so they are merged as ``(n, mean, M2)`` (Chan's update) and written back
    about the merged mean; the image counts add."""
    if stacked.dim() < 3:
        return stacked
    n, s1, s2, images, reference = stacked.unbind(-2)
    merged = merge_moments(moments_from_shifted_sums(n, s1, s2, reference))  # 2 x 3
    return torch.stack([merged[:, 0], torch.zeros_like(merged[:, 0]), merged[:, 2], images.sum(0), merged[:, 1]])


class GEEDChannel(_GEED):
    """Channelwise G-EED, Kvinge et al. 2022 Eq. 5: ``-(1/C) sum_c cos(a(gx)_c, g a_hat(x)_c)``, in ``[-1, 1]``.

    ``g a_hat(x) = T'_g a(x)`` on feature maps (``f_hat = f`` for the faithful spatial action,
    Eq. 2; the architecture's channel action included), compared over the valid positions;
    on vector layers the whole vector is one channel and ``g a_hat(x)`` is the orbit average
    (``G`` acts trivially on vectors). A channel whose map is zero in either argument is left
    out of the mean and counted in ``left_out``. ``per_channel``: ``-mean cos`` per channel.

    State: ``stats``, one flat float64 tensor, so that a chunk adds to it with one in-place add (issue 23):
    ``sums`` (``2 x 2 x m x C``: [cosine sums, valid pairs] x [own, chance (against the partner's map,
    docs/measures.md §7)] x element x channel), then ``tallies`` (``5 x 2``, columns [images' own negated
    scores, pair margins ``D_k``]: rows ``n``, ``sum (x - r)``, ``sum (x - r)**2``, then [counted images,
    images with a chance term], then the references ``r``, the first chunk's means, which keep the sums'
    digits). The stderr and the margin's interval come from the moments at compute; across processes the
    sums add and the moments merge with Chan's update (:func:`_merge_stats`).

    Args:
        num_elements: ``m``, the group's non-identity elements.
        num_channels: ``C`` (1 for vector layers).
    """

    measure_name = "geed_channel"
    plot_lower_bound = -1.0
    plot_upper_bound = 1.0
    best_value = -1.0

    stats: torch.Tensor

    def __init__(self, num_elements: int, num_channels: int, **kwargs: Any):
        super().__init__(**kwargs)
        _check_positive(type(self).__name__, num_elements=num_elements, num_channels=num_channels)
        m, c = int(num_elements), int(num_channels)
        self._shape = (m, c)
        # one state, so that a chunk adds to it once: [sums (2 x 2 x m x C) | tallies (5 x 2)], flattened
        self.add_filled_state("stats", (4 * m * c + 10,), 0.0,
                              dist_reduce_fx=functools.partial(_merge_stats, sums_size=4 * m * c))
        #: for groups that only move positions (set by ``for_layer``): the index that moves a(gx)'s entries back
        #: onto a(x)'s positions (``_aligning_index``), and per chunk size its expansion to m x b x C x hw
        self._aligning: Optional[torch.Tensor] = None
        self._aligning_expanded: Dict[int, torch.Tensor] = {}
        self._referenced = False  # the moments' references r are set by the first chunk
        self._biases: Dict[int, torch.Tensor] = {}  # per chunk size: -r, as geed_channel_chunk takes it
        self._targets: Optional[Tuple[torch.Tensor, ...]] = None  # the states and their views a chunk adds to

    # the sums by name (views of the stacked state)
    @property
    def sums(self) -> torch.Tensor:
        """``2 x 2 x m x C``: [cosine sums, valid pairs] x [own, chance] x element x channel."""
        m, c = self._shape
        return self.stats[: 4 * m * c].view(2, 2, m, c)

    @property
    def tallies(self) -> torch.Tensor:
        """``5 x 2``: the moment sums ``n``, ``sum (x - r)``, ``sum (x - r)**2`` (images' own negated scores, pair
        margins), [counted images, images with a chance term], the references ``r``."""
        return self.stats[4 * self._shape[0] * self._shape[1] :].view(5, 2)

    @property
    def score_sum(self) -> torch.Tensor:
        return self.sums[0, 0]

    @property
    def count(self) -> torch.Tensor:
        return self.sums[1, 0]

    @property
    def chance_sum(self) -> torch.Tensor:
        return self.sums[0, 1]

    @property
    def chance_count(self) -> torch.Tensor:
        return self.sums[1, 1]

    @property
    def images(self) -> torch.Tensor:
        """[counted images, images with a chance term]."""
        return self.tallies[3]

    # the same readings of images, count and channels as the correlation measures'
    left_out = CorrelationInvariance.left_out
    chance_left_out = CorrelationInvariance.chance_left_out

    @property
    def moments(self) -> torch.Tensor:
        """``2 x 3``: ``(n, mean, M2)`` of the images' own negated scores (the stderr) and of the pair margins."""
        n, s1, s2, _, reference = self.tallies.unbind(0)
        return moments_from_shifted_sums(n, s1, s2, reference)

    @classmethod
    def for_layer(cls, ctx: LayerContext, **_: Any) -> "GEEDChannel":
        metric = cls.create_on(ctx.a_x.device, len(ctx.elements), 1 if ctx.kind == "vector" else ctx.num_channels)
        if ctx.kind == "map" and ctx.channel_action is None and ctx.moves_entries():  # decided once, at set-up
            metric._aligning = _aligning_index(ctx)
        return metric

    def reset(self) -> None:
        super().reset()
        self._biases, self._referenced, self._targets = {}, False, None

    def _update_tensors(
        self,
        a_gx: torch.Tensor,
        ta_x: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
        vector: Optional[bool] = None,
        sample_mask: Optional[torch.Tensor] = None,
        partner: Optional[torch.Tensor] = None,
        mixed_channels: bool = False,
    ) -> None:
        """Add ``a(gx)`` and ``g a_hat(x)`` (``m x b x C x h x w`` or ``m x b x D``), optional ``m x h x w`` mask.

        ``sample_mask``: optional ``b`` booleans, True for the images that count; the others are
        left out of every sum and count (their activations may hold anything).
        ``partner``: optional ``b`` integers on the activations' device, each image's partner in
        this batch or ``-1`` (docs/measures.md §7); without it no chance level is added.
        ``mixed_channels``: ``ta_x`` comes from a channel action applied as a float matrix
        (:func:`~lightning_equivariance.functional.geed.geed_channel_scores`).
        """
        u, v, live = _moved_pairs(a_gx, ta_x, mask, vector, mixed_channels)
        b = u.shape[1]
        chunk = chunk_map(partner, b, u.device)
        v = v.index_select(1, chunk.rows.reshape(-1)).unflatten(1, (chunk.h, b)).transpose(0, 1)
        if live is not None:
            live = live.index_select(1, chunk.rows.reshape(-1)).unflatten(1, (chunk.h, b)).transpose(0, 1)
        self._add_chunk(u, v, (-1,), sample_mask, chunk, live)

    def _update_context(self, ctx: LayerContext) -> None:
        b = ctx.a_x.shape[0]
        chunk = chunk_map(ctx.partner, b, ctx.a_x.device)
        if ctx.kind == "vector":
            # per image: a left-out image's orbit average reaches only its own (masked) terms
            f_hat = _orbit_average(ctx)
            u = ctx.a_gx.to(f_hat.dtype).unsqueeze(-2)
            self._add_chunk(u, f_hat[chunk.vector_rows], (-1,), ctx.sample_mask, chunk)
        elif self._aligning is not None:
            # a(gx) moved back onto a(x)'s positions (one gather), against the own and the partners' maps a(x)
            index = self._aligning_expanded.get(b)
            if index is None:
                index = self._aligning_expanded[b] = self._aligning.expand(-1, b, ctx.a_gx.shape[2], -1)
            aligned = torch.gather(ctx.a_gx.flatten(3), 3, index)
            maps = ctx.a_x.index_select(0, chunk.flat_rows).view(chunk.h, 1, b, *aligned.shape[2:])
            self._add_chunk(aligned, maps, (-1,), ctx.sample_mask, chunk)
        else:
            # a channel action that is not a permutation mixes channels with a float matrix (its round-off must
            # not make a zero channel count)
            self._update_tensors(
                ctx.a_gx, ctx.transformed_x(), mask=ctx.mask(), vector=False, sample_mask=ctx.sample_mask,
                partner=ctx.partner, mixed_channels=ctx.mixes_channels(),
            )

    def _add_chunk(self, u, v, dims, sample_mask, chunk, live=None) -> None:
        """:func:`~lightning_equivariance.functional.geed.geed_channel_chunk` into the buffers, then one add per
        state."""
        m, b = u.shape[:2]
        if (u.shape[0], u.shape[2]) != self._shape:
            raise ValueError(
                f"{type(self).__name__} was created for {self._shape[0]} elements x {self._shape[1]} "
                f"channels, got maps of shape {tuple(u.shape)}"
            )
        if sample_mask is not None:
            sample_mask = sample_mask.to(device=u.device, dtype=torch.bool)
            if sample_mask.shape != (b,):
                raise ValueError(
                    f"sample_mask must hold one boolean per image ({b}), got shape {tuple(sample_mask.shape)}")
        out = channel_buffers(chunk.h, m, b, u.shape[2], u.device)
        targets = self._targets
        if targets is None or targets[0] is not self.stats:  # the state's views, once (reset replaces it)
            tallies = self.tallies
            targets = self._targets = (self.stats, self.stats[: -2], tallies, tallies[4])
        bias = self._biases.get(b)
        reference = None
        if not self._referenced:
            # the moments are summed about references r (tallies[4]): this first chunk's means
            bias, reference = u.new_zeros(4 * b, dtype=torch.float64), targets[3]
            self._referenced, self._biases = True, {b: bias}
        elif bias is None:  # a chunk of another size: the same references
            bias = self._biases[b] = torch.mv(out.spread, targets[3])
        geed_channel_chunk(u, v, dims, sample_mask, chunk, out, bias, live, reference)
        targets[1].add_(out.increment)

    def compute(self) -> torch.Tensor:
        return -_per_element(self.score_sum, self.count, "channelwise G-EED").mean()

    def _compute_details(self) -> Dict[str, Any]:
        m, channels = self._shape
        sums = self.sums
        totals = sums.sum(-1)  # [cosine sums, valid pairs] x [own, chance] x element
        per_both = -(totals[0] / totals[1])  # own and chance per element (the chance one where it has pairs)
        # one host read for what decides the details: the valid pairs per element (own, chance), the image counts
        pairs = torch.cat([totals[1].reshape(-1), self.tallies[3]]).tolist()
        own_pairs, chance_pairs, (kept, with_chance) = pairs[:m], pairs[m : 2 * m], pairs[2 * m :]
        if 0 in own_pairs:
            _per_element(totals[0, 0], totals[1, 0], "channelwise G-EED")  # raises: an element without a valid pair
        per_element, chance = per_both.unbind(0)
        moments = self.moments
        score_sum, count = sums[:, 0].unbind(0)
        out = {
            "value": per_element.mean().tolist(),
            "per_element": per_element,
            "per_channel": -(score_sum.sum(0) / count.sum(0).clamp_min(1)) if channels > 1 else None,
            # dead (left-out) pairs: the counted images' pairs that were not valid, over the elements
            "left_out": int(kept * channels * m - sum(own_pairs)),
            "stderr": stderr_from_moments(moments[0]),
        }
        # no chance level when an element has no chance pair (chance_per_element)
        out.update(chance_details(out["value"], None if 0 in chance_pairs else chance, False, kept - with_chance,
                                  moments[1]))
        return out


class GEEDLatentL2(_GEED):
    """Latent-space G-EED with the l2 distance, Kvinge et al. 2022 Eq. 6 (vector layers only).

    ``E = (1/M) mean_{x, g} ||f(gx) - f_hat(x)||``, ``f_hat(x)`` the orbit average (identity
    included) and ``M`` the mean l2 distance between *distinct* untransformed probe points.

    ``M`` is a mean of square roots over all pairs of the probe set, which no finite
    mergeable summary reproduces exactly. It is computed exactly over a bounded buffer:
    the first ``max_points`` untransformed points each process sees are kept (a
    ``max_points x D`` float64 state allocated up front, so memory does not depend on the
    number of probe images); under DDP the buffers of all ranks are gathered and ``M`` is
    the mean over all distinct pairs of their union. ``M`` is therefore *exact* - the
    paper's definition over the whole probe set, equal for any split over batches and
    processes - whenever each process sees at most ``max_points`` images; beyond that it
    is estimated from the first ``max_points`` per process (the paper itself estimates
    ``M`` from 200 random points, §4). ``compute_details()`` reports ``normaliser_points``
    and ``normaliser_exact``. The numerator is a plain sum (exact, mergeable).

    Args:
        num_elements: ``m``.
        dim: ``D`` of the vectors.
        max_points: buffer size for ``M`` (default 1024).
    """

    measure_name = "geed_latent_l2"
    vector_only = True
    plot_lower_bound = 0.0
    best_value = 0.0

    dist_sum: torch.Tensor
    count: torch.Tensor
    points: torch.Tensor
    num_points: torch.Tensor
    seen: torch.Tensor

    def __init__(self, num_elements: int, dim: int, max_points: int = 1024, **kwargs: Any):
        super().__init__(**kwargs)
        _check_positive(type(self).__name__, num_elements=num_elements, dim=dim)
        if int(max_points) < 2:
            raise ValueError(f"{type(self).__name__}: max_points must be >= 2, got {max_points}")
        self.max_points = int(max_points)
        self.add_filled_state("dist_sum", (int(num_elements),), 0.0)
        self.add_filled_state("count", (int(num_elements),), 0.0)
        # Gathered, not summed: the union of every rank's kept points defines M.
        self.add_filled_state("points", (self.max_points, int(dim)), 0.0, dist_reduce_fx=None)
        self.add_filled_state("num_points", (), 0.0, dist_reduce_fx=None)
        self.add_filled_state("seen", (), 0.0)
        self._add_moments_state()

    @classmethod
    def for_layer(cls, ctx: LayerContext, geed_max_points: int = 1024, **_: Any) -> "GEEDLatentL2":
        cls._refuse(ctx)
        return cls(len(ctx.elements), int(ctx.a_x.shape[-1]), max_points=geed_max_points).to(ctx.a_x.device)

    def _update_tensors(
        self, a_x: torch.Tensor, a_gx: torch.Tensor, sample_mask: Optional[torch.Tensor] = None
    ) -> None:
        """Add a batch: ``a(x)`` (``b x D``) and ``a(gx)`` (``m x b x D``).

        ``sample_mask``: optional ``b`` booleans, True for the images that count; the others are
        left out of the sums, of the kept points and of ``seen``.
        """
        out = geed_latent_scores(a_x, a_gx, "l2")
        s, n, _ = _scores_update(out["score"], out["valid"], sample_mask)
        self.dist_sum += s
        self.count += n
        self._add_image_moments(out["score"], out["valid"], sample_mask)
        self._keep_points(a_x, sample_mask)

    def _keep_points(self, a_x: torch.Tensor, sample_mask: Optional[torch.Tensor]) -> None:
        """Append the batch's kept points to the buffer while it has room, all on the device.

        Point ``i`` goes to row ``num_points + (number of kept points before it)``; points that
        are left out or do not fit add zeros to row 0 instead (rows past ``num_points`` are
        zero, so adding a point writes it). No host read of ``num_points``, no compaction.
        """
        b = a_x.shape[0]
        if sample_mask is None:
            keep = torch.ones(b, dtype=torch.bool, device=a_x.device)
            rank = torch.arange(b, device=a_x.device)
        else:
            keep = sample_mask.to(device=a_x.device, dtype=torch.bool).reshape(b)
            rank = torch.cumsum(keep, 0) - 1
        pos = self.num_points.to(torch.long) + rank
        fits = keep & (pos < self.max_points)
        rows = torch.where(fits, pos, torch.zeros_like(pos))
        zero = torch.zeros((), dtype=torch.float64, device=a_x.device)
        values = torch.where(fits[:, None], a_x.to(torch.float64), zero)
        self.points.index_put_((rows,), values, accumulate=True)
        self.num_points += fits.sum(dtype=torch.float64)
        self.seen += keep.sum(dtype=torch.float64)

    def _update_context(self, ctx: LayerContext) -> None:
        self._update_tensors(ctx.a_x, ctx.a_gx, sample_mask=ctx.sample_mask)

    def _kept_points(self) -> torch.Tensor:
        pts, num = self.points, self.num_points
        if pts.dim() == 2:  # not synced: this process only
            return pts[: int(num)]
        return torch.cat([p[: int(k)] for p, k in zip(pts, num.reshape(-1))])  # gathered: world x K x D

    def normaliser(self) -> torch.Tensor:
        """``M``: the mean l2 distance between distinct kept untransformed points."""
        return _check_normaliser(mean_pairwise_distance(self._kept_points()), "l2")

    def compute(self) -> torch.Tensor:
        return _per_element(self.dist_sum, self.count, "latent G-EED").mean() / self.normaliser()

    def _compute_details(self) -> Dict[str, Any]:
        kept = self._kept_points()
        M = _check_normaliser(mean_pairwise_distance(kept), "l2")
        per_element = _per_element(self.dist_sum, self.count, "latent G-EED") / M
        return {
            "value": float(per_element.mean()),
            "per_element": per_element,
            "per_channel": None,
            "left_out": 0,
            "normaliser": float(M),
            "normaliser_points": int(kept.shape[0]),
            "normaliser_exact": int(kept.shape[0]) == int(self.seen),
            "stderr": _scaled_stderr(self.image_moments, M),
            **no_chance(),
        }


class GEEDLatentCosine(_GEED):
    """Latent-space G-EED with negative cosine similarity, Kvinge et al. 2022 Eq. 6 (vector layers only).

    ``E = (1/M) mean_{x, g} -cos(f(gx), f_hat(x))`` with ``M`` the mean cosine similarity between
    distinct untransformed probe points, as the paper defines it (so ``E`` is in
    ``[-1/M, 1/M]``; more negative = more invariant; for ``M < 0``, rare outside signed
    embeddings, the division flips the order - the paper's definition, kept).

    ``M`` is exactly mergeable: ``sum_{i != j} cos(z_i, z_j) = ||sum_i u_i||^2 - n`` with
    ``u_i = z_i/||z_i||``, so the states are ``sum u_i`` (``D``) and ``n``. Zero vectors (cosine
    undefined) are left out of ``M`` and of the mean, and counted in ``left_out``.

    Args:
        num_elements: ``m``.
        dim: ``D`` of the vectors.
    """

    measure_name = "geed_latent_cosine"
    vector_only = True

    score_sum: torch.Tensor
    count: torch.Tensor
    left_out: torch.Tensor
    unit_sum: torch.Tensor
    num_points: torch.Tensor

    def __init__(self, num_elements: int, dim: int, **kwargs: Any):
        super().__init__(**kwargs)
        _check_positive(type(self).__name__, num_elements=num_elements, dim=dim)
        m = int(num_elements)
        self.add_filled_state("score_sum", (m,), 0.0)
        self.add_filled_state("count", (m,), 0.0)
        self.add_filled_state("left_out", (m,), 0.0)
        self.add_filled_state("unit_sum", (int(dim),), 0.0)
        self.add_filled_state("num_points", (), 0.0)
        self._add_moments_state()

    @classmethod
    def for_layer(cls, ctx: LayerContext, **_: Any) -> "GEEDLatentCosine":
        cls._refuse(ctx)
        return cls(len(ctx.elements), int(ctx.a_x.shape[-1])).to(ctx.a_x.device)

    def _update_tensors(
        self, a_x: torch.Tensor, a_gx: torch.Tensor, sample_mask: Optional[torch.Tensor] = None
    ) -> None:
        """Add a batch: ``a(x)`` (``b x D``) and ``a(gx)`` (``m x b x D``).

        ``sample_mask``: optional ``b`` booleans, True for the images that count; the others are
        left out of the sums, of ``M`` and of ``left_out``.
        """
        out = geed_latent_scores(a_x, a_gx, "cosine")
        s, n, dead = _scores_update(out["score"], out["valid"], sample_mask)
        self.score_sum += s
        self.count += n
        self.left_out += dead
        self._add_image_moments(out["score"], out["valid"], sample_mask)
        u, k = _cosine_normaliser_update(a_x, sample_mask)
        self.unit_sum += u
        self.num_points += k

    def _update_context(self, ctx: LayerContext) -> None:
        self._update_tensors(ctx.a_x, ctx.a_gx, sample_mask=ctx.sample_mask)

    def normaliser(self) -> torch.Tensor:
        """``M``: the mean cosine similarity between distinct non-zero untransformed points."""
        return _check_normaliser(_cosine_normaliser_compute(self.unit_sum, self.num_points), "cosine")

    def compute(self) -> torch.Tensor:
        return _per_element(self.score_sum, self.count, "latent G-EED (cosine)").mean() / self.normaliser()

    def _compute_details(self) -> Dict[str, Any]:
        M = self.normaliser()
        per_element = _per_element(self.score_sum, self.count, "latent G-EED (cosine)") / M
        return {
            "value": float(per_element.mean()),
            "per_element": per_element,
            "per_channel": None,
            "left_out": int(self.left_out.sum()),
            "normaliser": float(M),
            "stderr": _scaled_stderr(self.image_moments, M),
            **no_chance(),
        }


class GEEDSoftmax(_GEED):
    """Softmax G-EED, Kvinge et al. 2022 §3.1: ``mean_{x, g} KL(softmax(f(gx)) || softmax_hat(x))`` (vector
    layers only).

    ``softmax_hat(x)`` is the mean of the softmax outputs over the orbit, identity included.
    The layer's output is read as logits, or as probabilities when it already is a softmax
    (``inputs="auto"``, the default, decides on the first batch: rows in ``[0, 1]`` summing
    to 1). Meant for the network's output layer; on other vector layers it is the KL of the
    softmax of those activations.

    Args:
        num_elements: ``m``.
        inputs: ``"auto"``, ``"logits"`` or ``"probs"``.
    """

    measure_name = "geed_softmax"
    vector_only = True
    plot_lower_bound = 0.0
    best_value = 0.0

    kl_sum: torch.Tensor
    count: torch.Tensor

    def __init__(self, num_elements: int, inputs: str = "auto", **kwargs: Any):
        super().__init__(**kwargs)
        _check_positive(type(self).__name__, num_elements=num_elements)
        if inputs not in _SOFTMAX_INPUTS:
            raise ValueError(f"inputs must be one of {_SOFTMAX_INPUTS}, got {inputs!r}")
        self.inputs = inputs  # as asked; what "auto" decided is _decided, forgotten by reset()
        self._decided: Optional[str] = None if inputs == "auto" else inputs
        self.add_filled_state("kl_sum", (int(num_elements),), 0.0)
        self.add_filled_state("count", (int(num_elements),), 0.0)
        self._add_moments_state()

    @classmethod
    def for_layer(cls, ctx: LayerContext, geed_softmax_input: str = "auto", **_: Any) -> "GEEDSoftmax":
        cls._refuse(ctx)
        return cls(len(ctx.elements), inputs=geed_softmax_input).to(ctx.a_x.device)

    def _update_tensors(
        self, a_x: torch.Tensor, a_gx: torch.Tensor, sample_mask: Optional[torch.Tensor] = None
    ) -> None:
        """Add a batch: ``f(x)`` (``b x D``) and ``f(gx)`` (``m x b x D``), logits or probabilities.

        ``sample_mask``: optional ``b`` booleans, True for the images that count; the others are
        left out of the sums and counts, and of the ``inputs="auto"`` decision.
        """
        inputs = self._decided
        if inputs is None:
            # decided on the first batch with a kept image (a host read, once per reset); each
            # process decides on its own first batch
            if sample_mask is None or bool(sample_mask.any()):
                both = torch.cat([a_x.unsqueeze(0), a_gx])
                self._decided = inputs = "probs" if looks_like_probabilities(both, sample_mask) else "logits"
            else:
                inputs = "logits"  # every image left out: nothing is added
        kl = geed_softmax_scores(a_x, a_gx, inputs)
        valid = torch.ones_like(kl, dtype=torch.bool)
        s, n, _ = _scores_update(kl, valid, sample_mask)
        self.kl_sum += s
        self.count += n
        self._add_image_moments(kl, valid, sample_mask)

    def _update_context(self, ctx: LayerContext) -> None:
        self._update_tensors(ctx.a_x, ctx.a_gx, sample_mask=ctx.sample_mask)

    def reset(self) -> None:
        super().reset()
        self._decided = None if self.inputs == "auto" else self.inputs

    def compute(self) -> torch.Tensor:
        return _per_element(self.kl_sum, self.count, "softmax G-EED").mean()

    def _compute_details(self) -> Dict[str, Any]:
        per_element = _per_element(self.kl_sum, self.count, "softmax G-EED")
        return {
            "value": float(per_element.mean()),
            "per_element": per_element,
            "per_channel": None,
            "left_out": 0,
            "stderr": stderr_from_moments(self.image_moments),
            **no_chance(),
        }

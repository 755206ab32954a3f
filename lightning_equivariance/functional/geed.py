"""G-EED, the empirical equivariance deviation of Kvinge et al. 2022 (§3.1, Eq. 2-6 and softmax G-EED).

Pure torch, no Lightning or TensorBoard. General form (Eq. 4)::

    E(f, G) = 1/(|X||G|) sum_{x in X} sum_{g in G} m(f(gx), g f_hat(x))

with ``f_hat`` the average of ``f(hx)`` over the ``h`` that act trivially on the output
(Eq. 2). For a faithful spatial action on feature maps ``f_hat = f``; on vectors and
softmax outputs ``G`` acts trivially, so ``f_hat(x) = mean_{g in G} f(gx)``, the *orbit
average*, identity included (:func:`orbit_average`). Larger values mean *less*
equivariant for every variant (the paper negates similarities).

Project decisions (docs/measures.md §3), also in the README:

* ``G`` in the sum is the group's non-identity elements (the transformation set of the
  engine; one value per element), while the orbit average ``f_hat`` always includes the
  identity. The paper's full-group average is ``(m * value + m(f(x), f_hat(x))) / (m + 1)``.
* **channelwise** (Eq. 5): ``m = -(1/C) sum_c cos(a(gx)_c, g a_hat(x)_c)`` over the valid
  positions of each map; a channel whose map is zero in either argument is left out of the
  mean and counted (as in the correlation measures). On a vector layer the whole vector is
  one channel and ``g a_hat(x)`` is the orbit average.
* **latent** (Eq. 6), vectors only: ``m = ||f(gx) - f_hat(x)||_2`` divided by ``M``, the mean
  l2 distance between distinct untransformed probe points; the cosine variant uses
  ``m = -cos`` and ``M`` = the mean cosine similarity between distinct points. The cosine
  ``M`` is exactly mergeable over batches and processes::

      sum_{i != j} cos(z_i, z_j) = ||sum_i u_i||^2 - sum_i ||u_i||^2,   u_i = z_i / ||z_i||

  The l2 ``M`` (a mean of square roots) has no finite mergeable summary; it is computed
  exactly over the kept points (:func:`mean_pairwise_distance`), see
  :class:`~lightning_equivariance.metrics.GEEDLatentL2` for the bounded buffer.
* **softmax**: ``m = KL(softmax(f(gx)) || softmax_hat(x))`` with ``softmax_hat`` the mean of the
  softmax outputs over the orbit (identity included); finite, at most ``log(m + 1)``.
* **chance level** of ``geed_channel`` (docs/measures.md §7): the same cosines with the second
  argument taken from the image's partner, ``T'_g a(x_partner(i))`` (vectors: the partner's orbit
  average); :func:`geed_channel_scores` with ``partner=`` returns them.
* **standard error**: ``moments.image_moments`` summarises each image's own score (the mean over
  elements of its mean over valid channels) as mergeable moments
  (:mod:`~lightning_equivariance.functional.moments`).

Shapes: ``a_x`` is ``b x ...`` (untransformed), ``a_gx`` ``m x b x ...`` (one slice per
element), maps ``... x C x h x w``, vectors ``... x D``.

Left-out images (docs/measures.md §1.7): ``sample_mask`` (``b`` booleans, True =
the image counts) leaves an image out of every sum and count - its scores in every view,
and, for the latent ``M``, its untransformed point - with ``torch.where`` (no compaction,
no host synchronisation in the streaming helpers). Orbit averages are per image, so a
left-out image never reaches another image's terms.
"""
from __future__ import annotations

import math
import threading
from typing import Dict, Optional, Tuple

import torch

from .moments import chunk_pairs, sample_keep

__all__ = [
    "orbit_average",
    "geed_channel_scores",
    "geed_latent_scores",
    "geed_softmax_scores",
    "mean_pairwise_distance",
    "mean_pairwise_cosine",
    "geed_channel",
    "geed_latent",
    "geed_softmax",
]

_LATENT = ("l2", "cosine")
_SOFTMAX_INPUTS = ("auto", "logits", "probs")


def orbit_average(a_x: torch.Tensor, a_gx: torch.Tensor) -> torch.Tensor:
    """``f_hat(x) = mean_{g in G} f(gx)`` over the orbit, identity included (Kvinge et al. Eq. 2), float64."""
    return torch.cat([a_x.unsqueeze(0), a_gx]).to(torch.float64).mean(0)


def geed_channel_scores(
    a_gx: torch.Tensor,
    ta_x: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    vector: Optional[bool] = None,
    partner: Optional[torch.Tensor] = None,
    mixed_channels: bool = False,
) -> Dict[str, torch.Tensor]:
    """Channelwise cosine similarities ``cos(a(gx)_c, g a_hat(x)_c)`` (Kvinge et al. Eq. 5), not negated.

    Args:
        a_gx: ``a(gx)``, ``m x b x C x h x w`` maps or ``m x b x D`` vectors.
        ta_x: ``g a_hat(x)`` of the same shape (maps: ``T'_g a(x)``; vectors: the orbit average).
        mask: boolean ``m x h x w`` or ``h x w`` validity mask (maps only).
        vector: force the vector reading (default: 3-D inputs are vectors).
        partner: optional ``b`` integers, each image's partner in this batch or ``-1``
            (docs/measures.md §7): also the cosines against the partner's ``g a_hat``
            (``T'_g a(x_partner(i))``; on vectors the partner's orbit average).
        mixed_channels: ``ta_x`` comes from a channel action applied as a float matrix: a channel
            of it is zero when its norm is below the dtype's dead tolerance of the largest norm
            among the channels of its map, so that round-off leaking into a channel that is
            exactly 0 does not make it count (see :func:`~.correlation.correlation_scores`).

    Returns:
        ``{"cosine", "valid"}``, each ``m x b x C`` (``m x b x 1`` for vectors); ``cosine`` is
        0 where ``valid`` is False (a zero map in either argument). With ``partner`` also
        ``chance_cosine`` and ``chance_valid`` (both maps non-zero and the image has a partner).
    """
    values, valid = _geed_arrays(a_gx, ta_x, mask, vector, partner, mixed_channels)[:2]
    cosine = values[0].masked_fill(~valid, 0)
    out = {"cosine": cosine[:, :, 0], "valid": valid[:, :, 0]}
    if valid.shape[2] == 2:
        out.update(chance_cosine=cosine[:, :, 1], chance_valid=valid[:, :, 1])
    return out


def _geed_arrays(
    a_gx: torch.Tensor,
    ta_x: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    vector: Optional[bool] = None,
    partner: Optional[torch.Tensor] = None,
    mixed_channels: bool = False,
):
    """:func:`geed_channel_scores` as ``(values, valid, pairs)``: ``values`` ``1 x m x b x H x C``
    cosines (not zeroed where not valid), ``valid`` ``m x b x H x C``; ``H = 2`` with ``partner``
    (own, chance), as :func:`~lightning_equivariance.functional.moments.stacked_chunk_sums` takes them.

    With the partner, the two columns' dot products and norms are stacked, so that validity,
    division and clamp run once for both."""
    if vector is None:
        vector = a_gx.dim() == 3
    # Per-sample cosines in the activations' precision (at least float32); the sums over
    # samples are float64 (stacked_chunk_sums).
    u, v, _ = _moved_pairs(a_gx, ta_x, mask, vector)
    m, b, c = u.shape[:3]
    nu, nv = u.norm(dim=-1), v.norm(dim=-1)
    floor = None
    if mixed_channels and not vector:
        from .correlation import _DEAD_RTOL  # one tolerance for "numerically nothing" in both families

        floor = _DEAD_RTOL.get(v.dtype, 1e-5) * nv.amax(-1, keepdim=True)
    if partner is None:
        valid = (nu > 0) & (nv > (0 if floor is None else floor))
        # linalg.vecdot: one call; a batched 1 x P @ P x 1 matmul per row was 2-5x slower on CPU at
        # P >= 1024 (a GEMM call per row). (On torch 2.14's CPU it still runs as a product and a sum.)
        dot = torch.linalg.vecdot(u, v)
        cos = dot / (nu * nv).masked_fill(~valid, 1)
        return cos.clamp(-1.0, 1.0).view(1, m, b, 1, c), valid.unsqueeze(2), None
    pairs = chunk_pairs(partner.to(u.device), b)
    index = pairs.index
    # the partners' maps gathered (the own ones used in place: copying them too cost 15% more
    # time on CPU); the two columns' dots and norms stacked, so the rest runs once for both
    dot = torch.stack([torch.linalg.vecdot(u, v), torch.linalg.vecdot(u, v.index_select(1, index))], 1)
    nv_both = torch.stack([nv, nv.index_select(1, index)], 1)  # m x 2 x b x C
    live_v = nv_both > (0 if floor is None else torch.stack([floor, floor.index_select(1, index)], 1))
    # an image without a partner in the chunk has no chance term
    valid = (nu > 0).unsqueeze(1) & live_v & pairs.has_both
    cos = (dot / (nu.unsqueeze(1) * nv_both).masked_fill(~valid, 1)).clamp(-1.0, 1.0)
    return cos.transpose(1, 2).unsqueeze(0), valid.transpose(1, 2), pairs


# ---------------------------------------------------------------- one chunk of geed_channel in few ATen calls
# (issue 23). A metric's update runs, per (layer, chunk), one gather of the moved maps, the products and norms,
# and then only whole-tensor steps on small stacked tensors written into buffers kept on the metric (so that no
# call is spent on views or on allocating the small results). What a layer's shape and group fix (where every
# entry of T'_g a(x) comes from) is computed once per layer; what a chunk's partners fix, once per chunk.

#: ``pow`` exponents of the moments step: ``w * y**k`` for ``k = 0, 1, 2``. A pair's weight is a mean of four 0/1
#: flags (``0, 1/4, ..., 1``); raised to 4096 it is exactly 0 below 1 (``0.75**4096`` underflows to 0) and 1 at 1,
#: so the same ``pow`` also decides whether a pair of images is scored.
_FLAG_POWER = 4096.0


def position_sources(move, num_elements: int, size: Tuple[int, int], device=None) -> torch.Tensor:
    """Where every position of ``T'_g a`` comes from, for an action that only moves positions (rot90, flips,
    circular shifts): ``m x (h' w')`` long, position ``q`` of element ``g``'s moved map is position
    ``sources[g, q]`` of the map. ``move(maps, g)`` is element ``g``'s action on ``... x 1 x h x w`` maps; the
    positions' own flat indices are moved as one float64 map (exact for any map size)."""
    h, w = size
    origin = torch.arange(h * w, dtype=torch.float64, device=device).reshape(1, 1, h, w)
    return torch.stack([move(origin, g).reshape(-1) for g in range(num_elements)]).to(torch.long)


class _ChunkMap:
    """What a chunk's partners fix for every layer's channelwise G-EED (built once per chunk).

    ``H`` columns: the images' own terms and, with partners, their chance terms (against the partner's maps).

    Attributes:
        rows: ``H x 1 x b`` long: the images whose ``g a_hat`` each column compares with (own, partner).
        keep_index: ``2 x H x 1 x b x 1``: ``sample_mask[keep_index].all(0)`` is whether a column's term
            counts: the image counts and, for the chance column, its partner does too.
        has: ``H x 1 x b x 1`` booleans (the chance column needs a partner in the chunk), or ``None`` (``H = 1``).
        images: ``H`` float64, the images with a term in each column when ``sample_mask`` is ``None``.
        score_map: ``4b x 2Hb`` float64: from the images' scores and "is counted" flags (``2 x H x b``,
            flattened) to ``[y_own, y_margin, w_own, w_margin]`` (``4 x b``): ``y_own = -s_i`` (G-EED per image
            is ``-cos``), ``y_margin = D_k = (d_i + d_partner) / 2`` with ``d_i = s_i - c_i`` (the margin of
            "lower is better" for the negated scores, docs/measures.md §7), ``w_own`` the own flag and
            ``w_margin`` the mean of the four flags of a pair (counted once, at its first image; 1 when both
            images are scored).
    """

    def __init__(self, pairs, b: int, device):
        f64 = torch.float64
        i = torch.arange(b, device=device)
        self.pairs = pairs
        if pairs is None:
            self.h, rows, self.has = 1, i.view(1, 1, b), None
            self.images = torch.full((1,), float(b), dtype=f64, device=device)
        else:
            self.h, rows = 2, torch.stack([i, pairs.index]).view(2, 1, b)
            self.has = torch.stack([torch.ones_like(pairs.has), pairs.has]).view(2, 1, b, 1)
            self.images = pairs.images
        h = self.h
        self.rows = rows
        self.flat_rows = rows.reshape(-1)  # own, then partners
        self.vector_rows = rows.view(h, 1, b, 1)  # for vectors b x D
        self.keep_index = torch.stack([i.view(1, 1, b).expand(h, 1, b), rows]).view(2, h, 1, b, 1)
        score_map = torch.zeros(4 * b, 2 * h * b, dtype=f64, device=device)
        score_map.index_put_((i, i), torch.full((), -1.0, dtype=f64, device=device))
        score_map.index_put_((2 * b + i, h * b + i), torch.full((), 1.0, dtype=f64, device=device))
        if pairs is not None:
            p = pairs.index
            cols = torch.stack([i, b + i, p, b + p])  # own_i, chance_i, own_p, chance_p
            half = torch.tensor([0.5, -0.5, 0.5, -0.5], dtype=f64, device=device).view(4, 1).expand(4, b)
            score_map.index_put_(((b + i).expand(4, b), cols), half, accumulate=True)
            quarter = (pairs.first.to(f64) * 0.25).expand(4, b)
            score_map.index_put_(((3 * b + i).expand(4, b), h * b + cols), quarter, accumulate=True)
        self.score_map = score_map


_CHUNK_MAPS = threading.local()


def chunk_map(partner: Optional[torch.Tensor], b: int, device) -> _ChunkMap:
    """:class:`_ChunkMap` of a chunk, computed once for all its layers (the last one is kept per thread)."""
    pairs = None if partner is None else chunk_pairs(partner.to(device), b)
    last = getattr(_CHUNK_MAPS, "last", None)
    if last is None or last.pairs is not pairs or last.rows.shape[-1] != b or last.rows.device != torch.device(device):
        last = _CHUNK_MAPS.last = _ChunkMap(pairs, b, device)
    return last


class ChannelBuffers:
    """The small tensors one chunk of :func:`geed_channel_chunk` writes, so that its results cost no allocation or
    view calls. Scratch: a metric adds what it needs to its states right after, so the layers of one shape share
    them (:func:`channel_buffers`)."""

    def __init__(self, h: int, m: int, b: int, c: int, device):
        new = dict(dtype=torch.float64, device=device)
        self.h, self.b = h, b
        # what a chunk adds to a metric's state: [sums (2 x 2 x m x C) | tallies (4 x 2)], flattened
        self.increment = torch.zeros(4 * m * c + 8, **new)
        # [cosine sums, valid pairs] x column x element x channel (without partners the chance column stays 0)
        self.sums = self.increment[: 4 * m * c].view(2, 2, m, c)[:, :h]
        self.per_element = torch.empty(2, h, m, b, **new)  # [sum of cosines, live channels] per element and image
        self.per_element_count = self.per_element[1]
        self.per_element_mean = torch.empty(2, h, m, b, **new)  # [mean cosine, has a live channel]
        self.per_image = torch.empty(2, h, b, **new)  # [sum over elements of the means, elements]
        self.per_image_count = self.per_image[1]
        self.scores = torch.empty(2 * h * b, **new)  # [s_i (own, chance), counted (own, chance)], flattened
        self.scores_view = self.scores.view(2, h, b)
        self.terms = torch.empty(4 * b, **new)  # [y_own, y_margin, w_own, w_margin]
        self.terms_view = self.terms.view(1, 2, 2, b)
        self.powers = torch.tensor([[0.0, _FLAG_POWER], [1.0, _FLAG_POWER], [2.0, _FLAG_POWER]], **new).view(3, 2, 1, 1)
        # rows 0-2: sum of w y**k (own, margin); row 3: images with a term (own column, chance column)
        self.tallies = self.increment[4 * m * c :].view(4, 2)
        self.moment_sums = self.tallies[:3]
        self.weight_sums, self.weighted_sums = self.tallies[0], self.tallies[1]
        self.images = self.tallies[3, :h]
        # the bias of references r (2): -r_own for the b own scores, -r_margin for the b margins, 0 for the weights
        self.spread = torch.zeros(4 * b, 2, **new)
        self.spread[:b, 0] = -1.0
        self.spread[b : 2 * b, 1] = -1.0


_BUFFERS = threading.local()


def channel_buffers(h: int, m: int, b: int, c: int, device) -> ChannelBuffers:
    """:class:`ChannelBuffers` of a shape, one per thread (the layers of one shape use them in turn)."""
    cache = getattr(_BUFFERS, "cache", None)
    if cache is None:
        cache = _BUFFERS.cache = {}
    key = (h, m, b, c, torch.device(device))
    if key not in cache:
        cache[key] = ChannelBuffers(h, m, b, c, device)
    return cache[key]


def _moved_pairs(
    a_gx: torch.Tensor,
    ta_x: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    vector: Optional[bool] = None,
    mixed_channels: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """``a(gx)`` and ``g a_hat(x)`` as ``m x b x C x P`` (vectors: ``C = 1``), in their common precision (at
    least float32), the positions a ``mask`` leaves out zeroed; and, for a channel action applied as a float
    matrix, ``m x b x C`` booleans: the channels of ``g a_hat(x)`` above the dead tolerance of their map (see
    :func:`geed_channel_scores`), else ``None``."""
    if a_gx.shape != ta_x.shape:
        raise ValueError(f"a(gx) of shape {tuple(a_gx.shape)} and g a_hat(x) of shape {tuple(ta_x.shape)} differ")
    if vector is None:
        vector = a_gx.dim() == 3
    dtype = torch.promote_types(torch.promote_types(a_gx.dtype, ta_x.dtype), torch.float32)
    u, v = a_gx.to(dtype), ta_x.to(dtype)
    if vector:
        if u.dim() != 3:
            raise ValueError(f"vectors must be m x b x D, got {tuple(u.shape)}")
        return u.unsqueeze(-2), v.unsqueeze(-2), None
    if u.dim() != 5:
        raise ValueError(f"feature maps must be m x b x C x h x w, got {tuple(u.shape)}")
    m, b, c, h, w = u.shape
    u, v = u.reshape(m, b, c, h * w), v.reshape(m, b, c, h * w)
    if mask is not None:
        mask = mask.to(device=u.device, dtype=torch.bool)
        mask = mask.expand(m, h, w) if mask.dim() == 2 else mask
        if mask.shape != (m, h, w):
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit maps of shape {tuple(a_gx.shape)}")
        weight = mask.reshape(m, 1, 1, h * w).to(u.dtype)
        u, v = u * weight, v * weight
    live = None
    if mixed_channels:
        from .correlation import _DEAD_RTOL  # one tolerance for "numerically nothing" in both families

        nv = v.norm(dim=-1)
        live = nv > _DEAD_RTOL.get(v.dtype, 1e-5) * nv.amax(-1, keepdim=True)
    return u, v, live


def geed_channel_chunk(
    u: torch.Tensor,
    v: torch.Tensor,
    dims: Tuple[int, ...],
    sample_mask: Optional[torch.Tensor],
    chunk: _ChunkMap,
    out: ChannelBuffers,
    bias: torch.Tensor,
    live: Optional[torch.Tensor] = None,
    reference: Optional[torch.Tensor] = None,
) -> None:
    """One chunk of channelwise G-EED with its chance level, written into ``out``: ``out.sums`` (the cosine sums
    and valid pairs over the chunk's images), ``out.tallies`` (``w``, ``w y`` and ``w y**2`` of the images' own
    negated scores and of the pair margins, about the references ``r``; the images with a term per column).

    Args:
        u: ``a(gx)``, ``m x b x C x S...``.
        v: ``g a_hat`` of the images ``chunk.rows`` (own, partner), ``H x (m or 1) x b x C x S...``.
        dims: the axes ``S...`` of a channel's entries.
        sample_mask: ``b`` booleans (True = the image counts) or ``None``; left-out images may hold anything.
        bias: ``4b`` float64, ``-r`` for the images' scores and the margins (``[-r_own] * b + [-r_margin] * b``),
            then ``2b`` zeros.
        live: optional ``H x m x b x C`` booleans, False for channels of ``v`` that do not count (round-off).
        reference: optional ``2`` float64: first set ``r`` to this chunk's means (written here and into the
            first half of ``bias``), so that the sums about it keep their digits (a metric's first chunk).

    A pair counts where both norms are positive and its terms count; the rest becomes NaN by dividing by 0 or
    infinity (never a product with a mask: NaN * 0 is NaN) and is zeroed by one ``nan_to_num``.
    """
    dot = (u * v).sum(dims)
    nu = torch.linalg.vector_norm(u, dim=dims)
    nv = torch.linalg.vector_norm(v, dim=dims)
    terms = chunk.has  # H x 1 x b x 1: the image (and its partner) count, or None: all do
    if sample_mask is not None:
        kept = sample_mask[chunk.keep_index].all(0)
        terms = kept if terms is None else kept & terms
    if terms is None:
        out.images.copy_(chunk.images)
    else:
        torch.sum(terms, (1, 2, 3), dtype=torch.float64, out=out.images)
    if live is not None:
        terms = live if terms is None else terms & live
    den = nu * (nv if terms is None else nv / terms)  # inf or NaN where the term does not count
    pairs = (torch.stack([dot, den]) / den).nan_to_num_(0.0, 0.0, 0.0).clamp_(-1.0, 1.0)  # [cosine, valid]
    torch.sum(pairs, 3, dtype=torch.float64, out=out.sums)
    # each image's s_i: the mean over elements (with a live channel) of its mean over live channels; 0/0 is NaN
    torch.sum(pairs, -1, dtype=torch.float64, out=out.per_element)
    torch.div(out.per_element, out.per_element_count, out=out.per_element_mean)
    torch.nansum(out.per_element_mean, 2, out=out.per_image)
    torch.div(out.per_image, out.per_image_count, out=out.scores_view).nan_to_num_(0.0, 0.0, 0.0)
    torch.addmv(bias, chunk.score_map, out.scores, out=out.terms)
    if reference is not None:  # r = sum w y / sum w of this chunk, with y about the bias given (zeros)
        torch.sum(torch.pow(out.terms_view, out.powers).prod(1), -1, out=out.moment_sums)
        torch.div(out.weighted_sums, out.weight_sums.clamp_min(1), out=reference)
        torch.mv(out.spread, reference, out=bias)
        out.terms.add_(bias)  # the terms were taken about 0 (the bias was zero): now about r
    torch.sum(torch.pow(out.terms_view, out.powers).prod(1), -1, out=out.moment_sums)


def geed_latent_scores(a_x: torch.Tensor, a_gx: torch.Tensor, metric: str = "l2") -> Dict[str, torch.Tensor]:
    """Unnormalised latent G-EED terms ``m(f(gx), f_hat(x))`` (Kvinge et al. Eq. 6), ``m x b``.

    ``metric="l2"``: the l2 distance (always valid). ``metric="cosine"``: the *negative* cosine
    similarity; pairs with a zero vector are not valid (0 there).
    """
    if metric not in _LATENT:
        raise ValueError(f"metric must be one of {_LATENT}, got {metric!r}")
    if a_gx.dim() != 3 or a_x.dim() != 2:
        raise ValueError(f"latent G-EED needs vectors: a(x) b x D and a(gx) m x b x D, got {tuple(a_x.shape)}, "
                         f"{tuple(a_gx.shape)}")
    f_hat = orbit_average(a_x, a_gx)
    z = a_gx.to(torch.float64)
    if metric == "l2":
        d = (z - f_hat).norm(dim=-1)
        return {"score": d, "valid": torch.ones_like(d, dtype=torch.bool)}
    out = geed_channel_scores(z, f_hat.expand_as(z), vector=True)
    return {"score": -out["cosine"][..., 0], "valid": out["valid"][..., 0]}


def geed_softmax_scores(a_x: torch.Tensor, a_gx: torch.Tensor, inputs: str = "logits") -> torch.Tensor:
    """``KL(p_g || p_hat)`` per (element, sample), ``m x b`` (Kvinge et al. §3.1, softmax G-EED).

    ``p_g = softmax(f(gx))``, ``p_hat`` = mean of ``softmax(f(hx))`` over the orbit, identity
    included. ``inputs="probs"``: the layer already outputs probabilities (rows summing to 1).
    Terms with ``p = 0`` contribute 0.
    """
    if inputs not in ("logits", "probs"):
        raise ValueError(f"inputs must be 'logits' or 'probs', got {inputs!r}")
    if a_gx.dim() != 3 or a_x.dim() != 2:
        raise ValueError(f"softmax G-EED needs vectors: a(x) b x D and a(gx) m x b x D, got {tuple(a_x.shape)}, "
                         f"{tuple(a_gx.shape)}")
    z = torch.cat([a_x.unsqueeze(0), a_gx]).to(torch.float64)
    logp = torch.log_softmax(z, dim=-1) if inputs == "logits" else torch.log(z.clamp_min(0))
    logq = torch.logsumexp(logp, dim=0) - math.log(z.shape[0])  # log of the orbit-average distribution
    lp = logp[1:]
    p = lp.exp()
    terms = torch.where(p > 0, p * (lp - logq), torch.zeros_like(p))
    return terms.sum(-1)


def looks_like_probabilities(a: torch.Tensor, sample_mask: Optional[torch.Tensor] = None) -> bool:
    """Rows in ``[0, 1]`` summing to 1 (to 1e-4): the layer already applied a softmax.

    ``a`` is ``... x b x D``; with ``sample_mask`` (``b`` booleans) only the kept images' rows are read.
    """
    a = a.to(torch.float64)
    if sample_mask is not None:
        keep = sample_mask.to(device=a.device, dtype=torch.bool).unsqueeze(-1)
        a = torch.where(keep, a, torch.full((), 1.0 / a.shape[-1], dtype=a.dtype, device=a.device))
    sums_to_one = torch.allclose(a.sum(-1), torch.ones((), dtype=a.dtype), atol=1e-4)
    return bool((a >= 0).all() and (a <= 1).all() and sums_to_one)


def mean_pairwise_distance(points: torch.Tensor, sample_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean l2 distance between distinct rows of ``points`` (``n x D``): ``sum_{i != j} ||z_i - z_j|| / (n(n-1))``.

    Exact pairwise differences (no ``|a|^2 + |b|^2 - 2ab`` expansion, which cancels for close points).
    ``sample_mask`` (``n`` booleans): only the rows marked True count (reads their number on the host).
    """
    p = points.to(torch.float64)
    keep = None
    if sample_mask is None:
        n = points.shape[0]
    else:
        keep = sample_mask.to(device=p.device, dtype=torch.bool)
        p = torch.where(keep[:, None], p, torch.zeros((), dtype=p.dtype, device=p.device))
        n = int(keep.sum())
    if n < 2:
        raise ValueError(f"the latent normalisation M needs at least 2 distinct probe points, got {n}")
    total = p.new_zeros(())
    rows = p.shape[0]
    step = max(1, int(2**22 // max(1, rows * p.shape[1])))  # bound the n x step x D difference tensor
    for i in range(0, rows, step):
        d = (p[i : i + step, None, :] - p[None, :, :]).norm(dim=-1)
        if keep is not None:
            d = d * (keep[i : i + step, None] & keep[None, :])
        total = total + d.sum()
    return total / (n * (n - 1))


def _unit_rows(z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    z = z.to(torch.float64)
    norm = z.norm(dim=-1, keepdim=True)
    alive = norm[..., 0] > 0
    return torch.where(norm > 0, z / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(z)), alive


def _cosine_normaliser_update(
    z: torch.Tensor, sample_mask: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mergeable state of the cosine ``M``: ``(sum_i u_i, number of non-zero points)`` of ``b x D`` points.

    ``sample_mask`` (``b`` booleans): only the points marked True count.
    """
    u, alive = _unit_rows(z)
    if sample_mask is not None:
        alive = alive & sample_mask.to(device=alive.device, dtype=torch.bool)
        u = torch.where(alive[:, None], u, torch.zeros((), dtype=u.dtype, device=u.device))
    return u.sum(0), alive.sum(dtype=torch.float64)


def _cosine_normaliser_compute(unit_sum: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """``M = (||sum u_i||^2 - n) / (n (n - 1))``: mean cosine over distinct pairs (each pair twice)."""
    n = float(n)
    if n < 2:
        raise ValueError(f"the latent normalisation M needs at least 2 non-zero probe points, got {int(n)}")
    return ((unit_sum * unit_sum).sum() - n) / (n * (n - 1))


def mean_pairwise_cosine(points: torch.Tensor, sample_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean cosine similarity between distinct non-zero rows of ``points`` (``n x D``), rows with ``sample_mask``
    True."""
    return _cosine_normaliser_compute(*_cosine_normaliser_update(points, sample_mask))


def _scores_update(
    score: torch.Tensor, valid: torch.Tensor, sample_mask: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sum over samples (axis 1) of ``m x b [x C]`` scores: score sums, valid counts and invalid
    (left-out) counts in float64, only over the images with ``sample_mask`` True (all if ``None``)."""
    keep = sample_keep(sample_mask, valid)
    if keep is None:
        invalid = (~valid).sum(1, dtype=torch.float64)
    else:
        invalid = (keep & ~valid).sum(1, dtype=torch.float64)
        valid = valid & keep
    score = torch.where(valid, score, torch.zeros((), dtype=score.dtype, device=score.device))
    return score.sum(1, dtype=torch.float64), valid.sum(1, dtype=torch.float64), invalid


def _per_element(score_sum: torch.Tensor, count: torch.Tensor, what: str) -> torch.Tensor:
    total = count.reshape(count.shape[0], -1).sum(-1)
    if bool((total == 0).any()):
        raise ValueError(f"{what}: no valid (sample, channel) pair for some group element (every map is zero)")
    return score_sum.reshape(score_sum.shape[0], -1).sum(-1) / total


def _check_normaliser(M: torch.Tensor, metric: str) -> torch.Tensor:
    if float(M) == 0.0:
        raise ValueError(
            f"latent G-EED ({metric}): the normalisation M (mean "
            f"{'l2 distance' if metric == 'l2' else 'cosine similarity'} between distinct probe points) is 0, so "
            "Eq. 6 is undefined; the layer maps every probe image to the same point"
        )
    return M


def geed_channel(
    a_gx: torch.Tensor,
    ta_x: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    sample_mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Channelwise G-EED (Kvinge et al. 2022, Eq. 5), averaged over elements: in ``[-1, 1]``, larger = less equivariant.

    ``sample_mask``: ``b`` booleans, True for the images that count (``None``: all).

    Example:
        >>> import torch
        >>> a = torch.rand(3, 4, 2, 6, 6)          # 3 elements, 4 samples, 2 channels
        >>> round(float(geed_channel(a, a)), 6)    # a(gx) = g a(x): perfectly equivariant
        -1.0
    """
    out = geed_channel_scores(a_gx, ta_x, mask=mask)
    s, n, _ = _scores_update(out["cosine"], out["valid"], sample_mask)
    return -_per_element(s, n, "channelwise G-EED").mean()


def geed_latent(
    a_x: torch.Tensor, a_gx: torch.Tensor, metric: str = "l2", sample_mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Latent-space G-EED (Kvinge et al. 2022, Eq. 6) of one batch of vectors, ``M`` from the same ``a_x``.

    ``sample_mask``: ``b`` booleans, True for the images that count, in the terms and in ``M``.

    Example:
        >>> import torch
        >>> z = torch.randn(5, 8)
        >>> float(geed_latent(z, z.expand(3, 5, 8)))   # invariant: every f(gx) = f(x)
        0.0
    """
    out = geed_latent_scores(a_x, a_gx, metric)
    s, n, _ = _scores_update(out["score"], out["valid"], sample_mask)
    per_element = _per_element(s, n, f"latent G-EED ({metric})")
    M = mean_pairwise_distance(a_x, sample_mask) if metric == "l2" else mean_pairwise_cosine(a_x, sample_mask)
    return per_element.mean() / _check_normaliser(M, metric)


def geed_softmax(
    a_x: torch.Tensor, a_gx: torch.Tensor, inputs: str = "logits", sample_mask: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Softmax G-EED (Kvinge et al. 2022, §3.1): mean ``KL(softmax(f(gx)) || softmax_hat(x))``, >= 0.

    ``sample_mask``: ``b`` booleans, True for the images that count (``None``: all).

    Example:
        >>> import torch
        >>> logits = torch.randn(4, 10)
        >>> abs(float(geed_softmax(logits, logits.expand(3, 4, 10)))) < 1e-12   # invariant logits
        True
    """
    kl = geed_softmax_scores(a_x, a_gx, inputs)
    s, n, _ = _scores_update(kl, torch.ones_like(kl, dtype=torch.bool), sample_mask)
    return _per_element(s, n, "softmax G-EED").mean()

"""Correlation invariance and equivariance (Bruintjes et al. 2023 §3, Eq. 4 and Eq. 7).

Pure torch, no Lightning or TensorBoard. Inputs are the activations of the
transformed inputs ``a(T_g x)`` and the transformed activations ``T'_g a(x)``:

* feature maps ``m x b x C x h x w`` (``m`` group elements, ``b`` samples); a boolean
  ``mask`` ``m x h x w`` (or ``h x w``) restricts every similarity to the valid positions;
* vectors ``m x b x D``: the Pearson correlation of the whole ``D``-vectors (docs/measures.md
  §1), so equivariance equals invariance.

A 4-D map / 2-D vector input is read as a single element (``m = 1``).

Similarity ``S(u, v) = max(0, pearson(u, v))`` ("centered cosine" with the ReLU of
Motyka 2022 §3.4); ``similarity="cosine"`` gives ``max(0, cos(u, v))`` (paper Fig. 2).

* invariance ``= mean_{i,c} S(a(T_g x_i)_c, T'_g a(x_i)_c)`` (Eq. 4),
* equivariance ``= mean_{i,c} max_{c'} S(a(T_g x_i)_c, T'_g a(x_i)_{c'})`` (Eq. 7), with the
  ``C x C`` matrix of every sample computed as one batched matrix product.

Dead channels: a channel whose map has (numerically) zero variance in either argument
is left out of the mean for that sample and counted. For equivariance the max runs
over the non-dead channels ``c'``; the same ``(i, c)`` pairs are averaged as for
invariance, so equivariance >= invariance holds per channel.

Left-out images (docs/measures.md §1.7): ``sample_mask`` (``b`` booleans, True =
the image counts) leaves images out of every sum and count, with ``masked_fill`` on the
per-sample scores (no compaction, no host synchronisation): the result equals measuring
only the kept images.

Internally a layer's scores are one stacked tensor ``2 x m x b x H x C`` (invariance,
equivariance; ``H = 2`` columns with the chance level: own, partner) with one valid mask
``m x b x H x C`` (:func:`_layer_arrays`), summed by
:func:`~lightning_equivariance.functional.moments.stacked_chunk_sums` once per layer for both
measures; the dicts below are the documented view of it.

Chance level (docs/measures.md §7): with ``partner`` (``b`` local indices, ``-1`` = none),
:func:`correlation_scores` and :func:`permuted_scores` also score ``a(T_g x_i)`` against the
partner's ``T'_g a(x_partner(i))``: the partner rows of the same standardised maps are
gathered block by block, one more ``C x C`` product per image and element. A chance pair
``(i, c)`` is valid where both maps are live; the max over ``c'`` runs over the partner's
live channels.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch

from .moments import chunk_pairs, sample_keep
from .moves import channels_last_entries, moved_maps, moved_sources
from .scratch import scratch_buffer

__all__ = [
    "correlation_scores",
    "correlation_invariance",
    "correlation_equivariance",
]

_SIMILARITIES = ("pearson", "cosine")
# A centred map whose norm is below this fraction of its raw norm (or exactly 0) is
# constant up to float round-off: left out as dead rather than turned into noise or NaN.
_DEAD_RTOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def _check_similarity(similarity: str) -> None:
    if similarity not in _SIMILARITIES:
        raise ValueError(f"similarity must be one of {_SIMILARITIES}, got {similarity!r}")


def _as_elements(a: torch.Tensor, vector: bool) -> torch.Tensor:
    """Add the element axis to a single-element input."""
    return a.unsqueeze(0) if a.dim() == (2 if vector else 4) else a


def _centre(
    u: torch.Tensor, weight: Optional[torch.Tensor], centre: bool, map_scale: bool = False, owned: bool = False
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows of ``u`` (``... x P``) centred over the positions where ``weight`` is 1 (Pearson), their norms, and "alive".

    A row is dead (left out) when its centred norm is below ``_DEAD_RTOL`` of its raw norm, or
    with ``map_scale`` (rows ``... x C x P``: the channels of one map) of the largest raw norm
    among the channels of its map: the scale a channel action applied as a float matrix cannot
    cross with its round-off (see :func:`correlation_scores`).
    The returned rows are a new tensor when centred or weighted, else ``u`` itself; ``owned``: ``u`` is
    the caller's scratch, already zero where ``weight`` is 0, and is centred in place.
    """
    # Centre, then vector_norm: on CPU this beats fused moment kernels (var_mean is many
    # times slower than a sum there).
    rtol = _DEAD_RTOL.get(u.dtype, 1e-5)
    if weight is not None:
        if not owned:
            u = u * weight  # our own copy from here on: centred and re-masked in place (no new tensors)
        n_valid = weight.sum(-1, keepdim=True).clamp_min(1)
    else:
        n_valid = u.shape[-1]
    if not centre:
        norm = torch.linalg.vector_norm(u, dim=-1)
        return u, norm, norm > rtol * (norm.amax(-1, keepdim=True) if map_scale else norm)
    mean = u.sum(-1, keepdim=True) / n_valid
    if weight is None:
        u = u.sub_(mean) if owned else u - mean
    else:
        u.sub_(mean).mul_(weight)
    norm = torch.linalg.vector_norm(u, dim=-1)
    # |a|^2 = |a - mean|^2 + n * mean^2: the raw norm without another pass over the data.
    n = n_valid if weight is None else n_valid.squeeze(-1)
    if map_scale:
        raw = torch.sqrt(norm.square() + n * mean.squeeze(-1).square())
        return u, norm, norm > rtol * raw.amax(-1, keepdim=True)
    # norm > rtol * raw, compared squared (no square root; the same test up to round-off)
    square = norm.square()
    raw_square = square + n * mean.squeeze(-1).square() if weight is not None else torch.add(
        square, mean.squeeze(-1).square(), alpha=n)
    return u, norm, square > raw_square * (rtol * rtol)


def _standardise(
    u: torch.Tensor, weight: Optional[torch.Tensor], centre: bool, map_scale: bool = False
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm (optionally centred) rows of ``u`` (``... x P``) over the positions where ``weight`` is 1.

    Returns the standardised rows (dead rows set to 0) and the boolean "alive" mask
    (``map_scale`` as in :func:`_centre`).
    """
    rows, norm, alive = _centre(u, weight, centre, map_scale)
    return _unit_rows(rows, norm, alive, in_place=rows is not u), alive


def _unit_rows(rows: torch.Tensor, norm: torch.Tensor, alive: torch.Tensor, in_place: bool) -> torch.Tensor:
    """``rows`` divided by their ``norm`` (in place when they are the caller's own copy); dead rows are divided
    by +inf, which zeroes them in the same pass."""
    scale = _safe_norm(norm, alive).unsqueeze(-1)
    return rows.div_(scale) if in_place else rows / scale


def _safe_norm(norm: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """``norm`` with dead rows at +inf, so that dividing by it zeroes them."""
    return torch.where(alive, norm, _constant(float("inf"), norm.dtype, norm.device))


_CONSTANTS: Dict[Tuple[float, torch.dtype, torch.device], torch.Tensor] = {}


def _constant(value: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A 0-d tensor of ``value``, made once per dtype and device (a fill for ``torch.where`` without a
    new tensor per call)."""
    key = (value, dtype, device)
    if key not in _CONSTANTS:
        with torch.inference_mode(False):  # a normal tensor, usable inside and outside inference mode
            _CONSTANTS[key] = torch.full((), value, dtype=dtype, device=device)
    return _CONSTANTS[key]


# Bytes of C x C similarities computed at once. Every block costs at least two calls (its product and
# its row max; each a kernel launch on a GPU, a parallel region that waits for all threads on CPU), so
# the cap trades launches for memory. 256 MiB: ViT-B's 3072-channel MLP layers hold 3 image-element
# rows of 3072 x 6144 per block instead of 1, ConvNeXt-T's 1536-channel layers 13 instead of 1, and a
# ResNet's layer4 all 48 rows of a chunk in one block - ViT 141.0 -> 92.5 and ConvNeXt 116.6 -> 83.9
# calls per (layer, chunk), at 16 MiB blocks. On this 2-core CPU (L3 32 MiB) it costs about 5% of a
# measurement's time (ResNet-18: 1.82 -> 1.93 s, ViT-B 32 images: 33.3 -> 35.2 s, medians of
# alternating runs): a block over the last-level cache is written and read back from memory. The cap
# keeps memory fixed by the layer, not the number of images; on CPU the blocks are written into one
# buffer per thread (functional/scratch.py), released after the measurement.
_SIMILARITY_BLOCK_BYTES = 256 * 2**20
# The moved maps' source indices (int64, m x C x h x w) are kept per layer up to this many entries (2 MiB):
# on small maps they save a handful of calls per chunk; on large ones the gathers dominate, and keeping
# them for every layer of a large model would hold hundreds of MiB.
_MAX_KEPT_SOURCES = 2**18


def _products(
    u: torch.Tensor, v: torch.Tensor, rows: Optional[torch.Tensor] = None, interleaved: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``<u_c, v_c>`` and ``max_{c'} <u_c, v_c'>`` of ``... x C x P`` inputs, stacked: ``2 x n x H x C``
    (``n`` the flattened leading axes; ``H = 2`` with ``rows``: also against row ``rows[r]`` of ``v``).

    Batched matrix products in blocks of bounded size; diagonal and max come from the same ``C x C``
    block, so the max is >= the diagonal exactly (equivariance >= invariance, no round-off).

    ``rows``: for the chance level (docs/measures.md §7), one index per row of the flattened
    leading axes of ``v``: row ``r`` of ``u`` is also compared with row ``rows[r]`` of ``v`` (its
    partner; ``interleaved``: ``(r, rows[r])`` flattened, when already known). With few positions (P < C)
    both products of a row come from one ``C x 2C`` matmul against its own and its partner's maps,
    gathered block by block (one op each instead of two).
    Each block's diagonal and row max go straight into one stacked tensor (the block lives in a
    reused buffer); several blocks are concatenated once at the end.
    """
    c, p = u.shape[-2:]
    u, v = u.reshape(-1, c, p), v.reshape(-1, c, p)
    n = u.shape[0]
    # With the partner and few positions (P < C), one C x 2C product per row against its own
    # and its partner's maps gathered together (one op instead of two; the gather copies maps
    # of P entries, small next to the C x C block); with many positions the own maps are used
    # in place and the partner's gathered alone (copying every map would cost more than an op).
    paired = rows is not None and p < c
    halves = 2 if paired else 1
    width = halves * c
    # the block's maps are bounded too (P > C: the maps, not the products, set the size)
    step = min(n, max(1, _SIMILARITY_BLOCK_BYTES // (c * max(width, p) * u.element_size())))
    buf = scratch_buffer(step * c * width, u)
    if paired:
        # own and partner rows interleaved: a gathered block k x 2 x C x P is k x 2C x P
        if interleaved is not None:
            both = interleaved
        else:
            both = torch.stack([torch.arange(n, device=rows.device), rows.to(torch.long)], 1).reshape(-1)
    if step < n and (paired or rows is None):
        return _blocked_products(u, v, both if paired else None, step, buf)
    pieces = []
    for i in range(0, n, step):
        k = min(step, n - i)
        # one block (the usual case): the whole tensors, no slicing ops
        ub = u if k == n else u[i : i + k]
        vb = v.index_select(0, both if k == n else both[2 * i : 2 * (i + k)]).view(k, width, p) if paired else (
            v if k == n else v[i : i + k])
        out = (buf if buf.numel() == k * c * width else buf[: k * c * width]).view(k, c, width)
        block = torch.bmm(ub, vb.transpose(-1, -2), out=out)
        quarters = block.view(k, c, halves, c)
        # 2 x k x halves x C: copied out of the buffer before the next product overwrites it
        piece = torch.stack([torch.diagonal(quarters, dim1=1, dim2=3), torch.amax(quarters, -1).transpose(1, 2)])
        if rows is not None and not paired:
            vb = v.index_select(0, rows if k == n else rows[i : i + k])
            block = torch.bmm(ub, vb.transpose(-1, -2), out=out)
            chance = torch.stack([torch.diagonal(block, dim1=-2, dim2=-1), torch.amax(block, -1)])
            piece = torch.stack([piece.squeeze(2), chance], 2)
        pieces.append(piece)
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, 1)


def _blocked_products(
    u: torch.Tensor, v: torch.Tensor, both: Optional[torch.Tensor], step: int, buf: torch.Tensor
) -> torch.Tensor:
    """:func:`_products` over several blocks of ``step`` rows (``u``, ``v``: ``n x C x P``; ``both``: own and
    partner rows interleaved, or ``None`` without the chance level; ``buf``: ``step x C x H C`` entries).

    The large layers (hundreds to thousands of channels) need tens of blocks, so each block costs two
    calls: the product into the reused buffer and its row max, written straight into its place in the
    result (the views of every block come from one ``split`` each). The diagonals - ``<u_c, v_c>`` of the
    own and the partner's map - are ``C P`` products per row, computed for all rows at once outside the
    loop; a max below its diagonal by round-off is lifted to it (one ``maximum``), so that the max is
    >= the diagonal exactly, as with one block."""
    n, c, p = u.shape
    halves = 1 if both is None else 2
    width = halves * c
    # every row's own and partner maps gathered once (P < C: smaller than one block's products)
    vb = v if both is None else v.index_select(0, both).view(n, width, p)
    out = torch.empty(2, n, halves, c, dtype=u.dtype, device=u.device)
    torch.sum(u.unsqueeze(1) * vb.view(n, halves, c, p), -1, out=out[0])
    # the maxima as the reduction leaves them (a strided out= halved amax's speed on CPU), moved into place
    # by the final maximum
    maxima = u.new_empty(n, c, halves)
    full = buf.view(step, c, width)
    full_quarters = full.view(step, c, halves, c)
    for ub, vtb, block_max in zip(u.split(step), vb.transpose(-1, -2).split(step), maxima.split(step)):
        k = ub.shape[0]
        if k == step:
            block, quarters = full, full_quarters
        else:  # the last, smaller block
            block = buf[: k * c * width].view(k, c, width)
            quarters = block.view(k, c, halves, c)
        torch.bmm(ub, vtb, out=block)
        torch.amax(quarters, -1, out=block_max)
    torch.maximum(maxima.transpose(1, 2), out[0], out=out[1])
    return out


def _diagonal_and_max(
    u: torch.Tensor, v: torch.Tensor, rows: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, ...]:
    """``<u_c, v_c>`` and ``max_{c'} <u_c, v_c'>`` for ``... x C x P`` inputs (:func:`_products`), each
    of ``u``'s leading shape; with ``rows`` four tensors: the same against the partner rows."""
    shape = u.shape[:-1]
    out = _products(u, v, rows)
    got = (out[0, :, 0].reshape(shape), out[1, :, 0].reshape(shape))
    if rows is None:
        return got
    return got + (out[0, :, 1].reshape(shape), out[1, :, 1].reshape(shape))


def _layer_arrays(
    products: torch.Tensor,
    norm_u: torch.Tensor,
    alive_u: torch.Tensor,
    alive_v: torch.Tensor,
    pairs: Any,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Scores and valid pairs from :func:`_products` of centred, not yet normalised rows ``u``
    (norms ``norm_u``, ``m x b x C``) of ``a(T_g x)`` and unit rows ``v`` of ``T'_g a(x)``.

    Returns ``values`` (``2 x m x b x H x C``: invariance, equivariance; own and, with ``pairs``,
    chance) and ``valid`` (``m x b x H x C``); values of invalid pairs are not zeroed (see
    :func:`_score_dict`). Dividing the products by ``|u_c|`` afterwards, instead of ``u`` itself
    before, saves a pass over the maps: a positive factor per row ``c`` does not move the max over
    ``c'``. ReLU after the max (max and ReLU commute); dead ``c'`` rows of ``v`` are zero and every
    score is clamped at 0, so they never change the max.
    """
    m, b, c = alive_u.shape
    h = products.shape[2]
    # dead rows of u may give anything here (0 / 0): their pairs are not valid, and every consumer
    # zeroes invalid pairs (masked_fill) before adding
    values = (products / norm_u.view(1, m * b, 1, c)).clamp_min(0).view(2, m, b, h, c)
    if pairs is None:
        return values, (alive_u & alive_v).unsqueeze(2)
    # [alive_v(i), alive_v(partner(i))] of every image in one gather (alive_v may be b x C, the same for
    # every element), and the chance column only where the image has a partner
    pick, has_cols = pairs.own_and_partner()
    both = alive_v.index_select(-2, pick).view(-1, b, 2, c)
    return values, alive_u.unsqueeze(2) & both & has_cols


def _score_dict(values: torch.Tensor, valid: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The documented dict of :func:`correlation_scores` from ``2 x m x b x H x C`` values and
    ``m x b x H x C`` valid pairs: scores of invalid pairs are 0."""
    zeroed = values.masked_fill(~valid, 0)
    out = {"invariance": zeroed[0, :, :, 0], "equivariance": zeroed[1, :, :, 0], "valid": valid[:, :, 0]}
    if valid.shape[2] == 2:
        out.update(chance_invariance=zeroed[0, :, :, 1], chance_equivariance=zeroed[1, :, :, 1],
                   chance_valid=valid[:, :, 1])
    return out


def _partner_index(partner: Optional[torch.Tensor], b: int, device) -> Tuple[Any, ...]:
    """``(pairs, index, has_partner)`` of the chunk's partners (:func:`~.moments.chunk_pairs`), or ``None``s."""
    if partner is None:
        return None, None, None
    pairs = chunk_pairs(partner.to(device), b)
    return pairs, pairs.index, pairs.has


def permuted_scores(
    a_gx: torch.Tensor,
    a_x: torch.Tensor,
    permute: Callable[[torch.Tensor, int], torch.Tensor],
    similarity: str = "pearson",
    partner: Optional[torch.Tensor] = None,
    permute_channels: Optional[Callable[[torch.Tensor, int], torch.Tensor]] = None,
) -> Dict[str, torch.Tensor]:
    """Scores when every ``T'_g`` permutes positions (rot90, flips, circular shifts; no mask),
    and possibly channels (a steerable layer's regular fields).

    Args:
        a_gx: ``a(T_g x)``, ``m x b x C x h x w``.
        a_x: ``a(x)``, ``b x C x h x w``.
        permute: ``permute(maps, g)`` is ``T'_g`` (element ``g`` of ``a_gx``'s first axis) on
            ``b x C x h x w`` maps; it must only move entries (positions, and channels when
            ``permute_channels`` is given).
        permute_channels: when ``T'_g`` also permutes channels, its channel part alone (on
            ``b x C x 1 x 1``): the live channels of ``T'_g a(x)`` are those of ``a(x)`` moved.

    Centring and norms do not change under a permutation of positions, and a permutation of
    channels only moves them, so ``a(x)`` is standardised once and only its unit maps are
    moved, for all elements into one tensor (one blocked pass of products); the result equals
    :func:`correlation_scores` with ``ta_x = T'_g a(x)``, ``partner`` included.
    """
    return _score_dict(*_permuted_arrays(a_gx, a_x, permute, similarity, partner, permute_channels)[:2])


def _permuted_arrays(
    a_gx: torch.Tensor,
    a_x: torch.Tensor,
    permute: Callable[[torch.Tensor, int], torch.Tensor],
    similarity: str = "pearson",
    partner: Optional[torch.Tensor] = None,
    permute_channels: Optional[Callable[[torch.Tensor, int], torch.Tensor]] = None,
    constants: Optional[Dict[Any, Any]] = None,
) -> Tuple[Any, ...]:
    """:func:`permuted_scores` as ``(values, valid, pairs)`` (:func:`_layer_arrays`).

    ``constants``: a dict the caller keeps per layer (and action): what depends only on the layer's
    shape and the action (where the moved maps' entries come from) is computed on the first chunk
    and kept there."""
    _check_similarity(similarity)
    m, b, c, h, w = a_gx.shape
    if a_x.shape != a_gx.shape[1:]:
        raise ValueError(f"a(x) of shape {tuple(a_x.shape)} does not fit a(T_g x) of shape {tuple(a_gx.shape)}")
    pairs = _partner_index(partner, b, a_gx.device)[0]
    centre = similarity == "pearson"
    joint = _joint_view(a_x, a_gx, (1 + m, b, c, h * w))
    if joint is None:
        v, alive_v = _standardise(a_x.reshape(b, c, h * w), None, centre)
        u, norm_u, alive_u = _centre(a_gx.reshape(m, b, c, h * w), None, centre)
    else:  # a(x) right before a(T_g x) in memory (the engine's stacked output): one pass centres both
        rows, norm, alive = _centre(joint, None, centre)
        # a(x) as one element (1 x b x ...: every use broadcasts over the elements), a(T_g x) the others
        (v, u), (norm_v, norm_u), (alive_v, alive_u) = (t.split([1, m]) for t in (rows, norm, alive))
        # (centred rows are our own copy; uncentred ones, for cosine, are the activations themselves)
        v = _unit_rows(v, norm_v, alive_v, in_place=centre)
    if permute_channels is not None:  # the live channels of T'_g a(x), per element: m x b x C
        live = alive_v.to(v.dtype).reshape(b, c, 1, 1)
        alive_v = torch.stack([permute_channels(live, g).reshape(b, c) for g in range(m)]) > 0
    # (else alive_v stays b x C: the same live channels for every element, broadcast)
    # Every element's moved unit maps in one tensor (the size of a(T_g x)), one gather each,
    # so that the C x C products of all elements run as one blocked pass: a loop over elements
    # multiplies the number of (small) ops, each a parallel region that waits for every thread.
    sources = None
    maps = v.view(b, c, h, w)
    if constants is not None and m * c * h * w <= _MAX_KEPT_SOURCES:
        last = channels_last_entries(maps)
        key = ("moved_sources", c, h, w, m, v.device, last)
        if key not in constants:
            constants[key] = moved_sources((c, h, w), permute, m, v.device, channels_last=last)
        sources = constants[key]
    moved = moved_maps(maps, permute, m, sources, flat=True).view(m, b, c, h * w)
    # chance: T'_g a(x_partner(i)) is row g*b + partner(i) of the same moved unit maps
    products = _products(u, moved, *(() if pairs is None else pairs.element_rows(m)))
    return _layer_arrays(products, norm_u, alive_u, alive_v, pairs) + (pairs,)


def _moved_arrays(
    a_gx: torch.Tensor,
    a_x: torch.Tensor,
    sources: Sequence[torch.Tensor],
    weight: Optional[torch.Tensor] = None,
    similarity: str = "pearson",
    partner: Optional[torch.Tensor] = None,
) -> Tuple[Any, ...]:
    """:func:`correlation_scores` as ``(values, valid, pairs)`` (:func:`_layer_arrays`) when every ``T'_g``
    moves entries of ``a(x)`` onto its valid positions: rot90, flips and shifts, zero-filled or circular -
    the elements of several such groups at once (one centring, one blocked pass of products).

    Args:
        a_gx: ``a(T_g x)``, ``m x b x C x h x w``.
        a_x: ``a(x)``, ``b x C x h x w``.
        sources: per element, where each entry of ``T'_g a(x)`` comes from (int64 indices into a flattened
            map of ``a(x)``, :func:`~.moves.moved_sources` with ``channels_last=channels_last_entries(a_x)``);
            entries outside the element's valid positions may come from anywhere (the weight zeroes them).
        weight: ``m x 1 x 1 x (h w)``, 1 at each element's valid positions and 0 elsewhere, or ``None`` when
            every position is valid.

    Both arguments are centred per element over its valid positions, in one scratch tensor
    ``2 x m x b x C x (h w)``: ``a(T_g x)`` copied and every element's moved map of ``a(x)`` gathered into it.
    """
    _check_similarity(similarity)
    m, b, c, h, w = a_gx.shape
    p = h * w
    pairs = _partner_index(partner, b, a_gx.device)[0]
    both = a_gx.new_empty(2, m, b, c * p)
    both[0].view(m, b, c, h, w).copy_(a_gx)
    moved_maps(a_x, None, m, (sources, (c, h, w)), flat=True, out=both[1])
    both = both.view(2, m, b, c, p)
    if weight is not None:
        both.mul_(weight)
    rows, norm, alive = _centre(both, weight, similarity == "pearson", owned=True)
    (u, v), (norm_u, norm_v), (alive_u, alive_v) = rows.unbind(0), norm.unbind(0), alive.unbind(0)
    _unit_rows(v, norm_v, alive_v, in_place=True)
    # chance: row g*b + i of u against row g*b + partner(i) of v (same element, partner's map)
    products = _products(u, v, *(() if pairs is None else pairs.element_rows(m)))
    return _layer_arrays(products, norm_u, alive_u, alive_v, pairs) + (pairs,)


def _joint_view(a_x: torch.Tensor, a_gx: torch.Tensor, shape: Tuple[int, ...]) -> Optional[torch.Tensor]:
    """``[a(x), a(T_g x)...]`` as one ``(1 + m) x b x C x (h w)`` view (``shape``) when the elements of ``a(T_g x)``
    follow ``a(x)`` (``b x C x h x w``) in the same storage at its images' stride and laid out alike, and ``h`` and
    ``w`` merge into one axis of positions - as in the engine's stacked output, contiguous, channels-last, or a
    token layer's grid (its class token skipped: the images' stride is then more than one map); otherwise ``None``."""
    sb, sc, sh, sw = a_x.stride()
    step = a_x.shape[0] * sb  # from one element to the next: the batch of images
    if (
        sh == a_x.shape[-1] * sw  # h and w merge into one axis of positions
        and a_gx.dtype == a_x.dtype
        and a_gx.device == a_x.device
        and a_gx.stride() == (step, sb, sc, sh, sw)
        and a_gx.data_ptr() == a_x.data_ptr() + step * a_x.element_size()
        and a_gx.untyped_storage().data_ptr() == a_x.untyped_storage().data_ptr()
    ):
        return a_x.as_strided(shape, (step, sb, sc, sw))
    return None


def check_position_mask(mask: torch.Tensor, h: int, w: int) -> None:
    """Raise if an element's validity mask (``m x h x w``) leaves fewer than 2 positions (synchronises)."""
    if int(mask.flatten(1).sum(-1).min()) < 2:
        raise ValueError(
            f"mask leaves fewer than 2 valid positions on a {h}x{w} map: the correlation is undefined "
            "there; use smaller shifts or leave the layer out"
        )


def correlation_scores(
    a_gx: torch.Tensor,
    ta_x: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    similarity: str = "pearson",
    vector: Optional[bool] = None,
    check_mask: bool = True,
    partner: Optional[torch.Tensor] = None,
    mixed_channels: bool = False,
) -> Dict[str, torch.Tensor]:
    """Per-(element, sample, channel) invariance and equivariance scores, and their chance level.

    Args:
        a_gx: ``a(T_g x)``, ``m x b x C x h x w`` maps or ``m x b x D`` vectors.
        ta_x: ``T'_g a(x)``, same shape.
        mask: boolean validity mask ``m x h x w`` or ``h x w`` (maps only); ``None`` = all valid.
        similarity: ``"pearson"`` (default) or ``"cosine"``.
        vector: force the vector reading; default: 2-D/3-D inputs are vectors.
        check_mask: raise if ``mask`` leaves fewer than 2 positions for some element (this
            reads a count on the host; the metrics check once per layer and pass False).
        partner: optional ``b`` integers, the index of each image's partner in this batch or
            ``-1`` (docs/measures.md §7): also score ``a(T_g x_i)`` against ``T'_g a(x_partner(i))``,
            reusing the standardised maps (one more ``C x C`` product per image and element).
        mixed_channels: ``ta_x`` comes from a channel action applied as a float matrix (a
            representation that is not a permutation): its round-off leaks about ``1e-17`` of
            the other channels into a channel that is exactly 0, which, judged on its own
            scale, would look live. A channel of ``ta_x`` is then dead when its centred norm is
            below ``_DEAD_RTOL`` of the largest raw norm among the channels of its map (a
            scale the leak cannot cross).

    Returns:
        ``{"invariance", "equivariance", "valid"}``, each ``m x b x C`` (``m x b x 1`` for
        vectors); scores of invalid (dead) pairs are 0 and ``valid`` is False there. With
        ``partner``, also ``chance_invariance``, ``chance_equivariance`` and ``chance_valid``:
        the same against the partner's map, valid where both maps are live and the image has
        a partner (the max over ``c'`` runs over the partner's live channels).
    """
    arrays = _correlation_arrays(a_gx, ta_x, mask, similarity, vector, check_mask, partner, mixed_channels)
    return _score_dict(*arrays[:2])


def _correlation_arrays(
    a_gx: torch.Tensor,
    ta_x: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    similarity: str = "pearson",
    vector: Optional[bool] = None,
    check_mask: bool = True,
    partner: Optional[torch.Tensor] = None,
    mixed_channels: bool = False,
) -> Tuple[Any, ...]:
    """:func:`correlation_scores` as ``(values, valid, pairs)`` (:func:`_layer_arrays`)."""
    _check_similarity(similarity)
    if a_gx.shape != ta_x.shape:
        raise ValueError(f"a(T_g x) of shape {tuple(a_gx.shape)} and T'_g a(x) of shape {tuple(ta_x.shape)} differ")
    if vector is None:
        vector = a_gx.dim() in (2, 3)
    a_gx, ta_x = _as_elements(a_gx, vector), _as_elements(ta_x, vector)
    b = a_gx.shape[1]
    pairs, index, has_partner = _partner_index(partner, b, a_gx.device)
    centre = similarity == "pearson"
    if vector:
        # One "channel": the whole D-vector; invariance and equivariance are the same number.
        u, alive_u = _standardise(a_gx.unsqueeze(-2), None, centre)
        v, alive_v = _standardise(ta_x.unsqueeze(-2), None, centre)
        if index is None:
            score, valid = (u * v).sum(-1).unsqueeze(2), (alive_u & alive_v).unsqueeze(2)
        else:
            v_both = torch.stack([v, v.index_select(1, index)], 2)  # m x b x 2 x 1 x D
            score = (u.unsqueeze(2) * v_both).sum(-1)
            partner_alive = alive_v.index_select(1, index) & has_partner.view(1, b, 1)
            valid = alive_u.unsqueeze(2) & torch.stack([alive_v, partner_alive], 2)
        values = score.clamp_min(0).unsqueeze(0).expand(2, *score.shape)
        return values, valid, pairs

    if a_gx.dim() != 5:
        raise ValueError(f"feature maps must be m x b x C x h x w (or b x C x h x w), got {tuple(a_gx.shape)}")
    m, b, c, h, w = a_gx.shape
    weight = None
    if mask is not None:
        mask = mask.to(device=a_gx.device, dtype=torch.bool)
        if mask.dim() == 2:
            mask = mask.expand(m, h, w)
        if mask.shape != (m, h, w):
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit maps of shape {tuple(a_gx.shape)}")
        if check_mask:
            check_position_mask(mask, h, w)
        weight = mask.reshape(m, 1, 1, h * w).to(a_gx.dtype)
    u, norm_u, alive_u = _centre(a_gx.reshape(m, b, c, h * w), weight, centre)
    v, alive_v = _standardise(ta_x.reshape(m, b, c, h * w), weight, centre, map_scale=mixed_channels)
    # chance: row g*b + i of u against row g*b + partner(i) of v (same element, partner's map)
    products = _products(u, v, *(() if pairs is None else pairs.element_rows(m)))
    return _layer_arrays(products, norm_u, alive_u, alive_v, pairs) + (pairs,)


def _correlation_update(
    scores: torch.Tensor, valid: torch.Tensor, sample_mask: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sum over samples: per-(element, channel) score sums and valid counts, per-element dead pairs (float64).

    ``scores`` and ``valid`` are ``m x b x C`` (``scores`` may have leading axes: several
    measures' scores stacked, ``k x m x b x C`` giving ``k x m x C`` sums); ``sample_mask``
    (``b`` booleans, True = the image counts) leaves images out of all three (``torch.where``:
    a score of a left-out image may be anything, NaN included).
    """
    keep = sample_keep(sample_mask, valid)
    if keep is None:
        dead = (~valid).sum((-2, -1), dtype=torch.float64)
    else:
        dead = (keep & ~valid).sum((-2, -1), dtype=torch.float64)
        valid = valid & keep
        scores = torch.where(valid, scores, torch.zeros((), dtype=scores.dtype, device=scores.device))
    return scores.sum(-2, dtype=torch.float64), valid.sum(-2, dtype=torch.float64), dead


def _correlation_compute(score_sum: torch.Tensor, count: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-element means over valid (sample, channel) pairs, and their mean over elements.

    Raises:
        ValueError: an element with no valid pair at all (every channel dead).
    """
    total = count.sum(-1)
    if bool((total == 0).any()):
        raise ValueError(
            "every channel is dead (zero variance) for some group element: the correlation is undefined; "
            "check the layer's activations or the probe images"
        )
    per_element = score_sum.sum(-1) / total
    return per_element, per_element.mean()


def _functional(measure: str, a_gx, ta_x, mask, similarity, sample_mask) -> torch.Tensor:
    out = correlation_scores(a_gx, ta_x, mask=mask, similarity=similarity)
    return _correlation_compute(*_correlation_update(out[measure], out["valid"], sample_mask)[:2])[1]


def correlation_invariance(
    a_gx: torch.Tensor,
    ta_x: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    similarity: str = "pearson",
    sample_mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Layer invariance (Bruintjes et al. 2023, Eq. 4), averaged over elements, samples and live channels.

    ``sample_mask``: ``b`` booleans, True for the images that count (``None``: all); the others
    are left out exactly (docs/measures.md §1.7).

    Example:
        >>> import torch
        >>> a = torch.randn(1, 4, 3, 8, 8)           # 1 element, 4 samples, 3 channels
        >>> round(float(correlation_invariance(a, a)), 6)      # identical maps
        1.0
    """
    return _functional("invariance", a_gx, ta_x, mask, similarity, sample_mask)


def correlation_equivariance(
    a_gx: torch.Tensor,
    ta_x: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    similarity: str = "pearson",
    sample_mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Layer equivariance (Bruintjes et al. 2023, Eq. 7): best-matching channel ``c'`` per channel ``c``.

    ``sample_mask`` as in :func:`correlation_invariance`.

    Example:
        >>> import torch
        >>> a = torch.randn(1, 4, 3, 8, 8)
        >>> round(float(correlation_equivariance(a.flip(2), a)), 6)   # channels permuted
        1.0
    """
    return _functional("equivariance", a_gx, ta_x, mask, similarity, sample_mask)

"""Honest numbers (docs/measures.md §7): per-image scores, mergeable moments, partner pairs.

Pure torch. Small pieces shared by the measures that are means over probe images:

* :func:`per_image_scores` - image ``i``'s own score ``s_i``: the mean over the group's
  elements of image ``i``'s mean over its live channels for that element (elements where it
  has no live channel are skipped; an image with none at all is not counted).
* Mergeable moments of the ``s_i`` for a standard error: a tensor ``(..., 3)`` holding
  ``(n, mean, M2)`` (count, mean, sum of squared deviations from the mean), float64.
  :func:`moments_of` summarises one batch (two passes: the mean first, then the deviations,
  with the usual compensation term), :func:`combine_moments` merges two summaries with Chan
  et al.'s parallel update and :func:`merge_moments` any number of them along the first axis
  - usable as a torchmetrics ``dist_reduce_fx`` (it receives the states of every process
  stacked) and by ``merge_state``. Nothing subtracts two large sums of squares, so scores
  sitting within ``1e-7`` of 1 (steerable networks) keep their spread: naive
  ``E[s^2] - E[s]^2`` would cancel to noise there.
  :func:`stderr_from_moments` gives ``std(s_i, ddof=1) / sqrt(n)``, or ``None`` for ``n < 2``.
* Partner pairs for the chance level: :func:`partner_pairs` turns the engine's ``partner``
  (``b`` local indices, ``-1`` = no partner in this chunk) and ``sample_mask`` into a safe
  gather index and the boolean "this image has a chance term" (it counts, it has a partner,
  and the partner counts). At compute, :func:`chance_per_element` and :func:`chance_details`
  turn the chance sums into ``chance``, ``chance_per_element``, ``above_chance``,
  ``informative`` and ``chance_left_out``.
* The margin's interval: :func:`pair_margins` gives each scored pair's ``D_k`` (the mean of its
  two images' ``s_i - c_i``, sign flipped where lower is better) for :func:`moments_of`;
  :func:`margin_details` turns the merged moments into ``margin``, ``margin_stderr``,
  ``margin_low`` (one-sided 95%, Student's t) and ``significant``.
* One chunk of a layer in few ATen calls (issue 23): :func:`stacked_chunk_sums` computes all of
  the above for ``k`` measures that share their valid pairs - score sums, valid counts, the
  images' own and chance scores, the pair margins and their moments - on stacked tensors;
  :func:`chunk_pairs` keeps what a chunk's ``partner`` tensor fixes (computed once for all its
  layers), and a metric merges a chunk's moments with one in-place add of
  :func:`moments_increment`.

Every update-side function works on the device with masks (``masked_fill``/``torch.where``),
without a host read, a compaction or a Python loop over samples. The compute side runs once per
measurement and reads the few numbers it needs on the host (:func:`host_array`, ``tolist()``:
no ATen call, so no kernel launch, per number), leaving on the device only the float reductions
whose bits the reported values depend on.
"""
from __future__ import annotations

import threading
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = [
    "per_image_scores",
    "image_moments",
    "moments_of",
    "combine_moments",
    "merge_moments",
    "stderr_from_moments",
    "host_array",
    "empty_moments",
    "kept_image_scores",
    "partner_pairs",
    "sample_keep",
    "chance_per_element",
    "chance_details",
    "pair_margins",
    "margin_details",
    "no_chance",
    "stacked_chunk_sums",
    "correlation_chunk_rows",
    "ChunkRows",
    "LayerRows",
    "layer_rows",
    "ImageMoments",
    "stacked_image_moments",
    "moments_increments",
    "chunk_pairs",
    "MIN_ROOM",
    "moments_from_shifted_sums",
]


def empty_moments(device=None) -> torch.Tensor:
    """The summary of no value: ``(n, mean, M2) = (0, 0, 0)``, float64."""
    return torch.zeros(3, dtype=torch.float64, device=device)


def per_image_scores(score: torch.Tensor, valid: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Each image's own score ``s_i`` and whether it counts.

    Args:
        score: ``m x b x C`` (or ``m x b``) per (element, image, channel) scores; entries where
            ``valid`` is False are ignored (they may hold anything, NaN included). Leading axes
            (``k x m x b x C``: several measures' scores stacked) give ``k x b`` scores.
        valid: booleans of the last three (two) axes of ``score``: the pairs that count (live
            channels of kept images).

    Returns:
        ``(s, counted)``: ``s`` (``[k x] b``), ``s_i = mean_g mean_{c live} score[g, i, c]`` over the
        elements ``g`` where image ``i`` has a live channel (float64, 0 where not counted), and
        ``counted`` (``b``): image ``i`` has a live pair for at least one element.
    """
    if valid.dim() == 2:
        score, valid = score.unsqueeze(-1), valid.unsqueeze(-1)
    zero = torch.zeros((), dtype=torch.float64, device=score.device)
    per_sum = torch.where(valid, score.to(torch.float64), zero).sum(-1)  # [k x] m x b
    per_n = valid.sum(-1)
    has = per_n > 0
    per_mean = per_sum / per_n.clamp_min(1)
    elements = has.sum(0)
    s = per_mean.sum(-2) / elements.clamp_min(1)
    return s, elements > 0


def image_moments(score: torch.Tensor, valid: torch.Tensor, sample_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mergeable ``(n, mean, M2)`` of the images' own scores ``s_i`` (:func:`per_image_scores`).

    ``score``: ``[k x] m x b [x C]``, ``valid``: ``m x b [x C]``; images with no valid pair, or
    with ``sample_mask`` False, are not counted. Returns ``[k x] 3``.
    """
    return moments_of(*kept_image_scores(score, valid, sample_mask))


def kept_image_scores(
    score: torch.Tensor, valid: torch.Tensor, sample_mask: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`per_image_scores` of the images with ``sample_mask`` True (the others are not counted)."""
    keep = sample_keep(sample_mask, valid)
    return per_image_scores(score, valid if keep is None else valid & keep)


def pair_margins(
    own: torch.Tensor,
    own_counted: torch.Tensor,
    chance: torch.Tensor,
    chance_counted: torch.Tensor,
    index: torch.Tensor,
    higher_is_better: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The pair margins ``D_k`` of a chunk and which of them count (docs/measures.md §7).

    Args:
        own: ``[k x] b`` images' own scores ``s_i`` (:func:`per_image_scores`).
        own_counted: ``b`` booleans: ``s_i`` exists.
        chance: ``[k x] b`` images' chance scores ``c_i``, pooled as ``s_i`` over the chance pairs.
        chance_counted: ``b`` booleans: ``c_i`` exists (the image, its partner and a chance pair count).
        index: ``b`` int64, each image's partner (the image itself where it has none), as
            :func:`partner_pairs` returns it.
        higher_is_better: ``d_i = s_i - c_i`` when True, ``c_i - s_i`` when False.

    Returns:
        ``(D, first)``: ``D`` (``[k x] b``) is ``(d_i + d_partner(i)) / 2`` for every image, and
        ``first`` (``b`` booleans) marks one image of each pair ``i < j`` of mutual partners that
        are both scored (``s`` and ``c`` exist for both), so that each pair counts once:
        ``moments_of(D, first)`` summarises the chunk's ``D_k``. No host read.
    """
    d = own - chance if higher_is_better else chance - own
    scored = own_counted & chance_counted
    here = torch.arange(scored.shape[-1], device=index.device)
    first = scored & scored.index_select(0, index) & (here < index) & (index.index_select(0, index) == here)
    return (d + d.index_select(-1, index)) * 0.5, first


def moments_of(values: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``(n, mean, M2)`` of the entries of ``values`` (``b``) where ``weight`` (``b`` booleans) is True.

    Two passes in float64 with the compensation term of the corrected two-pass algorithm
    (``M2 = sum d^2 - (sum d)^2 / n``, ``d = x - mean``): exact to round-off even when the
    values agree to many digits. No host read: an empty batch gives ``(0, 0, 0)``. Leading
    axes of ``values`` (``k x b``: several measures at once) give ``k x 3``; ``weight`` may
    have leading axes too (``j x b``: a weight per row, broadcasting against ``values``).
    """
    x = values.to(torch.float64)
    zero = torch.zeros((), dtype=torch.float64, device=x.device)
    if weight is None:
        n = torch.full(x.shape[:-1], float(x.shape[-1]), dtype=torch.float64, device=x.device)
    else:
        w = weight.to(device=x.device, dtype=torch.bool)
        if w.dim() == 0 or w.shape[-1] != x.shape[-1]:
            w = w.reshape(x.shape[-1])
        x = torch.where(w, x, zero)  # also drops NaN/Inf of left-out entries
        n = w.sum(-1, dtype=torch.float64).expand(x.shape[:-1])
    safe = n.clamp_min(1)
    mean = x.sum(-1) / safe
    d = x - mean.unsqueeze(-1)
    if weight is not None:
        d = torch.where(w, d, zero)
    sd = d.sum(-1)
    m2 = (d.square().sum(-1) - sd.square() / safe).clamp_min(0)
    return torch.stack([n, mean + sd / safe, m2], -1)


def combine_moments(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Chan et al.'s parallel update: the summary of the union of two ``(..., 3)`` summaries."""
    return a + moments_increment(a, b)


def moments_increment(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """What Chan et al.'s parallel update adds to the summary ``a`` to merge ``b`` into it (``(..., 3)``):
    ``(n_b, delta n_b / n, M2_b + delta^2 n_a n_b / n)``, ``delta = mean_b - mean_a``; a state
    merges a chunk with one in-place add."""
    na, ma, _ = a.unbind(-1)
    nb, mb, qb = b.unbind(-1)
    share = nb / (na + nb).clamp_min(1)
    delta = mb - ma
    step = delta * share
    return torch.stack([nb, step, torch.addcmul(qb, step, delta * na)], -1)


def merge_moments(stacked: torch.Tensor) -> torch.Tensor:
    """Merge ``k x ... x 3`` summaries along the first axis (a torchmetrics ``dist_reduce_fx``)."""
    if stacked.dim() < 2:
        return stacked
    out = stacked[0]
    for k in range(1, stacked.shape[0]):  # over processes / merged states, never over samples
        out = combine_moments(out, stacked[k])
    return out


def stderr_from_moments(moments) -> Optional[float]:
    """``std(s_i, ddof=1) / sqrt(n)`` from a ``(n, mean, M2)`` summary (a tensor, or the three numbers already
    on the host); ``None`` when ``n < 2``. Reads on the host with ``tolist()`` (no ATen call on the host)."""
    n, _, m2 = _host_moments(moments)
    if n < 2:
        return None
    return (max(m2, 0.0) / (n - 1) / n) ** 0.5


def _host_moments(moments) -> List[float]:
    """A ``(n, mean, M2)`` summary as three Python floats; a gathered, not yet reduced one (``k x 3``, which
    should not happen) is merged first."""
    if not isinstance(moments, torch.Tensor):
        moments = np.asarray(moments, dtype=np.float64)
        if moments.ndim == 1:
            return [float(v) for v in moments]
        moments = torch.from_numpy(moments)
    if moments.dim() > 1:
        moments = merge_moments(moments)
    return [float(v) for v in moments.tolist()]


def host_array(t: torch.Tensor) -> np.ndarray:
    """A small tensor's values on the host as a float64 NumPy array: one transfer from a device, and on the
    host no ATen call at all (``tolist()``; ``numpy()`` costs one, a kernel launch each on a device).
    For the compute side, which reads each metric's few stacked states once."""
    return np.array(t.tolist(), dtype=np.float64).reshape(tuple(t.shape))


def partner_pairs(
    partner: torch.Tensor, b: int, sample_mask: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """A gather index and the images that have a chance term.

    Args:
        partner: ``b`` integers, the local index of each image's partner in this chunk, or
            ``-1`` when it has none here (docs/measures.md §7).
        b: the chunk's number of images.
        sample_mask: ``b`` booleans, True for the images that count, or ``None`` (all).

    Returns:
        ``(index, paired)``: ``index`` (``b`` int64) is the partner where there is one and the
        image itself otherwise (safe to gather with); ``paired`` (``b`` bool) is True where the
        image counts, has a partner, and its partner counts.
    """
    if not isinstance(partner, torch.Tensor) or partner.dim() != 1 or partner.shape[0] != b:
        shape = tuple(partner.shape) if isinstance(partner, torch.Tensor) else type(partner).__name__
        raise ValueError(f"partner must hold one index per image ({b}), got {shape}")
    if partner.dtype.is_floating_point or partner.dtype == torch.bool:
        raise ValueError(f"partner must be an integer tensor, got {partner.dtype}")
    partner = partner.to(torch.long)
    has = partner >= 0
    index = torch.where(has, partner, torch.arange(b, device=partner.device))
    if sample_mask is None:
        return index, has
    keep = sample_mask.to(device=partner.device, dtype=torch.bool).reshape(b)
    return index, has & keep & keep.index_select(0, index)


#: ``above_chance`` is missing (the layer uninformative) when the room above chance is below this.
MIN_ROOM = 0.05


def chance_per_element(chance_sum: torch.Tensor, chance_count: torch.Tensor) -> Optional[torch.Tensor]:
    """Per-element chance level from ``m x ...`` sums of chance scores and of chance pairs.

    ``None`` (no chance level) when some element has no chance pair: no partner tensor was
    given, fewer than 2 probe images, or every partner's map dead (reads on the host).
    """
    m = chance_count.shape[0]
    total = chance_count.reshape(m, -1).sum(-1)
    if m == 0 or bool((total == 0).any()):
        return None
    return chance_sum.reshape(m, -1).sum(-1) / total


def chance_details(
    value: float,
    per_element: Optional[torch.Tensor],
    higher_is_better: bool,
    left_out: Union[torch.Tensor, float],
    pair_moments: Optional[torch.Tensor] = None,
) -> dict:
    """The ``compute_details()`` keys of the chance level (docs/measures.md §7).

    ``chance`` is the mean of ``per_element`` (the per-element chance levels, or ``None``);
    ``above_chance = (v - c) / (1 - c)`` when higher is better (values at most 1), else
    ``(c - v) / (1 + c)`` (values at least -1); when that room is below :data:`MIN_ROOM` the
    layer is uninformative: ``above_chance`` is ``None`` and ``informative`` False
    (``informative`` is ``None`` when there is no chance level). ``chance_left_out``: the images
    without a chance term (no partner, or a partner left out). ``pair_moments``: the merged
    ``(n, mean, M2)`` of the pair margins (``moments_of`` of :func:`pair_margins`), for the keys of
    :func:`margin_details`.
    """
    out = {"chance": None, "chance_per_element": None, "above_chance": None, "informative": None}
    out["chance_left_out"] = int(round(float(left_out)))
    if per_element is None:
        out.update(margin_details(None, None))
        return out
    c = _host_float(per_element.mean())
    room = 1.0 - c if higher_is_better else 1.0 + c
    out.update(chance=c, chance_per_element=per_element, informative=bool(room >= MIN_ROOM))
    margin = (value - c) if higher_is_better else (c - value)
    if out["informative"]:
        out["above_chance"] = margin / room
    out.update(margin_details(margin, pair_moments))
    return out


def _host_float(x) -> float:
    """A 0-d tensor's (or a host number's) value: ``tolist()`` issues no ATen call on the host, ``float()`` one."""
    return float(x.tolist() if isinstance(x, torch.Tensor) else x)


#: One-sided confidence level of ``margin_low`` (docs/measures.md §7).
MARGIN_CONFIDENCE = 0.95


def margin_details(margin: Optional[float], pair_moments: Optional[torch.Tensor]) -> dict:
    """``margin``, ``margin_stderr``, ``margin_low``, ``significant``, ``margin_pairs`` and
    ``significance_reason`` (docs/measures.md §7); reads on the host.

    ``margin`` is how far the value is from its chance level in the better direction (``None``:
    no chance level, then every key is missing). ``margin_stderr = std(D_k, ddof=1) / sqrt(K)``
    over the ``K`` scored pairs summarised in ``pair_moments``; ``margin_low = margin -
    t(0.95, K - 1) * margin_stderr`` (Student's t, one-sided) and ``significant = margin_low > 0``.
    Below 2 pairs there is no interval and ``significant`` is False; ``significance_reason``
    says why a layer is not significant (``None`` when it is).
    """
    out = {"margin": None, "margin_stderr": None, "margin_low": None, "significant": None,
           "margin_pairs": 0, "significance_reason": None}
    if margin is None:
        return out
    pair_moments = None if pair_moments is None else _host_moments(pair_moments)  # read on the host once
    pairs = 0 if pair_moments is None else int(round(pair_moments[0]))
    out.update(margin=float(margin), margin_pairs=pairs, significant=False)
    se = None if pair_moments is None else stderr_from_moments(pair_moments)
    if se is None:
        out["significance_reason"] = (
            f"no interval: {pairs} probe pair{'' if pairs == 1 else 's'} with both images scored (at least 2 needed)"
        )
        return out
    from scipy.stats import t as student_t

    low = float(margin) - float(student_t.ppf(MARGIN_CONFIDENCE, pairs - 1)) * se
    out.update(margin_stderr=se, margin_low=low, significant=bool(low > 0))
    if not out["significant"]:
        out["significance_reason"] = (
            f"not significantly above chance: margin {margin:.3g}, one-sided 95% lower bound {low:.3g} <= 0 "
            f"({pairs} probe pairs)"
        )
    return out


def no_chance(left_out: int = 0) -> dict:
    """The chance keys of a measure without a chance level (every one missing)."""
    return {"chance": None, "chance_per_element": None, "above_chance": None, "informative": None,
            "chance_left_out": int(left_out), **margin_details(None, None)}


def sample_keep(sample_mask: Optional[torch.Tensor], like: torch.Tensor) -> Optional[torch.Tensor]:
    """``sample_mask`` (``b`` booleans, True = the image counts) broadcasting over ``like``
    (``m x b x ...``), or ``None``; a mask of another length is an error naming both."""
    if sample_mask is None:
        return None
    if sample_mask.dim() != 1 or sample_mask.shape[0] != like.shape[1]:
        raise ValueError(
            f"sample_mask must hold one boolean per image ({like.shape[1]}), got shape {tuple(sample_mask.shape)}"
        )
    return sample_mask.to(device=like.device, dtype=torch.bool).reshape(1, -1, *([1] * (like.dim() - 2)))


class _Pairs:
    """What a chunk's ``partner`` tensor fixes for every layer: the gather index, who has a partner,
    one image of each mutual pair, and the number of images with a partner (float64)."""

    def __init__(self, partner: torch.Tensor, b: int):
        self.partner, self.version = partner, _version(partner)
        self.index, self.has = partner_pairs(partner, b)
        here = torch.arange(b, device=self.index.device)
        self.first = (here < self.index) & (self.index.index_select(0, self.index) == here)
        self.images = torch.stack([torch.full((), float(b), dtype=torch.float64, device=self.has.device),
                                   self.has.sum(dtype=torch.float64)])
        self._rows = {}
        # "has a term" for the own column (always) and the chance column, m x 2 x b x C-broadcastable
        self.has_both = torch.cat([torch.ones_like(self.has), self.has]).view(1, 2, b, 1)
        self._chunk_constants = None
        self._own_and_partner = None

    def own_and_partner(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(pick, has_cols)``: ``[i, partner(i)]`` of every image (``2b`` int64), to gather each image's
        own and partner rows at once, and ``1 x b x 2 x 1`` booleans ``[True, has a partner]``."""
        if self._own_and_partner is None:
            here = torch.arange(self.index.shape[0], device=self.index.device)
            self._own_and_partner = (torch.stack([here, self.index], 1).reshape(-1),
                                     torch.stack([torch.ones_like(self.has), self.has], 1).view(1, -1, 2, 1))
        return self._own_and_partner

    def chunk_constants(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What :func:`correlation_chunk_rows` needs of the pairs, computed once per chunk:

        * ``pick``: ``b x 2 x 2`` indices ``[[i, i], [i, partner(i)]]`` (flattened): gathering the sample
          mask with it and taking ``all(-1)`` gives each image's own column (it counts) and chance column
          (it and its partner count);
        * ``has_cols``: ``b x 2`` booleans ``[True, has a partner]``;
        * ``pair_matrices``: ``3 x 2b x 2b`` float64 that map an image-score row ``(s_i, c_i)_i`` (flattened
          ``b x 2``) to ``[s_i]_i`` and the pair margins ``[(s_i - c_i + s_p - c_p) / 2]_i``
          (:func:`pair_margins`) - twice, for two measures - and the counted row ``(own counted, chance
          counted)_i`` to the weights ``[own counted]_i``, ``[first of a pair with all four counted]_i``
          (a quarter per factor, so ``floor`` is the logical and). Every coefficient is exact in binary.
        """
        if self._chunk_constants is None:
            index, b = self.index, self.index.shape[0]
            here = torch.arange(b, device=index.device)
            pick = torch.stack([here, here, here, index], 1).reshape(-1)
            has_cols = torch.stack([torch.ones_like(self.has), self.has], 1)
            f64 = torch.float64
            scores = torch.zeros(2 * b, 2 * b, dtype=f64, device=index.device)
            weights = torch.zeros(2 * b, 2 * b, dtype=f64, device=index.device)
            own, chance = 2 * here, 2 * here + 1  # rows of (s_i, c_i) in the flattened b x 2 input
            scores[own, here] = 1.0
            weights[own, here] = 1.0
            margin = b + here  # output columns of the margins / their weights
            for rows, sign in ((own, 0.5), (chance, -0.5), (2 * index, 0.5), (2 * index + 1, -0.5)):
                scores.index_put_((rows, margin), torch.full((b,), sign, dtype=f64, device=index.device),
                                  accumulate=True)
                weights.index_put_((rows, margin), self.first.to(f64) * 0.25, accumulate=True)
            self._chunk_constants = (pick, has_cols, torch.stack([scores, scores, weights]))
        return self._chunk_constants

    def element_rows(self, m: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """For ``m x b`` rows (element-major): each row's partner row ``g * b + partner(i)``, and
        ``(r, partner row of r)`` interleaved (flattened), computed once per chunk and ``m``."""
        if m not in self._rows:
            b = self.index.shape[0]
            rows = (torch.arange(m, device=self.index.device).unsqueeze(1) * b + self.index).reshape(-1)
            both = torch.stack([torch.arange(m * b, device=rows.device), rows], 1).reshape(-1)
            self._rows[m] = (rows, both)
        return self._rows[m]


_PAIRS = threading.local()


def _version(t: torch.Tensor) -> Optional[int]:
    """The in-place version counter; ``None`` for inference tensors (``torch.inference_mode``, as under
    Lightning's ``validate``), which have none: there the identity of the tensor alone decides."""
    try:
        return t._version
    except RuntimeError:
        return None


def chunk_pairs(partner: torch.Tensor, b: int) -> _Pairs:
    """:class:`_Pairs` of ``partner``, computed once per chunk: every layer of a chunk gets the same
    ``partner`` tensor, so the last one is kept (per thread) and reused while unchanged."""
    last = getattr(_PAIRS, "last", None)
    if last is None or last.partner is not partner or last.version != _version(partner) or last.index.shape[0] != b:
        last = _PAIRS.last = _Pairs(partner, b)
    return last


def stacked_chunk_sums(
    values: torch.Tensor,
    valid: torch.Tensor,
    sample_mask: Optional[torch.Tensor] = None,
    pairs: Optional[_Pairs] = None,
    negate_image_scores: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Everything a chunk adds to the states of ``k`` measures that share their valid pairs, in a few
    whole-tensor operations (no loop over measures, elements or statistics).

    Args:
        values: ``k x m x b x H x C`` per (measure, element, image, own/chance, channel) scores;
            entries where ``valid`` is False may hold anything (NaN included). ``H = 1``: the
            images' own scores only; ``H = 2``: also the scores against the partner's map.
        valid: ``m x b x H x C`` booleans: the live pairs; in the chance column also "the image
            has a partner in the chunk".
        sample_mask: ``b`` booleans, True for the images that count (``None``: all); a chance
            term also needs the partner to count.
        pairs: the chunk's partners (:func:`chunk_pairs`); needed when ``H = 2``.
        negate_image_scores: the measure's per-image score is the negated mean (G-EED: ``-cos``);
            the margins ``D_k`` come out right for "lower is better" with the same formula.

    Returns:
        ``(sums, images, moments)``: ``sums`` ``(k + 1) x m x H x C`` float64 - the ``k`` score sums
        over the counted pairs, then the number of counted pairs; ``images`` ``2`` float64 - the
        counted images and the images with a chance term; ``moments`` ``k x 2 x 3``: the
        ``(n, mean, M2)`` of the images' own scores ``s_i`` and of the pair margins ``D_k``
        (:func:`pair_margins`; ``(0, 0, 0)`` without a chance column).
    """
    b, h = valid.shape[1], valid.shape[2]
    f64 = torch.float64
    keep = None if sample_mask is None else sample_keep(sample_mask, valid).reshape(b)
    if keep is not None:
        # own terms need the image, chance terms the image and its partner
        partner_kept = None if h == 1 else keep & keep.index_select(0, pairs.index)
        columns = keep.unsqueeze(-1) if h == 1 else torch.stack([keep, partner_kept], -1)
        valid = valid & columns.view(1, b, h, 1)
    scores = values.masked_fill(~valid, 0)  # zero first: NaN * 0 would stay NaN
    sums = torch.cat([scores.sum(2, dtype=f64), valid.sum(1, dtype=f64).unsqueeze(0)])
    # each image's s_i: mean over elements (where it has a live pair) of its mean over live channels
    per_n = valid.sum(-1)  # m x b x H
    per_mean = scores.sum(-1, dtype=f64) / per_n.clamp_min(1)
    elements = torch.count_nonzero(per_n, 0)  # b x H
    image = per_mean.sum(1) / elements.clamp_min(1)  # k x b x H; exactly 0 where not counted
    counted = elements > 0
    if h == 1:
        kept = torch.full((), float(b), dtype=f64, device=valid.device) if keep is None else keep.sum(dtype=f64)
        images = torch.stack([kept, torch.zeros_like(kept)])
        own = image.squeeze(-1)
        moments = _chunk_moments(own.unsqueeze(-2), counted.view(1, b), negate_image_scores)
        return sums, images, torch.cat([moments, torch.zeros_like(moments)], -2)
    if keep is None:
        images = pairs.images
    else:
        images = torch.stack([keep, pairs.has & partner_kept]).sum(-1, dtype=f64)
    own, chance = image.unbind(-1)
    d = own - chance  # s_i - c_i; for negated scores (-c_i) - (-s_i), the same number
    own_counted, scored = counted[:, 0], counted.all(-1)
    first = scored & scored.index_select(0, pairs.index) & pairs.first
    margins = (d + d.index_select(-1, pairs.index)) * 0.5
    both = torch.stack([-own if negate_image_scores else own, margins], -2)
    return sums, images, _chunk_moments(both, torch.stack([own_counted, first]))


def _chunk_moments(values: torch.Tensor, weight: torch.Tensor, negate: bool = False) -> torch.Tensor:
    """``(n, mean, M2)`` (``... x 3``) of the entries of ``values`` (``... x b``, finite) where ``weight``
    (booleans broadcasting against ``values``) is True: a plain two-pass over one chunk's few images,
    float64; ``negate``: of ``-values``."""
    w = weight.to(torch.float64)
    n = w.sum(-1)
    safe = n.clamp_min(1)
    mean = (values * w).sum(-1) / safe
    if negate:
        mean = -mean
        d = (values + mean.unsqueeze(-1)) * w
    else:
        d = (values - mean.unsqueeze(-1)) * w
    return torch.stack([n.expand_as(mean), mean, (d * d).sum(-1)], -1)


def moments_from_shifted_sums(
    n: torch.Tensor, shifted_sum: torch.Tensor, shifted_square_sum: torch.Tensor, reference: torch.Tensor
) -> torch.Tensor:
    """``(n, mean, M2)`` (``... x 3``) from sums taken about a reference ``r``: ``n``, ``sum (x - r)`` and
    ``sum (x - r)**2``. With ``r`` near the mean (a first chunk's mean) nothing large cancels:
    ``mean = r + S1 / n``, ``M2 = S2 - S1**2 / n``. Such sums merge over chunks by plain addition."""
    safe = n.clamp_min(1)
    step = shifted_sum / safe
    return torch.stack([n, reference + step, (shifted_square_sum - shifted_sum * step).clamp_min(0)], -1)


class ChunkRows(NamedTuple):
    """What one chunk adds to each of ``k`` correlation-like measures of a layer (:func:`correlation_chunk_rows`),
    ready for in-place adds: ``H = 2`` with a chance column, ``H = 1`` without.

    Attributes:
        sums: ``k + 1`` tensors ``m x H x C`` float64: each measure's score sums over the counted pairs, then
            the number of counted pairs (the same for every measure).
        images: ``H`` float64: the counted images (and those with a chance term).
        n: ``H`` float64: how many images' own scores ``s_i`` (and pair margins ``D_k``) the chunk's moments hold.
        safe: ``n`` clamped to at least 1 (a divisor).
        mean: per measure, ``H``: their means.
        m2: per measure, ``H``: their sums of squared deviations from the mean.
    """

    sums: Tuple[torch.Tensor, ...]
    images: torch.Tensor
    n: torch.Tensor
    safe: torch.Tensor
    mean: Tuple[torch.Tensor, ...]
    m2: Tuple[torch.Tensor, ...]


_ZEROS: Dict[Tuple[torch.dtype, torch.device], torch.Tensor] = {}


def _zero(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A 0-d zero of ``dtype`` on ``device``, made once (``torch.where``'s fill without a new tensor per call)."""
    key = (dtype, device)
    if key not in _ZEROS:
        with torch.inference_mode(False):  # a normal tensor, usable inside and outside inference mode
            _ZEROS[key] = torch.zeros((), dtype=dtype, device=device)
    return _ZEROS[key]


class LayerRows(NamedTuple):
    """One layer's share of a chunk for ``k`` correlation-like measures (:func:`layer_rows`): what needs the
    layer's channels, reduced over them. The images' moments, which need only ``per_element``, are computed
    for many layers at once by :func:`stacked_image_moments`.

    Attributes:
        sums: ``k + 1`` tensors ``m x H x C`` float64: each measure's score sums over the counted pairs, then
            the number of counted pairs (the same for every measure).
        per_element: ``(k + 1) x m x b x H`` float64: per image and element, the sums over channels of the
            same (the last row: its live pairs).
        cols: ``b x H`` booleans, the images counted in each column (own; chance: the image and its
            partner), or ``None`` when no sample mask was given.
        pairs: the chunk's partners (:func:`chunk_pairs`) when ``H = 2``.
    """

    sums: Tuple[torch.Tensor, ...]
    per_element: torch.Tensor
    cols: Optional[torch.Tensor]
    pairs: Optional[_Pairs]


def layer_rows(
    values: torch.Tensor,
    valid: torch.Tensor,
    sample_mask: Optional[torch.Tensor] = None,
    pairs: Optional[_Pairs] = None,
) -> LayerRows:
    """The per-layer half of :func:`correlation_chunk_rows` (same arguments): the masked scores summed over
    images (the states' sums) and over channels (what the images' scores are pooled from), in one ``where``,
    one ``cat`` and two sums."""
    k, m, b, h, c = values.shape
    f64 = torch.float64
    cols = None
    if sample_mask is not None:
        if sample_mask.dim() != 1 or sample_mask.shape[0] != b:
            sample_keep(sample_mask, valid)  # raises, naming both lengths
        keep = sample_mask.to(device=valid.device, dtype=torch.bool)
        if h == 2:
            # own column: the image counts; chance column: it, its partner (and a partner at all)
            pick, has_cols, _ = pairs.chunk_constants()
            cols = keep.index_select(0, pick).view(b, 2, 2).all(-1) & has_cols
        else:
            cols = keep.view(b, 1)
        valid = valid & cols.view(1, b, h, 1)
    # scores of the counted pairs (where: NaN * 0 would stay NaN), then the pairs themselves as one more row
    stacked = torch.cat([torch.where(valid, values, _zero(values.dtype, values.device)), valid.unsqueeze(0)])
    return LayerRows(stacked.sum(2, dtype=f64).unbind(0), stacked.sum(-1, dtype=f64), cols, pairs)


class ImageMoments(NamedTuple):
    """The images' moments of ``L`` layers' chunks (:func:`stacked_image_moments`), float64.

    Attributes:
        images: ``L x H``: the counted images (and those with a chance term).
        n: ``L x H``: how many images' own scores ``s_i`` (and pair margins ``D_k``) the moments hold.
        safe: ``n`` clamped to at least 1 (a divisor).
        mean: ``L x (k + 1) x H``: per measure their means (the last row is not a measure's).
        m2: ``L x (k + 1) x H``: per measure their sums of squared deviations from the mean.
    """

    images: torch.Tensor
    n: torch.Tensor
    safe: torch.Tensor
    mean: torch.Tensor
    m2: torch.Tensor


def stacked_image_moments(layers: Sequence[LayerRows]) -> ImageMoments:
    """The images' own scores, pair margins and their moments for several layers' :class:`LayerRows` of one
    chunk at once (the same ``k``, ``m``, ``b``, ``H``, device and pairs): the ops of one layer, on the
    layers stacked. Each image's ``s_i`` is the mean over elements (with a live pair) of its mean over live
    channels; ``[s_i; D_i]`` per measure and the weights ``[own counted; first of a fully scored pair]``
    come from one product with the chunk's constant pair matrices (:meth:`_Pairs.chunk_constants`)."""
    first = layers[0]
    k1, m, b, h = first.per_element.shape
    k, n_layers = k1 - 1, len(layers)
    f64 = torch.float64
    stacked = first.per_element.unsqueeze(0) if n_layers == 1 else torch.stack([r.per_element for r in layers])
    # an element without a live pair gives 0 / 0 here (NaN in every row): nansum leaves it out; the last row
    # (pairs / pairs) becomes "has a live pair", then "counted" (1.0 or 0.0)
    pooled = (stacked / stacked.narrow(1, k, 1)).nansum(2)  # L x (k + 1) x b x H
    image = pooled / pooled.narrow(1, k, 1).clamp_min(1)
    if h == 2:
        pair_matrices = first.pairs.chunk_constants()[2]
        if k + 1 != pair_matrices.shape[0]:
            pair_matrices = torch.cat([pair_matrices.narrow(0, 0, 1).expand(k, -1, -1), pair_matrices.narrow(0, 2, 1)])
        both = torch.matmul(image.view(n_layers, k + 1, 1, 2 * b), pair_matrices).view(n_layers, k + 1, 2, b)
        weight = both.select(1, k).floor()  # L x H x b: 1.0 or 0.0 (the pair weights' quarters floored)
    else:
        both = image.view(n_layers, k + 1, 1, b)
        weight = both.select(1, k)
    # a plain two-pass over the chunk's few images (the merge into a state is Chan's update)
    n = weight.sum(-1)
    safe = n.clamp_min(1)
    weight = weight.unsqueeze(1)
    mean = (both * weight).sum(-1) / safe.unsqueeze(1)  # L x (k + 1) x H, the last row unused
    dev = (both - mean.unsqueeze(-1)) * weight
    m2 = (dev * dev).sum(-1)
    if all(r.cols is None for r in layers):
        images = _all_images(first.pairs, b, h, first.per_element.device).expand(n_layers, h)
    else:
        cols = [_all_cols(r.pairs, b, h, r.per_element.device) if r.cols is None else r.cols for r in layers]
        images = torch.stack(cols).sum(1, dtype=f64)
    return ImageMoments(images, n, safe, mean, m2)


def _all_cols(pairs: Optional[_Pairs], b: int, h: int, device) -> torch.Tensor:
    """The ``cols`` of :class:`LayerRows` when every image counts: ``[True, has a partner]`` per image."""
    return pairs.chunk_constants()[1] if h == 2 else torch.ones(b, 1, dtype=torch.bool, device=device)


def _all_images(pairs: Optional[_Pairs], b: int, h: int, device) -> torch.Tensor:
    """The counted images when every image counts (``H`` float64)."""
    return pairs.images if h == 2 else torch.full((1,), float(b), dtype=torch.float64, device=device)


def moments_increments(state: torch.Tensor, moments: ImageMoments, k: int) -> torch.Tensor:
    """What merging each layer's chunk moments (:func:`stacked_image_moments`, its first ``k`` measures) adds
    to the states ``state`` (``L x k x H x 3``: ``(n, mean, M2)``): Chan et al.'s parallel update for all at
    once, as :func:`moments_increment` (``safe`` is ``n_b`` wherever ``n_b > 0``; where ``n_b = 0`` the
    share is 0 either way). Returns ``L x k x H x 3``."""
    count, mean = state.select(-1, 0), state.select(-1, 1)
    n = moments.n.unsqueeze(1)
    delta = moments.mean.narrow(1, 0, k) - mean
    step = delta * (n / (count + moments.safe.unsqueeze(1)))
    m2 = torch.addcmul(moments.m2.narrow(1, 0, k), step, delta * count)
    return torch.stack([n.expand_as(step), step, m2], -1)


def correlation_chunk_rows(
    values: torch.Tensor,
    valid: torch.Tensor,
    sample_mask: Optional[torch.Tensor] = None,
    pairs: Optional[_Pairs] = None,
) -> ChunkRows:
    """:func:`stacked_chunk_sums` (same arguments, no negation) as per-measure rows ready to be added
    (:class:`ChunkRows`): :func:`layer_rows` and :func:`stacked_image_moments` of one layer."""
    rows = layer_rows(values, valid, sample_mask, pairs)
    moments = stacked_image_moments([rows])
    return ChunkRows(rows.sums, moments.images[0], moments.n[0], moments.safe[0], moments.mean[0].unbind(0),
                     moments.m2[0].unbind(0))

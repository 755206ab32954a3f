"""G-EED metrics (Kvinge et al. 2022, §3.1): ``geed_channel``, ``geed_latent_l2``, ``geed_latent_cosine``, ``geed_softmax``.

Thin ``torchmetrics.Metric`` classes over :mod:`lightning_equivariance.functional.geed`.
:class:`GEEDChannel` keeps the stacked states of the correlation measures (``sums``,
``images``, ``moments``; see :mod:`~lightning_equivariance.metrics.correlation`).
Every state is a float64 sum with ``dist_reduce_fx="sum"`` except the bounded point buffer
of :class:`GEEDLatentL2` (see there) and ``image_moments``. Larger values mean *less*
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

from typing import Any, Dict, Optional

import torch

from ..functional.geed import (
    _check_normaliser,
    _geed_arrays,
    _cosine_normaliser_compute,
    _cosine_normaliser_update,
    _per_element,
    _scores_update,
    _SOFTMAX_INPUTS,
    geed_latent_scores,
    geed_softmax_scores,
    looks_like_probabilities,
    mean_pairwise_distance,
)
from ..functional.moments import (
    image_moments,
    chance_details,
    chance_per_element,
    combine_moments,
    host_array,
    merge_moments,
    no_chance,
    stacked_chunk_sums,
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


class GEEDChannel(_GEED):
    """Channelwise G-EED, Kvinge et al. 2022 Eq. 5: ``-(1/C) sum_c cos(a(gx)_c, g a_hat(x)_c)``, in ``[-1, 1]``.

    ``g a_hat(x) = T'_g a(x)`` on feature maps (``f_hat = f`` for the faithful spatial action,
    Eq. 2; the architecture's channel action included), compared over the valid positions;
    on vector layers the whole vector is one channel and ``g a_hat(x)`` is the orbit average
    (``G`` acts trivially on vectors). A channel whose map is zero in either argument is left
    out of the mean and counted in ``left_out``. ``per_channel``: ``-mean cos`` per channel.

    Args:
        num_elements: ``m``, the group's non-identity elements.
        num_channels: ``C`` (1 for vector layers).
    """

    measure_name = "geed_channel"
    plot_lower_bound = -1.0
    plot_upper_bound = 1.0
    best_value = -1.0

    sums: torch.Tensor
    images: torch.Tensor
    moments: torch.Tensor

    def __init__(self, num_elements: int, num_channels: int, **kwargs: Any):
        super().__init__(**kwargs)
        _check_positive(type(self).__name__, num_elements=num_elements, num_channels=num_channels)
        m, c = int(num_elements), int(num_channels)
        # One stacked state, one add per chunk: [cosine sums, valid pairs] x element x [own, chance
        # (against the partner's map, docs/measures.md §7)] x channel.
        self.add_filled_state("sums", (2, m, 2, c), 0.0)
        # [counted images, images with a chance term]: left_out and chance_left_out follow
        self.add_filled_state("images", (2,), 0.0)
        # (n, mean, M2) of the images' own scores (row 0, the stderr) and of the pair margins D_k
        # (row 1, the margin's interval), merged with Chan's update (also across processes)
        self.add_filled_state("moments", (2, 3), 0.0, dist_reduce_fx=merge_moments)
        self._rows: Dict[Any, torch.Tensor] = {}

    score_sum = CorrelationInvariance.score_sum
    count = CorrelationInvariance.count
    chance_sum = CorrelationInvariance.chance_sum
    chance_count = CorrelationInvariance.chance_count
    left_out = CorrelationInvariance.left_out
    chance_left_out = CorrelationInvariance.chance_left_out
    _add = CorrelationInvariance._add

    @classmethod
    def for_layer(cls, ctx: LayerContext, **_: Any) -> "GEEDChannel":
        return cls.create_on(ctx.a_x.device, len(ctx.elements), 1 if ctx.kind == "vector" else ctx.num_channels)

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
        values, valid, pairs = _geed_arrays(
            a_gx, ta_x, mask=mask, vector=vector, partner=partner, mixed_channels=mixed_channels)
        # G-EED per image is -cos: the moments of the negated image scores; the margins D_k
        # (lower is better: d_i = c_i - s_i of the negated scores) are the same numbers
        self._add(stacked_chunk_sums(values, valid, sample_mask, pairs, negate_image_scores=True), 0)

    def _update_context(self, ctx: LayerContext) -> None:
        partner = ctx.partner
        if ctx.kind == "vector":
            # per image: a left-out image's orbit average reaches only its own (masked) terms
            f_hat = _orbit_average(ctx)
            self._update_tensors(
                ctx.a_gx, f_hat.expand(len(ctx.elements), *f_hat.shape), vector=True, sample_mask=ctx.sample_mask, partner=partner
            )
        else:
            # a channel action that is not a permutation mixes channels with a float matrix (its round-off must
            # not make a zero channel count)
            self._update_tensors(
                ctx.a_gx, ctx.transformed_x(), mask=ctx.mask(), vector=False, sample_mask=ctx.sample_mask,
                partner=partner, mixed_channels=ctx.mixes_channels(),
            )

    def compute(self) -> torch.Tensor:
        return -_per_element(self.score_sum, self.count, "channelwise G-EED").mean()

    def _compute_details(self) -> Dict[str, Any]:
        # As CorrelationInvariance's: the sums over channels on the device, the few numbers on the host.
        totals = host_array(self.sums.sum(-1))  # [cosines, pairs] x element x [own, chance]
        images, moments = host_array(self.images), host_array(self.moments)
        channels = self.sums.shape[-1]
        per_element = torch.from_numpy(-_per_element(totals[0, :, :1], totals[1, :, :1], "channelwise G-EED"))
        per_channel = None
        if channels > 1:
            score_sum, count = self.sums.select(2, 0).unbind(0)
            per_channel = -(score_sum.sum(0) / count.sum(0).clamp_min(1))
        out = {
            "value": per_element.mean().tolist(),
            "per_element": per_element,
            "per_channel": per_channel,
            "left_out": int((images[0] * channels - totals[1, :, 0]).sum()),
            "stderr": stderr_from_moments(moments[0]),
        }
        chance = chance_per_element(totals[0, :, 1:], totals[1, :, 1:])
        chance = None if chance is None else torch.from_numpy(-chance)
        out.update(chance_details(out["value"], chance, False, images[0] - images[1], moments[1]))
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

    def _update_tensors(self, a_x: torch.Tensor, a_gx: torch.Tensor, sample_mask: Optional[torch.Tensor] = None) -> None:
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

    def _update_tensors(self, a_x: torch.Tensor, a_gx: torch.Tensor, sample_mask: Optional[torch.Tensor] = None) -> None:
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
    """Softmax G-EED, Kvinge et al. 2022 §3.1: ``mean_{x, g} KL(softmax(f(gx)) || softmax_hat(x))`` (vector layers only).

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

    def _update_tensors(self, a_x: torch.Tensor, a_gx: torch.Tensor, sample_mask: Optional[torch.Tensor] = None) -> None:
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

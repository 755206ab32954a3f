"""``CorrelationInvariance`` and ``CorrelationEquivariance`` (Bruintjes et al. 2023, Eq. 4 and Eq. 7).

Thin ``torchmetrics.Metric`` classes over :mod:`lightning_equivariance.functional.correlation`.
States (one stacked tensor each, so a chunk is a few in-place adds): ``sums``, the
per-(element, channel) sums of scores and of valid pairs, own and against the partner
(``2 x m x 2 x C``), and ``images``, the counted images and those with a chance term, both with
``dist_reduce_fx="sum"``; ``score_sum``, ``count``, ``chance_sum``, ``chance_count``,
``left_out`` (dead pairs per element: the counted images' pairs that were not valid) and
``chance_left_out`` are read from them. Under the engine, a layer computes only its sums
(:func:`~lightning_equivariance.functional.moments.layer_rows`) and defers the rest to the end of
the chunk (``LayerContext.deferred``), where :func:`add_layer_rows` merges the images' moments and
adds the states of every layer at once.

Honest numbers (docs/measures.md §7):

* chance level: the same per-(element, channel) sums with the second argument taken from
  the image's partner (``LayerContext.partner``, or ``update(..., partner=)``):
  ``T'_g a(x_partner(i))`` instead of ``T'_g a(x_i)``, from the already standardised maps (one
  more ``C x C`` product per image and element). A pair counts where both maps are live and
  the image, its partner and the partner's image all count; the images without a chance
  term are counted in ``chance_left_out``. ``compute_details()`` adds ``chance``,
  ``chance_per_element``, ``above_chance = (v - c) / (1 - c)`` (``None`` and ``informative``
  False when ``c > 0.95``; ``informative`` ``None`` without a chance level) and ``chance_left_out``.
* ``stderr``: ``moments[0]`` holds ``(n, mean, M2)`` of each image's own score (the mean
  over elements of its mean over live channels), merged with Chan's parallel update over
  chunks and, through a callable ``dist_reduce_fx``, over processes; ``std(s_i, ddof=1) /
  sqrt(n)``, ``None`` below 2 images. When live-channel counts differ between images the
  value (pooled over valid pairs) is not exactly the mean of the ``s_i``.
* ``margin`` (``value - chance``) and its one-sided 95% interval: ``moments[1]`` holds
  ``(n, mean, M2)`` of the pair margins ``D_k = (d_2k + d_2k+1) / 2``, ``d_i = s_i - c_i`` (``c_i``
  the image's chance score, pooled as ``s_i``), over the pairs with both images scored, merged
  the same way (one state, one merge per chunk for both); ``compute_details()`` adds ``margin``,
  ``margin_stderr``, ``margin_low``, ``significant``, ``margin_pairs`` and ``significance_reason``.

Left-out images (docs/measures.md §1.7): ``update(..., sample_mask=...)`` and
``LayerContext.sample_mask`` leave images out of every sum and count. The mask is applied
where the per-sample scores are summed, so scores shared through ``ctx.work`` or reused
from the previous layer (``ctx.previous``, computed under another layer's mask) are masked by
the layer that adds them.

Example::

    >>> import torch
    >>> from lightning_equivariance.metrics import CorrelationEquivariance
    >>> metric = CorrelationEquivariance(num_elements=1, num_channels=3)
    >>> a = torch.randn(1, 4, 3, 8, 8)        # m x b x C x h x w
    >>> metric.update(a.flip(2), a)           # a(T_g x), T'_g a(x): channels permuted
    >>> round(float(metric.compute()), 6)
    1.0
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..functional.correlation import (
    _check_similarity,
    _correlation_arrays,
    _correlation_compute,
    check_position_mask,
)
from ..functional.moments import (
    LayerRows,
    chance_details,
    chance_per_element,
    host_array,
    layer_rows,
    merge_moments,
    moments_increments,
    stacked_image_moments,
    stderr_from_moments,
)
from .base import LayerContext, LayerMetric

__all__ = ["CorrelationInvariance", "CorrelationEquivariance"]


class _CorrelationMeasure(LayerMetric):
    higher_is_better = True
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0
    best_value = 1.0

    sums: torch.Tensor
    images: torch.Tensor
    moments: torch.Tensor

    def __init__(self, num_elements: int, num_channels: int, similarity: str = "pearson", **kwargs: Any):
        super().__init__(**kwargs)
        _check_similarity(similarity)
        if int(num_elements) < 1 or int(num_channels) < 1:
            raise ValueError(f"num_elements and num_channels must be >= 1, got {num_elements}, {num_channels}")
        self.similarity = similarity
        m, c = int(num_elements), int(num_channels)
        # One stacked state, one add per chunk: [score sums, valid pairs] x element x [own, chance
        # (against the partner's map, docs/measures.md §7)] x channel.
        self.add_filled_state("sums", (2, m, 2, c), 0.0)
        # [counted images, images with a chance term]: the dead pairs (left_out) are the counted
        # images' pairs that are not valid, the images without a chance term the difference
        self.add_filled_state("images", (2,), 0.0)
        # (n, mean, M2) of the images' own scores (row 0, the stderr) and of the pair margins D_k
        # (row 1, the margin's interval), merged with Chan's update (also across processes)
        self.add_filled_state("moments", (2, 3), 0.0, dist_reduce_fx=merge_moments)
        # The validity mask of a layer is fixed by the group and the layer's shape: in
        # update(ctx) its "at least 2 positions" check (a host read) runs on the first chunk only.
        self._position_mask_checked = False
        self._state_views = None
        # what depends only on the layer's shape and the group's action, kept from chunk to chunk
        self._layer_constants: Dict[Any, Any] = {}

    # the sums by name (views of the stacked state)
    @property
    def score_sum(self) -> torch.Tensor:
        return self.sums[0, :, 0]

    @property
    def count(self) -> torch.Tensor:
        return self.sums[1, :, 0]

    @property
    def chance_sum(self) -> torch.Tensor:
        return self.sums[0, :, 1]

    @property
    def chance_count(self) -> torch.Tensor:
        return self.sums[1, :, 1]

    @property
    def left_out(self) -> torch.Tensor:
        """Dead (left-out) pairs per element: the counted images' pairs that were not valid."""
        return self.images[0] * self.sums.shape[-1] - self.count.sum(-1)

    @property
    def chance_left_out(self) -> torch.Tensor:
        return self.images[0] - self.images[1]

    @classmethod
    def for_layer(cls, ctx: LayerContext, similarity: str = "pearson", **_: Any) -> "_CorrelationMeasure":
        channels = 1 if ctx.kind == "vector" else ctx.num_channels
        metric = cls.create_on(ctx.a_x.device, len(ctx.elements), channels, similarity=similarity)
        # decided once, at set-up (a host read): may this layer reuse the previous layer's scores?
        metric._reuses_previous = similarity == "pearson" and ctx.kind == "map" and _positive_channel_affine(ctx.module)
        return metric

    def _targets(self, h: int) -> List[torch.Tensor]:
        """Views of the states that a chunk with ``h`` columns (own, and chance when 2) adds to: the score
        sums, the pair counts, the images and the moments; made once per state tensor (reset replaces them)."""
        states = (self.sums, self.images, self.moments)
        cached = self._state_views
        if cached is None or any(a is not b for a, b in zip(cached[0], states)):
            cached = self._state_views = (states, {})
        if h not in cached[1]:
            if h == 2:
                sums, images, moments = self.sums, self.images, self.moments
            else:  # no chance level in this chunk: the own column of each state
                sums, images, moments = self.sums.narrow(2, 0, 1), self.images.narrow(0, 0, 1), self.moments[:1]
            cached[1][h] = [sums[0], sums[1], images, moments]
        return cached[1][h]

    def _check_rows(self, rows: LayerRows) -> None:
        m, h, c = rows.sums[0].shape
        if m != self.sums.shape[1] or c != self.sums.shape[-1]:
            raise ValueError(
                f"{type(self).__name__} was created for {self.sums.shape[1]} elements x "
                f"{self.sums.shape[-1]} channels, got scores for {m} elements x {c} channels"
            )

    def _update_tensors(
        self,
        a_gx: torch.Tensor,
        ta_x: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
        sample_mask: Optional[torch.Tensor] = None,
        partner: Optional[torch.Tensor] = None,
    ) -> None:
        """Add a batch: ``a(T_g x)`` and ``T'_g a(x)`` (``m x b x C x h x w`` or ``m x b x D``).

        Args:
            mask: optional boolean ``m x h x w`` (or ``h x w``) validity mask of the positions;
                checked for at least 2 positions per element on every call (a host read).
            sample_mask: optional ``b`` booleans on the activations' device, True for the images
                that count; the others are left out of every sum and count exactly (their
                activations may hold anything). ``None``: all images count.
            partner: optional ``b`` integers on the activations' device, each image's partner in
                this batch or ``-1`` (docs/measures.md §7); without it no chance level is added.
        """
        values, valid, pairs = _correlation_arrays(
            a_gx, ta_x, mask=mask, similarity=self.similarity, partner=partner)
        k = 0 if self.measure_name == "invariance" else 1
        rows = layer_rows(values.narrow(0, k, 1), valid, sample_mask, pairs)
        self._check_rows(rows)
        add_layer_rows([(rows, self, 0)])

    def _update_context(self, ctx: LayerContext) -> None:
        """Add one chunk of a layer; images with ``ctx.sample_mask`` False are left out."""
        # Invariance and equivariance share one C x C correlation matrix per sample (and one more
        # per sample against the partner's map for the chance level): ctx.work computes it once.
        work = ctx.work
        work.correlation_scores(self.similarity, reuse_previous=getattr(self, "_reuses_previous", False),
                                constants=self._layer_constants)
        if not self._position_mask_checked:
            mask = work.position_mask
            if mask is not None:
                check_position_mask(mask, *ctx.a_x.shape[-2:])
            self._position_mask_checked = True
        # Scores are per sample and unmasked: the mask of *this* layer is applied where they are
        # summed, once for both measures (they share the valid pairs and the counts).
        rows = work.correlation_rows(self.similarity)
        self._check_rows(rows)
        item = (rows, self, 0 if self.measure_name == "invariance" else 1)
        if ctx.deferred is None:
            add_layer_rows([item])
        else:  # with the other layers' rows of the chunk, after its pass (stacked: a few calls per chunk)
            pe = rows.per_element
            ctx.deferred.defer((add_layer_rows, tuple(pe.shape), pe.device, id(rows.pairs)), add_layer_rows, item)

    def compute(self) -> torch.Tensor:
        """The layer value: mean over elements of the per-element mean over valid (sample, channel) pairs."""
        return _correlation_compute(self.score_sum, self.count)[1]

    def _compute_details(self) -> Dict[str, Any]:
        # Once per measurement, in ~10 ATen calls instead of ~60: the sums over channels on the device
        # (the kernels of compute(), so the same bits), then the few numbers on the host. Ratios and
        # counts are exact there; the means over elements and channels stay torch reductions.
        totals = host_array(self.sums.sum(-1))  # [scores, pairs] x element x [own, chance]
        images, moments = host_array(self.images), host_array(self.moments)
        channels = self.sums.shape[-1]
        per_element = torch.from_numpy(_correlation_compute(totals[0, :, :1], totals[1, :, :1])[0])
        per_channel = None
        if channels > 1:  # on the host too (one read instead of five calls per metric); channels dead everywhere -> 0
            score_sum, count = host_array(self.sums.select(2, 0))
            per_channel = torch.from_numpy((score_sum / np.maximum(count, 1)).mean(0))
        out = {
            "value": per_element.mean().tolist(),
            "per_element": per_element,
            "per_channel": per_channel,
            "left_out": int((images[0] * channels - totals[1, :, 0]).sum()),
            "stderr": stderr_from_moments(moments[0]),
        }
        chance = chance_per_element(totals[0, :, 1:], totals[1, :, 1:])
        chance = None if chance is None else torch.from_numpy(chance)
        out.update(chance_details(out["value"], chance, True, images[0] - images[1], moments[1]))
        return out


class CorrelationInvariance(_CorrelationMeasure):
    """Correlation invariance, Bruintjes et al. 2023 Eq. 4 (Motyka 2022: "channel equivariance").

    ``mean_{i,c} max(0, pearson(a(T_g x_i)_c, T'_g a(x_i)_c))`` per element ``g``, averaged over
    the elements. Dead channels are left out and counted (``compute_details()["left_out"]``).

    Args:
        num_elements: number of group elements ``m`` in each update.
        num_channels: ``C`` of the feature maps (1 for vector layers).
        similarity: ``"pearson"`` (default) or ``"cosine"`` (paper Fig. 2).
    """

    measure_name = "invariance"


class CorrelationEquivariance(_CorrelationMeasure):
    """Correlation equivariance, Bruintjes et al. 2023 Eq. 7 (Motyka 2022: "layer equivariance").

    ``mean_{i,c} max_{c'} max(0, pearson(a(T_g x_i)_c, T'_g a(x_i)_{c'}))``; the ``C x C`` matrix
    is one batched matrix product. Always >= :class:`CorrelationInvariance` on the same data.
    Arguments as :class:`CorrelationInvariance`.
    """

    measure_name = "equivariance"


def add_layer_rows(items: Sequence[Tuple[LayerRows, "_CorrelationMeasure", int]]) -> None:
    """Add chunks of layers to their measures: ``(rows, metric, j)``, the metric being measure ``j`` of the
    layer's :class:`~lightning_equivariance.functional.moments.LayerRows` (the items of one layer adjacent,
    every layer of the same shape, device and pairs). The images' moments of every layer come from one
    :func:`~lightning_equivariance.functional.moments.stacked_image_moments`, their merges into the states
    from one :func:`~lightning_equivariance.functional.moments.moments_increments`, and every add from one
    ``_foreach_add_`` (one kernel launch per device where torch fuses it); nothing is written before all is
    computed, so a failure leaves every state as it was."""
    layers: List[LayerRows] = []
    owners: List[List[Tuple[Any, int]]] = []
    for rows, metric, j in items:
        # a layer's rows once for its measures; again for a second metric of the same measure row (a measure
        # registered twice under other names), whose state merges the same moments on its own
        if not layers or layers[-1] is not rows or any(j == taken for _, taken in owners[-1]):
            layers.append(rows)
            owners.append([])
        owners[-1].append((metric, j))
    k = layers[0].per_element.shape[0] - 1
    h = layers[0].per_element.shape[-1]
    moments = stacked_image_moments(layers)
    # the states' current moments, one per (layer, measure row): a metric's, or zeros where none takes the row
    targets: List[List[Optional[List[torch.Tensor]]]] = []
    states = []
    for consumers in owners:
        mine: List[Optional[List[torch.Tensor]]] = [None] * k
        for metric, j in consumers:
            mine[j] = metric._targets(h)
        targets.append(mine)
        states += [_no_moments(h, moments.n) if t is None else t[3] for t in mine]
    increments = moments_increments(torch.stack(states).view(len(layers), k, h, 3), moments, k).view(-1, h, 3)
    increments, images = increments.unbind(0), moments.images.unbind(0)
    to, add = [], []
    for i, (rows, mine) in enumerate(zip(layers, targets)):
        for j, t in enumerate(mine):
            if t is not None:
                to += t
                add += [rows.sums[j], rows.sums[k], images[i], increments[i * k + j]]
    torch._foreach_add_(to, add)


def _no_moments(h: int, like: torch.Tensor) -> torch.Tensor:
    """``(0, 0, 0)`` moments of ``h`` columns: the state of a measure row no metric takes (its increment is dropped)."""
    return like.new_zeros(h, 3)


def _positive_channel_affine(module) -> bool:
    """Whether ``module`` maps every channel map by ``a * x + b`` with ``a > 0`` (per sample at most).

    BatchNorm (running or batch statistics) and GroupNorm with positive weights (or none):
    their scale is ``weight / std`` per channel (and per sample for GroupNorm). Pearson scores
    do not change under such a map, so such a layer right after a measured one reuses them.
    """
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
        weight = getattr(module, "weight", None)
        try:  # read on the host (tolist: no ATen call there), once per metric
            return weight is None or all(w > 0 for w in weight.tolist())
        except Exception:  # noqa: BLE001 - an unusual weight (sharded, lazy): just compute the layer's own scores
            return False
    return False

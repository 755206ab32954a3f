"""``LieDerivativeError``: the local equivariance error LEE (Gruver et al. 2023, Eq. 4).

``LEE(f_{1:l}) = E_x ||L_X f_{1:l}(x)||^2 / dim`` of one layer's Lie derivatives, which
:mod:`lightning_equivariance.lie` computes with one forward-mode pass per transform.
States are per-channel sums of squares and entry counts (``dist_reduce_fx="sum"``), and the
mergeable moments ``(n, mean, M2)`` of the per-image values ``||L||^2 / dim`` for the standard
error (docs/measures.md §7), merged with Chan's parallel update (no ``E[s^2] - E[s]^2``, which
cancels when the values agree to many digits): probe images split over chunks or processes
give the same result as one pass.
Images left out by a ``sample_mask`` (docs/measures.md §1.7) are out of every
one of those sums and counts (``torch.where`` on the device, no host read).

Example::

    >>> import torch
    >>> from lightning_equivariance.metrics import LieDerivativeError
    >>> metric = LieDerivativeError(num_channels=2)
    >>> metric.update(torch.ones(4, 2, 3, 3))     # Lie derivatives of 4 images, 2 channels
    >>> float(metric.compute())
    1.0
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from ..functional.lie import _lee_compute, _lee_update, stencil_too_small
from ..functional.moments import combine_moments, merge_moments, moments_of, no_chance, stderr_from_moments
from .base import FORWARD_MODE, LayerMetric, LieContext

__all__ = ["LieContext", "LieDerivativeError"]


class LieDerivativeError(LayerMetric):
    """Local equivariance error of one layer, Gruver et al. 2023 Eq. 4 (lower is more equivariant).

    ``value = sum ||L||^2 / (n * dim)`` over ``n`` images (``dim`` entries per image);
    ``per_channel[c]`` the same over channel ``c``'s entries. The paper's reference code
    averages ``|L|`` instead of ``L^2``; this follows Eq. 4.

    Args:
        num_channels: ``C`` of the layer's Lie derivatives (1 for vector layers).
    """

    measure_name = "lee"
    higher_is_better = False
    plot_lower_bound = 0.0
    best_value = 0.0
    #: The engine runs this measure in its own forward-mode pass, not the stacked forward.
    pass_kind = FORWARD_MODE

    sq_sum: torch.Tensor
    entries: torch.Tensor
    image_moments: torch.Tensor

    def __init__(self, num_channels: int, **kwargs: Any):
        super().__init__(**kwargs)
        if int(num_channels) < 1:
            raise ValueError(f"num_channels must be >= 1, got {num_channels}")
        c = int(num_channels)
        self.add_filled_state("sq_sum", (c,), 0.0)
        self.add_filled_state("entries", (c,), 0.0)
        # (n, mean, M2) of the per-image LEE, merged with Chan's update (also across processes)
        self.add_filled_state("image_moments", (3,), 0.0, dist_reduce_fx=merge_moments)

    @classmethod
    def for_layer(cls, ctx: LieContext, **_: Any) -> "LieDerivativeError":
        """A metric for ``ctx``'s layer; refused (``ValueError`` with the reason) where the transform's
        difference stencil does not fit the probe images or the layer's grid (the LEE would be a
        blind 0 there, not a measurement)."""
        reason = cls.degenerate(ctx)
        if reason:
            raise ValueError(reason)
        return cls.create_on(ctx.lie.device, ctx.num_channels)

    @staticmethod
    def degenerate(ctx: LieContext) -> Optional[str]:
        """Why lee cannot measure ``ctx``'s layer (probe images or the layer's grid too small for the
        generator's central differences, :func:`~lightning_equivariance.functional.lie.stencil_too_small`)."""
        velocity = getattr(ctx.transform, "velocity", None)
        if velocity is None:  # an intensity transform, or no transform (the tensor form)
            return None
        if ctx.input_size is not None:
            reason = stencil_too_small(ctx.input_size, velocity, "probe image")
            if reason:
                return f"layer {ctx.layer!r}: {reason}"
        if ctx.grid is not None:
            reason = stencil_too_small(ctx.grid, velocity, "layer's map")
            if reason:
                return f"layer {ctx.layer!r}: {reason}"
        return None

    def _update_tensors(self, lie: torch.Tensor, sample_mask: Optional[torch.Tensor] = None) -> None:
        """Add Lie derivatives of a batch: ``b x C x h x w`` maps, ``b x C x P`` or ``b x D`` vectors.

        ``sample_mask``: optional ``b`` booleans on ``lie``'s device, True for the images that
        count; the others are left out of every sum and count (their rows may hold anything).
        """
        if lie.dim() == 2:
            lie = lie.unsqueeze(1)
        elif lie.dim() > 3:
            lie = lie.flatten(2)
        if lie.dim() != 3 or lie.shape[1] != self.sq_sum.shape[0]:
            raise ValueError(
                f"LieDerivativeError was created for {self.sq_sum.shape[0]} channels, got Lie derivatives of shape "
                f"{tuple(lie.shape)}"
            )
        sq, entries, per_image = _lee_update(lie, sample_mask)
        self.sq_sum += sq
        self.entries += entries
        self.image_moments.copy_(combine_moments(self.image_moments, moments_of(per_image, sample_mask)))

    def _update_context(self, ctx: LieContext) -> None:
        self._update_tensors(ctx.lie, sample_mask=ctx.sample_mask)

    def compute(self) -> torch.Tensor:
        """The layer's LEE (Eq. 4)."""
        return _lee_compute(self.sq_sum, self.entries)[1]

    def _compute_details(self) -> Dict[str, Any]:
        per_channel, value = _lee_compute(self.sq_sum, self.entries)
        return {
            "value": float(value.tolist()),
            "per_element": value.reshape(1),
            "per_channel": per_channel if per_channel.numel() > 1 else None,
            "left_out": 0,
            # standard error of the mean over images (the paper's error bars): std(ddof=1)/sqrt(n),
            # None for fewer than 2 images
            "stderr": stderr_from_moments(self.image_moments),
            **no_chance(),
        }

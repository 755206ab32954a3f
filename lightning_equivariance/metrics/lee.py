"""``LieDerivativeError``: the local equivariance error LEE (Gruver et al. 2023, Eq. 4).

``LEE(f_{1:l}) = E_x ||L_X f_{1:l}(x)||^2 / dim`` of one layer's Lie derivatives, which
:mod:`lightning_equivariance.lie` computes with one forward-mode pass per transform.
States are the per-channel sums of squares with the entries per channel (one ``C + 1`` tensor,
``dist_reduce_fx="sum"``), and the mergeable moments ``(n, mean, M2)`` of the per-image values
``||L||^2 / dim`` for the standard error (docs/measures.md §7), merged with Chan's parallel update
(no ``E[s^2] - E[s]^2``, which cancels when the values agree to many digits): probe images split
over chunks or processes give the same result as one pass. A chunk updates both in about twenty
ATen calls (issue 23: each one a kernel launch on a GPU), with constants kept on the metric.
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

from typing import Any, Dict, Optional, Tuple

import torch

from ..functional.lie import (
    _lee_chunk_rows,
    _lee_compute,
    _lee_row_weights,
    _merge_image_values,
    stencil_too_small,
)
from ..functional.moments import merge_moments, no_chance, stderr_from_moments
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

    sums: torch.Tensor
    image_moments: torch.Tensor

    def __init__(self, num_channels: int, **kwargs: Any):
        super().__init__(**kwargs)
        if int(num_channels) < 1:
            raise ValueError(f"num_channels must be >= 1, got {num_channels}")
        c = int(num_channels)
        self.num_channels = c
        # per channel: the sum of squared Lie derivatives; last: the entries per channel (the same for each)
        self.add_filled_state("sums", (c + 1,), 0.0)
        # (n, mean, M2) of the per-image LEE, merged with Chan's update (also across processes); 1 x 3, so
        # that a chunk's rows and this summary join in one cat (functional.lie._merge_image_values)
        self.add_filled_state("image_moments", (1, 3), 0.0, dist_reduce_fx=merge_moments)
        self._constants: Dict[Any, Tuple[torch.Tensor, ...]] = {}

    @property
    def sq_sum(self) -> torch.Tensor:
        """Per-channel sums of squared Lie derivatives (``C``)."""
        return self.sums[:-1]

    @property
    def entries(self) -> torch.Tensor:
        """Per-channel entry counts (``C``)."""
        return self.sums[-1:].expand(self.num_channels)

    def _chunk_constants(self, entries: int) -> Tuple[torch.Tensor, ...]:
        """``(zero, entry_weights, value_weights)`` for rows of ``entries`` entries per channel, made once per
        (entries, device): creating them every chunk would cost as many ATen calls as the update itself."""
        device = self.sums.device
        key = (entries, device)
        if key not in self._constants:
            zero = torch.zeros(1, dtype=torch.float64, device=device)
            self._constants[key] = (zero, *_lee_row_weights(self.num_channels, entries, device))
        return self._constants[key]

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
        if lie.dim() != 3 or lie.shape[1] != self.num_channels:
            raise ValueError(
                f"LieDerivativeError was created for {self.num_channels} channels, got Lie derivatives of shape "
                f"{tuple(lie.shape)}"
            )
        b = lie.shape[0]
        if sample_mask is not None:
            if sample_mask.dim() != 1 or sample_mask.shape[0] != b:
                raise ValueError(
                    f"sample_mask must hold one boolean per image ({b}), got shape {tuple(sample_mask.shape)}"
                )
            sample_mask = sample_mask.to(device=lie.device, dtype=torch.bool)
        zero, entry_weights, value_weights = self._chunk_constants(int(lie.shape[2]))
        rows = _lee_chunk_rows(lie, sample_mask, zero)  # b x (C + 1): squared norms, then 1; left-out rows 0
        self.sums.addcmul_(rows.sum(0), entry_weights)
        _merge_image_values(self.image_moments, rows.mm(value_weights))

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
            "stderr": stderr_from_moments(self.image_moments[0]),
            **no_chance(),
        }

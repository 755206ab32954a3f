"""Reference models: a steerable CNN that is rotation-equivariant by design, a plain CNN
of matched depth and similar parameter count, and the 7-layer CNN of Bruintjes et al. 2023 §4.3.

The steerable and plain CNNs share their layout so that their layer profiles line up:
three blocks of (conv 5x5, batch norm, ReLU) with an anti-aliased stride-2 average pool
between blocks, then pooling over the group (steerable only), global average pooling
and a linear classifier. The strided pooling is exactly rot90-equivariant when every
pooled map has an odd size (the sampled positions ``0, 2, ..., S-1`` are symmetric), so
use odd image sizes such as 29 (29 -> 15 -> 8).

:class:`SteerableCNN` needs e2cnn (``pip install "lightning-equivariance[steerable]"``); it
is imported on first use, patched for NumPy 2 by :mod:`lightning_equivariance._e2cnn_compat`,
and e2cnn's own warnings are silenced around our calls into it. The other models need
only PyTorch.

Example::

    >>> from lightning_equivariance.baselines import SteerableCNN, PlainCNN, count_parameters
    >>> steerable, plain = SteerableCNN(n_rotations=4), PlainCNN.matching(SteerableCNN(n_rotations=4))
    >>> 0.5 < count_parameters(plain) / count_parameters(steerable) < 2
    True
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import nn

from ._e2cnn_compat import import_e2cnn

__all__ = ["SteerableCNN", "PlainCNN", "Bruintjes7Layer", "count_parameters"]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class SteerableCNN(nn.Module):
    """A C_N (or D_N with ``flips=True``) steerable CNN built with e2cnn.

    ``R2Conv`` with regular fields, ``InnerBatchNorm``, ``ReLU``, anti-aliased average
    pooling (``PointwiseAvgPoolAntialiased``), ``GroupPooling``, then global average
    pooling and a linear classifier. Its features are equivariant to rotations by
    multiples of ``360/N`` degrees (exactly for 90-degree multiples when N is divisible by 4),
    and its output is invariant.

    Args:
        n_rotations: N of C_N / D_N.
        flips: add reflections (D_N).
        in_channels, num_classes: input channels and classes.
        fields: number of regular fields per block (each has N or 2N channels).
        kernel_size: odd convolution size.
    """

    def __init__(
        self,
        n_rotations: int = 4,
        flips: bool = False,
        in_channels: int = 1,
        num_classes: int = 10,
        fields: Sequence[int] = (6, 12, 16),
        kernel_size: int = 5,
    ):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        gspaces, enn = import_e2cnn()  # ImportError naming the extra when e2cnn is missing
        with warnings.catch_warnings():
            # e2cnn 0.2.3's own deprecations (uint8 mask indexing, ...) while it builds its bases.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message="indexing with dtype torch.uint8", category=UserWarning)
            self._build(gspaces, enn, n_rotations, flips, in_channels, num_classes, fields, kernel_size)

    def _build(self, gspaces, enn, n_rotations, flips, in_channels, num_classes, fields, kernel_size) -> None:
        self.gspace = gspaces.FlipRot2dOnR2(n_rotations) if flips else gspaces.Rot2dOnR2(n_rotations)
        self.in_type = enn.FieldType(self.gspace, [self.gspace.trivial_repr] * in_channels)
        layers = []
        current = self.in_type
        for i, f in enumerate(fields):
            out = enn.FieldType(self.gspace, [self.gspace.regular_repr] * f)
            layers += [
                enn.R2Conv(current, out, kernel_size, padding=kernel_size // 2, bias=False),
                enn.InnerBatchNorm(out),
                enn.ReLU(out),
            ]
            if i < len(fields) - 1:
                layers.append(enn.PointwiseAvgPoolAntialiased(out, sigma=0.66, stride=2))
            current = out
        self.body = enn.SequentialModule(*layers)
        self.group_pool = enn.GroupPooling(current)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(fields[-1], num_classes)
        self.n_rotations, self.flips = n_rotations, flips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from e2cnn.nn import GeometricTensor  # imported (and patched) by __init__

        y = self.group_pool(self.body(GeometricTensor(x, self.in_type)))
        return self.fc(self.pool(y.tensor).flatten(1))


class PlainCNN(nn.Module):
    """A plain CNN with the layout of :class:`SteerableCNN` (no group structure).

    ``widths`` are channel counts per block; :meth:`matching` picks them so that the
    parameter count is close to a given steerable model's.
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, widths: Sequence[int] = (16, 32, 48), kernel_size: int = 5
    ):
        super().__init__()
        layers = []
        c = in_channels
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, kernel_size, padding=kernel_size // 2, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            if i < len(widths) - 1:
                layers.append(nn.AvgPool2d(3, stride=2, padding=1))
            c = w
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.body(x)).flatten(1))

    @classmethod
    def matching(cls, steerable: SteerableCNN, in_channels: int = 1, num_classes: int = 10) -> "PlainCNN":
        """A plain CNN of the same depth whose parameter count is closest to ``steerable``'s."""
        target = count_parameters(steerable)
        n_fields = [
            m.out_type.size // m.out_type.fibergroup.order()
            for m in steerable.body.modules()
            if type(m).__name__ == "R2Conv"
        ]
        best = None
        for scale in [s / 8 for s in range(4, 65)]:
            widths = [max(4, int(round(f * scale))) for f in n_fields]
            n = count_parameters(cls(in_channels, num_classes, widths))
            if best is None or abs(n - target) < abs(best[0] - target):
                best = (n, widths)
        return cls(in_channels, num_classes, best[1])


class Bruintjes7Layer(nn.Module):
    """The 7-layer CNN of Bruintjes et al. 2023 §4.3 (after Cohen & Welling 2016).

    Seven 3x3 convolutions with 20 channels, batch norm and ReLU after each, max-pooling
    after layer 2, then global average pooling and a linear classifier.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 20):
        super().__init__()
        layers = []
        c = in_channels
        for i in range(7):
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            if i == 1:
                layers.append(nn.MaxPool2d(2))
            c = width
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.body(x)).flatten(1))

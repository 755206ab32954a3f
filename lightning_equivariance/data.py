"""Small embedded image data for examples, tests and CI (nothing is downloaded).

``digits()`` is scikit-learn's 8x8 handwritten digits (1,797 images shipped inside the
scikit-learn wheel), up-sampled bilinearly to ``size x size`` and scaled to ``[0, 1]``.
For real data use torchvision's loaders (``torchvision.datasets.MNIST(root,
download=True)``) - the measures do not care where images come from.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ["digits"]


def digits(size: int = 32, dtype: torch.dtype = torch.float32) -> Tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as ``(images N x 1 x size x size, labels N)``, pixel values in ``[0, 1]``.

    Example:
        >>> x, y = digits(16)
        >>> tuple(x.shape), int(y.max())
        ((1797, 1, 16, 16), 9)
    """
    from sklearn.datasets import load_digits

    if int(size) < 8:
        raise ValueError(f"size must be >= 8 (the digits are 8x8), got {size}")
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if size != 8:
        # Pad by one pixel first so that the digit keeps a blank margin after resizing.
        x = F.interpolate(F.pad(x, (1, 1, 1, 1)), size=(size, size), mode="bilinear", align_corners=False)
    return x.clamp_(0, 1).to(dtype), torch.tensor(data.target, dtype=torch.long)

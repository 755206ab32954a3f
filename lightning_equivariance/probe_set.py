"""Probe images: the input rule of a batch, and reading a tensor, a Dataset or batches in chunks.

The one place for the "first tensor" rule: the input of a batch is the batch itself if it
is a tensor, ``batch["image"]`` (or ``"images"``, ``"input"``, ``"inputs"``, ``"x"``,
``"pixel_values"``) for a dict, or the first tensor of a tuple/list.
"""
from __future__ import annotations

from typing import Iterator, List, Mapping

import torch

__all__ = ["first_tensor_of", "iter_images", "is_dataset", "INPUT_RULE"]

INPUT_RULE = (
    "a batch's input is the batch itself if it is a tensor, batch['image'] (or 'images', 'input', "
    "'inputs', 'x', 'pixel_values') for a dict, the first tensor of a tuple/list, or input_fn(batch)"
)


def is_dataset(obj) -> bool:
    """A map-style dataset: indexable with a length (not a tensor, list or tuple)."""
    return hasattr(obj, "__getitem__") and hasattr(obj, "__len__") and not isinstance(obj, (torch.Tensor, list, tuple))


def first_tensor_of(batch) -> torch.Tensor:
    """The input tensor of a batch, by the input rule (module docstring)."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping):
        for key in ("image", "images", "input", "inputs", "x", "pixel_values"):
            if key in batch and isinstance(batch[key], torch.Tensor):
                return batch[key]
    if isinstance(batch, (tuple, list)):
        for b in batch:
            if isinstance(b, torch.Tensor):
                return b
    raise TypeError(
        f"cannot find the input tensor in a batch of type {type(batch).__name__}; pass a tensor, "
        "a (x, y) tuple or a dict with key 'image' (or give the callback input_fn=...)"
    )


def iter_images(inputs, chunk: int) -> Iterator[torch.Tensor]:
    """Yield ``chunk``-sized image tensors from a tensor, a Dataset, or an iterable of batches."""
    if isinstance(inputs, torch.Tensor):
        for i in range(0, inputs.shape[0], chunk):
            yield inputs[i : i + chunk]
        return
    if is_dataset(inputs):
        items = (first_tensor_of(inputs[i]) for i in range(len(inputs)))  # a map-style Dataset
        batches = (t.unsqueeze(0) for t in items)
    else:
        batches = (first_tensor_of(b) for b in inputs)
    buf: List[torch.Tensor] = []
    n = 0
    for b in batches:
        buf.append(b)
        n += b.shape[0]
        while n >= chunk:
            cat = torch.cat(buf)
            yield cat[:chunk]
            buf, n = ([cat[chunk:]] if cat.shape[0] > chunk else []), cat.shape[0] - chunk
    if n:
        yield torch.cat(buf)

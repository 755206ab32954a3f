"""Scratch buffers that blocked computations reuse within one measurement.

Pure torch. On CPU a fresh tensor per block costs page faults (at 4 positions per map, 4x the
matrix product itself), so a computation done in blocks writes each block into one buffer per
thread and dtype. Inside :func:`reusing_scratch` (the engine wraps every measurement in it) any
size is kept, and everything above :data:`KEPT_OUTSIDE` is released on leaving, so a large block
(hundreds of MiB for a wide layer) does not outlive the measurement; outside, only buffers up to
that size are kept. On a GPU the caching allocator already reuses blocks: a new tensor is returned.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import torch

__all__ = ["scratch_buffer", "reusing_scratch", "KEPT_OUTSIDE"]

#: Bytes of a CPU scratch buffer kept between measurements (and by a function called outside one).
KEPT_OUTSIDE = 32 * 2**20
_SCRATCH = threading.local()


def scratch_buffer(numel: int, like: torch.Tensor) -> torch.Tensor:
    """A flat tensor of ``numel`` entries of ``like``'s dtype and device: on CPU a view of this thread's
    buffer (its contents are whatever the last user left), elsewhere a new tensor."""
    if like.device.type != "cpu" or (
        not getattr(_SCRATCH, "depth", 0) and numel * like.element_size() > KEPT_OUTSIDE
    ):
        return like.new_empty(numel)
    buffers = getattr(_SCRATCH, "buffers", None)
    if buffers is None:
        buffers = _SCRATCH.buffers = {}
    buf = buffers.get(like.dtype)
    if buf is None or buf.numel() < numel:
        buf = buffers[like.dtype] = like.new_empty(numel)
    return buf[:numel]


@contextlib.contextmanager
def reusing_scratch() -> Iterator[None]:
    """Within: :func:`scratch_buffer` keeps buffers of any size; on leaving the outermost scope, the
    buffers larger than :data:`KEPT_OUTSIDE` are released."""
    depth = getattr(_SCRATCH, "depth", 0)
    _SCRATCH.depth = depth + 1
    try:
        yield
    finally:
        _SCRATCH.depth = depth
        buffers = getattr(_SCRATCH, "buffers", None)
        if depth == 0 and buffers:
            _SCRATCH.buffers = {k: b for k, b in buffers.items() if b.numel() * b.element_size() <= KEPT_OUTSIDE}

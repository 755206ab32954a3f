"""Feature maps moved by every element of an action that only moves entries.

Pure torch. Rotations by 90 degrees, flips and circular shifts permute positions; the regular
and quotient fields of a steerable layer also permute channels. Such an action is a
permutation of a map's ``C x h x w`` entries, so the maps of all elements come from one
gather each, straight into one tensor: where every entry comes from is found by moving the
entries' own indices with the action.
"""
from __future__ import annotations

from typing import Callable

import torch

__all__ = ["moved_maps"]


def moved_maps(
    maps: torch.Tensor, move: Callable[[torch.Tensor, int], torch.Tensor], num_elements: int
) -> torch.Tensor:
    """``torch.stack([move(maps, g) for g in range(num_elements)])``, one gather per element.

    Args:
        maps: ``b x C x h x w``.
        move: ``move(maps, g)`` is element ``g``'s action on ``... x C x h x w`` maps; it must
            only move entries (every output entry is one input entry, as for rot90, flips,
            circular shifts and channel permutations).
        num_elements: ``m``.

    Returns:
        ``m x b x ...``: the moved maps (``C x w x h`` after a quarter turn of a non-square
        map). The indices are moved as one ``1 x C x h x w`` float64 map (exact for any map
        size; float32 on MPS, which has no float64), so an element costs one small move and
        one gather, where moving the maps and stacking them copies every map twice or more.
    """
    b, c, h, w = maps.shape
    # float: an action may compute (a channel matmul that happens to permute); float64 holds
    # every index exactly; MPS has no float64, float32 holds indices up to 2**24 exactly
    exact = torch.float32 if maps.device.type == "mps" and c * h * w <= 2**24 else torch.float64
    origin = torch.arange(c * h * w, dtype=exact, device=maps.device).reshape(1, c, h, w)
    sources = [move(origin, g) for g in range(num_elements)]
    shape = sources[0].shape[1:] if sources else (c, h, w)
    if any(s.shape[1:] != shape for s in sources):
        raise ValueError(
            f"the elements move {c}x{h}x{w} maps to different shapes {[tuple(s.shape[1:]) for s in sources]}"
        )
    out = maps.new_empty(num_elements, b, c * h * w)
    flat = maps.reshape(b, c * h * w)
    for g, source in enumerate(sources):
        torch.index_select(flat, 1, source.reshape(-1).to(torch.long), out=out[g])
    return out.view(num_elements, b, *shape)

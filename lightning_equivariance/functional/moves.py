"""Feature maps moved by every element of an action that only moves entries.

Pure torch. Rotations by 90 degrees, flips and circular shifts permute positions; the regular
and quotient fields of a steerable layer also permute channels. Such an action is a
permutation of a map's ``C x h x w`` entries, so the maps of all elements come from one
gather each, straight into one tensor: where every entry comes from is found by moving the
entries' own indices with the action.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch

__all__ = ["moved_maps", "moved_sources", "channels_last_entries"]


def channels_last_entries(maps: torch.Tensor) -> bool:
    """Whether each ``C x h x w`` map of ``maps`` (``b x C x h x w``) lies in memory as ``h x w x C``
    (channels-last maps, a token layer's grid) and not as ``C x h x w``: :func:`moved_maps` then gathers
    its entries in that order, where flattening them as ``C x h x w`` would copy every map first."""
    _, c, h, w = maps.shape
    _, sc, sh, sw = maps.stride()
    return c > 1 and h * w > 1 and sc == 1 and sw == c and sh == w * c


def moved_sources(
    maps_shape, move: Callable[[torch.Tensor, int], torch.Tensor], num_elements: int, device=None,
    channels_last: bool = False,
) -> Tuple[List[torch.Tensor], Tuple[int, ...]]:
    """Where every entry of element ``g``'s moved ``C x h x w`` map comes from (int64 indices into a
    flattened map, one tensor per element), and the moved maps' shape: fixed by the layer's shape and
    the action, so a caller may compute them once per layer and pass them to :func:`moved_maps`.
    ``channels_last``: the indices count the source map's entries in ``h x w x C`` order
    (:func:`channels_last_entries` of the maps they will move)."""
    c, h, w = maps_shape
    # float: an action may compute (a channel matmul that happens to permute); float64 holds
    # every index exactly; MPS has no float64, float32 holds indices up to 2**24 exactly
    device = torch.device(device) if device is not None else torch.device("cpu")
    exact = torch.float32 if device.type == "mps" and c * h * w <= 2**24 else torch.float64
    origin = torch.arange(c * h * w, dtype=exact, device=device)
    origin = origin.reshape(1, h, w, c).permute(0, 3, 1, 2) if channels_last else origin.reshape(1, c, h, w)
    sources = [move(origin, g) for g in range(num_elements)]
    shape = tuple(sources[0].shape[1:]) if sources else (c, h, w)
    if any(tuple(s.shape[1:]) != shape for s in sources):
        shapes = [tuple(s.shape[1:]) for s in sources]
        raise ValueError(f"the elements move {c}x{h}x{w} maps to different shapes {shapes}")
    return [s.reshape(-1).to(torch.long) for s in sources], shape


def moved_maps(
    maps: torch.Tensor,
    move: Callable[[torch.Tensor, int], torch.Tensor],
    num_elements: int,
    sources: Optional[Tuple[List[torch.Tensor], Tuple[int, ...]]] = None,
    flat: bool = False,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``torch.stack([move(maps, g) for g in range(num_elements)])``, one gather per element.

    Args:
        maps: ``b x C x h x w``.
        move: ``move(maps, g)`` is element ``g``'s action on ``... x C x h x w`` maps; it must
            only move entries (every output entry is one input entry, as for rot90, flips,
            circular shifts and channel permutations).
        num_elements: ``m``.
        sources: :func:`moved_sources` of ``maps``'s ``C x h x w``, ``move`` and ``num_elements`` (and
            ``channels_last=channels_last_entries(maps)``), when already computed (once per layer);
            ``None``: computed here.
        flat: return ``m x b x (C h w)`` (the moved entries of each map in a row) instead.
        out: a contiguous ``m x b x (C h w)`` tensor to gather into (``None``: a new one).

    Returns:
        ``m x b x ...``: the moved maps (``C x w x h`` after a quarter turn of a non-square
        map). The indices are moved as one ``1 x C x h x w`` float64 map (exact for any map
        size; float32 on MPS, which has no float64), so an element costs one small move and
        one gather, where moving the maps and stacking them copies every map twice or more.
    """
    b, c, h, w = maps.shape
    last = channels_last_entries(maps)
    if sources is None:
        sources = moved_sources((c, h, w), move, num_elements, maps.device, channels_last=last)
    index, shape = sources
    out = maps.new_empty(num_elements, b, c * h * w) if out is None else out
    # each map's entries in memory order: one view, no copy (the sources count in that order)
    rows = maps.as_strided((b, c * h * w), (maps.stride(0), 1)) if last else maps.reshape(b, c * h * w)
    for source, into in zip(index, out.unbind(0)):
        torch.index_select(rows, 1, source, out=into)
    return out if flat else out.view(num_elements, b, *shape)

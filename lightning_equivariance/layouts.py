"""A layer's layout decided on evidence: every tensor's provenance followed through one forward.

docs/measures.md §1.3. During the layout-discovery forward a :class:`ProvenanceMode` (a torch
``TorchFunctionMode``) sees every torch function and tensor method the model calls - the
convolutions, ``view``/``reshape``/``flatten``, ``permute``/``transpose``, ``F.unfold``,
``torch.roll``, slicing, ``cat``, ``split``, linear maps and attention products - and
records, for each tensor it produces, how its entries index the image grid. That record
(a :class:`Provenance`) describes every axis of the tensor as a row-major product of
*atoms*, factors of one of four kinds:

* ``b``: the batch (images);
* ``c``: channels (a convolution's outputs, a linear map's outputs, heads, key positions);
* ``h`` / ``w``: rows / columns of a grid (the image, or a convolution's output at its
  resolution), possibly split into factors (``h = h1 * p + h0`` for patches and windows);
* ``m``: the hidden units of a linear map over grid positions (MLP-Mixer's token MLP): no
  grid, no channels.

An axis may also start with ``k`` entries that index no position (class or distillation
tokens). The model's input is ``b x c x h x w``; convolutions, pooling and interpolation
start a fresh grid at their output's resolution; reshapes, permutes, slices, ``cat`` and
``split``, reductions and contractions move, split, drop or replace atoms. A tensor whose
atoms hold the batch once and every factor of the grid is a rearrangement of a
``B x C x h x w`` map: :class:`Reading` folds it back (whatever the axes, including the
batch axis: Swin's windows, MobileViT's ``(B*P) x N x C``, LeViT's ``(B*N) x C``) and
unfolds a map into it again (the Lie generator's inverse). The shape only ever confirms.
"""

from __future__ import annotations

import itertools
import math
import weakref
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["Atom", "Provenance", "Reading", "ProvenanceMode", "READABLE_OVERRIDES", "image_provenance", "read"]

#: ``layouts=`` values: how the user reads a layer the evidence does not settle.
READABLE_OVERRIDES = ("channels_first", "channels_last", "tokens", "tokens_transposed")

MIXED = (
    "holds the hidden units of a linear map over the grid's positions (a token-mixing MLP's hidden layer: its "
    "last axis indexes hidden units, not tokens), so it is no map of the image grid"
)


@dataclass(frozen=True)
class Atom:
    """One factor of an axis: ``role`` b/c/h/w/m, ``key`` its identity (h/w: the grid ``(h, w)`` it indexes;
    c: a number; m: the grid atoms it mixed), ``stride`` within its key, ``size`` its entries."""

    role: str
    key: object
    stride: int
    size: int


Axis = Tuple[int, Tuple[Atom, ...]]  # (leading entries that index no position, atoms row-major)

_ids = itertools.count(1)


def _channel(size: int) -> Tuple[Atom, ...]:
    return (Atom("c", next(_ids), 1, int(size)),) if size != 1 else ()


def _grid(h: int, w: int) -> Tuple[Tuple[Atom, ...], Tuple[Atom, ...]]:
    key = (int(h), int(w))
    return ((Atom("h", key, 1, h),) if h != 1 else ()), ((Atom("w", key, 1, w),) if w != 1 else ())


@dataclass(frozen=True)
class Provenance:
    """How a tensor's axes index the batch, channels and a grid (module docstring)."""

    axes: Tuple[Axis, ...]
    shift: Tuple[Tuple[str, int], ...] = ()  # torch.roll's shifts on the grid's h / w

    def atoms(self) -> List[Atom]:
        return [a for _, atoms in self.axes for a in atoms]


def _normalise(axes) -> Tuple[Axis, ...]:
    """Merge neighbouring factors of one key (``h1, h0`` in order -> ``h``), drop size-1 atoms."""
    out = []
    for k, atoms in axes:
        merged: List[Atom] = []
        for a in atoms:
            if a.size == 1 and a.role != "b":
                continue
            p = merged[-1] if merged else None
            if (
                p is not None
                and p.role == a.role
                and p.key == a.key
                and a.role != "b"
                and p.stride == a.stride * a.size
            ):
                merged[-1] = Atom(a.role, a.key, a.stride, p.size * a.size)
            else:
                merged.append(a)
        out.append((int(k), tuple(merged)))
    return tuple(out)


def _prov(axes, shift=()) -> Provenance:
    return Provenance(_normalise(axes), tuple(shift))


def image_provenance(shape: Sequence[int]) -> Provenance:
    """The model's input ``B x C x H x W``."""
    b, c, h, w = (int(s) for s in shape)
    hh, ww = _grid(h, w)
    return _prov(((0, (Atom("b", "b", 1, b),)), (0, _channel(c)), (0, hh), (0, ww)))


# ---------------------------------------------------------------------- the rules
Result = Union[Provenance, str]  # a provenance, or why the trail is lost


def _extent(a: Atom) -> int:
    """The full extent of an h/w atom's grid axis (of the zero-padded grid for a padded key)."""
    key = a.key[2] if a.key[0] == "pad" else a.key
    return key["hw".index(a.role)]


def _whole(a: Atom) -> bool:
    return a.role in "hw" and a.stride == 1 and a.size == _extent(a)


def _pad(p: Provenance, pad: Sequence[int]) -> Result:
    """``F.pad`` of whole grid axes (Swin pads to a multiple of its window; ``padding_mode="circular"`` convolutions
    pad first): a padded grid - a convolution still reads it as the grid's positions, and its crop back
    (``x[:, :H, :W]``) is the grid again; any other padding loses the trail."""
    pad = [int(v) for v in pad]
    if not any(pad):
        return p
    ends: Dict[str, int] = {}
    befores: Dict[str, int] = {}
    empty: Dict[int, str] = {}  # padded axes of size 1 (a grid of one row or column): F.pad pads w, then h
    order = iter("wh")
    for j in range(len(pad) // 2):
        before, after = pad[2 * j], pad[2 * j + 1]
        if not before and not after:
            continue
        d = len(p.axes) - 1 - j
        k, atoms = p.axes[d]
        role = next(order, None)
        if not atoms and not k and role is not None:
            empty[d] = role
            ends[role], befores[role] = after, before
            continue
        if before < 0 or after < 0 or k or len(atoms) != 1 or not _whole(atoms[0]) or atoms[0].key[0] == "pad":
            return "is padded"
        ends[atoms[0].role], befores[atoms[0].role] = after, before
    key = next((a.key for a in p.atoms() if a.role in "hw"), (1, 1))
    grow = {r: ends.get(r, 0) + befores.get(r, 0) for r in "hw"}
    padded = ("pad", key, (key[0] + grow["h"], key[1] + grow["w"]), (befores.get("h", 0), befores.get("w", 0)))
    axes = [
        (
            k,
            tuple(
                Atom(a.role, padded, a.stride, a.size + grow[a.role] if _whole(a) else a.size)
                if a.role in "hw"
                else a
                for a in atoms
            ),
        )
        for k, atoms in p.axes
    ]
    for d, role in empty.items():
        axes[d] = (0, (Atom(role, padded, 1, 1 + grow[role]),))
    return _prov(axes, p.shift)


def _unpad(axes) -> Tuple[Axis, ...]:
    """Cropped back to the grid's own extent: the padded key gives way to the grid's."""
    atoms = [a for _, at in axes for a in at if a.role in "hw"]
    if not atoms:
        return axes
    if not all(a.key[0] == "pad" for a in atoms):
        return axes
    key = atoms[0].key[1]
    if not all(a.stride == 1 and a.size == key["hw".index(a.role)] for a in atoms):
        return axes
    return tuple((k, tuple(Atom(a.role, key, 1, a.size) if a.role in "hw" else a for a in at)) for k, at in axes)


def _size(axis: Axis) -> int:
    return axis[0] + math.prod(a.size for a in axis[1])


def _pure_channel(axis: Axis) -> bool:
    return axis[0] == 0 and all(a.role == "c" for a in axis[1])


def _reshape(p: Provenance, out_shape: Sequence[int]) -> Result:
    """Row-major reshape: the atoms re-partitioned over the output's axes (factors split where needed)."""
    items: List[object] = []  # atoms, or a whole axis with leading tokens (moved only as one axis)
    for axis in p.axes:
        items.extend([axis] if axis[0] else axis[1])
    out: List[Axis] = []
    i = 0
    for d in (int(s) for s in out_shape):
        r, taken = d, []
        while i < len(items) and r > 1:
            it = items[i]
            if isinstance(it, tuple):  # an axis with class tokens: only as a whole axis of its own
                if taken or r != _size(it):
                    return "reshapes the axis that holds its class tokens"
                out.append(it)
                i, r, taken = i + 1, 1, None
                break
            if r % it.size == 0:
                taken.append(it)
                r //= it.size
                i += 1
            elif it.size % r == 0 and it.role != "b":
                q = it.size // r
                taken.append(Atom(it.role, it.key, it.stride * q, r))
                items[i] = Atom(it.role, it.key, it.stride, q)
                r = 1
            else:
                return "reshapes it in a way that splits the batch or mixes factors unevenly"
        if taken is None:
            continue
        while (
            i < len(items)
            and not isinstance(items[i], tuple)
            and items[i].size == 1
            and items[i].role == "b"
            and d == 1
        ):
            taken.append(items[i])  # a batch of one lands on the first axis of size 1 it meets
            i += 1
        if r != 1:
            return "reshapes it to sizes its factors do not fill"
        out.append((0, tuple(taken)))
    rest = items[i:]
    if any(isinstance(it, tuple) or it.size != 1 for it in rest):
        return "reshapes it to sizes its factors do not fill"
    if rest:
        if not out:
            return "reshapes it to sizes its factors do not fill"
        out[-1] = (out[-1][0], out[-1][1] + tuple(rest))  # a batch of one left over
    return _prov(out, p.shift)


def _permute(p: Provenance, dims: Sequence[int]) -> Result:
    n = len(p.axes)
    dims = [int(d) % n for d in dims]
    if sorted(dims) != list(range(n)):
        return "is permuted with bad dims"
    return _prov([p.axes[d] for d in dims], p.shift)


def _transpose(p: Provenance, d0: int, d1: int) -> Result:
    dims = list(range(len(p.axes)))
    d0, d1 = int(d0) % len(dims), int(d1) % len(dims)
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return _permute(p, dims)


def _reduce(p: Provenance, dims, keepdim: bool) -> Result:
    n = len(p.axes)
    if dims is None:
        return "is reduced to a scalar"
    dims = {int(d) % n for d in ([dims] if isinstance(dims, int) else dims)}
    if any(a.role == "b" for d in dims for a in p.axes[d][1]):
        return "is reduced over the batch axis"
    axes = [((0, ()) if keepdim else None) if d in dims else ax for d, ax in enumerate(p.axes)]
    return _prov([a for a in axes if a is not None], p.shift)


def _contract(a: Optional[Provenance], out_last: int, b_last: Optional[Axis] = None) -> Result:
    """A linear map over ``a``'s last axis (``F.linear``, ``a @ b``): that axis becomes ``out_last`` entries -
    ``b_last``'s channels, fresh channels, a mixed grid's positions again (MLP-Mixer), or hidden units."""
    if a is None:
        return "untracked"
    k, atoms = a.axes[-1]
    if any(x.role == "b" for x in atoms):
        return "mixes the batch axis"
    if k:
        return "mixes its class tokens with the grid's positions"
    spatial = tuple(x for x in atoms if x.role in "hw")
    mixed = [x for x in atoms if x.role == "m"]
    if b_last is not None:
        last = b_last[1] if _pure_channel(b_last) else _channel(out_last)  # spatial ones contracted away (global)
    elif len(atoms) == 1 and mixed and math.prod(x.size for x in mixed[0].key) == out_last:
        last = mixed[0].key  # the token MLP's output layer maps its hidden units back to the positions it mixed
    elif spatial and any(x.role in "hw" for _, at in a.axes[:-1] for x in at):
        return _merge_patches(a, out_last)
    elif spatial and len(spatial) == len(atoms) and any(x.role == "c" for _, at in a.axes[:-1] for x in at):
        # a linear map over the positions alone, one per channel (MLP-Mixer's token MLP): hidden units
        last = (Atom("m", atoms, 1, int(out_last)),) if out_last != 1 else ()
        if out_last == 1:
            return "maps the grid's positions to one value"
    elif spatial:
        last = _channel(out_last)  # a read-out of the whole map (a classifier on flattened maps): features
    else:
        last = _channel(out_last)
    return _prov(list(a.axes[:-1]) + [(0, tuple(last))], a.shift)


def _merge_patches(a: Provenance, out_last: int) -> Result:
    """A linear map over the fine factors of the grid and channels (Swin's patch merging: ``B x H/2 x W/2 x 4C``
    -> ``2C``): a strided convolution, whose output is a map of the coarser grid."""
    atoms = a.axes[-1][1]
    rest = [x for _, at in a.axes[:-1] for x in at if x.role in "hw"]
    factor = {}
    for role in "hw":
        fine = sorted((x for x in atoms if x.role == role), key=lambda x: x.stride)
        stride = 1
        for x in fine:
            if x.stride != stride:
                return "mixes part of the grid's positions with a linear map"
            stride *= x.size
        if any(x.stride < stride for x in rest if x.role == role):
            return "mixes part of the grid's positions with a linear map"
        factor[role] = stride
    key = rest[0].key
    if key[0] == "pad" or key[0] % factor["h"] or key[1] % factor["w"]:
        return "mixes part of the grid's positions with a linear map"
    new = (key[0] // factor["h"], key[1] // factor["w"])
    axes = [
        (k, tuple(Atom(x.role, new, x.stride // factor[x.role], x.size) if x.role in "hw" else x for x in at))
        for k, at in a.axes[:-1]
    ]
    return _prov(axes + [(0, _channel(out_last))], a.shift)


def _is_grid_form(p: Provenance, spatial_dims: int) -> bool:
    """``b x C x h x w`` (2-D ops): the batch alone first, channels, then the complete rows and columns."""
    if spatial_dims != 2 or len(p.axes) != 4 or p.shift:
        return False
    (kb, b), c, (kh, h), (kw, w) = p.axes
    if kb or kh or kw or [x.role for x in b] != ["b"] or not _pure_channel(c):
        return False
    if any(x.role != "h" for x in h) or any(x.role != "w" for x in w) or len(h) > 1 or len(w) > 1:
        return False
    return all(_whole(x) for x in h + w)  # a padded grid too: the convolution's output is positions of the grid


def _fresh_grid(p: Optional[Provenance], out_shape) -> Provenance:
    b = p.axes[0][1] if p is not None else (Atom("b", "b", 1, int(out_shape[0])),)
    hh, ww = _grid(int(out_shape[2]), int(out_shape[3]))
    return _prov(((0, b), (0, _channel(out_shape[1])), (0, hh), (0, ww)))


def _on_positions(name: str, p: Optional[Provenance], in_shape, out_shape, pointwise: bool) -> Result:
    """Convolutions, pooling, interpolation: channels-first in, a fresh grid out (the same positions if 1 x 1)."""
    if len(out_shape) < 3:
        return "untracked"
    if pointwise and p is not None and len(p.axes) == len(out_shape) and _pure_channel(p.axes[1]):
        return _prov([p.axes[0], (0, _channel(out_shape[1]))] + list(p.axes[2:]), p.shift)
    if len(out_shape) != 4:
        return f"goes through {name} over axes that are not a 2-D grid"
    if p is None or _is_grid_form(p, 2):
        return _fresh_grid(p, out_shape)
    return f"goes through {name} over axes that are not the image grid (patches, windows or tokens)"


def _getitem(p: Provenance, shape, index) -> Result:
    if not isinstance(index, tuple):
        index = (index,)
    if any(isinstance(i, torch.Tensor) or isinstance(i, (list, bool)) for i in index):
        return "is indexed with a tensor or list (a gather)"
    n_real = sum(1 for i in index if i is not None and i is not Ellipsis)
    if Ellipsis in index:
        e = index.index(Ellipsis)
        index = index[:e] + (slice(None),) * (len(shape) - n_real) + index[e + 1 :]
    index = index + (slice(None),) * (len(shape) - sum(1 for i in index if i is not None))
    axes, d, regrid = [], 0, {}
    for i in index:
        if i is None:
            axes.append((0, ()))
            continue
        k, atoms = p.axes[d]
        n = int(shape[d])
        d += 1
        if isinstance(i, int):
            if any(x.role in "bhwm" for x in atoms) and not (k and (i % n) < k):
                return "selects single positions of the grid or batch"
            continue  # a channel, or a class token: the axis goes
        start, stop, step = i.indices(n)
        if (start, stop, step) == (0, n, 1):
            axes.append((k, atoms))
        elif k and step == 1 and start == k and stop == n:
            axes.append((0, atoms))  # drop the class tokens
        elif k and step == 1 and start == 0 and stop <= k:
            axes.append((stop, ()))  # the class tokens alone
        elif _pure_channel((k, atoms)):
            axes.append((0, _channel(len(range(start, stop, step)))))
        elif (
            not k and len(atoms) == 1 and _whole(atoms[0]) and atoms[0].key[0] == "pad" and step == 1
            and start == atoms[0].key[3]["hw".index(atoms[0].role)]
        ):
            axes.append((0, (Atom(atoms[0].role, atoms[0].key, 1, stop - start),)))  # a crop of the padding
        elif not k and len(atoms) == 1 and _whole(atoms[0]) and start < step and stop == n and n % step == 0:
            # a strided subsampling (LeViT's ::2, Swin's patch merging x[:, 1::2, 0::2]): a coarser grid
            regrid[atoms[0].role] = len(range(start, stop, step))
            axes.append((0, atoms))
        else:
            return "slices part of the grid or batch"
    if regrid:
        key = next(x.key for x in p.atoms() if x.role in "hw")
        new = (regrid.get("h", key[0]), regrid.get("w", key[1]))
        if any(x.role in "hw" and (not _whole(x) or x.key[0] == "pad") for x in p.atoms()):
            return "subsamples a grid that is split into factors"
        axes = [
            (k, tuple(Atom(x.role, new, 1, new["hw".index(x.role)]) if x.role in "hw" else x for x in atoms))
            for k, atoms in axes
        ]
    return _prov(_unpad(axes), p.shift)


def _structure(p: Provenance, skip: Optional[int] = None):
    """What two operands of an elementwise op must share: batch and grid factors in place, channel counts."""
    return (
        tuple(
            (k, tuple(x for x in atoms if x.role != "c"), math.prod(x.size for x in atoms if x.role == "c"))
            for d, (k, atoms) in enumerate(p.axes)
            if d != skip
        ),
        p.shift,
    )


def _cat(parts: Sequence[Tuple[Optional[Result], Tuple[int, ...]]], dim: int) -> Result:
    ndim = len(parts[0][1])
    dim = int(dim) % ndim
    tracked = [(r, s) for r, s in parts if isinstance(r, Provenance)]
    if not tracked:
        return next((r for r, _ in parts if isinstance(r, str)), "untracked")
    if any(isinstance(r, str) and r != "untracked" for r, _ in parts):
        return next(r for r, _ in parts if isinstance(r, str) and r != "untracked")
    ref = tracked[0][0]
    if any(_structure(r, dim) != _structure(ref, dim) for r, _ in tracked):
        return "concatenates tensors whose layouts differ"
    total = sum(int(s[dim]) for _, s in parts)
    axes = list(ref.axes)
    if all(_pure_channel(r.axes[dim]) for r, _ in tracked):
        axes[dim] = (0, _channel(total))
        return _prov(axes, ref.shift)
    grid = [j for j, (r, _) in enumerate(parts) if isinstance(r, Provenance) and r.axes[dim][1]]
    if len(grid) == 1 and grid[0] == len(parts) - 1:
        r, _ = parts[grid[0]]
        lead = sum(int(s[dim]) for _, s in parts[:-1])
        axes = list(r.axes)
        axes[dim] = (r.axes[dim][0] + lead, r.axes[dim][1])  # class/register tokens put before the grid's
        return _prov(axes, r.shift)
    return "concatenates parts of the grid"


def _split(p: Provenance, dim: int, sizes: Sequence[int], keep_axis: bool) -> List[Result]:
    dim = int(dim) % len(p.axes)
    k, atoms = p.axes[dim]
    if not _pure_channel((k, atoms)):
        if k and keep_axis and len(sizes) == 2 and sizes[0] == k:
            head = list(p.axes)
            head[dim] = (k, ())
            tail = list(p.axes)
            tail[dim] = (0, atoms)
            return [_prov(head, p.shift), _prov(tail, p.shift)]
        return ["splits the grid or batch"] * len(sizes)
    outs = []
    for s in sizes:
        axes = list(p.axes)
        if keep_axis:
            axes[dim] = (0, _channel(s))
        else:
            del axes[dim]
        outs.append(_prov(axes, p.shift))
    return outs


def _roll(p: Provenance, shifts, dims) -> Result:
    shifts = [shifts] if isinstance(shifts, int) else list(shifts)
    dims = [dims] if isinstance(dims, int) else list(dims or [])
    if len(shifts) != len(dims):
        return "is rolled as a flat tensor"
    acc = dict(p.shift)
    for s, d in zip(shifts, dims):
        k, atoms = p.axes[int(d) % len(p.axes)]
        if k or len(atoms) != 1 or not _whole(atoms[0]):
            return "is rolled along an axis that is not a whole row or column axis of the grid"
        role = atoms[0].role
        acc[role] = (acc.get(role, 0) + int(s)) % atoms[0].size
    return Provenance(p.axes, tuple(sorted((r, s) for r, s in acc.items() if s)))


def _pair(v) -> Tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else tuple(int(x) for x in v)


def _patch_args(kernel, stride, padding, dilation):
    """``F.unfold`` / ``F.fold``'s arguments as pairs: kernel, stride (default 1), padding, dilation."""
    return _pair(kernel), _pair(stride if stride is not None else 1), _pair(padding), _pair(dilation)


def _unfold(p: Provenance, in_shape, kernel, stride, padding, dilation) -> Result:
    """``F.unfold`` with a kernel equal to its stride (non-overlapping patches): a rearrangement."""
    (kh, kw), (sh, sw), pad, dil = _patch_args(kernel, stride, padding, dilation)
    b, c, h, w = (int(s) for s in in_shape)
    if (kh, kw) != (sh, sw) or pad != (0, 0) or dil != (1, 1) or h % kh or w % kw:
        return "goes through F.unfold with overlapping or padded patches (not a partition)"
    r = _reshape(p, (b, c, h // kh, kh, w // kw, kw))
    r = _permute(r, (0, 1, 3, 5, 2, 4)) if isinstance(r, Provenance) else r
    return _reshape(r, (b, c * kh * kw, (h // kh) * (w // kw))) if isinstance(r, Provenance) else r


def _fold(p: Provenance, in_shape, output_size, kernel, stride, padding, dilation) -> Result:
    (kh, kw), (sh, sw), pad, dil = _patch_args(kernel, stride, padding, dilation)
    (h, w), b = _pair(output_size), int(in_shape[0])
    if (kh, kw) != (sh, sw) or pad != (0, 0) or dil != (1, 1) or h % kh or w % kw:
        return "goes through F.fold with overlapping or padded patches"
    c = int(in_shape[1]) // (kh * kw)
    r = _reshape(p, (b, c, kh, kw, h // kh, w // kw))
    r = _permute(r, (0, 1, 4, 2, 5, 3)) if isinstance(r, Provenance) else r
    return _reshape(r, (b, c, h, w)) if isinstance(r, Provenance) else r


def _einsum(equation: str, operands, out_shape) -> Result:
    if "..." in equation or "->" not in equation:
        return "goes through an einsum with an implicit output"
    ins, out = equation.replace(" ", "").split("->")
    specs = ins.split(",")
    if len(specs) != len(operands):
        return "untracked"
    found: Dict[str, Tuple[int, Axis]] = {}
    for spec, (r, _) in zip(specs, operands):
        if isinstance(r, str) and r != "untracked":
            return r
        for letter, axis in zip(spec, r.axes if isinstance(r, Provenance) else [None] * len(spec)):
            if axis is not None and letter not in found:
                found[letter] = axis
    seen, axes = set(), []
    for letter, size in zip(out, out_shape):
        axis = found.get(letter)
        if axis is None or any(a in seen for a in axis[1]):
            axes.append((0, _channel(size)))
        else:
            seen.update(axis[1])
            axes.append(axis)
    if sum(a.role == "b" for _, atoms in axes for a in atoms) != 1:
        return "goes through an einsum that moves the batch"
    return _prov(axes)


# ---------------------------------------------------------------------- reading a tensor as a map
def _ordered(atoms: Sequence[Atom]) -> List[int]:
    """Indices of ``atoms`` in the canonical order: batch, channels (by key as met, coarse first), rows, columns."""
    keys: List[object] = []
    for a in atoms:
        if a.role == "c" and a.key not in keys:
            keys.append(a.key)
    rank = {"b": 0, "c": 1, "p": 2, "h": 3, "w": 4}

    def sort_key(i):
        a = atoms[i]
        return (rank[a.role], keys.index(a.key) if a.role == "c" else 0, -a.stride)

    return sorted(range(len(atoms)), key=sort_key)


class Reading(str):
    """A layer's layout: its name (a ``str``, what the report shows) and how to fold the raw output
    into ``B x C x h x w`` (:meth:`to_map`) and back (:meth:`from_map`), class tokens apart."""

    def __new__(cls, name: str, provenance: Provenance):
        obj = super().__new__(cls, name)
        obj.provenance = provenance
        atoms = provenance.atoms()
        grid = next((a.key for a in atoms if a.role in "hw"), (1, 1))
        obj.grid = grid
        obj.channels = math.prod(a.size for a in atoms if a.role == "c")
        obj.prefix_axis = next((d for d, (k, _) in enumerate(provenance.axes) if k), None)
        obj.prefix = provenance.axes[obj.prefix_axis][0] if obj.prefix_axis is not None else 0
        return obj

    def __reduce__(self):
        return (Reading, (str(self), self.provenance))

    @property
    def is_map(self) -> bool:
        return self.grid[0] * self.grid[1] > 1

    def _body(self, t: torch.Tensor) -> torch.Tensor:
        if self.prefix_axis is None:
            return t
        return t.narrow(self.prefix_axis, self.prefix, t.shape[self.prefix_axis] - self.prefix)

    def _plan(self, with_prefix: bool):
        atoms: List[Atom] = []
        for d, (k, axis_atoms) in enumerate(self.provenance.axes):
            if with_prefix and d == self.prefix_axis:
                atoms.append(Atom("p", "p", 1, k))
            elif not with_prefix or d != self.prefix_axis:
                atoms.extend(axis_atoms)
        return atoms, _ordered(atoms)

    def _to(self, t: torch.Tensor, with_prefix: bool) -> torch.Tensor:
        atoms, order = self._plan(with_prefix)
        if (not with_prefix and not self.provenance.shift and list(order) == sorted(order)
                and tuple(t.shape[1:]) == (self.channels, *self.grid)):
            return t  # already B x C x h x w (channels-first maps): no view ops, each one an ATen call
        sizes = [-1 if a.role == "b" else a.size for a in atoms]
        u = t.reshape(sizes).permute(order)
        b = u.shape[0]
        if with_prefix:
            return u.reshape(b, self.channels, self.prefix)
        m = u.reshape(b, self.channels, *self.grid)
        shift = dict(self.provenance.shift)
        if shift:
            m = torch.roll(m, shifts=(-shift.get("h", 0), -shift.get("w", 0)), dims=(2, 3))
        return m

    def to_map(self, t: torch.Tensor) -> torch.Tensor:
        """The raw layer output as ``B x C x h x w`` (``B x C`` when the grid is ``1 x 1``), class tokens left out."""
        m = self._to(self._body(t), False)
        return m if self.is_map else m.flatten(1)

    def prefix_part(self, t: torch.Tensor) -> Optional[torch.Tensor]:
        """The class tokens as ``B x C x k`` (``None`` without)."""
        if self.prefix_axis is None:
            return None
        return self._to(t.narrow(self.prefix_axis, 0, self.prefix), True)

    def _from(self, m: torch.Tensor, with_prefix: bool, like_shape: Sequence[int]) -> torch.Tensor:
        atoms, order = self._plan(with_prefix)
        b = m.shape[0]
        if not with_prefix:
            shift = dict(self.provenance.shift)
            if shift:
                m = torch.roll(
                    m.reshape(b, self.channels, *self.grid), shifts=(shift.get("h", 0), shift.get("w", 0)), dims=(2, 3)
                )
        canonical = [b if atoms[i].role == "b" else atoms[i].size for i in order]
        inverse = [0] * len(order)
        for j, i in enumerate(order):
            inverse[i] = j
        return m.reshape(canonical).permute(inverse).reshape(like_shape)

    def from_map(self, m: torch.Tensor, like: torch.Tensor, prefix: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The inverse of :meth:`to_map`: a tensor like ``like`` from a map (and ``B x C x k`` class tokens)."""
        shape = list(like.shape)
        if self.prefix_axis is None:
            return self._from(m, False, shape)
        body = list(shape)
        body[self.prefix_axis] -= self.prefix
        head = list(shape)
        head[self.prefix_axis] = self.prefix
        pre = (
            prefix
            if prefix is not None
            else torch.zeros(m.shape[0], self.channels, self.prefix, dtype=m.dtype, device=m.device)
        )
        return torch.cat([self._from(pre, True, head), self._from(m, False, body)], dim=self.prefix_axis)

    @classmethod
    def override(cls, name: str, shape: Sequence[int]) -> Union["Reading", str]:
        """The reading the user names (``layouts=``) for an output of ``shape``, or why it does not fit."""
        shape = [int(s) for s in shape]
        b = (Atom("b", "b", 1, shape[0]),)
        if name in ("channels_first", "channels_last"):
            if len(shape) != 4:
                return f"cannot be read {name} (that needs B x C x h x w or B x h x w x C)"
            h, w = (shape[2], shape[3]) if name == "channels_first" else (shape[1], shape[2])
            hh, ww = _grid(h, w)
            c = _channel(shape[1] if name == "channels_first" else shape[3])
            axes = (
                ((0, b), (0, c), (0, hh), (0, ww)) if name == "channels_first" else ((0, b), (0, hh), (0, ww), (0, c))
            )
            return cls(name, _prov(axes))
        if name in ("tokens", "tokens_transposed"):
            if len(shape) != 3:
                return f"cannot be read as {name} (that needs a 3-D output)"
            n, d = (shape[1], shape[2]) if name == "tokens" else (shape[2], shape[1])
            for k in (0, 1, 2):
                s = math.isqrt(max(n - k, 0))
                if n - k > 1 and s * s == n - k:
                    hh, ww = _grid(s, s)
                    grid = (k, hh + ww)
                    axes = ((0, b), grid, (0, _channel(d))) if name == "tokens" else ((0, b), (0, _channel(d)), grid)
                    return cls(name, _prov(axes))
            return f"cannot be read as {name}: N={n} tokens are not a square plus 0-2 class tokens"
        return f"has no layout named {name!r}"


def _name(p: Provenance, ndim: int) -> str:
    roles = [[a.role for a in atoms] for _, atoms in p.axes]
    b_axis = next(d for d, r in enumerate(roles) if "b" in r)
    spatial = [a for a in p.atoms() if a.role in "hw"]
    if not spatial:
        return "vector"
    if len(roles[b_axis]) > 1:
        return "windows"
    flat = [("c" if set(r) == {"c"} else "".join(r)) for r in roles if r]
    if flat == ["b", "c", "h", "w"] and ndim == 4:
        return "channels_first"
    if flat == ["b", "h", "w", "c"] and ndim == 4:
        return "channels_last"
    if flat == ["b", "hw", "c"] and ndim == 3:
        return "tokens"
    if flat == ["b", "c", "hw"] and ndim == 3:
        return "tokens_transposed"
    if sum(1 for r in roles if "c" in r) > 1:
        return "heads"
    return "patches"


def read(p: Result, shape: Sequence[int]) -> Union[Reading, str]:
    """A provenance as a :class:`Reading`, or the reason it is no map of a grid (nor a vector)."""
    if isinstance(p, str):
        return p
    atoms = p.atoms()
    if sum(a.role == "b" for a in atoms) != 1:
        return "does not hold the batch on one axis"
    if any(a.role == "m" for a in atoms):
        return MIXED
    spatial = [a for a in atoms if a.role in "hw"]
    if any(a.key[0] == "pad" for a in spatial):
        return "holds a grid zero-padded beyond the image's (cropped back later)"
    if len({a.key for a in spatial}) > 1:
        return "mixes factors of two different grids"
    for role in "hw":
        parts = sorted((a for a in spatial if a.role == role), key=lambda a: -a.stride)
        if not parts:
            continue
        full, stride = parts[0].key["hw".index(role)], 1
        for a in reversed(parts):
            if a.stride != stride:
                return "holds only part of the grid's positions (pooled or selected over part of them)"
            stride *= a.size
        if stride != full:
            return "holds only part of the grid's positions (pooled or selected over part of them)"
    if spatial and len(spatial) and {a.role for a in spatial} != {"h", "w"}:
        key = spatial[0].key
        if (key[0] > 1 and not any(a.role == "h" for a in spatial)) or (
            key[1] > 1 and not any(a.role == "w" for a in spatial)
        ):
            return "holds only part of the grid's positions (pooled or selected over part of them)"
    prefixed = [(k, atoms) for k, atoms in p.axes if k]
    if len(prefixed) > 1 or any(any(a.role not in "hw" for a in atoms) or not atoms for _, atoms in prefixed):
        return "holds class tokens on an axis that is not the grid's"
    return Reading(_name(p, len(shape)), p)


# ---------------------------------------------------------------------- following the forward
_VIEWS = {
    "view",
    "reshape",
    "flatten",
    "unflatten",
    "view_as",
    "reshape_as",
    "squeeze",
    "unsqueeze",
    "ravel",
    "_unsafe_view",
    "contiguous",
}
_REDUCTIONS = {
    "mean",
    "sum",
    "amax",
    "amin",
    "max",
    "min",
    "std",
    "var",
    "logsumexp",
    "norm",
    "prod",
    "nansum",
    "nanmean",
    "median",
}
_POSITIONS_2D = {
    "conv2d",
    "conv_transpose2d",
    "max_pool2d",
    "avg_pool2d",
    "max_pool2d_with_indices",
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "adaptive_max_pool2d_with_indices",
    "lp_pool2d",
    "interpolate",
    "upsample",
    "upsample_bilinear",
    "upsample_nearest",
    "pixel_shuffle",
    "pixel_unshuffle",
    "fractional_max_pool2d",
    "grid_sample",
}
_POSITIONS_OTHER = {
    "conv1d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose3d",
    "max_pool1d",
    "avg_pool1d",
    "adaptive_avg_pool1d",
    "adaptive_max_pool1d",
    "max_pool3d",
    "avg_pool3d",
    "adaptive_avg_pool3d",
}
# Shape-keeping ops that move entries: their output is not indexed like their input.
_REINDEX = {
    "flip",
    "fliplr",
    "flipud",
    "rot90",
    "sort",
    "argsort",
    "gather",
    "scatter",
    "index_select",
    "take_along_dim",
    "index_put",
    "take",
    "repeat",
    "repeat_interleave",
    "tile",
    "expand",
    "expand_as",
    "broadcast_to",
    "channel_shuffle",
    "native_channel_shuffle",
    "diag_embed",
    "tril",
    "triu",
}
# New tensors that take only a shape, dtype or device from their argument.
_FRESH = {
    "new_zeros",
    "new_ones",
    "new_full",
    "new_empty",
    "new_tensor",
    "zeros_like",
    "ones_like",
    "empty_like",
    "full_like",
    "rand_like",
    "randn_like",
    "randint_like",
    "bernoulli",
    "bernoulli_",
    "detach_",
}
_PROPERTY_T = {"T": "all", "mT": "last2", "mH": "last2", "H": "all"}


def _arg(args, kwargs, i, name, default=None):
    if name in kwargs:
        return kwargs[name]
    return args[i] if len(args) > i else default


def _dims_of(args, start: int):
    rest = args[start:]
    if len(rest) == 1 and isinstance(rest[0], (list, tuple, torch.Size)):
        return list(rest[0])
    return list(rest)


class ProvenanceMode(TorchFunctionMode):
    """Follows every tensor's :class:`Provenance` through the torch functions of a forward."""

    def __init__(self):
        super().__init__()
        self.table: Dict[int, Tuple[weakref.ref, Result]] = {}
        self.paused = False

    def set(self, t: torch.Tensor, r: Result) -> None:
        try:
            self.table[id(t)] = (weakref.ref(t), r)
        except TypeError:
            pass

    def get(self, t) -> Optional[Result]:
        if not isinstance(t, torch.Tensor):
            return None
        entry = self.table.get(id(t))
        return entry[1] if entry is not None and entry[0]() is t else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.paused:
            return out
        try:
            self._follow(func, args, kwargs, out)
        except Exception:  # noqa: BLE001 - following must never break the forward; the output stays untracked
            pass
        return out

    # the rules, by function
    def _follow(self, func, args, kwargs, out) -> None:
        name = getattr(func, "__name__", "")
        if name == "__get__":
            prop = getattr(getattr(func, "__self__", None), "__name__", "")
            if prop in _PROPERTY_T and isinstance(out, torch.Tensor):
                p = self.get(args[0] if args else None)
                if isinstance(p, Provenance):
                    n = len(p.axes)
                    self.set(
                        out,
                        _transpose(p, n - 2, n - 1)
                        if _PROPERTY_T[prop] == "last2" or n == 2
                        else _permute(p, list(range(n))[::-1]),
                    )
                elif isinstance(p, str):
                    self.set(out, p)
            return
        if name in _FRESH:
            return
        tensors_out = out if isinstance(out, (tuple, list)) else (out,)
        if not any(isinstance(o, torch.Tensor) for o in tensors_out):
            return
        flat_in = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
        for a in list(args) + list(kwargs.values()):
            if isinstance(a, (list, tuple)):
                flat_in += [x for x in a if isinstance(x, torch.Tensor)]
        known = [(t, self.get(t)) for t in flat_in]
        known = [(t, r) for t, r in known if r is not None]
        if not known:
            return
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        p = self.get(x) if x is not None else None
        label = f"torch {name}"
        r = self._rule(func, name, args, kwargs, out, x, p, known)
        if r is NotImplemented:
            r = self._shape_keeping(name, out, known, label)
        if isinstance(r, list):
            for o, ri in zip(tensors_out, r):
                if isinstance(o, torch.Tensor) and ri is not None:
                    self.set(o, ri)
            return
        first = next(o for o in tensors_out if isinstance(o, torch.Tensor))
        if r is not None and r != "untracked":
            self.set(first, r)
        elif r == "untracked" and x is not None and self.get(first) is None:
            self.set(first, f"went through {label}, whose effect on the layout is not followed")

    def _shape_keeping(self, name, out, known, label):
        o = out if isinstance(out, torch.Tensor) else next(t for t in out if isinstance(t, torch.Tensor))
        same = [(t, r) for t, r in known if tuple(t.shape) == tuple(o.shape)]
        if name in _REINDEX or name.rstrip("_") in _REINDEX or not same:
            return f"went through {label}, whose effect on the layout is not followed"
        valid = [r for _, r in same if isinstance(r, Provenance)]
        if not valid:
            return same[0][1]
        if any(_structure(v) != _structure(valid[0]) for v in valid[1:]):
            return f"combines tensors in different layouts ({label})"
        return valid[0]

    def _rule(self, func, name, args, kwargs, out, x, p, known):
        if p is not None and isinstance(p, str) and name not in ("cat", "concat", "concatenate", "stack", "einsum"):
            if name in _VIEWS or name in _REDUCTIONS or name in ("permute", "transpose", "__getitem__", "linear"):
                return p  # the trail was lost before
        if name in _VIEWS and isinstance(p, Provenance) and isinstance(out, torch.Tensor):
            if out.numel() != x.numel():
                return "untracked"
            return _reshape(p, out.shape)
        if name in ("permute",) and isinstance(p, Provenance):
            return _permute(p, _dims_of(args, 1) if "dims" not in kwargs else kwargs["dims"])
        if name in ("transpose", "swapaxes", "swapdims") and isinstance(p, Provenance):
            return _transpose(p, _arg(args, kwargs, 1, "dim0"), _arg(args, kwargs, 2, "dim1"))
        if name == "t" and isinstance(p, Provenance):
            return _permute(p, list(range(len(p.axes)))[::-1])
        if name in ("movedim", "moveaxis") and isinstance(p, Provenance):
            src, dst = _arg(args, kwargs, 1, "source"), _arg(args, kwargs, 2, "destination")
            src = [src] if isinstance(src, int) else list(src)
            dst = [dst] if isinstance(dst, int) else list(dst)
            n = len(p.axes)
            order = [d for d in range(n) if d not in [s % n for s in src]]
            for s, d in sorted(zip([s % n for s in src], [d % n for d in dst]), key=lambda z: z[1]):
                order.insert(d, s)
            return _permute(p, order)
        if name in _REDUCTIONS and isinstance(p, Provenance):
            o = out if isinstance(out, torch.Tensor) else out[0]
            if tuple(o.shape) == tuple(x.shape) and o.dim() == x.dim():
                return NotImplemented
            dims = _arg(args, kwargs, 1, "dim")
            if name == "norm" and "dim" not in kwargs and len(args) > 2:
                dims = args[2]
            r = _reduce(
                p, dims, bool(_arg(args, kwargs, 2, "keepdim", False)) if name != "norm" else o.dim() == x.dim()
            )
            return [r, r] if isinstance(out, tuple) else r
        if name == "__getitem__" and isinstance(p, Provenance):
            return _getitem(p, x.shape, args[1])
        if name in ("cat", "concat", "concatenate", "stack"):
            tensors = list(_arg(args, kwargs, 0, "tensors"))
            dim = int(_arg(args, kwargs, 1, "dim", 0))
            if name == "stack":
                dim = dim % (tensors[0].dim() + 1)
                parts = []
                for t in tensors:
                    r = self.get(t)
                    shape = list(t.shape)
                    shape.insert(dim, 1)
                    parts.append((_reshape(r, shape) if isinstance(r, Provenance) else r, tuple(shape)))
            else:
                parts = [(self.get(t), tuple(t.shape)) for t in tensors]
            return _cat([(r if r is not None else "untracked", s) for r, s in parts], dim)
        if name in ("split", "chunk", "unbind", "tensor_split", "split_with_sizes") and isinstance(p, Provenance):
            dim = int(_arg(args, kwargs, 2 if name != "unbind" else 1, "dim", 0))
            sizes = [int(o.shape[dim]) if name != "unbind" else 1 for o in out]
            return _split(p, dim, sizes, keep_axis=name != "unbind")
        if name == "linear":
            weight = _arg(args, kwargs, 1, "weight")
            if self.get(weight) is not None:
                return NotImplemented
            return _contract(p if isinstance(p, Provenance) else None, out.shape[-1])
        if name in ("matmul", "__matmul__", "bmm", "mm", "baddbmm", "addmm", "addbmm", "__rmatmul__"):
            if name in ("baddbmm", "addmm", "addbmm"):
                a, b = _arg(args, kwargs, 1, "batch1"), _arg(args, kwargs, 2, "batch2")
            elif name == "__rmatmul__":
                a, b = args[1], args[0]
            else:
                a, b = args[0], args[1]
            pa, pb = self.get(a), self.get(b)
            if isinstance(pa, str) or (pa is None and isinstance(pb, str)):
                return pa if isinstance(pa, str) else pb
            if pa is None and isinstance(pb, Provenance):  # W @ x: a linear map over x's second-last axis
                n = len(pb.axes)
                moved = _transpose(pb, n - 2, n - 1)
                r = _contract(moved, out.shape[-2])
                return _transpose(r, n - 2, n - 1) if isinstance(r, Provenance) else r
            if not isinstance(pa, Provenance) or a.dim() != out.dim():
                return "untracked"
            b_last = pb.axes[-1] if isinstance(pb, Provenance) and b.dim() >= 2 else None
            r = _contract(pa, out.shape[-1], b_last if isinstance(pb, Provenance) else None)
            if (
                isinstance(r, Provenance)
                and isinstance(pb, Provenance)
                and b_last is not None
                and not _pure_channel(b_last)
            ):
                r = _prov(list(r.axes[:-1]) + [(0, _channel(out.shape[-1]))], r.shift)
            return r
        if name == "scaled_dot_product_attention":
            q, v = _arg(args, kwargs, 0, "query"), _arg(args, kwargs, 2, "value")
            pq, pv = self.get(q), self.get(v)
            if not isinstance(pq, Provenance):
                return pq if isinstance(pq, str) else "untracked"
            last = (
                pv.axes[-1]
                if isinstance(pv, Provenance) and _pure_channel(pv.axes[-1])
                else (0, _channel(out.shape[-1]))
            )
            return _prov(list(pq.axes[:-1]) + [last], pq.shift)
        if name == "einsum":
            eq = args[0]
            ops = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
            return _einsum(eq, [(self.get(o) or "untracked", o.shape) for o in ops], out.shape)
        if name in _POSITIONS_2D or name in _POSITIONS_OTHER:
            if name in ("grid_sample",):
                return "goes through grid_sample"
            pointwise = False
            if name.startswith("conv"):
                w = _arg(args, kwargs, 1, "weight")
                stride = _arg(args, kwargs, 3, "stride", 1)
                padding = _arg(args, kwargs, 4, "padding", 0)
                def ones(v):
                    return all(int(s) == 1 for s in ([v] if isinstance(v, int) else v))
                def zeros(v):
                    return v == "valid" or ones([int(s) + 1 for s in ([v] if isinstance(v, int) else v)])
                pointwise = all(int(s) == 1 for s in w.shape[2:]) and ones(stride) and zeros(padding)
            o = out if isinstance(out, torch.Tensor) else out[0]
            if isinstance(p, str):
                return [p, p] if isinstance(out, tuple) else p  # the trail was lost before
            r = _on_positions(f"torch {name}", p, x.shape, o.shape, pointwise)
            return [r, r] if isinstance(out, tuple) else r
        if func is F.unfold and isinstance(p, Provenance):
            return _unfold(
                p,
                x.shape,
                _arg(args, kwargs, 1, "kernel_size"),
                _arg(args, kwargs, 4, "stride", 1),
                _arg(args, kwargs, 3, "padding", 0),
                _arg(args, kwargs, 2, "dilation", 1),
            )
        if func is F.fold and isinstance(p, Provenance):
            return _fold(
                p,
                x.shape,
                _arg(args, kwargs, 1, "output_size"),
                _arg(args, kwargs, 2, "kernel_size"),
                _arg(args, kwargs, 5, "stride", 1),
                _arg(args, kwargs, 4, "padding", 0),
                _arg(args, kwargs, 3, "dilation", 1),
            )
        if name == "roll" and isinstance(p, Provenance):
            return _roll(p, _arg(args, kwargs, 1, "shifts"), _arg(args, kwargs, 2, "dims"))
        if name == "pad" and isinstance(p, Provenance):
            return _pad(p, _arg(args, kwargs, 1, "pad"))
        return NotImplemented

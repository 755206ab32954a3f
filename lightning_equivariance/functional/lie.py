"""Lie derivatives of sampled images and the local equivariance error (Gruver et al. 2023 §4).

Pure torch, no Lightning or TensorBoard.

**Transforms as velocity fields.** A one-parameter image transform ``Phi_t`` samples the
image at ``A_t p`` (``affine_grid`` convention: output pixel ``p`` reads the input at
``theta_t [p; 1]``), so ``(Phi_t x)(p) = x(A_t p)`` and its generator on an image is

    d/dt|_{t=0} x(Phi_t p) = grad x(p) . v(p),    v(p) = V [x_p, y_p, 1]^T,

with ``V`` the 2 x 3 *velocity matrix* ``d theta_t / dt`` at ``t = 0`` and ``(x_p, y_p)``
normalised grid coordinates in ``[-1, 1]`` (``x`` along the width, ``y`` along the
height, pointing down). :data:`VELOCITY_MATRICES` holds the transforms of the paper's
reference code (units: normalised coordinates per unit ``t``, radians for rotations):

============================  ==========================  =========================
name                          ``theta_t`` (reference)     velocity ``v(x, y)``
============================  ==========================  =========================
``translation_x``             ``[[1, 0, t], [0, 1, 0]]``  ``(1, 0)``
``translation_y``             ``[[1, 0, 0], [0, 1, t]]``  ``(0, 1)``
``rotation``                  ``[[c, s, 0], [-s, c, 0]]`` ``(y, -x)``
``scale``                     ``(1 - t) I``               ``(-x, -y)``
``shear``                     ``[[1, t, 0], [0, 1, 0]]``  ``(y, 0)``
``hyperbolic_rotation``       ``[[ch, sh], [sh, ch]]``    ``(y, x)``
============================  ==========================  =========================

``t = 1`` of a translation is half the image (``(W - 1) / 2`` pixels with reflection
padding). ``saturation`` is not spatial: the reference's ``x -> (1 + t) x``, generator
``G x = x`` (an intensity scaling, not an HSV saturation).

**The sampled generator** (docs/measures.md §4). The bilinear interpolant of a sampled image
is not differentiable at the pixel centres; the generator takes the mean of its two
one-sided derivatives, i.e. the central difference ``(a[j+1] - a[j-1]) / 2`` per pixel,
times the pixels per normalised unit. Padding:

* ``"reflection"`` (default, the paper's choice): ``align_corners=True`` coordinates,
  pixel ``j`` of ``w`` at ``x = -1 + 2 j / (w - 1)``; the image is mirrored about the
  border pixel centres, so the derivative across the border is 0. This is exactly the
  limit ``t -> 0`` of the central finite difference ``(Phi_t x - Phi_{-t} x) / 2t``
  through ``grid_sample(..., padding_mode="reflection", align_corners=True)``.
* ``"circular"``: the image is periodic with period 2 in normalised coordinates
  (``align_corners=False`` convention: pixel ``j`` at ``x = (2 j + 1) / w - 1``), the
  difference wraps around. A circular-padded convolution commutes exactly with this
  translation generator, and a stride-2 down-sampling halves the pixels per unit
  exactly (``w / 2`` instead of ``(w - 1) / 2``).

Feature maps of any resolution ``h x w`` use the same normalised coordinates, so one
``t`` moves every layer by the same fraction of its extent.

**LEE** (Eq. 4): ``E_x ||L_X f(x)||^2 / dim``. Streaming helpers reduce a batch of Lie
derivatives ``b x C x P`` (``C`` channels of ``P`` entries; vectors are ``b x 1 x D``)
to per-channel sums of squares, entry counts and per-image values, all sums.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

__all__ = [
    "stencil_too_small",
    "VELOCITY_MATRICES",
    "INTENSITY_TRANSFORMS",
    "PADDINGS",
    "grid_coordinates",
    "image_gradient",
    "velocity_field",
    "lie_generator",
    "lie_residual",
    "residual_fields",
    "lie_residual_rows",
    "local_equivariance_error",
]

#: name -> 2 x 3 velocity matrix ``V = d theta_t / dt |_{t=0}`` (normalised coordinates).
VELOCITY_MATRICES: Dict[str, Tuple[Tuple[float, float, float], Tuple[float, float, float]]] = {
    "translation_x": ((0.0, 0.0, 1.0), (0.0, 0.0, 0.0)),
    "translation_y": ((0.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "rotation": ((0.0, 1.0, 0.0), (-1.0, 0.0, 0.0)),
    "scale": ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
    "shear": ((0.0, 1.0, 0.0), (0.0, 0.0, 0.0)),
    "hyperbolic_rotation": ((0.0, 1.0, 0.0), (1.0, 0.0, 0.0)),
}
#: Transforms acting on intensities, not positions: generator ``G a = a``.
INTENSITY_TRANSFORMS = ("saturation",)
PADDINGS = ("reflection", "circular")

Velocity = Union[str, torch.Tensor, Sequence[Sequence[float]]]


def _check_padding(padding: str) -> None:
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")


def grid_coordinates(n: int, padding: str = "reflection", dtype=None, device=None) -> torch.Tensor:
    """Normalised coordinates of the ``n`` pixel centres along one axis (see module docstring)."""
    _check_padding(padding)
    idx = torch.arange(n, dtype=dtype or torch.get_default_dtype(), device=device)
    if padding == "circular":
        return (2 * idx + 1) / n - 1
    return idx * (2.0 / (n - 1)) - 1 if n > 1 else torch.zeros_like(idx)


def _pixels_per_unit(n: int, padding: str) -> float:
    """Pixels per normalised unit: ``(n - 1) / 2`` (reflection, ``align_corners=True``) or ``n / 2`` (circular)."""
    return n / 2.0 if padding == "circular" else (n - 1) / 2.0


def _central_difference(a: torch.Tensor, dim: int, padding: str) -> torch.Tensor:
    """d a / d(normalised coordinate) along ``dim`` (-1 or -2): central difference, see module docstring."""
    n = a.shape[dim]
    out = torch.zeros_like(a)
    if n < 2:
        return out
    k = _pixels_per_unit(n, padding) / 2.0
    if n > 2:
        torch.sub(a.narrow(dim, 2, n - 2), a.narrow(dim, 0, n - 2), out=out.narrow(dim, 1, n - 2))
    if padding == "circular":  # the two wrapped ends
        out.narrow(dim, 0, 1).copy_(a.narrow(dim, 1, 1) - a.narrow(dim, n - 1, 1))
        out.narrow(dim, n - 1, 1).copy_(a.narrow(dim, 0, 1) - a.narrow(dim, n - 2, 1))
    # reflection: the mirrored neighbours are equal, derivative 0 at the border
    return out.mul_(k)


def image_gradient(a: torch.Tensor, padding: str = "reflection") -> Tuple[torch.Tensor, torch.Tensor]:
    """``(d a / dx, d a / dy)`` of maps ``... x h x w`` in normalised coordinates (central differences)."""
    _check_padding(padding)
    return _central_difference(a, -1, padding), _central_difference(a, -2, padding)


def _velocity_matrix(velocity: Velocity) -> Optional[Tuple[Tuple[float, ...], Tuple[float, ...]]]:
    """Plain floats (no tensors: no device round-trips), or ``None`` for an intensity transform."""
    if isinstance(velocity, str):
        if velocity in INTENSITY_TRANSFORMS:
            return None
        if velocity not in VELOCITY_MATRICES:
            raise ValueError(
                f"unknown transform {velocity!r}: choose from {sorted(VELOCITY_MATRICES) + list(INTENSITY_TRANSFORMS)}"
            )
        return VELOCITY_MATRICES[velocity]
    if isinstance(velocity, torch.Tensor):
        velocity = velocity.tolist()
    v = tuple(tuple(float(c) for c in row) for row in velocity)
    if len(v) != 2 or any(len(r) != 3 for r in v):
        raise ValueError(f"a velocity matrix is 2 x 3 (d theta / dt of affine_grid's theta), got {velocity!r}")
    return v


#: Pixels an axis needs for the central difference ``a[j+1] - a[j-1]`` to see anything: with 1 or
#: 2 pixels every pixel is a (mirrored or wrapped) border and the sampled generator is 0 there.
MIN_STENCIL_PIXELS = 3


def stencil_too_small(size: Tuple[int, int], velocity: Velocity, what: str = "map") -> Optional[str]:
    """Why the sampled generator of ``velocity`` is degenerate on an ``h x w`` grid, or ``None``.

    An axis the velocity field moves along (its row of the velocity matrix is not zero) with fewer
    than :data:`MIN_STENCIL_PIXELS` pixels has a zero central difference everywhere: the generator
    there is exactly 0, and a Lie derivative built on it reads as perfectly equivariant when it is
    only blind. Intensity transforms (no velocity field) need no stencil.
    """
    v = _velocity_matrix(velocity)
    if v is None:
        return None
    h, w = (int(n) for n in size)
    small = [f"{axis} ({n} pixel{'s' if n != 1 else ''})" for (row, axis, n) in zip(v, ("width", "height"), (w, h))
             if any(c != 0 for c in row) and n < MIN_STENCIL_PIXELS]
    if not small:
        return None
    return (
        f"the {what} ({h}x{w}) is too small for lee's central-difference stencil along its {' and '.join(small)}: "
        f"at least {MIN_STENCIL_PIXELS} pixels are needed, with fewer the sampled generator is exactly 0 and the "
        "value would read as perfect equivariance; use larger probe images or leave the layer out"
    )


def velocity_field(
    velocity: Velocity, size: Tuple[int, int], padding: str = "reflection", dtype=None, device=None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The velocity ``(v_x, v_y)`` at every pixel of an ``h x w`` grid, each ``h x w``."""
    v = _velocity_matrix(velocity)
    if v is None:
        raise ValueError(f"{velocity!r} acts on intensities and has no velocity field")
    h, w = size
    xs = grid_coordinates(w, padding, dtype, device)[None, :]
    ys = grid_coordinates(h, padding, dtype, device)[:, None]
    return tuple((r[0] * xs + r[1] * ys + r[2]).expand(h, w) for r in v)  # type: ignore[return-value]


def _axes(size: Tuple[int, int], v, padding: str, alpha: float, dtype=None, device=None):
    """Per image axis with a non-zero velocity component: ``(dim, n, field, const)``, on an ``h x w`` grid.

    ``alpha * v_dim * (pixels per unit) / 2`` is the factor of the neighbour difference
    ``a[j+1] - a[j-1]``: a broadcastable ``h x w`` ``field``, or a Python ``const`` when the
    component does not depend on the position (translations).
    """
    h, w = size
    for (cx, cy, c0), dim in zip(v, (-1, -2)):
        n = w if dim == -1 else h
        if n < 3 or (cx == 0 and cy == 0 and c0 == 0):
            continue  # 1 or 2 pixels: every pixel is a (mirrored or wrapped) border, derivative 0
        k = alpha * _pixels_per_unit(n, padding) / 2.0
        if cx == 0 and cy == 0:
            yield dim, n, None, c0 * k
        else:
            xs = grid_coordinates(w, padding, dtype, device)[None, :]
            ys = grid_coordinates(h, padding, dtype, device)[:, None]
            yield dim, n, ((cx * k) * xs + (cy * k) * ys + c0 * k).expand(h, w), None


def _add_difference(out, base, a, dim, n, field, const, padding):
    """``out = base + factor * (a[j+1] - a[j-1])`` along ``dim`` (``out`` may be ``base``: in place)."""
    inner = a.narrow(dim, 2, n - 2) - a.narrow(dim, 0, n - 2)
    target, src = out.narrow(dim, 1, n - 2), base.narrow(dim, 1, n - 2)
    if field is None:
        torch.add(src, inner, alpha=const, out=target)
    else:
        torch.addcmul(src, inner, field.narrow(dim, 1, n - 2), out=target)
    ends = ((0, 1, n - 1), (n - 1, 0, n - 2))
    for i, hi, lo in ends:
        if out is not base:
            out.narrow(dim, i, 1).copy_(base.narrow(dim, i, 1))
        if padding == "circular":  # the two wrapped ends (reflection: derivative 0 there)
            d = a.narrow(dim, hi, 1) - a.narrow(dim, lo, 1)
            if field is None:
                out.narrow(dim, i, 1).add_(d, alpha=const)
            else:
                out.narrow(dim, i, 1).addcmul_(d, field.narrow(dim, i, 1))
    return out


def _accumulate_generator(base: torch.Tensor, a: torch.Tensor, v, padding: str, alpha: float) -> torch.Tensor:
    """``base + alpha * (v_x d a/dx + v_y d a/dy)`` in a new tensor (``base`` is not modified).

    Written for few passes over memory: the first axis writes the result straight from
    ``base`` (no copy of it), the second adds in place.
    """
    out = None
    for dim, n, field, const in _axes(tuple(a.shape[-2:]), v, padding, alpha, a.dtype, a.device):
        if out is None:
            out = _add_difference(torch.empty_like(base), base, a, dim, n, field, const, padding)
        else:
            _add_difference(out, out, a, dim, n, field, const, padding)
    return base.clone() if out is None else out


def lie_generator(a: torch.Tensor, velocity: Velocity, padding: str = "reflection") -> torch.Tensor:
    """The transform's generator on sampled maps ``... x h x w``: ``grad a . v`` (or ``a`` for saturation).

    Args:
        a: images or feature maps, any leading dimensions, the last two spatial.
        velocity: a transform name (:data:`VELOCITY_MATRICES` or ``"saturation"``) or a
            2 x 3 velocity matrix.
        padding: ``"reflection"`` or ``"circular"`` (see module docstring).

    Returns:
        a tensor like ``a``: ``d/dt|_{t=0} a(Phi_t p)`` in the central-difference convention.
    """
    _check_padding(padding)
    v = _velocity_matrix(velocity)
    if v is None:
        return a.clone()
    if a.dim() < 2:
        raise ValueError(f"lie_generator needs maps ... x h x w, got shape {tuple(a.shape)}")
    return _accumulate_generator(torch.zeros_like(a), a, v, padding, 1.0)


def lie_residual(
    tangent: torch.Tensor, a: torch.Tensor, velocity: Velocity, padding: str = "reflection"
) -> torch.Tensor:
    """``tangent - G a``: a layer's Lie derivative from its forward-mode tangent and its output ``a`` (maps).

    The same as ``tangent - lie_generator(a, velocity, padding)`` with fewer temporaries.
    """
    _check_padding(padding)
    v = _velocity_matrix(velocity)
    if v is None:
        return tangent - a
    if a.dim() >= 2 and tangent.shape == a.shape:
        fields = residual_fields(velocity, tuple(a.shape[-2:]), padding, a.dtype, a.device)
        if fields is not None:
            rows = lie_residual_rows(tangent, a, fields)
            return rows.clone().reshape(tangent.shape) if not fields else rows.reshape(tangent.shape)
    return _accumulate_generator(tangent, a, v, padding, -1.0)


def residual_fields(
    velocity: Velocity, size: Tuple[int, int], padding: str = "reflection", dtype=None, device=None
) -> Optional[Tuple[Tuple[int, torch.Tensor], ...]]:
    """The constants of :func:`lie_residual_rows` on an ``h x w`` grid: per image axis the velocity moves
    along, ``(offset, field)``, so that ``-G a = sum field * (a[j + offset] - a[j - offset])`` over the
    row-major positions ``j`` of the grid (``offset`` 1 along the width, ``w`` along the height).

    ``field`` (``h w``) is ``-v * (pixels per unit) / 2`` of :func:`_axes` (the same values), and 0 where
    reflection padding makes the derivative 0 (the border pixels of that axis): there the neighbour
    difference reads across a row end or into padding, and only ever counts times 0. ``None`` for
    circular padding (its wrapped neighbours are no fixed offset) and for intensity transforms. They depend
    only on the grid, so a caller computes them once per (transform, grid) and reuses them.
    """
    _check_padding(padding)
    v = _velocity_matrix(velocity)
    if v is None or padding != "reflection":
        return None
    h, w = (int(n) for n in size)
    dtype = dtype or torch.get_default_dtype()
    fields = []
    for dim, _, field, const in _axes((h, w), v, padding, -1.0, dtype, device):
        field = torch.full((h, w), const, dtype=dtype, device=device) if field is None else field.clone()
        if dim == -1:
            field[:, 0] = 0
            field[:, w - 1] = 0
        else:
            field[0] = 0
            field[h - 1] = 0
        fields.append((1 if dim == -1 else w, field.reshape(h * w)))
    return tuple(fields)


def _shifted(padded: torch.Tensor, start: int, n: int) -> torch.Tensor:
    """``n`` consecutive row-major entries of each ``(h + 2) x w`` block of ``padded`` from flat position ``start``:
    one view (``as_strided``), where flattening and narrowing would be two ATen calls each."""
    lead = padded.shape[:-2]
    return padded.as_strided((*lead, n), (*padded.stride()[:-2], 1), padded.storage_offset() + start)


def lie_residual_rows(
    tangent: torch.Tensor, a: torch.Tensor, fields: Tuple[Tuple[int, torch.Tensor], ...]
) -> torch.Tensor:
    """``tangent - G a`` of maps ``... x h x w`` as rows ``... x (h w)``, with the constants of
    :func:`residual_fields` (reflection padding).

    ``a`` is padded with one zero row above and below, so that every neighbour ``a[j +- offset]``
    of a row-major position is one shifted view of it; a neighbour read across a row end or into the
    padding meets a zero field. A handful of whole-tensor operations per map, whatever the transform
    (the values are those of :func:`lie_residual`; no copy of the tangent when no axis has a velocity:
    the rows are then a view of it).
    """
    h, w = a.shape[-2:]
    rows = tangent.flatten(-2)
    if not fields:
        return rows
    padded = F.pad(a, (0, 0, 1, 1))
    if padded.stride(-1) != 1 or padded.stride(-2) != w:
        padded = padded.contiguous()
    n = h * w
    out = None
    for offset, field in fields:
        difference = _shifted(padded, w + offset, n) - _shifted(padded, w - offset, n)
        out = torch.addcmul(rows, difference, field) if out is None else out.addcmul_(difference, field)
    return out


# ---------------------------------------------------------------------- LEE reduction
def _lee_chunk_rows(
    lie: torch.Tensor, sample_mask: Optional[torch.Tensor] = None, zero: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """One chunk of Lie derivatives ``b x C x P`` as ``b x (C + 1)`` float64 rows: ``||L_{i,c}||^2`` per image
    and channel, then 1 (the image counts).

    The rows of images with ``sample_mask`` False are 0 (``torch.where``: they may hold NaN or Inf), so
    that sums over the rows, and products with them, count the other images only. ``zero``: a float64
    ``(1,)`` zero on ``lie``'s device (kept by the caller; it also makes ``where`` return float64).
    Squares of the per-(image, channel) norms: one pass, no squared copy.
    """
    if lie.dtype in (torch.float16, torch.bfloat16):
        lie = lie.float()
    norms = F.pad(torch.linalg.vector_norm(lie, dim=-1), (0, 1), value=1.0)
    if sample_mask is None:
        return norms.double().square()
    if zero is None:
        zero = torch.zeros(1, dtype=torch.float64, device=lie.device)
    return torch.where(sample_mask.unsqueeze(1), norms, zero).square()


def _lee_row_weights(num_channels: int, entries: int, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The constants that turn :func:`_lee_chunk_rows` of ``C`` channels of ``P`` entries into a metric's
    increments: ``(entry_weights, value_weights)``.

    ``rows.sum(0) * entry_weights`` (``C + 1``) is the per-channel sums of squares and the entries per
    channel (``P`` per counted image); ``rows @ value_weights`` (``b x 3``) is, per image, ``(counts,
    ||L||^2 / (C P), 0)``: the rows :func:`_merge_image_values` merges into ``(n, mean, M2)``.
    """
    c, p = int(num_channels), float(entries)
    # built from Python lists: one ATen call each, where fills of a zero tensor cost one per entry written
    entry_weights = torch.tensor([1.0] * c + [p], dtype=torch.float64, device=device)
    value_weights = torch.tensor([[0.0, 1.0 / (c * p), 0.0]] * c + [[1.0, 0.0, 0.0]], dtype=torch.float64,
                                 device=device)
    return entry_weights, value_weights


def _merge_image_values(moments: torch.Tensor, values: torch.Tensor) -> None:
    """Merge a chunk's per-image values into the summary ``moments`` (``1 x 3``: ``(n, mean, M2)``), in place.

    ``values``: ``b x 3`` rows ``(weight, value, 0)``, weight 1 for the images that count and 0 (with
    value 0) for the others. The summary joins them as one more row ``(n, mean, M2)`` - ``n``
    observations at ``mean`` - so that one pass over the ``b + 1`` rows merges: with weights ``w`` and
    values ``y``, ``n' = sum w``, ``mean' = sum w y / n'`` and ``M2' = M2 + sum w (y - mean')^2``, which is
    Chan et al.'s update ``M2 + M2_b + delta^2 n n_b / n'`` (the summary's row contributes
    ``n (mean - mean')^2``, the chunk's rows their own ``M2_b`` plus ``n_b (mean_b - mean')^2``). Deviations
    from the merged mean: no difference of two large sums, and an error ``e`` in ``mean'`` changes ``M2'``
    by ``n' e^2`` only. No host read.
    """
    weight, value, m2 = torch.cat([values, moments]).unbind(1)
    n = weight.sum(0, keepdim=True)
    mean = torch.dot(weight, value) / n.clamp_min(1)
    deviation = value - mean
    torch.stack([n, mean, torch.addcmul(m2, weight * deviation, deviation).sum(0, keepdim=True)], 1, out=moments)


def _lee_compute(sq_sum: torch.Tensor, entries: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(per_channel, value)``: mean squared Lie derivative per channel, and over every entry (Eq. 4)."""
    per_channel = sq_sum / entries.clamp_min(1)
    return per_channel, sq_sum.sum() / entries.sum().clamp_min(1)


def local_equivariance_error(lie: torch.Tensor) -> torch.Tensor:
    """LEE of a batch (Gruver et al. 2023, Eq. 4): ``mean_x ||L_X f(x)||^2 / dim``.

    Args:
        lie: Lie derivatives ``b x ...`` of ``b`` images (any layout: the mean is over every
            entry, so the layout does not matter).

    The reference code reports the mean *absolute* value instead; this follows Eq. 4.
    """
    if lie.dim() < 1 or lie.shape[0] == 0:
        raise ValueError(f"expected a batch of Lie derivatives b x ..., got shape {tuple(lie.shape)}")
    flat = lie.reshape(lie.shape[0], -1)
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    # per image in the input's precision, one pass and no squared copy; their sum in float64
    sq = torch.linalg.vector_norm(flat, dim=-1).double().square()
    return sq.sum() / max(flat.numel(), 1)

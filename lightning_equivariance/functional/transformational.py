"""The transformational measures of Quiroga et al. (§2): variance, distance, ANOVA, same-equivariance, Goodfellow.

Pure torch (scipy only for the F distribution's critical value), no Lightning or TensorBoard.

For one activation ``a`` (a *unit*: one channel at one position of a feature map, or one
entry of a vector) the sample-transformation matrix is ``ST[i, j] = a(t_j(x_i))`` (Eq. 1),
``j`` over the full transformation set *including the identity*. This module takes the ST
matrices of all units of a layer at once, transformations first::

    st: k x n x ...units      (k transformations, identity first; n samples)

and returns one value per unit (shape ``...units``); :func:`st_matrix` builds ``st`` from
the engine's ``a(x)`` (``b x ...``) and ``a(t_j x)`` (``m x b x ...``).

* ``TV = mean_i Var_j ST[i, j]`` (Eq. 2), ``SV = mean_j Var_i ST[i, j]`` (Eq. 3), ``NV = TV / SV``
  (Eq. 4); ``Var`` is the sample variance (``n - 1`` denominator).
* ``TD``, ``SD``, ``ND`` (Eq. 5): ``AverageDistance`` (Eq. 6, ``sum_{i,j} d(x_i, x_j) / n^2``,
  the diagonal included) instead of ``Var``. ``distance="euclidean"`` is ``|x - y|`` (default),
  ``"squared"`` is ``(x - y)^2`` (then ``AverageDistance = 2 * population variance``, Eq. 7),
  or any elementwise callable ``d(x, y)``.
* ``0/0 = 1`` and ``x/0 = +inf`` for ``NV`` and ``ND`` (Quiroga §2.4.3: a dead unit scores 1).
  Zero is exact: a row or column whose values are all equal has variance and distance
  exactly 0 (rows: the shifted-data formula with the first value as shift; columns: their
  running min and max), never a round-off residue that would turn ``0/0`` into noise.
* ANOVA (§2.3): one-way F-test per unit with the transformations as treatments; the unit
  is *invariant* when the null hypothesis (equal means) is not rejected at ``alpha / U``
  (Bonferroni over the ``U`` tests).
* Same-equivariance (§2.6, Eq. 8, variance form): the TV of ``t_j^{-1}(A(t_j x_i))``, ``A`` the
  feature map scaled to unit norm per sample.
* Goodfellow et al. 2009 as adapted by Quiroga §3.2.2: per-unit threshold ``t`` from a normal
  fit ``P(a <= t) = q`` (``q = 0.99``) of the untransformed activations; score = firing rate
  under each transformation / global firing rate (``1 - q``). Both rates come from the
  two-moment normal fit (one pass, see :func:`goodfellow_invariance`).

The ``_*_update`` helpers return per-batch sums (float64) and the ``_*_compute`` helpers
turn summed states into per-unit values: the metric classes in
:mod:`lightning_equivariance.metrics.transformational` are thin wrappers.

Non-finite values (docs/measures.md §1.7): every ``_*_update`` helper takes an optional ``mask``, ``b``
booleans on the activations' device (``True`` = the image counts). The masked images are left
out of every sum, sum of squares, minimum, maximum and pair exactly - the result equals the
update with the unmasked images only - with ``torch.where`` on the device (never a product
with the mask: the masked rows may hold anything), without compacting the batch or
synchronising with the host. ``mask=None`` takes the unmasked code path (no extra work).
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

__all__ = [
    "st_matrix",
    "st_columns",
    "transformation_variance",
    "sample_variance",
    "normalized_variance",
    "transformation_distance",
    "sample_distance",
    "normalized_distance",
    "anova_invariance",
    "same_equivariance",
    "goodfellow_invariance",
    "safe_ratio",
    "unit_norm_maps",
]

Distance = Union[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]
_DISTANCES = ("euclidean", "squared")


def st_matrix(a_x: torch.Tensor, a_gx: torch.Tensor, include_identity: bool = True) -> torch.Tensor:
    """The ST matrices of every unit (Quiroga Eq. 1), transformations first: ``k x b x ...units`` float64.

    ``k = m + 1`` with the identity ``a(x)`` first, or ``m`` with ``include_identity=False``.
    """
    if a_gx.shape[1:] != a_x.shape:
        raise ValueError(f"a(x) of shape {tuple(a_x.shape)} does not match a(t_j x) of shape {tuple(a_gx.shape)}")
    k = a_gx.shape[0] + int(bool(include_identity))
    out = torch.empty((k, *a_x.shape), dtype=torch.float64, device=a_x.device)  # one cast-copy, no cat + to
    if include_identity:
        out[0].copy_(a_x)
        out[1:].copy_(a_gx)
    else:
        out.copy_(a_gx)
    return out


def check_distance(distance: Distance) -> None:
    if not (callable(distance) or distance in _DISTANCES):
        raise ValueError(f"distance must be one of {_DISTANCES} or a callable d(x, y), got {distance!r}")


def safe_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` with ``0/0 = 1`` and ``x/0 = +inf`` (Quiroga §2.4.3, "special cases")."""
    out = num / torch.where(den == 0, torch.ones_like(den), den)
    out = torch.where((den == 0) & (num == 0), torch.ones_like(out), out)
    return torch.where((den == 0) & (num != 0), torch.full_like(out, math.inf), out)


# ---------------------------------------------------------------------- sample masks
def _batch_mask(mask: Optional[torch.Tensor], like: torch.Tensor, axis: int = 0) -> Optional[torch.Tensor]:
    """``mask`` (``b`` booleans) shaped to broadcast along axis ``axis`` of ``like`` (``None`` stays ``None``).

    Checks the shape only (host metadata, no synchronisation).
    """
    if mask is None:
        return None
    b = like.shape[axis]
    mask = _checked_mask(mask, b, like.device)
    return mask.reshape(*([1] * axis), b, *([1] * (like.dim() - axis - 1)))


def _checked_mask(mask: torch.Tensor, b: int, device: torch.device) -> torch.Tensor:
    """``mask`` checked to hold one boolean per image (``(b,)``), as bool on ``device``."""
    if tuple(mask.shape) != (b,):
        raise ValueError(f"sample_mask must hold one boolean per image, shape ({b},), got {tuple(mask.shape)}")
    return mask.to(device=device, dtype=torch.bool)


# ---------------------------------------------------------------------- per-axis statistics
def _sum_squares(x: torch.Tensor, dim: int) -> torch.Tensor:
    return (x * x).sum(dim)  # faster than vector_norm over an outer dim on CPU


def _variance(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Sample variance (``n - 1``) along ``dim`` by the shifted-data formula, shift = the first slice.

    ``d = x - x_0``, ``Var = (sum d^2 - (sum d)^2 / n) / (n - 1)``: numerically stable (the shift
    is a data value) and exactly 0 for a constant slice (every ``d`` is exactly 0).
    """
    n = x.shape[dim]
    d = x - x.narrow(dim, 0, 1)
    s = d.sum(dim)
    return ((_sum_squares(d, dim) - s * s / n) / (n - 1)).clamp_min(0)


def _sum_abs_pairs(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``sum_{i<j} |x_i - x_j|`` along ``dim`` in O(n log n): sorted gaps, gap r shared by ``r (n - r)`` pairs.

    All terms are >= 0 and equal values give gaps of exactly 0 (no cancellation).
    """
    n = x.shape[dim]
    s = torch.sort(x.movedim(dim, 0), dim=0).values
    gaps = s[1:] - s[:-1]
    r = torch.arange(1, n, dtype=x.dtype, device=x.device)
    w = (r * (n - r)).reshape(-1, *([1] * (gaps.dim() - 1)))
    return (gaps * w).sum(0)


def _sum_pairs(x: torch.Tensor, dim: int, distance: Distance) -> torch.Tensor:
    """``sum_{i<j} d(x_i, x_j)`` along ``dim``."""
    if distance == "euclidean":
        return _sum_abs_pairs(x, dim)
    n = x.shape[dim]
    if distance == "squared":
        return n * (n - 1) * _variance(x, dim)  # sum_{i<j} (x_i - x_j)^2 = n sum_i (x_i - mean)^2
    y = x.movedim(dim, 0)
    total = torch.zeros_like(y[0])
    for i in range(n - 1):
        total = total + torch.as_tensor(distance(y[i : i + 1], y[i + 1 :]), dtype=y.dtype).sum(0)
    return total


def _sum_pairs_masked(x: torch.Tensor, dim: int, distance: Distance, mask: torch.Tensor) -> torch.Tensor:
    """``sum_{i<j, mask_i, mask_j} d(x_i, x_j)`` along ``dim`` (``mask``: ``x.shape[dim]`` booleans), no sync.

    Euclidean: the masked values are set to ``+inf`` so they sort last; the first ``n_v`` sorted
    values are the kept ones, and gap ``r`` is shared by ``r (n_v - r)`` of their pairs (0 from
    ``r = n_v`` on: those gaps are dropped with ``torch.where``, never multiplied by 0).
    Squared: ``n_v sum_i (x_i - x_s)^2 - (sum_i (x_i - x_s))^2`` over the kept values, shifted by
    the first kept value ``x_s`` (exactly 0 when they are all equal).
    """
    y = x.movedim(dim, 0)
    n = y.shape[0]
    w = _batch_mask(mask, y)
    flat = w.reshape(-1)
    nv = flat.sum().to(y.dtype)
    if distance == "euclidean":
        s = torch.sort(torch.where(w, y, math.inf), dim=0).values
        r = torch.arange(1, n, dtype=y.dtype, device=y.device)
        weight = (r * (nv - r)).clamp_min(0).reshape(-1, *([1] * (y.dim() - 1)))
        gaps = torch.where(weight > 0, s[1:] - s[:-1], 0.0)
        return (gaps * weight).sum(0)
    if distance == "squared":
        first = flat.to(torch.int8).argmax().reshape(1)  # the first kept image (0 if none)
        d = torch.where(w, y - y.index_select(0, first), 0.0)
        s = d.sum(0)
        return (nv * _sum_squares(d, 0) - s * s).clamp_min(0)
    total = torch.zeros_like(y[0])
    for i in range(n - 1):
        pair = (flat[i : i + 1] & flat[i + 1 :]).reshape(-1, *([1] * (y.dim() - 1)))
        d = torch.as_tensor(distance(y[i : i + 1], y[i + 1 :]), dtype=y.dtype)
        total = total + torch.where(pair, d, 0.0).sum(0)
    return total


def _average_distance(x: torch.Tensor, dim: int, distance: Distance) -> torch.Tensor:
    """Quiroga Eq. 6: ``sum_{i,j} d(x_i, x_j) / n^2`` (diagonal included, symmetric ``d``)."""
    n = x.shape[dim]
    return 2.0 * _sum_pairs(x, dim, distance) / (n * n)


# ---------------------------------------------------------------------- streaming helpers
# The ``*_columns`` helpers take the ST columns as a list of ``b x ...units`` tensors (views of
# the engine's activations, any float dtype) and work column by column in float64, so their
# temporaries are ``b x units``, never ``k x b x units``.
def st_columns(a_x: torch.Tensor, a_gx: torch.Tensor, include_identity: bool = True) -> List[torch.Tensor]:
    """The columns of ST (Eq. 1) as views: ``[a(x), a(t_1 x), ...]`` (or without ``a(x)``), each ``b x ...units``."""
    return ([a_x] if include_identity else []) + list(a_gx.unbind(0))


#: float64 bytes per temporary in the streaming helpers: the units (first unit axis) are
#: processed in blocks of this size, so a 64 x 64 x 32 x 32 chunk does not allocate several
#: 32 MiB float64 copies at once (a smaller peak, and less heap left fragmented between chunks).
_BLOCK_BYTES = 1 << 23


def _blocks_of(shape: Sequence[int], axis: int, scale: int) -> List[slice]:
    """Slices of ``axis`` with float64 temporaries of at most ``scale x _BLOCK_BYTES``; one slice when it fits."""
    size = shape[axis] if len(shape) > axis else 1
    per_unit = 8 * max(1, math.prod(shape) // max(1, size))
    step = max(1, (scale * _BLOCK_BYTES) // per_unit)
    return [slice(None)] if step >= size else [slice(i, min(i + step, size)) for i in range(0, size, step)]


def _st_blocks(st: torch.Tensor) -> List[slice]:
    """Slices of the first unit axis of ``st`` (``k x b x U0 x ...``) whose float64 copy is at
    most ``4 x _BLOCK_BYTES``.

    Most layers of a chunk fit in one block, which is then the whole tensor (no slicing: the
    op count per layer stays small, and every op is one kernel launch on a GPU).
    """
    return _blocks_of(st.shape, 2, 4)


def _st_update(
    st: torch.Tensor, mask: Optional[torch.Tensor] = None, tv: bool = True, columns: bool = True
) -> Dict[str, torch.Tensor]:
    """What one batch of ST ``k x b x ...units`` adds to the streaming states, in one pass over ST.

    ``tv``: the sum over the batch of the row variances ``Var_j ST[i, j]`` (shifted by column 0,
    so a constant row gives exactly 0), ``...units``. ``columns``: per-column sums ``s1``, sums of
    squares ``s2`` (float64), minima ``cmin`` and maxima ``cmax`` over the batch, ``k x ...units`` (the
    minima and maxima exact: in ``st``'s dtype when ``st`` fits one block and no image is masked, else in
    float64; the states promote them).

    ``mask``: ``b`` booleans, the images that count (module docstring), or ``None`` (all). A masked
    image's row is zeroed in the float64 copy (``masked_fill``, never a product: NaN x 0 is NaN),
    so it adds exactly 0 to every sum and its row variance is exactly 0; its minima and maxima are
    ``+inf`` / ``-inf``. The columns are processed together, a few whole-tensor operations per
    block (:func:`_st_blocks`), not a handful per column.
    """
    k = st.shape[0]
    drop = None if mask is None else ~_batch_mask(mask, st, axis=1)
    blocks = _st_blocks(st)
    whole = len(blocks) == 1
    out: Dict[str, torch.Tensor] = {}
    if not whole:
        dev = st.device
        if tv:
            out["tv"] = torch.empty(st.shape[2:], dtype=torch.float64, device=dev)
        if columns:
            for key in ("s1", "s2", "cmin", "cmax"):
                out[key] = torch.empty((k, *st.shape[2:]), dtype=torch.float64, device=dev)
    for block in blocks:
        sb = st if whole else st[:, :, block]
        part: Dict[str, torch.Tensor] = {}
        if drop is None:
            x = sb.to(torch.float64)
            if columns:
                # exact in the input dtype; amin + amax are ~8x faster than aminmax on CPU (torch 2.x)
                part["cmin"], part["cmax"] = sb.amin(1), sb.amax(1)
        else:
            # One float64 copy (exact), its masked rows filled in place for each use: +inf for the minima,
            # -inf for the maxima, then 0 for the sums (an in-place fill only reads the kept rows; three
            # masked copies, two of them in the input dtype, cost a third more on CPU)
            x = sb.to(torch.float64, copy=True)
            if columns:
                part["cmin"] = x.masked_fill_(drop, math.inf).amin(1)
                part["cmax"] = x.masked_fill_(drop, -math.inf).amax(1)
            x.masked_fill_(drop, 0.0)
        if columns:
            part["s1"] = x.sum(1)
            part["s2"] = (x * x).sum(1)
        if tv:
            d = x - x[:1]
            s = d.sum(0)
            q = (d * d).sum(0)
            # sum_i (q - s^2 / k).clamp_min(0) / (k - 1): the division after the sum over images
            part["tv"] = torch.addcmul(q, s, s, value=-1.0 / k).clamp_min_(0).sum(0).div_(k - 1)
        if whole:
            return part
        for key, value in part.items():
            (out[key][block] if key == "tv" else out[key][:, block]).copy_(value)
    return out


def _tv_update(st: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sum over the batch of the row variances ``Var_j ST[i, j]``: ``...units``.

    ``mask``: ``b`` booleans, the images (rows) that count, or ``None`` (all).
    """
    return _st_update(st, mask, tv=True, columns=False)["tv"]


def _td_update(st: torch.Tensor, distance: Distance, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Sum over the batch of the row average distances: ``...units`` (``mask``: the rows that count, or ``None``)."""
    per_row = _average_distance(st, 0, distance)
    if mask is not None:
        per_row = torch.where(_batch_mask(mask, per_row), per_row, 0.0)
    return per_row.sum(0)


def _columns_update(st: torch.Tensor, mask: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """Per-column (transformation) sums, sums of squares, minima and maxima over the batch: ``k x ...units``.

    ``mask``: ``b`` booleans, the images that count, or ``None`` (all).
    """
    return _st_update(st, mask, tv=False, columns=True)


def _sd_block_update(
    st: torch.Tensor, distance: Distance, mask: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, Union[int, torch.Tensor]]:
    """Quiroga §2.5 block approximation: ``sum_{i<i'} d`` over the samples *of this batch*, per
    column, and the pair count.

    With ``mask`` (``b`` booleans) only the pairs of unmasked images count: the result equals
    the batch of the unmasked images alone; the pair count is then a device tensor (no sync).
    """
    b = st.shape[1]
    if mask is None:
        return _sum_pairs(st, 1, distance), b * (b - 1) // 2
    nv = _batch_mask(mask, st, axis=1).sum()
    return _sum_pairs_masked(st, 1, distance, mask), nv * (nv - 1) // 2


def _column_variances(
    n: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor, cmin: torch.Tensor, cmax: torch.Tensor
) -> torch.Tensor:
    """``Var_i ST[i, j]`` per column from the sums (``n - 1``), exactly 0 for constant columns."""
    n = float(n)
    if n < 2:
        raise ValueError(f"the sample variance needs at least 2 probe images, got {int(n)}")
    m2 = (s2 - s1 * s1 / n).clamp_min(0)
    return torch.where(cmin == cmax, torch.zeros_like(m2), m2) / (n - 1)


def _tv_compute(tv_sum: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    if float(n) < 1:
        raise ValueError("no probe images")
    return tv_sum / float(n)


def _sv_compute(n, s1, s2, cmin, cmax) -> torch.Tensor:
    return _column_variances(n, s1, s2, cmin, cmax).mean(0)


def _anova_compute(n, s1, s2, cmin, cmax, alpha: float, num_tests: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """One-way ANOVA per unit (treatments = the ``k`` columns of ST, ``n`` samples each).

    ``F = (SSB / (k-1)) / (SSW / (k(n-1)))``, ``SSB = n sum_j (mean_j - mean)^2``,
    ``SSW = sum_j sum_i (ST[i,j] - mean_j)^2``. Rejected (not invariant) when
    ``F > F_{1 - alpha/U}(k-1, k(n-1))``. A constant unit (``SSB = SSW = 0``) is invariant;
    ``SSW = 0 < SSB`` gives ``F = +inf`` (rejected).
    """
    from scipy.stats import f as f_dist

    nf = float(n)
    k = s1.shape[0]
    if k < 2 or nf < 2:
        raise ValueError(f"ANOVA needs at least 2 transformations and 2 probe images, got {k} and {int(nf)}")
    units = int(s1[0].numel()) if num_tests is None else int(num_tests)
    means = s1 / nf
    ssb = nf * (means - means.mean(0)).pow(2).sum(0)
    ssw = _column_variances(n, s1, s2, cmin, cmax).sum(0) * (nf - 1)
    constant = cmin.amin(0) == cmax.amax(0)
    ssb = torch.where(constant, torch.zeros_like(ssb), ssb)
    df1, df2 = k - 1, k * (nf - 1)
    F = safe_ratio(ssb / df1, ssw / df2)
    F = torch.where(constant, torch.zeros_like(F), F)
    critical = float(f_dist.isf(alpha / max(units, 1), df1, df2))
    invariant = (F <= critical).to(torch.float64)
    return {"invariant": invariant, "F": F, "critical": torch.tensor(critical, dtype=torch.float64)}


def _normal_fit(n, s1, s2) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and maximum-likelihood standard deviation (``n`` denominator) from the sums."""
    nf = float(n)
    mu = s1 / nf
    return mu, ((s2 - s1 * s1 / nf).clamp_min(0) / nf).sqrt()


def _goodfellow_compute(n, s1, s2, cmin, cmax, quantile: float) -> torch.Tensor:
    """Per-element, per-unit Goodfellow scores ``L_j / G`` from column sums (column 0 = identity), ``m x ...units``.

    ``t = mu_0 + Phi^{-1}(q) sigma_0`` (``t = a_0`` for a constant untransformed unit, as
    Quiroga's reference code), ``L_j = P(N(mu_j, sigma_j^2) > t)`` (``1[a_j > t]`` for a constant
    column), ``G = 1 - q``.
    """
    if float(n) < 1:
        raise ValueError("no probe images")
    mu, sigma = _normal_fit(n, s1, s2)
    const = cmin == cmax
    sigma = torch.where(const, torch.zeros_like(sigma), sigma)
    mu = torch.where(const, cmin, mu)
    z = math.sqrt(2.0) * torch.erfinv(torch.tensor(2.0 * quantile - 1.0, dtype=torch.float64))
    t = mu[0] + z * sigma[0]
    mu_t, sigma_t = mu[1:], sigma[1:]
    rate = torch.special.ndtr((mu_t - t) / torch.where(sigma_t > 0, sigma_t, torch.ones_like(sigma_t)))
    rate = torch.where(sigma_t > 0, rate, (mu_t > t).to(rate.dtype))
    return rate / (1.0 - quantile)


def unit_norm_maps(a: torch.Tensor) -> torch.Tensor:
    """Scale every map ``C x h x w`` (the last three axes) to unit l2 norm; zero maps stay zero (float64)."""
    a = a.to(torch.float64)
    norm = a.flatten(-3).norm(dim=-1)[..., None, None, None]
    return torch.where(norm > 0, a / torch.where(norm > 0, norm, torch.ones_like(norm)), torch.zeros_like(a))


# ---------------------------------------------------------------------- whole-ST functions
def _check_st(st: torch.Tensor) -> None:
    if st.dim() < 3:
        raise ValueError(f"st must be k x n x ...units (transformations first), got shape {tuple(st.shape)}")
    if st.shape[0] < 2:
        raise ValueError(f"the transformational measures need at least 2 transformations, got {st.shape[0]}")


def transformation_variance(st: torch.Tensor) -> torch.Tensor:
    """Transformation Variance per unit (Quiroga Eq. 2): ``mean_i Var_j ST[i, j]``.

    Args:
        st: ``k x n x ...units`` (see :func:`st_matrix`).

    Example:
        >>> import torch
        >>> st = torch.tensor([[1.0, 2.0], [3.0, 2.0]]).reshape(2, 2, 1)   # k=2, n=2, one unit
        >>> transformation_variance(st)
        tensor([1.], dtype=torch.float64)
    """
    _check_st(st)
    st = st.to(torch.float64)
    return _tv_update(st) / st.shape[1]


def sample_variance(st: torch.Tensor) -> torch.Tensor:
    """Sample Variance per unit (Quiroga Eq. 3): ``mean_j Var_i ST[i, j]``."""
    _check_st(st)
    st = st.to(torch.float64)
    return _sv_compute(st.shape[1], **_columns_update(st))


def normalized_variance(st: torch.Tensor) -> torch.Tensor:
    """Normalized Variance per unit (Quiroga Eq. 4): ``TV / SV`` with ``0/0 = 1``, ``x/0 = +inf``."""
    return safe_ratio(transformation_variance(st), sample_variance(st))


def transformation_distance(st: torch.Tensor, distance: Distance = "euclidean") -> torch.Tensor:
    """Transformation Distance per unit (Quiroga Eq. 5): ``mean_i AverageDistance(ST[i, :])``."""
    _check_st(st)
    check_distance(distance)
    st = st.to(torch.float64)
    return _td_update(st, distance) / st.shape[1]


def sample_distance(st: torch.Tensor, distance: Distance = "euclidean") -> torch.Tensor:
    """Sample Distance per unit (Quiroga Eq. 5): ``mean_j AverageDistance(ST[:, j])`` over all sample pairs."""
    _check_st(st)
    check_distance(distance)
    st = st.to(torch.float64)
    return _average_distance(st, 1, distance).mean(0)


def normalized_distance(st: torch.Tensor, distance: Distance = "euclidean") -> torch.Tensor:
    """Normalized Distance per unit (Quiroga Eq. 5): ``TD / SD`` with ``0/0 = 1``, ``x/0 = +inf``."""
    return safe_ratio(transformation_distance(st, distance), sample_distance(st, distance))


def anova_invariance(st: torch.Tensor, alpha: float = 0.01, num_tests: Optional[int] = None) -> torch.Tensor:
    """Per unit 1.0 if the one-way ANOVA does not reject equal means over transformations (Quiroga §2.3), else 0.0.

    Significance ``alpha`` with Bonferroni correction over ``num_tests`` (default: the number of units).
    """
    _check_st(st)
    st = st.to(torch.float64)
    return _anova_compute(st.shape[1], **_columns_update(st), alpha=alpha, num_tests=num_tests)["invariant"]


def goodfellow_invariance(st: torch.Tensor, quantile: float = 0.99) -> torch.Tensor:
    """Goodfellow et al. 2009 invariance as adapted by Quiroga §3.2.2, per (non-identity transformation, unit).

    ``st[0]`` must be the untransformed activations. Threshold ``t`` per unit from a two-moment
    normal fit of ``st[0]``: ``P(a <= t) = quantile``. Score ``L_j / G``: ``L_j`` the firing rate
    ``P(a(t_j x) > t)`` under transformation ``j`` from the normal fit of ``st[j]`` (one pass:
    the threshold is only known at the end, so the rate is the fitted normal's tail, not a
    count), ``G = 1 - quantile`` (the global rate the threshold was fitted for). Returns
    ``(k - 1) x ...units``; 1 means the transformations do not change how often the unit fires.
    """
    _check_st(st)
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    st = st.to(torch.float64)
    return _goodfellow_compute(st.shape[1], **_columns_update(st), quantile=quantile)


def same_equivariance(st_inv: torch.Tensor, mask: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Same-equivariance per unit (Quiroga §2.6, Eq. 8 in its variance form).

    Args:
        st_inv: ``k x n x C x h x w``: ``t_j^{-1}(A(t_j x_i))`` with every ``A(t_j x_i)`` already scaled to
            unit norm per sample (:func:`unit_norm_maps`) before the inverse transform.
        mask: boolean ``h x w``: the positions carrying content after every inverse transform.

    Returns:
        ``(per_unit, valid)``: ``mean_i Var_j ST'[i, j]`` per unit (``C x h x w``, 0 outside the
        mask) and the ``h x w`` mask. The layer value is the *sum* over valid units (the total
        transformation variance of the unit-norm map, Quiroga's ``A`` taken as one vector).
    """
    _check_st(st_inv)
    st = st_inv.to(torch.float64)
    per_unit = _tv_update(st) / st.shape[1]
    h, w = st.shape[-2:]
    valid = torch.ones(h, w, dtype=torch.bool, device=st.device) if mask is None else mask.to(torch.bool)
    return per_unit * valid, valid

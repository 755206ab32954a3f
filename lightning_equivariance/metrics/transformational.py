"""Transformational measures (Quiroga et al., §2-3): ``tv sv nv td sd nd anova same_equivariance goodfellow``.

Thin ``torchmetrics.Metric`` classes over
:mod:`lightning_equivariance.functional.transformational`. A *unit* is one channel at one
position of a feature map, or one entry of a vector; every measure is computed per unit
from the sample-transformation matrix ``ST[i, j] = a(t_j(x_i))`` (Eq. 1) over the full
transformation set *identity included* (``include_identity=False`` drops it, e.g. for
Quiroga's 24 translations, a set without the identity).

Reporting (docs/measures.md §5): ``per_channel`` is the mean over the spatial positions of each
channel (heatmap data; on a vector layer the per-entry values), ``value`` the mean over
all units (= over channels) - except ``same_equivariance`` (see there). ``per_element``:
the measures over the whole set (TV, NV, TD, ND, ANOVA, same-equivariance) have a single
entry ``"all"``; SV and SD, means over the transformations, report one entry per column
of ST (``"identity"`` first); Goodfellow one entry per non-identity transformation.

Streaming: one pass over the engine's stacked batches. Each batch holds every
transformation of its samples, so row statistics (TV, TD, same-equivariance) are exact
per batch; column statistics are float64 sums, sums of squares, minima and maxima
(``dist_reduce_fx`` ``"sum"``/``"min"``/``"max"``): splitting the probe set over batches or
processes gives the same result, and memory is ``O(k x units)``, independent of the number of
probe images. The minima and maxima make "all values equal" exact, so a dead unit has
``TV = SV = 0`` exactly and ``NV = 1`` (``0/0 = 1``; ``x/0 = +inf``, Quiroga §2.4.3).

Exception: ``sd``/``nd`` with a non-squared distance. The mean of ``|x_i - x_k|`` over all
pairs of probe images has no mergeable summary; as Quiroga §2.5 ("Approximation of the
average distance") it is computed over the pairs *within each batch*, rescaled to Eq. 6's
``n^2`` normalisation. It is exact when the whole probe set fits in one batch, and it
depends on how images are batched otherwise. ``distance="squared"`` is exact and mergeable
(Eq. 7: twice the population variance).

Non-finite values (docs/measures.md §1.7): ``update(..., sample_mask=...)`` and ``update(ctx)``
(``ctx.sample_mask``) take ``b`` booleans on the activations' device, ``True`` for the images
that count. The masked images are left out of every state exactly (the image count, row
sums, column sums, sums of squares, minima, maxima, and the within-batch pairs of ``sd``/
``nd``: a batch of 8 with one masked image counts as the batch of the 7 others), with
``torch.where`` on the device, without compacting the batch or a host synchronisation.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..functional.transformational import (
    Distance,
    _anova_compute,
    _checked_mask,
    _column_variances,
    _goodfellow_compute,
    _tv_compute,
    check_distance,
    safe_ratio,
    unit_norm_maps,
)
from .base import LayerContext, LayerMetric
from .shared import STWork

__all__ = [
    "TransformationVariance",
    "SampleVariance",
    "NormalizedVariance",
    "TransformationDistance",
    "SampleDistance",
    "NormalizedDistance",
    "AnovaInvariance",
    "SameEquivariance",
    "GoodfellowInvariance",
]


class _Transformational(LayerMetric):
    """Shared states and reporting. Subclasses set ``summaries`` and implement ``_per_unit``."""

    full_state_update = False
    higher_is_better: Optional[bool] = False
    #: which per-batch summaries the measure needs: "tv", "cols", "td", "sd"
    summaries: Tuple[str, ...] = ()

    n: torch.Tensor

    def __init__(
        self,
        num_transformations: int,
        unit_shape: Sequence[int],
        element_names: Optional[Sequence[str]] = None,
        distance: Distance = "euclidean",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        k = int(num_transformations)
        if k < 2:
            raise ValueError(
                f"{type(self).__name__}: the transformational measures need at least 2 transformations "
                f"(ST columns), got {k}; keep the identity (include_identity=True) or use a larger group"
            )
        check_distance(distance)
        self.k = k
        self.unit_shape = tuple(int(s) for s in unit_shape)
        self.element_names = list(element_names) if element_names is not None else [f"t{j}" for j in range(k)]
        if len(self.element_names) != k:
            raise ValueError(f"{len(self.element_names)} element names for {k} transformations")
        self.distance = distance
        cols = (k, *self.unit_shape)
        self.add_filled_state("n", (), 0.0)
        if "tv" in self.summaries:
            self.add_filled_state("tv_sum", self.unit_shape, 0.0)
        if "td" in self.summaries:
            self.add_filled_state("td_sum", self.unit_shape, 0.0)
        if "cols" in self.summaries or ("sd" in self.summaries and distance == "squared"):
            self.add_filled_state("s1", cols, 0.0)
            self.add_filled_state("s2", cols, 0.0)
            self.add_filled_state("cmin", cols, math.inf, dist_reduce_fx="min")
            self.add_filled_state("cmax", cols, -math.inf, dist_reduce_fx="max")
        if "sd" in self.summaries and distance != "squared":
            self.add_filled_state("sd_pair_sum", cols, 0.0)
            self.add_filled_state("sd_pairs", (), 0.0)

    # ------------------------------------------------------------------ construction
    @classmethod
    def _st_names(cls, ctx: LayerContext, include_identity: bool) -> List[str]:
        return (["identity"] if include_identity else []) + [e.name for e in ctx.elements]

    @classmethod
    def for_layer(
        cls, ctx: LayerContext, include_identity: bool = True, distance: Distance = "euclidean", **options: Any
    ) -> "_Transformational":
        names = cls._st_names(ctx, include_identity)
        return cls.create_on(ctx.a_x.device, len(names), tuple(ctx.a_x.shape[1:]), element_names=names,
                             distance=distance, **cls._options(options))

    @classmethod
    def _options(cls, options: Dict[str, Any]) -> Dict[str, Any]:
        return {}

    # ------------------------------------------------------------------ update
    @property
    def _has_cols(self) -> bool:
        return hasattr(self, "s1")

    def _add(self, st: STWork) -> None:
        """Add a batch of ST (``st.matrix``: ``k x b x ...units``, ``st.sample_mask``: the images that count, or
        ``None`` for all); what several measures of a layer compute from it is computed once (:class:`STWork`)."""
        matrix, mask = st.matrix, st.sample_mask
        if matrix.shape[0] != self.k or tuple(matrix.shape[2:]) != self.unit_shape:
            raise ValueError(
                f"{type(self).__name__} was created for {self.k} transformations x units {self.unit_shape}, "
                f"got ST of shape {tuple(matrix.shape)} (k x b x ...units)"
            )
        self.n += matrix.shape[1] if mask is None else mask.sum()
        if "tv" in self.summaries or self._has_cols:
            # TV and the column moments of every measure of the layer from one pass over ST
            c = st.summaries
            if "tv" in self.summaries:
                self.tv_sum += c["tv"]
            if self._has_cols:
                self.s1 += c["s1"]
                self.s2 += c["s2"]
                torch.minimum(self.cmin, c["cmin"], out=self.cmin)
                torch.maximum(self.cmax, c["cmax"], out=self.cmax)
        if "td" in self.summaries:
            self.td_sum += st.transformation_distances(self.distance)
        if hasattr(self, "sd_pair_sum"):
            s, p = st.sample_distances(self.distance)
            self.sd_pair_sum += s
            self.sd_pairs += p

    def _update_tensors(self, st: torch.Tensor, sample_mask: Optional[torch.Tensor] = None) -> None:
        """Add a batch of ST matrices ``k x b x ...units`` (transformations first, see ``functional.st_matrix``).

        Args:
            st: ``k x b x ...units``.
            sample_mask: optional ``b`` booleans (on ``st``'s device), ``True`` for the images that
                count: the others are left out of every state exactly, as if ``st`` held only the
                kept images (their values may be anything finite or not). ``None``: all count.
        """
        self._add_matrix(st, sample_mask)

    def _add_matrix(self, st: torch.Tensor, sample_mask: Optional[torch.Tensor]) -> None:
        """Add an ST matrix of this batch alone (not shared with other measures)."""
        self._add(STWork(st, None if sample_mask is None else _checked_mask(sample_mask, st.shape[1], st.device)))

    def _update_context(self, ctx: LayerContext) -> None:
        self._add(ctx.work.st(include_identity=self.k == len(ctx.elements) + 1))

    # ------------------------------------------------------------------ compute
    def _columns(self) -> Dict[str, torch.Tensor]:
        return {"s1": self.s1, "s2": self.s2, "cmin": self.cmin, "cmax": self.cmax}

    def _images(self) -> float:
        """``n`` read on the host (``tolist()``: no ATen call there, where each ``float(n)`` is one)."""
        return float(self.n.tolist())

    def _tv(self) -> torch.Tensor:
        return _tv_compute(self.tv_sum, self._images())

    def _sv_columns(self) -> torch.Tensor:
        return _column_variances(self._images(), **self._columns())

    def _td(self) -> torch.Tensor:
        return _tv_compute(self.td_sum, self._images())

    def _sd_columns(self) -> torch.Tensor:
        """``AverageDistance`` per (column, unit)."""
        if self.distance == "squared":
            nf = self._images()
            return 2.0 * (nf - 1) / nf * _column_variances(nf, **self._columns())
        nf, pairs = self._images(), float(self.sd_pairs.tolist())
        if pairs < 1:
            raise ValueError(
                "SD needs pairs of probe images within one batch (Quiroga §2.5 block approximation); every "
                "batch held a single image - raise batch_size to at least 2 x (transformations + 1)"
            )
        return (nf - 1) / nf * self.sd_pair_sum / pairs

    def _per_unit(self) -> torch.Tensor:
        raise NotImplementedError

    def _per_element_values(self, per_unit: torch.Tensor) -> Tuple[torch.Tensor, List[str]]:
        return per_unit.mean().reshape(1), ["all"]

    def _per_channel(self, per_unit: torch.Tensor) -> Optional[torch.Tensor]:
        if len(self.unit_shape) == 1:
            return per_unit if self.unit_shape[0] > 1 else None  # vector: one value per entry
        return per_unit.reshape(self.unit_shape[0], -1).mean(-1)

    def _value(self, per_unit: torch.Tensor) -> torch.Tensor:
        return per_unit.mean()

    def compute(self) -> torch.Tensor:
        return self._value(self._per_unit())

    def _compute_details(self) -> Dict[str, Any]:
        per_unit = self._per_unit()
        return self._details(per_unit, self._extra(per_unit))

    def _details(self, per_unit: torch.Tensor, extra: Dict[str, Any]) -> Dict[str, Any]:
        """``compute_details()`` from the per-unit values and the measure's own further keys."""
        per_element, names = self._per_element_values(per_unit)
        details = {
            "value": float(self._value(per_unit).tolist()),
            "per_element": per_element,
            "element_names": names,
            "per_channel": self._per_channel(per_unit),
            "left_out": 0,
            "per_unit": per_unit,
        }
        details.update(extra)
        return details

    def _extra(self, per_unit: torch.Tensor) -> Dict[str, Any]:
        return {}


class _Ratio(_Transformational):
    """TV/SV or TD/SD with ``0/0 = 1`` and ``x/0 = +inf``."""

    def _num_den(self) -> Tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _per_unit(self) -> torch.Tensor:
        return safe_ratio(*self._num_den())

    def _compute_details(self) -> Dict[str, Any]:
        num, den = self._num_den()  # once, for the ratio and the special cases
        per_unit = safe_ratio(num, den)
        return self._details(per_unit, {
            "zero_over_zero_units": int(((num == 0) & (den == 0)).sum().tolist()),
            "inf_units": int(torch.isinf(per_unit).sum().tolist()),
        })


# ---------------------------------------------------------------------- variance
class TransformationVariance(_Transformational):
    """Transformation Variance, Quiroga Eq. 2: ``TV(a) = mean_i Var_j ST[i, j]`` per unit (lower = more invariant).

    Args:
        num_transformations: ``k``, the columns of ST (the group's elements + 1 with the identity).
        unit_shape: ``(C, h, w)`` for feature maps or ``(D,)`` for vectors.
        element_names: labels of the ``k`` columns (reports).
    """

    measure_name = "tv"
    summaries = ("tv",)

    def _per_unit(self):
        return self._tv()


class SampleVariance(_Transformational):
    """Sample Variance, Quiroga Eq. 3: ``SV(a) = mean_j Var_i ST[i, j]`` per unit (the natural variability).

    ``per_element`` has one entry per ST column (``"identity"`` first). Arguments as
    :class:`TransformationVariance`. Column moments are float64 sums: exact up to the usual
    ``sum x^2 - (sum x)^2/n`` round-off (relative ``~1e-16 mean^2/var``).
    """

    measure_name = "sv"
    summaries = ("cols",)
    higher_is_better = None

    def _per_unit(self):
        return self._sv_columns().mean(0)

    def _per_element_values(self, per_unit):
        return self._sv_columns().reshape(self.k, -1).mean(-1), list(self.element_names)


class NormalizedVariance(_Ratio):
    """Normalized Variance, Quiroga Eq. 4: ``NV(a) = TV(a) / SV(a)`` per unit, ``0/0 = 1``, ``x/0 = +inf``.

    0 = invariant, < 1 = the transformations move the unit less than the samples do.
    A dead (constant) unit scores exactly 1. One unit with ``SV = 0 < TV`` makes its channel
    and layer mean ``+inf`` (a documented inf, as the paper says, never a NaN);
    ``compute_details()`` counts ``inf_units`` and ``zero_over_zero_units``.
    """

    measure_name = "nv"
    summaries = ("tv", "cols")

    def _num_den(self):
        return self._tv(), self._sv_columns().mean(0)


# ---------------------------------------------------------------------- distance
class TransformationDistance(_Transformational):
    """Transformation Distance, Quiroga Eq. 5-6: ``TD(a) = mean_i AverageDistance(ST[i, :])`` per unit.

    ``AverageDistance(x) = sum_{i,j} d(x_i, x_j) / n^2`` (Eq. 6). ``distance``: ``"euclidean"``
    (``|x - y|``, default), ``"squared"`` (``(x-y)^2``; then ``TD = 2 x`` the population TV, Eq. 7)
    or an elementwise callable ``d(x, y)``. Exact (each row of ST lies in one batch).
    """

    measure_name = "td"
    summaries = ("td",)

    def _per_unit(self):
        return self._td()


class SampleDistance(_Transformational):
    """Sample Distance, Quiroga Eq. 5-6: ``SD(a) = mean_j AverageDistance(ST[:, j])`` per unit.

    With ``distance="squared"`` exact and mergeable (Eq. 7, from the column moments). Otherwise
    Quiroga §2.5's block approximation: the pairs of probe images *within each batch*,
    rescaled to Eq. 6's normalisation (``(n-1)/n`` x the mean over those pairs) - exact when
    all images are in one batch, batching-dependent otherwise (module docstring).
    ``per_element``: one entry per ST column.
    """

    measure_name = "sd"
    summaries = ("sd",)
    higher_is_better = None

    def _per_unit(self):
        return self._sd_columns().mean(0)

    def _per_element_values(self, per_unit):
        return self._sd_columns().reshape(self.k, -1).mean(-1), list(self.element_names)


class NormalizedDistance(_Ratio):
    """Normalized Distance, Quiroga Eq. 5: ``ND(a) = TD(a) / SD(a)`` per unit, ``0/0 = 1``, ``x/0 = +inf``.

    See :class:`SampleDistance` for the exactness of ``SD``; ``distance="squared"`` is exact.
    """

    measure_name = "nd"
    summaries = ("td", "sd")

    def _num_den(self):
        return self._td(), self._sd_columns().mean(0)


# ---------------------------------------------------------------------- ANOVA
class AnovaInvariance(_Transformational):
    """ANOVA measure, Quiroga §2.3: one-way F-test per unit, transformations as treatments.

    A unit is invariant when the hypothesis "equal means under every transformation" is not
    rejected at significance ``alpha / num_tests`` (Bonferroni; ``num_tests`` defaults to the
    layer's number of units). ``value``: the fraction of invariant units (higher = more
    invariant); ``per_channel``: that fraction per channel. A constant unit is invariant;
    ``SSW = 0 < SSB`` (every transformation constant, at different values) is rejected.
    The F distribution's critical value comes from ``scipy.stats.f.isf``.

    Args:
        alpha: significance level (default 0.01). Option ``anova_alpha`` in ``measure()``.
        num_tests: Bonferroni denominator (option ``anova_num_tests``), e.g. the number of
            units of the whole network as in the paper.
    """

    measure_name = "anova"
    summaries = ("cols",)
    higher_is_better = True
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0
    best_value = 1.0

    def __init__(
        self,
        num_transformations: int,
        unit_shape: Sequence[int],
        alpha: float = 0.01,
        num_tests: Optional[int] = None,
        **kwargs: Any,
    ):
        super().__init__(num_transformations, unit_shape, **kwargs)
        if not 0.0 < float(alpha) < 1.0:
            raise ValueError(f"AnovaInvariance: alpha must be in (0, 1), got {alpha}")
        if num_tests is not None and int(num_tests) < 1:
            raise ValueError(f"AnovaInvariance: num_tests must be >= 1, got {num_tests}")
        self.alpha = float(alpha)
        self.num_tests = None if num_tests is None else int(num_tests)

    @classmethod
    def _options(cls, options):
        return {"alpha": options.get("anova_alpha", 0.01), "num_tests": options.get("anova_num_tests")}

    def _anova(self):
        return _anova_compute(self.n, **self._columns(), alpha=self.alpha, num_tests=self.num_tests)

    def _per_unit(self):
        return self._anova()["invariant"]

    def _extra(self, per_unit):
        out = self._anova()
        return {"F": out["F"], "critical_F": float(out["critical"])}


# ---------------------------------------------------------------------- Goodfellow
class GoodfellowInvariance(_Transformational):
    """Goodfellow et al. 2009 invariance as adapted by Quiroga §3.2.2, per unit.

    Threshold ``t`` from a normal fit of the *untransformed* activations,
    ``P(a <= t) = q`` (``q = 0.99``, option ``goodfellow_quantile``): ``t = mu_0 + Phi^{-1}(q) sigma_0``
    (maximum-likelihood ``sigma``; ``t = a_0`` for a constant unit, as Quiroga's reference code).
    Score per non-identity transformation ``j``: ``L_j / G``, with ``G = 1 - q`` the global firing
    rate the threshold was fitted for and ``L_j`` the firing rate under ``t_j``.

    One pass: ``t`` is only known once every image is seen, so ``L_j`` cannot be counted in the
    same pass. It is the tail of the two-moment normal fit of the transformed activations,
    ``L_j = P(N(mu_j, sigma_j^2) > t)`` (``1[a_j > t]`` for a constant column) - the same normal
    model Quiroga uses for the threshold. All states are float64 column sums (mergeable).
    1 = the transformations do not change how often the unit fires; Quiroga reads lower as
    more invariant (``higher_is_better = False``). ``per_element``: one per transformation.
    """

    measure_name = "goodfellow"
    summaries = ("cols",)

    def __init__(self, num_transformations: int, unit_shape: Sequence[int], quantile: float = 0.99, **kwargs: Any):
        super().__init__(num_transformations, unit_shape, **kwargs)
        if not 0.0 < float(quantile) < 1.0:
            raise ValueError(f"GoodfellowInvariance: quantile must be in (0, 1), got {quantile}")
        self.quantile = float(quantile)

    @classmethod
    def _st_names(cls, ctx, include_identity):
        return ["identity"] + [e.name for e in ctx.elements]  # the threshold needs the untransformed column

    @classmethod
    def _options(cls, options):
        return {"quantile": options.get("goodfellow_quantile", 0.99)}

    def _scores(self) -> torch.Tensor:
        return _goodfellow_compute(self.n, **self._columns(), quantile=self.quantile)

    def _per_unit(self):
        return self._scores().mean(0)

    def _per_element_values(self, per_unit):
        return self._scores().reshape(self.k - 1, -1).mean(-1), list(self.element_names[1:])


# ---------------------------------------------------------------------- same-equivariance
class SameEquivariance(_Transformational):
    """Same-equivariance, Quiroga §2.6 (Eq. 8, variance form), feature maps only.

    ``ST'[i, j] = t_j^{-1}(A(t_j x_i))`` with ``A(t_j x_i)`` the whole map ``C x h x w`` scaled to
    unit l2 norm per sample, then transformed back by the group's inverse action on feature
    maps (spatial only: same-equivariance is ``g = t``, no channel action). Per unit: the
    transformation variance ``mean_i Var_j ST'[i, j]``, over the positions that carry content
    after every inverse transform (zero-filled shifts, the disk of interpolated rotations,
    the content of down-scaled maps).

    ``value`` is the *sum* over valid units: the total transformation variance of the
    unit-norm map, Quiroga's ``A`` taken as one vector (a per-unit mean would shrink with the
    map size and not compare across layers). It lies in ``[0, k/(k-1)]``: 0 = same-equivariant.
    ``per_channel`` is the mean over the valid positions of each channel (heatmaps, like the
    other measures), so ``value = per_channel.mean() x valid units``. Vector layers: a note,
    not an error (the transformations are undefined on vectors).
    """

    measure_name = "same_equivariance"
    summaries = ("tv",)
    plot_lower_bound = 0.0
    best_value = 0.0

    def __init__(
        self, num_transformations: int, unit_shape: Sequence[int], mask: Optional[torch.Tensor] = None, **kwargs: Any
    ):
        super().__init__(num_transformations, unit_shape, **kwargs)
        if len(self.unit_shape) != 3:
            raise ValueError(f"SameEquivariance needs feature maps C x h x w, got units of shape {self.unit_shape}")
        h, w = self.unit_shape[-2:]
        mask = torch.ones(h, w, dtype=torch.bool) if mask is None else mask.to(torch.bool).cpu()
        if tuple(mask.shape) != (h, w):
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit maps of shape {self.unit_shape}")
        if not bool(mask.any()):
            raise ValueError("no position carries content after every inverse transform (shifts larger than the map?)")
        self.register_buffer("valid", mask, persistent=False)

    @classmethod
    def not_applicable(cls, ctx: LayerContext, **_: Any) -> Optional[str]:
        if ctx.kind != "map":
            return (
                f"same_equivariance is undefined on vector layers (Quiroga §2.6: the transformations act on "
                f"feature maps only); layer {ctx.layer!r} is a vector"
            )
        if not ctx.group.has_inverse:
            return (f"same_equivariance needs the inverse action of group {ctx.group.name!r} on feature maps, "
                    "which it does not define")
        return None

    @classmethod
    def for_layer(cls, ctx: LayerContext, include_identity: bool = True, **_: Any) -> "SameEquivariance":
        reason = cls.not_applicable(ctx)
        if reason:
            raise ValueError(reason)
        size = tuple(ctx.a_x.shape[-2:])
        mask = torch.ones(size, dtype=torch.bool, device=ctx.a_x.device)
        for e in ctx.elements:
            m = ctx.group.inverse_feature_mask(e, size, ctx.input_size, device=ctx.a_x.device)
            if m is not None:
                mask &= m.to(device=mask.device, dtype=torch.bool)
        names = cls._st_names(ctx, include_identity)
        return cls(len(names), tuple(ctx.a_x.shape[1:]), mask=mask, element_names=names).to(ctx.a_x.device)

    def _update_tensors(self, st_inv: torch.Tensor, sample_mask: Optional[torch.Tensor] = None) -> None:
        """Add ``t_j^{-1}(A(t_j x))`` of unit-norm maps, ``k x b x C x h x w`` (see ``functional.unit_norm_maps``).

        ``sample_mask``: optional ``b`` booleans, ``True`` for the images that count (the others
        are left out exactly); ``None``: all count.
        """
        self._add_matrix(st_inv, sample_mask)

    def _update_context(self, ctx: LayerContext) -> None:
        maps = [ctx.group.act_feature_inverse(unit_norm_maps(ctx.a_gx[j]), e, ctx.input_size)
                for j, e in enumerate(ctx.elements)]
        if self.k == len(ctx.elements) + 1:
            maps.insert(0, unit_norm_maps(ctx.a_x))
        self._add_matrix(torch.stack(maps), ctx.sample_mask)

    def _per_unit(self):
        return self._tv() * self.valid.to(self.tv_sum.device)

    def _value(self, per_unit):
        return per_unit.sum()

    def _per_channel(self, per_unit):
        valid = self.valid.to(per_unit.device)
        return per_unit.sum((-2, -1)) / valid.sum()

    def _extra(self, per_unit):
        return {"valid_units": int(self.valid.sum()) * self.unit_shape[0]}

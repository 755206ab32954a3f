"""What a measurement returns: :class:`MeasureReport`, its results, and the depth parts.

One :class:`LayerResult` per (layer, measure, group); :meth:`MeasureReport.series` gives
the per-layer vectors that the TensorBoard summaries hold, :meth:`MeasureReport.parts` the
means per depth part (Bruintjes et al. 2023 §4.2, :func:`assign_parts`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

# The depth parts belong to the event format, which the plugin owns: one PARTS for library and tab.
from lightning_equivariance_tb.metadata import PARTS

from .significance import Significance

__all__ = ["PARTS", "LayerResult", "MeasureReport", "assign_parts", "above_chance", "INFORMATIVE_ROOM"]

#: The per-layer columns of ``MeasureReport.to_dataframe()`` after the identifying ones.
_RESULT_COLUMNS = ("value", "left_out", "non_finite", "chance", "above_chance", "informative", "stderr",
                   "margin", "margin_stderr", "margin_low", "significant")
#: The columns of ``MeasureReport.parts(detail=True)``.
_PART_COLUMNS = ("measure", "group", "part", "value", "chance", "above_chance", "informative", "stderr",
                 "margin", "margin_stderr", "margin_low", "significant")


def _mean_or_none(values) -> Optional[float]:
    """The mean of the values that exist (``None``/NaN are missing), or ``None`` when none does."""
    present = [float(v) for v in values if v is not None and not (isinstance(v, float) and np.isnan(v))]
    return float(np.mean(present)) if present else None


def _all_or_none(flags, margins) -> Optional[bool]:
    """Whether every layer with a margin is significant; ``None`` when no layer has a margin."""
    decided = [bool(f) for f, m in zip(flags, margins) if m is not None and not (isinstance(m, float) and np.isnan(m))]
    return all(decided) if decided else None


@dataclass(frozen=True)
class LayerResult(Significance):
    """One (layer, measure, group) result of a :class:`MeasureReport`; its chance level, standard error
    and margin over chance are the fields of :class:`~lightning_equivariance.significance.Significance`
    (``None`` where undefined, docs/measures.md §7)."""

    layer: str
    index: int
    part: str
    kind: str
    shape: Tuple[int, ...]
    measure: str
    group: str
    value: float
    per_element: Dict[str, float]
    per_channel: Optional[np.ndarray]
    left_out: int
    higher_is_better: Optional[bool]
    layout: str = "channels_first"
    non_finite: int = 0
    #: the measure's best possible value (1 for the correlation measures, -1 for channelwise G-EED)
    best: Optional[float] = None


#: Below this room above the chance level a layer is uninformative (docs/measures.md §7).
INFORMATIVE_ROOM = 0.05


def above_chance(
    value: float, chance: Optional[float], best: Optional[float]
) -> Tuple[Optional[float], Optional[bool]]:
    """``(above_chance, informative)`` of an element-averaged ``value`` with chance level ``chance``.

    ``(v - c) / (best - c)`` where ``best`` is the measure's best possible value: 1 at perfect
    in/equivariance, 0 at chance, negative below it. With less than :data:`INFORMATIVE_ROOM`
    between the chance level and ``best`` the layer is uninformative: ``(None, False)``.
    ``(None, None)`` when there is no chance level.
    """
    if chance is None or best is None or not np.isfinite(chance):
        return None, None
    room = best - chance
    if abs(room) < INFORMATIVE_ROOM:
        return None, False
    return float((value - chance) / room), True


def assign_parts(kinds: Sequence[str], is_pool: Optional[Sequence[bool]] = None) -> List[str]:
    """Depth parts of Bruintjes et al. 2023 §4.2 for layers in depth order.

    *Pool* is the output of global pooling: the last pooling module whose output is a
    vector (``B x D`` or ``B x C x 1 x 1``) and after which no feature map follows. Everything
    before it (feature maps, and maps already down-sampled to ``1 x 1``) is split uniformly
    into Early / Middle / Late; everything after it (the classifier head, ending in the output
    before softmax) is *Final*. A global pool followed by feature maps is a branch whose result
    is broadcast back onto a map (ASPP's image pooling, LRASPP's attention, squeeze-excitation):
    it is no Pool part, and a dense-prediction net's decoder stays in Early / Middle / Late.
    Without a global pooling layer (a ViT's class token, a flatten-based head, a segmentation
    net) there is no Pool part: the trailing vector layers are Final. The engine puts the
    model's own output, ``"(output)"``, in Final after the parts of the other layers.
    """
    n = len(kinds)
    is_pool = list(is_pool) if is_pool is not None else [False] * n
    last_map = max((i for i in range(n) if kinds[i] == "map"), default=-1)
    pools = [i for i in range(n) if is_pool[i] and kinds[i] == "vector" and i > last_map]
    if pools:
        head_start, pool = pools[-1] + 1, pools[-1]
    else:
        head_start, pool = n, None
        while head_start > 0 and kinds[head_start - 1] == "vector":
            head_start -= 1
        if head_start == 0:  # only vectors: nothing spatial to split
            head_start = n - 1
    body = pool if pool is not None else head_start
    parts = [PARTS[min(2, (3 * j) // body)] for j in range(body)]
    if pool is not None:
        parts.append("Pool")
    return parts + ["Final"] * (n - len(parts))


@dataclass
class MeasureReport:
    """What :func:`measure` returns: one :class:`LayerResult` per (layer, measure, group).

    Attributes:
        results: the results, in depth order of the layers.
        errors: ``{(layer, measure, group): reason}`` of what could not be measured
            (``on_error="warn"``, the default): a layer whose output is no map of the image
            grid, a non-square map under 90-degree rotations, a dead output for the
            correlation measures, a layer whose every image was non-finite, ...; the other
            measures and groups of the layer are still reported.
        notes: ``{(layer, measure, group): reason}`` of measures that are undefined on a layer
            and were skipped there by design (e.g. ``same_equivariance`` on vector layers,
            ``geed_softmax`` on feature maps); the layer's other measures are reported.
        not_called: selected layers whose forward hook never fired.
        seconds: wall time of the measurement.
        num_samples: probe images measured (on this process).
        layouts: ``{layer: "channels_first" | "channels_last" | "tokens" | "tokens_transposed" | "windows" |
            "patches" | "heads" | "vector"}``: how each measured layer's output was read (docs/measures.md §1.3).
        non_finite: ``{layer: [probe positions]}`` of images left out of a layer because their
            input or activation there held NaN or Inf (docs/measures.md §1.7).
        non_finite_inputs: probe positions of images whose input held NaN or Inf (left out of
            every layer).
    """

    results: List[LayerResult]
    errors: Dict[Tuple[str, str, str], str] = field(default_factory=dict)
    not_called: List[str] = field(default_factory=list)
    seconds: float = 0.0
    num_samples: int = 0
    notes: Dict[Tuple[str, str, str], str] = field(default_factory=dict)
    layouts: Dict[str, str] = field(default_factory=dict)
    non_finite: Dict[str, List[int]] = field(default_factory=dict)
    non_finite_inputs: List[int] = field(default_factory=list)
    #: ``{layer: (index, part)}`` of every layer that produced an output (measured or refused), depth order
    depth: Dict[str, Tuple[int, str]] = field(default_factory=dict)
    #: the selected layers' names, in the model's registration order
    selected: List[str] = field(default_factory=list)

    def relabeled(self, name: Callable[[str], str]) -> "MeasureReport":
        """The same report with every layer name mapped through ``name`` (display names, e.g.
        relative to a LightningModule's single child module); the results are shared, not copied."""
        def key(k):
            return (name(k[0]),) + tuple(k[1:])

        return replace(
            self,
            results=[replace(r, layer=name(r.layer)) for r in self.results],
            errors={key(k): v for k, v in self.errors.items()},
            notes={key(k): v for k, v in self.notes.items()},
            not_called=[name(n) for n in self.not_called],
            layouts={name(k): v for k, v in self.layouts.items()},
            non_finite={name(k): v for k, v in self.non_finite.items()},
            depth={name(k): v for k, v in self.depth.items()},
            selected=[name(n) for n in self.selected],
        )

    def to_dataframe(self, per_element: bool = False):
        """A ``pandas.DataFrame`` with columns ``layer, index, part, kind, layout, measure, group, value,
        left_out, non_finite, chance, above_chance, informative, stderr``.

        ``value`` is averaged over the group's elements; ``per_element=True`` gives one row
        per element with an ``element`` column instead. ``layout`` says how the layer was read
        (``channels_last`` for ``B x h x w x C`` outputs), ``left_out`` counts dead channels
        left out, ``non_finite`` the images left out of the layer for NaN/Inf values;
        ``chance``, ``above_chance``, ``informative``, ``stderr``, ``margin``, ``margin_stderr``,
        ``margin_low`` and ``significant`` (docs/measures.md §7) are missing (``None``) where a
        measure has none or they are undefined.
        """
        import pandas as pd

        rows = []
        for r in self.results:
            base = dict(layer=r.layer, index=r.index, part=r.part, kind=r.kind, layout=r.layout, measure=r.measure,
                        group=r.group)
            extra = dict(left_out=r.left_out, non_finite=r.non_finite, chance=r.chance, above_chance=r.above_chance,
                         informative=r.informative, stderr=r.stderr, margin=r.margin, margin_stderr=r.margin_stderr,
                         margin_low=r.margin_low, significant=r.significant)
            if per_element:
                rows += [dict(base, element=e, value=v, **extra) for e, v in r.per_element.items()]
            else:
                rows.append(dict(base, value=r.value, **extra))
        cols = ["layer", "index", "part", "kind", "layout", "measure", "group"] + (["element"] if per_element else [])
        return pd.DataFrame(rows, columns=cols + list(_RESULT_COLUMNS))

    def parts(self, detail: bool = False):
        """Mean value per depth part: a DataFrame indexed by (measure, group) with columns Early..Final.

        ``detail=True``: one row per (measure, group, part) with ``value``, ``chance``,
        ``above_chance``, ``informative`` and ``stderr`` (docs/measures.md §7): a part's value
        and chance are the means of its layers', its above-chance level follows from those,
        and its ``stderr`` is the mean of its layers' - an upper bound on the standard error of
        the part mean, since the layers share their images. Missing values are ``None``.
        ``margin``, ``margin_stderr`` and ``margin_low`` are the means of its layers' (a layer
        without one left out); significance is decided per layer, so a part's ``significant``
        is True when every layer of it with a margin is significant (``None``: no layer has one).
        """
        import pandas as pd

        df = self.to_dataframe()
        if not detail:
            table = df.pivot_table(index=["measure", "group"], columns="part", values="value", aggfunc="mean")
            return table.reindex(columns=[p for p in PARTS if p in table.columns])
        best = {(r.measure, r.group): r.best for r in self.results}
        rows = []
        for (measure, group), sub in df.groupby(["measure", "group"], sort=False):
            for part in [p for p in PARTS if p in set(sub.part)]:
                layers = sub[sub.part == part]
                value = float(layers.value.mean())
                chance = _mean_or_none(layers.chance)
                above, informative = above_chance(value, chance, best[(measure, group)])
                rows.append(dict(measure=measure, group=group, part=part, value=value, chance=chance,
                                 above_chance=above, informative=informative, stderr=_mean_or_none(layers.stderr),
                                 margin=_mean_or_none(layers.margin), margin_stderr=_mean_or_none(layers.margin_stderr),
                                 margin_low=_mean_or_none(layers.margin_low),
                                 significant=_all_or_none(layers.significant, layers.margin)))
        return pd.DataFrame(rows, columns=list(_PART_COLUMNS))

    def scalars(self, prefix: str = "equivariance") -> Dict[str, float]:
        """Flat scalars as the callback logs them: ``{prefix}/{measure}/{group}/{layer}`` and
        ``{prefix}/{measure}/{group}/part/{Part}`` (the mean over the part's layers)."""
        scalars: Dict[str, float] = {}
        for s in self.series():
            base = f"{prefix}/{s.measure}/{s.group}"
            measured = [(layer, part, float(v)) for layer, part, v in zip(s.layers, s.parts, s.values)
                        if layer not in s.missing]
            for layer, _, value in measured:
                scalars[f"{base}/{layer}"] = value
            for part in PARTS:
                vals = [v for _, p, v in measured if p == part]
                if vals:
                    scalars[f"{base}/part/{part}"] = float(np.mean(vals))
        return scalars

    def per_channel(self, layer: str, measure: str, group: str) -> np.ndarray:
        """Per-channel values of one layer (for heatmaps); raises ``KeyError`` if not available."""
        for r in self.results:
            if (r.layer, r.measure, r.group) == (layer, measure, group):
                if r.per_channel is None:
                    raise KeyError(f"layer {layer!r} is a vector layer or {measure!r} has no per-channel values")
                return r.per_channel
        raise KeyError(f"no result for layer={layer!r}, measure={measure!r}, group={group!r}")

    def _layer_order(self) -> List[Tuple[str, str]]:
        """``(layer, part)`` of every layer the measurement met, in depth order, then the selected layers
        that were never called, each after the last met layer selected before it."""
        order = sorted(self.depth, key=lambda n: self.depth[n][0])
        placed = [(n, self.depth[n][1]) for n in order]
        for name in self.not_called:
            before = ([n for n in self.selected[: self.selected.index(name)] if n in self.depth]
                      if name in self.selected else [])
            # a call ``name:k`` (or ``name::k``, probe.CallNames) sits with its layer ``name``
            at = max(
                (i for i, (n, _) in enumerate(placed) if n in before or n.rstrip("0123456789").rstrip(":") in before),
                default=len(placed) - 1,
            )
            part = placed[at][1] if placed else PARTS[0]
            placed.insert(at + 1, (name, part))
        return placed

    def series(self):
        """One series per (measure, group), layers in depth order: what the TensorBoard summaries hold.

        Each is a ``lightning_equivariance_tb.summary.Series`` (the plugin owns the format): every
        layer the measurement met or selected, a missing entry with its status and reason for the
        ones without a value (``"refused"``: in ``report.errors``; ``"not_called"``), and the
        per-layer ``stderr``, ``chance``, ``above_chance``, ``informative``, ``non_finite``,
        ``margin``, ``margin_stderr``, ``margin_low`` and ``significant``.
        Layers where a measure is undefined by design (``report.notes``) are not listed.
        """
        from lightning_equivariance_tb.summary import Series

        by_key: Dict[Tuple[str, str], Dict[str, LayerResult]] = {}
        for r in self.results:
            by_key.setdefault((r.measure, r.group), {})[r.layer] = r
        for _layer, measure, group in self.errors:
            by_key.setdefault((measure, group), {})
        order = self._layer_order()
        out = []
        for (m, g), results in by_key.items():
            layers = [(n, p) for n, p in order if n in results or (n, m, g) in self.errors or n in self.not_called]
            rs = [results.get(n) for n, _ in layers]
            if not any(rs):
                continue
            missing = {n: ("refused", self.errors[(n, m, g)]) for n, _ in layers if (n, m, g) in self.errors}
            missing.update({n: ("not_called", "the layer's forward hook never fired")
                            for n, _ in layers if n in self.not_called})

            def column(attr, rs=rs):
                values = [getattr(r, attr) if r is not None else None for r in rs]
                if all(v is None for v in values):
                    return None
                return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)

            chans = [None if r is None else r.per_channel for r in rs]
            first = next(r for r in rs if r is not None)
            out.append(Series(
                measure=m, group=g, layers=[n for n, _ in layers], parts=[p for _, p in layers],
                values=np.array([np.nan if r is None else r.value for r in rs], dtype=np.float64),
                per_channel=None if all(c is None for c in chans) else [
                    None if r is None else np.atleast_1d(c if c is not None else r.value) for c, r in zip(chans, rs)],
                higher_is_better=first.higher_is_better,
                stderr=column("stderr"), chance=column("chance"), above_chance=column("above_chance"),
                informative=column("informative"), non_finite=column("non_finite"), missing=missing,
                margin=column("margin"), margin_stderr=column("margin_stderr"), margin_low=column("margin_low"),
                significant=column("significant"),
            ))
        return out

    def plot(self, ax=None, chance: bool = True):
        """Plot value against layer depth, one line per (measure, group); returns ``(fig, ax)``. Needs matplotlib.

        Readable at real sizes (60-70 layers): the figure grows with the layer count, every
        layer is labelled (smaller labels for many layers), and the legend sits outside the
        axes, to their right. ``chance``: each series' chance level (docs/measures.md §7),
        where it has one, as a dashed line of the series' colour, its standard errors as
        a band, and the layers not significantly above chance (``significant`` False) as
        hollow markers. Drawn by :func:`lightning_equivariance.figures.plot_profile`, with the
        W&B / MLflow figures.
        """
        from .figures import plot_profile

        return plot_profile(self, ax=ax, chance=chance)

    def to_html(self, path: str, *, title: str = "Equivariance report", run: str = "report", step: int = 0,
                model: str = "", run_group: str = "") -> int:
        """Write one self-contained HTML file with this report's views; returns its size in bytes.

        The layer profile (chance dotted, standard errors as a band, where measured), the heatmap
        (layers x this one measurement) and the part values, drawn by plotly.js inlined from the
        installed ``plotly`` package: the file opens offline in any browser, no server, no network.
        ``run``, ``step``, ``model`` and ``run_group`` label the measurement. For the runs of a
        log directory over training see ``lightning-equivariance report`` (docs/compare.md).

        Raises:
            lightning_equivariance.html_report.ReportError: if the report is empty or ``path``
                cannot be written.
        """
        from .html_report import build_data, runs_from_report, write_html

        runs = runs_from_report(self, run=run, step=step, model=model, run_group=run_group)
        return write_html(path, build_data(runs, title=title))

    def warn_summary(self) -> None:
        """One warning for what was left out (errors, non-finite images), if anything (never silently)."""
        if self.errors:
            first = list(self.errors.items())[:3]
            shown = "; ".join(f"{'/'.join(k)}: {v}" for k, v in first)
            warnings.warn(
                f"lightning_equivariance: {len(self.errors)} (layer, measure, group) combination(s) could not be "
                f"measured and are in report.errors (the rest was measured). First: {shown}",
                RuntimeWarning,
                stacklevel=4,
            )
        if self.non_finite_inputs or self.non_finite:
            layers = {k: v for k, v in self.non_finite.items() if v != self.non_finite_inputs}
            parts = []
            if self.non_finite_inputs:
                parts.append(f"the probe image(s) at position(s) {self.non_finite_inputs} hold NaN or Inf and were "
                             "left out of every layer")
            if layers:
                shown = ", ".join(f"{k!r}: {v}" for k, v in list(layers.items())[:3])
                more = " ..." if len(layers) > 3 else ""
                parts.append(f"{len(layers)} layer(s) left out images whose activations hold NaN or Inf "
                             f"({shown}{more})")
            warnings.warn("lightning_equivariance: " + "; ".join(parts) + " (report.non_finite)", RuntimeWarning,
                          stacklevel=4)

    def __repr__(self) -> str:
        return (
            f"MeasureReport({len(self.results)} results, {len({r.layer for r in self.results})} layers, "
            f"{self.num_samples} samples, {self.seconds:.2f}s, errors={list(self.errors)})"
        )

"""Static matplotlib figures of a run: the layer x step heatmap and the layer profile.

What :mod:`lightning_equivariance.logger_figures` logs to Weights & Biases and MLflow, where
the TensorBoard tab is not available. Both figures follow the tab's main views:

* :func:`heatmap_figure`: one (measure, group), layers in depth order (top to bottom) x the
  measured global steps, from the callback's history of scalars
  (:class:`~lightning_equivariance.run_log.History`); part boundaries are marked, missing
  values are grey.
* :func:`profile_figure`: value against layer depth at the latest measurement, one line per
  (measure, group), with the chance level (dashed) and the standard errors (band), drawn by
  :func:`plot_profile`, which is also
  :meth:`MeasureReport.plot() <lightning_equivariance.report.MeasureReport.plot>`.

The one matplotlib module of the library: :meth:`MeasureReport.plot()
<lightning_equivariance.report.MeasureReport.plot>`, the metric classes' ``plot()``
(:func:`plot_metric`), :meth:`ContributionReport.plot()
<lightning_equivariance.contributions.ContributionReport.plot>` (:func:`plot_contributions`) and the
W&B / MLflow figures all draw here, so the figure size and the drawing are written once.

Needs matplotlib (``pip install matplotlib``, in the ``examples``, ``loggers`` and ``test``
extras). The figures are made outside pyplot (``matplotlib.figure.Figure``): no window opens,
whatever the backend, and no global state is left behind; :func:`close_figures` releases them.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "history_steps", "layer_matrix", "heatmap_figure", "profile_size", "plot_profile", "profile_figure",
    "plot_metric", "close_figures", "plot_contributions",
]


def history_steps(history: Any) -> Dict[int, Dict[str, float]]:
    """``{global step: {scalar name: value}}`` of a :class:`~lightning_equivariance.run_log.History`
    (its ``steps``) or of such a mapping itself.

    Raises:
        TypeError: if ``history`` is neither.
    """
    steps = getattr(history, "steps", history)
    if not isinstance(steps, Mapping):
        raise TypeError(
            f"history must be a lightning_equivariance.run_log.History or a mapping "
            f"{{global step: {{scalar name: value}}}}, got {type(history).__name__}"
        )
    return {int(step): dict(scalars) for step, scalars in steps.items()}


def layer_matrix(
    history: Any, measure: str, group: str, layers: Sequence[str], prefix: str = "equivariance"
) -> Tuple[List[int], np.ndarray]:
    """``(steps, matrix)``: the layer x step matrix of one (measure, group) from the history.

    Row ``i`` is ``layers[i]``, column ``j`` the ``j``-th measured global step (increasing);
    a value is the scalar ``{prefix}/{measure}/{group}/{layer}`` the callback logged at that
    step (:meth:`MeasureReport.scalars() <lightning_equivariance.report.MeasureReport.scalars>`),
    NaN where the layer has none.
    """
    steps = history_steps(history)
    order = sorted(steps)
    matrix = np.full((len(layers), len(order)), np.nan)
    base = f"{prefix}/{measure}/{group}/"
    for j, step in enumerate(order):
        scalars = steps[step]
        for i, layer in enumerate(layers):
            value = scalars.get(base + layer)
            if value is not None:
                matrix[i, j] = float(value)
    return order, matrix


def _figure(figsize):
    """A new ``Figure`` outside pyplot: no window, no global state, nothing to close."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("the figures need matplotlib: pip install matplotlib") from e
    return Figure(figsize=figsize)


def _tick_positions(n: int, most: int) -> List[int]:
    if n <= most:
        return list(range(n))
    stride = int(np.ceil(n / most))
    ticks = list(range(0, n, stride))
    if ticks[-1] != n - 1:
        ticks.append(n - 1)
    return ticks


def heatmap_figure(
    history: Any,
    measure: str,
    group: str,
    layers: Sequence[str],
    parts: Optional[Sequence[str]] = None,
    *,
    higher_is_better: Optional[bool] = True,
    prefix: str = "equivariance",
    title: Optional[str] = None,
):
    """The layer x step heatmap of one (measure, group): a new matplotlib ``Figure``.

    Args:
        history: the callback's history (:class:`~lightning_equivariance.run_log.History` or
            ``{global step: {scalar name: value}}``).
        measure: the measure of the series, e.g. ``"equivariance"``.
        group: the transformation group of the series, e.g. ``"rotation90"``.
        layers: the layers in depth order (rows, top to bottom), e.g. a
            ``report.series()`` entry's ``layers``.
        parts: the depth part of each layer; boundaries between parts are drawn and labelled.
        higher_is_better: ``False`` (deviations: G-EED, LEE) reverses the colour map so that
            "more equivariant" is always the same colour; ``None`` says no direction.
        prefix: the scalars' prefix (the callback's: ``"equivariance"``).
        title: default ``"{measure} / {group}: layer x global step"``.

    Infinite values (``nv``/``nd`` of a constant layer) are drawn at the colour scale's end;
    missing ones (NaN) in grey. Many layers or steps get fewer tick labels, not smaller ones.

    Raises:
        ValueError: if ``layers`` is empty or ``parts`` does not give one part per layer.
    """
    layers = [str(layer) for layer in layers]
    if not layers:
        raise ValueError("layers must name at least one layer (the heatmap's rows)")
    if parts is not None and len(parts) != len(layers):
        raise ValueError(f"parts must give one part per layer ({len(layers)}), got {len(parts)}")
    import matplotlib

    steps, matrix = layer_matrix(history, measure, group, layers, prefix=prefix)
    finite = matrix[np.isfinite(matrix)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    shown = np.where(np.isposinf(matrix), vmax, np.where(np.isneginf(matrix), vmin, matrix))
    n_layers, n_steps = len(layers), max(len(steps), 1)
    height = min(max(3.0, 1.2 + 0.16 * n_layers), 14.0)
    width = min(max(6.0, 3.5 + 0.25 * n_steps), 16.0)
    fig = _figure((width, height))
    ax = fig.add_subplot()
    colormap = "viridis" if higher_is_better is not False else "viridis_r"
    cmap = matplotlib.colormaps[colormap].with_extremes(bad="#d0d0d0")
    image = ax.imshow(
        np.ma.masked_invalid(shown if steps else np.full((n_layers, 1), np.nan)),
        aspect="auto", interpolation="nearest", cmap=cmap, vmin=vmin, vmax=vmax,
    )
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.1 if parts is not None else 0.02)
    direction = {True: " (higher = more equivariant)", False: " (lower = more equivariant)"}.get(higher_is_better, "")
    bar.set_label(measure + direction, fontsize=8)
    label_size = 7 if n_layers <= 30 else 6
    rows = _tick_positions(n_layers, 60)
    ax.set_yticks(rows)
    ax.set_yticklabels([layers[i] for i in rows], fontsize=label_size)
    cols = _tick_positions(len(steps), 20)
    ax.set_xticks(cols)
    ax.set_xticklabels([str(steps[j]) for j in cols], rotation=90 if len(steps) > 10 else 0, fontsize=7)
    ax.set_xlabel("global step")
    ax.set_ylabel("layer (depth order)")
    if parts is not None:
        starts = [i for i in range(n_layers) if i == 0 or parts[i] != parts[i - 1]]
        for i in starts[1:]:
            ax.axhline(i - 0.5, color="white", linewidth=1.2)
        for k, i in enumerate(starts):
            end = starts[k + 1] if k + 1 < len(starts) else n_layers
            ax.text(1.005, 1.0 - (i + end) / 2 / n_layers, parts[i], transform=ax.transAxes,
                    va="center", ha="left", fontsize=7, color="#444444")
    ax.set_title(title or f"{measure} / {group}: layer x global step", fontsize=10)
    fig.tight_layout()
    return fig


def profile_size(n_layers: int) -> Tuple[float, float]:
    """``(width, height)`` in inches of a layer profile of ``n_layers`` layers: it grows with the
    layer count so that every layer keeps a readable label (60-70 layers at real sizes)."""
    return max(8.0, 3.0 + 0.2 * n_layers), 4.5 if n_layers <= 30 else 5.5


def plot_profile(report: Any, ax: Any = None, chance: bool = True):
    """Draw a report's layer profile: value against layer depth, one line per (measure, group);
    returns ``(fig, ax)``. This is :meth:`MeasureReport.plot()
    <lightning_equivariance.report.MeasureReport.plot>`.

    Without ``ax`` a pyplot figure of :func:`profile_size` is made. ``chance``: each series'
    chance level (docs/measures.md §7), where it has one, as a dashed line of the series'
    colour, its standard errors as a band, and the layers not significantly above chance
    (``significant`` False) as hollow markers. The legend sits outside the axes, to their right.
    """
    series = report.series() if report.results else []
    n_layers = max((len(s.layers) for s in series), default=0)
    if ax is None:
        try:
            import matplotlib.pyplot as plt
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("MeasureReport.plot() needs matplotlib: pip install matplotlib") from e
        fig, ax = plt.subplots(figsize=profile_size(n_layers))
    else:
        fig = ax.figure
    not_significant_labelled = False
    for s in series:
        x = np.arange(len(s.layers))
        values = np.asarray(s.values, dtype=np.float64)
        (line,) = ax.plot(x, values, marker="o", markersize=3 if n_layers > 30 else 5, label=f"{s.measure} / {s.group}")
        if not chance:
            continue
        if s.significant is not None:  # layers not significantly above chance: hollow markers
            weak = np.asarray(s.significant, dtype=np.float64) == 0
            if weak.any():
                ax.plot(x[weak], values[weak], linestyle="none", marker="o", markersize=7 if n_layers <= 30 else 5,
                        markerfacecolor="white", markeredgecolor=line.get_color(), zorder=line.get_zorder() + 0.1,
                        label=None if not_significant_labelled else "not significantly above chance")
                not_significant_labelled = True
        if s.stderr is not None:
            err = np.asarray(s.stderr, dtype=np.float64)
            ok = np.isfinite(values) & np.isfinite(err)
            if ok.any():
                ax.fill_between(x, np.where(ok, values - err, np.nan), np.where(ok, values + err, np.nan),
                                color=line.get_color(), alpha=0.2, linewidth=0)
        if s.chance is not None and np.isfinite(np.asarray(s.chance, dtype=np.float64)).any():
            ax.plot(x, np.asarray(s.chance, dtype=np.float64), linestyle="--", linewidth=1.2,
                    color=line.get_color(), alpha=0.8, label=f"{s.measure} / {s.group}: chance")
    if series:
        s = max(series, key=lambda t: len(t.layers))
        ax.set_xticks(range(len(s.layers)))
        ax.set_xticklabels(s.layers, rotation=90, fontsize=7 if n_layers <= 30 else 6)
        ax.set_xlim(-0.5, len(s.layers) - 0.5)
    ax.set_xlabel("layer (depth order)")
    ax.set_ylabel("value")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig, ax


def profile_figure(report: Any, chance: bool = True, title: Optional[str] = None):
    """The layer profile of a report (:func:`plot_profile`) on a new ``Figure`` outside pyplot,
    of :func:`profile_size`: what the W&B / MLflow loggers get."""
    n_layers = max((len(s.layers) for s in report.series()), default=0) if report.results else 0
    fig = _figure(profile_size(n_layers))
    fig, ax = plot_profile(report, ax=fig.add_subplot(), chance=chance)
    if title:
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
    return fig


def plot_metric(metric: Any, val: Any = None, ax: Any = None):
    """A measure's values as torchmetrics plots its own metrics (``Metric._plot``: one value, or a
    line of several, e.g. one per epoch), on the measure's ``plot_lower_bound`` /
    ``plot_upper_bound`` where it has them; returns ``(fig, ax)``. This is the metric classes'
    ``plot()``."""
    return metric._plot(val, ax)


def close_figures(figures) -> None:
    """Release matplotlib figures (``{key: figure}`` or an iterable of figures): closed in pyplot
    if pyplot holds them, their artists cleared otherwise; never raises."""
    import sys

    plt = sys.modules.get("matplotlib.pyplot")  # only if someone imported pyplot already
    for fig in list(figures.values() if isinstance(figures, Mapping) else figures):
        try:
            if plt is not None:
                plt.close(fig)
            fig.clear()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


def plot_contributions(report: Any, ax: Any = None):
    """Each layer's share of the summed layer contributions (Gruver et al. 2023, Eq. 5-6) as a bar chart,
    layers in forward order, the ``"(unattributed)"`` remainder in grey at the end (relative to the same
    sum), standard errors as error bars; returns ``(fig, ax)``. This is
    :meth:`ContributionReport.plot() <lightning_equivariance.contributions.ContributionReport.plot>`.

    Without ``ax`` a new ``Figure`` of :func:`profile_size` is made, outside pyplot.
    """
    rows = list(report.rows)
    if ax is None:
        ax = _figure(profile_size(len(rows))).add_subplot()
    fig = ax.figure
    attributed = [r.index >= 0 for r in rows]
    total = sum(r.contribution for r, a in zip(rows, attributed) if a) or 1.0  # as the rows' ``fraction``
    x = np.arange(len(rows))
    ax.bar(x, [r.contribution / total for r in rows], yerr=[r.stderr / total for r in rows],
           color=["C0" if a else "#a0a0a0" for a in attributed], error_kw=dict(elinewidth=0.8, capsize=2))
    ax.set_xticks(x)
    ax.set_xticklabels([r.layer for r in rows], rotation=90, fontsize=7 if len(rows) <= 30 else 6)
    ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.set_xlabel("layer (forward order)")
    ax.set_ylabel("share of the summed contributions")
    ax.set_title(f"layer contributions to the output's LEE ({report.transform}; output LEE {report.output_lee:.3g})",
                 fontsize=10)
    fig.tight_layout()
    return fig, ax

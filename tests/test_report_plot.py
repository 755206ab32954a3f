"""``MeasureReport.plot()`` at real sizes and ``plot()`` of the metric classes (issue 13)."""

import math

import numpy as np
import pytest
import torch

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - Agg backend first

from lightning_equivariance.metrics import CorrelationInvariance, NormalizedVariance  # noqa: E402 - Agg backend first
from lightning_equivariance.report import LayerResult, MeasureReport, above_chance  # noqa: E402 - Agg backend first


def report_of(n_layers, measures=("equivariance", "invariance"), chance=True):
    results = []
    for m_index, measure in enumerate(measures):
        for i in range(n_layers):
            value = 0.5 + 0.4 * i / n_layers - 0.1 * m_index
            c = 0.3 + 0.2 * i / n_layers if chance else None
            above, informative = above_chance(value, c, 1.0) if chance else (None, None)
            results.append(LayerResult(
                layer="backbone.stage%d.block%d.conv" % (i // 10, i), index=i, part="Early",
                kind="map", shape=(8, 4, 4), measure=measure, group="rotation90", value=value,
                per_element={}, per_channel=None, left_out=0, higher_is_better=True,
                chance=c, above_chance=above, informative=informative,
                stderr=0.01 if chance else None, best=1.0,
            ))
    depth = {r.layer: (r.index, r.part) for r in results}
    return MeasureReport(results=results, depth=depth)


def bbox(fig, artist):
    fig.canvas.draw()
    return artist.get_window_extent(fig.canvas.get_renderer())


def test_plot_60_layers_is_readable():
    fig, ax = report_of(60).plot()
    try:
        # the figure grows with the layer count, every layer is labelled
        assert fig.get_size_inches()[0] >= 0.2 * 60
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert len(labels) == 60 and labels[-1] == "backbone.stage5.block59.conv"
        assert all(t.get_fontsize() <= 7 for t in ax.get_xticklabels())
        # the legend sits outside the axes (to their right), inside the figure
        legend = ax.get_legend()
        assert legend is not None
        lb, ab, fb = bbox(fig, legend), bbox(fig, ax), fig.bbox
        assert lb.x0 >= ab.x1 - 1
        assert lb.x1 <= fb.x1 + 1
        # the labels fit in the figure
        for t in ax.get_xticklabels():
            tb = t.get_window_extent(fig.canvas.get_renderer())
            assert tb.y0 >= fb.y0 - 1
        # chance: a dashed line per series, in its colour, with a legend entry
        dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert len(dashed) == 2
        solid = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
        assert {d.get_color() for d in dashed} == {s.get_color() for s in solid}
        np.testing.assert_allclose(dashed[0].get_ydata(), [0.3 + 0.2 * i / 60 for i in range(60)])
        texts = [t.get_text() for t in legend.get_texts()]
        assert "equivariance / rotation90: chance" in texts
        assert ax.collections, "stderr band drawn"
    finally:
        plt.close(fig)


def test_plot_without_chance_has_no_dashed_line():
    fig, ax = report_of(5, chance=False).plot()
    try:
        assert not [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert ax.get_legend() is not None
    finally:
        plt.close(fig)


def test_plot_on_given_axes():
    fig, ax = plt.subplots()
    try:
        got_fig, got_ax = report_of(4).plot(ax=ax)
        assert got_fig is fig and got_ax is ax
    finally:
        plt.close(fig)


def test_metric_plot_correlation_invariance():
    torch.manual_seed(0)
    a = torch.randn(1, 4, 3, 6, 6)
    metric = CorrelationInvariance(num_elements=1, num_channels=3)
    metric.update(a + 0.1 * torch.randn_like(a), a)
    value = metric.compute()
    fig, ax = metric.plot()
    try:
        assert ax.get_ylim() == pytest.approx((0.0, 1.0), abs=0.15)  # the measure's plot bounds
        assert ax.get_title() or ax.get_legend() or ax.get_lines() or ax.collections
    finally:
        plt.close(fig)
    # several values, e.g. one per epoch
    fig, ax = metric.plot([value, value * 0.9])
    try:
        assert len(ax.get_lines()[0].get_ydata()) == 2
    finally:
        plt.close(fig)


def test_metric_plot_normalized_variance():
    torch.manual_seed(0)
    metric = NormalizedVariance(3, (2, 4, 4))
    metric.update(torch.randn(3, 8, 2, 4, 4, dtype=torch.float64))
    value = float(metric.compute())
    assert math.isfinite(value)
    fig, ax = metric.plot()
    try:
        assert fig is ax.figure
    finally:
        plt.close(fig)

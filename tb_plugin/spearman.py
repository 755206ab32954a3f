"""Spearman rank correlation with numpy only (scipy is optional).

Used by the plugin's ``/spearman`` route to relate, across runs, each depth
part's equivariance to a final metric such as test accuracy (Bruintjes et
al. 2023, Fig. 4). Ties get average ranks, as in ``scipy.stats.spearmanr``.

Infinities are ranked where they order: ``+inf`` above every number,
``-inf`` below (MEASURES.md §4's ``nv = x/0 = +inf`` is "more variant than
any finite value", which is all a rank correlation needs); several equal
infinities tie and share their average rank. NaN has no rank and is refused:
the caller leaves such points out (the ``/spearman`` route does, and says so).
"""

import math

import numpy as np


def rankdata(x):
    """Ranks 1..n of ``x``, ties replaced by their average rank.

    ``+inf``/``-inf`` rank last/first; NaN is refused (``ValueError``).
    """
    x = np.asarray(x, dtype=np.float64)
    if np.isnan(x).any():
        raise ValueError("cannot rank NaN; leave those points out first")
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.arange(1, x.size + 1)
    _, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]


def spearman(x, y):
    """Spearman's rho of two equal-length samples and its two-sided p-value.

    Returns:
      ``(rho, p, reason)``: ``rho`` and ``p`` are floats, or ``None`` with a
      human-readable ``reason`` when undefined (fewer than 3 points, or a
      constant sample). ``p`` uses the t-distribution with ``n - 2`` degrees
      of freedom, as ``scipy.stats.spearmanr`` does; it is ``None`` when
      scipy is not installed.

    Raises:
      ValueError: on shapes that differ or are not 1-D, or on a NaN in
        either sample (``+inf``/``-inf`` are fine: they rank last/first).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(
            "x and y must be 1-D of equal length, got %r and %r"
            % (x.shape, y.shape)
        )
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("x and y must not contain NaN; leave those points out first")
    n = x.size
    if n < 3:
        return None, None, "needs at least 3 runs, got %d" % n
    rx, ry = rankdata(x), rankdata(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    if denom == 0.0:
        return None, None, "constant input: all runs have the same value"
    rho = max(-1.0, min(1.0, float(rx @ ry) / denom))
    return rho, _p_value(rho, n), None


def _p_value(rho, n):
    try:
        from scipy import special  # lazy: only the Spearman view needs it
    except ImportError:  # pragma: no cover - scipy is a project dependency
        return None
    if abs(rho) >= 1.0:
        return 0.0
    dof = n - 2
    t = abs(rho) * math.sqrt(dof / ((1.0 - rho) * (1.0 + rho)))
    return float(2.0 * special.stdtr(dof, -t))

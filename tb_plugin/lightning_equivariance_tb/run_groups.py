"""Groups of runs (e.g. seeds of one model) and their statistics over runs.

Pure numpy/scipy (no torch, no TensorBoard): the tab's data layer
(:mod:`lightning_equivariance_tb.data`) and the HTML report use it alike.

A *group* is a set of runs compared as one: papers plot each model type's mean
over seeds with a confidence interval (Kvinge et al. 2022, Fig. 4). A run's group
is either the ``run_group`` recorded in its event files (metadata v2, ``""`` =
none) or the first capture group of a regular expression matched against the run
name (:func:`assign_groups`; RE2 syntax, matched in time linear in the run name, so
no pattern can stall the server). :func:`group_statistics` gives, at each x (global
step or epoch), the mean over the group's runs that have a finite value there and
a Student-t confidence interval for it.
"""

import math
from typing import Dict, List, Mapping, Optional

import numpy as np

__all__ = [
    "assign_groups", "compile_pattern", "PATTERN_SYNTAX", "group_statistics", "stack_statistics",
    "cell_statistics", "t_interval", "interval_label",
    "CONFIDENCE", "INTERVAL_LABEL",
]

CONFIDENCE = 0.95
"""The default confidence level of the interval."""


def interval_label(confidence: float = CONFIDENCE) -> str:
    """How the tab and the report name the interval, e.g. ``"95% Student-t interval over runs"``."""
    return "%s%% Student-t interval over runs" % ("%g" % (100 * confidence))


INTERVAL_LABEL = interval_label()
"""How the tab and the report name the default interval."""


PATTERN_SYNTAX = (
    "run-group patterns use RE2 syntax, which matches in time linear in the run name: no backreferences (\\1) "
    "or lookaround ((?=...), (?<=...)); write \\z for Python's \\Z"
)
"""What a refused run-group pattern's message adds (docs/compare.md, "Run groups")."""


def compile_pattern(pattern: str):
    """A run-group pattern compiled with RE2 (``google-re2``): its matching takes time linear
    in the run name whatever the pattern (``^(.*)*_seed\\d+$`` included), unlike Python's
    ``re``, whose backtracking a pattern can make exponential.

    Raises:
      ValueError: naming the pattern and why RE2 refuses it (invalid, a construct RE2 does not
        have, such as a backreference or a lookaround, or a program larger than RE2's memory
        budget), with :data:`PATTERN_SYNTAX`.
    """
    import re2  # lazy: TensorBoard starts without it

    options = re2.Options()
    options.log_errors = False  # the reason goes to the user, not to TensorBoard's stderr
    try:
        return re2.compile(pattern, options)
    except re2.error as e:
        why = e.args[0] if e.args else e
        why = why.decode("utf-8", "replace") if isinstance(why, bytes) else str(why)
        raise ValueError("invalid run-group pattern %r: %s (%s)" % (pattern, why, PATTERN_SYNTAX)) from None


def assign_groups(recorded: Mapping[str, str], pattern: Optional[str] = None) -> Dict[str, List[str]]:
    """Group runs by their recorded ``run_group`` or by a regular expression.

    Args:
      recorded: run name -> the ``run_group`` recorded for it (``""`` or ``None`` =
        none). Every run to group must be a key.
      pattern: optional regular expression in RE2 syntax (:func:`compile_pattern`). When
        given, it replaces the recorded names: a run's group is the first capture group
        of the pattern's leftmost match in the run name (``search``; the whole match when
        the pattern has no group). A run that does not match, or whose capture is empty
        or did not participate in the match, stays ungrouped.

    Returns:
      group name -> sorted run names, groups in sorted order; ungrouped runs appear
      in no group.

    Raises:
      ValueError: if ``pattern`` is not a valid RE2 regular expression.
    """
    groups: Dict[str, List[str]] = {}
    if pattern is not None and pattern != "":
        regex = compile_pattern(pattern)
        for run in recorded:
            match = regex.search(run)
            if match is None:
                continue
            name = match.group(1) if regex.groups else match.group(0)
            if name:
                groups.setdefault(name, []).append(run)
    else:
        for run, name in recorded.items():
            if name:
                groups.setdefault(str(name), []).append(run)
    return {name: sorted(runs) for name, runs in sorted(groups.items())}


def t_interval(values, confidence: float = CONFIDENCE):
    """``(mean, low, high, n)`` of a sample's finite values.

    ``mean`` is the arithmetic mean of the ``n`` finite values; the interval is
    Student's t interval for the mean::

        mean -+ t_{(1 + confidence) / 2, n - 1} * s / sqrt(n),
        s = sqrt(sum((v - mean)^2) / (n - 1))      (std with ddof=1)

    with ``t_{q, df}`` the ``q`` quantile of Student's t distribution
    (``scipy.stats.t.ppf``). For ``n == 1`` ``low`` and ``high`` are ``None``; for
    ``n == 0`` everything but ``n`` is ``None``. NaN and infinite values are left
    out (a run without a finite value there does not count).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1), got %r" % (confidence,))
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    a = a[np.isfinite(a)]
    n = int(a.size)
    if n == 0:
        return None, None, None, 0
    mean = float(a.mean())
    if n == 1:
        return mean, None, None, 1
    from scipy import stats  # lazy: TensorBoard starts without it

    half = float(stats.t.ppf((1.0 + confidence) / 2.0, n - 1)) * float(a.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half, n


def group_statistics(
    values_by_run: Mapping[str, Mapping[int, float]], confidence: float = CONFIDENCE
) -> Dict[int, dict]:
    """Mean and Student-t interval over runs at each x.

    Args:
      values_by_run: run -> {x: value}, x a global step or an epoch (int). A NaN or
        infinite value, or an x a run lacks, means the run does not count at that x.
      confidence: the interval's level, in (0, 1).

    Returns:
      ``{x: {"mean", "low", "high", "n"}}`` for every x at which at least one run
      has a finite value, in increasing x. Over the ``n`` runs with a finite value
      ``v_1 .. v_n`` at x::

          mean = sum(v_i) / n
          low, high = mean -+ t_{(1 + confidence) / 2, n - 1} * s / sqrt(n)
          s = sqrt(sum((v_i - mean)^2) / (n - 1))        (numpy std, ddof=1)

      where ``t_{q, df}`` is ``scipy.stats.t.ppf(q, df)``. For ``n == 1`` ``low``
      and ``high`` are ``None`` (no interval from one run).
    """
    by_x: Dict[int, list] = {}
    for values in values_by_run.values():
        for x, v in values.items():
            if v is None:
                continue
            v = float(v)
            if math.isfinite(v):
                by_x.setdefault(int(x), []).append(v)
    out = {}
    for x in sorted(by_x):
        mean, low, high, n = t_interval(by_x[x], confidence)
        out[x] = {"mean": mean, "low": low, "high": high, "n": n}
    return out


def stack_statistics(stack, confidence: float = CONFIDENCE):
    """:func:`group_statistics` over the first axis of an array, vectorised.

    Args:
      stack: array of shape ``(runs, ...)``, e.g. runs x layers x steps; NaN or an
        infinity = the run does not count there.
      confidence: the interval's level, in (0, 1).

    Returns:
      ``(mean, low, high, n)``, arrays of the remaining shape: over the ``n`` runs
      with a finite value, ``mean = sum(v_i) / n`` and
      ``mean -+ t_{(1 + confidence) / 2, n - 1} * s / sqrt(n)`` with ``s`` the
      standard deviation with ``ddof=1`` (``scipy.stats.t.ppf``). ``mean`` is NaN
      where ``n == 0``, ``low``/``high`` where ``n < 2``; ``n`` is an int array.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1), got %r" % (confidence,))
    a = np.asarray(stack, dtype=np.float64)
    finite = np.isfinite(a)
    n = finite.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(finite, a, 0.0).sum(axis=0) / n
        mean = np.where(n > 0, mean, np.nan)
        dev = np.where(finite, a - mean, 0.0)
        std = np.sqrt((dev * dev).sum(axis=0) / (n - 1))
        if (n >= 2).any():
            from scipy import stats

            tq = stats.t.ppf((1.0 + confidence) / 2.0, np.maximum(n - 1, 1))
        else:
            tq = np.full(n.shape, np.nan)
        half = np.where(n >= 2, tq * std / np.sqrt(np.maximum(n, 1)), np.nan)
    return mean, mean - half, mean + half, n


def cell_statistics(cells, values, size: int, confidence: float = CONFIDENCE):
    """:func:`stack_statistics` of values scattered over ``size`` cells, in time linear in the values.

    Args:
      cells: int array, the cell (``0 .. size - 1``) of each value, e.g. ``layer * len(xs) + x_index``.
      values: array of the same length; NaN or an infinity = does not count.
      size: the number of cells.
      confidence: the interval's level, in (0, 1).

    Returns:
      ``(mean, low, high, n)``, arrays of length ``size``, with :func:`stack_statistics`'s formulas
      over each cell's finite values (``mean`` NaN where ``n == 0``, ``low``/``high`` where
      ``n < 2``). Unlike a dense runs x cells stack, the cost does not grow with the cells that
      a run has no value in (runs measured at different steps).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1), got %r" % (confidence,))
    cells = np.asarray(cells, dtype=np.intp).reshape(-1)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if cells.shape != values.shape:
        raise ValueError("cells and values differ in length: %d and %d" % (cells.size, values.size))
    finite = np.isfinite(values)
    cells, values = cells[finite], values[finite]
    n = np.bincount(cells, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.bincount(cells, weights=values, minlength=size) / np.maximum(n, 1), np.nan)
        dev = values - mean[cells]
        std = np.sqrt(np.bincount(cells, weights=dev * dev, minlength=size) / (n - 1))
        tq = np.full(n.shape, np.nan)
        counts = np.unique(n[n >= 2])
        if counts.size:
            from scipy import stats

            # one quantile per distinct run count, not per cell
            tq[n >= 2] = stats.t.ppf((1.0 + confidence) / 2.0, counts - 1)[np.searchsorted(counts, n[n >= 2])]
        half = np.where(n >= 2, tq * std / np.sqrt(np.maximum(n, 1)), np.nan)
    return mean, mean - half, mean + half, n

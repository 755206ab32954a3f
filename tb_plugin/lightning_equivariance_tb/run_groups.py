"""Groups of runs (e.g. seeds of one model) and their statistics over runs.

Pure numpy/scipy (no torch, no TensorBoard): the tab's data layer
(:mod:`lightning_equivariance_tb.data`) and the HTML report use it alike.

A *group* is a set of runs compared as one: papers plot each model type's mean
over seeds with a confidence interval (Kvinge et al. 2022, Fig. 4). A run's group
is either the ``run_group`` recorded in its event files (metadata v2, ``""`` =
none) or the first capture group of a regular expression matched against the run
name (:func:`assign_groups`). :func:`group_statistics` gives, at each x (global
step or epoch), the mean over the group's runs that have a finite value there and
a Student-t confidence interval for it.
"""

import math
import re
from typing import Dict, List, Mapping, Optional

import numpy as np

__all__ = [
    "assign_groups", "group_statistics", "stack_statistics", "t_interval", "interval_label",
    "CONFIDENCE", "INTERVAL_LABEL",
]

CONFIDENCE = 0.95
"""The default confidence level of the interval."""


def interval_label(confidence: float = CONFIDENCE) -> str:
    """How the tab and the report name the interval, e.g. ``"95% Student-t interval over runs"``."""
    return "%s%% Student-t interval over runs" % ("%g" % (100 * confidence))


INTERVAL_LABEL = interval_label()
"""How the tab and the report name the default interval."""


def assign_groups(recorded: Mapping[str, str], pattern: Optional[str] = None) -> Dict[str, List[str]]:
    """Group runs by their recorded ``run_group`` or by a regular expression.

    Args:
      recorded: run name -> the ``run_group`` recorded for it (``""`` or ``None`` =
        none). Every run to group must be a key.
      pattern: optional regular expression. When given, it replaces the recorded
        names: a run's group is the first capture group of
        ``re.search(pattern, run)`` (the whole match when the pattern has no
        group). A run that does not match, or whose capture is empty or did not
        participate in the match, stays ungrouped.

    Returns:
      group name -> sorted run names, groups in sorted order; ungrouped runs appear
      in no group.

    Raises:
      ValueError: if ``pattern`` is not a valid regular expression.
    """
    groups: Dict[str, List[str]] = {}
    if pattern is not None and pattern != "":
        try:
            regex = re.compile(pattern)
        except re.error as e:
            raise ValueError("invalid run-group pattern %r: %s" % (pattern, e)) from None
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

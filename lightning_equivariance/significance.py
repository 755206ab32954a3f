"""The chance level and the margin over it, as a measure reports them (docs/measures.md §7).

One set of fields, shared by a measure's synced results (:class:`~.metrics.base.LayerDetails`)
and the report's rows (:class:`~.report.LayerResult`), so that the two cannot drift.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Dict, Optional

__all__ = ["Significance"]


@dataclass(frozen=True, kw_only=True)
class Significance:
    """How far a value stands above chance, and how surely (``None`` where a measure has no chance level).

    Attributes:
        stderr: the value's standard error over probe images, where the measure has one.
        chance: the chance level (each image scored against its partner's activations).
        above_chance: ``(value - chance) / (best - chance)``; ``None`` when uninformative.
        informative: whether there is room (at least ``INFORMATIVE_ROOM``) between chance and best.
        margin: the margin above chance in the measure's better direction.
        margin_stderr: its standard error over the ``margin_pairs`` scored probe pairs.
        margin_low: its one-sided 95% lower bound; ``significant``: whether that bound is above 0,
            and ``significance_reason`` why not where it is undefined.
    """

    stderr: Optional[float] = None
    chance: Optional[float] = None
    above_chance: Optional[float] = None
    informative: Optional[bool] = None
    margin: Optional[float] = None
    margin_stderr: Optional[float] = None
    margin_low: Optional[float] = None
    significant: Optional[bool] = None
    margin_pairs: int = 0
    significance_reason: Optional[str] = None

    def significance(self) -> Dict[str, Any]:
        """These fields by name (to hand them on, e.g. from a measure's details to a report row)."""
        return {f.name: getattr(self, f.name) for f in fields(Significance)}

"""``torchmetrics.Metric`` classes, one per measure; :data:`MEASURES` maps ``measures=`` names to them."""
from typing import Dict, Type

from .base import LayerContext, LayerMetric
from .correlation import CorrelationEquivariance, CorrelationInvariance

#: Measure name (as in ``measure(..., measures=[...])``) -> metric class.
MEASURES: Dict[str, Type[LayerMetric]] = {
    "invariance": CorrelationInvariance,
    "equivariance": CorrelationEquivariance,
}

__all__ = ["MEASURES", "LayerContext", "LayerMetric", "CorrelationInvariance", "CorrelationEquivariance"]

"""``torchmetrics.Metric`` classes, one per measure; :data:`MEASURES` maps ``measures=`` names to them."""
from typing import Dict, Type

from . import transformational as _transformational
from .base import LayerContext, LayerDetails, LayerMetric
from .correlation import CorrelationEquivariance, CorrelationInvariance
from .geed import GEEDChannel, GEEDLatentCosine, GEEDLatentL2, GEEDSoftmax
from .lee import LieContext, LieDerivativeError
from .transformational import (
    AnovaInvariance,
    GoodfellowInvariance,
    NormalizedDistance,
    NormalizedVariance,
    SameEquivariance,
    SampleDistance,
    SampleVariance,
    TransformationDistance,
    TransformationVariance,
)

#: What ``measure()`` measures by default: Bruintjes et al. 2023's correlation invariance and equivariance.
DEFAULT_MEASURES = ("invariance", "equivariance")

#: Measure name (as in ``measure(..., measures=[...])``) -> metric class.
MEASURES: Dict[str, Type[LayerMetric]] = {
    "invariance": CorrelationInvariance,
    "equivariance": CorrelationEquivariance,
    "lee": LieDerivativeError,
    # G-EED, Kvinge et al. 2022 §3.1 (metrics/geed.py)
    "geed_channel": GEEDChannel,
    "geed_latent_l2": GEEDLatentL2,
    "geed_latent_cosine": GEEDLatentCosine,
    "geed_softmax": GEEDSoftmax,
    # Transformational measures, Quiroga et al. §2 (metrics/transformational.py)
    "tv": TransformationVariance,
    "sv": SampleVariance,
    "nv": NormalizedVariance,
    "td": TransformationDistance,
    "sd": SampleDistance,
    "nd": NormalizedDistance,
    "anova": AnovaInvariance,
    "same_equivariance": SameEquivariance,
    "goodfellow": GoodfellowInvariance,
}

__all__ = ["MEASURES", "DEFAULT_MEASURES", "LayerContext", "LayerDetails", "LayerMetric"]
__all__ += ["CorrelationInvariance", "CorrelationEquivariance", "LieContext", "LieDerivativeError"]
__all__ += ["GEEDChannel", "GEEDLatentL2", "GEEDLatentCosine", "GEEDSoftmax"]
__all__ += _transformational.__all__  # Quiroga et al.'s measures, as that module lists them

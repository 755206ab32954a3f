"""lightning-equivariance: how much equivariance a vision network has learned, per layer, per epoch.

Quick start::

    import torch, torchvision
    from lightning_equivariance import measure, Rotation90, Translation

    model = torchvision.models.resnet18(num_classes=10)
    report = measure(model, torch.randn(64, 3, 64, 64), groups=[Rotation90(), Translation(4)])
    print(report.to_dataframe())

During training, add ``EquivarianceCallback()`` to a Lightning ``Trainer`` (imported lazily
so that the engine needs no Lightning).
"""
from importlib import metadata as _metadata

from .engine import Measurement, MeasureError, measure
from .report import PARTS, MeasureReport
from .groups import (
    Dihedral,
    Flip,
    Group,
    GroupElement,
    Rotation,
    Rotation90,
    Scale,
    Translation,
    quiroga_rotations,
    quiroga_scales,
    quiroga_translations,
)
from .lie import lie_derivative, lie_derivative_contributions
from .transforms import TRANSFORMS, LieTransform
from .metrics import MEASURES, CorrelationEquivariance, CorrelationInvariance, LieDerivativeError
from .probe import LayerSelectionError, select_layers

try:
    __version__ = _metadata.version("lightning-equivariance")
except _metadata.PackageNotFoundError:  # run from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "measure",
    "Measurement",
    "MeasureReport",
    "MeasureError",
    "PARTS",
    "Group",
    "GroupElement",
    "Rotation90",
    "Flip",
    "Translation",
    "Rotation",
    "Scale",
    "Dihedral",
    "quiroga_rotations",
    "quiroga_scales",
    "quiroga_translations",
    "MEASURES",
    "CorrelationInvariance",
    "CorrelationEquivariance",
    "LieDerivativeError",
    "LieTransform",
    "TRANSFORMS",
    "lie_derivative",
    "lie_derivative_contributions",
    "LayerSelectionError",
    "select_layers",
    "EquivarianceCallback",
]


def __getattr__(name):
    # Only the callback needs Lightning; import it on first use (README, "Layout").
    if name == "EquivarianceCallback":
        from .callback import EquivarianceCallback

        return EquivarianceCallback
    raise AttributeError(f"module 'lightning_equivariance' has no attribute {name!r}")

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
from importlib import import_module as _import_module
from importlib import metadata as _metadata
from typing import TYPE_CHECKING

# Public names and the module that defines each. They are imported on first use (PEP 562) so
# that ``import lightning_equivariance`` -- and the command line's ``--help`` -- need no torch.
_PUBLIC = {
    ".engine": ("Measurement", "MeasureError", "measure"),
    ".report": ("PARTS", "MeasureReport"),
    ".groups": (
        "Dihedral", "Flip", "Group", "GroupElement", "Rotation", "Rotation90", "Scale", "Translation",
        "quiroga_rotations", "quiroga_scales", "quiroga_translations",
    ),
    ".lie": ("lie_derivative",),
    ".contributions": ("ContributionReport", "lie_derivative_contributions"),
    ".transforms": ("TRANSFORMS", "LieTransform"),
    ".metrics": ("MEASURES", "CorrelationInvariance", "CorrelationEquivariance", "LieDerivativeError"),
    ".layers": ("LayerSelectionError", "select_layers"),
    # Only the callback needs Lightning (README, "Layout").
    ".callback": ("EquivarianceCallback",),
}
_MODULE_OF = {name: module for module, names in _PUBLIC.items() for name in names}

if TYPE_CHECKING:  # what type checkers and IDEs see; nothing is imported at run time
    from .callback import EquivarianceCallback
    from .contributions import ContributionReport, lie_derivative_contributions
    from .engine import MeasureError, Measurement, measure
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
    from .layers import LayerSelectionError, select_layers
    from .lie import lie_derivative
    from .metrics import MEASURES, CorrelationEquivariance, CorrelationInvariance, LieDerivativeError
    from .report import PARTS, MeasureReport
    from .transforms import TRANSFORMS, LieTransform

try:
    __version__ = _metadata.version("lightning-equivariance")
except _metadata.PackageNotFoundError:  # run from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = list(_MODULE_OF)  # every public name, each listed once above


def __getattr__(name):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_equivariance' has no attribute {name!r}")
    value = getattr(_import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_MODULE_OF))

"""Deprecated: this module is :mod:`lightning_equivariance.layers` (issue 22).

"Probe" now means only the probe images a measurement runs on; choosing, hooking and reading layers
is :mod:`lightning_equivariance.layers`, and its hook context manager ``Probe`` is
:class:`~lightning_equivariance.layers.LayerHooks`. Every name still resolves here, with a
``DeprecationWarning``, for one release.
"""
import warnings

from . import layers as _layers

_RENAMED = {"Probe": "LayerHooks"}


def __getattr__(name):
    new = _RENAMED.get(name, name)
    if not hasattr(_layers, new):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"lightning_equivariance.probe.{name} moved to lightning_equivariance.layers.{new}; "
        "the lightning_equivariance.probe module goes in the next release",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(_layers, new)

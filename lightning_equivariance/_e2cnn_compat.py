"""Make e2cnn 0.2.3 work under NumPy 2, by patching e2cnn itself (nothing in NumPy).

e2cnn 0.2.3 (its last release) was written for NumPy 1.x. Under NumPy 2 it still builds
C_N kernel bases, but D_N (``FlipRot2dOnR2(N)``), the flip group and SO(2) fail, and so
would O(2). Two things in e2cnn break, and this module replaces exactly those with
NumPy-2-correct equivalents:

1. ``e2cnn.kernels.utils.psi``, ``chi`` and ``psichi`` call ``np.array(x, copy=False)``.
   NumPy 2 changed ``copy=False`` from "copy only if needed" to "never copy, raise
   ``ValueError`` if a copy is needed", so they raise for Python scalars (``k=1``,
   ``gamma=0.``, ``s=0``); D_N and O(2) bases call ``psichi`` with a float ``gamma``.
   The replacements call e2cnn's own functions with those arguments turned into arrays
   first (``np.atleast_1d``), for which ``np.array(x, copy=False)`` needs no copy. They are
   installed in every module that holds a reference to them: ``e2cnn.kernels.utils``,
   ``e2cnn.kernels`` and ``e2cnn.kernels.irreps_basis`` (which imports them by name).
2. The ``__hash__`` methods of four kernel-basis classes in ``e2cnn.kernels.irreps_basis``
   (``R2FlipsSolution``, ``R2ContinuousRotationsSolution``,
   ``R2FlipsDiscreteRotationsSolution``, ``R2FlipsContinuousRotationsSolution``) call
   ``ndarray.tostring()``, removed in NumPy 2.3 (deprecated since 1.19). e2cnn hashes
   bases to cache them, so every D_N, flip-group, SO(2) and O(2) convolution fails with
   ``AttributeError`` (C_N bases hash with ``tobytes`` already). The replacements run
   e2cnn's own ``__hash__`` while the instance's arrays are views of an ``ndarray``
   subclass that has ``tostring`` as an alias of ``tobytes``, so the hashes are the ones
   NumPy 1 gives. No e2cnn code is copied: every replacement calls the original.

The patch is applied by :func:`apply`, which :func:`import_e2cnn` calls before e2cnn
builds anything; :mod:`lightning_equivariance.baselines` and
:mod:`lightning_equivariance.steerable` use it. It does nothing under NumPy 1.x (e2cnn's
own code is left untouched there), is idempotent (applying twice changes nothing) and
replaces nothing globally: ``numpy.ndarray`` keeps no ``tostring``, ``np.array`` keeps NumPy
2 semantics for everyone else. :func:`restore` undoes it (for tests).

Found by building ``R2Conv`` layers of C_N, D_N, the flip group, SO(2) and O(2) under NumPy
2.4; with the patch, the expanded filters of C8, D4, D8, flip-group and SO(2) layers are
bit-for-bit those of NumPy 1.26 with e2cnn unpatched. Left alone, as not NumPy 2 problems:
``np.float`` in ``O2._induced_from_irrep`` (gone since NumPy 1.24) and the ``uint8`` mask in
``SingleBlockBasisExpansion`` that recent PyTorch rejects for some O(2) field types.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import sys
import warnings
from typing import Any, Callable, Dict, Tuple

import numpy as np

__all__ = [
    "INSTALL_HINT", "apply", "restore", "is_applied", "needs_patch", "original", "import_e2cnn", "psi", "chi", "psichi",
]

INSTALL_HINT = 'pip install "lightning-equivariance[steerable]"'

#: Modules that hold ``psi`` / ``chi`` / ``psichi`` of ``e2cnn.kernels.utils`` under these names.
_FUNCTION_MODULES = ("e2cnn.kernels.utils", "e2cnn.kernels", "e2cnn.kernels.irreps_basis")
#: ``irreps_basis`` classes whose ``__hash__`` uses ``ndarray.tostring``.
_HASH_CLASSES = (
    "R2FlipsSolution",
    "R2ContinuousRotationsSolution",
    "R2FlipsDiscreteRotationsSolution",
    "R2FlipsContinuousRotationsSolution",
)
_MARK = "_lightning_equivariance_numpy2"
#: (module or class, attribute) -> e2cnn's original, for :func:`restore`.
_ORIGINALS: Dict[Tuple[Any, str], Any] = {}
#: e2cnn's ``__hash__`` -> its replacement.
_HASHES: Dict[Callable, Callable] = {}


def needs_patch() -> bool:
    """Whether the installed NumPy is 2.x or later (the patch is only applied then)."""
    return int(np.__version__.split(".")[0]) >= 2


# -- e2cnn's own functions, called so that NumPy 2 accepts them ---------------------------


def _call_with_arrays(name: str, args, kwargs):
    """e2cnn's own ``name`` (``psi`` / ``chi`` / ``psichi``), called with ``s``, ``k`` and ``gamma`` as arrays.

    They pass those to ``np.array(x, copy=False)``, which under NumPy 2 raises when it would
    have to copy - for Python scalars; for an array it returns the array, as NumPy 1 did.
    ``np.atleast_1d`` keeps the shapes the functions build (``reshape(-1, 1)`` of a scalar and
    of a one-element array are the same).
    """
    own = original(importlib.import_module("e2cnn.kernels.utils"), name)  # imported on first use, not only found
    bound = inspect.signature(own).bind(*args, **kwargs)
    bound.apply_defaults()
    for argument in ("s", "k", "gamma"):
        if argument in bound.arguments:
            bound.arguments[argument] = np.atleast_1d(bound.arguments[argument])
    return own(*bound.args, **bound.kwargs)


def psi(*args, **kwargs) -> np.ndarray:
    """``e2cnn.kernels.utils.psi`` (rotation matrices of frequency ``k`` at angles ``theta``), NumPy 2-proof."""
    return _call_with_arrays("psi", args, kwargs)


def chi(*args, **kwargs) -> np.ndarray:
    """``e2cnn.kernels.utils.chi`` (the matrix of the flip ``s``), NumPy 2-proof."""
    return _call_with_arrays("chi", args, kwargs)


def psichi(*args, **kwargs) -> np.ndarray:
    """``e2cnn.kernels.utils.psichi`` (``psi @ chi`` along the first two axes), NumPy 2-proof."""
    return _call_with_arrays("psichi", args, kwargs)


class _WithToString(np.ndarray):
    """A view of an array with NumPy 1's ``tostring``, an alias of ``tobytes`` (the same bytes)."""

    def tostring(self, order="C"):
        return self.tobytes(order)


def _hash_with_tostring(own):
    """e2cnn's own ``__hash__``, run while the instance's arrays are :class:`_WithToString` views."""
    if own in _HASHES:  # one replacement per class: applying twice installs the same object
        return _HASHES[own]

    @functools.wraps(own)
    def __hash__(self):
        arrays = {name: value for name, value in vars(self).items() if type(value) is np.ndarray}
        try:
            for name, value in arrays.items():
                setattr(self, name, value.view(_WithToString))
            return own(self)
        finally:
            for name, value in arrays.items():
                setattr(self, name, value)

    setattr(__hash__, _MARK, True)
    _HASHES[own] = __hash__
    return __hash__


for _fn in (psi, chi, psichi):
    setattr(_fn, _MARK, True)  # how _replace recognises its own replacements
del _fn


def _replace(owner: Any, name: str, new: Any) -> None:
    current = getattr(owner, name)
    if getattr(current, _MARK, False):  # already patched
        return
    _ORIGINALS.setdefault((owner, name), current)
    setattr(owner, name, new)


def apply(force: bool = False) -> bool:
    """Patch e2cnn for NumPy 2 (see the module docstring); returns whether the patch is in place.

    Does nothing and returns ``False`` under NumPy 1.x unless ``force`` (tests use it to check
    that the replacements behave like e2cnn's own functions there). Idempotent. Imports
    ``e2cnn.kernels`` (raising ``ImportError`` if e2cnn is missing).
    """
    if not (force or needs_patch()) or is_applied():
        return is_applied()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e2cnn's import-time deprecations are not ours
        modules = [importlib.import_module(m) for m in _FUNCTION_MODULES]
    replacements = {"psi": psi, "chi": chi, "psichi": psichi}
    for module in modules:
        for name, new in replacements.items():
            if hasattr(module, name):
                _replace(module, name, new)
    irreps_basis = sys.modules["e2cnn.kernels.irreps_basis"]
    for cls_name in _HASH_CLASSES:
        cls = getattr(irreps_basis, cls_name, None)
        if cls is not None and "__hash__" in vars(cls):  # (a later e2cnn may differ)
            _replace(cls, "__hash__", _hash_with_tostring(original(cls, "__hash__")))
    return True


def is_applied() -> bool:
    """Whether :func:`apply` has patched e2cnn (and :func:`restore` has not undone it)."""
    utils = sys.modules.get("e2cnn.kernels.utils")
    return utils is not None and bool(getattr(getattr(utils, "psichi", None), _MARK, False))


def original(owner: Any, name: str) -> Any:
    """e2cnn's own ``owner.name`` (a module function or a class's ``__hash__``), patched or not."""
    return _ORIGINALS.get((owner, name), getattr(owner, name))


def restore() -> None:
    """Put e2cnn's original functions and ``__hash__`` methods back (undoes :func:`apply`)."""
    while _ORIGINALS:
        (owner, name), own = _ORIGINALS.popitem()
        setattr(owner, name, own)


def import_e2cnn():
    """``(e2cnn.gspaces, e2cnn.nn)``, patched for NumPy 2 by :func:`apply`.

    Raises ``ImportError`` naming the install command when e2cnn is not installed.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e2cnn's import-time deprecations are not ours
            from e2cnn import gspaces
            from e2cnn import nn as enn
    except ImportError as e:
        raise ImportError(
            f"the steerable parts of lightning-equivariance need e2cnn, which could not be imported ({e}); "
            f"install it with: {INSTALL_HINT}"
        ) from e
    apply()
    return gspaces, enn

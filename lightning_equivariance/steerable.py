"""The designed channel action of e2cnn steerable layers (group-aware measurement).

A steerable CNN's feature map is a stack of *fields*; rotating the input rotates each
map spatially **and** transforms the channels of every field by the field type's
representation. For a regular field of C_N that is a cyclic shift inside the field::

    torch.rot90(x, 1, (-2, -1))  on the input
    <=>  rot90 of every map, then torch.roll(field, shifts=N // 4) inside each regular field

so a perfectly equivariant layer satisfies ``a(T_g x) = rho(g) rot_g a(x)``. The engine
reads the field type from each ``GeometricTensor`` output and uses ``rho(g)`` (from
``field_type.representation(g)``, built once per element and kept on the device) as the
channel action ``T'_g`` of docs/measures.md §1.5; plain layers keep the identity.

Worked example (C4, one regular field = 4 channels, input rotated by 90 degrees): the
element of C4 is ``k = 90 / (360 / 4) = 1``; ``rho(1)`` is the 4x4 cyclic permutation
matrix, so channel ``c`` of ``T'_g a(x)`` is ``rot90(a(x)_{c-1})``. Measured with this
action an equivariant layer scores invariance 1 (each channel matches its permuted
partner); with ``steerable_actions=False`` only the max over channels (equivariance)
finds the permuted partner.

Mapping of :class:`~lightning_equivariance.groups.GroupElement` to e2cnn elements:
rotations by ``angle`` degrees (counter-clockwise as ``rot90``) become ``k = angle / (360/N)``
of C_N (an error when not a multiple of ``360/N``) or the angle in radians for SO(2);
``Flip("horizontal")`` is e2cnn's reflection of a ``FlipRot2dOnR2`` space with its default
axis (``pi/2``), ``Flip("vertical")`` that reflection composed with a half turn.

e2cnn is optional (``pip install "lightning-equivariance[steerable]"``) and never imported
here: field types are recognised by duck typing. e2cnn 0.2.3 needs a patch to build D_N,
flip-group and SO(2) layers under NumPy 2 (:mod:`lightning_equivariance._e2cnn_compat`);
:class:`~lightning_equivariance.baselines.SteerableCNN` applies it itself, and
:func:`patch_e2cnn` applies it for models you build with e2cnn directly - call it before
building them.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Dict, Tuple

import numpy as np
import torch

from . import _e2cnn_compat
from .groups import ChannelAction, GroupActionError, GroupElement

__all__ = ["field_type_of", "e2cnn_channel_action", "e2cnn_element", "patch_e2cnn"]


def patch_e2cnn() -> bool:
    """Make e2cnn 0.2.3 build its bases under NumPy 2 (a no-op under NumPy 1.x; idempotent).

    Call it before building e2cnn layers yourself; returns whether the patch is in place.
    Raises ``ImportError`` naming ``pip install "lightning-equivariance[steerable]"`` when
    e2cnn is not installed. See :mod:`lightning_equivariance._e2cnn_compat` for what it patches.
    """
    _e2cnn_compat.import_e2cnn()
    return _e2cnn_compat.is_applied()


def field_type_of(output: Any):
    """The e2cnn ``FieldType`` of a ``GeometricTensor`` output, else ``None`` (duck-typed: no e2cnn import)."""
    ft = getattr(output, "type", None)
    return ft if ft is not None and hasattr(ft, "representation") and hasattr(ft, "gspace") else None


def e2cnn_element(fibergroup, element: GroupElement):
    """The element of an e2cnn fibre group that ``element`` stands for (see module docstring)."""
    name = type(fibergroup).__name__
    angle = float(element.params.get("angle", 0.0)) % 360.0
    flip = element.params.get("flip")
    if flip not in (None, "horizontal", "vertical"):
        raise GroupActionError(f"no e2cnn element for flip {flip!r}")
    if flip == "vertical":  # a vertical flip is the horizontal one followed by a half turn
        flip, angle = "horizontal", (angle + 180.0) % 360.0
    reflect = 1 if flip == "horizontal" else 0
    if name in ("CyclicGroup", "DihedralGroup"):
        n = int(fibergroup.order()) if name == "CyclicGroup" else int(fibergroup.rotation_order)
        k = angle / (360.0 / n)
        if abs(k - round(k)) > 1e-6:
            raise GroupActionError(
                f"rotation by {angle:g} degrees is not an element of the layer's {name}(N={n}); "
                f"measure with multiples of {360.0 / n:g} degrees"
            )
        k = int(round(k)) % n
        if name == "CyclicGroup":
            if reflect:
                raise GroupActionError(f"the layer's C_{n} fields have no reflections; use a D_N (FlipRot2dOnR2) model")
            return k
        return (reflect, k)
    if name == "SO2":
        if reflect:
            raise GroupActionError("the layer's SO(2) fields have no reflections")
        return math.radians(angle)
    if name == "O2":
        return (reflect, math.radians(angle))
    raise GroupActionError(f"e2cnn fibre group {name} is not supported for group-aware measurement")


def e2cnn_channel_action(field_type) -> ChannelAction:
    """``channel_action(a, element)``: ``rho(g)`` of ``field_type`` applied on the channel axis (dim -3).

    Permutation representations (regular and quotient fields) are applied as a channel
    gather, others as a matrix product; both are cached per element, dtype and device.
    """
    if type(field_type).__module__.split(".")[0] == "e2cnn":
        _e2cnn_compat.apply()  # e2cnn is imported already; its representations may build bases
    kinds: Dict[str, Tuple[str, np.ndarray]] = {}  # per element, on the host (NumPy: no tensor read)
    cache: Dict[Tuple[str, torch.dtype, torch.device], Tuple[str, torch.Tensor]] = {}

    def kind_of(element: GroupElement) -> Tuple[str, np.ndarray]:
        """``("gather", source channel of each channel)`` for a permutation ``rho(g)``, else ``("matmul", rho)``."""
        if element.name not in kinds:
            g = e2cnn_element(field_type.gspace.fibergroup, element)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # e2cnn's own, not ours
                rho = np.asarray(field_type.representation(g), dtype=np.float64)
            ones = np.abs(rho - 1) < 1e-9
            is_perm = bool(((np.abs(rho) < 1e-9) | ones).all()) and bool((ones.sum(1) == 1).all())
            # out[c] = sum_d rho[c, d] in[d] = in[argmax_d rho[c, d]]
            kinds[element.name] = ("gather", rho.argmax(1)) if is_perm else ("matmul", rho)
        return kinds[element.name]

    def action(a: torch.Tensor, element: GroupElement) -> torch.Tensor:
        if element.is_identity:
            return a
        key = (element.name, a.dtype, a.device)
        if key not in cache:
            how, op = kind_of(element)
            channels = a.shape[-3]
            if how == "matmul" and op.shape != (channels, channels) or how == "gather" and op.shape[0] != channels:
                raise GroupActionError(
                    f"field type of size {op.shape[0]} does not match a map with {a.shape[-3]} channels"
                )
            op = torch.as_tensor(op, dtype=torch.long if how == "gather" else a.dtype).to(a.device)
            cache[key] = (how, op)
        how, op = cache[key]
        if how == "gather":
            return a.index_select(-3, op)
        return torch.einsum("cd,...dhw->...chw", op, a)

    # Read by the correlation measures: a channel permutation commutes with standardising
    # each channel, so a(x) is standardised once and only moved per element.
    action.permutes_channels = lambda element: element.is_identity or kind_of(element)[0] == "gather"  # type: ignore[attr-defined]
    return action

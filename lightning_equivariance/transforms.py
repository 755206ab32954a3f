"""Continuous one-parameter image transforms (Lie transforms) and how ``groups=`` is read.

A :class:`LieTransform` is not a group: it is a flow ``Phi_t`` given by its generator (Gruver
et al. 2023 §4), used by measure ``"lee"``. :func:`split_groups` is the one place that reads
``measure(..., groups=...)``: discrete groups (:mod:`lightning_equivariance.groups`) for the
stacked measures and continuous transforms for the forward-mode ones.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch

from .functional.lie import INTENSITY_TRANSFORMS, PADDINGS, VELOCITY_MATRICES, lie_generator, lie_residual
from .groups import Group, GroupElement, resolve_group

__all__ = ["LieTransform", "TRANSFORMS", "resolve_transform", "is_transform", "split_groups"]

#: The names of the built-in transforms (``measure(..., groups=...)`` accepts them for ``lee``).
TRANSFORMS: Tuple[str, ...] = tuple(VELOCITY_MATRICES) + INTENSITY_TRANSFORMS


class LieTransform:
    """A continuous one-parameter image transform, given by its generator.

    Args:
        name: a built-in name (:data:`TRANSFORMS`) or, with ``velocity``, any label.
        velocity: the 2 x 3 velocity matrix ``d theta_t / dt`` at ``t = 0`` in
            ``affine_grid``'s convention (output pixel ``p`` samples the input at
            ``theta_t [p; 1]``), for a custom transform, e.g. a stretch along x:
            ``LieTransform("stretch_x", velocity=[[1, 0, 0], [0, 0, 0]])``.
        padding: ``"reflection"`` (default, the paper's choice) or ``"circular"``.

    For the engine a transform looks like a group with one element, ``"generator"``;
    reports use :attr:`name` as the ``group`` column.
    """

    def __init__(
        self,
        name: str,
        velocity: Optional[Sequence[Sequence[float]]] = None,
        padding: str = "reflection",
    ):
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        if velocity is None:
            if name not in TRANSFORMS:
                raise ValueError(_unknown_transform_message(name))
            self.velocity = None if name in INTENSITY_TRANSFORMS else VELOCITY_MATRICES[name]
        else:
            v = tuple(tuple(float(c) for c in row) for row in velocity)
            if len(v) != 2 or any(len(r) != 3 for r in v):
                raise ValueError(f"velocity must be a 2 x 3 matrix, got {velocity!r}")
            self.velocity = v
        self.name = str(name)
        self.padding = padding
        self.elements = [GroupElement("generator", {"transform": self.name, "padding": padding})]

    def generator(self, a: torch.Tensor) -> torch.Tensor:
        """The generator on maps ``... x h x w`` (see :func:`~lightning_equivariance.functional.lie.lie_generator`)."""
        return lie_generator(a, "saturation" if self.velocity is None else self.velocity, self.padding)

    def residual(self, tangent: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """``tangent - G a`` on maps ``... x h x w`` (a layer's Lie derivative from its tangent)."""
        return lie_residual(tangent, a, "saturation" if self.velocity is None else self.velocity, self.padding)

    def __len__(self) -> int:
        return 1

    def __repr__(self) -> str:
        return f"LieTransform({self.name!r}, padding={self.padding!r})"


def _unknown_transform_message(name) -> str:
    return (
        f"unknown transform {name!r}: the continuous transforms are {list(TRANSFORMS)} "
        "(or LieTransform(name, velocity=[[..], [..]]) for a custom one)"
    )


def is_transform(obj) -> bool:
    """``True`` for a :class:`LieTransform` or a built-in transform name."""
    return isinstance(obj, LieTransform) or (isinstance(obj, str) and obj.lower() in TRANSFORMS)


def resolve_transform(transform: Union[str, LieTransform], padding: Optional[str] = None) -> LieTransform:
    """A :class:`LieTransform` from an instance or a name; ``padding`` overrides the default ``"reflection"``."""
    if isinstance(transform, LieTransform):
        if padding is None or padding == transform.padding:
            return transform
        return LieTransform(transform.name, transform.velocity, padding)
    if isinstance(transform, str) and transform.lower() in TRANSFORMS:
        return LieTransform(transform.lower(), padding=padding or "reflection")
    raise ValueError(_unknown_transform_message(transform))


def split_groups(
    groups: Sequence[Union[str, Group, LieTransform]], lie: bool, stacked: bool
) -> Tuple[List[Group], List[LieTransform]]:
    """Split ``measure(..., groups=...)`` into discrete groups (stacked measures) and transforms (``lee``).

    Transform names (:data:`TRANSFORMS`) never clash with group names (``"rotation90"``,
    ``"rotation8"``, ``"translation"``...). Entries no requested measure can use raise.
    """
    found_groups: List[Group] = []
    transforms: List[LieTransform] = []
    for g in groups:
        if is_transform(g):
            transforms.append(resolve_transform(g))
            continue
        try:
            found_groups.append(resolve_group(g))
        except ValueError as e:
            raise ValueError(f"{e}; the continuous transforms of measure 'lee' are {list(TRANSFORMS)}") from None
    if lie and not transforms:
        raise ValueError(
            f"measure 'lee' needs continuous transforms in groups=..., e.g. groups=('rotation', 'translation_x'); "
            f"the valid transforms are {list(TRANSFORMS)}"
        )
    if stacked and not found_groups:
        raise ValueError(
            f"the measures other than 'lee' need discrete groups (e.g. 'rotation90', 'translation'), got only "
            f"continuous transforms {[t.name for t in transforms]}"
        )
    if transforms and not lie:
        raise ValueError(
            f"continuous transforms {[t.name for t in transforms]} are only used by measure 'lee'; add it to measures="
        )
    if found_groups and not stacked:
        raise ValueError(
            f"measure 'lee' needs continuous transforms, not the discrete groups {[g.name for g in found_groups]}; "
            f"the valid transforms are {list(TRANSFORMS)}"
        )
    return found_groups, transforms

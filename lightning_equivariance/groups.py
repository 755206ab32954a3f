"""Groups of image transformations and their action on inputs and feature maps.

A group here is the finite set of transformations a measure is averaged over, with
its action

* on inputs ``T_g`` (``B x C x H x W`` images), and
* on a layer's activation ``T'_g`` at the layer's own resolution, with a *validity
  mask* of the positions that carry content in both ``a(T_g x)`` and ``T'_g a(x)``
  (MEASURES.md, "Notation"), optionally composed with a *channel action* declared by
  the architecture (e2cnn: the field type's representation).

Every group lists its non-identity ``elements`` (the default transformation set of the
correlation measures); ``elements_with_identity`` prepends the identity.

Example::

    >>> from lightning_equivariance.groups import Rotation90, Translation
    >>> [e.name for e in Rotation90().elements]
    ['90', '180', '270']
    >>> [e.name for e in Translation(max_shift=2).elements]
    ['(1, 1)', '(2, 2)']
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

__all__ = [
    "GroupElement",
    "Group",
    "Rotation90",
    "Flip",
    "Translation",
    "Rotation",
    "ChannelAction",
    "resolve_group",
    "GroupActionError",
]


class GroupActionError(ValueError):
    """A group's action is undefined on a tensor (e.g. a non-square map for ``Rotation90``)."""


@dataclass(frozen=True)
class GroupElement:
    """One transformation of a group.

    Attributes:
        name: readable label used in reports (``"90"``, ``"(1, 1)"``, ``"horizontal"``).
        params: the geometric parameters, e.g. ``{"angle": 90.0}`` (degrees,
            counter-clockwise as ``torch.rot90(x, 1, (-2, -1))``), ``{"shift": (dx, dy)}``
            (input pixels, +x to the right, +y down) or ``{"flip": "horizontal"}``.
            Channel actions (e2cnn fields) read them to find the matching group element.
    """

    name: str
    params: Dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_identity(self) -> bool:
        return bool(self.params.get("identity", False))


IDENTITY = GroupElement("identity", {"identity": True, "angle": 0.0, "shift": (0, 0)})

#: ``channel_action(tensor, element) -> tensor``: acts on the channel axis (dim -3 of
#: ``... x C x h x w``) after the spatial transform; declared per layer.
ChannelAction = Callable[[torch.Tensor, GroupElement], torch.Tensor]


class Group:
    """Base class. Subclasses define ``elements`` and the spatial action.

    The action on an input batch ``x`` (``B x C x H x W``) is :meth:`act_input`; on a
    feature map ``a`` (``... x C x h x w``) of an input of spatial size ``input_size``
    it is :meth:`act_feature`, which returns the transformed map and a boolean validity
    mask ``h x w`` (``None`` when every position is valid).
    """

    name: str = "group"

    def __init__(self, elements: Sequence[GroupElement], name: Optional[str] = None):
        if not elements:
            raise ValueError(f"{type(self).__name__}: the group needs at least one non-identity element")
        self._elements = list(elements)
        if name is not None:
            self.name = name

    # ------------------------------------------------------------------ elements
    @property
    def elements(self) -> List[GroupElement]:
        """The non-identity elements (the transformation set of the correlation measures)."""
        return list(self._elements)

    @property
    def elements_with_identity(self) -> List[GroupElement]:
        """Identity first, then :attr:`elements` (the full set of MEASURES.md §4)."""
        return [IDENTITY] + self.elements

    def __len__(self) -> int:
        return len(self._elements)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, elements={[e.name for e in self._elements]})"

    # ------------------------------------------------------------------ actions
    def check_input(self, x: torch.Tensor) -> None:
        """Raise a :class:`GroupActionError` if the action is undefined on inputs like ``x``."""

    def check_feature(self, shape: Sequence[int], layer: str) -> None:
        """Raise a :class:`GroupActionError` naming ``layer`` if the action is undefined on a map of ``shape``."""

    def act_input(self, x: torch.Tensor, element: GroupElement) -> torch.Tensor:
        """``T_g x`` for an image batch ``B x C x H x W``."""
        if element.is_identity:
            return x
        return self._spatial(x, element, scale=(1.0, 1.0))

    def act_feature(
        self,
        a: torch.Tensor,
        element: GroupElement,
        input_size: Tuple[int, int],
        channel_action: Optional[ChannelAction] = None,
    ) -> torch.Tensor:
        """``T'_g a`` for a feature map ``... x C x h x w`` of an input of size ``input_size`` (H, W).

        The spatial transform at the map's own resolution, then ``channel_action`` if
        the architecture declares one (MEASURES.md: "channel action").
        """
        if not element.is_identity:
            h, w = a.shape[-2:]
            a = self._spatial(a, element, scale=(h / input_size[0], w / input_size[1]))
        if channel_action is not None:
            a = channel_action(a, element)
        return a

    def feature_mask(
        self, element: GroupElement, size: Tuple[int, int], input_size: Tuple[int, int], device=None
    ) -> Optional[torch.Tensor]:
        """Boolean ``h x w`` mask of the positions valid in both compared maps, or ``None`` (all valid)."""
        return None

    def _spatial(self, a: torch.Tensor, element: GroupElement, scale: Tuple[float, float]) -> torch.Tensor:
        raise NotImplementedError


# ---------------------------------------------------------------------- Rotation90
class Rotation90(Group):
    """C4: rotations by 90, 180 and 270 degrees with ``torch.rot90`` (exact, no interpolation).

    Defined only on square inputs and square feature maps; other shapes raise a
    :class:`GroupActionError` that names the layer.
    """

    name = "rotation90"

    def __init__(self, name: Optional[str] = None):
        super().__init__(
            [GroupElement(str(90 * k), {"angle": 90.0 * k, "quarter_turns": k}) for k in (1, 2, 3)], name
        )

    def check_input(self, x: torch.Tensor) -> None:
        if x.shape[-1] != x.shape[-2]:
            raise GroupActionError(
                f"{self.name}: input of shape {tuple(x.shape)} is not square; 90-degree rotations "
                "need square images (crop or resize them, or use Flip/Translation)."
            )

    def check_feature(self, shape: Sequence[int], layer: str) -> None:
        if len(shape) >= 2 and shape[-1] != shape[-2]:
            raise GroupActionError(
                f"layer {layer!r}: feature map of shape {tuple(shape)} is not square, so {self.name} is "
                "undefined on it; leave the layer out with layers=... or use Flip/Translation."
            )

    def _spatial(self, a, element, scale):
        return torch.rot90(a, int(element.params["quarter_turns"]), dims=(-2, -1))


# ---------------------------------------------------------------------- Flip
class Flip(Group):
    """Mirror images: ``axes`` any of ``"horizontal"`` (flip left-right) and ``"vertical"`` (up-down)."""

    name = "flip"

    def __init__(self, axes: Union[str, Sequence[str]] = ("horizontal",), name: Optional[str] = None):
        axes = (axes,) if isinstance(axes, str) else tuple(axes)
        for ax in axes:
            if ax not in ("horizontal", "vertical"):
                raise ValueError(f"Flip: axes must be 'horizontal' and/or 'vertical', got {ax!r}")
        super().__init__([GroupElement(ax, {"flip": ax}) for ax in axes], name)

    def _spatial(self, a, element, scale):
        return torch.flip(a, dims=(-1,) if element.params["flip"] == "horizontal" else (-2,))


# ---------------------------------------------------------------------- Translation
class Translation(Group):
    """Integer shifts ``(dx, dy)`` in input pixels (+x right, +y down).

    By default the diagonal shifts ``(1, 1) .. (max_shift, max_shift)`` (Bruintjes et al.
    2023 §4.4). On a feature map of size ``h x w`` for an ``H x W`` input the shift is
    ``(floor(dx*w/W), floor(dy*h/H))`` - rounded down as in Motyka 2022 §4.2.2. Shifted
    maps are zero-filled and compared only on the positions that carry content in both
    (a validity mask); ``circular=True`` rolls instead and every position is valid.
    """

    name = "translation"

    def __init__(
        self,
        max_shift: int = 4,
        shifts: Optional[Iterable[Tuple[int, int]]] = None,
        circular: bool = False,
        name: Optional[str] = None,
    ):
        if shifts is None:
            if int(max_shift) < 1:
                raise ValueError(f"Translation: max_shift must be >= 1, got {max_shift}")
            shifts = [(d, d) for d in range(1, int(max_shift) + 1)]
        shifts = [(int(dx), int(dy)) for dx, dy in shifts]
        shifts = [s for s in shifts if s != (0, 0)]
        self.circular = bool(circular)
        super().__init__([GroupElement(f"({dx}, {dy})", {"shift": (dx, dy)}) for dx, dy in shifts], name)

    @staticmethod
    def _scaled(element: GroupElement, scale: Tuple[float, float]) -> Tuple[int, int]:
        dx, dy = element.params["shift"]
        return math.floor(dx * scale[1] + 1e-9), math.floor(dy * scale[0] + 1e-9)

    def _spatial(self, a, element, scale):
        sx, sy = self._scaled(element, scale)
        if self.circular:
            return torch.roll(a, shifts=(sy, sx), dims=(-2, -1))
        return _shift_zero_fill(a, sx, sy)

    def feature_mask(self, element, size, input_size, device=None):
        if self.circular or element.is_identity:
            return None
        h, w = size
        sx, sy = self._scaled(element, (h / input_size[0], w / input_size[1]))
        if sx == 0 and sy == 0:
            return None
        return _shift_zero_fill(torch.ones(h, w, dtype=torch.bool, device=device), sx, sy)


def _shift_zero_fill(a: torch.Tensor, sx: int, sy: int) -> torch.Tensor:
    """Shift the last two dims by (sy, sx) and fill the uncovered band with zeros."""
    h, w = a.shape[-2:]
    out = torch.zeros_like(a)
    if abs(sx) >= w or abs(sy) >= h:
        return out
    ys, yd = (slice(0, h - sy), slice(sy, h)) if sy >= 0 else (slice(-sy, h), slice(0, h + sy))
    xs, xd = (slice(0, w - sx), slice(sx, w)) if sx >= 0 else (slice(-sx, w), slice(0, w + sx))
    out[..., yd, xd] = a[..., ys, xs]
    return out


# ---------------------------------------------------------------------- Rotation
class Rotation(Group):
    """Rotations by arbitrary ``angles`` (degrees, counter-clockwise like ``rot90``).

    Multiples of 90 degrees use exact ``rot90``; other angles bilinear interpolation with
    zero fill, compared only inside the inscribed disk of the map. ``Rotation.cyclic(8)``
    gives the non-identity elements of C8 (45-degree steps).
    """

    name = "rotation"

    def __init__(self, angles: Sequence[float], name: Optional[str] = None):
        angles = [float(a) % 360.0 for a in angles]
        angles = [a for a in angles if a != 0.0]
        super().__init__([GroupElement(f"{a:g}", {"angle": a}) for a in angles], name)

    @classmethod
    def cyclic(cls, n: int, name: Optional[str] = None) -> "Rotation":
        """C_n: the ``n - 1`` non-identity rotations by multiples of ``360/n`` degrees."""
        if int(n) < 2:
            raise ValueError(f"Rotation.cyclic: n must be >= 2, got {n}")
        return cls([360.0 * k / n for k in range(1, int(n))], name=name or f"rotation{int(n)}")

    @staticmethod
    def _quarter_turns(element: GroupElement) -> Optional[int]:
        angle = float(element.params["angle"])
        k = angle / 90.0
        return int(round(k)) % 4 if abs(k - round(k)) < 1e-9 else None

    def check_input(self, x):
        if any(self._quarter_turns(e) in (1, 3) for e in self._elements) and x.shape[-1] != x.shape[-2]:
            Rotation90.check_input(self, x)  # same message for the same reason

    def check_feature(self, shape, layer):
        if len(shape) >= 2 and shape[-1] != shape[-2]:
            raise GroupActionError(
                f"layer {layer!r}: feature map of shape {tuple(shape)} is not square, so {self.name} is "
                "undefined on it; leave the layer out with layers=... or use Flip/Translation."
            )

    def _spatial(self, a, element, scale):
        k = self._quarter_turns(element)
        if k is not None:
            return torch.rot90(a, k, dims=(-2, -1))
        return rotate_bilinear(a, float(element.params["angle"]))

    def feature_mask(self, element, size, input_size, device=None):
        if element.is_identity or self._quarter_turns(element) is not None:
            return None
        return inscribed_disk(size, device=device)


def rotate_bilinear(a: torch.Tensor, angle_deg: float) -> torch.Tensor:
    """Rotate ``... x h x w`` maps counter-clockwise by ``angle_deg`` (bilinear, zero fill).

    Uses pixel coordinates (``align_corners=False``) so that a multiple of 90 degrees
    coincides with ``rot90`` up to interpolation round-off.
    """
    shape = a.shape
    h, w = shape[-2:]
    flat = a.reshape(-1, 1, h, w) if a.dim() != 4 else a
    t = math.radians(angle_deg)
    c, s = math.cos(t), math.sin(t)
    # Output pixel p samples input at R^{-1} p. With y pointing down, a counter-clockwise
    # rotation on screen (rot90 convention) maps output (x, y) to input (c*x + s*y... ).
    theta = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], dtype=flat.dtype, device=flat.device)
    theta = theta.unsqueeze(0).expand(flat.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(flat.shape), align_corners=False)
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(shape)


def inscribed_disk(size: Tuple[int, int], device=None) -> torch.Tensor:
    """Boolean mask of the pixels whose centres lie inside the map's inscribed disk."""
    h, w = size
    ys = torch.arange(h, device=device, dtype=torch.float32) - (h - 1) / 2
    xs = torch.arange(w, device=device, dtype=torch.float32) - (w - 1) / 2
    r = min(h, w) / 2
    return (ys[:, None] ** 2 + xs[None, :] ** 2) <= r * r


# ---------------------------------------------------------------------- names
_GROUPS_BY_NAME: Dict[str, Callable[[], Group]] = {
    "rotation90": Rotation90,
    "c4": Rotation90,
    "flip": Flip,
    "hflip": lambda: Flip("horizontal", name="hflip"),
    "vflip": lambda: Flip("vertical", name="vflip"),
    "translation": Translation,
    "rotation8": lambda: Rotation.cyclic(8),
    "c8": lambda: Rotation.cyclic(8),
}


def resolve_group(group: Union[str, Group]) -> Group:
    """A :class:`Group` from an instance or a name (``"rotation90"``, ``"flip"``, ``"translation"``, ``"c8"``...)."""
    if isinstance(group, Group):
        return group
    if isinstance(group, str) and group.lower() in _GROUPS_BY_NAME:
        return _GROUPS_BY_NAME[group.lower()]()
    raise ValueError(
        f"unknown group {group!r}: pass a Group instance (Rotation90(), Flip(), Translation(), "
        f"Rotation.cyclic(8)) or one of the names {sorted(_GROUPS_BY_NAME)}"
    )

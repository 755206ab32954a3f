"""Groups of image transformations and their action on inputs and feature maps.

A group here is the finite set of transformations a measure is averaged over, with
its action

* on inputs ``T_g`` (``B x C x H x W`` images), and
* on a layer's activation ``T'_g`` at the layer's own resolution, with a *validity
  mask* of the positions that carry content in both ``a(T_g x)`` and ``T'_g a(x)``
  (docs/measures.md §1.5), optionally composed with a *channel action* declared by
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
    "Scale",
    "Dihedral",
    "quiroga_rotations",
    "quiroga_scales",
    "quiroga_translations",
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
    #: True when every element acts on feature maps as a pure permutation of positions with
    #: no mask (rot90, flips, circular shifts): measures may then transform standardised maps.
    permutes_positions: bool = False
    #: True when every element acts on feature maps only by moving entries: each valid position of
    #: ``T'_g a`` (:meth:`feature_mask`) holds one entry of ``a`` (rot90, flips, shifts zero-filled or
    #: circular; not interpolation). The correlation measures score several such groups of one layer
    #: in one pass over all their elements.
    moves_positions: bool = False

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
        """Identity first, then :attr:`elements` (the full set of docs/measures.md §5)."""
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
        the architecture declares one (docs/measures.md §1.5).
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

    # ------------------------------------------------------------------ inverse action
    @property
    def has_inverse(self) -> bool:
        """Whether :meth:`act_feature_inverse` is defined (needed by ``same_equivariance``)."""
        return type(self)._spatial_inverse is not Group._spatial_inverse

    def act_feature_inverse(self, a: torch.Tensor, element: GroupElement, input_size: Tuple[int, int]) -> torch.Tensor:
        """``t^{-1}`` on a feature map ``... x C x h x w`` at the map's own resolution (spatial only).

        The inverse of the spatial part of :meth:`act_feature` (same rounding of shifts,
        zero fill, bilinear interpolation for angles that are not multiples of 90 degrees).
        No channel action: Quiroga's same-equivariance (§2.6) asks for ``g = t`` exactly.
        Use :meth:`inverse_feature_mask` for the positions that carry content afterwards.
        """
        if element.is_identity:
            return a
        h, w = a.shape[-2:]
        return self._spatial_inverse(a, element, scale=(h / input_size[0], w / input_size[1]))

    def inverse_feature_mask(
        self, element: GroupElement, size: Tuple[int, int], input_size: Tuple[int, int], device=None
    ) -> Optional[torch.Tensor]:
        """Boolean ``h x w`` mask of the positions of ``t^{-1}(a)`` that carry content, or ``None`` (all)."""
        return None

    def _spatial(self, a: torch.Tensor, element: GroupElement, scale: Tuple[float, float]) -> torch.Tensor:
        raise NotImplementedError

    def _spatial_inverse(self, a: torch.Tensor, element: GroupElement, scale: Tuple[float, float]) -> torch.Tensor:
        raise GroupActionError(
            f"{type(self).__name__} ({self.name}) defines no inverse action on feature maps; "
            "implement _spatial_inverse to measure same-equivariance"
        )


# ---------------------------------------------------------------------- Rotation90
class Rotation90(Group):
    """C4: rotations by 90, 180 and 270 degrees with ``torch.rot90`` (exact, no interpolation).

    Defined only on square inputs and square feature maps; other shapes raise a
    :class:`GroupActionError` that names the layer.
    """

    name = "rotation90"
    permutes_positions = True
    moves_positions = True

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

    def _spatial_inverse(self, a, element, scale):
        return torch.rot90(a, -int(element.params["quarter_turns"]), dims=(-2, -1))


# ---------------------------------------------------------------------- Flip
class Flip(Group):
    """Mirror images: ``axes`` any of ``"horizontal"`` (flip left-right) and ``"vertical"`` (up-down)."""

    name = "flip"
    permutes_positions = True
    moves_positions = True

    def __init__(self, axes: Union[str, Sequence[str]] = ("horizontal",), name: Optional[str] = None):
        axes = (axes,) if isinstance(axes, str) else tuple(axes)
        for ax in axes:
            if ax not in ("horizontal", "vertical"):
                raise ValueError(f"Flip: axes must be 'horizontal' and/or 'vertical', got {ax!r}")
        super().__init__([GroupElement(ax, {"flip": ax}) for ax in axes], name)

    def _spatial(self, a, element, scale):
        return torch.flip(a, dims=(-1,) if element.params["flip"] == "horizontal" else (-2,))

    _spatial_inverse = _spatial  # a flip is its own inverse


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
    moves_positions = True  # zero-filled or rolled, every valid position holds one entry

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
        self.permutes_positions = self.circular
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

    def _shift_mask(self, element, size, input_size, device, sign: int):
        """Positions that still carry content after the (sign * rounded) shift; ``None`` if all do."""
        if self.circular or element.is_identity:
            return None
        h, w = size
        sx, sy = self._scaled(element, (h / input_size[0], w / input_size[1]))
        if sx == 0 and sy == 0:
            return None
        return _shift_zero_fill(torch.ones(h, w, dtype=torch.bool, device=device), sign * sx, sign * sy)

    def feature_mask(self, element, size, input_size, device=None):
        return self._shift_mask(element, size, input_size, device, +1)

    def _spatial_inverse(self, a, element, scale):
        sx, sy = self._scaled(element, scale)  # the same rounded shift as act_feature, undone
        if self.circular:
            return torch.roll(a, shifts=(-sy, -sx), dims=(-2, -1))
        return _shift_zero_fill(a, -sx, -sy)

    def inverse_feature_mask(self, element, size, input_size, device=None):
        return self._shift_mask(element, size, input_size, device, -1)


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

    def _spatial_inverse(self, a, element, scale):
        k = self._quarter_turns(element)
        if k is not None:
            return torch.rot90(a, -k, dims=(-2, -1))
        return rotate_bilinear(a, -float(element.params["angle"]))

    inverse_feature_mask = feature_mask


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


# ---------------------------------------------------------------------- Scale
class Scale(Group):
    """Isotropic zoom about the image centre by ``factors`` (Quiroga §3.1.2), image size kept.

    A factor ``s < 1`` shrinks the content and fills the border with zeros ("when
    downsampling, we fill the borders with black pixels"); ``s > 1`` enlarges it and crops.
    Bilinear interpolation (``grid_sample``, ``align_corners=False``, zero padding): output
    pixel ``p`` (normalised coordinates) samples the input at ``p / s``. The zoom factor is
    the same at every resolution, so ``T'_g`` on a feature map is the same zoom.

    Masks: on a feature map the valid positions are those whose sampling point lies inside
    the hull of the map's pixel centres (bilinear interpolation then reads no zero padding);
    every position is valid for ``s >= 1``.

    The default ``factors`` are Quiroga's 11 scale coefficients without the identity 1.0
    (see :func:`quiroga_scales`).
    """

    name = "scale"

    def __init__(
        self,
        factors: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9, 1.05, 1.1, 1.15, 1.2, 1.25),
        name: Optional[str] = None,
    ):
        factors = [float(f) for f in factors]
        for f in factors:
            if not f > 0:
                raise ValueError(f"Scale: factors must be > 0, got {f}")
        factors = [f for f in factors if abs(f - 1.0) > 1e-12]
        super().__init__([GroupElement(f"{f:g}", {"scale": f}) for f in factors], name)

    def _spatial(self, a, element, scale):
        return zoom_bilinear(a, float(element.params["scale"]))

    def _spatial_inverse(self, a, element, scale):
        return zoom_bilinear(a, 1.0 / float(element.params["scale"]))

    def feature_mask(self, element, size, input_size, device=None):
        if element.is_identity or float(element.params["scale"]) >= 1.0:
            return None
        return zoom_content_mask(size, float(element.params["scale"]), device=device)

    def inverse_feature_mask(self, element, size, input_size, device=None):
        if element.is_identity or float(element.params["scale"]) <= 1.0:
            return None
        return zoom_content_mask(size, 1.0 / float(element.params["scale"]), device=device)


def zoom_bilinear(a: torch.Tensor, factor: float) -> torch.Tensor:
    """Zoom ``... x h x w`` maps about their centre by ``factor`` (bilinear, zero fill, size kept)."""
    shape = a.shape
    h, w = shape[-2:]
    flat = a.reshape(-1, 1, h, w)
    theta = torch.tensor([[1.0 / factor, 0.0, 0.0], [0.0, 1.0 / factor, 0.0]], dtype=flat.dtype, device=flat.device)
    grid = F.affine_grid(theta.unsqueeze(0).expand(flat.shape[0], 2, 3), list(flat.shape), align_corners=False)
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(shape)


def zoom_content_mask(size: Tuple[int, int], factor: float, device=None) -> torch.Tensor:
    """Positions of a map zoomed by ``factor`` whose sampling point lies within the pixel-centre hull."""

    def axis(n: int) -> torch.Tensor:
        p = (2 * torch.arange(n, device=device, dtype=torch.float64) + 1) / n - 1  # pixel centres, normalised
        src = ((p / factor + 1) * n - 1) / 2  # sampled input pixel coordinate
        return (src >= -1e-9) & (src <= n - 1 + 1e-9)

    h, w = size
    return axis(h)[:, None] & axis(w)[None, :]


# ---------------------------------------------------------------------- Dihedral
class Dihedral(Group):
    """The dihedral group D_n: ``n`` rotations by multiples of ``360/n`` degrees, each with and
    without a horizontal flip (``2n - 1`` non-identity elements). Kvinge et al. 2022 use D8.

    Element ``"flip+45"`` flips left-right, then rotates counter-clockwise by 45 degrees
    (``"45"`` rotates only, ``"flip"`` flips only). Rotations by multiples of 90 degrees are
    exact ``rot90``; other angles bilinear, compared inside the inscribed disk (as
    :class:`Rotation`). Square inputs and maps only.
    """

    name = "dihedral"

    def __init__(self, n: int = 8, name: Optional[str] = None):
        if int(n) < 1:
            raise ValueError(f"Dihedral: n must be >= 1, got {n}")
        self.n = int(n)
        angles = [360.0 * k / self.n for k in range(self.n)]
        elements = [GroupElement(f"{a:g}", {"angle": a}) for a in angles[1:]]
        elements += [
            GroupElement("flip" if a == 0 else f"flip+{a:g}", {"angle": a, "flip": "horizontal"}) for a in angles
        ]
        super().__init__(elements, name or f"dihedral{self.n}")

    _quarter_turns = staticmethod(Rotation._quarter_turns)
    check_input = Rotation.check_input
    check_feature = Rotation.check_feature

    @staticmethod
    def _rotate(a, element, sign):
        k = Rotation._quarter_turns(element)
        if k is not None:
            return torch.rot90(a, sign * k, dims=(-2, -1)) if k else a
        return rotate_bilinear(a, sign * float(element.params["angle"]))

    def _spatial(self, a, element, scale):
        if element.params.get("flip"):
            a = torch.flip(a, dims=(-1,))
        return self._rotate(a, element, 1)

    def _spatial_inverse(self, a, element, scale):
        a = self._rotate(a, element, -1)
        return torch.flip(a, dims=(-1,)) if element.params.get("flip") else a

    def feature_mask(self, element, size, input_size, device=None):
        if element.is_identity or self._quarter_turns(element) is not None:
            return None
        return inscribed_disk(size, device=device)

    inverse_feature_mask = feature_mask


# ---------------------------------------------------------------------- Quiroga §3.1.2 sets
def quiroga_rotations(name: str = "quiroga_rotation") -> Rotation:
    """Quiroga et al. §3.1.2 "Rotation (16 transformations)": 0, 22.5, ..., 337.5 degrees about the
    centre. The 15 non-identity angles; the transformational measures add the identity (16 in all)."""
    return Rotation([22.5 * k for k in range(1, 16)], name=name)


def quiroga_scales(name: str = "quiroga_scale") -> Scale:
    """Quiroga et al. §3.1.2 "Scaling (11 transformations)": 0.5 0.6 0.7 0.8 0.9 1.0 1.05 1.10 1.15 1.20
    1.25, aspect ratio and image size kept, zero borders. The 10 non-identity factors; the
    transformational measures add the identity 1.0 (11 in all)."""
    return Scale((0.5, 0.6, 0.7, 0.8, 0.9, 1.05, 1.1, 1.15, 1.2, 1.25), name=name)


def quiroga_translations(name: str = "quiroga_translation") -> Translation:
    """Quiroga et al. §3.1.2 "Translation (24 transformations)": for ``d = 1, 2, 4`` pixels the shifts
    ``(-d,-d) (-d,d) (d,-d) (d,d) (0,d) (d,0) (0,-d) (-d,0)``, zero fill. The paper's set has no
    identity; the transformational measures add it unless ``include_identity=False``."""
    shifts = []
    for d in (1, 2, 4):
        shifts += [(-d, -d), (-d, d), (d, -d), (d, d), (0, d), (d, 0), (0, -d), (-d, 0)]
    return Translation(shifts=shifts, name=name)


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
    "d4": lambda: Dihedral(4),
    "d8": lambda: Dihedral(8),
    "dihedral8": lambda: Dihedral(8),
    "scale": Scale,
    "quiroga_rotation": quiroga_rotations,
    "quiroga_scale": quiroga_scales,
    "quiroga_translation": quiroga_translations,
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

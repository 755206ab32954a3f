"""Choosing layers, hooking them, and turning their outputs into feature maps or vectors.

``select_layers`` resolves the ``layers=`` argument; ``LayerHooks`` is a context manager that
puts the model in eval mode, registers forward hooks on the selected layers and always
removes them and restores every submodule's train/eval mode on exit, even when the
model raises. ``as_activation`` normalises a layer output (docs/measures.md §1.2):

* a tuple/list -> its first tensor (e.g. ``nn.MultiheadAttention`` returns ``(out, weights)``);
* an e2cnn ``GeometricTensor`` -> its ``.tensor`` (``B x C x h x w``);
* then its layout's reading (:class:`~lightning_equivariance.layouts.Reading`) folds it into
  ``B x C x h x w``: channels-last maps, tokens ``B x N x D`` (class tokens apart), transposed
  tokens ``B x D x N``, unfolded patches, windows folded into the batch axis;
* ``B x C x 1 x 1`` maps and ``B x D`` tensors -> vectors ``B x D``.

Layouts (docs/measures.md §1.3) are decided on evidence or refused, never guessed from a
shape. :func:`discover_layouts` runs one forward of six images under a
:class:`~lightning_equivariance.layouts.ProvenanceMode`, which follows every tensor's
provenance (batch, channel and grid factors) through the modules *and* the operations the
model calls - convolutions, reshapes, permutes and transposes, ``F.unfold``/``F.fold``,
``torch.roll``, slices, ``cat``/``split``, linear maps and attention products. The user's
override ``layouts={"layer": "channels_first" | "channels_last" | "tokens" |
"tokens_transposed"}`` comes first. A layer whose provenance is lost (an operation that is
not followed) or was never seen is refused with the ambiguity named and the override
suggested; for a 4-D output nothing was seen making, what the module computes (a
convolution, norm or pooling gives channels-first) still counts as evidence. Memory strides
are no evidence: the ``channels_last`` memory format is still logically ``B x C x h x w``.
"""
from __future__ import annotations

import contextlib
import difflib
import weakref
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Type, Union

import torch
from torch import nn

from .layouts import MIXED, READABLE_OVERRIDES, ProvenanceMode, Reading, image_provenance, read

__all__ = [
    "select_layers",
    "as_activation",
    "LayerHooks",
    "CallNames",
    "LayerSelectionError",
    "LayerSpec",
    "LAYOUTS",
    "LayoutError",
    "check_layout_overrides",
    "discover_layouts",
    "Layouts",
    "first_tensor",
    "OUTPUT",
    "selects_output",
    "is_activation",
]

OUTPUT = "(output)"
"""The layer name of the model's own output (docs/layers.md): parentheses and no dot, so that no
module of ``model.named_modules()`` can have it."""

#: The layouts a layer output can be read in by the user's word (``layouts={name: ...}`` overrides).
LAYOUTS = READABLE_OVERRIDES

LayerSpec = Union[str, Sequence[str], Sequence[Type[nn.Module]], Type[nn.Module], Callable[[str, nn.Module], bool]]


class LayerSelectionError(ValueError):
    """The ``layers=`` argument names no usable layer."""


class LayoutError(ValueError):
    """A layer's output is no map of the image grid (refused for that layer, with the reason)."""


_POOLS = (
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._LPPoolNd,
)


def is_pooling(module: nn.Module) -> bool:
    """A pooling module (torch's, or any class whose name says so): where the Pool part is found."""
    return isinstance(module, _POOLS) or "Pool" in type(module).__name__


def capture_modes(model: nn.Module) -> List[Tuple[nn.Module, bool]]:
    """The train/eval mode of ``model`` and every submodule, parents first (for :func:`restore_modes`)."""
    return [(m, m.training) for m in model.modules()]


def restore_modes(modes: Sequence[Tuple[nn.Module, bool]]) -> None:
    """Put back modes captured by :func:`capture_modes` through each module's own ``train(mode)``
    (modules such as e2cnn's ``R2Conv`` register or drop buffers there; setting ``.training``
    by attribute would skip that), leaving every submodule in its former mode."""
    for m, mode in modes:  # parents first: a parent's train() also sets its children
        if m.training != mode or any(c.training != mode for c in m.children()):
            m.train(mode)
    for m, mode in modes:
        if m.training != mode:
            m.training = mode  # a module whose train() does not set its own flag


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """``model.eval()`` inside the block; afterwards every submodule's former mode (:func:`restore_modes`)."""
    modes = capture_modes(model)
    try:
        model.eval()
        yield model
    finally:
        restore_modes(modes)


class CallNames:
    """The layer name of every call of a hooked module within one forward.

    A module's first call is its layer name; its ``k``-th repeated call (a ReLU reused inside a
    ResNet block) is ``f"{name}:{k}"``, unless that could be mistaken for another name: PyTorch
    accepts ``:`` in module names, so a module literally named ``relu:1`` may sit next to a
    shared ``relu``. Each layer's calls are then numbered after more colons (``relu::1``): the
    *stem* ``name + ":" * s`` with the fewest colons such that no name of a module of the model
    or of a selected layer continues the stem with a digit, and no other layer has that stem. A
    call name is thus never a module's name nor another layer's call, whatever the user's names
    are, and a model without such names keeps the plain ``name:k``. :meth:`layer` maps a call
    back to its layer.

    Args:
        names: the selected layer names.
        model: the model; its module names are kept clear of too (names stay the same whatever
            subset of layers is selected).
    """

    def __init__(self, names: Sequence[str], model: Optional[nn.Module] = None):
        taken = set(names) | ({n for n, _ in model.named_modules()} if model is not None else set())
        # ``prefix`` is unavailable as a stem when some name is ``prefix`` followed by digits there
        blocked = {m[: i + 1] for m in taken for i in range(len(m) - 1) if m[i] == ":" and m[i + 1].isdigit()}
        self.stems: Dict[str, str] = {}
        used: Dict[str, str] = {}
        for name in sorted(set(names)):  # sorted: the same stems whatever the order of the layers
            stem = name + ":"
            while stem in blocked or stem in used:
                stem += ":"
            self.stems[name] = stem
            used[stem] = name
        self._layer_of_stem = used

    def call(self, name: str, k: int) -> str:
        """The name of call ``k`` (0 = the first) of layer ``name``."""
        return name if k == 0 else f"{self.stems[name]}{k}"

    def layer(self, call: str) -> str:
        """The layer name of a call name (a name :meth:`call` gave); ``KeyError`` for any other."""
        if call in self.stems:
            return call
        stem = call.rstrip("0123456789")
        if stem != call and stem in self._layer_of_stem:
            return self._layer_of_stem[stem]
        raise KeyError(f"{call!r} is no call of the layers {sorted(self.stems)}")


def _is_call_of(key: str, known, call_names: Optional[CallNames]) -> bool:
    """Whether ``key`` names a selected layer or one of its calls (exactly with ``call_names``; else any
    ``name``, colons, digits)."""
    if key in known:
        return True
    if call_names is not None:
        try:
            return call_names.layer(key) in known
        except KeyError:
            return False
    stem = key.rstrip("0123456789")
    while stem != key and stem.endswith(":"):
        stem = stem[:-1]
        if stem in known:
            return True
    return False


def wrapped_child_prefix(module: nn.Module) -> str:
    """``"name."`` of ``module``'s single child with parameters when every parameter is that
    child's (a LightningModule wrapping ``self.model = resnet18()``), else ``""``: layer names
    shown relative to it agree with ``measure(module.model)``'s."""
    owners = [(n, c) for n, c in module.named_children() if next(c.parameters(), None) is not None]
    if len(owners) != 1 or len(list(module.parameters())) != len(list(owners[0][1].parameters())):
        return ""
    return owners[0][0] + "."


def display_name(name: str, prefix: str) -> str:
    """A qualified layer name shown relative to the wrapped child (``prefix`` from :func:`wrapped_child_prefix`)."""
    return name[len(prefix):] if prefix and name.startswith(prefix) else name


def qualified_names(names, module: nn.Module, prefix: str):
    """Layer names (a list/tuple, or a mapping's keys) given relative to the wrapped child made
    qualified in ``module``; names that already are, and anything else (``"auto"``, types,
    predicates), unchanged."""
    if not prefix or isinstance(names, str) or not isinstance(names, (list, tuple, Mapping)):
        return names
    known = dict(module.named_modules())
    def full(n):
        return prefix + n if isinstance(n, str) and n not in known and prefix + n in known else n
    return {full(k): v for k, v in names.items()} if isinstance(names, Mapping) else type(names)(full(n) for n in names)


# Leaf modules that compute something: convolutions, linear maps, normalisations,
# activations, pooling. Dropout, Identity, Flatten and containers are left out.
_COMPUTING = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.Bilinear,
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
) + _POOLS
_SKIPPED = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity, nn.Flatten, nn.Unflatten
)
# Blocks selected as a whole: their own forward does not call all their children
# (nn.MultiheadAttention uses out_proj.weight directly, so out_proj's hook never fires).
_BLOCKS = (nn.MultiheadAttention,)
# The same by class name, for blocks of packages not imported here: torchvision's Swin
# attention calls its qkv/proj Linear modules' weights through F.linear.
_BLOCK_NAMES = ("ShiftedWindowAttention", "ShiftedWindowAttentionV2")


def _is_block(module: nn.Module) -> bool:
    return isinstance(module, _BLOCKS) or type(module).__name__ in _BLOCK_NAMES


# What an activation is (docs/layers.md), wherever its class lives: torch.nn's activation classes
# and their subclasses; and any leaf module (no children) that is one by its class name (timm's
# ``GELU``, ``Swish``, ``HardSwishMe``, ``QuickGELU``, ``GELUTanh``, ``StarReLU``) or, having no
# parameters, by the activation function its own ``forward`` calls (a thin wrapper of ``F.gelu``).
_TORCH_ACTIVATIONS = tuple(
    c for c in vars(nn.modules.activation).values()
    if isinstance(c, type) and issubclass(c, nn.Module) and c.__module__ == nn.modules.activation.__name__
    and c is not nn.MultiheadAttention
)
# Activation names, lower case without "_": torch's classes and functions and the usual others.
_ACTIVATION_NAMES = frozenset(c.__name__.lower() for c in _TORCH_ACTIVATIONS) | frozenset((
    "swish", "hardmish", "quickgelu", "gelutanh", "geluerf", "starrelu", "squaredrelu", "logsigmoid",
    "leakyrelu", "hardsigmoid", "hardswish", "relu6", "silu", "gelu", "mish", "sigmoid", "tanh",
))
# Names a longer class name may start or end with (long enough not to match inside other words).
_ACTIVATION_STEMS = tuple(n for n in _ACTIVATION_NAMES if len(n) >= 4 and n not in ("threshold", "softmax2d"))


def _activation_name(name: str) -> bool:
    """``name`` (a class or function name) names an activation: ``GELU``, ``hard_swish``, ``SwishMe``, ``QuickGELU``."""
    key = name.lower().replace("_", "")
    for suffix in ("me", "jit", "module", "layer"):
        if key.endswith(suffix) and key[: -len(suffix)] in _ACTIVATION_NAMES:
            return True
    return key in _ACTIVATION_NAMES or key.startswith(_ACTIVATION_STEMS) or key.endswith(_ACTIVATION_STEMS)


def _calls_activation(module: nn.Module) -> bool:
    """The module's own ``forward`` calls an activation function by name (``F.gelu(x)``, ``swish(x)``)."""
    code = getattr(getattr(type(module), "forward", None), "__code__", None)
    return code is not None and any(_activation_name(n) for n in code.co_names)


def is_activation(module: nn.Module) -> bool:
    """``module`` is an activation (what ``layers="auto"`` selects as one; docs/layers.md)."""
    if isinstance(module, _TORCH_ACTIVATIONS):
        return True
    if _is_block(module) or _is_e2cnn_module(module) or any(True for _ in module.children()):
        return False
    if _activation_name(type(module).__name__):
        return True
    return next(module.parameters(), None) is None and _calls_activation(module)


_is_activation = is_activation


def _is_e2cnn_module(module: nn.Module) -> bool:
    """An e2cnn ``EquivariantModule`` (checked by class name: e2cnn is not imported here)."""
    return any(c.__name__ == "EquivariantModule" for c in type(module).__mro__)


_E2CNN_CONTAINERS = (
    "SequentialModule", "ModuleList", "MultipleModule", "PointwiseDropout", "FieldDropout", "IdentityModule"
)


def _auto(name: str, module: nn.Module) -> bool:
    if _is_block(module):
        return True
    if _is_e2cnn_module(module):
        # e2cnn's equivariant modules (R2Conv, InnerBatchNorm, ReLU, pooling, GroupPooling)
        # are the leaves of the equivariant graph; their inner torch modules (basis
        # expansions) are not measured.
        return type(module).__name__ not in _E2CNN_CONTAINERS and not any(
            _is_e2cnn_module(c) for c in module.children()
        )
    if isinstance(module, _SKIPPED):
        return False
    if any(True for _ in module.children()):
        return False
    return isinstance(module, _COMPUTING) or _is_activation(module)


def select_layers(model: nn.Module, layers: LayerSpec = "auto") -> List[Tuple[str, nn.Module]]:
    """Resolve ``layers=`` to ``[(qualified_name, module), ...]`` in registration order.

    Args:
        layers: ``"auto"`` (leaf modules that compute something: conv, linear, norm,
            activation, pooling, and attention blocks as a whole - ``nn.MultiheadAttention``,
            torchvision's Swin ``ShiftedWindowAttention`` - ; not dropout, identity,
            flatten or containers), a list of qualified module names (``"layer1.0.conv1"``),
            a module type or list of types, or a predicate ``f(name, module) -> bool``.

    The model's own output is no module: it is measured as the layer ``"(output)"``
    (:data:`OUTPUT`) with ``"auto"`` or when that name is listed (:func:`selects_output`), and is
    not in the list returned here.

    Raises:
        LayerSelectionError: a name that does not exist (with close names), or nothing selected.
    """
    named = [(n, m) for n, m in model.named_modules() if n]
    if isinstance(layers, str) and layers == "auto":
        chosen = [(n, m) for n, m in named if _auto(n, m)]
        # Drop the children of selected blocks (their hooks would not fire, or double count).
        blocks = [n for n, m in chosen if _is_block(m) or _is_e2cnn_module(m)]
        chosen = [(n, m) for n, m in chosen if not any(n.startswith(b + ".") for b in blocks)]
    elif isinstance(layers, str):
        return select_layers(model, [layers])
    elif isinstance(layers, type) and issubclass(layers, nn.Module):
        chosen = [(n, m) for n, m in named if isinstance(m, layers)]
    elif callable(layers) and not isinstance(layers, (list, tuple)):
        chosen = [(n, m) for n, m in named if layers(n, m)]
    else:
        layers = list(layers)
        if layers and all(isinstance(t, type) for t in layers):
            chosen = [(n, m) for n, m in named if isinstance(m, tuple(layers))]
        elif all(isinstance(t, str) for t in layers):
            by_name = dict(named)
            chosen = []
            if OUTPUT in layers and len(layers) == 1:
                return []  # only the model's output
            for name in (n for n in layers if n != OUTPUT):
                if name not in by_name:
                    close = difflib.get_close_matches(name, list(by_name), n=5, cutoff=0.5)
                    hint = f" Close names: {close}." if close else ""
                    raise LayerSelectionError(
                        f"{type(model).__name__} has no layer named {name!r}.{hint} "
                        "See [n for n, _ in model.named_modules()] for every name."
                    )
                chosen.append((name, by_name[name]))
        else:
            raise LayerSelectionError(
                f"layers= must be 'auto', a list of names, module types, or a predicate; got {layers!r}"
            )
    if not chosen:
        raise LayerSelectionError(
            f"layers={layers!r} selects no module of {type(model).__name__}; pass qualified names "
            "from model.named_modules() or module types."
        )
    return chosen


def selects_output(layers: LayerSpec) -> bool:
    """Whether ``layers=`` measures the model's own output as the layer ``"(output)"``: with ``"auto"``
    or when the name is listed, never with a type or predicate (docs/layers.md)."""
    if isinstance(layers, str):
        return layers in ("auto", OUTPUT)
    return isinstance(layers, (list, tuple)) and OUTPUT in layers


def first_tensor(out):
    """The tensor a layer output stands for: itself, an e2cnn ``GeometricTensor``'s ``.tensor``,
    or the first tensor of a tuple/list/dict."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "tensor") and isinstance(out.tensor, torch.Tensor):  # e2cnn GeometricTensor
        return out.tensor
    if isinstance(out, (tuple, list)):
        for o in out:
            t = first_tensor(o)
            if t is not None:
                return t
    if isinstance(out, dict):
        for o in out.values():
            t = first_tensor(o)
            if t is not None:
                return t
    return None


@dataclass
class Activation:
    """A layer output in the measures' layout: ``kind`` is ``"map"`` (``B x C x h x w``) or ``"vector"`` (``B x D``)."""

    tensor: torch.Tensor
    kind: str
    tokens_removed: int = 0
    layout: str = "channels_first"


def _refusal(layer: str, shape, reason: str) -> str:
    """The message of a refused layer: what the evidence says (or that there is none, and the ambiguity),
    and the override."""
    if len(shape) == 3:
        either, names = "B x N x D tokens, B x D x N transposed tokens", "'tokens' | 'tokens_transposed'"
    else:
        either, names = "B x C x h x w, B x h x w x C", "'channels_first' | 'channels_last'"
    unsettled = reason.startswith(("went through", "has no evidence"))
    why = f" (the shape alone cannot tell {either} or a partition apart)" if unsettled else ""
    return (
        f"layer {layer!r}: output of shape {tuple(shape)} {reason}; it is not measured{why}. "
        f"If you know it is a map, say how with layouts={{{layer!r}: {names}}}"
    )


NO_EVIDENCE = "has no evidence of its layout (none of the operations that made it was followed)"


def reading_of(t: torch.Tensor, layer: str, layout=None) -> Optional[Reading]:
    """How ``t`` folds into a map (a :class:`~lightning_equivariance.layouts.Reading`), or ``None`` for a vector.

    ``layout``: the discovered reading, an override name (:data:`LAYOUTS`), a refusal reason
    (raises :class:`LayoutError` with it), or ``None`` (no discovery: ``B x D`` is a vector,
    ``B x C x h x w`` channels-first, and a 3-D output is refused: no evidence).
    """
    if isinstance(layout, Reading):
        return layout if layout.is_map else None
    if layout is None:
        if t.dim() == 2:
            return None
        layout = "channels_first" if t.dim() == 4 else NO_EVIDENCE
    if layout == "vector":
        return None
    if layout in LAYOUTS:
        reading = Reading.override(layout, tuple(t.shape))
        if isinstance(reading, Reading):
            return reading if reading.is_map else None
        layout = reading
    raise LayoutError(_refusal(layer, tuple(t.shape), layout))


def as_activation(out, layer: str, layout=None) -> Activation:
    """Turn a hooked output into a feature map or vector (see module docstring).

    Args:
        layout: how the output is laid out: a :class:`~lightning_equivariance.layouts.Reading` from
            :func:`discover_layouts`, an override name (:data:`LAYOUTS`), a refusal reason (raises
            :class:`LayoutError` naming it and the override), or ``None`` (:func:`reading_of`).

    Raises:
        ValueError: naming ``layer`` and the shape, for outputs that are neither.
    """
    t = first_tensor(out)
    if t is None:
        raise ValueError(f"layer {layer!r}: output of type {type(out).__name__} holds no tensor to measure")
    if isinstance(layout, Reading) and not layout.is_map:
        return Activation(layout.to_map(t), "vector", layout="vector")
    if t.dim() not in (2, 3, 4) and not isinstance(layout, Reading):
        raise ValueError(
            f"layer {layer!r}: output of shape {tuple(t.shape)} is neither a feature map (B x C x h x w), "
            "tokens (B x N x D) nor a vector (B x D); exclude it with layers=... ."
        )
    reading = reading_of(t, layer, layout)
    if reading is None:
        return Activation(t.flatten(1) if t.dim() > 2 else t, "vector", layout="vector")
    return Activation(reading.to_map(t), "map", tokens_removed=reading.prefix, layout=str(reading))


# ---------------------------------------------------------------------- layouts
# Modules whose 4-D output is B x C x h x w by what they compute: the evidence for an output whose
# making the provenance could not see (no operation of it was followed).
_CHANNELS_FIRST = _POOLS + (
    nn.modules.conv._ConvNd,
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.Upsample,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
)


def check_layout_overrides(layouts: Optional[Mapping[str, str]], names: Sequence[str],
                           model: Optional[nn.Module] = None) -> Dict[str, str]:
    """Validate ``layouts={layer: one of LAYOUTS}`` against the selected layer names and their calls'
    names (:class:`CallNames`; those of ``model`` exactly when it is given)."""
    layouts = dict(layouts or {})
    bad = {k: v for k, v in layouts.items() if v not in LAYOUTS}
    if bad:
        raise ValueError(f"layouts= values must be one of {LAYOUTS}, got {bad}")
    known = set(names)
    call_names = CallNames(names, model) if model is not None else None
    unknown = [k for k in layouts if not _is_call_of(k, known, call_names)]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(known), n=5, cutoff=0.5)
        hint = f" Close names: {close}." if close else ""
        raise ValueError(f"layouts= names layer(s) {unknown} that are not among the selected layers.{hint}")
    return layouts


def _decide(module: nn.Module, t: torch.Tensor, found) -> Union[Reading, str, None]:
    """A layer output's layout from its provenance (``found``): a reading, a refusal reason, or ``None`` (a vector)."""
    if found is None:  # made by nothing the mode saw: only what the module computes can tell
        if t.dim() == 2:
            return None
        if t.dim() == 4 and (isinstance(module, _CHANNELS_FIRST) or _is_e2cnn_module(module)):
            return Reading.override("channels_first", tuple(t.shape))
        return NO_EVIDENCE
    reading = read(found, tuple(t.shape))
    if not isinstance(reading, Reading) and t.dim() == 2 and reading != MIXED:
        return None  # B x D: a vector whatever made it (the engine checks the batch axis)
    return reading


class _LayoutTracker:
    """One forward under a :class:`~lightning_equivariance.layouts.ProvenanceMode`: each selected call's layout."""

    def __init__(self, model: nn.Module, names: Mapping[nn.Module, List[str]], overrides: Mapping[str, str]):
        self.model = model
        self.names = names
        self.overrides = overrides
        self.mode = ProvenanceMode()
        self.layouts: Dict[str, object] = {}
        self.inputs: Dict[str, object] = {}
        self.undecided: List[str] = []
        self.calls: Dict[str, int] = {}
        self.call_names = CallNames([n for ns in names.values() for n in ns], model)

    def _root(self, module, args):
        t = first_tensor(args)
        if t is not None and t.dim() == 4 and self.mode.get(t) is None:
            self.mode.set(t, image_provenance(tuple(t.shape)))

    def _hook(self, module, args, output):
        out = first_tensor(output)
        if out is None:
            return
        self.mode.paused = True
        try:
            layout = _decide(module, out, self.mode.get(out))
            inp = first_tensor(args)
            in_layout = _decide(module, inp, self.mode.get(inp)) if inp is not None else None
            more = {i: _decide(module, a, self.mode.get(a)) for i, a in enumerate(args)
                    if i and isinstance(a, torch.Tensor) and a.is_floating_point()}
            for name in self.names.get(module, ()):
                k = self.calls.get(name, 0)
                self.calls[name] = k + 1
                call = self.call_names.call(name, k)
                override = self.overrides.get(call, self.overrides.get(name))
                self.layouts[call] = layout if override is None else Reading.override(override, tuple(out.shape))
                if inp is not None and in_layout is not None:
                    self.inputs[call] = in_layout
                for i, layout_i in more.items():  # the other tensor arguments: "call#i"
                    if layout_i is not None:
                        self.inputs[f"{call}#{i}"] = layout_i
        finally:
            self.mode.paused = False

    def run(self, forward: Callable[[torch.Tensor], object], x: torch.Tensor) -> None:
        """``forward(x)`` once, following every tensor, with hooks on the selected layers."""
        handles = [self.model.register_forward_pre_hook(self._root, prepend=True)]
        handles += [m.register_forward_hook(self._hook, prepend=True) for m in self.names]
        try:
            with torch.no_grad(), self.mode:
                forward(x)
        finally:
            for h in handles:
                h.remove()
            self.mode.table = {}


@dataclass
class Layouts:
    """What :func:`discover_layouts` found, per layer call name (``"name"``, ``"name:1"``, ...).

    Attributes:
        outputs: a :class:`~lightning_equivariance.layouts.Reading` (a ``str``: ``"channels_first"``,
            ``"channels_last"``, ``"tokens"``, ``"tokens_transposed"``, ``"windows"``, ``"patches"``,
            ``"heads"``, ``"vector"``) or a refusal reason; absent for plain ``B x D`` vectors.
        inputs: the same for the layer's first input (``"name#i"``: its ``i``-th positional tensor argument).
        undecided: kept for compatibility: always empty (an unsettled layer is refused, not guessed).
    """

    outputs: Dict[str, object]
    inputs: Dict[str, object]
    undecided: List[str]


#: Images in the layout-discovery forward: 6 = 2 x 3, so that a reshape that splits the batch into factors
#: (a forward that regroups or reorders its images) shows as a split and is refused. With 2 images a split
#: into 2 x 1 hid among the axes of size 1, and a layer whose rows are other images' was measured.
DISCOVERY_IMAGES = 6


def _discovery_batch(x: torch.Tensor) -> torch.Tensor:
    """:data:`DISCOVERY_IMAGES` probe images (the first ones, repeated when there are fewer: only the
    provenance of the forward counts, not its values)."""
    if x.shape[0] >= DISCOVERY_IMAGES:
        return x[:DISCOVERY_IMAGES]
    return x[torch.arange(DISCOVERY_IMAGES, device=x.device) % x.shape[0]]


def discover_layouts(
    model: nn.Module,
    x: torch.Tensor,
    layers: List[Tuple[str, nn.Module]],
    overrides: Optional[Mapping[str, str]] = None,
    forward: Optional[Callable[[torch.Tensor], object]] = None,
) -> Layouts:
    """The layout of every selected layer's output (and input), from one forward of (six images of) ``x``.

    Every tensor's provenance is followed through the forward (:mod:`lightning_equivariance.layouts`,
    docs/measures.md §1.3); ``overrides`` (``layouts=``) replace it for the layers they name.
    ``forward`` replaces ``model(x)``. The caller runs this in the mode it measures in.
    """
    names: Dict[nn.Module, List[str]] = {}
    for name, module in layers:
        names.setdefault(module, []).append(name)
    tracker = _LayoutTracker(model, names, check_layout_overrides(overrides, [n for n, _ in layers], model))
    tracker.run(forward if forward is not None else model, _discovery_batch(x))
    return Layouts(tracker.layouts, tracker.inputs, tracker.undecided)


def output_layout(model: nn.Module, forward: Callable[[torch.Tensor], object], x: torch.Tensor):
    """The layout of what ``forward(x)`` returns (its first tensor), on the same evidence as a layer's."""
    mode = ProvenanceMode()
    xs = _discovery_batch(x)
    mode.set(xs, image_provenance(tuple(xs.shape)))
    with torch.no_grad(), mode:
        out = first_tensor(forward(xs))
    mode.paused = True
    return None if out is None else _decide(model, out, mode.get(out))


def _version(t: torch.Tensor) -> Optional[int]:
    """The in-place version counter (``None`` for inference tensors, which have none)."""
    try:
        return t._version
    except RuntimeError:
        return None


def _same_values(t: torch.Tensor, r: Optional[torch.Tensor], version: Optional[int]) -> bool:
    """``t`` holds what a hooked layer returned as ``r`` (its version then ``version``), read the same way.

    Evidence, not equal numbers: ``t`` is ``r`` itself, or a view of it (``_base`` links them; a
    live tensor, so no reused memory can pass) over the same elements in the same order that
    only adds or drops axes of size 1 (a flatten of ``B x C x 1 x 1``, a squeeze); and neither was
    changed in place since the layer's hook saw it.
    """
    if r is None or _version(t) != version:
        return False
    if t is r:
        return True
    base = t._base
    if base is None or not (base is r or (r._base is not None and base is r._base)):
        return False
    if t.dtype != r.dtype or t.numel() != r.numel() or t.data_ptr() != r.data_ptr():
        return False
    def kept(x):
        return [(n, st) for n, st in zip(x.shape, x.stride()) if n != 1]
    return kept(t) == kept(r)


class LayerHooks:
    """Context manager: eval mode, forward hooks on ``layers``, everything restored on exit.

    ``callback(name, output, inputs)`` is called for every hooked module call (``inputs``:
    the module's positional arguments);
    ``name`` is the qualified module name with ``":k"`` appended for the k-th repeated
    call of the same module within one forward (a ReLU module reused inside a ResNet
    block measures as two layers; more colons where a module's own name would collide,
    :class:`CallNames`). Use ``start_forward()`` before each forward.
    :meth:`discovering` follows the layers' layouts through a forward.

    With ``output=True`` the model's own output (its first tensor) is handed on as the layer
    ``"(output)"`` after every forward, unless it is the very tensor a hooked layer returned in
    that forward (a classifier's last ``Linear``), or a view of it that only drops or adds axes of
    size 1: then :attr:`output_produced_by` names that layer.
    """

    def __init__(self, model: nn.Module, layers: List[Tuple[str, nn.Module]], callback, eval_mode: bool = True,
                 output: bool = False):
        self.model = model
        self.layers = layers
        self.callback = callback
        self.eval_mode = eval_mode
        self.output = output
        #: the hooked layer whose output is the model's output (then ``"(output)"`` is not handed on)
        self.output_produced_by: Optional[str] = None
        self._handles = []
        self._mode = contextlib.nullcontext()
        self._calls: Dict[str, int] = {}
        #: the names of repeated calls (``name:k``, unambiguous: :class:`CallNames`)
        self.call_names = CallNames([n for n, _ in layers], model)
        # (layer call, weak reference to its output tensor, its version) of this forward, for the output's identity
        self._produced: List[Tuple[str, weakref.ref, Optional[int]]] = []
        self._silent = False

    def _hooked(self) -> List[Tuple[str, nn.Module]]:
        """The hooked (name, module) pairs: the layers, then the model itself for its output."""
        return list(self.layers) + ([(OUTPUT, self.model)] if self.output else [])

    def start_forward(self) -> None:
        self._calls = {}
        self._produced = []

    @contextlib.contextmanager
    def calling(self, callback):
        """A forward with ``callback(name, output, inputs)`` in place of the hooks' own (a pass of the
        engine, :mod:`lightning_equivariance.passes`): :meth:`start_forward`, then the forward in the block."""
        previous, self.callback = self.callback, callback
        self.start_forward()
        try:
            yield self
        finally:
            self.callback = previous

    @contextlib.contextmanager
    def discovering(self, x: torch.Tensor, overrides: Optional[Mapping[str, str]] = None,
                    into: Optional[Dict[str, object]] = None):
        """Decide the layers' layouts (:func:`discover_layouts`) with one forward of six images of ``x``, the
        hooks' callbacks silent, before the block; yields the :class:`Layouts` (``outputs`` is ``into`` if given)."""
        self._silent = True
        try:
            found = discover_layouts(self.model, x, self._hooked(), overrides)
        finally:
            self._silent = False
        if into is not None:
            into.update(found.outputs)
            found.outputs = into
        yield found

    def _hook(self, name):
        def hook(module, args, output):
            if self._silent:
                return
            k = self._calls.get(name, 0)
            self._calls[name] = k + 1
            call = self.call_names.call(name, k)
            if self.output:
                t = first_tensor(output)
                if t is not None:
                    self._produced.append((call, weakref.ref(t), _version(t)))
            self.callback(call, output, args)

        return hook

    def _output_hook(self, module, args, output):
        if self._silent:
            return
        t = first_tensor(output)
        if t is None:  # nothing to measure: "(output)" stays not called
            self._produced = []
            return
        producer = next(
            (call for call, ref, version in reversed(self._produced) if _same_values(t, ref(), version)), None
        )
        self._produced = []
        if producer is not None:
            self.output_produced_by = producer
            return
        self.output_produced_by = None
        self.callback(OUTPUT, output, args)

    def __enter__(self) -> "LayerHooks":
        self._mode = eval_mode(self.model) if self.eval_mode else contextlib.nullcontext()
        self._mode.__enter__()
        try:
            for name, module in self.layers:
                self._handles.append(module.register_forward_hook(self._hook(name)))
            if self.output:  # after the layers' hooks: the model's own hook fires last in a forward
                self._handles.append(self.model.register_forward_hook(self._output_hook))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._mode.__exit__(None, None, None)
        return None

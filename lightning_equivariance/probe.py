"""Choosing layers, hooking them, and turning their outputs into feature maps or vectors.

``select_layers`` resolves the ``layers=`` argument; ``Probe`` is a context manager that
puts the model in eval mode, registers forward hooks on the selected layers and always
removes them and restores every submodule's train/eval mode on exit, even when the
model raises. ``as_activation`` normalises a layer output (MEASURES.md, "Notation"):

* a tuple/list -> its first tensor (e.g. ``nn.MultiheadAttention`` returns ``(out, weights)``);
* an e2cnn ``GeometricTensor`` -> its ``.tensor`` (``B x C x h x w``);
* ViT/Mixer tokens ``B x N x D`` -> a ``B x D x s x s`` map after removing the 0-2 leading
  class/distillation tokens so that ``N - k = s * s`` (row-major token order, as
  torchvision's ``VisionTransformer`` flattens its patch grid);
* ``B x C x 1 x 1`` maps and ``B x D`` tensors -> vectors ``B x D``.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple, Type, Union

import torch
from torch import nn

__all__ = ["select_layers", "as_activation", "Probe", "LayerSelectionError", "LayerSpec"]

LayerSpec = Union[str, Sequence[str], Sequence[Type[nn.Module]], Type[nn.Module], Callable[[str, nn.Module], bool]]


class LayerSelectionError(ValueError):
    """The ``layers=`` argument names no usable layer."""


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
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._LPPoolNd,
)
_SKIPPED = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity, nn.Flatten, nn.Unflatten)
# Blocks selected as a whole: their own forward does not call all their children
# (nn.MultiheadAttention uses out_proj.weight directly, so out_proj's hook never fires).
_BLOCKS = (nn.MultiheadAttention,)


def _is_activation(module: nn.Module) -> bool:
    return type(module).__module__ == "torch.nn.modules.activation" and not isinstance(module, _BLOCKS)


def _is_e2cnn_module(module: nn.Module) -> bool:
    """An e2cnn ``EquivariantModule`` (checked by class name: e2cnn is not imported here)."""
    return any(c.__name__ == "EquivariantModule" for c in type(module).__mro__)


_E2CNN_CONTAINERS = ("SequentialModule", "ModuleList", "MultipleModule", "PointwiseDropout", "FieldDropout", "IdentityModule")


def _auto(name: str, module: nn.Module) -> bool:
    if isinstance(module, _BLOCKS):
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
            activation, pooling, and attention blocks as a whole; not dropout, identity,
            flatten or containers), a list of qualified module names (``"layer1.0.conv1"``),
            a module type or list of types, or a predicate ``f(name, module) -> bool``.

    Raises:
        LayerSelectionError: a name that does not exist (with close names), or nothing selected.
    """
    named = [(n, m) for n, m in model.named_modules() if n]
    if isinstance(layers, str) and layers == "auto":
        chosen = [(n, m) for n, m in named if _auto(n, m)]
        # Drop the children of selected blocks (their hooks would not fire, or double count).
        blocks = [n for n, m in chosen if isinstance(m, _BLOCKS) or _is_e2cnn_module(m)]
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
            for name in layers:
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


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "tensor") and isinstance(getattr(out, "tensor"), torch.Tensor):  # e2cnn GeometricTensor
        return out.tensor
    if isinstance(out, (tuple, list)):
        for o in out:
            t = _first_tensor(o)
            if t is not None:
                return t
    if isinstance(out, dict):
        for o in out.values():
            t = _first_tensor(o)
            if t is not None:
                return t
    return None


@dataclass
class Activation:
    """A layer output in the measures' layout: ``kind`` is ``"map"`` (``B x C x h x w``) or ``"vector"`` (``B x D``)."""

    tensor: torch.Tensor
    kind: str
    tokens_removed: int = 0


def as_activation(out, layer: str) -> Activation:
    """Turn a hooked output into a feature map or vector (see module docstring).

    Raises:
        ValueError: naming ``layer`` and the shape, for outputs that are neither.
    """
    t = _first_tensor(out)
    if t is None:
        raise ValueError(f"layer {layer!r}: output of type {type(out).__name__} holds no tensor to measure")
    if t.dim() == 2:
        return Activation(t, "vector")
    if t.dim() == 4:
        if t.shape[-1] * t.shape[-2] == 1:
            return Activation(t.flatten(1), "vector")
        return Activation(t, "map")
    if t.dim() == 3:
        b, n, d = t.shape
        for k in (0, 1, 2):
            s = math.isqrt(max(n - k, 0))
            if n - k > 1 and s * s == n - k:
                grid = t[:, k:, :].transpose(1, 2).reshape(b, d, s, s)
                return Activation(grid, "map", tokens_removed=k)
        raise ValueError(
            f"layer {layer!r}: token output of shape {tuple(t.shape)} has N={n} tokens, which is not a "
            "square plus 0-2 class tokens; exclude the layer with layers=... ."
        )
    raise ValueError(
        f"layer {layer!r}: output of shape {tuple(t.shape)} is neither a feature map (B x C x h x w), "
        "tokens (B x N x D) nor a vector (B x D); exclude it with layers=... ."
    )


class Probe:
    """Context manager: eval mode, forward hooks on ``layers``, everything restored on exit.

    ``callback(name, output, inputs)`` is called for every hooked module call (``inputs``:
    the module's positional arguments);
    ``name`` is the qualified module name with ``":k"`` appended for the k-th repeated
    call of the same module within one forward (a ReLU module reused inside a ResNet
    block measures as two layers). Use ``start_forward()`` before each forward.
    """

    def __init__(self, model: nn.Module, layers: List[Tuple[str, nn.Module]], callback, eval_mode: bool = True):
        self.model = model
        self.layers = layers
        self.callback = callback
        self.eval_mode = eval_mode
        self._handles = []
        self._modes: Dict[nn.Module, bool] = {}
        self._calls: Dict[str, int] = {}

    def start_forward(self) -> None:
        self._calls = {}

    def _hook(self, name):
        def hook(module, args, output):
            k = self._calls.get(name, 0)
            self._calls[name] = k + 1
            self.callback(name if k == 0 else f"{name}:{k}", output, args)

        return hook

    def __enter__(self) -> "Probe":
        self._modes = {m: m.training for m in self.model.modules()}
        try:
            if self.eval_mode:
                self.model.eval()
            for name, module in self.layers:
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        for m, mode in self._modes.items():
            m.training = mode
        return None

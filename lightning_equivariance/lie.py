"""Lie derivatives of every layer with forward-mode AD: the ``lee`` measure and layer contributions.

Gruver et al. 2023 (ICLR), "The Lie Derivative for Measuring Learned Equivariance", §4-5.

For a continuous one-parameter transform ``Phi_t`` (:class:`LieTransform`) the Lie
derivative of the first ``l`` layers of a network is (Eq. 3)

    L_X f_{1:l}(x) = d/dt|_{t=0} rho_l(Phi_t)^{-1} f_{1:l}(rho_0(Phi_t) x)
                   = d f_{1:l}(x)[G_0 x] - G_l f_{1:l}(x),

with ``G_0`` the transform's generator on the input and ``G_l`` the same generator on
the layer's output at its own resolution (feature maps, and ViT/Mixer tokens laid out
as maps; zero on vectors, whose ``rho`` is the identity). The generators are the
analytic ones of :mod:`lightning_equivariance.functional.lie` (central differences of
the bilinear interpolant, reflection or circular padding). ``grid_sample`` has no
forward-mode derivative in torch 2.13/2.14, so nothing differentiates through it: the
input tangent ``G_0 x`` is pushed through the model once per transform with
``torch.autograd.forward_ad`` dual tensors, and every hooked layer reads its tangent
``d f_{1:l}(x)[G_0 x]`` with ``unpack_dual`` (docs/measures.md §4). One pass per transform
serves all layers, batched over images.

``LEE = E_x ||L_X f_{1:l}(x)||^2 / dim`` (Eq. 4) is the measure ``"lee"`` of
:func:`~lightning_equivariance.measure`::

    measure(model, x, measures=("lee",), groups=("rotation", "translation_x"))

:func:`lie_derivative_contributions` is the analysis of §5 (Eq. 5-6): how much each
layer's own equivariance error contributes to the output's, with Hutchinson probes.

Conventions (documented decisions):

* transforms and units follow the paper's reference code (normalised ``[-1, 1]``
  coordinates, radians; see :mod:`lightning_equivariance.functional.lie`);
* every layer output is folded into its ``B x C x h x w`` map by the reading the probe found
  on evidence (docs/measures.md §1.3: tokens, transposed tokens, windows, patches), the
  generator taken there and unfolded back into the layer's own layout; class tokens get none
  (they are invariant, as in the reference); every entry counts in ``dim``;
* the model runs in eval mode (BatchNorm with running statistics) and every module's
  mode is restored afterwards; ``nn.MultiheadAttention``'s fused fast path and the
  flash/memory-efficient attention kernels have no forward-mode derivative, so they are
  switched to their plain (math) implementations during the pass;
* architecture channel actions (e2cnn fields of discrete groups) are ignored: a discrete
  group has no infinitesimal generator;
* ``LEE`` averages ``L^2`` (Eq. 4); the public reference code averages ``|L|``;
* speed: convolutions, linear maps and eval-mode batch norm use exact shortcut
  forward-mode rules (:class:`_FastTangents`: no convolution of the primal with a zero
  weight tangent); every other op uses torch's own rules.
"""
from __future__ import annotations

import contextlib
import functools
import math
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .metrics.base import LieContext, all_finite
from .layouts import Reading
from .probe import (
    CallNames, Layouts, LayerSpec, first_tensor, discover_layouts, eval_mode, is_pooling, output_layout, reading_of,
    select_layers,
)
from .report import assign_parts
from .transforms import TRANSFORMS, LieTransform, is_transform, resolve_transform

__all__ = [
    "LieTransform",
    "TRANSFORMS",
    "resolve_transform",
    "is_transform",
    "generator_like",
    "lie_derivative",
    "lie_derivative_contributions",
    "lie_pass",
    "layer_lie_context",
    "primal_of",
]

# ---------------------------------------------------------------------- generators on layer outputs
def _layout(t: torch.Tensor, layer: str, layout=None) -> Tuple[str, Optional[Reading]]:
    """``("map", reading)`` or ``("vector", None)``: how the generator acts on ``t``, by the engine's rule
    (:func:`~lightning_equivariance.probe.reading_of`; ``layout`` is the probe's decision for ``t``)."""
    if isinstance(layout, Reading) and not layout.is_map:
        return "vector", layout  # a vector folded out of a partition (its batch axis holds more than images)
    reading = reading_of(t, layer, layout)
    return ("vector", None) if reading is None else ("map", reading)


def generator_like(t: torch.Tensor, transform: LieTransform, layer: str = "tensor", layout=None) -> torch.Tensor:
    """The transform's generator on a layer output in its own layout, a tensor like ``t``.

    The output is folded into its ``B x C x h x w`` map by its reading (channels-first or -last maps,
    tokens, transposed tokens, windows, patches: :class:`~lightning_equivariance.layouts.Reading`),
    the generator taken at that resolution and unfolded back; zero on class tokens (they index no
    position) and on vectors (``B x D``, ``B x C x 1 x 1``).
    """
    kind, reading = _layout(t, layer, layout)
    if kind == "vector":
        return torch.zeros_like(t)
    return reading.from_map(transform.generator(reading.to_map(t)), t)


def lie_like(tangent: torch.Tensor, t: torch.Tensor, transform: LieTransform, layer: str = "tensor",
             layout=None) -> torch.Tensor:
    """``tangent - generator_like(t)``: the Lie derivative at a layer output ``t`` with forward-mode tangent ``tangent``."""
    kind, reading = _layout(t, layer, layout)
    if kind == "vector":
        return tangent
    lie = transform.residual(reading.to_map(tangent), reading.to_map(t))
    return reading.from_map(lie, t, reading.prefix_part(tangent))


def _channels_first(lie: torch.Tensor, kind: str, reading: Optional[Reading]) -> torch.Tensor:
    """``b x C x P`` layout for :class:`~lightning_equivariance.metrics.lee.LieDerivativeError` (class tokens
    count as positions)."""
    if kind == "vector":
        lie = reading.to_map(lie) if reading is not None else lie
        return lie.reshape(lie.shape[0], 1, -1)
    m = reading.to_map(lie).flatten(2)
    prefix = reading.prefix_part(lie)
    return m if prefix is None else torch.cat([m, prefix], dim=2)


def _unpack(t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    primal, tangent = fwAD.unpack_dual(t)
    return primal, (torch.zeros_like(primal) if tangent is None else tangent)


def primal_of(output) -> torch.Tensor:
    """The primal of a hooked layer's (dual) output tensor."""
    raw = first_tensor(output)
    if raw is None:
        raise ValueError(f"output of type {type(output).__name__} holds no tensor to measure")
    return fwAD.unpack_dual(raw).primal


def layer_lie_context(layer: str, output, transform: LieTransform, layout: Optional[str] = None) -> LieContext:
    """The Lie derivative at a hooked layer during a forward-mode pass: ``tangent - G_l(primal)``.

    ``layout`` is the probe's layout of a 4-D output. The context's ``sample_mask`` is
    ``False`` for images whose primal or tangent holds NaN or Inf (docs/measures.md §1.7).
    """
    raw = first_tensor(output)
    if raw is None:
        raise ValueError(f"layer {layer!r}: output of type {type(output).__name__} holds no tensor to measure")
    primal, tangent = _unpack(raw)
    kind, reading = _layout(primal, layer, layout)
    lie = lie_like(tangent, primal, transform, layer, layout)
    lie = _channels_first(lie, kind, reading)
    as_map = lambda a: reading.to_map(a) if reading is not None else a  # noqa: E731
    primal_map = as_map(primal)
    finite = all_finite(primal_map.flatten(1)) & all_finite(as_map(tangent).flatten(1))
    # the grid the generator acts on: the folded map's (h, w); None for vectors
    grid = tuple(primal_map.shape[-2:]) if kind == "map" else None
    return LieContext(layer=layer, kind=kind, transform=transform, lie=lie, sample_mask=finite, grid=grid)


# ---------------------------------------------------------------------- forward-mode pass
# torch's forward-mode AD has one dual level per process ("Nested forward mode AD is not
# supported" when two threads enter one each) and forward_mode_friendly switches the global
# MHA fast path: forward-mode passes run one thread at a time.
_FORWARD_MODE_LOCK = threading.RLock()


def _one_thread_at_a_time(fn):
    @functools.wraps(fn)
    def locked(*args, **kwargs):
        with _FORWARD_MODE_LOCK:
            return fn(*args, **kwargs)

    return locked


@contextlib.contextmanager
def forward_mode_friendly():
    """Use the attention implementations that have forward-mode derivatives (restored on exit)."""
    mha = getattr(torch.backends, "mha", None)
    previous = mha.get_fastpath_enabled() if mha is not None else None
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        kernel = sdpa_kernel(SDPBackend.MATH)
    except ImportError:  # pragma: no cover - torch < 2.3
        kernel = contextlib.nullcontext()
    try:
        if mha is not None:
            mha.set_fastpath_enabled(False)
        with kernel:
            yield
    finally:
        if mha is not None:
            mha.set_fastpath_enabled(previous)


_CONVS = (torch.conv1d, torch.conv2d, torch.conv3d)


class _FastTangents(TorchFunctionMode):
    """Cheaper, exact forward-mode rules for the two ops that dominate CNNs.

    torch's generic jvp of a convolution also convolves the primal with the (absent,
    materialised as zero) weight tangent - a third convolution - and that of batch norm
    handles batch statistics even in eval mode. Here, when only the input carries a
    tangent: ``conv(x + eps u, W) = conv(x, W) + eps conv(u, W, bias=None)`` and, in eval
    mode, ``batch_norm``'s tangent is ``u * weight / sqrt(running_var + eps)``. Every other
    case falls through to torch's own rules. The values are identical; it only saves time.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _CONVS or func is F.linear:
            out = self._linear_op(func, args, kwargs)
            if out is not None:
                return out
        elif func is F.batch_norm:
            out = self._batch_norm(func, args, kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)

    @staticmethod
    def _linear_op(func, args, kwargs):
        if len(args) < 2 or not isinstance(args[0], torch.Tensor) or not isinstance(args[1], torch.Tensor):
            return None
        primal, tangent = fwAD.unpack_dual(args[0])
        weight = args[1]
        rest, kwargs = list(args[2:]), dict(kwargs)
        bias = rest.pop(0) if rest else kwargs.pop("bias", None)
        if tangent is None or fwAD.unpack_dual(weight).tangent is not None:
            return None
        if bias is not None and fwAD.unpack_dual(bias).tangent is not None:
            return None
        return fwAD.make_dual(func(primal, weight, bias, *rest, **kwargs), func(tangent, weight, None, *rest, **kwargs))

    @staticmethod
    def _batch_norm(func, args, kwargs):
        names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
        a = dict(zip(names, args))
        a.update(kwargs)
        x, mean, var, weight = a.get("input"), a.get("running_mean"), a.get("running_var"), a.get("weight")
        if a.get("training", False) or mean is None or var is None or not isinstance(x, torch.Tensor):
            return None
        primal, tangent = fwAD.unpack_dual(x)
        params = [t for t in (mean, var, weight, a.get("bias")) if t is not None]
        if tangent is None or any(fwAD.unpack_dual(t).tangent is not None for t in params):
            return None
        scale = torch.rsqrt(var + a.get("eps", 1e-5))
        if weight is not None:
            scale = scale * weight
        shape = (1, -1) + (1,) * (tangent.dim() - 2)
        a["input"] = primal
        return fwAD.make_dual(func(**a), tangent * scale.reshape(shape))


def outside_torch_function_modes():
    """A context where no ``TorchFunctionMode`` (:class:`_FastTangents` during :func:`forward_lie`)
    sees the ops: a hook that measures a layer inside a forward-mode pass runs them at eager
    speed. Through the mode's Python ``__torch_function__``, the measures' own ops and their
    metrics' state creation took about a quarter of ``lee``'s time on ResNet-18."""
    disable = getattr(torch._C, "DisableTorchFunction", None)  # torch's own switch (modes included)
    return disable() if disable is not None else contextlib.nullcontext()


def input_tangent(x: torch.Tensor, transform: LieTransform) -> torch.Tensor:
    """``G_0 x``: the generator on a batch of input images ``B x C x H x W``."""
    if x.dim() != 4:
        raise ValueError(f"input images must be B x C x H x W, got shape {tuple(x.shape)}")
    return transform.generator(x)


def forward_lie(model: Callable, x: torch.Tensor, transform: LieTransform, fast: bool = True):
    """Run ``model`` on ``x`` with the tangent ``G_0 x`` (hooks see dual tensors); returns the dual output.

    Must be called inside ``fwAD.dual_level()``; gradients are not recorded. ``fast``
    uses the exact shortcuts of :class:`_FastTangents` for convolutions, linear maps and
    eval-mode batch norm (``False``: torch's generic forward-mode rules throughout).
    """
    _load_jvp_decompositions()
    with torch.no_grad(), forward_mode_friendly(), (_FastTangents() if fast else contextlib.nullcontext()):
        return model(fwAD.make_dual(x, input_tangent(x, transform)))


def _load_jvp_decompositions() -> None:
    """torch loads its forward-mode decompositions at the first ``make_dual`` of a process, scripting
    18 functions with ``torch.jit.script`` - 18 FutureWarnings that are torch's, not the user's."""
    load = getattr(fwAD, "_maybe_load_decompositions", None)
    if load is not None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
            load()


@_one_thread_at_a_time
def lie_pass(model: Callable, x: torch.Tensor, transform: LieTransform, fast: bool = True) -> None:
    """One forward-mode pass for the engine: hooks on the layers read their dual outputs; the output is dropped."""
    with fwAD.dual_level():
        forward_lie(model, x, transform, fast)


@_one_thread_at_a_time
def lie_derivative(
    model: nn.Module, x: torch.Tensor, transform: Union[str, LieTransform], output_fn: Optional[Callable] = None
) -> torch.Tensor:
    """The Lie derivative of the model's output, ``L_X f(x)`` (Eq. 3), one per image, like the output.

    Image-like outputs (maps, tokens) are corrected by the output transform
    (``- G f(x)``); vector outputs are not (``rho_out`` = identity). ``output_fn`` is applied
    to the model's output first (e.g. ``lambda y: y.softmax(-1)``). Eval mode, restored.
    """
    transform = resolve_transform(transform)
    run = lambda z: model(z) if output_fn is None else output_fn(model(z))  # noqa: E731
    with eval_mode(model):
        layout = output_layout(model, run, x)  # the output's layout on evidence (docs/measures.md §1.3)
    with eval_mode(model), fwAD.dual_level():
        out = forward_lie(run, x, transform)
        raw = first_tensor(out)
        primal, tangent = _unpack(raw)
        lie = lie_like(tangent, primal, transform, "output", layout)
        return lie.clone() if lie is tangent else lie  # outlive the dual level


# ---------------------------------------------------------------------- layer contributions
@dataclass
class _Record:
    name: str
    module: str
    kind: str
    lie: torch.Tensor  # the layer's own Lie derivative L_X f_i at its input, like its output
    eps: torch.Tensor  # zero added to its output: d output / d eps = d f_{N:i+1}


class _ContributionHooks:
    """Pre-hook: the layer's own Lie derivative ``L_X f_i`` (a jvp of the module alone at its input).
    Forward hook: adds a zero leaf to the output, whose gradient is the rest of the network's vjp."""

    def __init__(self, layers, transform: LieTransform, layouts: Optional[Layouts] = None,
                 model: Optional[nn.Module] = None):
        self.layers = layers
        self.call_names = CallNames([n for n, _ in layers], model)  # as discover_layouts names the calls
        self.transform = transform
        self.layouts = layouts if layouts is not None else Layouts({}, {}, [])
        self.records: List[_Record] = []
        self.pending: List[torch.Tensor] = []
        self.calls: Dict[str, int] = {}
        self.busy = False
        self.handles = []

    def __enter__(self):
        for name, module in self.layers:
            self.handles.append(module.register_forward_pre_hook(self._pre(name), with_kwargs=True))
            self.handles.append(module.register_forward_hook(self._post(name)))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []

    def start(self):
        self.records, self.pending, self.calls = [], [], {}

    def _pre(self, name):
        def hook(module, args, kwargs):
            if self.busy:
                return None
            k = self.calls.get(name, 0)
            call = self.call_names.call(name, k)
            duals = []
            _load_jvp_decompositions()
            with torch.no_grad(), fwAD.dual_level():
                for i, a in enumerate(args):
                    if isinstance(a, torch.Tensor) and a.is_floating_point():
                        a = a.detach()
                        layout = self.layouts.inputs.get(call if i == 0 else f"{call}#{i}")
                        a = fwAD.make_dual(a.clone(), generator_like(a, self.transform, f"{call} (input {i})", layout))
                    duals.append(a)
                self.busy = True
                try:
                    out = module(*duals, **kwargs)
                finally:
                    self.busy = False
                raw = first_tensor(out)
                if raw is None:
                    raise ValueError(f"layer {call!r}: output of type {type(out).__name__} holds no tensor")
                primal, tangent = _unpack(raw)
                self.pending.append(lie_like(tangent, primal, self.transform, call, self.layouts.outputs.get(call)))
            return None

        return hook

    def _post(self, name):
        def hook(module, args, output):
            if self.busy:
                return None
            lie = self.pending.pop()
            k = self.calls.get(name, 0)
            self.calls[name] = k + 1
            raw = first_tensor(output)
            eps = torch.zeros_like(raw, requires_grad=True)
            call = self.call_names.call(name, k)
            kind, _ = _layout(raw.detach(), call, self.layouts.outputs.get(call))
            self.records.append(_Record(call, type(module).__name__, kind, lie, eps))
            return _replace_first_tensor(output, raw + eps)

        return hook


def _replace_first_tensor(output, new: torch.Tensor):
    if isinstance(output, torch.Tensor):
        return new
    if hasattr(output, "tensor") and isinstance(getattr(output, "tensor"), torch.Tensor):  # e2cnn GeometricTensor
        output.tensor = new
        return output
    if isinstance(output, (tuple, list)):
        items = list(output)
        first = next((i for i, o in enumerate(items) if isinstance(o, torch.Tensor)), None)
        if first is None:
            raise TypeError(f"cannot attribute an output whose first tensor is nested: {type(output).__name__}")
        items[first] = new
        if isinstance(output, list):
            return items
        return tuple(items) if type(output) is tuple else type(output)(*items)  # namedtuples
    raise TypeError(f"cannot attribute the output of type {type(output).__name__}")


@_one_thread_at_a_time
def _contribution_projections(
    model: nn.Module,
    x: torch.Tensor,
    transform: LieTransform,
    layers,
    num_probes: int,
    probes: str = "gaussian",
    output_fn: Optional[Callable] = None,
    generator: Optional[torch.Generator] = None,
    layouts: Optional[Layouts] = None,
) -> Tuple[List[_Record], torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Per-probe projections ``z^T d f_{N:i+1} L_X f_i`` (``layers x probes x b``) and ``z^T L_X f`` (``probes x b``).

    Eq. 6 says the layer projections sum to the output's, up to operations outside the
    selected layers (the "unattributed" remainder). Also returns ``||L_X f||^2`` per
    image (exact, ``b``) and the output dim.
    """
    run = (lambda z: model(z)) if output_fn is None else (lambda z: output_fn(model(z)))
    hooks = _ContributionHooks(layers, transform, layouts, model)
    with eval_mode(model), forward_mode_friendly(), hooks:
        hooks.busy = True
        lie_out = lie_derivative(model, x, transform, output_fn)  # exact, forward mode
        hooks.busy = False
        hooks.start()
        with torch.enable_grad():
            y = first_tensor(run(x))
        records = hooks.records
        dim = y[0].numel()
        if probes == "gaussian":
            zs = (torch.randn(y.shape, generator=generator, dtype=torch.float64).to(y) for _ in range(num_probes))
            count = num_probes
        elif probes == "basis":
            count = dim

            def basis():
                for k in range(dim):
                    z = torch.zeros(y.shape[0], dim, dtype=y.dtype, device=y.device)
                    z[:, k] = 1
                    yield z.reshape(y.shape)

            zs = basis()
        else:
            raise ValueError(f"probes must be 'gaussian' or 'basis', got {probes!r}")
        proj = torch.zeros(len(records), count, x.shape[0], dtype=torch.float64, device=x.device)
        out_proj = torch.zeros(count, x.shape[0], dtype=torch.float64, device=x.device)
        eps = [r.eps for r in records]
        connected = bool(eps) and y.requires_grad  # else no layer reaches the output
        for j, z in enumerate(zs):
            if connected:
                grads = torch.autograd.grad(y, eps, grad_outputs=z, retain_graph=j + 1 < count, allow_unused=True)
            else:
                grads = [None] * len(eps)
            for i, (g, r) in enumerate(zip(grads, records)):
                if g is not None:
                    proj[i, j] = (g.double() * r.lie.double()).flatten(1).sum(1)
            out_proj[j] = (z.double() * lie_out.double()).flatten(1).sum(1)
    return records, proj, out_proj, lie_out.double().square().flatten(1).sum(1), dim


def lie_derivative_contributions(
    model: nn.Module,
    inputs: torch.Tensor,
    transform: Union[str, LieTransform] = "translation_x",
    num_probes: int = 32,
    layers: LayerSpec = "auto",
    batch_size: int = 16,
    probes: str = "gaussian",
    output_fn: Optional[Callable] = None,
    seed: Optional[int] = 0,
    layouts: Optional[Dict[str, str]] = None,
):
    """Each layer's contribution to the output's equivariance error (Gruver et al. 2023 §4, Eq. 5-6).

    An analysis tool, more expensive than the ``lee`` measure: per chunk of images one
    forward with a graph, one forward-mode jvp of every selected module on its own
    input, and ``num_probes`` backward passes.

    The chain rule splits the output's Lie derivative over the layers (Eq. 6),
    ``L_X f = sum_i d f_{N:i+1} L_X f_i``, where ``L_X f_i`` is layer ``i``'s *own* Lie
    derivative (its jvp at its input ``h`` along ``G h`` minus ``G`` of its output, at
    the layers' own resolutions) and ``d f_{N:i+1}`` the Jacobian of everything after
    it. Layer ``i``'s contribution is ``||d f_{N:i+1} L_X f_i||^2``, estimated with
    Hutchinson probes ``z ~ N(0, I)`` at the output as ``E_z (z^T d f_{N:i+1} L_X f_i)^2``
    (one vjp per probe serves every layer). The sum of the contributions equals
    ``||L_X f||^2`` only when the cross terms vanish (the sum of norms is not the norm
    of the sum, paper §4).

    Args:
        model: the network (put in eval mode, restored afterwards).
        inputs: images ``N x C x H x W``.
        transform: a name (:data:`TRANSFORMS`) or :class:`LieTransform`.
        num_probes: Hutchinson probes per image (``probes="gaussian"``).
        layers: see :func:`~lightning_equivariance.probe.select_layers`.
        batch_size: images per forward (the graph of a chunk is kept for the probes).
        probes: ``"gaussian"`` (Hutchinson) or ``"basis"``: the output's standard basis,
            ``dim(output)`` vjps, exact norms (for small outputs).
        output_fn: applied to the model's output, e.g. ``lambda y: y.softmax(-1)`` (the
            reference code measures the softmax).
        seed: seed of the probes (``None``: torch's global generator).
        layouts: ``{layer: "channels_first" | "channels_last" | "tokens" | "tokens_transposed"}`` overrides of the layouts the
            probe infers (:func:`~lightning_equivariance.probe.discover_layouts`).

    Returns:
        a ``pandas.DataFrame``, one row per layer call in forward order, with columns
        ``layer, index, part, module, kind, transform, contribution, stderr, fraction,
        cumulative``: ``contribution = E_x ||d f_{N:i+1} L_X f_i||^2 / dim(output)`` (the
        units of the output's LEE), ``stderr`` its standard error over images,
        ``fraction`` its share of the total and ``cumulative`` the running share (the
        paper's Figure 4). A last row ``"(unattributed)"`` estimates
        ``||L_X f - sum_i d f_{N:i+1} L_X f_i||^2 / dim``: the error of operations outside
        the selected layers (functional ops, e.g. a positional embedding added in a
        container's ``forward``); it is 0 up to round-off when every non-equivariant
        operation is a selected layer. ``df.attrs`` holds ``output_lee`` (exact LEE of
        the output), ``num_samples``, ``num_probes``, ``transform`` and ``padding``.
    """
    import pandas as pd

    transform = resolve_transform(transform)
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
        raise ValueError("inputs must be a tensor of images N x C x H x W")
    if probes not in ("gaussian", "basis"):
        raise ValueError(f"probes must be 'gaussian' or 'basis', got {probes!r}")
    if probes == "gaussian" and int(num_probes) < 1:
        raise ValueError(f"num_probes must be >= 1, got {num_probes}")
    selected = select_layers(model, layers)
    modules = dict(selected)
    device, dtype = None, None
    for t in list(model.parameters()) + list(model.buffers()):
        device, dtype = t.device, (t.dtype if t.is_floating_point() else None)
        break
    gen = None
    if seed is not None:
        gen = torch.Generator()
        gen.manual_seed(int(seed))
    with eval_mode(model), torch.no_grad():
        x0 = inputs[:1].to(device=device or inputs.device, dtype=dtype if dtype is not None else inputs.dtype)
        found = discover_layouts(model, x0, selected, layouts)
    order: List[Tuple[str, str, str]] = []
    sums: Dict[str, List[torch.Tensor]] = {}
    out_lee_sum, n, dim = 0.0, 0, 1
    t0 = time.perf_counter()
    for start in range(0, inputs.shape[0], int(batch_size)):
        x = inputs[start : start + int(batch_size)]
        x = x.to(device=device or x.device, dtype=dtype if dtype is not None else x.dtype)
        records, proj, out_proj, out_sq, dim = _contribution_projections(
            model, x, transform, selected, int(num_probes), probes, output_fn, gen, found
        )
        reduce = (lambda p: p.square().mean(0)) if probes == "gaussian" else (lambda p: p.square().sum(0))
        per_layer = [reduce(p) / dim for p in proj]  # b, per image
        remainder = reduce(out_proj - proj.sum(0)) / dim
        for r, est in list(zip(records, per_layer)) + [(None, remainder)]:
            key = "(unattributed)" if r is None else r.name
            if key not in sums:
                sums[key] = []
                order.append((key, "" if r is None else r.module, "" if r is None else r.kind))
            sums[key].append(est.detach().double().cpu())  # per image: the stderr from two passes
        out_lee_sum += float(out_sq.sum()) / dim
        n += x.shape[0]
    rows = []
    layers_only = [o for o in order if o[0] != "(unattributed)"]
    kinds = [k for _, _, k in layers_only]
    call_names = CallNames([n for n, _ in selected], model)
    is_pool = [is_pooling(modules[call_names.layer(nm)]) for nm, _, _ in layers_only]
    parts = assign_parts(kinds, is_pool) if layers_only else []
    per_image = {nm: torch.cat(v) for nm, v in sums.items()}
    total = sum(float(per_image[nm].mean()) for nm, _, _ in layers_only) or 1.0
    cumulative = 0.0
    for i, (nm, mod, kind) in enumerate(order):
        mean = float(per_image[nm].mean())
        var = float(per_image[nm].var(correction=1)) if n > 1 else 0.0
        attributed = nm != "(unattributed)"
        if attributed:
            cumulative += mean / total
        rows.append(
            dict(
                layer=nm,
                index=i if attributed else -1,
                part=parts[i] if attributed else "",
                module=mod,
                kind=kind if attributed else "",
                transform=transform.name,
                contribution=mean,
                stderr=math.sqrt(var / n),
                fraction=mean / total if attributed else float("nan"),
                cumulative=cumulative if attributed else float("nan"),
            )
        )
    df = pd.DataFrame(rows)
    df.attrs.update(
        output_lee=out_lee_sum / max(n, 1),
        num_samples=n,
        num_probes=int(num_probes) if probes == "gaussian" else dim,
        probes=probes,
        transform=transform.name,
        padding=transform.padding,
        seconds=time.perf_counter() - t0,
    )
    return df

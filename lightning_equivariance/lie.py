"""Lie derivatives of every layer with forward-mode AD: the ``lee`` measure and :func:`lie_derivative`.

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

The analysis of §5 (Eq. 5-6), how much each layer's own equivariance error contributes to
the output's, is :func:`lightning_equivariance.contributions.lie_derivative_contributions`.

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
import warnings
import weakref
from typing import Callable, Optional, Tuple, Union

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .functional.lie import lie_residual_rows, residual_fields
from .layers import eval_mode, first_tensor, output_layout, reading_of
from .layouts import Reading
from .metrics.base import LieContext, all_finite
from .transforms import TRANSFORMS, LieTransform, is_transform, resolve_transform

__all__ = [
    "LieTransform",
    "TRANSFORMS",
    "resolve_transform",
    "is_transform",
    "generator_like",
    "lie_derivative",
    "lie_pass",
    "layer_lie_context",
    "primal_of",
]

# ---------------------------------------------------------------------- generators on layer outputs
def _layout(t: torch.Tensor, layer: str, layout=None) -> Tuple[str, Optional[Reading]]:
    """``("map", reading)`` or ``("vector", None)``: how the generator acts on ``t``, by the engine's rule
    (:func:`~lightning_equivariance.layers.reading_of`; ``layout`` is the probe's decision for ``t``)."""
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
    """``tangent - generator_like(t)``: the Lie derivative at a layer output ``t`` with forward-mode tangent
    ``tangent``."""
    kind, reading = _layout(t, layer, layout)
    if kind == "vector":
        return tangent
    lie = transform.residual(reading.to_map(tangent), reading.to_map(t))
    return reading.from_map(lie, t, reading.prefix_part(tangent))


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

    Every layer of every chunk comes through here (issue 23: each ATen call is a kernel launch on a
    GPU), so the dual tensor is unpacked once, a map's Lie derivative is computed straight into the
    ``b x C x P`` rows of :class:`LieContext` from constants kept per (transform, grid)
    (:func:`_residual_rows`), and the finite check is one reduction per tensor (:func:`_finite_rows`).
    """
    raw = first_tensor(output)
    if raw is None:
        raise ValueError(f"layer {layer!r}: output of type {type(output).__name__} holds no tensor to measure")
    primal, tangent = _unpack(raw)
    kind, reading = _layout(primal, layer, layout)
    if kind == "vector":  # rho is the identity: the Lie derivative is the tangent
        primal_map, tangent_map = (primal, tangent) if reading is None else (reading.to_map(primal),
                                                                              reading.to_map(tangent))
        lie = tangent_map.reshape(tangent_map.shape[0], 1, -1)
        grid = None
    else:
        primal_map, tangent_map = reading.to_map(primal), reading.to_map(tangent)
        lie = _residual_rows(tangent_map, primal_map, transform)
        prefix = reading.prefix_part(tangent)  # class tokens: invariant, their Lie derivative is the tangent
        if prefix is not None:
            lie = torch.cat([lie, prefix], dim=2)
        # the grid the generator acts on: the folded map's (h, w)
        grid = tuple(primal_map.shape[-2:])
    finite = _finite_rows(primal_map, tangent_map)
    return LieContext(layer=layer, kind=kind, transform=transform, lie=lie, sample_mask=finite, grid=grid)


#: Per transform, the constants of its generator per (grid, dtype, device) (:func:`residual_fields`): they
#: live as long as the transform (one ``measure()`` call resolves its own), not for the whole process.
_FIELDS: "weakref.WeakKeyDictionary[LieTransform, dict]" = weakref.WeakKeyDictionary()


def _residual_rows(tangent_map: torch.Tensor, primal_map: torch.Tensor, transform: LieTransform) -> torch.Tensor:
    """``tangent - G primal`` of ``b x C x h x w`` maps as ``b x C x (h w)`` rows."""
    if transform.velocity is None:  # an intensity transform: G a = a
        return (tangent_map - primal_map).flatten(2)
    key = (tuple(primal_map.shape[-2:]), primal_map.dtype, primal_map.device)
    per_grid = _FIELDS.setdefault(transform, {})
    if key not in per_grid:
        per_grid[key] = residual_fields(transform.velocity, key[0], transform.padding, key[1], key[2])
    fields = per_grid[key]
    if fields is None:  # circular padding: the general form
        return transform.residual(tangent_map, primal_map).flatten(2)
    return lie_residual_rows(tangent_map, primal_map, fields)


def _finite_rows(primal: torch.Tensor, tangent: torch.Tensor) -> torch.Tensor:
    """Whether each image's ``primal`` and ``tangent`` (``b x ...``) hold only finite values, on the device.

    The largest magnitude of a row is finite exactly when every entry is (``inf`` shows in it, NaN
    propagates through the max), never overflows, and is one reduction without a temporary; the larger of
    the two tensors' is then compared once: four ATen calls where two :func:`all_finite` take thirteen.
    """
    if not primal.is_floating_point() or primal.dim() < 2 or math.prod(primal.shape[1:]) == 0:
        return all_finite(primal.flatten(1)) & all_finite(tangent.flatten(1))
    dims = tuple(range(1, primal.dim()))
    largest = torch.maximum(torch.linalg.vector_norm(primal, math.inf, dims),
                            torch.linalg.vector_norm(tangent, math.inf, dims))
    return largest < math.inf


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

    def run(z):
        return model(z) if output_fn is None else output_fn(model(z))

    with eval_mode(model):
        layout = output_layout(model, run, x)  # the output's layout on evidence (docs/measures.md §1.3)
    with eval_mode(model), fwAD.dual_level():
        out = forward_lie(run, x, transform)
        raw = first_tensor(out)
        primal, tangent = _unpack(raw)
        lie = lie_like(tangent, primal, transform, "output", layout)
        return lie.clone() if lie is tangent else lie  # outlive the dual level


# ---------------------------------------------------------------------- moved names
def __getattr__(name):
    """``lie_derivative_contributions`` moved to :mod:`lightning_equivariance.contributions` (issue 22); this
    deprecated alias keeps its former return value, the DataFrame (``report.to_dataframe()``), for one release."""
    if name != "lie_derivative_contributions":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        "lightning_equivariance.lie.lie_derivative_contributions moved to lightning_equivariance.contributions "
        "(also lightning_equivariance.lie_derivative_contributions), which returns a ContributionReport; "
        "call .to_dataframe() on it for this DataFrame. The lie.py alias goes in the next release.",
        DeprecationWarning,
        stacklevel=2,
    )
    # through the package's lazy table: contributions imports this module, so no import of it here
    import lightning_equivariance

    moved = lightning_equivariance.lie_derivative_contributions

    @functools.wraps(moved)
    def lie_derivative_contributions(*args, **kwargs):
        return moved(*args, **kwargs).to_dataframe()

    return lie_derivative_contributions

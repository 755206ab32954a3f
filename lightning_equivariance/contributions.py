"""Each layer's contribution to the output's equivariance error: Gruver et al. 2023 (ICLR) §4-5, Eq. 5-6.

An analysis tool beside :func:`~lightning_equivariance.measure` (whose ``lee`` measure is each
layer's own equivariance error, :mod:`lightning_equivariance.lie`): the chain rule splits the
output's Lie derivative over the layers (Eq. 6),

    L_X f = sum_i d f_{N:i+1} L_X f_i,

and :func:`lie_derivative_contributions` estimates each term's squared norm with Hutchinson
probes, returning a :class:`ContributionReport` (``to_dataframe()``, ``plot()``, as
:class:`~lightning_equivariance.report.MeasureReport`)::

    report = lie_derivative_contributions(model, x, "translation_x", num_probes=32)
    report.to_dataframe()   # one row per layer call, and "(unattributed)"
    report.plot()           # each layer's share, as a bar chart

The hooks are not :class:`~lightning_equivariance.layers.LayerHooks`'s: a layer's pre-hook runs the
module alone on dual copies of its inputs (its own Lie derivative) and its forward hook replaces
the output by ``output + eps`` (a zero leaf whose gradient is the rest of the network's vjp),
neither of which a probe callback can do; they name the calls with the probe's
:class:`~lightning_equivariance.layers.CallNames` and read outputs with its ``first_tensor``.
The engine does not import this module.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from .engine import _has_tensors, _model_device_dtype
from .layers import CallNames, LayerSpec, Layouts, discover_layouts, eval_mode, first_tensor, is_pooling, select_layers
from .lie import (
    _layout,
    _load_jvp_decompositions,
    _one_thread_at_a_time,
    _unpack,
    forward_mode_friendly,
    generator_like,
    lie_derivative,
    lie_like,
)
from .report import assign_parts
from .transforms import LieTransform, resolve_transform

__all__ = ["ContributionRow", "ContributionReport", "lie_derivative_contributions"]

#: the row of what no selected layer accounts for
UNATTRIBUTED = "(unattributed)"


@dataclass(frozen=True)
class ContributionRow:
    """One layer call's contribution (or the ``"(unattributed)"`` remainder); the columns of
    :meth:`ContributionReport.to_dataframe`, in order."""

    layer: str
    index: int
    part: str
    module: str
    kind: str
    transform: str
    contribution: float
    stderr: float
    fraction: float
    cumulative: float


@dataclass(frozen=True)
class ContributionReport:
    """What :func:`lie_derivative_contributions` returns.

    Attributes:
        rows: one :class:`ContributionRow` per layer call in forward order, then ``"(unattributed)"``.
        output_lee: the exact LEE of the output, ``E_x ||L_X f||^2 / dim(output)``.
        num_samples: images measured.
        num_probes: probes per image (``dim(output)`` with ``probes="basis"``).
        probes: ``"gaussian"`` or ``"basis"``.
        transform: the transform's name.
        padding: the transform's padding.
        seconds: wall time.
    """

    rows: Tuple[ContributionRow, ...]
    output_lee: float
    num_samples: int
    num_probes: int
    probes: str
    transform: str
    padding: str
    seconds: float

    def to_dataframe(self):
        """A ``pandas.DataFrame``, one row per :attr:`rows` entry, with columns ``layer, index, part, module,
        kind, transform, contribution, stderr, fraction, cumulative``; ``df.attrs`` holds the other fields
        (``output_lee``, ``num_samples``, ``num_probes``, ``probes``, ``transform``, ``padding``, ``seconds``)."""
        import pandas as pd

        df = pd.DataFrame([asdict(r) for r in self.rows])
        df.attrs.update({f.name: getattr(self, f.name) for f in fields(self) if f.name != "rows"})  # in field order
        return df

    def plot(self, ax=None):
        """Each layer's share of the summed contributions as a bar chart, the unattributed remainder
        in grey, standard errors as error bars; returns ``(fig, ax)``. Needs matplotlib. Drawn by
        :func:`lightning_equivariance.figures.plot_contributions`."""
        from .figures import plot_contributions

        return plot_contributions(self, ax=ax)


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
    if hasattr(output, "tensor") and isinstance(output.tensor, torch.Tensor):  # e2cnn GeometricTensor
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
) -> ContributionReport:
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
        layers: see :func:`~lightning_equivariance.layers.select_layers`.
        batch_size: images per forward (the graph of a chunk is kept for the probes).
        probes: ``"gaussian"`` (Hutchinson) or ``"basis"``: the output's standard basis,
            ``dim(output)`` vjps, exact norms (for small outputs).
        output_fn: applied to the model's output, e.g. ``lambda y: y.softmax(-1)`` (the
            reference code measures the softmax).
        seed: seed of the probes (``None``: torch's global generator).
        layouts: ``{layer: "channels_first" | "channels_last" | "tokens" | "tokens_transposed"}`` overrides of
            the layouts the probe infers (:func:`~lightning_equivariance.layers.discover_layouts`).

    Returns:
        a :class:`ContributionReport`; its ``to_dataframe()`` has one row per layer call in
        forward order, with columns ``layer, index, part, module, kind, transform, contribution,
        stderr, fraction, cumulative``: ``contribution = E_x ||d f_{N:i+1} L_X f_i||^2 / dim(output)`` (the
        units of the output's LEE), ``stderr`` its standard error over images,
        ``fraction`` its share of the total and ``cumulative`` the running share (the
        paper's Figure 4). A last row ``"(unattributed)"`` estimates
        ``||L_X f - sum_i d f_{N:i+1} L_X f_i||^2 / dim``: the error of operations outside
        the selected layers (functional ops, e.g. a positional embedding added in a
        container's ``forward``); it is 0 up to round-off when every non-equivariant
        operation is a selected layer. The report's ``output_lee`` is the exact LEE of
        the output (also in ``df.attrs``, with ``num_samples``, ``num_probes``, ``transform`` and
        ``padding``).
    """
    transform = resolve_transform(transform)
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
        raise ValueError("inputs must be a tensor of images N x C x H x W")
    if probes not in ("gaussian", "basis"):
        raise ValueError(f"probes must be 'gaussian' or 'basis', got {probes!r}")
    if probes == "gaussian" and int(num_probes) < 1:
        raise ValueError(f"num_probes must be >= 1, got {num_probes}")
    selected = select_layers(model, layers)
    modules = dict(selected)
    # the engine's look-up; a model without parameters or buffers measures where the images are
    device, dtype = _model_device_dtype(model) if _has_tensors(model) else (None, None)
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
            key = UNATTRIBUTED if r is None else r.name
            if key not in sums:
                sums[key] = []
                order.append((key, "" if r is None else r.module, "" if r is None else r.kind))
            sums[key].append(est.detach().double().cpu())  # per image: the stderr from two passes
        out_lee_sum += float(out_sq.sum()) / dim
        n += x.shape[0]
    rows: List[ContributionRow] = []
    layers_only = [o for o in order if o[0] != UNATTRIBUTED]
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
        attributed = nm != UNATTRIBUTED
        if attributed:
            cumulative += mean / total
        rows.append(
            ContributionRow(
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
    return ContributionReport(
        rows=tuple(rows),
        output_lee=out_lee_sum / max(n, 1),
        num_samples=n,
        num_probes=int(num_probes) if probes == "gaussian" else dim,
        probes=probes,
        transform=transform.name,
        padding=transform.padding,
        seconds=time.perf_counter() - t0,
    )

"""The passes a measurement runs over a chunk of probe images: one small class per kind of pass.

A pass runs the model over a :class:`Chunk` with the layers hooked (a :class:`~.probe.LayerHooks`)
and, inside each layer's hook, turns the layer's output into one context per group (or
transform) and pushes it into a :class:`LayerSink` - the engine, which owns the metrics and
the bookkeeping. Nothing a pass computes outlives its hook (only the small hand-off of one
layer to the next), so memory stays flat in the number of probe images.

- :class:`StackedPass`: one forward over ``[x, T_{g_1} x, ..., T_{g_m} x]`` of every discrete
  group (the identity once); a :class:`~.metrics.base.LayerContext` per group.
- :class:`ForwardModePass`: one forward-mode pass per continuous transform (:mod:`.lie`);
  a :class:`~.metrics.base.LieContext`.

Which measure runs in which pass is the measure's own declaration (``LayerMetric.pass_kind``);
:func:`plan_passes` reads it, so that the engine runs every pass alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Protocol, Sequence, Tuple

import torch
from torch import nn

from .groups import Group
from .layers import Activation, LayerHooks
from .lie import layer_lie_context, lie_pass, outside_torch_function_modes, primal_of
from .metrics import MEASURES
from .metrics.base import FORWARD_MODE, LayerContext, all_finite
from .metrics.shared import Handoff, JointWork
from .transforms import split_groups

__all__ = ["Chunk", "LayerSink", "Pass", "StackedPass", "ForwardModePass", "plan_passes"]


@dataclass(frozen=True)
class Chunk:
    """One chunk of probe images, as every pass over it sees it.

    Attributes:
        images: ``b x C x H x W`` on the model's device and dtype.
        positions: ``b`` int64 global probe positions (they pair images and name left-out ones).
        finite: ``b`` booleans: the input image holds only finite values.
        partner: ``b`` int64 local indices of each image's chance-level partner (``-1``: none in the
            chunk), or ``None`` without a chance level.
    """

    images: torch.Tensor
    positions: torch.Tensor
    finite: torch.Tensor
    partner: Optional[torch.Tensor] = None
    #: the chunk only creates metrics (:meth:`Pass.prepare`): no image is counted, so nothing is checked
    creates_only: bool = False

    @property
    def size(self) -> int:
        return int(self.images.shape[0])

    @property
    def input_size(self) -> Tuple[int, int]:
        return tuple(self.images.shape[-2:])

    def first(self) -> "Chunk":
        """The first image alone, without a partner (what creates every layer's metrics)."""
        partner = None if self.partner is None else torch.full_like(self.positions[:1], -1)
        return Chunk(self.images[:1], self.positions[:1], self.finite[:1], partner, creates_only=True)


class LayerSink(Protocol):
    """What a pass pushes its layers into (the engine implements it). ``sources`` are the pass's
    groups or transforms (anything with a ``name``); ``measures`` the names of the pass's measures."""

    def pending(self, layer: str, sources: Sequence[Any], measures: Sequence[str]) -> List[Any]:
        """The layer was called: the sources that still have one of ``measures`` to run on it."""

    def read(self, layer: str, output: Any, batch: int) -> Activation:
        """The layer's output read in its layout, checked to hold ``batch`` rows (raises naming the layer)."""

    def layout(self, layer: str) -> Optional[str]:
        """The layer's decided layout (or the reason it is refused), ``None`` when not decided."""

    def describe(self, layer: str, output: Any) -> Tuple[Optional[nn.Module], Any]:
        """The layer's module (``None`` for the model's output) and its declared channel action, if any."""

    def finite_images(self, layer: str, kept: torch.Tensor, chunk: Chunk) -> None:
        """``kept``: ``b`` booleans on the device, the chunk's images whose values at the layer are finite (the
        others are left out of the layer: docs/measures.md §1.7)."""

    def receive(self, layer: str, output: Any, source: Any, measures: Sequence[str], ctx: Any) -> None:
        """Update the layer's metrics of ``measures`` for ``source`` with ``ctx`` (``output``: the hooked one)."""

    def failed(self, layer: str, output: Any, sources: Sequence[Any], measures: Sequence[str],
               error: Exception) -> None:
        """Record (or raise) ``error`` for every ``(layer, measure, source)``."""


class Pass:
    """A pass over a chunk: ``sources`` (groups or transforms) and the ``measures`` it feeds."""

    sources: List[Any]
    measures: List[str]

    def run(self, model: nn.Module, probe: LayerHooks, chunk: Chunk, sink: LayerSink) -> None:
        raise NotImplementedError

    def prepare(self, model: nn.Module, probe: LayerHooks, chunk: Chunk, sink: LayerSink) -> None:
        """Before the first chunk, with the sink only creating metrics: run over the chunk's first image, so
        that every layer's states exist before the first full chunk (the peak memory of a measurement is
        then reached in its first chunk, and layer errors show early)."""
        self.run(model, probe, chunk.first(), sink)


class StackedPass(Pass):
    """One forward over the chunk's images and their transformed copies under every group.

    Each layer's output ``(1 + sum_g m_g) b x ...`` is split into ``a(x)`` and, per group, ``a(T_g x)``;
    an image whose input or any view's activation holds NaN or Inf is left out of the layer
    (docs/measures.md §1.7), by a mask that stays on the device. A layer whose input is exactly the
    previous measured layer's output (the same tensor, not changed in place since) receives that
    layer's :class:`~.metrics.shared.Handoff`.
    """

    def __init__(self, groups: Sequence[Group], measures: Sequence[str]):
        self.sources = list(groups)
        self.measures = list(measures)
        #: images x views per forward: the image itself and each group element's copy
        self.views = 1 + sum(len(g) for g in self.sources)
        # what the groups' joint work keeps per layer shape (JointWork), for every layer and chunk
        self._joint_constants: Dict[Any, Any] = {}
        # (output, its version, {group name: hand-off}) of the last layer measured in this forward
        self._previous: Optional[Tuple[torch.Tensor, Optional[int], Dict[str, Handoff]]] = None

    def stack(self, x: torch.Tensor) -> torch.Tensor:
        """``[x, T_{g_1} x, ..., T_{g_m} x]`` over the elements of every group, along the batch axis."""
        views = [x]
        for g in self.sources:
            views += [g.act_input(x, e) for e in g.elements]
        return torch.cat(views)

    def run(self, model: nn.Module, probe: LayerHooks, chunk: Chunk, sink: LayerSink) -> None:
        self._previous = None
        try:
            with probe.calling(lambda name, output, inputs: self._on_output(name, output, inputs, chunk, sink)):
                model(self.stack(chunk.images))
        finally:
            self._previous = None  # drop the last output

    def _on_output(self, name: str, output, inputs, chunk: Chunk, sink: LayerSink) -> None:
        previous, self._previous = self._previous, None
        groups = sink.pending(name, self.sources, self.measures)
        if not groups:
            return
        try:
            act = sink.read(name, output, self.views * chunk.size)
        except Exception as e:  # noqa: BLE001 - recorded with the layer's name
            return sink.failed(name, output, groups, self.measures, e)
        t = act.tensor
        stacked = t.reshape(self.views, chunk.size, *t.shape[1:])
        # The activations are handed on as they are: every measure leaves the masked images out with
        # torch.where wherever it sums (LayerContext.sample_mask), so zeroing them here first would only
        # copy every layer's output once more.
        if chunk.creates_only:  # nothing is counted: no finite check (issue 23's fixed calls)
            ok = chunk.finite
        else:
            ok = _finite_images(stacked) & chunk.finite
            sink.finite_images(name, ok, chunk)
        handoffs = _handoffs(previous, inputs)
        module, channel_action = sink.describe(name, output)
        contexts = []
        start = 1
        for group in self.sources:
            first, start = start, start + len(group)  # this group's elements: views first .. start - 1
            a_gx = stacked[first:start]
            if group not in groups:
                continue
            try:
                if act.kind == "map":
                    group.check_feature(tuple(t.shape[1:]), name)
                ctx = LayerContext(
                    layer=name,
                    kind=act.kind,
                    group=group,
                    elements=group.elements,
                    a_x=stacked[0],
                    a_gx=a_gx,
                    input_size=chunk.input_size,
                    channel_action=channel_action,
                    sample_mask=ok,
                    partner=chunk.partner,
                    module=module,
                    previous=handoffs.get(group.name),
                )
            except Exception as e:  # noqa: BLE001 - this group's action is undefined on the layer
                sink.failed(name, output, [group], self.measures, e)
                continue
            contexts.append((ctx, first - 1))  # (its first element among a(T_g x) of every group)
        if len(contexts) > 1:  # what the groups may compute once for all their elements
            joint = JointWork(stacked[1:], contexts, self._joint_constants)
            for ctx, _ in contexts:
                ctx.joint = joint
        offered = {}
        for ctx, _ in contexts:
            sink.receive(name, output, ctx.group, self.measures, ctx)
            offered[ctx.group.name] = ctx.work.handoff()
        if isinstance(output, torch.Tensor):
            self._previous = (output, _version_of(output), {g: h for g, h in offered.items() if h is not None})


class ForwardModePass(Pass):
    """One forward-mode pass of the chunk's images with the tangent ``G_0 x`` of one continuous
    transform (:func:`~.lie.lie_pass`); each layer's dual output becomes a Lie derivative
    (:func:`~.lie.layer_lie_context`)."""

    def __init__(self, transform: Any, measures: Sequence[str]):
        self.transform = transform
        self.sources = [transform]
        self.measures = list(measures)

    def run(self, model: nn.Module, probe: LayerHooks, chunk: Chunk, sink: LayerSink) -> None:
        with probe.calling(lambda name, output, inputs: self._on_output(name, output, chunk, sink)):
            lie_pass(model, chunk.images, self.transform)

    def prepare(self, model: nn.Module, probe: LayerHooks, chunk: Chunk, sink: LayerSink) -> None:
        """Nothing: a forward-mode measure's states are a few numbers per channel, so creating them in the
        first chunk's pass does not move the peak memory (the dual activations do), and a forward-mode pass
        of one image would cost a forward's ATen calls per layer for nothing (issue 23's fixed budget)."""

    def _on_output(self, name: str, output, chunk: Chunk, sink: LayerSink) -> None:
        if not sink.pending(name, self.sources, self.measures):
            return
        with outside_torch_function_modes():  # the measures' own ops at eager speed (lie.py)
            try:
                sink.read(name, primal_of(output), chunk.size)
                ctx = layer_lie_context(name, output, self.transform, sink.layout(name))
            except Exception as e:  # noqa: BLE001 - recorded with the layer's name
                return sink.failed(name, output, self.sources, self.measures, e)
            ctx.input_size = chunk.input_size
            ctx.sample_mask = ctx.sample_mask & chunk.finite  # the measures leave these out with torch.where
            if not chunk.creates_only:
                sink.finite_images(name, ctx.sample_mask, chunk)
            sink.receive(name, output, self.transform, self.measures, ctx)


def plan_passes(measures: Sequence[str], groups: Sequence[Any]) -> Tuple[List[Pass], List[Group], List[Any]]:
    """The passes that feed ``measures`` under ``groups``: one stacked pass over the discrete groups for
    the measures that declare it, one forward-mode pass per continuous transform for the others
    (``LayerMetric.pass_kind``). Returns ``(passes, discrete groups, continuous transforms)``."""
    forward = [m for m in measures if MEASURES[m].pass_kind == FORWARD_MODE]
    stacked = [m for m in measures if m not in forward]
    discrete, transforms = split_groups(groups, bool(forward), bool(stacked))
    passes: List[Pass] = [StackedPass(discrete, stacked)] if stacked and discrete else []
    passes += [ForwardModePass(t, forward) for t in transforms]
    return passes, discrete, transforms


def _finite_images(stacked: torch.Tensor) -> torch.Tensor:
    """Whether every view of each image is finite, for ``views x b x ...`` activations:
    ``all_finite(stacked.flatten(2)).all(0)``.

    As :func:`~.metrics.base.all_finite` (each image's max and min over all its views and values), with
    the test in three calls: ``min - min == max - max`` holds exactly when both are finite (``x - x`` is
    0 for a finite ``x`` and NaN for ``±inf`` or NaN, and NaN equals nothing). The max and min reduce
    over the views and the values at once, where they lie (channels-last and tokens are not copied into
    rows first). Not ``aminmax``: on this CPU build it was 15-20x slower than ``amax`` and ``amin`` one
    after the other (9.8 ms against 0.55 ms for 16 MB, one thread), a tenth of a measurement's time.
    """
    if stacked.dim() < 3 or not stacked.is_floating_point() or 0 in stacked.shape[2:]:
        return all_finite(stacked.flatten(2)).all(0)
    rest = (0, *range(2, stacked.dim()))
    mx, mn = stacked.amax(rest), stacked.amin(rest)
    return (mn - mn) == (mx - mx)


def _handoffs(previous, inputs) -> dict:
    """The previous measured layer's hand-offs per group, when this layer's input is that layer's output:
    the same tensor object, not changed in place since (its version counter)."""
    if previous is None or not inputs or inputs[0] is not previous[0]:
        return {}
    return previous[2] if previous[1] is not None and _version_of(inputs[0]) == previous[1] else {}


def _version_of(t: torch.Tensor) -> Optional[int]:
    """The tensor's in-place version counter (``None`` for inference tensors, which have none)."""
    try:
        return t._version
    except RuntimeError:
        return None

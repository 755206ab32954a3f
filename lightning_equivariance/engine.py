"""The measurement engine: every selected layer, every measure, one stacked pass.

For each chunk of probe images ``x`` the engine runs its passes (:mod:`lightning_equivariance.passes`):
the stacked pass builds one batch ``[x, T_{g_1} x, ..., T_{g_m} x]`` over the elements of *all*
groups (the identity once) and runs a single forward under ``torch.no_grad`` with hooks on the
selected layers; forward-mode measures get one forward-mode pass per continuous transform. Each
pass pushes every layer's context into the engine (a :class:`~lightning_equivariance.passes.LayerSink`),
which feeds it straight into the measures' sum states inside the hook, so nothing per-image is kept
and memory does not grow with the number of probe images. Before the first chunk, one image runs
every pass only to create every layer's states, so the peak memory of a measurement is reached in
its first chunk and layer errors show early.

:func:`measure` is the one-call entry point; :class:`Measurement` is the same thing
split into ``update`` / ``compute`` / ``reset`` (what the Lightning callback uses, one
shard per process, states synced by torchmetrics).
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .deferred import DeferredWork
from .functional.scratch import reusing_scratch
from .groups import ChannelAction, Group, GroupActionError
from .layers import (
    OUTPUT,
    CallNames,
    LayerHooks,
    LayerSpec,
    as_activation,
    check_layout_overrides,
    display_name,
    is_pooling,
    qualified_names,
    select_layers,
    selects_output,
    wrapped_child_prefix,
)
from .metrics import DEFAULT_MEASURES, MEASURES, LayerMetric
from .metrics.base import LayerContext, LayerDetails, NonFiniteImages, all_finite, metric_on
from .passes import Chunk, StackedPass, plan_passes
from .probe_set import iter_images
from .progress import progress
from .report import PARTS, LayerResult, MeasureReport, assign_parts
from .steerable import e2cnn_channel_action, field_type_of, patch_e2cnn
from .transforms import LieTransform

__all__ = ["measure", "Measurement", "MeasureReport", "LayerResult", "MeasureError", "LayerNames", "PARTS"]

class MeasureError(RuntimeError):
    """Measuring a layer failed; the message names the layer and the shape."""


@dataclass
class LayerInfo:
    name: str
    index: int
    kind: str
    shape: Tuple[int, ...]
    is_pool: bool = False
    part: str = ""
    layout: str = "channels_first"


def _model_device_dtype(model: nn.Module) -> Tuple[torch.device, Optional[torch.dtype]]:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device, (t.dtype if t.is_floating_point() else None)
    return torch.device("cpu"), None


class Measurement:
    """Streaming measurement of a model: ``update(images)`` any number of times, then ``compute()``.

    Args:
        model: any ``torch.nn.Module`` taking ``B x C x H x W`` images.
        measures: names from :data:`lightning_equivariance.metrics.MEASURES` (default
            :data:`~lightning_equivariance.metrics.DEFAULT_MEASURES`; see ``docs/measures.md``).
        groups: :class:`~lightning_equivariance.groups.Group` instances or names.
        layers: see :func:`~lightning_equivariance.layers.select_layers` (default ``"auto"``); ``"auto"``
            and the name ``"(output)"`` also measure the model's own output as the layer ``"(output)"``
            where no selected module returns it (docs/layers.md).
        batch_size: images per forward, transformed copies included (bounds memory).
        similarity: ``"pearson"`` (default) or ``"cosine"`` for the correlation measures: an alias
            of ``measure_options={"similarity": ...}``.
        measure_options: the measures' own options, one mapping handed to every measure's
            ``for_layer`` (each measure takes the ones it knows, e.g. ``similarity``,
            ``include_identity``, ``distance``, ``geed_max_points``).
        channel_actions: ``{layer_name: channel_action}`` declared by the architecture.
        steerable_actions: use the field type's representation of e2cnn ``GeometricTensor``
            outputs as their channel action (see :mod:`lightning_equivariance.steerable`);
            ``False`` measures them like plain maps.
        layouts: ``{layer_name: "channels_first" | "channels_last" | "tokens" | "tokens_transposed"}``:
            how to read a layer, overriding what :func:`~lightning_equivariance.layers.discover_layouts`
            finds on evidence (the provenance of its output, docs/measures.md §1.3).
        chance: compute the chance level of the measures that have one (docs/measures.md §7): each
            image at global probe position ``2k`` is paired with ``2k + 1``; ``False`` saves that cost.
        on_error: ``"warn"`` (default): a (layer, measure, group) that cannot be measured is
            recorded with its reason in ``report.errors`` and the rest is measured, with one
            summary warning; ``"raise"``: stop at the first failure with an error.
        progress: show a progress bar over the chunks (tqdm).
        device: where to measure; must be the model's device (images are moved there).
    """

    def __init__(
        self,
        model: nn.Module,
        measures: Sequence[str] = DEFAULT_MEASURES,
        groups: Sequence[Union[str, Group]] = ("rotation90",),
        layers: LayerSpec = "auto",
        batch_size: int = 256,
        similarity: Optional[str] = None,
        measure_options: Optional[Mapping[str, Any]] = None,
        channel_actions: Optional[Mapping[str, ChannelAction]] = None,
        steerable_actions: bool = True,
        layouts: Optional[Mapping[str, str]] = None,
        chance: bool = True,
        on_error: str = "warn",
        progress: bool = False,
        device: Optional[Union[str, torch.device]] = None,
    ):
        if "e2cnn" in sys.modules:
            patch_e2cnn()  # e2cnn's bases hash with ndarray.tostring, gone in NumPy 2.3 (steerable.py)
        if isinstance(measures, str):
            measures = (measures,)
        unknown = [m for m in measures if m not in MEASURES]
        if unknown or not measures:
            raise ValueError(f"unknown measure(s) {unknown}: choose from {sorted(MEASURES)}")
        if len(set(measures)) != len(measures):
            raise ValueError(f"measures has duplicates: {list(measures)}; name each measure once")
        if isinstance(groups, (str, Group, LieTransform)):
            groups = (groups,)
        # Each measure declares its pass (passes.py): one stacked pass over the discrete groups, one
        # forward-mode pass per continuous transform.
        self.passes, self.groups, self.transforms = plan_passes(measures, groups)
        names = [g.name for g in self.groups + self.transforms]
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"groups need distinct names, got {names}; pass name=... to tell them apart")
        if on_error not in ("raise", "warn"):
            raise ValueError(f"on_error must be 'raise' or 'warn', got {on_error!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        model_device, _ = _model_device_dtype(model)
        if device is not None and _has_tensors(model) and not _same_device(torch.device(device), model_device):
            raise ValueError(
                f"device={str(device)!r} but the model's parameters are on {model_device}; measure where the "
                f"model is (drop device=) or move the model first: model.to({str(device)!r})"
            )
        self.model = model
        self.measures = list(measures)
        self.layers = select_layers(model, layers)
        #: measure the model's own output as the layer "(output)" (docs/layers.md)
        self.measure_output = selects_output(layers)
        self.layout_overrides = check_layout_overrides(
            layouts, [n for n, _ in self.layers] + ([OUTPUT] if self.measure_output else []), model
        )
        self._modules_by_name = dict(self.layers)
        self._call_names = CallNames([n for n, _ in self.layers], model)  # what LayerHooks names each call
        self.batch_size = int(batch_size)
        self.options = dict(measure_options or {})
        if similarity is not None:  # a documented alias of measure_options={"similarity": ...}
            if self.options.get("similarity", similarity) != similarity:
                raise ValueError(f"similarity={similarity!r} contradicts "
                                 f"measure_options['similarity']={self.options['similarity']!r}")
            self.options["similarity"] = similarity
        self.channel_actions = dict(channel_actions or {})
        self.steerable_actions = bool(steerable_actions)
        self._actions: Dict[str, ChannelAction] = {}  # of the e2cnn layers, built once
        self.on_error = on_error
        self.progress = progress
        self.device = torch.device(device) if device is not None else None
        self.num_elements = 1 + sum(len(g) for g in self.groups)
        self.chance = bool(chance)
        _warn_batch_cost(self.batch_size, self.num_elements, self.samples_per_forward, stacklevel=2)
        #: ``{layer: layout or refusal reason}`` of the 4-D outputs, decided at the first update.
        self.layouts: Optional[Dict[str, str]] = None
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget all accumulated states (layers are re-discovered on the next update)."""
        self.metrics: Dict[Tuple[str, str, str], LayerMetric] = {}
        self.infos: Dict[str, LayerInfo] = {}
        self.errors: Dict[Tuple[str, str, str], str] = {}
        self.notes: Dict[Tuple[str, str, str], str] = {}
        #: images left out for non-finite values: per layer, and ``"(input)"`` for the inputs
        self.non_finite_images: Dict[str, NonFiniteImages] = {}
        self.num_samples = 0
        self.seconds = 0.0
        self._next_position = 0  # the default global position of the next image fed
        self._called: set = set()
        self._output_produced_by: Optional[str] = None  # the layer whose output is the model's output
        # the first image's passes only create every layer's metrics (see _run)
        self._allocating = False
        # the chunk's deferred bookkeeping (deferred.py), run after each pass
        self._deferred = DeferredWork()
        self._allocated = False

    @property
    def images_left_out(self) -> Dict[str, NonFiniteImages]:
        """Deprecated name of :attr:`non_finite_images` (issue 22); goes in the next release."""
        warnings.warn("Measurement.images_left_out is now Measurement.non_finite_images; the old name goes in the "
                      "next release", DeprecationWarning, stacklevel=2)
        return self.non_finite_images

    def state_keys(self) -> List[Tuple[str, ...]]:
        """The keys of every state that ``compute()`` syncs across processes (metrics and left-out images)."""
        return sorted(self.metrics) + sorted(("(images)", k) for k in self.non_finite_images)

    def keep_only(self, keys, reason: str) -> None:
        """Drop the states whose keys are not in ``keys`` (e.g. not measured on every process), recording ``reason``."""
        keys = set(keys)
        for key in [k for k in self.metrics if k not in keys]:
            self._fail([key], f"layer {key[0]!r}: {reason}")
        for layer in [k for k in self.non_finite_images if ("(images)", k) not in keys]:
            del self.non_finite_images[layer]

    def agree(self, collectives, ok: bool = True) -> bool:
        """Agree with the other processes before ``compute()`` (which syncs every state it holds).

        ``collectives.all_gather_object(obj)`` returns every process's ``obj`` (the callback
        passes the strategy's). Each process offers its state keys, or ``None`` when its
        update failed (``ok=False``); returns ``False`` when some process failed, else keeps
        only the states every process has (a layer measured on one process only is recorded
        as an error) and returns ``True``. Every process must call it.
        """
        gathered = collectives.all_gather_object(self.state_keys() if ok else None)
        if any(keys is None for keys in gathered):
            return False
        common = set(map(tuple, gathered[0])).intersection(*(set(map(tuple, k)) for k in gathered[1:]))
        self.keep_only(common, "could not be measured on every process")
        return True

    def _fail(self, keys, msg: str) -> None:
        for key in keys:
            self.errors.setdefault(key, msg)
            self.metrics.pop(key, None)

    def _failure(self, e: Exception, name: str, output, keys, shape: Optional[str] = None) -> None:
        """Record ``e`` for ``keys`` of layer ``name``, or raise it (``on_error="raise"``); ``shape``: the
        output's shape already written out (:func:`_shape_of`), when ``output`` is gone."""
        msg = str(e) if name in str(e) else f"layer {name!r} (output {shape or _shape_of(output)}): {e}"
        if self.on_error == "raise":
            named = isinstance(e, (GroupActionError, MeasureError)) and name in str(e)
            raise (e if named else MeasureError(msg)) from e
        self._fail(keys, msg)

    def _keys(self, name: str, groups, measures) -> List[Tuple[str, str, str]]:
        return [(name, m, g.name) for g in groups for m in measures]

    def _channel_action(self, name: str, output) -> Optional[ChannelAction]:
        """The layer's declared channel action: the user's, else an e2cnn field type's representation."""
        if name in self.channel_actions:
            return self.channel_actions[name]
        if not self.steerable_actions:
            return None
        field_type = field_type_of(output)
        if field_type is None:
            return None
        if name not in self._actions:
            self._actions[name] = e2cnn_channel_action(field_type)
        return self._actions[name]

    @property
    def samples_per_forward(self) -> int:
        """Probe images per forward; even with the chance level, so that pairs ``2k, 2k + 1`` share chunks."""
        n = max(1, self.batch_size // self.num_elements)
        return max(2, n - n % 2) if self.chance else n

    def _stack(self, x: torch.Tensor) -> torch.Tensor:
        """The stacked views of ``x`` one forward of the measurement runs (what benchmarks time)."""
        return StackedPass(self.groups, []).stack(x)

    def _activation(self, name: str, output, expected: int):
        try:
            act = as_activation(output, name, (self.layouts or {}).get(name))
        except Exception:
            if name not in self.infos:  # keep its place in depth order (the report lists it as refused)
                self.infos[name] = LayerInfo(name, len(self.infos), "refused", (), False, layout="refused")
            raise
        t = act.tensor
        if t.shape[0] != expected:
            raise MeasureError(
                f"layer {name!r}: output batch dimension {t.shape[0]} is not the input batch "
                f"{expected}; only layers that keep the batch axis first can be measured (windows or "
                "heads folded into the batch axis are not maps of the image grid)"
            )
        if name not in self.infos:
            module = self._module_of(name)
            is_pool = module is not None and is_pooling(module)
            self.infos[name] = LayerInfo(name, len(self.infos), act.kind, tuple(t.shape[1:]), is_pool,
                                         layout=act.layout)
        return act

    def _module_of(self, name: str) -> Optional[nn.Module]:
        """The module of a layer call name; ``None`` for the model's output, which no module computes alone."""
        return None if name == OUTPUT else self._modules_by_name[self._call_names.layer(name)]

    # ------------------------------------------------------------------ the passes' sink (passes.LayerSink)
    def pending(self, layer: str, sources, measures) -> list:
        """The layer was called: the sources that still have one of ``measures`` to run on it."""
        self._called.add(layer)
        return [s for s in sources
                if not all(k in self.errors or k in self.notes for k in self._keys(layer, [s], measures))]

    def read(self, layer: str, output, batch: int):
        """The layer's output read in its layout, checked to hold ``batch`` rows; records the layer's facts."""
        return self._activation(layer, output, batch)

    def layout(self, layer: str) -> Optional[str]:
        return (self.layouts or {}).get(layer)

    def describe(self, layer: str, output):
        return self._module_of(layer), self._channel_action(layer, output)

    def finite_images(self, layer: str, kept: torch.Tensor, chunk: Chunk) -> None:
        """Record the chunk's images that are not finite at ``layer`` (``"(input)"``: in the inputs)."""
        if layer not in self.non_finite_images:
            self.non_finite_images[layer] = metric_on(kept.device, NonFiniteImages)
        self.non_finite_images[layer].update(chunk.positions, ~kept)

    def receive(self, layer: str, output, source, measures, ctx) -> None:
        for key in self._keys(layer, [source], measures):
            if key in self.notes or key in self.errors:
                continue
            try:
                metric = self.metrics.get(key)
                if metric is None:
                    # A measure undefined on this kind of layer says why; skip it here, keep the rest.
                    reason = MEASURES[key[1]].not_applicable(ctx, **self.options)
                    if reason:
                        self.notes[key] = reason
                        continue
                    metric = self.metrics[key] = MEASURES[key[1]].for_layer(ctx, **self.options)
                if not self._allocating:
                    if isinstance(ctx, LayerContext):
                        # (the output's shape, not the output: that would live till the end of the chunk)
                        ctx.deferred = self._deferred
                        self._deferred.owner = (layer, key, _shape_of(output))
                    metric.update(ctx)
            except Exception as e:  # noqa: BLE001 - this measure fails here, the others go on
                self._failure(e, layer, output, [key])

    def failed(self, layer: str, output, sources, measures, error: Exception) -> None:
        self._failure(error, layer, output, self._keys(layer, sources, measures))

    def _run_deferred(self) -> None:
        """Run what the measures of the chunk's layers deferred; an item that fails costs only its own
        ``(layer, measure, group)``, recorded as if its update had failed."""
        self._deferred.owner = None
        for (layer, key, shape), error in self._deferred.run():
            if key not in self.errors:
                self._failure(error, layer, None, [key], shape=shape)

    @contextlib.contextmanager
    def _discovering(self, probe: LayerHooks, x: torch.Tensor):
        """Decide every layer's layout once, before the first forward: the probe runs one forward of six
        images with the provenance followed (docs/measures.md §1.3) and fills :attr:`layouts`."""
        if self.layouts is not None:
            yield
            return
        self.layouts = {}
        try:
            with probe.discovering(x, self.layout_overrides, self.layouts):
                yield
        except Exception as e:
            self.layouts = None
            expected = _expected_channels(self.model)
            ours = isinstance(e, (MeasureError, GroupActionError))
            if expected is not None and expected[1] != x.shape[1] and not ours:
                raise ValueError(
                    f"probe images of shape {tuple(x.shape)} have {x.shape[1]} channel(s), but the model's first "
                    f"convolution {expected[0]!r} takes {expected[1]}: give images with {expected[1]} channel(s) "
                    f"(the model failed with {type(e).__name__}: {e})"
                ) from e
            raise

    def _positioned(self, inputs, positions: Optional[Sequence[int]]) -> Iterator[Tuple[torch.Tensor, List[int]]]:
        """``(images, global positions)`` in chunks of at most :attr:`samples_per_forward` (even with the
        chance level) that start at even positions, so that pairs ``2k, 2k + 1`` never cross chunks;
        an update that starts at an odd position measures its first image alone (its partner was
        in the previous update: feed even-sized updates, or one update per process, to keep it)."""
        size = self.samples_per_forward
        fed, buffered, buffered_pos = 0, [], []
        for x in iter_images(inputs, size):
            if x.dim() != 4:
                raise ValueError(f"probe images must be B x C x H x W, got shape {tuple(x.shape)}")
            if positions is None:
                pos = list(range(self._next_position, self._next_position + x.shape[0]))
            else:
                pos = [int(p) for p in positions[fed : fed + x.shape[0]]]
                if len(pos) != x.shape[0]:
                    raise ValueError(f"positions= has {len(positions)} entries, fewer than the images given")
            fed += x.shape[0]
            self._next_position = pos[-1] + 1
            buffered.append(x)
            buffered_pos += pos
            while buffered_pos:
                take = 1 if self.chance and buffered_pos[0] % 2 else size  # re-align to an even position
                if len(buffered_pos) < take:
                    break
                cat = torch.cat(buffered) if len(buffered) > 1 else buffered[0]
                yield cat[:take], buffered_pos[:take]
                buffered, buffered_pos = ([cat[take:]] if cat.shape[0] > take else []), buffered_pos[take:]
        if buffered_pos:
            yield (torch.cat(buffered) if len(buffered) > 1 else buffered[0]), buffered_pos

    @torch.no_grad()
    def update(self, inputs, positions: Optional[Sequence[int]] = None) -> None:
        """Measure a tensor ``N x C x H x W``, a Dataset, or an iterable of batches (first tensor of each).

        Args:
            positions: the global probe positions of these images, in order (docs/measures.md §7:
                they pair images for the chance level, ``2k`` with ``2k + 1``, and name images left
                out for non-finite values); by default they continue from the images fed so far.
                A process's share of the probe set should be a contiguous run starting at an even
                position, so that no pair is split between processes.
        """
        self._run(self._positioned(inputs, positions), inputs)

    @torch.no_grad()
    def _run(self, chunks, inputs) -> None:
        t0 = time.perf_counter()
        device, dtype = _model_device_dtype(self.model)
        device = self.device or device
        if isinstance(inputs, torch.Tensor):
            total = inputs.shape[0]
        else:
            total = len(inputs) if hasattr(inputs, "__len__") else None
        _warn_batch_cost(self.batch_size, self.num_elements, self.samples_per_forward, total, stacklevel=3)
        if self.progress:  # a bar in a terminal, one line when done elsewhere (progress.py)
            size = self.samples_per_forward
            what = (f"lightning_equivariance: measuring {len(self.layers)} layers x {len(self.measures)} measures x "
                    f"{len(self.groups)} groups")
            chunks = progress(chunks, None if total is None else math.ceil(total / size), what,
                              count=lambda images_positions: len(images_positions[1]), unit="images")
        # (blocked computations reuse one CPU buffer per thread until the measurement ends: functional/scratch.py)
        with LayerHooks(self.model, self.layers, None, output=self.measure_output) as probe, reusing_scratch():
            for x, positions in chunks:
                if not x.is_floating_point():
                    raise ValueError(
                        f"probe images have dtype {x.dtype} (shape {tuple(x.shape)}); the model needs floating-point "
                        "images: convert them first, e.g. images.float() / 255 for 8-bit images"
                    )
                x = x.to(device=device, dtype=dtype)
                for g in self.groups:
                    g.check_input(x)
                pos = torch.as_tensor(positions, dtype=torch.long, device=x.device)
                chunk = Chunk(x, pos, all_finite(x.flatten(1)), _partners(pos) if self.chance else None)
                if not self._allocated:
                    # The layouts first, then each pass prepares with the sink only creating metrics (the
                    # stacked pass runs the first image: the peak memory is reached in the first chunk).
                    self._allocating = True
                    try:
                        with self._discovering(probe, x):
                            for p in self.passes:
                                p.prepare(self.model, probe, chunk, self)
                    finally:
                        self._allocating = False
                    self._allocated = True
                self.finite_images("(input)", chunk.finite, chunk)
                for p in self.passes:
                    try:
                        p.run(self.model, probe, chunk, self)
                    finally:  # the layers measured so far are added, as if each had added its own at once
                        self._run_deferred()
                self.num_samples += chunk.size
                self._output_produced_by = probe.output_produced_by
        self.seconds += time.perf_counter() - t0

    def _non_finite_images(self) -> Tuple[List[int], Dict[str, List[int]]]:
        """Synced ``(input positions, {layer: positions})`` of images left out for non-finite values; layers
        that lost every image are recorded as errors."""
        inputs: List[int] = []
        per_layer: Dict[str, List[int]] = {}
        for name, tracker in self.non_finite_images.items():
            bad, seen = tracker.compute()
            if name == "(input)":
                inputs = bad
                continue
            if bad:
                per_layer[name] = bad
            if seen and len(bad) == seen:
                keys = [k for k in self._all_keys(name) if k not in self.notes]
                self._fail(keys, f"layer {name!r}: every probe image's activation holds NaN or Inf; nothing to measure")
        return inputs, per_layer

    def _all_keys(self, name: str) -> List[Tuple[str, str, str]]:
        return [key for p in self.passes for key in self._keys(name, p.sources, p.measures)]

    def compute(self) -> MeasureReport:
        """Synced results of everything seen since the last ``reset`` (torchmetrics syncs across processes)."""
        if not self.num_samples and not self.infos:
            raise ValueError(
                "Measurement.compute(): no probe images were measured (the inputs held 0 images, or update() was "
                "never called); give it at least one image"
            )
        bad_inputs, left_out = self._non_finite_images()
        infos = sorted(self.infos.values(), key=lambda i: i.index)
        modules = [i for i in infos if i.name != OUTPUT]  # the model's output is Final, whatever its kind
        parts = assign_parts(["map" if i.kind == "refused" else i.kind for i in modules], [i.is_pool for i in modules])
        for info, part in zip(modules, parts):
            info.part = part
        if OUTPUT in self.infos:
            self.infos[OUTPUT].part = "Final"
        results = []
        for info in infos:
            for group in self.groups + self.transforms:
                for measure_name in self.measures:
                    key = (info.name, measure_name, group.name)
                    metric = self.metrics.get(key)
                    if metric is None:
                        continue
                    try:
                        d = LayerDetails.from_mapping(metric.compute_details())
                    except Exception as e:  # noqa: BLE001 - one (layer, measure, group) fails, the report goes on
                        msg = f"layer {info.name!r} ({info.kind} {info.shape}), {measure_name}/{group.name}: {e}"
                        if self.on_error == "raise":
                            raise MeasureError(msg) from e
                        self._fail([key], msg)
                        continue
                    pe = _host_floats(d.per_element)
                    element_names = d.element_names or [e.name for e in group.elements]
                    pc = d.per_channel
                    results.append(
                        LayerResult(
                            layer=info.name,
                            index=info.index,
                            part=info.part,
                            kind=info.kind,
                            shape=info.shape,
                            measure=measure_name,
                            group=group.name,
                            value=d.value,
                            per_element={e: float(v) for e, v in zip(element_names, pe)},
                            per_channel=None if pc is None else _host_floats(pc),
                            left_out=d.left_out,
                            higher_is_better=MEASURES[measure_name].higher_is_better,
                            layout=info.layout,
                            non_finite=len(left_out.get(info.name, [])),
                            best=MEASURES[measure_name].best_value,
                            **d.significance(),
                        )
                    )
        selected = [n for n, _ in self.layers]
        if self.measure_output and (self._output_produced_by is None or OUTPUT in self._called):
            selected.append(OUTPUT)  # not when a selected layer's output is the model's output
        not_called = [n for n in selected if n not in self._called]
        report = MeasureReport(
            results,
            dict(self.errors),
            not_called,
            self.seconds,
            self.num_samples,
            dict(self.notes),
            layouts={i.name: i.layout for i in infos if i.kind != "refused"},
            non_finite=left_out,
            non_finite_inputs=bad_inputs,
            depth={i.name: (i.index, i.part) for i in infos},
            selected=selected,
        )
        report.warn_summary()
        return report


#: More forwards than this over one set of probe images draw a warning (:func:`_warn_batch_cost`).
MAX_CHUNKS = 1000


def _warn_batch_cost(batch_size: int, views: int, per_forward: int, images: Optional[int] = None,
                     stacklevel: int = 2) -> None:
    """Warn when ``batch_size`` makes the measurement slow: without ``images``, when it holds fewer than
    two images' stacked views (``views = 1 +`` the groups' elements); with ``images``, when they take
    more than :data:`MAX_CHUNKS` forwards. Each chunk pays a fixed cost (a forward of the model, every
    layer's measure updates) whatever its size, so tiny chunks multiply it."""
    if images is None and batch_size < 2 * views:
        why = (f"batch_size={batch_size} is smaller than twice the {views} stacked views of one image (the image "
               f"and each group element's transformed copy), so each forward carries only {per_forward} image(s)")
    elif images is not None and math.ceil(images / per_forward) > MAX_CHUNKS:
        why = (f"{images} probe images at batch_size={batch_size} ({per_forward} image(s) x {views} stacked views "
               f"per forward) take {math.ceil(images / per_forward)} forwards")
    else:
        return
    warnings.warn(
        f"lightning_equivariance: {why}; the fixed cost of every forward (the model's, and every layer's measure "
        f"updates) is paid per chunk, so the measurement takes many times longer than it needs to. Raise batch_size "
        f"(e.g. to {max(256, 2 * views)} or as large as memory allows; it counts the transformed copies too)",
        RuntimeWarning,
        stacklevel=stacklevel + 1,
    )


def _partners(positions: torch.Tensor) -> torch.Tensor:
    """Each image's chance-level partner in its chunk: the local index of global position ``p ^ 1``
    (``2k`` <-> ``2k + 1``), or ``-1``. On the device, without a host synchronisation."""
    match = (positions ^ 1).unsqueeze(1) == positions.unsqueeze(0)
    return torch.where(match.any(1), match.to(torch.uint8).argmax(1), torch.full_like(positions, -1))


def _host_floats(t: torch.Tensor) -> np.ndarray:
    """A tensor's values as a float64 NumPy array, read with ``tolist()``: on the host no ATen call (where
    ``detach().cpu().double()`` were three per layer and measure), on a device one transfer."""
    return np.asarray(t.tolist(), dtype=np.float64)


def _has_tensors(model: nn.Module) -> bool:
    return any(True for _ in model.parameters()) or any(True for _ in model.buffers())


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _expected_channels(model: nn.Module) -> Optional[Tuple[str, int]]:
    """The first convolution's name and input channels (to explain a channel mismatch)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return name, int(module.in_channels)
        in_type = getattr(module, "in_type", None)
        if getattr(in_type, "size", None) is not None:  # e2cnn
            return name, int(in_type.size)
    return None


def _shape_of(output) -> str:
    t = output if isinstance(output, torch.Tensor) else getattr(output, "tensor", None)
    if t is None and isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        t = output[0]
    return str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(output).__name__


def measure(
    model: nn.Module,
    inputs,
    measures: Sequence[str] = DEFAULT_MEASURES,
    groups: Sequence[Union[str, Group]] = ("rotation90",),
    layers: LayerSpec = "auto",
    batch_size: int = 256,
    **kwargs: Any,
) -> MeasureReport:
    """Measure every selected layer of ``model`` on ``inputs`` (how invariant/equivariant it has become).

    One stacked forward per chunk of ``batch_size`` images (transformed copies included)
    feeds every layer, measure and group. The model is put in eval mode and restored;
    no autograd graph is built.

    Args:
        model: any ``nn.Module`` on images ``B x C x H x W``.
        inputs: a tensor ``N x C x H x W``, a Dataset, or an iterable of batches.
        measures: names from :data:`~lightning_equivariance.metrics.MEASURES` (default:
            :data:`~lightning_equivariance.metrics.DEFAULT_MEASURES`); measures that declare a forward-mode
            pass run one such pass per continuous transform (:mod:`lightning_equivariance.lie`).
            Every measure is defined in ``docs/measures.md``.
        groups: e.g. ``(Rotation90(), Translation(max_shift=4))`` or names ``("rotation90",)``;
            for forward-mode measures continuous transforms (``("rotation", "translation_x")``) or
            ``LieTransform`` instances.
        layers: ``"auto"``, qualified names, module types, or a predicate.
        batch_size: images per forward (bounds memory).
        **kwargs: ``similarity``, ``measure_options``, ``channel_actions``, ``steerable_actions``, ``layouts``,
            ``on_error``, ``progress``, ``device`` (see :class:`Measurement`).

    A (layer, measure, group) that cannot be measured is recorded in ``report.errors`` with
    its reason and the rest is measured (``on_error="raise"`` stops instead); images whose
    values are NaN or Inf are left out where they are, and named in ``report.non_finite``.

    Returns:
        MeasureReport: ``report.to_dataframe()`` has columns ``layer, index, part, kind, layout,
            measure, group, value, left_out, non_finite, chance, above_chance, informative, stderr,
            margin, margin_stderr, margin_low, significant``.

    Example::

        >>> import torch, torchvision
        >>> from lightning_equivariance import measure, Rotation90
        >>> model = torchvision.models.resnet18(num_classes=10)
        >>> report = measure(model, torch.randn(8, 3, 32, 32), groups=[Rotation90()])
        >>> report.to_dataframe().head()  # doctest: +SKIP
    """
    if isinstance(inputs, torch.Tensor) and inputs.dim() >= 1 and inputs.shape[0] == 0:
        raise ValueError(f"inputs holds no images (shape {tuple(inputs.shape)}); give at least one probe image")
    m = Measurement(model, measures=measures, groups=groups, layers=layers, batch_size=batch_size, **kwargs)
    m.update(inputs)
    return m.compute()


@dataclass(frozen=True)
class LayerNames:
    """How layers are named for a module that wraps one network (a LightningModule holding
    ``self.model = resnet18()``): relative to that child, as ``measure(wrapper.model)`` and the CLI
    name them (``conv1``, not ``model.conv1``). ``prefix`` is the child's name and a dot, or ``""``
    (no single child holds every parameter, or names are not made relative)."""

    prefix: str = ""

    @classmethod
    def of(cls, wrapper: nn.Module) -> "LayerNames":
        """The names of ``wrapper``'s layers relative to its single child with parameters, if it has one."""
        return cls(wrapped_child_prefix(wrapper))

    def shown(self, name: str) -> str:
        """A qualified layer name as shown (relative to the wrapped child)."""
        return display_name(name, self.prefix)

    def qualified(self, names, module: nn.Module):
        """Layer names (a list/tuple, or a mapping's keys) given either way made qualified in ``module``;
        ``"auto"``, module types and predicates unchanged."""
        return qualified_names(names, module, self.prefix)

    @staticmethod
    def selected(module: nn.Module, layers: LayerSpec) -> List[str]:
        """The qualified names of the layers ``layers=`` selects in ``module``
        (see :func:`~lightning_equivariance.layers.select_layers`, whose errors name close names)."""
        return [name for name, _ in select_layers(module, layers)]

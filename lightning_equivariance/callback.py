"""``EquivarianceCallback``: per-layer learned equivariance at epoch ends, for a Lightning ``Trainer``.

The only module of :mod:`lightning_equivariance` that imports Lightning (``lightning.pytorch``).

Example::

    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from lightning_equivariance import EquivarianceCallback, Rotation90, Translation

    callback = EquivarianceCallback(
        measures=("invariance", "equivariance"),
        groups=(Rotation90(), Translation(max_shift=4)),
        num_samples=512,           # probe images, a fixed seeded subset of the val set
    )
    trainer = pl.Trainer(
        max_epochs=10,
        callbacks=[callback],
        logger=[TensorBoardLogger("logs"), CSVLogger("logs")],
    )
    trainer.fit(model, datamodule=dm)
    # tensorboard --logdir logs --samples_per_plugin equivariance=0  -> "equivariance" tab

Every logged value can also be monitored, e.g.
``ModelCheckpoint(monitor="equivariance/equivariance/rotation90/part/Late", mode="max")``.
"""
from __future__ import annotations

import random
import time
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from .engine import Measurement, MeasureReport
from .probe_set import INPUT_RULE as _FIRST_TENSOR_RULE, first_tensor_of as _first_tensor_of, is_dataset as _is_dataset
from .groups import Group, Rotation90
from .metrics import MEASURES
from .probe import LayerSpec, select_layers

__all__ = ["EquivarianceCallback"]

_STAGES = ("validation", "train")


class _SeriesReport:
    """One series of a report, in the duck type ``tb_plugin.summary.write_report`` reads."""

    def __init__(self, series):
        self._series = series

    def series(self):
        return [self._series]


class _Snapshot:
    """Everything a measurement could disturb, captured before it and restored after it.

    RNG states (Python ``random``, NumPy, torch CPU and - if initialised - CUDA), the
    train/eval mode of every submodule, and parameters and buffers: their values are
    cloned and copied back if their version counter moved (the engine runs in eval mode
    under ``no_grad``, so normally nothing moves; the copy-back is a guarantee, not a path
    taken).
    """

    def __init__(self, module: nn.Module):
        self.py = random.getstate()
        self.np = np.random.get_state()
        self.torch = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        self.modes = [(m, m.training) for m in module.modules()]
        self.grad = torch.is_grad_enabled()
        with torch.no_grad():
            self.tensors = [
                (t, t._version, t.detach().clone())
                for t in list(module.parameters()) + list(module.buffers())
            ]

    def restore(self) -> List[str]:
        """Restore everything; returns descriptions of the tensors that had to be copied back."""
        random.setstate(self.py)
        np.random.set_state(self.np)
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        for m, mode in self.modes:
            m.training = mode
        torch.set_grad_enabled(self.grad)
        changed = []
        with torch.no_grad():
            for t, version, copy in self.tensors:
                if t._version != version:
                    changed.append(f"{tuple(t.shape)} {t.dtype}")
                    t.copy_(copy)
        self.tensors = []
        return changed


@contextmanager
def _rngs_restored() -> Iterator[None]:
    """Put the Python, NumPy and torch CPU RNG states back after the block."""
    py, npst, tst = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npst)
        torch.set_rng_state(tst)


def _seed_rngs(seed: int) -> None:
    # torch.default_generator only: torch.manual_seed would also seed (or queue a seed for)
    # CUDA, which the probe images' CPU transforms never use.
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)


def _item_seed(seed: int, index: int) -> int:
    # One seed per (seed, dataset index): a random transform draws the same for an image on
    # any rank, in any shard, at any epoch.
    return (seed * 1_000_003 + index) % 2**31


class EquivarianceCallback(Callback):
    r"""Measure per-layer learned equivariance at the end of chosen epochs and log it.

    At the end of every ``every_n_epochs``-th epoch (validation or training epoch, never
    during the sanity check) the callback runs :class:`~lightning_equivariance.Measurement`
    on a fixed probe set, on ``pl_module.device``, in eval mode under ``no_grad``, then
    restores the train/eval mode of every submodule, parameters and buffers (BatchNorm
    statistics), and the Python, NumPy, torch and CUDA RNG states: adding the callback leaves
    training bit-for-bit identical.

    **Probe set.** ``num_samples`` images chosen once with a seeded ``torch.Generator`` (never
    the global RNG): a sorted random subset of ``inputs`` if given (a tensor ``N x C x H x W``,
    a map-style ``Dataset`` or a ``DataLoader``), else of the dataset of the first validation
    dataloader (``stage="validation"``) or of the training dataloader (``stage="train"``). The
    chosen indices are part of ``state_dict``. Dataset items are read directly (not through the
    sampler or the loader's workers), collated with the loader's ``collate_fn``, and every item
    is read with the global RNGs seeded from ``(seed, index)`` and restored afterwards, so random
    augmentations draw the same for every image at every epoch and on every rank, and the
    training RNG stream is untouched. The images are cached (this process's share, on CPU).
    An ``IterableDataset`` (no ``len``) gives its first ``num_samples`` images instead.

    **Input rule.** The input of a batch is the batch itself if it is a tensor,
    ``batch["image"]`` (or ``"images"``, ``"input"``, ``"inputs"``, ``"x"``,
    ``"pixel_values"``) for a dict, the first tensor of a tuple or list, or
    ``input_fn(batch)`` if given; ``batch`` is a collated batch, as ``training_step`` sees it.

    **Model.** ``pl_module`` itself (its ``forward`` must take images), or the submodule named
    by ``submodule`` (e.g. ``"net"``); ``layers`` names are relative to it.

    **DDP.** Each process measures a disjoint shard ``indices[rank::world_size]``; the metric
    states are summed across processes by torchmetrics, so the logged value is the value over
    the whole probe set (equal to a one-process run). Parameters are equal on every process,
    but buffers (BatchNorm statistics) drift apart between DDP's broadcasts, so rank zero's
    buffers are broadcast for the measurement and each process's own put back afterwards:
    the model measured is rank zero's.

    **Logging** (step = epoch). Scalars ``equivariance/{measure}/{group}/{layer}`` and the means
    per depth part ``equivariance/{measure}/{group}/part/{Early|Middle|Late|Pool|Final}`` go
    to every logger in ``trainer.loggers`` (from rank zero) and into ``trainer.callback_metrics``
    (every rank) for ``ModelCheckpoint``/``EarlyStopping``. For every ``TensorBoardLogger``,
    one tensor summary per (measure, group) holding the per-layer vector (and the per-channel
    values with ``per_channel=True``) is written with :func:`tb_plugin.summary.write_report`,
    for the ``equivariance`` TensorBoard tab. Each epoch is measured and logged once: the
    values are kept in ``state_dict()["history"]``, so resuming from a checkpoint (even when
    Lightning re-runs an epoch end) neither duplicates nor skips epochs. With
    ``every_n_epochs > 1`` a monitor sees the last measured values on the epochs in between
    (and none before the first measurement: give ``EarlyStopping`` ``strict=False`` then).

    **Failures never stop training.** A (layer, measure, group) that cannot be measured is
    left out and named in one ``RuntimeWarning`` per measurement; a probe image whose values
    are NaN or Inf is left out where they are (the warning names its probe position: its
    rank in the sorted probe indices, ``state_dict()["indices"]``); any other error of the
    measurement or of logging becomes a warning too, and whatever was measured is still logged.

    Args:
        measures: measure names from :data:`lightning_equivariance.metrics.MEASURES`.
        groups: :class:`~lightning_equivariance.groups.Group` instances or names (and, for
            measure ``"lee"``, its continuous transforms), as for :func:`~lightning_equivariance.measure`.
        layers: ``"auto"``, qualified names, module types or a predicate (see
            :func:`~lightning_equivariance.select_layers`).
        num_samples: probe-set size (all of the source if it has fewer).
        every_n_epochs: measure at the end of epochs ``e`` with ``(e + 1) % every_n_epochs == 0``.
        stage: ``"validation"`` (at ``on_validation_epoch_end``, the end-of-epoch validation run
            when there are several per epoch) or ``"train"`` (at ``on_train_epoch_end``).
        batch_size: images per forward, transformed copies included (bounds memory; the
            default 256 is the engine's: 64 probe images x 4 rotations per forward).
        per_channel: also write per-channel values to TensorBoard (heatmaps).
        seed: seed of the probe-set choice and of the probe images' random transforms.
        inputs: probe images: tensor ``N x C x H x W``, map-style ``Dataset`` or ``DataLoader``.
        input_fn: ``input_fn(batch) -> tensor B x C x H x W``, overriding the input rule.
        model_name: model name shown in the TensorBoard tab (default: the module's class name).
        baseline: flag the run as a reference model (drawn dashed in the tab).
        submodule: dotted attribute path of the module to measure inside ``pl_module``.
        similarity: ``"pearson"`` (default) or ``"cosine"`` for the correlation measures.
        measure_options: further options for the measures (see :class:`~lightning_equivariance.Measurement`).
        channel_actions: ``{layer: channel_action}`` declared by the architecture.
        layouts: ``{layer: "channels_first" | "channels_last"}``: how a layer's 4-D output is stored,
            overriding what the probe infers (see :func:`~lightning_equivariance.probe.discover_layouts`).
        on_error: ``"warn"`` (default): a (layer, measure, group) that cannot be measured is left out
            and named in one warning, the rest is logged; ``"raise"``: the whole measurement of that
            epoch fails at the first such error (a warning; training goes on either way).
        progress: show a progress bar over the measurement (only when the trainer shows one).

    Raises:
        ValueError / TypeError: at construction or in ``setup``, naming the bad argument.

    Example::

        >>> from lightning_equivariance import EquivarianceCallback, Rotation90
        >>> cb = EquivarianceCallback(groups=(Rotation90(),), num_samples=256, every_n_epochs=2)
        >>> cb.state_key
        "EquivarianceCallback{'measures': ('invariance', 'equivariance'), 'groups': ('rotation90',), 'stage': 'validation'}"
    """

    def __init__(
        self,
        measures: Sequence[str] = ("invariance", "equivariance"),
        groups: Sequence[Union[str, Group]] = (Rotation90(),),
        layers: LayerSpec = "auto",
        num_samples: int = 512,
        every_n_epochs: int = 1,
        stage: str = "validation",
        batch_size: int = 256,
        per_channel: bool = False,
        seed: int = 0,
        inputs: Any = None,
        input_fn: Optional[Callable[[Any], torch.Tensor]] = None,
        model_name: Optional[str] = None,
        baseline: bool = False,
        submodule: Optional[str] = None,
        similarity: str = "pearson",
        measure_options: Optional[Mapping[str, Any]] = None,
        channel_actions: Optional[Mapping[str, Any]] = None,
        layouts: Optional[Mapping[str, str]] = None,
        on_error: str = "warn",
        progress: bool = True,
    ):
        super().__init__()
        if isinstance(measures, str):
            measures = (measures,)
        if not isinstance(measures, (list, tuple)) or not measures or not all(isinstance(m, str) for m in measures):
            raise TypeError(f"measures must be a non-empty sequence of measure names, got {measures!r}")
        if len(set(measures)) != len(measures):
            raise ValueError(f"measures has duplicates: {list(measures)}")
        if isinstance(groups, str) or not isinstance(groups, (list, tuple)):
            groups = (groups,)
        # Groups are resolved by the engine in ``setup`` (discrete groups, and the continuous
        # transforms of "lee"); here only their names, for the state key.
        names = [g.lower() if isinstance(g, str) else getattr(g, "name", None) for g in groups]
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"groups must be a non-empty sequence of group names or Group objects, got {groups!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"groups must have distinct names, got {names}; pass name=... to tell them apart")
        for argument, value in (("num_samples", num_samples), ("every_n_epochs", every_n_epochs), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{argument} must be an integer >= 1, got {value!r}")
        if stage not in _STAGES:
            raise ValueError(f"stage must be one of {_STAGES}, got {stage!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        if input_fn is not None and not callable(input_fn):
            raise TypeError(f"input_fn must be callable (batch -> B x C x H x W tensor), got {type(input_fn).__name__}")
        if inputs is not None:
            if isinstance(inputs, torch.Tensor):
                if inputs.dim() != 4 or not inputs.is_floating_point():
                    raise ValueError(
                        f"inputs must be a float tensor N x C x H x W, got {inputs.dtype} of shape {tuple(inputs.shape)}"
                    )
                if inputs.shape[0] == 0:
                    raise ValueError("inputs is empty (0 images)")
            elif not (_is_dataset(inputs) or hasattr(inputs, "dataset")):
                raise TypeError(
                    "inputs must be a tensor N x C x H x W, a map-style Dataset or a DataLoader, "
                    f"got {type(inputs).__name__}"
                )
        if model_name is not None and not isinstance(model_name, str):
            raise TypeError(f"model_name must be a string, got {type(model_name).__name__}")
        if submodule is not None and not isinstance(submodule, str):
            raise TypeError(f"submodule must be a dotted attribute path (str), got {type(submodule).__name__}")
        if on_error not in ("warn", "raise"):
            raise ValueError(f"on_error must be 'warn' or 'raise', got {on_error!r}")
        if layouts is not None and not isinstance(layouts, Mapping):
            raise TypeError(f"layouts must be a mapping {{layer: 'channels_first' | 'channels_last'}}, got {type(layouts).__name__}")

        self.measures = tuple(measures)
        self.groups = tuple(groups)
        self._group_names = tuple(names)
        self.layers = layers
        self.num_samples = int(num_samples)
        self.every_n_epochs = int(every_n_epochs)
        self.stage = stage
        self.batch_size = int(batch_size)
        self.per_channel = bool(per_channel)
        self.seed = int(seed)
        self.inputs = inputs
        self.input_fn = input_fn
        self.model_name = model_name
        self.baseline = bool(baseline)
        self.submodule = submodule
        self.similarity = similarity
        self.measure_options = dict(measure_options or {})
        self.channel_actions = dict(channel_actions or {})
        self.layouts = dict(layouts or {})
        self.on_error = on_error
        self.progress = bool(progress)

        # state (state_dict)
        self._indices: Optional[torch.Tensor] = None  # global probe indices into the source
        self._source_len: Optional[int] = None
        self._history: Dict[int, Dict[str, float]] = {}
        # not state
        self._cache: Optional[torch.Tensor] = None  # this process's probe images, CPU
        self._cache_key: Optional[Tuple[int, int]] = None
        self.last_report: Optional[MeasureReport] = None

    # ------------------------------------------------------------------ Lightning API
    @property
    def state_key(self) -> str:
        return self._generate_state_key(measures=self.measures, groups=self._group_names, stage=self.stage)

    @property
    def history(self) -> Dict[int, Dict[str, float]]:
        """``{epoch: {scalar name: value}}`` of every measured epoch (a copy)."""
        return {e: dict(v) for e, v in self._history.items()}

    def state_dict(self) -> Dict[str, Any]:
        return {
            "indices": None if self._indices is None else self._indices.clone(),
            "source_len": self._source_len,
            "seed": self.seed,
            "num_samples": self.num_samples,
            "history": {int(e): dict(v) for e, v in self._history.items()},
        }

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        if int(state_dict.get("seed", self.seed)) != self.seed or int(state_dict.get("num_samples", self.num_samples)) != self.num_samples:
            warnings.warn(
                "EquivarianceCallback: the checkpoint's probe set was chosen with "
                f"seed={state_dict.get('seed')}, num_samples={state_dict.get('num_samples')}; keeping it "
                f"(this callback has seed={self.seed}, num_samples={self.num_samples})",
                UserWarning,
                stacklevel=2,
            )
        idx = state_dict.get("indices")
        self._indices = None if idx is None else torch.as_tensor(idx, dtype=torch.long).clone()
        self._source_len = state_dict.get("source_len")
        self._history = {int(e): dict(v) for e, v in (state_dict.get("history") or {}).items()}
        self._cache = None
        self._cache_key = None

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if stage != "fit":
            return
        unknown = [m for m in self.measures if m not in MEASURES]
        if unknown:
            raise ValueError(f"measures: unknown measure(s) {unknown}; choose from {sorted(MEASURES)}")
        try:
            module = self._module(pl_module)
        except AttributeError as e:
            raise ValueError(f"submodule={self.submodule!r}: {e}") from e
        try:
            select_layers(module, self.layers)
        except Exception as e:  # noqa: BLE001 - re-raised naming the argument
            raise ValueError(f"layers={self.layers!r}: {e}") from e
        try:  # the engine's own checks of groups and options (what each measure needs)
            self._measurement(module, progress=False, device=None)
        except Exception as e:  # noqa: BLE001 - re-raised naming the arguments
            raise ValueError(f"EquivarianceCallback(measures={list(self.measures)}, groups={list(self.groups)}): {e}") from e
        if self.stage == "validation":
            from lightning.pytorch.utilities.model_helpers import is_overridden

            if not is_overridden("validation_step", pl_module):
                raise ValueError(
                    f"stage='validation' but {type(pl_module).__name__} has no validation_step, so no validation "
                    "epoch ever ends; use EquivarianceCallback(stage='train')"
                )
            if trainer.limit_val_batches == 0:
                warnings.warn(
                    "EquivarianceCallback(stage='validation'): limit_val_batches=0 disables validation, so nothing "
                    "will be measured; use stage='train'",
                    UserWarning,
                    stacklevel=2,
                )

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # Choose the probe indices at fit start where the source is already known (user inputs,
        # the training set); the validation set may only be loaded at its first run, in which case
        # they are chosen then. The choice depends only on (seed, source length, num_samples).
        try:
            source = self._source(trainer, required=False)
            if source is not None:
                self._choose_indices(self._source_length(source))
        except Exception as e:  # noqa: BLE001 - never stop training
            self._warn(f"could not choose the probe set at fit start ({type(e).__name__}: {e}); will retry at the first measurement")

    def on_validation_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.stage != "validation" or trainer.sanity_checking or not self._fitting(trainer):
            return
        loop = trainer.fit_loop.epoch_loop
        step_based = getattr(trainer, "check_val_every_n_epoch", 1) is None
        if not step_based and not getattr(loop.batch_progress, "is_last_batch", True):
            return  # a mid-epoch validation run (val_check_interval < 1): measure the end-of-epoch one
        self._maybe_measure(trainer, pl_module)

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.stage != "train" or not self._fitting(trainer):
            return
        self._maybe_measure(trainer, pl_module)

    # ------------------------------------------------------------------ when
    @staticmethod
    def _fitting(trainer: "pl.Trainer") -> bool:
        fn = getattr(getattr(trainer, "state", None), "fn", None)
        return fn is None or str(getattr(fn, "value", fn)) == "fit"

    def _maybe_measure(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        epoch = int(trainer.current_epoch)
        if (epoch + 1) % self.every_n_epochs != 0:
            return
        if epoch in self._history:
            # Already measured and logged (an epoch end re-run after resuming): only make the
            # values monitorable again, log nothing twice.
            self._set_callback_metrics(trainer, self._history[epoch])
            return
        self.measure_now(trainer, pl_module, epoch)

    # ------------------------------------------------------------------ measuring
    def _module(self, pl_module: nn.Module) -> nn.Module:
        module = pl_module
        if self.submodule:
            for part in self.submodule.split("."):
                module = getattr(module, part)
            if not isinstance(module, nn.Module):
                raise AttributeError(f"{self.submodule!r} is a {type(module).__name__}, not an nn.Module")
        return module

    def measure_now(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", epoch: int) -> Optional[MeasureReport]:
        """Measure now and log at step ``epoch`` (what the epoch-end hooks call); returns the report or ``None``.

        Every process must call it (the metric states are synced). Never raises: failures
        become warnings.
        """
        t0 = time.perf_counter()
        snapshot = _Snapshot(pl_module)
        report = None
        ok, error = True, ""
        measurement = None
        try:
            module = self._module(pl_module)
            if self._distributed(trainer):
                # DDP keeps parameters equal on every process, but buffers (BatchNorm statistics)
                # drift apart between DDP's broadcasts: measure rank zero's model everywhere
                # (each process gets its own buffers back from the snapshot).
                for buf in pl_module.buffers():
                    torch.distributed.broadcast(buf.data, src=0)
            images = self._probe_images(trainer)
            show = self.progress and trainer.is_global_zero and self._progress_bar_enabled(trainer)
            measurement = self._measurement(module, progress=show, device=pl_module.device)
            # global probe positions of this process's strided shard (names non-finite images)
            rank, world = int(trainer.global_rank), int(trainer.world_size)
            measurement.update(images, positions=range(rank, rank + world * images.shape[0], world))
        except Exception as e:  # noqa: BLE001 - never stop training
            ok, error = False, f"{type(e).__name__}: {e}"
        try:
            # Every process must reach the same collectives: agree first on success and on the
            # (layer, measure, group) states to sync, then compute.
            keys = measurement.state_keys() if ok and measurement is not None else None
            all_keys = self._all_gather_object(trainer, keys)
            if any(k is None for k in all_keys):
                if ok:
                    error = "the measurement failed on another process"
                report = None
            else:
                common = set(all_keys[0]).intersection(*map(set, all_keys[1:]))
                measurement.keep_only(common, "could not be measured on every process")
                report = measurement.compute()
        except Exception as e:  # noqa: BLE001
            report, error = None, error or f"{type(e).__name__}: {e}"
        finally:
            changed = snapshot.restore()
        if changed:
            self._warn(f"the measurement modified {len(changed)} parameter/buffer tensor(s) in place; restored them")
        if report is None:
            self._warn(f"epoch {epoch}: measurement failed, nothing logged ({error})")
            return None
        self.last_report = report
        scalars = report.scalars()
        self._history[epoch] = scalars
        self._publish(trainer, pl_module, epoch, report, scalars)
        seconds = time.perf_counter() - t0
        n_layers = len({r.layer for r in report.results})
        total = len(self._indices) if self._indices is not None else report.num_samples
        skipped = f", {len(report.errors)} (layer, measure, group) left out" if report.errors else ""
        rank_zero_info(
            f"EquivarianceCallback: epoch {epoch}: {len(self.measures)} measure(s) x {len(self.groups)} group(s) "
            f"on {n_layers} layers of {total} probe images in {seconds:.2f}s{skipped}"
        )
        return report

    def _measurement(self, module: nn.Module, progress: bool, device) -> Measurement:
        return Measurement(
            module,
            measures=self.measures,
            groups=self.groups,
            layers=self.layers,
            batch_size=self.batch_size,
            similarity=self.similarity,
            measure_options=self.measure_options,
            channel_actions=self.channel_actions,
            layouts=self.layouts,
            on_error=self.on_error,
            progress=progress,
            device=device,
        )

    @staticmethod
    def _progress_bar_enabled(trainer: "pl.Trainer") -> bool:
        bar = getattr(trainer, "progress_bar_callback", None)
        return bar is not None and not getattr(bar, "is_disabled", False)

    @staticmethod
    def _distributed(trainer: "pl.Trainer") -> bool:
        return (
            int(trainer.world_size) > 1
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()
        )

    def _all_gather_object(self, trainer: "pl.Trainer", obj) -> List[Any]:
        if not self._distributed(trainer):
            return [obj]
        out: List[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(out, obj)
        return out

    # ------------------------------------------------------------------ probe set
    def _source(self, trainer: "pl.Trainer", required: bool = True):
        """The probe source: a tensor, a map-style Dataset (+ collate_fn), or an iterable loader."""
        src = self.inputs
        if src is None:
            loaders = trainer.val_dataloaders if self.stage == "validation" else trainer.train_dataloader
            if isinstance(loaders, Mapping):
                loaders = next(iter(loaders.values()), None)
            elif isinstance(loaders, (list, tuple)):
                loaders = loaders[0] if loaders else None
            if loaders is None:
                if required:
                    which = "validation" if self.stage == "validation" else "training"
                    raise RuntimeError(f"no {which} dataloader to draw probe images from; pass inputs=...")
                return None
            src = loaders
        return src

    @staticmethod
    def _dataset_of(src):
        if isinstance(src, torch.Tensor) or _is_dataset(src):
            return src
        dataset = getattr(src, "dataset", None)
        if dataset is not None and _is_dataset(dataset) and not isinstance(dataset, torch.utils.data.IterableDataset):
            return dataset
        return None

    def _source_length(self, src) -> Optional[int]:
        data = self._dataset_of(src)
        return None if data is None else len(data)

    def _choose_indices(self, length: Optional[int]) -> None:
        if length is None:  # an iterable: its first num_samples images
            return
        if self._indices is not None and self._source_len == length:
            return
        if self._indices is not None:
            self._warn(
                f"the probe source has {length} items, the checkpoint's probe set was chosen from "
                f"{self._source_len}; choosing a new one"
            )
        if length < 1:
            raise ValueError("the probe source is empty")
        generator = torch.Generator().manual_seed(self.seed)
        n = min(self.num_samples, length)
        self._indices = torch.randperm(length, generator=generator)[:n].sort().values
        self._source_len = length
        self._cache = None

    def _probe_images(self, trainer: "pl.Trainer") -> torch.Tensor:
        rank, world = int(trainer.global_rank), int(trainer.world_size)
        if self._cache is not None and self._cache_key == (rank, world):
            return self._cache
        src = self._source(trainer)
        data = self._dataset_of(src)
        if data is not None:
            self._choose_indices(len(data))
            total = len(self._indices)
            if total < world:
                raise ValueError(f"{total} probe images cannot be split over {world} processes; raise num_samples")
            shard = self._indices[rank::world]
            if isinstance(data, torch.Tensor):
                images = data[shard]
            else:
                collate = getattr(src, "collate_fn", None) if src is not data else None
                images = self._read_items(data, shard.tolist(), collate)
        else:
            images = self._read_iterable(src)
            total = images.shape[0]
            if total < world:
                raise ValueError(f"{total} probe images cannot be split over {world} processes; raise num_samples")
            self._indices = torch.arange(total)
            self._source_len = None
            images = images[rank::world]
        if images.dim() != 4 or not images.is_floating_point():
            raise ValueError(
                f"probe images must be a float tensor B x C x H x W, got {images.dtype} of shape {tuple(images.shape)}; "
                f"{_FIRST_TENSOR_RULE}"
            )
        self._cache = images.detach().cpu()
        self._cache_key = (rank, world)
        return self._cache

    def _input_of(self, batch) -> torch.Tensor:
        x = self.input_fn(batch) if self.input_fn is not None else _first_tensor_of(batch)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input_fn returned {type(x).__name__}, expected a tensor B x C x H x W")
        return x

    def _read_items(self, dataset, indices: List[int], collate) -> torch.Tensor:
        from torch.utils.data import default_collate

        collate = collate or default_collate
        chunks, step = [], 64
        with _rngs_restored():
            for start in range(0, len(indices), step):
                items = []
                for i in indices[start : start + step]:
                    _seed_rngs(_item_seed(self.seed, i))
                    items.append(dataset[i])
                chunks.append(self._input_of(collate(items)).detach().cpu())
        return torch.cat(chunks)

    def _read_iterable(self, loader) -> torch.Tensor:
        chunks, n = [], 0
        with _rngs_restored():
            _seed_rngs(self.seed)
            for batch in loader:
                x = self._input_of(batch).detach().cpu()
                chunks.append(x)
                n += x.shape[0]
                if n >= self.num_samples:
                    break
        if not chunks:
            raise ValueError("the probe dataloader yielded no batch")
        return torch.cat(chunks)[: self.num_samples]

    # ------------------------------------------------------------------ logging
    @staticmethod
    def _set_callback_metrics(trainer: "pl.Trainer", scalars: Mapping[str, float]) -> None:
        trainer.callback_metrics.update({k: torch.tensor(v, dtype=torch.float32) for k, v in scalars.items()})

    def _publish(self, trainer, pl_module, epoch: int, report: MeasureReport, scalars: Dict[str, float]) -> None:
        try:
            self._set_callback_metrics(trainer, scalars)
        except Exception as e:  # noqa: BLE001
            self._warn(f"epoch {epoch}: could not set trainer.callback_metrics ({type(e).__name__}: {e})")
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            try:
                logger.log_metrics(scalars, step=epoch)
            except Exception as e:  # noqa: BLE001
                self._warn(f"epoch {epoch}: {type(logger).__name__}.log_metrics failed ({type(e).__name__}: {e})")
        tb_loggers = [lg for lg in trainer.loggers if _is_tensorboard_logger(lg)]
        if not tb_loggers:
            return
        try:
            from tb_plugin.summary import write_report
        except Exception as e:  # noqa: BLE001
            self._warn(f"the TensorBoard writer tb_plugin.summary is unavailable ({type(e).__name__}: {e})")
            return
        model = self.model_name or type(self._module(pl_module)).__name__
        for logger in tb_loggers:
            for s in report.series():
                # One series at a time: a bad series (e.g. a NaN value) loses only itself.
                try:
                    write_report(
                        logger.experiment,
                        _SeriesReport(s),
                        step=epoch,
                        model=model,
                        baseline=self.baseline,
                        per_channel=self.per_channel,
                    )
                except Exception as e:  # noqa: BLE001
                    self._warn(
                        f"epoch {epoch}: TensorBoard summary of {s.measure}/{s.group} not written "
                        f"({type(e).__name__}: {e})"
                    )

    @staticmethod
    def _warn(message: str) -> None:
        warnings.warn(f"EquivarianceCallback: {message}", RuntimeWarning, stacklevel=3)


def _is_tensorboard_logger(logger) -> bool:
    try:
        from lightning.fabric.loggers import TensorBoardLogger as FabricTB
        from lightning.pytorch.loggers import TensorBoardLogger
    except ImportError:  # pragma: no cover
        return False
    return isinstance(logger, (TensorBoardLogger, FabricTB))

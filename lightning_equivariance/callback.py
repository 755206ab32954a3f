"""``EquivarianceCallback``: per-layer learned equivariance during training, for a Lightning ``Trainer``.

The only module of :mod:`lightning_equivariance` that imports Lightning (``lightning.pytorch``).

Example::

    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from lightning_equivariance import EquivarianceCallback, Rotation90, Translation

    callback = EquivarianceCallback(
        measures=("invariance", "equivariance"),
        groups=(Rotation90(), Translation(max_shift=4)),
        num_samples=512,           # probe images, a fixed seeded subset of the val set
        every_n_train_steps=200,   # or every_n_epochs=N (the default when neither is given: 1)
    )
    trainer = pl.Trainer(
        max_epochs=10,
        callbacks=[callback],
        logger=[TensorBoardLogger("logs"), CSVLogger("logs")],
    )
    trainer.fit(model, datamodule=dm)
    # tensorboard --logdir logs --samples_per_plugin equivariance=0  -> "equivariance" tab
    # pandas.read_csv("logs/lightning_logs/version_0/equivariance.csv")  -> every layer, every step

Every measured value (every layer's, not only the logged part means) can be monitored, e.g.
``ModelCheckpoint(monitor="equivariance/equivariance/rotation90/part/Late", mode="max")``.
"""
from __future__ import annotations

import os
import time
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

from .engine import Measurement, MeasureReport
from .groups import Group, Rotation90
from .metrics import MEASURES
from .probe import LayerSpec, select_layers
from .probe_set import ProbeSet, check_inputs, dataset_of
from .run_log import History, append_tidy_csv, cut_tidy_csv, select_scalars
from .snapshot import Snapshot as _Snapshot

__all__ = ["EquivarianceCallback"]

_STAGES = ("validation", "train")
_LOG_SCALARS = ("parts", "layers", "none")
#: version of ``state_dict()``: 2 = history keyed by global step (1, no ``version`` field: by epoch)
#: columns of the tidy CSV (``equivariance.csv``), one row per (global step, layer, measure, group)
_UNSET: Any = object()


class _Collectives:
    """``all_gather_object`` over the trainer's processes (``[obj]`` in one), for ``Measurement.agree``."""

    def __init__(self, distributed: bool):
        self.distributed = distributed

    def all_gather_object(self, obj) -> List[Any]:
        if not self.distributed:
            return [obj]
        out: List[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(out, obj)
        return out


def _require(ok: bool, error: type, message: str) -> None:
    if not ok:
        raise error(message)


def _is_int(value, low: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= low


@contextmanager
def _naming(argument: str, catch: type = Exception) -> Iterator[None]:
    """Re-raise an error of the block as a ``ValueError`` naming the argument."""
    try:
        yield
    except catch as e:
        raise ValueError(f"{argument}: {e}") from e


class EquivarianceCallback(Callback):
    r"""Measure per-layer learned equivariance during training and log it at the global step.

    The whole behaviour is described in ``docs/callback.md``; in short:

    **When.** After optimizer steps ``N, 2N, ...`` (``every_n_train_steps=N``), at the end of
    every ``every_n_epochs``-th epoch (default 1, ``None`` when ``every_n_train_steps`` is given;
    never in the sanity check), at the end of fit (``measure_on_fit_end``, unless the last
    measurement was at that step) and before the first step (``measure_on_fit_start``). A global
    step is measured at most once; ``setup`` warns once about a configuration that never measures.

    **How.** :class:`~lightning_equivariance.Measurement` on a fixed, seeded probe set
    (:class:`~lightning_equivariance.probe_set.ProbeSet`: from ``inputs``, else the validation or
    training set by ``stage``; read without touching the RNG streams), on ``pl_module.device``
    (or the ``submodule``), in eval mode under ``no_grad``; modes, parameters, buffers and RNG
    states are put back (:class:`~lightning_equivariance.snapshot.Snapshot`): training is
    bit-for-bit the same. In DDP each process measures a contiguous shard of whole pairs of probe
    positions and torchmetrics sums the states; rank zero's buffers are measured everywhere.

    **Logging** at ``trainer.global_step``, the epoch beside it: every layer's value and the part
    means in ``trainer.callback_metrics``; the loggers get the scalars ``log_scalars`` picks
    (``"parts"`` by default); every ``TensorBoardLogger`` gets the per-layer summaries (chance,
    standard errors, refused layers) through ``lightning_equivariance_tb.summary.write_series``;
    a tidy CSV ``csv_file`` (columns :data:`lightning_equivariance.run_log.CSV_COLUMNS`) goes to
    the first logger's directory. The history (:class:`~lightning_equivariance.run_log.History`,
    by global step; a previous version's by-epoch checkpoint still resumes) is in ``state_dict``,
    so a resumed run repeats and skips nothing, and the CSV is cut back to the resumed step.

    **Failures never stop training**: what cannot be measured is left out and named in one
    warning per measurement (NaN/Inf images by probe position), and any other error of
    measuring or logging becomes a warning; whatever was measured is still logged.

    Args:
        measures: measure names from :data:`lightning_equivariance.metrics.MEASURES`.
        groups: :class:`~lightning_equivariance.groups.Group` instances or names (and, for
            measure ``"lee"``, its continuous transforms), as for :func:`~lightning_equivariance.measure`.
        layers: ``"auto"``, qualified names, module types or a predicate (see
            :func:`~lightning_equivariance.select_layers`).
        num_samples: probe-set size (all of the source if it has fewer).
        every_n_epochs: measure at the end of epochs ``e`` with ``(e + 1) % every_n_epochs == 0``;
            ``None``: never at epoch ends. Default: 1, or ``None`` when ``every_n_train_steps`` is given.
        stage: where probe images come from and which epoch end ``every_n_epochs`` means:
            ``"validation"`` (the validation set; at ``on_validation_epoch_end``, the end-of-epoch
            validation run when there are several per epoch) or ``"train"`` (the training set; at
            ``on_train_epoch_end``).
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
            measurement fails at the first such error (a warning; training goes on either way).
        progress: show a progress bar over the measurement (only when the trainer shows one).
        every_n_train_steps: measure after optimizer steps ``N, 2N, ...`` (``on_train_batch_end``
            at ``trainer.global_step``); ``None`` (default): no step trigger.
        measure_on_fit_start: also measure before the first optimizer step (global step 0).
        measure_on_fit_end: also measure at the end of fit unless the last measurement was at
            that global step (default ``True``).
        log_scalars: which scalars go to the loggers: ``"parts"`` (default), ``"layers"``,
            ``"none"`` or a list of scalar names; ``trainer.callback_metrics`` always has all.
        csv_file: file name of the tidy CSV in the first logger's directory; ``None``: none.

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
        every_n_epochs: Optional[int] = _UNSET,
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
        every_n_train_steps: Optional[int] = None,
        measure_on_fit_start: bool = False,
        measure_on_fit_end: bool = True,
        log_scalars: Union[str, Sequence[str]] = "parts",
        csv_file: Optional[str] = "equivariance.csv",
    ):
        super().__init__()
        if every_n_epochs is _UNSET:
            # as Lightning's ModelCheckpoint: step- and epoch-based triggers are kept apart
            every_n_epochs = None if every_n_train_steps is not None else 1
        measures = (measures,) if isinstance(measures, str) else measures
        _require(
            isinstance(measures, (list, tuple)) and len(measures) > 0 and all(isinstance(m, str) for m in measures),
            TypeError, f"measures must be a non-empty sequence of measure names, got {measures!r}",
        )
        _require(len(set(measures)) == len(measures), ValueError, f"measures has duplicates: {list(measures)}")
        groups = (groups,) if isinstance(groups, str) or not isinstance(groups, (list, tuple)) else groups
        # Groups are resolved by the engine in ``setup`` (discrete groups, and the continuous
        # transforms of "lee"); here only their names, for the state key.
        names = [g.lower() if isinstance(g, str) else getattr(g, "name", None) for g in groups]
        _require(
            len(names) > 0 and all(isinstance(n, str) and n for n in names),
            ValueError, f"groups must be a non-empty sequence of group names or Group objects, got {groups!r}",
        )
        _require(len(set(names)) == len(names), ValueError, f"groups must have distinct names, got {names}; pass name=... to tell them apart")
        integers = dict(num_samples=(num_samples, 1), batch_size=(batch_size, 1), seed=(seed, 0))
        for argument, (value, low) in integers.items():
            _require(_is_int(value, low), ValueError, f"{argument} must be an integer >= {low}, got {value!r}")
        for argument, value in (("every_n_epochs", every_n_epochs), ("every_n_train_steps", every_n_train_steps)):
            _require(value is None or _is_int(value, 1), ValueError, f"{argument} must be None or an integer >= 1, got {value!r}")
        if isinstance(log_scalars, str):
            _require(log_scalars in _LOG_SCALARS, ValueError, f"log_scalars must be one of {_LOG_SCALARS} or a list of scalar names, got {log_scalars!r}")
        else:
            _require(
                isinstance(log_scalars, (list, tuple, set, frozenset)) and all(isinstance(n, str) for n in log_scalars),
                TypeError, f"log_scalars must be one of {_LOG_SCALARS} or a list of scalar names, got {log_scalars!r}",
            )
            log_scalars = tuple(log_scalars)
        _require(
            csv_file is None or (isinstance(csv_file, str) and csv_file and os.path.basename(csv_file) == csv_file),
            ValueError, f"csv_file must be None or a file name (no directory), got {csv_file!r}",
        )
        _require(stage in _STAGES, ValueError, f"stage must be one of {_STAGES}, got {stage!r}")
        _require(
            input_fn is None or callable(input_fn),
            TypeError, f"input_fn must be callable (batch -> B x C x H x W tensor), got {type(input_fn).__name__}",
        )
        if inputs is not None:
            check_inputs(inputs)
        for argument, value, what in (("model_name", model_name, "a string"), ("submodule", submodule, "a dotted attribute path (str)")):
            _require(value is None or isinstance(value, str), TypeError, f"{argument} must be {what}, got {type(value).__name__}")
        _require(on_error in ("warn", "raise"), ValueError, f"on_error must be 'warn' or 'raise', got {on_error!r}")
        _require(
            layouts is None or isinstance(layouts, Mapping),
            TypeError, f"layouts must be a mapping {{layer: 'channels_first' | 'channels_last'}}, got {type(layouts).__name__}",
        )

        self.measures, self.groups, self._group_names, self.layers = tuple(measures), tuple(groups), tuple(names), layers
        self.num_samples, self.batch_size = int(num_samples), int(batch_size)
        self.every_n_epochs = None if every_n_epochs is None else int(every_n_epochs)
        self.every_n_train_steps = None if every_n_train_steps is None else int(every_n_train_steps)
        self.measure_on_fit_start, self.measure_on_fit_end = bool(measure_on_fit_start), bool(measure_on_fit_end)
        self.log_scalars, self.csv_file = log_scalars, csv_file
        self.stage, self.seed, self.inputs, self.input_fn, self.submodule = stage, int(seed), inputs, input_fn, submodule
        self.per_channel, self.baseline, self.progress = bool(per_channel), bool(baseline), bool(progress)
        self.model_name, self.similarity, self.on_error = model_name, similarity, on_error
        self.measure_options, self.channel_actions, self.layouts = (dict(o or {}) for o in (measure_options, channel_actions, layouts))
        # state (state_dict): the probe set's indices and the measured history
        self._probes = ProbeSet(self.num_samples, self.seed, input_fn, owner="EquivarianceCallback")
        self._runs = History()  # {global step: scalars}, the epochs, a previous version's entries
        self._tried_step: Optional[int] = None  # the last global step a measurement was attempted at
        self._batch_epoch: Optional[int] = None  # the epoch of the last training batch of this fit
        self.last_report: Optional[MeasureReport] = None

    # ------------------------------------------------------------------ Lightning API
    @property
    def state_key(self) -> str:
        return self._generate_state_key(measures=self.measures, groups=self._group_names, stage=self.stage)

    @property
    def history(self) -> Dict[int, Dict[str, float]]:
        """``{epoch: {scalar name: value}}``: the last measurement of every measured epoch (a copy);
        every measurement is in :attr:`step_history`."""
        return self._runs.by_epoch()

    @property
    def step_history(self) -> Dict[int, Dict[str, float]]:
        """``{global step: {scalar name: value}}`` of every measurement (a copy): what was logged, and where."""
        return {s: dict(v) for s, v in sorted(self._runs.steps.items())}

    @property
    def _epochs(self) -> Dict[int, int]:
        return self._runs.epochs

    def state_dict(self) -> Dict[str, Any]:
        return {**self._probes.state_dict(), **self._runs.state_dict()}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self._probes.load_state_dict(state_dict)
        self._runs.load_state_dict(state_dict)  # a previous version's epoch-keyed history: see _map_legacy

    def _map_legacy(self, trainer: "pl.Trainer") -> None:
        """A previous version's epoch-keyed history gets the global steps of its epoch ends (:meth:`History.map_legacy`)."""
        self._runs.map_legacy(int(trainer.current_epoch), int(trainer.global_step))

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if stage != "fit":
            return
        unknown = [m for m in self.measures if m not in MEASURES]
        _require(not unknown, ValueError, f"measures: unknown measure(s) {unknown}; choose from {sorted(MEASURES)}")
        with _naming(f"submodule={self.submodule!r}", AttributeError):
            module = self._module(pl_module)
        with _naming(f"layers={self.layers!r}"):
            select_layers(module, self.layers)
        with _naming(f"EquivarianceCallback(measures={list(self.measures)}, groups={list(self.groups)})"):
            self._measurement(module, progress=False, device=None)  # the engine's checks of groups and options
        if self.stage == "validation":
            from lightning.pytorch.utilities.model_helpers import is_overridden

            if not is_overridden("validation_step", pl_module):
                raise ValueError(
                    f"stage='validation' but {type(pl_module).__name__} has no validation_step, so no validation "
                    "epoch ever ends; use EquivarianceCallback(stage='train')"
                )
            if trainer.limit_val_batches == 0 and self.inputs is None:
                rank_zero_warn(
                    "EquivarianceCallback(stage='validation'): limit_val_batches=0 disables validation, so there are "
                    "no validation probe images and nothing will be measured; use stage='train' or inputs=...",
                    category=UserWarning,
                )
        max_epochs = getattr(trainer, "max_epochs", None)
        if self.every_n_epochs is not None and max_epochs is not None and 0 <= max_epochs < self.every_n_epochs:
            rank_zero_warn(
                f"EquivarianceCallback(every_n_epochs={self.every_n_epochs}) with max_epochs={max_epochs}: "
                "no epoch end will be measured"
                + (" (only the end of fit)" if self.measure_on_fit_end else ""),
                category=UserWarning,
            )
        if self.every_n_epochs is None and self.every_n_train_steps is None and not (self.measure_on_fit_start or self.measure_on_fit_end):
            rank_zero_warn(
                "EquivarianceCallback(every_n_epochs=None, every_n_train_steps=None, measure_on_fit_start=False, "
                "measure_on_fit_end=False) never measures",
                category=UserWarning,
            )

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # Choose the probe indices at fit start where the source is already known (user inputs,
        # the training set); the validation set may only be loaded at its first run, in which case
        # they are chosen then. The choice depends only on (seed, source length, num_samples).
        try:
            data = dataset_of(self._source(trainer, required=False))
            if data is not None:
                self._probes.choose(len(data))
        except Exception as e:  # noqa: BLE001 - never stop training
            self._warn(f"could not choose the probe set at fit start ({type(e).__name__}: {e}); will retry at the first measurement")
        self._map_legacy(trainer)
        self._cut_csv(trainer)
        if self.measure_on_fit_start and self._fitting(trainer) and int(trainer.global_step) == 0:
            self._maybe_measure(trainer, pl_module)

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs, batch, batch_idx: int) -> None:
        self._batch_epoch = int(trainer.current_epoch)  # the epoch of the last step (for the end of fit)
        n = self.every_n_train_steps
        step = int(trainer.global_step)
        if n is None or step == 0 or step % n != 0 or not self._fitting(trainer):
            return
        if step == self._tried_step:
            return  # gradient accumulation: several batches end at the same optimizer step
        self._maybe_measure(trainer, pl_module)

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not self.measure_on_fit_end or not self._fitting(trainer):
            return
        step = int(trainer.global_step)
        if step == self._tried_step or step in self._runs.steps:
            return  # the last measurement was at this step
        # After the last epoch, trainer.current_epoch is one past it: record the epoch of the last step.
        epoch = self._batch_epoch if self._batch_epoch is not None else max(0, int(trainer.current_epoch) - 1)
        self._tried_step = step
        self.measure_now(trainer, pl_module, epoch)

    def on_validation_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.stage != "validation" or trainer.sanity_checking or not self._fitting(trainer):
            return
        loop = trainer.fit_loop.epoch_loop
        step_based = getattr(trainer, "check_val_every_n_epoch", 1) is None
        if not step_based and not getattr(loop.batch_progress, "is_last_batch", True):
            return  # a mid-epoch validation run (val_check_interval < 1): measure the end-of-epoch one
        self._epoch_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.stage != "train" or not self._fitting(trainer):
            return
        self._epoch_end(trainer, pl_module)

    def _epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        epoch = int(trainer.current_epoch)
        if self.every_n_epochs is None or (epoch + 1) % self.every_n_epochs != 0:
            return
        if epoch in self._runs.legacy:  # measured by the previous version (global step unknown)
            self._set_callback_metrics(trainer, self._runs.legacy[epoch])
            return
        self._maybe_measure(trainer, pl_module)

    # ------------------------------------------------------------------ when
    @staticmethod
    def _fitting(trainer: "pl.Trainer") -> bool:
        fn = getattr(getattr(trainer, "state", None), "fn", None)
        return fn is None or str(getattr(fn, "value", fn)) == "fit"

    def _maybe_measure(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        """Measure at ``trainer.global_step`` unless that step was measured already."""
        step = int(trainer.global_step)
        if step in self._runs.steps:
            # Already measured and logged (an epoch end re-run after resuming, both triggers at
            # one step): only make the values monitorable again, log nothing twice.
            self._set_callback_metrics(trainer, self._runs.steps[step])
            return
        self._tried_step = step
        self.measure_now(trainer, pl_module, int(trainer.current_epoch))

    # ------------------------------------------------------------------ measuring
    def _module(self, pl_module: nn.Module) -> nn.Module:
        module = pl_module
        if self.submodule:
            for part in self.submodule.split("."):
                module = getattr(module, part)
            if not isinstance(module, nn.Module):
                raise AttributeError(f"{self.submodule!r} is a {type(module).__name__}, not an nn.Module")
        return module

    def measure_now(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", epoch: Optional[int] = None
    ) -> Optional[MeasureReport]:
        """Measure now and log at ``trainer.global_step`` (what the triggers call); returns the report or ``None``.

        ``epoch`` (default ``trainer.current_epoch``) is recorded beside the step. Every process
        must call it (the metric states are synced). Never raises: failures become warnings.
        """
        epoch = int(trainer.current_epoch) if epoch is None else int(epoch)
        step = int(trainer.global_step)
        t0 = time.perf_counter()
        snapshot = _Snapshot(pl_module)
        distributed = self._distributed(trainer)
        report, error, measurement = None, "", None
        try:
            module = self._module(pl_module)
            if distributed:
                # DDP keeps parameters equal on every process, but buffers (BatchNorm statistics)
                # drift apart between DDP's broadcasts: measure rank zero's model everywhere
                # (each process gets its own buffers back from the snapshot).
                for buf in pl_module.buffers():
                    torch.distributed.broadcast(buf.data, src=0)
            images = self._probe_images(trainer)
            show = self.progress and trainer.is_global_zero and self._progress_bar_enabled(trainer)
            measurement = self._measurement(module, progress=show, device=pl_module.device)
            # global probe positions of this process's shard (names non-finite images)
            measurement.update(images, positions=self._probes.positions(int(trainer.global_rank), int(trainer.world_size)))
        except Exception as e:  # noqa: BLE001 - never stop training
            error = f"{type(e).__name__}: {e}"
        try:
            # Every process must reach the same collectives: agree first on success and on the
            # (layer, measure, group) states to sync, then compute.
            collectives = _Collectives(distributed)
            if measurement is None:
                collectives.all_gather_object(None)  # failed before measuring: still take part
            elif measurement.agree(collectives, ok=not error):
                report = measurement.compute()
            error = error or ("" if report is not None else "the measurement failed on another process")
        except Exception as e:  # noqa: BLE001
            report, error = None, error or f"{type(e).__name__}: {e}"
        finally:
            changed = snapshot.restore()
        if changed:
            self._warn(f"the measurement modified {len(changed)} parameter/buffer tensor(s) in place; restored them")
        if report is None:
            self._warn(f"epoch {epoch}, step {step}: measurement failed, nothing logged ({error})")
            return None
        self.last_report = report
        scalars = report.scalars()
        self._runs.add(step, epoch, scalars)
        self._publish(trainer, pl_module, step, epoch, report, scalars)
        seconds = time.perf_counter() - t0
        n_layers = len({r.layer for r in report.results})
        total = len(self._probes.indices) if self._probes.indices is not None else report.num_samples
        skipped = f", {len(report.errors)} (layer, measure, group) left out" if report.errors else ""
        rank_zero_info(
            f"EquivarianceCallback: epoch {epoch}, step {step}: {len(self.measures)} measure(s) x {len(self.groups)} group(s) "
            f"on {n_layers} layers of {total} probe images in {seconds:.2f}s{skipped}"
        )
        return report

    def _measurement(self, module: nn.Module, progress: bool, device) -> Measurement:
        return Measurement(
            module, measures=self.measures, groups=self.groups, layers=self.layers, batch_size=self.batch_size,
            similarity=self.similarity, measure_options=self.measure_options, channel_actions=self.channel_actions,
            layouts=self.layouts, on_error=self.on_error, progress=progress, device=device,
        )

    @staticmethod
    def _progress_bar_enabled(trainer: "pl.Trainer") -> bool:
        bar = getattr(trainer, "progress_bar_callback", None)
        return bar is not None and not getattr(bar, "is_disabled", False)

    @staticmethod
    def _distributed(trainer: "pl.Trainer") -> bool:
        return int(trainer.world_size) > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()

    # ------------------------------------------------------------------ probe set
    def _source(self, trainer: "pl.Trainer", required: bool = True):
        """The probe source: ``inputs``, else the (first) validation or the training dataloader."""
        if self.inputs is not None:
            return self.inputs
        loaders = trainer.val_dataloaders if self.stage == "validation" else trainer.train_dataloader
        if loaders is None and required and self.stage == "validation":
            # measuring before the first validation run (measure_on_fit_start, every_n_train_steps,
            # no sanity check): load the validation dataloaders now, as the validation loop would
            try:
                trainer.fit_loop.epoch_loop.val_loop.setup_data()
                loaders = trainer.val_dataloaders
            except Exception:  # noqa: BLE001 - reported below as "no validation dataloader"
                loaders = None
        if isinstance(loaders, Mapping):
            loaders = next(iter(loaders.values()), None)
        elif isinstance(loaders, (list, tuple)):
            loaders = loaders[0] if loaders else None
        if loaders is None and required:
            which = "validation" if self.stage == "validation" else "training"
            raise RuntimeError(f"no {which} dataloader to draw probe images from; pass inputs=...")
        return loaders

    def _probe_images(self, trainer: "pl.Trainer") -> torch.Tensor:
        """This process's probe images (read once, then cached by the probe set)."""
        rank, world = int(trainer.global_rank), int(trainer.world_size)
        images = self._probes.cached(rank, world)
        return images if images is not None else self._probes.images(self._source(trainer), rank, world)

    # ------------------------------------------------------------------ logging
    @staticmethod
    def _set_callback_metrics(trainer: "pl.Trainer", scalars: Mapping[str, float]) -> None:
        trainer.callback_metrics.update({k: torch.tensor(v, dtype=torch.float32) for k, v in scalars.items()})

    def _publish(self, trainer, pl_module, step: int, epoch: int, report: MeasureReport, scalars: Dict[str, float]) -> None:
        where = f"epoch {epoch}, step {step}"
        try:
            self._set_callback_metrics(trainer, scalars)
        except Exception as e:  # noqa: BLE001
            self._warn(f"{where}: could not set trainer.callback_metrics ({type(e).__name__}: {e})")
        if not trainer.is_global_zero:
            return
        logged = select_scalars(scalars, self.log_scalars)
        for logger in trainer.loggers if logged else ():
            try:
                logger.log_metrics(logged, step=step)
            except Exception as e:  # noqa: BLE001
                self._warn(f"{where}: {type(logger).__name__}.log_metrics failed ({type(e).__name__}: {e})")
        self._write_csv(trainer, step, epoch, report)
        tb_loggers = [lg for lg in trainer.loggers if _is_tensorboard_logger(lg)]
        if not tb_loggers:
            return
        try:
            from lightning_equivariance_tb.summary import write_series
        except Exception as e:  # noqa: BLE001
            self._warn(f"the TensorBoard writer lightning_equivariance_tb.summary is unavailable ({type(e).__name__}: {e})")
            return
        model = self.model_name or type(self._module(pl_module)).__name__
        for logger in tb_loggers:
            for s in report.series():
                # One series at a time: a bad series (e.g. a NaN value) loses only itself.
                try:
                    write_series(
                        logger.experiment,
                        [s],
                        step=step,
                        model=model,
                        baseline=self.baseline,
                        per_channel=self.per_channel,
                        epoch=epoch,
                        global_step=step,
                    )
                except Exception as e:  # noqa: BLE001
                    self._warn(
                        f"{where}: TensorBoard summary of {s.measure}/{s.group} not written "
                        f"({type(e).__name__}: {e})"
                    )

    # ------------------------------------------------------------------ tidy CSV
    def csv_path(self, trainer: "pl.Trainer") -> Optional[str]:
        """Where the tidy CSV goes: ``csv_file`` in the first logger's directory (``None``: no CSV)."""
        if self.csv_file is None or not trainer.loggers:
            return None
        logger = trainer.loggers[0]
        folder = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
        return os.path.join(str(folder), self.csv_file) if folder else None

    def _write_csv(self, trainer: "pl.Trainer", step: int, epoch: int, report: MeasureReport) -> None:
        try:
            path = self.csv_path(trainer)
            if path is not None:
                append_tidy_csv(path, step, epoch, report.results)
        except Exception as e:  # noqa: BLE001
            self._warn(f"epoch {epoch}, step {step}: the tidy CSV was not written ({type(e).__name__}: {e})")

    def _cut_csv(self, trainer: "pl.Trainer") -> None:
        """On resume, drop the tidy CSV's rows after the resumed global step (they will be measured again)."""
        try:
            path = self.csv_path(trainer) if trainer.is_global_zero else None
            if path is not None:
                cut_tidy_csv(path, int(trainer.global_step), self._runs.steps)
        except Exception as e:  # noqa: BLE001
            self._warn(f"could not cut the tidy CSV back to the resumed step ({type(e).__name__}: {e})")

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

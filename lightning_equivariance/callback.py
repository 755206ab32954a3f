"""``EquivarianceCallback``: per-layer learned equivariance during training, for a Lightning ``Trainer``.

The only module of :mod:`lightning_equivariance` that imports Lightning: the glue between the
trainer's hooks, strategy and loggers and :class:`~lightning_equivariance.Measurement` (engine),
:class:`~lightning_equivariance.probe_set.ProbeSet` (probe images),
:class:`~lightning_equivariance.snapshot.Snapshot` (side-effect guard) and
:mod:`~lightning_equivariance.run_log` (history, publishing, tidy CSV, end-of-fit table).
Its arguments are checked in :mod:`~lightning_equivariance.callback_args`, where
:class:`~lightning_equivariance.callback_args.MeasureTrigger` decides at each hook whether to
measure now; ``docs/callback.md`` is the user's guide. Example::

    callback = EquivarianceCallback(groups=(Rotation90(), Translation(max_shift=4)), every_n_train_steps=200)
    trainer = pl.Trainer(max_epochs=10, callbacks=[callback])   # TensorBoardLogger by default
    trainer.fit(model, datamodule=dm)
    # tensorboard --logdir lightning_logs  -> the "Equivariance" tab
    # pandas.read_csv(".../version_0/equivariance.csv", dtype={"layer": str})  -> every layer, every step
"""
from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.model_helpers import is_overridden
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import nn

from .callback_args import (
    FIT_END,
    FIT_START,
    TRAIN_BATCH_END,
    TRAIN_EPOCH_END,
    TRAIN_EPOCH_START,
    UNSET,
    VALIDATE_END,
    VALIDATION_EPOCH_END,
    MeasureTrigger,
    check_callback_args,
    naming,
    schedule_problems,
)
from .engine import LayerNames, LayerSpec, Measurement, MeasureReport
from .groups import Group, Rotation90
from .logger_figures import log_figures
from .probe_set import ProbeSet, dataset_of, first_loader
from .run_log import History, cut_tidy_csv, fit_summary, model_display_name, publish, tidy_csv_path
from .snapshot import Snapshot, rngs_restored

__all__ = ["EquivarianceCallback"]


class _StrategyCollectives:
    """The engine's collectives (``all_gather_object``) over the trainer's strategy: each process's
    object broadcast in turn with ``strategy.broadcast`` (any strategy, not only torch.distributed)."""

    def __init__(self, trainer: "pl.Trainer"):
        self.strategy, self.world = trainer.strategy, int(trainer.world_size)

    def all_gather_object(self, obj) -> List[Any]:
        return [obj] if self.world == 1 else [self.strategy.broadcast(obj, src=r) for r in range(self.world)]


class EquivarianceCallback(Callback):
    r"""Measure per-layer learned equivariance during training and log it at the global step.

    The whole behaviour is described in ``docs/callback.md``; in short:

    **When.** After optimizer steps ``N, 2N, ...`` (``every_n_train_steps=N``), at the end of
    every ``every_n_epochs``-th epoch (default 1, ``None`` when ``every_n_train_steps`` is given;
    never in the sanity check), at the end of fit (``measure_on_fit_end``, unless the last
    measurement was at that step), before the first step (``measure_on_fit_start``) and in
    ``trainer.validate()`` (``measure_on_validate``). A global step is measured at most once;
    ``setup`` warns once about a configuration that never measures.

    **How.** :class:`~lightning_equivariance.Measurement` on a fixed, seeded probe set, on
    ``pl_module.device`` in eval mode under ``no_grad``; modes, buffers, parameters, the global
    RNGs and the dataset's own generators are put back: training is bit-for-bit the same. Layer
    names are relative to the LightningModule's single child module when it has exactly one
    with parameters (``model.conv1`` is reported as ``conv1``, as ``measure(model)`` and the CLI
    name it); ``layers=`` and ``layouts=`` accept either form. In DDP each process measures a
    contiguous shard of whole pairs of probe positions and the states are summed.

    **Logging** at ``trainer.global_step``, the epoch beside it: every layer's value in
    ``trainer.callback_metrics``; ``log_scalars`` (part means by default) to the loggers;
    per-layer summaries (chance, standard errors, refused layers) to every ``TensorBoardLogger``;
    a tidy CSV ``csv_file`` in the first logger's directory; at the end of fit a table of the
    part means (first vs last measurement) and of the time spent measuring. The history (by
    global step) is in ``state_dict``, so a resumed run repeats and skips nothing.

    **Failures never stop training**: what cannot be measured is left out and named in one
    warning; any other error of measuring or logging becomes a warning.

    Args:
        measures: measure names from :data:`lightning_equivariance.metrics.MEASURES`.
        groups: :class:`~lightning_equivariance.groups.Group` instances or names (and, for
            measure ``"lee"``, its continuous transforms), as for :func:`~lightning_equivariance.measure`.
        layers: ``"auto"``, qualified names, module types or a predicate (see
            :func:`~lightning_equivariance.select_layers`); ``"auto"`` and the name ``"(output)"``
            also measure the model's own output where no selected module returns it (docs/layers.md).
        num_samples: probe-set size (all of the source if it has fewer).
        every_n_epochs: measure at the end of epochs ``e`` with ``(e + 1) % every_n_epochs == 0``;
            ``None``: never at epoch ends. Default: 1, or ``None`` when ``every_n_train_steps`` is given.
        stage: where probe images come from and which epoch end ``every_n_epochs`` means:
            ``"validation"`` (the validation set; after the epoch's last validation run) or
            ``"train"`` (the training set; at ``on_train_epoch_end``).
        batch_size: images per forward, transformed copies included (bounds memory).
        per_channel: also write per-channel values to TensorBoard (heatmaps).
        seed: seed of the probe-set choice and of the probe images' random transforms.
        inputs: probe images: tensor ``N x C x H x W``, map-style ``Dataset`` or ``DataLoader``.
        input_fn: ``input_fn(batch) -> tensor B x C x H x W``, overriding the input rule.
        model_name: model name shown in the TensorBoard tab (default: the measured network's class and
            parameter count, ``"ResNet (11,181,642 params)"``; the network is the LightningModule's single
            child with parameters, as in the layer names, else the module measured).
        baseline: flag the run as a reference model (drawn dashed in the tab).
        submodule: dotted attribute path of the module to measure inside ``pl_module``; layer
            names are then relative to it.
        similarity: ``"pearson"`` (default) or ``"cosine"`` for the correlation measures.
        measure_options: further options for the measures (see :class:`~lightning_equivariance.Measurement`).
        channel_actions: ``{layer: channel_action}`` declared by the architecture.
        layouts: ``{layer: "channels_first" | "channels_last" | "tokens" | "tokens_transposed"}``: how to
            read a layer, overriding what the probe finds on evidence (see
            :func:`~lightning_equivariance.layers.discover_layouts`).
        on_error: ``"warn"`` (default): a (layer, measure, group) that cannot be measured is left
            out and named in one warning; ``"raise"``: the measurement fails at the first such
            error (a warning; training goes on either way).
        progress: show the measurement's progress when the trainer shows its bar: a bar where stderr
            is a terminal, else one line per measurement, what and how long (CI logs, notebooks).
            Lightning's own bar stays as the Trainer is told (``enable_progress_bar``); every
            measurement is also logged in one line at INFO level.
        every_n_train_steps: measure after optimizer steps ``N, 2N, ...``; ``None`` (default): no step trigger.
        measure_on_fit_start: also measure before the first optimizer step (global step 0).
        measure_on_fit_end: also measure at the end of fit unless the last measurement was at
            that global step (default ``True``).
        log_scalars: which scalars go to the loggers: ``"parts"`` (default), ``"layers"``,
            ``"none"`` or a list of scalar names; ``trainer.callback_metrics`` always has all.
        csv_file: file name of the tidy CSV in the first logger's directory; ``None``: none.
        run_group: a name grouping runs (seeds of one configuration) in the TensorBoard tab.
        measure_on_validate: also measure in ``trainer.validate()`` (at the model's global step).
        summary: print the end-of-fit table (rank zero, ``rank_zero_info``).

    Raises:
        ValueError / TypeError: at construction or in ``setup``, naming the bad argument.

    Example::

        >>> from lightning_equivariance import EquivarianceCallback, Rotation90
        >>> cb = EquivarianceCallback(groups=(Rotation90(),), num_samples=256, every_n_epochs=2)
        >>> cb.state_key == ("EquivarianceCallback{'measures': ('invariance', 'equivariance'), "
        ...                  "'groups': ('rotation90',), 'stage': 'validation'}")
        True
    """

    def __init__(
        self,
        measures: Sequence[str] = ("invariance", "equivariance"),
        groups: Sequence[Union[str, Group]] = (Rotation90(),),
        layers: LayerSpec = "auto",
        num_samples: int = 512,
        every_n_epochs: Optional[int] = UNSET,
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
        run_group: Optional[str] = None,
        measure_on_validate: bool = False,
        summary: bool = True,
    ):
        super().__init__()
        args = check_callback_args(dict(
            measures=measures, groups=groups, layers=layers, num_samples=num_samples, every_n_epochs=every_n_epochs,
            stage=stage, batch_size=batch_size, per_channel=per_channel, seed=seed, inputs=inputs, input_fn=input_fn,
            model_name=model_name, baseline=baseline, submodule=submodule, similarity=similarity,
            measure_options=measure_options, channel_actions=channel_actions, layouts=layouts, on_error=on_error,
            progress=progress, every_n_train_steps=every_n_train_steps, measure_on_fit_start=measure_on_fit_start,
            measure_on_fit_end=measure_on_fit_end, log_scalars=log_scalars, csv_file=csv_file, run_group=run_group,
            measure_on_validate=measure_on_validate, summary=summary,
        ))
        # what is measured, and how (layers, layouts and channel_actions are made qualified in setup)
        self.measures = args.measures
        self.groups = args.groups
        self._group_names = args.group_names  # the state key's
        self.layers = args.layers
        self.layouts = args.layouts
        self.channel_actions = args.channel_actions
        self.submodule = args.submodule
        self.similarity = args.similarity
        self.measure_options = args.measure_options
        self.on_error = args.on_error
        self.batch_size = args.batch_size
        self.progress = args.progress
        # the probe images
        self.num_samples = args.num_samples
        self.seed = args.seed
        self.inputs = args.inputs
        self.input_fn = args.input_fn
        self.stage = args.stage
        # when (the decision itself is the trigger's, below)
        self.every_n_epochs = args.every_n_epochs
        self.every_n_train_steps = args.every_n_train_steps
        self.measure_on_fit_start = args.measure_on_fit_start
        self.measure_on_fit_end = args.measure_on_fit_end
        self.measure_on_validate = args.measure_on_validate
        # logging
        self.log_scalars = args.log_scalars
        self.csv_file = args.csv_file
        self.per_channel = args.per_channel
        self.model_name = args.model_name
        self.baseline = args.baseline
        self.run_group = args.run_group
        self.summary = args.summary
        # state (state_dict): the probe set's indices and the measured history
        self._probes = ProbeSet(self.num_samples, self.seed, self.input_fn, owner="EquivarianceCallback")
        self._runs = History()  # {global step: scalars}, the epochs, a previous version's entries
        self._trigger = MeasureTrigger.from_args(args, self._runs)
        self._names = LayerNames()  # display names relative to the single child module, set in setup
        self._clock = [0.0, 0.0]  # fit start (perf_counter), seconds spent measuring in this fit
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

    def state_dict(self) -> Dict[str, Any]:
        return {**self._probes.state_dict(), **self._runs.state_dict()}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self._probes.load_state_dict(state_dict)
        self._runs.load_state_dict(state_dict)  # a previous version's epoch-keyed history: mapped at fit start

    def _map_legacy(self, trainer: "pl.Trainer") -> None:
        """A previous version's epoch-keyed history gets the global steps of its epoch ends."""
        self._runs.map_legacy(int(trainer.current_epoch), int(trainer.global_step))

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        measured_stage = stage == TrainerFn.FITTING or (stage == TrainerFn.VALIDATING and self.measure_on_validate)
        if not measured_stage:
            return
        with naming(f"submodule={self.submodule!r}", AttributeError):
            module = self._module(pl_module)
        self._names = LayerNames() if self.submodule else LayerNames.of(pl_module)
        self.layers, self.layouts, self.channel_actions = (
            self._names.qualified(names, module) for names in (self.layers, self.layouts, self.channel_actions)
        )
        with naming(f"layers={self.layers!r}"):
            LayerNames.selected(module, self.layers)
        with naming(f"EquivarianceCallback(measures={list(self.measures)}, groups={list(self.groups)})"):
            self._measurement(module, progress=False, device=None)  # the engine's checks of measures, groups, options
        if stage == TrainerFn.FITTING:
            for message in schedule_problems(
                self,
                has_validation_step=is_overridden("validation_step", pl_module),
                module_name=type(pl_module).__name__,
                limit_val_batches=trainer.limit_val_batches,
                max_epochs=trainer.max_epochs,
            ):
                rank_zero_warn(message, category=UserWarning)

    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._clock = [time.perf_counter(), 0.0]

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # Choose the probe indices at fit start where the source is already known (user inputs,
        # the training set); the validation set may only be loaded at its first run, in which case
        # they are chosen then. The choice depends only on (seed, source length, num_samples).
        try:
            data = dataset_of(self._source(trainer, required=False))
            if data is not None:
                self._probes.choose(len(data))
        except Exception as e:  # noqa: BLE001 - never stop training
            self._warn(
                f"could not choose the probe set at fit start ({type(e).__name__}: {e}); "
                "will retry at the first measurement"
            )
        self._map_legacy(trainer)
        self._cut_csv(trainer)
        self._on(FIT_START, trainer, pl_module)

    def on_train_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._on(TRAIN_EPOCH_START, trainer, pl_module)

    def on_train_batch_end(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs, batch, batch_idx: int
    ) -> None:
        # The last batch of the epoch (an unknown length: every validation run may be the last one).
        batches = trainer.num_training_batches
        self._on(TRAIN_BATCH_END, trainer, pl_module, last_batch=batch_idx + 1 >= batches or batches == float("inf"))

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._on(FIT_END, trainer, pl_module)
        if self.summary and self._runs.steps:
            seconds = time.perf_counter() - self._clock[0]
            rank_zero_info("EquivarianceCallback, end of fit:\n" + fit_summary(self._runs, self._clock[1], seconds))

    def on_validation_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._on(VALIDATE_END, trainer, pl_module)
        elif trainer.state.fn == TrainerFn.FITTING:
            self._on(VALIDATION_EPOCH_END, trainer, pl_module, sanity_check=bool(trainer.sanity_checking),
                     validation_by_steps=trainer.check_val_every_n_epoch is None)

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        self._on(TRAIN_EPOCH_END, trainer, pl_module)

    def _on(self, moment: str, trainer: "pl.Trainer", pl_module: "pl.LightningModule", **facts: bool) -> None:
        """Tell the trigger the trainer's ``moment`` and do what it decides: measure now, or make the
        values of a step measured already monitorable again (logging nothing twice)."""
        decision = self._trigger.decide(moment, int(trainer.global_step), int(trainer.current_epoch), **facts)
        if decision is None:
            return
        if decision.measure:
            self.measure_now(trainer, pl_module, decision.epoch)
        else:
            self._set_callback_metrics(trainer, decision.scalars)

    # ------------------------------------------------------------------ measuring
    def _module(self, pl_module: nn.Module) -> nn.Module:
        module = pl_module
        for part in self.submodule.split(".") if self.submodule else ():
            module = getattr(module, part)
        if not isinstance(module, nn.Module):
            raise AttributeError(f"{self.submodule!r} is a {type(module).__name__}, not an nn.Module")
        return module

    def measure_now(
        self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", epoch: Optional[int] = None
    ) -> Optional[MeasureReport]:
        """Measure now and log at ``trainer.global_step`` (what the triggers call); returns the report or ``None``.

        ``epoch`` (default ``trainer.current_epoch``) is recorded beside the step. Every process
        must call it (the metric states are synced). Never raises an ``Exception``: failures
        become warnings; a ``KeyboardInterrupt`` propagates after everything is put back.
        """
        epoch = int(trainer.current_epoch) if epoch is None else int(epoch)
        step, t0 = int(trainer.global_step), time.perf_counter()
        report, error = None, ""
        with rngs_restored(cuda=True):
            snapshot = Snapshot(pl_module)
            try:
                report, error = self._measure(trainer, pl_module)
            finally:
                written = snapshot.restore()
        if written:
            report, error = None, (
                f"the measurement wrote parameter(s) {written} in place (they cannot be put back; "
                "a layer's forward must not modify its parameters in eval mode under no_grad)"
            )
        self._clock[1] += time.perf_counter() - t0
        if report is None:
            self._warn(f"epoch {epoch}, step {step}: measurement failed, nothing logged ({error})")
            return None
        self.last_report = report = report.relabeled(self._names.shown)
        scalars = report.scalars()
        self._runs.add(step, epoch, scalars)
        self._publish(trainer, pl_module, step, epoch, report, scalars)
        skipped = f", {len(report.errors)} (layer, measure, group) left out" if report.errors else ""
        rank_zero_info(
            f"EquivarianceCallback: epoch {epoch}, step {step}: "
            f"{len(self.measures)} measure(s) x {len(self.groups)} group(s) "
            f"on {len({r.layer for r in report.results})} layers of {len(self._probes.indices)} probe images "
            f"in {time.perf_counter() - t0:.2f}s{skipped}"
        )
        return report

    def _measure(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule"):
        """``(report, "")`` or ``(None, reason)``; every process reaches the same collectives."""
        error, measurement = "", None
        try:
            module = self._module(pl_module)
            if trainer.world_size > 1:
                # DDP keeps parameters equal on every process, but buffers (BatchNorm statistics)
                # drift apart between DDP's broadcasts: measure rank zero's buffers everywhere
                # (each process gets its own back from the snapshot).
                buffers = list(pl_module.buffers())
                for buf, zero in zip(buffers, trainer.strategy.broadcast([b.data for b in buffers], src=0)):
                    buf.data.copy_(zero)
            images = self._probe_images(trainer)
            bar = trainer.progress_bar_callback
            show = self.progress and trainer.is_global_zero and bar is not None and not bar.is_disabled
            measurement = self._measurement(module, progress=show, device=pl_module.device)
            # global probe positions of this process's shard (names non-finite images)
            positions = self._probes.positions(int(trainer.global_rank), int(trainer.world_size))
            measurement.update(images, positions=positions)
        except Exception as e:  # noqa: BLE001 - never stop training
            error = f"{type(e).__name__}: {e}"
        try:
            # Agree first on success and on the (layer, measure, group) states to sync, then compute.
            collectives = _StrategyCollectives(trainer)
            if measurement is None:
                collectives.all_gather_object(None)  # failed before measuring: still take part
            elif measurement.agree(collectives, ok=not error):
                return measurement.compute(), ""
            return None, error or "the measurement failed on another process"
        except Exception as e:  # noqa: BLE001 - never stop training
            return None, error or f"{type(e).__name__}: {e}"

    def _measurement(self, module: nn.Module, progress: bool, device) -> Measurement:
        return Measurement(
            module, measures=self.measures, groups=self.groups, layers=self.layers, batch_size=self.batch_size,
            similarity=self.similarity, measure_options=self.measure_options, channel_actions=self.channel_actions,
            layouts=self.layouts, on_error=self.on_error, progress=progress, device=device,
        )

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
        loaders = first_loader(loaders)
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

    def _publish(
        self, trainer, pl_module, step: int, epoch: int, report: MeasureReport, scalars: Dict[str, float]
    ) -> None:
        try:
            self._set_callback_metrics(trainer, scalars)
        except Exception as e:  # noqa: BLE001 - never stop training
            self._warn(f"epoch {epoch}, step {step}: could not set trainer.callback_metrics ({type(e).__name__}: {e})")
        try:
            if trainer.is_global_zero:
                publish(
                    report, scalars, step, epoch, loggers=trainer.loggers, log_scalars=self.log_scalars,
                    csv_path=self.csv_path(trainer),
                    tb_loggers=[lg for lg in trainer.loggers if _is_tensorboard_logger(lg)],
                    warn=self._warn,
                    model=self.model_name or model_display_name(self._module(pl_module), self._names.prefix),
                    baseline=self.baseline, run_group=self.run_group, per_channel=self.per_channel,
                )
                log_figures(trainer.loggers, self._runs, report, step)  # W&B and MLflow: the tab's views as figures
        except Exception as e:  # noqa: BLE001 - logging never stops training
            self._warn(f"epoch {epoch}, step {step}: logging failed ({type(e).__name__}: {e})")

    def csv_path(self, trainer: "pl.Trainer") -> Optional[str]:
        """Where the tidy CSV goes: ``csv_file`` in the first logger's directory (``None``: no CSV)."""
        return tidy_csv_path(trainer.loggers, self.csv_file)

    def _cut_csv(self, trainer: "pl.Trainer") -> None:
        """On resume, drop the tidy CSV's rows after the resumed global step (they will be measured again)."""
        try:
            path = self.csv_path(trainer) if trainer.is_global_zero else None
            if path is not None:
                cut_tidy_csv(path, int(trainer.global_step), self._runs.steps)
        except Exception as e:  # noqa: BLE001 - never stop training
            self._warn(f"could not cut the tidy CSV back to the resumed step ({type(e).__name__}: {e})")

    @staticmethod
    def _warn(message: str) -> None:
        rank_zero_warn(f"EquivarianceCallback: {message}", category=RuntimeWarning, stacklevel=3)


def _is_tensorboard_logger(logger) -> bool:
    from lightning.fabric.loggers import TensorBoardLogger as FabricTB
    from lightning.pytorch.loggers import TensorBoardLogger

    return isinstance(logger, (TensorBoardLogger, FabricTB))

"""The arguments of :class:`~lightning_equivariance.callback.EquivarianceCallback`, checked at
construction, and the schedule they describe.

No Lightning here: what can be checked without a model and a trainer is checked when the
callback is built (:func:`check_callback_args`, returning a :class:`CallbackArgs`), each error
naming its argument; what needs the model (measure names, groups, layers, layouts) is checked by
the engine in the callback's ``setup``. :class:`MeasureTrigger` decides, at each of the
trainer's moments, whether to measure now (as Lightning's ``EarlyStopping`` keeps its decision
in one place); :func:`schedule_problems` names configurations that never measure.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from .probe_set import check_inputs

__all__ = [
    "STAGES", "LOG_SCALARS", "UNSET", "CallbackArgs", "check_callback_args", "naming", "schedule_problems",
    "MeasureTrigger", "Decision", "FIT_START", "TRAIN_EPOCH_START", "TRAIN_BATCH_END", "TRAIN_EPOCH_END",
    "VALIDATION_EPOCH_END", "VALIDATE_END", "FIT_END", "MOMENTS",
]

STAGES = ("validation", "train")
LOG_SCALARS = ("parts", "layers", "none")
#: ``every_n_epochs`` not given: 1, or ``None`` when ``every_n_train_steps`` is given
UNSET: Any = object()


def _require(ok: bool, error: type, message: str) -> None:
    if not ok:
        raise error(message)


def _is_int(value, low: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= low


@contextmanager
def naming(argument: str, catch: type = Exception) -> Iterator[None]:
    """Re-raise an error of the block as a ``ValueError`` naming the argument."""
    try:
        yield
    except catch as e:
        raise ValueError(f"{argument}: {e}") from e


@dataclass(frozen=True)
class CallbackArgs:
    """The callback's arguments, checked and normalised by :func:`check_callback_args` (see
    :class:`~lightning_equivariance.callback.EquivarianceCallback` for each one), plus
    ``group_names`` (the groups' names, for the state key)."""

    measures: Tuple[str, ...]
    groups: Tuple[Any, ...]
    group_names: Tuple[str, ...]
    layers: Any
    num_samples: int
    every_n_epochs: Optional[int]
    stage: str
    batch_size: int
    per_channel: bool
    seed: int
    inputs: Any
    input_fn: Optional[Callable[[Any], Any]]
    model_name: Optional[str]
    baseline: bool
    submodule: Optional[str]
    similarity: str
    measure_options: Dict[str, Any]
    channel_actions: Dict[str, Any]
    layouts: Dict[str, str]
    on_error: str
    progress: bool
    every_n_train_steps: Optional[int]
    measure_on_fit_start: bool
    measure_on_fit_end: bool
    log_scalars: Union[str, Tuple[str, ...]]
    csv_file: Optional[str]
    run_group: str
    measure_on_validate: bool
    summary: bool


def check_callback_args(a: Mapping[str, Any]) -> CallbackArgs:
    """The callback's arguments ``a`` (its ``__init__``'s names) checked and normalised; raises
    ``ValueError``/``TypeError`` naming the first bad argument."""
    a = dict(a)
    if a["every_n_epochs"] is UNSET:
        # as Lightning's ModelCheckpoint: step- and epoch-based triggers are kept apart
        a["every_n_epochs"] = None if a["every_n_train_steps"] is not None else 1
    measures = (a["measures"],) if isinstance(a["measures"], str) else a["measures"]
    _require(
        isinstance(measures, (list, tuple)) and len(measures) > 0 and all(isinstance(m, str) for m in measures),
        TypeError, f"measures must be a non-empty sequence of measure names, got {measures!r}",
    )
    _require(len(set(measures)) == len(measures), ValueError, f"measures has duplicates: {list(measures)}")
    groups = a["groups"]
    groups = (groups,) if isinstance(groups, str) or not isinstance(groups, (list, tuple)) else groups
    # Groups are resolved by the engine in ``setup`` (discrete groups, and the continuous
    # transforms of "lee"); here only their names, for the state key.
    names = [g.lower() if isinstance(g, str) else getattr(g, "name", None) for g in groups]
    _require(
        len(names) > 0 and all(isinstance(n, str) and n for n in names),
        ValueError, f"groups must be a non-empty sequence of group names or Group objects, got {groups!r}",
    )
    _require(
        len(set(names)) == len(names),
        ValueError, f"groups must have distinct names, got {names}; pass name=... to tell them apart",
    )
    for argument, low in (("num_samples", 1), ("batch_size", 1), ("seed", 0)):
        _require(_is_int(a[argument], low), ValueError, f"{argument} must be an integer >= {low}, got {a[argument]!r}")
    for argument in ("every_n_epochs", "every_n_train_steps"):
        value = a[argument]
        _require(
            value is None or _is_int(value, 1), ValueError, f"{argument} must be None or an integer >= 1, got {value!r}"
        )
    log_scalars = a["log_scalars"]
    if isinstance(log_scalars, str):
        _require(
            log_scalars in LOG_SCALARS,
            ValueError, f"log_scalars must be one of {LOG_SCALARS} or a list of scalar names, got {log_scalars!r}",
        )
    else:
        _require(
            isinstance(log_scalars, (list, tuple, set, frozenset)) and all(isinstance(n, str) for n in log_scalars),
            TypeError, f"log_scalars must be one of {LOG_SCALARS} or a list of scalar names, got {log_scalars!r}",
        )
        log_scalars = tuple(log_scalars)
    csv_file = a["csv_file"]
    _require(
        csv_file is None or (isinstance(csv_file, str) and csv_file and os.path.basename(csv_file) == csv_file),
        ValueError, f"csv_file must be None or a file name (no directory), got {csv_file!r}",
    )
    _require(a["stage"] in STAGES, ValueError, f"stage must be one of {STAGES}, got {a['stage']!r}")
    _require(
        a["input_fn"] is None or callable(a["input_fn"]),
        TypeError, f"input_fn must be callable (batch -> B x C x H x W tensor), got {type(a['input_fn']).__name__}",
    )
    if a["inputs"] is not None:
        check_inputs(a["inputs"])
    expected_types = (
        ("model_name", "a string"), ("submodule", "a dotted attribute path (str)"), ("run_group", "a string")
    )
    for argument, what in expected_types:
        value = a[argument]
        _require(
            value is None or isinstance(value, str), TypeError, f"{argument} must be {what}, got {type(value).__name__}"
        )
    _require(
        a["on_error"] in ("warn", "raise"), ValueError, f"on_error must be 'warn' or 'raise', got {a['on_error']!r}"
    )
    for argument in ("layouts", "channel_actions", "measure_options"):
        _require(
            a[argument] is None or isinstance(a[argument], Mapping),
            TypeError, f"{argument} must be a mapping (see Measurement), got {type(a[argument]).__name__}",
        )
    return CallbackArgs(**dict(
        a,
        measures=tuple(measures), groups=tuple(groups), group_names=tuple(names), log_scalars=log_scalars,
        num_samples=int(a["num_samples"]), batch_size=int(a["batch_size"]), seed=int(a["seed"]),
        every_n_epochs=None if a["every_n_epochs"] is None else int(a["every_n_epochs"]),
        every_n_train_steps=None if a["every_n_train_steps"] is None else int(a["every_n_train_steps"]),
        **{k: bool(a[k]) for k in ("measure_on_fit_start", "measure_on_fit_end", "measure_on_validate", "per_channel",
                                   "baseline", "progress", "summary")},
        **{k: dict(a[k] or {}) for k in ("measure_options", "channel_actions", "layouts")},
        run_group=a["run_group"] or "",
    ))


def schedule_problems(
    cb, *, has_validation_step: bool, module_name: str, limit_val_batches, max_epochs: Optional[int]
) -> List[str]:
    """The warnings of a callback ``cb`` (its checked arguments) whose configuration will never
    measure on this trainer; raises ``ValueError`` for ``stage="validation"`` without a
    ``validation_step`` (no validation epoch ever ends)."""
    problems = []
    if cb.stage == "validation":
        if not has_validation_step:
            raise ValueError(
                f"stage='validation' but {module_name} has no validation_step, so no validation "
                "epoch ever ends; use EquivarianceCallback(stage='train')"
            )
        if limit_val_batches == 0 and cb.inputs is None:
            problems.append(
                "EquivarianceCallback(stage='validation'): limit_val_batches=0 disables validation, so there are "
                "no validation probe images and nothing will be measured; use stage='train' or inputs=..."
            )
    if cb.every_n_epochs is not None and max_epochs is not None and 0 <= max_epochs < cb.every_n_epochs:
        problems.append(
            f"EquivarianceCallback(every_n_epochs={cb.every_n_epochs}) with max_epochs={max_epochs}: "
            "no epoch end will be measured" + (" (only the end of fit)" if cb.measure_on_fit_end else "")
        )
    never_triggered = cb.every_n_epochs is None and cb.every_n_train_steps is None
    if never_triggered and not (cb.measure_on_fit_start or cb.measure_on_fit_end):
        problems.append(
            "EquivarianceCallback(every_n_epochs=None, every_n_train_steps=None, measure_on_fit_start=False, "
            "measure_on_fit_end=False) never measures"
        )
    return problems


#: The trainer's moments :meth:`MeasureTrigger.decide` is told about (one per callback hook).
FIT_START = "fit_start"  # on_train_start
TRAIN_EPOCH_START = "train_epoch_start"
TRAIN_BATCH_END = "train_batch_end"  # with last_batch
TRAIN_EPOCH_END = "train_epoch_end"
VALIDATION_EPOCH_END = "validation_epoch_end"  # inside fit; with validation_by_steps and sanity_check
VALIDATE_END = "validate_end"  # the validation epoch end of trainer.validate()
FIT_END = "fit_end"  # on_train_end
MOMENTS = (FIT_START, TRAIN_EPOCH_START, TRAIN_BATCH_END, TRAIN_EPOCH_END, VALIDATION_EPOCH_END, VALIDATE_END, FIT_END)


@dataclass(frozen=True)
class Decision:
    """What :meth:`MeasureTrigger.decide` says: measure now, recording ``epoch`` beside the global step
    (``scalars is None``); or the step (or a previous version's epoch) was measured already, and its
    ``scalars`` are only made monitorable again (``trainer.callback_metrics``), nothing logged twice."""

    epoch: int
    scalars: Optional[Mapping[str, float]] = None

    @property
    def measure(self) -> bool:
        return self.scalars is None


class MeasureTrigger:
    """When the callback measures: its schedule and what it has seen of the fit, in one place.

    :meth:`decide` is told each of the trainer's moments (:data:`MOMENTS`) with the global step and
    the epoch, and says whether to measure now. A global step is measured at most once: a step in
    ``history.steps`` (the callback's :class:`~lightning_equivariance.run_log.History`, read only)
    is replayed, and so is an epoch that a previous version's checkpoint measured
    (``history.legacy``). What it keeps of the fit:

    * ``tried_step``: the last global step a measurement was decided at (gradient accumulation
      ends several batches at one optimizer step; the end of fit does not repeat the last one);
    * ``batch_epoch``: the epoch of the last training batch (after the last epoch,
      ``trainer.current_epoch`` is one past it: the end of fit records this one);
    * ``epoch_done``: the current epoch's last training batch has ended (so the validation run
      that follows is the epoch's end, not a mid-epoch run with ``val_check_interval < 1``).
    """

    def __init__(
        self, *, every_n_train_steps: Optional[int], every_n_epochs: Optional[int], stage: str,
        measure_on_fit_start: bool, measure_on_fit_end: bool, measure_on_validate: bool, history: Any,
    ):
        self.every_n_train_steps, self.every_n_epochs, self.stage = every_n_train_steps, every_n_epochs, stage
        self.measure_on_fit_start = measure_on_fit_start
        self.measure_on_fit_end = measure_on_fit_end
        self.measure_on_validate = measure_on_validate
        self.history = history
        self.tried_step: Optional[int] = None
        self.batch_epoch: Optional[int] = None
        self.epoch_done = False

    @classmethod
    def from_args(cls, args: CallbackArgs, history: Any) -> "MeasureTrigger":
        """The trigger of a callback's checked arguments and its history."""
        return cls(
            every_n_train_steps=args.every_n_train_steps, every_n_epochs=args.every_n_epochs, stage=args.stage,
            measure_on_fit_start=args.measure_on_fit_start, measure_on_fit_end=args.measure_on_fit_end,
            measure_on_validate=args.measure_on_validate, history=history,
        )

    def decide(
        self, moment: str, step: int, epoch: int, *, last_batch: bool = False, validation_by_steps: bool = False,
        sanity_check: bool = False,
    ) -> Optional[Decision]:
        """Whether to measure at ``moment`` (global ``step``, ``trainer.current_epoch`` ``epoch``):
        ``None`` (not now) or a :class:`Decision`. ``last_batch``: the training batch that ended is its
        epoch's last (``TRAIN_BATCH_END``); ``validation_by_steps``: validation runs every N steps, not
        after epochs (``check_val_every_n_epoch=None``), so every run ends an epoch's worth; ``sanity_check``:
        the validation run is the sanity check (never measured)."""
        if moment == TRAIN_EPOCH_START:
            self.epoch_done = False
            return None
        if moment == TRAIN_BATCH_END:
            self.batch_epoch, self.epoch_done = epoch, bool(last_batch)
            n = self.every_n_train_steps
            if n is None or step == 0 or step % n != 0 or step == self.tried_step:
                return None
            return self._at_step(step, epoch)
        if moment == FIT_START:
            return self._at_step(step, epoch) if self.measure_on_fit_start and step == 0 else None
        if moment == VALIDATE_END:
            return self._at_step(step, epoch) if self.measure_on_validate else None
        if moment == VALIDATION_EPOCH_END:
            # the end-of-epoch validation run: with validation every N epochs, the run after the
            # epoch's last batch (a mid-epoch run, val_check_interval < 1, is not measured)
            ends_epoch = validation_by_steps or self.epoch_done
            measured_here = self.stage == "validation" and not sanity_check and ends_epoch
            return self._epoch_end(step, epoch) if measured_here else None
        if moment == TRAIN_EPOCH_END:
            return self._epoch_end(step, epoch) if self.stage == "train" else None
        if moment == FIT_END:
            if not self.measure_on_fit_end or step == self.tried_step or step in self.history.steps:
                return None
            self.tried_step = step
            return Decision(self.batch_epoch if self.batch_epoch is not None else max(0, epoch - 1))
        raise ValueError(f"unknown moment {moment!r}; one of {MOMENTS}")

    def _epoch_end(self, step: int, epoch: int) -> Optional[Decision]:
        if self.every_n_epochs is None or (epoch + 1) % self.every_n_epochs != 0:
            return None
        if epoch in self.history.legacy:  # measured by the previous version (global step unknown)
            return Decision(epoch, self.history.legacy[epoch])
        return self._at_step(step, epoch)

    def _at_step(self, step: int, epoch: int) -> Decision:
        if step in self.history.steps:
            # measured and logged already (an epoch end re-run after resuming, two triggers at one step)
            return Decision(epoch, self.history.steps[step])
        self.tried_step = step
        return Decision(epoch)

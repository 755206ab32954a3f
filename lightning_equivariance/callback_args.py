"""The arguments of :class:`~lightning_equivariance.callback.EquivarianceCallback`, checked at construction.

No Lightning here: what can be checked without a model and a trainer is checked when the
callback is built, each error naming its argument; what needs the model (measure names,
groups, layers, layouts) is checked by the engine in the callback's ``setup``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional

import numpy as np

from .probe_set import check_inputs

__all__ = ["STAGES", "LOG_SCALARS", "UNSET", "check_callback_args", "naming", "schedule_problems"]

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


def check_callback_args(a: Dict[str, Any]) -> Dict[str, Any]:
    """The callback's arguments ``a`` (its ``__init__``'s names) checked and normalised, plus
    ``_group_names`` (the groups' names, for the state key); raises
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
    _require(len(set(names)) == len(names), ValueError, f"groups must have distinct names, got {names}; pass name=... to tell them apart")
    for argument, low in (("num_samples", 1), ("batch_size", 1), ("seed", 0)):
        _require(_is_int(a[argument], low), ValueError, f"{argument} must be an integer >= {low}, got {a[argument]!r}")
    for argument in ("every_n_epochs", "every_n_train_steps"):
        value = a[argument]
        _require(value is None or _is_int(value, 1), ValueError, f"{argument} must be None or an integer >= 1, got {value!r}")
    log_scalars = a["log_scalars"]
    if isinstance(log_scalars, str):
        _require(log_scalars in LOG_SCALARS, ValueError, f"log_scalars must be one of {LOG_SCALARS} or a list of scalar names, got {log_scalars!r}")
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
    for argument, what in (("model_name", "a string"), ("submodule", "a dotted attribute path (str)"), ("run_group", "a string")):
        value = a[argument]
        _require(value is None or isinstance(value, str), TypeError, f"{argument} must be {what}, got {type(value).__name__}")
    _require(a["on_error"] in ("warn", "raise"), ValueError, f"on_error must be 'warn' or 'raise', got {a['on_error']!r}")
    for argument in ("layouts", "channel_actions", "measure_options"):
        _require(
            a[argument] is None or isinstance(a[argument], Mapping),
            TypeError, f"{argument} must be a mapping (see Measurement), got {type(a[argument]).__name__}",
        )
    return dict(
        a,
        measures=tuple(measures), groups=tuple(groups), _group_names=tuple(names), log_scalars=log_scalars,
        num_samples=int(a["num_samples"]), batch_size=int(a["batch_size"]), seed=int(a["seed"]),
        every_n_epochs=None if a["every_n_epochs"] is None else int(a["every_n_epochs"]),
        every_n_train_steps=None if a["every_n_train_steps"] is None else int(a["every_n_train_steps"]),
        **{k: bool(a[k]) for k in ("measure_on_fit_start", "measure_on_fit_end", "measure_on_validate", "per_channel",
                                   "baseline", "progress", "summary")},
        **{k: dict(a[k] or {}) for k in ("measure_options", "channel_actions", "layouts")},
        run_group=a["run_group"] or "",
    )


def schedule_problems(cb, *, has_validation_step: bool, module_name: str, limit_val_batches, max_epochs: Optional[int]) -> List[str]:
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
    if cb.every_n_epochs is None and cb.every_n_train_steps is None and not (cb.measure_on_fit_start or cb.measure_on_fit_end):
        problems.append(
            "EquivarianceCallback(every_n_epochs=None, every_n_train_steps=None, measure_on_fit_start=False, "
            "measure_on_fit_end=False) never measures"
        )
    return problems

"""What a run has measured, and where it was written: the history by global step, the tidy CSV,
the loggers and TensorBoard summaries of one measurement (:func:`publish`), the end-of-fit table.

No Lightning here: :class:`~lightning_equivariance.callback.EquivarianceCallback` keeps a
:class:`History` in its ``state_dict`` and publishes every measurement through these functions;
loggers are anything with Lightning's ``log_metrics(metrics, step)``.
"""
from __future__ import annotations

import csv
import os
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Union

__all__ = [
    "History", "CSV_COLUMNS", "append_tidy_csv", "cut_tidy_csv", "fit_summary", "model_display_name", "publish",
    "select_scalars", "tidy_csv_path",
]

#: Version of the ``state_dict`` layout: 2 = history keyed by global step (1 had no field: by epoch).
STATE_VERSION = 2

#: The tidy CSV's columns (empty where undefined); ``pandas.read_csv(path, dtype={"layer": str})``
#: reads it in one line (the dtype keeps layer names such as ``0`` strings).
CSV_COLUMNS = ("global_step", "epoch", "layer", "part", "measure", "group", "value", "chance", "above_chance", "stderr",
               "margin", "margin_stderr", "margin_low", "significant")


class History:
    """``{global step: {scalar name: value}}`` of every measurement, the epoch of each step, and a
    previous version's epoch-keyed history until its steps are known (:meth:`map_legacy`)."""

    def __init__(self) -> None:
        self.steps: Dict[int, Dict[str, float]] = {}
        self.epochs: Dict[int, int] = {}
        self.legacy: Dict[int, Dict[str, float]] = {}

    def add(self, step: int, epoch: int, scalars: Mapping[str, float]) -> None:
        self.steps[int(step)], self.epochs[int(step)] = dict(scalars), int(epoch)

    def by_epoch(self) -> Dict[int, Dict[str, float]]:
        """The last measurement of every measured epoch (previous-version entries included)."""
        out = {int(e): dict(v) for e, v in self.legacy.items()}
        for step in sorted(self.steps):
            out[self.epochs.get(step, -1)] = dict(self.steps[step])
        return out

    def state_dict(self) -> Dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "history": {int(s): dict(v) for s, v in self.steps.items()},
            "epochs": {int(s): int(e) for s, e in self.epochs.items()},
            "legacy_history": {int(e): dict(v) for e, v in self.legacy.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        history = {int(k): dict(v) for k, v in (state.get("history") or {}).items()}
        if "version" not in state:  # the previous version: history keyed by epoch
            self.steps, self.epochs, self.legacy = {}, {}, history
        else:
            self.steps = history
            self.epochs = {int(s): int(e) for s, e in (state.get("epochs") or {}).items()}
            self.legacy = {int(e): dict(v) for e, v in (state.get("legacy_history") or {}).items()}

    def map_legacy(self, epoch: int, step: int) -> None:
        """Give a previous version's epoch-keyed entries the global steps of their epoch ends.

        Resuming at the start of epoch ``E`` after ``G`` optimizer steps with ``G`` a multiple of
        ``E``: epoch ``e`` ended at step ``(e + 1) * G / E``. Otherwise (a mid-epoch checkpoint, a
        changed number of batches) they stay keyed by epoch, in :meth:`by_epoch` only.
        """
        if not self.legacy or epoch <= 0 or step <= 0 or step % epoch or max(self.legacy) >= epoch:
            return
        per_epoch = step // epoch
        for e, scalars in sorted(self.legacy.items()):
            self.add((e + 1) * per_epoch, e, scalars)
        self.legacy = {}


def model_display_name(module: Any, prefix: str = "") -> str:
    """The name a run's model is shown under: the measured network's class and parameter count,
    ``"ResNet (23,528,522 params)"``. ``prefix`` (``"model."``, from
    :func:`~lightning_equivariance.layers.wrapped_child_prefix`) names the single child with
    parameters that a LightningModule wraps: that child is the network, as in the layer names;
    without one (several children with parameters) the module's own class is the name."""
    network = module.get_submodule(prefix[:-1]) if prefix else module
    count = sum(p.numel() for p in network.parameters())
    return f"{type(network).__name__} ({count:,} params)"


def select_scalars(scalars: Mapping[str, float], which: Union[str, Sequence[str]]) -> Dict[str, float]:
    """The scalars a logger gets: ``"parts"`` (part means), ``"layers"`` (all), ``"none"`` or names."""
    if which == "layers":
        return dict(scalars)
    if which == "none":
        return {}
    if which == "parts":
        return {k: v for k, v in scalars.items() if "/part/" in k}
    names = set(which)
    return {k: v for k, v in scalars.items() if k in names}


def tidy_csv_path(loggers: Sequence[Any], file_name: Optional[str]) -> Optional[str]:
    """``file_name`` in the first logger's directory (its ``log_dir``, else ``save_dir``); ``None``
    without a file name, a logger or a directory."""
    if file_name is None or not loggers:
        return None
    folder = getattr(loggers[0], "log_dir", None) or getattr(loggers[0], "save_dir", None)
    return os.path.join(str(folder), file_name) if folder else None


def append_tidy_csv(path: str, step: int, epoch: int, results: Iterable) -> None:
    """Append one row per result (``LayerResult``) at ``step``/``epoch``; the header on a new file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    columns = CSV_COLUMNS
    if not new:  # a file begun by an earlier version (fewer columns, e.g. no margin): keep its columns
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
        if header and tuple(header) == CSV_COLUMNS[: len(header)]:
            columns = tuple(header)
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(CSV_COLUMNS)
        for r in results:
            row = dict(global_step=step, epoch=epoch, layer=r.layer, part=r.part, measure=r.measure, group=r.group,
                       value=r.value, chance=r.chance, above_chance=r.above_chance, stderr=r.stderr,
                       margin=getattr(r, "margin", None), margin_stderr=getattr(r, "margin_stderr", None),
                       margin_low=getattr(r, "margin_low", None), significant=getattr(r, "significant", None))
            writer.writerow(["" if row[c] is None else row[c] for c in columns])


def cut_tidy_csv(path: str, up_to: int, keep: Iterable[int]) -> None:
    """Keep only the rows at global steps ``<= up_to`` that are in ``keep`` (on resume)."""
    if not os.path.exists(path):
        return
    keep = set(keep)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(rows[0]) != CSV_COLUMNS[: len(rows[0])]:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= up_to and int(r[0]) in keep]
    if len(kept) != len(rows):
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows(kept)


def fit_summary(history: History, measuring_seconds: float, fit_seconds: float, prefix: str = "equivariance/") -> str:
    """The end-of-fit table: every part mean at the first and the last measurement, and the
    time spent measuring as a share of the fit's wall time."""
    steps = sorted(history.steps)
    if not steps:
        return "no measurement"
    first, last = history.steps[steps[0]], history.steps[steps[-1]]
    names = sorted({k for k in (*first, *last) if "/part/" in k})
    rows = [("scalar", f"step {steps[0]}", f"step {steps[-1]}", "change")]
    for name in names:
        a, b = first.get(name), last.get(name)
        def fmt(v):
            return "-" if v is None else f"{v:.4f}"
        change = "-" if a is None or b is None else f"{b - a:+.4f}"
        rows.append((name[len(prefix):] if name.startswith(prefix) else name, fmt(a), fmt(b), change))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    share = 100.0 * measuring_seconds / fit_seconds if fit_seconds > 0 else float("nan")
    lines.append(
        f"{len(steps)} measurement(s) at global steps {steps[0]}..{steps[-1]}; measuring took "
        f"{measuring_seconds:.1f} s of {fit_seconds:.1f} s of fit ({share:.1f}%)"
    )
    return "\n".join(lines)


def publish(
    report,
    scalars: Mapping[str, float],
    step: int,
    epoch: int,
    *,
    loggers: Sequence[Any] = (),
    log_scalars: Union[str, Sequence[str]] = "parts",
    csv_path: Optional[str] = None,
    tb_loggers: Sequence[Any] = (),
    warn: Callable[[str], None],
    **series_kwargs,
) -> None:
    """Write one measurement (rank zero): the scalars ``log_scalars`` picks to every logger, the
    rows of the tidy CSV at ``csv_path``, and the per-layer summaries to the ``experiment`` (a
    ``SummaryWriter``) of every TensorBoard logger (``lightning_equivariance_tb.summary.write_series``
    with ``series_kwargs``, one series at a time). Every failure becomes ``warn(message)`` and
    loses only what it was writing."""
    where = f"epoch {epoch}, step {step}"
    logged = select_scalars(scalars, log_scalars)
    for logger in loggers if logged else ():
        try:
            logger.log_metrics(logged, step=step)
        except Exception as e:  # noqa: BLE001 - a logger's failure never stops training
            warn(f"{where}: {type(logger).__name__}.log_metrics failed ({type(e).__name__}: {e})")
    try:
        if csv_path is not None:
            append_tidy_csv(csv_path, step, epoch, report.results)
    except Exception as e:  # noqa: BLE001 - logging never stops training
        warn(f"{where}: the tidy CSV was not written ({type(e).__name__}: {e})")
    if not tb_loggers:
        return
    try:
        from lightning_equivariance_tb.summary import write_series
    except Exception as e:  # noqa: BLE001 - logging never stops training
        warn(f"the TensorBoard writer lightning_equivariance_tb.summary is unavailable ({type(e).__name__}: {e})")
        return
    for logger in tb_loggers:
        for s in report.series():  # one series at a time: a bad one (a NaN value) loses only itself
            try:
                write_series(logger.experiment, [s], step=step, epoch=epoch, global_step=step, **series_kwargs)
            except Exception as e:  # noqa: BLE001 - logging never stops training
                warn(f"{where}: TensorBoard summary of {s.measure}/{s.group} not written ({type(e).__name__}: {e})")

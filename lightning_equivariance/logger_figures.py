"""The tab's main views as figures for Weights & Biases and MLflow users.

The TensorBoard tab is not there for a run logged to W&B or MLflow; the scalars are, but not
the views. After each measurement :class:`~lightning_equivariance.callback.EquivarianceCallback`
calls :func:`log_figures`, which gives every ``WandbLogger`` and ``MLFlowLogger`` among the
trainer's loggers matplotlib figures (:mod:`lightning_equivariance.figures`):

* ``equivariance_figures/{measure}/{group}/heatmap``: the layer x global step heatmap of every
  (measure, group) so far, from the callback's history;
* ``equivariance_figures/profile``: the layer profile of the latest measurement, every
  (measure, group), with the chance level and standard errors.

Through each logger's own API: W&B gets ``wandb.Image`` s through ``logger.log_metrics`` (at
the trainer's global step, as Lightning logs W&B scalars: the ``trainer/global_step`` axis);
MLflow gets PNG artifacts through ``logger.experiment.log_figure(run_id, figure, path)``, at
``equivariance_figures/{measure}/{group}/heatmap_step{step:08d}.png`` and
``equivariance_figures/profile_step{step:08d}.png``.

Any other logger (TensorBoard, CSV, ...) gets nothing, and without wandb and mlflow nothing
is imported or drawn. A failure (no matplotlib, a logger that refuses) is a warning, never an
error: training goes on. Figures are released after logging.

Example (what the callback does after a measurement; also usable by hand)::

    from lightning_equivariance.logger_figures import log_figures
    log_figures(trainer.loggers, callback.history, callback.last_report, trainer.global_step)
"""
from __future__ import annotations

import re
import warnings
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["log_figures", "figure_loggers", "build_figures", "FIGURE_PREFIX"]

#: The key (W&B) and artifact folder (MLflow) of the figures.
FIGURE_PREFIX = "equivariance_figures"


def _logger_classes() -> Tuple[tuple, tuple]:
    """``(W&B logger classes, MLflow logger classes)`` of Lightning (empty where unavailable).

    Not pytorch_lightning's: the callback is a lightning.pytorch one, and importing the old
    package re-routes Lightning's rank-zero log records to its own logger.
    """
    try:
        from lightning.pytorch import loggers
    except Exception:  # noqa: BLE001 - not installed, or broken: then no such logger exists
        return (), ()
    return tuple(
        tuple(cls for cls in (getattr(loggers, name, None),) if isinstance(cls, type))
        for name in ("WandbLogger", "MLFlowLogger")
    )


def figure_loggers(loggers: Any) -> List[Tuple[str, Any]]:
    """``[("wandb" | "mlflow", logger)]``: the loggers that get figures, in order.

    ``loggers``: one logger, a sequence of them (``trainer.loggers``) or ``None``.
    """
    if loggers is None:
        return []
    if not isinstance(loggers, (list, tuple)):
        loggers = [loggers]
    wandb_classes, mlflow_classes = _logger_classes()
    out = []
    for logger in loggers:
        if wandb_classes and isinstance(logger, wandb_classes):
            out.append(("wandb", logger))
        elif mlflow_classes and isinstance(logger, mlflow_classes):
            out.append(("mlflow", logger))
    return out


def _safe(name: str) -> str:
    """A file-name-safe version of a measure or group name (for MLflow artifact paths)."""
    return re.sub(r"[^A-Za-z0-9_.+=-]", "_", str(name)) or "_"


def build_figures(
    history: Any, report: Any, prefix: str = "equivariance", step: Optional[int] = None
) -> Dict[str, Any]:
    """``{key: matplotlib Figure}``: the heatmap of every (measure, group) of ``report`` (rows: its
    layers in depth order, columns: the history's steps) and the profile of ``report``.

    Keys: ``equivariance_figures/{measure}/{group}/heatmap`` and ``equivariance_figures/profile``.
    ``step`` (the measurement's global step) goes into the profile's title.
    The caller releases them (:func:`lightning_equivariance.figures.close_figures`).
    """
    from .figures import close_figures, heatmap_figure, profile_figure

    figures: Dict[str, Any] = {}
    try:
        for s in report.series():
            figures[f"{FIGURE_PREFIX}/{s.measure}/{s.group}/heatmap"] = heatmap_figure(
                history, s.measure, s.group, s.layers, s.parts, higher_is_better=s.higher_is_better, prefix=prefix
            )
        if report.results:
            figures[f"{FIGURE_PREFIX}/profile"] = profile_figure(
                report, title=None if step is None else f"layer profile at global step {step}"
            )
    except BaseException:
        close_figures(figures)
        raise
    return figures


def _warn(message: str) -> None:
    warnings.warn(f"lightning_equivariance.log_figures: {message}", RuntimeWarning, stacklevel=3)


def _log_wandb(logger: Any, figures: Dict[str, Any], step: int) -> None:
    import wandb

    # Through log_metrics, as Lightning logs W&B scalars: on its "trainer/global_step" axis.
    # (experiment.log(..., step=global_step) would clash with W&B's own step counter.)
    logger.log_metrics({key: wandb.Image(fig) for key, fig in figures.items()}, step=step)


def _log_mlflow(logger: Any, figures: Dict[str, Any], step: int) -> None:
    run_id = logger.run_id
    if run_id is None:
        raise RuntimeError("the MLFlowLogger has no run id (its run could not be created)")
    for key, fig in figures.items():
        head, _, name = key.rpartition("/")
        parts = [_safe(p) for p in head.split("/")[1:]]  # FIGURE_PREFIX stays the folder name
        path = "/".join([FIGURE_PREFIX] + parts + [f"{_safe(name)}_step{step:08d}.png"])
        logger.experiment.log_figure(run_id, fig, path)


_LOGGERS = {"wandb": _log_wandb, "mlflow": _log_mlflow}


def log_figures(loggers: Any, history: Any, report: Any, step: int, prefix: str = "equivariance") -> int:
    """Log the heatmap and profile figures to every W&B and MLflow logger of ``loggers``.

    Args:
        loggers: ``trainer.loggers`` (or one logger, or ``None``); loggers other than
            Lightning's ``WandbLogger`` and ``MLFlowLogger`` are skipped.
        history: the callback's history of scalars
            (:class:`~lightning_equivariance.run_log.History` or ``{global step: {name: value}}``),
            the latest measurement included.
        report: the latest :class:`~lightning_equivariance.report.MeasureReport` (its series give
            the layers and their depth order; its profile is drawn).
        step: the trainer's global step of the measurement.
        prefix: the scalars' prefix in ``history`` (the callback's: ``"equivariance"``).

    Returns:
        How many (logger, figure) pairs were logged (0 when no logger takes figures).

    Never raises: a failure (matplotlib missing, a logger's API refusing) is a
    ``RuntimeWarning`` naming the logger, and the other loggers still get their figures.
    """
    try:
        targets = figure_loggers(loggers)
    except Exception as e:  # noqa: BLE001 - figures never stop training
        _warn(f"could not inspect the loggers ({type(e).__name__}: {e})")
        return 0
    if not targets or report is None:
        return 0
    try:
        figures = build_figures(history, report, prefix=prefix, step=int(step))
    except Exception as e:  # noqa: BLE001 - figures never stop training
        hint = " (pip install matplotlib, or lightning-equivariance[loggers])" if isinstance(e, ImportError) else ""
        _warn(f"step {step}: the figures were not drawn ({type(e).__name__}: {e}){hint}")
        return 0
    logged = 0
    try:
        for kind, logger in targets:
            try:
                _LOGGERS[kind](logger, figures, int(step))
                logged += len(figures)
            except Exception as e:  # noqa: BLE001 - never stop training
                _warn(f"step {step}: {type(logger).__name__} did not take the figures ({type(e).__name__}: {e})")
    finally:
        from .figures import close_figures

        close_figures(figures)
    return logged

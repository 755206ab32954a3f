"""Figures for Weights & Biases and MLflow (issue 15, "Other loggers").

With the real packages in their local modes: W&B offline (``WANDB_MODE=offline``, its
directory in ``tmp_path``), MLflow on a local file store in ``tmp_path``
(``MLFLOW_ALLOW_FILE_STORE=true``: MLflow 3 keeps the file store for those who opt in;
``mlflow-skinny`` has no SQL store). A 2-epoch fit logs the heatmap and the profile
figures (files in the run directories) and the scalars; other loggers get nothing.

``EquivarianceCallback`` calls :func:`log_figures` after every measurement: the fit tests go
through the real callback.
"""
import glob
import os
import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from callback_helpers import LitCNN, trainer_kwargs
from lightning_equivariance import EquivarianceCallback, logger_figures
from lightning_equivariance.figures import close_figures, heatmap_figure, layer_matrix, profile_figure
from lightning_equivariance.logger_figures import build_figures, figure_loggers, log_figures
from lightning_equivariance.report import LayerResult, MeasureReport
from lightning_equivariance.run_log import History

matplotlib = pytest.importorskip("matplotlib")

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers.*",
    "ignore:.*isinstance.*LeafSpec.*",
    "ignore:.*litlogger.*",
    "ignore::DeprecationWarning",
    "ignore::FutureWarning",
)

KEYS = {
    "equivariance_figures/invariance/rotation90/heatmap",
    "equivariance_figures/equivariance/rotation90/heatmap",
    "equivariance_figures/profile",
}


def fake_report(n_layers=4, value=0.5):
    parts = ["Early", "Middle", "Pool", "Final"][:n_layers]
    results = [
        LayerResult(layer="net.%d" % i, index=i, part=parts[i], kind="map", shape=(4, 4, 4), measure="equivariance",
                    group="rotation90", value=value + 0.1 * i, per_element={}, per_channel=None, left_out=0,
                    higher_is_better=True, chance=0.2, above_chance=None, informative=True, stderr=0.01, best=1.0)
        for i in range(n_layers)
    ]
    return MeasureReport(results=results, depth={r.layer: (r.index, r.part) for r in results})


def fake_history(report, steps=(5, 10, 15)):
    history = History()
    for k, step in enumerate(steps):
        history.add(step, k, {key: v + 0.01 * k for key, v in report.scalars().items()})
    return history


def fit(tmp_path, loggers):
    """A 2-epoch fit (5 optimizer steps per epoch), measured at each epoch end by the callback."""
    pl.seed_everything(0, verbose=False)
    cb = EquivarianceCallback(num_samples=16, progress=False)
    trainer = pl.Trainer(callbacks=[cb], logger=loggers, **trainer_kwargs(tmp_path, max_epochs=2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(LitCNN(n_train=80))
    assert not [str(w.message) for w in caught if "log_figures" in str(w.message)]
    assert sorted(cb.step_history) == [5, 10]
    return cb, trainer


# ---------------------------------------------------------------------------- figures
def test_heatmap_rows_are_layers_and_columns_steps():
    report = fake_report()
    history = fake_history(report)
    steps, matrix = layer_matrix(history, "equivariance", "rotation90", ["net.0", "net.3", "absent"])
    assert steps == [5, 10, 15]
    np.testing.assert_allclose(matrix[0], [0.5, 0.51, 0.52])
    np.testing.assert_allclose(matrix[1], [0.8, 0.81, 0.82])
    assert np.isnan(matrix[2]).all()
    s = report.series()[0]
    fig = heatmap_figure(history.steps, s.measure, s.group, s.layers, s.parts)
    ax = fig.axes[0]
    image = ax.get_images()[0]
    assert image.get_array().shape == (4, 3)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["net.0", "net.1", "net.2", "net.3"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["5", "10", "15"]
    assert ax.get_xlabel() == "global step"
    with pytest.raises(ValueError, match="parts must give one part per layer"):
        heatmap_figure(history, s.measure, s.group, s.layers, s.parts[:2])
    with pytest.raises(TypeError, match="history must be"):
        heatmap_figure([1, 2], s.measure, s.group, s.layers)


def test_heatmap_many_layers_and_infinities():
    layers = ["block%d.conv" % i for i in range(70)]
    history = {step: {"equivariance/nv/rotation90/%s" % layer: (np.inf if i == 3 else float(i + step))
                      for i, layer in enumerate(layers)} for step in range(0, 300, 10)}
    fig = heatmap_figure(history, "nv", "rotation90", layers, higher_is_better=None)
    ax = fig.axes[0]
    assert len(ax.get_yticklabels()) <= 70 and len(ax.get_xticklabels()) <= 21
    image = ax.get_images()[0]
    lo, hi = image.get_clim()
    assert np.isfinite(lo) and np.isfinite(hi) and hi == 69 + 290  # +inf drawn at the scale's end
    assert fig.get_size_inches()[1] <= 14


def test_profile_is_report_plot():
    fig = profile_figure(fake_report(), title="latest")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["net.0", "net.1", "net.2", "net.3"]
    assert any(line.get_linestyle() == "--" for line in ax.get_lines())  # chance
    assert ax.get_title() == "latest"


def test_build_figures_keys():
    report = fake_report()
    figures = build_figures(fake_history(report), report)
    try:
        assert set(figures) == {"equivariance_figures/equivariance/rotation90/heatmap", "equivariance_figures/profile"}
    finally:
        close_figures(figures)


# ---------------------------------------------------------------------------- no-op
def test_other_loggers_get_nothing(tmp_path, monkeypatch):
    """CSV and TensorBoard loggers (and none at all): no figure is drawn, nothing is written."""
    loggers = [CSVLogger(str(tmp_path), name="csv"), TensorBoardLogger(str(tmp_path), name="tb")]
    assert figure_loggers(loggers) == [] and figure_loggers(None) == []
    drawn = []
    monkeypatch.setattr(logger_figures, "build_figures", lambda *a, **k: drawn.append(1) or {})
    report = fake_report()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert log_figures(loggers, fake_history(report), report, 5) == 0
        assert log_figures(None, {}, report, 5) == 0
        assert log_figures(loggers[0], {}, report, 5) == 0
    assert drawn == []
    assert not glob.glob(str(tmp_path / "**" / "*.png"), recursive=True)


def test_nothing_is_imported_for_other_loggers(tmp_path):
    """Neither wandb nor mlflow is imported, and no matplotlib module is drawn in, when no logger takes figures."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from lightning.pytorch.loggers import CSVLogger\n"
        "from lightning_equivariance.logger_figures import log_figures\n"
        "from lightning_equivariance.run_log import History\n"
        "before = set(sys.modules)\n"
        "n = log_figures([CSVLogger(sys.argv[1])], History(), object(), 3)\n"
        "new = sorted(m for m in set(sys.modules) - before if m.split('.')[0] in ('wandb', 'mlflow', 'matplotlib'))\n"
        "print(n, new, sorted(m for m in ('wandb', 'mlflow') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "0 [] []"


def test_fit_with_csv_and_tensorboard_is_unchanged(tmp_path):
    loggers = [CSVLogger(str(tmp_path), name="csv", version=0), TensorBoardLogger(str(tmp_path), name="tb", version=0)]
    cb, _ = fit(tmp_path, loggers)
    assert not glob.glob(str(tmp_path / "**" / "*.png"), recursive=True)
    assert os.path.exists(tmp_path / "csv" / "version_0" / "equivariance.csv")


def test_failures_warn_and_never_raise(tmp_path):
    class Broken:
        run_id = "x"

        class experiment:  # noqa: N801 - stands in for MlflowClient
            @staticmethod
            def log_figure(*args):
                raise OSError("disk full")

    report = fake_report()
    original = logger_figures.figure_loggers
    try:
        logger_figures.figure_loggers = lambda loggers: [("mlflow", Broken())]
        with pytest.warns(RuntimeWarning, match="Broken did not take the figures .OSError: disk full"):
            assert log_figures([Broken()], fake_history(report), report, 5) == 0
        with pytest.warns(RuntimeWarning, match="the figures were not drawn"):
            assert log_figures([Broken()], object(), report, 5) == 0  # not a history
    finally:
        logger_figures.figure_loggers = original


# ---------------------------------------------------------------------------- W&B offline
@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    yield wandb
    wandb.finish()


def test_wandb_offline_fit_logs_figures_from_the_callback(tmp_path, wandb_offline):
    wandb = wandb_offline
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(offline=True, save_dir=str(tmp_path), project="lightning-equivariance-test")
    cb, _ = fit(tmp_path, [logger])
    summary = dict(logger.experiment.summary)
    files = logger.experiment.dir
    wandb.finish()
    images = glob.glob(os.path.join(files, "media", "images", "equivariance_figures", "**", "*.png"), recursive=True)
    names = {os.path.relpath(p, os.path.join(files, "media", "images")).rsplit("_", 2)[0] for p in images}
    assert names == KEYS
    # one file per figure and measurement (steps 5 and 10)
    assert len(images) == 2 * len(KEYS)
    # the scalars (part means by default) on Lightning's trainer/global_step axis
    parts = {k for k in summary if k.startswith("equivariance/") and "/part/" in k}
    assert "equivariance/equivariance/rotation90/part/Early" in parts
    assert KEYS <= set(summary)



# ---------------------------------------------------------------------------- MLflow, local store
@pytest.fixture
def mlflow_local(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    return mlflow


def test_mlflow_local_fit_logs_figures_from_the_callback(tmp_path, mlflow_local):
    from lightning.pytorch.loggers import MLFlowLogger

    uri = (tmp_path / "mlruns").as_uri()
    logger = MLFlowLogger(experiment_name="lightning-equivariance-test", tracking_uri=uri)
    fit(tmp_path, [logger])
    run_dir = tmp_path / "mlruns" / logger.experiment_id / logger.run_id
    pngs = sorted(
        os.path.relpath(p, run_dir / "artifacts")
        for p in glob.glob(str(run_dir / "artifacts" / "**" / "*.png"), recursive=True)
    )
    expected = sorted(
        path % step for step in (5, 10) for path in (
            "equivariance_figures/equivariance/rotation90/heatmap_step%08d.png",
            "equivariance_figures/invariance/rotation90/heatmap_step%08d.png",
            "equivariance_figures/profile_step%08d.png",
        )
    )
    assert pngs == expected
    with open(run_dir / "artifacts" / expected[0], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    metrics = logger.experiment.get_run(logger.run_id).data.metrics
    assert "equivariance/equivariance/rotation90/part/Early" in metrics
    history = logger.experiment.get_metric_history(logger.run_id, "equivariance/equivariance/rotation90/part/Early")
    assert sorted(m.step for m in history) == [5, 10]


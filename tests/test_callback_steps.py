"""EquivarianceCallback for real training runs: step triggers, the global-step axis, resume, lean logging, tidy CSV."""
import os

import lightning.pytorch as pl
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from callback_helpers import LitCNN, trainer_kwargs
from lightning_equivariance import EquivarianceCallback

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers.*",
    "ignore:.*isinstance.*LeafSpec.*",
    "ignore:.*litlogger.*",
    "ignore:.*resuming from a checkpoint that ended before the epoch ended.*",
)

# names relative to LitCNN's single child module `net` (as measure(model.net) and the CLI give them)
LAYERS = ["0", "1", "2", "3", "4", "5", "7", "9"]
PARTS = ("Early", "Middle", "Late", "Pool", "Final")
MEASURES = ("invariance", "equivariance")


class _Crash(Callback):
    """Stops the run with an error right after optimizer step ``at`` (a crash: no end-of-fit hooks)."""

    def __init__(self, at):
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at:
            raise RuntimeError("simulated crash")


def _tensor_steps(log_dir):
    # purge_orphaned_data=False: TensorBoard would otherwise hide duplicated steps.
    acc = EventAccumulator(str(log_dir), size_guidance={"tensors": 0, "scalars": 0}, purge_orphaned_data=False)
    acc.Reload()
    tags = [t for t in acc.Tags()["tensors"] if t.startswith("equivariance_")]
    assert tags
    return acc, {t: [e.step for e in acc.Tensors(t)] for t in tags}


def _run(tmp_path, cb, model=None, ckpt_path=None, extra=(), loggers=None, **kw):
    pl.seed_everything(0, verbose=False)
    if loggers is None:
        loggers = [TensorBoardLogger(str(tmp_path), name="tb", version=0)]
    trainer = pl.Trainer(callbacks=[cb, *extra], logger=loggers, **trainer_kwargs(tmp_path, **kw))
    trainer.fit(model or LitCNN(n_train=80), ckpt_path=ckpt_path)  # 80 / 16: 5 optimizer steps per epoch
    return trainer


# ---------------------------------------------------------------------------- triggers
def test_every_n_train_steps_logs_each_global_step_once(tmp_path):
    cb = EquivarianceCallback(num_samples=16, every_n_train_steps=4)
    assert cb.every_n_epochs is None  # kept apart, as ModelCheckpoint does
    _run(tmp_path, cb, max_epochs=10, max_steps=16)
    assert sorted(cb.step_history) == [4, 8, 12, 16]  # the end of fit (step 16) is not measured twice
    _, steps = _tensor_steps(tmp_path / "tb" / "version_0")
    for tag, found in steps.items():
        assert found == [4, 8, 12, 16], tag


def test_interrupted_after_step_9_and_resumed_logs_each_step_once(tmp_path):
    ckpt_dir = tmp_path / "ckpt"

    def checkpoint():
        return ModelCheckpoint(dirpath=str(ckpt_dir), every_n_train_steps=4, save_last=True)

    first = EquivarianceCallback(num_samples=16, every_n_train_steps=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(tmp_path, first, extra=[checkpoint(), _Crash(9)], max_epochs=10, max_steps=16, enable_checkpointing=True)
    assert sorted(first.step_history) == [4, 8]
    saved = torch.load(ckpt_dir / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 8 and sorted(saved["callbacks"][first.state_key]["history"]) == [4, 8]

    second = EquivarianceCallback(num_samples=16, every_n_train_steps=4)
    _run(tmp_path, second, extra=[checkpoint()], ckpt_path=str(ckpt_dir / "last.ckpt"),
         max_epochs=10, max_steps=16, enable_checkpointing=True)
    assert sorted(second.step_history) == [4, 8, 12, 16]
    assert second.step_history[8] == first.step_history[8]  # loaded, not re-measured
    _, steps = _tensor_steps(tmp_path / "tb" / "version_0")
    for tag, found in steps.items():
        assert found == [4, 8, 12, 16], tag
    tidy = pd.read_csv(tmp_path / "tb" / "version_0" / "equivariance.csv")
    assert sorted(set(tidy.global_step)) == [4, 8, 12, 16]
    assert (tidy.groupby("global_step").size() == len(LAYERS) * len(MEASURES)).all()  # no row twice


def test_both_triggers_and_fit_start_and_end_never_measure_a_step_twice(tmp_path):
    cb = EquivarianceCallback(num_samples=8, every_n_train_steps=2, every_n_epochs=1, measure_on_fit_start=True)
    # 4 steps per epoch: epoch ends at steps 4 and 8 are also step-trigger steps; 8 is the end of fit
    _run(tmp_path, cb, model=LitCNN(), max_epochs=2)
    assert sorted(cb.step_history) == [0, 2, 4, 6, 8]
    _, steps = _tensor_steps(tmp_path / "tb" / "version_0")
    for tag, found in steps.items():
        assert found == [0, 2, 4, 6, 8], tag
    assert sorted(cb.history) == [0, 1]  # by epoch: the last measurement of each
    assert cb.history[1] == cb.step_history[8]


def test_end_of_fit_measures_the_last_step_when_no_trigger_did(tmp_path):
    cb = EquivarianceCallback(num_samples=8, every_n_train_steps=3)
    _run(tmp_path, cb, model=LitCNN(), max_epochs=2)  # 8 steps
    assert sorted(cb.step_history) == [3, 6, 8]
    off = EquivarianceCallback(num_samples=8, every_n_train_steps=3, measure_on_fit_end=False)
    _run(tmp_path / "off", off, model=LitCNN(), max_epochs=2, loggers=False)
    assert sorted(off.step_history) == [3, 6]


def test_a_configuration_that_never_measures_an_epoch_warns(tmp_path):
    cb = EquivarianceCallback(num_samples=8, every_n_epochs=5)
    with pytest.warns(UserWarning, match="every_n_epochs=5.*max_epochs=2"):
        _run(tmp_path, cb, model=LitCNN(), max_epochs=2, loggers=False)
    assert sorted(cb.step_history) == [8]  # the end of fit still is
    assert cb.history == {1: cb.step_history[8]}  # recorded with the epoch of its last step


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(every_n_train_steps=0), "every_n_train_steps"),
        (dict(every_n_epochs=0), "every_n_epochs"),
        (dict(log_scalars="all"), "log_scalars"),
        (dict(log_scalars=[1]), "log_scalars"),
        (dict(csv_file="logs/eq.csv"), "csv_file"),
    ],
)
def test_bad_trigger_and_logging_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        EquivarianceCallback(**kwargs)


# ---------------------------------------------------------------------------- previous checkpoints
def test_a_checkpoint_of_the_previous_version_resumes(tmp_path):
    ckpt_dir = tmp_path / "ckpt"
    first = EquivarianceCallback(num_samples=16)
    _run(tmp_path / "a", first, model=LitCNN(), extra=[ModelCheckpoint(dirpath=str(ckpt_dir), save_last=True)],
         max_epochs=2, enable_checkpointing=True)
    assert sorted(first.step_history) == [4, 8]
    # What the previous version wrote: the probe indices and the history keyed by epoch, no version field.
    ckpt = torch.load(ckpt_dir / "last.ckpt", weights_only=False)
    state = ckpt["callbacks"][first.state_key]
    old = {"indices": state["indices"], "history": first.history}  # {epoch: the epoch's last measurement}
    ckpt["callbacks"][first.state_key] = old
    torch.save(ckpt, tmp_path / "old.ckpt")

    second = EquivarianceCallback(num_samples=16)
    _run(tmp_path / "b", second, model=LitCNN(), ckpt_path=str(tmp_path / "old.ckpt"), max_epochs=4)
    # the old epochs 0 and 1 get the global steps of their epoch ends; nothing is measured twice
    assert sorted(second.step_history) == [4, 8, 12, 16]
    assert second.step_history[8] == first.step_history[8] and second.history[1] == first.history[1]
    assert torch.equal(second.state_dict()["indices"], first.state_dict()["indices"])
    _, steps = _tensor_steps(tmp_path / "b" / "tb" / "version_0")
    for tag, found in steps.items():
        assert found == [12, 16], tag
    assert second.state_dict()["version"] == 2


def test_a_previous_checkpoint_whose_steps_cannot_be_told_keeps_its_epochs():
    cb = EquivarianceCallback(num_samples=16)
    cb.load_state_dict({"indices": torch.arange(4), "history": {0: {"a": 1.0}, 1: {"a": 2.0}}})
    assert cb.history == {0: {"a": 1.0}, 1: {"a": 2.0}} and cb.step_history == {}
    # mid-epoch resume: 7 steps after 1 epoch is not a whole number of steps per epoch for epoch 1
    cb._map_legacy(type("T", (), {"current_epoch": 2, "global_step": 7})())
    assert cb.step_history == {} and sorted(cb.state_dict()["legacy_history"]) == [0, 1]
    cb._map_legacy(type("T", (), {"current_epoch": 2, "global_step": 10})())
    assert sorted(cb.step_history) == [5, 10] and cb.history == {0: {"a": 1.0}, 1: {"a": 2.0}}


# ---------------------------------------------------------------------------- lean logging, tidy CSV
def test_default_scalars_are_the_part_means_and_the_tidy_csv_has_every_layer(tmp_path):
    cb = EquivarianceCallback(num_samples=16)
    tb = TensorBoardLogger(str(tmp_path), name="tb", version=0)
    csv_logger = CSVLogger(str(tmp_path), name="csv", version=0)
    trainer = _run(tmp_path, cb, model=LitCNN(), loggers=[csv_logger, tb], max_epochs=2)

    # CSVLogger gets the part means (and only them), at the global step
    frame = pd.read_csv(tmp_path / "csv" / "version_0" / "metrics.csv")
    logged = [c for c in frame.columns if c.startswith("equivariance/")]
    expected = [f"equivariance/{m}/rotation90/part/{p}" for m in MEASURES for p in PARTS]
    assert sorted(logged) == sorted(expected)
    assert frame.dropna(subset=expected)["step"].tolist() == [4, 8]
    acc, _ = _tensor_steps(tmp_path / "tb" / "version_0")
    scalar_tags = [t for t in acc.Tags()["scalars"] if t.startswith("equivariance/")]
    assert sorted(scalar_tags) == sorted(expected)

    # callback_metrics keeps every layer (ModelCheckpoint / EarlyStopping can monitor one)
    for m in MEASURES:
        for layer in LAYERS:
            name = f"equivariance/{m}/rotation90/{layer}"
            assert float(trainer.callback_metrics[name]) == pytest.approx(cb.step_history[8][name])

    # the tidy CSV: in the first logger's directory, one row per (global step, layer, measure, group)
    path = os.path.join(csv_logger.log_dir, "equivariance.csv")
    assert cb.csv_path(trainer) == path
    tidy = pd.read_csv(path, dtype={"layer": str})  # layer names such as "0" stay strings
    assert list(tidy.columns) == ["global_step", "epoch", "layer", "part", "measure", "group", "value", "chance",
                                  "above_chance", "stderr", "margin", "margin_stderr", "margin_low", "significant"]
    assert len(tidy) == 2 * len(LAYERS) * len(MEASURES)
    assert sorted(set(zip(tidy.global_step, tidy.epoch))) == [(4, 0), (8, 1)]
    for (step, m), rows in tidy.groupby(["global_step", "measure"]):
        assert rows.layer.tolist() == LAYERS and set(rows.group) == {"rotation90"}
        for row in rows.itertuples():
            assert row.value == pytest.approx(
                cb.step_history[step][f"equivariance/{m}/rotation90/{row.layer}"], abs=1e-12
            )
    assert tidy.chance.notna().any() and tidy.stderr.notna().any()
    last = cb.last_report.to_dataframe()  # the tidy rows of the last step are its (layer, measure, value)
    pd.testing.assert_frame_equal(
        tidy[tidy.global_step == 8][["layer", "measure", "value"]].reset_index(drop=True),
        last[["layer", "measure", "value"]].reset_index(drop=True).astype({"value": float}),
        check_exact=False, rtol=1e-6,
    )


@pytest.mark.parametrize(
    "log_scalars, expected",
    [
        ("layers", {f"equivariance/invariance/rotation90/{layer}" for layer in LAYERS}
         | {f"equivariance/invariance/rotation90/part/{p}" for p in PARTS}),
        ("none", set()),
        (["equivariance/invariance/rotation90/4"], {"equivariance/invariance/rotation90/4"}),
    ],
)
def test_log_scalars_chooses_the_logger_scalars(tmp_path, log_scalars, expected):
    cb = EquivarianceCallback(num_samples=8, measures="invariance", log_scalars=log_scalars, csv_file=None)
    csv_logger = CSVLogger(str(tmp_path), name="csv", version=0)
    trainer = _run(tmp_path, cb, model=LitCNN(), loggers=[csv_logger], max_epochs=1)
    frame = pd.read_csv(tmp_path / "csv" / "version_0" / "metrics.csv")
    assert {c for c in frame.columns if c.startswith("equivariance/")} == expected
    assert not os.path.exists(os.path.join(csv_logger.log_dir, "equivariance.csv"))  # csv_file=None
    assert {k for k in trainer.callback_metrics if k.startswith("equivariance/")} == set(cb.step_history[4])


def test_measure_on_fit_start_before_the_first_validation_run(tmp_path):
    cb = EquivarianceCallback(num_samples=8, measure_on_fit_start=True, every_n_train_steps=2, every_n_epochs=None)
    trainer = _run(tmp_path, cb, model=LitCNN(), max_epochs=1, num_sanity_val_steps=0, loggers=False)
    assert sorted(cb.step_history) == [0, 2, 4]  # step 0 from the validation set, loaded early
    assert len(cb.state_dict()["indices"]) == 8 and trainer.state.finished


# ---------------------------------------------------------------------------- validate, groups, summary
def test_validate_alone_measures_when_asked(tmp_path):
    model = LitCNN()
    asked = EquivarianceCallback(num_samples=8, measure_on_validate=True)
    trainer = pl.Trainer(callbacks=[asked], logger=CSVLogger(str(tmp_path)), **trainer_kwargs(tmp_path))
    trainer.validate(model, verbose=False)
    assert list(asked.step_history) == [0] and asked.last_report.results
    assert "equivariance/invariance/rotation90/0" in trainer.callback_metrics
    trainer.validate(model, verbose=False)  # the same global step: not measured twice
    assert list(asked.step_history) == [0]

    silent = EquivarianceCallback(num_samples=8)
    trainer = pl.Trainer(callbacks=[silent], logger=False, **trainer_kwargs(tmp_path))
    trainer.validate(model, verbose=False)
    assert silent.step_history == {}


def test_the_run_group_is_recorded_in_the_summaries(tmp_path):
    from lightning_equivariance_tb import metadata

    _run(tmp_path, EquivarianceCallback(num_samples=8, run_group="cnn_rotaug"), max_epochs=1)
    acc, steps = _tensor_steps(tmp_path / "tb" / "version_0")
    for tag in steps:
        content = metadata.parse_plugin_metadata(acc.SummaryMetadata(tag).plugin_data.content)
        assert content["run_group"] == "cnn_rotaug", tag


def test_the_end_of_fit_table_has_every_part_first_and_last_and_the_time_share(tmp_path, caplog):
    cb = EquivarianceCallback(num_samples=8, measures=("invariance",))
    with caplog.at_level("INFO"):
        _run(tmp_path, cb, max_epochs=2, loggers=False)
    table = next(r.getMessage() for r in caplog.records if "end of fit" in r.getMessage())
    first, last = cb.step_history[5], cb.step_history[10]
    assert "step 5" in table and "step 10" in table and "of fit (" in table
    for part in PARTS:
        name = f"equivariance/invariance/rotation90/part/{part}"
        row = next(line for line in table.splitlines() if line.startswith(f"invariance/rotation90/part/{part} "))
        assert row.split()[1:] == [f"{first[name]:.4f}", f"{last[name]:.4f}", f"{last[name] - first[name]:+.4f}"]
    quiet = EquivarianceCallback(num_samples=8, measures=("invariance",), summary=False)
    caplog.clear()
    with caplog.at_level("INFO"):
        _run(tmp_path / "quiet", quiet, max_epochs=1, loggers=False)
    assert not [r for r in caplog.records if "end of fit" in r.getMessage()]

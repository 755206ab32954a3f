"""EquivarianceCallback: identical training, state restored, probe set, logging, resume, failures, errors."""
import glob
import logging
import os
import random
import types
import warnings

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto import summary_pb2
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callback_helpers import AugmentedDataset, LitCNN, make_data, trainer_kwargs
from lightning_equivariance import EquivarianceCallback, Measurement, Rotation90
from lightning_equivariance.snapshot import Snapshot

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers.*",
    "ignore:.*isinstance.*LeafSpec.*",
    "ignore:.*litlogger.*",
)

# names relative to LitCNN's single child module `net` (as measure(model.net) and the CLI give them)
LAYERS = ["0", "1", "2", "3", "4", "5", "7", "9"]
PARTS = ["Early", "Early", "Middle", "Middle", "Late", "Late", "Pool", "Final"]


def _fit(tmp_path, callbacks=(), seed=0, **kw):
    pl.seed_everything(seed, verbose=False)
    model = LitCNN(augment=True)
    logger = CSVLogger(str(tmp_path), name="csv", version=0)
    trainer = pl.Trainer(callbacks=list(callbacks), logger=logger, **trainer_kwargs(tmp_path, **kw))
    trainer.fit(model)
    csv = pd.read_csv(os.path.join(str(tmp_path), "csv", "version_0", "metrics.csv"))
    return model, trainer, csv


# ---------------------------------------------------------------------------- Done when #1
@pytest.mark.parametrize("stage", ["validation", "train"])
def test_training_is_bit_for_bit_identical(tmp_path, stage):
    """3 epochs with and without the callback: same final state_dict, same logged losses.

    The data has random augmentations from the global torch/NumPy/Python RNGs, the train
    loader shuffles, the model has dropout and BatchNorm: any RNG draw or state change by
    the measurement would show.
    """
    plain, _, csv_plain = _fit(tmp_path / "plain", max_epochs=3)
    cb = EquivarianceCallback(num_samples=24, stage=stage)
    with_cb, trainer, csv_cb = _fit(tmp_path / "cb", [cb], max_epochs=3)

    assert sorted(cb.history) == [0, 1, 2]  # it did measure, and not during the sanity check
    a, b = plain.state_dict(), with_cb.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert plain.losses == with_cb.losses and len(plain.losses) == 12
    loss_plain = csv_plain.dropna(subset=["train_loss"])[["step", "train_loss"]].reset_index(drop=True)
    loss_cb = csv_cb.dropna(subset=["train_loss"])[["step", "train_loss"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(loss_plain, loss_cb, check_exact=True)
    val_plain = csv_plain.dropna(subset=["val_loss"])["val_loss"].tolist()
    assert val_plain == csv_cb.dropna(subset=["val_loss"])["val_loss"].tolist()


class _Recording(EquivarianceCallback):
    """Records RNG states, modes and tensors around each measurement."""

    def measure_now(self, trainer, pl_module, epoch):
        before = dict(
            py=random.getstate(),
            np=np.random.get_state()[1].copy(),
            torch=torch.get_rng_state(),
            modes={n: m.training for n, m in pl_module.named_modules()},
            tensors={k: v.clone() for k, v in pl_module.state_dict().items()},
            versions=[t._version for t in list(pl_module.parameters()) + list(pl_module.buffers())],
            grad=torch.is_grad_enabled(),
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report = super().measure_now(trainer, pl_module, epoch)
        after_modes = {n: m.training for n, m in pl_module.named_modules()}
        self.checks.append(
            dict(
                report=report,
                py=random.getstate() == before["py"],
                np=np.array_equal(np.random.get_state()[1], before["np"]),
                torch=torch.equal(torch.get_rng_state(), before["torch"]),
                modes=after_modes == before["modes"],
                mixed=len(set(after_modes.values())) == 2,
                tensors=all(torch.equal(v, before["tensors"][k]) for k, v in pl_module.state_dict().items()),
                # no copy-back was needed: the engine never wrote a parameter or buffer
                versions=[t._version for t in list(pl_module.parameters()) + list(pl_module.buffers())]
                == before["versions"],
                grad=torch.is_grad_enabled() == before["grad"],
                warnings=[str(w.message) for w in caught],
            )
        )
        return report


class _FrozenBN(LitCNN):
    def on_train_epoch_start(self):
        self.net[1].eval()  # a frozen BatchNorm in a model that trains: mixed modes


@pytest.mark.parametrize("stage", ["train", "validation"])
def test_measurement_restores_modes_rngs_parameters_and_buffers(tmp_path, stage):
    cb = _Recording(num_samples=16, stage=stage)
    cb.checks = []
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(callbacks=[cb], logger=False, **trainer_kwargs(tmp_path, max_epochs=2))
    trainer.fit(_FrozenBN(augment=True))
    assert len(cb.checks) == 2
    for c in cb.checks:
        assert c["report"] is not None
        assert c["py"] and c["np"] and c["torch"] and c["grad"]
        assert c["modes"] and (c["mixed"] or stage == "validation")
        assert c["tensors"] and c["versions"], "the measurement changed parameters or buffers (BN statistics)"
        assert not [w for w in c["warnings"] if "EquivarianceCallback" in w], c["warnings"]


class _Counting(nn.Module):
    """A model that (badly) writes a buffer in place in every forward, even in eval mode."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls += 1
        return self.conv(x)


def test_snapshot_copies_back_buffers_and_names_parameters_written_in_place():
    """Buffers are copied and put back; parameters are not copied (no second copy of a large
    model): one written in place is named. RNG states are the callback's rngs_restored's job."""
    model = _Counting()
    snap = Snapshot(model)
    with torch.no_grad():
        model(torch.randn(2, 1, 8, 8))
        model.conv.weight.add_(1.0)
    written = snap.restore()
    assert written == ["conv.weight"] and float(model.calls) == 0.0


def test_snapshot_undoes_what_a_forward_may_rebind_register_or_switch():
    """A buffer registered during the measurement is removed, a parameter re-bound to another tensor is
    bound back (and not named: its tensor was not written), and grad mode is what it was."""
    model = _Counting()
    weight = model.conv.weight
    snap = Snapshot(model)
    model.conv.register_buffer("scratch", torch.zeros(1))
    model.conv._parameters["weight"] = nn.Parameter(weight.detach() + 1.0)
    torch.set_grad_enabled(False)
    try:
        written = snap.restore()
        assert torch.is_grad_enabled()
    finally:
        torch.set_grad_enabled(True)
    assert written == [] and "scratch" not in model.conv._buffers and model.conv.weight is weight


# ---------------------------------------------------------------------------- probe set
def test_probe_set_is_seeded_fixed_and_does_not_touch_the_global_rng(tmp_path):
    x, y = make_data(40, 2)
    dataset = AugmentedDataset(x, y)
    trainer = types.SimpleNamespace(global_rank=0, world_size=1, val_dataloaders=DataLoader(dataset, batch_size=5))
    cb = EquivarianceCallback(num_samples=10, seed=7)
    torch.manual_seed(123)
    random.seed(1)
    np.random.seed(2)
    states = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    images = cb._probe_images(trainer)
    assert torch.equal(torch.get_rng_state(), states[0]) and random.getstate() == states[1]
    assert np.array_equal(np.random.get_state()[1], states[2])

    expected = torch.randperm(40, generator=torch.Generator().manual_seed(7))[:10].sort().values
    assert torch.equal(cb.state_dict()["indices"], expected)
    assert images.shape == (10, 1, 16, 16)
    # the same (augmented) images from a fresh callback, whatever the global RNG state
    torch.manual_seed(999)
    again = EquivarianceCallback(num_samples=10, seed=7)
    assert torch.equal(again._probe_images(trainer), images)
    # restored from a state_dict: the same indices, images and shards
    restored = EquivarianceCallback(num_samples=10, seed=7)
    restored.load_state_dict(cb.state_dict())
    assert torch.equal(restored._probe_images(trainer), images)
    shard = EquivarianceCallback(num_samples=10, seed=7)._probe_images(
        types.SimpleNamespace(**{**vars(trainer), "global_rank": 1, "world_size": 3})
    )
    assert torch.equal(shard, images[4:8])  # contiguous whole pairs: positions 0-3, 4-7, 8-9


def test_input_rules_dict_batches_input_fn_and_user_inputs(tmp_path):
    x, y = make_data(30, 2)
    from callback_helpers import DictDataset

    loader = DataLoader(DictDataset(x, y), batch_size=4)
    trainer = types.SimpleNamespace(global_rank=0, world_size=1, val_dataloaders=[loader], train_dataloader=None)
    idx = torch.randperm(30, generator=torch.Generator().manual_seed(0))[:8].sort().values
    assert torch.equal(EquivarianceCallback(num_samples=8)._probe_images(trainer), x[idx])  # batch["image"]
    fn = EquivarianceCallback(num_samples=8, input_fn=lambda b: b["image"] * 2)
    assert torch.equal(fn._probe_images(trainer), 2 * x[idx])
    # user inputs: a tensor (subset when larger than num_samples), a Dataset, a DataLoader
    assert torch.equal(EquivarianceCallback(num_samples=8, inputs=x)._probe_images(trainer), x[idx])
    assert torch.equal(EquivarianceCallback(num_samples=100, inputs=x)._probe_images(trainer), x)
    assert torch.equal(EquivarianceCallback(num_samples=8, inputs=TensorDataset(x, y))._probe_images(trainer), x[idx])
    assert torch.equal(EquivarianceCallback(num_samples=8, inputs=loader)._probe_images(trainer), x[idx])


# ---------------------------------------------------------------------------- Done when #4
def test_tensorboard_summaries_read_back_and_csv_scalars(tmp_path):
    # log_scalars="layers": every layer's scalar to the loggers (the default is the part means)
    cb = EquivarianceCallback(num_samples=16, per_channel=True, model_name="tiny cnn", log_scalars="layers")
    monitor = "equivariance/equivariance/rotation90/part/Late"
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), monitor=monitor, mode="max")
    tb = TensorBoardLogger(str(tmp_path), name="tb", version=0)
    csv = CSVLogger(str(tmp_path), name="csv", version=0)
    handler_records = []
    handler = logging.Handler()
    handler.emit = handler_records.append
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addHandler(handler)
    try:
        pl.seed_everything(0, verbose=False)
        trainer = pl.Trainer(
            callbacks=[cb, ckpt], logger=[tb, csv], **trainer_kwargs(tmp_path, max_epochs=3, enable_checkpointing=True)
        )
        trainer.fit(LitCNN())
    finally:
        logging.getLogger("lightning.pytorch.utilities.rank_zero").removeHandler(handler)
    # the one-line time summary, once per epoch
    lines = [r.getMessage() for r in handler_records if "EquivarianceCallback: epoch" in r.getMessage()]
    assert len(lines) == 3 and "probe images" in lines[0] and lines[0].endswith("s")

    acc = EventAccumulator(str(tmp_path / "tb" / "version_0"), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    report = cb.last_report
    for measure_name in ("invariance", "equivariance"):
        layers_tag = f"equivariance_layers/{measure_name}/rotation90"
        events = acc.Tensors(layers_tag)
        assert [e.step for e in events] == [4, 8, 12]  # the global step (4 batches per epoch)
        meta = acc.SummaryMetadata(layers_tag)
        assert meta.plugin_data.plugin_name == "equivariance"
        assert meta.data_class == summary_pb2.DATA_CLASS_TENSOR
        import json

        content = json.loads(meta.plugin_data.content)
        assert content["layers"] == LAYERS and content["parts"] == PARTS
        assert content["measure"] == measure_name and content["group"] == "rotation90"
        assert content["model"] == "tiny cnn" and content["baseline"] is False
        from tensorboard.util import tensor_util

        last = tensor_util.make_ndarray(events[-1].tensor_proto)
        assert last.shape == (len(LAYERS),) and last.dtype == np.float32
        series = [s for s in report.series() if s.measure == measure_name][0]
        np.testing.assert_allclose(last, series.values, rtol=1e-6)
        chans = acc.Tensors(f"equivariance_channels/{measure_name}/rotation90")
        assert [e.step for e in chans] == [4, 8, 12]
        arr = tensor_util.make_ndarray(chans[-1].tensor_proto)
        assert arr.shape == (len(LAYERS), 8)  # widest layer: 8 channels (vectors: one entry)
        # scalars through the TensorBoardLogger too
        for layer in LAYERS:
            assert [e.step for e in acc.Scalars(f"equivariance/{measure_name}/rotation90/{layer}")] == [4, 8, 12]

    frame = pd.read_csv(tmp_path / "csv" / "version_0" / "metrics.csv")
    for measure_name in ("invariance", "equivariance"):
        cols = [f"equivariance/{measure_name}/rotation90/{layer}" for layer in LAYERS]
        cols += [
            f"equivariance/{measure_name}/rotation90/part/{p}" for p in ("Early", "Middle", "Late", "Pool", "Final")
        ]
        rows = frame.dropna(subset=cols)
        assert rows["step"].tolist() == [4, 8, 12]
        for epoch, row in zip(range(3), rows.itertuples(index=False)):
            assert row.step == 4 * (epoch + 1)  # global step, not epoch
        for col in cols:
            assert rows[col].tolist() == pytest.approx([cb.history[e][col] for e in range(3)], abs=1e-12)
    # monitorable by ModelCheckpoint
    assert monitor in trainer.callback_metrics and ckpt.best_model_score is not None
    assert float(ckpt.best_model_score) == pytest.approx(max(cb.history[e][monitor] for e in range(3)))


# ---------------------------------------------------------------------------- Done when #3
def test_resume_logs_every_epoch_exactly_once(tmp_path):
    def run(max_epochs, ckpt_path=None, csv_version=0):
        cb = EquivarianceCallback(num_samples=16, per_channel=True)
        pl.seed_everything(0, verbose=False)
        trainer = pl.Trainer(
            callbacks=[cb, ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)],
            logger=[
                TensorBoardLogger(str(tmp_path), name="tb", version=0),
                CSVLogger(str(tmp_path), name="csv", version=csv_version),
            ],
            **trainer_kwargs(tmp_path, max_epochs=max_epochs, enable_checkpointing=True),
        )
        trainer.fit(LitCNN(), ckpt_path=ckpt_path)
        return cb

    first = run(2)
    assert sorted(first.history) == [0, 1]
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"][first.state_key]
    # keyed by global step
    assert sorted(saved["history"]) == [4, 8] and torch.equal(saved["indices"], first.state_dict()["indices"])
    # (CSVLogger deletes an existing metrics.csv of its version dir, so it gets a new one)
    second = run(4, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), csv_version=1)
    assert sorted(second.history) == [0, 1, 2, 3]
    assert second.history[1] == first.history[1]  # loaded, not re-measured
    assert torch.equal(second.state_dict()["indices"], first.state_dict()["indices"])

    # purge_orphaned_data=False: TensorBoard would otherwise hide duplicated steps.
    acc = EventAccumulator(
        str(tmp_path / "tb" / "version_0"), size_guidance={"tensors": 0, "scalars": 0}, purge_orphaned_data=False
    )
    acc.Reload()
    assert len(glob.glob(str(tmp_path / "tb" / "version_0" / "events.out.tfevents.*"))) >= 2  # two runs
    tags = [t for t in acc.Tags()["tensors"] if t.startswith("equivariance_")]
    assert sorted(tags) == sorted(
        # v2: the chance level and stderr go to a stats tag beside the layers and channels; the
        # record tag holds the epoch and global step of each point (the x axis is the global step)
        f"equivariance_{kind}/{m}/rotation90"
        for kind in ("layers", "channels", "stats", "record")
        for m in ("invariance", "equivariance")
    )
    for tag in tags:
        assert [e.step for e in acc.Tensors(tag)] == [4, 8, 12, 16], tag
    for part in ("Early", "Middle", "Late", "Pool", "Final"):  # default logger scalars: the part means
        assert [e.step for e in acc.Scalars(f"equivariance/invariance/rotation90/part/{part}")] == [4, 8, 12, 16]
    steps = []
    for version in (0, 1):
        frame = pd.read_csv(tmp_path / "csv" / f"version_{version}" / "metrics.csv")
        steps += frame.dropna(subset=["equivariance/invariance/rotation90/part/Early"])["step"].tolist()
    assert steps == [4, 8, 12, 16]


def test_an_epoch_end_run_twice_is_logged_once(tmp_path):
    cb = EquivarianceCallback(num_samples=16)
    _, trainer, _ = _fit(tmp_path, [cb], max_epochs=1)
    cb.measure_now = None  # must not be called again
    fake = types.SimpleNamespace(current_epoch=0, global_step=4, callback_metrics={}, sanity_checking=False,
                                 check_val_every_n_epoch=1, state=types.SimpleNamespace(fn=TrainerFn.FITTING))
    cb.on_validation_epoch_end(fake, None)  # the end of epoch 0 again (its last batch had ended)
    assert set(fake.callback_metrics) == set(cb.history[0])


# ---------------------------------------------------------------------------- when
def test_every_n_epochs_and_train_stage(tmp_path):
    cb = EquivarianceCallback(num_samples=8, every_n_epochs=2, stage="train", measures="invariance")
    _fit(tmp_path, [cb], max_epochs=4, limit_val_batches=0)
    assert sorted(cb.history) == [1, 3]
    assert all(k.startswith("equivariance/invariance/") for k in cb.history[1])


def test_mid_epoch_validation_runs_are_not_measured(tmp_path):
    cb = EquivarianceCallback(num_samples=8)
    _, _, csv = _fit(tmp_path, [cb], max_epochs=2, val_check_interval=0.5)
    assert sorted(cb.history) == [0, 1]
    assert len(csv.dropna(subset=["val_loss"])) == 4  # two validations per epoch, one measured


@pytest.mark.parametrize("bar", [True, False])
def test_progress_bar_follows_the_trainers(tmp_path, bar):
    seen = []

    class Spy(EquivarianceCallback):
        def _measurement(self, module, progress, device):
            seen.append((progress, device))
            return super()._measurement(module, progress, device)

    pl.seed_everything(0, verbose=False)
    kw = trainer_kwargs(tmp_path, max_epochs=1, enable_progress_bar=bar, limit_train_batches=1)
    pl.Trainer(callbacks=[Spy(num_samples=8)], logger=False, **kw).fit(LitCNN())
    assert seen[-1] == (bar, torch.device("cpu"))  # seen[0]: the check in setup


# ---------------------------------------------------------------------------- failures
class _NonSquare(LitCNN):
    def __init__(self):
        super().__init__()
        self.net[4] = nn.Conv2d(6, 8, 3, padding=1, stride=(1, 2))  # 8x8 -> 8x4: Rotation90 undefined


def test_a_failing_layer_warns_with_its_name_and_the_rest_is_logged(tmp_path):
    cb = EquivarianceCallback(num_samples=8)
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(callbacks=[cb], logger=CSVLogger(str(tmp_path)), **trainer_kwargs(tmp_path, max_epochs=1))
    with pytest.warns(RuntimeWarning, match="net.4"):
        trainer.fit(_NonSquare())
    assert trainer.state.finished
    logged = cb.history[0]
    assert "equivariance/invariance/rotation90/0" in logged
    assert not any(k.endswith("/4") for k in logged)
    assert "4" in {k[0] for k in cb.last_report.errors}  # keyed (layer, measure, group) now


def test_any_measurement_error_becomes_a_warning(tmp_path):
    def broken(batch):
        raise KeyError("no images here")

    cb = EquivarianceCallback(num_samples=8, input_fn=broken)
    with pytest.warns(RuntimeWarning, match="measurement failed.*no images here"):
        model, trainer, _ = _fit(tmp_path, [cb], max_epochs=2)
    assert trainer.state.finished and trainer.current_epoch == 2
    assert cb.history == {}


def test_failures_around_the_measurement_warn_and_training_goes_on(tmp_path, monkeypatch):
    """Each guard that keeps training going: choosing the probe set at fit start (retried at the first
    measurement), cutting the tidy CSV on resume, setting callback_metrics and logging all fail; every one is
    a warning that names it, the fit finishes, and the measured values stay in the history."""
    import lightning_equivariance.callback as callback_module

    cb = EquivarianceCallback(num_samples=8)
    choose, failed = cb._probes.choose, []

    def choose_once(length):
        if not failed:
            failed.append(length)
            raise RuntimeError("no probe set yet")
        return choose(length)

    def fail(what):
        def raising(*args, **kwargs):
            raise RuntimeError(what)
        return raising

    monkeypatch.setattr(cb._probes, "choose", choose_once)
    monkeypatch.setattr(callback_module, "cut_tidy_csv", fail("csv is locked"))
    monkeypatch.setattr(cb, "_set_callback_metrics", fail("metrics are read-only"))
    monkeypatch.setattr(callback_module, "publish", fail("disk full"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, trainer, _ = _fit(tmp_path, [cb], max_epochs=2)
    said = " | ".join(str(w.message) for w in caught if issubclass(w.category, RuntimeWarning))
    for expected in ("could not choose the probe set at fit start (RuntimeError: no probe set yet)",
                     "could not cut the tidy CSV back to the resumed step (RuntimeError: csv is locked)",
                     "could not set trainer.callback_metrics (RuntimeError: metrics are read-only)",
                     "logging failed (RuntimeError: disk full)"):
        assert expected in said, (expected, said)
    assert trainer.state.finished and trainer.current_epoch == 2
    assert sorted(cb.history) == [0, 1] and all(cb.history.values())  # measured, kept though not logged


def test_a_failing_compute_warns_and_training_goes_on(tmp_path, monkeypatch):
    def broken(self):
        raise RuntimeError("cannot reduce")

    monkeypatch.setattr(Measurement, "compute", broken)
    cb = EquivarianceCallback(num_samples=8)
    with pytest.warns(RuntimeWarning, match="measurement failed, nothing logged.*cannot reduce"):
        _, trainer, _ = _fit(tmp_path, [cb], max_epochs=2)
    assert trainer.state.finished and trainer.current_epoch == 2 and cb.history == {}


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_samples=0), "num_samples"),
        (dict(every_n_epochs=0), "every_n_epochs"),
        (dict(batch_size=-1), "batch_size"),
        (dict(stage="test"), "stage"),
        (dict(seed=-1), "seed"),
        (dict(measures=[]), "measures"),
        (dict(groups=[Rotation90(), Rotation90()]), "groups"),
        (dict(inputs=torch.zeros(4, 16, 16)), "inputs"),
        (dict(inputs=[1, 2, 3]), "inputs"),
        (dict(input_fn="image"), "input_fn"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        EquivarianceCallback(**kwargs)


class _NoValidation(LitCNN):
    validation_step = pl.LightningModule.validation_step


@pytest.mark.parametrize(
    "kwargs, model, match",
    [
        (dict(measures=("invariance", "no_such_measure")), LitCNN, "measures.*no_such_measure"),
        (dict(layers=["net.0", "net.99"]), LitCNN, "layers.*net.99"),
        (dict(submodule="backbone"), LitCNN, "submodule"),
        (dict(groups=["no-such-group"]), LitCNN, "groups.*no-such-group"),
        (dict(measures=("lee",)), LitCNN, "measures.*lee"),  # lee needs continuous transforms
        (dict(), _NoValidation, "stage='validation'.*validation_step"),
    ],
)
def test_setup_refuses_what_does_not_fit_the_model(tmp_path, kwargs, model, match):
    trainer = pl.Trainer(
        callbacks=[EquivarianceCallback(**kwargs)], logger=False, **trainer_kwargs(tmp_path, max_epochs=1)
    )
    with pytest.raises(ValueError, match=match):
        trainer.fit(model())


def test_layout_override_and_on_error_reach_the_measurement(tmp_path):
    cb = EquivarianceCallback(num_samples=8, layers=["net.0", "net.4"], layouts={"net.4": "channels_last"})
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(callbacks=[cb], logger=CSVLogger(str(tmp_path)), **trainer_kwargs(tmp_path, max_epochs=1))
    trainer.fit(LitCNN())  # net.4's B x 8 x 8 x 8 output read as channels-last on request
    assert cb.last_report.layouts == {"0": "channels_first", "4": "channels_last"}
    with pytest.raises(ValueError, match="on_error"):
        EquivarianceCallback(on_error="ignore")


class _TwoChildren(LitCNN):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(5, 5)  # a second child with parameters: names stay qualified

    def forward(self, x):
        return self.head(self.net(x))


def test_layer_names_are_relative_to_the_single_child_and_layers_accepts_both_forms(tmp_path):
    """LitCNN wraps one child ``net``: the callback reports ``0`` as measure(model.net) and the CLI
    do; ``layers=``/``layouts=`` take the relative or the qualified name, with the same values."""
    reports = []
    for layers, layouts in ((["0", "4"], {"4": "channels_last"}), (["net.0", "net.4"], {"net.4": "channels_last"})):
        cb = EquivarianceCallback(num_samples=8, layers=layers, layouts=layouts, measure_on_fit_end=False)
        pl.seed_everything(0, verbose=False)
        trainer = pl.Trainer(callbacks=[cb], logger=False, **trainer_kwargs(tmp_path, max_epochs=1))
        trainer.fit(LitCNN())
        reports.append(cb.last_report)
    a, b = (r.to_dataframe() for r in reports)
    assert list(a["layer"].unique()) == ["0", "4"] and a["layer"].tolist() == b["layer"].tolist()
    np.testing.assert_array_equal(a["value"].to_numpy(), b["value"].to_numpy())
    assert reports[0].layouts == {"0": "channels_first", "4": "channels_last"}
    from lightning_equivariance import measure

    model = LitCNN()
    direct = measure(model.net, make_data(8, 2)[0], layers=["0", "4"], layouts={"4": "channels_last"})
    assert [r.layer for r in direct.results] == [r.layer for r in reports[0].results]

    cb = EquivarianceCallback(num_samples=8, layers=["net.0", "head"], measure_on_fit_end=False)
    trainer = pl.Trainer(callbacks=[cb], logger=False, **trainer_kwargs(tmp_path, max_epochs=1))
    trainer.fit(_TwoChildren())
    assert sorted({r.layer for r in cb.last_report.results}) == ["head", "net.0"]

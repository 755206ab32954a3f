"""The callback changes nothing in training, bit for bit, where the easy snapshot had holes.

Each test trains twice from the same seed, with and without the callback, and compares every
``state_dict`` tensor and every loss: a module re-binding a buffer in ``forward``, a dataset
drawing its augmentation from generators it owns (torch, NumPy, Python; through ``Subset``,
``ConcatDataset`` and a transform object; as training and as validation set), and the
library's e2cnn ``SteerableCNN`` (whose ``R2Conv`` registers buffers in eval mode). Then: a
parameter written in place is named, and a ``KeyboardInterrupt`` inside a measurement leaves
the RNG states and modes as they were.
"""
import random

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from callback_helpers import LitCNN, make_data, trainer_kwargs
from lightning_equivariance import EquivarianceCallback

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers.*",
    "ignore:.*isinstance.*LeafSpec.*",
    "ignore:.*litlogger.*",
)


def _train(tmp_path, model_fn, callback=None, max_epochs=2, **kw):
    pl.seed_everything(0, verbose=False)
    model = model_fn()
    trainer = pl.Trainer(
        callbacks=[callback] if callback else [], logger=False, **trainer_kwargs(tmp_path, max_epochs=max_epochs, **kw)
    )
    trainer.fit(model)
    return model


def _assert_identical(plain, with_cb):
    a, b = plain.state_dict(), with_cb.state_dict()
    assert list(a) == list(b), "state_dict keys differ"
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} state_dict tensors differ: {differ}"
    assert plain.losses == with_cb.losses and plain.losses


# ---------------------------------------------------------------------------- re-bound buffers
class _EMA(LitCNN):
    """Keeps an exponential moving average of its input in a buffer, re-bound in every forward
    (``self.ema = ...`` replaces the registered tensor), in train and in eval mode alike."""

    def __init__(self):
        super().__init__()
        self.register_buffer("ema", torch.zeros(1, 1, 16, 16))

    def forward(self, x):
        self.ema = 0.9 * self.ema + 0.1 * x.detach().mean(0, keepdim=True)
        return self.net(x + 0.0 * self.ema)


@pytest.mark.parametrize("stage", ["validation", "train"])
def test_a_buffer_rebound_in_forward_is_restored(tmp_path, stage):
    plain = _train(tmp_path / "plain", _EMA)
    cb = EquivarianceCallback(num_samples=8, stage=stage)
    with_cb = _train(tmp_path / "cb", _EMA, cb)
    assert len(cb.step_history) == 2
    _assert_identical(plain, with_cb)


# ---------------------------------------------------------------------------- owned generators
class _Jitter:
    """A transform object with its own NumPy RandomState (as some augmentation libraries keep)."""

    def __init__(self, seed):
        self.state = np.random.RandomState(seed)

    def __call__(self, img):
        return img + 0.05 * float(self.state.randn())


class _OwnRNGDataset(Dataset):
    """Augments from generators it owns (not the global RNGs): torch, NumPy and Python ones."""

    def __init__(self, x, y, seed):
        self.x, self.y = x, y
        self.gen = torch.Generator().manual_seed(seed)
        self.np_rng = np.random.default_rng(seed)
        self.py_rng = random.Random(seed)
        self.transforms = [_Jitter(seed)]

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        img = self.x[i]
        if torch.rand((), generator=self.gen) < 0.5:
            img = img.flip(-1)
        if self.py_rng.random() < 0.5:
            img = img.flip(-2)
        img = img + 0.01 * float(self.np_rng.standard_normal())
        for t in self.transforms:
            img = t(img)
        return img, self.y[i]


class _OwnRNGModel(LitCNN):
    """Trains on a dataset owning its generators behind Subset/ConcatDataset wrappers; with
    ``same_val`` the validation set is that very dataset."""

    def __init__(self, same_val):
        super().__init__(augment=True)
        x, y = make_data(72, 1)
        own = _OwnRNGDataset(x, y, seed=3)
        self.train_set = Subset(ConcatDataset([Subset(own, range(0, 40)), Subset(own, range(40, 72))]), range(64))
        self.val_set = self.train_set if same_val else Subset(_OwnRNGDataset(*make_data(48, 2), seed=4), range(48))

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=16, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=16)


@pytest.mark.parametrize("stage, same_val", [("train", False), ("validation", False), ("validation", True)])
def test_a_dataset_owning_its_generators_draws_the_same(tmp_path, stage, same_val):
    plain = _train(tmp_path / "plain", lambda: _OwnRNGModel(same_val))
    cb = EquivarianceCallback(num_samples=12, stage=stage, measures=("invariance",))
    with_cb = _train(tmp_path / "cb", lambda: _OwnRNGModel(same_val), cb)
    assert len(cb.step_history) == 2
    _assert_identical(plain, with_cb)


# ---------------------------------------------------------------------------- e2cnn
class _LitSteerable(LitCNN):
    def __init__(self):
        super().__init__()
        from lightning_equivariance.baselines import SteerableCNN

        self.net = SteerableCNN(n_rotations=4, num_classes=5, fields=(2, 3, 4), kernel_size=3)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)

    def _dataset(self, n, seed):
        x, y = make_data(n, seed, size=17)  # odd size: exact rotations of e2cnn's pooling
        return torch.utils.data.TensorDataset(x, y)


def test_the_steerable_cnn_trains_bit_for_bit_the_same(tmp_path):
    pytest.importorskip("e2cnn")
    plain = _train(tmp_path / "plain", _LitSteerable)
    cb = EquivarianceCallback(num_samples=8, measures=("invariance",))
    with_cb = _train(tmp_path / "cb", _LitSteerable, cb)
    assert len(cb.step_history) == 2 and cb.last_report.results
    _assert_identical(plain, with_cb)  # R2Conv's eval-mode buffers gone again, same keys


# ---------------------------------------------------------------------------- parameters, interrupts
class _WritesWeight(LitCNN):
    def forward(self, x):
        if not self.training:
            with torch.no_grad():
                self.net[0].weight.mul_(1.0)  # an in-place write (same values, a new version)
        return self.net(x)


def test_a_parameter_written_in_place_is_named_and_nothing_is_logged(tmp_path):
    cb = EquivarianceCallback(num_samples=8, measure_on_fit_end=False)
    with pytest.warns(RuntimeWarning, match=r"measurement failed.*'net\.0\.weight'.*in place"):
        _train(tmp_path, _WritesWeight, cb, max_epochs=1, num_sanity_val_steps=0)
    assert cb.step_history == {}


class _Interrupting(LitCNN):
    interrupt = False

    def forward(self, x):
        if self.interrupt:
            torch.rand(3)  # move the global RNG first: the interrupt must not keep this
            raise KeyboardInterrupt
        return self.net(x)


def test_keyboard_interrupt_inside_measure_now_restores_rngs_and_modes(tmp_path):
    """Called outside ``fit`` (inside it Lightning turns SIGINT into its own graceful exit)."""
    cb = EquivarianceCallback(num_samples=8, measure_on_fit_end=False, every_n_epochs=None)
    pl.seed_everything(0, verbose=False)
    model = _Interrupting()
    trainer = pl.Trainer(callbacks=[cb], logger=False, **trainer_kwargs(tmp_path, max_epochs=1))
    trainer.fit(model)
    model.train()
    model.net[1].eval()  # mixed modes
    modes = {n: m.training for n, m in model.named_modules()}
    model.interrupt = True
    states = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    with pytest.raises(KeyboardInterrupt):
        cb.measure_now(trainer, model)
    assert random.getstate() == states[0]
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.get_rng_state(), states[2])
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert torch.is_grad_enabled()

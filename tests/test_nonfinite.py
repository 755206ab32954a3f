"""NaN/Inf in probe images or activations: left out where they are, named, never a NaN value (docs/measures.md §1.7)."""
import math
import warnings

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from callback_helpers import LitCNN, trainer_kwargs
from lightning_equivariance import EquivarianceCallback, Rotation90, Translation, measure
from models import SmallCNN

STACKED = ("invariance", "equivariance", "nv", "geed_channel")


def _values(report):
    return {(r.layer, r.measure, r.group): (r.value, r.left_out) for r in report.results}


def _quiet(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return measure(*args, **kw)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("batch_size", [1000, 12])  # one chunk, and chunks of 3 images x 4 views
def test_one_bad_pixel_equals_measuring_the_clean_images(bad, batch_size):
    torch.manual_seed(0)
    model = SmallCNN().double()
    x = torch.rand(8, 1, 12, 12, dtype=torch.float64)
    dirty = x.clone()
    dirty[5, 0, 3, 7] = bad
    clean = torch.cat([x[:5], x[6:]])
    kw = dict(groups=[Rotation90(), Translation(2)], batch_size=batch_size)
    with pytest.warns(RuntimeWarning, match=r"position\(s\) \[5\] hold NaN or Inf") as record:
        got = measure(model, dirty, measures=STACKED, **kw)
    assert sum("NaN or Inf" in str(w.message) for w in record) == 1  # one warning per measurement
    want = measure(model, clean, measures=STACKED, **kw)
    assert got.non_finite_inputs == [5] and got.errors == {}
    assert set(got.non_finite) == {r.layer for r in got.results} and all(v == [5] for v in got.non_finite.values())
    assert set(got.to_dataframe().non_finite) == {1}
    a, b = _values(got), _values(want)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key][0] == pytest.approx(b[key][0], rel=1e-6, abs=1e-12), key
        assert a[key][1] == b[key][1], key  # dead channels of the clean images only
    lee_kw = dict(measures=("lee",), groups=("rotation", "translation_x"), batch_size=batch_size)
    got, want = _quiet(model, dirty, **lee_kw), measure(model, clean, **lee_kw)
    for key, (value, _) in _values(got).items():
        assert value == pytest.approx(_values(want)[key][0], rel=1e-6), key


class _NaNForDarkImages(nn.Module):
    """NaN where an image's mean activation is below ``threshold``: for some images only."""

    threshold = 0.0

    def forward(self, x):
        m = x.mean((1, 2, 3), keepdim=True)
        return torch.where(m < self.threshold, torch.full_like(x, math.nan), x)


def test_a_layer_with_nan_for_some_images_leaves_them_out_there_only():
    torch.manual_seed(0)
    conv, act, conv2 = nn.Conv2d(1, 4, 3, padding=1), _NaNForDarkImages(), nn.Conv2d(4, 4, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU(), act, conv2, nn.ReLU()).double()
    x = torch.rand(8, 1, 10, 10, dtype=torch.float64) * torch.linspace(0.5, 1.5, 8, dtype=torch.float64).view(
        8, 1, 1, 1
    )
    with torch.no_grad():
        means = model[:2](x).mean((1, 2, 3))
        act.threshold = float(means.median())
        # an image is left out where any of its rotated views is NaN
        views = [torch.rot90(x, k, (-2, -1)) for k in range(4)]
        bad = [i for i in range(8) if not all(torch.isfinite(model(v[i : i + 1])).all() for v in views)]
    assert 0 < len(bad) < 8
    layers = ["0", "1", "2", "3", "4"]
    with pytest.warns(RuntimeWarning, match="layer\\(s\\) left out images whose activations hold NaN"):
        got = measure(model, x, measures=STACKED, groups=[Rotation90()], layers=layers)
    keep = [i for i in range(8) if i not in bad]
    all_imgs = measure(model, x, measures=STACKED, groups=[Rotation90()], layers=["0", "1"])
    # after the NaN layer: equal to measuring the good images through a model without NaNs
    tail = nn.Sequential(conv, nn.ReLU(), nn.Identity(), conv2, nn.ReLU())
    clean = measure(tail, x[keep], measures=STACKED, groups=[Rotation90()], layers=["3", "4"])
    a = _values(got)
    for key, (value, _) in _values(all_imgs).items():
        assert a[key][0] == pytest.approx(value, rel=1e-9)
    for key, (value, _) in _values(clean).items():
        assert a[key][0] == pytest.approx(value, rel=1e-6), key
    assert got.non_finite_inputs == [] and "0" not in got.non_finite and got.non_finite["4"] == bad


def test_a_layer_that_loses_every_image_is_recorded():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Hardtanh(), nn.Conv2d(2, 2, 3))
    with torch.no_grad():
        model[2].bias.fill_(math.nan)
    with pytest.warns(RuntimeWarning):
        report = measure(model, torch.rand(3, 1, 8, 8), groups=[Rotation90()])
    assert {r.layer for r in report.results} == {"0", "1"}
    assert "every probe image's activation holds NaN or Inf" in report.errors[("2", "invariance", "rotation90")]
    assert not any(math.isnan(r.value) for r in report.results)


class _NaNValidation(LitCNN):
    """Validation image 2 holds a NaN pixel."""

    def val_dataloader(self):
        loader = super().val_dataloader()
        loader.dataset.tensors[0][2, 0, 4, 4] = math.nan
        return loader


def test_callback_logs_finite_values_and_names_the_probe_position(tmp_path):
    cb = EquivarianceCallback(num_samples=48)  # the whole validation set: probe position = index
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(callbacks=[cb], logger=CSVLogger(str(tmp_path)), **trainer_kwargs(tmp_path, max_epochs=2))
    with pytest.warns(RuntimeWarning, match=r"position\(s\) \[2\] hold NaN or Inf"):
        trainer.fit(_NaNValidation())
    assert trainer.state.finished and set(cb.history) == {0, 1}
    for scalars in cb.history.values():
        assert scalars and all(math.isfinite(v) for v in scalars.values())
    assert cb.last_report.non_finite_inputs == [2]

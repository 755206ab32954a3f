"""Chance level and standard errors through measure() (docs/measures.md §7), end to end."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from lightning_equivariance import Measurement, Rotation90, Translation, measure
from lightning_equivariance.report import INFORMATIVE_ROOM
from models import SmallCNN


def _no_structure():
    """A dense layer reshaped to 512 x 2 x 2: a 'map' with no spatial structure at all."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(192, 2048), nn.Unflatten(1, (512, 2, 2)))


def test_a_map_without_spatial_structure_scores_its_chance_level_and_is_uninformative():
    torch.manual_seed(1)
    x = torch.rand(32, 3, 8, 8)
    # read as a map on the user's word: nothing in a Linear's unflattened output is evidence of a grid
    # (issue 21: without the override it is measured as the 2048-vector it is)
    report = measure(_no_structure(), x, measures=("equivariance",), groups=[Rotation90()], layers=["2"],
                     layouts={"2": "channels_first"})
    (r,) = report.results
    assert r.value > 0.9  # what a reader would take for "learned equivariance"
    assert r.chance is not None and abs(r.value - r.chance) <= 0.02
    assert r.informative is False and r.above_chance is None
    row = report.to_dataframe().iloc[0]
    assert row.chance == pytest.approx(r.chance)
    assert row.informative == False  # noqa: E712 - the cell may be a numpy.bool_ (and a NaN would fail)


def _gaussian(size=5, sigma=1.0):
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    return g / g.sum()


def _isotropic_network():
    """Bruintjes et al. 2023 §4.1: three conv layers of isotropic 2-D Gaussians (12 x 12 inputs)."""
    torch.manual_seed(0)
    layers = []
    for c_in, c_out in ((1, 4), (4, 4), (4, 4)):
        conv = nn.Conv2d(c_in, c_out, 5, padding=2, bias=False).double()
        with torch.no_grad():
            scales = torch.rand(c_out, c_in, 1, 1, dtype=torch.float64) + 0.5
            conv.weight.copy_(scales * _gaussian())
        layers += [conv, nn.ReLU()]
    return nn.Sequential(*layers)


def test_isotropic_gaussian_network_is_far_above_chance_where_informative():
    torch.manual_seed(2)
    report = measure(_isotropic_network(), torch.rand(16, 1, 12, 12, dtype=torch.float64), groups=[Rotation90()])
    informative = [r for r in report.results if r.informative]
    assert informative, "some layer must be informative"
    for r in informative:
        assert r.above_chance >= 0.95, (r.layer, r.measure, r.value, r.chance)
    for r in report.results:
        assert r.informative is False or r.chance < 1 - INFORMATIVE_ROOM or r.measure == "equivariance"


def test_stderr_is_the_standard_error_of_the_images_own_scores():
    """s_i = the layer's value measured on image i alone (its own mean over elements and live channels)."""
    torch.manual_seed(3)
    model = SmallCNN().double()
    x = torch.rand(7, 1, 12, 12, dtype=torch.float64)
    kw = dict(measures=("invariance", "equivariance", "geed_channel"), groups=[Rotation90()], chance=False)
    report = measure(model, x, **kw)
    per_image = [measure(model, x[i : i + 1], **kw) for i in range(7)]
    for r in report.results:
        s = [
            next(q.value for q in p.results if (q.layer, q.measure, q.group) == (r.layer, r.measure, r.group))
            for p in per_image
        ]
        if r.left_out == 0:  # without dead channels the pooled value is the mean of the s_i
            assert r.value == pytest.approx(np.mean(s), rel=1e-9)
            assert r.stderr == pytest.approx(np.std(s, ddof=1) / math.sqrt(len(s)), rel=1e-6), (r.layer, r.measure)
    lee = measure(model, x, measures=("lee",), groups=("rotation",))
    per_image = [measure(model, x[i : i + 1], measures=("lee",), groups=("rotation",)) for i in range(7)]
    for r in lee.results:
        s = [next(q.value for q in p.results if q.layer == r.layer) for p in per_image]
        assert r.stderr == pytest.approx(np.std(s, ddof=1) / math.sqrt(7), rel=1e-6), r.layer


def test_chance_is_off_on_request_and_parts_carry_it():
    torch.manual_seed(4)
    model, x = SmallCNN(), torch.rand(6, 1, 12, 12)
    off = measure(model, x, groups=[Rotation90(), Translation(2)], chance=False)
    assert all(r.chance is None and r.above_chance is None for r in off.results)
    on = measure(model, x, groups=[Rotation90(), Translation(2)])
    assert [r.value for r in on.results] == pytest.approx([r.value for r in off.results], rel=1e-6)
    assert all(r.chance is not None for r in on.results if r.measure in ("invariance", "equivariance"))
    parts = on.parts(detail=True)
    assert list(parts.columns) == ["measure", "group", "part", "value", "chance", "above_chance", "informative",
                                   "stderr", "margin", "margin_stderr", "margin_low", "significant"]
    df = on.to_dataframe()
    for _, p in parts.iterrows():
        layers = df[(df.measure == p.measure) & (df.group == p.group) & (df.part == p.part)]
        assert p.value == pytest.approx(layers.value.mean()) and p.chance == pytest.approx(layers.chance.mean())


def test_pairs_never_cross_chunks_or_updates_that_start_at_even_positions():
    torch.manual_seed(5)
    model, x = SmallCNN().double(), torch.rand(9, 1, 12, 12, dtype=torch.float64)
    one = measure(model, x, measures=("invariance", "equivariance"), groups=[Rotation90()], batch_size=1000)
    split = Measurement(model, measures=("invariance", "equivariance"), groups=[Rotation90()], batch_size=8)
    split.update(x[:4])
    split.update(x[4:])  # starts at position 4: pairs (4, 5), (6, 7); 8 alone
    two = split.compute()
    for a, b in zip(one.results, two.results):
        assert a.chance == pytest.approx(b.chance, rel=1e-9) and a.stderr == pytest.approx(b.stderr, rel=1e-9)

"""Group-aware measurement of e2cnn steerable CNNs (docs/measures.md §1.5; issue 7)."""
import warnings

import pytest
import torch

from lightning_equivariance import Flip, Rotation90, measure
from lightning_equivariance.baselines import Bruintjes7Layer, PlainCNN, SteerableCNN, count_parameters
from lightning_equivariance.groups import GroupActionError, GroupElement
from lightning_equivariance.steerable import e2cnn_channel_action

warnings.filterwarnings("ignore", message="indexing with dtype torch.uint8")


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    return torch.randn(6, 1, 29, 29)  # odd sizes keep strided pooling exactly rot90-equivariant


@pytest.fixture(scope="module")
def c4():
    torch.manual_seed(0)
    return SteerableCNN(n_rotations=4).eval()


def _table(model, x, **kw):
    df = measure(model, x, groups=[Rotation90()], **kw).to_dataframe()
    return df.pivot_table(index=["index", "layer"], columns="measure", values="value")


def test_c4_steerable_is_equivariant_under_group_aware_action(c4, images):
    table = _table(c4, images)
    assert len(table) == 14  # R2Conv, InnerBatchNorm, ReLU, pooling per block, GroupPooling, GAP, fc
    assert (table >= 0.999).all().all(), table


def test_without_channel_action_invariance_drops_but_equivariance_finds_permuted_channels(c4, images):
    table = _table(c4, images, steerable_actions=False)
    maps = table.iloc[:11]  # the regular-field layers before group pooling
    assert (maps["equivariance"] >= 0.999).all(), table
    assert (maps["invariance"] <= 0.5).all(), table  # Bruintjes et al.: channel matching finds permuted features
    assert (table.iloc[11:] >= 0.999).all().all()  # after group pooling: invariant fields


def test_matched_plain_cnn_scores_clearly_lower_late(c4, images):
    plain = PlainCNN.matching(c4).eval()
    assert 0.5 < count_parameters(plain) / count_parameters(c4) < 2.0
    df = measure(plain, images, groups=[Rotation90()]).to_dataframe()
    late = df[(df.part == "Late")].groupby("measure").value.mean()
    assert late["equivariance"] < 0.95 and late["invariance"] < 0.5, late


def test_d4_steerable_flips_and_rotations(images):
    torch.manual_seed(1)
    d4 = SteerableCNN(n_rotations=4, flips=True, fields=(2, 3, 4)).eval()
    df = measure(d4, images, groups=[Rotation90(), Flip(("horizontal", "vertical"))]).to_dataframe()
    assert (df.value >= 0.999).all(), df[df.value < 0.999]


def test_channel_action_is_the_field_representation_and_errors_are_clear():
    from e2cnn import gspaces
    from e2cnn import nn as enn

    gs = gspaces.Rot2dOnR2(8)
    ft = enn.FieldType(gs, [gs.regular_repr] * 2)
    act = e2cnn_channel_action(ft)
    a = torch.arange(16.0).reshape(1, 16, 1, 1)
    out = act(a, GroupElement("90", {"angle": 90.0}))
    # rot90 <=> cyclic shift by N/4 = 2 inside each regular field of C8
    expected = torch.cat([torch.roll(a[:, :8], 2, dims=1), torch.roll(a[:, 8:], 2, dims=1)], dim=1)
    assert torch.equal(out, expected)
    with pytest.raises(GroupActionError, match="not an element"):
        act(a, GroupElement("30", {"angle": 30.0}))
    with pytest.raises(GroupActionError, match="no reflections"):
        act(a, GroupElement("horizontal", {"flip": "horizontal"}))


def test_bruintjes_7_layer_cnn_shape():
    model = Bruintjes7Layer()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 7 and all(c.out_channels == 20 and c.kernel_size == (3, 3) for c in convs)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_geed_channel_of_the_steerable_net_is_at_its_equivariant_value(c4, images):
    """Kvinge et al. 2022 Eq. 5: m = -(1/C) sum_c cos(...), so exact equivariance gives -1 (its minimum)."""
    plain = PlainCNN.matching(c4).eval()
    steerable = measure(c4, images, measures=["geed_channel"], groups=[Rotation90()]).to_dataframe()
    maps = steerable[steerable.kind == "map"]
    assert (maps.value <= -0.999).all(), maps
    plain_maps = measure(plain, images, measures=["geed_channel"], groups=[Rotation90()]).to_dataframe()
    assert plain_maps[plain_maps.kind == "map"].value.mean() > -0.5  # far from equivariant

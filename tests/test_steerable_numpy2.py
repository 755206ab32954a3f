"""e2cnn steerable models under NumPy 2 (issue 17): the compatibility layer in action.

These run under whichever NumPy is installed; under NumPy 2 they fail without
``lightning_equivariance._e2cnn_compat`` (D_N, flip-group and SO(2) bases cannot be built).
"""
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("e2cnn", reason='needs e2cnn: pip install "lightning-equivariance[steerable]"')

from lightning_equivariance import Flip, _e2cnn_compat, measure  # noqa: E402 - after the e2cnn skip
from lightning_equivariance.baselines import SteerableCNN  # noqa: E402 - after the e2cnn skip
from lightning_equivariance.groups import GroupElement  # noqa: E402 - after the e2cnn skip
from lightning_equivariance.steerable import e2cnn_channel_action, patch_e2cnn  # noqa: E402 - after the e2cnn skip

NUMPY = tuple(int(p) for p in np.__version__.split(".")[:2])
ROT90 = GroupElement("90", {"angle": 90.0})
HFLIP = GroupElement("horizontal", {"flip": "horizontal"})


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    return torch.randn(4, 1, 29, 29)  # odd sizes keep strided pooling exactly equivariant


def test_d4_steerable_cnn_is_flip_invariant_with_the_group_aware_action(images):
    torch.manual_seed(0)
    d4 = SteerableCNN(4, flips=True).eval()
    flips = Flip(("horizontal", "vertical"))
    df = measure(d4, images, groups=[flips], measures=["invariance"]).to_dataframe()
    assert len(df) == 14 and (df.value >= 0.999).all(), df[df.value < 0.999]
    # The plain action ignores the reflection's permutation of each regular field's channels.
    plain = measure(d4, images, groups=[flips], measures=["invariance"], steerable_actions=False).to_dataframe()
    assert plain.value.iloc[:11].max() < 0.9, plain


def test_the_patch_is_in_place_exactly_under_numpy_2():
    patch_e2cnn()
    assert _e2cnn_compat.is_applied() == (NUMPY >= (2, 0))
    # Nothing global: NumPy keeps its own API.
    assert hasattr(np.ndarray, "tostring") == (NUMPY < (2, 3))


def _rot90(x):
    return torch.rot90(x, 1, (-2, -1))


def _hflip(x):
    return torch.flip(x, dims=(-1,))


def _gspace(name):
    from e2cnn import gspaces

    if name == "C8":
        gs = gspaces.Rot2dOnR2(8)
        return gs, [gs.regular_repr] * 2, [(ROT90, _rot90)]
    if name == "D4":
        gs = gspaces.FlipRot2dOnR2(4)
        return gs, [gs.regular_repr] * 2, [(ROT90, _rot90), (HFLIP, _hflip)]
    if name == "SO2":
        gs = gspaces.Rot2dOnR2(-1, maximum_frequency=3)
        return gs, [gs.irrep(0), gs.irrep(1), gs.irrep(2)], [(ROT90, _rot90)]
    gs = gspaces.Flip2dOnR2()  # the flip group alone: built, not measured (no element mapping)
    return gs, [gs.regular_repr] * 2, []


@pytest.mark.parametrize("name", ["C8", "D4", "SO2", "flip"])
def test_e2cnn_bases_build_and_are_equivariant(name):
    """R2Conv bases of C_N, D_N, SO(2) and the flip group: built, and exactly equivariant."""
    patch_e2cnn()
    from e2cnn import nn as enn

    gs, reprs, elements = _gspace(name)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e2cnn's own deprecations
        in_type = enn.FieldType(gs, [gs.trivial_repr])
        hidden = enn.FieldType(gs, reprs)
        net = enn.SequentialModule(
            enn.R2Conv(in_type, hidden, 5, padding=2), enn.R2Conv(hidden, hidden, 3, padding=1)
        ).eval()
    x = torch.randn(2, 1, 9, 9)
    with torch.no_grad():
        y = net(enn.GeometricTensor(x, in_type)).tensor
        assert y.shape == (2, hidden.size, 9, 9) and y.abs().max() > 0
        act = e2cnn_channel_action(hidden)
        for element, spatial in elements:
            y_g = net(enn.GeometricTensor(spatial(x), in_type)).tensor
            torch.testing.assert_close(y_g, act(spatial(y), element), atol=1e-4, rtol=1e-4)

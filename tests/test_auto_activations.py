"""layers="auto" selects activations by what they are, not by living in torch.nn (docs/layers.md, issue 21)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_equivariance import Rotation90, measure, select_layers
from lightning_equivariance.layers import is_activation
from reference import correlation_brute

timm_activations = pytest.importorskip("timm.layers.activations")
timm_activations_me = pytest.importorskip("timm.layers.activations_me")


class SubclassedReLU(nn.ReLU):
    """A subclass of a torch activation, defined outside torch.nn."""


class ScaledSoftplus(nn.Module):
    """A custom activation: a thin wrapper of an activation function, named for what it does."""

    def forward(self, x):
        return 2.0 * F.softplus(x)


class Nonlinearity(nn.Module):
    """A custom activation whose name says nothing: what its forward calls does."""

    def forward(self, x):
        return F.silu(x)


class Doubling(nn.Module):
    """Computes, but is no activation: no activation name, calls no activation function."""

    def forward(self, x):
        return x * 2


class WrapsAnActivation(nn.Module):
    """A wrapper holding a torch activation: its child is the leaf that is measured."""

    def __init__(self):
        super().__init__()
        self.act = nn.GELU()

    def forward(self, x):
        return self.act(x)


def net():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        timm_activations.GELU(),  # 1
        nn.Conv2d(4, 4, 3, padding=1),
        SubclassedReLU(),  # 3
        nn.Conv2d(4, 4, 3, padding=1),
        ScaledSoftplus(),  # 5
        Nonlinearity(),  # 6
        Doubling(),  # 7
        WrapsAnActivation(),  # 8
        timm_activations.Swish(),  # 9
        timm_activations_me.HardSwishMe(),  # 10
        timm_activations.GELUTanh(),  # 11
        timm_activations.QuickGELU(),  # 12
    )


def test_auto_selects_timm_and_custom_activations_but_not_other_parameter_free_modules():
    names = [n for n, _ in select_layers(net(), "auto")]
    assert names == ["0", "1", "2", "3", "4", "5", "6", "8.act", "9", "10", "11", "12"]
    assert "7" not in names and "8" not in names  # Doubling; the wrapper (its child is measured, once)


@pytest.mark.parametrize("cls", [c for c in vars(timm_activations).values()
                                 if isinstance(c, type) and issubclass(c, nn.Module)
                                 and c.__module__ == timm_activations.__name__])
def test_every_timm_activation_class_is_an_activation(cls):
    assert is_activation(cls()), cls.__name__  # all of timm's build without arguments


@pytest.mark.parametrize("module", [nn.Conv2d(1, 1, 1), nn.Linear(2, 2), nn.Identity(), Doubling(), WrapsAnActivation(),
                                    nn.MultiheadAttention(4, 1), nn.Sequential(nn.ReLU())])
def test_not_activations(module):
    assert not is_activation(module)


def test_a_timm_gelu_is_measured_like_torchs_against_the_brute_force_reference():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), timm_activations.GELU(), nn.Conv2d(4, 4, 3, padding=1),
                          Nonlinearity()).eval()
    images = torch.rand(4, 3, 8, 8)
    report = measure(model, images, groups=[Rotation90()], chance=False)
    want = correlation_brute(model, images, [("rot", 1), ("rot", 2), ("rot", 3)])
    df = report.to_dataframe()
    for layer in ("1", "3"):
        got = dict(zip(df[df.layer == layer].measure, df[df.layer == layer].value))
        assert got["invariance"] == pytest.approx(want[layer][0], abs=1e-6)
        assert got["equivariance"] == pytest.approx(want[layer][1], abs=1e-6)
    # the same network with torch's GELU gives the same values
    twin = nn.Sequential(model[0], nn.GELU(), model[2], nn.SiLU()).eval()
    same = measure(twin, images, groups=[Rotation90()], chance=False).to_dataframe()
    assert same.value.tolist() == pytest.approx(df[df.layer != "(output)"].value.tolist(), abs=1e-7)

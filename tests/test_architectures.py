"""Modern architectures: channels-last layers, layouts, degenerate layers (issue: every architecture measured right).

The channels-last checks compare the library with references written here from the
equations on activations captured by plain hooks and *permuted to channels-first by hand*
(``reference.py``'s Pearson/transforms, ``reference_family.py``'s variances, a Richardson
finite difference through ``grid_sample`` for ``lee``).
"""
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import reference as ref
import reference_family as fam
from lightning_equivariance import Measurement, Rotation90, Translation, measure
from lightning_equivariance.layers import LayoutError, as_activation, discover_layouts, select_layers


def _to_cf(a):
    """B x h x w x C -> B x C x h x w, by hand."""
    return a.permute(0, 3, 1, 2).contiguous()


def _correlation_reference(model, names, x, elements):
    """{layer: (invariance, equivariance)} on the channels-first permutation of channels-last outputs."""
    in_size = tuple(x.shape[-2:])
    per_elem = {n: [] for n in names}
    for e in elements:
        xt = torch.stack(
            [torch.from_numpy(ref.transform_np(x[i].numpy(), e, in_size)[0].copy()) for i in range(x.shape[0])]
        )
        a, at = ref.hooked(model, names, x), ref.hooked(model, names, xt)
        for n in names:
            ax, agx = _to_cf(a[n]).numpy(), _to_cf(at[n]).numpy()
            inv = eqv = count = 0.0
            for i in range(x.shape[0]):
                tax, mask = ref.transform_np(ax[i], e, in_size)
                for c in range(ax.shape[1]):
                    r = ref.pearson_relu(agx[i, c][mask], tax[c][mask])
                    if r is None:
                        continue
                    best = max((ref.pearson_relu(agx[i, c][mask], tax[c2][mask]) or 0.0) for c2 in range(ax.shape[1]))
                    inv, eqv, count = inv + r, eqv + best, count + 1
            per_elem[n].append((inv / count, eqv / count))
    return {n: tuple(np.mean(v, axis=0)) for n, v in per_elem.items()}


def _nv_reference(model, names, x, elements):
    """{layer: per-channel NV} (Quiroga Eq. 2-4) on channels-first permutations, identity included."""
    in_size = tuple(x.shape[-2:])
    views = [x] + [
        torch.stack([torch.from_numpy(fam.transform(x[i].numpy(), e, in_size)[0].copy()) for i in range(x.shape[0])])
        for e in elements
    ]
    caps = [ref.hooked(model, names, v) for v in views]
    out = {}
    for n in names:
        cube = np.stack([_to_cf(c[n]).numpy() for c in caps], axis=1)  # n x k x C x h x w
        per_unit = fam.ratio(fam.tv(cube), fam.sv(cube))
        out[n] = per_unit.reshape(per_unit.shape[0], -1).mean(-1)
    return out


def _warp(a, name, t):
    theta = {
        "rotation": [[math.cos(t), math.sin(t), 0], [-math.sin(t), math.cos(t), 0]],
        "translation_x": [[1, 0, t], [0, 1, 0]],
    }[name]
    theta = torch.tensor(theta, dtype=a.dtype).expand(a.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(a.shape), align_corners=True)
    return F.grid_sample(a, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def _lee_reference(model, names, x, transform, t=1e-4):
    """{layer: LEE} from a (first-order) Richardson-extrapolated central difference of
    rho(-t) f(rho(t) x), maps permuted first."""

    def central(step):
        plus, minus = (
            ref.hooked(model, names, _warp(x, transform, step)),
            ref.hooked(model, names, _warp(x, transform, -step)),
        )
        return {
            n: (_warp(_to_cf(plus[n]), transform, -step) - _warp(_to_cf(minus[n]), transform, step)) / (2 * step)
            for n in names
        }

    d1, d2 = central(t), central(t / 2)
    out = {}
    for n in names:
        lie = 2 * d2[n] - d1[n]  # the reflection at the border makes the error first order in t
        out[n] = float(lie.square().flatten(1).sum(1).mean() / lie[0].numel())
    return out


def _convnext():
    torch.manual_seed(0)
    return torchvision.models.convnext_tiny(num_classes=10).double().eval()


def _swin():
    torch.manual_seed(0)
    return torchvision.models.swin_t(num_classes=10).double().eval()


CONVNEXT_CL = ["features.1.0.block.2", "features.1.0.block.3", "features.1.0.block.4", "features.1.0.block.5"]
SWIN_CL = ["features.1.0.norm1", "features.1.0.attn", "features.1.0.mlp.0", "features.1.0.mlp.1", "features.2.norm"]


@pytest.fixture(scope="module")
def convnext():
    return _convnext()


@pytest.fixture(scope="module")
def swin():
    return _swin()


@pytest.mark.parametrize("arch", ["convnext", "swin"])
def test_channels_last_layers_match_permuted_reference(arch, convnext, swin):
    model, names = (convnext, CONVNEXT_CL) if arch == "convnext" else (swin, SWIN_CL)
    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    report = measure(
        model, x, measures=("invariance", "equivariance", "nv"), groups=[Rotation90()], layers=names, batch_size=64
    )
    assert report.errors == {}
    assert all(report.layouts[n] == "channels_last" for n in names)
    corr = _correlation_reference(model, names, x, ref.ROT)
    nv = _nv_reference(model, names, x, ref.ROT)
    for r in report.results:
        if r.measure == "nv":
            np.testing.assert_allclose(r.per_channel, nv[r.layer], rtol=1e-5, atol=1e-9)
            assert r.per_channel.shape == (r.shape[0],)  # the true channels
        else:
            expected = corr[r.layer][0 if r.measure == "invariance" else 1]
            assert r.value == pytest.approx(expected, rel=1e-5, abs=1e-9), (r.layer, r.measure)


@pytest.mark.parametrize("arch", ["convnext", "swin"])
def test_channels_last_lee_matches_finite_difference(arch, convnext, swin):
    model, names = (convnext, CONVNEXT_CL[:2]) if arch == "convnext" else (swin, SWIN_CL[:1] + SWIN_CL[2:3])
    x = F.avg_pool2d(torch.rand(2, 3, 34, 34, dtype=torch.float64, generator=torch.Generator().manual_seed(2)), 3, 1)
    for transform in ("translation_x", "rotation"):
        df = measure(model, x, measures=("lee",), groups=(transform,), layers=names).to_dataframe().set_index("layer")
        expected = _lee_reference(model, names, x, transform)
        for n in names:
            assert df.loc[n, "layout"] == "channels_last"
            assert df.loc[n, "value"] == pytest.approx(expected[n], rel=1e-5), (n, transform)


@pytest.mark.parametrize("arch", ["convnext", "swin"])
def test_rotation90_measures_every_channels_last_layer_at_64px(arch, convnext, swin):
    model = convnext if arch == "convnext" else swin
    model = model.float()
    try:
        report = measure(model, torch.rand(2, 3, 64, 64), groups=[Rotation90()], measures=("invariance",))
    finally:
        model.double()
    assert not [e for e in report.errors.values() if "not square" in e]
    layers = {r.layer for r in report.results}
    assert sum(report.layouts[n] == "channels_last" for n in layers) >= (60 if arch == "convnext" else 60)
    measured_or_recorded = (
        layers | {k[0] for k in report.errors} | {k[0] for k in report.notes} | set(report.not_called)
    )
    assert {n for n, _ in select_layers(model)} <= {n.split(":")[0] for n in measured_or_recorded}
    assert not any(math.isnan(r.value) for r in report.results)


# ---------------------------------------------------------------------- layouts
class _ChannelsLastBlock(nn.Module):
    """A ConvNeXt-like block: conv, then LayerNorm/Linear/GELU on B x h x w x C, and LayerNorm2d."""

    def __init__(self, c=6):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.norm = nn.LayerNorm(c)
        self.fc = nn.Linear(c, c)
        self.act = nn.GELU()
        self.norm2d = torchvision.models.convnext.LayerNorm2d(c)

    def forward(self, x):
        y = self.conv(x).permute(0, 2, 3, 1)  # a functional permute: no Permute module
        y = self.act(self.fc(self.norm(y)))
        return self.norm2d(y.permute(0, 3, 1, 2))


def test_layout_evidence():
    model = _ChannelsLastBlock()
    with torch.no_grad():
        found = discover_layouts(model, torch.rand(1, 3, 8, 8), select_layers(model))
    assert found.outputs == {
        "conv": "channels_first",
        "norm": "channels_last",  # exact nn.LayerNorm on the last axis
        "fc": "channels_last",  # nn.Linear on a 4-D tensor
        "act": "channels_last",  # elementwise: its input's layout
        "norm2d": "channels_first",  # torchvision's LayerNorm2d subclasses nn.LayerNorm but is channels-first
    }
    assert found.inputs["fc"] == "channels_last" and found.undecided == []


def test_ambiguous_layer_is_refused_with_the_override_named():
    # 6 x 6 x 6 maps from an operation the provenance does not follow: C == h == w, no evidence
    class Odd(nn.Module):
        def forward(self, x):
            return x.repeat(1, 2, 1, 1)

    model = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), Odd(), nn.ReLU())
    with pytest.warns(RuntimeWarning, match="could not be measured"):
        report = measure(model, torch.rand(2, 3, 6, 6), groups=[Rotation90()], layers=["0", "1", "2"])
    assert {r.layer for r in report.results} == {"0"}
    for layer in ("1", "2"):
        reason = report.errors[(layer, "invariance", "rotation90")]
        assert "repeat" in reason and "B x C x h x w, B x h x w x C" in reason
        assert f"layouts={{'{layer}': 'channels_first' | 'channels_last'}}" in reason
    forced = measure(
        model, torch.rand(2, 3, 6, 6), groups=[Rotation90()], layers=["1"], layouts={"1": "channels_first"}
    )
    assert forced.errors == {} and forced.layouts["1"] == "channels_first"


def test_layout_override_reaches_the_measure():
    # 8 channels on an 8 x 8 grid: both readings of fc's B x 8 x 8 x 8 output are square maps, so both are
    # measured (with 6 channels the channels-first reading is refused as not square, and the values below
    # would be compared with an empty list)
    model = _ChannelsLastBlock(c=8)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    model.double()
    auto = measure(model, x, groups=[Rotation90()], layers=["fc"])
    forced = measure(model, x, groups=[Rotation90()], layers=["fc"], layouts={"fc": "channels_first"})
    assert auto.errors == {} and forced.errors == {} and len(auto.results) == len(forced.results) == 2
    assert auto.layouts["fc"] == "channels_last" and forced.layouts["fc"] == "channels_first"
    assert auto.to_dataframe().value.tolist() != forced.to_dataframe().value.tolist()
    with pytest.raises(ValueError, match="layouts= names layer"):
        measure(model, x, layers=["fc"], layouts={"fx": "channels_last"})
    with pytest.raises(ValueError, match="channels_first"):
        measure(model, x, layers=["fc"], layouts={"fc": "nhwc"})


class _Partition(nn.Module):
    """B x C x 8 x 8 -> B x G x P x C windows (4 windows of 16 positions), as MaxViT's partition layer."""

    def forward(self, x):
        b, c, h, w = x.shape
        x = x.reshape(b, c, 2, 4, 2, 4).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(b, 4, 16, c)


def test_window_partitions_are_folded_back_into_the_grid():
    """A reversible partition followed through its reshape and permute is read as the map it holds: the
    partition layer measures exactly like the map it was made from."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), _Partition(), nn.LayerNorm(5), nn.Linear(5, 5)).double()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    report = measure(model, x, groups=[Rotation90(), Translation(2)], layers=["0", "1", "2", "3"])
    assert report.errors == {} and report.layouts["1"] == "patches" and report.layouts["3"] == "patches"
    df = report.to_dataframe().set_index(["layer", "measure", "group"]).value
    for key in [k for k in df.index if k[0] == "0"]:
        assert df[("1",) + key[1:]] == pytest.approx(df[key], rel=1e-12)


def test_partitions_that_are_not_reversible_are_refused_with_a_reason():
    class Overlapping(nn.Module):
        def forward(self, x):  # overlapping 3 x 3 patches: no partition of the grid
            return F.unfold(x, 3, padding=1).reshape(x.shape[0], x.shape[1], 9, -1)

    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), Overlapping(), nn.ReLU())
    with pytest.warns(RuntimeWarning, match="could not be measured"):
        report = measure(model, torch.rand(2, 3, 8, 8), groups=[Rotation90(), Translation(2)], layers=["0", "1", "2"])
    assert {r.layer for r in report.results} == {"0"}
    for layer in ("1", "2"):
        reason = report.errors[(layer, "invariance", "rotation90")]
        assert "overlapping" in reason and f"'{layer}'" in reason
    with pytest.raises(LayoutError):
        as_activation(torch.zeros(1, 4, 16, 5), "x", "is no map of the image grid")


# ---------------------------------------------------------------------- degenerate layers
def test_mobilenet_v3_small_records_degenerate_layers_and_measures_the_rest():
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        report = measure(model, torch.rand(4, 3, 32, 32))  # defaults
    selected = {n for n, _ in select_layers(model)}
    measured = {r.layer.split(":")[0] for r in report.results}
    recorded = {k[0].split(":")[0] for k in report.errors}
    assert selected <= measured | recorded | set(report.not_called)
    assert len(measured) > 0.8 * len(selected)
    assert not any(math.isnan(r.value) for r in report.results)


def test_vit_zero_head_keeps_nv_and_lee_and_the_other_layers():
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(image_size=64, num_classes=10).eval()  # head zero-initialised
    x = torch.rand(2, 3, 64, 64)
    with pytest.warns(RuntimeWarning, match="could not be measured"):
        report = measure(model, x)  # defaults
    assert set(report.errors) == {
        ("heads.head", "invariance", "rotation90"),
        ("heads.head", "equivariance", "rotation90"),
    }
    selected = {n for n, _ in select_layers(model)}
    assert {r.layer for r in report.results} == selected - {"heads.head"}  # every other layer measured
    nv = measure(model, x, measures=("nv",), layers=["heads.head", "encoder.ln"])
    assert {r.layer for r in nv.results} == {"heads.head", "encoder.ln"} and nv.errors == {}
    lee = measure(model, x, measures=("lee",), groups=("translation_x",), layers=["heads.head", "encoder.ln"])
    assert {r.layer for r in lee.results} == {"heads.head", "encoder.ln"}


# ---------------------------------------------------------------------- bad inputs
def test_bad_inputs_are_named():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(ValueError, match=r"dtype torch.uint8.*float\(\) / 255"):
        measure(model, torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"shape \(2, 1, 8, 8\) have 1 channel.*'0' takes 3"):
        measure(model, torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"no images.*\(0, 3, 8, 8\)"):
        measure(model, torch.rand(0, 3, 8, 8))
    with pytest.raises(ValueError, match="no probe images were measured"):
        m = Measurement(model)
        m.update([])
        m.compute()
    with pytest.raises(ValueError, match=r"device='meta' but the model's parameters are on cpu"):
        measure(model, torch.rand(2, 3, 8, 8), device="meta")

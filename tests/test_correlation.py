"""Correlation invariance/equivariance (Bruintjes et al. 2023 Eq. 4, 7) against brute force and known answers."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from lightning_equivariance import Flip, Rotation, Rotation90, Translation, measure
from lightning_equivariance.functional import correlation_equivariance, correlation_invariance, correlation_scores
from lightning_equivariance.metrics import CorrelationEquivariance, CorrelationInvariance
from models import SmallCNN
from reference import correlation_brute


def _model(seed=0, in_ch=1):
    torch.manual_seed(seed)
    return SmallCNN(in_ch=in_ch).double()


CASES = [
    (Rotation90(), [("rot", 1), ("rot", 2), ("rot", 3)], 12),
    (Flip(("horizontal", "vertical")), [("hflip", None), ("vflip", None)], 12),
    (Translation(max_shift=3), [("shift", (1, 1)), ("shift", (2, 2)), ("shift", (3, 3))], 12),
    (Translation(shifts=[(-3, 2), (5, 0), (0, -4)]), [("shift", (-3, 2)), ("shift", (5, 0)), ("shift", (0, -4))], 12),
    (Translation(shifts=[(3, -5)], circular=True), [("cshift", (3, -5))], 12),
]


@pytest.mark.parametrize("group,elements,size", CASES, ids=["rot90", "flips", "diag-shifts", "shifts", "circular"])
@pytest.mark.parametrize("similarity", ["pearson", "cosine"])
def test_matches_brute_force(group, elements, size, similarity):
    model = _model(seed=len(elements))
    torch.manual_seed(1)
    images = torch.rand(5, 1, size, size, dtype=torch.float64)
    report = measure(model, images, groups=[group], batch_size=7, similarity=similarity)  # several chunks
    expected = correlation_brute(model, images, elements, centre=similarity == "pearson")
    df = report.to_dataframe()
    assert set(df.layer) <= set(expected) and len(set(df.layer)) >= 8
    for layer, (inv, eq) in expected.items():
        rows = df[df.layer == layer].set_index("measure")["value"]
        if rows.empty:
            continue
        assert rows["invariance"] == pytest.approx(inv, abs=1e-5), layer
        assert rows["equivariance"] == pytest.approx(eq, abs=1e-5), layer


def test_reused_module_is_measured_per_call():
    report = measure(_model(), torch.rand(3, 1, 12, 12, dtype=torch.float64), groups=[Rotation90()])
    layers = list(dict.fromkeys(report.to_dataframe().layer))
    assert layers.index("relu") < layers.index("pool") < layers.index("conv2") < layers.index("relu:1")


def test_parts_follow_depth():
    df = measure(_model(), torch.rand(3, 1, 12, 12, dtype=torch.float64)).to_dataframe()
    parts = df.drop_duplicates("layer").set_index("layer")["part"]
    assert parts["conv1"] == "Early" and parts["conv3"] == "Late"
    assert parts["gap"] == "Pool" and parts["fc"] == "Final"


def _gaussian(size=5, sigma=1.0):
    r = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    return g / g.sum()


def _toy(filters_per_layer):
    """3-layer CNN (conv-ReLU x3) with given filters; layers 2-3 depthwise (groups=C)."""
    layers = []
    for i, w in enumerate(filters_per_layer):
        c_out, c_in = w.shape[:2]
        conv = nn.Conv2d(c_in if i == 0 else c_out, c_out, w.shape[-1], padding=w.shape[-1] // 2, bias=False,
                         groups=1 if i == 0 else c_out).double()
        conv.weight.data.copy_(w)
        layers += [conv, nn.ReLU()]
    return nn.Sequential(*layers)


def test_paper_controls_isotropic_gaussians_are_invariant():
    """Bruintjes et al. 2023 §4.1 / Fig. 3a: isotropic Gaussian filters -> invariance 1 at every layer."""
    sig = [0.8, 1.3, 2.0, 2.6]
    w1 = torch.stack([_gaussian(5, s) for s in sig]).unsqueeze(1)  # 4 x 1 x 5 x 5
    w2 = torch.stack([_gaussian(5, s) for s in reversed(sig)]).unsqueeze(1)
    model = _toy([w1, w2, w2])
    torch.manual_seed(0)
    df = measure(model, torch.randn(16, 1, 32, 32, dtype=torch.float64), groups=[Rotation90()]).to_dataframe()
    inv = df[df.measure == "invariance"].set_index("layer")["value"]
    assert len(inv) == 6 and (inv >= 0.99).all(), inv


def test_paper_controls_corner_cut_filters_are_equivariant_not_invariant():
    """§4.1 / Fig. 3b: filters that are rotated copies of a corner-cut Gaussian -> equivariance 1, invariance lower."""
    k = _gaussian(5, 1.5).clone()
    k[:3, :3] = 0  # cut out a corner

    def rot(t, r):
        return torch.rot90(t, r, (-2, -1))

    w1 = torch.stack([rot(k, r) for r in range(4)]).unsqueeze(1)  # channel r = rotation r of the filter
    model = _toy([w1, w1, w1])  # depthwise: channel r keeps its rotation r
    torch.manual_seed(0)
    df = measure(model, torch.randn(16, 1, 32, 32, dtype=torch.float64), groups=[Rotation90()]).to_dataframe()
    table = df.pivot(index="layer", columns="measure", values="value")
    assert (table["equivariance"] >= 0.99).all(), table
    assert (table["invariance"] <= table["equivariance"] - 0.2).all(), table


def test_equivariance_at_least_invariance_and_bounds():
    torch.manual_seed(0)
    out = correlation_scores(torch.randn(3, 4, 5, 6, 6), torch.randn(3, 4, 5, 6, 6))
    assert (out["equivariance"] >= out["invariance"]).all()
    assert out["invariance"].min() >= 0 and out["equivariance"].max() <= 1 + 1e-6


def test_known_answers_functional():
    torch.manual_seed(0)
    a = torch.randn(2, 3, 4, 7, 7, dtype=torch.float64)
    assert float(correlation_invariance(a, a)) == pytest.approx(1.0)
    assert float(correlation_invariance(a * 3 + 2, a)) == pytest.approx(1.0)  # Pearson ignores scale and mean
    assert float(correlation_invariance(-a, a)) == 0.0  # ReLU on top
    perm = a[:, :, [2, 0, 3, 1]]
    assert float(correlation_equivariance(perm, a)) == pytest.approx(1.0)
    assert float(correlation_invariance(perm, a)) < 0.5
    assert float(correlation_invariance(a + 5, a, similarity="cosine")) < 1.0  # cosine is sensitive to the mean


def test_dead_channels_left_out_and_counted():
    torch.manual_seed(0)
    a = torch.randn(1, 4, 3, 6, 6)
    b = a.clone()
    b[:, :, 1] = 0.7  # channel 1 constant in a(T_g x): dead
    metric = CorrelationInvariance(num_elements=1, num_channels=3)
    metric.update(b, a)
    d = metric.compute_details()
    assert d["left_out"] == 4  # 4 samples x 1 channel
    assert d["value"] == pytest.approx(1.0)  # the live channels are identical
    assert not math.isnan(d["value"])


def test_all_dead_raises_clear_error():
    metric = CorrelationEquivariance(num_elements=1, num_channels=2)
    metric.update(torch.zeros(1, 2, 2, 4, 4), torch.zeros(1, 2, 2, 4, 4))
    with pytest.raises(ValueError, match="dead"):
        metric.compute()


def test_dead_channels_in_a_model():
    model = _model()
    with torch.no_grad():
        model.conv2.weight[2].zero_()  # channel 2 of conv2 is its bias: constant
    df = measure(model, torch.rand(4, 1, 12, 12, dtype=torch.float64), groups=[Rotation90()]).to_dataframe()
    row = df[(df.layer == "conv2") & (df.measure == "invariance")].iloc[0]
    assert row.left_out == 4 * 3 and np.isfinite(row.value)


def test_metric_states_sum_over_batches():
    torch.manual_seed(0)
    a, b = torch.randn(2, 10, 3, 5, 5), torch.randn(2, 10, 3, 5, 5)
    whole = CorrelationEquivariance(2, 3)
    whole.update(a, b)
    split = CorrelationEquivariance(2, 3)
    split.update(a[:, :4], b[:, :4])
    split.update(a[:, 4:], b[:, 4:])
    assert float(split.compute()) == pytest.approx(float(whole.compute()), abs=1e-12)


def test_translation_mask_and_rounding():
    t = Translation(shifts=[(3, 1)])
    e = t.elements[0]
    mask = t.feature_mask(e, (4, 4), (8, 8))  # shift on a 4x4 map of an 8x8 input: floor(1.5)=1, floor(0.5)=0
    assert mask[:, 0].sum() == 0 and mask[:, 1:].all()


def test_translation_scales_each_axis_by_its_own_downsampling():
    """A map downsampled unequally (8 x 8 input, 8 x 4 map: a stride of 1 down, 2 across): dx follows the
    width's factor, dy the height's - shift (4, 2) moves the map by 2 columns and 2 rows."""
    a = torch.arange(32.0).reshape(1, 1, 8, 4)
    for circular in (False, True):
        t = Translation(shifts=[(4, 2)], circular=circular)
        moved = t.act_feature(a, t.elements[0], (8, 8))
        want = torch.roll(a, (2, 2), (-2, -1))
        if not circular:
            want[..., :2, :], want[..., :, :2] = 0, 0
        assert torch.equal(moved, want), circular
    mask = Translation(shifts=[(4, 2)]).feature_mask(Translation(shifts=[(4, 2)]).elements[0], (8, 4), (8, 8))
    assert mask[2:, 2:].all() and not mask[:2].any() and not mask[:, :2].any()


def test_rotation_multiple_of_90_is_exact_and_other_angles_masked():
    x = torch.randn(2, 3, 9, 9)
    r = Rotation([90, 45])
    assert torch.equal(r.act_input(x, r.elements[0]), torch.rot90(x, 1, (-2, -1)))
    assert r.feature_mask(r.elements[0], (9, 9), (9, 9)) is None
    disk = r.feature_mask(r.elements[1], (9, 9), (9, 9))
    assert not disk[0, 0] and disk[4, 4] and disk[4, 0]
    # bilinear rotation by 90 agrees with rot90 away from the border
    from lightning_equivariance.groups import rotate_bilinear

    assert torch.allclose(rotate_bilinear(x, 90.0), torch.rot90(x, 1, (-2, -1)), atol=1e-5)
    assert Rotation.cyclic(8).name == "rotation8" and len(Rotation.cyclic(8)) == 7


@pytest.mark.parametrize("similarity", ["pearson", "cosine"])
def test_permuted_scores_equal_scores_of_the_transformed_maps(similarity):
    """The permutation path (a(x) standardised once, then rotated) = scores of explicitly rotated maps."""
    from lightning_equivariance.functional.correlation import permuted_scores

    torch.manual_seed(0)
    a_x = torch.randn(5, 6, 7, 7, dtype=torch.float64)
    a_gx = torch.randn(3, 5, 6, 7, 7, dtype=torch.float64) + 0.3 * torch.stack(
        [a_x.rot90(k, (-2, -1)) for k in (1, 2, 3)]
    )
    a_x[1, 2] = 4.0  # a dead channel in a(x) ...
    a_gx[2, 3, 5] = -1.0  # ... and one in a(gx)
    ta_x = torch.stack([a_x.rot90(k, (-2, -1)) for k in (1, 2, 3)])
    expected = correlation_scores(a_gx, ta_x, similarity=similarity)
    got = permuted_scores(a_gx, a_x, lambda maps, g: maps.rot90(g + 1, (-2, -1)), similarity=similarity)
    for key in ("invariance", "equivariance", "valid"):
        torch.testing.assert_close(got[key], expected[key], rtol=1e-12, atol=1e-12)
    # constant maps have no Pearson correlation (left out); their cosine is defined
    dead = similarity == "pearson"
    assert bool(got["valid"][:, 1, 2].any()) is not dead and bool(got["valid"][2, 3, 5]) is not dead
    assert bool((got["equivariance"] >= got["invariance"]).all())


class _ConvNorm(nn.Module):
    """conv -> (optional in-place ReLU, not a module) -> norm -> GAP -> linear."""

    def __init__(self, norm, relu_in_place_before_norm=False):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.norm = norm
        self.relu_in_place = relu_in_place_before_norm
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        y = self.conv(x)
        if self.relu_in_place:
            y.relu_()  # changes the conv's output object after its hook ran
        return self.fc(self.flatten(self.gap(self.norm(y))))


def _norm(kind, weight_signs):
    norm = nn.BatchNorm2d(6) if kind == "batch" else nn.GroupNorm(2, 6)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor(weight_signs, dtype=torch.float32) * torch.linspace(0.5, 2.0, 6))
        norm.bias.uniform_(-1, 1)
        if kind == "batch":
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
    return norm


@pytest.mark.parametrize(
    "kind,signs,relu_in_place,reused",
    [
        ("batch", [1] * 6, False, True),
        ("group", [1] * 6, False, True),
        ("batch", [1, -1, 1, 1, -1, 1], False, False),  # a negative scale flips correlations: no reuse
        ("batch", [1] * 6, True, False),  # the conv output changed in place before the norm: no reuse
    ],
    ids=["batchnorm", "groupnorm", "negative-weight", "in-place-between"],
)
def test_norm_layer_reuses_the_conv_scores_only_when_exact(kind, signs, relu_in_place, reused, monkeypatch):
    """Pearson is invariant under positive per-channel affine maps, so a BatchNorm/GroupNorm right after a
    conv takes the conv's scores; every case still equals the brute force on the norm layer's own output."""
    import lightning_equivariance.metrics.shared as metric_module

    torch.manual_seed(3)
    model = _ConvNorm(_norm(kind, signs), relu_in_place).double()
    images = torch.rand(4, 1, 10, 10, dtype=torch.float64)
    computed = []
    original = metric_module._layer_scores
    monkeypatch.setattr(
        metric_module, "_layer_scores", lambda ctx, sim, work: computed.append(ctx.layer) or original(ctx, sim, work)
    )
    for group, elements in (
        (Rotation90(), [("rot", 1), ("rot", 2), ("rot", 3)]),
        (Translation(shifts=[(2, -1)]), [("shift", (2, -1))]),
    ):
        computed.clear()
        report = measure(model, images, groups=[group], batch_size=8)
        assert ("norm" not in computed) is reused
        df = report.to_dataframe()
        assert {"conv", "norm", "gap", "fc"} <= set(df.layer)
        for layer, (inv, eq) in correlation_brute(model, images, elements).items():
            rows = df[df.layer == layer].set_index("measure")["value"]
            if layer == "flatten":  # not a measured layer (layers="auto")
                continue
            assert rows["invariance"] == pytest.approx(inv, abs=1e-6), layer
            assert rows["equivariance"] == pytest.approx(eq, abs=1e-6), layer

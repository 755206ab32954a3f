"""Lie derivative / LEE (Gruver et al. 2023 §4-5, docs/measures.md §4): finite differences, aliasing, contributions.

The finite-difference references build their own ``affine_grid`` matrices from the
paper's reference transforms and go through ``grid_sample`` (reflection padding,
``align_corners=True``); they share no code with the library.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from lightning_equivariance import (
    TRANSFORMS,
    LieDerivativeError,
    LieTransform,
    Measurement,
    lie_derivative_contributions,
    measure,
)
from lightning_equivariance.contributions import _contribution_projections
from lightning_equivariance.functional import lie_generator, local_equivariance_error
from lightning_equivariance.layers import select_layers
from lightning_equivariance.lie import forward_lie, lie_derivative, resolve_transform
from models import SmallCNN

SPATIAL = ["translation_x", "translation_y", "rotation", "scale", "shear", "hyperbolic_rotation"]
COLUMNS = ["layer", "index", "part", "kind", "layout", "measure", "group", "value", "left_out", "non_finite", "chance",
           "above_chance", "informative", "stderr", "margin", "margin_stderr", "margin_low", "significant"]


# ---------------------------------------------------------------------- independent references
def _theta(name, t):
    c, s, ch, sh = math.cos(t), math.sin(t), math.cosh(t), math.sinh(t)
    return {
        "translation_x": [[1, 0, t], [0, 1, 0]],
        "translation_y": [[1, 0, 0], [0, 1, t]],
        "rotation": [[c, s, 0], [-s, c, 0]],
        "scale": [[1 - t, 0, 0], [0, 1 - t, 0]],
        "shear": [[1, t, 0], [0, 1, 0]],
        "hyperbolic_rotation": [[ch, sh, 0], [sh, ch, 0]],
    }[name]


def _warp(a, name, t):
    """Phi_t on maps B x C x h x w: grid_sample, bilinear, reflection, align_corners=True (the reference's)."""
    if name == "saturation":
        return a * (1 + t)
    theta = torch.tensor(_theta(name, t), dtype=a.dtype).expand(a.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(a.shape), align_corners=True)
    return F.grid_sample(a, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def _capture(model, x):
    """Every leaf module's output (repeated calls get ':k'), no hooks of the library."""
    outs, handles, seen = {}, [], {}

    def hook(name):
        def fn(m, i, o):
            k = seen.get(name, 0)
            seen[name] = k + 1
            outs[name if k == 0 else f"{name}:{k}"] = o.detach().clone()

        return fn

    for n, m in model.named_modules():
        if n and not list(m.children()) and not isinstance(m, nn.Flatten):
            handles.append(m.register_forward_hook(hook(n)))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return outs


def _fd_lie(model, x, name, t):
    """Central finite difference of rho_l(-t) f_{1:l}(rho(t) x) per layer; maps transformed back at their own size."""
    plus, minus = _capture(model, _warp(x, name, t)), _capture(model, _warp(x, name, -t))
    out = {}
    for layer in plus:
        p, m = plus[layer], minus[layer]
        if p.dim() == 4 and p.shape[-1] * p.shape[-2] > 1:
            p, m = _warp(p, name, -t), _warp(m, name, t)
        out[layer] = (p - m) / (2 * t)
    return out


def _smooth_images(n, c, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.avg_pool2d(torch.rand(n, c, size + 2, size + 2, generator=g, dtype=torch.float64), 3, 1)


def _lee(model, x, transform, **kw):
    df = measure(model, x, measures=("lee",), groups=(transform,), **kw).to_dataframe()
    return df.set_index("layer")["value"]


class SmoothCNN(nn.Module):
    """A random CNN without kinks (SiLU, GELU, average pooling, a strided conv): differentiable everywhere.

    A central difference with t = 1e-4 through a ReLU or max-pool network crosses a few
    kinks among its thousands of units and measures the kink, not the derivative.
    """

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1, self.act1 = nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.SiLU()
        self.pool = nn.AvgPool2d(2)
        self.conv2, self.act2 = nn.Conv2d(6, 6, 3, padding=1), nn.GELU()
        self.conv3 = nn.Conv2d(6, 6, 3, padding=1, stride=2)
        self.gap, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(6, 5)
        with torch.no_grad():
            self.bn1.running_mean.uniform_(-0.5, 0.5)
            self.bn1.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        x = self.pool(self.act1(self.bn1(self.conv1(x))))
        return self.fc(self.gap(self.conv3(self.act2(self.conv2(x)))).flatten(1))


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return SmallCNN(in_ch=2).double().eval()


@pytest.fixture(scope="module")
def smooth_cnn():
    torch.manual_seed(1)
    return SmoothCNN().double().eval()


# ---------------------------------------------------------------------- generators
@pytest.mark.parametrize("name", SPATIAL)
def test_generator_is_the_limit_of_grid_sample(name):
    """The analytic generator is the t -> 0 limit of the central difference through grid_sample."""
    x = torch.rand(2, 3, 9, 11, dtype=torch.float64)
    g = lie_generator(x, name)
    for t in (1e-5, 1e-7):
        fd = (_warp(x, name, t) - _warp(x, name, -t)) / (2 * t)
        assert torch.allclose(fd, g, rtol=0, atol=50 * t * g.abs().max()), (name, t)


def test_generator_units_and_borders():
    x = torch.arange(5, dtype=torch.float64).repeat(1, 1, 4, 1)  # x = column index, 4 x 5
    gx = lie_generator(x, "translation_x")
    assert torch.allclose(gx[..., 1:-1], torch.full_like(gx[..., 1:-1], 2.0))  # 1 px per step, (W-1)/2 = 2 px per unit
    assert (gx[..., [0, -1]] == 0).all()  # reflected border
    gc = lie_generator(x, "translation_x", padding="circular")
    assert torch.allclose(gc[..., 1:-1], torch.full_like(gc[..., 1:-1], 2.5))  # W/2 px per unit
    assert torch.allclose(gc[..., 0], torch.full_like(gc[..., 0], (1 - 4) / 2 * 2.5))  # wraps around
    assert torch.equal(lie_generator(x, "saturation"), x)


# ---------------------------------------------------------------------- LEE against finite differences
@pytest.mark.parametrize("name", SPATIAL + ["saturation"])
def test_output_lee_matches_finite_difference(smooth_cnn, name):
    x = _smooth_images(3, 2, 12)
    lee = _lee(smooth_cnn, x, name)
    fd = _fd_lie(smooth_cnn, x, name, 1e-4)
    assert lee["fc"] == pytest.approx(float(fd["fc"].square().mean()), rel=1e-3)  # the output
    assert lee["gap"] == pytest.approx(float(fd["gap"].square().mean()), rel=1e-3)
    # Every layer, maps corrected at their own resolution. The finite difference has an
    # O(t) error (one-sided bilinear perturbations meet the network's curvature);
    # Richardson extrapolation removes it, leaving O(t^2).
    half = _fd_lie(smooth_cnn, x, name, 0.5e-4)
    assert set(lee.index) == set(fd)
    for layer, value in lee.items():
        extrapolated = float((2 * half[layer] - fd[layer]).square().mean())
        assert value == pytest.approx(extrapolated, rel=1e-5), layer


@pytest.mark.parametrize("name", ["translation_x", "rotation"])
def test_relu_maxpool_network_matches_small_steps(cnn, name):
    """ReLU and max pooling: forward mode is the derivative almost everywhere; tiny steps cross no kink."""
    x = _smooth_images(3, 2, 14)
    lee = _lee(cnn, x, name)
    fd = _fd_lie(cnn, x, name, 1e-7)
    for layer, value in lee.items():
        assert value == pytest.approx(float(fd[layer].square().mean()), rel=1e-5), layer


def test_fast_tangents_equal_torch_rules(cnn):
    x = _smooth_images(2, 2, 12)
    vit = _vit().double()
    xv = _smooth_images(2, 3, 16)
    import torch.autograd.forward_ad as fwAD

    for model, images in ((cnn, x), (vit, xv)):
        tr = resolve_transform("rotation")
        with fwAD.dual_level():
            fast = fwAD.unpack_dual(forward_lie(model, images, tr, fast=True)).tangent.clone()
        with fwAD.dual_level():
            slow = fwAD.unpack_dual(forward_lie(model, images, tr, fast=False)).tangent.clone()
        assert torch.allclose(fast, slow, rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------------- aliasing (paper §3, §5)
def _circular_net(relu=False, stride=False, padding_mode="circular", seed=0):
    torch.manual_seed(seed)
    layers = [nn.Conv2d(2, 4, 3, padding=1, padding_mode=padding_mode)]
    if relu:
        layers.append(nn.ReLU())
    layers += [
        nn.Conv2d(4, 4, 3, padding=1, padding_mode=padding_mode, stride=2 if stride else 1),
        nn.Conv2d(4, 4, 3, padding=1, padding_mode=padding_mode),
    ]
    return nn.Sequential(*layers).double()


def test_circular_translation_is_exact_without_aliasing():
    x = torch.rand(3, 2, 16, 16, dtype=torch.float64)
    tr = LieTransform("translation_y", padding="circular")
    random_cnn = _lee(_circular_net(relu=True, stride=True, padding_mode="zeros"), x, tr).to_numpy()
    linear = _lee(_circular_net(), x, tr).to_numpy()
    assert len(linear) == 3 and (linear < 1e-6 * random_cnn[:3]).all() and (linear < 1e-6 * random_cnn.min()).all()
    with_relu = _lee(_circular_net(relu=True), x, tr).to_numpy()  # conv, relu, conv, conv
    assert with_relu[0] < 1e-6 * random_cnn[0] and (with_relu[1:] > 1e-3 * random_cnn.min()).all()
    strided = _lee(_circular_net(stride=True), x, tr).to_numpy()
    assert strided[0] < 1e-6 * random_cnn[0] and (strided[1:] > 1e-3 * random_cnn.min()).all()


def _gaussian(k=7, sigma=1.5):
    r = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    return g / g.norm()


def _filter_net(isotropic, seed=1, ch=4):
    """3 x (7x7 conv, tanh), GAP, linear. Isotropic: every filter a scaled Gaussian; otherwise
    random filters of the same norms.

    (A Gaussian of width 1.5 px is isotropic enough on the pixel grid for the discrete
    rotation generator; narrower ones are visibly square.)
    """
    torch.manual_seed(seed)
    layers, cin = [], 1
    for _ in range(3):
        conv = nn.Conv2d(cin, ch, 7, padding=3, padding_mode="reflect", bias=False).double()
        with torch.no_grad():
            scale = torch.randn(ch, cin, 1, 1, dtype=torch.float64)
            if isotropic:
                conv.weight.copy_(scale * _gaussian())
            else:
                w = torch.randn(ch, cin, 7, 7, dtype=torch.float64)
                conv.weight.copy_(scale * w / w.flatten(2).norm(dim=2)[..., None, None])
        layers += [conv, nn.Tanh()]
        cin = ch
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, 3).double())


def test_rotation_symmetric_filters_are_nearly_rotation_equivariant():
    x = _smooth_images(4, 1, 28)
    relative = {}
    for iso in (True, False):
        model = _filter_net(iso)
        lee = _lee(model, x, "rotation")
        energy = {k: float(v.square().mean()) for k, v in _capture(model, x).items()}
        relative[iso] = {k: lee[k] / energy[k] for k in lee.index}
        assert set(lee.index) == set(energy)
    assert (
        _lee(_filter_net(True), x, "rotation")["8"] < 1e-3 * _lee(_filter_net(False), x, "rotation")["8"]
    )  # the output
    for layer in relative[True]:  # LEE relative to the layer's mean square: scale-free
        assert relative[True][layer] < 0.1 * relative[False][layer], layer


# ---------------------------------------------------------------------- layer contributions (Eq. 5-6)
def test_layer_contributions_sum_to_the_output_lie_derivative(cnn):
    """Eq. 6, per probe: sum_i z^T d f_{N:i+1} L_X f_i = z^T L_X f when every non-equivariant op is a layer."""
    x = _smooth_images(3, 2, 12)
    records, proj, out_proj, out_sq, dim = _contribution_projections(
        cnn, x, resolve_transform("rotation"), select_layers(cnn), 4
    )
    assert [r.name for r in records][:4] == ["conv1", "bn1", "relu", "pool"] and dim == 5
    assert torch.allclose(proj.sum(0), out_proj, rtol=1e-10, atol=1e-12 * float(out_proj.abs().max()))
    exact = lie_derivative(cnn, x, "rotation")
    assert torch.allclose(out_sq, exact.square().sum(1))
    assert float(out_proj.abs().max()) > 1e-3


class _TwoPaths(nn.Module):
    """Two independent circular paths feeding disjoint outputs: cross terms of the contributions vanish."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv_a = nn.Conv2d(1, 3, 3, padding=1, padding_mode="circular")
        self.relu_a = nn.ReLU()
        self.conv_b = nn.Conv2d(1, 3, 3, padding=1, padding_mode="circular", stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc_a, self.fc_b = nn.Linear(3, 2), nn.Linear(3, 2)

    def forward(self, x):
        a = self.fc_a(self.pool(self.relu_a(self.conv_a(x))).flatten(1))
        b = self.fc_b(self.pool(self.conv_b(x)).flatten(1))
        return torch.cat([a, b], 1)


def test_contributions_without_cross_terms_add_up():
    model = _TwoPaths().double()
    x = torch.rand(4, 1, 12, 12, dtype=torch.float64)
    tr = LieTransform("translation_x", padding="circular")
    exact = lie_derivative_contributions(model, x, tr, probes="basis").to_dataframe()
    c = exact.set_index("layer")["contribution"]
    assert c["relu_a"] > 0 and c["conv_b"] > 0  # two aliasing layers: the ReLU and the strided conv
    assert c.drop(["relu_a", "conv_b"]).abs().max() < 1e-12 * c["relu_a"]  # circular convs, pooling, heads
    assert c.sum() == pytest.approx(exact.attrs["output_lee"], rel=1e-10)  # no cross terms: sum of norms = norm of sum
    hutchinson = lie_derivative_contributions(model, x, tr, num_probes=200, seed=0).to_dataframe()
    hutchinson = hutchinson.set_index("layer")["contribution"]
    for layer in ("relu_a", "conv_b"):
        assert hutchinson[layer] == pytest.approx(c[layer], rel=0.25)
    assert list(exact.columns) == [
        "layer", "index", "part", "module", "kind", "transform", "contribution", "stderr", "fraction", "cumulative"
    ]
    assert exact.cumulative.iloc[-2] == pytest.approx(1.0) and exact.layer.iloc[-1] == "(unattributed)"


def test_contribution_report_its_dataframe_plot_and_the_moved_name():
    """The report holds what its DataFrame shows; the bar chart draws each row's share; the lie.py name
    still gives the former DataFrame, with a DeprecationWarning (issue 22)."""
    import matplotlib

    matplotlib.use("Agg")
    from lightning_equivariance import ContributionReport
    from lightning_equivariance.contributions import lie_derivative_contributions as moved

    model = _TwoPaths().double()
    x = torch.rand(3, 1, 12, 12, dtype=torch.float64)
    tr = LieTransform("translation_x", padding="circular")
    report = lie_derivative_contributions(model, x, tr, num_probes=3, seed=1)
    assert lie_derivative_contributions is moved and isinstance(report, ContributionReport)
    df = report.to_dataframe()
    assert list(df.layer) == [r.layer for r in report.rows]
    assert list(df.contribution) == [r.contribution for r in report.rows]
    assert df.attrs["output_lee"] == report.output_lee and df.attrs["num_samples"] == report.num_samples == 3
    with pytest.warns(DeprecationWarning, match="moved to lightning_equivariance.contributions"):
        from lightning_equivariance.lie import lie_derivative_contributions as old
    legacy = old(model, x, tr, num_probes=3, seed=1)
    assert legacy.drop(columns="stderr").equals(df.drop(columns="stderr")) and legacy.stderr.equals(df.stderr)
    timeless = lambda attrs: {k: v for k, v in attrs.items() if k != "seconds"}  # noqa: E731 - local shorthand
    assert timeless(legacy.attrs) == timeless(df.attrs)
    fig, ax = report.plot()
    bars = ax.patches
    assert len(bars) == len(report.rows)
    # shares of the attributed rows' sum (the rows' fraction), the unattributed remainder last, in grey
    assert [b.get_height() for b in bars] == pytest.approx(list(df.contribution / df.contribution[:-1].sum()))
    assert [b.get_height() for b in bars[:-1]] == pytest.approx(list(df.fraction[:-1]))
    assert bars[-1].get_facecolor() != bars[0].get_facecolor()
    assert [t.get_text() for t in ax.get_xticklabels()] == list(df.layer)


# ---------------------------------------------------------------------- engine integration
def test_measure_lee_dataframe(cnn):
    x = _smooth_images(3, 2, 12)
    report = measure(cnn, x, measures=("lee",), groups=("rotation", "translation_x"))
    df = report.to_dataframe()
    assert list(df.columns) == COLUMNS
    assert set(df.group) == {"rotation", "translation_x"} and set(df.measure) == {"lee"}
    assert len(df) == 2 * 9 and (df.value >= 0).all() and report.errors == {}
    assert set(df.part) == {"Early", "Middle", "Late", "Pool", "Final"}
    assert list(report.to_dataframe(per_element=True).element.unique()) == ["generator"]
    assert not report.series()[0].higher_is_better
    assert report.per_channel("conv1", "lee", "rotation").shape == (6,)
    both = measure(cnn, x, measures=("invariance", "lee"), groups=("rotation90", "rotation")).to_dataframe()
    assert set(zip(both.measure, both.group)) == {("invariance", "rotation90"), ("lee", "rotation")}
    assert (
        both[both.measure == "lee"]
        .set_index("layer")["value"]
        .equals(df[df.group == "rotation"].set_index("layer")["value"])
    )


def test_streaming_and_modes(cnn):
    x = _smooth_images(5, 2, 12)
    cnn.train()
    running = cnn.bn1.running_mean.clone()
    meas = Measurement(cnn, measures=("lee",), groups=("scale",), batch_size=2)  # chunks of 2 images
    meas.update(x[:3])
    meas.update(x[3:])
    split = meas.compute().to_dataframe().set_index("layer")["value"]
    assert cnn.training and cnn.bn1.training and torch.equal(cnn.bn1.running_mean, running)  # eval during, restored
    cnn.eval()
    whole = _lee(cnn, x, "scale")
    assert np.allclose(split.to_numpy(), whole.to_numpy(), rtol=1e-12)
    # the metric's states are sums: two shards merge to the whole (what DDP sync does)
    lie = torch.randn(6, 3, 7, dtype=torch.float64)
    a, b, whole_metric = LieDerivativeError(3), LieDerivativeError(3), LieDerivativeError(3)
    a.update(lie[:2]), b.update(lie[2:]), whole_metric.update(lie)
    a.merge_state(b)
    assert (
        float(a.compute())
        == pytest.approx(float(whole_metric.compute()))
        == pytest.approx(float(local_equivariance_error(lie)))
    )
    assert float(whole_metric.compute()) == pytest.approx(float(lie.square().mean()))


def _vit():
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(
        image_size=16, patch_size=4, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    )
    nn.init.normal_(vit.heads.head.weight, std=0.5)  # torchvision zero-inits the head
    return vit


def test_vit_tokens():
    vit = _vit()
    x = torch.rand(2, 3, 16, 16)
    df = measure(vit, x, measures=("lee",), groups=("translation_x", "rotation")).to_dataframe()
    kinds = df.drop_duplicates("layer").set_index("layer")["kind"]
    assert kinds["encoder.layers.encoder_layer_0.mlp.0"] == "map" and kinds["heads.head"] == "vector"
    assert "encoder.layers.encoder_layer_0.self_attention" in kinds.index
    assert np.isfinite(df.value).all() and (df.value > 0).all()
    contrib = lie_derivative_contributions(vit, x, "translation_x", num_probes=4).to_dataframe()
    contrib = contrib.set_index("layer")["contribution"]
    assert contrib["conv_proj"] > 0
    # the positional embedding is added in Encoder.forward, outside every selected layer
    assert contrib["(unattributed)"] > 1e-6 * contrib.drop("(unattributed)").sum()


def test_errors():
    model = SmallCNN()
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ValueError, match="translation_x.*hyperbolic_rotation"):
        measure(model, x, measures=("lee",), groups=("rotaton",))
    with pytest.raises(ValueError, match="continuous transforms"):
        measure(model, x, measures=("lee",), groups=("rotation90",))
    with pytest.raises(ValueError, match="need discrete groups"):
        measure(model, x, measures=("invariance",), groups=("rotation",))
    with pytest.raises(ValueError, match="only used by measure 'lee'"):
        measure(model, x, measures=("invariance",), groups=("rotation90", "rotation"))
    with pytest.raises(ValueError, match="unknown transform 'spin'"):
        lie_derivative_contributions(model, x, "spin")
    with pytest.raises(ValueError, match="padding"):
        LieTransform("rotation", padding="zeros")
    assert set(TRANSFORMS) == set(SPATIAL) | {"saturation"}


# ---------------------------------------------------------------------- issue 23: the few-call forms
@pytest.mark.parametrize("velocity", ["rotation", "translation_x", "translation_y", "scale", "shear",
                                      "hyperbolic_rotation", ((0.3, -1.2, 0.5), (2.0, 0.1, -0.7))])
@pytest.mark.parametrize("shape", [(3, 4, 7, 9), (2, 5, 3, 3), (2, 2, 2, 5), (2, 3, 6, 1)])
def test_lie_residual_rows_are_the_tangent_minus_the_generator(velocity, shape):
    from lightning_equivariance.functional.lie import lie_residual_rows, residual_fields

    torch.manual_seed(0)
    a, t = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    fields = residual_fields(velocity, shape[-2:], "reflection", a.dtype, a.device)
    rows = lie_residual_rows(t, a, fields)
    assert rows.shape == (*shape[:-2], shape[-2] * shape[-1])
    torch.testing.assert_close(rows, (t - lie_generator(a, velocity)).flatten(-2), rtol=0, atol=1e-12)
    assert residual_fields(velocity, shape[-2:], "circular") is None  # wrapped neighbours: the general form


def test_lee_merges_chunks_like_numpy_with_left_out_images_and_close_values():
    """Per-image values that agree to ~9 digits (no cancellation in the merged M2), chunks of different
    sizes, left-out images holding NaN and Inf: value, per-channel values and stderr as numpy gets them."""
    torch.manual_seed(1)
    chunks, kept = [], []
    metric = LieDerivativeError(num_channels=3)
    for b in (5, 1, 4, 6):
        lie = (1 + 1e-9 * torch.randn(b, 3, 4, dtype=torch.float64)) * torch.tensor([1.0, 2.0, 3.0])[:, None]
        mask = torch.rand(b) > 0.3
        lie[~mask] = float("nan")
        if (~mask).any():
            lie[(~mask).nonzero()[0, 0], 0, 0] = float("inf")
        metric.update(lie, sample_mask=mask)
        chunks.append(lie[mask].numpy())
        kept.append(mask)
    good = np.concatenate(chunks)
    details = metric.compute_details()
    per_image = (good ** 2).sum(axis=(1, 2)) / 12
    assert details["value"] == pytest.approx((good ** 2).mean(), rel=1e-12)
    np.testing.assert_allclose(details["per_channel"].numpy(), (good ** 2).mean(axis=(0, 2)), rtol=1e-12)
    expected = per_image.std(ddof=1) / math.sqrt(len(per_image))
    assert details["stderr"] == pytest.approx(expected, rel=1e-6)


def test_grid_coordinates_of_both_paddings():
    """Pixel centres in normalised coordinates: align_corners=True (reflection) puts the first and last pixel
    at -1 and 1; align_corners=False (circular) puts the edges there, so the centres sit half a pixel in."""
    from lightning_equivariance.functional.lie import grid_coordinates

    assert grid_coordinates(5, "reflection", torch.float64).tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert grid_coordinates(4, "circular", torch.float64).tolist() == [-0.75, -0.25, 0.25, 0.75]


@pytest.mark.parametrize("padding", ["reflection", "circular"])
@pytest.mark.parametrize("name", ["translation_x", "translation_y", "rotation", "scale", "shear"])
def test_velocity_field_is_the_derivative_of_affine_grid(name, padding):
    """velocity_field against a central difference of F.affine_grid's sampling positions in t, with theta_t
    written out per transform (as tests/test_layouts_evidence.py's _warp writes rotation and translation)."""
    from lightning_equivariance.functional import velocity_field

    def theta(t):
        return {
            "translation_x": [[1, 0, t], [0, 1, 0]],
            "translation_y": [[1, 0, 0], [0, 1, t]],
            "rotation": [[math.cos(t), math.sin(t), 0], [-math.sin(t), math.cos(t), 0]],
            "scale": [[math.exp(-t), 0, 0], [0, math.exp(-t), 0]],
            "shear": [[1, t, 0], [0, 1, 0]],
        }[name]

    h, w, eps = 5, 7, 1e-6
    align = padding == "reflection"

    def grid(t):
        return F.affine_grid(torch.tensor([theta(t)], dtype=torch.float64), [1, 1, h, w], align_corners=align)[0]

    derivative = (grid(eps) - grid(-eps)) / (2 * eps)  # h x w x (x, y)
    vx, vy = velocity_field(name, (h, w), padding, dtype=torch.float64)
    torch.testing.assert_close(torch.stack([vx, vy], -1), derivative, rtol=0, atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_local_equivariance_error_is_the_mean_square_in_any_precision(dtype):
    torch.manual_seed(0)
    lie = torch.randn(4, 3, 5, 5).to(dtype)
    want = lie.double().square().sum().item() / lie.numel()
    got = local_equivariance_error(lie)
    assert got.dtype == torch.float64 and got.item() == pytest.approx(want, rel=1e-6)

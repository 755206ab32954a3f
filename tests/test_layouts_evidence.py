"""A layer's layout is decided on evidence or refused, never guessed (issue 21, docs/measures.md §1.3).

Every reference here hooks the raw layer output with a plain forward hook and rearranges it into
``B x C x h x w`` *by hand*, with the operations the model's own code uses to fold its tokens,
patches or windows back (written out below, not taken from the library), then computes the
measures from their equations (``reference.py``'s Pearson and transforms, loops over images,
elements and channels; a Richardson finite difference through ``grid_sample`` for ``lee``).
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
from lightning_equivariance import Rotation90, measure
from lightning_equivariance.layers import discover_layouts, select_layers
from lightning_equivariance.layouts import Reading

timm = pytest.importorskip("timm", reason="timm is not installed (pip install 'lightning-equivariance[test]')")


def _correlation_reference(model, name, x, to_map, elements=ref.ROT):
    """(invariance, equivariance) of one layer (Bruintjes et al. Eq. 4, 7) on maps rearranged by ``to_map``."""
    in_size = tuple(x.shape[-2:])
    per_elem = []
    for e in elements:
        xt = torch.stack(
            [torch.from_numpy(ref.transform_np(x[i].numpy(), e, in_size)[0].copy()) for i in range(x.shape[0])]
        )
        ax, agx = (
            to_map(ref.hooked(model, [name], x)[name]).numpy(),
            to_map(ref.hooked(model, [name], xt)[name]).numpy(),
        )
        inv = eqv = count = 0.0
        for i in range(x.shape[0]):
            tax, mask = ref.transform_np(ax[i], e, in_size)
            for c in range(ax.shape[1]):
                r = ref.pearson_relu(agx[i, c][mask], tax[c][mask])
                if r is None:
                    continue
                best = max((ref.pearson_relu(agx[i, c][mask], tax[c2][mask]) or 0.0) for c2 in range(ax.shape[1]))
                inv, eqv, count = inv + r, eqv + best, count + 1
        per_elem.append((inv / count, eqv / count))
    return tuple(np.mean(per_elem, axis=0))


def _warp(a, name, t):
    theta = {
        "rotation": [[math.cos(t), math.sin(t), 0], [-math.sin(t), math.cos(t), 0]],
        "translation_x": [[1, 0, t], [0, 1, 0]],
    }[name]
    theta = torch.tensor(theta, dtype=a.dtype).expand(a.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(a.shape), align_corners=True)
    return F.grid_sample(a, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def _lee_reference(model, name, x, to_map, transform, t=1e-6):
    """LEE from a Richardson-extrapolated central difference of rho(-t) f(rho(t) x) on hand-rearranged maps."""

    def central(step):
        plus, minus = (
            ref.hooked(model, [name], _warp(x, transform, step)),
            ref.hooked(model, [name], _warp(x, transform, -step)),
        )
        return (_warp(to_map(plus[name]), transform, -step) - _warp(to_map(minus[name]), transform, step)) / (2 * step)

    lie = 2 * central(t / 2) - central(t)
    return float(lie.square().flatten(1).sum(1).mean() / lie[0].numel())


# ---------------------------------------------------------------------- the hand-written rearrangements
def _transposed_tokens(a):
    """MLP-Mixer's token MLP output B x D x N (tokens last): the D x sqrt(N) x sqrt(N) map."""
    b, d, n = a.shape
    s = math.isqrt(n)
    return a.reshape(b, d, s, s)


def _tokens(k=0):
    def to_map(a):
        b, n, d = a.shape
        s = math.isqrt(n - k)
        return a[:, k:, :].transpose(1, 2).reshape(b, d, s, s)

    return to_map


def _mobilevitv2_patches(ph=2, pw=2):
    """timm MobileVitV2Block: x.reshape(B, C, nh, ph, nw, pw).permute(0, 1, 3, 5, 2, 4).reshape(B, C, P, N), undone."""

    def to_map(a):
        b, c, p, n = a.shape
        nh = nw = math.isqrt(n)
        return a.reshape(b, c, ph, pw, nh, nw).permute(0, 1, 4, 2, 5, 3).reshape(b, c, nh * ph, nw * pw)

    return to_map


def _mobilevit_patches(batch, ph=2, pw=2):
    """timm MobileVitBlock's own fold: (B*P) x N x C -> B x C x H x W (its forward's lines, written out)."""

    def to_map(a):
        bp, n, c = a.shape
        nh = nw = math.isqrt(n)
        x = a.contiguous().view(batch, ph * pw, n, c).transpose(1, 3).reshape(batch * c * nh, nw, ph, pw)
        return x.transpose(1, 2).reshape(batch, c, nh * ph, nw * pw)

    return to_map


def _swin_windows(batch, h, w, window, shift):
    """timm SwinTransformerBlock: (B*nW) x ws*ws x C windows -> window_reverse -> roll back -> B x C x h x w."""

    def to_map(a):
        c = a.shape[-1]
        x = a.view(-1, window, window, c).view(batch, h // window, w // window, window, window, c)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, h, w, c)
        x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        return x.permute(0, 3, 1, 2)

    return to_map


def _levit_rows(batch):
    """LeViT's LinearNorm: BatchNorm1d over x.flatten(0, 1) of B x N x C tokens -> B x C x s x s."""

    def to_map(a):
        bn, c = a.shape
        n = bn // batch
        s = math.isqrt(n)
        return a.reshape(batch, n, c).transpose(1, 2).reshape(batch, c, s, s)

    return to_map


# ---------------------------------------------------------------------- models (random weights, small)
def _mixer256():
    torch.manual_seed(0)
    return timm.models.mlp_mixer.MlpMixer(img_size=64, patch_size=16, embed_dim=256, num_blocks=2, num_classes=10)


def _mobilevitv2():
    torch.manual_seed(0)
    return timm.create_model("mobilevitv2_050", pretrained=False, num_classes=10)


def _mobilevit():
    torch.manual_seed(0)
    return timm.create_model("mobilevit_xxs", pretrained=False, num_classes=10)


def _swin():
    torch.manual_seed(0)
    return timm.models.swin_transformer.SwinTransformer(
        img_size=56, patch_size=4, embed_dim=24, depths=(2,), num_heads=(2,), window_size=7, num_classes=10
    )


def _levit():
    torch.manual_seed(0)
    return timm.create_model("levit_128s", pretrained=False, img_size=64, num_classes=10)


def _vit_width_256():
    """torchvision ViT whose width is a square (256 = 16^2): tokens B x 17 x 256 read either way by a shape rule."""
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(
        image_size=64, patch_size=16, num_layers=1, num_heads=4, hidden_dim=256, mlp_dim=64, num_classes=10
    )


def _vit_square_tokens():
    """timm ViT without a class token, width 16: tokens B x 16 x 16, square both ways."""
    torch.manual_seed(0)
    return timm.models.vision_transformer.VisionTransformer(
        img_size=64,
        patch_size=16,
        embed_dim=16,
        depth=1,
        num_heads=2,
        class_token=False,
        global_pool="avg",
        num_classes=10,
    )


# (model, layer, expected layout, hand rearrangement (batch 2), image size)
CASES = {
    "mixer256-token-mlp": (_mixer256, "blocks.1.mlp_tokens.fc2", "tokens_transposed", lambda b: _transposed_tokens, 64),
    "mixer256-channel-mlp": (_mixer256, "blocks.1.mlp_channels.fc2", "tokens", lambda b: _tokens(0), 64),
    "mobilevitv2-patches": (
        _mobilevitv2,
        "stages.3.1.transformer.1.mlp.fc2",
        "patches",
        lambda b: _mobilevitv2_patches(),
        64,
    ),
    "mobilevit-transformer": (_mobilevit, "stages.3.1.transformer.0.mlp.fc2", "windows", _mobilevit_patches, 64),
    "swin-proj-shifted": (
        _swin,
        "layers.0.blocks.1.attn.proj",
        "windows",
        lambda b: _swin_windows(b, 14, 14, 7, 3),
        56,
    ),
    "swin-proj": (_swin, "layers.0.blocks.0.attn.proj", "windows", lambda b: _swin_windows(b, 14, 14, 7, 0), 56),
    "levit-bn": (_levit, "stages.0.blocks.0.mlp.ln1.bn", "windows", _levit_rows, 64),  # ln2.bn starts at zero
    "vit-width-256": (_vit_width_256, "encoder.layers.encoder_layer_0.mlp.3", "tokens", lambda b: _tokens(1), 64),
    "vit-square-tokens": (_vit_square_tokens, "blocks.0.mlp.fc2", "tokens", lambda b: _tokens(0), 64),
}


@pytest.mark.parametrize("case", list(CASES))
def test_layer_matches_reference_on_hand_rearranged_activations(case):
    build, layer, layout, rearrange, size = CASES[case]
    model = build().double().eval()
    x = torch.rand(2, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    report = measure(model, x, measures=("invariance", "equivariance"), groups=[Rotation90()], layers=[layer])
    assert report.errors == {} and report.layouts[layer] == layout
    expected = _correlation_reference(model, layer, x, rearrange(2))
    got = {r.measure: r.value for r in report.results}
    assert got["invariance"] == pytest.approx(expected[0], rel=1e-5, abs=1e-9)
    assert got["equivariance"] == pytest.approx(expected[1], rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("case", ["mixer256-token-mlp", "swin-proj-shifted", "mobilevitv2-patches"])
def test_lee_on_folded_layouts_matches_finite_difference(case):
    build, layer, layout, rearrange, size = CASES[case]
    model = build().double().eval()
    x = F.avg_pool2d(
        torch.rand(2, 3, size + 2, size + 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2)), 3, 1
    )
    df = (
        measure(model, x, measures=("lee",), groups=("translation_x",), layers=[layer])
        .to_dataframe()
        .set_index("layer")
    )
    assert df.loc[layer, "layout"] == layout
    assert df.loc[layer, "value"] == pytest.approx(
        _lee_reference(model, layer, x, rearrange(2), "translation_x"), rel=1e-5
    )


def test_token_mlp_hidden_layers_are_refused_with_the_reason():
    model = _mixer256().eval()
    report = measure(
        model,
        torch.rand(2, 3, 64, 64),
        measures=("invariance",),
        groups=[Rotation90()],
        layers=["blocks.0.mlp_tokens.fc1", "blocks.0.mlp_tokens.act", "blocks.0.mlp_tokens.fc2"],
    )
    assert {r.layer for r in report.results} == {"blocks.0.mlp_tokens.fc2"}
    for layer in ("blocks.0.mlp_tokens.fc1", "blocks.0.mlp_tokens.act"):
        reason = report.errors[(layer, "invariance", "rotation90")]
        assert "token-mixing MLP" in reason and "hidden units, not tokens" in reason and f"'{layer}'" in reason


class _Unfollowed(nn.Module):
    """A gather over the channels: an operation whose effect on the layout the provenance does not follow."""

    def forward(self, x):
        return x.index_select(2, torch.arange(x.shape[2]))


def _ambiguous_model():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 16, 4, stride=4)  # 16 x 16 image -> 16 channels on a 4 x 4 grid

    class Tokens(nn.Module):
        def forward(self, x):
            return x.flatten(2).transpose(1, 2)  # B x 16 tokens x 16 channels

    return nn.Sequential(conv, Tokens(), _Unfollowed(), nn.Linear(16, 16)).double().eval()


def test_a_layer_whose_shape_is_ambiguous_is_refused_and_the_override_measures_it():
    model = _ambiguous_model()
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        refused = measure(model, x, groups=[Rotation90()], layers=["1", "3"])
    assert {r.layer for r in refused.results} == {"1"} and refused.layouts["1"] == "tokens"  # followed: evidence
    reason = refused.errors[("3", "invariance", "rotation90")]
    assert "16, 16)" in reason and "index_select" in reason
    assert "B x N x D tokens, B x D x N transposed tokens" in reason  # the ambiguity named
    assert "layouts={'3': 'tokens' | 'tokens_transposed'}" in reason  # and the override
    forced = measure(model, x, groups=[Rotation90()], layers=["3"], layouts={"3": "tokens"})
    assert forced.errors == {} and forced.layouts["3"] == "tokens"
    expected = _correlation_reference(model, "3", x, _tokens(0))
    got = {r.measure: r.value for r in forced.results}
    assert got["invariance"] == pytest.approx(expected[0], rel=1e-5) and got["equivariance"] == pytest.approx(
        expected[1], rel=1e-5
    )
    other = measure(model, x, groups=[Rotation90()], layers=["3"], layouts={"3": "tokens_transposed"})
    assert other.layouts["3"] == "tokens_transposed"
    assert other.to_dataframe().value.tolist() != forced.to_dataframe().value.tolist()


@pytest.mark.parametrize(
    "case",
    [
        "mixer256-token-mlp",
        "swin-proj-shifted",
        "mobilevitv2-patches",
        "mobilevit-transformer",
        "levit-bn",
        "vit-width-256",
    ],
)
def test_reading_folds_back_and_unfolds_exactly(case):
    """The Lie generator's inverse: from_map(to_map(t)) is t itself, class tokens included."""
    build, layer, layout, rearrange, size = CASES[case]
    model = build().eval()
    x = torch.rand(2, 3, size, size)
    found = discover_layouts(model, x, select_layers(model, [layer]))
    reading = found.outputs[layer]
    assert isinstance(reading, Reading) and reading == layout
    t = ref.hooked(model, [layer], x)[layer]
    torch.testing.assert_close(reading.to_map(t), rearrange(2)(t), rtol=0, atol=0)
    torch.testing.assert_close(reading.from_map(reading.to_map(t), t, reading.prefix_part(t)), t, rtol=0, atol=0)


class _AfterConv(nn.Module):
    """A conv (4 channels on the 8 x 8 grid), then ``then(y, self)`` as the output of the layer ``out``."""

    def __init__(self, then):
        super().__init__()
        self.conv, self.then, self.out = nn.Conv2d(3, 4, 3, padding=1), then, nn.Identity()
        self.cls = nn.Parameter(torch.zeros(1, 1, 4))

    def forward(self, x):
        return self.out(self.then(self.conv(x), self))


def _with_class_token(y, model):
    return torch.cat([model.cls.expand(y.shape[0], 1, -1), y.flatten(2).transpose(1, 2)], 1)  # B x 65 x 4


@pytest.mark.parametrize("then,reason", [
    (lambda y, m: y.mean(0, keepdim=True), "is reduced over the batch axis"),
    (lambda y, m: y.mean(0), "is reduced over the batch axis"),  # 4 x 8 x 8: its 4 channels are no batch
    (lambda y, m: (y.permute(1, 2, 3, 0) @ torch.ones(len(y), len(y))).permute(3, 0, 1, 2), "mixes the batch axis"),
    (lambda y, m: (_with_class_token(y, m).transpose(1, 2) @ torch.ones(65, 65)).transpose(1, 2),
     "mixes its class tokens with the grid's positions"),
    # the images regrouped in two halves and interleaved (a batch of 6 split 2 x 3; 2 x 1 hid it at 2 images)
    (lambda y, m: y.reshape(2, len(y) // 2, 4, 8, 8).transpose(0, 1).reshape(y.shape), "splits the batch"),
    (lambda y, m: y.roll(3), "is rolled as a flat tensor"),
    (lambda y, m: y.reshape(len(y), 4, 2, 4, 8).roll(1, 2).reshape(y.shape),  # rolls within halves of the rows
     "is rolled along an axis that is not a whole row or column axis of the grid"),
], ids=["batch-mean-keepdim", "batch-mean", "batch-linear", "class-token-mixed", "batch-regrouped", "flat-roll",
        "half-row-roll"])
def test_an_operation_that_breaks_the_grid_is_refused_with_its_reason(then, reason):
    """Each of these outputs has the shape of a map (or of tokens) but not its meaning: refused, and why."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        report = measure(_AfterConv(then), torch.rand(4, 3, 8, 8), groups=[Rotation90()], layers=["out"],
                         chance=False)
    assert report.results == [] and set(report.errors) == {("out", m, "rotation90")
                                                           for m in ("invariance", "equivariance")}
    assert all(reason in error for error in report.errors.values()), report.errors

"""Per-image masks for non-finite values (docs/measures.md §1.7): correlation, G-EED and LEE.

An image left out by ``sample_mask`` must change nothing: every metric fed 8 images with image 3
masked (its activations zeros, as the engine leaves them, or garbage) equals the same metric fed
only the 7 other images - value, per_element, per_channel, left_out (and stderr, normaliser). The
masks are applied on the device, without a host read in ``update_layer``.
"""
from typing import Dict, List, Optional

import pytest
import torch

from host_sync import NoHostRead
from lightning_equivariance.functional import (
    correlation_equivariance,
    correlation_invariance,
    geed_channel,
    geed_latent,
    geed_softmax,
)
from lightning_equivariance.groups import Flip, Rotation90, Translation
from lightning_equivariance.metrics import (
    CorrelationEquivariance,
    CorrelationInvariance,
    GEEDChannel,
    GEEDLatentCosine,
    GEEDLatentL2,
    GEEDSoftmax,
    LayerContext,
    LieContext,
    LieDerivativeError,
)
from reference import assert_same_details

B, BAD, C, S, D = 8, 3, 4, 8, 6
KEEP = [i for i in range(B) if i != BAD]
MASK = torch.tensor([i != BAD for i in range(B)])
GROUPS = {"rot90": Rotation90, "shift": lambda: Translation(max_shift=2), "flip": Flip}


def _spoil(a_x: torch.Tensor, a_gx: torch.Tensor, rows: List[int], how: str, seed: int = 7):
    """The engine's zeros, or finite garbage, or NaN/Inf, in every view of the images in ``rows``."""
    a_x, a_gx = a_x.clone(), a_gx.clone()
    g = torch.Generator().manual_seed(seed)
    for i in rows:
        if how == "zeros":
            a_x[i], a_gx[:, i] = 0, 0
        elif how == "garbage":
            a_x[i] = 1e6 * torch.randn(a_x[i].shape, generator=g, dtype=a_x.dtype)
            a_gx[:, i] = -3e5 * torch.rand(a_gx[:, i].shape, generator=g, dtype=a_x.dtype)
        else:  # "nonfinite": what the engine would have zeroed; the masks must not let it through either
            a_x[i] = float("nan")
            a_gx[:, i] = float("inf")
    return a_x, a_gx


def _activations(group, kind: str, seed: int = 0):
    """``a(x)`` ``B x C x S x S`` (or ``B x D``) and ``a(gx)``, partly equivariant, with dead
    channels / zero vectors."""
    gen = torch.Generator().manual_seed(seed)
    m = len(group.elements)
    if kind == "vector":
        a_x = torch.randn(B, D, generator=gen, dtype=torch.float64)
        a_gx = a_x + 0.7 * torch.randn(m, B, D, generator=gen, dtype=torch.float64)
        a_gx[0, 1] = 0  # a zero vector: invalid for the cosine variants, counted in left_out
        return a_x, a_gx
    a_x = torch.rand(B, C, S, S, generator=gen, dtype=torch.float64)
    a_x[0, 2] = 0.5  # a dead channel of a(x)
    moved = torch.stack([group.act_feature(a_x, g, (S, S)) for g in group.elements])
    a_gx = moved + 0.3 * torch.rand(m, B, C, S, S, generator=gen, dtype=torch.float64)
    a_gx[m - 1, 5, 1] = 0  # a dead channel of a(gx)
    return a_x, a_gx


def _ctx(group, kind, a_x, a_gx, sample_mask=None, **kw) -> LayerContext:
    return LayerContext(
        layer="layer",
        kind=kind,
        group=group,
        elements=group.elements,
        a_x=a_x,
        a_gx=a_gx,
        input_size=(S, S),
        channel_action=None,
        sample_mask=sample_mask,
        **kw,
    )


def _same(got: Dict, want: Dict) -> None:
    assert_same_details(got, want, rtol=1e-6, atol=1e-12)


# ------------------------------------------------------------------ stacked measures
# (class, options, kinds it is defined on)
STACKED = [
    (CorrelationInvariance, {"similarity": "pearson"}, ("map", "vector")),
    (CorrelationEquivariance, {"similarity": "pearson"}, ("map", "vector")),
    (CorrelationInvariance, {"similarity": "cosine"}, ("map", "vector")),
    (CorrelationEquivariance, {"similarity": "cosine"}, ("map", "vector")),
    (GEEDChannel, {}, ("map", "vector")),
    (GEEDLatentL2, {}, ("vector",)),
    (GEEDLatentL2, {"geed_max_points": 5}, ("vector",)),  # the buffer fills with kept points only
    (GEEDLatentCosine, {}, ("vector",)),
    (GEEDSoftmax, {"geed_softmax_input": "logits"}, ("vector",)),
    (GEEDSoftmax, {"geed_softmax_input": "auto"}, ("vector",)),
]
CASES = [(g, k) for g in ("rot90", "shift", "flip") for k in ("map", "vector")]
# every (measure, options, group, kind) the measure is defined on
STACKED_CASES = [(cls, opts, g, k) for cls, opts, kinds in STACKED for g, k in CASES if k in kinds]
STACKED_IDS = [
    f"{cls.measure_name}-{'-'.join(str(v) for v in opts.values()) or 'default'}-{g}-{k}"
    for cls, opts, g, k in STACKED_CASES
]


def _run(cls, options, contexts) -> Dict:
    metric = None
    for ctx in contexts:
        if metric is None:
            metric = cls.for_layer(ctx, **options)
        metric.update(ctx)
    return metric.compute_details()


def _chunks(group, kind, a_x, a_gx, mask, sizes):
    """Contexts for consecutive chunks of the batch (``sizes`` images each)."""
    out, start = [], 0
    for n in sizes:
        sl = slice(start, start + n)
        out.append(_ctx(group, kind, a_x[sl], a_gx[:, sl], None if mask is None else mask[sl]))
        start += n
    return out


@pytest.mark.parametrize("how", ["zeros", "garbage", "nonfinite"])
@pytest.mark.parametrize("cls,options,group,kind", STACKED_CASES, ids=STACKED_IDS)
def test_masked_image_is_left_out_of_layer_contexts(cls, options, group, kind, how):
    group = GROUPS[group]()
    a_x, a_gx = _activations(group, kind)
    bad_x, bad_gx = _spoil(a_x, a_gx, [BAD], how)
    want = _run(cls, options, [_ctx(group, kind, a_x[KEEP], a_gx[:, KEEP])])
    assert want["value"] == want["value"]  # not NaN
    # one chunk, and two chunks (buffer offsets, per-chunk masks)
    _same(_run(cls, options, [_ctx(group, kind, bad_x, bad_gx, MASK)]), want)
    _same(_run(cls, options, _chunks(group, kind, bad_x, bad_gx, MASK, (5, 3))), want)


def test_masked_image_with_dead_channels_is_not_counted():
    """The engine's zero maps are dead channels: the masked image must not add to left_out (a failing control)."""
    group = Rotation90()
    a_x, a_gx = _activations(group, "map")
    bad_x, bad_gx = _spoil(a_x, a_gx, [BAD], "zeros")
    masked = _run(CorrelationInvariance, {}, [_ctx(group, "map", bad_x, bad_gx, MASK)])
    unmasked = _run(CorrelationInvariance, {}, [_ctx(group, "map", bad_x, bad_gx)])
    assert unmasked["left_out"] == masked["left_out"] + C * len(group.elements)


@pytest.mark.parametrize("how", ["zeros", "garbage"])
@pytest.mark.parametrize("group", ["rot90", "shift"])
def test_affine_reuse_applies_the_reusing_layers_mask(group, how):
    """A BatchNorm reuses its conv's Pearson scores (``ctx.previous``) under its own, different mask."""
    group = GROUPS[group]()
    a_x, a_gx = _activations(group, "map", seed=3)
    conv_mask = MASK.clone()
    bn_mask = MASK.clone()
    bn_mask[5] = False  # also left out at the norm layer only
    scale = torch.tensor([0.5, 2.0, 3.0, 0.1], dtype=torch.float64).reshape(C, 1, 1)
    shift = torch.tensor([1.0, -2.0, 0.0, 5.0], dtype=torch.float64).reshape(C, 1, 1)
    bn_x, bn_gx = a_x * scale + shift, a_gx * scale + shift
    conv_x, conv_gx = _spoil(a_x, a_gx, [BAD], how)
    bn_x_bad, bn_gx_bad = _spoil(bn_x, bn_gx, [BAD, 5], how)
    keep = [i for i in range(B) if bn_mask[i]]
    for cls in (CorrelationInvariance, CorrelationEquivariance):
        conv = _ctx(group, "map", conv_x, conv_gx, conv_mask)
        conv_metric = cls.for_layer(conv)
        conv_metric.update(conv)
        bn = _ctx(group, "map", bn_x_bad, bn_gx_bad, bn_mask, previous=conv.work.handoff(),
                  module=torch.nn.BatchNorm2d(C))
        bn_metric = cls.for_layer(bn)
        bn_metric.update(bn)
        assert bn.work.correlation_scores("pearson") is conv.work.correlation_scores("pearson")  # reused
        want = _run(cls, {}, [_ctx(group, "map", bn_x[keep], bn_gx[:, keep])])
        _same(bn_metric.compute_details(), want)
        _same(conv_metric.compute_details(), _run(cls, {}, [_ctx(group, "map", a_x[KEEP], a_gx[:, KEEP])]))


@pytest.mark.parametrize("cls,options,group,kind", STACKED_CASES, ids=STACKED_IDS)
def test_all_true_is_no_mask_and_all_false_chunk_adds_nothing(cls, options, group, kind):
    group = GROUPS[group]()
    a_x, a_gx = _activations(group, kind, seed=5)
    ones = torch.ones(B, dtype=torch.bool)
    plain = _run(cls, options, [_ctx(group, kind, a_x, a_gx)])
    _same(_run(cls, options, [_ctx(group, kind, a_x, a_gx, ones)]), plain)
    # a chunk where every image is left out (zeros, as the engine leaves them), then a normal chunk
    zero_x, zero_gx = torch.zeros_like(a_x[:4]), torch.zeros_like(a_gx[:, :4])
    empty = _ctx(group, kind, zero_x, zero_gx, torch.zeros(4, dtype=torch.bool))
    _same(_run(cls, options, [empty, _ctx(group, kind, a_x, a_gx)]), plain)


def test_softmax_auto_decides_on_kept_rows_only():
    """``inputs="auto"``: zero rows of left-out images (which sum to 0) must not make probabilities read as logits."""
    group = Rotation90()
    gen = torch.Generator().manual_seed(2)
    probs_x = torch.softmax(torch.randn(B, D, generator=gen, dtype=torch.float64), -1)
    probs_gx = torch.softmax(torch.randn(3, B, D, generator=gen, dtype=torch.float64), -1)
    bad_x, bad_gx = _spoil(probs_x, probs_gx, [BAD], "zeros")
    want = _run(GEEDSoftmax, {"geed_softmax_input": "probs"}, [_ctx(group, "vector", probs_x[KEEP], probs_gx[:, KEEP])])
    metric = GEEDSoftmax.for_layer(_ctx(group, "vector", bad_x, bad_gx))
    empty = _ctx(group, "vector", torch.zeros(2, D, dtype=torch.float64), torch.zeros(3, 2, D, dtype=torch.float64),
                 torch.zeros(2, dtype=torch.bool))
    metric.update(empty)  # nothing kept: no decision yet
    assert metric._decided is None
    metric.update(_ctx(group, "vector", bad_x, bad_gx, MASK))
    assert metric._decided == "probs"
    _same(metric.compute_details(), want)


# ------------------------------------------------------------------ public update() and functional helpers
@pytest.mark.parametrize("how", ["zeros", "garbage"])
@pytest.mark.parametrize("similarity", ["pearson", "cosine"])
def test_correlation_update_and_functional(similarity, how):
    group = Translation(max_shift=2)
    a_x, a_gx = _activations(group, "map", seed=11)
    ctx = _ctx(group, "map", a_x, a_gx)
    ta_x, pos = ctx.transformed_x(), ctx.mask()
    _, bad_gx = _spoil(a_x, a_gx, [BAD], how, seed=1)
    _, bad_ta = _spoil(a_x, ta_x, [BAD], how, seed=2)
    for cls, fn in (
        (CorrelationInvariance, correlation_invariance),
        (CorrelationEquivariance, correlation_equivariance),
    ):
        want, got = cls(2, C, similarity=similarity), cls(2, C, similarity=similarity)
        want.update(a_gx[:, KEEP], ta_x[:, KEEP], mask=pos)
        got.update(bad_gx, bad_ta, mask=pos, sample_mask=MASK)
        _same(got.compute_details(), want.compute_details())
        assert float(fn(bad_gx, bad_ta, pos, similarity, sample_mask=MASK)) == pytest.approx(
            float(fn(a_gx[:, KEEP], ta_x[:, KEEP], pos, similarity)), rel=1e-6
        )
    # vectors
    v_x, v_gx = _activations(group, "vector", seed=12)
    ta = v_x.expand_as(v_gx)
    bad_x, bad_vgx = _spoil(v_x, v_gx, [BAD], how)
    want, got = CorrelationInvariance(2, 1, similarity=similarity), CorrelationInvariance(2, 1, similarity=similarity)
    want.update(v_gx[:, KEEP], ta[:, KEEP])
    got.update(bad_vgx, bad_x.expand_as(bad_vgx), sample_mask=MASK)
    _same(got.compute_details(), want.compute_details())


@pytest.mark.parametrize("how", ["zeros", "garbage"])
def test_geed_update_and_functional(how):
    group = Translation(max_shift=2)
    a_x, a_gx = _activations(group, "map", seed=13)
    ctx = _ctx(group, "map", a_x, a_gx)
    ta_x, pos = ctx.transformed_x(), ctx.mask()
    _, bad_gx = _spoil(a_x, a_gx, [BAD], how, seed=1)
    _, bad_ta = _spoil(a_x, ta_x, [BAD], how, seed=2)
    want, got = GEEDChannel(2, C), GEEDChannel(2, C)
    want.update(a_gx[:, KEEP], ta_x[:, KEEP], mask=pos)
    got.update(bad_gx, bad_ta, mask=pos, sample_mask=MASK)
    _same(got.compute_details(), want.compute_details())
    assert float(geed_channel(bad_gx, bad_ta, pos, sample_mask=MASK)) == pytest.approx(
        float(geed_channel(a_gx[:, KEEP], ta_x[:, KEEP], pos)), rel=1e-6
    )

    v_x, v_gx = _activations(group, "vector", seed=14)
    bad_x, bad_vgx = _spoil(v_x, v_gx, [BAD], how)
    for cls, args in ((GEEDLatentL2, (2, D)), (GEEDLatentCosine, (2, D)), (GEEDSoftmax, (2,))):
        want, got = cls(*args), cls(*args)
        want.update(v_x[KEEP], v_gx[:, KEEP])
        got.update(bad_x, bad_vgx, sample_mask=MASK)
        _same(got.compute_details(), want.compute_details())
    for metric in ("l2", "cosine"):
        assert float(geed_latent(bad_x, bad_vgx, metric, sample_mask=MASK)) == pytest.approx(
            float(geed_latent(v_x[KEEP], v_gx[:, KEEP], metric)), rel=1e-6
        )
    assert float(geed_softmax(bad_x, bad_vgx, sample_mask=MASK)) == pytest.approx(
        float(geed_softmax(v_x[KEEP], v_gx[:, KEEP])), rel=1e-6
    )


# ------------------------------------------------------------------ lee
def _lie(kind: str, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if kind == "vector":
        return torch.randn(B, 1, D, generator=gen, dtype=torch.float64)
    return torch.randn(B, C, S * S, generator=gen, dtype=torch.float64)


def _lee_run(contexts) -> Dict:
    metric = None
    for ctx in contexts:
        if metric is None:
            metric = LieDerivativeError.for_layer(ctx)
        metric.update(ctx)
    return metric.compute_details()


def _lie_ctx(kind: str, lie: torch.Tensor, mask: Optional[torch.Tensor] = None) -> LieContext:
    return LieContext(layer="layer", kind=kind, transform=None, lie=lie, sample_mask=mask)


@pytest.mark.parametrize("how", ["zeros", "garbage", "nonfinite"])
@pytest.mark.parametrize("kind", ["map", "vector"])
def test_lee_masked_image_is_left_out(kind, how):
    lie = _lie(kind)
    bad = lie.clone()
    bad[BAD] = {"zeros": 0.0, "garbage": 1e7, "nonfinite": float("nan")}[how]
    want = _lee_run([_lie_ctx(kind, lie[KEEP])])
    assert want["stderr"] > 0
    _same(_lee_run([_lie_ctx(kind, bad, MASK)]), want)
    _same(_lee_run([_lie_ctx(kind, bad[:5], MASK[:5]), _lie_ctx(kind, bad[5:], MASK[5:])]), want)
    # public update
    metric = LieDerivativeError(lie.shape[1])
    metric.update(bad, sample_mask=MASK)
    _same(metric.compute_details(), want)
    # all True = no mask; an all-False chunk adds nothing
    plain = _lee_run([_lie_ctx(kind, lie)])
    _same(_lee_run([_lie_ctx(kind, lie, torch.ones(B, dtype=torch.bool))]), plain)
    empty = _lie_ctx(kind, torch.zeros(3, *lie.shape[1:], dtype=torch.float64), torch.zeros(3, dtype=torch.bool))
    _same(_lee_run([empty, _lie_ctx(kind, lie)]), plain)


# ------------------------------------------------------------------ no host synchronisation
_NoHostRead = NoHostRead


def test_no_host_read_guard_catches_item():
    with pytest.raises(AssertionError, match="host synchronisation"):
        with _NoHostRead():
            torch.ones(3).sum().item()
    with pytest.raises(AssertionError, match="host synchronisation"):
        with _NoHostRead():
            torch.ones(3)[torch.tensor([True, False, True])]


# Reads once per layer, by design, before the first chunk's sums (not per chunk): the
# correlation measures' "at least 2 valid positions" check of a masked group's validity mask
# (Translation on maps), and GEEDSoftmax's inputs="auto" decision.
def _reads_on_first_chunk(cls, options, group, kind) -> bool:
    if cls in (CorrelationInvariance, CorrelationEquivariance):
        return kind == "map" and group == "shift"
    return options.get("geed_softmax_input") == "auto"


@pytest.mark.parametrize("cls,options,group,kind", STACKED_CASES, ids=STACKED_IDS)
def test_update_layer_does_not_read_on_the_host(cls, options, group, kind):
    name = group
    group = GROUPS[group]()
    a_x, a_gx = _activations(group, kind)
    bad_x, bad_gx = _spoil(a_x, a_gx, [BAD], "zeros")
    # a BatchNorm layer: the correlation measures may reuse the previous layer's scores
    metric = cls.for_layer(_ctx(group, kind, bad_x, bad_gx, module=torch.nn.BatchNorm2d(C)), **options)
    if _reads_on_first_chunk(cls, options, name, kind):
        metric.update(_ctx(group, kind, bad_x, bad_gx, MASK))
    with _NoHostRead():
        for _ in range(2):
            metric.update(_ctx(group, kind, bad_x, bad_gx, MASK))
        # the affine reuse path too
        if cls in (CorrelationInvariance, CorrelationEquivariance) and kind == "map":
            first = _ctx(group, kind, bad_x, bad_gx, MASK)
            metric.update(first)
            metric.update(_ctx(group, kind, bad_x, bad_gx, MASK, previous=first.work.handoff()))
    metric.compute_details()


@pytest.mark.parametrize("kind", ["map", "vector"])
def test_lee_update_layer_does_not_read_on_the_host(kind):
    lie = _lie(kind)
    metric = LieDerivativeError.for_layer(_lie_ctx(kind, lie))
    with _NoHostRead():
        metric.update(_lie_ctx(kind, lie, MASK))
        metric.update(_lie_ctx(kind, lie))
    metric.compute_details()

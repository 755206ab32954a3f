"""Per-image sample masks in Quiroga's transformational measures (docs/measures.md §1.7).

An image the engine excludes (NaN/Inf in its input or in its activation at a layer) arrives
with ``ctx.sample_mask[i] = False`` and its activations replaced by zeros. Every measure must
leave it out of every state exactly: the results equal measuring only the other images, on
the device, without a host synchronisation.
"""
import math

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lightning_equivariance.functional.transformational import (
    _columns_update,
    _sd_block_update,
    _sum_pairs,
    _sum_pairs_masked,
    _td_update,
    _tv_update,
    unit_norm_maps,
)
from lightning_equivariance.groups import Rotation90, Translation
from lightning_equivariance.metrics import MEASURES, LayerContext

FAMILY = ["tv", "sv", "nv", "td", "sd", "nd", "anova", "same_equivariance", "goodfellow"]
MASKED = 3
INPUT_SIZE = (12, 12)
REL = 1e-6

GROUPS = {"rot90": Rotation90, "translation": lambda: Translation(max_shift=2)}
OPTIONS = {
    "identity-euclid": {},
    "noid-squared": {"include_identity": False, "distance": "squared"},
}


# ---------------------------------------------------------------------- data and contexts
def _activations(kind, group, b, seed):
    """``a(x)`` (``b x ...``) and ``a(t_j x)`` (``m x b x ...``), float64, with one dead unit/channel.

    Maps: the transformed maps are ``T'_g a(x)`` plus noise (partly equivariant), channel 1
    constant (0.7) for every image and transformation, so exact-zero handling (column minima
    and maxima) is exercised. Vectors: ``a(x)`` plus noise, entry 2 constant.
    """
    gen = torch.Generator().manual_seed(seed)
    if kind == "map":
        a_x = torch.randn(b, 3, 6, 6, generator=gen, dtype=torch.float64)
        a_gx = torch.stack([group.act_feature(a_x, g, INPUT_SIZE) for g in group.elements])
        a_gx = a_gx + 0.4 * torch.randn(a_gx.shape, generator=gen, dtype=torch.float64)
        a_x[:, 1] = 0.7
        a_gx[:, :, 1] = 0.7
    else:
        a_x = torch.randn(b, 5, generator=gen, dtype=torch.float64) + 1.0
        a_gx = a_x + 0.5 * torch.randn(len(group), b, 5, generator=gen, dtype=torch.float64)
        a_x[:, 2] = -0.3
        a_gx[:, :, 2] = -0.3
    return a_x, a_gx


def _corrupt(a_x, a_gx, idx, fill, seed=7):
    """Copies with image ``idx`` replaced: ``zeros`` (as the engine does), large ``garbage``, or ``nonfinite``."""
    a_x, a_gx = a_x.clone(), a_gx.clone()
    if fill == "zeros":
        a_x[idx] = 0.0
        a_gx[:, idx] = 0.0
    elif fill == "garbage":
        gen = torch.Generator().manual_seed(seed)
        a_x[idx] = 1e8 * torch.randn(a_x[idx].shape, generator=gen, dtype=a_x.dtype) - 3e7
        a_gx[:, idx] = 1e8 * torch.randn(a_gx[:, idx].shape, generator=gen, dtype=a_x.dtype) + 5e7
    elif fill == "nonfinite":
        a_x[idx] = math.nan
        a_gx[:, idx] = math.inf
        a_gx[0, idx].view(-1)[::2] = -math.inf
    else:
        raise ValueError(fill)
    return a_x, a_gx


def _keep(b, idx):
    return [i for i in range(b) if i != idx]


def _ctx(kind, group, a_x, a_gx, mask=None):
    """The context as the engine builds it (``engine.py``, ``_on_output``)."""
    return LayerContext(
        layer="layer",
        kind=kind,
        group=group,
        elements=group.elements,
        a_x=a_x,
        a_gx=a_gx,
        input_size=INPUT_SIZE,
        channel_action=None,
        sample_mask=mask,
    )


def _names(kind):
    return [n for n in FAMILY if not (kind == "vector" and n == "same_equivariance")]


def _metrics_fed(names, kind, group, chunks, options):
    """Every measure fed the chunks ``(a_x, a_gx, mask)``, one shared context per chunk (as the engine)."""
    metrics = {}
    for a_x, a_gx, mask in chunks:
        ctx = _ctx(kind, group, a_x, a_gx, mask)
        for name in names:
            if name not in metrics:
                metrics[name] = MEASURES[name].for_layer(ctx, **options)
            metrics[name].update(ctx)
    return metrics


def _details(names, kind, group, chunks, options):
    return {name: m.compute_details() for name, m in _metrics_fed(names, kind, group, chunks, options).items()}


def _assert_same(got, want, rel=REL, where=""):
    assert set(got) == set(want), (where, set(got) ^ set(want))
    for key in want:
        g, w = got[key], want[key]
        at = f"{where}[{key!r}]"
        if isinstance(w, torch.Tensor) or isinstance(g, torch.Tensor):
            g = np.asarray(torch.as_tensor(g), dtype=np.float64)
            w = np.asarray(torch.as_tensor(w), dtype=np.float64)
            assert g.shape == w.shape, (at, g.shape, w.shape)
            assert not np.isnan(w).any(), at
            assert not np.isnan(g).any(), (at, g)
            assert np.array_equal(np.isposinf(g), np.isposinf(w)) and np.array_equal(np.isneginf(g), np.isneginf(w)), at
            fin = np.isfinite(w)
            np.testing.assert_allclose(g[fin], w[fin], rtol=rel, atol=0, err_msg=at)
        elif isinstance(w, float):
            assert not math.isnan(g), at
            assert g == w or math.isclose(g, w, rel_tol=rel, abs_tol=0), (at, g, w)
        else:
            assert g == w, (at, g, w)


def _assert_all_same(got, want, rel=REL, where=""):
    assert set(got) == set(want)
    for name in want:
        _assert_same(got[name], want[name], rel, where=f"{where}{name}")


# ---------------------------------------------------------------------- one chunk
@pytest.mark.parametrize("fill", ["zeros", "garbage", "nonfinite"])
@pytest.mark.parametrize("options", list(OPTIONS.values()), ids=list(OPTIONS))
@pytest.mark.parametrize("kind", ["map", "vector"])
@pytest.mark.parametrize("group_name", list(GROUPS))
def test_masked_image_equals_leaving_it_out(group_name, kind, options, fill):
    """8 images with image 3 masked (zeros, large garbage or NaN/Inf there) = the 7 others, every detail."""
    group = GROUPS[group_name]()
    a_x, a_gx = _activations(kind, group, 8, seed=1)
    bad_x, bad_gx = _corrupt(a_x, a_gx, MASKED, fill)
    mask = torch.ones(8, dtype=torch.bool)
    mask[MASKED] = False
    keep = _keep(8, MASKED)
    names = _names(kind)
    got = _details(names, kind, group, [(bad_x, bad_gx, mask)], options)
    want = _details(names, kind, group, [(a_x[keep], a_gx[:, keep], None)], options)
    _assert_all_same(got, want)


# ---------------------------------------------------------------------- two chunks
@pytest.mark.parametrize("options", list(OPTIONS.values()), ids=list(OPTIONS))
@pytest.mark.parametrize("kind", ["map", "vector"])
@pytest.mark.parametrize("group_name", list(GROUPS))
def test_two_chunks_with_a_masked_image_equal_the_clean_images(group_name, kind, options):
    """Chunk 1: 8 images, image 3 masked (zeros); chunk 2: 5 images, no mask.

    Equals the 12 clean images in one chunk for every measure whose result does not depend
    on the batching, and the clean images in the same two chunks (7 + 5) for all of them
    (``sd``/``nd`` with ``|x - y|``: Quiroga's per-batch pairs).
    """
    group = GROUPS[group_name]()
    a_x, a_gx = _activations(kind, group, 8, seed=2)
    b_x, b_gx = _activations(kind, group, 5, seed=3)
    bad_x, bad_gx = _corrupt(a_x, a_gx, MASKED, "zeros")
    mask = torch.ones(8, dtype=torch.bool)
    mask[MASKED] = False
    keep = _keep(8, MASKED)
    names = _names(kind)
    got = _details(names, kind, group, [(bad_x, bad_gx, mask), (b_x, b_gx, None)], options)
    same_chunks = _details(names, kind, group, [(a_x[keep], a_gx[:, keep], None), (b_x, b_gx, None)], options)
    _assert_all_same(got, same_chunks, where="same chunks: ")
    pairwise = options.get("distance", "euclidean") != "squared"
    batch_free = [n for n in names if not (pairwise and n in ("sd", "nd"))]
    one_chunk = _details(
        batch_free, kind, group,
        [(torch.cat([a_x[keep], b_x]), torch.cat([a_gx[:, keep], b_gx], dim=1), None)], options,
    )
    _assert_all_same({n: got[n] for n in batch_free}, one_chunk, where="one chunk: ")


def test_chunk_with_every_image_masked_adds_nothing():
    """A chunk whose images are all masked leaves every state as it was."""
    group = Rotation90()
    a_x, a_gx = _activations("map", group, 6, seed=4)
    b_x, b_gx = _activations("map", group, 5, seed=5)
    bad_x, bad_gx = _corrupt(a_x, a_gx, slice(None), "garbage")
    none = torch.zeros(6, dtype=torch.bool)
    got = _details(FAMILY, "map", group, [(bad_x, bad_gx, none), (b_x, b_gx, None)], {})
    want = _details(FAMILY, "map", group, [(b_x, b_gx, None)], {})
    _assert_all_same(got, want)


@pytest.mark.parametrize("kind", ["map", "vector"])
def test_all_true_mask_equals_no_mask(kind):
    group = Translation(max_shift=2)
    a_x, a_gx = _activations(kind, group, 8, seed=6)
    names = _names(kind)
    for options in OPTIONS.values():
        got = _details(names, kind, group, [(a_x, a_gx, torch.ones(8, dtype=torch.bool))], options)
        want = _details(names, kind, group, [(a_x, a_gx, None)], options)
        _assert_all_same(got, want, rel=1e-12)


# ---------------------------------------------------------------------- public update and helpers
def test_public_update_takes_sample_mask():
    """``Metric.update(st, sample_mask=...)`` = ``update`` with the kept images only, for every measure."""
    gen = torch.Generator().manual_seed(8)
    st = torch.randn(4, 9, 2, 5, 5, generator=gen, dtype=torch.float64)
    st[:, :, 1] = 0.25  # a dead channel
    mask = torch.tensor([True, False, True, True, True, False, True, True, True])
    bad = st.clone()
    bad[:, ~mask] = torch.tensor([math.nan, math.inf, -math.inf, 1e9], dtype=torch.float64).reshape(4, 1, 1, 1, 1)
    kept = st[:, mask]
    for name in FAMILY:
        cls = MEASURES[name]
        for distance in ("euclidean", "squared"):
            kw = {} if name == "same_equivariance" else {"distance": distance}
            masked, clean = cls(4, (2, 5, 5), **kw), cls(4, (2, 5, 5), **kw)
            if name == "same_equivariance":
                masked.update(unit_norm_maps(bad), sample_mask=mask)
                clean.update(unit_norm_maps(kept))
            else:
                masked.update(bad, sample_mask=mask)
                clean.update(kept)
            _assert_same(masked.compute_details(), clean.compute_details(), where=f"{name}/{distance}")


@pytest.mark.parametrize("distance", ["euclidean", "squared", "callable"])
def test_functional_update_helpers_take_mask(distance):
    """The ``_*_update`` helpers with ``mask`` equal the helpers on the kept images."""
    gen = torch.Generator().manual_seed(9)
    st = torch.randn(3, 7, 4, 2, generator=gen, dtype=torch.float64)
    st[:, :, 0] = 1.5  # constant unit: exact zeros expected
    mask = torch.tensor([False, True, True, False, True, True, True])
    bad = st.clone()
    bad[:, ~mask] = 1e12
    bad[1, 0] = math.nan
    kept = st[:, mask]
    dist = (lambda x, y: (x - y).abs()) if distance == "callable" else distance

    def same(a, b):
        assert not torch.isnan(a).any()
        torch.testing.assert_close(a, b, rtol=1e-9, atol=0)

    same(_tv_update(bad, mask), _tv_update(kept))
    same(_td_update(bad, dist, mask), _td_update(kept, dist))
    for key, value in _columns_update(bad, mask).items():
        same(value, _columns_update(kept)[key])
    s, p = _sd_block_update(bad, dist, mask)
    s0, p0 = _sd_block_update(kept, dist)
    same(s, s0)
    assert int(p) == p0 == 10
    same(_sum_pairs_masked(bad, 1, dist, mask), _sum_pairs(kept, 1, dist))
    assert torch.equal(_sum_pairs_masked(bad, 1, dist, mask)[:, 0], torch.zeros(3, 2, dtype=torch.float64))
    # no image or a single one: no pair
    for few in (torch.zeros(7, dtype=torch.bool), torch.arange(7) == 4):
        s, p = _sd_block_update(bad, dist, few)
        assert int(p) == 0 and torch.equal(s, torch.zeros_like(s))


def test_mask_of_wrong_shape_is_an_error():
    group = Rotation90()
    a_x, a_gx = _activations("map", group, 4, seed=10)
    ctx = _ctx("map", group, a_x, a_gx, torch.ones(5, dtype=torch.bool))
    for name in FAMILY:
        metric = MEASURES[name].for_layer(_ctx("map", group, a_x, a_gx))
        with pytest.raises(ValueError, match="sample_mask"):
            metric.update(ctx)


# ---------------------------------------------------------------------- no host synchronisation
class _NoHostSync(TorchDispatchMode):
    """Raises on the ops that synchronise with the host or compact a batch."""

    FORBIDDEN = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::item"}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        if name in self.FORBIDDEN:
            raise AssertionError(f"host synchronisation / batch compaction: {func}")
        if name == "aten::index" and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else [])
        ):
            raise AssertionError(f"boolean-mask indexing: {func}")
        return func(*args, **kwargs)


def test_no_host_sync_detector_detects():
    """Self-check: the detector used below catches ``.item()``, ``bool(t)``, ``int(t)`` and mask indexing."""
    x, m = torch.arange(4.0), torch.tensor([True, False, True, True])
    for bad in (
        lambda: x.sum().item(),
        lambda: bool(x.sum() > 0),
        lambda: int(m.sum()),
        lambda: x[m],
        lambda: m.nonzero(),
    ):
        with pytest.raises(AssertionError):
            with _NoHostSync():
                bad()


@pytest.mark.parametrize("kind", ["map", "vector"])
@pytest.mark.parametrize("group_name", list(GROUPS))
def test_update_layer_with_mask_has_no_host_sync(group_name, kind):
    """``update_layer`` with a mask, every measure (each with a fresh context, and all sharing one), no sync."""
    group = GROUPS[group_name]()
    a_x, a_gx = _activations(kind, group, 8, seed=11)
    a_x, a_gx = _corrupt(a_x, a_gx, MASKED, "zeros")
    mask = torch.ones(8, dtype=torch.bool)
    mask[MASKED] = False
    for options in OPTIONS.values():
        metrics = {n: MEASURES[n].for_layer(_ctx(kind, group, a_x, a_gx), **options) for n in _names(kind)}
        for metric in metrics.values():
            with _NoHostSync():
                metric.update(_ctx(kind, group, a_x, a_gx, mask))
        shared = _ctx(kind, group, a_x, a_gx, mask)
        with _NoHostSync():
            for metric in metrics.values():
                metric.update(shared)
                metric.update(_ctx(kind, group, a_x, a_gx))  # and without a mask
        for metric in metrics.values():
            assert math.isfinite(metric.compute_details()["value"]) or metric.measure_name in ("nv", "nd")

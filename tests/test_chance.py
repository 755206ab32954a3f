"""Chance level and standard errors (docs/measures.md §7, issue 13) on the metric side.

* ``chance`` of ``invariance``, ``equivariance`` and ``geed_channel`` equals a brute-force loop over
  the partner pairs written here from the equation (numpy; loops over elements, samples and
  channels; transforms and masks re-implemented), with dead channels, an odd image without a
  partner and a left-out image whose partner then has no chance term;
* ``stderr`` equals ``std(s_i, ddof=1) / sqrt(n)`` of brute-force per-image scores for every
  measure that is a mean over probe images;
* chunks, ``merge_state`` and a (simulated) cross-process sync give the one-pass result;
* values near 1 within ``1e-7`` keep a finite, correct stderr (Chan's merge, no ``E[s^2] - E[s]^2``);
* a map without spatial structure scores its chance level and is uninformative;
* nothing in ``update(ctx)`` with a partner reads a device value on the host.
"""
import math
from typing import Dict, List, Optional

import numpy as np
import pytest
import torch

from host_sync import NoHostRead
from lightning_equivariance.functional.moments import (
    combine_moments,
    merge_moments,
    moments_of,
    partner_pairs,
    per_image_scores,
    stderr_from_moments,
)
from lightning_equivariance.groups import Rotation90, Translation
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
from reference import assert_same_details, shift_mask_np, shift_np

S = 6  # map size = input size (translations act unscaled)
SHIFTS = [(2, -1), (1, 1), (-3, 0)]
CHANCE_KEYS = {"chance", "chance_per_element", "above_chance", "informative", "stderr", "chance_left_out"}


def _pairs(b: int) -> torch.Tensor:
    """Local partners of a chunk starting at an even position: 2k <-> 2k+1, -1 for an odd last image."""
    p = torch.arange(b) ^ 1
    return torch.where(p < b, p, torch.full_like(p, -1))


def _group(name: str):
    return Rotation90() if name == "rot90" else Translation(shifts=SHIFTS)


def _elements_np(name: str):
    return [("rot", k) for k in (1, 2, 3)] if name == "rot90" else [("shift", s) for s in SHIFTS]


def _act_np(a: np.ndarray, element):
    """T'_g on ``C x h x w`` (numpy) and its validity mask ``h x w``."""
    kind, val = element
    if kind == "rot":
        return np.rot90(a, val, axes=(-2, -1)).copy(), np.ones(a.shape[-2:], dtype=bool)
    sx, sy = val
    return shift_np(a, sx, sy), shift_mask_np(a.shape[-2], a.shape[-1], sx, sy)


def _ctx(group, kind, a_x, a_gx, sample_mask=None, partner=None) -> LayerContext:
    return LayerContext(
        layer="layer", kind=kind, group=group, elements=group.elements, a_x=a_x, a_gx=a_gx,
        input_size=(S, S), sample_mask=sample_mask, partner=partner,
    )


def _maps(group_name: str, b: int, c: int = 4, seed: int = 0, dead: bool = True):
    """``a(x)`` ``b x C x S x S`` and ``a(T_g x)`` partly equivariant (float64), optionally with dead channels."""
    gen = torch.Generator().manual_seed(seed)
    group = _group(group_name)
    a_x = torch.rand(b, c, S, S, generator=gen, dtype=torch.float64)
    if dead:
        a_x[1, 2] = 0.5  # constant: dead in T'_g a(x_1) (the partner of image 0)
    moved = torch.stack([group.act_feature(a_x, g, (S, S)) for g in group.elements])
    a_gx = moved[:, :, torch.randperm(c, generator=gen)] + 0.8 * torch.rand(
        len(group.elements), b, c, S, S, generator=gen, dtype=torch.float64
    )
    if dead:
        a_gx[0, 3, 1] = -0.25  # dead in a(T_g x_3) for one element
    return group, a_x, a_gx


def _vectors(b: int, d: int = 7, m: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    a_x = torch.randn(b, d, generator=gen, dtype=torch.float64)
    a_gx = a_x + 0.9 * torch.randn(m, b, d, generator=gen, dtype=torch.float64)
    return Rotation90(), a_x, a_gx


def _run(cls, contexts, **options) -> Dict:
    metric = None
    for ctx in contexts:
        if metric is None:
            metric = cls.for_layer(ctx, **options)
        metric.update(ctx)
    return metric.compute_details()


# ------------------------------------------------------------------ brute force
def _live(u: np.ndarray, centre: bool) -> bool:
    d = u - u.mean() if centre else u
    return bool(np.linalg.norm(d) > 1e-10 * max(np.linalg.norm(u), 1e-300))


def _similarity(u: np.ndarray, v: np.ndarray, centre: bool = True) -> float:
    """max(0, pearson(u, v)) (or of the cosine), written out."""
    if centre:
        u, v = u - u.mean(), v - v.mean()
    return max(0.0, float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))))


def _kept_pairs(b: int, partner: Optional[List[int]], keep: List[bool]):
    """(i, j) for every kept image i whose partner j exists and is kept."""
    partner = list(_pairs(b).tolist()) if partner is None else partner
    return [(i, j) for i, j in enumerate(partner) if j >= 0 and keep[i] and keep[j]]


def brute_correlation_chance(a_x, a_gx, kind, elements, pairs, measure: str, centre: bool = True):
    """Chance level of invariance / equivariance: the value's formula against the partner's map."""
    a_x, a_gx = a_x.numpy(), a_gx.numpy()
    per_element = []
    for g, element in enumerate(elements):
        total, count = 0.0, 0
        for i, j in pairs:
            if kind == "vector":
                u, v = a_gx[g, i], a_x[j]  # vectors: T'_g is the identity; one channel
                if _live(u, centre) and _live(v, centre):
                    total += _similarity(u, v, centre)
                    count += 1
                continue
            moved, mask = _act_np(a_x[j], element)  # T'_g a(x_partner(i))
            channels = a_gx.shape[2]
            us = [a_gx[g, i, c][mask] for c in range(channels)]
            vs = [moved[c][mask] for c in range(channels)]
            live_v = [_live(v, centre) for v in vs]
            for c in range(channels):
                if not (_live(us[c], centre) and live_v[c]):
                    continue
                if measure == "invariance":
                    total += _similarity(us[c], vs[c], centre)
                else:
                    total += max(_similarity(us[c], vs[k], centre) for k in range(channels) if live_v[k])
                count += 1
        per_element.append(total / count)
    return float(np.mean(per_element)), np.array(per_element)


def _orbit_average_np(a_x, a_gx, i):
    return np.mean([a_x[i]] + [a_gx[g, i] for g in range(a_gx.shape[0])], axis=0)


def _cos(u, v):
    return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))


def brute_geed_chance(a_x, a_gx, kind, elements, pairs):
    """Chance level of geed_channel: -(mean cos) against the partner's g a_hat (vectors: its orbit average)."""
    a_x, a_gx = a_x.numpy(), a_gx.numpy()
    per_element = []
    for g, element in enumerate(elements):
        total, count = 0.0, 0
        for i, j in pairs:
            if kind == "vector":
                u, v = a_gx[g, i], _orbit_average_np(a_x, a_gx, j)
                if np.linalg.norm(u) > 0 and np.linalg.norm(v) > 0:
                    total += _cos(u, v)
                    count += 1
                continue
            moved, mask = _act_np(a_x[j], element)
            for c in range(a_gx.shape[2]):
                u, v = a_gx[g, i, c][mask], moved[c][mask]
                if np.linalg.norm(u) > 0 and np.linalg.norm(v) > 0:
                    total += _cos(u, v)
                    count += 1
        per_element.append(-total / count)
    return float(np.mean(per_element)), np.array(per_element)


def brute_image_scores(a_x, a_gx, kind, elements, measure: str, keep: Optional[List[bool]] = None) -> List[float]:
    """s_i: the mean over elements of image i's mean over its live channels (no dead channels in the data)."""
    a_x, a_gx = a_x.numpy(), a_gx.numpy()
    b = a_x.shape[0]
    keep = [True] * b if keep is None else keep
    scores = []
    for i in range(b):
        if not keep[i]:
            continue
        per_element = []
        for g, element in enumerate(elements):
            if kind == "vector":
                u = a_gx[g, i]
                if measure == "geed_channel":
                    per_element.append(-_cos(u, _orbit_average_np(a_x, a_gx, i)))
                else:
                    per_element.append(_similarity(u, a_x[i]))
                continue
            moved, mask = _act_np(a_x[i], element)
            channels = a_gx.shape[2]
            us = [a_gx[g, i, c][mask] for c in range(channels)]
            vs = [moved[c][mask] for c in range(channels)]
            if measure == "invariance":
                vals = [_similarity(us[c], vs[c]) for c in range(channels)]
            elif measure == "equivariance":
                vals = [max(_similarity(us[c], vs[k]) for k in range(channels)) for c in range(channels)]
            else:
                vals = [-_cos(us[c], vs[c]) for c in range(channels)]
            per_element.append(float(np.mean(vals)))
        scores.append(float(np.mean(per_element)))
    return scores


def brute_stderr(scores: List[float]) -> float:
    s = np.asarray(scores, dtype=np.float64)
    return float(np.std(s, ddof=1) / math.sqrt(len(s)))


# ------------------------------------------------------------------ (1) chance vs brute force
CORRELATION = [(CorrelationInvariance, "invariance"), (CorrelationEquivariance, "equivariance")]
CHANCE_CASES = [("rot90", "map"), ("shift", "map"), ("rot90", "vector")]


@pytest.mark.parametrize("group_name,kind", CHANCE_CASES, ids=[f"{g}-{k}" for g, k in CHANCE_CASES])
@pytest.mark.parametrize("cls,measure", CORRELATION, ids=["invariance", "equivariance"])
@pytest.mark.parametrize("similarity", ["pearson", "cosine"])
def test_correlation_chance_matches_brute_force(cls, measure, group_name, kind, similarity):
    b = 7  # odd: image 6 has no partner
    group, a_x, a_gx = _maps(group_name, b) if kind == "map" else _vectors(b)
    keep = [i != 2 for i in range(b)]  # image 2 left out: its partner 3 has no chance term
    mask = torch.tensor(keep)
    d = _run(cls, [_ctx(group, kind, a_x, a_gx, mask, _pairs(b))], similarity=similarity)
    pairs = _kept_pairs(b, None, keep)
    assert pairs == [(0, 1), (1, 0), (4, 5), (5, 4)]
    want, want_pe = brute_correlation_chance(
        a_x,
        a_gx,
        kind,
        _elements_np(group_name) if kind == "map" else [None] * 3,
        pairs,
        measure,
        similarity == "pearson",
    )
    assert d["chance"] == pytest.approx(want, abs=1e-6)
    np.testing.assert_allclose(d["chance_per_element"].numpy(), want_pe, atol=1e-6)
    assert d["chance_left_out"] == 2  # images 3 (partner left out) and 6 (no partner); image 2 is not counted at all
    # the value is untouched by the partners
    plain = _run(cls, [_ctx(group, kind, a_x, a_gx, mask)], similarity=similarity)
    assert d["value"] == plain["value"] and d["stderr"] == plain["stderr"]
    assert plain["chance"] is None and plain["informative"] is None and plain["chance_left_out"] == b - 1
    room = 1 - d["chance"]
    assert d["informative"] is (room >= 0.05)
    if d["informative"]:
        assert d["above_chance"] == pytest.approx((d["value"] - d["chance"]) / room, rel=1e-12)


@pytest.mark.parametrize("group_name,kind", CHANCE_CASES, ids=[f"{g}-{k}" for g, k in CHANCE_CASES])
def test_geed_channel_chance_matches_brute_force(group_name, kind):
    b = 7
    group, a_x, a_gx = _maps(group_name, b) if kind == "map" else _vectors(b)
    if kind == "map":
        a_gx[1, 4, 0] = 0.0  # a zero map: no cosine
    else:
        a_gx[1, 4] = 0.0
    keep = [i != 2 for i in range(b)]
    d = _run(GEEDChannel, [_ctx(group, kind, a_x, a_gx, torch.tensor(keep), _pairs(b))])
    pairs = _kept_pairs(b, None, keep)
    want, want_pe = brute_geed_chance(a_x, a_gx, kind, _elements_np(group_name) if kind == "map" else [None] * 3, pairs)
    assert d["chance"] == pytest.approx(want, abs=1e-6)
    np.testing.assert_allclose(d["chance_per_element"].numpy(), want_pe, atol=1e-6)
    assert d["chance_left_out"] == 2
    room = 1 + d["chance"]
    assert d["informative"] is (room >= 0.05)
    if d["informative"]:
        assert d["above_chance"] == pytest.approx((d["chance"] - d["value"]) / room, rel=1e-12)


def test_chance_functional_scores_match_the_permuted_path():
    """correlation_scores(partner=) (explicitly rotated maps) = permuted_scores(partner=) (rotated unit maps)."""
    from lightning_equivariance.functional.correlation import correlation_scores, permuted_scores

    group, a_x, a_gx = _maps("rot90", 6)
    ta_x = torch.stack([group.act_feature(a_x, g, (S, S)) for g in group.elements])
    partner = torch.tensor([1, 0, 3, 2, -1, -1])
    want = correlation_scores(a_gx, ta_x, partner=partner)
    got = permuted_scores(
        a_gx, a_x, lambda maps, g: group.act_feature(maps, group.elements[g], (S, S)), partner=partner
    )
    for key in ("chance_invariance", "chance_equivariance", "chance_valid"):
        torch.testing.assert_close(got[key], want[key], rtol=1e-12, atol=1e-12)
    assert not bool(want["chance_valid"][:, 4:].any())  # no partner: no chance pair
    assert bool((want["chance_equivariance"] >= want["chance_invariance"]).all())


# ------------------------------------------------------------------ (2) stderr vs brute force
@pytest.mark.parametrize("group_name,kind", CHANCE_CASES, ids=[f"{g}-{k}" for g, k in CHANCE_CASES])
@pytest.mark.parametrize("measure", ["invariance", "equivariance", "geed_channel"])
def test_stderr_matches_brute_force(measure, group_name, kind):
    b = 9
    group, a_x, a_gx = _maps(group_name, b, dead=False) if kind == "map" else _vectors(b)
    cls = {"invariance": CorrelationInvariance, "equivariance": CorrelationEquivariance, "geed_channel": GEEDChannel}[
        measure
    ]
    keep = [i != 5 for i in range(b)]
    d = _run(cls, [_ctx(group, kind, a_x, a_gx, torch.tensor(keep), _pairs(b))])
    elements = _elements_np(group_name) if kind == "map" else [None] * 3
    scores = brute_image_scores(a_x, a_gx, kind, elements, measure, keep)
    assert len(scores) == 8
    assert d["stderr"] == pytest.approx(brute_stderr(scores), rel=1e-6)
    if group_name == "rot90":  # without masks every image has every channel: the value is the mean of the s_i
        assert d["value"] == pytest.approx(float(np.mean(scores)), rel=1e-9)


def test_stderr_latent_and_softmax_match_brute_force():
    b = 8
    _, a_x, a_gx = _vectors(b, seed=3)
    group = Rotation90()
    x, gx = a_x.numpy(), a_gx.numpy()
    def ctx():
        return _ctx(group, "vector", a_x, a_gx, partner=_pairs(b))
    # l2: s_i = mean_g |f(g x_i) - f_hat(x_i)| / M, M the mean distance of distinct points
    M = np.mean([np.linalg.norm(x[i] - x[j]) for i in range(b) for j in range(b) if i != j])
    s = [np.mean([np.linalg.norm(gx[g, i] - _orbit_average_np(x, gx, i)) for g in range(3)]) / M for i in range(b)]
    d = _run(GEEDLatentL2, [ctx()])
    assert d["stderr"] == pytest.approx(brute_stderr(s), rel=1e-6) and d["value"] == pytest.approx(np.mean(s), rel=1e-9)
    assert d["chance"] is None and d["informative"] is None
    # cosine: s_i = mean_g -cos(f(g x_i), f_hat(x_i)) / M, M the mean cosine of distinct points
    M = np.mean([_cos(x[i], x[j]) for i in range(b) for j in range(b) if i != j])
    s = [np.mean([-_cos(gx[g, i], _orbit_average_np(x, gx, i)) for g in range(3)]) / M for i in range(b)]
    d = _run(GEEDLatentCosine, [ctx()])
    assert d["stderr"] == pytest.approx(brute_stderr(s), rel=1e-6) and d["value"] == pytest.approx(np.mean(s), rel=1e-9)
    # softmax: s_i = mean_g KL(p_g(x_i) || p_hat(x_i))
    def softmax(z):
        e = np.exp(z - z.max())
        return e / e.sum()

    s = []
    for i in range(b):
        ps = [softmax(x[i])] + [softmax(gx[g, i]) for g in range(3)]
        q = np.mean(ps, axis=0)
        s.append(np.mean([np.sum(p * np.log(p / q)) for p in ps[1:]]))
    d = _run(GEEDSoftmax, [ctx()], geed_softmax_input="logits")
    assert d["stderr"] == pytest.approx(brute_stderr(s), rel=1e-6) and d["value"] == pytest.approx(np.mean(s), rel=1e-9)


@pytest.mark.parametrize("kind", ["map", "vector"])
def test_lee_stderr_matches_brute_force(kind):
    gen = torch.Generator().manual_seed(5)
    lie = (
        torch.randn(9, 3, 16, generator=gen, dtype=torch.float64)
        if kind == "map"
        else torch.randn(9, 1, 6, generator=gen, dtype=torch.float64)
    )
    mask = torch.tensor([i != 4 for i in range(9)])
    d = _run(LieDerivativeError, [LieContext(layer="l", kind=kind, transform=None, lie=lie, sample_mask=mask)])
    s = [float((lie[i] ** 2).sum() / lie[i].numel()) for i in range(9) if i != 4]
    assert d["stderr"] == pytest.approx(brute_stderr(s), rel=1e-6)
    assert d["value"] == pytest.approx(np.mean(s), rel=1e-12)
    # fewer than 2 images: missing, never NaN
    one = _run(LieDerivativeError, [LieContext(layer="l", kind=kind, transform=None, lie=lie[:1])])
    assert one["stderr"] is None


def test_stderr_is_missing_below_two_images_and_never_nan():
    group, a_x, a_gx = _maps("rot90", 1, dead=False)
    for cls in (CorrelationInvariance, CorrelationEquivariance, GEEDChannel):
        d = _run(cls, [_ctx(group, "map", a_x, a_gx, partner=_pairs(1))])
        assert d["stderr"] is None and d["chance"] is None and d["above_chance"] is None
        assert d["informative"] is None and d["chance_left_out"] == 1
        assert CHANCE_KEYS <= set(d)
        for v in d.values():
            assert not (isinstance(v, float) and math.isnan(v))


# ------------------------------------------------------------------ (3) streaming and merging
STREAM = [
    (CorrelationInvariance, "rot90", "map"),
    (CorrelationEquivariance, "rot90", "map"),
    (CorrelationEquivariance, "shift", "map"),
    (CorrelationEquivariance, "rot90", "vector"),
    (GEEDChannel, "shift", "map"),
    (GEEDChannel, "rot90", "vector"),
]


def _same(got: Dict, want: Dict) -> None:
    assert_same_details(got, want, rtol=1e-10, atol=1e-14)


def _fake_gather(other):
    """A dist_sync_fn for 2 'processes': this metric's state and ``other``'s, in torchmetrics' state order."""
    states = iter([getattr(other, name) for name in other._reductions])

    def gather(tensor, group=None):
        return [tensor, next(states)]

    return gather


@pytest.mark.parametrize("cls,group_name,kind", STREAM, ids=[f"{c.measure_name}-{g}-{k}" for c, g, k in STREAM])
def test_two_chunks_equal_one_and_states_merge_exactly(cls, group_name, kind):
    b = 10
    group, a_x, a_gx = _maps(group_name, b) if kind == "map" else _vectors(b)
    mask = torch.tensor([i != 7 for i in range(b)])
    whole = _run(cls, [_ctx(group, kind, a_x, a_gx, mask, _pairs(b))])
    assert whole["chance"] is not None and whole["stderr"] is not None
    # chunks of 4 and 6 images, each starting at an even position and pairing within itself
    parts = [slice(0, 4), slice(4, 10)]
    ctxs = [_ctx(group, kind, a_x[p], a_gx[:, p], mask[p], _pairs(p.stop - p.start)) for p in parts]
    _same(_run(cls, ctxs), whole)
    # one metric per chunk, merged: merge_state, and a simulated 2-process sync at compute
    metrics = []
    for ctx in ctxs:
        metric = cls.for_layer(ctx)
        metric.update(ctx)
        metrics.append(metric)
    merged = cls.for_layer(ctxs[0])
    merged.update(ctxs[0])
    merged.merge_state(metrics[1])
    _same(merged.compute_details(), whole)
    synced = cls.for_layer(ctxs[0])
    synced.dist_sync_fn, synced.distributed_available_fn = _fake_gather(metrics[1]), lambda: True
    synced.update(ctxs[0])
    _same(synced.compute_details(), whole)


def test_lee_chunks_and_sync_merge_exactly():
    gen = torch.Generator().manual_seed(2)
    lie = torch.randn(11, 2, 9, generator=gen, dtype=torch.float64)
    def ctx(part):
        return LieContext(layer="l", kind="map", transform=None, lie=lie[part])
    whole = _run(LieDerivativeError, [ctx(slice(0, 11))])
    _same(_run(LieDerivativeError, [ctx(slice(0, 3)), ctx(slice(3, 11))]), whole)
    other = LieDerivativeError(2)
    other.update(ctx(slice(3, 11)))
    synced = LieDerivativeError(2, dist_sync_fn=_fake_gather(other), distributed_available_fn=lambda: True)
    synced.update(ctx(slice(0, 3)))
    _same(synced.compute_details(), whole)


def test_moments_merge_in_any_grouping():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, generator=gen, dtype=torch.float64) * 3 + 2
    w = torch.rand(40, generator=gen) > 0.3
    want = moments_of(x, w)
    kept = x[w].numpy()
    assert float(want[0]) == len(kept)
    assert float(want[1]) == pytest.approx(kept.mean(), rel=1e-14)
    assert float(want[2]) == pytest.approx(((kept - kept.mean()) ** 2).sum(), rel=1e-12)
    pieces = [moments_of(x[i : i + 7], w[i : i + 7]) for i in range(0, 40, 7)]
    torch.testing.assert_close(merge_moments(torch.stack(pieces)), want, rtol=1e-12, atol=1e-12)
    acc = torch.zeros(3, dtype=torch.float64)
    for p in reversed(pieces):
        acc = combine_moments(acc, p)
    torch.testing.assert_close(acc, want, rtol=1e-12, atol=1e-12)
    # an empty piece changes nothing, and no value stays "no value"
    torch.testing.assert_close(combine_moments(want, moments_of(x[:3], torch.zeros(3, dtype=torch.bool))), want)
    assert stderr_from_moments(torch.zeros(3, dtype=torch.float64)) is None
    assert stderr_from_moments(moments_of(x[:1])) is None


def test_per_image_scores_skip_elements_without_a_live_channel():
    score = torch.tensor([[[0.2, 0.4], [0.9, 5.0]], [[0.6, 7.0], [9.0, 9.0]]], dtype=torch.float64)  # m=2 x b=2 x C=2
    valid = torch.tensor([[[True, True], [True, False]], [[True, False], [False, False]]])
    s, counted = per_image_scores(score, valid)
    assert counted.tolist() == [True, True]
    assert s.tolist() == pytest.approx([(0.3 + 0.6) / 2, 0.9])  # image 1 has no live channel for element 1
    s, counted = per_image_scores(score, torch.zeros_like(valid))
    assert counted.tolist() == [False, False]


def test_partner_pairs():
    index, paired = partner_pairs(torch.tensor([1, 0, 3, 2, -1]), 5, torch.tensor([True, True, False, True, True]))
    assert index.tolist() == [1, 0, 3, 2, 4] and paired.tolist() == [True, True, False, False, False]
    with pytest.raises(ValueError, match="one index per image"):
        partner_pairs(torch.tensor([1, 0]), 3)
    with pytest.raises(ValueError, match="integer"):
        partner_pairs(torch.tensor([1.0, 0.0]), 2)


# ------------------------------------------------------------------ (4) values within 1e-7 of 1
def test_moments_near_one_keep_their_spread():
    gen = torch.Generator().manual_seed(1)
    noise = torch.rand(1000, generator=gen, dtype=torch.float64)
    s = 1 - 1e-7 * noise
    want = float(noise.numpy().std(ddof=1) * 1e-7 / math.sqrt(1000))
    pieces = torch.stack([moments_of(s[i : i + 64]) for i in range(0, 1000, 64)])
    got = stderr_from_moments(merge_moments(pieces))
    assert got is not None and math.isfinite(got) and got == pytest.approx(want, rel=1e-6)
    # the naive formula loses it (the reason for the merge): E[s^2] - E[s]^2 in float64
    naive = max(float((s * s).mean() - s.mean() ** 2), 0.0) * 1000 / 999
    assert abs(math.sqrt(naive / 1000) - want) > 1e-3 * want


def test_lee_near_one_stderr_is_finite_and_correct():
    gen = torch.Generator().manual_seed(4)
    noise = torch.rand(64, generator=gen, dtype=torch.float64)
    s = 1 - 1e-7 * noise
    lie = s.sqrt().reshape(64, 1, 1)  # ||L||^2 / dim = s_i
    metric = LieDerivativeError(1)
    for i in range(0, 64, 6):
        metric.update(lie[i : i + 6])
    got = metric.compute_details()["stderr"]
    want = float(noise.numpy().std(ddof=1) * 1e-7 / 8)
    assert got is not None and math.isfinite(got) and got == pytest.approx(want, rel=1e-6)


def test_correlation_near_one_stderr_is_finite_and_correct():
    """Steerable-like scores 1 - O(1e-7): invariance on vectors, chunked."""
    gen = torch.Generator().manual_seed(6)
    b, d = 32, 50
    a_x = torch.randn(b, d, generator=gen, dtype=torch.float64)
    a_gx = a_x + 3e-4 * torch.rand(1, b, 1, generator=gen, dtype=torch.float64) * torch.randn(
        1, b, d, generator=gen, dtype=torch.float64
    )
    group = Translation(shifts=[(1, 1)])
    s = [_similarity(a_gx[0, i].numpy(), a_x[i].numpy()) for i in range(b)]
    assert 1 - min(s) < 1e-6
    metric = CorrelationInvariance(1, 1)
    for i in range(0, b, 8):
        metric.update(_ctx(group, "vector", a_x[i : i + 8], a_gx[:, i : i + 8], partner=_pairs(8)))
    got = metric.compute_details()["stderr"]
    # the reference from the deviations 1 - s_i, which numpy holds without cancellation
    dev = np.array([1 - v for v in s])
    assert got is not None and math.isfinite(got) and got == pytest.approx(dev.std(ddof=1) / math.sqrt(b), rel=1e-3)


# ------------------------------------------------------------------ (5) no spatial structure: at chance
def test_structureless_map_scores_its_chance_and_is_uninformative():
    """512 x 2 x 2 maps of independent images: the best of 512 correlations of 4 numbers is near 1 by luck."""
    gen = torch.Generator().manual_seed(0)
    b, c = 64, 512
    group = Rotation90()
    a_x = torch.randn(b, c, 2, 2, generator=gen)
    a_gx = torch.randn(3, b, c, 2, 2, generator=gen)  # a(T_g x): unrelated to a(x)
    ctxs = [_ctx(group, "map", a_x[i : i + 16], a_gx[:, i : i + 16], partner=_pairs(16)) for i in range(0, b, 16)]
    eq = _run(CorrelationEquivariance, ctxs)
    assert eq["value"] > 0.95 and abs(eq["value"] - eq["chance"]) < 0.02
    assert eq["informative"] is False and eq["above_chance"] is None
    inv = _run(CorrelationInvariance, ctxs)
    assert inv["informative"] is True and abs(inv["above_chance"]) < 0.1
    geed = _run(GEEDChannel, ctxs)
    assert geed["informative"] is True and abs(geed["above_chance"]) < 0.1


def test_equivariant_layer_is_far_above_chance():
    group, a_x, _ = _maps("rot90", 8, dead=False)
    a_gx = torch.stack([group.act_feature(a_x, g, (S, S)) for g in group.elements])
    for cls in (CorrelationInvariance, CorrelationEquivariance):
        d = _run(cls, [_ctx(group, "map", a_x, a_gx, partner=_pairs(8))])
        assert d["value"] == pytest.approx(1.0) and d["above_chance"] == pytest.approx(1.0)
    d = _run(GEEDChannel, [_ctx(group, "map", a_x, a_gx, partner=_pairs(8))])
    assert d["value"] == pytest.approx(-1.0) and d["above_chance"] == pytest.approx(1.0)


@pytest.mark.parametrize("value,chance,best,above", [
    (0.8, 0.2, 1.0, 0.75),      # higher is better (correlations): (0.8 - 0.2) / (1 - 0.2)
    (-0.9, -0.2, -1.0, 0.875),  # lower is better (geed_channel, best -1): (-0.9 + 0.2) / (-1 + 0.2)
    (-0.1, -0.2, -1.0, -0.125),  # lower is better, on the wrong side of chance: negative
])
def test_above_chance_of_a_layer_and_of_a_part_agree_in_either_direction(value, chance, best, above):
    """A layer's above_chance (functional.moments.chance_details) and a part's (report.above_chance, for
    MeasureReport.parts) are the same known number: 1 at the best value, 0 at chance, in both directions."""
    from lightning_equivariance.functional.moments import chance_details
    from lightning_equivariance.report import above_chance

    layer = chance_details(value, torch.tensor([chance], dtype=torch.float64), best > 0, 0.0)
    assert layer["above_chance"] == pytest.approx(above) and layer["informative"] is True
    assert above_chance(value, chance, best) == (pytest.approx(above), True)
    assert above_chance(best, chance, best) == (pytest.approx(1.0), True)
    assert above_chance(chance, chance, best) == (pytest.approx(0.0), True)


# ------------------------------------------------------------------ (6) no partner / left-out partner
@pytest.mark.parametrize("cls", [CorrelationInvariance, CorrelationEquivariance, GEEDChannel])
def test_missing_and_left_out_partners_leave_only_the_chance_level(cls):
    b = 8
    group, a_x, a_gx = _maps("shift", b)
    # partners: pairs (0,1), (2,3), (4,5); 6 and 7's partners are outside the chunk; image 5 left out
    partner = torch.tensor([1, 0, 3, 2, 5, 4, -1, -1])
    mask = torch.tensor([i != 5 for i in range(b)])
    d = _run(cls, [_ctx(group, "map", a_x, a_gx, mask, partner)])
    assert d["chance_left_out"] == 3  # 4 (partner left out), 6 and 7 (no partner)
    # the value and stderr: those of the 7 kept images
    keep = [i for i in range(b) if i != 5]
    plain = _run(cls, [_ctx(group, "map", a_x[keep], a_gx[:, keep])])
    for key in ("value", "stderr", "left_out"):
        assert d[key] == pytest.approx(plain[key], rel=1e-12), key
    # the chance level: that of the 4 images with a kept partner
    paired = [0, 1, 2, 3]
    only = _run(cls, [_ctx(group, "map", a_x[paired], a_gx[:, paired], partner=_pairs(4))])
    assert d["chance"] == pytest.approx(only["chance"], rel=1e-12)
    torch.testing.assert_close(d["chance_per_element"], only["chance_per_element"], rtol=1e-12, atol=1e-15)
    # a garbage partner row changes nothing: left-out images may hold anything
    spoiled_x, spoiled_gx = a_x.clone(), a_gx.clone()
    spoiled_x[5], spoiled_gx[:, 5] = float("nan"), 1e9
    _same(_run(cls, [_ctx(group, "map", spoiled_x, spoiled_gx, mask, partner)]), d)


def test_no_partner_tensor_means_no_chance_level():
    group, a_x, a_gx = _maps("rot90", 6)
    for cls in (CorrelationInvariance, CorrelationEquivariance, GEEDChannel):
        d = _run(cls, [_ctx(group, "map", a_x, a_gx)])
        assert d["chance"] is None and d["chance_per_element"] is None and d["above_chance"] is None
        assert d["informative"] is None and d["chance_left_out"] == 6 and d["stderr"] is not None
        # tensor form with partner= gives the same as the context
        metric = cls(3, 4)
        metric.update(a_gx, torch.stack([group.act_feature(a_x, g, (S, S)) for g in group.elements]), partner=_pairs(6))
        want = _run(cls, [_ctx(group, "map", a_x, a_gx, partner=_pairs(6))])
        _same(metric.compute_details(), want)


# ------------------------------------------------------------------ no host synchronisation
_NoHostRead = NoHostRead


def test_the_guard_catches_a_host_read():
    with pytest.raises(AssertionError, match="_local_scalar_dense"):
        with _NoHostRead():
            bool(torch.ones(2).sum() > 1)


SYNC = [
    (CorrelationInvariance, {}, "rot90", "map"),
    (CorrelationEquivariance, {}, "rot90", "map"),
    (CorrelationEquivariance, {}, "shift", "map"),
    (CorrelationEquivariance, {"similarity": "cosine"}, "rot90", "vector"),
    (CorrelationInvariance, {}, "shift", "map"),
    (GEEDChannel, {}, "rot90", "map"),
    (GEEDChannel, {}, "shift", "map"),
    (GEEDChannel, {}, "rot90", "vector"),
    (GEEDLatentL2, {}, "rot90", "vector"),
    (GEEDLatentCosine, {}, "rot90", "vector"),
    (GEEDSoftmax, {"geed_softmax_input": "logits"}, "rot90", "vector"),
]


@pytest.mark.parametrize("cls,options,group_name,kind", SYNC, ids=[f"{c.measure_name}-{g}-{k}" for c, _, g, k in SYNC])
def test_update_with_a_partner_does_not_read_on_the_host(cls, options, group_name, kind):
    b = 7
    group, a_x, a_gx = _maps(group_name, b) if kind == "map" else _vectors(b)
    mask = torch.tensor([i != 2 for i in range(b)])
    metric = cls.for_layer(_ctx(group, kind, a_x, a_gx), **options)
    # by design, once per layer: the correlation measures check a masked group's positions on the first chunk
    metric.update(_ctx(group, kind, a_x, a_gx, mask, _pairs(b)))
    with _NoHostRead():
        for _ in range(2):
            metric.update(_ctx(group, kind, a_x, a_gx, mask, _pairs(b)))
            metric.update(_ctx(group, kind, a_x, a_gx, None, _pairs(b)))
    d = metric.compute_details()
    assert d["stderr"] is not None


@pytest.mark.parametrize("kind", ["map", "vector"])
def test_lee_update_does_not_read_on_the_host(kind):
    lie = torch.randn(7, 3 if kind == "map" else 1, 10, dtype=torch.float64)
    metric = LieDerivativeError.for_layer(LieContext(layer="l", kind=kind, transform=None, lie=lie))
    with _NoHostRead():
        metric.update(
            LieContext(layer="l", kind=kind, transform=None, lie=lie, sample_mask=torch.tensor([True] * 6 + [False]))
        )
        metric.update(LieContext(layer="l", kind=kind, transform=None, lie=lie))
    assert metric.compute_details()["stderr"] is not None

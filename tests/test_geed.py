"""G-EED (Kvinge et al. 2022 §3.1, Eq. 4-6 and softmax G-EED) against brute force and known answers."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import reference_family as ref
from lightning_equivariance import Rotation, Rotation90, Translation, measure
from lightning_equivariance.functional import geed_channel, geed_latent, geed_softmax, orbit_average
from lightning_equivariance.groups import Dihedral
from lightning_equivariance.metrics import GEEDChannel, GEEDLatentCosine, GEEDLatentL2, GEEDSoftmax
from models import SmallCNN

GEED = ["geed_channel", "geed_latent_l2", "geed_latent_cosine", "geed_softmax"]


def _model(seed=0):
    torch.manual_seed(seed)
    return SmallCNN().double()


def _images(n=6, size=12, seed=1):
    torch.manual_seed(seed)
    return torch.rand(n, 1, size, size, dtype=torch.float64)


CASES = [
    (Rotation90(), [("rot", 1), ("rot", 2), ("rot", 3)], 12),
    (Translation(shifts=[(-3, 2), (5, 0), (2, 2)]), [("shift", (-3, 2)), ("shift", (5, 0)), ("shift", (2, 2))], 12),
    (Rotation.cyclic(8), [("angle", 45.0 * k) for k in range(1, 8)], 10),  # C8: interpolated, disk masks
    (
        Dihedral(8),
        [("dihedral", (45.0 * k, False)) for k in range(1, 8)] + [("dihedral", (45.0 * k, True)) for k in range(8)],
        10,
    ),
]


@pytest.mark.parametrize("group,elements,size", CASES, ids=["rot90", "shifts", "c8", "d8"])
def test_matches_brute_force(group, elements, size):
    """Every G-EED variant on every layer it is defined on, value and per element, to 1e-6 relative."""
    model, images = _model(len(elements)), _images(5, size)
    report = measure(model, images, measures=GEED, groups=[group], batch_size=3 * (len(elements) + 1))  # 2 chunks
    acts = ref.activations(model, images, elements)
    rows = {(r.layer, r.measure): r for r in report.results}
    layers = list(dict.fromkeys(r.layer for r in report.results))
    assert len(layers) == 9 and report.errors == {}
    for layer in layers:
        cube = acts[layer]
        value, per_element, per_channel = ref.geed_channel(cube, elements, (size, size))
        r = rows[(layer, "geed_channel")]
        assert r.value == pytest.approx(value, rel=1e-6)
        np.testing.assert_allclose(list(r.per_element.values()), per_element, rtol=1e-6)
        assert list(r.per_element) == [e.name for e in group.elements]
        if per_channel is not None:
            np.testing.assert_allclose(r.per_channel, per_channel, rtol=1e-6, atol=1e-12)
        if cube.ndim == 3:  # vector layers: gap and fc
            for metric in ("l2", "cosine"):
                value, per_element = ref.geed_latent(cube, metric)
                r = rows[(layer, f"geed_latent_{metric}")]
                assert r.value == pytest.approx(value, rel=1e-6)
                np.testing.assert_allclose(list(r.per_element.values()), per_element, rtol=1e-6)
            value, per_element = ref.geed_softmax(cube)
            assert rows[(layer, "geed_softmax")].value == pytest.approx(value, rel=1e-6)
            np.testing.assert_allclose(list(rows[(layer, "geed_softmax")].per_element.values()), per_element, rtol=1e-6)
        else:
            for m in ("geed_latent_l2", "geed_latent_cosine", "geed_softmax"):
                assert (layer, m) not in rows
                assert "vector layers only" in report.notes[(layer, m, group.name)]


def _invariant_model():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 4, 5, padding=2).double()
    with torch.no_grad():
        w = conv.weight
        conv.weight.copy_(w + w.rot90(1, (-2, -1)) + w.rot90(2, (-2, -1)) + w.rot90(3, (-2, -1)))
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3).double())


def test_exactly_invariant_model():
    """GAP after a rotation-symmetric filter bank: latent G-EED 0 (l2), -1/M (cosine), softmax 0, channel -1."""
    report = measure(_invariant_model(), _images(8, 16), measures=GEED, groups=[Rotation90()])
    rows = {(r.layer, r.measure): r for r in report.results}
    for layer in ("2", "4"):
        assert rows[(layer, "geed_latent_l2")].value < 1e-12
        assert rows[(layer, "geed_softmax")].value < 1e-14
        assert rows[(layer, "geed_channel")].value == pytest.approx(-1.0, abs=1e-12)
    assert rows[("0", "geed_channel")].value == pytest.approx(-1.0, abs=1e-12)  # the conv maps are equivariant


def test_larger_means_less_equivariant():
    images = _images(8, 16)
    inv = measure(_invariant_model(), images, measures=["geed_latent_l2"], groups=[Rotation90()]).results
    torch.manual_seed(5)
    plain = nn.Sequential(nn.Conv2d(1, 4, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).double()
    other = measure(plain, images, measures=["geed_latent_l2"], groups=[Rotation90()]).results
    assert other[-1].value > inv[-1].value + 1e-3
    assert not GEEDLatentL2.higher_is_better and not GEEDChannel.higher_is_better


def test_normaliser_merges_over_batches():
    """M over distinct points across all batches: splitting the probe set changes nothing."""
    torch.manual_seed(0)
    z, zg = torch.randn(9, 5, dtype=torch.float64), torch.randn(4, 9, 5, dtype=torch.float64)
    for cls in (GEEDLatentL2, GEEDLatentCosine):
        whole, split = cls(4, 5), cls(4, 5)
        whole.update(z, zg)
        for s in (slice(0, 2), slice(2, 7), slice(7, 9)):
            split.update(z[s], zg[:, s])
        torch.testing.assert_close(split.compute(), whole.compute(), rtol=1e-12, atol=0)
        pairs = [(z[i] - z[j]).norm() if cls is GEEDLatentL2 else torch.cosine_similarity(z[i], z[j], dim=0)
                 for i in range(9) for j in range(9) if i != j]
        assert float(whole.normaliser()) == pytest.approx(float(torch.stack(pairs).mean()), rel=1e-12)
    assert whole.compute_details()["normaliser"] == pytest.approx(float(whole.normaliser()))


def test_l2_buffer_is_bounded_and_reports_exactness():
    torch.manual_seed(0)
    z, zg = torch.randn(10, 3, dtype=torch.float64), torch.randn(2, 10, 3, dtype=torch.float64)
    m = GEEDLatentL2(2, 3, max_points=4)
    m.update(z[:6], zg[:, :6])
    m.update(z[6:], zg[:, 6:])
    d = m.compute_details()
    assert m.points.shape == (4, 3) and d["normaliser_points"] == 4 and d["normaliser_exact"] is False
    from lightning_equivariance.functional.geed import mean_pairwise_distance

    assert d["normaliser"] == pytest.approx(float(mean_pairwise_distance(z[:4])))
    full = GEEDLatentL2(2, 3)
    full.update(z, zg)
    assert full.compute_details()["normaliser_exact"] is True


def test_softmax_reads_probabilities_or_logits_the_same():
    torch.manual_seed(0)
    model = _model()
    with_softmax = nn.Sequential(model, nn.Softmax(dim=-1))
    images = _images(4)
    a = measure(model, images, measures=["geed_softmax"], groups=[Rotation90()], layers=["fc"]).results[0].value
    b = measure(with_softmax, images, measures=["geed_softmax"], groups=[Rotation90()], layers=["1"]).results[0].value
    assert a == pytest.approx(b, rel=1e-9) and a > 0


def test_functional_known_answers():
    torch.manual_seed(0)
    a = torch.rand(3, 4, 2, 6, 6, dtype=torch.float64)
    assert float(geed_channel(a, a)) == pytest.approx(-1.0)
    assert float(geed_channel(-a, a)) == pytest.approx(1.0)  # anti-aligned: maximal deviation
    z = torch.randn(5, 8, dtype=torch.float64)
    assert float(geed_latent(z, z.expand(3, 5, 8))) == 0.0
    assert float(geed_softmax(z, z.expand(3, 5, 8))) == pytest.approx(0.0, abs=1e-15)
    zg = torch.randn(3, 5, 8, dtype=torch.float64)
    assert 0 < float(geed_softmax(z, zg)) <= math.log(4)  # KL to a mixture containing p/(m+1) is <= log(m+1)
    torch.testing.assert_close(orbit_average(z, zg), (z + zg.sum(0)) / 4)


def test_softmax_of_probabilities_with_zeros_and_the_probability_check():
    """KL terms with p = 0 count 0 (0 log 0 = 0), written out; rows in [0, 1] that do not sum to 1 are no
    probabilities; a left-out image's row may hold anything."""
    from lightning_equivariance.functional.geed import geed_softmax_scores, looks_like_probabilities

    p_x = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.0, 0.8]], dtype=torch.float64)
    p_gx = torch.tensor([[[0.0, 1.0, 0.0], [0.2, 0.0, 0.8]]], dtype=torch.float64)  # one element
    q = (p_x + p_gx[0]) / 2
    want = [sum(pg * math.log(pg / qq) for pg, qq in zip(p_gx[0, i].tolist(), q[i].tolist()) if pg > 0)
            for i in range(2)]
    got = geed_softmax_scores(p_x, p_gx, inputs="probs")
    assert torch.isfinite(got).all()
    np.testing.assert_allclose(got[0].numpy(), want, rtol=1e-12, atol=1e-15)
    assert looks_like_probabilities(p_gx)
    assert not looks_like_probabilities(torch.sigmoid(torch.randn(4, 3, dtype=torch.float64)))  # in [0, 1]
    spoiled = torch.cat([p_x, torch.full((1, 3), float("nan"))])
    assert not looks_like_probabilities(spoiled)
    assert looks_like_probabilities(spoiled, sample_mask=torch.tensor([True, True, False]))


def test_zero_maps_are_left_out_and_all_zero_is_a_clear_error():
    a = torch.rand(1, 4, 3, 5, 5, dtype=torch.float64)
    b = a.clone()
    b[:, :, 1] = 0.0
    m = GEEDChannel(1, 3)
    m.update(b, a)
    d = m.compute_details()
    assert d["left_out"] == 4 and d["value"] == pytest.approx(-1.0)
    z = GEEDLatentL2(1, 3)
    z.update(torch.ones(4, 3), torch.ones(1, 4, 3))
    with pytest.raises(ValueError, match="M .* is 0"):
        z.compute()


def test_for_layer_refuses_maps_directly():
    from lightning_equivariance.metrics import LayerContext

    ctx = LayerContext(
        "conv", "map", Rotation90(), Rotation90().elements, torch.rand(2, 3, 4, 4), torch.rand(3, 2, 3, 4, 4), (8, 8)
    )
    with pytest.raises(ValueError, match="vector layers only"):
        GEEDSoftmax.for_layer(ctx)
    assert GEEDChannel.not_applicable(ctx) is None

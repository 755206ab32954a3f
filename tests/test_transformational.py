"""Quiroga's transformational measures (TV SV NV TD SD ND ANOVA same-equivariance Goodfellow) against brute force."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import reference_family as ref
from lightning_equivariance import Flip, Rotation, Rotation90, Translation, measure
from lightning_equivariance.functional import (
    anova_invariance,
    goodfellow_invariance,
    normalized_variance,
    sample_distance,
    sample_variance,
    st_matrix,
    transformation_distance,
    transformation_variance,
)
from lightning_equivariance.functional.transformational import safe_ratio
from lightning_equivariance.groups import Dihedral, Scale, quiroga_rotations, quiroga_scales, quiroga_translations
from lightning_equivariance.metrics import AnovaInvariance, GoodfellowInvariance, NormalizedVariance, SampleDistance
from models import SmallCNN

FAMILY = ["tv", "sv", "nv", "td", "sd", "nd", "anova", "goodfellow", "same_equivariance"]
REL = 1e-6


def _model(seed=0):
    torch.manual_seed(seed)
    return SmallCNN().double()


def _images(n=6, size=12, seed=1):
    torch.manual_seed(seed)
    return torch.rand(n, 1, size, size, dtype=torch.float64)


def _close(actual, expected, rel=REL, abs_=1e-12):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert np.array_equal(np.isinf(actual), np.isinf(expected))
    assert np.array_equal(np.isnan(actual), np.isnan(expected))  # a NaN must not hide behind the finite mask
    fin = np.isfinite(expected)
    np.testing.assert_allclose(actual[fin], expected[fin], rtol=rel, atol=abs_)


def _channel_means(per_unit):
    return per_unit.reshape(per_unit.shape[0], -1).mean(-1)


GROUPS = [
    (Rotation90(), [("rot", 1), ("rot", 2), ("rot", 3)]),
    (Flip(("horizontal", "vertical")), [("hflip", None), ("vflip", None)]),
    (Translation(shifts=[(-3, 2), (5, 0)]), [("shift", (-3, 2)), ("shift", (5, 0))]),
    (Scale([0.7, 1.2]), [("zoom", 0.7), ("zoom", 1.2)]),
]


@pytest.fixture(scope="module")
def brute_cache():
    return {}


def _brute_acts(cache, key, model, images, elements):
    if key not in cache:
        cache[key] = ref.activations(model, images, elements)
    return cache[key]


@pytest.mark.parametrize("group,elements", GROUPS, ids=["rot90", "flips", "shifts", "scale"])
@pytest.mark.parametrize(
    "include_identity,distance", [(True, "euclidean"), (False, "squared")], ids=["identity-euclid", "noid-squared"]
)
def test_matches_brute_force(group, elements, include_identity, distance, brute_cache):
    """Every measure, every layer (maps and vectors), value and per-channel, to 1e-6 relative."""
    _check_against_brute_force(group, elements, include_identity, distance, brute_cache)


def test_unit_blocks_match_brute_force(monkeypatch, brute_cache):
    """The streaming helpers work in blocks of units (of the stacked ``k x b x C x ...`` ST); one channel per
    block gives the same results."""
    import lightning_equivariance.functional.transformational as functional

    monkeypatch.setattr(functional, "_BLOCK_BYTES", 1)
    assert len(functional._st_blocks(torch.zeros(4, 6, 8, 12, 12))) == 8
    _check_against_brute_force(*GROUPS[0], True, "euclidean", brute_cache)
    _check_against_brute_force(*GROUPS[2], False, "squared", brute_cache)


def _check_against_brute_force(group, elements, include_identity, distance, brute_cache):
    model, images = _model(), _images()
    k = len(elements) + 1
    opts = dict(include_identity=include_identity, distance=distance, anova_alpha=0.2, anova_num_tests=1)
    # one chunk holds every image: the within-batch SD pairs are then all pairs (exact)
    report = measure(
        model, images, measures=FAMILY, groups=[group], batch_size=images.shape[0] * k, measure_options=opts
    )
    acts = _brute_acts(brute_cache, group.name, model, images, elements)
    d = ref.euclid if distance == "euclidean" else ref.squared
    df = report.to_dataframe()
    assert len(set(df.layer)) == 9 and report.errors == {}
    anova_values = []
    for layer in dict.fromkeys(df.layer):
        cube_full = acts[layer]
        cube = ref.st(cube_full, include_identity)
        rows = {r.measure: r for r in report.results if r.layer == layer}
        expected = {
            "tv": ref.tv(cube),
            "sv": ref.sv(cube),
            "td": ref.td(cube, d),
            "sd": ref.sd(cube, d),
            "anova": ref.anova_invariant(cube, 0.2, num_tests=1),
            "goodfellow": ref.goodfellow(cube_full).mean(0),
        }
        expected["nv"] = ref.ratio(expected["tv"], expected["sv"])
        expected["nd"] = ref.ratio(expected["td"], expected["sd"])
        vector = cube.ndim == 3
        for name, per_unit in expected.items():
            r = rows[name]
            _close(r.value, per_unit.mean())
            if vector:
                _close(r.per_channel, per_unit)
            else:
                _close(r.per_channel, _channel_means(per_unit))
        anova_values.append(rows["anova"].value)
        # per-element: SV per ST column, Goodfellow per transformation
        names = (["identity"] if include_identity else []) + [e.name for e in group.elements]
        assert list(rows["sv"].per_element) == names
        _close(list(rows["sv"].per_element.values()), ref.sv_columns(cube).mean(-1))
        assert list(rows["goodfellow"].per_element) == [e.name for e in group.elements]
        _close(
            list(rows["goodfellow"].per_element.values()), ref.goodfellow(cube_full).reshape(len(elements), -1).mean(-1)
        )
        assert list(rows["nv"].per_element) == ["all"]
        if vector:
            assert "same_equivariance" not in rows
            assert "vector" in report.notes[(layer, "same_equivariance", group.name)]
        else:
            se, mask = ref.same_equivariance(cube_full, elements, tuple(images.shape[-2:]), include_identity)
            r = rows["same_equivariance"]
            _close(r.value, se.sum())
            _close(r.per_channel, se.sum((-2, -1)) / mask.sum())
    assert 0 < np.mean(anova_values) < 1, "the ANOVA check should see both outcomes"


def test_brute_force_interpolated_rotation_and_dihedral(brute_cache):
    """Non-90-degree rotations (bilinear, disk masks for same-equivariance) and D4 with flips."""
    model, images = _model(3), _images(5, 10)
    cases = [
        (Rotation([45, 90]), [("angle", 45.0), ("angle", 90.0)]),
        (
            Dihedral(4),
            [
                ("dihedral", (90.0, False)),
                ("dihedral", (180.0, False)),
                ("dihedral", (270.0, False)),
                ("dihedral", (0.0, True)),
                ("dihedral", (90.0, True)),
                ("dihedral", (180.0, True)),
                ("dihedral", (270.0, True)),
            ],
        ),
    ]
    for group, elements in cases:
        report = measure(model, images, measures=["nv", "same_equivariance"], groups=[group], batch_size=200)
        acts = ref.activations(model, images, elements)
        for r in report.results:
            cube = acts[r.layer]
            if r.measure == "nv":
                _close(r.value, ref.ratio(ref.tv(cube), ref.sv(cube)).mean())
            else:
                se, _ = ref.same_equivariance(cube, elements, tuple(images.shape[-2:]))
                _close(r.value, se.sum())


def test_reference_rotation_convention_is_rot90():
    """The reference's own bilinear rotation by 90 degrees is np.rot90 (self-check of the reference)."""
    a = np.random.default_rng(0).random((2, 7, 7))
    assert np.allclose(ref.rotate_np(a, 90.0), np.rot90(a, 1, axes=(-2, -1)))
    assert np.allclose(ref.zoom_np(a, 1.0), a)


def test_sd_block_approximation_matches_within_batch_pairs():
    """Quiroga §2.5: with several batches SD averages the pairs inside each batch, rescaled by (n-1)/n."""
    model, images = _model(), _images(6)
    report = measure(model, images, measures=["sd"], groups=[Rotation90()], batch_size=8)  # 2 images per chunk
    acts = ref.activations(model, images, [("rot", 1), ("rot", 2), ("rot", 3)])
    for r in report.results:
        c = acts[r.layer].reshape(6, 4, -1)
        total, pairs = 0.0, 0
        for start in range(0, 6, 2):  # the chunks {0,1}, {2,3}, {4,5}
            block = c[start : start + 2]
            for i in range(2):
                for i2 in range(i + 1, 2):
                    total = total + np.abs(block[i] - block[i2])
                    pairs += 1
        expected = (5 / 6 * total / pairs).mean(0)  # per unit: mean over columns
        _close(r.value, expected.mean())


def test_quiroga_eq7_squared_distance_is_twice_population_variance():
    """Quiroga Eq. 7: squared-Euclidean TD = 2 x population TV, SD = 2 x population SV."""
    model, images = _model(), _images(6)
    k = 4
    report = measure(model, images, measures=["tv", "sv", "td", "sd"], groups=[Rotation90()],
                     batch_size=7, measure_options={"distance": "squared"})  # several chunks: still exact
    df = report.to_dataframe().pivot(index="layer", columns="measure", values="value")
    np.testing.assert_allclose(df["td"], 2 * (k - 1) / k * df["tv"], rtol=1e-10)
    np.testing.assert_allclose(df["sd"], 2 * (6 - 1) / 6 * df["sv"], rtol=1e-10)
    st = torch.randn(5, 9, 3, 4, dtype=torch.float64)
    torch.testing.assert_close(transformation_distance(st, "squared"), 2 * 4 / 5 * transformation_variance(st))
    torch.testing.assert_close(sample_distance(st, "squared"), 2 * 8 / 9 * sample_variance(st))
    # the explicit pairwise double sum of Eq. 6 agrees too
    row = st[:, 0, 0, 0].numpy()
    assert ref.average_distance(row, ref.squared) == pytest.approx(2 * np.var(row))


def _invariant_model():
    """Rotation-symmetric filter bank (each filter = sum of its 4 rotations) -> ReLU -> GAP -> linear."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 4, 5, padding=2, bias=True).double()
    with torch.no_grad():
        w = conv.weight
        conv.weight.copy_(w + w.rot90(1, (-2, -1)) + w.rot90(2, (-2, -1)) + w.rot90(3, (-2, -1)))
    return nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3).double())


def test_exactly_invariant_model_scores_zero():
    """GAP after a rotation-symmetric filter bank: TV = 0 and NV = 0 on the pooled vectors for 90-degree rotations."""
    model = _invariant_model()
    report = measure(model, _images(8, 16), measures=["tv", "nv", "nd", "same_equivariance"], groups=[Rotation90()])
    df = report.to_dataframe().set_index(["layer", "measure"])["value"]
    for layer in ("2", "4"):  # pooled features and logits
        assert df[(layer, "tv")] < 1e-25 and df[(layer, "nv")] < 1e-20 and df[(layer, "nd")] < 1e-10
    # the conv maps are rotation-equivariant: same-equivariance 0, but not invariant per position
    assert df[("0", "same_equivariance")] < 1e-25 and df[("0", "nv")] > 0.01


def test_dead_unit_scores_nv_one():
    """A constant unit has TV = SV = 0 exactly and NV = ND = 1 (Quiroga §2.4.3: 0/0 = 1)."""
    model = _model()
    with torch.no_grad():
        model.conv2.weight[2].zero_()  # channel 2 of conv2 = its bias: constant everywhere
    report = measure(
        model, _images(6), measures=["tv", "sv", "nv", "nd", "anova", "goodfellow"], groups=[Rotation90()], batch_size=8
    )
    rows = {r.measure: r for r in report.results if r.layer == "conv2"}
    assert rows["tv"].per_channel[2] == 0.0 and rows["sv"].per_channel[2] == 0.0
    assert rows["nv"].per_channel[2] == 1.0 and rows["nd"].per_channel[2] == 1.0
    assert rows["anova"].per_channel[2] == 1.0  # constant: invariance not rejected
    assert rows["goodfellow"].per_channel[2] == 0.0  # never above its threshold (= its value)
    assert all(np.isfinite(r.value) for r in rows.values())
    d = NormalizedVariance(2, (1,))
    d.update(torch.full((2, 5, 1), 0.1, dtype=torch.float64))
    assert d.compute_details()["zero_over_zero_units"] == 1 and float(d.compute()) == 1.0


def test_zero_sample_variance_gives_documented_inf():
    """x/0 = +inf (Quiroga §2.4.3): every transformation constant over samples, at different values."""
    st = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).reshape(3, 1, 1).expand(3, 4, 1)
    nv = normalized_variance(st)
    assert torch.isinf(nv).all() and not torch.isnan(nv).any()
    assert safe_ratio(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0.0, 0.0, 4.0])).tolist() == [1.0, math.inf, 0.5]
    metric = NormalizedVariance(3, (1,))
    metric.update(st)
    d = metric.compute_details()
    assert d["value"] == math.inf and d["inf_units"] == 1


def test_states_merge_over_batches():
    """Column moments, min/max and row sums: two half batches give the one-batch result (exactly)."""
    torch.manual_seed(0)
    st = torch.randn(4, 10, 3, 5, 5, dtype=torch.float64)
    for cls, kw in (
        (NormalizedVariance, {}),
        (AnovaInvariance, {"alpha": 0.3, "num_tests": 1}),
        (GoodfellowInvariance, {}),
        (SampleDistance, {"distance": "squared"}),
    ):
        whole, split = cls(4, (3, 5, 5), **kw), cls(4, (3, 5, 5), **kw)
        whole.update(st)
        split.update(st[:, :3])
        split.update(st[:, 3:])
        torch.testing.assert_close(split.compute(), whole.compute(), rtol=1e-12, atol=1e-14)


def test_reset_restores_states_without_keeping_full_size_defaults():
    """Per-unit states keep a 0-d default (not a second full-size copy); reset expands it back."""
    torch.manual_seed(0)
    st = torch.randn(4, 10, 3, 5, 5, dtype=torch.float64)
    fresh, reused = NormalizedVariance(4, (3, 5, 5)), NormalizedVariance(4, (3, 5, 5))
    for name in ("tv_sum", "s1", "s2", "cmin", "cmax"):
        assert reused._defaults[name].numel() == 1
        assert tuple(getattr(reused, name).shape) == ((3, 5, 5) if name == "tv_sum" else (4, 3, 5, 5))
    reused.update(st[:, :4] * 3 + 1)
    reused.reset()
    assert torch.equal(reused.cmin, torch.full((4, 3, 5, 5), math.inf, dtype=torch.float64))
    assert torch.equal(reused.s2, torch.zeros(4, 3, 5, 5, dtype=torch.float64))
    fresh.update(st)
    reused.update(st)
    assert torch.equal(reused.compute(), fresh.compute())


def test_functional_anova_matches_scipy():
    from scipy.stats import f_oneway

    torch.manual_seed(0)
    st = torch.randn(3, 20, 200, dtype=torch.float64)
    st[1, :, :10] += 2.0  # ten clearly variant units
    p = np.array([f_oneway(*[st[j, :, u].numpy() for j in range(3)]).pvalue for u in range(200)])
    # units the Bonferroni correction keeps (p between alpha / U and alpha): without them the default
    # num_tests (the number of units) would go untested
    assert ((p >= 0.05 / 200) & (p < 0.05)).sum() >= 5
    got = anova_invariance(st, alpha=0.05).numpy()
    np.testing.assert_array_equal(got, (p >= 0.05 / 200).astype(float))
    assert got[:10].sum() == 0 and got[10:].mean() > 0.9
    # a constant unit (SSB = SSW = 0) is invariant, even at an alpha whose critical F is below 1
    constant = torch.full((3, 20, 1), 0.5, dtype=torch.float64)
    assert anova_invariance(constant, alpha=0.99).tolist() == [1.0]


def test_goodfellow_invariant_unit_scores_one():
    torch.manual_seed(0)
    x = torch.randn(30, 7, dtype=torch.float64)
    st = x.expand(4, 30, 7)
    torch.testing.assert_close(goodfellow_invariance(st), torch.ones(3, 7, dtype=torch.float64))
    shifted = torch.stack([x, x + 20.0])  # shifted far above the threshold: always fires
    assert float(goodfellow_invariance(shifted).min()) > 99.99  # L = 1, G = 0.01


def test_callable_distance_equals_named():
    torch.manual_seed(0)
    st = torch.randn(4, 7, 3, dtype=torch.float64)
    def absdiff(x, y):
        return (x - y).abs()
    torch.testing.assert_close(transformation_distance(st, absdiff), transformation_distance(st, "euclidean"))
    torch.testing.assert_close(sample_distance(st, absdiff), sample_distance(st, "euclidean"))
    torch.testing.assert_close(sample_distance(st, lambda x, y: (x - y) ** 2), sample_distance(st, "squared"))


def test_st_matrix_layout():
    a_x, a_gx = torch.randn(4, 3), torch.randn(2, 4, 3)
    st = st_matrix(a_x, a_gx)
    assert st.shape == (3, 4, 3) and st.dtype == torch.float64 and torch.equal(st[0], a_x.double())
    assert st_matrix(a_x, a_gx, include_identity=False).shape == (2, 4, 3)
    with pytest.raises(ValueError, match="at least 2 transformations"):
        transformation_variance(st[:1])


def test_vector_layers_get_a_note_not_an_error():
    report = measure(_model(), _images(3), measures=["same_equivariance", "tv"], groups=[Rotation90()])
    assert report.errors == {}
    assert ("fc", "same_equivariance", "rotation90") in report.notes
    measured = {(r.layer, r.measure) for r in report.results}
    assert ("fc", "tv") in measured and ("conv1", "same_equivariance") in measured


def test_quiroga_transformation_sets():
    assert len(quiroga_rotations()) + 1 == 16 and len(quiroga_scales()) + 1 == 11 and len(quiroga_translations()) == 24
    shifts = {e.params["shift"] for e in quiroga_translations().elements}
    assert (4, -4) in shifts and (0, 2) in shifts and (-1, 0) in shifts and len(shifts) == 24
    assert [e.params["scale"] for e in quiroga_scales().elements] == [
        0.5,
        0.6,
        0.7,
        0.8,
        0.9,
        1.05,
        1.1,
        1.15,
        1.2,
        1.25,
    ]
    assert quiroga_rotations().elements[0].params["angle"] == 22.5
    d8 = Dihedral(8)
    assert len(d8) == 15 and d8.name == "dihedral8"


def test_scale_group_matches_reference_and_inverts():
    x = torch.rand(2, 3, 11, 11, dtype=torch.float64)
    s = Scale([0.6, 1.25])
    for e, f in zip(s.elements, (0.6, 1.25)):
        out = s.act_input(x, e)
        np.testing.assert_allclose(out.numpy(), ref.zoom_np(x.numpy(), f), atol=1e-12)
        mask = s.feature_mask(e, (11, 11), (11, 11))
        expected = ref.zoom_mask_np(11, 11, f) if f < 1 else np.ones((11, 11), bool)
        assert np.array_equal(np.ones((11, 11), bool) if mask is None else mask.numpy(), expected)
    # zoom out then back in restores the content region exactly up to interpolation of the shrunken map
    e = s.elements[1]  # 1.25: t^{-1} shrinks; round trip keeps the centre
    back = s.act_feature_inverse(s.act_feature(x, e, (11, 11)), e, (11, 11))
    assert back.shape == x.shape
    for g in (
        Rotation90(),
        Flip(("horizontal", "vertical")),
        Translation(shifts=[(2, -1)], circular=True),
        Dihedral(4),
    ):
        for e in g.elements:
            if g.feature_mask(e, (11, 11), (11, 11)) is None:
                torch.testing.assert_close(g.act_feature_inverse(g.act_feature(x, e, (11, 11)), e, (11, 11)), x)

"""The performance work of issue 16 is exact: each fast path equals the plain computation it replaces."""
import pytest
import torch

from lightning_equivariance.functional import correlation as corr
from lightning_equivariance.functional import scratch
from lightning_equivariance.functional.correlation import correlation_scores, permuted_scores
from lightning_equivariance.metrics.base import all_finite


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_all_finite_is_isfinite_all(dtype):
    torch.manual_seed(0)
    t = torch.randn(6, 5, 7).to(dtype)
    t[0, 1, 2] = float("nan")
    t[1, 0, 0] = float("inf")
    t[2, 4, 6] = -float("inf")
    t[3, 2, :] = float("nan")
    t[4, 3, 1], t[4, 3, 2] = float("inf"), -float("inf")
    torch.testing.assert_close(all_finite(t), torch.isfinite(t).all(-1), rtol=0, atol=0)
    empty = torch.zeros(3, 0, dtype=dtype)
    assert all_finite(empty).tolist() == [True] * 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_images_of_stacked_views_is_isfinite_all(dtype):
    """passes._finite_images (each image's max and min over every view and value) against torch.isfinite:
    an image with only +inf, only -inf, a NaN, each in one view, or all finite - in every layout it reads."""
    from lightning_equivariance.passes import _finite_images

    torch.manual_seed(0)
    t = torch.randn(3, 6, 4, 5, 5).to(dtype)  # views x b x C x h x w
    t[1, 0, 2, 3, 3] = float("inf")  # image 0: +inf only (its min stays finite)
    t[2, 1, 0, 0, 1] = -float("inf")  # image 1: -inf only (its max stays finite)
    t[0, 2, 3, 4, 4] = float("nan")  # image 2: NaN
    t[1, 3, 1, 1, 1], t[2, 3, 1, 1, 2] = float("inf"), -float("inf")  # image 3: both
    want = torch.isfinite(t.flatten(2)).all(-1).all(0)
    assert want.tolist() == [False, False, False, False, True, True]
    for x in (t, t.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3), t.flatten(3).transpose(-1, -2)):
        torch.testing.assert_close(_finite_images(x), want, rtol=0, atol=0)


def test_all_finite_of_integers():
    assert all_finite(torch.arange(6).reshape(2, 3)).tolist() == [True, True]


def _dense(u, v, rows=None):
    """The C x C matrices in one product, as before the blocks."""
    c, p = u.shape[-2:]
    uu, vv = u.reshape(-1, c, p), v.reshape(-1, c, p)
    full = uu @ vv.transpose(-1, -2)
    out = [full.diagonal(dim1=-2, dim2=-1), full.amax(-1)]
    if rows is not None:
        chance = uu @ vv[rows].transpose(-1, -2)
        out += [chance.diagonal(dim1=-2, dim2=-1), chance.amax(-1)]
    return [t.reshape(u.shape[:-1]) for t in out]


@pytest.mark.parametrize("c,p", [(8, 3), (5, 40), (16, 16)])  # P < C (one C x 2C product), P > C, P = C
@pytest.mark.parametrize("block_bytes", [1, 600, 2**22])  # one row per block, a few rows, all at once
@pytest.mark.parametrize("chance", [False, True])
def test_blocks_equal_one_dense_product(monkeypatch, c, p, block_bytes, chance):
    monkeypatch.setattr(corr, "_SIMILARITY_BLOCK_BYTES", block_bytes)
    torch.manual_seed(1)
    u, v = torch.randn(3, 7, c, p, dtype=torch.float64), torch.randn(3, 7, c, p, dtype=torch.float64)
    rows = torch.randperm(21) if chance else None
    got = corr._diagonal_and_max(u, v, rows)
    for g, w in zip(got, _dense(u, v, rows)):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    assert bool((got[1] >= got[0]).all())  # the max comes from the same block as the diagonal
    if chance:
        assert bool((got[3] >= got[2]).all())


def test_block_buffer_is_reused_and_never_shared_between_shapes():
    u = torch.randn(4, 6, 3)
    a = scratch.scratch_buffer(10, u)
    b = scratch.scratch_buffer(8, u)
    assert a.data_ptr() == b.data_ptr()  # one buffer per thread and dtype, no page faults per block
    big = scratch.scratch_buffer(scratch.KEPT_OUTSIDE, u)  # too large to keep outside a measurement: fresh
    assert big.data_ptr() != a.data_ptr()
    with scratch.reusing_scratch():  # within a measurement (the engine's scope) any size is kept ...
        big = scratch.scratch_buffer(scratch.KEPT_OUTSIDE, u)
        assert scratch.scratch_buffer(8, u).data_ptr() == big.data_ptr()
    # ... and released when it ends
    assert scratch.scratch_buffer(8, u).data_ptr() != big.data_ptr()


@pytest.mark.parametrize("similarity", ["pearson", "cosine"])
@pytest.mark.parametrize("partner", [None, torch.tensor([1, 0, 3, 2, -1])])
def test_permuted_scores_with_a_channel_permutation(similarity, partner):
    """Positions and channels moved (a steerable layer's regular fields) = scores of the moved maps."""
    torch.manual_seed(0)
    b, c, s = 5, 8, 6
    perms = [torch.randperm(c) for _ in range(3)]
    a_x = torch.randn(b, c, s, s, dtype=torch.float64)
    a_x[1, 2] = 3.0  # a dead channel of a(x): its place moves with the permutation
    a_x[0, 5] = 0.0

    def act(maps, g):
        return maps.rot90(g + 1, (-2, -1)).index_select(-3, perms[g])

    ta_x = torch.stack([act(a_x, g) for g in range(3)])
    a_gx = torch.randn(3, b, c, s, s, dtype=torch.float64) + 0.5 * ta_x
    a_gx[2, 3, 4] = -1.0  # and one of a(gx)
    expected = correlation_scores(a_gx, ta_x, similarity=similarity, partner=partner)
    got = permuted_scores(a_gx, a_x, act, similarity=similarity, partner=partner,
                          permute_channels=lambda maps, g: maps.index_select(-3, perms[g]))
    assert set(got) == set(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-12, atol=1e-12)


def test_transformational_functionals_take_tensors_that_require_grad():
    """The out= and in-place fast paths of nv's helpers are taken only where no gradient is tracked
    (out= refuses tensors that require grad), so the functionals still take such tensors."""
    from lightning_equivariance.functional.transformational import normalized_variance, transformation_variance

    a = torch.randn(3, 4, 5, 6, 6, dtype=torch.float64, requires_grad=True)
    for f in (transformation_variance, normalized_variance):
        torch.testing.assert_close(f(a).detach(), f(a.detach()), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_moved_maps_equal_the_stacked_moves(dtype):
    """One gather per element (indices moved with the action) = moving the maps and stacking them."""
    from lightning_equivariance.functional.moves import channels_last_entries, moved_maps

    torch.manual_seed(0)
    perm = torch.randperm(5)
    moves = [
        lambda a: a.rot90(1, (-2, -1)),
        lambda a: a.rot90(2, (-2, -1)).index_select(-3, perm),
        lambda a: a.flip(-1),
        lambda a: a.roll((2, -3), (-2, -1)).index_select(-3, perm),
    ]
    square = torch.randn(3, 5, 6, 6).to(dtype)
    last = torch.randn(3, 6, 6, 5).to(dtype).permute(0, 3, 1, 2)  # channels-last maps: gathered in memory order
    tokens = torch.randn(3, 37, 5).to(dtype)[:, 1:].reshape(3, 6, 6, 5).permute(0, 3, 1, 2)  # a token grid
    # channels-last maps cut from a wider grid: entries channels-last, but a row is not w x C entries apart
    cut = torch.randn(3, 6, 8, 5).to(dtype)[:, :, 1:7].permute(0, 3, 1, 2)
    assert channels_last_entries(last) and channels_last_entries(tokens) and not channels_last_entries(square)
    assert not channels_last_entries(cut)
    for x in (square, square.transpose(-2, -1), last, tokens, cut):  # also non-contiguous inputs
        want = torch.stack([mv(x) for mv in moves])
        torch.testing.assert_close(moved_maps(x, lambda a, g: moves[g](a), len(moves)), want, rtol=0, atol=0)
    wide = torch.randn(2, 5, 4, 7).to(dtype)  # a quarter turn of a non-square map changes its shape
    torch.testing.assert_close(moved_maps(wide, lambda a, g: moves[0](a), 1)[0], moves[0](wide), rtol=0, atol=0)


def test_transformed_x_of_a_permuting_group_equals_the_generic_path():
    """LayerContext.transformed_x through moved_maps = the stacked act_feature of every element."""
    from lightning_equivariance import Flip, Rotation90, Translation
    from lightning_equivariance.metrics import LayerContext

    torch.manual_seed(0)
    a_x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    perm = torch.tensor([2, 0, 1])

    def action(a, element):
        return a if element.is_identity else a.index_select(-3, perm)

    action.permutes_channels = lambda element: True
    for group, act in [(Rotation90(), None), (Flip(("horizontal", "vertical")), None),
                       (Translation(max_shift=2, circular=True), None), (Rotation90(), action)]:
        m = len(group.elements)
        ctx = LayerContext(layer="x", kind="map", group=group, elements=group.elements, a_x=a_x,
                           a_gx=torch.zeros(m, *a_x.shape, dtype=a_x.dtype), input_size=(32, 32), channel_action=act)
        assert ctx.moves_entries()
        want = torch.stack([group.act_feature(a_x, g, (32, 32), act) for g in group.elements])
        torch.testing.assert_close(ctx.transformed_x(), want, rtol=0, atol=0)
    masked = Translation(max_shift=2)  # zero-filled shifts with a mask: not a permutation
    ctx = LayerContext(layer="x", kind="map", group=masked, elements=masked.elements, a_x=a_x,
                       a_gx=torch.zeros(len(masked.elements), *a_x.shape, dtype=a_x.dtype), input_size=(32, 32))
    assert not ctx.moves_entries()

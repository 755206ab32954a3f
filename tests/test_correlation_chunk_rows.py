"""Issue 23: the correlation measures' fast chunk bookkeeping equals the general one, and the one-pass
centring of the engine's stacked output (contiguous or channels-last) equals centring each part alone."""
import pytest
import torch

from lightning_equivariance.functional.correlation import _joint_view, _permuted_arrays
from lightning_equivariance.functional.moments import (
    chunk_pairs,
    correlation_chunk_rows,
    moments_increment,
    stacked_chunk_sums,
)


def _case(h, seed):
    g = torch.Generator().manual_seed(seed)
    m, b, c = 3, 8, 5
    values = torch.rand(2, m, b, h, c, generator=g, dtype=torch.float64)
    valid = torch.rand(m, b, h, c, generator=g) > 0.3
    valid[:, 2] = False  # an image with no live pair at all
    values[:, :, 5] = float("nan")  # a left-out image's scores may be anything
    mask = torch.ones(b, dtype=torch.bool)
    mask[5] = False
    partner = torch.tensor([1, 0, 3, 2, 5, 4, 7, -1])
    pairs = chunk_pairs(partner, b) if h == 2 else None
    if h == 2:
        valid[:, :, 1] &= pairs.has.view(1, b, 1)
    return values, valid, mask, pairs


@pytest.mark.parametrize("h", [1, 2])
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("masked", [False, True])
def test_chunk_rows_equal_stacked_chunk_sums(h, k, masked):
    values, valid, mask, pairs = _case(h, seed=h + 2 * k)
    values = values[:k]
    if not masked:
        values = torch.nan_to_num(values)
        mask = None
    sums, images, moments = stacked_chunk_sums(values, valid, mask, pairs)
    rows = correlation_chunk_rows(values, valid, mask, pairs)
    torch.testing.assert_close(torch.stack(rows.sums), sums[:, :, :h], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rows.images, images[:h], rtol=0, atol=0)
    for j in range(k):
        chunk = torch.stack([rows.n, rows.mean[j], rows.m2[j]], -1)
        torch.testing.assert_close(chunk, moments[j, :h], rtol=1e-12, atol=1e-12)


def test_chunk_moments_merge_as_moments_increment():
    from lightning_equivariance.functional.moments import layer_rows, moments_increments, stacked_image_moments

    values, valid, mask, pairs = _case(2, seed=7)
    rows = correlation_chunk_rows(values, valid, mask, pairs)
    state = torch.tensor([[5.0, 0.4, 0.3], [0.0, 0.0, 0.0]], dtype=torch.float64)
    expected = state + moments_increment(state, torch.stack([rows.n, rows.mean[1], rows.m2[1]], -1))
    moments = stacked_image_moments([layer_rows(values, valid, mask, pairs)])
    states = torch.stack([torch.zeros_like(state), state]).view(1, 2, 2, 3)  # measure 1's state; 0's unused
    increment = moments_increments(states, moments, 2)[0, 1]
    torch.testing.assert_close(state + increment, expected, rtol=1e-14, atol=1e-14)


def _assert_one_pass_equals_each_part(out, a_x, a_gx, similarity):
    """The scores from the joint view of the stacked output ``out`` equal those of each part copied alone, and
    ``out`` is never written."""
    before = out.clone()
    rot = lambda t, g: torch.rot90(t, g + 1, (-2, -1))  # noqa: E731 - a one-line action
    partner = torch.tensor([1, 0, 3, 2, -1, 4])
    got = _permuted_arrays(a_gx, a_x, rot, similarity, partner)
    ref = _permuted_arrays(a_gx.contiguous().clone(), a_x.contiguous().clone(), rot, similarity, partner)
    assert torch.equal(got[1], ref[1])
    torch.testing.assert_close(got[0], ref[0], rtol=1e-6, atol=1e-6)
    assert torch.equal(out, before)  # the activations are never written


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("similarity", ["pearson", "cosine"])
def test_stacked_output_centred_in_one_pass_equals_each_part(channels_last, similarity):
    torch.manual_seed(0)
    m, b, c, h, w = 3, 6, 5, 4, 4
    if channels_last:
        out = torch.randn((1 + m) * b, h, w, c).permute(0, 3, 1, 2)
    else:
        out = torch.randn((1 + m) * b, c, h, w)
    stacked = out.reshape(1 + m, b, c, h, w)
    a_x, a_gx = stacked[0], stacked[1:]
    assert _joint_view(a_x, a_gx, (1 + m, b, c, h * w)) is not None
    _assert_one_pass_equals_each_part(out, a_x, a_gx, similarity)


@pytest.mark.parametrize("similarity", ["pearson", "cosine"])
def test_token_grid_centred_in_one_pass_equals_each_part(similarity):
    """A token layer's grid (B x (1 + h w) x C, the class token skipped): the images' stride is more than one
    map, and the stacked elements still form one view."""
    torch.manual_seed(2)
    m, b, c, h, w = 3, 6, 5, 4, 4
    out = torch.randn((1 + m) * b, 1 + h * w, c)
    grid = out[:, 1:].unflatten(1, (h, w)).permute(0, 3, 1, 2)  # (1 + m) b x C x h x w, as the token layout reads it
    stacked = grid.reshape(1 + m, b, c, h, w)
    a_x, a_gx = stacked[0], stacked[1:]
    assert _joint_view(a_x, a_gx, (1 + m, b, c, h * w)) is not None
    assert _joint_view(a_x, a_gx.clone(), (1 + m, b, c, h * w)) is None  # elsewhere in memory: no joint view
    _assert_one_pass_equals_each_part(out, a_x, a_gx, similarity)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "vectors"])
@pytest.mark.parametrize("bad", [None, float("nan"), float("inf"), -float("inf")])
def test_finite_images_equal_all_finite(layout, bad):
    from lightning_equivariance.metrics.base import all_finite
    from lightning_equivariance.passes import _finite_images

    torch.manual_seed(1)
    if layout == "channels_last":
        out = torch.randn(4 * 6, 5, 5, 8)
        if bad is not None:
            out.view(-1)[123] = bad
        stacked = out.permute(0, 3, 1, 2).reshape(4, 6, 8, 5, 5)
    else:
        stacked = torch.randn(4, 6, 8, 5, 5) if layout == "contiguous" else torch.randn(4, 6, 7)
        if bad is not None:
            stacked.view(-1)[123] = bad
    assert torch.equal(_finite_images(stacked), all_finite(stacked.flatten(2)).all(0))

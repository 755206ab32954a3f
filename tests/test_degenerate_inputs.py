"""Degenerate inputs say so instead of reading as perfect (issue 24).

* ``lee`` on probe images or layer maps too small for its central-difference stencil (fewer than
  3 pixels along an axis the transform moves) is refused with the reason: 2x2 probe images gave
  exactly 0.0 for every layer before;
* a channel action applied as a float matrix (a representation that is not a permutation, e.g.
  e2cnn's irreps with ``cos(pi / 2) = 6e-17``) leaks round-off into a channel that is exactly 0;
  deadness is decided on the map's scale, which the leak cannot cross, so the dead channel stays
  dead: the scores equal those under the exact (rounded) matrix.
"""
import math
import warnings

import numpy as np
import pytest
import torch

from lightning_equivariance import Rotation90, measure
from lightning_equivariance.functional.correlation import correlation_scores
from lightning_equivariance.functional.lie import stencil_too_small
from lightning_equivariance.metrics import CorrelationEquivariance, CorrelationInvariance, GEEDChannel, LayerContext
from models import SmallCNN

S = 6


# ------------------------------------------------------------------ lee: the stencil
def test_lee_on_2x2_probe_images_refuses_every_layer_with_the_reason():
    torch.manual_seed(0)
    model = SmallCNN()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        report = measure(model, torch.rand(4, 1, 2, 2), measures=("lee",), groups=("rotation", "translation_x"))
    spatial = [r for r in report.results if r.group in ("rotation", "translation_x")]
    assert spatial == []  # nothing reads as a (blind) 0.0
    layers = {k[0] for k in report.errors}
    assert layers == {"conv1", "bn1", "relu", "pool", "conv2", "relu:1", "conv3", "gap", "fc"}
    for (_, measure_name, group), reason in report.errors.items():
        assert measure_name == "lee" and group in ("rotation", "translation_x")
        assert "probe image (2x2) is too small" in reason and "stencil" in reason, reason
    rows = {s.group: s for s in report.series()}
    assert all(rows[g].missing[layer][0] == "refused" for g in rows for layer in rows[g].layers)


def test_lee_refuses_only_the_layers_whose_maps_are_too_small():
    torch.manual_seed(1)
    model = SmallCNN()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        report = measure(model, torch.rand(4, 1, 8, 8), measures=("lee",), groups=("rotation",))
    # 8 -> pool 4 -> conv3 (stride 2) 2x2: refused; the 1x1 pool after it is a vector, measured
    assert set(report.errors) == {("conv3", "lee", "rotation")}
    assert "layer's map (2x2) is too small" in report.errors[("conv3", "lee", "rotation")]
    measured = {r.layer: r.value for r in report.results}
    assert {"conv1", "pool", "conv2", "gap", "fc"} <= set(measured) and all(v > 0 for v in measured.values())


def test_the_stencil_rule_names_the_axes_a_transform_moves():
    assert stencil_too_small((2, 9), "translation_x") is None  # x moves, 9 pixels wide: fine
    assert "height (2 pixels)" in stencil_too_small((2, 9), "translation_y")
    assert "width (1 pixel)" in stencil_too_small((5, 1), "rotation")
    assert stencil_too_small((1, 1), "saturation") is None  # an intensity transform has no stencil
    assert stencil_too_small((3, 3), "rotation") is None


# ------------------------------------------------------------------ float channel actions
def _rotation_pairs_action(exact: bool, fields: int):
    """rho(g) of ``fields`` copies of C4's frequency-1 irrep (2 x 2 rotation blocks), as a float matrix;
    ``exact``: the same matrix rounded to its exact entries (0, 1, -1)."""
    def rho(k: int) -> np.ndarray:
        c, s = math.cos(k * math.pi / 2), math.sin(k * math.pi / 2)
        block = np.array([[c, -s], [s, c]])
        return np.kron(np.eye(fields), np.round(block) if exact else block)

    def action(a: torch.Tensor, element) -> torch.Tensor:
        if element.is_identity:
            return a
        k = {"90": 1, "180": 2, "270": 3}[element.name]
        return torch.einsum("cd,...dhw->...chw", torch.as_tensor(rho(k), dtype=a.dtype), a)

    return action, rho


def _leaky_maps(dtype=torch.float64):
    """Maps whose first channel of each rotation pair is exactly 0: under the exact rho(180) the
    action keeps it 0, under the float one it receives ~1e-16 of its partner channel."""
    gen = torch.Generator().manual_seed(2)
    group = Rotation90()
    a_x = torch.rand(6, 4, S, S, generator=gen, dtype=dtype)
    a_x[:, 0::2] = 0.0
    exact, _ = _rotation_pairs_action(True, 2)
    moved = torch.stack([exact(group.act_feature(a_x, g, (S, S)), g) for g in group.elements])
    a_gx = moved + 0.5 * torch.rand(moved.shape, generator=gen, dtype=dtype)
    return group, a_x, a_gx


def _ctx(group, a_x, a_gx, action):
    return LayerContext(layer="layer", kind="map", group=group, elements=group.elements, a_x=a_x, a_gx=a_gx,
                        input_size=(S, S), channel_action=action, partner=torch.tensor([1, 0, 3, 2, 5, 4]))


@pytest.mark.parametrize("cls", [CorrelationInvariance, CorrelationEquivariance, GEEDChannel])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_float_channel_action_keeps_dead_channels_dead(cls, dtype):
    group, a_x, a_gx = _leaky_maps(dtype)
    leaky, rho = _rotation_pairs_action(False, 2)
    assert 0 < abs(rho(2)[0, 1]) < 1e-15  # the round-off this is about
    exact, _ = _rotation_pairs_action(True, 2)
    got = cls.for_layer(_ctx(group, a_x, a_gx, leaky))
    got.update(_ctx(group, a_x, a_gx, leaky))
    want = cls.for_layer(_ctx(group, a_x, a_gx, exact))
    want.update(_ctx(group, a_x, a_gx, exact))
    g, w = got.compute_details(), want.compute_details()
    assert g["left_out"] == w["left_out"] > 0  # the dead channels stay dead (and are counted)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for key in ("value", "chance", "margin", "stderr"):
        assert g[key] == pytest.approx(w[key], abs=tol), key


def test_without_the_map_scale_rule_the_leak_turns_a_dead_channel_live():
    """The failure the rule prevents (so the test above can fail): judged on its own scale, a
    channel holding only the leak is 'live' and scores a correlation with noise."""
    group, a_x, a_gx = _leaky_maps()
    leaky, _ = _rotation_pairs_action(False, 2)
    ta_x = torch.stack([group.act_feature(a_x, g, (S, S), leaky) for g in group.elements])
    own_scale = correlation_scores(a_gx, ta_x)
    map_scale = correlation_scores(a_gx, ta_x, mixed_channels=True)
    assert int(own_scale["valid"].sum()) > int(map_scale["valid"].sum())


def test_e2cnn_irrep_action_keeps_dead_channels_dead():
    pytest.importorskip("e2cnn")
    from e2cnn import gspaces
    from e2cnn import nn as enn

    from lightning_equivariance.steerable import e2cnn_channel_action

    gs = gspaces.Rot2dOnR2(4)
    field_type = enn.FieldType(gs, [gs.irrep(1)] * 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        action = e2cnn_channel_action(field_type)
        group, a_x, a_gx = _leaky_maps()
        leak = action(a_x, group.elements[1])[:, 0::2]  # rho(180) on the pairs: the zero channels get only round-off
        exact, _ = _rotation_pairs_action(True, 2)
        results = {}
        for name, act in (("e2cnn", action), ("exact", exact)):
            ctx = _ctx(group, a_x, a_gx, act)
            metric = CorrelationEquivariance.for_layer(ctx)
            metric.update(ctx)
            results[name] = metric.compute_details()
    assert 0 < leak.abs().max() < 1e-12  # e2cnn's rho(g) applied as a float matrix: round-off leaks in
    assert results["e2cnn"]["left_out"] == results["exact"]["left_out"] > 0
    assert results["e2cnn"]["value"] == pytest.approx(results["exact"]["value"], abs=1e-12)

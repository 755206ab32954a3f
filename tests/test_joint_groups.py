"""Several groups of one layer scored together (``metrics/shared.py``'s ``JointWork``, issue 23).

Groups whose action only moves a map's entries (rot90, flips, shifts) are scored in one pass over all
their elements per layer. Each group's numbers must be exactly what the equations give (brute force)
and what the group measured alone gives: values, chance, stderr, margins, left-out and non-finite
counts, per element and per channel.
"""
import dataclasses
import math

import numpy as np
import pytest
import torch

from lightning_equivariance import Flip, Rotation, Rotation90, Translation, measure
from lightning_equivariance.metrics import shared as shared_module
from models import SmallCNN
from reference import correlation_brute

ROT = [("rot", 1), ("rot", 2), ("rot", 3)]
GROUPS = [
    (Rotation90(), ROT),
    (Translation(shifts=[(-3, 2), (5, 0)]), [("shift", (-3, 2)), ("shift", (5, 0))]),
    (Flip(("horizontal",)), [("hflip", None)]),
]


def _model():
    torch.manual_seed(0)
    return SmallCNN().double()


def _spy(monkeypatch):
    """The element counts of every joint scoring (``_moved_arrays`` as the joint work calls it)."""
    seen = []
    original = shared_module._moved_arrays

    def spy(a_gx, *args, **kwargs):
        seen.append(a_gx.shape[0])
        return original(a_gx, *args, **kwargs)

    monkeypatch.setattr(shared_module, "_moved_arrays", spy)
    return seen


@pytest.mark.parametrize("similarity", ["pearson", "cosine"])
def test_groups_scored_together_match_brute_force(similarity, monkeypatch):
    seen = _spy(monkeypatch)
    model = _model()
    torch.manual_seed(1)
    images = torch.rand(5, 1, 12, 12, dtype=torch.float64)
    groups = [g for g, _ in GROUPS]
    report = measure(model, images, groups=groups, batch_size=28, similarity=similarity)  # 4 images a chunk
    assert seen and set(seen) == {6}  # every joint scoring took the three groups' six elements
    df = report.to_dataframe()
    for group, elements in GROUPS:
        expected = correlation_brute(model, images, elements, centre=similarity == "pearson")
        got = df[df.group == group.name]
        assert len(set(got.layer)) >= 8
        for layer, (inv, eq) in expected.items():
            rows = got[got.layer == layer].set_index("measure")["value"]
            if rows.empty:
                continue
            assert rows["invariance"] == pytest.approx(inv, abs=1e-9), (group.name, layer)
            assert rows["equivariance"] == pytest.approx(eq, abs=1e-9), (group.name, layer)


def _results(report):
    return {(r.layer, r.measure, r.group): r for r in report.results}


def _assert_same_result(got, want, where):
    for field in dataclasses.fields(want):
        g, w = getattr(got, field.name), getattr(want, field.name)
        if isinstance(w, float):
            assert g == pytest.approx(w, rel=1e-9, abs=1e-12), (where, field.name)
        elif isinstance(w, np.ndarray):
            np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-12, err_msg=f"{where} {field.name}")
        elif isinstance(w, dict):
            assert set(g) == set(w), (where, field.name)
            for k in w:
                assert g[k] == pytest.approx(w[k], rel=1e-9, abs=1e-12), (where, field.name, k)
        else:
            assert g == w, (where, field.name)


def test_groups_scored_together_equal_each_group_measured_alone(monkeypatch):
    """With the chance level, margins, a BatchNorm reusing its convolution's scores and an image left out
    for a NaN (the layers' sample mask): every field of every result agrees."""
    seen = _spy(monkeypatch)
    model = _model()
    torch.manual_seed(2)
    images = torch.rand(10, 1, 12, 12, dtype=torch.float64)
    images[5, 0, 3, 3] = float("nan")  # one image left out of the whole measurement
    groups = [g for g, _ in GROUPS[:2]]
    with pytest.warns(RuntimeWarning, match="position"):
        together = _results(measure(model, images, groups=groups, batch_size=24))
    assert seen and set(seen) == {5}
    seen.clear()
    alone = {}
    for group in groups:
        with pytest.warns(RuntimeWarning, match="position"):
            alone.update(_results(measure(model, images, groups=[group], batch_size=24)))
    assert not seen  # one group alone keeps its own path
    assert set(together) == set(alone) and len(alone) >= 30
    for key, want in alone.items():
        _assert_same_result(together[key], want, key)
    assert any(r.margin is not None and not math.isnan(r.margin) for r in together.values())


def test_groups_that_do_not_only_move_entries_are_scored_alone(monkeypatch):
    """A rotation by 45 degrees interpolates: it is scored on its own, and the two groups around it in the
    pass's order are not one run of elements, so they too score alone - each still equal to its brute force."""
    seen = _spy(monkeypatch)
    model = _model()
    torch.manual_seed(3)
    images = torch.rand(4, 1, 12, 12, dtype=torch.float64)
    groups = [Rotation90(), Rotation([45.0]), Flip(("horizontal",))]
    report = measure(model, images, groups=groups, batch_size=48)
    assert not seen
    df = report.to_dataframe()
    for group, elements in (GROUPS[0], GROUPS[2]):
        expected = correlation_brute(model, images, elements)
        got = df[df.group == group.name]
        for layer, (_, eq) in expected.items():
            rows = got[got.layer == layer].set_index("measure")["value"]
            if not rows.empty:
                assert rows["equivariance"] == pytest.approx(eq, abs=1e-9), (group.name, layer)
    # Rotation90 and Flip next to each other in the pass: one joint scoring of their four elements
    measure(model, images, groups=[Rotation90(), Flip(("horizontal",)), Rotation([45.0])], batch_size=48)
    assert seen and set(seen) == {4}


def test_a_joint_run_after_a_group_scored_alone_reads_its_own_elements(monkeypatch):
    """A rotation by 45 degrees first in the pass: the jointly scored run (Rotation90's and Flip's elements)
    starts at element 1 of a(T_g x), and each group's share is counted from the run's start - every field of
    every result equal to the group measured alone."""
    seen = _spy(monkeypatch)
    model = _model()
    torch.manual_seed(4)
    images = torch.rand(6, 1, 12, 12, dtype=torch.float64)
    together = _results(measure(model, images, groups=[Rotation([45.0]), Rotation90(), Flip(("horizontal",))],
                                batch_size=36))
    assert seen and set(seen) == {4}
    alone = {}
    for group in (Rotation([45.0]), Rotation90(), Flip(("horizontal",))):
        alone.update(_results(measure(model, images, groups=[group], batch_size=36)))
    assert set(together) == set(alone) and len(alone) >= 45
    for key, want in alone.items():
        _assert_same_result(together[key], want, key)

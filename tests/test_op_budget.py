"""ATen calls per (layer, chunk) of a measurement: what a GPU pays per kernel launch (issue 23).

Counted by ``benchmarks/bench_ops.py`` with a ``TorchDispatchMode`` (deterministic for a given
torch). Only the budgets already met are asserted here; the others join as they are met.
"""
import os
import sys

import pytest
import torch
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import bench_ops  # noqa: E402


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


def test_nv_stays_within_its_op_budget(resnet18):
    rows = bench_ops.rows(quick=True)
    kwargs, views = rows["nv"]
    row = bench_ops.count_row(resnet18, 64, kwargs, views, by_op=False)
    assert row["layers"] == 60
    assert row["per_layer_chunk"] <= bench_ops.BUDGETS["nv"], row


def test_lee_stays_within_its_op_budget(resnet18):
    """One forward-mode pass per transform (``batch_size=8``): the forward with dual tensors, the Lie
    derivative of each layer, the finite check and the metric's update."""
    rows = bench_ops.rows(quick=True)
    kwargs, views = rows["lee_per_transform"]
    with pytest.warns(RuntimeWarning, match="too small for lee's central-difference stencil"):
        row = bench_ops.count_row(resnet18, 64, kwargs, views, by_op=False)
    assert row["layers"] == 46  # layer4's 2 x 2 maps are refused (the warning): too small for the stencil
    assert row["per_layer_chunk"] <= bench_ops.BUDGETS["lee_per_transform"], row


def test_the_counter_sees_every_call_of_a_forward(resnet18):
    """A counter that missed calls would make every budget pass."""
    counter = bench_ops.CountCalls()
    with counter, torch.no_grad():
        resnet18(torch.randn(2, 3, 64, 64))
    assert counter.by_op["convolution"] == 20 and counter.by_op["addmm"] == 1
    assert counter.total > 60

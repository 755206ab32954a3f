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


def test_geed_channel_stays_within_its_op_budget(resnet18):
    rows = bench_ops.rows(quick=True)
    kwargs, views = rows["geed_channel"]
    row = bench_ops.count_row(resnet18, 64, kwargs, views, by_op=False)
    assert row["layers"] == 60
    assert row["per_layer_chunk"] <= bench_ops.BUDGETS["geed_channel"], row


def test_the_counter_sees_every_call_of_a_forward(resnet18):
    """A counter that missed calls would make every budget pass."""
    counter = bench_ops.CountCalls()
    with counter, torch.no_grad():
        resnet18(torch.randn(2, 3, 64, 64))
    assert counter.by_op["convolution"] == 20 and counter.by_op["addmm"] == 1
    assert counter.total > 60

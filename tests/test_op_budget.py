"""ATen calls per (layer, chunk) of a measurement: what a GPU pays per kernel launch (issue 23).

Counted by ``benchmarks/bench_ops.py`` with a ``TorchDispatchMode`` (deterministic for a given
torch): every budget of issue 23, on ResNet-18, two groups, tokens and channels-last.
"""
import os
import sys
import warnings

import pytest
import torch
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import bench_ops  # noqa: E402 - benchmarks/ put on sys.path first


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


@pytest.mark.parametrize("row_name", ["invariance+equivariance", "invariance+equivariance_no_chance"])
def test_invariance_and_equivariance_stay_within_their_op_budget(resnet18, row_name):
    """The default measures, with and without the chance level: the per-image moments and state adds of
    every layer run stacked once per chunk (deferred.py)."""
    kwargs, views = bench_ops.rows(quick=True)[row_name]
    row = bench_ops.count_row(resnet18, 64, kwargs, views, by_op=False)
    assert row["layers"] == 60
    assert row["per_layer_chunk"] <= bench_ops.BUDGETS[row_name], row


def test_two_groups_stay_within_the_budget_of_one_with_its_slack(resnet18):
    """Rotation90 + Translation(max_shift=4): the groups' seven elements of a layer are scored in one pass
    (metrics/shared.py's JointWork), so a layer costs hardly more than with one group (budget x 1.25)."""
    kwargs, views = bench_ops.rows(quick=False)["r90+translation_invariance+equivariance"]
    row = bench_ops.count_row(resnet18, 64, kwargs, views, by_op=False)
    assert row["layers"] == 60
    slack = bench_ops.OTHER_MODEL_SLACK
    assert row["per_layer_chunk"] <= bench_ops.BUDGETS["invariance+equivariance"] * slack, row
    assert row["fixed"] <= bench_ops.FIXED_BUDGET * slack, row


@pytest.mark.parametrize("model_name", ["vit_b_16", "convnext_tiny"])
def test_tokens_and_channels_last_stay_within_the_budget_with_its_slack(model_name):
    """ViT-B/16 (tokens, 74 layers) and ConvNeXt-T (channels-last, 101 layers) at 64 px: their wide layers'
    C x 2C similarities come in blocks of up to 256 MiB, each a product and a row max."""
    torch.manual_seed(0)
    model = (torchvision.models.vit_b_16(image_size=64) if model_name == "vit_b_16"
             else torchvision.models.convnext_tiny()).eval()
    kwargs, views = bench_ops.rows(quick=True)["invariance+equivariance"]
    with warnings.catch_warnings():  # ViT's head is zero-initialised by torchvision: dead, refused with a reason
        warnings.simplefilter("ignore", RuntimeWarning)
        row = bench_ops.count_row(model, 64, kwargs, views, by_op=False)
    assert row["layers"] == {"vit_b_16": 74, "convnext_tiny": 101}[model_name]
    slack = bench_ops.OTHER_MODEL_SLACK
    assert row["per_layer_chunk"] <= bench_ops.BUDGETS["invariance+equivariance"] * slack, row
    assert row["fixed"] <= bench_ops.FIXED_BUDGET * slack, row


def test_lee_stays_within_its_op_budget(resnet18):
    """One forward-mode pass per transform (``batch_size=8``): the forward with dual tensors, the Lie
    derivative of each layer, the finite check and the metric's update."""
    rows = bench_ops.rows(quick=True)
    kwargs, views = rows["lee_per_transform"]
    with pytest.warns(RuntimeWarning, match="too small for lee's central-difference stencil"):
        row = bench_ops.count_row(resnet18, 64, kwargs, views, by_op=False)
    assert row["layers"] == 46  # layer4's 2 x 2 maps are refused (the warning): too small for the stencil
    assert row["per_layer_chunk"] <= bench_ops.BUDGETS["lee_per_transform"], row
    assert row["fixed"] <= bench_ops.FIXED_BUDGET, row  # both 8-image chunks of the 16 images subtracted


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


@pytest.mark.parametrize(
    "row_name", ["invariance+equivariance", "invariance+equivariance_no_chance", "nv", "geed_channel"]
)
def test_fixed_calls_per_measurement_stay_within_budget(resnet18, row_name):
    """Metric creation, the allocation pass, compute and the report: at most 4,000 calls per ``measure()``
    (``lee``'s in test_lee_stays_within_its_op_budget)."""
    kwargs, views = bench_ops.rows(quick=True)[row_name]
    row = bench_ops.count_row(resnet18, 64, kwargs, views, by_op=False)
    assert row["layers"] == 60
    assert row["fixed"] <= bench_ops.FIXED_BUDGET, row


def test_a_metric_is_created_with_one_call_per_state_and_resets_to_its_defaults():
    """No deep copy of the defaults (torchmetrics' add_state: seven calls per state), no ``.to(device)``."""
    from lightning_equivariance.metrics import CorrelationEquivariance

    counter = bench_ops.CountCalls()
    with counter:
        metric = CorrelationEquivariance.create_on("cpu", 3, 8)
    assert counter.total == 3 and counter.by_op["full"] == 3, dict(counter.by_op)
    assert metric.device == torch.device("cpu") and metric.sums.shape == (2, 3, 2, 8)
    on_meta = CorrelationEquivariance.create_on("meta", 3, 8)
    assert on_meta.device.type == "meta" and {s.device.type for s in on_meta.metric_state.values()} == {"meta"}
    a = torch.randn(3, 4, 8, 5, 5)
    metric.update(a, a.flip(2))
    metric.reset()
    assert all(float(s.abs().sum()) == 0 for s in metric.metric_state.values())
    assert metric.sums.shape == (2, 3, 2, 8) and metric.images.shape == (2,) and metric.moments.shape == (2, 3)

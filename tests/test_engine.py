"""The engine on real architectures, and its errors and guarantees."""
import pytest
import torch
import torchvision
from torch import nn

from lightning_equivariance import (
    LayerSelectionError,
    MeasureError,
    Measurement,
    Rotation90,
    Translation,
    measure,
    select_layers,
)
from lightning_equivariance.groups import GroupActionError
from models import SmallCNN


def test_resnet18_auto_layers():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    report = measure(model, torch.randn(4, 3, 64, 64), groups=[Rotation90(), Translation(2)])
    df = report.to_dataframe()
    layers = list(dict.fromkeys(df.layer))
    assert len(layers) == 60  # 20 conv (3 downsample) + 20 bn + 17 relu calls + maxpool, avgpool, fc
    assert layers[0] == "conv1" and layers[-1] == "fc" and "layer1.0.relu:1" in layers
    assert not any("dropout" in n for n in layers)
    assert set(df.part) == {"Early", "Middle", "Late", "Pool", "Final"}
    assert df.value.between(0, 1).all() and report.not_called == []
    assert (
        df.pivot_table(index=["layer", "group"], columns="measure", values="value").eval(
            "equivariance >= invariance - 1e-6"
        )
    ).all()


def test_vit_b16_tokens_auto_layers():
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(image_size=32)  # 2x2 patches + class token
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision zero-inits the head: a dead output
    report = measure(model, torch.randn(2, 3, 32, 32), groups=[Rotation90()], batch_size=8)
    df = report.to_dataframe()
    layers = list(dict.fromkeys(df.layer))
    assert "conv_proj" in layers and "encoder.layers.encoder_layer_0.self_attention" in layers
    assert not any(n.endswith("out_proj") for n in layers)
    assert layers[-1] == "heads.head" and df[df.layer == "heads.head"].part.iloc[0] == "Final"
    kinds = df.drop_duplicates("layer").set_index("layer")["kind"]
    assert kinds["encoder.layers.encoder_layer_0.mlp.0"] == "map"  # tokens -> 768 x 2 x 2 map
    assert report.errors == {}


def test_dead_output_layer_is_a_clear_error_not_nan():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 3))
    nn.init.zeros_(model[2].weight)
    nn.init.zeros_(model[2].bias)  # an all-zero output, as torchvision initialises ViT heads
    with pytest.raises(MeasureError, match="layer '2'.*dead"):
        measure(model, torch.rand(2, 1, 8, 8), on_error="raise")
    # by default the dead layer is recorded per (layer, measure, group); the others are measured
    with pytest.warns(RuntimeWarning, match="2 .layer, measure, group. combination.*layer '2'"):
        report = measure(model, torch.rand(2, 1, 8, 8))
    assert set(report.errors) == {("2", "invariance", "rotation90"), ("2", "equivariance", "rotation90")}
    assert all("dead" in reason for reason in report.errors.values())
    assert set(report.to_dataframe().layer) == {"0"}


def test_non_square_input_rotation90_clear_error():
    with pytest.raises(GroupActionError, match=r"not square.*\(1, 1, 12, 10\)|\(1, 1, 12, 10\).*not square"):
        measure(SmallCNN(), torch.rand(1, 1, 12, 10), groups=[Rotation90()])


def test_non_square_feature_map_names_layer():
    class Stretch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, stride=(1, 2), padding=1)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(GroupActionError, match="layer 'conv'.*not square"):
        measure(Stretch(), torch.rand(2, 1, 8, 8), groups=[Rotation90()], on_error="raise")
    # by default: recorded for that (layer, measure, group), the other group still measured
    report = measure(Stretch(), torch.rand(2, 1, 8, 8), groups=[Rotation90(), Translation(1)])
    assert set(report.errors) == {("conv", m, "rotation90") for m in ("invariance", "equivariance")}
    assert "not square" in report.errors[("conv", "invariance", "rotation90")]
    assert set(report.to_dataframe().group) == {"translation"}


def test_non_square_layer_warns_with_on_error_warn():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, stride=(1, 2), padding=1), nn.ReLU())
    with pytest.warns(RuntimeWarning, match="layer '1'"):
        report = measure(model, torch.rand(2, 1, 8, 8), groups=[Rotation90()], on_error="warn")
    assert ("1", "invariance", "rotation90") in report.errors and "not square" in report.errors[
        ("1", "invariance", "rotation90")
    ]
    assert set(report.to_dataframe().layer) == {"0"}  # '2' (ReLU) also non-square
    assert ("2", "equivariance", "rotation90") in report.errors


def test_unknown_layer_name_lists_close_names():
    with pytest.raises(LayerSelectionError, match=r"no layer named 'conv_2'.*Close names: \['conv2'"):
        measure(SmallCNN(), torch.rand(1, 1, 8, 8), layers=["conv1", "conv_2"])


def test_layer_selection_by_type_name_and_predicate():
    model = SmallCNN()
    assert [n for n, _ in select_layers(model, nn.Conv2d)] == ["conv1", "conv2", "conv3"]
    assert [n for n, _ in select_layers(model, [nn.Linear, nn.BatchNorm2d])] == ["bn1", "fc"]
    assert [n for n, _ in select_layers(model, lambda n, m: n.startswith("conv"))] == ["conv1", "conv2", "conv3"]
    assert "flatten" not in [n for n, _ in select_layers(model, "auto")]
    with pytest.raises(LayerSelectionError):
        select_layers(model, lambda n, m: False)


def test_hooks_removed_and_mode_restored_after_exception():
    class Boom(SmallCNN):
        def forward(self, x):
            super().forward(x)
            raise RuntimeError("boom inside the model")

    model = Boom()
    model.train()
    model.bn1.eval()  # a mixed mode must come back exactly
    with pytest.raises(RuntimeError, match="boom"):
        measure(model, torch.rand(2, 1, 8, 8))
    assert all(len(m._forward_hooks) == 0 for m in model.modules())
    assert model.training and not model.bn1.training and model.conv1.training


def test_no_autograd_graph_and_params_untouched():
    model = SmallCNN()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    captured = []
    model.conv2.register_forward_hook(lambda m, i, o: captured.append(o.requires_grad))
    measure(model, torch.rand(3, 1, 8, 8))
    # the layout-discovery forward (six images), the one-image allocation pass, the chunk: none builds a graph
    assert captured and not any(captured)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_streaming_equals_one_shot_and_batch_size_invariant():
    torch.manual_seed(0)
    model = SmallCNN().double()
    x = torch.rand(9, 1, 12, 12, dtype=torch.float64)
    one = measure(model, x, groups=[Rotation90(), Translation(2)], batch_size=1000).to_dataframe()
    m = Measurement(model, groups=[Rotation90(), Translation(2)], batch_size=6)
    m.update(x[:4])
    m.update([(x[4:7], None), (x[7:], None)])  # an iterable of (x, y) batches
    two = m.compute().to_dataframe()
    assert torch.allclose(torch.tensor(one.value.values), torch.tensor(two.value.values), atol=1e-12)


def test_every_layer_metric_exists_before_the_first_chunk_is_measured(monkeypatch):
    """A one-image pass creates all states first, so memory does not step up after the first chunk."""
    torch.manual_seed(0)
    model = SmallCNN()
    meas = Measurement(model, measures=["invariance", "nv"], groups=[Rotation90()], batch_size=8)
    batches, counts = [], []
    model.register_forward_pre_hook(lambda mod, args: batches.append(args[0].shape[0]))
    original = Measurement.receive

    def spy(self, name, *args):
        if not self._allocating and not counts:
            counts.append(len(self.metrics))
        return original(self, name, *args)

    monkeypatch.setattr(Measurement, "receive", spy)
    meas.update(torch.rand(6, 1, 12, 12))
    # 6 images for the layouts' evidence (DISCOVERY_IMAGES, docs/measures.md §1.3), 1 image x 4 views, then
    # 2 images x 4 views per chunk
    assert batches == [6, 4, 8, 8, 8]
    assert meas.num_samples == 6
    assert counts == [len(meas.metrics)] and len(meas.metrics) == 2 * len(meas.infos)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown measure"):
        measure(SmallCNN(), torch.rand(1, 1, 8, 8), measures=["invarince"])
    with pytest.raises(ValueError, match="unknown group"):
        measure(SmallCNN(), torch.rand(1, 1, 8, 8), groups=["rot"])
    with pytest.raises(ValueError, match="B x C x H x W"):
        measure(SmallCNN(), torch.rand(1, 8, 8))


def test_per_channel_values_and_per_element_frame():
    report = measure(SmallCNN(width=5), torch.rand(4, 1, 8, 8), groups=[Rotation90()])
    assert report.per_channel("conv2", "equivariance", "rotation90").shape == (5,)
    pe = report.to_dataframe(per_element=True)
    assert set(pe.element) == {"90", "180", "270"}
    mean = pe[(pe.layer == "conv2") & (pe.measure == "invariance")].value.mean()
    df = report.to_dataframe()
    assert df[(df.layer == "conv2") & (df.measure == "invariance")].value.iloc[0] == pytest.approx(mean)
    with pytest.raises(KeyError):
        report.per_channel("fc", "equivariance", "rotation90")
    assert len(report.series()) == 2

"""The model's own output measured as the layer "(output)" (docs/layers.md, issue 21).

References are brute force on the tensors the model *returns* (reference.py's transforms and
Pearson correlation, loops over images, elements and channels), not on hooked activations.
"""
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from lightning_equivariance import Rotation90, measure, select_layers
from lightning_equivariance.layers import OUTPUT, selects_output
from lightning_equivariance.report import assign_parts
from reference import pearson_relu, transform_np

ROT = [("rot", 1), ("rot", 2), ("rot", 3)]


def returned_out(model, x):
    """The map or vector the model returns for images ``x``: ``out`` of a mapping, else the tensor."""
    with torch.no_grad():
        out = model(x)
    return (out["out"] if isinstance(out, dict) else out).double().numpy()


def output_correlation_brute(model, images, elements):
    """(invariance, equivariance) of the model's returned output, Bruintjes et al. 2023 Eq. 4 and 7:
    per element the mean over images and channels of max(0, pearson), then the mean over elements."""
    in_size = tuple(images.shape[-2:])
    a_x = returned_out(model, images)
    per_element = []
    for e in elements:
        rotated = torch.stack([torch.from_numpy(transform_np(img.numpy(), e, in_size)[0]) for img in images])
        a_gx = returned_out(model, rotated)
        inv, eq, n = 0.0, 0.0, 0
        for i in range(images.shape[0]):
            if a_x.ndim == 2:  # a vector: the whole vector is one unit, the action is trivial
                r = pearson_relu(a_gx[i], a_x[i])
                if r is not None:
                    inv, eq, n = inv + r, eq + r, n + 1
                continue
            t_ax, mask = transform_np(a_x[i], e, in_size)
            for c in range(a_x.shape[1]):
                r = pearson_relu(a_gx[i, c][mask], t_ax[c][mask])
                if r is None:
                    continue
                best = max((s for c2 in range(a_x.shape[1])
                            if (s := pearson_relu(a_gx[i, c][mask], t_ax[c2][mask])) is not None), default=0.0)
                inv, eq, n = inv + r, eq + best, n + 1
        per_element.append((inv / n, eq / n))
    return tuple(np.mean(per_element, axis=0))


def values(report, layer):
    df = report.to_dataframe()
    rows = df[df.layer == layer]
    return {m: float(v) for m, v in zip(rows.measure, rows.value)}


@pytest.fixture(scope="module")
def fcn():
    torch.manual_seed(0)
    return torchvision.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None).eval()


def test_fcn_resnet50_output_equals_a_brute_force_reference_on_the_returned_out_map(fcn):
    torch.manual_seed(1)
    images = torch.rand(4, 3, 64, 64)
    report = measure(fcn, images, groups=[Rotation90()], layers=["classifier.4", OUTPUT], chance=False)
    got = values(report, OUTPUT)
    inv, eq = output_correlation_brute(fcn, images, ROT)
    assert got["invariance"] == pytest.approx(inv, abs=1e-5)
    assert got["equivariance"] == pytest.approx(eq, abs=1e-5)
    df = report.to_dataframe()
    row = df[df.layer == OUTPUT].iloc[0]
    assert (row.part, row.kind, row.layout) == ("Final", "map", "channels_first")
    assert report.depth[OUTPUT][0] == max(i for i, _ in report.depth.values())  # the deepest layer
    # the 64 x 64 output is not the 8 x 8 head convolution it is up-sampled from
    assert values(report, "classifier.4")["equivariance"] != pytest.approx(got["equivariance"], abs=1e-3)
    assert report.selected == ["classifier.4", OUTPUT] and report.not_called == []


class SmallClassifier(nn.Module):
    def __init__(self, head=None):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 5)
        self.head = head

    def forward(self, x):
        logits = self.fc(self.pool(self.relu(self.conv(x))).flatten(1))
        return logits if self.head is None else self.head(logits)


def test_a_classifier_whose_last_linear_returns_the_output_is_not_measured_twice():
    torch.manual_seed(0)
    model = SmallClassifier()
    report = measure(model, torch.rand(6, 3, 16, 16), groups=[Rotation90()])
    df = report.to_dataframe()
    assert list(dict.fromkeys(df.layer)) == ["conv", "relu", "pool", "fc"]
    assert (df.layer == "fc").sum() == 2  # invariance and equivariance, once each
    assert OUTPUT not in report.selected and report.not_called == [] and not report.errors
    assert dict(zip(df.layer, df.part))["fc"] == "Final"
    # also when named: the output is fc's, measured there
    named = measure(model, torch.rand(6, 3, 16, 16), groups=[Rotation90()], layers=["fc", OUTPUT])
    assert list(dict.fromkeys(named.to_dataframe().layer)) == ["fc"] and named.not_called == []


class Ending(nn.Module):
    """conv, relu, global pool, then ``end`` applied by functions to the pool's B x C x 1 x 1 output."""

    def __init__(self, end):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.end = end

    def forward(self, x):
        return self.end(self.pool(self.relu(self.conv(x))), x)


@pytest.mark.parametrize("end, measured", [
    (lambda p, x: p.flatten(1), False),  # SqueezeNet: a flatten of the pool's 1 x 1 output, the same values
    (lambda p, x: p.squeeze(-1).squeeze(-1), False),
    (lambda p, x: p.view(p.shape[0], -1, 1), False),
    (lambda p, x: p.flatten(1).clone(), True),  # a copy: no evidence it is the same tensor
    (lambda p, x: p.add_(x.mean((1, 2, 3)).view(-1, 1, 1, 1)).flatten(1), True),  # changed in place after the hook
    (lambda p, x: (p * torch.arange(1.0, 7.0).view(1, 6, 1, 1)).flatten(1), True),
])
def test_a_view_of_a_layers_whole_output_is_that_layers_output(end, measured):
    torch.manual_seed(0)
    model = Ending(end)
    images = torch.rand(6, 3, 8, 8)
    report = measure(model, images, groups=[Rotation90()], chance=False)
    layers = list(dict.fromkeys(report.to_dataframe().layer))
    assert layers == ["conv", "relu", "pool"] + ([OUTPUT] if measured else [])
    assert report.not_called == [] and (OUTPUT in report.selected) == measured
    if measured:
        inv, eq = output_correlation_brute(model, images, ROT)
        assert values(report, OUTPUT) == pytest.approx({"invariance": inv, "equivariance": eq}, abs=1e-6)


def test_a_function_after_the_last_module_is_measured_as_the_output_vector_in_final():
    torch.manual_seed(0)
    model = SmallClassifier(head=lambda z: z.softmax(-1)).eval()
    images = torch.rand(6, 3, 16, 16)
    report = measure(model, images, groups=[Rotation90()], chance=False)
    df = report.to_dataframe()
    assert list(dict.fromkeys(df.layer)) == ["conv", "relu", "pool", "fc", OUTPUT]
    parts = dict(zip(df.layer, df.part))
    assert parts == {"conv": "Early", "relu": "Middle", "pool": "Pool", "fc": "Final", OUTPUT: "Final"}
    inv, eq = output_correlation_brute(model, images, ROT)
    assert values(report, OUTPUT) == pytest.approx({"invariance": inv, "equivariance": eq}, abs=1e-6)
    assert df[df.layer == OUTPUT].kind.iloc[0] == "vector"


def test_the_output_is_selected_by_auto_or_by_name_never_by_type_or_predicate():
    model = SmallClassifier(head=lambda z: z * 2)
    assert all(selects_output(s) for s in ("auto", [OUTPUT], ["conv", OUTPUT], OUTPUT))
    assert not any(selects_output(s) for s in (nn.Conv2d, [nn.Conv2d, nn.Linear], ["conv"], lambda n, m: True))
    assert select_layers(model, [OUTPUT]) == [] and [n for n, _ in select_layers(model, ["conv", OUTPUT])] == ["conv"]
    images = torch.rand(2, 3, 8, 8)
    def layers(spec):
        return list(dict.fromkeys(measure(model, images, layers=spec).to_dataframe().layer))
    assert layers([OUTPUT]) == [OUTPUT]
    assert layers(OUTPUT) == [OUTPUT]
    assert layers(nn.Linear) == ["fc"]
    assert layers(lambda name, module: True) == ["conv", "relu", "pool", "fc"]
    assert layers("auto") == ["conv", "relu", "pool", "fc", OUTPUT]


def test_the_output_layout_can_be_overridden_like_any_layer():
    class ChannelsLast(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return (self.conv(x) * 2).permute(0, 2, 3, 1)  # B x h x w x C made by functions

    model = ChannelsLast()
    images = torch.rand(4, 3, 8, 8)  # C = 4 != 8: the image grid settles channels-last
    found = measure(model, images, groups=[Rotation90()], chance=False)
    assert found.layouts[OUTPUT] == "channels_last"
    assert values(found, OUTPUT) == pytest.approx(values(found, "conv"), abs=1e-6)  # 2 * conv, permuted
    forced = measure(model, images, groups=[Rotation90()], chance=False, layouts={OUTPUT: "channels_first"})
    assert forced.layouts[OUTPUT] == "channels_first"
    # and the measure read it so: B x 8 x 8 x 4 taken channels-first is an 8 x 8 x 4 map, refused as not square
    assert "shape (8, 8, 4) is not square" in forced.errors[(OUTPUT, "invariance", "rotation90")]


def test_a_global_pool_followed_by_maps_is_a_branch_not_the_pool_part():
    # ASPP / LRASPP: the pooled branch is broadcast back onto the maps, the decoder follows
    kinds = ["map"] * 6 + ["vector", "vector"] + ["map"] * 3
    pools = [False] * 6 + [True, False] + [False] * 3
    parts = assign_parts(kinds, pools)
    assert "Pool" not in parts and "Final" not in parts
    assert parts == ["Early"] * 4 + ["Middle"] * 4 + ["Late"] * 3  # j < 11/3, j < 22/3, the rest
    # a classifier keeps its Pool and Final, the pool of a squeeze-excitation inside its body is no Pool
    kinds = ["map", "vector", "map", "map", "vector", "vector"]
    pools = [False, True, False, False, True, False]
    assert assign_parts(kinds, pools) == ["Early", "Early", "Middle", "Late", "Pool", "Final"]


def test_a_model_of_vectors_only_splits_all_but_its_last_layer():
    # an MLP on flattened images: nothing spatial, no pool - the last layer is Final, the rest split in three
    assert assign_parts(["vector"] * 4) == ["Early", "Middle", "Late", "Final"]
    assert assign_parts(["vector"]) == ["Final"]


@pytest.mark.parametrize("builder, pooled, decoder", [
    ("deeplabv3_mobilenet_v3_large", "classifier.0.convs.4.0", ["classifier.0.project.0", "classifier.4"]),  # ASPP
    ("lraspp_mobilenet_v3_large", "classifier.scale.0", ["classifier.low_classifier", "classifier.high_classifier"]),
])
def test_a_segmentation_nets_decoder_stays_in_the_depth_parts_and_its_output_is_final(builder, pooled, decoder):
    torch.manual_seed(0)
    model = getattr(torchvision.models.segmentation, builder)(weights=None, weights_backbone=None).eval()
    with pytest.warns(RuntimeWarning):  # mobilenet's squeeze-excitation gates are dead on random weights
        report = measure(model, torch.rand(1, 3, 64, 64), groups=[Rotation90()], measures=["invariance"], chance=False)
    parts = {n: p for n, (_, p) in report.depth.items()}
    assert report.to_dataframe().query("layer == @pooled").kind.tolist() == ["vector"]  # a global pool ...
    assert parts[pooled] != "Pool" and "Pool" not in parts.values()  # ... whose result goes back onto maps
    assert [n for n, p in parts.items() if p == "Final"] == [OUTPUT]
    assert all(parts[n] == "Late" for n in decoder) and parts["backbone.0.0"] == "Early"
    assert report.selected[-1] == OUTPUT and report.depth[OUTPUT][0] == len(report.depth) - 1  # last in depth order


class SegNet(nn.Module):
    """conv, relu, 1 x 1 head, up-sampled by a function (as torchvision's segmentation nets)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Conv2d(4, 3, 1)

    def forward(self, x):
        return {"out": F.interpolate(self.head(self.relu(F.max_pool2d(self.conv(x), 2))), scale_factor=2.0)}


def test_the_callback_logs_the_output_to_the_tidy_csv_and_the_tensorboard_tab(tmp_path):
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_equivariance import EquivarianceCallback

    class Lit(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = SegNet()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _):
            x, y = batch
            return F.cross_entropy(self(x)["out"], y)

        def validation_step(self, batch, _):
            pass

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 8, 8, generator=g)
    y = torch.randint(0, 3, (16, 8, 8), generator=g)
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    cb = EquivarianceCallback(num_samples=8, every_n_train_steps=1, progress=False, summary=False, per_channel=True)
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(max_epochs=1, logger=TensorBoardLogger(str(tmp_path), name="tb", version=0), callbacks=[cb],
                         enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
                         accelerator="cpu", devices=1, log_every_n_steps=1)
    trainer.fit(Lit(), loader, loader)
    layers = ["conv", "relu", "head", OUTPUT]  # names relative to the wrapped net; (output) last

    tidy = pd.read_csv(cb.csv_path(trainer), dtype={"layer": str})
    for step, rows in tidy[tidy.measure == "equivariance"].groupby("global_step"):
        assert rows.layer.tolist() == layers
        out = rows[rows.layer == OUTPUT].iloc[0]
        assert out.part == "Final"
        logged = cb.step_history[step][f"equivariance/equivariance/rotation90/{OUTPUT}"]
        assert out.value == pytest.approx(logged, abs=1e-9)
    assert sorted(set(tidy.global_step)) == [1, 2] and cb.last_report.layouts[OUTPUT] == "channels_first"

    # the tab's data path: the plugin's /series route reads the event file written by the callback
    from tensorboard.backend import application
    from tensorboard.backend.event_processing import data_provider as mux_provider
    from tensorboard.backend.event_processing import plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from werkzeug import test as werkzeug_test
    from werkzeug import wrappers

    import tb_helpers
    from lightning_equivariance_tb.plugin import EquivariancePlugin

    logdir = str(tmp_path / "tb")
    multiplexer = plugin_event_multiplexer.EventMultiplexer(tensor_size_guidance={"equivariance": 0})
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    provider = mux_provider.MultiplexerDataProvider(multiplexer, logdir)
    context = base_plugin.TBContext(logdir=logdir, data_provider=provider, sampling_hints={"equivariance": 0})
    client = werkzeug_test.Client(application.TensorBoardWSGI([EquivariancePlugin(context)], data_provider=provider),
                                  wrappers.Response)
    prefix = "/data/plugin/equivariance"
    series = dict(run="version_0", measure="equivariance", group="rotation90")
    response = client.get(prefix + "/series", query_string=series)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = tb_helpers.decode_values(response.get_json())
    assert body["layers"] == layers and body["parts"][-1] == "Final"
    assert body["steps"] == [1, 2]
    got = np.array(body["values"])[layers.index(OUTPUT)]
    want = [cb.step_history[s][f"equivariance/equivariance/rotation90/{OUTPUT}"] for s in (1, 2)]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # the Channels view of the output: its 3 class channels by step
    response = client.get(prefix + "/channels", query_string=dict(run="version_0", measure="equivariance",
                                                                  group="rotation90", layer=OUTPUT))
    assert response.status_code == 200, response.get_data(as_text=True)
    channels = tb_helpers.decode_values(response.get_json())
    assert channels["channels"] == 3 and channels["part"] == "Final" and channels["layer_index"] == 3
    per_channel = cb.last_report.results[-1].per_channel
    np.testing.assert_allclose(np.array(channels["values"])[:, -1], per_channel, rtol=1e-5)

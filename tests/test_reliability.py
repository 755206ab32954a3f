"""Issue 25: names that cannot collide, and a warning for a tiny ``batch_size``.

PyTorch accepts ``:`` in module names, so a module literally named ``relu:1`` can sit next to a
ReLU called twice, whose second call the probe names ``relu:1`` too. The probe's call names
(:class:`lightning_equivariance.layers.CallNames`) now stay distinct from every module's name, and
every refusal says which layer, in full.
"""

import warnings

import pytest
import torch
from torch import nn

from lightning_equivariance import MeasureError, measure
from lightning_equivariance.layers import CallNames

MEASURES = ["invariance", "equivariance"]


class _Stem(nn.Module):
    """conv -> shared relu -> ``relu:1`` (a module of that very name) -> conv2 -> the shared relu again."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.add_module("relu:1", nn.Hardtanh(0.0, 0.1))  # another layer: a different value than either relu call
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        x = self.relu(self.conv(x))
        x = getattr(self, "relu:1")(x)
        x = self.relu(self.conv2(x))
        return self.pool(x).flatten(1)


class _Alone(nn.Module):
    """The same computation with every call its own module (``first``, ``named``, ``second``)."""

    def __init__(self, stem: _Stem):
        super().__init__()
        self.conv, self.conv2 = stem.conv, stem.conv2
        self.first, self.named, self.second = nn.ReLU(), getattr(stem, "relu:1"), nn.ReLU()
        self.pool = stem.pool

    def forward(self, x):
        x = self.named(self.first(self.conv(x)))
        return self.pool(self.second(self.conv2(x))).flatten(1)


def _values(report):
    return {(r.layer, r.measure): r.value for r in report.results}


def test_a_module_named_like_a_shared_call_measures_five_distinct_layers():
    torch.manual_seed(0)
    stem = _Stem()
    x = torch.randn(6, 3, 10, 10)
    report = measure(stem, x, layers=["conv", "relu", "relu:1", "conv2"], measures=MEASURES, batch_size=64)
    layers = list(dict.fromkeys(r.layer for r in report.results))
    # the relu's second call steps aside for the module named "relu:1": five layers, in depth order
    assert layers == ["conv", "relu", "relu:1", "conv2", "relu::1"]
    assert report.errors == {} and report.not_called == []
    got = _values(report)
    # each layer equals the same computation measured alone, one module per call
    alone = _Alone(stem)
    same = {"conv": "conv", "relu": "first", "relu:1": "named", "conv2": "conv2", "relu::1": "second"}
    for layer, twin in same.items():
        ref = _values(measure(alone, x, layers=[twin], measures=MEASURES, batch_size=64))
        for m in MEASURES:
            assert got[(layer, m)] == pytest.approx(ref[(twin, m)], abs=1e-12, rel=0), (layer, m)
    # ... and the five are five different values (no layer stands for another one)
    for m in MEASURES:
        assert len({round(got[(layer, m)], 9) for layer in layers}) == 5, m
    # layouts= takes the new call name and the literal module's name
    report = measure(stem, x, layers=["relu", "relu:1"], measures=MEASURES, batch_size=64,
                     layouts={"relu:1": "channels_first", "relu::1": "channels_first"})
    assert [r.layer for r in report.results if r.measure == "invariance"] == ["relu", "relu:1", "relu::1"]


def test_call_names_stay_plain_where_nothing_collides():
    import torchvision

    model = torchvision.models.resnet18()  # test_engine: its layers keep the names layer1.0.relu:1 ...
    names = CallNames(["layer1.0.relu", "conv1"], model)
    assert names.call("layer1.0.relu", 0) == "layer1.0.relu" and names.call("layer1.0.relu", 1) == "layer1.0.relu:1"
    assert names.call("layer1.0.relu", 12) == "layer1.0.relu:12"
    assert names.layer("layer1.0.relu:12") == "layer1.0.relu" and names.layer("conv1") == "conv1"
    with pytest.raises(KeyError):
        names.layer("conv1:x")


def test_call_names_never_collide():
    # every name below is a module that is also called three times
    modules = ["relu", "relu:", "relu:1", "relu::2", "relu:1:1", "a:0b", "a"]
    names = CallNames(modules)
    calls = [names.call(n, k) for n in modules for k in range(3)]
    assert len(set(calls)) == len(calls)  # no two calls share a name
    for n in modules:
        for k in range(3):
            assert names.layer(names.call(n, k)) == n
    # a module not selected still keeps its name to itself
    model = nn.Module()
    model.add_module("x", nn.ReLU())
    model.add_module("x:1", nn.ReLU())
    assert CallNames(["x"], model).call("x", 1) == "x::1"
    assert CallNames(["x"]).call("x", 1) == "x:1"


def test_layout_overrides_name_calls_exactly_with_the_model():
    from lightning_equivariance.layers import check_layout_overrides

    stem = _Stem()
    names = ["relu", "relu:1"]
    ok = {"relu": "channels_first", "relu:1": "channels_last", "relu::1": "channels_first", "relu::7": "channels_first",
          "relu:1:1": "channels_first"}  # the last: a second call of the module named relu:1
    assert check_layout_overrides(ok, names, stem) == ok
    for wrong in ("relu:::1", "relu:1::1", "relu:x", "conv:1"):  # no call of a selected layer in this model
        with pytest.raises(ValueError, match="not among the selected layers"):
            check_layout_overrides({wrong: "channels_first"}, names, stem)
    # without the model (discover_layouts' own check): any number of colons before the count
    assert check_layout_overrides({"relu:::1": "channels_first"}, names) == {"relu:::1": "channels_first"}
    with pytest.raises(ValueError, match="not among the selected layers"):
        check_layout_overrides({"relu:x": "channels_first"}, names)


class _Refused(nn.Module):
    """Layers refused for different reasons, named with ``:`` and shared."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.Module()
        self.blocks.add_module("relu:1", nn.ReLU())  # measured: named with a colon, on its own
        self.blocks.add_module("fold:2", _Fold())  # not one map per image: refused
        self.blocks.add_module("act", nn.ReLU())  # shared; its second call sees a non-square map
        self.blocks.add_module("none:1", _NoTensor())  # returns no tensor: refused
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        x = getattr(self.blocks, "relu:1")(self.conv(x))
        getattr(self.blocks, "fold:2")(x)
        getattr(self.blocks, "none:1")(x)
        x = self.blocks.act(x)
        return self.blocks.act(x[..., :-2])  # 10 x 8 from 10 x 10 images: no map of the grid, refused


class _Fold(nn.Module):
    def forward(self, x):
        # twice the batch, by an operation whose layout no evidence settles (a reversible reshape
        # of channels into the batch axis would be folded back and measured, issue 21)
        return x.repeat(2, 1, 1, 1)


class _NoTensor(nn.Module):
    def forward(self, x):
        return {"not": "a tensor"}


def test_every_refusal_names_the_layer_in_full():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 10, 10)
    layers = ["blocks.relu:1", "blocks.fold:2", "blocks.act", "blocks.none:1"]
    with pytest.warns(RuntimeWarning):
        report = measure(_Refused(), x, layers=layers, measures=MEASURES, batch_size=64)
    assert {r.layer for r in report.results} == {"blocks.relu:1", "blocks.act"}
    refused = {layer for layer, _, _ in report.errors}
    assert refused == {"blocks.fold:2", "blocks.none:1", "blocks.act:1"}
    for (layer, _, _), reason in report.errors.items():
        assert repr(layer) in reason, (layer, reason)
    # on_error="raise": the first refusal, with the full name
    with pytest.raises(MeasureError, match=r"'blocks\.fold:2'"):
        measure(_Refused(), x, layers=layers, measures=MEASURES, batch_size=64, on_error="raise")


def test_a_failing_update_and_a_refusal_under_lee_cost_only_their_own_measure(monkeypatch):
    """One measure's update raising on one layer is recorded for that (layer, measure, group) alone; the
    Lie-derivative pass records a refused layer the same way and measures the others."""
    from lightning_equivariance.metrics import CorrelationEquivariance

    update = CorrelationEquivariance.update

    def failing(self, ctx, *args, **kwargs):
        if getattr(ctx, "layer", None) == "blocks.act":
            raise RuntimeError("state went bad")
        return update(self, ctx, *args, **kwargs)

    monkeypatch.setattr(CorrelationEquivariance, "update", failing)
    torch.manual_seed(0)
    x = torch.randn(4, 3, 10, 10)
    with pytest.warns(RuntimeWarning):
        report = measure(_Refused(), x, layers=["blocks.relu:1", "blocks.act"], measures=MEASURES, batch_size=64)
    got = {(r.layer, r.measure) for r in report.results}
    assert got == {("blocks.relu:1", "invariance"), ("blocks.relu:1", "equivariance"), ("blocks.act", "invariance")}
    assert "state went bad" in report.errors[("blocks.act", "equivariance", "rotation90")]
    monkeypatch.undo()
    with pytest.warns(RuntimeWarning):
        lee = measure(_Refused(), x, layers=["blocks.relu:1", "blocks.fold:2"], measures=["lee"], groups=["rotation"],
                      batch_size=64)
    assert [r.layer for r in lee.results] == ["blocks.relu:1"]
    assert "'blocks.fold:2'" in lee.errors[("blocks.fold:2", "lee", "rotation")]


def test_lie_derivative_names_a_shared_module_call_like_the_probe():
    torch.manual_seed(0)
    stem = _Stem()
    x = torch.randn(2, 3, 10, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = measure(stem, x, layers=["relu", "relu:1"], measures=["lee"], groups=["rotation"], batch_size=64)
    assert [r.layer for r in report.results] == ["relu", "relu:1", "relu::1"]


# ------------------------------------------------------------------- tiny batch_size --
#
# Every forward pays a fixed cost (the model's, every layer's measure updates): 4096 images at
# batch_size=2 took 612 s. A batch_size below two images' stacked views (1 + the groups'
# elements), or more than 1,000 forwards over the probe set, draws a warning with the fix.


def _tiny_model():
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_a_batch_size_below_two_images_views_warns_with_the_cost_and_the_fix():
    from lightning_equivariance import Measurement, Rotation90, Translation

    # rotation90: the image and its 3 rotations = 4 stacked views; Translation(2): 2 shifts more
    with pytest.warns(RuntimeWarning, match=r"batch_size=7 is smaller than twice the 4 stacked views") as caught:
        Measurement(_tiny_model(), groups=[Rotation90()], batch_size=7, chance=False)
    (warned,) = [w for w in caught if "batch_size" in str(w.message)]
    assert warned.filename == __file__  # points at the line that chose the batch_size
    message = str(warned.message)
    assert "1 image(s)" in message and "fixed cost" in message and "Raise batch_size" in message
    assert len(Translation(2)) == 2
    with pytest.warns(RuntimeWarning, match=r"batch_size=11 is smaller than twice the 6 stacked views"):
        Measurement(_tiny_model(), groups=[Rotation90(), Translation(2)], batch_size=11)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # two images' views and more: no warning
        Measurement(_tiny_model(), groups=[Rotation90()], batch_size=8)
        Measurement(_tiny_model(), groups=[Rotation90(), Translation(2)], batch_size=12)


def test_more_than_a_thousand_forwards_warn_before_measuring():
    from lightning_equivariance import Measurement
    from lightning_equivariance.engine import _warn_batch_cost

    images = torch.rand(2002, 1, 4, 4)
    m = Measurement(_tiny_model(), groups=["rotation90"], batch_size=8)  # 2 images per forward
    for inputs in (images, torch.utils.data.TensorDataset(images)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # stops at the warning: nothing is measured yet
            with pytest.raises(RuntimeWarning, match=r"2002 probe images at batch_size=8 .* take 1001 forwards") as e:
                m.update(inputs)
        assert "fixed cost" in str(e.value) and "Raise batch_size" in str(e.value) and m.num_samples == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_batch_cost(8, 4, 2, images=2000)  # 1000 forwards: no warning
        _warn_batch_cost(8, 4, 2)
    with pytest.warns(RuntimeWarning, match="take 1001 forwards") as caught:
        _warn_batch_cost(8, 4, 2, images=2001, stacklevel=1)
    assert caught[0].filename == __file__  # stacklevel=1: the caller of the checking function

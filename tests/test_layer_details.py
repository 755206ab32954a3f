"""Typed contracts between the measures and the engine: ``LayerDetails`` and a measure's declared ``best_value``."""
import dataclasses

import pytest
import torch

from lightning_equivariance import Rotation90, measure
from lightning_equivariance.metrics import MEASURES
from lightning_equivariance.metrics.base import LayerDetails
from lightning_equivariance.metrics.correlation import CorrelationInvariance
from models import SmallCNN

#: Each measure's best possible value: perfect equivariance in its direction (docs/measures.md).
BEST = {
    "invariance": 1.0, "equivariance": 1.0, "anova": 1.0,  # correlations and a fraction of units
    "geed_channel": -1.0,  # a negated cosine similarity
    "lee": 0.0, "geed_latent_l2": 0.0, "geed_softmax": 0.0, "same_equivariance": 0.0,  # errors and distances
}


def test_every_measure_declares_its_best_value():
    # the others (variances, distances without a bound, goodfellow, geed_latent_cosine) have none
    assert {name: cls.best_value for name, cls in MEASURES.items() if cls.best_value is not None} == BEST


def test_the_reports_best_value_is_the_declared_one_not_a_plot_bound(monkeypatch):
    # Widening the plot's axis must not move the above-chance scale.
    monkeypatch.setattr(CorrelationInvariance, "plot_upper_bound", 2.0)
    torch.manual_seed(0)
    report = measure(SmallCNN().eval(), torch.randn(8, 1, 16, 16), groups=(Rotation90(),),
                     measures=("invariance", "geed_channel"), layers=["conv1"])
    assert {r.measure: r.best for r in report.results} == {"invariance": 1.0, "geed_channel": -1.0}


def test_layer_details_from_a_mapping():
    per_element = torch.tensor([0.5, 0.25])
    d = LayerDetails.from_mapping({
        "value": torch.tensor(0.375, dtype=torch.float64), "per_element": per_element, "per_channel": None,
        "left_out": 2, "stderr": 0.01, "chance": 0.1, "margin_pairs": None, "F": 3.5, "critical_F": 2.0,
    })
    assert isinstance(d.value, float) and d.value == 0.375 and d.per_element is per_element
    assert (d.left_out, d.stderr, d.chance, d.margin_pairs, d.chance_left_out) == (2, 0.01, 0.1, 0, 0)
    assert d.margin is None and d.significant is None and d.element_names is None
    assert dict(d.extra) == {"F": 3.5, "critical_F": 2.0}  # a measure's own keys are kept, apart
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.value = 1.0


def test_layer_details_need_a_value_and_per_element():
    with pytest.raises(KeyError, match="'per_element'"):
        LayerDetails.from_mapping({"value": 1.0})
    with pytest.raises(KeyError, match="'value' and no 'per_element'"):
        LayerDetails.from_mapping({})


@pytest.mark.parametrize("name", ["invariance", "geed_channel", "anova"])
def test_every_key_a_measure_reports_is_a_field_or_an_extra(name):
    import lightning_equivariance.engine as engine

    torch.manual_seed(0)
    metrics = {}
    original = LayerDetails.from_mapping.__func__

    def spy(cls, details):
        metrics[name] = dict(details)
        return original(cls, details)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine.LayerDetails, "from_mapping", classmethod(spy))
        measure(SmallCNN().eval(), torch.randn(8, 1, 16, 16), groups=(Rotation90(),), measures=(name,),
                layers=["conv1"])
    raw = metrics[name]
    d = LayerDetails.from_mapping(raw)
    names = {f.name for f in dataclasses.fields(LayerDetails)}
    for key, value in raw.items():
        got = getattr(d, key) if key in names else d.extra[key]
        if isinstance(value, torch.Tensor) and key != "value":
            assert got is value, key
        else:
            assert got == (float(value) if key == "value" else value), key

"""Issue 23: the per-chunk bookkeeping the measures defer to the end of a chunk (deferred.py) runs once for
every layer, gives the states of adding each layer at once, and a failure costs only its own layer."""
import pytest
import torch
from torch import nn

from lightning_equivariance import Rotation90, measure
from lightning_equivariance.deferred import DeferredWork
from lightning_equivariance.functional.moments import chunk_pairs, layer_rows
from lightning_equivariance.metrics import CorrelationEquivariance, CorrelationInvariance
from lightning_equivariance.metrics.correlation import _CorrelationMeasure, add_layer_rows


def test_items_of_a_key_run_together_in_order_and_the_queue_empties():
    calls = []
    work = DeferredWork()
    for i in range(3):
        work.owner = f"owner{i}"
        work.defer("a", calls.append, i)
    work.defer("b", calls.append, "x")
    assert len(work) == 4
    assert work.run() == []
    assert calls == [[0, 1, 2], ["x"]]
    assert len(work) == 0 and work.run() == [] and calls == [[0, 1, 2], ["x"]]


def test_a_failing_group_is_retried_item_by_item_and_blames_only_the_bad_one():
    done = []

    def run(items):
        if "bad" in items:
            raise ValueError("bad item")
        done.extend(items)

    work = DeferredWork()
    for owner, item in [("L1", 1), ("L2", "bad"), ("L3", 3)]:
        work.owner = owner
        work.defer("k", run, item)
    failures = work.run()
    assert [(o, str(e)) for o, e in failures] == [("L2", "bad item")]
    assert done == [1, 3]


def _layer(seed, c, h=2, m=3, b=8):
    g = torch.Generator().manual_seed(seed)
    values = torch.rand(2, m, b, h, c, generator=g, dtype=torch.float64)
    valid = torch.rand(m, b, h, c, generator=g) > 0.3
    values[:, :, 5] = float("nan")  # a left-out image may hold anything
    keep = torch.ones(b, dtype=torch.bool)
    keep[5] = False
    pairs = chunk_pairs(torch.tensor([1, 0, 3, 2, 5, 4, 7, -1]), b) if h == 2 else None
    if h == 2:
        valid[:, :, 1] &= pairs.has.view(1, b, 1)
    return values, valid, keep, pairs


@pytest.mark.parametrize("h", [1, 2])
def test_layers_added_together_equal_each_layer_added_alone(h):
    """Three layers (of different channel counts), two chunks: the stacked moments and Chan merges of
    add_layer_rows give the states that adding each (layer, measure) on its own gives."""
    channels = [4, 7, 5]
    together = [(CorrelationInvariance(3, c), CorrelationEquivariance(3, c)) for c in channels]
    alone = [(CorrelationInvariance(3, c), CorrelationEquivariance(3, c)) for c in channels]
    for chunk in range(2):
        items = []
        for i, c in enumerate(channels):
            values, valid, keep, pairs = _layer(10 * chunk + i, c, h)
            rows = layer_rows(values, valid, keep, pairs)
            items += [(rows, together[i][0], 0), (rows, together[i][1], 1)]
            add_layer_rows([(rows, alone[i][0], 0)])
            add_layer_rows([(rows, alone[i][1], 1)])
        add_layer_rows(items)
    for pair_t, pair_a in zip(together, alone):
        for t, a in zip(pair_t, pair_a):
            for name in ("sums", "images", "moments"):
                torch.testing.assert_close(getattr(t, name), getattr(a, name), rtol=1e-13, atol=1e-13)
            assert t.images[0] == 2 * 7  # 8 images per chunk, one left out
            assert float(t.moments[0, 0]) > 0


def test_a_layer_whose_deferred_bookkeeping_fails_costs_only_its_own_measure(monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
    x = torch.randn(8, 3, 8, 8)
    kwargs = dict(measures=["invariance", "equivariance"], groups=[Rotation90()], batch_size=16)
    reference = measure(model, x, **kwargs)
    targets = _CorrelationMeasure._targets

    def broken(self, h):
        if self.measure_name == "equivariance" and self.sums.shape[-1] == 6:
            raise RuntimeError("broken state")
        return targets(self, h)

    monkeypatch.setattr(_CorrelationMeasure, "_targets", broken)
    with pytest.warns(RuntimeWarning, match="could not be measured"):
        report = measure(model, x, **kwargs)
    broken_layers = {k for k in report.errors if "broken state" in report.errors[k]}
    assert broken_layers and all(k[1] == "equivariance" for k in broken_layers)
    assert {r.layer for r in report.results if r.measure == "equivariance"} == {"0", "1"}
    expected = {(r.layer, r.measure): r.value for r in reference.results}
    for r in report.results:
        assert r.value == expected[(r.layer, r.measure)], r
    assert len(report.results) == len(reference.results) - 2


def test_two_metrics_of_the_same_measure_row_each_get_the_chunk():
    """A measure registered twice (two metrics taking the same row of one layer's rows): both are added."""
    values, valid, keep, pairs = _layer(3, 6)
    rows = layer_rows(values, valid, keep, pairs)
    first, second, alone = (CorrelationInvariance(3, 6) for _ in range(3))
    add_layer_rows([(rows, first, 0), (rows, second, 0)])
    add_layer_rows([(rows, alone, 0)])
    for metric in (first, second):
        for name in ("sums", "images", "moments"):
            assert torch.equal(getattr(metric, name), getattr(alone, name))
        assert float(metric.images[0]) == 7

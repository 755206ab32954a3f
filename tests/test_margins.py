"""The margin above chance and its interval (docs/measures.md §7, issue 24).

* ``margin``, ``margin_stderr``, ``margin_low`` and ``significant`` of ``invariance``,
  ``equivariance`` and ``geed_channel`` (lower is better) through :func:`measure` equal a
  brute-force computation from the hooked activations, written here straight from the
  definition (numpy loops over images, elements and channels; transforms re-implemented in
  ``reference``): an odd number of probe images, an image left out for NaN, several chunks,
  rotations (permuted path) and translations (masked path);
* fewer than 2 scored pairs: no interval, ``significant=False`` with the reason;
* planted cases: a layer whose output is seeded noise independent of its input is significant in
  at most 10 of 100 seeded runs; a layer built to sit clearly above chance is in every one;
* ``parts(detail=True)``, ``to_dataframe()`` and the tidy CSV carry the four fields.
"""
import csv
import math
from typing import Dict, List, Optional

import numpy as np
import pytest
import torch
from scipy.stats import t as student_t
from torch import nn

from lightning_equivariance import Rotation90, Translation, measure
from lightning_equivariance.functional.moments import margin_details
from lightning_equivariance.metrics import CorrelationEquivariance, GEEDChannel, LayerContext
from lightning_equivariance.run_log import CSV_COLUMNS, append_tidy_csv
from models import SmallCNN
from reference import capture, transform_np

MEASURES = ("invariance", "equivariance", "geed_channel")
SHIFTS = [(2, 1), (-1, 3)]


# ------------------------------------------------------------------ brute force
def _live(u: np.ndarray) -> bool:
    """A map is live when its centred norm is not round-off of its raw norm (the library's float64 rule)."""
    return bool(np.linalg.norm(u - u.mean()) > 1e-10 * np.linalg.norm(u))


def _pearson_relu(u: np.ndarray, v: np.ndarray) -> float:
    u, v = u - u.mean(), v - v.mean()
    return max(0.0, float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))))


def _cos(u: np.ndarray, v: np.ndarray) -> float:
    return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))


def _pair_scores(measure_name: str, us: List[np.ndarray], vs: List[np.ndarray]) -> List[Optional[float]]:
    """Per channel ``c``: the score of ``a(T_g x_i)_c`` against ``vs`` (``None`` where the pair does not count)."""
    out: List[Optional[float]] = []
    if measure_name == "geed_channel":
        for u, v in zip(us, vs):
            out.append(-_cos(u, v) if np.linalg.norm(u) > 0 and np.linalg.norm(v) > 0 else None)
        return out
    live_v = [_live(v) for v in vs]
    for c, u in enumerate(us):
        if not (_live(u) and live_v[c]):
            out.append(None)
        elif measure_name == "invariance":
            out.append(_pearson_relu(u, vs[c]))
        else:  # the max runs over the live channels of the second argument
            out.append(max(_pearson_relu(u, vs[k]) for k in range(len(vs)) if live_v[k]))
    return out


class Brute:
    """Every layer's activations of every image and transformed image, hooked with ``reference.capture``."""

    def __init__(self, model, images: torch.Tensor, elements, keep: List[bool]):
        self.elements, self.keep = elements, keep
        self.n, self.in_size = images.shape[0], tuple(images.shape[-2:])
        self.a_x = [capture(model, images[i : i + 1]) for i in range(self.n)]
        self.a_gx = [
            [capture(model, torch.from_numpy(transform_np(images[i].numpy(), e, self.in_size)[0].copy()).unsqueeze(0))
             for i in range(self.n)]
            for e in elements
        ]

    def _rows(self, layer: str, kind: str, measure_name: str, g: int, i: int, j: int):
        """Channel rows ``(us, vs)``: ``a(T_g x_i)`` against ``T'_g a(x_j)`` (vectors: one channel)."""
        agx = self.a_gx[g][i][layer]
        if kind == "vector":
            if measure_name == "geed_channel":  # T'_g acts trivially: the partner's orbit average
                v = np.mean([self.a_x[j][layer]] + [self.a_gx[h][j][layer] for h in range(len(self.elements))], axis=0)
            else:
                v = self.a_x[j][layer]
            return [agx.ravel()], [v.ravel()]
        moved, mask = transform_np(self.a_x[j][layer], self.elements[g], self.in_size)
        return [agx[c][mask] for c in range(agx.shape[0])], [moved[c][mask] for c in range(agx.shape[0])]

    def partner(self, i: int) -> Optional[int]:
        j = i ^ 1
        return j if j < self.n and self.keep[i] and self.keep[j] else None

    def scores(self, layer: str, kind: str, measure_name: str, chance: bool):
        """``{(g, i): [score or None per channel]}`` against the image's own map or its partner's."""
        out = {}
        for g in range(len(self.elements)):
            for i in range(self.n):
                j = self.partner(i) if chance else (i if self.keep[i] else None)
                if j is not None:
                    out[(g, i)] = _pair_scores(measure_name, *self._rows(layer, kind, measure_name, g, i, j))
        return out

    def pooled(self, scores) -> float:
        """Mean over elements of the mean over every counting (image, channel) pair."""
        per_element = []
        for g in range(len(self.elements)):
            vals = [s for (h, _), row in scores.items() if h == g for s in row if s is not None]
            per_element.append(np.mean(vals))
        return float(np.mean(per_element))

    def per_image(self, scores) -> Dict[int, float]:
        """``s_i``: mean over the elements where image ``i`` has a counting channel of its mean over them."""
        out = {}
        for i in range(self.n):
            means = [np.mean([s for s in scores[(g, i)] if s is not None]) for g in range(len(self.elements))
                     if (g, i) in scores and any(s is not None for s in scores[(g, i)])]
            if means:
                out[i] = float(np.mean(means))
        return out

    def margin(self, layer: str, kind: str, measure_name: str) -> Dict:
        own, chance = self.scores(layer, kind, measure_name, False), self.scores(layer, kind, measure_name, True)
        value, c = self.pooled(own), self.pooled(chance)
        lower_is_better = measure_name == "geed_channel"
        margin = c - value if lower_is_better else value - c
        s, ch = self.per_image(own), self.per_image(chance)
        d = {i: (ch[i] - s[i] if lower_is_better else s[i] - ch[i]) for i in s if i in ch}
        pairs = [(d[2 * k] + d[2 * k + 1]) / 2 for k in range(self.n // 2) if 2 * k in d and 2 * k + 1 in d]
        want = dict(value=value, chance=c, margin=margin, margin_pairs=len(pairs))
        if len(pairs) < 2:
            return dict(want, margin_stderr=None, margin_low=None, significant=False)
        se = float(np.std(pairs, ddof=1) / math.sqrt(len(pairs)))
        low = margin - float(student_t.ppf(0.95, len(pairs) - 1)) * se
        return dict(want, margin_stderr=se, margin_low=low, significant=low > 0)


def _check(report, brute: Brute) -> int:
    checked = 0
    for r in report.results:
        if r.measure not in MEASURES:
            continue
        want = brute.margin(r.layer, r.kind, r.measure)
        assert r.value == pytest.approx(want["value"], rel=1e-6, abs=1e-9), (r.layer, r.measure)
        assert r.chance == pytest.approx(want["chance"], rel=1e-6, abs=1e-9), (r.layer, r.measure)
        assert r.margin == pytest.approx(want["margin"], rel=1e-6, abs=1e-9), (r.layer, r.measure)
        assert r.margin_pairs == want["margin_pairs"], (r.layer, r.measure)
        for field in ("margin_stderr", "margin_low"):
            if want[field] is None:
                assert getattr(r, field) is None, (r.layer, r.measure, field)
            else:
                assert getattr(r, field) == pytest.approx(want[field], rel=1e-6, abs=1e-9), (r.layer, r.measure, field)
        assert r.significant is want["significant"], (r.layer, r.measure)
        assert (r.significance_reason is None) == r.significant, (r.layer, r.measure)
        checked += 1
    return checked


@pytest.mark.parametrize("group_name", ["rot90", "translation"])
def test_margin_and_its_interval_match_brute_force(group_name):
    torch.manual_seed(0)
    model = SmallCNN().double().eval()
    images = torch.rand(9, 1, 12, 12, dtype=torch.float64)  # odd: image 8 has no partner
    images[3, 0, 4, 5] = float("nan")  # image 3 is left out: pair (2, 3) has no chance term
    keep = [i != 3 for i in range(9)]
    if group_name == "rot90":
        group, elements = Rotation90(), [("rot", k) for k in (1, 2, 3)]
    else:
        group, elements = Translation(shifts=SHIFTS), [("shift", s) for s in SHIFTS]
    m = len(group.elements)
    # chunks of 2 images (pairs kept whole; the stacked forward holds the transformed copies too)
    with pytest.warns(RuntimeWarning):
        report = measure(model, images, measures=MEASURES, groups=[group], batch_size=2 * (m + 1))
    assert report.non_finite_inputs == [3] and not report.errors
    brute = Brute(model, images, elements, keep)
    assert _check(report, brute) >= 12
    # 4 scored pairs at most: (0, 1), (4, 5), (6, 7) - image 8 alone, pair (2, 3) broken
    assert {r.margin_pairs for r in report.results if r.measure in MEASURES} <= {0, 1, 2, 3}
    assert any(r.margin_pairs == 3 for r in report.results)


def test_one_chunk_equals_many():
    torch.manual_seed(1)
    model = SmallCNN().double().eval()
    images = torch.rand(11, 1, 12, 12, dtype=torch.float64)
    one = measure(model, images, measures=MEASURES, groups=[Rotation90()], batch_size=1000)
    many = measure(model, images, measures=MEASURES, groups=[Rotation90()], batch_size=8)
    for a, b in zip(one.results, many.results):
        for field in ("margin", "margin_stderr", "margin_low"):
            assert getattr(a, field) == pytest.approx(getattr(b, field), rel=1e-9, abs=1e-12), (a.layer, field)
        assert a.significant == b.significant and a.margin_pairs == b.margin_pairs == 5


def test_fewer_than_two_pairs_have_no_interval_and_say_why():
    torch.manual_seed(2)
    model = SmallCNN().double().eval()
    report = measure(model, torch.rand(3, 1, 12, 12, dtype=torch.float64), measures=MEASURES, groups=[Rotation90()])
    for r in report.results:
        if r.measure not in MEASURES or r.chance is None:
            continue
        assert r.margin is not None and r.margin_stderr is None and r.margin_low is None
        assert r.significant is False and r.margin_pairs == 1
        assert "at least 2" in r.significance_reason
    d = margin_details(0.3, torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64))
    assert d["significant"] is False and d["margin_low"] is None and "0 probe pairs" in d["significance_reason"]
    assert margin_details(None, None)["significant"] is None


def test_without_chance_every_margin_field_is_missing():
    torch.manual_seed(3)
    report = measure(SmallCNN(), torch.rand(4, 1, 12, 12), measures=MEASURES, groups=[Rotation90()], chance=False)
    for r in report.results:
        assert r.margin is None and r.margin_low is None and r.margin_stderr is None and r.significant is None


def test_tensor_update_partner_pairs_with_a_left_out_image():
    """The metric's tensor form: D_k only over mutual pairs with both images scored, brute force on the tensors."""
    gen = torch.Generator().manual_seed(4)
    group = Rotation90()
    b, c, s = 8, 3, 6
    a_x = torch.rand(b, c, s, s, generator=gen, dtype=torch.float64)
    moved = torch.stack([group.act_feature(a_x, g, (s, s)) for g in group.elements])
    a_gx = moved + 0.7 * torch.rand(3, b, c, s, s, generator=gen, dtype=torch.float64)
    partner = torch.tensor([1, 0, 3, 2, 5, 4, 7, 6])
    sample_mask = torch.tensor([True, True, True, False, True, True, True, True])
    metric = GEEDChannel(3, c)
    metric.update(a_gx, moved, sample_mask=sample_mask, partner=partner)
    d = metric.compute_details()

    def cos_np(u, v):
        return float((u * v).sum() / (np.linalg.norm(u) * np.linalg.norm(v)))

    def per_image(i, j):  # -cos pooled over channels, then elements: image i against image j's moved maps
        return np.mean([np.mean([-cos_np(a_gx[g, i, k].numpy(), moved[g, j, k].numpy()) for k in range(c)])
                        for g in range(3)])

    # lower is better: d_i = c_i - s_i; image 3 is left out, so pair (2, 3) does not count
    dd = {i: per_image(i, i ^ 1) - per_image(i, i) for i in (0, 1, 4, 5, 6, 7)}
    pairs = [(dd[i] + dd[i + 1]) / 2 for i in (0, 4, 6)]
    assert d["margin_pairs"] == 3
    assert d["margin_stderr"] == pytest.approx(np.std(pairs, ddof=1) / math.sqrt(3), rel=1e-9)
    assert d["margin"] == pytest.approx(d["chance"] - d["value"], rel=1e-12)
    assert d["margin_low"] == pytest.approx(d["margin"] - student_t.ppf(0.95, 2) * d["margin_stderr"], rel=1e-9)


# ------------------------------------------------------------------ planted cases
class _SeededNoise(nn.Module):
    """Output independent of the input: fresh seeded noise maps (4 x 6 x 6 per image)."""

    def __init__(self, seed: int):
        super().__init__()
        self.gen = torch.Generator().manual_seed(seed)

    def forward(self, x):
        return torch.randn(x.shape[0], 4, 6, 6, generator=self.gen, dtype=x.dtype)


def _planted_run(seed: int, layer: nn.Module, n: int = 24):
    gen = torch.Generator().manual_seed(10_000 + seed)
    x = torch.rand(n, 1, 6, 6, generator=gen, dtype=torch.float64)
    # the noise maps come from no operation on the input, so nothing is evidence of their layout: say it
    # (without it the layer is refused and the noise half of the test below would check nothing)
    report = measure(nn.Sequential(layer), x, measures=("equivariance", "geed_channel"), groups=[Rotation90()],
                     layers=["0"], layouts={"0": "channels_first"})
    results = {r.measure: r for r in report.results}
    assert sorted(results) == ["equivariance", "geed_channel"], report.errors
    return results


def test_noise_layer_is_rarely_significant_and_an_equivariant_layer_always_is():
    noise_hits = {"equivariance": 0, "geed_channel": 0}
    for seed in range(100):
        for name, r in _planted_run(seed, _SeededNoise(seed)).items():
            assert r.margin_pairs == 12 and r.margin_low is not None
            noise_hits[name] += bool(r.significant)
    assert all(hits <= 10 for hits in noise_hits.values()), noise_hits
    for seed in range(100):
        torch.manual_seed(seed)
        # an isotropic (rotation-equivariant) blur plus a little seeded noise: clearly above chance
        conv = nn.Conv2d(1, 4, 3, padding=1, bias=False).double()
        with torch.no_grad():
            conv.weight.copy_(torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], dtype=torch.float64)
                              * (torch.rand(4, 1, 1, 1, dtype=torch.float64) + 0.5))
        for name, r in _planted_run(seed, conv).items():
            assert r.significant is True, (seed, name, r.margin, r.margin_low)


# ------------------------------------------------------------------ carried through
def test_parts_dataframe_and_csv_carry_the_margin(tmp_path):
    torch.manual_seed(5)
    model = SmallCNN().double().eval()
    report = measure(model, torch.rand(10, 1, 12, 12, dtype=torch.float64), measures=MEASURES, groups=[Rotation90()])
    df = report.to_dataframe()
    for field in ("margin", "margin_stderr", "margin_low", "significant"):
        assert field in df.columns
    parts = report.parts(detail=True)
    assert list(parts.columns)[-4:] == ["margin", "margin_stderr", "margin_low", "significant"]
    for _, p in parts.iterrows():
        layers = df[(df.measure == p.measure) & (df.group == p.group) & (df.part == p.part)]
        assert p.margin == pytest.approx(layers.margin.mean())
        assert p.margin_low == pytest.approx(layers.margin_low.mean())
        assert p.significant == all(layers.significant)  # significance is per layer: a part is when all are
    path = tmp_path / "tidy.csv"
    append_tidy_csv(str(path), 7, 1, report.results)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    r0 = report.results[0]
    assert float(rows[0]["margin_low"]) == pytest.approx(r0.margin_low)
    assert rows[0]["significant"] == str(r0.significant)
    # a CSV begun by an earlier version (no margin columns) keeps its columns
    old = tmp_path / "old.csv"
    old.write_text(",".join(CSV_COLUMNS[:10]) + "\n")
    append_tidy_csv(str(old), 7, 1, report.results[:1])
    with open(old, newline="") as f:
        lines = list(csv.reader(f))
    assert len(lines[1]) == 10


def test_update_with_partner_stays_on_the_device():
    from host_sync import NoHostRead

    gen = torch.Generator().manual_seed(6)
    group = Rotation90()
    a_x = torch.rand(6, 3, 6, 6, generator=gen)
    a_gx = torch.rand(3, 6, 3, 6, 6, generator=gen)
    ctx = LayerContext(layer="l", kind="map", group=group, elements=group.elements, a_x=a_x, a_gx=a_gx,
                       input_size=(6, 6), partner=torch.tensor([1, 0, 3, 2, 5, 4]),
                       sample_mask=torch.tensor([True, True, False, True, True, True]))
    metrics = [CorrelationEquivariance.for_layer(ctx), GEEDChannel.for_layer(ctx)]
    with NoHostRead():
        for metric in metrics:
            metric.update(ctx)
    assert metrics[0].compute_details()["margin_pairs"] == 2


def test_report_plot_marks_layers_not_significantly_above_chance():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.manual_seed(7)
    report = measure(SmallCNN().double().eval(), torch.rand(10, 1, 12, 12, dtype=torch.float64),
                     measures=("equivariance",), groups=[Rotation90()])
    weak = [r.layer for r in report.results if r.significant is False]
    assert weak and len(weak) < len(report.results)
    fig, ax = report.plot()
    try:
        hollow = [line for line in ax.get_lines()
                  if line.get_linestyle() == "None" and line.get_markerfacecolor() == "white"]
        assert len(hollow) == 1 and len(hollow[0].get_xdata()) == len(weak)
        assert "not significantly above chance" in [t.get_text() for t in ax.get_legend().get_texts()]
    finally:
        plt.close(fig)

"""The tab as a new user first meets it (issue 26), in headless Chromium.

* A deep run (158 layers, ResNet-50's count, and 400): the rows scroll in their own box while
  the step axes and the colour bar stay in view, and every row is labelled at a legible height.
* A run group of a bounded measure whose interval over runs leaves [0, 1]: the band is drawn
  clipped to [0, 1] (the hover says so), the group's mean chance level is drawn, and the legend
  has chance entries apart from the values and the dashed baseline runs.
* A run trained with ``EquivarianceCallback()`` (no ``model_name``): the model is named after
  the network the LightningModule wraps, with its parameter count, not after the module.
"""
import os

import numpy as np
import pytest

import tb_helpers
from test_tb_frontend import run_js

pytestmark = pytest.mark.browser

if not os.path.exists(tb_helpers.CHROMIUM):
    pytest.skip("needs %s (apt-get install chromium chromium-driver)" % tb_helpers.CHROMIUM, allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402 - after the chromium skip
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402 - after the chromium skip

WAIT = 30
DEEP = {"deep158": 158, "deep400": 400}
GROUP_RUNS = {"seed0": 0.99, "seed1": 0.55, "seed2": 0.97}  # a wide interval over runs near 1
GROUP_LAYERS = ["conv1", "conv2", "pool", "fc"]
GROUP_PARTS = ["Early", "Late", "Pool", "Final"]
GROUP_CHANCE = {"seed0": 0.30, "seed1": 0.40, "seed2": 0.50}


def js(driver, script, *args):
    return driver.execute_script(script, *args)


def wait(driver, condition, message=""):
    return WebDriverWait(driver, WAIT).until(condition, message)


def _write_group_runs(path):
    """Three runs of the bounded measure ``equivariance`` in the group ``wide``: layer values
    0.99, 0.55, 0.97 (plus a little per epoch), chance 0.3 / 0.4 / 0.5; one baseline run."""
    from lightning_equivariance_tb.summary import Series

    for run, top in GROUP_RUNS.items():
        writer = tb_helpers.EventWriter(os.path.join(path, run))
        for epoch in range(3):
            values = np.full(len(GROUP_LAYERS), top - 0.01 * (2 - epoch))
            chance = np.full(len(GROUP_LAYERS), GROUP_CHANCE[run])
            series = Series(measure="equivariance", group="rot90", layers=GROUP_LAYERS, parts=GROUP_PARTS,
                            values=values, higher_is_better=True, chance=chance,
                            stderr=np.full(len(GROUP_LAYERS), 0.02))
            tb_helpers.write_series(writer, [series], epoch, model="tiny CNN", run_group="wide", epoch=epoch,
                                    walltime=1000.0 + epoch)
        writer.close()
    writer = tb_helpers.EventWriter(os.path.join(path, "reference"))
    for epoch in range(3):
        series = Series(measure="equivariance", group="rot90", layers=GROUP_LAYERS, parts=GROUP_PARTS,
                        values=np.full(len(GROUP_LAYERS), 0.8), higher_is_better=True,
                        chance=np.full(len(GROUP_LAYERS), 0.2))
        tb_helpers.write_series(writer, [series], epoch, model="steerable", baseline=True, epoch=epoch,
                                walltime=1000.0 + epoch)
    writer.close()


def _train_unnamed_run(path):
    """A LightningModule wrapping ``self.net = SmallCNN()``, fitted one epoch with an
    ``EquivarianceCallback()`` given no ``model_name``; returns the network's parameter count."""
    import warnings

    import lightning.pytorch as pl
    import torch
    import torch.nn.functional as F
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_equivariance import EquivarianceCallback
    from models import SmallCNN

    class Lit(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = SmallCNN()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self(batch[0]), batch[1])

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", F.cross_entropy(self(batch[0]), batch[1]))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    pl.seed_everything(0, verbose=False)
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 5, (32,))
    module = Lit()
    trainer = pl.Trainer(
        max_epochs=1, logger=TensorBoardLogger(path, name="unnamed", version="", default_hp_metric=False),
        callbacks=[EquivarianceCallback(num_samples=8, progress=False)], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu", devices=1,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        data = TensorDataset(x, y)
        trainer.fit(module, DataLoader(data, batch_size=16), DataLoader(data, batch_size=32))
    return sum(p.numel() for p in module.net.parameters())


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("first_hour")
    deep = path / "deep"
    for run, layers in DEEP.items():
        tb_helpers.write_stats_run(str(deep / run), n_layers=layers, uninformative=())
    groups = path / "groups"
    _write_group_runs(str(groups))
    named = path / "named"
    count = _train_unnamed_run(str(named))
    return {"deep": deep, "groups": groups, "named": named, "count": count}


@pytest.fixture(scope="module")
def driver():
    d = tb_helpers.chrome_driver(1400, 1000)
    yield d
    d.quit()


def _open(driver, tb):
    driver.get(tb.url + "/data/plugin_entry.html?name=equivariance")
    wait(driver, lambda d: js(d, "return document.body.dataset.renderCount"), "tab rendered")


def test_deep_heatmap_keeps_its_colour_bar_and_step_axis_in_view(driver, logdir):
    with tb_helpers.TensorBoardProcess(logdir["deep"]) as tb:
        _open(driver, tb)
        wait(driver, lambda d: js(d, "return document.querySelectorAll('.eq-heatmap[data-drawn=\"1\"]').length") == 2,
             "both heatmaps drawn")
        for run, layers in DEEP.items():
            canvas = driver.find_element(By.CSS_SELECTOR, '.eq-heatmap[data-run="%s"] canvas.eq-canvas' % run)
            # Every row labelled, at a height its label fits.
            ticks, row_h, rows, labels = js(driver, """
                const h = arguments[0].eqHeatmap, p = h.plot;
                return [p.yTicks.length, p.rowH, p.rows, p.yText];""", canvas)
            assert rows == ticks == layers and row_h >= 12, (run, rows, ticks, row_h)
            assert all(labels) and len(set(labels)) == layers  # distinct, none empty
            # Scroll the rows to the middle: the colour bar and both step axes stay on screen.
            state = js(driver, """
                const canvas = arguments[0], h = canvas.eqHeatmap, box = h.rowsBox;
                // the card's top just below the sticky toolbar, as a user scrolls to it
                const toolbar = document.querySelector('.eq-toolbar').getBoundingClientRect().bottom;
                window.scrollBy(0, box.closest('.eq-card').getBoundingClientRect().top - toolbar);
                box.scrollTop = (box.scrollHeight - box.clientHeight) / 2;
                const inView = (node) => {
                  const r = node.getBoundingClientRect();
                  return r.height > 0 && r.top >= 0 && r.bottom <= window.innerHeight && r.left >= 0 &&
                    r.right <= window.innerWidth;
                };
                const middle = Math.floor(h.plot.rows / 2), rowY = h.plot.top + (middle + 0.5) * h.plot.rowH;
                const c = canvas.getBoundingClientRect(), b = box.getBoundingClientRect();
                return {
                  scrollTop: box.scrollTop, scrollable: box.scrollHeight > box.clientHeight,
                  bar: inView(h.bar), bottomAxis: inView(h.bottomAxis), topAxis: inView(h.topAxis),
                  middleRowShown: c.top + rowY > b.top && c.top + rowY < b.bottom,
                  barHeight: h.bar.getBoundingClientRect().height, boxHeight: b.height,
                  barTicks: h.plot.barTicks.length,
                  rects: [h.bar, h.topAxis, h.bottomAxis, box.closest('.eq-card')].map((n) => {
                    const r = n.getBoundingClientRect();
                    return [r.left, r.top, r.right, r.bottom];
                  }),
                  window: [window.innerWidth, window.innerHeight],
                };""", canvas)
            assert state["scrollable"] and state["scrollTop"] > 0, state
            assert state["middleRowShown"], state
            assert state["bar"] and state["bottomAxis"] and state["topAxis"], repr(state)
            assert state["barHeight"] >= state["boxHeight"] and state["barTicks"] >= 3, state
            # The rows box fills the window's height: most of the rows area is on screen.
            assert state["boxHeight"] >= 0.6 * js(driver, "return window.innerHeight"), state
        # The step axis draws tick labels (pixels that are not white) in both axis canvases.
        inked = js(driver, """
            const h = document.querySelector('.eq-heatmap canvas.eq-canvas').eqHeatmap;
            return [h.topAxis, h.bottomAxis].map((c) => {
              const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
              let n = 0;
              for (let i = 0; i < d.length; i += 4) if (d[i] < 200) n += 1;
              return n;
            });""")
        assert all(n > 20 for n in inked), inked
        # A user-set height: 400 px of rows.
        from selenium.webdriver.support.ui import Select

        Select(driver.find_element(By.CSS_SELECTOR, ".eq-heat-height")).select_by_value("400")
        wait(driver, lambda d: js(d, "const b = document.querySelector('.eq-heat-rows');"
                                     "return b && Math.round(b.getBoundingClientRect().height) === 400"), "400 px rows")


def test_group_band_stays_in_the_measures_range_and_draws_its_chance(driver, logdir):
    with tb_helpers.TensorBoardProcess(logdir["groups"]) as tb:
        _open(driver, tb)
        driver.find_element(By.CSS_SELECTOR, '.eq-tabs button[data-view="curves"]').click()
        parts_plot = "const p = document.querySelector('.eq-card[data-id=\"curves-parts\"] .js-plotly-plot');"
        wait(driver, lambda d: js(d, parts_plot + "return p && p.data && p.data.some((t) => t.meta === 'group-band')"),
             "group band drawn")
        data = js(driver, """
            const p = document.querySelector('.eq-card[data-id="curves-parts"] .js-plotly-plot');
            const pick = (meta) => p.data.filter((t) => t.meta === meta);
            return {
              band: pick('group-band').map((t) => t.y.filter((v) => v != null)),
              chance: pick('group-chance').map((t) => [t.y, t.line.dash, t.showlegend, t.name]),
              mean: pick('group-mean').map((t) => t.customdata),
              legend: p.data.filter((t) => t.showlegend !== false).map((t) => [t.meta || 'run', t.name,
                (t.line || {}).dash || 'solid', (t.marker || {}).symbol || null]),
              yRange: p.layout.yaxis.range,
            };""")
        assert data["band"], data
        assert all(0 <= v <= 1 for band in data["band"] for v in band), data["band"]
        assert any(v == 1 for band in data["band"] for v in band)  # the upper end was clipped to 1
        clipped = [text for texts in data["mean"] for text in texts if "clipped to [0, 1]" in text]
        assert clipped, data["mean"]
        # The group's chance level: the mean of its runs' (0.3, 0.4, 0.5), dotted, in the legend.
        assert data["chance"], data
        y, dash, _, _ = data["chance"][0]
        assert dash == "dot" and np.allclose([v for v in y if v is not None], 0.4, atol=1e-6)
        entries = {meta: (name, dash, symbol) for meta, name, dash, symbol in data["legend"]}
        assert "group-chance" in entries and entries["group-chance"][0].startswith("chance")
        assert "chance" in entries and entries["chance"][1] == "dot"  # the baseline run's chance line
        baseline = [row for row in data["legend"] if row[0] == "run" and "(baseline)" in row[1]]
        assert baseline and baseline[0][2] == "dash" and baseline[0][3] == "diamond", data["legend"]
        # A bounded measure: the natural range by default...
        lo, hi = data["yRange"]
        assert lo <= 0 and hi >= 1 and hi - lo < 1.2, data["yRange"]
        # ... and "fit to data" as the option.
        driver.find_element(By.CSS_SELECTOR, ".eq-fit-y").click()
        wait(driver, lambda d: js(d, parts_plot + "return p.layout.yaxis.autorange !== false"), "fitted y axis")


def test_model_is_named_by_its_network(driver, logdir):
    with tb_helpers.TensorBoardProcess(logdir["named"]) as tb:
        _open(driver, tb)
        wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".eq-run-model"), "run list")
        names = js(driver, "return [...document.querySelectorAll('.eq-run-model')].map((n) => n.textContent)")
        assert names == ["SmallCNN (%s params)" % format(logdir["count"], ",")], names
        sub = js(driver, "return document.querySelector('.eq-heatmap .eq-card-sub').textContent")
        assert sub.startswith("SmallCNN (") and "Lit" not in sub


def test_clipping_and_group_chance_without_a_browser():
    """The pure functions behind the checks above (node): clipping, the group's chance level,
    the natural y range widened to values outside it."""
    out = run_js("""
        const c = m.clipInterval([0.023, -0.2, NaN], [1.604, 0.5, NaN], [0, 1]);
        const none = m.clipInterval([0.023], [1.604], null);
        const g = {xs: [0, 1], layers: ["a", "b"], part_names: ["Early"]};
        const member = (chance, steps) => ({
          steps, layers: ["a", "b"], parts: ["Early", "Early"], part_names: ["Early"],
          stats: {chance: {values: chance.map((row) => Float64Array.from(row))}},
        });
        const gc = m.groupChance(g, [member([[0.2, 0.4], [0.6, NaN]], [0, 1]),
                                     member([[0.4, 0.6], [0.8, 0.8]], [0, 1])]);
        out = {
          c, none,
          layer: gc.layer.map((row) => Array.from(row)), part: gc.part.map((row) => Array.from(row)),
          axis: m.rangeAxis([0, 1], [{y: [0.5, 0.9]}]), wide: m.rangeAxis([0, 1], [{y: [-0.5, 0.9]}]),
          unbounded: m.rangeAxis(null, [{y: [3]}]),
        };""")
    assert out["c"]["low"][:2] == [0.023, 0] and out["c"]["high"][:2] == [1, 0.5]
    assert out["c"]["clipped"] == [True, True, False]
    assert out["none"]["high"] == [1.604] and out["none"]["clipped"] == [False]
    assert np.allclose(out["layer"], [[0.3, 0.5], [0.7, 0.8]])
    # a part's chance: the mean of its layers' per run, then over runs: run 1 (0.4, 0.4), run 2 (0.6, 0.7)
    assert np.allclose(out["part"], [[0.5, 0.55]])
    assert out["axis"]["range"] == pytest.approx([-0.04, 1.04]) and out["axis"]["autorange"] is False
    assert out["wide"]["range"] == pytest.approx([-0.56, 1.06])
    assert out["unbounded"] is None

"""End-to-end: real training + real `tensorboard` + headless Chromium + the tab.

Needs Debian's ``chromium`` and ``chromium-driver`` (/usr/bin/chromium,
/usr/bin/chromedriver) and the ``selenium`` package; selenium never
downloads a driver here (the Service gets the executable path).

The log directory (:func:`make_logdir`) comes from a real training run:
three tiny CNNs fitted for 2 epochs with ``lightning.pytorch.Trainer``,
``TensorBoardLogger`` and ``EquivarianceCallback`` (per-channel data, a
``val_acc`` scalar, one baseline), plus a run with a hostile name and a run of
the normalised variance ``nv`` that reaches ``+inf`` (docs/measures.md §5),
both written from ``measure()`` reports of a trained model. The checks read
what to expect from the plugin's JSON routes, not from the data.

The README screenshots come from ``benchmarks/screenshots.py`` (the main
example's runs), not from here; this test saves its own screenshots to its
temporary directory only.
"""

import json
import math
import os
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest

import tb_helpers
from tb_helpers import XSS_RUN

pytestmark = pytest.mark.browser

if not os.path.exists(tb_helpers.CHROMIUM):
    pytest.skip(
        "needs %s (apt-get install chromium chromium-driver)" % tb_helpers.CHROMIUM,
        allow_module_level=True,
    )

from selenium.common.exceptions import NoAlertPresentException  # noqa: E402 - after the chromium skip
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402 - after the chromium skip
from selenium.webdriver.common.by import By  # noqa: E402 - after the chromium skip
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402 - after the chromium skip

WAIT = 30  # seconds, the bound of every wait
GROUP = tb_helpers.GROUP  # "rotation90", the callback's group name
NV_RUN = "nv_degenerate"


def make_logdir(path):
    """Train the runs the browser test serves; returns what the live-update
    and infinity checks need (the trained modules, probe images, run dirs).

    Real runs: ``cnn``, ``cnn_rotaug`` and the baseline ``cnn_wide``
    (Trainer + TensorBoardLogger + EquivarianceCallback, 2 epochs, 128
    images of 16x16, 32 probe images, per-channel data, ``val_acc``). From
    ``measure()`` reports of the trained ``cnn``: the hostile-name run and
    an ``nv`` run whose last point is ``+inf``.
    """
    import lightning.pytorch  # noqa: F401 - imported before the clock starts
    import torch  # noqa: F401 - imported before the clock starts

    import lightning_equivariance.callback  # noqa: F401 - imported before the clock starts

    started = time.monotonic()
    info = tb_helpers.train_logdir(path)
    tb_helpers.write_measured_run(path, XSS_RUN, info["cnn"])
    tb_helpers.write_nv_run(path, info["cnn"]["module"], run=NV_RUN)
    info["_seconds"] = time.monotonic() - started
    return info


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("tb_browser"))
    info = make_logdir(path)
    print("make_logdir: %.1f s (imports excluded)" % info["_seconds"])
    return path, info


@pytest.fixture(scope="module")
def logdir(trained):
    return trained[0]


@pytest.fixture(scope="module")
def tensorboard(logdir):
    with tb_helpers.TensorBoardProcess(logdir) as tb:
        yield tb


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("tb_browser_shots")


@pytest.fixture(scope="module")
def driver(tensorboard):
    drv = tb_helpers.chrome_driver(width=1400, height=1000)
    try:
        tb_helpers.open_plugin(drv, tensorboard.url, timeout=WAIT)
        wait(drv, lambda d: d.execute_script("return document.body.dataset.renderCount"))
        yield drv
    finally:
        drv.quit()


def wait(driver, condition, timeout=WAIT, message=""):
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition, message)


def api(tb, route, **params):
    url = "%s/data/plugin/equivariance/%s?%s" % (
        tb.url,
        route,
        urllib.parse.urlencode(params, doseq=True),
    )
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode("utf-8")
    # Strict JSON: no bare NaN / Infinity tokens; base64 matrices decoded into "values".
    body = json.loads(text, parse_constant=lambda c: pytest.fail("bare %s in JSON" % c))
    return tb_helpers.decode_values(body)


def number(value):
    """A JSON number of the routes: "Infinity"/"-Infinity" strings, null = NaN."""
    return math.nan if value is None else float(value)


def runs_with(tb, measure, group=GROUP):
    return [
        r["run"]
        for r in api(tb, "runs")["runs"]
        if any(s["measure"] == measure and s["group"] == group for s in r["series"])
    ]


def js(driver, script, *args):
    return driver.execute_script(script, *args)


def render_count(driver):
    return int(js(driver, "return document.body.dataset.renderCount || 0"))


def click_view(driver, view):
    before = render_count(driver)
    driver.find_element(By.CSS_SELECTOR, 'button[data-view="%s"]' % view).click()
    wait(driver, lambda d: render_count(d) > before, message="view %s" % view)


def select_measure(driver, measure):
    select = Select(driver.find_element(By.CSS_SELECTOR, ".eq-toolbar select"))
    if select.first_selected_option.get_attribute("value") == measure:
        return
    before = render_count(driver)
    select.select_by_value(measure)
    wait(driver, lambda d: render_count(d) > before, message="measure %s" % measure)


def drawn_heatmaps(driver):
    """{run: [rows, cols, first row, infinite cells]} of the drawn canvases."""
    return js(
        driver,
        """
        const out = {};
        for (const card of document.querySelectorAll('.eq-heatmap[data-drawn="1"]')) {
          const canvas = card.querySelector('canvas.eq-canvas');
          if (!canvas || !canvas.eqHeatmap) continue;
          out[card.dataset.run] = [Number(canvas.dataset.rows), Number(canvas.dataset.cols),
            canvas.eqHeatmap.row(0).map(v => (Number.isFinite(v) ? v : String(v))),
            Number(canvas.dataset.infinite)];
        }
        return out;
        """,
    )


def all_drawn(driver, runs):
    js(driver, "window.scrollTo(0, document.body.scrollHeight)")
    got = drawn_heatmaps(driver)
    return got if set(got) == set(runs) else False


def canvas_of(driver, run):
    return driver.find_element(
        By.CSS_SELECTOR, '.eq-heatmap[data-run="%s"] canvas.eq-canvas' % run
    )


def hover_cell(driver, canvas, r, c):
    """Move the mouse over cell (r, c) of a canvas heatmap; returns the
    tooltip's text."""
    js(driver, "arguments[0].scrollIntoView({block: 'center'})", canvas)
    dx, dy = js(
        driver,
        """
        const [canvas, r, c] = arguments;
        const p = canvas.eqHeatmap.plot;
        const box = canvas.getBoundingClientRect();
        const x = p.left + (c + 0.5) * p.pw / p.cols, y = p.top + (r + 0.5) * p.ph / p.rows;
        return [Math.round(x - box.width / 2), Math.round(y - box.height / 2)];
        """,
        canvas,
        r,
        c,
    )
    ActionChains(driver).move_to_element_with_offset(canvas, dx, dy).perform()
    tip = canvas.find_element(By.XPATH, "../div[contains(@class, 'eq-tip')]")
    wait(driver, lambda d: tip.is_displayed(), message="tooltip")
    return js(driver, "return arguments[0].textContent", tip)


def pixel_matches(driver, canvas, r, c):
    """[drawn rgb at the centre of cell (r, c), colorOf(value)]."""
    return js(
        driver,
        """
        const [canvas, r, c] = arguments;
        const h = canvas.eqHeatmap, p = h.plot, dpr = window.devicePixelRatio || 1;
        const x = p.left + (c + 0.5) * p.pw / p.cols, y = p.top + (r + 0.5) * p.ph / p.rows;
        const px = canvas.getContext('2d').getImageData(Math.floor(x * dpr), Math.floor(y * dpr), 1, 1).data;
        return [[px[0], px[1], px[2]], h.colorOf(h.valueAt(r, c))];
        """,
        canvas,
        r,
        c,
    )


def screenshot(driver, shots, name):
    driver.switch_to.default_content()
    driver.save_screenshot(str(shots / name))
    frame = driver.find_element(By.CSS_SELECTOR, 'iframe[src*="name=equivariance"]')
    driver.switch_to.frame(frame)


def assert_no_alert(driver):
    driver.switch_to.default_content()
    try:
        text = driver.switch_to.alert.text
    except NoAlertPresentException:
        pass
    else:  # pragma: no cover - the failure we guard against
        pytest.fail("an alert opened: %r" % text)
    finally:
        frame = driver.find_element(By.CSS_SELECTOR, 'iframe[src*="name=equivariance"]')
        driver.switch_to.frame(frame)


def test_real_runs_are_served(tensorboard):
    runs = {r["run"]: r for r in api(tensorboard, "runs")["runs"]}
    assert set(runs) == set(tb_helpers.TRAINED_RUNS) | {XSS_RUN, NV_RUN}
    for run in tb_helpers.TRAINED_RUNS:
        series = {(s["measure"], s["group"]): s for s in runs[run]["series"]}
        assert set(series) == {(m, GROUP) for m in tb_helpers.MEASURES}
        for s in series.values():
            assert s["has_channels"]
            # The last epoch is there: the callback logs at the epoch or (since it measures
            # every N optimizer steps) at the global step, with the epoch in its record.
            body = api(tensorboard, "series", run=run, measure=s["measure"], group=GROUP)
            assert body["steps"][-1] == s["last_step"]
            assert s["last_step"] == tb_helpers.EPOCHS - 1 or body["epochs"][-1] == tb_helpers.EPOCHS - 1
    assert runs["cnn_wide"]["baseline"] is True
    assert "val_acc" in [t["tag"] for t in api(tensorboard, "scalar_tags")["tags"]]


def test_first_render_needs_no_plotly(driver):
    # The heatmaps are drawn by our canvas renderer; plotly.js comes later.
    assert js(driver, "return document.body.dataset.view") == "heatmap"
    first = js(driver, "return window.eqFirstRenderMs")
    assert first is not None
    plotly_marks = js(
        driver, "return performance.getEntriesByName('eq-plotly').map(e => e.startTime)"
    )
    assert all(mark > first for mark in plotly_marks), (first, plotly_marks)


def test_heatmaps_match_the_data(tensorboard, driver):
    names = runs_with(tensorboard, "equivariance")
    assert js(driver, "return document.querySelector('select').value") == "equivariance"
    drawn = wait(driver, lambda d: all_drawn(d, names), message="all heatmaps drawn")
    for run in names:
        series = api(tensorboard, "series", run=run, measure="equivariance", group=GROUP)
        rows, cols, first_row, infinite = drawn[run]
        assert (rows, cols) == (len(series["layers"]), len(series["steps"]))
        assert infinite == 0
        np.testing.assert_allclose(first_row, series["values"][0], rtol=1e-6)
    # The pixels show the values: cell colours are the colour map's.
    canvas = canvas_of(driver, "cnn")
    rows, cols = drawn["cnn"][:2]
    for r, c in [(0, 0), (rows // 2, cols - 1), (rows - 1, 0)]:
        got, expected = pixel_matches(driver, canvas, r, c)
        assert np.abs(np.subtract(got, expected)).max() <= 2, (r, c, got, expected)
    # The tooltip: run, layer (part), epoch, value - as text.
    series = api(tensorboard, "series", run="cnn", measure="equivariance", group=GROUP)
    r, c = rows - 1, cols - 1
    text = hover_cell(driver, canvas, r, c)
    # the first lines; v2 adds the layer's statistics (stderr, chance, ...) after them
    # The callback logs at the global step with the epoch recorded beside it: the
    # x axis is the epoch (one point per epoch here), "global step" on request.
    epoch = series["epochs"][c] if series["epochs"][c] is not None else series["steps"][c]
    assert text.split("\n")[:4] == [
        "cnn",
        "layer %s (%s)" % (series["layers"][r], series["parts"][r]),
        "epoch %d" % epoch,
        "value %.4f" % series["values"][r][c],
    ]
    x_axis = Select(driver.find_element(By.CSS_SELECTOR, ".eq-x-axis"))
    assert x_axis.first_selected_option.get_attribute("value") == "epoch"
    before = render_count(driver)
    x_axis.select_by_value("global_step")
    wait(driver, lambda d: render_count(d) > before)
    canvas = canvas_of(driver, "cnn")
    step = series["global_steps"][c] if series["global_steps"][c] is not None else series["steps"][c]
    assert hover_cell(driver, canvas, r, c).split("\n")[2] == "global step %d" % step
    before = render_count(driver)
    Select(driver.find_element(By.CSS_SELECTOR, ".eq-x-axis")).select_by_value("epoch")
    wait(driver, lambda d: render_count(d) > before)


def tb_helpers_poll_seconds(driver):
    """The tab's polling interval (app.js POLL_MS), in seconds."""
    return js(driver, "return import('./app.js').then(m => m.POLL_MS / 1000)")


def set_run_visible(driver, run, visible):
    box = driver.find_element(By.CSS_SELECTOR, '.eq-run[data-run="%s"] input' % run)
    js(driver, "arguments[0].scrollIntoView({block: 'center'})", box)
    if box.is_selected() != visible:
        before = render_count(driver)
        box.click()
        wait(driver, lambda d: render_count(d) > before)


def test_views_render(tensorboard, driver, shots):
    set_run_visible(driver, XSS_RUN, False)
    js(driver, "window.scrollTo(0, 0)")
    wait(driver, lambda d: js(d, "return document.querySelector('.eq-heatmap[data-drawn=\"1\"]') != null"))
    screenshot(driver, shots, "heatmap.png")

    click_view(driver, "curves")
    panels = js(driver, "return document.querySelectorAll('.eq-card .js-plotly-plot').length")
    assert panels == 2
    screenshot(driver, shots, "curves.png")

    click_view(driver, "profile")
    runs = [
        r for r in api(tensorboard, "runs")["runs"]
        if r["run"] in runs_with(tensorboard, "equivariance") and r["run"] != XSS_RUN
    ]
    traces = js(driver, "return document.querySelector('.js-plotly-plot').data.length")
    assert traces == len(runs)
    dashed = js(
        driver,
        "return document.querySelector('.js-plotly-plot').data"
        ".filter(t => t.line.dash === 'dash').map(t => t.name)",
    )
    baselines = [r["run"] for r in runs if r["baseline"]]
    assert len(dashed) == len(baselines) == 1
    assert all(any(name.startswith(b) for b in baselines) for name in dashed)
    screenshot(driver, shots, "profile.png")

    click_view(driver, "channels")
    run_select = driver.find_elements(By.CSS_SELECTOR, ".eq-view-controls select")[0]
    options = [o.get_attribute("value") for o in Select(run_select).options]
    run = "cnn_rotaug"
    assert run in options
    before = render_count(driver)
    Select(run_select).select_by_value(run)
    wait(driver, lambda d: render_count(d) > before)
    layer_select = driver.find_elements(By.CSS_SELECTOR, ".eq-view-controls select")[1]
    layers = [o.get_attribute("value") for o in Select(layer_select).options]
    layer = layers[(2 * len(layers)) // 3]
    before = render_count(driver)
    Select(layer_select).select_by_value(layer)
    wait(driver, lambda d: render_count(d) > before)
    body = api(tensorboard, "channels", run=run, measure="equivariance", group=GROUP, layer=layer)
    canvas = driver.find_element(By.CSS_SELECTOR, '.eq-card[data-id="channels-heat"] canvas.eq-canvas')
    shape = [int(canvas.get_attribute("data-rows")), int(canvas.get_attribute("data-cols"))]
    assert shape == [body["channels"], len(body["steps"])]
    np.testing.assert_allclose(
        js(driver, "return arguments[0].eqHeatmap.row(0)", canvas), body["values"][0], rtol=1e-6
    )
    bars = js(driver, "return document.querySelector('.js-plotly-plot').data[0].y.length")
    assert bars == body["channels"]
    screenshot(driver, shots, "channels.png")

    click_view(driver, "spearman")
    wait(driver, lambda d: js(d, "return document.querySelectorAll('.eq-table tr[data-part]').length"))
    assert Select(
        driver.find_element(By.CSS_SELECTOR, ".eq-view-controls select")
    ).first_selected_option.text == "val_acc"
    expected = api(
        tensorboard, "spearman", measure="equivariance", group=GROUP,
        scalar="val_acc", run=[r["run"] for r in runs],
    )
    cells = js(
        driver,
        "return [...document.querySelectorAll('.eq-table tr[data-part]')]"
        ".map(tr => [tr.dataset.part, tr.children[1].textContent])",
    )
    assert cells == [
        [p["part"], "–" if p["rho"] is None else "%.3f" % p["rho"]]
        for p in expected["parts"]
    ]
    screenshot(driver, shots, "spearman.png")
    click_view(driver, "heatmap")
    set_run_visible(driver, XSS_RUN, True)


def test_switch_measure(tensorboard, driver):
    select_measure(driver, "invariance")
    series = api(tensorboard, "series", run="cnn", measure="invariance", group=GROUP)
    drawn = wait(
        driver,
        lambda d: drawn_heatmaps(d).get("cnn"),
        message="cnn heatmap after switching measure",
    )
    np.testing.assert_allclose(drawn[2], series["values"][0], rtol=1e-6)


def test_live_update_keeps_selection(tensorboard, driver, trained):
    # User state: measure "invariance" (previous test), cnn_rotaug hidden.
    set_run_visible(driver, "cnn_rotaug", False)
    js(driver, "window.__sameDocument = true")

    run = "cnn"
    series = api(tensorboard, "series", run=run, measure="invariance", group=GROUP)
    last = series["steps"][-1]
    # A real write: measure the trained model again, log it at the next step.
    report = tb_helpers.append_measured_epoch(trained[1][run], last + 1)
    new_values = next(s for s in report.series() if s.measure == "invariance").values

    def updated(d):
        got = drawn_heatmaps(d).get(run)
        return got if got and got[1] == len(series["steps"]) + 1 else False

    wait(driver, updated, message="new epoch shown without reload")
    canvas = canvas_of(driver, run)
    column = js(
        driver,
        "const h = arguments[0].eqHeatmap; return h.spec.values.map(row => row[row.length - 1])",
        canvas,
    )
    np.testing.assert_allclose(column, new_values, rtol=1e-6)
    assert js(driver, "return window.__sameDocument") is True  # no page reload
    assert Select(driver.find_element(By.CSS_SELECTOR, ".eq-toolbar select")).first_selected_option.text == "invariance"
    assert not driver.find_element(By.CSS_SELECTOR, '.eq-run[data-run="cnn_rotaug"] input').is_selected()
    assert "cnn_rotaug" not in drawn_heatmaps(driver)
    set_run_visible(driver, "cnn_rotaug", True)


def test_hostile_run_name_is_text(driver):
    assert_no_alert(driver)
    label = driver.find_element(By.CSS_SELECTOR, '.eq-run[data-run="%s"] .eq-run-name' % XSS_RUN)
    assert label.text == XSS_RUN
    model = driver.find_element(By.CSS_SELECTOR, '.eq-run[data-run="%s"] .eq-run-model' % XSS_RUN)
    assert model.text == "<b>evil</b> model"
    # Canvas heatmap: title and tooltip are text.
    title = driver.find_element(By.CSS_SELECTOR, '.eq-heatmap[data-run="%s"] .eq-card-title' % XSS_RUN)
    assert title.text.startswith(XSS_RUN)
    tip = hover_cell(driver, canvas_of(driver, XSS_RUN), 0, 0)
    assert tip.split("\n")[0] == XSS_RUN
    click_view(driver, "profile")
    legend = js(
        driver,
        "return [...document.querySelectorAll('.legendtext')].map(t => t.textContent)",
    )
    assert any(text.startswith(XSS_RUN) for text in legend), legend
    assert js(driver, "return document.querySelectorAll('img, b, [onerror]').length") == 0
    assert_no_alert(driver)
    driver.switch_to.default_content()
    assert js(driver, "return document.querySelectorAll('img[src=\"x\"], [onerror]').length") == 0
    logs = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not [m for m in logs if "equivariance" in m], logs
    frame = driver.find_element(By.CSS_SELECTOR, 'iframe[src*="name=equivariance"]')
    driver.switch_to.frame(frame)
    click_view(driver, "heatmap")


def test_infinite_values_are_shown(tensorboard, driver, shots):
    # nv = TV / SV (docs/measures.md §5) with x/0 = +inf: the nv run's
    # last point was measured on one image repeated (SV = 0).
    select_measure(driver, "nv")
    series = api(tensorboard, "series", run=NV_RUN, measure="nv", group=GROUP)
    values = [[number(v) for v in row] for row in series["values"]]
    inf_cells = [(r, c) for r, row in enumerate(values) for c, v in enumerate(row) if v == math.inf]
    assert inf_cells, values
    drawn = wait(driver, lambda d: drawn_heatmaps(d).get(NV_RUN), message="nv heatmap")
    assert drawn[3] == len(inf_cells)
    assert drawn[2] == ["Infinity" if v == math.inf else pytest.approx(v, rel=1e-6) for v in values[0]]
    hint = js(driver, "return document.querySelector('.eq-main .eq-hint').textContent")
    assert "Hatched cells are +∞" in hint
    canvas = canvas_of(driver, NV_RUN)
    r, c = inf_cells[-1]
    assert "value ∞" in hover_cell(driver, canvas, r, c).split("\n")  # then the layer's statistics (v2)
    # +inf takes the colour of the scale's top end (under the hatching).
    top_colour, inf_colour = js(
        driver,
        "const h = arguments[0].eqHeatmap; return [h.colorOf(h.spec.zmax), h.colorOf(Infinity)]",
        canvas,
    )
    assert top_colour == inf_colour
    screenshot(driver, shots, "infinite_heatmap.png")

    click_view(driver, "profile")
    trace = js(
        driver,
        "const t = document.querySelector('.js-plotly-plot').data[0];"
        "return [t.text, t.marker.symbol];",
    )
    assert "∞" in trace[0]
    assert "triangle-up" in trace[1]
    labels = js(
        driver,
        "return [...document.querySelectorAll('.annotation-text')].map(t => t.textContent)",
    )
    assert "+∞" in labels
    screenshot(driver, shots, "infinite_profile.png")
    click_view(driver, "heatmap")
    select_measure(driver, "equivariance")


def test_downsampled_note(driver, tmp_path):
    # Without --samples_per_plugin TensorBoard keeps 100 points per tag
    # (Rust data server; 10 with the Python loader).
    tb_helpers.write_long_run(tmp_path / "long_run", epochs=120)
    with tb_helpers.TensorBoardProcess(tmp_path, keep_all=False) as tb:
        driver.switch_to.default_content()
        # The plugin's page alone (what TensorBoard puts in the iframe).
        driver.get(tb.url + "/data/plugin_entry.html?name=equivariance")
        wait(driver, lambda d: js(d, "return document.body.dataset.renderCount"))
        banner = wait(
            driver,
            lambda d: js(d, "const b = document.querySelector('.eq-banner');"
                            "return b.hidden ? false : b.textContent"),
            message="down-sampling note",
        )
        assert "--samples_per_plugin=equivariance=0" in banner
        sub = driver.find_element(By.CSS_SELECTOR, ".eq-heatmap .eq-card-sub").text
        assert "of 120 epochs kept by TensorBoard" in sub


def test_hand_written_logs(driver, tmp_path):
    # Event files another program wrote: a depth part named with markup, a measure
    # without a preferred direction (sv), a run whose tensors are strings (its
    # series cannot be read: the other runs are still drawn, it is named).
    tb_helpers.write_malformed_logdir(tmp_path)
    with tb_helpers.TensorBoardProcess(tmp_path) as tb:
        driver.switch_to.default_content()
        driver.get(tb.url + "/data/plugin_entry.html?name=equivariance")
        wait(driver, lambda d: js(d, "return document.body.dataset.renderCount"))
        readable = {"bad_channels", "bad_shape", "bad_record", "markup_part", "good_a", "good_b"}
        wait(driver, lambda d: all_drawn(d, readable), message="readable runs drawn")
        banner = wait(driver, lambda d: js(d, "const b = document.querySelector('.eq-banner');"
                                              "return b.hidden ? false : b.textContent"))
        assert "run(s) not shown, e.g. string_tensor: Not found: run 'string_tensor' has no readable data" in banner
        tag = driver.find_element(By.CSS_SELECTOR, '.eq-run[data-run="string_tensor"] .eq-tag.eq-warn')
        assert tag.text == "unreadable"

        # The part name is text: in the canvas tooltip and in the plotly hover.
        tip = hover_cell(driver, canvas_of(driver, "markup_part"), 0, 0)
        assert tip.split("\n")[1] == "layer c0 (%s)" % tb_helpers.MARKUP_PART
        click_view(driver, "profile")
        customdata = js(
            driver,
            "return [...document.querySelector('.js-plotly-plot').data]"
            ".filter(t => t.name.startsWith('markup_part')).map(t => t.customdata[0])",
        )
        assert customdata == ["c0 (&lt;b&gt;Head&lt;/b&gt;&lt;img src=x onerror=alert(2)&gt;)"]
        plot = driver.find_element(By.CSS_SELECTOR, ".js-plotly-plot")
        ActionChains(driver).move_to_element(plot).perform()  # hover labels get drawn
        assert js(driver, "return document.querySelectorAll('img, b, [onerror]').length") == 0
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.text  # noqa: B018 - reading the alert is the check: it raises when none is open

        # sv: no preferred direction - the hint says so, the colours are not reversed.
        click_view(driver, "heatmap")
        select_measure(driver, "sv")
        canvas = wait(
            driver, lambda d: d.find_elements(By.CSS_SELECTOR, '.eq-heatmap[data-run="sv_run"] canvas.eq-canvas')
        )[0]
        hint = js(driver, "return document.querySelector('.eq-main .eq-hint').textContent")
        assert "this measure has no preferred direction" in hint
        assert "lower is" not in hint and "higher is" not in hint
        top = js(driver, "const h = arguments[0].eqHeatmap; return h.colorOf(h.spec.zmax)", canvas)
        assert top == [253, 231, 37]  # viridis's top end: not reversed


def hover_cell_js(driver, canvas, r, c):
    """Tooltip text of cell (r, c) from a mousemove dispatched at its centre (the
    cell scrolled into view first: tall heatmaps scroll inside their card)."""
    return js(
        driver,
        """
        const [canvas, r, c] = arguments;
        const h = canvas.eqHeatmap, p = h.plot;
        const y = p.top + (r + 0.5) * p.ph / p.rows, x = p.left + (c + 0.5) * p.pw / p.cols;
        const box = canvas.closest('.eq-plot');
        box.scrollIntoView({block: 'center'});
        box.scrollTop = Math.max(0, y - box.clientHeight / 2);
        const rect = canvas.getBoundingClientRect();
        canvas.dispatchEvent(
          new MouseEvent('mousemove', {clientX: rect.left + x, clientY: rect.top + y, bubbles: true}));
        return h.tip.hidden ? null : h.tip.textContent;
        """,
        canvas,
        r,
        c,
    )


def test_statistics_and_deep_heatmap(driver, tmp_path):
    # A 60-layer run with chance levels and standard errors (docs/measures.md §7).
    expected = tb_helpers.write_stats_run(tmp_path / tb_helpers.STATS_RUN)
    run = tb_helpers.STATS_RUN
    with tb_helpers.TensorBoardProcess(tmp_path) as tb:
        driver.switch_to.default_content()
        driver.get(tb.url + "/data/plugin_entry.html?name=equivariance")
        wait(driver, lambda d: js(d, "return document.body.dataset.renderCount"))
        wait(driver, lambda d: all_drawn(d, {run}), message="deep heatmap drawn")
        canvas = canvas_of(driver, run)
        # Every row labelled, rows tall enough to read; the card scrolls.
        ticks, row_h, rows = js(
            driver,
            "const p = arguments[0].eqHeatmap.plot; return [p.yTicks.length, p.rowH, p.rows]",
            canvas,
        )
        assert rows == ticks == 60 and row_h >= 12, (rows, ticks, row_h)
        assert js(
            driver,
            "const s = getComputedStyle(arguments[0].closest('.eq-plot')); return s.overflowY",
            canvas,
        ) == "auto"
        # The colour bar: a title, both ends labelled.
        bar = js(
            driver,
            "const h = arguments[0].eqHeatmap; return [h.spec.barTitle, h.plot.barTicks[0],"
            " h.plot.barTicks[h.plot.barTicks.length - 1], h.spec.zmin, h.spec.zmax]",
            canvas,
        )
        assert bar[0] == "equivariance" and bar[1] == bar[3] and bar[2] == bar[4]
        hint = js(driver, "return document.querySelector('.eq-main .eq-hint').textContent")
        assert "higher is more equivariant" in hint and "uninformative" in hint
        # Uninformative layers: greyed and hatched, the reason in the tooltip.
        assert int(canvas.get_attribute("data-uninformative")) == 3 * 3
        tip = hover_cell_js(driver, canvas, 58, 2).split("\n")
        assert "uninformative: chance 0.970 > 0.95" in tip, tip
        assert "chance 0.9700" in tip and "± stderr 0.0200" in tip, tip

        # Fixed scale 0..1, then colour by how far above chance.
        scale = Select(driver.find_element(By.CSS_SELECTOR, ".eq-heat-scale"))
        before = render_count(driver)
        scale.select_by_value("fixed")
        wait(driver, lambda d: render_count(d) > before)
        canvas = canvas_of(driver, run)
        assert js(driver, "const h = arguments[0].eqHeatmap; return [h.spec.zmin, h.spec.zmax]", canvas) == [0, 1]
        color = Select(driver.find_element(By.CSS_SELECTOR, ".eq-heat-color"))
        before = render_count(driver)
        color.select_by_value("above_chance")
        wait(driver, lambda d: render_count(d) > before)
        canvas = canvas_of(driver, run)
        row0 = js(driver, "return arguments[0].eqHeatmap.row(0)", canvas)
        v, c = expected["values"][0], expected["chance"][0]
        assert row0[-1] == pytest.approx((v - c) / (1 - c), rel=1e-5)
        assert js(driver, "return arguments[0].eqHeatmap.spec.barTitle", canvas).startswith("above chance")
        tip = hover_cell_js(driver, canvas, 0, 2).split("\n")
        assert tip[3].startswith("above chance ") and ("value %.4f" % v) in tip, tip

        # Curves: the chance level dotted, the ± stderr band filled, value/chance/stderr in the hover.
        click_view(driver, "curves")
        traces = js(
            driver,
            "return [...document.querySelectorAll('.js-plotly-plot')].flatMap(p => p.data)"
            ".map(t => [t.meta || '', t.line && t.line.dash, t.fill || '', t.hovertext ? t.hovertext[0] : ''])",
        )
        chance = [t for t in traces if t[0] == "chance"]
        bands = [t for t in traces if t[0] == "stderr"]
        assert chance and all(t[1] == "dot" for t in chance)  # dotted: baseline runs are the dashed ones
        assert bands and all(t[2] == "toself" for t in bands)
        assert any("chance" in t[3] and "stderr" in t[3] for t in traces), traces
        layer_chance = js(
            driver,
            "const p = document.querySelectorAll('.js-plotly-plot')[1];"
            "return p.data.filter(t => t.meta === 'chance').map(t => t.y)",
        )
        np.testing.assert_allclose(layer_chance[0][-1], expected["chance"][0], rtol=1e-6)

        # Layer profile: the chance level (dotted) and the band as shapes; one trace per run.
        click_view(driver, "profile")
        shapes = js(
            driver,
            "const p = document.querySelector('.js-plotly-plot');"
            "return [p.data.length, "
            "(p.layout.shapes || []).map(s => [s.name, s.line && s.line.dash, s.fillcolor || ''])]",
        )
        assert shapes[0] == 1
        assert ["chance", "dot", ""] in [[s[0], s[1], s[2]] for s in shapes[1]]  # dotted: not a baseline's dash
        assert any(s[0] == "stderr" and s[2].startswith("rgba") for s in shapes[1])
        assert js(driver, "return document.querySelector('.js-plotly-plot').data[0].hovertext[0]").startswith(
            "<br>chance"
        )


def test_not_significant_layers_are_hatched_with_their_interval(driver, tmp_path):
    # Issue 24: a layer not significantly above chance is drawn like an uninformative one
    # (hatched corner flag, the reason on hover); the hover shows the margin with its interval;
    # "significant only" colours only the significant cells.
    tb_helpers.write_margin_run(tmp_path / tb_helpers.MARGIN_RUN)
    run = tb_helpers.MARGIN_RUN
    with tb_helpers.TensorBoardProcess(tmp_path) as tb:
        driver.switch_to.default_content()
        driver.get(tb.url + "/data/plugin_entry.html?name=equivariance")
        wait(driver, lambda d: js(d, "return document.body.dataset.renderCount"))
        wait(driver, lambda d: all_drawn(d, {run}), message="margin heatmap drawn")
        canvas = canvas_of(driver, run)
        assert int(canvas.get_attribute("data-uninformative")) == 2 * 2  # layers 2 and 4, both epochs
        hint = js(driver, "return document.querySelector('.eq-main .eq-hint').textContent")
        assert "not significantly above chance" in hint
        # the hatched flag in the cell's top-left corner, the cell's own colour at its centre
        corner, centre, own = js(
            driver,
            """
            const [canvas, r, c] = arguments;
            const h = canvas.eqHeatmap, p = h.plot, dpr = window.devicePixelRatio || 1;
            const x0 = p.left + c * p.pw / p.cols, y0 = p.top + r * p.ph / p.rows;
            const at = (x, y) => Array.from(
              canvas.getContext('2d').getImageData(Math.floor(x * dpr), Math.floor(y * dpr), 1, 1).data.slice(0, 3));
            const centre = at(x0 + 0.5 * p.pw / p.cols, y0 + 0.5 * p.ph / p.rows);
            return [at(x0 + 2, y0 + 2), centre, h.colorOf(h.valueAt(r, c))];
            """,
            canvas, 2, 1,
        )
        assert centre == own and corner != own, (corner, centre, own)
        tip = hover_cell(driver, canvas, 2, 1).split("\n")
        assert "not significantly above chance: 95% lower bound -0.020 ≤ 0" in tip, tip
        assert "margin 0.0100, 95% interval [-0.0200, ∞)" in tip, tip
        tip = hover_cell(driver, canvas, 0, 1).split("\n")
        assert "margin 0.2000, 95% interval [0.1500, ∞)" in tip, tip
        assert not any("not significantly" in t for t in tip), tip
        tip = hover_cell(driver, canvas, 4, 1).split("\n")
        assert "margin 0.0500, no interval (fewer than 2 scored probe pairs)" in tip, tip

        # "significant only": the not-significant cells lose their colour, the others keep it
        box = driver.find_element(By.CSS_SELECTOR, ".eq-significant-only")
        assert box.is_enabled() and not box.is_selected()
        before = render_count(driver)
        box.click()
        wait(driver, lambda d: render_count(d) > before)
        canvas = canvas_of(driver, run)
        row2, row0 = js(driver, "const h = arguments[0].eqHeatmap; return [h.row(2), h.row(0)]", canvas)
        assert all(v is None or v != v for v in row2), row2  # NaN (JSON null): uncoloured
        np.testing.assert_allclose(row0, [0.5, 0.5], rtol=1e-6)
        tip = hover_cell(driver, canvas, 2, 1).split("\n")
        assert "value 0.3100" in tip, tip

        # curves: a part's hover carries the mean of its layers' margins with the interval
        click_view(driver, "curves")
        hovers = js(
            driver,
            "const p = document.querySelectorAll('.js-plotly-plot')[0];"
            "return p.data.filter(t => t.hovertext).map(t => t.hovertext[0])",
        )
        assert any("margin" in h and "95% interval" in h for h in hovers), hovers


def group_band_area(driver):
    """{group name: [band trace count, mean y of the first panel's band]} of the curves."""
    return js(
        driver,
        """
        const p = document.querySelector('.eq-card[data-id="curves-parts"] .js-plotly-plot');
        const out = {};
        for (const t of p.data) {
          if (t.meta !== 'group-band') continue;
          const name = t.name.split(' · ').pop();
          const ys = t.y.filter(v => v != null);
          out[name] = out[name] || [0, 0];
          out[name][0] += 1;
          out[name][1] += ys.reduce((a, b) => a + b, 0) / ys.length;
        }
        return out;
        """,
    )


@pytest.fixture(scope="module")
def own_driver():
    """A browser of its own (no trained logdir needed) for the tests that serve
    their own log directory."""
    drv = tb_helpers.chrome_driver(width=1400, height=1000)
    try:
        yield drv
    finally:
        drv.quit()


def test_run_groups(own_driver, tmp_path):
    driver = own_driver
    # Issue 15: runs grouped by their recorded run_group; the plugin's mean and 95%
    # Student-t interval over runs drawn as bands; a run toggled out of its group
    # changes the group; a group of one run is drawn as the run; baseline groups dashed.
    logged = tb_helpers.write_group_logdir(tmp_path)
    with tb_helpers.TensorBoardProcess(tmp_path) as tb:
        driver.switch_to.default_content()
        driver.get(tb.url + "/data/plugin_entry.html?name=equivariance")
        wait(driver, lambda d: js(d, "return document.body.dataset.renderCount"))
        # Recorded groups are used by default; the sidebar names each group and its runs.
        wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".eq-group-entry")) == 3, message="groups listed")
        assert (
            Select(driver.find_element(By.CSS_SELECTOR, ".eq-group-by")).first_selected_option.get_attribute("value")
            == "recorded"
        )
        entries = js(driver, "return [...document.querySelectorAll('.eq-group-entry')].map(e => e.textContent)")
        assert entries == ["cnn3 runs", "rotaug2 runs", "steerable1 run (shown as the run)"]
        note = driver.find_element(By.CSS_SELECTOR, ".eq-interval-note").text
        assert "95% Student-t interval over runs" in note

        # Heatmap: one card per group of 2+ runs (the group mean), the others as runs.
        wait(
            driver,
            lambda d: js(d, "return document.querySelectorAll('.eq-heatmap-group[data-drawn=\"1\"]').length") == 2,
        )
        runs_drawn = set(wait(driver, lambda d: all_drawn(d, {"steerable_seed0", "lone_run"}), message="runs drawn"))
        assert runs_drawn == {"steerable_seed0", "lone_run"}
        canvas = driver.find_element(By.CSS_SELECTOR, '.eq-heatmap-group[data-group="cnn"] canvas.eq-canvas')
        body = api(tb, "groups", measure="equivariance", group="rot90",
                   run=sorted(logged))
        cnn = next(g for g in body["groups"] if g["name"] == "cnn")
        mean = np.frombuffer(__import__("base64").b64decode(cnn["mean_base64"]), "<f8").reshape(cnn["mean_shape"])
        np.testing.assert_allclose(js(driver, "return arguments[0].eqHeatmap.row(0)", canvas), mean[0], rtol=1e-12)
        tip = hover_cell_js(driver, canvas, 2, 1).split("\n")
        assert tip[0] == "cnn (group mean of 3 runs)" and tip[3].startswith("mean ")
        assert tip[4].startswith("95% Student-t interval over runs: ") and tip[5] == "2 runs of 3", tip
        assert js(driver, "return arguments[0].eqHeatmap.spec.cols", canvas) == [0, 1, 2, 3]  # epochs
        # The groups follow the chosen x axis: at each global step (10, 20, ... here).
        before = render_count(driver)
        Select(driver.find_element(By.CSS_SELECTOR, ".eq-x-axis")).select_by_value("global_step")
        wait(driver, lambda d: render_count(d) > before)
        wait(
            driver,
            lambda d: js(
                d,
                "const c = document.querySelector('.eq-heatmap-group[data-group=\"cnn\"] canvas');"
                "return c && c.eqHeatmap.spec.cols.join(',') === '10,20,30,40'",
            ),
            message="global steps",
        )
        before = render_count(driver)
        Select(driver.find_element(By.CSS_SELECTOR, ".eq-x-axis")).select_by_value("epoch")
        wait(driver, lambda d: render_count(d) > before)
        # A run missing a layer at a step (refused, with its reason): grey, the reason on hover.
        set_run_visible(driver, "cnn_seed0", False)
        set_run_visible(driver, "cnn_seed2", False)  # cnn is now one run: drawn as the run
        wait(driver, lambda d: all_drawn(d, {"cnn_seed1", "steerable_seed0", "lone_run"}), message="cnn_seed1 as a run")
        run_canvas = canvas_of(driver, "cnn_seed1")
        assert (
            js(driver, "return arguments[0].eqHeatmap.colorOf(NaN)", run_canvas)
            == pixel_matches(driver, run_canvas, 2, 1)[0]
        )
        assert "not measured (refused): dead output" in hover_cell_js(driver, run_canvas, 2, 1).split("\n")
        hint = js(driver, "return document.querySelector('.eq-main .eq-hint').textContent")
        assert "Grey cells: layer not measured at that epoch (hover for why)" in hint
        set_run_visible(driver, "cnn_seed0", True)
        set_run_visible(driver, "cnn_seed2", True)

        # Curves: a band per group of 2+ runs, the mean line; baseline groups dashed.
        click_view(driver, "curves")
        bands = wait(driver, lambda d: group_band_area(d) or False, message="group bands")
        assert set(bands) == {"cnn", "rotaug"}
        means = js(
            driver,
            "return [...document.querySelectorAll('.js-plotly-plot')].flatMap(p => p.data)"
            ".filter(t => t.meta === 'group-mean').map(t => [t.name, t.line.dash, t.customdata[0]])",
        )
        assert ["cnn · mean of 3 runs", "solid"] in [m[:2] for m in means]
        assert all("95% Student-t interval over runs" in m[2] for m in means), means
        sub = driver.find_element(By.CSS_SELECTOR, '.eq-card[data-id="curves-parts"] .eq-card-sub').text
        assert "cnn: 3 runs" in sub and "95% Student-t interval over runs" in sub
        # Toggling a run out of its group changes the group's band.
        before = bands["cnn"][1]
        set_run_visible(driver, "cnn_seed1", False)
        after = wait(
            driver,
            lambda d: (lambda b: b if b.get("cnn") and b["cnn"][1] != before else False)(group_band_area(d)),
            message="band changed",
        )
        assert after["cnn"][1] != pytest.approx(before, abs=1e-9)
        means = js(driver, "return document.querySelector('.js-plotly-plot').data"
                           ".filter(t => t.meta === 'group-mean').map(t => t.name)")
        assert "cnn · mean of 2 runs" in means
        set_run_visible(driver, "cnn_seed1", True)

        # Baseline groups dashed (a group of two baseline runs is not in this logdir:
        # the one-run steerable group is drawn as the run, dashed as a baseline).
        click_view(driver, "profile")
        profile = js(
            driver,
            "const p = document.querySelector('.js-plotly-plot');"
            "return [p.data.map(t => [t.meta || '', t.name, t.line.dash]), (p.layout.shapes || []).map(s => s.name)]",
        )
        assert profile[1].count("group-band") == 2
        assert ["group-mean", "solid"] == [profile[0][0][0], profile[0][0][2]]
        steer = [t for t in profile[0] if t[1].startswith("steerable_seed0")]
        assert steer and steer[0][2] == "dash"

        # A regex typed by the user: the first capture group names the group.
        click_view(driver, "spearman")
        Select(driver.find_element(By.CSS_SELECTOR, ".eq-group-by")).select_by_value("pattern")
        field = wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".eq-group-pattern"))[0]
        before = render_count(driver)
        field.send_keys(r"seed(\d)")
        field.send_keys("\n")
        wait(driver, lambda d: render_count(d) > before)
        wait(
            driver,
            lambda d: (
                js(d, "return [...document.querySelectorAll('.eq-group-entry')].map(e => e.dataset.group)")
                == ["0", "1", "2"]
            ),
        )
        traces = wait(driver, lambda d: js(
            d, "const p = document.querySelector('.eq-card[data-id=\"spearman-scatter\"] .js-plotly-plot');"
               "return p && p.data.filter(t => t.meta === 'group-points').map(t => t.name)"), message="grouped scatter")
        assert traces == ["0 (3 runs)", "1 (2 runs)", "no group (2 runs)"], traces
        note = driver.find_element(By.CSS_SELECTOR, ".eq-marker-note").text
        assert "colour = run group" in note and "symbol = part" in note
        # An invalid pattern is named, not a crash.
        js(driver, "const f = document.querySelector('.eq-group-pattern'); f.value = '(';"
                   "f.dispatchEvent(new Event('change'))")
        err = wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".eq-group-error"), message="pattern error")
        assert "invalid run-group pattern" in err[0].text

        # Issue 25: the field waits for typing to rest; a pattern the plugin refuses (RE2 has no
        # backreferences) is named under the field and never sent again - not on a poll, not
        # when the selection changes, not when it is entered again.
        js(driver, "const f = window.fetch; window.eqFetched = [];"
                   "window.fetch = (u, ...a) => { window.eqFetched.push(String(u)); return f(u, ...a); };"
                   "document.querySelector('.eq-group-pattern').value = '';")
        refused = r"^(\w+)_seed\d_\1$"
        field = driver.find_element(By.CSS_SELECTOR, ".eq-group-pattern")
        field.send_keys(refused)  # one keystroke at a time: one request once typing rests
        err = wait(driver, lambda d: (lambda e: e if e and "_seed" in e[0].text else False)(
            d.find_elements(By.CSS_SELECTOR, ".eq-group-error")), message="refused pattern named")
        text = err[0].text
        assert "invalid run-group pattern" in text and "RE2 syntax" in text and "backreferences" in text, text
        def group_requests(d):
            return [u for u in js(d, "return window.eqFetched") if "/groups?" in u]
        sent = group_requests(driver)
        assert len(sent) == 1, sent
        assert urllib.parse.parse_qs(urllib.parse.urlsplit(sent[0]).query)["pattern"] == [refused], sent
        set_run_visible(driver, "cnn_seed0", False)  # the selection changes: still not sent
        set_run_visible(driver, "cnn_seed0", True)
        time.sleep(tb_helpers_poll_seconds(driver) + 1)  # a poll passes
        js(driver, "const f = document.querySelector('.eq-group-pattern'); f.dispatchEvent(new Event('change'))")
        assert group_requests(driver) == sent
        assert "invalid run-group pattern" in driver.find_element(By.CSS_SELECTOR, ".eq-group-error").text
        # a pattern it accepts is sent once typing rests, and groups again
        field.clear()
        field.send_keys(r"^([a-z]+)_seed")
        entries = "return [...document.querySelectorAll('.eq-group-entry')].map(e => e.dataset.group)"
        wait(driver, lambda d: js(d, entries) == ["cnn", "rotaug", "steerable"], message="groups again")
        assert not driver.find_elements(By.CSS_SELECTOR, ".eq-group-error")
        assert len(group_requests(driver)) == len(sent) + 1, group_requests(driver)
        Select(driver.find_element(By.CSS_SELECTOR, ".eq-group-by")).select_by_value("none")
        wait(driver, lambda d: js(d, "return document.querySelectorAll('.eq-group-entry').length") == 0)
        wait(driver, lambda d: js(d, "const n = document.querySelector('.eq-marker-note');"
                                     "return n && n.textContent.includes('colour = part (legend)')"),
             message="ungrouped scatter note")


def test_tab_polish(own_driver, tmp_path):
    # Issue 13's tab points: singular/plural wording, no stale tooltip after the
    # selection changes, a shared y-range option, whole-epoch ticks, the Spearman
    # scatter explaining its markers.
    driver = own_driver
    tb_helpers.write_group_logdir(tmp_path)
    with tb_helpers.TensorBoardProcess(tmp_path) as tb:
        driver.switch_to.default_content()
        driver.get(tb.url + "/data/plugin_entry.html?name=equivariance")
        wait(driver, lambda d: js(d, "return document.body.dataset.renderCount"))
        Select(driver.find_element(By.CSS_SELECTOR, ".eq-group-by")).select_by_value("none")
        wait(driver, lambda d: all_drawn(d, set(tb_helpers.GROUP_RUNS)), message="every run drawn")
        # "1 epoch" (lone_run has one), "4 epochs"
        subs = js(driver, "return Object.fromEntries([...document.querySelectorAll('.eq-heatmap')]"
                          ".map(c => [c.dataset.run, c.querySelector('.eq-card-sub').textContent]))")
        assert "· 1 epoch" in subs["lone_run"] and "epochs" not in subs["lone_run"], subs
        assert "· 4 epochs" in subs["cnn_seed0"] and "6 layers" in subs["cnn_seed0"]
        # A tooltip up, then the selection changes: it does not stay with the old data.
        canvas = canvas_of(driver, "cnn_seed0")
        assert hover_cell_js(driver, canvas, 0, 0).split("\n")[0] == "cnn_seed0"
        set_run_visible(driver, "lone_run", False)
        assert js(driver, "return arguments[0].eqHeatmap.tip.hidden", canvas_of(driver, "cnn_seed0")) is True
        set_run_visible(driver, "lone_run", True)

        # Curves: whole-epoch ticks; the shared y-range option.
        click_view(driver, "curves")
        ticks = wait(
            driver,
            lambda d: js(
                d,
                "return [...document.querySelectorAll('.eq-card[data-id=\"curves-parts\"] .xtick text')]"
                ".map(t => t.textContent)",
            ),
        )
        assert ticks and all(t.isdigit() for t in ticks) and len(set(ticks)) == len(ticks), ticks
        # A single point (lone_run has one epoch): one tick, the point in the middle.
        before = render_count(driver)
        driver.find_element(By.XPATH, "//div[@class='eq-run-tools']/button[text()='none']").click()
        wait(driver, lambda d: render_count(d) > before)
        set_run_visible(driver, "lone_run", True)
        single = js(
            driver,
            "const l = document.querySelector('.eq-card[data-id=\"curves-parts\"] .js-plotly-plot')._fullLayout;"
            "return [l.xaxis.range, [...document.querySelectorAll('.eq-card[data-id=\"curves-parts\"] .xtick text')]"
            ".map(t => t.textContent)]",
        )
        assert single[0] == [-0.5, 0.5] and set(single[1]) == {"0"}, single
        before = render_count(driver)
        driver.find_element(By.XPATH, "//div[@class='eq-run-tools']/button[text()='all']").click()
        wait(driver, lambda d: render_count(d) > before)
        layout = "return document.querySelector('.eq-card[data-id=\"curves-layers\"] .js-plotly-plot').layout"
        assert js(driver, layout + ".yaxis2.matches || null") is None
        before = render_count(driver)
        driver.find_element(By.CSS_SELECTOR, ".eq-shared-y").click()
        wait(driver, lambda d: render_count(d) > before)
        assert js(driver, layout + ".yaxis2.matches") == "y"
        ranges = js(
            driver,
            "const l = document.querySelector('.eq-card[data-id=\"curves-layers\"] .js-plotly-plot')._fullLayout;"
            "return [l.yaxis.range, l.yaxis2.range, l.yaxis3.range]",
        )
        assert ranges[0] == ranges[1] == ranges[2], ranges
        assert (
            "one y-range for all panels"
            in driver.find_element(By.CSS_SELECTOR, '.eq-card[data-id="curves-parts"] .eq-card-sub').text
        )

        # Profile at epoch 0: "at epoch 0", and the slider's label.
        click_view(driver, "profile")
        before = render_count(driver)
        js(driver, "const s = document.querySelector('.eq-epoch'); s.value = '0';"
                   "s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change'))")
        wait(driver, lambda d: render_count(d) > before)
        title = driver.find_element(By.CSS_SELECTOR, '.eq-card[data-id="profile"] .eq-card-title').text
        assert title.startswith("Layer profile at epoch 0"), title

        # Spearman: the scatter says what its markers mean.
        click_view(driver, "spearman")
        note = wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".eq-marker-note"))[0].text
        assert note == "One marker per run and depth part: colour = part (legend); ● run, ◇ baseline run."

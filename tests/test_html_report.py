"""The shareable HTML report (issue 15, "A shareable report").

``MeasureReport.to_html`` and ``lightning-equivariance report LOGDIR -o report.html`` write
one self-contained file: plotly.js inlined from the installed package, the data as JSON,
no ``http(s)://`` script or stylesheet. The browser test opens it from disk in headless
Chromium with the network switched off and finds the heatmap drawn, the groups' bands and
the chance level; it needs Debian's ``chromium`` and ``chromium-driver`` and is skipped
with a reason without them.
"""
import base64
import dataclasses
import json
import math
import os
import re

import numpy as np
import pytest

import tb_helpers
from lightning_equivariance import cli
from lightning_equivariance.html_report import ReportError, build_data, collect_logdirs, write_logdir_report
from lightning_equivariance.report import LayerResult, MeasureReport
from lightning_equivariance_tb.run_groups import group_statistics
from lightning_equivariance_tb.summary import Series, write_series

LAYERS = ["features.0", "features.1", "features.2", "pool", "fc"]
PARTS = ["Early", "Middle", "Late", "Pool", "Final"]
GROUPS = {"cnn": 0.3, "cnn_rotaug": 0.6, "steerable": 0.95}
STEPS = [10, 20, 30]


def run_values(base, seed, step):
    rng = np.random.default_rng(seed * 100 + step)
    return np.clip(base + 0.001 * step + 0.05 * np.linspace(0, 1, len(LAYERS)) + rng.normal(0, 0.02, len(LAYERS)), 0, 1)


def write_logdir(path, groups=GROUPS, seeds=(0, 1, 2), record_group=True):
    """3 groups x 3 seeds, measured at global steps 10, 20, 30 (epochs 0, 1, 2), with the chance
    level and standard errors; returns ``{run: {step: values}}``."""
    written = {}
    for g, base in groups.items():
        for seed in seeds:
            run = "%s_seed%d" % (g, seed)
            written[run] = {}
            for epoch, step in enumerate(STEPS):
                values = run_values(base, seed, step)
                written[run][step] = values
                s = Series(measure="equivariance", group="rotation90", layers=LAYERS, parts=PARTS, values=values,
                           chance=np.full(len(LAYERS), 0.25), stderr=np.full(len(LAYERS), 0.01))
                write_series(os.path.join(path, run), [s], step, model=g, baseline=(g == "steerable"),
                             run_group=g if record_group else "", epoch=epoch, global_step=step)
    return written


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("report_logdir")
    return str(path), write_logdir(str(path))


def page_data(path):
    text = open(path, encoding="utf-8").read()
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    return text, json.loads(m.group(1))


def page_modules(text):
    """``{specifier: code}`` of the page's import map (each module a base64 ``data:`` URL)."""
    m = re.search(r'<script type="importmap">(.*?)</script>', text, re.S)
    prefix = "data:text/javascript;base64,"
    imports = json.loads(m.group(1))["imports"]
    assert all(url.startswith(prefix) for url in imports.values())
    return {name: base64.b64decode(url[len(prefix):]).decode("utf-8") for name, url in imports.items()}


def assert_offline(text):
    """No script or stylesheet from anywhere: no src= on a script, no <link> to http(s)."""
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, re.I)
    assert not re.search(r"<link[^>]*href\s*=\s*[\"']?(https?:)?//", text, re.I)
    assert not re.search(r"@import\s+(url\()?[\"']?(https?:)?//", text, re.I)
    assert "<script>" in text and "Plotly" in text  # plotly.js inlined


def fake_report(n_layers=5):
    results = [
        LayerResult(layer=LAYERS[i], index=i, part=PARTS[i], kind="map", shape=(4, 4, 4), measure="equivariance",
                    group="rotation90", value=0.4 + 0.1 * i, per_element={}, per_channel=None, left_out=0,
                    higher_is_better=True, chance=0.2, above_chance=None, informative=True, stderr=0.01, best=1.0)
        for i in range(n_layers)
    ]
    return MeasureReport(results=results, depth={r.layer: (r.index, r.part) for r in results})


# ---------------------------------------------------------------------------- data
def test_logdir_runs_are_read_as_the_tab_reads_them(logdir):
    path, written = logdir
    runs = collect_logdirs([path])
    assert sorted(r.run for r in runs) == sorted(written)
    r = next(r for r in runs if r.run == "cnn_seed1")
    assert r.steps == STEPS and r.epochs == [0, 1, 2] and r.layers == LAYERS and r.run_group == "cnn"
    np.testing.assert_allclose(r.values[:, 1], written["cnn_seed1"][20], rtol=1e-6)
    np.testing.assert_allclose(r.chance, 0.25) and np.testing.assert_allclose(r.stderr, 0.01, rtol=1e-6)


def test_group_statistics_are_run_groups(logdir):
    """The report's group mean and interval are run_groups.group_statistics over the runs' values
    (computed by the tab's own data.group_body)."""
    path, written = logdir
    data = build_data(collect_logdirs([path]))
    (series,) = data["series"]
    assert [g["name"] for g in series["groups"]] == ["cnn", "cnn_rotaug", "steerable"]
    g = series["groups"][1]
    assert g["runs"] == ["cnn_rotaug_seed0", "cnn_rotaug_seed1", "cnn_rotaug_seed2"] and not g["baseline"]
    assert series["groups"][2]["baseline"]
    layer = 2
    expected = group_statistics(
        {run: {s: float(np.float32(v[layer])) for s, v in written[run].items()} for run in g["runs"]}
    )
    body = g["axes"]["step"]  # the tab's own /groups body (data.group_body)
    assert body["xs"] == STEPS and body["layers"] == LAYERS and g["layers"] == LAYERS
    block = {key: matrix(body, key)[layer] for key in ("mean", "low", "high", "n")}
    assert list(block["n"]) == [3, 3, 3]
    for k, step in enumerate(STEPS):
        for key in ("mean", "low", "high"):
            assert math.isclose(block[key][k], expected[step][key], rel_tol=1e-6, abs_tol=1e-6)
        values = [float(np.float32(written[run][step][layer])) for run in g["runs"]]
        assert math.isclose(block["mean"][k], np.mean(values), abs_tol=1e-6)
    # by epoch: the same points (one measurement per epoch)
    assert g["axes"]["epoch"]["xs"] == [0, 1, 2]
    np.testing.assert_allclose(matrix(g["axes"]["epoch"], "mean"), matrix(body, "mean"))


def matrix(body, prefix):
    """A base64 matrix of a /groups body (lightning_equivariance_tb.data.encode_matrix)."""
    dtype = "<f8" if body[prefix + "_dtype"] == "float64" else "<f4"
    return np.frombuffer(base64.b64decode(body[prefix + "_base64"]), dtype=dtype).reshape(body[prefix + "_shape"])


def test_groups_by_regex_and_single_runs(tmp_path):
    write_logdir(str(tmp_path), groups={"a": 0.3, "b": 0.5}, seeds=(0, 1), record_group=False)
    write_logdir(str(tmp_path), groups={"lonely": 0.7}, seeds=(0,), record_group=False)
    runs = collect_logdirs([str(tmp_path)])
    assert build_data(runs)["series"][0]["groups"] == []  # nothing recorded: no groups
    data = build_data(runs, group_regex=r"^(.*)_seed\d+$")
    (series,) = data["series"]
    # a group of one run is shown as the run
    assert [g["name"] for g in series["groups"]] == ["a", "b"]
    by_run = {r["run"]: r["run_group"] for r in series["runs"]}
    assert by_run["lonely_seed0"] == "" and by_run["a_seed1"] == "a"
    with pytest.raises(ReportError, match="--group-regex"):
        build_data(runs, group_regex="(unclosed")


def test_errors_name_the_argument(tmp_path):
    with pytest.raises(ReportError, match="LOGDIR .* is not a directory"):
        collect_logdirs([str(tmp_path / "absent")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="LOGDIR .* holds no equivariance data"):
        collect_logdirs([str(tmp_path / "empty")])


def test_several_logdirs_prefix_their_runs(tmp_path):
    for name in ("exp1", "exp2"):
        write_logdir(str(tmp_path / name), groups={"cnn": 0.3}, seeds=(0,))
    runs = collect_logdirs([str(tmp_path / "exp1"), str(tmp_path / "exp2")])
    assert sorted(r.run for r in runs) == ["exp1/cnn_seed0", "exp2/cnn_seed0"]


# ---------------------------------------------------------------------------- file
def test_report_file_is_self_contained(logdir, tmp_path):
    path, _ = logdir
    out = tmp_path / "sub" / "report.html"
    size = write_logdir_report([path], str(out), title="seeds <compared>")
    assert size == os.path.getsize(out) > 1_000_000  # plotly.js inlined
    text, data = page_data(out)
    assert_offline(text)
    assert "<title>seeds &lt;compared&gt;</title>" in text
    assert data["title"] == "seeds <compared>" and len(data["series"][0]["runs"]) == 9
    assert "95% Student-t interval over runs" == data["interval_label"]


def test_hostile_names_stay_inside_the_data(tmp_path):
    write_logdir(str(tmp_path / "logs"), groups={"x</script><script>alert(1)</script>": 0.3}, seeds=(0,))
    out = tmp_path / "r.html"
    write_logdir_report([str(tmp_path / "logs")], str(out))
    text, data = page_data(out)
    assert "alert(1)</script>" not in text
    assert data["series"][0]["runs"][0]["run"].startswith("x</script>")


def test_measure_report_to_html(tmp_path):
    out = tmp_path / "one.html"
    size = fake_report().to_html(str(out), title="one measurement")
    assert size == os.path.getsize(out)
    text, data = page_data(out)
    assert_offline(text)
    (run,) = data["series"][0]["runs"]
    assert run["layers"] == LAYERS and run["steps"] == [0]
    assert [row[0] for row in run["chance"]] == [0.2] * 5
    with pytest.raises(ReportError, match="no runs"):
        MeasureReport(results=[]).to_html(str(tmp_path / "empty.html"))


def _margin_report():
    """fake_report's layers with margins (issue 24): layer 2 not significant, layer 4 without an interval."""
    report = fake_report()
    results = [dataclasses.replace(r, margin=0.2, margin_stderr=0.01, margin_low=0.18, significant=True)
               for r in report.results]
    results[2] = dataclasses.replace(results[2], margin=0.01, margin_low=-0.02, significant=False)
    results[4] = dataclasses.replace(results[4], margin_stderr=None, margin_low=None, significant=False)
    report.results = results
    return report


def test_measure_report_to_html_carries_the_margins(tmp_path):
    out = tmp_path / "margins.html"
    _margin_report().to_html(str(out))
    text, data = page_data(out)
    (run,) = data["series"][0]["runs"]
    assert [row[0] for row in run["significant"]] == [1, 1, 0, 1, 0]
    assert [row[0] for row in run["margin_low"]] == [0.18, 0.18, -0.02, 0.18, None]
    assert [row[0] for row in run["margin"]] == [0.2, 0.2, 0.01, 0.2, 0.2]
    # the hover text of the margins is the tab's (util.js marginText), inlined in the page
    assert "95% interval [" in page_modules(text)["lightning-equivariance-tb/util.js"]


@pytest.mark.browser
def test_report_margins_in_chromium(tmp_path):
    out = tmp_path / "margins.html"
    _margin_report().to_html(str(out))
    driver = offline_driver()
    try:
        from selenium.webdriver.support.ui import WebDriverWait

        driver.get(out.as_uri())
        WebDriverWait(driver, 30, poll_frequency=0.2).until(
            lambda d: d.execute_script("return document.body.dataset.rendered"))
        js = driver.execute_script
        # the tab's heatmap: the layers not significantly above chance are hatched, the tooltip gives
        # the margin and its interval (views.js cellNotes, util.js marginText)
        heat = "var h = document.querySelector('#heatmap canvas.eq-canvas').eqHeatmap; "
        assert js("return document.querySelector('#heatmap canvas.eq-canvas').dataset.uninformative") == "2"
        notes = js(heat + "return [0, 2, 4].map(function (r) { return h.spec.notes(r, 0); });")
        assert "margin 0.2000, 95% interval [0.1800, ∞)" in notes[0]
        assert "margin 0.0100, 95% interval [-0.0200, ∞)" in notes[1]
        assert any("not significantly above chance" in line for line in notes[1])
        assert "margin 0.2000, no interval (fewer than 2 scored probe pairs)" in notes[2]
        # the profile (charts.js profileFigure): relative depth, the chance level in the hover
        line = js("var t = document.getElementById('profile').data[0]; return [t.x, t.hovertext];")
        assert line[0] == [0, 0.25, 0.5, 0.75, 1] and "chance 0.2000" in line[1][0]
    finally:
        driver.quit()


def test_cli_report_prints_the_size(logdir, tmp_path, capsys):
    path, _ = logdir
    out = tmp_path / "cli.html"
    assert cli.main(["report", path, "-o", str(out), "--group-regex", r"^(.*)_seed\d+$", "--title", "t"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and re.search(r"\d+(\.\d)? MB", printed)
    _, data = page_data(out)
    assert data["group_regex"] == r"^(.*)_seed\d+$" and len(data["series"][0]["groups"]) == 3


def test_cli_report_errors(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "absent"), "-o", str(tmp_path / "x.html")]) == 2
    assert "LOGDIR" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()


# ---------------------------------------------------------------------------- browser
browser = pytest.mark.skipif(
    not (os.path.exists(tb_helpers.CHROMIUM) and os.path.exists(tb_helpers.CHROMEDRIVER)),
    reason="needs %s and %s (apt-get install chromium chromium-driver)"
    % (tb_helpers.CHROMIUM, tb_helpers.CHROMEDRIVER),
)


def offline_driver():
    """Headless Chromium (the flags of tb_helpers.chrome_driver) with the network switched off."""
    pytest.importorskip("selenium")
    driver = tb_helpers.chrome_driver(width=1300, height=1000)
    try:
        driver.set_network_conditions(offline=True, latency=0, download_throughput=0, upload_throughput=0)
        assert driver.get_network_conditions()["offline"] is True
    except BaseException:
        driver.quit()
        raise
    return driver


@pytest.mark.browser
@browser
def test_report_draws_offline_in_chromium(logdir, tmp_path):
    from selenium.webdriver.support.ui import Select, WebDriverWait

    path, written = logdir
    out = tmp_path / "report.html"
    write_logdir_report([path], str(out))
    driver = offline_driver()
    try:
        driver.get(out.as_uri())
        wait = WebDriverWait(driver, 30, poll_frequency=0.2)
        wait.until(lambda d: d.execute_script("return document.body.dataset.rendered"))
        js = driver.execute_script
        # nothing was fetched from the network: every resource the page loaded is a file or data URL
        resources = js("return performance.getEntriesByType('resource').map(function (e) { return e.name; })")
        assert not [r for r in resources if r.startswith(("http:", "https:"))], resources
        # the heatmap is the tab's canvas (heatmap.js): the first group's mean, 5 layers x 3 steps
        heat = "var h = document.querySelector('#heatmap canvas.eq-canvas').eqHeatmap; "
        assert js(heat + "return [h.canvas.dataset.rows, h.canvas.dataset.cols, h.spec.cols, h.spec.title];") == [
            "5", "3", STEPS, "cnn (group mean of 3 runs)"]
        mean = float(np.mean([np.float32(written[r][20][2]) for r in ("cnn_seed0", "cnn_seed1", "cnn_seed2")]))
        assert math.isclose(js(heat + "return h.valueAt(2, 1);"), mean, rel_tol=1e-6)
        # curves and profile (charts.js): each group's band and mean line
        for chart in ("curves", "curves-layer"):
            metas = js("return document.getElementById(arguments[0]).data.map(function (t) { return t.meta; })", chart)
            assert metas.count("group-band") >= 3 and metas.count("group-mean") >= 3, chart
        shapes = js("return document.getElementById('profile').layout.shapes.map(function (s) { return s.name; })")
        assert shapes.count("group-band") == 3
        # by epoch, one layer's curves, groups only: the bands follow, no run line is left
        before = int(js("return document.body.dataset.rendered"))
        Select(driver.find_element("id", "axis")).select_by_value("epoch")
        Select(driver.find_element("id", "mode")).select_by_value("groups")
        wait.until(lambda d: int(js("return document.body.dataset.rendered")) >= before + 2)
        Select(driver.find_element("id", "curve")).select_by_value("features.2")
        curves = js("return document.getElementById('curves-layer').data"
                    ".filter(function (t) { return t.meta === 'group-mean' || !t.meta; })"
                    ".map(function (t) { return [t.name, t.x]; })")
        assert [x for name, x in curves if name.startswith("cnn · mean")] == [[0, 1, 2]]
        assert not [name for name, _ in curves if "_seed" in name]
        # the runs only: each run's chance level in the profile (a dotted shape per run)
        Select(driver.find_element("id", "mode")).select_by_value("runs")
        wait.until(lambda d: js("return document.getElementById('profile').layout.shapes"
                                ".filter(function (s) { return s.name === 'chance'; }).length") == 9)
        # a run's own heatmap (run selected): its values, 5 layers x 3 epochs
        Select(driver.find_element("id", "heat")).select_by_value("r:cnn_seed0")
        wait.until(lambda d: js(heat + "return h.spec.title;") == "cnn_seed0")
        assert math.isclose(js(heat + "return h.valueAt(2, 1);"), float(np.float32(written["cnn_seed0"][20][2])),
                            rel_tol=1e-6)
        logs = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not logs, logs
    finally:
        driver.quit()


# ---------------------------------------------------------------------------- one drawing of each view
def test_report_inlines_the_tabs_own_modules(logdir, tmp_path):
    """The page draws with the TensorBoard tab's modules: each one in the import map is the plugin's
    file with only its relative specifiers made bare (issue 22, one drawing of each view)."""
    from importlib import resources

    path, _ = logdir
    out = tmp_path / "report.html"
    write_logdir_report([path], str(out))
    text, _ = page_data(out)
    modules = page_modules(text)
    names = ("charts.js", "heatmap.js", "util.js", "views.js")
    assert sorted(modules) == ["lightning-equivariance-tb/" + n for n in names]
    static = resources.files("lightning_equivariance_tb").joinpath("static")
    for name, code in modules.items():
        original = static.joinpath(name.split("/")[1]).read_text(encoding="utf-8")
        assert code == re.sub(r'(from\s*)"\./(\w+\.js)"', r'\1"lightning-equivariance-tb/\2"', original), name
        assert not re.search(r'(from\s*|import\s*)"\./', code)  # no relative import is left
    assert "export class CanvasHeatmap" in modules["lightning-equivariance-tb/heatmap.js"]
    assert "export function profileFigure" in modules["lightning-equivariance-tb/charts.js"]
    # the page's own script is glue: it imports the tab's figure builders and draws nothing itself
    glue = re.search(r'<script type="module">(.*?)</script>', text, re.S).group(1)
    assert 'from "lightning-equivariance-tb/charts.js"' in glue and "profileFigure(" in glue
    assert "PALETTE = [" not in glue and 'type: "heatmap"' not in glue


def write_two_architectures(path):
    """A small CNN and a ResNet-like run whose layer lists differ but share the name ``fc``."""
    small = ["body.0", "body.1", "body.2", "fc"]
    resnet = ["conv1", "layer1.0", "layer2.0", "layer3.0", "layer4.0", "avgpool", "fc"]
    for run, layers in (("small_cnn", small), ("resnet18", resnet)):
        parts = [PARTS[min(4, (5 * i) // len(layers))] for i in range(len(layers))]
        for epoch, step in enumerate(STEPS):
            s = Series(measure="equivariance", group="rotation90", layers=layers, parts=parts,
                       values=np.linspace(0.2, 0.9, len(layers)) + 0.01 * epoch)
            write_series(os.path.join(path, run), [s], step, model=run, epoch=epoch, global_step=step)
    return {"small_cnn": small, "resnet18": resnet}


@pytest.mark.browser
@browser
def test_report_profile_is_on_relative_depth(tmp_path):
    """Runs with different layer lists line up by relative depth as in the tab: the small CNN's
    ``fc`` is at depth 1 like ResNet-18's, and each run's line runs left to right (issue 22)."""
    from selenium.webdriver.support.ui import WebDriverWait

    layers = write_two_architectures(str(tmp_path / "logs"))
    out = tmp_path / "report.html"
    write_logdir_report([str(tmp_path / "logs")], str(out))
    driver = offline_driver()
    try:
        driver.get(out.as_uri())
        WebDriverWait(driver, 30, poll_frequency=0.2).until(
            lambda d: d.execute_script("return document.body.dataset.rendered"))
        lines = driver.execute_script(
            "return document.getElementById('profile').data.map(function (t) { return [t.name, t.x, t.customdata]; })")
        assert sorted(name.split(" ")[0] for name, _, _ in lines) == ["resnet18", "small_cnn"]
        for name, xs, hover in lines:
            n = len(layers[name.split(" ")[0]])
            assert len(xs) == n and all(0 <= x <= 1 for x in xs)
            assert all(a < b for a, b in zip(xs, xs[1:]))  # monotone in depth: no line runs back
            assert xs == pytest.approx([i / (n - 1) for i in range(n)])
            assert hover[-1].startswith("fc (")  # fc is the last layer, at depth 1, for both runs
        title = driver.execute_script("return document.getElementById('profile').layout.xaxis.title.text")
        assert title == "relative depth"
        logs = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not logs, logs
    finally:
        driver.quit()

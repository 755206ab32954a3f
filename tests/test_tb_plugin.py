"""In-process route tests of the equivariance TensorBoard plugin."""

import base64
import gzip
import importlib.metadata
import json
import os
import re

import numpy as np
import pytest
from tensorboard.backend import application
from tensorboard.backend.event_processing import data_provider as mux_provider
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins import base_plugin
from werkzeug import test as werkzeug_test
from werkzeug import wrappers

import tb_helpers
from lightning_equivariance_tb import data as data_module
from lightning_equivariance_tb import plugin as plugin_module
from lightning_equivariance_tb import summary
from lightning_equivariance_tb.plugin import EquivariancePlugin
from tb_helpers import MALFORMED_LAYERS, MARKUP_PART, RUNS, XSS_RUN

PREFIX = "/data/plugin/equivariance"
EPOCHS = 4
N_LAYERS = 6


def make_client(logdir, samples=0, sampling_hints="same"):
    """A werkzeug client over TensorBoardWSGI with the plugin, reading
    ``logdir`` through the multiplexer data provider (TensorBoard's Python
    loader) that keeps ``samples`` points per tag (0 = all)."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer(
        tensor_size_guidance={"equivariance": samples}
    )
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = mux_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    hints = {"equivariance": samples} if sampling_hints == "same" else sampling_hints
    context = base_plugin.TBContext(
        logdir=str(logdir), data_provider=provider, sampling_hints=hints
    )
    plugin = EquivariancePlugin(context)
    app = application.TensorBoardWSGI([plugin], data_provider=provider)
    return werkzeug_test.Client(app, wrappers.Response)


@pytest.fixture(scope="module")
def logdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("logdir")
    tb_helpers.write_fake_logdir(path, epochs=EPOCHS, n_layers=N_LAYERS)
    # A run named like a baseline but without the metadata flag.
    tb_helpers.write_fake_logdir(
        path,
        epochs=2,
        n_layers=3,
        runs={"e2cnn_steerable": dict(RUNS["resnet_a"], baseline=False)},
    )
    return path


@pytest.fixture(scope="module")
def client(logdir):
    return make_client(logdir)


def strict_json(text):
    """``json.loads`` refusing the bare ``NaN``/``Infinity`` tokens that
    Python writes but JSON (and ``JSON.parse``) does not have."""

    def refuse(token):
        raise AssertionError("bare %s in JSON: not JSON" % token)

    return json.loads(text, parse_constant=refuse)


def get(client, route, expect=200, raw=False, **params):
    """A route's strict-JSON body; unless ``raw``, base64 matrices decoded into
    ``values`` (see :func:`tb_helpers.decode_values`)."""
    response = client.get(PREFIX + route, query_string=params)
    assert response.status_code == expect, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = strict_json(response.get_data(as_text=True))
    return body if raw else tb_helpers.decode_values(body)


def number(value):
    """A number as the routes send it: "Infinity"/"-Infinity", null = NaN."""
    if value is None:
        return float("nan")
    assert isinstance(value, (int, float)) or value in ("Infinity", "-Infinity"), value
    return float(value)


def expected_values(run, epoch, measure_index=0, n_layers=N_LAYERS):
    spec = RUNS[run]
    report = tb_helpers.fake_report(
        epoch,
        n_layers=n_layers,
        channels=tb_helpers.channel_counts(n_layers),
        offset=spec["offset"],
        tilt=spec["tilt"],
    )
    return report.items[measure_index]


def test_entry_point_and_frontend_metadata():
    names = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="tensorboard_plugins")}
    assert names.get("equivariance") == "lightning_equivariance_tb.plugin:EquivariancePlugin"
    meta = EquivariancePlugin(base_plugin.TBContext()).frontend_metadata()
    assert meta.es_module_path == "/index.js"
    assert meta.tab_name == "Equivariance"


def test_plugins_listing(client):
    body = json.loads(client.get("/data/plugins_listing").get_data(as_text=True))
    entry = body["equivariance"]
    assert entry["enabled"] is True
    assert entry["tab_name"] == "Equivariance"
    assert entry["loading_mechanism"] == {
        "type": "IFRAME",
        "module_path": PREFIX + "/index.js",
    }


def test_runs(client):
    body = get(client, "/runs")
    runs = {r["run"]: r for r in body["runs"]}
    assert set(runs) == set(RUNS) | {"e2cnn_steerable"}
    # The hostile name comes back verbatim (the frontend escapes it).
    assert runs[XSS_RUN]["model"] == "<b>evil</b> model"
    a = runs["resnet_a"]
    assert a["model"] == "resnet18" and a["layers"] == N_LAYERS
    assert a["last_step"] == EPOCHS - 1 and a["baseline"] is False
    assert {(s["measure"], s["group"]) for s in a["series"]} == {
        ("equivariance", "rot90"),
        ("invariance", "rot90"),
    }
    assert all(s["has_channels"] for s in a["series"])
    assert runs["steerable_baseline"]["baseline"] is True
    # Named like a steerable net but not flagged: not a baseline (the metadata flag only).
    assert runs["e2cnn_steerable"]["baseline"] is False
    assert body["measures"] == {"equivariance": ["rot90"], "invariance": ["rot90"]}
    assert body["samples_flag"] == "--samples_per_plugin=equivariance=0"


def test_series(client):
    body = get(client, "/series", run="resnet_b", measure="invariance", group="rot90")
    assert body["layers"] == tb_helpers.layer_names(N_LAYERS)
    assert body["parts"] == tb_helpers.default_parts(N_LAYERS)
    assert body["steps"] == list(range(EPOCHS))
    assert body["downsampled"] is False and body["has_channels"] is True
    values = np.array(body["values"])
    assert values.shape == (N_LAYERS, EPOCHS)  # layer x epoch
    for epoch in range(EPOCHS):
        np.testing.assert_allclose(
            values[:, epoch], expected_values("resnet_b", epoch, 1).values, rtol=1e-6
        )


def test_series_values_are_base64_float32(client):
    args = dict(run=XSS_RUN, measure="equivariance", group="rot90")
    as_b64 = get(client, "/series", raw=True, **args)
    assert "values" not in as_b64 and as_b64["values_shape"] == [N_LAYERS, EPOCHS]
    decoded = np.frombuffer(base64.b64decode(as_b64["values_base64"]), "<f4")
    expected = np.array([expected_values(XSS_RUN, e).values for e in range(EPOCHS)]).T
    np.testing.assert_allclose(decoded.reshape(N_LAYERS, EPOCHS), expected, rtol=1e-6)
    assert as_b64["run"] == XSS_RUN
    assert get(client, "/series", raw=True, encoding="base64", **args) == as_b64


def test_series_batch(client):
    runs = ["resnet_c", XSS_RUN, "resnet_a"]
    body = get(client, "/series_batch", run=runs, measure="equivariance", group="rot90")
    assert [x["run"] for x in body["series"]] == runs
    for x in body["series"]:
        single = get(client, "/series", run=x["run"], measure="equivariance", group="rot90")
        assert x == single
    b64 = get(
        client, "/series_batch", run=runs[:1], measure="equivariance",
        group="rot90", encoding="base64",
    )
    assert b64["series"][0]["values_shape"] == [N_LAYERS, EPOCHS]
    missing = get(
        client, "/series_batch", expect=404, run=["resnet_a", "nope"],
        measure="equivariance", group="rot90",
    )
    assert missing == {"error": "Not found: no data for measure 'equivariance', group 'rot90' in run(s) 'nope'"}
    assert "missing query parameter 'run'" in get(
        client, "/series_batch", expect=400, measure="equivariance", group="rot90"
    )["error"]


def test_channels(client):
    layer = tb_helpers.layer_names(N_LAYERS)[2]
    count = tb_helpers.channel_counts(N_LAYERS)[2]
    args = dict(run="resnet_c", measure="equivariance", group="rot90", layer=layer)
    body = get(client, "/channels", **args)
    assert body["channels"] == count and body["layer_index"] == 2
    assert body["part"] == "Middle" and body["steps"] == list(range(EPOCHS))
    values = np.array(body["values"])
    assert values.shape == (count, EPOCHS)  # channel x epoch, no padding
    np.testing.assert_allclose(
        values[:, 1], expected_values("resnet_c", 1).per_channel[2], rtol=1e-6
    )
    one = get(client, "/channels", step=3, **args)
    np.testing.assert_allclose(
        one["values"], expected_values("resnet_c", 3).per_channel[2], rtol=1e-6
    )
    assert one["step"] == 3


@pytest.mark.parametrize(
    "route, params, code, message",
    [
        ("/series", dict(measure="equivariance", group="rot90"), 400, "missing query parameter 'run'"),
        ("/series", dict(run="resnet_a", group="rot90"), 400, "missing query parameter 'measure'"),
        (
            "/series",
            dict(run="nope", measure="equivariance", group="rot90"),
            404,
            "run 'nope' has no equivariance data",
        ),
        (
            "/series",
            dict(run="resnet_a", measure="lee", group="rot90"),
            404,
            "no data for measure 'lee', group 'rot90' (it has: equivariance/rot90, invariance/rot90)",
        ),
        ("/series", dict(run="resnet_a", measure="equivariance", group="flip"), 404, "group 'flip'"),
        (
            "/series",
            dict(run="resnet_a", measure="equivariance", group="rot90", encoding="xml"),
            400,
            "encoding must be 'base64'",
        ),
        (
            "/channels",
            dict(run="resnet_a", measure="equivariance", group="rot90"),
            400,
            "missing query parameter 'layer'",
        ),
        (
            "/channels",
            dict(run="resnet_a", measure="equivariance", group="rot90", layer="nope"),
            404,
            "run 'resnet_a' has no layer 'nope'",
        ),
        (
            "/channels",
            dict(run="resnet_a", measure="equivariance", group="rot90", layer="fc", step="x"),
            400,
            "step must be an integer, got 'x'",
        ),
        (
            "/channels",
            dict(run="resnet_a", measure="equivariance", group="rot90", layer="fc", step="99"),
            404,
            "no per-channel data at step 99",
        ),
        (
            "/channels",
            dict(run=XSS_RUN, measure="lee", group="rot90", layer="fc"),
            404,
            "has no per-channel data for measure 'lee'",
        ),
        ("/spearman", dict(measure="equivariance", group="rot90"), 400, "missing query parameter 'scalar'"),
        (
            "/spearman",
            dict(measure="lee", group="rot90", scalar="val/acc"),
            404,
            "no run has data for measure 'lee', group 'rot90'",
        ),
        ("/spearman", dict(measure="equivariance", group="rot90", scalar="nope"), 404, "has the scalar tag 'nope'"),
    ],
)
def test_errors_are_json(client, route, params, code, message):
    body = get(client, route, expect=code, **params)
    assert set(body) == {"error"}
    assert message in body["error"]


def test_scalar_tags(client):
    assert get(client, "/scalar_tags") == {
        "tags": [{"tag": "val/acc", "runs": len(RUNS) + 1}],
        "runs": len(RUNS) + 1,
    }


def test_spearman_matches_scipy(client):
    stats = pytest.importorskip("scipy.stats")
    body = get(client, "/spearman", measure="equivariance", group="rot90", scalar="val/acc")
    points = {p["run"]: p for p in body["points"]}
    assert set(points) == set(RUNS) | {"e2cnn_steerable"}
    assert points["resnet_c"]["scalar"] == pytest.approx(RUNS["resnet_c"]["acc"])
    assert points["resnet_c"]["step"] == EPOCHS - 1
    # Part means at the last epoch, recomputed here from the fake data.
    last = expected_values("resnet_a", EPOCHS - 1)
    for part in set(last.parts):
        sel = [v for v, p in zip(last.values, last.parts) if p == part]
        assert points["resnet_a"]["parts"][part] == pytest.approx(np.mean(sel), rel=1e-6)
    assert [p["part"] for p in body["parts"]] == ["Early", "Middle", "Late", "Pool", "Final"]
    rhos = set()
    for row in body["parts"]:
        xs = [p["parts"][row["part"]] for p in body["points"] if row["part"] in p["parts"]]
        ys = [p["scalar"] for p in body["points"] if row["part"] in p["parts"]]
        expected = stats.spearmanr(xs, ys)
        # e2cnn_steerable has 3 layers: Early, Pool, Final, no Middle/Late.
        extra = row["part"] in tb_helpers.default_parts(3)
        assert row["n"] == len(xs) == len(RUNS) + extra
        assert row["rho"] == pytest.approx(expected.statistic, abs=1e-12)
        assert row["p"] == pytest.approx(expected.pvalue, rel=1e-9)
        rhos.add(round(row["rho"], 6))
    assert len(rhos) > 1  # the fake runs rank differently per part


def test_spearman_run_selection(client):
    runs = ["resnet_a", "resnet_b", "resnet_c"]
    body = get(client, "/spearman", measure="equivariance", group="rot90", scalar="val/acc", run=runs)
    assert sorted(p["run"] for p in body["points"]) == runs
    assert all(p["n"] == 3 for p in body["parts"])
    body = get(client, "/spearman", expect=404, measure="equivariance", group="rot90", scalar="val/acc", run=["nope"])
    assert body["error"] == "Not found: no run of those selected has data for measure 'equivariance', group 'rot90'"


def test_spearman_module_edge_cases():
    stats = pytest.importorskip("scipy.stats")
    x, y = [1, 2, 2, 3, 5, 5, 5], [3, 1, 4, 1, 5, 9, 2]
    rho, p, note = data_module.spearman(x, y)
    expected = stats.spearmanr(x, y)
    assert rho == pytest.approx(expected.statistic) and p == pytest.approx(expected.pvalue)
    assert note is None
    assert data_module.spearman([1, 2], [2, 1])[2] == "needs at least 3 runs, got 2"
    assert data_module.spearman([1, 1, 1], [1, 2, 3])[2].startswith("constant input")
    assert data_module.spearman([1, 2, 3], [3, 2, 1])[:2] == (-1.0, 0.0)
    with pytest.raises(ValueError, match="x and y must be 1-D of equal length"):
        data_module.spearman([1, 2, 3], [1, 2])


def test_downsampled_flag(tmp_path):
    tb_helpers.write_fake_logdir(
        tmp_path, epochs=30, n_layers=3, runs={"long": RUNS["resnet_a"]}
    )
    args = dict(run="long", measure="equivariance", group="rot90")
    # TensorBoard's default for a plugin not named in --samples_per_plugin.
    sampled = get(make_client(tmp_path, samples=10, sampling_hints=None), "/series", **args)
    assert len(sampled["steps"]) == 10 and sampled["steps"][-1] == 29
    assert sampled["downsampled"] is True
    full = get(make_client(tmp_path, samples=0), "/series", **args)
    assert full["steps"] == list(range(30)) and full["downsampled"] is False


@pytest.mark.parametrize(
    "steps, limit, expected",
    [
        ([0, 1, 2, 3], None, False),
        ([0, 2, 4, 6], None, False),  # logged every 2nd epoch
        ([0, 3, 4, 9], None, True),
        ([5], None, False),
        (list(range(1, 11)), None, True),  # full at the default 10, first dropped
        (list(range(1, 11)), 20, False),
        ([0, 5, 9], 0, False),  # 0 = keep all: never sampled
    ],
)
def test_is_downsampled(steps, limit, expected):
    assert data_module.is_downsampled(steps, limit) is expected


def test_unreadable_metadata_is_reported(tmp_path):
    pb = tb_helpers.fake_report(0).items[0]
    good = summary.layers_pb(pb.measure, pb.group, pb.layers, pb.parts, pb.values)
    bad = summary_pb2.Summary()
    bad.CopyFrom(good)
    content = json.loads(bad.value[0].metadata.plugin_data.content)
    content["version"] = 99
    bad.value[0].metadata.plugin_data.content = json.dumps(content).encode()
    bad.value[0].tag = "equivariance_layers/future/rot90"
    writer = tb_helpers.EventWriter(tmp_path / "run")
    writer.add_summary(good, 0, 1.0)
    writer.add_summary(bad, 0, 1.0)
    writer.close()
    body = get(make_client(tmp_path), "/runs")
    assert [r["run"] for r in body["runs"]] == ["run"]
    assert body["measures"] == {"equivariance": ["rot90"]}
    (skipped,) = body["skipped"]
    assert skipped["tag"] == "equivariance_layers/future/rot90"
    assert "version 99; this lightning_equivariance_tb reads versions 1 and 2" in skipped["reason"]


def test_empty_logdir(tmp_path):
    client = make_client(tmp_path)
    body = get(client, "/runs")
    assert body["runs"] == [] and body["measures"] == {}
    assert get(client, "/scalar_tags") == {"tags": [], "runs": 0}
    body = get(client, "/series", expect=404, run="a", measure="m", group="g")
    assert "has no equivariance data" in body["error"]


def test_static_files(client):
    response = client.get(PREFIX + "/index.js")
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    source = response.get_data(as_text=True)
    assert "export async function render" in source
    css = client.get(PREFIX + "/style.css")
    assert css.status_code == 200 and css.mimetype == "text/css"
    # Every module the entry point imports, directly or not, is served beside it.
    seen, todo = set(), ["index.js"]
    while todo:
        name = todo.pop()
        module = client.get(PREFIX + "/" + name)
        assert (module.status_code, module.mimetype) == (200, "text/javascript"), name
        seen.add(name)
        todo += [m for m in re.findall(r'from "\./([a-z]+\.js)"', module.get_data(as_text=True)) if m not in seen]
    assert seen == {"index.js", "app.js", "views.js", "charts.js", "heatmap.js", "util.js"}


def test_plotly_bundle_comes_from_installed_package(client):
    path = plugin_module.plotly_bundle_path()
    assert path is not None and path.endswith(os.path.join("package_data", "plotly.min.js"))
    response = client.get(PREFIX + "/plotly.min.js", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200 and response.mimetype == "text/javascript"
    assert response.headers["Content-Encoding"] == "gzip"
    with open(path, "rb") as f:
        assert gzip.decompress(response.get_data()) == f.read()
    # Without gzip support TensorBoard's Respond decompresses on the fly.
    plain = client.get(PREFIX + "/plotly.min.js")
    assert "Content-Encoding" not in plain.headers
    assert plain.get_data()[:100] == open(path, "rb").read(100)


def test_no_cdn_and_no_vendored_plotly():
    static = os.path.join(os.path.dirname(plugin_module.__file__), "static")
    names = sorted(os.listdir(static))
    assert names == ["app.js", "charts.js", "heatmap.js", "index.js", "style.css", "util.js", "views.js"]
    for name in names:
        with open(os.path.join(static, name), encoding="utf-8") as f:
            text = f.read()
        assert not re.search(r"https?://|//cdn", text), name
        assert len(text) < 40_000, name  # our modules, not a bundle


# ---------------------------------------------------------------- infinities --
#
# docs/measures.md §5: nv/nd are x/0 = +inf, a documented value. The routes
# send infinities as "Infinity"/"-Infinity" strings in JSON, as IEEE float32
# infinities in base64; NaN (missing) as null / NaN.

INF_LAYERS = ["c0", "c1", "c2", "c3", "pool", "fc"]
INF_PARTS = ["Early", "Early", "Middle", "Late", "Pool", "Final"]
INF_EPOCHS = 3


def inf_values(run, epoch):
    base = np.linspace(0.2, 0.9, len(INF_LAYERS)) + 0.03 * epoch
    base += {"inf_a": 0.0, "inf_b": 0.1, "inf_c": 0.2, "inf_d": -0.1, "inf_mixed": 0.05}[run]
    if run == "inf_a" and epoch >= 1:
        base[2] = np.inf  # Middle = +inf
    if run == "inf_b":
        base[3] = -np.inf  # Late = -inf
    if run == "inf_d" and epoch == INF_EPOCHS - 1:
        base[2] = np.inf  # a second +inf Middle: a tie of ranks
    if run == "inf_mixed":
        base[0], base[1] = np.inf, -np.inf  # Early: +inf and -inf, no mean
    return base


INF_ACC = {"inf_a": 0.9, "inf_b": 0.6, "inf_c": 0.7, "inf_d": 0.8, "inf_mixed": 0.5}


@pytest.fixture(scope="module")
def inf_client(tmp_path_factory):
    from tensorboard.compat.proto import event_pb2

    path = tmp_path_factory.mktemp("inf_logdir")
    for run, acc in INF_ACC.items():
        for epoch in range(INF_EPOCHS):
            values = inf_values(run, epoch)
            channels = [[v, v + 0.01] for v in values]
            if run == "inf_a":
                channels[1] = [0.3, np.inf, -np.inf]
            report = tb_helpers.FakeReport(
                [tb_helpers.FakeSeries("nv", "rot90", INF_LAYERS, INF_PARTS, values, channels, False)]
            )
            summary.write_report(path / run, report, epoch, per_channel=True, walltime=1000.0 + epoch)
        writer = tb_helpers.EventWriter(path / run)
        summary_pb = summary_pb2.Summary(
            value=[summary_pb2.Summary.Value(tag="val/acc", simple_value=acc)]
        )
        writer._writer.add_event(event_pb2.Event(wall_time=1000.0, step=INF_EPOCHS - 1, summary=summary_pb))
        writer.close()
    return make_client(path)


def test_series_infinities_json_and_base64(inf_client):
    args = dict(run="inf_a", measure="nv", group="rot90")
    as_json = get(inf_client, "/series", **args)
    assert as_json["values"][2] == [pytest.approx(inf_values("inf_a", 0)[2]), "Infinity", "Infinity"]
    expected = np.array([inf_values("inf_a", e) for e in range(INF_EPOCHS)]).T
    got = np.array([[number(v) for v in row] for row in as_json["values"]])
    np.testing.assert_allclose(got, expected, rtol=1e-6)  # inf == inf
    as_b64 = get(inf_client, "/series", raw=True, encoding="base64", **args)
    decoded = np.frombuffer(base64.b64decode(as_b64["values_base64"]), "<f4").reshape(
        as_b64["values_shape"]
    )
    assert decoded[2, 1] == np.inf and decoded[2, 2] == np.inf
    np.testing.assert_allclose(decoded, expected, rtol=1e-6)
    minus = get(inf_client, "/series", run="inf_b", measure="nv", group="rot90")
    assert minus["values"][3] == ["-Infinity"] * INF_EPOCHS
    batch = get(inf_client, "/series_batch", run=["inf_a", "inf_b"], measure="nv", group="rot90")
    assert batch["series"][0] == as_json and batch["series"][1] == minus


def test_channels_infinities(inf_client):
    args = dict(run="inf_a", measure="nv", group="rot90", layer="c1")
    body = get(inf_client, "/channels", **args)
    assert body["channels"] == 3
    assert body["values"][1] == ["Infinity"] * INF_EPOCHS
    assert body["values"][2] == ["-Infinity"] * INF_EPOCHS
    one = get(inf_client, "/channels", step=1, **args)
    assert one["values"] == [pytest.approx(0.3), "Infinity", "-Infinity"]
    b64 = get(inf_client, "/channels", raw=True, encoding="base64", **args)
    decoded = np.frombuffer(base64.b64decode(b64["values_base64"]), "<f4").reshape(b64["values_shape"])
    assert (decoded[1] == np.inf).all() and (decoded[2] == -np.inf).all()
    assert not np.isnan(decoded).any()  # the padding is cut off


def test_spearman_with_infinities(inf_client):
    stats = pytest.importorskip("scipy.stats")
    body = get(inf_client, "/spearman", measure="nv", group="rot90", scalar="val/acc")
    points = {p["run"]: p for p in body["points"]}
    assert points["inf_a"]["parts"]["Middle"] == "Infinity"
    assert points["inf_b"]["parts"]["Late"] == "-Infinity"
    assert points["inf_mixed"]["parts"]["Early"] is None  # +inf with -inf: no mean
    # Part means: the plain mean (one +inf layer makes the part +inf).
    last = inf_values("inf_c", INF_EPOCHS - 1)
    assert points["inf_c"]["parts"]["Early"] == pytest.approx(np.mean(last[:2]), rel=1e-6)
    rows = {row["part"]: row for row in body["parts"]}
    assert rows["Early"]["n"] == len(INF_ACC) - 1
    assert rows["Early"]["excluded"] == [
        {"run": "inf_mixed", "why": "part mean undefined (+inf and -inf layers)"}
    ]
    for part, row in rows.items():
        usable = [p for p in body["points"] if p["parts"][part] is not None]
        xs = [number(p["parts"][part]) for p in usable]
        ys = [p["scalar"] for p in usable]
        # Ranks are all that matter: +inf ranks above, -inf below every number.
        surrogate = np.clip(xs, -1e30, 1e30)
        expected = stats.spearmanr(surrogate, ys)
        assert row["rho"] == pytest.approx(expected.statistic, abs=1e-12), part
        assert row["p"] == pytest.approx(expected.pvalue, rel=1e-9), part
    # Middle: inf_a and inf_d are both +inf, a tie at the top.
    assert sorted(number(points[r]["parts"]["Middle"]) for r in ("inf_a", "inf_d")) == [np.inf, np.inf]


def test_json_encoding_of_infinities():
    # The routes answer through TensorBoard's http_util.Respond (json_util.Cleanse);
    # the data layer turns NaN into None first.
    from tensorboard.backend import http_util

    @wrappers.Request.application
    def app(request):
        body = {"a": float("inf"), "b": -float("inf"), "c": data_module.json_number(float("nan")),
                "d": [1.5, float("inf")], "m": data_module.encode_matrix([[1.0, np.inf], [-np.inf, np.nan]])}
        return http_util.Respond(request, body, "application/json")

    body = strict_json(werkzeug_test.Client(app, wrappers.Response).get("/").get_data(as_text=True))
    m = body.pop("m")
    assert body == {"a": "Infinity", "b": "-Infinity", "c": None, "d": [1.5, "Infinity"]}
    assert tb_helpers.decode_values(m)["values"] == [[1.0, "Infinity"], ["-Infinity", None]]
    assert float("Infinity") == np.inf and float("-Infinity") == -np.inf  # Python reads them


def test_part_means():
    parts = ["Early", "Early", "Middle", "Pool", "Final", "Final"]
    means = data_module.part_means([1.0, 3.0, np.inf, -np.inf, np.inf, -np.inf], parts)
    assert list(means) == ["Early", "Middle", "Pool", "Final"]  # depth order
    assert means["Early"] == 2.0 and means["Middle"] == np.inf and means["Pool"] == -np.inf
    assert np.isnan(means["Final"])


def test_spearman_ranks_infinities():
    rho, p, note = data_module.spearman([np.inf, 1.0, 2.0, -np.inf], [4.0, 2.0, 3.0, 1.0])
    assert rho == pytest.approx(1.0) and note is None
    with pytest.raises(ValueError, match="NaN"):
        data_module.spearman([1.0, np.nan, 2.0], [1.0, 2.0, 3.0])



# ------------------------------------------------------ malformed event files --
#
# Every field read from an event file is validated: unreadable data is a 4xx JSON
# error (or left out and counted), never a 500.


@pytest.fixture(scope="module")
def bad_client(tmp_path_factory):
    path = tmp_path_factory.mktemp("malformed_logdir")
    tb_helpers.write_malformed_logdir(path)
    return make_client(path)


EQ = dict(measure="equivariance", group="rot90")


@pytest.mark.parametrize(
    "route, params, code, message",
    [
        ("/series", dict(run="string_tensor", **EQ), 404,
         "run 'string_tensor' has no readable data for measure 'equivariance', group 'rot90': 3 point(s)"),
        ("/series", dict(run="string_tensor", **EQ), 404, "not a numeric tensor (object)"),
        ("/series_batch", dict(run=["good_a", "string_tensor"], **EQ), 404, "run 'string_tensor' has no readable data"),
        ("/channels", dict(run="string_tensor", layer="c1", **EQ), 404, "has no readable per-channel data"),
        ("/channels", dict(run="bad_channels", layer="c1", **EQ), 404, "run 'bad_channels' has no per-channel data"),
    ],
)
def test_malformed_event_files_are_4xx_json(bad_client, route, params, code, message):
    body = get(bad_client, route, expect=code, **params)
    assert set(body) == {"error"}
    assert message in body["error"]


def test_malformed_event_files_never_500(bad_client):
    runs = [r["run"] for r in get(bad_client, "/runs")["runs"]]
    assert set(runs) == {"string_tensor", "bad_channels", "bad_shape", "bad_record", "markup_part",
                         "good_a", "good_b", "sv_run"}
    for run in runs:
        for route, extra in [
            ("/series", {}),
            ("/channels", {"layer": "c1"}),
            ("/channels", {"layer": "c1", "step": "1"}),
        ]:
            for measure in ("equivariance", "sv"):
                response = bad_client.get(
                    PREFIX + route, query_string=dict(run=run, measure=measure, group="rot90", **extra)
                )
                assert response.status_code in (200, 404), (run, route, response.get_data(as_text=True))
                assert response.mimetype == "application/json"
    assert get(bad_client, "/spearman", scalar="val/acc", **EQ)["points"]
    assert get(bad_client, "/scalar_tags")["runs"] == len(runs)


def test_bad_channel_metadata_is_skipped_and_named(bad_client):
    body = get(bad_client, "/runs")
    (skipped,) = [s for s in body["skipped"] if s["run"] == "bad_channels"]
    assert skipped["tag"] == "equivariance_channels/equivariance/rot90"
    assert "one integer channel count >= 0 per layer" in skipped["reason"]
    (run,) = [r for r in body["runs"] if r["run"] == "bad_channels"]
    assert run["series"][0]["has_channels"] is False
    assert get(bad_client, "/series", run="bad_channels", **EQ)["steps"] == [0, 1, 2]


def test_bad_points_and_records_are_left_out_and_counted(bad_client):
    shape = get(bad_client, "/series", run="bad_shape", **EQ)
    assert shape["steps"] == [0, 2] and shape["skipped_points"] == 1
    record = get(bad_client, "/series", run="bad_record", **EQ)
    assert record["steps"] == [0, 1, 2] and record["skipped_records"] == 3
    assert record["missing"] == [] and record["epochs"] == [None, None, None]


def test_markup_in_part_names_is_served_verbatim(bad_client):
    # An unknown part name is a label: served as it is (the tab shows it as text),
    # its part means and its Spearman row computed like any other.
    body = get(bad_client, "/series", run="markup_part", **EQ)
    assert body["parts"][0] == MARKUP_PART
    assert body["unknown_parts"] == [MARKUP_PART]
    assert body["part_names"] == ["Late", "Pool", "Final", MARKUP_PART]  # known parts first
    channels = get(bad_client, "/channels", run="markup_part", layer=MALFORMED_LAYERS[0], **EQ)
    assert channels["part"] == MARKUP_PART
    spearman = get(bad_client, "/spearman", scalar="val/acc", **EQ)
    rows = {row["part"]: row for row in spearman["parts"]}
    assert rows[MARKUP_PART]["n"] == 1 and rows[MARKUP_PART]["note"] == "needs at least 3 runs, got 1"
    assert [row["part"] for row in spearman["parts"]] == ["Early", "Late", "Pool", "Final", MARKUP_PART]


def test_no_preferred_direction_is_served_as_none(bad_client):
    # sv/sd have higher_is_better=None: neither "higher" nor "lower is better".
    (run,) = [r for r in get(bad_client, "/runs")["runs"] if r["run"] == "sv_run"]
    assert run["series"] == [dict(run["series"][0], measure="sv", higher_is_better=None)]
    assert get(bad_client, "/series", run="sv_run", measure="sv", group="rot90")["higher_is_better"] is None
    channels = get(bad_client, "/channels", run="sv_run", measure="sv", group="rot90", layer="c0")
    assert channels["higher_is_better"] is None


# ------------------------------------------------------------- format v1 ----

V1_LOGDIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tb_v1")


def v1_values(run, epoch, m):
    """The values tests/data/tb_v1 holds (see its README)."""
    base = np.linspace(0.2, 0.8, 6) + 0.05 * epoch + {"v1_resnet": 0.0, "v1_steerable": 0.1}[run] + 0.01 * m
    return np.round(base, 3)


def test_v1_logs_are_served():
    client = make_client(V1_LOGDIR)
    body = get(client, "/runs")
    runs = {r["run"]: r for r in body["runs"]}
    assert set(runs) == {"v1_resnet", "v1_steerable"} and body["skipped"] == []
    assert runs["v1_steerable"]["baseline"] is True and runs["v1_resnet"]["baseline"] is False
    assert runs["v1_resnet"]["model"] == "resnet18 (v1)" and runs["v1_resnet"]["run_group"] == ""
    directions = {(s["measure"], s["group"]): s["higher_is_better"] for s in runs["v1_resnet"]["series"]}
    assert directions == {("equivariance", "rot90"): True, ("invariance", "rot90"): True, ("lee", "rotation"): False}
    series = get(client, "/series", run="v1_resnet", measure="invariance", group="rot90")
    assert series["version"] == 1 and series["steps"] == [0, 1, 2] and series["missing"] == []
    assert series["layers"] == ["features.0", "features.1", "features.2", "features.3", "pool", "fc"]
    for epoch in range(3):
        np.testing.assert_allclose(
            [row[epoch] for row in series["values"]], v1_values("v1_resnet", epoch, 1), rtol=1e-6
        )
    lee = get(client, "/series", run="v1_resnet", measure="lee", group="rotation")
    assert lee["values"][3][2] == "Infinity"
    channels = get(client, "/channels", run="v1_resnet", layer="features.3", **EQ)
    assert channels["channels"] == 4 and channels["part"] == "Late"
    np.testing.assert_allclose(
        [row[2] for row in channels["values"]],
        v1_values("v1_resnet", 2, 0)[3] + np.round(np.linspace(-0.01, 0.01, 4), 4), rtol=1e-6,
    )
    spearman = get(client, "/spearman", scalar="val/acc", **EQ)
    assert {p["run"] for p in spearman["points"]} == {"v1_resnet", "v1_steerable"}


# ------------------------------------------------- margins (issue 24) ----

NO_MARGIN_LOGDIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tb_v2_no_margin")


def test_logs_without_margins_are_served(tmp_path):
    """A log written before the margin fields (tests/data/tb_v2_no_margin) next to one with them:
    both are served, each with the statistics it holds."""
    import shutil

    shutil.copytree(os.path.join(NO_MARGIN_LOGDIR, "pre_margin"), tmp_path / "pre_margin")
    layers, parts = ["conv1", "conv2", "relu", "pool", "fc"], ["Early", "Middle", "Late", "Pool", "Final"]
    series = summary.Series(
        "equivariance", "rot90", layers, parts, values=[0.5] * 5, chance=[0.3] * 5, stderr=[0.02] * 5,
        margin=[0.2, 0.2, 0.01, 0.2, 0.05], margin_stderr=[0.01, 0.01, 0.015, 0.01, np.nan],
        margin_low=[0.18, 0.18, -0.015, 0.18, np.nan], significant=[True, True, False, True, False],
    )
    summary.write_series(tmp_path / "with_margin", [series], 0, model="m", walltime=1000.0)
    client = make_client(tmp_path)
    old = get(client, "/series", run="pre_margin", **EQ)
    assert set(old["stats"]) == {"stderr", "chance", "above_chance", "informative", "non_finite"}
    assert old["steps"] == [0, 1] and old["global_steps"] == [0, 10]
    np.testing.assert_allclose([row[1] for row in old["values"]], np.round(np.linspace(0.3, 0.7, 5) + 0.05, 3),
                               rtol=1e-6)
    def stat(body, field):
        return tb_helpers.decode_values(dict(body["stats"][field]))["values"]
    np.testing.assert_allclose([row[0] for row in stat(old, "chance")], [0.25] * 5, rtol=1e-6)
    new = get(client, "/series", run="with_margin", **EQ)
    assert {"margin", "margin_stderr", "margin_low", "significant"} <= set(new["stats"])
    assert [row[0] for row in stat(new, "significant")] == [1, 1, 0, 1, 0]
    low = [row[0] for row in stat(new, "margin_low")]
    assert low[4] is None and low[2] == pytest.approx(-0.015, rel=1e-6)


# ------------------------------------------------------------- format v2 ----


@pytest.fixture(scope="module")
def v2_client(tmp_path_factory):
    path = tmp_path_factory.mktemp("v2_logdir")
    layers = ["conv1", "conv2", "relu", "pool", "fc"]
    parts = ["Early", "Early", "Late", "Pool", "Final"]
    for epoch in range(3):
        missing = {"relu": ("not_called", "hook never fired")}
        if epoch == 1:
            missing["conv2"] = ("refused", "dead output")
        series = summary.Series(
            "invariance", "rot90", layers, parts, values=[0.1 + epoch, 0.3, np.nan, 0.5, np.inf],
            stderr=[0.01, 0.02, np.nan, 0.03, np.nan], non_finite=[0, 1, 0, 0, 0], missing=missing,
        )
        summary.write_series(path / "run", [series], epoch, epoch=epoch, global_step=10 * epoch,
                             run_group="sweep", model="m", walltime=1000.0 + epoch)
    return make_client(path)


def test_v2_missing_layers_records_and_stats(v2_client):
    (run,) = get(v2_client, "/runs")["runs"]
    assert run["run_group"] == "sweep" and run["series"][0]["has_stats"] is True
    body = get(v2_client, "/series", run="run", measure="invariance", group="rot90")
    assert body["version"] == 2 and body["epochs"] == [0, 1, 2] and body["global_steps"] == [0, 10, 20]
    assert body["values"][2] == [None, None, None]  # relu: never called
    assert body["values"][1] == [pytest.approx(0.3), None, pytest.approx(0.3)]  # conv2 refused at epoch 1
    assert body["missing"] == [
        {"layer": 2, "point": 0, "status": "not_called", "reason": "hook never fired"},
        {"layer": 1, "point": 1, "status": "refused", "reason": "dead output"},
        {"layer": 2, "point": 1, "status": "not_called", "reason": "hook never fired"},
        {"layer": 2, "point": 2, "status": "not_called", "reason": "hook never fired"},
    ]
    # Part means over the measured layers only: Early at epoch 1 is conv1 alone.
    assert body["part_names"] == ["Early", "Late", "Pool", "Final"]
    parts = tb_helpers.decode_values(
        {"values_base64": body["part_values_base64"], "values_shape": body["part_values_shape"]}
    )["values"]
    assert parts[0] == [pytest.approx(0.2), pytest.approx(1.1), pytest.approx(1.2)]
    assert parts[1] == [None, None, None] and parts[3] == ["Infinity"] * 3
    stderr = tb_helpers.decode_values(dict(body["stats"]["stderr"]))["values"]
    assert stderr[1] == [pytest.approx(0.02), None, pytest.approx(0.02)] and stderr[4] == [None] * 3
    assert set(body["stats"]) == {"stderr", "non_finite"}


# ------------------------------------------------------------------- groups --
#
# Issue 15: runs grouped by their recorded run_group or a regex; per layer and
# part the mean over the group's runs and the 95% Student-t interval over runs,
# equal to numpy/scipy's over the runs' logged values.


@pytest.fixture(scope="module")
def group_logdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("group_logdir")
    return path, tb_helpers.write_group_logdir(path)


@pytest.fixture(scope="module")
def group_client(group_logdir):
    return make_client(group_logdir[0])


def group_matrices(body, prefix=""):
    out = {}
    for k in ("mean", "low", "high", "n"):
        assert body["%s%s_dtype" % (prefix, k)] == "float64"
        raw = base64.b64decode(body["%s%s_base64" % (prefix, k)])
        out[k] = np.frombuffer(raw, "<f8").reshape(body["%s%s_shape" % (prefix, k)])
    return out


def t_reference(sample):
    from scipy import stats

    a = np.asarray(sample, dtype=np.float64)
    if a.size < 2:
        return a.mean(), np.nan, np.nan
    low, high = stats.t.interval(0.95, a.size - 1, loc=a.mean(), scale=a.std(ddof=1) / np.sqrt(a.size))
    return a.mean(), low, high


def check_group(group_body, logged, x_of=lambda epoch: epoch):
    """Compare one /groups group with numpy/scipy over the logged (float32) values."""
    runs = group_body["runs"]
    assert group_body["layers"] == tb_helpers.GROUP_LAYERS
    xs = group_body["xs"]
    layers = group_matrices(group_body)
    parts = group_matrices(group_body, "part_")
    part_names = group_body["part_names"]
    assert part_names == ["Early", "Middle", "Late", "Pool", "Final"]
    checked = 0
    for j, xv in enumerate(xs):
        for i in range(len(tb_helpers.GROUP_LAYERS)):
            sample = [
                logged[r][e][i] for r in runs for e in range(len(logged[r]))
                if x_of(e) == xv and np.isfinite(logged[r][e][i])
            ]
            mean, low, high = t_reference(sample)
            assert layers["n"][i, j] == len(sample)
            np.testing.assert_allclose(layers["mean"][i, j], mean, rtol=0, atol=1e-9)
            np.testing.assert_allclose(layers["low"][i, j], low, rtol=0, atol=1e-9)
            np.testing.assert_allclose(layers["high"][i, j], high, rtol=0, atol=1e-9)
            checked += 1
        for k, part in enumerate(part_names):
            rows = [i for i, p in enumerate(tb_helpers.GROUP_PARTS) if p == part]
            sample = []
            for r in runs:
                for e in range(len(logged[r])):
                    if x_of(e) != xv:
                        continue
                    vals = [logged[r][e][i] for i in rows if np.isfinite(logged[r][e][i])]
                    if vals:
                        sample.append(np.mean(vals))
            mean, low, high = t_reference(sample)
            assert parts["n"][k, j] == len(sample)
            np.testing.assert_allclose(parts["mean"][k, j], mean, rtol=0, atol=1e-9)
            np.testing.assert_allclose(parts["low"][k, j], low, rtol=0, atol=1e-9)
            np.testing.assert_allclose(parts["high"][k, j], high, rtol=0, atol=1e-9)
    return checked


def test_groups_mean_and_t_interval_match_numpy_scipy(group_client, group_logdir):
    logged = group_logdir[1]
    body = get(group_client, "/groups", measure="equivariance", group="rot90")
    assert body["interval"] == "95% Student-t interval over runs" and body["confidence"] == 0.95
    assert body["x"] == "step" and body["ungrouped"] == ["lone_run"]
    groups = {g["name"]: g for g in body["groups"]}
    assert list(groups) == ["cnn", "rotaug", "steerable"]
    assert groups["cnn"]["runs"] == ["cnn_seed0", "cnn_seed1", "cnn_seed2"]
    assert groups["steerable"]["baseline"] is True and groups["cnn"]["baseline"] is False
    assert groups["cnn"]["xs"] == [0, 1, 2, 3]
    for g in groups.values():
        assert check_group(g, logged) > 0
    # cnn: 3 runs at epochs 0 and 2; conv3 is missing in cnn_seed1 at epoch 1, and
    # cnn_seed2 has no epoch 3: n follows the runs that have a value there.
    n = group_matrices(groups["cnn"])["n"]
    assert n[0].tolist() == [3, 3, 3, 2] and n[2].tolist() == [3, 2, 3, 2]
    # a group of one run: the run's values, no interval
    single = group_matrices(groups["steerable"])
    np.testing.assert_allclose(single["mean"], np.array(logged["steerable_seed0"]).T, rtol=0, atol=1e-12)
    assert np.isnan(single["low"]).all() and np.isnan(single["high"]).all()


def test_group_body_matches_numpy_scipy():
    # The data layer's group of two runs given directly (no event files).
    md = {"layers": ["a", "b"], "parts": ["Early", "Pool"], "baseline": False, "model": "m",
          "higher_is_better": True}
    m1 = np.array([[0.1, 0.2, 0.3], [np.inf, 0.5, np.nan]])
    m2 = np.array([[0.15, 0.25], [0.4, 0.45]])
    body = data_module.group_body("g", [("r1", md, [0, 1, 2], m1), ("r2", md, [1, 2], m2)])
    got = group_matrices(body)
    assert body["xs"] == [0, 1, 2] and body["runs"] == ["r1", "r2"] and body["models"] == ["m"]
    assert got["n"].tolist() == [[1, 2, 2], [0, 2, 1]]  # +inf and NaN do not count
    for (i, j), sample in {(0, 1): [0.2, 0.15], (0, 2): [0.3, 0.25], (1, 1): [0.5, 0.4]}.items():
        mean, low, high = t_reference(sample)
        assert abs(got["mean"][i, j] - mean) <= 1e-9
        assert abs(got["low"][i, j] - low) <= 1e-9 and abs(got["high"][i, j] - high) <= 1e-9
    assert got["mean"][0, 0] == 0.1 and np.isnan(got["low"][0, 0]) and np.isnan(got["mean"][1, 0])


def test_groups_follow_the_selection_and_a_pattern(group_client, group_logdir):
    logged = group_logdir[1]
    # a run toggled out of its group changes the group
    body = get(group_client, "/groups", measure="equivariance", group="rot90",
               run=["cnn_seed0", "cnn_seed2", "rotaug_seed0"])
    groups = {g["name"]: g for g in body["groups"]}
    assert groups["cnn"]["runs"] == ["cnn_seed0", "cnn_seed2"]
    assert groups["rotaug"]["runs"] == ["rotaug_seed0"]
    check_group(groups["cnn"], logged)
    # a regex: the first capture group names the group; a run not matching is ungrouped
    body = get(group_client, "/groups", measure="equivariance", group="rot90", pattern=r"^([a-z]+)_seed\d$")
    groups = {g["name"]: g["runs"] for g in body["groups"]}
    assert groups == {
        "cnn": ["cnn_seed0", "cnn_seed1", "cnn_seed2"],
        "rotaug": ["rotaug_seed0", "rotaug_seed1"],
        "steerable": ["steerable_seed0"],
    }
    assert body["ungrouped"] == ["lone_run"] and body["pattern"] == r"^([a-z]+)_seed\d$"
    body = get(group_client, "/groups", measure="equivariance", group="rot90", pattern=r"seed(\d)")
    assert {g["name"]: len(g["runs"]) for g in body["groups"]} == {"0": 3, "1": 2, "2": 1}
    # x = the recorded global step (10 * (epoch + 1))
    body = get(group_client, "/groups", measure="equivariance", group="rot90", x="global_step")
    cnn = next(g for g in body["groups"] if g["name"] == "cnn")
    assert cnn["xs"] == [10, 20, 30, 40]
    check_group(cnn, logged, x_of=lambda epoch: 10 * (epoch + 1))


@pytest.mark.parametrize(
    "params, code, message",
    [
        (dict(measure="equivariance", group="rot90", pattern="("), 400, "invalid run-group pattern"),
        (dict(measure="equivariance", group="rot90", x="wall"), 400, "x must be one of"),
        (dict(measure="equivariance"), 400, "missing query parameter 'group'"),
        (dict(measure="nope", group="rot90"), 404, "no run has data"),
    ],
)
def test_groups_errors(group_client, params, code, message):
    assert message in get(group_client, "/groups", expect=code, **params)["error"]


def test_groups_of_runs_without_run_group(client):
    # The fake logdir records no run_group: no group, every run ungrouped.
    body = get(client, "/groups", measure="equivariance", group="rot90")
    assert body["groups"] == [] and "resnet_a" in body["ungrouped"]
    body = get(client, "/groups", measure="equivariance", group="rot90", pattern=r"^(resnet)_")
    (g,) = body["groups"]
    assert g["name"] == "resnet" and g["runs"] == ["resnet_a", "resnet_b", "resnet_c"]


# ------------------------------------------------------------ issue 25 --
# No run-group pattern can stall TensorBoard; /groups is linear in runs x points
# and bounded.

LONG_RUNS = {
    # run: (run_group, baseline, offset, epochs) as in tb_helpers.GROUP_RUNS; none matches the
    # pattern below as written with a nested quantifier, save the last three
    "cnn_rotaug_seed0_lr0.001_bs64_wd0.0005": ("", False, 0.0, 2),
    "cnn_rotaug_seed1_lr0.001_bs64_wd0.0005": ("", False, 0.02, 2),
    "cnn_rotaug_seed2_lr0.001_bs64_wd0.0005_cosine_warmup5_ema0.999_fp16_grad_clip1.0": ("", False, 0.04, 2),
    "resnet18_rotaug_mixup0.2_cutmix1.0_label_smoothing0.1_lr0.1_bs256_wd0.0001": ("", False, 0.1, 2),
    "cnn_rotaug_lr0.001_bs64_wd0.0005_seed0": ("", False, 0.05, 2),
    "cnn_rotaug_lr0.001_bs64_wd0.0005_seed1": ("", False, 0.06, 2),
    "steerable_c8_lr0.0003_bs128_wd0.0001_seed12": ("", True, 0.3, 2),
}


def _url(tb, route, **params):
    import urllib.parse

    return tb.url + PREFIX + route + "?" + urllib.parse.urlencode(params, doseq=True)


def _fetch(tb, route, **params):
    """``(status, JSON body)``; a request timeout of 10 s only catches a hang."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(_url(tb, route, **params), timeout=10) as r:
            return r.status, strict_json(r.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        return e.code, strict_json(e.read().decode("utf-8"))


def test_a_catastrophic_pattern_neither_hangs_nor_blocks_tensorboard(tmp_path):
    # ^(.*)*_seed\d+$ is one character away from the documented ^(.*)_seed\d+$; Python's re
    # backtracks on it for hours on these names and every other route hung behind it.
    tb_helpers.write_group_logdir(tmp_path, runs=LONG_RUNS)
    expected = {}
    for run in sorted(LONG_RUNS):
        match = re.search(r"^(.*)_seed\d+$", run)
        if match:
            expected.setdefault(match.group(1), []).append(run)
    assert len(expected) == 2 and sum(map(len, expected.values())) == 3
    with tb_helpers.TensorBoardProcess(tmp_path) as tb:
        status, body = _fetch(tb, "/runs")
        assert status == 200 and len(body["runs"]) == len(LONG_RUNS)
        for pattern in (r"^(.*)*_seed\d+$", r"^(.*)*_seed\d+$", r"^((.*)*)*_seed\d+$", r"(a|aa)*_seed\d+$"):
            status, body = _fetch(tb, "/groups", measure="equivariance", group="rot90", pattern=pattern)
            if status == 400:  # a refusal is fine too, if it says why
                assert "run-group pattern" in body["error"] and body["argument"] == "pattern"
            else:
                assert status == 200
                if pattern.startswith("^"):
                    assert {g["name"]: g["runs"] for g in body["groups"]} == expected
                    assert body["ungrouped"] == sorted(set(LONG_RUNS) - {r for rs in expected.values() for r in rs})
            # every other route still answers right after
            status, body = _fetch(tb, "/runs")
            assert status == 200 and len(body["runs"]) == len(LONG_RUNS)
        # a pattern RE2 does not have: a 400 naming it, the reason and the syntax
        status, body = _fetch(tb, "/groups", measure="equivariance", group="rot90", pattern=r"(\w+)_seed\d+_\1")
        assert status == 400 and body["argument"] == "pattern"
        assert "invalid run-group pattern" in body["error"] and "RE2" in body["error"] and r"\\1" in body["error"]
        assert _fetch(tb, "/runs")[0] == 200


@pytest.mark.parametrize("pattern, why", [
    (r"^(?=cnn)(\w+)_seed", "(?="),
    (r"(\w+)_seed\d\1", r"\1"),
    ("(", "missing )"),
])
def test_groups_refused_pattern_is_a_400_naming_the_argument(group_client, pattern, why):
    body = get(group_client, "/groups", expect=400, measure="equivariance", group="rot90", pattern=pattern)
    assert body["argument"] == "pattern"
    assert "invalid run-group pattern %r" % pattern in body["error"] and why in body["error"]
    assert "RE2 syntax" in body["error"]
    # other 400s name no argument the tab should stop sending
    body = get(group_client, "/groups", expect=400, measure="equivariance", group="rot90", x="wall")
    assert "argument" not in body


def test_group_body_of_runs_at_their_own_steps_matches_group_statistics():
    # Every run at its own x values, a run with two points at one x (its last one counts),
    # layers only some runs have: the same as run_groups.group_statistics per layer and x.
    from lightning_equivariance_tb import run_groups

    rng = np.random.default_rng(5)
    def md(layers, parts):
        return {"layers": layers, "parts": parts, "baseline": False, "model": "m", "higher_is_better": True}
    runs = [
        ("r0", md(["a", "b", "c"], ["Early", "Late", "Final"]), [0, 10, 20, 30], rng.normal(size=(3, 4))),
        ("r1", md(["a", "b", "c"], ["Early", "Late", "Final"]), [5, 10, 10, 25, None], rng.normal(size=(3, 5))),
        ("r2", md(["a", "x", "c"], ["Early", "Middle", "Final"]), [1, 20, 30], rng.normal(size=(3, 3))),
    ]
    runs[1][3][1, 2] = np.nan  # r1's last point at x=10 is missing for b: b has no r1 value at 10
    runs[2][3][0, 0] = np.inf
    body = data_module.group_body("g", runs)
    assert body["xs"] == [0, 1, 5, 10, 20, 25, 30] and body["layers"] == ["a", "x", "b", "c"]
    got = group_matrices(body)
    for i, layer in enumerate(body["layers"]):
        by_run = {}
        for run, m, xs, matrix in runs:
            if layer in m["layers"]:
                row = matrix[m["layers"].index(layer)]
                values = {}
                for j, xv in enumerate(xs):
                    if xv is not None:
                        values[xv] = row[j]  # the last point at an x wins
                by_run[run] = values
        ref = run_groups.group_statistics(by_run)
        for j, xv in enumerate(body["xs"]):
            if xv not in ref:
                assert got["n"][i, j] == 0 and np.isnan(got["mean"][i, j])
                continue
            assert got["n"][i, j] == ref[xv]["n"]
            assert abs(got["mean"][i, j] - ref[xv]["mean"]) <= 1e-12
            for k in ("low", "high"):
                if ref[xv][k] is None:
                    assert np.isnan(got[k][i, j])
                else:
                    assert abs(got[k][i, j] - ref[xv][k]) <= 1e-12
    assert got["n"][body["layers"].index("b"), body["xs"].index(10)] == 1  # r0 only: r1's last point is NaN
    assert got["n"][body["layers"].index("a"), body["xs"].index(10)] == 2


def test_groups_answer_is_bounded(group_client, monkeypatch):
    # The bound admits 100 runs x 40 layers x 100 points, every run at its own steps (one group:
    # 40 layers + 5 parts, by 10,000 distinct x values).
    assert (40 + 5) * 100 * 100 <= data_module.MAX_GROUP_CELLS
    body = get(group_client, "/groups", measure="equivariance", group="rot90")
    # the group logdir: cnn, rotaug, steerable groups of 6 layers + 5 parts at 4 epochs
    cells = sum((len(g["layers"]) + len(g["part_names"])) * len(g["xs"]) for g in body["groups"])
    assert cells == 3 * 11 * 4
    monkeypatch.setattr(data_module, "MAX_GROUP_CELLS", cells)
    assert get(group_client, "/groups", measure="equivariance", group="rot90")["groups"]
    monkeypatch.setattr(data_module, "MAX_GROUP_CELLS", cells - 1)
    body = get(group_client, "/groups", expect=400, measure="equivariance", group="rot90")
    assert "would hold %d (layer or part) x step cells, more than the %d" % (cells, cells - 1) in body["error"]
    assert "Select fewer runs" in body["error"] and "argument" not in body

"""The event format written by lightning_equivariance_tb.summary, read back by TensorBoard."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.proto import summary_pb2
from tensorboard.util import tensor_util

from lightning_equivariance_tb import metadata, summary
from tb_helpers import FakeReport, FakeSeries, fake_report, layer_names

LAYERS_TAG = "equivariance_layers/equivariance/rot90"
CHANNELS_TAG = "equivariance_channels/equivariance/rot90"


def load(run_dir):
    acc = event_accumulator.EventAccumulator(
        str(run_dir), size_guidance={event_accumulator.TENSORS: 0}
    )
    acc.Reload()
    return acc


def values_of(acc, tag):
    return [
        (e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)
    ]


def test_path_writer_roundtrip(tmp_path):
    channels = [3, 5, 2, 4, 6, 1]
    reports = [fake_report(e, channels=channels) for e in range(3)]
    for epoch, report in enumerate(reports):
        n = summary.write_report(
            tmp_path / "run", report, epoch, model="resnet18", per_channel=True
        )
        assert n == 4  # 2 measures x (layers + channels)
    acc = load(tmp_path / "run")
    tags = set(acc.Tags()["tensors"])
    assert tags == {
        LAYERS_TAG,
        CHANNELS_TAG,
        "equivariance_layers/invariance/rot90",
        "equivariance_channels/invariance/rot90",
    }
    points = values_of(acc, LAYERS_TAG)
    assert [step for step, _ in points] == [0, 1, 2]
    for (_, value), report in zip(points, reports):
        assert value.dtype == np.float32 and value.shape == (6,)
        np.testing.assert_allclose(value, report.items[0].values, rtol=1e-6)

    smd = acc.SummaryMetadata(LAYERS_TAG)
    assert smd.plugin_data.plugin_name == metadata.PLUGIN_NAME
    assert smd.data_class == summary_pb2.DATA_CLASS_TENSOR
    md = metadata.parse_plugin_metadata(smd.plugin_data.content)
    assert md == {
        "version": 2,
        "kind": "layers",
        "measure": "equivariance",
        "group": "rot90",
        "layers": layer_names(6),
        "parts": ["Early", "Early", "Middle", "Late", "Pool", "Final"],
        "model": "resnet18",
        "baseline": False,
        "run_group": "",
        "higher_is_better": True,
    }

    cmd = metadata.parse_plugin_metadata(
        acc.SummaryMetadata(CHANNELS_TAG).plugin_data.content
    )
    assert cmd["kind"] == "channels" and cmd["channels"] == channels
    step, matrix = values_of(acc, CHANNELS_TAG)[-1]
    assert matrix.shape == (6, max(channels)) and matrix.dtype == np.float32
    for i, count in enumerate(channels):
        expected = reports[-1].items[0].per_channel[i]
        np.testing.assert_allclose(matrix[i, :count], expected, rtol=1e-6)
        assert np.isnan(matrix[i, count:]).all()  # documented padding
        assert np.isfinite(matrix[i, :count]).all()


def test_per_channel_off_by_default(tmp_path):
    summary.write_report(tmp_path, fake_report(0, channels=[2] * 6), 0)
    assert CHANNELS_TAG not in load(tmp_path).Tags()["tensors"]


def test_many_writes_within_one_second_keep_every_step(tmp_path):
    # EventFileWriter's names end in ".9", ".10", ...: sorted by name, step 10
    # would be read before step 9 and TensorBoard would drop data.
    for epoch in range(25):
        summary.write_report(tmp_path, fake_report(epoch), epoch)
    names = sorted(os.listdir(tmp_path))
    assert len(names) == 25
    steps = [step for step, _ in values_of(load(tmp_path), LAYERS_TAG)]
    assert steps == list(range(25))


def test_baseline_and_lower_is_better(tmp_path):
    report = fake_report(0)
    report.items[0].higher_is_better = False
    summary.write_report(
        str(tmp_path), report, 7, model="steerable", baseline=True, walltime=123.0
    )
    acc = load(tmp_path)
    md = metadata.parse_plugin_metadata(
        acc.SummaryMetadata(LAYERS_TAG).plugin_data.content
    )
    assert md["baseline"] is True and md["model"] == "steerable"
    assert md["higher_is_better"] is False
    event = acc.Tensors(LAYERS_TAG)[0]
    assert event.step == 7 and event.wall_time == 123.0


class RecordingWriter:
    def __init__(self):
        self.calls, self.flushed = [], 0

    def add_summary(self, summary_pb, global_step=None, walltime=None):
        self.calls.append((summary_pb, global_step, walltime))

    def flush(self):
        self.flushed += 1


def test_add_summary_writer_duck_typed():
    writer = RecordingWriter()
    summary.write_report(writer, fake_report(2), 5, walltime=9.0)
    assert [(c[1], c[2]) for c in writer.calls] == [(5, 9.0), (5, 9.0)]
    assert [c[0].value[0].tag for c in writer.calls] == [
        LAYERS_TAG,
        "equivariance_layers/invariance/rot90",
    ]
    assert writer.flushed == 1


def test_torch_summary_writer(tmp_path):
    torch_tb = pytest.importorskip("torch.utils.tensorboard")
    writer = torch_tb.SummaryWriter(str(tmp_path))
    try:
        for epoch in range(3):
            writer.add_scalar("val/acc", 0.5 + epoch / 10, epoch)
            summary.write_report(writer, fake_report(epoch), epoch)
        # Its FileWriter works too.
        summary.write_report(writer._get_file_writer(), fake_report(3), 3)
    finally:
        writer.close()
    acc = load(tmp_path)
    assert [s for s, _ in values_of(acc, LAYERS_TAG)] == [0, 1, 2, 3]
    assert "val/acc" in acc.Tags()["scalars"] + acc.Tags()["tensors"]


def test_summary_pbs_directly():
    pb = summary.layers_pb("lee", "rotation", ["a", "b"], ["Early", "Final"], [1e-8, 2.5])
    value = pb.value[0]
    assert value.tag == "equivariance_layers/lee/rotation"
    np.testing.assert_allclose(
        tensor_util.make_ndarray(value.tensor), np.float32([1e-8, 2.5])
    )
    pb = summary.channels_pb(
        "lee", "rotation", ["a", "b"], ["Early", "Final"], [[1, 2, 3], [4]]
    )
    matrix = tensor_util.make_ndarray(pb.value[0].tensor)
    assert matrix.shape == (2, 3)
    assert np.isnan(matrix[1, 1:]).all()


def test_infinities_are_values(tmp_path):
    # docs/measures.md §5: nv = TV / SV with x/0 = +inf - a value, stored as is.
    layers = ["a", "b", "c", "d"]
    parts = ["Early", "Middle", "Late", "Final"]
    report = FakeReport(
        [
            FakeSeries(
                "nv", "rot90", layers, parts,
                np.array([0.5, np.inf, -np.inf, 1e300]),  # 1e300: beyond float32
                per_channel=[[np.inf, 1.0], [2.0], [-np.inf, -np.inf, 3.0], [np.inf]],
                higher_is_better=False,
            )
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 1e300 -> inf is documented, not a numpy overflow warning
        assert summary.write_report(tmp_path / "run", report, 0, per_channel=True) == 2
    acc = load(tmp_path / "run")
    (_, value), = values_of(acc, "equivariance_layers/nv/rot90")
    assert value.dtype == np.float32
    assert value.tolist() == [0.5, np.inf, -np.inf, np.inf]
    (_, matrix), = values_of(acc, "equivariance_channels/nv/rot90")
    assert matrix.shape == (4, 3)
    assert matrix[0].tolist()[:2] == [np.inf, 1.0] and np.isnan(matrix[0, 2])
    assert matrix[2].tolist() == [-np.inf, -np.inf, 3.0]
    assert matrix[3, 0] == np.inf and np.isnan(matrix[3, 1:]).all()  # padding stays NaN
    cmd = metadata.parse_plugin_metadata(
        acc.SummaryMetadata("equivariance_channels/nv/rot90").plugin_data.content
    )
    assert cmd["channels"] == [2, 1, 3, 1]


def test_nan_in_a_report_names_the_series(tmp_path):
    bad = FakeSeries("nd", "flip", ["l0", "l1"], ["Early", "Final"], np.array([np.inf, np.nan]))
    with pytest.raises(
        ValueError, match=r"NaN is not a value \(\+inf and -inf are allowed\) "
        r"\(measure='nd', group='flip', layer='l1'\)"
    ):
        summary.write_report(tmp_path / "run", FakeReport([bad]), 0)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(values=[0.1, 0.2]), r"values has shape \(2,\), expected \(3,\).*measure='eq', group='rot90'"),
        (dict(values=[0.1, np.nan, 0.3]), r"NaN is not a value.*measure='eq', group='rot90', layer='b'"),
        (dict(parts=["Early", "Middle"]), r"parts has 2 entries but layers has 3"),
        (dict(parts=["Early", "Middle", "Tail"]), r"layer 'c' has part 'Tail'"),
        (dict(measure="a/b"), r"measure must not contain '/'"),
        (dict(group=""), r"group must be a non-empty string"),
        (dict(layers=["a", "", "c"]), r"layers must be non-empty strings"),
        (dict(values=["x", "y", "z"]), r"values must be numbers"),
    ],
)
def test_layers_pb_errors(kwargs, message):
    args = dict(
        measure="eq",
        group="rot90",
        layers=["a", "b", "c"],
        parts=["Early", "Middle", "Late"],
        values=[0.1, 0.2, 0.3],
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        summary.layers_pb(**args)


@pytest.mark.parametrize(
    "channel_values, message",
    [
        ([[1.0]], r"channel_values has 1 entries, expected 2"),
        ([[1.0], []], r"non-empty 1-D array.*layer='b'"),
        ([[1.0], [[1.0]]], r"non-empty 1-D array, got shape \(1, 1\).*layer='b'"),
        ([[1.0], [0.5, np.nan]], r"NaN at channel 1.*measure='eq', group='rot90', layer='b'"),
        ([[np.inf], [0.5, np.nan]], r"NaN at channel 1.*layer='b'"),
    ],
)
def test_channels_pb_errors(channel_values, message):
    with pytest.raises(ValueError, match=message):
        summary.channels_pb("eq", "rot90", ["a", "b"], ["Early", "Final"], channel_values)


def test_write_report_errors(tmp_path):
    with pytest.raises(TypeError, match="writer must be a run directory"):
        summary.write_report(object(), fake_report(0), 0)
    with pytest.raises(TypeError, match="report must have a series"):
        summary.write_report(tmp_path, object(), 0)
    with pytest.raises(TypeError, match="step must be an int"):
        summary.write_report(tmp_path, fake_report(0), 1.5)
    # A bad series anywhere in the report writes nothing at all.
    good = fake_report(0).items[0]
    bad = FakeSeries("x", "g", ["l0"], ["Early"], np.array([np.nan]))
    with pytest.raises(ValueError, match="measure='x'"):
        summary.write_report(tmp_path / "run", FakeReport([good, bad]), 0)
    assert not (tmp_path / "run").exists() or not os.listdir(tmp_path / "run")


def test_parse_plugin_metadata():
    content = metadata.create_summary_metadata(
        "layers", "eq", "rot90", ["a"], ["Early"]
    ).plugin_data.content
    md = json.loads(content)
    md["future_key"] = {"anything": 1}  # tolerated
    assert metadata.parse_plugin_metadata(json.dumps(md).encode())["future_key"]

    minimal = {"version": 1, "kind": "layers", "measure": "m", "group": "g",
               "layers": ["a"], "parts": ["Early"]}
    parsed = metadata.parse_plugin_metadata(json.dumps(minimal).encode())
    assert parsed["model"] == "" and parsed["baseline"] is False
    assert parsed["higher_is_better"] is True

    with pytest.raises(ValueError, match="version 3; this lightning_equivariance_tb reads versions 1 and 2"):
        metadata.parse_plugin_metadata(json.dumps(dict(md, version=3)).encode())
    with pytest.raises(ValueError, match="version None"):
        metadata.parse_plugin_metadata(b"{}")
    with pytest.raises(ValueError, match="not UTF-8 JSON"):
        metadata.parse_plugin_metadata(b"\xff")
    with pytest.raises(ValueError, match="lacks 'layers'"):
        metadata.parse_plugin_metadata(
            json.dumps({k: v for k, v in minimal.items() if k != "layers"}).encode()
        )
    with pytest.raises(TypeError, match="content must be bytes"):
        metadata.parse_plugin_metadata("{}")


def test_create_summary_metadata_errors():
    with pytest.raises(ValueError, match="kind must be one of"):
        metadata.create_summary_metadata("scalars", "m", "g", ["a"], ["Early"])
    with pytest.raises(ValueError, match="channels must give one channel count"):
        metadata.create_summary_metadata("channels", "m", "g", ["a"], ["Early"])
    with pytest.raises(ValueError, match='channels is only allowed with kind="channels"'):
        metadata.create_summary_metadata("layers", "m", "g", ["a"], ["Early"], channels=[1])
    with pytest.raises(ValueError, match="layers must name at least one layer"):
        metadata.create_summary_metadata("layers", "m", "g", [], [])


def test_writer_and_plugin_do_not_import_torch():
    code = (
        "import sys, lightning_equivariance_tb.summary, lightning_equivariance_tb.plugin,"
        " lightning_equivariance_tb.metadata, lightning_equivariance_tb.data;"
        "bad = [m for m in ('torch', 'lightning', 'pytorch_lightning', 'plotly')"
        " if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------- version 2 --

V1_FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tb_v1")


def record_of(acc, tag, index=-1):
    (raw,) = tensor_util.make_ndarray(acc.Tensors(tag)[index].tensor_proto).reshape(-1)
    return json.loads(raw.decode("utf-8"))


def test_missing_layers_stats_and_record(tmp_path):
    # A layer refused at one step and one whose hook never fired: the layer list stays
    # the same, their values are NaN, the record names them with the reason.
    layers = ["conv1", "conv2", "relu", "pool", "fc"]
    parts = ["Early", "Middle", "Late", "Pool", "Final"]
    series = summary.Series(
        "equivariance", "rot90", layers, parts, values=[0.5, 123.0, np.nan, 0.8, 0.9],
        per_channel=[[0.4, 0.6], [1.0, 2.0], None, [0.8], [0.9]],
        higher_is_better=None,
        stderr=[0.01, np.nan, np.nan, 0.02, 0.03],
        above_chance=[0.75, 0.5, 0.5, -0.25, 1.0],  # (v - c) / (best - c): negative below chance
        non_finite=[0, 0, 0, 2, 0],
        missing={"conv2": ("refused", "non-square map 4x6 under rot90"), "relu": ("not_called", "hook never fired")},
    )
    n = summary.write_series(
        tmp_path, [series], 3, epoch=3, global_step=120, run_group="sweep-1", per_channel=True
    )
    assert n == 4  # layers, channels, stats, record
    acc = load(tmp_path)
    (_, value), = values_of(acc, LAYERS_TAG)
    assert value[0] == np.float32(0.5) and np.isnan(value[1:3]).all()  # 123.0 is not kept
    md = metadata.parse_plugin_metadata(acc.SummaryMetadata(LAYERS_TAG).plugin_data.content)
    assert md["layers"] == layers and md["higher_is_better"] is None
    assert md["run_group"] == "sweep-1" and md["version"] == 2
    (_, channels), = values_of(acc, CHANNELS_TAG)
    assert np.isnan(channels[1]).all() and np.isnan(channels[2]).all()
    cmd = metadata.parse_plugin_metadata(acc.SummaryMetadata(CHANNELS_TAG).plugin_data.content)
    assert cmd["channels"] == [2, 0, 0, 1, 1]
    stats_tag = "equivariance_stats/equivariance/rot90"
    smd = metadata.parse_plugin_metadata(acc.SummaryMetadata(stats_tag).plugin_data.content)
    assert smd["fields"] == ["stderr", "above_chance", "non_finite"]
    (_, stats), = values_of(acc, stats_tag)
    assert stats.shape == (3, 5) and stats.dtype == np.float32
    np.testing.assert_array_equal(stats[1], [0.75, np.nan, np.nan, -0.25, 1.0])  # missing -> NaN
    np.testing.assert_array_equal(stats[2], [0, np.nan, np.nan, 2, 0])
    assert record_of(acc, "equivariance_record/equivariance/rot90") == {
        "epoch": 3,
        "global_step": 120,
        "missing": {
            "conv2": {"status": "refused", "reason": "non-square map 4x6 under rot90"},
            "relu": {"status": "not_called", "reason": "hook never fired"},
        },
    }


def test_stats_without_margin_fields_are_read_and_margins_written(tmp_path):
    # Issue 24: the margin fields are optional stats rows; a file written before them
    # (tests/data/tb_v2_no_margin, the previous writer) has none and reads as it is.
    old = load(os.path.join(os.path.dirname(V1_FIXTURE), "tb_v2_no_margin", "pre_margin"))
    stats_tag = "equivariance_stats/equivariance/rot90"
    md = metadata.parse_plugin_metadata(old.SummaryMetadata(stats_tag).plugin_data.content)
    assert md["fields"] == ["stderr", "chance", "above_chance", "informative", "non_finite"]
    (_, stats), _ = values_of(old, stats_tag)
    assert stats.shape == (5, 5)
    series = summary.Series(
        "equivariance", "rot90", ["a", "b", "c"], ["Early", "Middle", "Late"], values=[0.5, 0.4, 0.3],
        chance=[0.3, 0.3, 0.3], margin=[0.2, 0.1, 0.0], margin_stderr=[0.01, 0.08, np.nan],
        margin_low=[0.18, -0.03, np.nan], significant=[True, False, False],
    )
    summary.write_series(tmp_path, [series], 0)
    acc = load(tmp_path)
    md = metadata.parse_plugin_metadata(acc.SummaryMetadata(stats_tag).plugin_data.content)
    assert md["fields"] == ["chance", "margin", "margin_stderr", "margin_low", "significant"]
    (_, stats), = values_of(acc, stats_tag)
    np.testing.assert_array_equal(stats[4], [1, 0, 0])
    np.testing.assert_allclose(stats[3], [0.18, -0.03, np.nan], rtol=1e-6)
    with pytest.raises(ValueError, match="significant must be booleans"):
        summary.write_series(tmp_path / "bad", [summary.Series(
            "equivariance", "rot90", ["a"], ["Early"], values=[0.5], significant=[0.5])], 0)


def test_series_from_a_library_object():
    # What lightning_equivariance's report yields today: no missing, no statistics.
    class LayerSeries:
        measure, group = "sv", "rot90"
        layers, parts = ["a", "b"], ["Early", "Final"]
        values = np.array([0.1, 0.2])
        per_channel = None
        higher_is_better = None

    s = summary.Series.from_object(LayerSeries())
    assert s.higher_is_better is None and s.missing == {} and s.stderr is None
    (pb,) = summary.series_summaries(LayerSeries())
    md = metadata.parse_plugin_metadata(pb.value[0].metadata.plugin_data.content)
    assert md["higher_is_better"] is None
    with pytest.raises(TypeError, match="a series needs the attribute 'values'"):
        summary.Series.from_object(type("NoValues", (), {"measure": "m", "group": "g", "layers": [], "parts": []})())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(missing={"x": ("refused", "?")}), r"missing names layer 'x', which is not in layers"),
        (dict(missing={"b": ("skipped", "?")}), r"missing\['b'\]: status must be one of \('refused', 'not_called'\)"),
        (dict(missing={"b": ("refused", 3)}), r"missing\['b'\]: reason must be a string"),
        (dict(informative=[1, 0.5, 1]), r"informative must be booleans"),
        (dict(non_finite=[1, -1, 0]), r"non_finite must be counts >= 0"),
        (dict(stderr=[0.1, 0.2]), r"stderr has shape \(2,\), expected \(3,\)"),
        (dict(higher_is_better="up"), r"higher_is_better must be True, False or None"),
    ],
)
def test_series_v2_errors(tmp_path, kwargs, message):
    args = dict(measure="eq", group="rot90", layers=["a", "b", "c"], parts=["Early", "Middle", "Late"],
                values=[0.1, np.nan, 0.3], missing={"b": ("refused", "dead output")})
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        summary.write_series(tmp_path / "run", [summary.Series(**args)], 0)
    assert not (tmp_path / "run").exists()


def test_record_only_when_there_is_something_to_record(tmp_path):
    summary.write_report(tmp_path, fake_report(0), 0)
    assert not [t for t in load(tmp_path).Tags()["tensors"] if t.startswith("equivariance_record/")]
    summary.write_report(tmp_path / "b", fake_report(0), 5, epoch=2)
    rec = record_of(load(tmp_path / "b"), "equivariance_record/equivariance/rot90")
    assert rec == {"epoch": 2, "global_step": None, "missing": {}}
    with pytest.raises(TypeError, match="epoch must be an int or None"):
        summary.write_report(tmp_path / "c", fake_report(0), 0, epoch=1.5)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(kind="channels", channels=[1.5]), "one integer channel count >= 0 per layer"),
        (dict(kind="channels", channels=["3"]), "one integer channel count >= 0 per layer"),
        (dict(kind="channels"), "one integer channel count >= 0 per layer"),
        (dict(higher_is_better="yes"), "'higher_is_better' must be true, false or null"),
        (dict(higher_is_better=1), "'higher_is_better' must be true, false or null"),
        (dict(parts=[3]), "lacks 'parts' \\(or it is not a list of strings\\)"),
        (dict(layers=[""], parts=["Early"]), "must name at least one layer, by non-empty names"),
        (dict(model=["x"]), "'model' must be a string"),
        (dict(baseline="no"), "'baseline' must be true or false"),
        (dict(run_group=7), "'run_group' must be a string"),
        (dict(kind="stats"), "lacks 'fields'"),
        (
            dict(version=1, kind="record"),
            "has kind 'record', expected one of \\('layers', 'channels'\\) \\(version 1\\)",
        ),
        (dict(version=1, higher_is_better=None), "must be true or false \\(version 1\\)"),
        (dict(version=True), "has version True"),
    ],
)
def test_parse_plugin_metadata_validates_every_field(change, message):
    md = {"version": 2, "kind": "layers", "measure": "m", "group": "g", "layers": ["a"],
          "parts": ["Early"], "model": "", "baseline": False, "run_group": "", "higher_is_better": True}
    md.update(change)
    with pytest.raises(ValueError, match=message):
        metadata.parse_plugin_metadata(json.dumps(md).encode())


def test_unknown_part_names_are_read_as_labels():
    # The writer refuses them; a hand-written file may hold any string: the reader
    # keeps it (the tab shows it as text).
    md = {"version": 2, "kind": "layers", "measure": "m", "group": "g", "layers": ["a"],
          "parts": ["<b>Head</b>"], "higher_is_better": None}
    parsed = metadata.parse_plugin_metadata(json.dumps(md).encode())
    assert parsed["parts"] == ["<b>Head</b>"] and parsed["higher_is_better"] is None


def test_v1_fixture_is_read_as_v2():
    # tests/data/tb_v1: written by the version-1 writer (lightning_equivariance_tb.summary, commit 1667de5).
    acc = load(os.path.join(V1_FIXTURE, "v1_resnet"))
    assert set(acc.Tags()["tensors"]) == {
        LAYERS_TAG, CHANNELS_TAG,
        "equivariance_layers/invariance/rot90", "equivariance_layers/lee/rotation",
    }
    raw = json.loads(acc.SummaryMetadata(LAYERS_TAG).plugin_data.content)
    assert raw["version"] == 1 and "run_group" not in raw
    md = metadata.parse_plugin_metadata(acc.SummaryMetadata(LAYERS_TAG).plugin_data.content)
    assert md["version"] == 1 and md["run_group"] == "" and md["higher_is_better"] is True
    assert md["model"] == "resnet18 (v1)" and md["baseline"] is False
    lee = metadata.parse_plugin_metadata(
        acc.SummaryMetadata("equivariance_layers/lee/rotation").plugin_data.content
    )
    assert lee["higher_is_better"] is False


def test_a_new_event_file_sorts_after_another_writers_file_of_the_same_second(tmp_path):
    # torch's SummaryWriter names end in an unpadded process counter: ".37" sorts after ".00000005"
    import socket
    import time as _time

    other = tmp_path / ("events.out.tfevents.%010d.%s.%d.37" % (_time.time() + 5, socket.gethostname(), 99999))
    other.write_bytes(b"")
    layers = ["a", "b"]
    summary.write_series(tmp_path, [summary.Series("invariance", "rot90", layers, ["Early", "Final"], [0.5, 0.6])], 1)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files[0] == other.name and files[-1] != other.name  # read in write order

"""Unit tests of the frontend's pure helpers (lightning_equivariance_tb/static, through
index.js) in Node.

The browser test covers the page end to end; this checks the number rules
quickly: how values, infinities and missing values are shown and averaged.
Skipped without ``node`` on the PATH.
"""

import json
import os
import shutil
import subprocess

import pytest

INDEX_JS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "tb_plugin", "lightning_equivariance_tb", "static", "index.js",
)
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="needs node")


def run_js(body):
    """Import index.js as an ES module, run ``body`` (which sets ``out``),
    return ``out`` through JSON."""
    script = (
        "const m = await import(%s);\nlet out;\n%s\nconsole.log(JSON.stringify(out));\n"
        % (json.dumps("file://" + INDEX_JS), body)
    )
    result = subprocess.run(
        [NODE, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_fmt_shows_infinities_and_missing():
    assert run_js(
        "out = [Infinity, -Infinity, NaN, null, 0.5, 1e-5, 12345.6, 0].map((v) => m.fmt(v));"
    ) == ["∞", "-∞", "–", "–", "0.5000", "1.00e-5", "1.23e+4", "0.0000"]


def test_num_reads_the_routes_json_numbers():
    assert run_js(
        'out = ["Infinity", "-Infinity", null, 0.25].map((v) => String(m.num(v)));'
    ) == ["Infinity", "-Infinity", "NaN", "0.25"]


def test_curves_show_the_servers_part_means():
    # The part means are computed once, by the server (data.part_mean_matrix: one
    # +inf makes +inf, +inf with -inf is undefined, missing layers are skipped);
    # the curves draw them as they come, infinities on the axis ends.
    out = run_js(
        SERIES_JS + """
        const f = m.curvesFigures([x], ["c0"], ["Early", "Middle", "Late", "Pool", "Final"], "eq", style);
        out = f.perPart.traces.map((t) => [t.name, t.text]);"""
    )
    assert out == [["run&lt;1&gt;", ["0.5000", "∞"]], ["run&lt;1&gt;", ["–", "0.2500"]]]


def test_esc():
    assert run_js('out = m.esc("<img src=x onerror=alert(1)> & b");') == (
        "&lt;img src=x onerror=alert(1)&gt; &amp; b"
    )


SERIES_JS = """
const style = () => ({ color: "#000", width: 2, dash: "solid" });
const x = {
  run: "run<1>", steps: [0, 1], baseline: false,
  layers: ["c0", "<i>c1</i>"], parts: ["Early", "<b>Head</b><img src=x>"],
  values: [Float32Array.from([0.5, 1]), Float32Array.from([NaN, 0.25])],
  part_names: ["Early", "<b>Head</b><img src=x>"],
  part_values: [Float32Array.from([0.5, Infinity]), Float32Array.from([NaN, 0.25])],
};
"""


def test_direction_none_is_not_lower_is_better():
    hints = run_js("out = [true, false, null, undefined].map((v) => m.directionHint(v));")
    assert hints[:2] == ["higher is more equivariant", "lower is more equivariant"]
    assert hints[2] == hints[3] == "this measure has no preferred direction"
    assert not any("lower" in h for h in hints[2:])
    # The channel bars keep viridis's direction for a measure without one.
    bars = run_js(
        "out = [true, false, null].map((h) => m.channelBarsFigure("
        "{channels: 1, higher_is_better: h, values: [[0.5]]}, 0, {lo: 0, hi: 1}, 'sv')"
        ".traces[0].marker.reversescale);"
    )
    assert bars == [False, True, False]


def test_profile_hover_escapes_part_and_layer_names():
    # customdata is put into the hover as markup by plotly: it must be escaped.
    out = run_js(SERIES_JS + 'out = m.profileFigure([x], null, "<b>eq</b>", style);')
    (trace,) = out["traces"]
    assert trace["customdata"] == [
        "c0 (Early)",
        "&lt;i&gt;c1&lt;/i&gt; (&lt;b&gt;Head&lt;/b&gt;&lt;img src=x&gt;)",
    ]
    assert trace["name"] == "run&lt;1&gt; · epoch 1"
    assert trace["hovertemplate"].startswith("run&lt;1&gt;<br>%{customdata}")
    assert out["layout"]["yaxis"]["title"]["text"] == "&lt;b&gt;eq&lt;/b&gt;"


def test_part_names_from_logs_are_escaped_in_every_figure():
    out = run_js(
        SERIES_JS + """
        const known = ["Early", "Middle", "Late", "Pool", "Final"];
        const curves = m.curvesFigures([x], ["<i>c1</i>"], known, "eq", style);
        const body = {
          parts: [{part: "Early", rho: 0.5}, {part: "<b>Head</b><img src=x>", rho: null}],
          points: [{run: "r<1>", baseline: false, scalar: 0.5, parts: {"Early": 0.1, "<b>Head</b><img src=x>": 0.2}}],
        };
        const sp = m.spearmanFigures(body, known, "val<acc>", "eq");
        out = {
          titles: curves.perPart.layout.annotations.map((a) => a.text),
          layerTitles: curves.perLayer.layout.annotations.map((a) => a.text),
          hover: curves.perPart.traces[1].hovertemplate,
          bars: sp.bar.traces[0].x,
          colors: sp.bar.traces[0].marker.color,
          scatter: sp.scatter.traces.map((t) => [t.name, t.hovertemplate, t.customdata]),
          order: m.orderParts(["<b>Head</b><img src=x>", "Final", "Early"], known),
        };"""
    )
    assert out["titles"][:2] == ["<b>Early</b>", "<b>&lt;b&gt;Head&lt;/b&gt;&lt;img src=x&gt;</b>"]  # then "+∞"
    assert out["layerTitles"] == ["<b>&lt;i&gt;c1&lt;/i&gt;</b>"]
    assert "&lt;b&gt;Head&lt;/b&gt;&lt;img src=x&gt;<br>epoch" in out["hover"]
    assert out["bars"] == ["Early", "&lt;b&gt;Head&lt;/b&gt;&lt;img src=x&gt;"]
    assert out["colors"][1] == "#757575"  # an unknown part: neutral grey
    (early, head) = out["scatter"]
    assert head[0] == "&lt;b&gt;Head&lt;/b&gt;&lt;img src=x&gt;"
    assert "<img" not in head[1] and "val&lt;acc&gt;" in head[1] and head[2] == ["r&lt;1&gt;"]
    assert out["order"] == ["Early", "Final", "<b>Head</b><img src=x>"]


STATS_JS = SERIES_JS + """
x.stats = {
  chance: { values: [Float32Array.from([0.2, 0.3]), Float32Array.from([NaN, 0.5])] },
  stderr: { values: [Float32Array.from([0.01, 0.02]), Float32Array.from([NaN, 0.04])] },
};
"""


def test_direction_hint_names_invariance_or_equivariance():
    hints = run_js(
        'out = [[true, "invariance"], [false, "nv"], [true, "equivariance"], [false, "geed_channel"],'
        ' [null, "sv"]].map(([h, name]) => m.directionHint(h, name));'
    )
    assert hints == [
        "higher is more invariant", "lower is more invariant", "higher is more equivariant",
        "lower is more equivariant", "this measure has no preferred direction",
    ]


def test_band_and_chance_traces():
    out = run_js(
        """
        const band = m.bandPolygons([0, 1, 2, 3], [0.5, 0.6, NaN, 0.7], [0.1, 0.1, 0.1, 0.2]);
        const traces = m.statTraces([0, 1], [0.5, 0.6], [0.2, NaN], [0.1, 0.1], "#1f77b4", "r<1>");
        out = {band, traces: traces.map((t) => [t.meta, t.name, t.fill || null, t.line.dash || null, t.y])};"""
    )
    # one closed piece per run of finite points, pieces separated by null
    assert out["band"]["x"] == [0, 1, 1, 0, None, 3, 3]
    assert out["band"]["y"] == pytest.approx([0.6, 0.7, 0.5, 0.4, None, 0.9, 0.5])
    band, chance = out["traces"]
    assert band[:3] == ["stderr", "± stderr · r&lt;1&gt;", "toself"]
    assert chance[:4] == ["chance", "chance · r&lt;1&gt;", None, "dot"]  # dotted: not the baseline runs' dash
    assert chance[4] == [0.2, None]


def test_curves_carry_chance_and_stderr():
    out = run_js(
        STATS_JS + """
        const f = m.curvesFigures([x], ["c0"], ["Early"], "eq", style);
        out = {
          layer: f.perLayer.traces.map((t) => [t.meta || "run", t.hovertext || null]),
          part: f.perPart.traces.filter((t) => t.meta === "chance").map((t) => t.y),
          template: f.perLayer.traces.find((t) => !t.meta).hovertemplate,
        };"""
    )
    assert [t[0] for t in out["layer"]] == ["stderr", "chance", "run"]
    assert out["layer"][2][1] == ["<br>chance 0.2000 · ± stderr 0.0100", "<br>chance 0.3000 · ± stderr 0.0200"]
    assert out["template"].endswith("%{text}%{hovertext}<extra></extra>")
    # a part's chance is the mean of its layers' (Early: c0 only; Head: c1)
    assert out["part"] == [pytest.approx([0.2, 0.3]), [None, 0.5]]


def test_profile_chance_and_band_are_shapes():
    out = run_js(STATS_JS + 'out = m.profileFigure([x], null, "eq", style);')
    assert len(out["traces"]) == 1  # one trace per run
    shapes = {s["name"]: s for s in out["layout"]["shapes"]}
    assert shapes["chance"]["line"]["dash"] == "dot"  # dotted: not the baseline runs' dash
    assert shapes["chance"]["path"] == "M0,0.30000001192092896 L1,0.5"
    assert shapes["stderr"]["path"].endswith(" Z") and shapes["stderr"]["fillcolor"].startswith("rgba(")
    assert out["traces"][0]["hovertext"][1] == "<br>chance 0.5000 · ± stderr 0.0400"


def test_uninformative_reason_and_heatmap_sizes():
    out = run_js(
        """out = {
          reasons: [m.uninformativeReason(0.97, true), m.uninformativeReason(-0.96, false)],
          heights: [m.heatmapHeight(6), m.heatmapHeight(60), m.heatmapHeight(70)],
          bar: m.barTicksWithEnds(0.13, 0.987, 5),
          fixed: [m.FIXED_RANGES.equivariance, m.FIXED_RANGES.above_chance, m.FIXED_RANGES.sv || null],
        };"""
    )
    assert out["reasons"] == ["uninformative: chance 0.970 > 0.95", "uninformative: chance -0.960 < -0.95"]
    assert out["heights"][1] >= 14 * 60 and out["heights"][2] > out["heights"][1]
    ticks, texts = out["bar"]["ticks"], out["bar"]["texts"]
    assert ticks[0] == 0.13 and ticks[-1] == 0.987 and texts[0] == "0.13" and texts[-1] == "0.987"
    assert len(ticks) == len(texts) >= 3
    assert out["fixed"] == [[0, 1], [0, 1], None]


GROUP_JS = SERIES_JS + """
const rows = (...r) => r.map((v) => Float64Array.from(v));
const g = {
  name: "seeds<1>", runs: ["a", "b", "c"], baseline: false, xs: [0, 1, 2],
  layers: ["c0", "<i>c1</i>"], parts: ["Early", "Late"], part_names: ["Early", "Late"],
  mean: rows([0.5, 0.6, 0.7], [0.2, 0.3, NaN]), low: rows([0.4, 0.5, NaN], [0.1, 0.2, NaN]),
  high: rows([0.6, 0.7, NaN], [0.3, 0.4, NaN]), n: rows([3, 2, 1], [3, 3, 0]),
  part_mean: rows([0.5, 0.6, 0.7], [0.2, 0.3, NaN]), part_low: rows([0.4, 0.5, NaN], [0.1, 0.2, NaN]),
  part_high: rows([0.6, 0.7, NaN], [0.3, 0.4, NaN]), part_n: rows([3, 2, 1], [3, 3, 0]),
};
const gstyle = (gr) => ({ color: "#2ca02c", width: 2.5, dash: gr.baseline ? "dash" : "solid" });
const interval = "95% Student-t interval over runs";
"""


def test_group_curves_mean_and_band():
    out = run_js(
        GROUP_JS + """
        const f = m.curvesFigures(
          [x], ["c0"], ["Early", "Late"], "eq", style, {groups: [g], groupStyle: gstyle, interval});
        const base = Object.assign({}, g, {baseline: true});
        const dashed = m.curvesFigures(
          [], ["c0"], ["Early"], "eq", style, {groups: [base], groupStyle: gstyle, interval});
        out = {
          part: f.perPart.traces.filter((t) => t.xaxis === "x").map((t) => [t.meta || "run", t.name, t.fill || null]),
          band: f.perLayer.traces.find((t) => t.meta === "group-band"),
          mean: f.perLayer.traces.find((t) => t.meta === "group-mean"),
          dash: dashed.perLayer.traces.find((t) => t.meta === "group-mean").line.dash,
        };"""
    )
    # bands under the lines; the group's mean line; then the run drawn on its own
    assert out["part"] == [
        ["group-band", "95% Student-t interval over runs · seeds&lt;1&gt;", "toself"],
        ["group-mean", "seeds&lt;1&gt; · mean of 3 runs", None],
        ["run", "run&lt;1&gt;", None],
    ]
    assert out["band"]["x"] == [0, 1, 1, 0] and out["band"]["y"] == pytest.approx([0.6, 0.7, 0.5, 0.4])
    assert out["mean"]["customdata"] == [
        "95% Student-t interval over runs: 0.4000 to 0.6000 · 3 runs of 3",
        "95% Student-t interval over runs: 0.5000 to 0.7000 · 2 runs of 3",
        "no interval (one run) · 1 run of 3",
    ]
    assert "seeds&lt;1&gt; (group mean)" in out["mean"]["hovertemplate"]
    assert out["dash"] == "dash"


def test_group_profile_band_is_a_shape():
    out = run_js(GROUP_JS + """
        const f = m.profileFigure([x], 1, "eq", style, {groups: [g], groupStyle: gstyle, interval});
        out = {
          traces: f.traces.map((t) => [t.meta || "run", t.name, t.hovertext]),
          shapes: f.layout.shapes.map((s) => [s.name, s.path]),
        };""")
    assert out["traces"][0][:2] == ["group-mean", "seeds&lt;1&gt; · mean of 3 runs · epoch 1"]
    assert out["traces"][0][2] == [
        "95% Student-t interval over runs: 0.5000 to 0.7000 · 2 runs of 3",
        "95% Student-t interval over runs: 0.2000 to 0.4000 · 3 runs of 3",
    ]
    assert out["traces"][1][0] == "run"
    assert out["shapes"] == [["group-band", "M0,0.7 L1,0.4 L1,0.2 L0,0.5 Z"]]


def test_spearman_scatter_explains_markers_and_colours_groups():
    out = run_js(
        """
        const known = ["Early", "Middle", "Late", "Pool", "Final"];
        const body = {
          parts: [{part: "Early", rho: 0.5}, {part: "Pool", rho: 0.1}],
          points: [
            {run: "a", baseline: false, scalar: 0.5, parts: {Early: 0.1, Pool: 0.2}},
            {run: "b", baseline: true, scalar: 0.6, parts: {Early: 0.3, Pool: 0.4}},
            {run: "c<1>", baseline: false, scalar: 0.7, parts: {Early: 0.5, Pool: 0.6}},
          ],
        };
        const groupOf = (run) => (run === "c<1>" ? null : {name: "g<1>", color: "#123456"});
        const plain = m.spearmanFigures(body, known, "acc", "eq");
        const grouped = m.spearmanFigures(body, known, "acc", "eq", {groupOf});
        out = {
          plain: plain.note,
          note: grouped.note,
          traces: grouped.scatter.traces.map((t) => [t.name, t.marker.color, t.marker.symbol, t.customdata]),
          bars: grouped.bar.traces[0].y,
        };"""
    )
    assert out["plain"] == "One marker per run and depth part: colour = part (legend); ● run, ◇ baseline run."
    assert out["note"] == (
        "One marker per run and depth part: colour = run group (legend), symbol = part "
        "(● Early, ▲ Pool); open symbols: baseline runs."
    )
    assert out["traces"] == [
        ["g&lt;1&gt; (2 runs)", "#123456", ["circle", "triangle-up", "circle-open", "triangle-up-open"],
         ["a<br>Early", "a<br>Pool", "b<br>Early", "b<br>Pool"]],
        ["no group (1 run)", "#212121", ["circle", "triangle-up"], ["c&lt;1&gt;<br>Early", "c&lt;1&gt;<br>Pool"]],
    ]
    assert out["bars"] == [0.5, 0.1]  # rho over all runs, grouped or not


def test_integer_epoch_ticks_single_point_and_shared_y():
    out = run_js(
        SERIES_JS + """
        const one = Object.assign({}, x, {steps: [0], values: [Float32Array.from([0.5]), Float32Array.from([0.2])],
          part_values: [Float32Array.from([0.5]), Float32Array.from([0.2])]});
        const f = m.curvesFigures([x], ["c0", "<i>c1</i>"], ["Early"], "eq", style, {sharedY: true});
        const single = m.curvesFigures([one], ["c0"], ["Early"], "eq", style);
        out = {
          axes: [m.integerAxis([0, 1, 2]), m.integerAxis([0, 120]), m.integerAxis([3])],
          xaxis: f.perLayer.layout.xaxis,
          matches: [f.perLayer.layout.yaxis.matches || null, f.perLayer.layout.yaxis2.matches],
          unshared:
            m.curvesFigures([x], ["c0", "<i>c1</i>"], ["Early"], "eq", style).perLayer.layout.yaxis2.matches || null,
          single: single.perLayer.layout.xaxis.range,
          words: [m.plural(1, "epoch"), m.plural(0, "epoch"), m.plural(2, "run"), m.plural(1, "run")],
        };"""
    )
    assert out["axes"][0] == {"tickmode": "linear", "tick0": 0, "dtick": 1, "tickformat": "d"}
    assert out["axes"][1]["dtick"] == 20
    assert out["axes"][2] == {"tickmode": "linear", "tick0": 0, "dtick": 1, "tickformat": "d",
                              "range": [2.5, 3.5], "autorange": False}
    assert out["xaxis"]["dtick"] == 1 and out["xaxis"]["tickformat"] == "d"
    assert out["matches"] == [None, "y"] and out["unshared"] is None
    assert out["single"] == [-0.5, 0.5]
    assert out["words"] == ["1 epoch", "0 epochs", "2 runs", "1 run"]


def test_margin_text_and_curves_carry_the_margin():
    # Issue 24: the margin with its one-sided 95% interval, why a layer is not significant, and
    # the curves' hover (a part: the mean of its layers' margins and lower bounds).
    out = run_js(
        STATS_JS + """
        x.stats.margin = { values: [Float32Array.from([0.2, 0.01]), Float32Array.from([NaN, 0.1])] };
        x.stats.margin_low = { values: [Float32Array.from([0.15, -0.02]), Float32Array.from([NaN, NaN])] };
        const f = m.curvesFigures([x], ["c0"], ["Early", "Middle", "Late", "Pool", "Final"], "eq", style);
        out = {
          texts: [m.marginText(0.2, 0.15), m.marginText(0.05, NaN), m.marginText(NaN, 0.1)],
          reasons: [m.notSignificantReason(-0.02), m.notSignificantReason(NaN)],
          layer: f.perLayer.traces.find((t) => !t.meta).hovertext,
          part: f.perPart.traces.filter((t) => !t.meta).map((t) => t.hovertext),
        };"""
    )
    assert out["texts"] == ["margin 0.2000, 95% interval [0.1500, ∞)",
                            "margin 0.0500, no interval (fewer than 2 scored probe pairs)", ""]
    assert out["reasons"] == ["not significantly above chance: 95% lower bound -0.020 ≤ 0",
                              "not significantly above chance: fewer than 2 scored probe pairs, no interval"]
    assert out["layer"][0].endswith("<br>margin 0.2000, 95% interval [0.1500, ∞)")
    assert out["layer"][1].endswith("<br>margin 0.0100, 95% interval [-0.0200, ∞)")
    assert "margin" not in out["part"][1][0]
    assert out["part"][1][1].endswith("margin 0.1000, no interval (fewer than 2 scored probe pairs)")

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

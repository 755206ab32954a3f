"""Unit tests of the frontend's pure helpers (tb_plugin/static/index.js) in Node.

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
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tb_plugin", "static", "index.js"
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


def test_mean_rule_matches_the_server():
    # plugin.part_means: one +inf makes +inf, +inf with -inf is undefined;
    # missing values (null/NaN) are skipped.
    assert run_js(
        "out = [[1, 3], [1, Infinity], [-Infinity, 2], [Infinity, -Infinity], [null, 2, NaN], []]"
        ".map((xs) => String(m.mean(xs)));"
    ) == ["2", "Infinity", "-Infinity", "null", "2", "null"]


def test_esc():
    assert run_js('out = m.esc("<img src=x onerror=alert(1)> & b");') == (
        "&lt;img src=x onerror=alert(1)&gt; &amp; b"
    )

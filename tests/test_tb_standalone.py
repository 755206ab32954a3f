"""The plugin as its own distribution: a TensorBoard without torch serves a run that
the callback wrote.

CI (``.ci/run``) makes a second, small virtualenv with only ``pip install ./tb_plugin``
(tensorboard, numpy, plotly, scipy, google-re2 - no torch) and names it in
``EQUIVARIANCE_TB_STANDALONE_VENV``. This test trains a run with
``EquivarianceCallback`` here (the main venv) and serves it with that venv's
``tensorboard``. Without the variable it is skipped.
"""

import json
import os
import subprocess
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest

import tb_helpers

VENV = os.environ.get("EQUIVARIANCE_TB_STANDALONE_VENV")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not VENV,
        reason="set EQUIVARIANCE_TB_STANDALONE_VENV to a venv with only `pip install ./tb_plugin` "
        "(.ci/run does)",
    ),
]


def venv_run(code, tmp_path):
    """Run ``python -c code`` in the torch-free venv, outside the checkout."""
    return subprocess.run(
        [os.path.join(VENV, "bin", "python"), "-c", code],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )


def test_the_venv_has_the_plugin_and_no_torch(tmp_path):
    out = venv_run("import torch", tmp_path)
    assert out.returncode != 0 and "No module named 'torch'" in out.stderr
    out = venv_run(
        "import importlib.metadata as m, importlib.util as u, json, lightning_equivariance_tb as p;"
        "print(json.dumps([p.__file__, p.__version__,"
        " [e.value for e in m.entry_points(group='tensorboard_plugins') if e.name == 'equivariance'],"
        " [n for n in ('tb_plugin', 'lightning_equivariance', 'lightning') if u.find_spec(n)]]))",
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    path, version, entry_points, present = json.loads(out.stdout)
    assert "site-packages" in path and version == "0.1.0"  # installed, not the checkout
    assert entry_points == ["lightning_equivariance_tb.plugin:EquivariancePlugin"]
    assert present == []  # no bare tb_plugin module, no library, no Lightning


def get(tb, route, **params):
    url = "%s/data/plugin/equivariance%s?%s" % (tb.url, route, urllib.parse.urlencode(params, doseq=True))
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.headers.get_content_type(), r.read()


def test_torch_free_tensorboard_serves_a_callback_run(tmp_path):
    logdir = tmp_path / "logs"
    info = tb_helpers.train_logdir(str(logdir), runs={"cnn": tb_helpers.TRAINED_RUNS["cnn"]}, epochs=1)
    # and one point from measure(), after the callback's (which logs at the global step)
    report = tb_helpers.append_measured_epoch(info["cnn"], 1000)
    command = [os.path.join(VENV, "bin", "tensorboard")]
    with tb_helpers.TensorBoardProcess(logdir, command=command, cwd=str(tmp_path)) as tb:
        deadline = time.monotonic() + 60
        while True:  # TensorBoard answers before it has read every event file
            runs = json.loads(get(tb, "/runs")[2])["runs"]
            if (runs and runs[0]["last_step"] == 1000) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert [r["run"] for r in runs] == ["cnn"] and runs[0]["last_step"] == 1000
        assert {(s["measure"], s["group"]) for s in runs[0]["series"]} == {
            (m, tb_helpers.GROUP) for m in tb_helpers.MEASURES
        }
        body = json.loads(get(tb, "/series_batch", run="cnn", measure="equivariance", group=tb_helpers.GROUP)[2])
        (series,) = tb_helpers.decode_values(body)["series"]
        assert len(series["steps"]) == 2 and series["steps"][-1] == 1000 and series["model"] == "tiny CNN"
        expected = next(s for s in report.series() if s.measure == "equivariance")
        assert series["layers"] == list(expected.layers)
        np.testing.assert_allclose([row[1] for row in series["values"]], expected.values, rtol=1e-6)
        for route, kind in (("/index.js", "text/javascript"), ("/app.js", "text/javascript"),
                            ("/plotly.min.js", "text/javascript")):
            status, content_type, _ = get(tb, route)
            assert (status, content_type) == (200, kind), route

"""Time-to-render of the Equivariance tab on a large logdir.

Writes 10 runs x 200 layers x 300 epochs, serves them with ``tensorboard``,
opens the tab in headless Chromium and prints one JSON line::

    {"runs": 10, "layers": 200, "epochs": 300, "render_seconds": ..., ...}

TensorBoard is first loaded on its Time Series tab and left to finish
booting (it shares the page's main thread with the plugin's iframe); then
the Equivariance tab is opened. Times are seconds from that click:

``render_seconds``
    until the heatmaps on screen are drawn: creating the iframe, fetching
    /runs and /series_batch, drawing them with the tab's own canvas renderer
    (no plotly.js needed). Warm: the third visit, with the browser's caches
    filled. The number held to < 2 s.
``all_heatmaps_seconds``
    until all 10 heatmaps are drawn (those below the fold follow one per
    task).
``cold_render_seconds``, ``cold_all_heatmaps_seconds``
    the same on the very first visit with a fresh browser profile (nothing
    cached). Also held to < 2 s: the first paint no longer waits for
    plotly.js (4.8 MB, ~2 s of CPU on a slow 2-core machine to compile).
``plotly_ready_seconds``, ``cold_plotly_ready_seconds``
    when plotly.js, prefetched once the browser is idle after the heatmaps,
    has loaded (warm / cold): from then on the plotly views (curves,
    profile, channels, Spearman) open without waiting for it.
``plot_seconds``
    the first ``renderView`` call alone (data in hand): laying out the
    cards and drawing the heatmaps that are on screen.
``wall_seconds``
    ``render_seconds``'s run as timed by the test driver (all drawn).

Needs /usr/bin/chromium and /usr/bin/chromedriver (Debian ``chromium``,
``chromium-driver``) and selenium.

``/groups`` rows (issue 25), one JSON line per run count, no browser: runs of 40
layers x 100 points, every run at its own global steps (run ``r`` at ``100 k + r``),
all in one recorded group, served in-process (TensorBoard's Python loader keeping
every point) and asked ``/groups?x=global_step`` for all of them::

    {"route": "/groups", "runs": 100, "layers": 40, "points": 100, "seconds": ...,
     "seconds_per_run": ..., "peak_mib": ..., "peak_mib_per_run": ..., "response_mib": ...}

``seconds`` is the request's wall time (best of ``--repeat``); ``peak_mib`` the peak of
the memory Python allocated during the request (``tracemalloc``, numpy's arrays
included) above what was allocated before it, from another request (``tracemalloc``
slows allocations, so it is off while timing). The union of the runs' x values grows
with the runs, so a cost per run that stays flat from 10 to 100 runs is linear in
runs x points (it was quadratic: 16 s and ~1 GiB at 100 runs). A last line gives the
ratios of 100 runs' per-run figures to 10 runs'.

Usage::

    python benchmarks/bench_tb_plugin.py [--runs 10 --layers 200 --epochs 300]
    python benchmarks/bench_tb_plugin.py --only groups [--group-runs 10 100]
"""

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc
import urllib.request

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import tb_helpers  # noqa: E402 - sys.path set first
from lightning_equivariance_tb import summary  # noqa: E402 - sys.path set first


def write_logdir(logdir, runs, layers, epochs):
    names = ["block%d.conv%d" % (i // 2, i % 2) for i in range(layers - 2)] + ["pool", "fc"]
    parts = tb_helpers.default_parts(layers)
    depth = np.linspace(0, 1, layers)
    rng = np.random.default_rng(0)
    for r in range(runs):
        writer = tb_helpers.EventWriter(os.path.join(logdir, "run_%02d" % r))
        for epoch in range(epochs):
            values = np.clip(
                0.3 + 0.5 * depth * (1 - np.exp(-epoch / 60)) + rng.normal(0, 0.02, layers),
                0,
                1,
            )
            report = tb_helpers.FakeReport(
                [tb_helpers.FakeSeries("equivariance", "rot90", names, parts, values)]
            )
            summary.write_report(writer, report, epoch, model="bench", walltime=1000.0 + epoch)
        writer.close()


def wait_loaded(url, runs, epochs, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url + "/data/plugin/equivariance/runs") as r:
            body = json.load(r)
        done = [x for x in body["runs"] if x["last_step"] == epochs - 1]
        if len(done) == runs:
            return
        time.sleep(0.5)
    raise TimeoutError("tensorboard did not load the logdir in %d s" % timeout)


def _open_tab(driver, url, runs, timeout):
    """Load TensorBoard on another tab, let it settle, then open ours.

    Returns seconds from the click on the Equivariance tab to (first screen
    of heatmaps drawn, all heatmaps drawn), the plotting time alone, and
    the tab's wall-clock time as seen by the driver.
    """
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.switch_to.default_content()
    driver.get("about:blank")
    driver.get(url + "/#timeseries")
    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('a, .plugin-name, button, span')]"
            ".some(e => e.textContent.trim().toLowerCase() === 'equivariance')"
        )
    )
    time.sleep(3)  # TensorBoard's own app finishes booting
    start = time.monotonic()
    clicked_at = driver.execute_script(
        "location.hash = 'equivariance'; return performance.timeOrigin + performance.now();"
    )
    frame = WebDriverWait(driver, timeout).until(
        lambda d: d.find_elements(
            By.CSS_SELECTOR, 'iframe[src*="plugin_entry.html?name=equivariance"]'
        )
    )[0]
    driver.switch_to.frame(frame)
    WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        lambda d: d.execute_script("return window.eqAllDrawnMs != null")
    )
    wall = time.monotonic() - start
    origin, first_ms, all_ms, plot_ms, cards = driver.execute_script(
        "return [performance.timeOrigin, window.eqFirstRenderMs, window.eqAllDrawnMs,"
        " window.eqFirstRenderDurationMs,"
        " document.querySelectorAll('.eq-heatmap[data-drawn=\"1\"]').length]"
    )
    if cards != runs:
        raise AssertionError("expected %d heatmaps drawn, found %d" % (runs, cards))
    plotly_ms = WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: d.execute_script(
            "const m = performance.getEntriesByName('eq-plotly');"
            "return m.length ? m[0].startTime : null"
        )
    )
    offset = origin - clicked_at
    return (
        (offset + first_ms) / 1000,
        (offset + all_ms) / 1000,
        plot_ms / 1000,
        wall,
        (offset + plotly_ms) / 1000,
    )


def measure(url, runs, timeout=90):
    driver = tb_helpers.chrome_driver()
    try:
        cold = _open_tab(driver, url, runs, timeout)  # fresh profile
        _open_tab(driver, url, runs, timeout)  # Chrome stores compiled code
        warm = _open_tab(driver, url, runs, timeout)  # ... and uses it
    finally:
        driver.quit()
    return {
        "render_seconds": round(warm[0], 3),
        "all_heatmaps_seconds": round(warm[1], 3),
        "cold_render_seconds": round(cold[0], 3),
        "cold_all_heatmaps_seconds": round(cold[1], 3),
        "plotly_ready_seconds": round(warm[4], 3),
        "cold_plotly_ready_seconds": round(cold[4], 3),
        "plot_seconds": round(warm[2], 3),
        "wall_seconds": round(warm[3], 3),
    }


GROUP_LAYERS, GROUP_POINTS = 40, 100


def write_group_runs(logdir, runs, layers=GROUP_LAYERS, points=GROUP_POINTS):
    """``runs`` runs of ``layers`` x ``points``, run ``r`` at global steps ``100 k + r``."""
    from lightning_equivariance_tb.summary import Series, write_series

    names = ["block%d.conv%d" % (i // 2, i % 2) for i in range(layers - 2)] + ["pool", "fc"]
    parts = tb_helpers.default_parts(layers)
    rng = np.random.default_rng(0)
    for r in range(runs):
        writer = tb_helpers.EventWriter(os.path.join(logdir, "run_%03d" % r))
        for k in range(points):
            values = np.clip(0.3 + 0.5 * np.linspace(0, 1, layers) + rng.normal(0, 0.02, layers), 0, 1)
            series = Series(measure="equivariance", group="rot90", layers=names, parts=parts,
                            values=values, higher_is_better=True)
            write_series(writer, [series], k, model="bench", run_group="all", epoch=k,
                         global_step=100 * k + r, walltime=1000.0 + k)
        writer.close()


def groups_client(logdir):
    """The plugin in-process over TensorBoard's Python loader (every point kept)."""
    from tensorboard.backend import application
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from werkzeug import test as werkzeug_test
    from werkzeug import wrappers

    from lightning_equivariance_tb.plugin import EquivariancePlugin

    multiplexer = plugin_event_multiplexer.EventMultiplexer(tensor_size_guidance={"equivariance": 0})
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, logdir)
    context = base_plugin.TBContext(logdir=logdir, data_provider=provider, sampling_hints={"equivariance": 0})
    app = application.TensorBoardWSGI([EquivariancePlugin(context)], data_provider=provider)
    return werkzeug_test.Client(app, wrappers.Response)


def measure_groups(runs, repeat=3):
    """One ``/groups`` row: the request's time and the memory it allocates, for ``runs`` runs."""
    with tempfile.TemporaryDirectory(prefix="eq-bench-groups-") as logdir:
        write_group_runs(logdir, runs)
        client = groups_client(logdir)
        params = {"measure": "equivariance", "group": "rot90", "x": "global_step"}
        client.get("/data/plugin/equivariance/runs")  # index warm: the request alone is timed
        seconds, peak, size = [], [], 0
        for _ in range(repeat):
            t = time.perf_counter()  # timed without tracemalloc, which slows every allocation
            response = client.get("/data/plugin/equivariance/groups", query_string=params)
            body = response.get_data()
            seconds.append(time.perf_counter() - t)
            if response.status_code != 200:
                raise AssertionError(body[:500])
            size = len(body)
            group = json.loads(body)["groups"][0]
            assert len(group["runs"]) == runs and len(group["xs"]) == runs * GROUP_POINTS
            del response, body, group
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            client.get("/data/plugin/equivariance/groups", query_string=params).get_data()
            peak.append(tracemalloc.get_traced_memory()[1] - base)
            tracemalloc.stop()
    best, mib = min(seconds), min(peak) / 2**20
    return {
        "route": "/groups", "runs": runs, "layers": GROUP_LAYERS, "points": GROUP_POINTS, "x": "global_step",
        "seconds": round(best, 4), "seconds_per_run": round(best / runs, 5),
        "peak_mib": round(mib, 2), "peak_mib_per_run": round(mib / runs, 4), "response_mib": round(size / 2**20, 2),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--layers", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--only", choices=("render", "groups"), default=None,
                        help="only the time-to-render row, or only the /groups rows (default: both)")
    parser.add_argument("--group-runs", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--repeat", type=int, default=3, help="/groups requests per row (the best is kept)")
    args = parser.parse_args()
    if args.only != "groups":
        with tempfile.TemporaryDirectory(prefix="eq-bench-") as logdir:
            t = time.monotonic()
            write_logdir(logdir, args.runs, args.layers, args.epochs)
            write_seconds = time.monotonic() - t
            with tb_helpers.TensorBoardProcess(logdir) as tb:
                wait_loaded(tb.url, args.runs, args.epochs)
                result = measure(tb.url, args.runs)
        out = {"runs": args.runs, "layers": args.layers, "epochs": args.epochs}
        out.update(result)
        out["write_seconds"] = round(write_seconds, 3)
        print(json.dumps(out))
    if args.only != "render":
        rows = [measure_groups(n, args.repeat) for n in args.group_runs]
        for row in rows:
            print(json.dumps(row))
        if len(rows) >= 2:
            first, last = rows[0], rows[-1]
            print(json.dumps({
                "route": "/groups", "runs": [first["runs"], last["runs"]],
                "seconds_per_run_ratio": round(last["seconds_per_run"] / first["seconds_per_run"], 3),
                "peak_mib_per_run_ratio": round(last["peak_mib_per_run"] / first["peak_mib_per_run"], 3),
            }))


if __name__ == "__main__":
    main()

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
``chromium-driver``) and selenium. Usage::

    python benchmarks/bench_tb_plugin.py [--runs 10 --layers 200 --epochs 300]
"""

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import tb_helpers  # noqa: E402
from lightning_equivariance_tb import summary  # noqa: E402


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--layers", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=300)
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()

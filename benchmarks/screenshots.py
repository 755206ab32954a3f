"""Regenerate the README screenshots of the Equivariance tab from the main example.

First train the example's three runs (plain CNN, CNN with rotation
augmentation, C4 steerable baseline; ~3-6 minutes on 2 CPU cores)::

    cd /tmp/tbshots && python /path/to/examples/rotated_digits.py --epochs 6

then::

    python benchmarks/screenshots.py --logdir /tmp/tbshots/lightning_logs

serves that logdir with ``tensorboard --samples_per_plugin equivariance=0``,
opens the tab in headless Chromium (Debian's /usr/bin/chromium and
/usr/bin/chromedriver, through selenium) and writes ``docs/tb_heatmap.png``,
``docs/tb_curves.png``, ``docs/tb_profile.png``, ``docs/tb_channels.png`` and
``docs/tb_spearman.png`` (Spearman against the logged scalar ``val_acc``). It
prints the per-part rotation90 values of every run at its last epoch, as JSON.

Per-channel data: the channels view needs runs logged with
``EquivarianceCallback(per_channel=True)``. When no run of ``--logdir`` has
any, the script re-runs the example's ``cnn`` run (same code, same seed, same
epochs) with ``per_channel=True`` into ``--channels-logdir`` (default: a
``per_channel_logs`` directory beside ``--logdir``; ~1-2 minutes) and takes the
channels screenshot from there. ``--no-train`` skips that (no channels
screenshot then).

Run groups: ``docs/tb_groups.png`` shows the group view (curves: each group's
mean over its runs with the 95% Student-t interval over runs as a band). Its
runs come from ``--groups-logdir`` when given (runs with a recorded
``run_group``), else from small runs written with the summary writer and a
``run_group`` (``tests/tb_helpers.write_group_logdir``: three seeds each of three
models, one a baseline group, and a run in no group; a second). ``--only-groups`` takes just that one.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

import tb_helpers  # noqa: E402 - sys.path set first

GROUP = "rotation90"
WAIT = 60


def api(url, route, **params):
    query = urllib.parse.urlencode(params, doseq=True)
    with urllib.request.urlopen("%s/data/plugin/equivariance/%s?%s" % (url, route, query), timeout=30) as r:
        return json.load(r)


def wait_for_runs(url, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = api(url, "runs")["runs"]
        if runs:
            time.sleep(2)  # let TensorBoard finish reading every file
            return api(url, "runs")["runs"]
        time.sleep(0.5)
    raise TimeoutError("tensorboard shows no equivariance runs after %d s" % timeout)


def has_channels(runs):
    return any(s["has_channels"] for r in runs for s in r["series"])


def train_per_channel(logdir, epochs):
    """Re-run the example's ``cnn`` run with ``per_channel=True`` (in a
    subprocess, so this script needs neither torch nor Lightning)."""
    code = (
        "import functools, sys, torch\n"
        "sys.path.insert(0, %r)\n"
        "torch.set_num_threads(1)  # tiny convs: threads only wait on a busy machine\n"
        "import rotated_digits\n"
        "from lightning_equivariance import EquivarianceCallback\n"
        "rotated_digits.EquivarianceCallback = functools.partial(EquivarianceCallback, per_channel=True)\n"
        "rotated_digits.main(['--runs', 'cnn', '--epochs', %r, '--logdir', %r])\n"
    ) % (os.path.join(ROOT, "examples"), str(epochs), logdir)
    print("training the example's cnn run with per_channel=True into %s ..." % logdir, flush=True)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(logdir) or ".",
                            capture_output=True, text=True)
    if result.returncode:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit("training the per-channel run failed")
    print("  done in %.0f s" % (time.monotonic() - started), flush=True)


class Tab:
    """The Equivariance tab of one TensorBoard in one headless Chromium."""

    def __init__(self, url, width, height):
        from selenium.webdriver.common.by import By

        self.By = By
        self.driver = tb_helpers.chrome_driver(width=width, height=height)
        self.width, self.height = width, height
        # Window size minus viewport size (0 in headless mode, but be safe).
        self.chrome_extra = self.driver.get_window_size()["height"] - self.driver.execute_script(
            "return window.innerHeight")
        tb_helpers.open_plugin(self.driver, url, timeout=WAIT)
        self.until(lambda d: self.js("return document.body.dataset.renderCount"))

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def until(self, condition, message=""):
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, WAIT, poll_frequency=0.2).until(condition, message)

    def renders(self):
        return int(self.js("return document.body.dataset.renderCount || 0"))

    def after_render(self, action):
        before = self.renders()
        action()
        self.until(lambda d: self.renders() > before, "render")

    def view(self, name, plots=0):
        self.driver.set_window_size(self.width, self.height + self.chrome_extra)
        button = self.driver.find_element(self.By.CSS_SELECTOR, 'button[data-view="%s"]' % name)
        self.after_render(button.click)
        if plots:
            self.until(lambda d: self.js("return document.querySelectorAll('.js-plotly-plot').length") >= plots)
        self.js("window.scrollTo(0, 0)")
        time.sleep(1.0)  # plotly's transitions

    def select(self, css, value, index=0):
        from selenium.webdriver.support.ui import Select

        element = self.driver.find_elements(self.By.CSS_SELECTOR, css)[index]
        select = Select(element)
        if select.first_selected_option.get_attribute("value") != value:
            self.after_render(lambda: select.select_by_value(value))

    def options(self, css, index=0):
        from selenium.webdriver.support.ui import Select

        element = self.driver.find_elements(self.By.CSS_SELECTOR, css)[index]
        return [o.get_attribute("value") for o in Select(element).options]

    def fit(self, max_height=2000):
        """Make the window tall enough for the whole view (TensorBoard's
        header + the tab's content), at least the initial height."""
        content = self.js("return document.documentElement.scrollHeight")
        height = max(self.height, min(max_height, content + 64 + 8))
        self.driver.set_window_size(self.width, height + self.chrome_extra)
        self.js("window.scrollTo(0, 0)")
        time.sleep(1.0)  # plotly's responsive relayout

    def shot(self, path, fit=True):
        if fit:
            self.fit()
        self.driver.switch_to.default_content()
        self.driver.save_screenshot(path)
        frame = self.driver.find_element(self.By.CSS_SELECTOR, 'iframe[src*="name=equivariance"]')
        self.driver.switch_to.frame(frame)
        print("wrote", path, flush=True)

    def close(self):
        self.driver.quit()


def main_shots(url, out, width, height):
    tab = Tab(url, width, height)
    try:
        tab.select(".eq-toolbar select", "equivariance", 0)
        tab.select(".eq-toolbar select", GROUP, 1)
        tab.until(lambda d: tab.js(
            "return [...document.querySelectorAll('.eq-heatmap')].every(c => c.dataset.drawn === '1')"))
        time.sleep(0.5)
        tab.shot(os.path.join(out, "tb_heatmap.png"))
        tab.view("curves", plots=2)
        tab.shot(os.path.join(out, "tb_curves.png"))
        tab.view("profile", plots=1)
        tab.shot(os.path.join(out, "tb_profile.png"))
        tab.view("spearman", plots=2)
        tab.select(".eq-view-controls select", "val_acc")
        tab.until(lambda d: tab.js("return document.querySelectorAll('.eq-table tr[data-part]').length"))
        time.sleep(1.0)
        tab.shot(os.path.join(out, "tb_spearman.png"))
    finally:
        tab.close()


def channels_shot(url, out, width, height, run=None, part="Late"):
    tab = Tab(url, width, height)
    try:
        tab.select(".eq-toolbar select", "equivariance", 0)
        tab.select(".eq-toolbar select", GROUP, 1)
        tab.view("channels", plots=1)
        runs = tab.options(".eq-view-controls select", 0)
        chosen = run if run in runs else runs[0]
        tab.select(".eq-view-controls select", chosen, 0)
        body = api(url, "series", run=chosen, measure="equivariance", group=GROUP)
        # The last feature-map layer of the chosen part (many channels, clear structure).
        candidates = [name for name, p in zip(body["layers"], body["parts"]) if p == part]
        layer = candidates[-1] if candidates else body["layers"][len(body["layers"]) // 2]
        tab.select(".eq-view-controls select", layer, 1)
        tab.until(lambda d: tab.js("return document.querySelectorAll('.js-plotly-plot').length") >= 1)
        time.sleep(1.0)
        tab.shot(os.path.join(out, "tb_channels.png"))
    finally:
        tab.close()


def groups_shot(url, out, width, height):
    """The group view: curves with each group's mean and interval band."""
    tab = Tab(url, width, height)
    try:
        from selenium.webdriver.support.ui import Select

        by = Select(tab.driver.find_element(tab.By.CSS_SELECTOR, ".eq-group-by"))
        if by.first_selected_option.get_attribute("value") != "recorded":
            tab.after_render(lambda: by.select_by_value("recorded"))
        tab.until(lambda d: tab.js("return document.querySelectorAll('.eq-group-entry').length"))
        tab.view("curves", plots=2)
        tab.until(
            lambda d: tab.js(
                "return [...document.querySelectorAll('.js-plotly-plot')]"
                ".some(p => p.data.some(t => t.meta === 'group-band'))"
            )
        )
        time.sleep(1.0)
        tab.shot(os.path.join(out, "tb_groups.png"))
    finally:
        tab.close()


SHOT_GROUP_RUNS = dict(
    [("cnn_seed%d" % i, ("cnn", False, 0.03 * (i - 1), 6)) for i in range(3)]
    + [("cnn_rotaug_seed%d" % i, ("cnn_rotaug", False, 0.15 + 0.03 * (i - 1), 6)) for i in range(3)]
    + [("steerable_seed%d" % i, ("steerable_c4", True, 0.4 + 0.02 * (i - 1), 6)) for i in range(3)]
    + [("cnn_wide", ("", False, 0.08, 6))]
)
"""The runs of the group screenshot: three seeds each of three models (the steerable
one a baseline group, drawn dashed) and a run in no group."""


def groups_logdir(path):
    """A log directory of grouped runs for the group screenshot."""
    if path:
        return os.path.abspath(path)
    import tempfile

    path = tempfile.mkdtemp(prefix="tb_groups_")
    tb_helpers.write_group_logdir(path, runs=SHOT_GROUP_RUNS)
    return path


def part_values(url, runs):
    """{run: {measure: {part: value}, "val_acc": ...}} at each run's last epoch."""
    table = {}
    for measure in ("invariance", "equivariance"):
        body = api(url, "spearman", measure=measure, group=GROUP, scalar="val_acc")
        for point in body["points"]:
            row = table.setdefault(point["run"], {"step": point["step"], "val_acc": point["scalar"]})
            row[measure] = point["parts"]
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logdir", default="/tmp/tbshots/lightning_logs",
                        help="the example's lightning_logs (default: %(default)s)")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs"))
    parser.add_argument("--channels-logdir", default=None)
    parser.add_argument("--no-train", action="store_true",
                        help="never train a per-channel run (no channels screenshot without one)")
    parser.add_argument("--groups-logdir", default=None,
                        help="runs with a recorded run_group for docs/tb_groups.png "
                             "(default: small runs written with the summary writer)")
    parser.add_argument("--only-groups", action="store_true", help="take docs/tb_groups.png only")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args()
    logdir = os.path.abspath(args.logdir)
    os.makedirs(args.out, exist_ok=True)

    with tb_helpers.TensorBoardProcess(groups_logdir(args.groups_logdir), timeout=120) as tb:
        wait_for_runs(tb.url)
        groups_shot(tb.url, args.out, args.width, args.height)
    if args.only_groups:
        return

    with tb_helpers.TensorBoardProcess(logdir, timeout=120) as tb:
        runs = wait_for_runs(tb.url)
        print("runs:", ", ".join(r["run"] for r in runs), flush=True)
        epochs = max(r["last_step"] for r in runs) + 1
        main_shots(tb.url, args.out, args.width, args.height)
        values = part_values(tb.url, runs)
        if has_channels(runs):
            channels_shot(tb.url, args.out, args.width, args.height)
            channels_source = logdir

    if not has_channels(runs):
        channels_source = args.channels_logdir or os.path.join(os.path.dirname(logdir), "per_channel_logs")
        if not os.path.isdir(os.path.join(channels_source, "cnn")):
            if args.no_train:
                print("no per-channel data and --no-train: no channels screenshot", flush=True)
                channels_source = None
            else:
                train_per_channel(channels_source, epochs)
        if channels_source:
            with tb_helpers.TensorBoardProcess(channels_source, timeout=120) as tb:
                wait_for_runs(tb.url)
                channels_shot(tb.url, args.out, args.width, args.height)

    print(json.dumps({"logdir": logdir, "channels_logdir": channels_source,
                      "rotation90_last_epoch": values}, indent=1))


if __name__ == "__main__":
    main()

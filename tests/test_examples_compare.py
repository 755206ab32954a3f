"""examples/compare_seeds.py --quick: 3 models x 3 seeds, grouped by run_group, and its HTML report."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_equivariance.html_report import collect_logdirs

pytest.importorskip("e2cnn")  # the steerable baseline

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "compare_seeds.py"


@pytest.mark.slow
def test_compare_seeds_quick(tmp_path):
    logdir, report = tmp_path / "logs", tmp_path / "report.html"
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), "--quick", "--logdir", str(logdir), "--report", str(report)],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    # 9 runs, each recorded in its model's group
    runs = {(r.run, r.run_group) for r in collect_logdirs([str(logdir)])}
    assert runs == {(f"{m}/seed{s}", m) for m in ("cnn", "cnn_rotaug", "steerable_c4") for s in range(3)}
    # the printed group table: a mean and an interval per part, for every model
    table = out.stdout.split("per depth part: mean")[1]
    for model in ("cnn", "cnn_rotaug", "steerable_c4"):
        line = next(row for row in table.splitlines() if row.strip().startswith(model + " "))
        assert re.search(r"Early=\d\.\d{3} \[-?\d\.\d{3}, \d\.\d{3}\]", line), line
    # the report: one file, the three groups of three runs
    assert f"HTML report: {report}" in out.stdout
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', report.read_text(encoding="utf-8"), re.S).group(1))
    (series,) = [s for s in data["series"] if s["measure"] == "equivariance"]
    assert {g["name"]: len(g["runs"]) for g in series["groups"]} == {"cnn": 3, "cnn_rotaug": 3, "steerable_c4": 3}
    assert [g["baseline"] for g in series["groups"]] == [False, False, True]
    # a second run into the same logdir is refused with a clear message, before any training
    again = subprocess.run([sys.executable, str(EXAMPLE), "--quick", "--logdir", str(logdir)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--logdir" in again.stderr and "already holds" in again.stderr

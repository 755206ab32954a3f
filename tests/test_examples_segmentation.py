"""examples/segmentation.py --quick: a small segmentation net trained on generated shapes, its output by step."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "segmentation.py"


@pytest.mark.slow
def test_segmentation_quick(tmp_path):
    logdir = tmp_path / "logs"
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), "--quick", "--logdir", str(logdir)],
        capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    # the printed table: the output's invariance and equivariance at steps 0 (fit start) and 2
    table = out.stdout.split("by optimizer step:")[1]
    rows = re.findall(r"^\s+(\d+)\s+(\d\.\d{3})\s+(\d\.\d{3})$", table, re.M)
    assert [int(step) for step, _, _ in rows] == [0, 2]
    # the tidy CSV: (output) in Final, every step, the printed values
    run_dir = logdir / "segmentation" / "version_0"
    tidy = pd.read_csv(run_dir / "equivariance.csv", dtype={"layer": str})
    output = tidy[(tidy.layer == "(output)") & (tidy.group == "rotation90")]
    assert sorted(set(output.global_step)) == [0, 2] and set(output.part) == {"Final"}
    for step, inv, eq in rows:
        at = output[output.global_step == int(step)].set_index("measure").value
        assert at["invariance"] == pytest.approx(float(inv), abs=5e-4)
        assert at["equivariance"] == pytest.approx(float(eq), abs=5e-4)
    assert tidy.layer.tolist().index("(output)") > tidy.layer.tolist().index("head")  # the deepest layer
    # the TensorBoard run the tab reads: the per-layer series at both steps
    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    tag = "equivariance_layers/equivariance/rotation90"
    assert [e.step for e in acc.Tensors(tag)] == [0, 2]

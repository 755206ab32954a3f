"""DDP: 2 CPU processes (gloo), each measuring a disjoint shard, log the one-process values.

Plain ``strategy="ddp"`` inside pytest would re-run the test file in the child process, so
the training runs in ``tests/ddp_script.py`` in a subprocess with a timeout.
"""
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from callback_helpers import LitCNN, make_data
from lightning_equivariance import measure

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
def test_ddp_two_processes_log_the_one_process_values(tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "ddp_script.py"), str(tmp_path), "--devices", "2", "--num-samples", "37"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0["world_size"] == 2
    assert sorted(r0["history"]) == [0, 1]
    # Both processes hold the same synced values (what ModelCheckpoint/EarlyStopping see).
    assert r0["history"] == r1["history"]
    assert r0["callback_metrics"] == pytest.approx(r1["callback_metrics"], abs=0)
    indices = r0["indices"]
    assert torch.equal(indices, r1["indices"]) and len(indices) == 37  # shards 19 + 18

    # The one-process measurement of the same model state on the whole probe set.
    x, _ = make_data(50, 2)
    model = LitCNN()
    csv = pd.read_csv(tmp_path / "csv" / "version_0" / "metrics.csv")
    for epoch, state in r0["states"].items():
        model.load_state_dict(state)
        # the callback names layers relative to LitCNN's single child `net`, as measure(model.net) does
        report = measure(model.net, x[indices], measures=("invariance", "equivariance"), groups=("rotation90",))
        expected = report.scalars()  # the names and part means the callback logs
        logged = r0["history"][epoch]
        assert set(logged) == set(expected)
        for name, value in expected.items():
            assert logged[name] == pytest.approx(value, abs=1e-6), name
        # ... and rank zero wrote the part means (the default log_scalars="parts") through the
        # CSVLogger at the global step: 64 images / 2 processes / batches of 8 = 4 steps per epoch.
        parts = [name for name in expected if "/part/" in name]
        rows = csv[csv["step"] == 4 * (epoch + 1)].dropna(subset=parts[:1])
        assert len(rows) == 1
        assert not [c for c in csv.columns if c.startswith("equivariance/") and "/part/" not in c]
        for name in parts:
            assert float(rows[name].iloc[0]) == pytest.approx(expected[name], abs=1e-6), name

"""The G-EED and transformational measures over a probe set split across 2 processes (gloo, CPU) = 1 process.

The processes run in ``tests/ddp_measures_worker.py`` (``torch.multiprocessing.spawn``) in a
subprocess with a timeout; the one-process values are computed here from the same setups.
"""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import ddp_measures_worker as worker
from lightning_equivariance import Measurement

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_measures")
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, os.path.join(HERE, "ddp_measures_worker.py"), str(out)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def _same(a, b, what):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert np.array_equal(np.isinf(a), np.isinf(b)), what
    assert np.array_equal(np.isnan(a), np.isnan(b)), what  # a NaN must not hide behind the finite mask
    fin = np.isfinite(b)
    np.testing.assert_allclose(a[fin], b[fin], rtol=1e-6, atol=1e-12, err_msg=what)


@pytest.mark.slow
@pytest.mark.parametrize("run", ["exact", "squared", "blocks", "chance"])
def test_two_processes_give_the_one_process_values(ddp_results, run):
    kwargs, images, _ = worker.setups()[run]
    meas = Measurement(worker.model(), **kwargs)
    meas.update(images)
    single = meas.compute()
    expected = {(r["layer"], r["measure"], r["group"]): r for r in worker.rows(single)}
    for rank, res in enumerate(ddp_results):
        assert res["world_size"] == 2
        got = res["results"][run]
        assert got["errors"] == {} and got["notes"] == sorted(single.notes)
        rows = {(r["layer"], r["measure"], r["group"]): r for r in got["rows"]}
        assert set(rows) == set(expected)
        for key, e in expected.items():
            g = rows[key]
            _same(g["value"], e["value"], f"rank {rank} {key} value")
            assert list(g["per_element"]) == list(e["per_element"])
            _same(list(g["per_element"].values()), list(e["per_element"].values()), f"rank {rank} {key} per element")
            if e["per_channel"] is not None:
                _same(g["per_channel"], e["per_channel"], f"rank {rank} {key} per channel")
            if run == "chance":  # docs/measures.md §7: the same chance level and stderr as one process
                for field in ("chance", "above_chance", "stderr", "margin", "margin_stderr", "margin_low"):
                    assert (g[field] is None) == (e[field] is None), (rank, key, field)
                    if e[field] is not None:
                        _same(g[field], e[field], f"rank {rank} {key} {field}")
                assert g["informative"] == e["informative"]
                # issue 24: the pair margins merge exactly across processes (Chan's update)
                assert g["significant"] == e["significant"] and g["margin_pairs"] == e["margin_pairs"], (rank, key)
    measures = {k[1] for k in expected}
    assert measures == set(kwargs["measures"])
    if run == "chance":
        assert any(e["chance"] is not None for e in expected.values()) and any(
            e["stderr"] is not None for e in expected.values()
        )
        assert any(e["margin_stderr"] is not None and e["margin_pairs"] == 4 for e in expected.values())
    assert all(math.isfinite(e["value"]) or e["measure"] in ("nv", "nd") for e in expected.values())

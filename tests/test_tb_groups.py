"""lightning_equivariance_tb.run_groups: grouping runs, mean and t-interval over runs."""

import math

import numpy as np
import pytest
from scipy import stats

from lightning_equivariance_tb import run_groups
from lightning_equivariance_tb.run_groups import assign_groups, group_statistics


def _reference(values, confidence=0.95):
    a = np.asarray(values, dtype=np.float64)
    n = a.size
    mean = a.mean()
    if n < 2:
        return mean, None, None, n
    sem = a.std(ddof=1) / np.sqrt(n)
    low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=sem)
    return mean, low, high, n


def test_run_groups_is_torch_free():
    import sys

    assert "torch" not in run_groups.__dict__
    source = open(run_groups.__file__).read()
    assert "import torch" not in source
    assert "tensorboard" not in source.split('"""', 2)[2]
    assert sys.modules[run_groups.__name__] is run_groups


def test_assign_groups_recorded():
    recorded = {"cnn_s2": "cnn", "cnn_s1": "cnn", "steer_s0": "steer", "lone": "", "none": None}
    assert assign_groups(recorded) == {"cnn": ["cnn_s1", "cnn_s2"], "steer": ["steer_s0"]}
    assert assign_groups({}) == {}
    assert list(assign_groups({"b": "z", "a": "y"})) == ["y", "z"]


def test_assign_groups_pattern_first_capture_group():
    recorded = {"cnn_seed0": "x", "cnn_seed1": "x", "rot_seed0": "", "other": "x", "rot_seed7": ""}
    groups = assign_groups(recorded, r"^(.*)_seed\d+$")
    # the pattern replaces the recorded names; "other" does not match: ungrouped
    assert groups == {"cnn": ["cnn_seed0", "cnn_seed1"], "rot": ["rot_seed0", "rot_seed7"]}
    # re.search, not re.match; only the first capture group names the group
    assert assign_groups({"exp/a-1": "", "exp/b-2": ""}, r"/(\w)-(\d)") == {"a": ["exp/a-1"], "b": ["exp/b-2"]}
    # an optional group that did not take part, or an empty capture: ungrouped
    assert assign_groups({"run1": "", "xrun2": ""}, r"(x)?run") == {"x": ["xrun2"]}
    # empty pattern: the recorded names
    assert assign_groups({"a": "g"}, "") == {"g": ["a"]}
    with pytest.raises(ValueError, match="pattern"):
        assign_groups({"a": ""}, "(")


def test_group_statistics_against_numpy_scipy():
    rng = np.random.default_rng(0)
    values_by_run = {
        "a": {0: 0.5, 1: 0.6, 2: 0.7, 5: 0.1},
        "b": {0: 0.4, 1: float("nan"), 2: 0.9},
        "c": {0: 0.45, 1: 0.65, 2: float("inf"), 3: 0.2},
        "d": {0: float(rng.random()), 2: float(rng.random()), 3: 0.3},
    }
    out = group_statistics(values_by_run)
    assert list(out) == [0, 1, 2, 3, 5]
    expected_samples = {
        0: [0.5, 0.4, 0.45, values_by_run["d"][0]],
        1: [0.6, 0.65],
        2: [0.7, 0.9, values_by_run["d"][2]],
        3: [0.2, 0.3],
        5: [0.1],
    }
    for x, sample in expected_samples.items():
        mean, low, high, n = _reference(sample)
        got = out[x]
        assert got["n"] == n
        assert got["mean"] == pytest.approx(mean, abs=1e-9, rel=1e-9)
        if n < 2:
            assert got["low"] is None and got["high"] is None
        else:
            assert got["low"] == pytest.approx(low, abs=1e-9, rel=1e-9)
            assert got["high"] == pytest.approx(high, abs=1e-9, rel=1e-9)
            # the documented formula
            half = stats.t.ppf(0.975, n - 1) * np.std(sample, ddof=1) / math.sqrt(n)
            assert got["high"] - got["mean"] == pytest.approx(half, abs=1e-9)


@pytest.mark.parametrize("confidence", [0.5, 0.9, 0.99])
def test_group_statistics_confidence(confidence):
    rng = np.random.default_rng(1)
    runs = {"r%d" % i: {s: float(v) for s, v in enumerate(rng.normal(size=6))} for i in range(5)}
    out = group_statistics(runs, confidence=confidence)
    for x in range(6):
        mean, low, high, n = _reference([runs[r][x] for r in runs], confidence)
        assert out[x]["n"] == 5
        assert abs(out[x]["mean"] - mean) < 1e-9
        assert abs(out[x]["low"] - low) < 1e-9
        assert abs(out[x]["high"] - high) < 1e-9
    with pytest.raises(ValueError):
        group_statistics(runs, confidence=1.0)


def test_group_statistics_edge_cases():
    assert group_statistics({}) == {}
    assert group_statistics({"a": {0: float("nan")}, "b": {}}) == {}
    out = group_statistics({"a": {3: 2.0}, "b": {3: 2.0}})
    assert out == {3: {"mean": 2.0, "low": 2.0, "high": 2.0, "n": 2}}
    assert run_groups.INTERVAL_LABEL == "95% Student-t interval over runs"


def test_stack_statistics_is_group_statistics_vectorised():
    rng = np.random.default_rng(2)
    stack = rng.normal(size=(4, 3, 5))
    stack[0, 0, 0] = np.nan
    stack[1:, 1, 2] = np.nan  # one run left: no interval
    stack[:, 2, 4] = np.inf  # no finite value
    stack[2, 2, 3] = -np.inf
    mean, low, high, n = run_groups.stack_statistics(stack)
    for i in range(3):
        per_x = group_statistics({r: {x: stack[r, i, x] for x in range(5)} for r in range(4)})
        for x in range(5):
            if x not in per_x:
                assert n[i, x] == 0 and np.isnan(mean[i, x]) and np.isnan(low[i, x])
                continue
            got = per_x[x]
            assert n[i, x] == got["n"]
            assert abs(mean[i, x] - got["mean"]) <= 1e-9
            ref = _reference(stack[:, i, x][np.isfinite(stack[:, i, x])])
            assert abs(mean[i, x] - ref[0]) <= 1e-9
            if got["low"] is None:
                assert np.isnan(low[i, x]) and np.isnan(high[i, x])
            else:
                assert abs(low[i, x] - got["low"]) <= 1e-9 and abs(high[i, x] - got["high"]) <= 1e-9
                assert abs(low[i, x] - ref[1]) <= 1e-9 and abs(high[i, x] - ref[2]) <= 1e-9
    assert n[1, 2] == 1 and n[2, 3] == 3

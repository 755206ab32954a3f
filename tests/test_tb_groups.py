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


# --------------------------------------------------------------- issue 25 --
# Patterns are matched with RE2 (linear time); statistics scattered over cells.

LONG_RUNS = [
    "cnn_rotaug_seed0_lr0.001_bs64_wd0.0005",
    "cnn_rotaug_seed1_lr0.001_bs64_wd0.0005_cosine_warmup5_ema0.999_fp16_long_name",
    "cnn_rotaug_lr0.001_bs64_wd0.0005_seed0",
    "cnn_rotaug_lr0.001_bs64_wd0.0005_seed1",
    "steerable_c8_lr0.0003_bs128_wd0.0001_seed12",
]


def test_a_nested_quantifier_gives_the_groups_of_the_plain_pattern():
    # Python's re backtracks exponentially on ^(.*)*_seed\d+$ against names that do not match
    # (hours at 38 characters); RE2 answers in time linear in the name, with the groups the
    # documented ^(.*)_seed\d+$ gives (checked with Python's re, which is fast on that one).
    import re

    expected = {}
    for run in LONG_RUNS:
        match = re.search(r"^(.*)_seed\d+$", run)
        if match:
            expected.setdefault(match.group(1), []).append(run)
    recorded = {run: "" for run in LONG_RUNS}
    assert assign_groups(recorded, r"^(.*)*_seed\d+$") == expected
    assert expected == {
        "cnn_rotaug_lr0.001_bs64_wd0.0005": LONG_RUNS[2:4], "steerable_c8_lr0.0003_bs128_wd0.0001": LONG_RUNS[4:]}


@pytest.mark.parametrize("pattern, why", [
    (r"^(\w+)_seed\d+_\1$", "invalid escape sequence"),  # a backreference
    (r"^(?=cnn)(.*)_seed", "(?="),  # a lookahead
    (r"(?<!x)seed(\d)", "(?<"),  # a lookbehind
    ("(", "missing )"),
    (r"a{1001}", "repetition"),
])
def test_patterns_re2_refuses_name_the_pattern_and_the_syntax(pattern, why):
    with pytest.raises(ValueError) as e:
        assign_groups({"cnn_seed0": ""}, pattern)
    message = str(e.value)
    assert message.startswith("invalid run-group pattern %r: " % pattern) and why in message
    assert run_groups.PATTERN_SYNTAX in message and "RE2" in message


def test_patterns_keep_python_syntax_where_re2_has_it():
    recorded = {"CNN_seed0": "", "cnn_seed1": "", "mlp-seed2": "", "x": ""}
    assert assign_groups(recorded, r"(?i)^(?P<model>cnn)_seed\d+\Z".replace(r"\Z", r"\z")) == {
        "CNN": ["CNN_seed0"], "cnn": ["cnn_seed1"]}
    assert assign_groups(recorded, r"^([a-z]+?)[-_]seed(?:\d{1,3})$") == {
        "cnn": ["cnn_seed1"], "mlp": ["mlp-seed2"]}


def test_cell_statistics_is_group_statistics_of_each_cell():
    rng = np.random.default_rng(3)
    size = 7
    cells = rng.integers(0, size - 1, 60)  # the last cell gets nothing
    values = rng.normal(size=60)
    values[::9] = np.nan
    values[4] = np.inf
    cells[cells == 2] = 5
    cells[:3], values[:3] = [5, 2, 5], [-np.inf, 1.5, np.nan]  # cell 2: one value; cell 5: non-finite ones too
    mean, low, high, n = run_groups.cell_statistics(cells, values, size)
    for c in range(size):
        sample = [v for k, v in zip(cells, values) if k == c and np.isfinite(v)]
        assert n[c] == len(sample)
        if not sample:
            assert np.isnan(mean[c]) and np.isnan(low[c]) and np.isnan(high[c])
            continue
        ref = _reference(sample)
        assert abs(mean[c] - ref[0]) <= 1e-12
        if len(sample) < 2:
            assert np.isnan(low[c]) and np.isnan(high[c])
        else:
            assert abs(low[c] - ref[1]) <= 1e-12 and abs(high[c] - ref[2]) <= 1e-12
    assert n[size - 1] == 0 and n[2] == 1
    # the same as the dense stack of the same values
    stack = np.full((60, size), np.nan)
    stack[np.arange(60), cells] = values
    for got, dense in zip((mean, low, high, n), run_groups.stack_statistics(stack)):
        np.testing.assert_allclose(got, dense, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="confidence"):
        run_groups.cell_statistics(cells, values, size, confidence=0)

"""The zoo (issue 11): every torchvision classification family, random weights, Rotation90 and Translation.

Issue 21 adds torchvision's segmentation networks (their up-sampled output is the layer "(output)").

The whole zoo is marked ``zoo`` (deselected by default): ``python -m pytest -m zoo tests/test_zoo.py``.
A few fast families run by default. Builders and the analysis are in ``zoo_models.py``,
shared with ``benchmarks/zoo.py`` (which prints the table).
"""
import importlib.util
import os

import pytest
import torch

import zoo_models


def _check(family: str) -> dict:
    model, report, info = zoo_models.run(family)  # completes: no exception
    s = zoo_models.summarize(model, report)
    # every selected layer is measured, or each (measure, group) it lacks a result for is in
    # errors or notes, or it is not called
    assert not s["uncovered"], (
        f"{family}: {len(s['uncovered'])} (layer, measure, group) with no result, error, note or not_called "
        f"entry, e.g. {s['uncovered'][:5]}"
    )
    assert not s["nan"], f"{family}: NaN values {s['nan'][:5]}"
    assert not s["non_square"], (
        f"{family}: measured on non-square maps of a square input (a tensor misread as a map): {s['non_square'][:5]}"
    )
    assert s["measured"] > 0, f"{family}: no layer measured; errors {list(s['errors'].items())[:3]}"
    return s


@pytest.mark.zoo
@pytest.mark.parametrize("family", list(zoo_models.ZOO))
def test_zoo(family):
    _check(family)


@pytest.mark.parametrize("family", zoo_models.FAST)
def test_zoo_fast_family(family):
    """Fast members (well under 15 s each) in the default run."""
    s = _check(family)
    assert s["not_called"] == []


# ---- dense prediction (issue 21)
@pytest.mark.zoo
@pytest.mark.parametrize("family", zoo_models.SEGMENTATION)
def test_zoo_segmentation_measures_the_output_map_in_final(family):
    """The up-sampled ``out`` map is the layer "(output)": a full-size map, last, in Final, the decoder not in Final."""
    model, report, info = zoo_models.run(family)
    assert report.selected[-1] == "(output)" and "(output)" not in report.not_called
    index, part = report.depth["(output)"]
    assert part == "Final" and index == max(i for i, _ in report.depth.values())
    assert [n for n, (_, p) in report.depth.items() if p == "Final"] == ["(output)"]
    rows = report.to_dataframe().query("layer == '(output)'")
    errors = {k: v for k, v in report.errors.items() if k[0] == "(output)"}
    # each (measure, group): a value or a reason
    assert len(rows) + len(errors) == len(zoo_models.MEASURES) * len(zoo_models.zoo_groups()), errors
    assert set(rows.kind) <= {"map"} and all(r.shape == (10, info["size"], info["size"]) for r in report.results
                                             if r.layer == "(output)")
# ---- end of dense prediction


def test_zoo_script_reports_a_failing_family_and_goes_on(capsys):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks", "zoo.py")
    spec = importlib.util.spec_from_file_location("zoo_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rc = script.main(["--families", "no_such_family,shufflenet", "--threads", str(torch.get_num_threads())])  # keep the session's threads
    out = capsys.readouterr().out
    assert rc == 1  # the unknown family fails ...
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert "crashed" in rows[1] and "no_such_family" in rows[1]
    assert rows[2].startswith("| shufflenet |")  # ... and the next one is still measured

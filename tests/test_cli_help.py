"""``lightning-equivariance --help`` (issue 26): answers without torch, each option once with its default."""
import argparse
import os
import pathlib
import re
import subprocess
import sys

import pytest

from lightning_equivariance.cli import _parser, main

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _poisoned_env(tmp_path):
    """PYTHONPATH with a ``torch`` package first whose import fails, as where torch is broken or slow."""
    fake = tmp_path / "poison" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("torch imported by --help")\n')
    env = dict(os.environ)
    paths = [str(fake.parent), str(ROOT), str(ROOT / "tb_plugin")]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _subparsers():
    parser = _parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action.choices


@pytest.mark.parametrize("argv", [["--help"], ["measure", "--help"], ["report", "--help"], ["--version"]])
def test_help_answers_where_torch_cannot_be_imported(tmp_path, argv):
    env = _poisoned_env(tmp_path)
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True,
                           cwd=tmp_path)
    assert "torch imported by --help" in check.stderr  # the poison works
    out = subprocess.run([sys.executable, "-m", "lightning_equivariance", *argv], env=env, capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "torch" not in out.stderr
    assert ("usage:" in out.stdout) if "--help" in argv else out.stdout.startswith("lightning-equivariance ")
    # the console script's entry point, imported the same way
    entry = subprocess.run([sys.executable, "-c", "import sys; from lightning_equivariance.cli import main; "
                            "sys.exit(main(sys.argv[1:]))", *argv], env=env, capture_output=True, text=True,
                           timeout=120, cwd=tmp_path)
    assert entry.returncode == 0 and entry.stdout == out.stdout, entry.stderr


@pytest.mark.parametrize("command", ["measure", "report"])
def test_each_option_has_one_help_text_and_one_default(command, capsys):
    _, commands = _subparsers()
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    options = [a for a in commands[command]._actions if a.option_strings and a.dest != "help"]
    assert options
    for action in options:
        assert action.help, f"{action.option_strings} has no help text"
        words = " ".join(action.help.split())
        assert text.count(words) == 1, (action.option_strings, words)
        start = text.index(words)
        tail = text[start + len(words):start + len(words) + 200]
        added = tail.startswith(" (default: ")  # by the formatter
        said = words.count("(default") + added
        has_default = not (action.default is None or action.default is False or action.default in ("", []))
        if has_default:
            assert said == 1, (action.option_strings, words, tail[:60])
            if "(default" not in words:
                assert tail.startswith(f" (default: {action.default})"), (action.option_strings, tail[:60])
        else:  # no "(default: None)", "(default: False)"
            assert not added and said <= 1, (action.option_strings, words, tail[:60])
    assert not re.search(r"\(default[^)]*\) \(default", text)


def test_device_is_resolved_after_parsing():
    _, commands = _subparsers()
    device = next(a for a in commands["measure"]._actions if a.dest == "device")
    assert device.default is None  # no torch.cuda call at parse time


def test_measure_ends_with_the_part_table(tmp_path, capsys):
    import torch
    from torch import nn

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.Flatten(), nn.Linear(2 * 5 * 5, 3))
    nn.init.zeros_(model[4].weight)  # a dead output: refused by the correlation measures
    nn.init.zeros_(model[4].bias)
    torch.manual_seed(0)
    ckpt, images = tmp_path / "m.pt", tmp_path / "x.pt"
    torch.save(model, ckpt)
    torch.save(torch.rand(8, 1, 9, 9), images)
    assert main(["measure", "--checkpoint", str(ckpt), "--images", str(images), "--logdir", str(tmp_path / "logs"),
                 "--run", "r"]) == 0
    lines = capsys.readouterr().out.splitlines()
    columns = ["measure", "group", "part", "mean", "chance", "above", "chance"]
    head = next(i for i, line in enumerate(lines) if line.split() == columns)
    rows = [line.split() for line in lines[head + 1:] if not line.startswith("refused")]
    import pandas as pd

    # The same numbers from the run's CSV (one row per layer and group element): a part's mean
    # and chance are the means over its layers of each layer's element mean and chance level.
    csv = pd.read_csv(tmp_path / "logs" / "r" / "equivariance.csv", dtype={"layer": str})
    layers = csv.groupby(["measure", "part", "layer"])[["value", "chance"]].mean().groupby(["measure", "part"]).mean()
    assert {(r[0], r[2]) for r in rows} == set(layers.index) and {r[1] for r in rows} == {"rotation90"}
    for measure_name, _, part, mean, chance, above in rows:
        expected = layers.loc[(measure_name, part)]
        assert float(mean) == pytest.approx(expected.value, abs=5e-4)
        assert float(chance) == pytest.approx(expected.chance, abs=5e-4)
        if above != "-":  # "-": uninformative, no room above chance
            assert float(above) == pytest.approx((float(mean) - float(chance)) / (1 - float(chance)), abs=3e-3)
    assert lines[-1].startswith("refused: 1 layer(s), 2 (layer, measure, group); first: 4/")
    assert "dead" in lines[-1]

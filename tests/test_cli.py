"""python -m lightning_equivariance measure: writes a run the plugin reads, clear errors."""
import subprocess
import sys

import numpy as np
import pandas as pd
import torch
from PIL import Image

from lightning_equivariance.baselines import PlainCNN
from lightning_equivariance.cli import main
from models import ChannelsLastNet


def _folder(tmp_path, sizes):
    d = tmp_path / "images"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i, s in enumerate(sizes):
        Image.fromarray((rng.random((s, s)) * 255).astype(np.uint8)).save(d / f"img{i}.png")
    return d


def test_measure_checkpoint_on_image_folder_writes_run_and_csv(tmp_path):
    torch.manual_seed(0)
    model = PlainCNN(in_channels=1, num_classes=10)
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, ckpt)  # a Lightning-style ckpt
    images = _folder(tmp_path, [17] * 5)
    code = main(
        ["measure", "--arch", "plain", "--checkpoint", str(ckpt), "--images", str(images)]
        + ["--logdir", str(tmp_path / "logs"), "--run", "imported", "--groups", "rotation90", "flip", "--baseline"]
    )
    assert code == 0
    df = pd.read_csv(tmp_path / "logs" / "imported" / "equivariance.csv")
    assert set(df.group) == {"rotation90", "flip"} and {"layer", "part", "element", "value"} <= set(df.columns)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "logs" / "imported"), size_guidance={"tensors": 0})
    acc.Reload()
    tags = acc.Tags()["tensors"]
    assert "equivariance_layers/invariance/rotation90" in tags and "equivariance_layers/equivariance/flip" in tags
    event = acc.Tensors("equivariance_layers/invariance/rotation90")[0]
    assert event.step == 0 and len(event.tensor_proto.float_val or []) + len(event.tensor_proto.tensor_content) > 0
    assert acc.SummaryMetadata("equivariance_layers/invariance/rotation90").plugin_data.plugin_name == "equivariance"


def test_wrong_checkpoint_message(tmp_path):
    images = tmp_path / "x.pt"
    torch.save(torch.rand(2, 1, 9, 9), images)
    out = subprocess.run([sys.executable, "-m", "lightning_equivariance", "measure", "--arch", "plain",
                          "--checkpoint", str(tmp_path / "missing.pt"), "--images", str(images)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "--checkpoint" in out.stderr and "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_mixed_image_sizes_are_a_clear_error(tmp_path, capsys):
    images = _folder(tmp_path, [16, 16, 20])
    assert main(["measure", "--arch", "plain", "--images", str(images)]) == 2
    err = capsys.readouterr().err
    assert "mixes image sizes" in err and "20x20" in err and "--size" in err


def test_checkpoint_that_does_not_fit_the_arch(tmp_path, capsys):
    ckpt = tmp_path / "m.pt"
    torch.save(PlainCNN(num_classes=3).state_dict(), ckpt)
    images = tmp_path / "x.pt"
    torch.save(torch.rand(2, 1, 9, 9), images)
    assert main(["measure", "--arch", "bruintjes7", "--checkpoint", str(ckpt), "--images", str(images)]) == 2
    assert "does not fit" in capsys.readouterr().err


def test_degenerate_layer_is_recorded_not_fatal_and_on_error_raise_is_one_line(tmp_path, capsys):
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(2 * 7 * 7, 3))
    torch.nn.init.zeros_(model[2].weight)  # a dead output, as torchvision's ViT head at initialisation
    torch.nn.init.zeros_(model[2].bias)
    ckpt, images = tmp_path / "m.pt", tmp_path / "x.pt"
    torch.save(model, ckpt)
    torch.save(torch.rand(3, 1, 9, 9), images)
    args = ["measure", "--checkpoint", str(ckpt), "--images", str(images)]
    args += ["--logdir", str(tmp_path / "logs"), "--run", "r"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 (layer, measure, group) left out" in out
    assert set(pd.read_csv(tmp_path / "logs" / "r" / "equivariance.csv", dtype={"layer": str}).layer) == {"0"}
    assert main(args + ["--on-error", "raise"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "'2'" in err and "dead" in err and len(err.strip().splitlines()) == 1


def test_layout_override(tmp_path, capsys):
    torch.manual_seed(0)
    ckpt, images = tmp_path / "m.pt", tmp_path / "x.pt"
    torch.save(ChannelsLastNet(), ckpt)
    # 4 x 4 images: fc's B x 4 x 4 x 4 output is a square map read either way, so both readings are measured
    # (on 8 x 8 images the channels-first reading, 4 x 8 x 8 -> C = 8, h = 8, w = 4, is refused as not square)
    torch.save(torch.rand(3, 1, 4, 4), images)
    values = {}
    for layout in ("channels_last", "channels_first"):
        csv = tmp_path / f"{layout}.csv"
        assert main(["measure", "--checkpoint", str(ckpt), "--images", str(images), "--logdir", str(tmp_path / "logs"),
                     "--layers", "fc", "--layout", f"fc={layout}", "--csv", str(csv)]) == 0
        values[layout] = pd.read_csv(csv).value.tolist()
    assert len(values["channels_last"]) == len(values["channels_first"]) > 0  # fc measured under both readings
    assert values["channels_last"] != values["channels_first"]
    assert main(["measure", "--checkpoint", str(ckpt), "--images", str(images), "--layout", "fc"]) == 2
    assert "LAYER=channels_first" in capsys.readouterr().err


def test_unknown_group_or_measure_is_one_line_and_exit_2(tmp_path):
    images = tmp_path / "x.pt"
    torch.save(torch.rand(2, 1, 9, 9), images)
    for extra, word in ((["--groups", "rotation9"], "unknown group"), (["--measures", "invarince"], "unknown measure")):
        out = subprocess.run([sys.executable, "-m", "lightning_equivariance", "measure", "--arch", "plain",
                              "--images", str(images), "--logdir", str(tmp_path)] + extra,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 2, out.stderr
        assert word in out.stderr and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_help_shows_defaults_and_progress(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["measure", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--num-classes NUM_CLASSES classes of the model built from --arch (default: 10)" in text
    assert "--progress, --no-progress" in text


def test_progress_bar_on_request(tmp_path, capsys):
    images = tmp_path / "x.pt"
    torch.save(torch.rand(3, 1, 9, 9), images)
    assert main(["measure", "--arch", "plain", "--images", str(images), "--logdir", str(tmp_path), "--progress"]) == 0
    assert "measuring" in capsys.readouterr().err  # tqdm's bar, on stderr


def test_run_group_is_recorded_and_the_report_groups_the_runs(tmp_path, capsys):
    """measure --run-group NAME records the group (metadata v2); report draws the group of both runs."""
    import json
    import re

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lightning_equivariance_tb.metadata import parse_plugin_metadata

    images = tmp_path / "x.pt"
    torch.save(torch.rand(4, 1, 9, 9), images)
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = tmp_path / f"plain{seed}.pt"
        torch.save(PlainCNN(in_channels=1, num_classes=10).state_dict(), model)
        assert main(["measure", "--arch", "plain", "--checkpoint", str(model), "--images", str(images),
                     "--logdir", str(tmp_path / "logs"), "--run", f"plain_seed{seed}", "--run-group", "plain"]) == 0
    acc = EventAccumulator(str(tmp_path / "logs" / "plain_seed0"), size_guidance={"tensors": 0})
    acc.Reload()
    content = acc.SummaryMetadata("equivariance_layers/invariance/rotation90").plugin_data.content
    assert parse_plugin_metadata(content)["run_group"] == "plain"
    capsys.readouterr()
    out = tmp_path / "report.html"
    assert main(["report", str(tmp_path / "logs"), "-o", str(out)]) == 0
    assert re.search(r"wrote .*report\.html \(\d+\.\d MB, \d+ bytes\)", capsys.readouterr().out)
    text = out.read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', text, re.S).group(1))
    assert [g["name"] for s in data["series"] for g in s["groups"]] == ["plain", "plain"]  # invariance, equivariance
    assert [g["runs"] for g in data["series"][0]["groups"]] == [["plain_seed0", "plain_seed1"]]

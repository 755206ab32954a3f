"""Logs outside a terminal (issue 26): no progress-bar redraws, one line per measurement.

Where stderr is not a terminal (CI, a notebook's captured output, ``| tee``) a tqdm bar's every
redraw becomes a line of its own; the library's bars print one line per measurement there
instead (``lightning_equivariance/progress.py``), and the main example shows Lightning's bar on
a terminal only.
"""
import pathlib
import re
import subprocess
import sys

import torch

from lightning_equivariance import Rotation90, measure
from lightning_equivariance import progress as progress_module
from models import SmallCNN

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONTROL = re.compile(r"\r|\x1b\[")  # a bar's carriage returns, terminal escape sequences
LINE = re.compile(r"lightning_equivariance: measuring \d+ layers x \d+ measures x \d+ groups: \d+ images in \d+\.\ds")


def test_measure_prints_one_line_when_stderr_is_no_terminal(capfd):
    report = measure(SmallCNN(), torch.rand(6, 1, 8, 8), groups=[Rotation90()], batch_size=4, progress=True)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("lightning_equivariance: measuring")]
    assert len(lines) == 1 and LINE.fullmatch(lines[0]), err
    assert " 6 images in " in lines[0] and report.num_samples == 6
    assert not CONTROL.search(err)


def test_a_terminal_still_gets_the_bar(monkeypatch, capfd):
    monkeypatch.setattr(progress_module, "stderr_is_terminal", lambda: True)
    measure(SmallCNN(), torch.rand(6, 1, 8, 8), groups=[Rotation90()], batch_size=4, progress=True)
    err = capfd.readouterr().err
    assert "\r" in err and "measuring" in err  # tqdm's redraws
    assert not any(LINE.fullmatch(line) for line in err.splitlines())


def test_no_progress_no_line(capfd):
    measure(SmallCNN(), torch.rand(4, 1, 8, 8), groups=[Rotation90()], progress=False)
    assert "measuring" not in capfd.readouterr().err


def test_the_main_example_piped_has_no_bar_and_a_line_per_measurement(tmp_path):
    epochs = 2
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "rotated_digits.py"), "--epochs", str(epochs), "--limit", "160",
         "--runs", "cnn", "--num-samples", "16", "--logdir", str(tmp_path / "logs")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert not CONTROL.search(text), repr(text[:2000])
    measured = [line for line in text.splitlines() if line.startswith("EquivarianceCallback: epoch")]
    assert len(measured) == epochs, text
    assert all(re.search(r"on \d+ layers of 16 probe images in \d+\.\d+s$", line) for line in measured), measured
    # Training and measuring: a few lines per measurement (Lightning's own notes aside), no bar.
    fitting = out.stderr.split("`Trainer.fit` stopped")[0].splitlines()
    assert len(fitting) <= 10 + 3 * epochs, fitting

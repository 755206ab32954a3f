"""The paper-reproduction scripts of ``examples/experiments/`` (GitHub issue 7).

Their real runs download CIFAR-10 / MNIST / model weights and train for hours, so here:
argument parsing (defaults, ``--help``, clear errors) and one tiny end-to-end step of
each script on generated data (``--dataset fake``), reading back the TensorBoard runs
and the CSV they write. Nothing is downloaded.
"""
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.util import tensor_util

EXPERIMENTS = Path(__file__).resolve().parents[1] / "examples" / "experiments"
sys.path.insert(0, str(EXPERIMENTS))  # the scripts' own helpers, ``_shared``


def load(name):
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cifar():
    return load("cifar_augmentations")


@pytest.fixture(scope="module")
def wrn():
    return load("wrn_width")


@pytest.fixture(scope="module")
def geed():
    return load("rotated_mnist_geed")


@pytest.fixture(scope="module")
def lee():
    return load("lie_derivative_models")


def events(run_dir):
    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


def layer_tags(acc):
    return sorted(t for t in acc.Tags()["tensors"] if t.startswith("equivariance_layers/"))


def tab_metadata(acc, tag):
    meta = acc.SummaryMetadata(tag)
    assert meta.plugin_data.plugin_name == "equivariance"
    return json.loads(meta.plugin_data.content)


def parse_error(parse, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


# ---------------------------------------------------------------------- every script
@pytest.mark.parametrize("name", ["cifar_augmentations", "wrn_width", "rotated_mnist_geed", "lie_derivative_models"])
def test_help_cites_the_paper_and_exits_cleanly(name, capsys):
    module = load(name)
    with pytest.raises(SystemExit) as exc:
        module.parse_args(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out and "--dataset" in out and "--logdir" in out and "--smoke" in out
    assert "et al." in out  # the paper and section the script reproduces
    assert "§" in module.__doc__ and "What you will see" in module.__doc__
    assert callable(module.main)


# ---------------------------------------------------------------------- cifar_augmentations (Bruintjes §4.4)
def test_cifar_augmentations_defaults_are_the_papers(cifar):
    args = cifar.parse_args([])
    assert args.augmentation == ["none", "crop", "flip", "cutmix", "randaugment"]
    assert (args.dataset, args.depth, args.width, args.epochs, args.batch_size) == ("cifar10", 44, 16, 200, 128)
    assert (args.lr, args.momentum, args.weight_decay) == (0.1, 0.9, 1e-4)
    assert (args.num_samples, args.max_shift, args.layers) == (2000, 16, "blocks")
    smoke = cifar.parse_args(["--smoke"])
    assert (smoke.epochs, smoke.batch_size, smoke.num_samples, smoke.limit, smoke.num_workers) == (1, 8, 8, 32, 0)


def test_cifar_augmentations_bad_values_error_clearly(cifar, capsys):
    assert "invalid choice: 'mixup'" in parse_error(cifar.parse_args, ["--augmentation", "mixup"], capsys)
    assert "6n + 2" in parse_error(cifar.parse_args, ["--depth", "45"], capsys)
    assert "expected an integer >= 1, got 0" in parse_error(cifar.parse_args, ["--num-samples", "0"], capsys)
    assert "expected an integer >= 1, got 'ten'" in parse_error(cifar.parse_args, ["--epochs", "ten"], capsys)
    assert "--max-shift must be < 32" in parse_error(cifar.parse_args, ["--max-shift", "32"], capsys)
    assert "duplicates" in parse_error(cifar.parse_args, ["--augmentation", "crop", "crop"], capsys)
    assert "invalid choice: 'imagenet'" in parse_error(cifar.parse_args, ["--dataset", "imagenet"], capsys)
    assert "expected a number > 0" in parse_error(cifar.parse_args, ["--lr", "0"], capsys)
    assert "expected an integer >= 0, got -1" in parse_error(cifar.parse_args, ["--seed", "-1"], capsys)


def test_cifar_augmentation_pipelines():
    import torch
    import torchvision

    from _shared import AUGMENTATIONS, CifarResNet, WideResNet, cifar_transforms

    image, label = torchvision.datasets.FakeData(1, (3, 32, 32), 10)[0]
    for name in AUGMENTATIONS:
        train, val, batch = cifar_transforms(name)
        for tf in (train, val):
            x = tf(image)
            assert x.shape == (3, 32, 32) and x.dtype == torch.float32
        assert (batch is not None) == (name == "cutmix")
    x, y = cifar_transforms("cutmix")[2](torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))
    assert x.shape == (4, 3, 32, 32) and y.shape == (4, 10) and torch.allclose(y.sum(1), torch.ones(4))
    with pytest.raises(ValueError, match="augmentation must be one of"):
        cifar_transforms("mixup")
    # He et al. 2016 / Zagoruyko & Komodakis 2016 sizes
    resnet44 = CifarResNet(44)
    assert sum(p.numel() for p in resnet44.parameters()) == 658_586
    assert len(resnet44.block_layers()) == 1 + 3 * 7 + 2
    assert sum(p.numel() for p in WideResNet(40, 1).parameters()) == 563_930
    with pytest.raises(ValueError, match="6n \\+ 4"):
        WideResNet(41, 1)


def test_cifar_augmentations_smoke_on_fake_data(cifar, tmp_path):
    summary = cifar.main([
        "--dataset", "fake", "--smoke", "--augmentation", "cutmix", "--depth", "8",
        "--logdir", str(tmp_path / "logs"), "--data-root", str(tmp_path / "data"),
    ])
    assert list(summary) == ["resnet8_cutmix"]
    run = summary["resnet8_cutmix"]
    assert Path(run["log_dir"]) == tmp_path / "logs" / "resnet8_cutmix" / "version_0"
    assert list(run["history"]) == [0]
    acc = events(run["log_dir"])
    assert layer_tags(acc) == [
        "equivariance_layers/equivariance/translation",
        "equivariance_layers/invariance/translation",
    ]
    for tag in layer_tags(acc):
        (event,) = acc.Tensors(tag)
        assert event.step == 1  # the global step: the end of epoch 0, after its one training step
        content = tab_metadata(acc, tag)
        assert content["layers"] == ["stem", "stage1.0", "stage2.0", "stage3.0", "pool", "fc"]
        assert content["parts"][-2:] == ["Pool", "Final"]
        assert content["model"].startswith("ResNet-8 cutmix") and content["baseline"] is False
        assert tensor_util.make_ndarray(event.tensor_proto).shape == (6,)
    assert "equivariance/invariance/translation/part/Final" in acc.Tags()["scalars"]
    assert not (tmp_path / "data").exists()  # nothing downloaded


# ---------------------------------------------------------------------- wrn_width (Bruintjes §4.5)
def test_wrn_width_arguments(wrn, capsys):
    args = wrn.parse_args([])
    assert (args.widths, args.depth, args.augmentation, args.epochs, args.num_samples, args.max_shift) == (
        [1, 2, 4, 8], 40, "standard", 200, 2000, 16,
    )
    assert wrn.parse_args(["--widths", "2", "8"]).widths == [2, 8]
    assert "6n + 4" in parse_error(wrn.parse_args, ["--depth", "44"], capsys)
    assert "expected an integer >= 1, got 0" in parse_error(wrn.parse_args, ["--widths", "1", "0"], capsys)
    assert "duplicates" in parse_error(wrn.parse_args, ["--widths", "2", "2"], capsys)
    assert "--dropout must be < 1" in parse_error(wrn.parse_args, ["--dropout", "1"], capsys)


def test_wrn_width_measures_the_last_epoch(wrn, tmp_path):
    # Not --smoke: two epochs with every_n_epochs=5, so only the last epoch (1) is measured (the end of fit).
    summary = wrn.main([
        "--dataset", "fake", "--widths", "1", "--depth", "10", "--epochs", "2", "--every-n-epochs", "5",
        "--limit", "16", "--batch-size", "8", "--num-samples", "4", "--num-workers", "0",
        "--logdir", str(tmp_path / "logs"), "--data-root", str(tmp_path / "data"),
    ])
    run = summary["wrn10-1"]
    assert run["params"] == 77_850 and list(run["history"]) == [1]
    acc = events(run["log_dir"])
    assert layer_tags(acc) == [
        "equivariance_layers/equivariance/translation",
        "equivariance_layers/invariance/translation",
    ]
    for tag in layer_tags(acc):
        assert [e.step for e in acc.Tensors(tag)] == [4]  # global step: 2 epochs x 2 batches of 8
        content = tab_metadata(acc, tag)
        assert content["layers"] == ["stem", "block1.0", "block2.0", "block3.0", "relu", "pool", "fc"]
        assert content["model"] == "WRN-10-1 (77,850 params)"
    assert not (tmp_path / "data").exists()


# ---------------------------------------------------------------------- rotated_mnist_geed (Kvinge §4.1)
def test_rotated_mnist_geed_arguments(geed, capsys):
    args = geed.parse_args([])
    assert (args.dataset, args.models, args.max_steps, args.every_n_steps) == ("mnist", ["cnn", "c8"], 2000, 200)
    assert args.measures == ["geed_channel", "geed_latent_l2", "geed_softmax"]
    smoke = geed.parse_args(["--smoke"])
    assert (smoke.max_steps, smoke.every_n_steps, smoke.num_samples) == (1, 1, 8)
    assert "invalid choice: 'lee'" in parse_error(geed.parse_args, ["--measures", "lee"], capsys)
    assert "invalid choice: 'resnet'" in parse_error(geed.parse_args, ["--models", "resnet"], capsys)
    assert "expected an integer >= 1, got 0" in parse_error(geed.parse_args, ["--every-n-steps", "0"], capsys)
    assert "--fields: at most 4 blocks" in parse_error(geed.parse_args, ["--fields", "1", "1", "1", "1", "1"], capsys)
    assert "--size must be >= 9" in parse_error(geed.parse_args, ["--size", "5"], capsys)


def test_rotated_mnist_geed_every_n_steps_on_fake_data(geed, tmp_path):
    import torch

    from lightning_equivariance.metrics import MEASURES

    assert {"geed_channel", "geed_latent_l2", "geed_softmax"} <= set(MEASURES)
    summary = geed.main([
        "--dataset", "fake", "--smoke", "--fields", "2", "2", "2",
        "--logdir", str(tmp_path / "logs"), "--data-root", str(tmp_path / "data"),
    ])
    # --smoke: one training step, measured before and after it
    assert list(summary) == ["rotmnist_cnn", "rotmnist_c8"]
    expected = [f"equivariance_layers/{m}/rotation8" for m in ("geed_channel", "geed_latent_l2", "geed_softmax")]
    for run, baseline in (("rotmnist_cnn", False), ("rotmnist_c8", True)):
        s = summary[run]
        assert sorted(s["history"]) == [0, 1]  # before the first step and after it
        acc = events(s["log_dir"])
        assert layer_tags(acc) == sorted(expected)
        for tag in expected:
            events_ = acc.Tensors(tag)
            assert [e.step for e in events_] == [0, 1]
            content = tab_metadata(acc, tag)
            assert content["baseline"] is baseline and content["higher_is_better"] is False
            assert all(torch.isfinite(torch.as_tensor(tensor_util.make_ndarray(e.tensor_proto))).all() for e in events_)
        latent = [k for k in s["history"][1] if k.startswith("equivariance/geed_latent_l2/rotation8/part/")]
        assert latent  # measured after global pooling / at the logits
    assert not (tmp_path / "data").exists()


def test_step_callback_restores_train_mode(tmp_path):
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from _shared import ImageClassifier
    from lightning_equivariance import EquivarianceCallback, Rotation90
    from lightning_equivariance.baselines import PlainCNN

    class Check(pl.Callback):
        modes = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.modes.append(all(m.training for m in pl_module.modules()))

    cb = EquivarianceCallback(
        ("invariance",), (Rotation90(),), inputs=torch.rand(4, 1, 9, 9), num_samples=4, stage="train",
        every_n_train_steps=2, measure_on_fit_start=True, submodule="net",
    )
    check = Check()
    trainer = pl.Trainer(
        max_steps=3, logger=pl.loggers.CSVLogger(tmp_path), callbacks=[cb, check], enable_progress_bar=False,
        enable_checkpointing=False, enable_model_summary=False, accelerator="cpu", log_every_n_steps=1,
        limit_val_batches=0,
    )
    data = TensorDataset(torch.rand(8, 1, 9, 9), torch.randint(0, 3, (8,)))
    trainer.fit(ImageClassifier(PlainCNN(1, 3, (4, 4), kernel_size=3), "adam", lr=1e-3), DataLoader(data, batch_size=2))
    assert sorted(cb.step_history) == [0, 2, 3]  # start, every 2 steps, end
    assert check.modes == [True, True, True]
    with pytest.raises(ValueError, match="every_n_train_steps"):
        EquivarianceCallback(("invariance",), (Rotation90(),), every_n_train_steps=0)


# ---------------------------------------------------------------------- lie_derivative_models (Gruver §6)
def test_lie_derivative_models_arguments(lee, capsys):
    args = lee.parse_args([])
    assert args.models == ["resnet18", "resnet50", "efficientnet_b0", "vit_b_16"]
    assert args.transforms == ["translation_x", "translation_y", "rotation", "scale", "shear", "hyperbolic_rotation"]
    assert (args.weights, args.num_samples, args.dataset, args.layers) == ("none", 100, "imagenet", "auto")
    # naming weights only looks the enum up: nothing is downloaded here
    assert lee.parse_args(["--models", "resnet50", "--weights", "IMAGENET1K_V2"]).weights == "IMAGENET1K_V2"
    assert lee.resolve_weights("resnet18", "DEFAULT").name == "IMAGENET1K_V1"
    assert lee.resolve_weights("resnet18", "none") is None
    err = parse_error(lee.parse_args, ["--models", "resnet18", "resnet1000"], capsys)
    assert "unknown torchvision classification model(s) ['resnet1000']" in err and "resnet50" in err
    assert "not a weight of resnet18" in parse_error(
        lee.parse_args, ["--models", "resnet18", "--weights", "BOGUS"], capsys
    )
    assert "invalid choice: 'zoom'" in parse_error(lee.parse_args, ["--transforms", "zoom"], capsys)
    assert "duplicates" in parse_error(lee.parse_args, ["--transforms", "rotation", "rotation"], capsys)
    assert "--image-size must be >= 32" in parse_error(lee.parse_args, ["--image-size", "16"], capsys)


def test_image_folder_dataset(lee, tmp_path):
    from PIL import Image

    (tmp_path / "a").mkdir()
    Image.new("RGB", (40, 30), "red").save(tmp_path / "a" / "x.png")
    Image.new("L", (20, 20)).save(tmp_path / "y.JPG")
    (tmp_path / "notes.txt").write_text("not an image")
    data = lee.ImageFiles(str(tmp_path))
    assert len(data) == 2 and data[0][0].mode == "RGB" and data[0][1] == -1
    assert tuple(lee.preprocessing(None, 32)(data[0][0]).shape) == (3, 32, 32)
    with pytest.raises(ValueError, match="no image files"):
        lee.ImageFiles(str(tmp_path / "a" / "missing"))


def _too_small_for_lee(layers):
    """(layer, transform) pairs of torchvision's ResNet-18 at 32 px whose output map has fewer pixels than lee's
    stencil needs along an axis the transform moves (translation_x: the width; rotation: both)."""
    import torch
    import torchvision

    from lightning_equivariance.functional.lie import MIN_STENCIL_PIXELS

    model, sizes = torchvision.models.resnet18(), {}
    modules = dict(model.named_modules())

    def record(name):
        def hook(module, args, out):
            sizes.setdefault(name, tuple(out.shape))  # the first call's shape (a shared ReLU's calls agree)

        return hook

    hooks = [modules[name].register_forward_hook(record(name)) for name in layers if ":" not in name]
    with torch.no_grad():
        model.eval()(torch.zeros(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    small = set()
    for name in layers:
        shape = sizes.get(name.split(":")[0])
        if shape is None or len(shape) != 4 or shape[-1] * shape[-2] == 1:  # B x C x 1 x 1: a vector
            continue
        h, w = shape[-2:]
        if w < MIN_STENCIL_PIXELS:
            small.add((name, "translation_x"))
        if min(h, w) < MIN_STENCIL_PIXELS:
            small.add((name, "rotation"))
    return small


def test_lie_derivative_models_smoke_on_fake_data(lee, tmp_path):
    import pandas as pd

    from lightning_equivariance.metrics import MEASURES

    assert "lee" in MEASURES
    out = lee.main([
        "--dataset", "fake", "--smoke", "--models", "resnet18",
        "--logdir", str(tmp_path / "logs"), "--data-root", str(tmp_path / "data"),
    ])
    assert out["runs"] == {"resnet18": str(tmp_path / "logs" / "resnet18_random")}
    acc = events(out["runs"]["resnet18"])
    assert layer_tags(acc) == ["equivariance_layers/lee/rotation", "equivariance_layers/lee/translation_x"]
    content = tab_metadata(acc, "equivariance_layers/lee/rotation")
    assert content["model"] == "resnet18 (random weights)" and content["higher_is_better"] is False
    assert content["layers"][0] == "conv1" and content["layers"][-1] == "fc"
    csv = pd.read_csv(out["csv"])
    assert out["csv"] == os.path.join(str(tmp_path / "logs"), "lee.csv")
    assert list(csv.columns[:3]) == ["model", "weights", "layer"] and "transform" in csv.columns
    assert set(csv["transform"]) == {"translation_x", "rotation"} and set(csv["model"]) == {"resnet18"}
    # one row per (layer, transform), except where lee refuses a map too small for its stencil
    # (issue 24: at 32 px, layer3's 2 x 2 and layer4's 1 x 1 maps; the sizes found here by hooks)
    refused = _too_small_for_lee(content["layers"])
    assert refused and len(csv) == 2 * len(content["layers"]) - len(refused) and (csv["value"] >= 0).all()
    assert not set(zip(csv["layer"], csv["transform"])) & refused
    assert set(out["output_lee"]["resnet18"]) == {"translation_x", "rotation"}
    assert out["top1"] == {"resnet18": None}
    assert not (tmp_path / "data").exists()

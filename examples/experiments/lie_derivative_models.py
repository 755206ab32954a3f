"""How equivariant are ImageNet models to continuous transformations? Lie derivative (LEE) per layer.

Reproduces the setting of Gruver, Finzi, Goldblum & Wilson 2023, "The Lie Derivative for
Measuring Learned Equivariance" (ICLR), §6 (Figures 1 and 5) and the layerwise view of §5::

    python examples/experiments/lie_derivative_models.py --weights DEFAULT \\
        --dataset imagenet --data-root /data/imagenet               # ImageNet val (not downloaded)
    python examples/experiments/lie_derivative_models.py --weights DEFAULT \\
        --dataset folder --data-root ~/Pictures                     # any folder of images
    python examples/experiments/lie_derivative_models.py --dataset fake --smoke  # seconds, random weights

Setting of the paper: pretrained ImageNet classifiers (here any torchvision classification
model: ``--models``, default resnet18 resnet50 efficientnet_b0 vit_b_16), evaluated on 100
ImageNet images, for the continuous transforms translation x / y, rotation, isotropic scale,
shear and hyperbolic rotation (``--transforms``; ``saturation`` is available too), defined with
bilinear interpolation and reflection padding. ``--weights DEFAULT`` downloads the best
torchvision weights of each model (needs internet) and uses their own preprocessing; without
it the models have *random* weights (the measurement runs, but only trained models say
anything about learned equivariance; some heads, e.g. torchvision ViT's, are initialised to
zero, so their output LEE is exactly 0 - look at the inner layers). Images: the ImageNet validation set
(``--dataset imagenet``: torchvision's ``ImageNet(root, split="val")``, which needs the
official archives in ``--data-root``), a folder of images (``folder``: every image file under
``--data-root``, any layout), the CIFAR-10 test set (``cifar10``, downloads; up-sampled) or
generated images (``fake``).

Measured: the Lie derivative equivariance error (Gruver et al. 2023, Eq. 3-4:
``LEE = E_x ||L_X f(x)||^2 / dim``, computed exactly with forward-mode AD; *lower is more
equivariant*) of every layer ``f_{1:l}`` (``--layers auto``) or of the logits only
(``--layers output``). Units: normalised [-1, 1] image coordinates and radians, as in the
paper's code. With ImageNet labels the top-1 accuracy on the probe images is reported too
(the paper relates LEE to accuracy).

What you will see: one TensorBoard run per model, ``{logdir}/{model}_{weights}``
(``tensorboard --logdir lightning_logs --samples_per_plugin equivariance=0``, "Equivariance"
tab: the layer profile of every model for each transform, tags
``equivariance_layers/lee/{transform}``), and one CSV (``{logdir}/lee.csv``: model, weights,
layer, part, transform, value) for your own plots. The paper finds that the output LEE of
trained models falls as their accuracy rises, for CNNs and ViTs alike (convolution alone does
not make a model translation-equivariant: aliasing in down-sampling and non-linear layers
breaks it), and that the error builds up gradually over the layers, not in one place.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional

import torch
from torch.utils.data import Dataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _shared import (  # noqa: E402 - sys.path set first
    IMAGENET_MEAN,
    IMAGENET_STD,
    nonnegative_int,
    positive_int,
    quiet_warnings,
    seeded_subset,
)
from lightning_equivariance import TRANSFORMS, measure, select_layers  # noqa: E402 - sys.path set first

DEFAULT_MODELS = ("resnet18", "resnet50", "efficientnet_b0", "vit_b_16")
PAPER_TRANSFORMS = ("translation_x", "translation_y", "rotation", "scale", "shear", "hyperbolic_rotation")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")


def classification_models() -> List[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


class ImageFiles(Dataset):
    """Every image file under ``root`` (recursively, sorted), as RGB PIL images with label -1."""

    def __init__(self, root: str):
        self.files = sorted(
            os.path.join(d, f)
            for d, _, files in os.walk(os.path.expanduser(root))
            for f in files
            if f.lower().endswith(IMAGE_SUFFIXES)
        )
        if not self.files:
            raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {root!r}")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.files[i]) as im:
            return im.convert("RGB"), -1


def raw_dataset(name: str, root: str, image_size: int, size: int) -> Dataset:
    """Items ``(PIL image, label)``; ``label`` is an ImageNet class index only for ``imagenet``."""
    import torchvision

    if name == "imagenet":
        return torchvision.datasets.ImageNet(root, split="val")
    if name == "folder":
        return ImageFiles(root)
    if name == "cifar10":
        return torchvision.datasets.CIFAR10(root, train=False, download=True)
    if name == "fake":
        return torchvision.datasets.FakeData(size, (3, image_size, image_size), 1000, random_offset=0)
    raise ValueError(f"dataset must be 'imagenet', 'folder', 'cifar10' or 'fake', got {name!r}")


def preprocessing(weights, image_size: int):
    """The weights' own transform, or ImageNet's resize / centre crop / normalise at ``image_size``."""
    if weights is not None:
        return weights.transforms()
    from torchvision.transforms import v2

    return v2.Compose([
        v2.ToImage(),
        v2.Resize(int(round(image_size * 256 / 224)), antialias=True),
        v2.CenterCrop(image_size),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def resolve_weights(model: str, weights: str):
    """``None`` for ``none``; else the torchvision weights enum member (``DEFAULT`` or a name)."""
    if weights.lower() == "none":
        return None
    from torchvision.models import get_model_weights

    enum = get_model_weights(model)
    for key in (weights, weights.upper()):
        if key in enum.__members__:  # "DEFAULT" is an alias member
            return enum[key]
    raise ValueError(
        f"--weights {weights!r} is not a weight of {model}; choose DEFAULT, none or one of {list(enum.__members__)}"
    )


def build_model(name: str, weights, image_size: int) -> torch.nn.Module:
    import torchvision

    kwargs = {}
    if weights is None and name.startswith("vit_") and image_size != 224:
        kwargs["image_size"] = image_size  # random-weight ViTs can take any size divisible by the patch
    return torchvision.models.get_model(name, weights=weights, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] + " (Gruver et al. 2023 §6)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--models", nargs="+", default=list(DEFAULT_MODELS), help="torchvision classification model names"
    )
    parser.add_argument(
        "--weights",
        default="none",
        help="DEFAULT (pretrained, downloads), a weights name (IMAGENET1K_V2), or none (random)",
    )
    parser.add_argument("--dataset", choices=("imagenet", "folder", "cifar10", "fake"), default="imagenet",
                        help="probe images; 'fake' is generated (no download)")
    parser.add_argument(
        "--data-root", default="data", help="ImageNet root (with the val archives), image folder, or CIFAR download dir"
    )
    parser.add_argument(
        "--transforms", nargs="+", choices=TRANSFORMS, default=list(PAPER_TRANSFORMS), help="continuous transforms"
    )
    parser.add_argument("--num-samples", type=positive_int, default=100, help="probe images (a seeded random subset)")
    parser.add_argument(
        "--image-size",
        type=positive_int,
        default=224,
        help="input size without --weights (with them: the weights' own)",
    )
    parser.add_argument(
        "--layers", choices=("auto", "output"), default="auto", help="auto: every layer; output: the logits only"
    )
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per forward-mode pass")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--logdir", default="lightning_logs", help="TensorBoard log directory, one run per model")
    parser.add_argument(
        "--csv", default=None, help="CSV of every (model, layer, transform) value (default: {logdir}/lee.csv)"
    )
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="2 probe images at 32 x 32 pixels, translation_x and rotation only: checks the setup in seconds",
    )
    return parser


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    known = classification_models()
    unknown = [m for m in args.models if m not in known]
    if unknown:
        parser.error(f"--models: unknown torchvision classification model(s) {unknown}; choose from {known}")
    for name in ("models", "transforms"):
        values = getattr(args, name)
        if len(set(values)) != len(values):
            parser.error(f"--{name} has duplicates: {values}")
    if args.weights.lower() != "none":
        for m in args.models:
            try:
                resolve_weights(m, args.weights)
            except ValueError as e:
                parser.error(str(e))
    if args.image_size < 32:
        parser.error(f"--image-size must be >= 32, got {args.image_size}")
    if args.smoke:
        args.num_samples = min(args.num_samples, 2)
        args.image_size = 32
        args.transforms = [t for t in args.transforms if t in ("translation_x", "rotation")] or args.transforms[:1]
    return args


def main(argv: Optional[List[str]] = None) -> dict:
    """Measure each model; returns ``{"csv", "runs": {model: run dir}, "dataframe", "output_lee":
    {model: {transform: LEE of the logits}}, "top1": {model: accuracy or None}}``."""
    import pandas as pd

    from lightning_equivariance_tb.summary import write_report

    args = parse_args(argv)
    quiet_warnings()
    data = raw_dataset(args.dataset, args.data_root, args.image_size, size=max(args.num_samples, 1))
    indices = seeded_subset(len(data), args.num_samples, args.seed).tolist()
    items = [data[i] for i in indices]
    labels = torch.tensor([int(y) for _, y in items])
    has_labels = args.dataset == "imagenet"
    device = torch.device(args.device)

    frames, runs, output_lee, top1 = [], {}, {}, {}
    for name in args.models:
        weights = resolve_weights(name, args.weights)
        tag = "random" if weights is None else weights.name.lower()
        run = f"{name}_{tag}"
        t0 = time.time()
        torch.manual_seed(args.seed)  # random weights are reproducible
        model = build_model(name, weights, args.image_size).eval().to(device)
        transform = preprocessing(weights, args.image_size)
        images = torch.stack([transform(im) for im, _ in items])
        if has_labels:
            with torch.no_grad():
                logits = torch.cat([model(x.to(device)).cpu() for x in images.split(args.batch_size)])
            top1[name] = float((logits.argmax(1) == labels).float().mean())
        else:
            top1[name] = None
        layers = "auto" if args.layers == "auto" else [select_layers(model, "auto")[-1][0]]
        report = measure(
            model, images, measures=("lee",), groups=tuple(args.transforms), layers=layers,
            batch_size=args.batch_size, device=device, progress=not args.smoke, on_error="warn",
        )
        run_dir = os.path.join(args.logdir, run)
        label = f"{name} ({'random weights' if weights is None else weights.name})"
        write_report(run_dir, report, step=0, model=label)
        runs[name] = run_dir
        df = report.to_dataframe()
        df.insert(0, "weights", tag)
        df.insert(0, "model", name)
        df["top1"] = top1[name]
        frames.append(df)
        final = df[df["part"] == "Final"]
        last = final[final["index"] == final["index"].max()] if len(final) else df[df["index"] == df["index"].max()]
        output_lee[name] = {g: float(v) for g, v in zip(last["group"], last["value"])}
        del model
        print(f"{run}: {len(df['layer'].unique())} layers x {len(args.transforms)} transforms on "
              f"{images.shape[0]} images in {time.time() - t0:.1f}s", flush=True)

    table = pd.concat(frames, ignore_index=True).rename(columns={"group": "transform"})
    csv = args.csv or os.path.join(args.logdir, "lee.csv")
    os.makedirs(os.path.dirname(os.path.abspath(csv)), exist_ok=True)
    table.to_csv(csv, index=False)

    print("\nLEE of the output (logits; lower = more equivariant):")
    width = max(len(t) for t in args.transforms)
    print("  " + " " * 20 + "  ".join(f"{t:>{width}s}" for t in args.transforms) + ("   top-1" if has_labels else ""))
    for name in args.models:
        row = "  ".join(f"{output_lee[name].get(t, float('nan')):>{width}.4g}" for t in args.transforms)
        acc = f"   {top1[name]:.3f}" if top1[name] is not None else ""
        print(f"  {name:20s}{row}{acc}")
    print(f"\nCSV: {csv}\nTensorBoard: tensorboard --logdir {args.logdir} --samples_per_plugin equivariance=0")
    return {"csv": csv, "runs": runs, "dataframe": table, "output_lee": output_lee, "top1": top1}


if __name__ == "__main__":
    main()

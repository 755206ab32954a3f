"""Command line: measure a model trained elsewhere, or a baseline, and log it for TensorBoard.

    python -m lightning_equivariance measure --arch resnet18 --num-classes 10 \\
        --checkpoint model.pt --images path/to/folder --size 64 \\
        --groups rotation90 translation --logdir lightning_logs --run resnet18_imported

writes a TensorBoard run ``{logdir}/{run}`` that the Equivariance tab shows beside trained
runs (``--baseline`` draws it dashed, ``--run-group NAME`` puts it in a group of runs) and a
CSV of ``report.to_dataframe()``.

    python -m lightning_equivariance report lightning_logs [more_logs ...] -o report.html

turns one or more log directories (the callback's or ``measure``'s runs) into one
self-contained HTML file with the tab's main views, groups included, that opens offline in
any browser (:mod:`lightning_equivariance.html_report`; docs/compare.md).

Models: ``--arch`` is a torchvision architecture name (``resnet18``, ``vit_b_16``...) or a
baseline of :mod:`lightning_equivariance.baselines` (``steerable-c4``, ``steerable-d4``,
``plain``, ``bruintjes7``), built with random weights; ``--checkpoint`` then loads a
``state_dict`` (a plain ``torch.save(model.state_dict())`` file, or a Lightning ``.ckpt``
whose ``state_dict`` keys carry a prefix such as ``model.``). A checkpoint holding a whole
pickled ``nn.Module`` needs no ``--arch``.

Images: a folder of image files (PNG/JPEG, all of one size unless ``--size`` resizes them)
or a ``.pt`` file holding an ``N x C x H x W`` tensor (or a dict/tuple whose first tensor is).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:  # torch is imported where it is used: ``--help`` answers without it
    import torch
    from torch import nn

__all__ = ["main", "load_images", "load_model"]

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class CLIError(Exception):
    """A user error: printed as one clear line, exit status 2."""


def load_images(
    path: str, size: Optional[int] = None, limit: Optional[int] = None, channels: Optional[int] = None
) -> torch.Tensor:
    """Images ``N x C x H x W`` in ``[0, 1]`` from a folder of image files or a tensor file."""
    import torch

    p = Path(path)
    if not p.exists():
        raise CLIError(f"--images {path!r} does not exist")
    if p.is_file():
        try:
            obj = torch.load(p, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - any load failure becomes one CLI error
            raise CLIError(f"--images {path!r} is not a tensor file torch.load can read: {e}") from e
        if isinstance(obj, dict):
            obj = obj.get("images", next((v for v in obj.values() if isinstance(v, torch.Tensor)), None))
        elif isinstance(obj, (list, tuple)):
            obj = next((v for v in obj if isinstance(v, torch.Tensor)), None)
        if not isinstance(obj, torch.Tensor) or obj.dim() != 4:
            raise CLIError(
                f"--images {path!r} must hold an N x C x H x W tensor, "
                f"got {getattr(obj, 'shape', type(obj).__name__)}"
            )
        x = obj.float()
    else:
        import numpy as np
        from PIL import Image

        files = sorted(f for f in p.iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise CLIError(f"--images folder {path!r} holds no image files ({', '.join(sorted(_IMAGE_SUFFIXES))})")
        files = files[:limit] if limit else files
        arrays = []
        for f in files:
            with Image.open(f) as im:
                # Grey images stay one channel (digits, MNIST); everything else becomes RGB.
                gray = im.mode in ("1", "L", "I;16", "I") if channels is None else channels == 1
                im = im.convert("L" if gray else "RGB")
                if size:
                    im = im.resize((size, size), Image.BILINEAR)
                arrays.append((f, np.asarray(im, dtype=np.float32) / 255.0))
        shapes = {}
        for f, a in arrays:
            shapes.setdefault(a.shape, f.name)
        if len(shapes) > 1:
            (s1, f1), (s2, f2) = list(shapes.items())[:2]
            raise CLIError(
                f"--images folder {path!r} mixes image sizes or modes ({f1}: {s1[1]}x{s1[0]}, {f2}: {s2[1]}x{s2[0]}); "
                "pass --size N to resize them all to N x N"
            )
        x = torch.stack([torch.from_numpy(a if a.ndim == 3 else a[..., None]).permute(2, 0, 1) for _, a in arrays])
    if size and x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x[:limit] if limit else x


def _build_arch(arch: str, num_classes: int, in_channels: int) -> nn.Module:
    from . import baselines

    named = {
        "steerable-c4": lambda: baselines.SteerableCNN(4, in_channels=in_channels, num_classes=num_classes),
        "steerable-c8": lambda: baselines.SteerableCNN(8, in_channels=in_channels, num_classes=num_classes),
        "steerable-d4": lambda: baselines.SteerableCNN(4, flips=True, in_channels=in_channels, num_classes=num_classes),
        "plain": lambda: baselines.PlainCNN(in_channels=in_channels, num_classes=num_classes),
        "bruintjes7": lambda: baselines.Bruintjes7Layer(in_channels=in_channels, num_classes=num_classes),
    }
    if arch in named:
        return named[arch]()
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if arch not in available:
        import difflib

        close = difflib.get_close_matches(arch, available + list(named), n=5)
        raise CLIError(
            f"--arch {arch!r} is neither a baseline ({', '.join(named)}) nor a torchvision model; close: {close}"
        )
    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)


def load_model(
    arch: Optional[str], checkpoint: Optional[str], num_classes: int = 10, in_channels: int = 3
) -> nn.Module:
    """Build ``arch`` and/or load ``checkpoint`` (see module docstring)."""
    import torch
    from torch import nn

    state = None
    if checkpoint is not None:
        if not os.path.isfile(checkpoint):
            raise CLIError(f"--checkpoint {checkpoint!r} does not exist or is not a file")
        try:
            obj = torch.load(checkpoint, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - any load failure becomes one CLI error
            raise CLIError(f"--checkpoint {checkpoint!r} could not be read by torch.load: {e}") from e
        if isinstance(obj, nn.Module):
            return obj
        state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CLIError(f"--checkpoint {checkpoint!r} holds neither an nn.Module nor a state_dict")
    if arch is None:
        raise CLIError("--arch is required unless --checkpoint holds a whole pickled nn.Module")
    model = _build_arch(arch, num_classes, in_channels)
    if state is not None:
        own = set(model.state_dict())
        for prefix in ("", "model.", "net.", "module.", "network."):
            candidate = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if set(candidate) == own:
                try:
                    model.load_state_dict(candidate)
                except RuntimeError as e:
                    raise CLIError(
                        f"--checkpoint {checkpoint!r} does not fit --arch {arch!r} (shapes differ: "
                        f"{str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e}); "
                        "check --arch and --num-classes"
                    ) from e
                break
        else:
            missing = sorted(own - set(state))[:5]
            raise CLIError(
                f"--checkpoint {checkpoint!r} does not fit --arch {arch!r} (e.g. missing keys {missing}); "
                "check --arch and --num-classes"
            )
    return model


class _DefaultsHelpFormatter(argparse.HelpFormatter):
    """Each option's help ends with its default once: a help text that already says its default
    (``(default: ...)``) keeps its own words; no default, an empty one or an off switch says nothing."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        empty = default is None or default is False or default is argparse.SUPPRESS or default == "" or default == []
        if "(default" in text or "%(default)" in text or action.required or empty:
            return text
        return f"{text} (default: %(default)s)"


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="python -m lightning_equivariance", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"lightning-equivariance {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser(
        "measure", help="measure a model on images; write a TensorBoard run and a CSV",
        formatter_class=_DefaultsHelpFormatter,  # defaults shown once in --help
    )
    m.add_argument("--arch", help="torchvision model name or baseline (steerable-c4, steerable-d4, plain, bruintjes7)")
    m.add_argument("--checkpoint", help="state_dict, Lightning .ckpt, or pickled nn.Module")
    m.add_argument("--num-classes", type=int, default=10, help="classes of the model built from --arch")
    m.add_argument("--images", required=True, help="folder of image files or .pt tensor file")
    m.add_argument("--size", type=int, help="resize images to size x size")
    m.add_argument("--limit", type=int, default=512, help="at most this many probe images")
    m.add_argument(
        "--measures", nargs="+", default=["invariance", "equivariance"],
        help="measure names (docs/measures.md), e.g. invariance equivariance lie_derivative geed",
    )
    m.add_argument(
        "--groups", nargs="+", default=["rotation90"], help="group names, e.g. rotation90 translation flip c8"
    )
    m.add_argument("--layers", nargs="+", default=["auto"],
                   help="'auto' or qualified module names; '(output)' names the model's own output")
    m.add_argument(
        "--layout", action="append", default=[], metavar="LAYER=LAYOUT",
        help="how to read a layer the evidence does not settle: channels_first, channels_last (4-D), tokens or "
        "tokens_transposed (3-D), overriding what is inferred (repeatable), "
        "e.g. --layout features.1.0.block.2=channels_last",
    )
    m.add_argument(
        "--on-error", choices=("warn", "raise"), default="warn",
        help="warn: a (layer, measure, group) that cannot be measured is left out and named; "
        "raise: stop at the first one with an error (exit 2)",
    )
    m.add_argument("--batch-size", type=int, default=256, help="probe images per forward pass")
    m.add_argument("--device", help="torch device to measure on, e.g. cpu, cuda, cuda:1 (default: cuda when available)")
    m.add_argument("--logdir", default="lightning_logs", help="TensorBoard log directory the run is written under")
    m.add_argument("--run", help="run directory name under --logdir (default: the arch or checkpoint name)")
    m.add_argument("--step", type=int, default=0, help="step (epoch) to log at")
    m.add_argument("--baseline", action="store_true", help="mark the run as a baseline (drawn dashed)")
    m.add_argument(
        "--run-group", default="", metavar="NAME",
        help="record the run in the group NAME (e.g. a model type measured over several seeds); "
        "the tab and the HTML report show a group's mean and interval over its runs (default: no group)",
    )
    m.add_argument("--per-channel", action="store_true", help="also log per-channel values")
    m.add_argument("--csv", help="CSV path (default: {logdir}/{run}/equivariance.csv)")
    m.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="show a progress bar over the probe images (default: when stderr is a terminal)",
    )
    r = sub.add_parser(
        "report", help="write one self-contained HTML report of the runs in log directories",
        formatter_class=_DefaultsHelpFormatter,
        description="Read every run of the LOGDIRs (written by EquivarianceCallback with a TensorBoardLogger, "
        "by 'measure' or by lightning_equivariance_tb.summary) and write one HTML file with the heatmap, "
        "curves and layer profile, groups with their mean and interval; it opens offline, no server needed.",
    )
    r.add_argument("logdirs", nargs="+", metavar="LOGDIR", help="log directory, as given to tensorboard --logdir")
    r.add_argument("-o", "--output", default="equivariance_report.html", help="the HTML file to write")
    r.add_argument(
        "--group-regex", metavar="RE",
        help="group runs by this regular expression's first capture group on the run name, e.g. "
        "'^(.*)_seed[0-9]+$' (RE2 syntax: no backreferences or lookaround; default: the run_group recorded "
        "with each run)",
    )
    r.add_argument("--title", default="Equivariance report", help="the report's title")
    r.add_argument("--confidence", type=float, default=0.95, help="confidence level of the groups' Student-t intervals")
    return parser


def _layouts(pairs: Sequence[str]) -> dict:
    from .layers import LAYOUTS  # torch: after parsing, so that --help answers without it

    out = {}
    for pair in pairs:
        layer, sep, layout = pair.partition("=")
        if not sep or not layer:
            raise CLIError(f"--layout {pair!r} must be " + ", ".join(f"LAYER={v}" for v in LAYOUTS))
        out[layer] = layout
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)  # before any torch import: --help and --version need none
    from .engine import MeasureError
    from .groups import GroupActionError

    try:
        return _report(args) if args.command == "report" else _measure(args)
    except (CLIError, MeasureError, GroupActionError, ValueError) as e:
        # user errors (and on-error=raise failures): one line, exit 2
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _measure(args) -> int:
    from lightning_equivariance_tb.summary import write_report

    from .engine import measure

    images = load_images(args.images, size=args.size, limit=args.limit)
    device = args.device or _default_device()
    model = load_model(args.arch, args.checkpoint, args.num_classes, in_channels=images.shape[1]).to(device)
    layers = "auto" if args.layers == ["auto"] else args.layers
    report = measure(
        model, images, measures=args.measures, groups=args.groups, layers=layers,
        batch_size=args.batch_size, progress=sys.stderr.isatty() if args.progress is None else args.progress,
        layouts=_layouts(args.layout), on_error=args.on_error,
    )
    run = args.run or args.arch or Path(args.checkpoint).stem
    run_dir = Path(args.logdir) / run
    run_dir.mkdir(parents=True, exist_ok=True)
    model_name = args.arch or type(model).__name__
    n = write_report(
        str(run_dir), report, args.step, model=model_name, baseline=args.baseline, per_channel=args.per_channel,
        run_group=args.run_group,
    )
    csv = Path(args.csv) if args.csv else run_dir / "equivariance.csv"
    report.to_dataframe(per_element=True).to_csv(csv, index=False)
    left_out = f"; {len(report.errors)} (layer, measure, group) left out, see the warning" if report.errors else ""
    num_layers = len({r.layer for r in report.results})
    print(f"measured {report.num_samples} images x {len(args.groups)} group(s) on {num_layers} layers "
          f"in {report.seconds:.1f}s; wrote {n} summaries to {run_dir} and {csv}{left_out}")
    print(summary_table(report))
    return 0


def summary_table(report) -> str:
    """The short table ``measure`` ends with: per (measure, group, part) the mean over the part's
    layers, the mean chance level, how far above chance (docs/measures.md §7), and what was refused."""

    def number(v) -> str:
        return "-" if v is None or v != v else f"{v:.3f}"

    parts = report.parts(detail=True)
    head = ("measure", "group", "part", "mean", "chance", "above chance")
    rows = [(r.measure, r.group, r.part, number(r.value), number(r.chance), number(r.above_chance))
            for r in parts.itertuples()]
    widths = [max(len(str(row[i])) for row in [head] + rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in [head] + rows]
    if report.errors:
        (layer, measure_name, group), reason = next(iter(report.errors.items()))
        layers = len({key[0] for key in report.errors})
        lines.append(f"refused: {layers} layer(s), {len(report.errors)} (layer, measure, group); first: "
                     f"{layer}/{measure_name}/{group}: {reason.splitlines()[0] if reason else '?'}")
    else:
        lines.append("refused: 0 layers")
    return "\n".join(lines)


def _report(args) -> int:
    from .html_report import human_size, write_logdir_report

    if args.group_regex is not None and not args.group_regex:
        raise CLIError("--group-regex must not be empty; leave it out to group by the recorded run_group")
    size = write_logdir_report(args.logdirs, args.output, group_regex=args.group_regex, title=args.title,
                               confidence=args.confidence)
    print(f"wrote {args.output} ({human_size(size)}, {size} bytes): self-contained, opens offline in any browser")
    return 0

"""Benchmark of measure "lee": forward-mode passes against a bare forward of the same images.

    python benchmarks/bench_lee.py [--images 64] [--size 64] [--repeats 3] [--threads N]

ResNet-18 (torchvision, random weights), 64x64 inputs, 64 images, default layers (60
hooked layer calls), the transforms translation_x, translation_y, rotation, scale,
shear and hyperbolic_rotation. Every timed call (``Measurement(measures=("lee",),
groups=...)`` construction + update + compute, or a bare forward-mode pass ``jvp``) sits
between two bare forwards ``model(x)`` under ``torch.no_grad``, and its ratio is taken
against their mean, so a load that changes over minutes cancels; medians over repeats.

Prints JSON: ``per_transform_ratio`` = time of ``lee`` for all 6 transforms / 6 / forward
(target <= 4), the same per transform (``ratio_by_transform``), and ``jvp_ratio``: one
forward-mode pass without hooks (the floor), each for wall and process CPU time, with
torch's default threads and (on CPU, unless ``--no-single-thread``) with one thread in
``"single_thread"``. ``load_average`` is recorded because the machine may be shared: with
more runnable processes than cores, multi-threaded times are inflated by OpenMP barrier
waits, more for ``lee`` (about 7x as many large element-wise ops as a forward).
"""
import argparse
import json
import os
import statistics
import time

import torch
import torch.autograd.forward_ad as fwAD
import torchvision

from lightning_equivariance import Measurement
from lightning_equivariance.lie import forward_lie, resolve_transform

TRANSFORMS = ("translation_x", "translation_y", "rotation", "scale", "shear", "hyperbolic_rotation")


def _clock(fn, device):
    if device == "cuda":
        torch.cuda.synchronize()
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - w0, time.process_time() - c0


def run(images: int, size: int, repeats: int, device: str) -> dict:
    """Each timed call sits between two bare forwards; its ratio uses their mean (robust to a changing load)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).to(device).eval()
    x = torch.randn(images, 3, size, size, device=device)

    def forward():
        with torch.no_grad():
            model(x)

    def jvp():
        with fwAD.dual_level():
            forward_lie(model, x, resolve_transform("rotation"))

    def lee(names):
        def fn():
            meas = Measurement(model, measures=("lee",), groups=names, batch_size=images)
            meas.update(x)
            return meas.compute()

        return fn

    calls = {"jvp_rotation": jvp, **{f"lee_{t}": lee((t,)) for t in TRANSFORMS}, "lee_all": lee(TRANSFORMS)}
    forward(), jvp(), lee(("rotation",))()  # warm-up
    samples = {k: [] for k in calls}
    forwards = []
    for _ in range(repeats):
        for key, fn in calls.items():
            before = _clock(forward, device)
            took = _clock(fn, device)
            after = _clock(forward, device)
            fwd = [(b + a) / 2 for b, a in zip(before, after)]
            forwards.append(fwd)
            n = len(TRANSFORMS) if key == "lee_all" else 1
            samples[key].append((took[0], took[1], took[0] / n / fwd[0], took[1] / n / fwd[1]))
    def med(v):
        return float(statistics.median(v))
    out = {
        "forward_s": med([f[0] for f in forwards]),
        "forward_cpu_s": med([f[1] for f in forwards]),
        "lee_all_s": med([s[0] for s in samples["lee_all"]]),
        "per_transform_ratio": med([s[2] for s in samples["lee_all"]]),
        "per_transform_ratio_cpu": med([s[3] for s in samples["lee_all"]]),
        "jvp_ratio": med([s[2] for s in samples["jvp_rotation"]]),
        "jvp_ratio_cpu": med([s[3] for s in samples["jvp_rotation"]]),
        "ratio_by_transform": {t: med([s[2] for s in samples[f"lee_{t}"]]) for t in TRANSFORMS},
        "ratio_by_transform_cpu": {t: med([s[3] for s in samples[f"lee_{t}"]]) for t in TRANSFORMS},
    }
    out["layers"] = len(lee(("rotation",))().results)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--no-single-thread", action="store_true", help="skip the extra 1-thread run")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = (lambda: round(os.getloadavg()[0], 2)) if hasattr(os, "getloadavg") else (lambda: None)
    result = {
        "benchmark": "lee",
        "model": "resnet18 (random weights)",
        "images": args.images,
        "size": args.size,
        "transforms": list(TRANSFORMS),
        "device": args.device,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "target_per_transform_ratio": 4.0,
        "threads": torch.get_num_threads(),
        "load_average_before": load(),
        **run(args.images, args.size, args.repeats, args.device),
        "load_average_after": load(),
    }
    if args.device == "cpu" and torch.get_num_threads() > 1 and not args.no_single_thread:
        # On a shared machine, OpenMP threads spin at every parallel op's barrier while
        # their partner is descheduled; one thread shows the work without that effect.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        result["single_thread"] = {
            "load_average_before": load(),
            **run(args.images, args.size, args.repeats, args.device),
        }
        torch.set_num_threads(threads)

    def rounded(d):
        return {
            k: (round(v, 4) if isinstance(v, float) else rounded(v) if isinstance(v, dict) else v) for k, v in d.items()
        }

    result = rounded(result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

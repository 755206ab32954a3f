"""Benchmark of the core engine: measure() against a bare forward of the same stacked batch.

    python benchmarks/bench_measure.py [--images 64] [--size 64] [--repeats 7]

ResNet-18 (torchvision, random weights), 64x64 inputs, Rotation90, both correlation
measures, default layers. Prints JSON: the best-of-N times (interleaved repeats) of ``measure()`` and of a bare
``model(stacked)`` forward over the same images x (identity + 3 rotations) in the same
run, their ratio (target <= 1.5), and the peak memory during measure() in a fresh
subprocess (see ``bench_measures.py`` for how it is measured) for 64 vs 512 images (states must not grow
with the number of images; the forward chunk size is fixed by batch_size).
"""
import argparse
import json
import statistics
import time

import torch
import torchvision

from lightning_equivariance import Measurement, Rotation90


def _model(device):
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).to(device).eval()


def timing(images: int, size: int, repeats: int, device: str, batch_size: int) -> dict:
    model = _model(device)
    x = torch.randn(images, 3, size, size, device=device)
    meas = Measurement(model, groups=[Rotation90()], batch_size=batch_size)
    chunk = meas.samples_per_forward

    def bare():
        with torch.no_grad():
            for i in range(0, images, chunk):
                model(meas._stack(x[i : i + chunk]))

    def full():
        meas.reset()
        meas.update(x)
        meas.compute()

    # Interleaved repeats (bare, measure, bare, measure, ...): drift of a shared machine's
    # speed hits both alike; the best of each is compared.
    times = {"bare_forward_s": [], "measure_s": []}
    bare(), full()  # warm-up
    for _ in range(repeats):
        for name, fn in (("bare_forward_s", bare), ("measure_s", full)):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    best = {name: min(ts) for name, ts in times.items()}
    best["ratio_of_medians"] = statistics.median(times["measure_s"]) / statistics.median(times["bare_forward_s"])
    best["ratio"] = best["measure_s"] / best["bare_forward_s"]
    best["layers"] = len(meas.infos)
    return best


def peak_memory(images: int, size: int, device: str, batch_size: int) -> float:
    """Peak memory (MiB) during measure() of both correlation measures on `images` images, in a fresh process."""
    from bench_measures import child  # the sibling script: same child process and peak-memory method

    key = "invariance+equivariance"
    return child(images, [key], size, batch_size, device, max(1, torch.get_num_threads()))[key]["peak_memory_mib"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-family", action="store_true", help="skip timing nv and geed_* (several minutes on a CPU)")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    result = {
        "benchmark": "measure() vs bare forward, ResNet-18, Rotation90, invariance+equivariance",
        "device": args.device,
        "images": args.images,
        "size": args.size,
        "torch_threads": torch.get_num_threads(),
        **timing(args.images, args.size, args.repeats, args.device, args.batch_size),
        "target_ratio": 1.5,
    }
    result["peak_memory_mib_64"] = peak_memory(64, args.size, args.device, args.batch_size)
    result["peak_memory_mib_512"] = peak_memory(512, args.size, args.device, args.batch_size)
    result["memory_ratio_512_vs_64"] = result["peak_memory_mib_512"] / result["peak_memory_mib_64"]
    if not args.no_family:
        from bench_measures import run as run_family  # the sibling script

        result["family"] = run_family(
            ["--size", str(args.size), "--batch-size", str(args.batch_size), "--device", args.device]
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

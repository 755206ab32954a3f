"""Benchmark of the measure family: ``nv`` and ``geed_*`` through ``measure()``, time and peak memory.

    python benchmarks/bench_measures.py [--sizes 64 512] [--size 64] [--batch-size 256]

ResNet-18 (torchvision, random weights), 64x64 inputs, Rotation90, default layers (60).
Every (measure set, number of images) runs in a fresh subprocess that reports the wall
time of ``measure()`` and its peak memory: the process's peak RSS *during* ``measure()``
(Linux: the high-water mark ``VmHWM`` is reset just before, so imports and earlier work
cannot hide it; CUDA peak allocated on a GPU), with the bare forward's peak of the same
chunks, measured the same way in the same process, for reference. The probe images arrive as an
iterable of 64-image batches generated on the fly,
so the input itself does not grow either: what the JSON compares from 64 to 512 images is
the measurement (states are float64 sums of fixed size; the forward chunk is fixed by
``batch_size``). A bare forward of the same stacked batches is timed for reference.

Peak RSS on Linux also counts memory glibc keeps after ``free``: its mmap threshold grows
with the blocks a program frees (up to 32 MiB), and freed heap blocks are kept for reuse,
so a second chunk can raise the max RSS without any more memory in use. ``peak_memory_mib``
is therefore measured with ``MALLOC_MMAP_THRESHOLD_=131072`` (a fixed threshold: large
blocks are returned to the system when freed, so max RSS follows the memory in use, like
CUDA's peak allocated); ``peak_rss_default_malloc_mib`` is the same run under glibc's
defaults, for comparison.

    python benchmarks/bench_measures.py    # about 5 minutes on 2 CPU cores
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch

MEASURE_SETS = {
    "nv": ["nv"],
    "geed_all": ["geed_channel", "geed_latent_l2", "geed_latent_cosine", "geed_softmax"],
}
SINGLE = ["nv", "geed_channel", "geed_latent_l2", "geed_latent_cosine", "geed_softmax"]

CHILD = r"""
import json, resource, sys, time, torch, torchvision
from lightning_equivariance import Measurement, Rotation90
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
torch.manual_seed(0)
device = cfg["device"]
model = torchvision.models.resnet18(num_classes=10).to(device).eval()

def batches(n, size, chunk=64):
    g = torch.Generator().manual_seed(1)
    for i in range(0, n, chunk):
        yield torch.randn(min(chunk, n - i), 3, size, size, generator=g)

def status_mib(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(key))

def phase(fn):
    # Peak of this phase alone: reset the high-water mark first (Linux: "5" > clear_refs resets
    # VmHWM to the current RSS), so an earlier phase's peak cannot hide this one's.
    if device == "cuda":
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); before = torch.cuda.memory_allocated() / 2**20
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = status_mib("VmRSS")
    t0 = time.perf_counter()
    info = fn() or {}
    if device == "cuda":
        torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = status_mib("VmHWM")
    return {"seconds": time.perf_counter() - t0, "peak_memory_mib": peak, "memory_before_mib": before, **info}

def bare():
    meas = Measurement(model, measures=["nv"], groups=[Rotation90()], batch_size=cfg["batch_size"])
    step = meas.samples_per_forward
    with torch.no_grad():
        for x in batches(cfg["images"], cfg["size"]):
            for i in range(0, x.shape[0], step):
                model(meas._stack(x[i:i + step].to(device)))

def run(measures):
    meas = Measurement(model, measures=measures, groups=[Rotation90()], batch_size=cfg["batch_size"])
    meas.update(batches(cfg["images"], cfg["size"]))
    report = meas.compute()
    return {"results": len(report.results), "notes": len(report.notes), "errors": len(report.errors)}

out = {}
if cfg["bare"]:
    out["bare_forward"] = phase(bare)
for name in cfg["measures"]:
    out[name] = phase(lambda: run(name.split("+")))
print(json.dumps(out))
"""


FIXED_MMAP_THRESHOLD = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def child_env(fixed_malloc_threshold: bool) -> dict:
    """Environment of a child process: glibc's defaults, or a fixed mmap threshold (see module docstring)."""
    env = {k: v for k, v in os.environ.items() if k not in FIXED_MMAP_THRESHOLD}
    return {**env, **FIXED_MMAP_THRESHOLD} if fixed_malloc_threshold else env


def child(images, measures, size, batch_size, device, threads, bare=False, fixed_malloc_threshold=True):
    cfg = dict(
        images=images, measures=measures, size=size, batch_size=batch_size, device=device, threads=threads, bare=bare
    )
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True, timeout=3600,
                          env=child_env(fixed_malloc_threshold))
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-4000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(argv=None) -> dict:
    """Run the benchmark and return its JSON-able result (``main`` prints it)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 512], help="numbers of probe images")
    p.add_argument("--size", type=int, default=64, help="image side")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=max(1, torch.get_num_threads()))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    result = {
        "benchmark": "measure() with nv and geed_*, ResNet-18 (random weights), Rotation90, 60 default layers",
        "device": args.device,
        "image_size": args.size,
        "batch_size": args.batch_size,
        "torch_threads": args.threads,
    }
    # time of each measure alone on the smallest probe set (one process, time only)
    single = child(min(args.sizes), SINGLE, args.size, args.batch_size, args.device, args.threads, bare=True,
                   fixed_malloc_threshold=False)
    result[f"seconds_{min(args.sizes)}_images"] = {"bare_forward": single["bare_forward"]["seconds"],
                                                   **{m: single[m]["seconds"] for m in SINGLE}}
    # time and peak memory per (measure set, probe size), each in a fresh process; the bare
    # forward of the same chunks runs first in that process, its own peak for reference
    cpu = args.device == "cpu"
    for name, measures in MEASURE_SETS.items():
        per = {}
        key = "+".join(measures)
        for n in args.sizes:
            r = child(n, [key], args.size, args.batch_size, args.device, args.threads, bare=True)
            # seconds under glibc's defaults: a fixed mmap threshold maps and unmaps every large
            # temporary and can double the time
            default = (
                child(n, [key], args.size, args.batch_size, args.device, args.threads, fixed_malloc_threshold=False)
                if cpu
                else r
            )
            per[str(n)] = {"seconds": default[key]["seconds"], "peak_memory_mib": r[key]["peak_memory_mib"],
                           "memory_before_mib": r[key]["memory_before_mib"],
                           "bare_forward_peak_memory_mib": r["bare_forward"]["peak_memory_mib"],
                           "results": r[key]["results"], "notes": r[key]["notes"]}
            if cpu:
                per[str(n)]["peak_rss_default_malloc_mib"] = default[key]["peak_memory_mib"]
        lo, hi = per[str(min(args.sizes))], per[str(max(args.sizes))]
        per["memory_ratio_max_vs_min"] = hi["peak_memory_mib"] / lo["peak_memory_mib"]
        if cpu:
            per["default_malloc_ratio_max_vs_min"] = (
                hi["peak_rss_default_malloc_mib"] / lo["peak_rss_default_malloc_mib"]
            )
        per["seconds_per_image_ratio"] = (hi["seconds"] / max(args.sizes)) / (lo["seconds"] / min(args.sizes))
        result[name] = per
    result["total_benchmark_s"] = time.perf_counter() - t0
    return result


def main(argv=None):
    print(json.dumps(run(argv), indent=2))


if __name__ == "__main__":
    main()

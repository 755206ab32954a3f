"""Benchmark of the measure family: ``nv`` and ``geed_*`` through ``measure()``, time and peak memory.

    python benchmarks/bench_measures.py [--sizes 64 512] [--size 64] [--batch-size 256]

ResNet-18 (torchvision, random weights), 64x64 inputs, Rotation90, default layers (60).
Every (measure set, number of images) runs in a fresh subprocess that reports the wall
time of ``measure()`` and its peak memory (max RSS of the process; CUDA peak allocated on
a GPU). The probe images arrive as an iterable of 64-image batches generated on the fly,
so the input itself does not grow either: what the JSON compares from 64 to 512 images is
the measurement (states are float64 sums of fixed size; the forward chunk is fixed by
``batch_size``). A bare forward of the same stacked batches is timed for reference.
"""
import argparse
import json
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

out = {}
if cfg["bare"]:
    meas = Measurement(model, measures=["nv"], groups=[Rotation90()], batch_size=cfg["batch_size"])
    step = meas.samples_per_forward
    t0 = time.perf_counter()
    with torch.no_grad():
        for x in batches(cfg["images"], cfg["size"]):
            for i in range(0, x.shape[0], step):
                model(meas._stack(x[i:i + step].to(device)))
    out["bare_forward_s"] = time.perf_counter() - t0
for name in cfg["measures"]:
    measures = name.split("+")
    meas = Measurement(model, measures=measures, groups=[Rotation90()], batch_size=cfg["batch_size"])
    t0 = time.perf_counter()
    meas.update(batches(cfg["images"], cfg["size"]))
    report = meas.compute()
    out[name] = {"seconds": time.perf_counter() - t0, "results": len(report.results), "notes": len(report.notes),
                 "errors": len(report.errors)}
if device == "cuda":
    out["peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
else:
    out["peak_memory_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def child(images, measures, size, batch_size, device, threads, bare=False):
    cfg = dict(images=images, measures=measures, size=size, batch_size=batch_size, device=device, threads=threads, bare=bare)
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True, timeout=3600)
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
    single = child(min(args.sizes), SINGLE, args.size, args.batch_size, args.device, args.threads, bare=True)
    result[f"seconds_{min(args.sizes)}_images"] = {"bare_forward": single["bare_forward_s"], **{m: single[m]["seconds"] for m in SINGLE}}
    # time and peak memory per (measure set, probe size), each in a fresh process
    for name, measures in MEASURE_SETS.items():
        per = {}
        for n in args.sizes:
            r = child(n, ["+".join(measures)], args.size, args.batch_size, args.device, args.threads)
            per[str(n)] = {"seconds": r["+".join(measures)]["seconds"], "peak_memory_mib": r["peak_memory_mib"],
                           "results": r["+".join(measures)]["results"], "notes": r["+".join(measures)]["notes"]}
        lo, hi = per[str(min(args.sizes))], per[str(max(args.sizes))]
        per["memory_ratio_max_vs_min"] = hi["peak_memory_mib"] / lo["peak_memory_mib"]
        per["seconds_per_image_ratio"] = (hi["seconds"] / max(args.sizes)) / (lo["seconds"] / min(args.sizes))
        result[name] = per
    result["total_benchmark_s"] = time.perf_counter() - t0
    return result


def main(argv=None):
    print(json.dumps(run(argv), indent=2))


if __name__ == "__main__":
    main()

"""Peers in the same run: tmeasures' Normalized Variance against our ``nv``, printed as one JSON.

    python benchmarks/bench_peers.py [--repeats 3] [--threads 2] [--device cpu|cuda]

The same randomly initialised torchvision ResNet-18 and the same 64 images of 64x64 in one
process, Rotation90 (identity + 3 rotations, as our stacked pass measures it), batch size 64
for both. Ours: ``Measurement(measures=["nv"])`` at its defaults (60 default layers); tmeasures
(Quiroga et al.'s own library, PyPI ``tmeasures``): ``NormalizedVarianceInvariance`` over the
activations of ResNet-18's leaf modules (``AutoActivationsModule``), its own iteration over
the transformation x sample matrix. Repeats are interleaved (ours, theirs, ours, ...); the
ratio is of the medians. A bare forward of the stacked batch is timed too, for scale.

tmeasures is optional: ``pip install --no-deps tmeasures`` plus its small imports
(``statsmodels scikit-image seaborn``; its numpy transformations want ``opencv-python``, which
this script does not use). When it cannot be imported the JSON says ``skipped`` with the reason.
"""
import argparse
import copy
import json
import os
import statistics
import time

import torch
import torchvision

from lightning_equivariance import Measurement, Rotation90


def _tmeasures_nv(model, x, batch_size, device):
    """A callable running tmeasures' NV on ``model`` and ``x`` (identity + 3 rotations by 90 degrees)."""
    import tmeasures as tm
    from tmeasures.pytorch import AutoActivationsModule, NormalizedVarianceInvariance, PyTorchMeasureOptions
    from tmeasures.pytorch.transformations import PyTorchTransformation, PyTorchTransformationSet

    class Rot90(PyTorchTransformation):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def __call__(self, t):
            return torch.rot90(t, self.k, (-2, -1))

        def parameters(self):
            return torch.tensor([float(self.k)])

    class Rot90Set(PyTorchTransformationSet):
        def __init__(self):
            super().__init__([Rot90(k) for k in range(4)])

        def id(self):
            return "rot90"

        def valid_input(self, shape):
            return shape[-1] == shape[-2]

        def copy(self):
            return Rot90Set()

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return x.shape[0]

        def __getitem__(self, i):
            return x[i]

    # its hooks stay on the module: a copy with the same weights keeps them off ours
    activations = AutoActivationsModule(copy.deepcopy(model))
    options = PyTorchMeasureOptions(batch_size=batch_size, num_workers=0, verbose=False, model_device=device,
                                    measure_device=device, data_device=device)
    measure = NormalizedVarianceInvariance()
    transformations = Rot90Set()

    def run():
        with torch.no_grad():
            return measure.eval(Images(), transformations, activations, options)

    return run, tm.__name__, len(activations.activation_names())


def run(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"benchmark": "tmeasures NormalizedVarianceInvariance vs our nv, ResNet-18 (random weights), Rotation90",
              "device": args.device, "threads": torch.get_num_threads(), "images": args.images, "size": args.size,
              "batch_size": args.batch_size}
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).to(args.device).eval()
    x = torch.randn(args.images, 3, args.size, args.size, generator=torch.Generator().manual_seed(1)).to(args.device)
    try:
        theirs, _, their_layers = _tmeasures_nv(model, x, args.batch_size, args.device)
    except Exception as e:  # noqa: BLE001 - optional peer: any import or set-up failure is a skip with its reason
        result["skipped"] = f"tmeasures unavailable: {type(e).__name__}: {e}"
        return result

    def ours():
        meas = Measurement(model, measures=["nv"], groups=[Rotation90()], batch_size=args.batch_size)
        meas.update(x)
        return meas.compute()

    meas = Measurement(model, measures=["invariance"], groups=[Rotation90()], batch_size=args.batch_size)

    def bare():
        with torch.no_grad():
            step = meas.samples_per_forward
            for i in range(0, x.shape[0], step):
                model(meas._stack(x[i : i + step]))

    calls = {"bare_forward": bare, "ours_nv": ours, "tmeasures_nv": theirs}
    for fn in calls.values():  # warm-up
        fn()
    times = {k: [] for k in calls}
    for _ in range(args.repeats):
        for name, fn in calls.items():
            if args.device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if args.device == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    result.update(
        median_s={k: round(v, 4) for k, v in med.items()},
        our_layers=len(ours().results),
        their_layers=their_layers,
        tmeasures_over_ours=round(med["tmeasures_nv"] / med["ours_nv"], 3),
        ours_over_bare_forward=round(med["ours_nv"] / med["bare_forward"], 3),
        tmeasures_over_bare_forward=round(med["tmeasures_nv"] / med["bare_forward"], 3),
        load_average=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    )
    return result


def main(argv=None):
    print(json.dumps(run(argv), indent=2))


if __name__ == "__main__":
    main()

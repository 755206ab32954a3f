"""No host synchronisation while chunks are measured, on a GPU: every measure under
``torch.cuda.set_sync_debug_mode("error")``, printed as one JSON (the GPU twin of tests/test_no_sync.py).

    python benchmarks/gpu_no_sync.py [--device cuda|cpu]

CUDA raises on a synchronising call (``.item()``, ``nonzero``, a blocking copy to the host) while
the debug mode is ``"error"``; set-up (the first chunk) and ``compute`` may synchronise and run
outside it. ``--device cpu`` runs the same flow under the tests' ``NoHostRead`` dispatch mode.
"""
import argparse
import contextlib
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from host_sync import NoHostRead  # noqa: E402 - sys.path set first
from lightning_equivariance import Measurement, Rotation90, Translation  # noqa: E402 - sys.path set first
from lightning_equivariance.metrics import MEASURES  # noqa: E402 - sys.path set first
from models import SmallCNN  # noqa: E402 - sys.path set first


def check(name: str, device: str) -> str:
    torch.manual_seed(0)
    groups = ("rotation", "translation_x") if MEASURES[name].pass_kind != "stacked" else (Rotation90(), Translation(2))
    meas = Measurement(SmallCNN().to(device), measures=(name,), groups=groups, batch_size=64)
    x = torch.rand(12, 1, 12, 12, device=device)
    x[3, 0, 2, 2] = float("nan")  # the non-finite masks are on the hot path too
    meas.update(x[:4])  # set-up: layouts, states, first-chunk checks
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
    try:
        with contextlib.nullcontext() if cuda else NoHostRead():  # on the CPU: the test's dispatch mode
            meas.update(x[4:])
    except (RuntimeError, AssertionError) as e:
        return f"synchronises: {e}"
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode("default")
    report = meas.compute()
    return "ok" if report.results and report.non_finite_inputs == [3] else "wrong result"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    args = p.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        out = {"skipped": "no CUDA device"}
    else:
        out = {name: check(name, args.device) for name in sorted(MEASURES)}
        out["all_ok"] = all(v == "ok" for v in out.values())
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()

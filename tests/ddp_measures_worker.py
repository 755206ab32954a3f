"""Measure the G-EED and transformational family on 2 CPU processes (gloo), the probe set split between them.

Run by ``tests/test_measures_ddp.py`` in a subprocess with a timeout::

    python tests/ddp_measures_worker.py OUT_DIR

Spawns 2 processes with ``torch.multiprocessing``; each measures its shard with
:class:`~lightning_equivariance.Measurement` and ``compute()`` syncs the metric states
(torchmetrics, ``dist_reduce_fx``). Each rank writes ``OUT_DIR/rank{r}.pt``: ``{run: rows}``.
The single-process reference is computed by the test itself with :func:`setups`.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402 - sys.path set first
import torch.distributed as dist  # noqa: E402 - sys.path set first
import torch.multiprocessing as mp  # noqa: E402 - sys.path set first

from lightning_equivariance import Measurement, Rotation90, Translation  # noqa: E402 - sys.path set first
from models import SmallCNN  # noqa: E402 - sys.path set first

GEED = ["geed_channel", "geed_latent_l2", "geed_latent_cosine", "geed_softmax"]
FAMILY = ["tv", "sv", "nv", "td", "anova", "goodfellow", "same_equivariance"]


def setups():
    """``{run: (measurement kwargs, images, shards)}``; ``shards[r]`` is rank r's slice of the images."""
    torch.manual_seed(1)
    images9 = torch.rand(9, 1, 12, 12, dtype=torch.float64)
    images8 = images9[:8]
    def groups():
        return [Rotation90(), Translation(shifts=[(2, 1), (-1, 3)])]
    uneven = [slice(0, 5), slice(5, 9)]
    return {
        # every exactly-mergeable measure, uneven shards, chunks of 3 images that do not line up
        "exact": (dict(measures=GEED + FAMILY, groups=groups(), batch_size=18,
                       measure_options={"anova_alpha": 0.2, "anova_num_tests": 1}), images9, uneven),
        # squared-Euclidean SD/ND: exact from the column moments (Quiroga Eq. 7)
        "squared": (dict(measures=["sd", "nd"], groups=groups(), batch_size=18,
                         measure_options={"distance": "squared"}), images9, uneven),
        # |x - y| SD/ND: Quiroga's within-batch pairs; the split is chunk-aligned, so the blocks coincide
        "blocks": (dict(measures=["sd", "nd"], groups=groups(), batch_size=12), images8, [slice(0, 4), slice(4, 8)]),
        # chance level and standard errors: 9 images, contiguous shards of whole pairs (0-5, 6-8), global positions
        "chance": (dict(measures=["invariance", "equivariance", "geed_channel", "geed_latent_l2", "geed_softmax"],
                        groups=groups(), batch_size=18), images9, [slice(0, 6), slice(6, 9)]),
    }


def model():
    torch.manual_seed(0)
    return SmallCNN().double()


def rows(report):
    return [
        dict(layer=r.layer, measure=r.measure, group=r.group, value=r.value, per_element=r.per_element,
             per_channel=None if r.per_channel is None else r.per_channel.tolist(),
             chance=r.chance, above_chance=r.above_chance, informative=r.informative, stderr=r.stderr,
             margin=r.margin, margin_stderr=r.margin_stderr, margin_low=r.margin_low, significant=r.significant,
             margin_pairs=r.margin_pairs)
        for r in report.results
    ]


def run(rank: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(out, 'rendezvous')}", rank=rank, world_size=2)
    try:
        results = {}
        for name, (kwargs, images, shards) in setups().items():
            meas = Measurement(model(), **kwargs)
            mine = shards[rank]
            meas.update(images[mine], positions=range(mine.start, mine.stop))
            report = meas.compute()
            results[name] = {"rows": rows(report), "notes": sorted(report.notes), "errors": report.errors}
        torch.save({"world_size": dist.get_world_size(), "results": results}, os.path.join(out, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    out = os.path.abspath(sys.argv[1])
    os.makedirs(out, exist_ok=True)
    mp.spawn(run, args=(out,), nprocs=2, join=True)

"""The zoo (issue 11): measure the smallest member of every torchvision classification family.

    python benchmarks/zoo.py [--families resnet,vit] [--timm] [--images 4] [--threads 1] [--json zoo.json]

``--timm`` measures the timm members instead (``tests/zoo_models.py``'s ``TIMM``; timm must be installed).

Each family (builders in ``tests/zoo_models.py``, shared with ``tests/test_zoo.py``; since issue 21
also torchvision's segmentation networks ``fcn``, ``deeplabv3``, ``lraspp``, whose up-sampled
output is the layer ``(output)``): random weights, ``num_classes=10``, the smallest square input it
accepts (at least 32 px), ``Rotation90`` and ``Translation(max_shift=2)``, both correlation measures,
default layers.
Prints one JSON line per family, then a markdown table: family, model, input size, layers
selected / measured (at least one result) / refused (by reason) / not called, NaN values
(must be 0), uncovered (a called layer's (measure, group) with no result, error or note;
must be 0), non-square (layers measured on a non-square map of a square input, i.e. a tensor
misread as a map; must be 0), seconds. Exit status 1 when a family breaks one of these. A family
that fails is reported with its exception and the run goes on.
"""
import argparse
import gc
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import torch  # noqa: E402 - sys.path set first

import zoo_models  # noqa: E402 - sys.path set first


def run_family(family: str, images: int) -> dict:
    t0 = time.perf_counter()
    try:
        m = zoo_models.member(family)
        model, report, info = zoo_models.run(family, images=images)
        s = zoo_models.summarize(model, report)
        row = dict(info, min_size=m.min_size, **{k: v for k, v in s.items()})
        row["not_called_count"] = len(s["not_called"])
        row["nan_count"] = len(s["nan"])
        row["uncovered_count"] = len(s["uncovered"])
        row["uncovered"] = [list(u) for u in s["uncovered"][:20]]
        row["non_square_count"] = len(s["non_square"])
        row["non_square"] = [[layer, list(shape)] for layer, shape in s["non_square"][:20]]
        row["nan"] = [list(u) for u in s["nan"][:20]]
        row["non_finite"] = [list(u) for u in s["non_finite"][:20]]
        row["errors_count"] = len(s["errors"])
        row["errors"] = dict(list(s["errors"].items())[:40])
        row["ok"] = row["nan_count"] == 0 and row["uncovered_count"] == 0 and row["non_square_count"] == 0
        del model, report
    except Exception as e:  # noqa: BLE001 - one family's failure must not stop the zoo
        row = dict(family=family, ok=False, exception=f"{type(e).__name__}: {e}".splitlines()[0][:300],
                   traceback=traceback.format_exc(limit=-3))
    row["seconds"] = round(time.perf_counter() - t0, 2)
    gc.collect()
    return row


def _reasons(row: dict) -> str:
    by = row.get("refused_by_reason") or {}
    return "; ".join(f"{n}x {r}" for r, n in sorted(by.items(), key=lambda kv: -kv[1])) or "-"


def table(rows) -> str:
    head = ["family", "model", "input", "selected", "measured", "refused", "refused by reason", "not called",
            "NaN", "uncovered", "non-square", "layouts", "measure s", "total s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "exception" in r:
            cells = [r["family"], "", "", "", "", "", f"**crashed**: {r['exception']}", "", "", "", "", "", "",
                     f"{r['seconds']:.1f}"]
        else:
            cells = [
                r["family"],
                f"`{r['model']}`",
                f"{r['size']} (min {r['min_size']})",
                r["selected"],
                r["measured"],
                r["refused"],
                _reasons(r),
                r["not_called_count"],
                r["nan_count"],
                r["uncovered_count"],
                r["non_square_count"],
                ", ".join(f"{n} {k}" for k, n in (r.get("layouts_count") or {}).items()) or "-",
                f"{r['measure_s']:.1f}",
                f"{r['seconds']:.1f}",
            ]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--families",
        default=",".join(zoo_models.ZOO),
        help=f"comma-separated, default all: {','.join(zoo_models.ZOO)} (also: {','.join(zoo_models.EXTRA)})",
    )
    p.add_argument(
        "--timm", action="store_true", help="the timm members (issue 21): " + ",".join(zoo_models.TIMM_FAMILIES)
    )
    p.add_argument("--images", type=int, default=4, help="random probe images per family (default 4)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--json", default=None, help="also write every family's record to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    if args.timm:
        chosen = [f for f in families if f in zoo_models.TIMM]
        families = chosen if chosen else list(zoo_models.TIMM_FAMILIES)
    print(f"# engine records errors per (layer, measure, group): {zoo_models.engine_records_errors()}", flush=True)
    rows = []
    for family in families:
        row = run_family(family, args.images)
        rows.append(row)
        print(json.dumps(row, default=str), flush=True)
    print()
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=str)
    return 0 if all(r.get("ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

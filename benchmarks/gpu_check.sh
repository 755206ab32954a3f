#!/usr/bin/env bash
# The GPU checks of issue 23 in one short run, printing one JSON object:
#   bench_ops.py (ATen calls: what a GPU pays per launch), bench_targets.py --device cuda (ratios to
#   the forward), and gpu_no_sync.py (no host sync while chunks are measured, under
#   torch.cuda.set_sync_debug_mode("error")).
# Usage (repository root, the project installed): bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
tmp="$(mktemp -d)"
python benchmarks/bench_ops.py > "$tmp/ops.json"
python benchmarks/bench_targets.py --device cuda --repeats 5 --no-memory > "$tmp/targets.json"
python benchmarks/gpu_no_sync.py > "$tmp/no_sync.json"
python - "$tmp" <<'PY'
import json, os, sys
d = sys.argv[1]
out = {k: json.load(open(os.path.join(d, f"{k}.json"))) for k in ("ops", "targets", "no_sync")}
print(json.dumps(out))
PY

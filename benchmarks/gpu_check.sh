#!/usr/bin/env bash
# The GPU check, ready for the minutes a CUDA machine is available (under 8 minutes on one GPU):
#
#     bash benchmarks/gpu_check.sh [OUT.json]      # default: gpu_check.json
#
# 1. the GPU-marked tests (pytest -m gpu);
# 2. bdh bench train | generate | prefill --device cuda at the `official` preset, bf16 for training;
# 3. with 2 or more GPUs, a 2-process DDP smoke run of `bdh train` (NCCL);
# then one JSON with the device name, each step's exit status and seconds, and the bench results.
# Each step has its own time limit, so one that hangs cannot eat the others' minutes.
# On a machine without CUDA it says so and exits 0, running nothing.
# Environment: PYTHON (default python), REF (the official bdh.py, default ../shared/reference/official_bdh.py).
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
REF=${REF:-../shared/reference/official_bdh.py}
OUT=${1:-gpu_check.json}

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: needs CUDA (torch sees no CUDA device here); nothing run"
    exit 0
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export OMP_WAIT_POLICY=PASSIVE
STEPS=()

# step NAME LIMIT_S COMMAND...: run with a time limit, keep stdout as NAME.out and the status
step() {
    local name=$1 limit=$2
    shift 2
    echo "gpu_check: $name (limit ${limit} s)" >&2
    local start=$SECONDS
    timeout --signal=INT --kill-after=10 "$limit" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
    local rc=$?
    echo "$rc $((SECONDS - start))" >"$WORK/$name.status"
    STEPS+=("$name")
    tail -n 3 "$WORK/$name.err" >&2
}

step tests 100 "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests
step bench_train 100 "$PYTHON" -m bdh bench train --device cuda --preset official --precision bf16 \
    --steps 10 --reference "$REF" --json
step bench_generate 130 "$PYTHON" -m bdh bench generate --device cuda --preset official \
    --new-tokens 128 --new-tokens 512 --repeats 2 --reference "$REF" --json
step bench_prefill 70 "$PYTHON" -m bdh bench prefill --device cuda --preset official \
    --length 4096 --length 16384 --reference "$REF" --json
GPUS=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')
if [ "$GPUS" -ge 2 ]; then
    step ddp_smoke 80 "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=2 -m bdh train \
        --preset tiny --steps 20 --batch-size 16 --device cuda --out "$WORK/ddp_run"
fi

"$PYTHON" - "$WORK" "$OUT" "${STEPS[@]}" <<'PY'
import json, sys, torch
from pathlib import Path

work, out, names = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
report = {
    "device": torch.cuda.get_device_name(0),
    "gpus": torch.cuda.device_count(),
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "steps": {},
}
for name in names:
    rc, seconds = (int(x) for x in (work / f"{name}.status").read_text().split())
    text = (work / f"{name}.out").read_text()
    entry = {"exit_status": rc, "seconds": seconds, "timed_out": rc in (124, 137)}
    try:
        entry["result"] = json.loads(text)
    except ValueError:
        entry["output_tail"] = text[-2000:]
    entry["stderr_tail"] = (work / f"{name}.err").read_text()[-1000:]
    report["steps"][name] = entry
Path(out).write_text(json.dumps(report, indent=2))
print(f"gpu_check: {report['device']}: " + ", ".join(f"{n} {e['exit_status']}" for n, e in report["steps"].items()))
print(f"gpu_check: wrote {out}")
PY

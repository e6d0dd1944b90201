"""First-call overhead of decoding, through the official signature, in fresh processes.

    python benchmarks/first_call.py --preset small --tokens 512 --processes 3

Each fresh process builds the seeded model and calls `model.generate(idx, TOKENS,
top_k=1)` (the official `generate` signature) three times; the overhead is the first
call's time minus the median of the other two (kernel loading, lazy caches, thread pools).
The same is done with 8 new tokens, where the noise of a shared machine is smaller than
the overhead itself. The C++ kernels must have been built before (any earlier run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = """
import sys, time, torch, bdh
torch.manual_seed(0)
m = bdh.BDH(bdh.preset(sys.argv[1])).eval()
idx = torch.randint(0, 256, (1, 16))
times = []
for _ in range(3):
    t = time.perf_counter(); m.generate(idx, int(sys.argv[2]), top_k=1); times.append(time.perf_counter() - t)
print(*times)
"""


def overhead_ms(preset: str, tokens: int) -> tuple[float, float]:
    """(first call - median of the later two, later call) in ms, in one fresh process."""
    out = subprocess.run([sys.executable, "-c", CHILD, preset, str(tokens)], capture_output=True, text=True,
                         check=True, env=os.environ).stdout.split()  # fmt: skip
    first, later = float(out[0]), statistics.median([float(out[1]), float(out[2])])
    return 1000 * (first - later), 1000 * later


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--processes", type=int, default=3)
    args = parser.parse_args()
    load = [round(x, 2) for x in os.getloadavg()]
    result: dict = {"preset": args.preset, "load_average_at_start": load}
    for tokens in (8, args.tokens):
        runs = [overhead_ms(args.preset, tokens) for _ in range(args.processes)]
        result[f"{tokens}_tokens"] = {
            "first_call_overhead_ms": [round(o, 1) for o, _ in runs],
            "median_overhead_ms": round(statistics.median(o for o, _ in runs), 1),
            "later_call_ms": [round(t, 1) for _, t in runs],
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

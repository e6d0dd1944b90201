"""Decoding speed of two source trees of bdh, interleaved in the same minutes.

    python benchmarks/tree_ab.py --tree OLD_CHECKOUT/src --tree src --preset small --rounds 3

Each round runs every tree once in a fresh process (its own C++ kernel cache under
/tmp/bdh_tree_ab/N) and times `model.generate(idx, TOKENS, top_k=1)` (median of 3) on the
same seeded weights. On shared cores whose speed drifts, this separates a change in the
code from a change in the machine: a benchmark rerun alone cannot.
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
torch.manual_seed(0); torch.set_num_threads(int(sys.argv[3]))
m = bdh.BDH(bdh.preset(sys.argv[1])).eval()
idx = torch.randint(0, 256, (1, 16))
m.generate(idx, 32, top_k=1)
times = []
for _ in range(3):
    t = time.perf_counter(); m.generate(idx, int(sys.argv[2]), top_k=1); times.append(time.perf_counter() - t)
print(int(sys.argv[2]) / sorted(times)[1])
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tree",
        action="append",
        required=True,
        help="a src/ directory holding bdh (twice or more)",
    )
    parser.add_argument("--preset", default="small")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {tree: [] for tree in args.tree}
    for _ in range(args.rounds):
        for n, tree in enumerate(args.tree):
            env = {
                **os.environ,
                "PYTHONPATH": tree,
                "TORCH_EXTENSIONS_DIR": f"/tmp/bdh_tree_ab/{n}",
            }
            cmd = [sys.executable, "-c", CHILD, args.preset, str(args.tokens), str(args.threads)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            rates[tree].append(float(out.split()[-1]))
    result = {
        "preset": args.preset, "tokens": args.tokens, "load_average": os.getloadavg(),
        "tokens_per_s": rates, "median": {t: statistics.median(r) for t, r in rates.items()},
    }  # fmt: skip
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

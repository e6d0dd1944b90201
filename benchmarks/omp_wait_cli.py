"""The README's `bdh train` command under each OpenMP wait policy, idle and loaded.

    python benchmarks/omp_wait_cli.py [--steps 60] [--rounds 3] [--competitors NCPU] [--timeout 300]

Runs `bdh train --preset tiny --steps STEPS --out TMP --no-progress` (the README's first
command, fewer steps) with OMP_WAIT_POLICY unset, PASSIVE and ACTIVE, each in a fresh
process, interleaved over rounds, on the machine as it is ("idle") and with COMPETITORS
CPU-bound busy-loop processes beside it ("loaded"). The child imports torch under the
variant's environment before calling the CLI, so the CLI's own default cannot mask the
variant. Prints per-run figures and the median training time (`elapsed_s` of the last
logged step) and whole-command wall time of each variant (a run past --timeout counts as
the timeout); with --json, writes them too.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = "import sys, torch; from bdh.cli import main; main(sys.argv[1:])"
POLICIES = [("unset", None), ("PASSIVE", "PASSIVE"), ("ACTIVE", "ACTIVE")]


def _busy() -> None:
    while True:
        pass


def _run(policy: str | None, steps: int, out: Path, timeout: float) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    cmd = [sys.executable, "-c", CHILD, "train", "--preset", "tiny", "--steps", str(steps),
           "--out", str(out), "--force", "--no-progress"]  # fmt: skip
    before = os.times()
    start = time.perf_counter()
    try:
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:  # counted as the limit: the median stays a lower bound
        return {"train_s": timeout, "wall_s": timeout, "cpu_s": float("nan"), "timed_out": 1.0}
    wall = time.perf_counter() - start
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_s = max(r["elapsed_s"] for r in rows if "elapsed_s" in r)
    return {"train_s": train_s, "wall_s": wall, "cpu_s": cpu, "timed_out": 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--competitors", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=300, help="seconds per run")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results: dict[str, dict[str, list[dict[str, float]]]] = {"idle": {}, "loaded": {}}
    loads = {"start": os.getloadavg()}
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in loads['start'])}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for condition in ("idle", "loaded"):
                busy = []
                if condition == "loaded":
                    busy = [multiprocessing.Process(target=_busy, daemon=True)
                            for _ in range(args.competitors)]  # fmt: skip
                    for p in busy:
                        p.start()
                try:
                    # rotate the order so no policy always runs first in a round
                    order = POLICIES[round_ % 3 :] + POLICIES[: round_ % 3]
                    for name, policy in order:
                        r = _run(policy, args.steps, Path(tmp) / "run", args.timeout)
                        results[condition].setdefault(name, []).append(r)
                        print(f"[{round_}] {condition:>6} {name:>7}: train {r['train_s']:6.1f} s, "
                              f"wall {r['wall_s']:6.1f} s, CPU {r['cpu_s']:6.1f} s"
                              + (" (timed out)" if r["timed_out"] else ""), flush=True)  # fmt: skip
                finally:
                    for p in busy:
                        p.terminate()
                        p.join()
    loads["end"] = os.getloadavg()
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in loads['end'])}")
    summary = {}
    for condition, by_policy in results.items():
        for name, runs in by_policy.items():
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            summary[f"{condition}/{name}"] = med
            print(f"median {condition:>6} {name:>7}: train {med['train_s']:6.1f} s, "
                  f"wall {med['wall_s']:6.1f} s, CPU {med['cpu_s']:6.1f} s")  # fmt: skip
    if args.json is not None:
        args.json.write_text(json.dumps(
            {"steps": args.steps, "rounds": args.rounds, "competitors": args.competitors,
             "load_average": loads, "runs": results, "median": summary}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()

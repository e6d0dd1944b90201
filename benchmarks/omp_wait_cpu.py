"""Wall and CPU time of BDH training steps with OpenMP idle threads spinning vs sleeping.

    python benchmarks/omp_wait_cpu.py [--steps 10] [--repeats 2]

Each variant runs in a fresh process (the policy is read when the OpenMP runtime loads):
`tiny` preset, batch 32 x 64 tokens, bf16 autocast, AdamW, torch threads as given. On an
idle machine the variants should be close; on a machine shared with other busy processes
spinning threads burn CPU while they wait and slow everyone down.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

CHILD = r"""
import sys, time, torch
from bdh.config import preset
from bdh.model import BDH
torch.set_num_threads(int(sys.argv[1]))
torch.manual_seed(0)
model = BDH(preset("tiny"))
opt = torch.optim.AdamW(model.parameters(), 1e-3)
x = torch.randint(0, 256, (32, 64))
steps = int(sys.argv[2])
wall, cpu = time.perf_counter(), time.process_time()
for _ in range(steps):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss = model(x, x)
    loss.backward(); opt.step(); opt.zero_grad()
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
print(f"{steps * x.numel() / wall:.0f} tokens/s, wall {wall:.1f} s, CPU {cpu:.1f} s")
"""

VARIANTS = [
    ("2 threads, OMP_WAIT_POLICY unset", 2, None),
    ("2 threads, OMP_WAIT_POLICY=PASSIVE", 2, "PASSIVE"),
    ("1 thread", 1, None),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    for repeat in range(args.repeats):
        for name, threads, policy in VARIANTS:
            env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
            if policy:
                env["OMP_WAIT_POLICY"] = policy
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(threads), str(args.steps)],
                env=env, capture_output=True, text=True, check=True,
            ).stdout.strip()
            print(f"[{repeat}] {name:>36}: {out}", flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

"""Training steps with the CPU buffer cache (bdh.buffers) on against off, in one process.

    python benchmarks/buffer_reuse_ab.py --precision fp32
    python benchmarks/buffer_reuse_ab.py --precision fp32 --beside-official on

Default: two copies of one `small` model and AdamW; each round steps the copy without the
cache, then the copy with it (`bdh bench train`'s step, `_train_side`), so both see the
same machine. Prints the median step times, minor page faults per step and their ratio.

--beside-official on|off: a control for `bdh bench train`: the official step interleaved
with our step with the cache on (or off), to see whether our side's cache changes the
official side's time. Run both, alternating processes, and compare the official medians.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time

import torch

from bdh.buffers import buffer_stats, release_cpu_buffers
from bdh.experiments.bench.reference import official_and_ours
from bdh.experiments.bench.runs import TrainRecipe, _tokens, _train_side

REFERENCE = os.environ.get("BDH_REFERENCE", "../shared/reference/official_bdh.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--beside-official", choices=["on", "off"], default=None)
    parser.add_argument("--reference", default=REFERENCE)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    official, ours = official_and_ours(args.preset, args.reference, "cpu", 0)
    shape = (args.batch_size, args.block_size)
    idx, targets = _tokens(256, shape, 0, "cpu"), _tokens(256, shape, 1, "cpu")

    def side(model: torch.nn.Module, reuse: bool):
        return _train_side(model, TrainRecipe(args.precision, reuse_buffers=reuse), device, idx, targets)

    if args.beside_official is None:
        steps = {"cache off": side(ours, False), "cache on": side(ours, True)}
    else:
        reuse = args.beside_official == "on"
        steps = {"official": side(official, False), f"ours, cache {args.beside_official}": side(ours, reuse)}
    load_start = os.getloadavg()
    for _ in range(2):  # warm-up: first calls, and the cache fills
        for step in steps.values():
            step()
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    faults: dict[str, list[int]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            step()
            seconds[name].append(time.perf_counter() - start)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    tokens = args.batch_size * args.block_size
    result = {
        "settings": vars(args),
        "load_average": [load_start, os.getloadavg()],
        "cache": buffer_stats().__dict__,
        "sides": {
            name: {
                "median_step_s": statistics.median(seconds[name]),
                "tokens_per_s": tokens / statistics.median(seconds[name]),
                "minor_faults_per_step": statistics.median(faults[name]),
                "step_s": seconds[name],
            }
            for name in steps
        },
    }
    if args.beside_official is None:
        result["speedup"] = statistics.median(seconds["cache off"]) / statistics.median(seconds["cache on"])
    release_cpu_buffers()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""RoPE from the C++ kernel against the torch form, in one process.

    python benchmarks/rope_ab.py --precision bf16

Two parts, each in interleaved rounds so both sides see the same machine: the rotation
alone (one layer's x_sparse in `small`, B=8, T=256: [8, 4, 256, 1024], in fp32 and in
bf16), `rotate_pairs_torch` against `rotate_pairs_cpu`, with their outputs compared; then
our training step (`bdh bench train`'s step, with its CPU buffer reuse) at --precision with
the torch form against the kernel.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from unittest import mock

import torch

import bdh.ops.rope as rope
from bdh.config import preset
from bdh.experiments.bench.reference import official_and_ours
from bdh.experiments.bench.runs import TrainRecipe, _tokens, _train_side
from bdh.ops.rope import (
    kernel_available,
    rope_frequencies,
    rope_phasors,
    rotate_pairs_cpu,
    rotate_pairs_torch,
)

REFERENCE = os.environ.get("BDH_REFERENCE", "../shared/reference/official_bdh.py")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _rounds(sides: dict, rounds: int) -> dict[str, list[float]]:
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, run in sides.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=list(DTYPES), default="bf16")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reference", default=REFERENCE)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not kernel_available():
        raise SystemExit("error: the RoPE kernel is not built here")
    load_start = os.getloadavg()

    config = preset("small")
    n, length = config.neurons_per_head, 256
    phasors = rope_phasors(0, length, rope_frequencies(n))
    rotation: dict[str, dict] = {}
    for name, dtype in DTYPES.items():
        x = torch.randn(8, config.n_head, length, n).relu().to(dtype)
        same = torch.equal(rotate_pairs_torch(x, phasors), rotate_pairs_cpu(x, phasors))
        seconds = _rounds(
            {
                "torch": lambda x=x: rotate_pairs_torch(x, phasors),
                "kernel": lambda x=x: rotate_pairs_cpu(x, phasors),
            },
            3 * args.rounds,
        )
        median = {side: statistics.median(v) for side, v in seconds.items()}
        rotation[name] = {
            "median_ms": {side: 1e3 * v for side, v in median.items()},
            "speedup": median["torch"] / median["kernel"],
            "same_output": same,
        }

    device = torch.device("cpu")
    _, ours = official_and_ours("small", args.reference, "cpu", 0)
    idx, targets = _tokens(256, (8, 256), 0, "cpu"), _tokens(256, (8, 256), 1, "cpu")
    recipe = TrainRecipe(args.precision, reuse_buffers=True)
    step_torch, step_kernel = (_train_side(ours, recipe, device, idx, targets) for _ in range(2))

    def torch_form() -> None:
        with mock.patch.object(rope, "kernel_available", lambda: False):
            step_torch()

    sides = {"torch": torch_form, "kernel": step_kernel}
    for _ in range(2):  # warm-up: first calls, the buffer cache fills
        for run in sides.values():
            run()
    step_seconds = _rounds(sides, args.rounds)
    step_median = {side: statistics.median(v) for side, v in step_seconds.items()}
    print(json.dumps({
        "settings": vars(args),
        "load_average": [load_start, os.getloadavg()],
        "rotation_shape": [8, config.n_head, length, n],
        "rotation": rotation,
        "step_median_s": step_median,
        "step_speedup": step_median["torch"] / step_median["kernel"],
        "step_s": step_seconds,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()

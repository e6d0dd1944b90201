"""Dropout masks from the C++ Bernoulli kernel against torch's own loop, in one process.

    python benchmarks/dropout_ab.py --precision bf16

Two parts, each in interleaved rounds so both sides see the same machine: the mask alone
(`bernoulli_(0.9)` on a tensor the size of one layer's x * y in `small`, B=8, T=256:
B x H x T x N = 8.4M elements), torch's `Tensor.bernoulli_` against `bernoulli_cpu_`; then our training
step (`bdh bench train`'s step, with its CPU buffer reuse) with `F.dropout` against the
kernel. Prints the medians and their ratios, and checks that both steps drew the same
numbers (the generator's state after each round is equal).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from unittest import mock

import torch

from bdh.config import preset
from bdh.experiments.bench.reference import official_and_ours
from bdh.experiments.bench.runs import TrainRecipe, _tokens, _train_side
from bdh.ops import dropout as dropout_ops
from bdh.ops.dropout import bernoulli_cpu_, kernel_matches_torch

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
    if not kernel_matches_torch():
        raise SystemExit("error: the Bernoulli kernel is not built here or does not draw torch's numbers")
    load_start = os.getloadavg()

    config = preset("small")
    mask = torch.empty(8 * config.n_head * 256 * config.neurons_per_head, dtype=DTYPES[args.precision])
    mask_seconds = _rounds(
        {"torch": lambda: mask.bernoulli_(0.9), "kernel": lambda: bernoulli_cpu_(mask, 0.9)},
        3 * args.rounds,
    )

    device = torch.device("cpu")
    _, ours = official_and_ours("small", args.reference, "cpu", 0)
    idx, targets = _tokens(256, (8, 256), 0, "cpu"), _tokens(256, (8, 256), 1, "cpu")
    recipe = TrainRecipe(args.precision, reuse_buffers=True)
    step_torch, step_kernel = (_train_side(ours, recipe, device, idx, targets) for _ in range(2))
    states: dict[str, list[torch.Tensor]] = {"F.dropout": [], "kernel": []}

    def seeded(name: str, step, patched: bool):
        def run() -> None:
            torch.manual_seed(len(states[name]))
            if patched:
                with mock.patch.object(dropout_ops, "kernel_matches_torch", lambda: False):
                    step()
            else:
                step()
            states[name].append(torch.get_rng_state())

        return run

    sides = {"F.dropout": seeded("F.dropout", step_torch, True), "kernel": seeded("kernel", step_kernel, False)}
    for _ in range(2):  # warm-up: first calls, the buffer cache fills
        for run in sides.values():
            run()
    step_seconds = _rounds(sides, args.rounds)
    same_draws = all(torch.equal(a, b) for a, b in zip(*states.values(), strict=True))
    median = {k: {n: statistics.median(v) for n, v in s.items()} for k, s in (("mask", mask_seconds), ("step", step_seconds))}
    print(json.dumps({
        "settings": vars(args),
        "load_average": [load_start, os.getloadavg()],
        "mask_numel": mask.numel(),
        "mask_median_ms": {n: 1e3 * v for n, v in median["mask"].items()},
        "mask_speedup": median["mask"]["torch"] / median["mask"]["kernel"],
        "step_median_s": median["step"],
        "step_speedup": median["step"]["F.dropout"] / median["step"]["kernel"],
        "same_draws": same_draws,
        "step_s": step_seconds,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()

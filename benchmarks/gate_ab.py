"""BDH's gate from the C++ kernel against its torch twin, in one process.

    python benchmarks/gate_ab.py --precision bf16

Two parts, each in interleaved rounds so both sides see the same machine: the gate alone,
forward and backward on one layer's tensors in `small` (B=8, T=256: [8, 4, 256, 1024]),
`gate_naive` (followed by the copy into the decoder's layout that the model makes) against
`gate_cpu`, the same draws on both sides; then our training step (`bdh bench train`'s
step, with its CPU buffer reuse) at --precision with the twin against the kernel.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from unittest import mock

import torch

import bdh.ops.gating as gating
from bdh.buffers import reuse_cpu_buffers
from bdh.config import preset
from bdh.experiments.bench.reference import official_and_ours
from bdh.experiments.bench.runs import TrainRecipe, _tokens, _train_side
from bdh.ops.gating import gate_cpu, gate_naive, kernel_available

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


def _gate_pass(gate_fn, x: torch.Tensor, y_pre: torch.Tensor, grad: torch.Tensor):
    def run() -> None:
        a, b = x.detach().requires_grad_(), y_pre.detach().requires_grad_()
        _, _, out = gate_fn(a, b)
        flat = out.transpose(1, 2).reshape(grad.shape)  # the decoder's input
        flat.backward(grad)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=list(DTYPES), default="bf16")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reference", default=REFERENCE)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not kernel_available():
        raise SystemExit("error: the gate kernel is not built here")
    load_start = os.getloadavg()

    config = preset("small")
    shape = (8, config.n_head, 256, config.neurons_per_head)
    gate_alone: dict[str, dict] = {}
    for name, dtype in DTYPES.items():
        x, y_pre = torch.randn(shape).relu().to(dtype), torch.randn(shape).to(dtype)
        grad = torch.randn(8, 256, config.n_neurons).to(dtype)
        sides = {
            "torch": _gate_pass(
                lambda a, b: gate_naive(a, b, config.dropout, True), x, y_pre, grad
            ),
            "kernel": _gate_pass(lambda a, b: gate_cpu(a, b, config.dropout), x, y_pre, grad),
        }
        with reuse_cpu_buffers():
            for run in sides.values():  # warm-up
                run()
            seconds = _rounds(sides, 3 * args.rounds)
        median = {side: statistics.median(v) for side, v in seconds.items()}
        gate_alone[name] = {
            "forward_backward_median_ms": {side: 1e3 * v for side, v in median.items()},
            "speedup": median["torch"] / median["kernel"],
        }

    device = torch.device("cpu")
    _, ours = official_and_ours("small", args.reference, "cpu", 0)
    idx, targets = _tokens(256, (8, 256), 0, "cpu"), _tokens(256, (8, 256), 1, "cpu")
    recipe = TrainRecipe(args.precision, reuse_buffers=True)
    step_twin, step_kernel = (_train_side(ours, recipe, device, idx, targets) for _ in range(2))

    def twin() -> None:
        with mock.patch.object(gating, "kernel_available", lambda: False):
            step_twin()

    sides = {"torch": twin, "kernel": step_kernel}
    for _ in range(2):  # warm-up: first calls, the buffer cache fills
        for run in sides.values():
            run()
    step_seconds = _rounds(sides, args.rounds)
    step_median = {side: statistics.median(v) for side, v in step_seconds.items()}
    print(json.dumps({
        "settings": vars(args),
        "load_average": [load_start, os.getloadavg()],
        "gate_shape": list(shape),
        "gate_alone": gate_alone,
        "step_median_s": step_median,
        "step_speedup": step_median["torch"] / step_median["kernel"],
        "step_s": step_seconds,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()

"""BDH decoding steps with the C++ state read/write against its PyTorch twin.

    python benchmarks/decode_ab.py --preset small --batch-size 1

One model, two copies of a prefilled state; rounds of `--steps` decoding steps alternate
between the kernel (`ops/attention/cpu.py`, size threshold lifted so that it always runs)
and `linear_attention_step_torch`, so both see the same machine. Prints the median step
times, their ratio and how far the two states ended apart.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import bdh.ops.attention as attention
import bdh.ops.attention.cpu as attention_cpu
from bdh.config import preset
from bdh.model import BDH, BDHState


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if attention_cpu._kernel() is None:
        raise SystemExit("error: the C++ decoding kernel could not be built here")
    torch.manual_seed(0)
    model = BDH(preset(args.preset)).eval()
    B = args.batch_size
    _, prefilled = model.prefill(torch.randint(0, 256, (B, 16)), all_logits=False)
    applies = attention.fused_step_applies
    modes = {"kernel": 0, "twin": None}  # the kernel's MIN_STATE_BYTES, or no kernel at all
    states = {name: BDHState(prefilled.kv.clone(), prefilled.position) for name in modes}
    tokens = torch.randint(0, 256, (4096, B))
    done = dict.fromkeys(modes, 0)
    times: dict[str, list[float]] = {name: [] for name in modes}

    def run(name: str, steps: int) -> None:
        if modes[name] is None:
            attention.fused_step_applies = lambda *a: False
        else:
            attention.fused_step_applies = applies
            attention_cpu.MIN_STATE_BYTES = modes[name]
        for _ in range(steps):
            model.step(tokens[done[name] % len(tokens)], states[name])
            done[name] += 1

    for _ in range(args.rounds):
        for name in modes:
            run(name, 10)
            start = time.perf_counter()
            run(name, args.steps)
            times[name].append((time.perf_counter() - start) / args.steps)
    kernel, twin = statistics.median(times["kernel"]), statistics.median(times["twin"])
    a, b = states["kernel"].kv, states["twin"].kv
    state_mib = a[0].numel() * a.element_size() / 2**20
    print(f"{args.preset}, batch {B}, state {state_mib:.2f} MiB per layer call")
    print(f"kernel {kernel * 1e6:.0f} us, twin {twin * 1e6:.0f} us per step: {twin / kernel:.2f}x")
    print(f"states apart by {float((a - b).abs().max() / b.abs().max()):.1e} (relative)")


if __name__ == "__main__":
    main()

"""BDH decoding steps through the C++ kernel against its PyTorch twin, interleaved.

    python benchmarks/decode_ab.py --preset small --batch-size 1

One model, two copies of a prefilled state; rounds of `--steps` decoding steps (token to
logits) alternate between `decode_token_cpu` (ops/decode/decode_cpu.cpp) and
`decode_token_torch`, so both see the same machine. Prints the median step times, their
ratio, how far the two states ended apart, and the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from bdh.config import preset
from bdh.model import BDH, BDHState
from bdh.ops.decode import cpu, decode_token_cpu, decode_token_torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if cpu._kernel() is None:
        raise SystemExit("error: the C++ decoding kernel could not be built here")
    load_start = os.getloadavg()[0]
    torch.manual_seed(0)
    model = BDH(preset(args.preset)).eval()
    B = args.batch_size
    _, prefilled = model.prefill(torch.randint(0, 256, (B, 16)), all_logits=False)
    forms = {"kernel": decode_token_cpu, "twin": decode_token_torch}
    states = {name: BDHState(prefilled.kv.clone(), prefilled.position) for name in forms}
    tokens = torch.randint(0, 256, (4096, B))
    done = dict.fromkeys(forms, 0)
    times: dict[str, list[float]] = {name: [] for name in forms}

    @torch.inference_mode()
    def run(name: str, steps: int) -> None:
        state = states[name]
        for _ in range(steps):
            phasors = model.attn.phasors(state.position, 1)[0]
            forms[name](tokens[done[name] % len(tokens)], state.kv, model.embed.weight, model.encoder,
                        model.encoder_v, model.decoder, model.lm_head, phasors)  # fmt: skip
            state.position += 1
            done[name] += 1

    for _ in range(args.rounds):
        for name in forms:
            run(name, 5)
            start = time.perf_counter()
            run(name, args.steps)
            times[name].append((time.perf_counter() - start) / args.steps)
    kernel, twin = statistics.median(times["kernel"]), statistics.median(times["twin"])
    a, b = states["kernel"].kv, states["twin"].kv
    print(json.dumps({
        "preset": args.preset, "batch_size": B, "threads": args.threads,
        "kernel_us": round(kernel * 1e6), "twin_us": round(twin * 1e6), "twin_over_kernel": round(twin / kernel, 2),
        "states_apart_relative": float((a - b).abs().max() / b.abs().max()),
        "load_average": [round(load_start, 2), round(os.getloadavg()[0], 2)],
    }))  # fmt: skip


if __name__ == "__main__":
    main()

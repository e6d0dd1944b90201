"""BDH decoding steps with one C++ kernel against its PyTorch twin.

    python benchmarks/decode_ab.py --preset small --batch-size 1 [--kernel decoder]

One model, two copies of a prefilled state; rounds of `--steps` decoding steps alternate
between the kernel (thresholds lifted so that it always runs) and its twin, so both see
the same machine. `--kernel attention`: the state read/write (`ops/attention/cpu.py`)
against `linear_attention_step_torch`; `--kernel decoder`: the decoder product over the
active rows (`ops/gated_decoder/cpu.py`) against `torch.bmm`. Prints the median step
times, their ratio and how far the two states ended apart.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import bdh.ops.attention as attention
import bdh.ops.attention.cpu as attention_cpu
import bdh.ops.gated_decoder as gated_decoder
import bdh.ops.gated_decoder.cpu as gated_decoder_cpu
from bdh.config import preset
from bdh.model import BDH, BDHState


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kernel", choices=["attention", "decoder"], default="attention")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.kernel == "attention":
        package, module, applies_name, limits = attention, attention_cpu, "fused_step_applies", {"MIN_STATE_BYTES": 0}
    else:
        package, module, applies_name = gated_decoder, gated_decoder_cpu, "kernel_applies"
        limits = {"MIN_DECODER_BYTES": 0, "MAX_BATCH": 1 << 30}
    if module._kernel() is None:
        raise SystemExit(f"error: the C++ {args.kernel} kernel could not be built here")
    for name, value in limits.items():
        setattr(module, name, value)
    torch.manual_seed(0)
    model = BDH(preset(args.preset)).eval()
    B = args.batch_size
    _, prefilled = model.prefill(torch.randint(0, 256, (B, 16)), all_logits=False)
    applies = getattr(package, applies_name)
    modes = {"kernel": applies, "twin": lambda *a: False}
    states = {name: BDHState(prefilled.kv.clone(), prefilled.position) for name in modes}
    tokens = torch.randint(0, 256, (4096, B))
    done = dict.fromkeys(modes, 0)
    times: dict[str, list[float]] = {name: [] for name in modes}

    def run(name: str, steps: int) -> None:
        setattr(package, applies_name, modes[name])
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
    print(f"{args.kernel} kernel, {args.preset}, batch {B}, state {state_mib:.2f} MiB per layer call")
    print(f"kernel {kernel * 1e6:.0f} us, twin {twin * 1e6:.0f} us per step: {twin / kernel:.2f}x")
    print(f"states apart by {float((a - b).abs().max() / b.abs().max()):.1e} (relative)")


if __name__ == "__main__":
    main()

"""Why batch-1 decoding of `small` is memory-bound: two measurements behind docs/performance.md.

    python benchmarks/decode_bandwidth.py

1. Read bandwidth of the state-read product (a [4, 1, 1024] x [4, 1024, 128] fp32 bmm, one
   layer's state at `small`) while cycling through working sets of 2 to 64 MiB: the speed
   of cache against main memory on this machine.
2. The `small` decoding step in its PyTorch form (`decode_token_torch`, the twin of the
   C++ kernel `BDH.step` runs on CPU) with one product at a time replaced by a
   precomputed tensor of the same shape: the time each product costs inside the step,
   where the per-layer states (12 MiB) and the shared weights (6 MiB) compete for cache.
   Variants run in interleaved rounds; the medians are printed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from bdh.config import preset
from bdh.model import BDH, BDHState
from bdh.ops.attention import shared_qk_step
from bdh.ops.rope import apply_rope_phasors

PRODUCTS = ("state read", "state write", "encoder", "encoder_v", "decoder")


def read_bandwidth(sizes_mib: list[int], reads: int = 400) -> None:
    print("state-read product (bmm [4,1,1024] x [4,1024,128] fp32), by working set:")
    q = torch.randn(4, 1, 1024)
    for size in sizes_mib:
        states = [torch.randn(4, 1024, 128) for _ in range(max(1, size // 2))]
        for i in range(20):
            torch.bmm(q, states[i % len(states)])
        start = time.perf_counter()
        for i in range(reads):
            torch.bmm(q, states[i % len(states)])
        seconds = (time.perf_counter() - start) / reads
        gbs = states[0].numel() * 4 / seconds / 1e9
        print(f"  {size:3d} MiB: {seconds * 1e6:6.1f} us per 2 MiB read, {gbs:5.1f} GB/s")


def step_without(model: BDH, skipped: str) -> Callable[[torch.Tensor, BDHState], torch.Tensor]:
    """`BDH.step` (batch 1) with the product `skipped` replaced by a fixed tensor
    (none for an empty name: then it is `BDH.step`, which a test checks)."""
    c = model.config
    H, N, D = c.n_head, c.neurons_per_head, c.n_embd
    fixed_x = torch.rand(H, 1, N)
    fixed_a = torch.randn(1, H, D)
    fixed_y = torch.randn(1, D)

    @torch.inference_mode()
    def step(tokens: torch.Tensor, state: BDHState) -> torch.Tensor:
        phasors = model.attn.phasors(state.position, 1)[0]
        x = model.ln(model.embed(tokens))
        for kv in state.kv:
            x_sparse = (
                fixed_x if skipped == "encoder" else F.relu(torch.bmm(x.expand(H, 1, D), model.encoder))
            )
            q = apply_rope_phasors(x_sparse, phasors).transpose(0, 1)
            if skipped == "state read":
                a = fixed_a
                kv.addcmul_(q.unsqueeze(-1), x.view(1, 1, 1, D))
            elif skipped == "state write":
                a = torch.bmm(q.reshape(H, 1, N), kv.view(H, N, D)).view(1, H, D)
            else:
                a = shared_qk_step(q, x.view(1, 1, D), kv)
            y_sparse = (
                fixed_x
                if skipped == "encoder_v"
                else F.relu(torch.bmm(model.ln(a).transpose(0, 1), model.encoder_v))
            )
            xy = x_sparse * y_sparse
            y = fixed_y if skipped == "decoder" else torch.bmm(xy, model.decoder.view(H, N, D)).sum(0)
            x = model.ln(x + model.ln(y))
        state.position += 1
        return x @ model.lm_head

    return step


def ablation(rounds: int, steps: int) -> None:
    torch.manual_seed(0)
    model = BDH(preset("small")).eval()
    _, prefilled = model.prefill(torch.randint(0, 256, (1, 16)), all_logits=False)
    variants: dict[str, Callable] = {"full step": lambda t, s: model.step(t, s)}
    variants |= {f"without {p}": step_without(model, p) for p in PRODUCTS}
    states = {k: BDHState(prefilled.kv.clone(), prefilled.position) for k in variants}
    times: dict[str, list[float]] = {k: [] for k in variants}
    token = torch.tensor([3])
    for _ in range(rounds):
        for name, step in variants.items():
            for _ in range(10):
                step(token, states[name])
            start = time.perf_counter()
            for _ in range(steps):
                step(token, states[name])
            times[name].append((time.perf_counter() - start) / steps)
    full = statistics.median(times["full step"])
    print(f"\n`small` decoding step, batch 1, median of {rounds} rounds of {steps} steps:")
    print(f"  full step: {full * 1e6:7.0f} us")
    for product in PRODUCTS:
        without = statistics.median(times[f"without {product}"])
        print(f"  {product:12s} costs {(full - without) * 1e6:6.0f} us per token (step without it: {without * 1e6:.0f} us)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=160)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads")
    read_bandwidth([2, 4, 8, 12, 16, 24, 32, 64])
    ablation(args.rounds, args.steps)


if __name__ == "__main__":
    main()

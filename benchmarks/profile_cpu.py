"""Where the time goes: torch.profiler tables behind the breakdowns in docs/.

    python benchmarks/profile_cpu.py decode   # 50 batch-1 decoding steps of `small`
    python benchmarks/profile_cpu.py neuro    # one compiled training step, seed config, B=512
    python benchmarks/profile_cpu.py train --precision fp32|bf16
                                              # two `small` training steps, B=8 T=256, as
                                              # `bdh bench train` runs ours (buffer reuse)

Prints the operators sorted by self CPU time, and their share of the total.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import profile

from bdh.buffers import reuse_cpu_buffers
from bdh.config import preset
from bdh.data import load_corpus
from bdh.model import BDH
from bdh.neuro import BDHNeuro, BDHNeuroConfig
from bdh.precision import autocast
from bdh.registry import model_presets


def profile_decode(steps: int) -> profile:
    torch.manual_seed(0)
    model = BDH(preset("small")).eval()
    _, state = model.prefill(torch.randint(0, 256, (1, 16)), all_logits=False)
    token = torch.tensor([3])
    for _ in range(20):  # warm-up
        model.step(token, state)
    with profile(record_shapes=True) as prof:
        for _ in range(steps):
            model.step(token, state)
    return prof


def profile_neuro(batch: int, block: int) -> profile:
    corpus, tokenizer = load_corpus(None, tokenizer="char")
    config = BDHNeuroConfig.from_dict(
        {**model_presets("neuro")["seed"], "vocab_size": tokenizer.vocab_size, "bptt": block}
    )
    torch.manual_seed(3)
    model = BDHNeuro(config)
    model.compile()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        x, y = corpus.batch("train", batch, block, gen, "cpu")
        _, loss = model(x, y, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):  # compilation and warm-up
        step()
    with profile(record_shapes=True) as prof:
        step()
    return prof


def profile_train(precision: str, steps: int = 2) -> profile:
    torch.manual_seed(0)
    model = BDH(preset("small")).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    idx = torch.randint(0, 256, (8, 256))
    targets = torch.randint(0, 256, (8, 256))

    def step() -> None:
        with reuse_cpu_buffers(release_on_exit=False), autocast(precision, "cpu"):
            _, loss = model(idx, targets)
        with reuse_cpu_buffers(release_on_exit=False):
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    for _ in range(2):  # first calls, kernel builds, a filled buffer cache
        step()
    with profile(record_shapes=True) as prof:
        for _ in range(steps):
            step()
    return prof


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["decode", "neuro", "train"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50, help="decoding steps (decode)")
    parser.add_argument("--batch", type=int, default=512, help="batch size (neuro)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="(train)")
    parser.add_argument("--rows", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.what == "decode":
        prof = profile_decode(args.steps)
    elif args.what == "neuro":
        prof = profile_neuro(args.batch, 64)
    else:
        prof = profile_train(args.precision)
    group = args.what != "neuro"  # per input shape, to tell the products apart
    events = prof.key_averages(group_by_input_shape=group)
    total = sum(e.self_cpu_time_total for e in events)
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.rows]
    print(f"total self CPU time {total / 1e3:.1f} ms")
    for e in rows:
        shapes = str(e.input_shapes)[:70] if group else ""
        share = 100 * e.self_cpu_time_total / total
        print(f"{share:5.1f}%  {e.count:5d}x  {e.key[:60]:60s} {shapes}")


if __name__ == "__main__":
    main()

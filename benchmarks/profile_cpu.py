"""Where the time goes: torch.profiler tables behind the breakdowns in docs/.

    python benchmarks/profile_cpu.py decode   # 50 batch-1 decoding steps of `small`
    python benchmarks/profile_cpu.py neuro    # one compiled training step, seed config, B=512

Prints the operators sorted by self CPU time, and their share of the total.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import profile

from bdh.config import preset
from bdh.data import load_corpus
from bdh.model import BDH
from bdh.neuro import BDHNeuro, BDHNeuroConfig
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["decode", "neuro"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50, help="decoding steps (decode)")
    parser.add_argument("--batch", type=int, default=512, help="batch size (neuro)")
    parser.add_argument("--rows", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prof = profile_decode(args.steps) if args.what == "decode" else profile_neuro(args.batch, 64)
    group = args.what == "decode"  # decode: per input shape, to tell the products apart
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

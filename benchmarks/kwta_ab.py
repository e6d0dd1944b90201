"""The neuro model's compiled training step with the C++ k-WTA kernel against torch.topk.

    python benchmarks/kwta_ab.py [--rounds 10]

Two models with the same seed, the seed configuration (every extension on), B=512 x 64
tokens, the token cell compiled; steps alternate between them, so both see the same
machine. Prints the first losses of each (they must agree: the masks are equal) and the
median step times.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import bdh.neuro.model as neuro
from bdh.data import load_corpus
from bdh.neuro import BDHNeuro, BDHNeuroConfig
from bdh.ops.kwta import kernel_available, kwta_mask, kwta_mask_naive
from bdh.registry import model_presets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not kernel_available():
        raise SystemExit("error: the C++ k-WTA kernel could not be built here")
    corpus, tokenizer = load_corpus(None, tokenizer="char")
    config = BDHNeuroConfig.from_dict(
        {**model_presets("neuro")["seed"], "vocab_size": tokenizer.vocab_size, "bptt": 64}
    )
    masks = {"kernel": kwta_mask, "torch.topk": kwta_mask_naive}
    runs = {}
    for name in masks:
        torch.manual_seed(3)
        model = BDHNeuro(config)
        model.compile()
        runs[name] = (model, torch.optim.AdamW(model.parameters(), lr=1e-3), torch.Generator().manual_seed(0))

    def step(name: str) -> float:
        neuro.kwta_mask = masks[name]  # the compiled cell guards on it: one graph each
        model, opt, gen = runs[name]
        x, y = corpus.batch("train", 512, 64, gen, "cpu")
        _, loss = model(x, y, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    for name in masks:  # compilation and warm-up
        print(f"{name}: first losses {[round(step(name), 6) for _ in range(2)]}")
    times: dict[str, list[float]] = {name: [] for name in masks}
    for _ in range(args.rounds):
        for name in masks:
            start = time.perf_counter()
            step(name)
            times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        print(f"{name}: median step {statistics.median(values) * 1e3:.0f} ms")
    ratio = statistics.median(times["torch.topk"]) / statistics.median(times["kernel"])
    print(f"kernel speedup: {ratio:.2f}x")
    neuro.kwta_mask = kwta_mask


if __name__ == "__main__":
    main()

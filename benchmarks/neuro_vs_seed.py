"""Training throughput of `bdh.neuro.BDHNeuro` vs the seed's per-token training loop.

The seed (train_bdh_neuro.py) steps `BDHNeuroRefTorch` one token at a time and takes an
optimizer step per token; its core weights are plain tensors, so only the readout head
learns. Here BDHNeuro trains every weight with truncated BPTT on batches of sequences.
Both use the seed's configuration (n=128, d=32, every extension on, char vocabulary of
tiny Shakespeare, AdamW lr 1e-3).

    python benchmarks/neuro_vs_seed.py --reference-dir ../shared/reference --compile

Rounds alternate the two loops (`--seed-tokens` seed tokens, then `--steps` of our
training steps); the speedup is the ratio of the two medians over `--rounds` rounds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from bdh.data import load_corpus
from bdh.neuro import BDHNeuro, BDHNeuroConfig
from bdh.registry import model_presets


def load_seed_module(reference_dir: Path):
    path = reference_dir / "bdh_neuro_torch.py"
    if not path.is_file():
        sys.exit(f"error: no seed reference at {path}")
    spec = importlib.util.spec_from_file_location("seed_bdh_neuro_torch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seed_loop(module, ids: torch.Tensor, vocab: int) -> Callable[[int], float]:
    """The seed's loop verbatim: core.step, head(v), loss, backward, AdamW step per token.

    Returns a function that runs the next `tokens` tokens and returns their tokens/s.
    """
    n = 128
    core = module.BDHNeuroRefTorch(
        n=n, d=32, V=vocab, seed=3, U_kernels=[0.99, 0.97, 0.94], U_weights=[0.5, 0.3, 0.2],
        local_forget_eta=0.02, homeostasis_tau=0.15 * n, k_wta=max(1, n // 8), branches=2,
        branch_nl="softplus", mod_gamma_max=0.8, spike_rate=0.01, ln_before_Dy=True,
        use_relu_lowrank=True, x_decay=0.97,
    )  # fmt: skip
    head = nn.Linear(32, vocab)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    position = 0

    def run(tokens: int) -> float:
        nonlocal position
        start = time.perf_counter()
        for _ in range(tokens):
            t = position % (len(ids) - 1)
            core.step(int(ids[t]))
            logits = head(core.v)
            loss = loss_fn(logits.view(1, -1), ids[t + 1].view(1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            position += 1
        return tokens / (time.perf_counter() - start)

    return run


def neuro_training(
    corpus, vocab: int, batch: int, block: int, compiled: bool
) -> Callable[[int], float]:
    """BDHNeuro on the seed's configuration; returns a function that runs `steps`
    training steps and returns their tokens/s. Two warm-up steps (compilation) first."""
    config = BDHNeuroConfig.from_dict(
        {**model_presets("neuro")["seed"], "vocab_size": vocab, "bptt": block}
    )
    torch.manual_seed(3)
    model = BDHNeuro(config)
    if compiled:
        model.compile()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)

    def run(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            x, y = corpus.batch("train", batch, block, gen, "cpu")
            _, loss = model(x, y, generator=gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return steps * batch * block / (time.perf_counter() - start)

    run(2)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-dir", type=Path, default=Path("../shared/reference"))
    parser.add_argument("--seed-tokens", type=int, default=300, help="seed tokens per round")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1, help="our training steps per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--compile", action="store_true", help="also time BDHNeuro with its cell compiled"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    module = load_seed_module(args.reference_dir)
    corpus, tokenizer = load_corpus(None, tokenizer="char")
    ids = torch.as_tensor(corpus.train[: args.seed_tokens + 1].astype("int64"))
    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for compiled in (False, True) if args.compile else (False,):
            seed = seed_loop(module, ids, tokenizer.vocab_size)
            seed(20)  # warm-up
            ours = neuro_training(
                corpus, tokenizer.vocab_size, args.batch, args.block, compiled
            )
            # Alternate the two so that a slow spell of a shared machine hits both.
            rates = [(seed(args.seed_tokens), ours(args.steps)) for _ in range(args.rounds)]
            seed_rate = statistics.median(r[0] for r in rates)
            ours_rate = statistics.median(r[1] for r in rates)
            row = dict(threads=threads, compiled=compiled, seed_tokens_per_s=round(seed_rate, 1),
                       neuro_tokens_per_s=round(ours_rate, 1),
                       speedup=round(ours_rate / seed_rate, 1),
                       speedup_per_round=[round(o / s_, 1) for s_, o in rates],
                       batch=args.batch, block=args.block)  # fmt: skip
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(
            json.dumps({"torch": torch.__version__, "results": results}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()

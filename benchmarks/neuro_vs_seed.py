"""Training throughput of `bdh.neuro.BDHNeuro` vs the seed's per-token training loop.

The seed (train_bdh_neuro.py) steps `BDHNeuroRefTorch` one token at a time and takes an
optimizer step per token; its core weights are plain tensors, so only the readout head
learns. Here BDHNeuro trains every weight with truncated BPTT on batches of sequences.
Both use the seed's configuration (n=128, d=32, every extension on, char vocabulary of
tiny Shakespeare, AdamW lr 1e-3).

    python benchmarks/neuro_vs_seed.py --reference-dir ../shared/reference --compile

The seed loop is timed once per thread count; ours as the median of `--steps` steps.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from bdh.data import load_corpus
from bdh.models import model_presets
from bdh.neuro import BDHNeuro, BDHNeuroConfig


def load_seed_module(reference_dir: Path):
    path = reference_dir / "bdh_neuro_torch.py"
    if not path.is_file():
        sys.exit(f"error: no seed reference at {path}")
    spec = importlib.util.spec_from_file_location("seed_bdh_neuro_torch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seed_loop_tokens_per_s(module, ids: torch.Tensor, vocab: int, tokens: int) -> float:
    """The seed's loop verbatim: core.step, head(v), loss, backward, AdamW step per token."""
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
    start = time.perf_counter()
    for t in range(tokens):
        core.step(int(ids[t]))
        logits = head(core.v)
        loss = loss_fn(logits.view(1, -1), ids[t + 1].view(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return tokens / (time.perf_counter() - start)


def neuro_tokens_per_s(
    corpus, vocab: int, batch: int, block: int, steps: int, compiled: bool
) -> float:
    """Median over `steps` training steps, after two warm-up steps (compilation)."""
    config = BDHNeuroConfig.from_dict(
        {**model_presets("neuro")["seed"], "vocab_size": vocab, "bptt": block}
    )
    torch.manual_seed(3)
    model = BDHNeuro(config)
    if compiled:
        model.compile()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps + 2):
        start = time.perf_counter()
        x, y = corpus.batch("train", batch, block, gen, "cpu")
        _, loss = model(x, y, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return batch * block / statistics.median(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-dir", type=Path, default=Path("../shared/reference"))
    parser.add_argument("--seed-tokens", type=int, default=300)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
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
        seed = seed_loop_tokens_per_s(module, ids, tokenizer.vocab_size, args.seed_tokens)
        for compiled in (False, True) if args.compile else (False,):
            ours = neuro_tokens_per_s(
                corpus, tokenizer.vocab_size, args.batch, args.block, args.steps, compiled
            )
            row = dict(threads=threads, compiled=compiled, seed_tokens_per_s=round(seed, 1),
                       neuro_tokens_per_s=round(ours, 1), speedup=round(ours / seed, 1),
                       batch=args.batch, block=args.block)  # fmt: skip
            results.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(
            json.dumps({"torch": torch.__version__, "results": results}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()

"""How much a 1 ms RSS-sampling thread slows what it measures (why `bdh bench` reads the
kernel's peak-RSS counter instead).

    python benchmarks/sampler_overhead.py [--rounds 8]

Times our `small` decoding (256 new tokens, batch 1) and the official `generate()` (24
new tokens after a 256-token prompt, same weights) with and without the sampling thread
that the benchmarks used before, in interleaved rounds, and prints the medians.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from bdh.experiments.bench import measure as measure_module
from bdh.experiments.bench.reference import official_and_ours


def tokens_per_s(run: Callable[[], object], tokens: int, sampled: bool) -> float:
    start = time.perf_counter()
    if sampled:
        sampler = measure_module._RSSSampler(0.001)
        sampler.start()
        run()
        sampler.stop()
    else:
        run()
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default="../shared/reference/official_bdh.py")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ref, ours = official_and_ours("small", args.reference)
    ref.eval(), ours.eval()
    short = torch.randint(0, 256, (1, 16))
    long = torch.randint(0, 256, (1, 256))
    cases = {
        "ours, 256 tokens": (lambda: ours.generate(short, 256), 256),
        "official, 24 tokens": (lambda: ref.generate(long, 24), 24),
    }
    for run, _ in cases.values():  # warm-up
        run()
    for name, (run, tokens) in cases.items():
        results: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds if name.startswith("ours") else max(2, args.rounds // 2)):
            for sampled in (False, True):
                results[sampled].append(tokens_per_s(run, tokens, sampled))
        plain, sampled = statistics.median(results[False]), statistics.median(results[True])
        print(f"{name}: {plain:.1f} tokens/s plain, {sampled:.1f} with the sampler ({plain / sampled:.2f}x)")


if __name__ == "__main__":
    main()

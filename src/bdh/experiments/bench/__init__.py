"""Side-by-side benchmarks of the official BDH code and this package.

Each benchmark loads the official `bdh.py` from a path the caller gives, builds both models on identical weights in one process,
checks that their logits agree, then times them back to back.
"""

from bdh.experiments.bench.reference import BenchError, load_official, official_and_ours
from bdh.experiments.bench.runs import bench_generate, bench_memory, bench_prefill, bench_train

__all__ = [
    "BenchError",
    "bench_generate",
    "bench_memory",
    "bench_prefill",
    "bench_train",
    "load_official",
    "official_and_ours",
]

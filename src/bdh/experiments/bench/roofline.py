"""The machine's limits, measured: matrix-product peak (fp32, bf16) and streaming bandwidth.

- Peak GFLOP/s: one large square product C = A B (n x n, `torch.matmul` into a
  preallocated C), 2 n^3 FLOPs, the fastest of `repeats` runs after one untimed run.
- Bandwidth GB/s: a copy (dst = src: read and write, 2 x the buffer's bytes) and an add
  (c = a + b: 3 x), buffers far larger than the caches, the fastest of `repeats` runs; the
  larger of the two is the limit. Write-allocate traffic (a line read before it is
  written) is not counted, as in the STREAM benchmark.

Fastest, not median: on a shared machine a limit is what the cores reach when they get the
chance. Each benchmark row states its achieved rate as a share of these.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from bdh.experiments.bench.measure import synchronize


@dataclass
class Roofline:
    device: str
    threads: int
    fp32_gflops: float
    bf16_gflops: float
    copy_gbps: float
    add_gbps: float
    matmul_size: int
    stream_mib: int

    @property
    def bandwidth_gbps(self) -> float:
        return max(self.copy_gbps, self.add_gbps)

    def peak_gflops(self, precision: str) -> float:
        """The product peak a path running in `precision` (fp32, bf16, fp16) can reach."""
        return self.fp32_gflops if precision == "fp32" else self.bf16_gflops

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bandwidth_gbps": self.bandwidth_gbps}


def _fastest(fn: Callable[[], object], device: str, repeats: int) -> float:
    fn()
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def matmul_gflops(n: int, dtype: torch.dtype, device: str = "cpu", repeats: int = 5) -> float:
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    return 2 * n**3 / _fastest(lambda: torch.matmul(a, b, out=c), device, repeats) / 1e9


def stream_gbps(mib: int, device: str = "cpu", repeats: int = 5) -> tuple[float, float]:
    """(copy, add) GB/s over fp32 buffers of `mib` MiB each."""
    n = mib * 2**20 // 4
    a = torch.ones(n, device=device)
    b = torch.ones(n, device=device)
    c = torch.zeros(n, device=device)  # touched: no page faults while timed
    size = n * 4
    copy = 2 * size / _fastest(lambda: c.copy_(a), device, repeats) / 1e9
    add = 3 * size / _fastest(lambda: torch.add(a, b, out=c), device, repeats) / 1e9
    return copy, add


def measure_roofline(
    device: str = "cpu", matmul_size: int | None = None, stream_mib: int | None = None, repeats: int = 5
) -> Roofline:
    """Measure the limits on `device` with torch's current thread count (a few seconds)."""
    cuda = torch.device(device).type == "cuda"
    n = matmul_size or (8192 if cuda else 2048)
    mib = stream_mib or (1024 if cuda else 256)
    copy, add = stream_gbps(mib, device, repeats)
    return Roofline(
        device=device,
        threads=torch.get_num_threads(),
        fp32_gflops=matmul_gflops(n, torch.float32, device, repeats),
        bf16_gflops=matmul_gflops(n, torch.bfloat16, device, repeats),
        copy_gbps=copy,
        add_gbps=add,
        matmul_size=n,
        stream_mib=mib,
    )

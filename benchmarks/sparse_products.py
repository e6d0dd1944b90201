"""Would x's sparsity pay in the training products? Dense against CSR, in one process.

    python benchmarks/sparse_products.py > benchmarks/results/sparse_products.json

The products of one `small` layer (B=8, T=256, fp32) whose operand is sparse: the decoder
product xy @ decoder and its weight gradient xy^T @ g ([2048, 4096] x [4096, 128]), and the
encoder's weight gradient x^T @ g_x per head ([256, 1024] blocks, K = T). Each at the
densities of an untrained `small` (measured here: x and x * y of one forward) and of the
trained `tiny` in docs/experiments/sparsity_repetition (x 27%, x * y 9.7%), and lower ones:
`torch.mm` on the dense operand against the same product from a CSR tensor, with the time
to build the CSR tensor from the dense one (what a training step would have to pay each
time, since x changes with every batch) reported beside it. Interleaved rounds, medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings

import torch

from bdh.config import preset
from bdh.model import BDH

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


def _medians(sides: dict, rounds: int) -> dict[str, float]:
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, run in sides.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return {name: 1e3 * statistics.median(v) for name, v in seconds.items()}


def _sparse_like(
    shape: tuple[int, ...], density: float, generator: torch.Generator
) -> torch.Tensor:
    values = torch.rand(shape, generator=generator)
    return torch.where(torch.rand(shape, generator=generator) < density, values, 0.0)


def _untrained_densities() -> dict[str, float]:
    torch.manual_seed(0)
    model = BDH(preset("small")).eval()
    seen: dict[str, torch.Tensor] = {}
    model.probe_x.register_forward_hook(lambda m, i, o: seen.setdefault("x", o))
    model.probe_xy.register_forward_hook(lambda m, i, o: seen.setdefault("xy", o))
    with torch.no_grad():
        model(torch.randint(0, 256, (8, 256), generator=torch.Generator().manual_seed(1)))
    return {name: (t != 0).float().mean().item() for name, t in seen.items()}


def _measure(
    density: float,
    decoder: torch.Tensor,
    g_out: torch.Tensor,
    generator: torch.Generator,
    rounds: int,
) -> dict[str, float]:
    """Median milliseconds of each product, dense and from CSR, at `density`."""
    (n, d), rows, neurons_per_head = (
        decoder.shape,
        g_out.shape[0],
        decoder.shape[0] // preset("small").n_head,
    )
    xy = _sparse_like((rows, n), density, generator)
    xy_t = xy.t().contiguous()  # the gradient's left operand, [n, rows]
    csr, csr_t = xy.to_sparse_csr(), xy_t.to_sparse_csr()
    # Encoder gradient of one head and sequence: x^T [d, T] @ g_x [T, N/H]; here the
    # sparse operand is g_x, masked where x is zero.
    g_x = _sparse_like((256, neurons_per_head), density, generator)
    x_t = torch.randn(d, 256)
    g_x_t = g_x.t().contiguous()
    csr_gx_t = g_x_t.to_sparse_csr()
    return _medians({
        "decoder forward dense": lambda: xy @ decoder,
        "decoder forward csr": lambda: csr @ decoder,
        "decoder grad dense": lambda: xy_t @ g_out,
        "decoder grad csr": lambda: csr_t @ g_out,
        "build csr [2048, 4096]": lambda: xy.to_sparse_csr(),
        "encoder grad dense": lambda: x_t @ g_x,
        "encoder grad csr": lambda: (csr_gx_t @ x_t.t()).t(),
        "build csr [1024, 256]": lambda: g_x_t.to_sparse_csr(),
    }, rounds)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    untrained = _untrained_densities()
    config = preset("small")
    rows, d, n = 8 * 256, config.n_embd, config.n_neurons
    generator = torch.Generator().manual_seed(0)
    decoder, g_out = torch.randn(n, d), torch.randn(rows, d)
    results = []
    for source, density in (
        ("x * y of an untrained small", untrained["xy"]),
        ("x * y of the trained tiny", 0.097),
        ("x of an untrained small", untrained["x"]),
        ("x of the trained tiny", 0.27),
        ("lower", 0.05),
        ("lower", 0.02),
    ):
        times = _measure(density, decoder, g_out, generator, args.rounds)
        results.append({"density_of": source, "density": density, "median_ms": times})
    print(json.dumps({
        "settings": vars(args),
        "load_average": [load_start, os.getloadavg()],
        "untrained_small_density": untrained,
        "results": results,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()

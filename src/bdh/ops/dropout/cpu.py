"""The C++ Bernoulli kernel (bernoulli_cpu.cpp): torch's CPU draws, in vectorized loops."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from bdh.ops.cpp import load_kernel

NAME = "bdh_bernoulli_cpu"
DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def _kernel() -> ModuleType | None:
    return load_kernel(NAME, Path(__file__).with_name("bernoulli_cpu.cpp"))


def bernoulli_cpu_(x: Tensor, p: float) -> Tensor:
    """`x.bernoulli_(p)` for a contiguous CPU tensor x of a float dtype, drawing from
    torch's default CPU generator exactly the numbers torch draws."""
    return _kernel().bernoulli_(x, p)


@cache
def kernel_matches_torch() -> bool:
    """Whether the kernel is built and draws what this torch draws: checked once per
    process against `Tensor.bernoulli_` (an odd count spanning several refills of the
    generator's state, from the middle of it), the generator's state restored after."""
    if _kernel() is None:
        return False
    saved = torch.get_rng_state()
    try:
        torch.rand(7)
        start = torch.get_rng_state()
        expected = torch.empty(1501).bernoulli_(0.3)
        after_torch = torch.get_rng_state()
        torch.set_rng_state(start)
        drawn = bernoulli_cpu_(torch.empty(1501), 0.3)
        return torch.equal(drawn, expected) and torch.equal(torch.get_rng_state(), after_torch)
    finally:
        torch.set_rng_state(saved)

"""The C++ RoPE kernel (rope_cpu.cpp): the complex product in one pass over x."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from bdh.ops.cpp import load_kernel

NAME = "bdh_rope_cpu"
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _kernel() -> ModuleType | None:
    # Products rounded before they are summed, as torch's complex product rounds them.
    return load_kernel(NAME, Path(__file__).with_name("rope_cpu.cpp"), ("-ffp-contract=off",))


def kernel_available() -> bool:
    return _kernel() is not None


def rotate_pairs_cpu(x: Tensor, phasors: Tensor, conjugate: bool = False) -> Tensor:
    """`rotate_pairs_torch(x, phasors)` (or by the conjugate phasors) for a CPU x [..., T, n]
    of a type in DTYPES and complex64 phasors [T, n/2]."""
    table = torch.view_as_real(phasors.resolve_conj()).contiguous()
    return _kernel().rotate(x.contiguous(), table, conjugate)

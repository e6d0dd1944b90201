"""The C++ k-WTA kernel (kwta_cpu.cpp), registered as the op `bdh::kwta_mask`."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from bdh.ops.cpp import load_kernel

NAME = "bdh_kwta_cpu"


def _kernel() -> ModuleType | None:
    return load_kernel(NAME, Path(__file__).with_name("kwta_cpu.cpp"))


def kernel_available() -> bool:
    """Whether the kernel is built (building it on the first call, outside compiled code:
    `BDHNeuro.compile` calls this before compiling, so traced code only reads the result)."""
    return _kernel() is not None


@torch.library.custom_op("bdh::kwta_mask", mutates_args=())
def kwta_mask_cpu(z: Tensor, ks: Tensor, k: int, k_max: int) -> Tensor:
    """`kwta_mask_naive(z, k or ks, k_max)` for float z [R, n] on CPU (ks: one integer count
    per row, or empty to use k for every row; k_max: a bound on ks, or -1 for none)."""
    return _kernel().kwta_mask(z, ks, k, k_max)


@kwta_mask_cpu.register_fake
def _(z: Tensor, ks: Tensor, k: int, k_max: int) -> Tensor:
    return z.new_empty(z.shape, dtype=torch.bool)  # contiguous, as the kernel returns

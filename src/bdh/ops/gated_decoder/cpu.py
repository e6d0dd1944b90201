"""The C++ decoder product (gated_decoder_cpu.cpp): only the rows with x * y != 0."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from bdh.ops.cpp import load_kernel

NAME = "bdh_gated_decoder_cpu"
# Below this decoder size the matrix stays in cache and the twin's BLAS product is faster;
# above this batch nearly every row is used by some sequence (benchmarks/decode_ab.py).
MIN_DECODER_BYTES = 1 << 20
MAX_BATCH = 4


def _kernel() -> ModuleType | None:
    return load_kernel(NAME, Path(__file__).with_name("gated_decoder_cpu.cpp"))


def kernel_applies(x: Tensor, y: Tensor, decoder: Tensor) -> bool:
    """Whether `gated_decoder_cpu` can take this product: fp32/fp64 CPU tensors of one
    dtype and matching shapes, a decoder of at least MIN_DECODER_BYTES, a batch of at most
    MAX_BATCH, no autograd, the kernel built."""
    if x.dim() != 3 or decoder.dim() != 3:
        return False
    H, B, N = x.shape
    tensors = (x, y, decoder)
    return (
        y.shape == x.shape
        and decoder.shape[:2] == (H, N)
        and B <= MAX_BATCH
        and decoder.numel() * decoder.element_size() >= MIN_DECODER_BYTES
        and decoder.device.type == "cpu"
        and decoder.dtype in (torch.float32, torch.float64)
        and all(t.dtype == decoder.dtype and t.device.type == "cpu" for t in tensors)
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
        and _kernel() is not None
    )


def gated_decoder_cpu(x: Tensor, y: Tensor, decoder: Tensor) -> Tensor:
    """(x * y) @ decoder per head, x, y [H, B, N], decoder [H, N, D] -> [H, B, D], reading
    the decoder rows where some sequence has x * y != 0."""
    return _kernel().gated_decoder(x.contiguous(), y.contiguous(), decoder.contiguous())

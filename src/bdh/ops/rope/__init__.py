"""Rotary position phases exactly as the official BDH computes them.

Neighbouring coordinates (2i, 2i+1) share one frequency and are rotated as a pair.
Phases are taken modulo one turn *before* the multiplication by 2*pi, in the
frequencies' dtype, which keeps fp32 results identical to the official code.

Forms of the rotation:
- `naive.apply_rope(x, cos, sin)`: the official formula on real [T, n] tables (the reference).
- `apply_rope_phasors(x, phasors)`: each pair as one complex number times a unit phasor
  [T, n/2]; one elementwise pass instead of five, and a backward that saves no activation
  (the rotation is orthogonal: its gradient is the rotation by the conjugate phasor).
  Computed by `naive.rotate_pairs_torch`, or for bf16/fp16 on CPU by the C++ kernel
  `cpu.rotate_pairs_cpu` (the torch form converts x to fp32 and back: three passes where
  the kernel makes one). Both give the same numbers (tests/ops/test_rope.py); for fp32 the
  kernel is not faster than torch (docs/performance.md), so torch computes it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bdh.ops.rope.cpu import kernel_available, rotate_pairs_cpu
from bdh.ops.rope.naive import HALF_DTYPES, apply_rope, rotate_pairs_torch

DEFAULT_THETA = 2.0**16


def rope_frequencies(
    n: int, theta: float = DEFAULT_THETA, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Frequencies in turns per position, shape [n]; pairs share a frequency."""
    pair_index = (torch.arange(0, n, 1, dtype=dtype) / 2).floor() * 2
    return 1.0 / (theta ** (pair_index / n)) / (2 * math.pi)


def rope_cos_sin(start: int, length: int, freqs: Tensor) -> tuple[Tensor, Tensor]:
    """cos and sin of the phases of positions start..start+length-1, each [length, n]."""
    positions = torch.arange(start, start + length, device=freqs.device, dtype=freqs.dtype)
    phases = positions.view(-1, 1) * freqs.view(1, -1)
    phases = (phases % 1) * (2 * math.pi)
    return torch.cos(phases), torch.sin(phases)


def rope_phasors(start: int, length: int, freqs: Tensor) -> Tensor:
    """Unit phasors cos + i sin of positions start..start+length-1, complex [length, n/2].

    The phases are computed exactly as in `rope_cos_sin`, so rotating by them equals
    `apply_rope`. Half-precision frequencies are taken in fp32 (there is no complex bf16,
    and half-precision positions would lose whole turns); half-precision x is rotated in
    fp32 too.
    """
    if freqs.dtype in HALF_DTYPES:
        freqs = freqs.float()
    cos, sin = rope_cos_sin(start, length, freqs)
    return torch.complex(cos[:, ::2].contiguous(), sin[:, ::2].contiguous())


def _rotate(x: Tensor, phasors: Tensor, conjugate: bool = False) -> Tensor:
    if (
        x.dtype in HALF_DTYPES
        and x.device.type == "cpu"
        and phasors.dtype == torch.complex64
        and phasors.shape == (x.shape[-2], x.shape[-1] // 2)
        and not torch.compiler.is_compiling()
        and kernel_available()
    ):
        return rotate_pairs_cpu(x, phasors, conjugate)
    return rotate_pairs_torch(x, phasors.conj() if conjugate else phasors)


class _RotatePairs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, phasors: Tensor) -> Tensor:
        ctx.save_for_backward(phasors)
        return _rotate(x, phasors)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (phasors,) = ctx.saved_tensors
        return _rotate(grad, phasors, conjugate=True), None


def apply_rope_phasors(x: Tensor, phasors: Tensor) -> Tensor:
    """`apply_rope` computed as a complex product: x [..., T, n], phasors complex [T, n/2].

    (x[2i] + i x[2i+1]) * (cos + i sin) gives exactly the official pair
    (x[2i] cos - x[2i+1] sin, x[2i+1] cos + x[2i] sin). Not differentiable in `phasors`.
    """
    if x.requires_grad and torch.is_grad_enabled():
        return _RotatePairs.apply(x, phasors)
    return _rotate(x, phasors)


__all__ = [
    "DEFAULT_THETA",
    "HALF_DTYPES",
    "apply_rope",
    "apply_rope_phasors",
    "kernel_available",
    "rope_cos_sin",
    "rope_frequencies",
    "rope_phasors",
    "rotate_pairs_cpu",
    "rotate_pairs_torch",
]

"""Rotary position phases exactly as the official BDH computes them.

Neighbouring coordinates (2i, 2i+1) share one frequency and are rotated as a pair.
Phases are taken modulo one turn *before* the multiplication by 2*pi, in the
frequencies' dtype, which keeps fp32 results identical to the official code.

Two equal forms of the rotation:
- `apply_rope(x, cos, sin)`: the official formula on real [T, n] tables (the reference).
- `apply_rope_phasors(x, phasors)`: each pair as one complex number times a unit phasor
  [T, n/2]; one elementwise pass instead of five, and a backward that saves no activation
  (the rotation is orthogonal: its gradient is the rotation by the conjugate phasor).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DEFAULT_THETA = 2.0**16
HALF_DTYPES = (torch.bfloat16, torch.float16)


def rope_frequencies(n: int, theta: float = DEFAULT_THETA, dtype: torch.dtype = torch.float32) -> Tensor:
    """Frequencies in turns per position, shape [n]; pairs share a frequency."""
    pair_index = (torch.arange(0, n, 1, dtype=dtype) / 2).floor() * 2
    return 1.0 / (theta ** (pair_index / n)) / (2 * math.pi)


def rope_cos_sin(start: int, length: int, freqs: Tensor) -> tuple[Tensor, Tensor]:
    """cos and sin of the phases of positions start..start+length-1, each [length, n]."""
    positions = torch.arange(start, start + length, device=freqs.device, dtype=freqs.dtype)
    phases = positions.view(-1, 1) * freqs.view(1, -1)
    phases = (phases % 1) * (2 * math.pi)
    return torch.cos(phases), torch.sin(phases)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of x [..., T, n] by the phases in cos/sin [T, n]."""
    x_rot = torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).view(*x.size())
    return (x * cos).to(x.dtype) + (x_rot * sin).to(x.dtype)


def rope_phasors(start: int, length: int, freqs: Tensor) -> Tensor:
    """Unit phasors cos + i sin of positions start..start+length-1, complex [length, n/2].

    The phases are computed exactly as in `rope_cos_sin`, so rotating by them equals
    `apply_rope`. Half-precision frequencies are taken in fp32 (there is no complex bf16,
    and half-precision positions would lose whole turns); `_rotate` rotates in fp32 too.
    """
    if freqs.dtype in HALF_DTYPES:
        freqs = freqs.float()
    cos, sin = rope_cos_sin(start, length, freqs)
    return torch.complex(cos[:, ::2].contiguous(), sin[:, ::2].contiguous())


def _rotate(x: Tensor, phasors: Tensor) -> Tensor:
    if x.dtype in HALF_DTYPES:
        # No complex bf16 on CPU; like the official code, rotate in fp32 and cast back.
        return _rotate(x.float(), phasors.to(torch.complex64)).to(x.dtype)
    pairs = torch.view_as_complex(x.contiguous().view(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * phasors.to(pairs.dtype)).view(x.shape)


class _RotatePairs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, phasors: Tensor) -> Tensor:
        ctx.save_for_backward(phasors)
        return _rotate(x, phasors)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (phasors,) = ctx.saved_tensors
        return _rotate(grad, phasors.conj()), None


def apply_rope_phasors(x: Tensor, phasors: Tensor) -> Tensor:
    """`apply_rope` computed as a complex product: x [..., T, n], phasors complex [T, n/2].

    (x[2i] + i x[2i+1]) * (cos + i sin) gives exactly the official pair
    (x[2i] cos - x[2i+1] sin, x[2i+1] cos + x[2i] sin). Not differentiable in `phasors`.
    """
    if x.requires_grad and torch.is_grad_enabled():
        return _RotatePairs.apply(x, phasors)
    return _rotate(x, phasors)

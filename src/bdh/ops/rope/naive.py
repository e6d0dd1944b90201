"""RoPE in plain PyTorch: the official formula, and the complex product (the twin of the
C++ kernel in `cpu`)."""

from __future__ import annotations

import torch
from torch import Tensor

HALF_DTYPES = (torch.bfloat16, torch.float16)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of x [..., T, n] by the phases in cos/sin [T, n]."""
    x_rot = torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).view(*x.size())
    return (x * cos).to(x.dtype) + (x_rot * sin).to(x.dtype)


def rotate_pairs_torch(x: Tensor, phasors: Tensor) -> Tensor:
    """Pairs of x [..., T, n] as complex numbers times phasors, complex [T, n/2]."""
    if x.dtype in HALF_DTYPES:
        # No complex bf16 on CPU; like the official code, rotate in fp32 and cast back.
        return rotate_pairs_torch(x.float(), phasors.to(torch.complex64)).to(x.dtype)
    pairs = torch.view_as_complex(x.contiguous().view(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * phasors.to(pairs.dtype)).view(x.shape)

"""Rotary position phases exactly as the official BDH computes them.

Neighbouring coordinates (2i, 2i+1) share one frequency and are rotated as a pair.
Phases are taken modulo one turn *before* the multiplication by 2*pi, in the
frequencies' dtype, which keeps fp32 results identical to the official code.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DEFAULT_THETA = 2.0**16


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

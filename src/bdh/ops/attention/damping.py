"""Decay factors of a damped state, rho_t = U rho_{t-1} + k_t^T v_t, as the forms need them.

`decay` is a tensor [H] (one factor per head, or [1] for all heads) of values in (0, 1],
fixed (no gradient flows to it). With it every form computes
o_t = U^t q_t S_0 + sum_{s<t} U^{t-1-s} (q_t . k_s) v_s and S_T = U^T S_0 + sum_s U^{T-1-s} k_s^T v_s.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _base(decay: Tensor) -> Tensor:
    """The factors in at least fp32: powers are taken there and only then cast, since a
    factor such as 1 - 2^-16 rounds to 1 in bf16."""
    return decay if decay.dtype == torch.float64 else decay.float()


def decay_matrix(decay: Tensor, length: int, dtype: torch.dtype) -> Tensor:
    """[H, T, T] weights U^(t-1-s) for s < t; the entries on and above the diagonal are
    left at 1 (every caller masks them with tril(-1) anyway)."""
    pos = torch.arange(length, device=decay.device)
    base = _base(decay)
    exponents = (pos[:, None] - 1 - pos[None, :]).clamp_min(0).to(base.dtype)
    return (base.view(-1, 1, 1) ** exponents).to(dtype)


def decay_powers(decay: Tensor, exponents: Tensor, dtype: torch.dtype) -> Tensor:
    """[H, len(exponents), 1]: U^e for each exponent, shaped to scale [B, H, T, *] rows."""
    base = _base(decay)
    return (base.view(-1, 1) ** exponents.to(base.dtype)).to(dtype).unsqueeze(-1)


def read_powers(decay: Tensor, length: int, dtype: torch.dtype) -> Tensor:
    """U^t for t = 0..T-1: how much of the initial state token t still reads."""
    return decay_powers(decay, torch.arange(length, device=decay.device), dtype)


def write_powers(decay: Tensor, length: int, dtype: torch.dtype) -> Tensor:
    """U^(T-1-s) for s = 0..T-1: how much of token s's write survives to the final state."""
    return decay_powers(decay, torch.arange(length - 1, -1, -1, device=decay.device), dtype)


def total_decay(decay: Tensor, length: int, dtype: torch.dtype) -> Tensor:
    """U^T shaped [H, 1, 1], the factor on a state carried across T tokens."""
    return (_base(decay) ** length).to(dtype).view(-1, 1, 1)


def damp_reads(read: Tensor, decay: Tensor | None) -> Tensor:
    """The initial-state reads q_t S_0 [B, H, T, D] as token t sees them: U^t q_t S_0."""
    return read if decay is None else read * read_powers(decay, read.shape[-2], read.dtype)


def damp_writes(keys: Tensor, decay: Tensor | None) -> Tensor:
    """Keys [B, H, T, N] weighted by what of their writes reaches the final state."""
    return keys if decay is None else keys * write_powers(decay, keys.shape[-2], keys.dtype)


def carry(state: Tensor, decay: Tensor | None, length: int, dtype: torch.dtype) -> Tensor:
    """U^T S: a state carried across `length` tokens, the factors taken in `dtype`."""
    return state if decay is None else state * total_decay(decay, length, dtype)

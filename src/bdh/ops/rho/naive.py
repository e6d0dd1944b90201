"""The neuro model's reads and writes of rho in ordinary differentiable torch ops: the
twins of the hand-written autograd functions in `fused.py`."""

from __future__ import annotations

import torch
from torch import Tensor


def rho_read_naive(rho: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """a = rho x for rho [B, d, n], x [B, n] -> (a [B, d], rho), in rho's dtype."""
    with torch.autocast(rho.device.type, enabled=False):
        return torch.bmm(rho, x.to(rho.dtype).unsqueeze(2)).squeeze(2), rho


def rho_write_naive(rho: Tensor, v: Tensor, x: Tensor, keep: Tensor | float) -> Tensor:
    """rho' = keep * rho + v x^T for rho [B, d, n], v [B, d], x [B, n]; keep a float or a
    constant [B, 1, n] column factor; in rho's dtype."""
    with torch.autocast(rho.device.type, enabled=False):
        return keep * rho + v.to(rho.dtype).unsqueeze(2) * x.to(rho.dtype).unsqueeze(1)

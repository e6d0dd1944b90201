"""The neuro model's synaptic state rho [B, d, n]: read (a = rho x) and Hebbian write.

- `naive`: ordinary differentiable torch ops, the reference.
- `fused`: hand-written gradients; the read hands rho on to the write, so that both
  gradients reaching rho meet in one pass.

`rho_read` and `rho_write` are the entry points; they equal their twins in value,
gradient and dtype (tests/ops/test_rho.py).
"""

from __future__ import annotations

from torch import Tensor

from bdh.ops.rho.fused import RhoRead, RhoWrite
from bdh.ops.rho.naive import rho_read_naive, rho_write_naive


def rho_read(rho: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """a = rho x for rho [B, d, n], x [B, n] -> (a [B, d], rho), computed in rho's dtype.

    Pass the returned rho (not the argument) to the token's `rho_write`.
    """
    return RhoRead.apply(rho, x)


def rho_write(rho: Tensor, v: Tensor, x: Tensor, keep: Tensor | float) -> Tensor:
    """rho' = keep * rho + v x^T for rho [B, d, n], v [B, d], x [B, n] -> [B, d, n].

    keep: a float, or a constant [B, 1, n] column factor (no gradient).
    """
    return RhoWrite.apply(rho, v, x, keep)


__all__ = ["rho_read", "rho_read_naive", "rho_write", "rho_write_naive"]

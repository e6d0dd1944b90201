"""Reads and writes of rho with hand-written gradients (the neuro model's training path).

The read passes rho through so that the write of the same token consumes it from there:
the two gradients reaching rho then meet in one fused addcmul instead of an outer product
plus autograd's separate accumulation, two fewer passes over rho-sized tensors per
token. Batched matrix-vector products use the orientation that is fast on CPU. Both
compute in rho's dtype, also under autocast (the state accumulates over the whole
sequence), and return gradients in the inputs' dtypes. Twins: `naive.py`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class RhoRead(torch.autograd.Function):
    """a = rho x for rho [B, d, n], x [B, n] -> (a [B, d], rho unchanged)."""

    @staticmethod
    def forward(ctx: Any, rho: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        ctx.x_dtype = x.dtype
        x = x.to(rho.dtype)
        ctx.save_for_backward(rho, x)
        with torch.autocast(rho.device.type, enabled=False):
            a = torch.bmm(x.unsqueeze(1), rho.transpose(1, 2)).squeeze(1)
        return a, rho.view_as(rho)

    @staticmethod
    def backward(
        ctx: Any, grad: Tensor, grad_rho_out: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None]:
        rho, x = ctx.saved_tensors
        grad = grad.to(rho.dtype)
        grad_rho = None
        if ctx.needs_input_grad[0]:
            outer = (grad.unsqueeze(2), x.unsqueeze(1))
            if grad_rho_out is None:
                grad_rho = outer[0] * outer[1]
            else:
                grad_rho = torch.addcmul(grad_rho_out, *outer)
        grad_x = None
        if ctx.needs_input_grad[1]:
            grad_x = torch.bmm(grad.unsqueeze(1), rho).squeeze(1).to(ctx.x_dtype)
        return grad_rho, grad_x


class RhoWrite(torch.autograd.Function):
    """rho' = keep * rho + v x^T for rho [B, d, n], v [B, d], x [B, n]; keep is a
    constant [B, 1, n] column factor (decay and forgetting) or a float."""

    @staticmethod
    def forward(ctx: Any, rho: Tensor, v: Tensor, x: Tensor, keep: Tensor | float) -> Tensor:
        ctx.dtypes = v.dtype, x.dtype
        v, x = v.to(rho.dtype), x.to(rho.dtype)
        ctx.save_for_backward(v, x)
        ctx.keep = keep
        with torch.autocast(rho.device.type, enabled=False):
            if isinstance(keep, float):  # one pass over rho
                return torch.baddbmm(rho, v.unsqueeze(2), x.unsqueeze(1), beta=keep)
            return (rho * keep).addcmul_(v.unsqueeze(2), x.unsqueeze(1))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        v, x = ctx.saved_tensors
        v_dtype, x_dtype = ctx.dtypes
        grad_rho = grad * ctx.keep if ctx.needs_input_grad[0] else None
        grad_v = grad_x = None
        if ctx.needs_input_grad[1]:
            grad_v = torch.bmm(x.unsqueeze(1), grad.transpose(1, 2)).squeeze(1).to(v_dtype)
        if ctx.needs_input_grad[2]:
            grad_x = torch.bmm(v.unsqueeze(1), grad).squeeze(1).to(x_dtype)
        return grad_rho, grad_v, grad_x, None

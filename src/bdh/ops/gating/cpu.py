"""The C++ gate kernel (gating_cpu.cpp): relu, product and dropout in one pass each way."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from bdh.ops import dropout as dropout_ops
from bdh.ops.cpp import load_kernel

NAME = "bdh_gating_cpu"
DTYPES = (torch.float32, torch.bfloat16)


def _kernel() -> ModuleType | None:
    # Products rounded on their own, as torch's separate ops round them.
    return load_kernel(NAME, Path(__file__).with_name("gating_cpu.cpp"), ("-ffp-contract=off",))


def kernel_available() -> bool:
    return _kernel() is not None


@cache
def dropout_scale(p: float, dtype: torch.dtype) -> float:
    """What dropout's noise holds where the mask is 1: torch's `mask.div_(1 - p)` of ones."""
    return torch.ones(64, dtype=dtype).div_(1 - p)[0].item()


class _Gate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_sparse: Tensor, y_pre: Tensor, p: float) -> tuple[Tensor, Tensor, Tensor]:
        # The mask as F.dropout draws it on CPU: after the product, one draw per element.
        mask = dropout_ops.bernoulli_cpu_(torch.empty_like(x_sparse), 1 - p)
        scale = dropout_scale(p, x_sparse.dtype)
        y_sparse, xy, out = _kernel().forward(x_sparse, y_pre, mask, scale)
        ctx.save_for_backward(x_sparse, y_sparse, mask)
        ctx.scale = scale
        ctx.set_materialize_grads(False)
        return y_sparse, xy, out

    @staticmethod
    def backward(ctx, grad_y: Tensor | None, grad_xy: Tensor | None, grad_out: Tensor | None):
        x_sparse, y_sparse, mask = ctx.saved_tensors
        if grad_y is None and grad_xy is None:  # BDH's own graph: only `out` is used
            grad_x, grad_y_pre = _kernel().backward(grad_out, x_sparse, y_sparse, mask, ctx.scale)
            return grad_x, grad_y_pre, None
        # y_sparse or xy feed something else too: the chain rule through torch's ops.
        g_xy = _sum(grad_xy, None if grad_out is None else grad_out * (mask * ctx.scale))
        g_y = _sum(grad_y, None if g_xy is None else g_xy * x_sparse)
        grad_x = None if g_xy is None else g_xy * y_sparse
        return grad_x, g_y.masked_fill(y_sparse <= 0, 0), None


def _sum(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    return b if a is None else a if b is None else a + b


def gate_cpu(x_sparse: Tensor, y_pre: Tensor, p: float) -> tuple[Tensor, Tensor, Tensor]:
    """`gate_naive(x_sparse, y_pre, p, training=True)` for contiguous CPU tensors [B, H, T, N]
    of one type in DTYPES and 0 < p < 1; the dropped product comes as a [B, H, T, N] view of a
    [B, T, H, N] tensor (the decoder's layout)."""
    return _Gate.apply(x_sparse, y_pre, p)

"""BDH's gate: y_sparse = relu(y_pre), xy = x_sparse * y_sparse, and dropout(xy).

- `naive`: `F.relu`, the product and `bdh.ops.dropout.dropout`, the reference.
- `cpu`: a C++ kernel making one pass forward and one backward where torch makes five
  each, and writing the dropped product in the decoder's layout; the same mask from the
  same generator, and the same numbers (tests/ops/test_gating.py).

`gate` uses the kernel for CPU training with dropout in eager mode, and the twin elsewhere
(without dropout there is one product, and the kernel's gain is in dropout's passes).
"""

from __future__ import annotations

import torch
from torch import Tensor

from bdh.ops import dropout as dropout_ops
from bdh.ops.gating.cpu import DTYPES, gate_cpu, kernel_available
from bdh.ops.gating.naive import gate_naive


def gate(
    x_sparse: Tensor, y_pre: Tensor, p: float, training: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """(y_sparse, xy, dropout(xy)) of x_sparse and y_pre [B, H, T, N]; dropout as
    `F.dropout(xy, p, training)` draws it."""
    if (
        training
        and 0.0 < p < 1.0
        and x_sparse.device.type == "cpu"
        and x_sparse.dtype in DTYPES
        and y_pre.dtype == x_sparse.dtype
        and x_sparse.dim() == 4
        and x_sparse.shape == y_pre.shape
        and x_sparse.is_contiguous()
        and y_pre.is_contiguous()
        and not torch.compiler.is_compiling()
        and kernel_available()
        and dropout_ops.kernel_matches_torch()  # the mask's kernel draws torch's numbers
    ):
        return gate_cpu(x_sparse, y_pre, p)
    return gate_naive(x_sparse, y_pre, p, training)


__all__ = ["gate", "gate_cpu", "gate_naive", "kernel_available"]

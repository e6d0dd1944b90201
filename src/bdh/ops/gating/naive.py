"""BDH's gate in plain PyTorch: the reference twin of the C++ kernel in `cpu`."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from bdh.ops.dropout import dropout


def gate_naive(
    x_sparse: Tensor, y_pre: Tensor, p: float, training: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """y_sparse = relu(y_pre), xy = x_sparse * y_sparse, and dropout(xy); all [B, H, T, N]."""
    y_sparse = F.relu(y_pre)
    xy = x_sparse * y_sparse
    return y_sparse, xy, dropout(xy, p, training)

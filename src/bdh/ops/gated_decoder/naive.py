"""The decoder product of a decoding step with `torch.bmm`: the twin of the C++ kernel."""

from __future__ import annotations

import torch
from torch import Tensor


def gated_decoder_torch(x: Tensor, y: Tensor, decoder: Tensor) -> Tensor:
    """(x * y) @ decoder per head: x, y [H, B, N], decoder [H, N, D] -> [H, B, D]."""
    return torch.bmm(x * y, decoder)

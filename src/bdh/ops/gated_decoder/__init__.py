"""The decoder product of one decoding step, (x_sparse * y_sparse) @ decoder per head.

- `naive`: `torch.bmm` over the whole matrix, the reference.
- `cpu`: a C++ kernel that reads only the decoder rows where some sequence has
  x * y != 0; on CPU for decoders too large for the caches and small batches.

`gated_decoder_step` picks one; they agree to rounding (tests/ops/test_gated_decoder.py).
"""

from __future__ import annotations

from torch import Tensor

from bdh.ops.gated_decoder.cpu import gated_decoder_cpu, kernel_applies
from bdh.ops.gated_decoder.naive import gated_decoder_torch


def gated_decoder_step(x: Tensor, y: Tensor, decoder: Tensor) -> Tensor:
    """x, y [H, B, N], decoder [H, N, D] -> [H, B, D] (sum over heads for the output)."""
    if kernel_applies(x, y, decoder):
        return gated_decoder_cpu(x, y, decoder)
    return gated_decoder_torch(x, y, decoder)


__all__ = ["gated_decoder_cpu", "gated_decoder_step", "gated_decoder_torch", "kernel_applies"]

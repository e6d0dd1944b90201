"""Dropout, bitwise `F.dropout` (values, gradients, and the random numbers it consumes).

- `naive`: `F.dropout` and `Tensor.bernoulli_`, the reference.
- `cpu`: a C++ kernel for the Bernoulli mask that draws torch's own numbers from the
  default CPU generator (torch draws them in a serial per-element loop: in `small`'s
  training step the masks took a fifth of the time).

`dropout` uses the kernel on CPU in eager mode where it reproduces this torch's draws
(checked once per process), and `F.dropout` everywhere else.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bdh.ops.dropout.cpu import DTYPES, bernoulli_cpu_, kernel_matches_torch
from bdh.ops.dropout.naive import bernoulli_naive_, dropout_naive


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """`F.dropout(x, p, training)`, bitwise: the same mask from the same generator state."""
    if (
        not training
        or not 0.0 < p < 1.0
        or x.device.type != "cpu"
        or x.dtype not in DTYPES
        or not x.is_contiguous()
        or torch.compiler.is_compiling()
        or not kernel_matches_torch()
    ):
        return dropout_naive(x, p, training)
    # What F.dropout does on CPU (at::native's _dropout), with the mask drawn by the kernel.
    noise = torch.empty_like(x)
    bernoulli_cpu_(noise, 1 - p)
    noise.div_(1 - p)
    return x * noise


class Dropout(nn.Dropout):
    """`nn.Dropout` through `dropout`."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


__all__ = [
    "Dropout",
    "bernoulli_cpu_",
    "bernoulli_naive_",
    "dropout",
    "dropout_naive",
    "kernel_matches_torch",
]

"""Dropout as torch computes it: the reference twin of the CPU Bernoulli kernel."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def bernoulli_naive_(x: Tensor, p: float) -> Tensor:
    """x filled in place with Bernoulli(p) draws from torch's default generator."""
    return x.bernoulli_(p)


def dropout_naive(x: Tensor, p: float, training: bool = True) -> Tensor:
    """`F.dropout`."""
    return F.dropout(x, p, training)

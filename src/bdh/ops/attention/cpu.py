"""The C++ decoding step (recurrent_cpu.cpp): state read and write in one pass."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from bdh.ops.cpp import load_kernel

NAME = "bdh_attention_cpu"
# Below this state size (per call: all sequences and heads of one layer) the state stays in
# cache and the twin's BLAS read is faster (benchmarks/decode_ab.py: `tiny` at 256 KiB
# 0.85x, at 1 MiB even, `small` at 2 MiB 1.18-1.25x, at 16 MiB 1.50x).
MIN_STATE_BYTES = 1 << 20


def _kernel() -> ModuleType | None:
    return load_kernel(NAME, Path(__file__).with_name("recurrent_cpu.cpp"))


def fused_step_applies(qk: Tensor, v: Tensor, state: Tensor, decay: Tensor | None = None) -> bool:
    """Whether `fused_shared_qk_step` can take this step: fp32/fp64 CPU tensors of one
    dtype, a contiguous state of at least MIN_STATE_BYTES, no autograd, the kernel built."""
    if state.dim() != 4 or qk.dim() != 3 or v.dim() != 3:
        return False
    B, H, N, D = state.shape
    tensors = (qk, v, state) if decay is None else (qk, v, state, decay)
    return (
        qk.shape == (B, H, N)
        and v.shape[0] == B
        and v.shape[1] in (1, H)
        and v.shape[2] == D
        and (decay is None or (decay.dim() == 1 and decay.shape[0] in (1, H)))
        and state.numel() * state.element_size() >= MIN_STATE_BYTES
        and state.device.type == "cpu"
        and state.dtype in (torch.float32, torch.float64)
        and all(t.dtype == state.dtype for t in tensors)
        and state.is_contiguous()
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
        and _kernel() is not None
    )


def fused_shared_qk_step(
    qk: Tensor, v: Tensor, state: Tensor, decay: Tensor | None = None
) -> Tensor:
    """o = qk S, then S = U S + qk^T v (in place; U = 1 without `decay`): qk [B, H, N],
    v [B, 1 or H, D], state [B, H, N, D], decay [1 or H].

    Rows whose qk is zero are only decayed (undamped: skipped), so a state holding inf or
    NaN there stays as it is where the twin's 0 * inf would write NaN.
    """
    decay = None if decay is None else decay.contiguous()
    out = _kernel().shared_qk_step(state, qk.contiguous(), v.contiguous(), decay)
    # written through a raw pointer: tell autograd, so that a graph that saved the state
    # fails on backward as it would after the twin's in-place addcmul_
    torch.autograd.graph.increment_version(state)
    return out

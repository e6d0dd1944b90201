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


def fused_step_applies(q: Tensor, k: Tensor, v: Tensor, state: Tensor) -> bool:
    """Whether `shared_qk_step` takes this step: q is k, fp32/fp64 CPU tensors of one
    dtype, a contiguous state of at least MIN_STATE_BYTES, no autograd, the kernel built."""
    if q is not k or state.dim() != 4 or q.dim() != 3 or v.dim() != 3:
        return False
    B, H, N, D = state.shape
    return (
        q.shape == (B, H, N)
        and v.shape[0] == B
        and v.shape[1] in (1, H)
        and v.shape[2] == D
        and state.numel() * state.element_size() >= MIN_STATE_BYTES
        and state.device.type == "cpu"
        and state.dtype in (torch.float32, torch.float64)
        and q.dtype == v.dtype == state.dtype
        and state.is_contiguous()
        and not (torch.is_grad_enabled() and (state.requires_grad or q.requires_grad or v.requires_grad))
        and _kernel() is not None
    )


def shared_qk_step(q: Tensor, v: Tensor, state: Tensor) -> Tensor:
    """o = q S, then S += q^T v (in place): q [B, H, N], v [B, 1 or H, D], state [B, H, N, D].

    Rows whose q is zero are skipped, so a state holding inf or NaN there stays as it is
    where the twin's 0 * inf would write NaN.
    """
    out = _kernel().shared_qk_step(state, q.contiguous(), v.contiguous())
    # written through a raw pointer: tell autograd, so that a graph that saved the state
    # fails on backward as it would after the twin's in-place addcmul_
    torch.autograd.graph.increment_version(state)
    return out

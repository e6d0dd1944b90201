"""Recurrent form: one token at a time on a state whose size does not depend on T."""

from __future__ import annotations

import torch
from torch import Tensor

from bdh.ops.attention.cpu import fused_step_applies, shared_qk_step


def linear_attention_step(q: Tensor, k: Tensor, v: Tensor, state: Tensor) -> Tensor:
    """Read the state, then write the current token into it (in place).

    Args:
        q, k: [B, H, N]; v: [B, H or 1, D]; state: [B, H, N, D] contiguous, updated in place.
    Returns:
        o: [B, H, D], the attention output of this token over earlier tokens only.

    With q is k on CPU (decoding BDH) the C++ kernel takes the step in one pass over the
    state (`cpu.shared_qk_step`); `linear_attention_step_torch` is its twin.
    """
    if fused_step_applies(q, k, v, state):
        return shared_qk_step(q, v, state)
    return linear_attention_step_torch(q, k, v, state)


def linear_attention_step_torch(q: Tensor, k: Tensor, v: Tensor, state: Tensor) -> Tensor:
    """`linear_attention_step` in plain PyTorch: a batched read, then an in-place write."""
    B, H, N = q.shape
    D = state.shape[-1]
    o = torch.bmm(q.reshape(B * H, 1, N), state.view(B * H, N, D)).view(B, H, D)
    # Rank-1 write as one fused pass over the state (no [B, H, N, D] temporary); an
    # elementwise addcmul_ beats baddbmm_ with its inner dimension of 1 on CPU.
    state.addcmul_(k.unsqueeze(-1), v.unsqueeze(-2))
    return o


def causal_linear_attention_recurrent(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Same contract as `causal_linear_attention_naive`, one step per token."""
    B, H, T, N = q.shape
    D = v.shape[-1]
    state = q.new_zeros(B, H, N, D) if initial_state is None else initial_state.clone()
    out = q.new_empty(B, H, T, D)
    for t in range(T):
        out[:, :, t] = linear_attention_step(q[:, :, t], k[:, :, t], v[:, :, t], state)
    return out, (state if output_final_state else None)

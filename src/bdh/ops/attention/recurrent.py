"""Recurrent form: one token at a time on a state whose size does not depend on T."""

from __future__ import annotations

import torch
from torch import Tensor


def linear_attention_step_torch(
    q: Tensor, k: Tensor, v: Tensor, state: Tensor, decay: Tensor | None = None
) -> Tensor:
    """Read the state, then write the current token into it (in place): o = q S, then
    S = U S + k^T v (U = 1 without `decay`).

    Args:
        q, k: [B, H, N]; v: [B, H or 1, D]; state: [B, H, N, D] contiguous, updated in place;
        decay: [H or 1] factors in (0, 1].
    Returns:
        o: [B, H, D], the attention output of this token over earlier tokens only.

    The state step of `bdh.ops.decode.decode_token_torch`, the twin of the C++ decoding
    kernel.
    """
    B, H, N = q.shape
    D = state.shape[-1]
    o = torch.bmm(q.reshape(B * H, 1, N), state.view(B * H, N, D)).view(B, H, D)
    if decay is not None:
        state.mul_(decay.view(1, -1, 1, 1))
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
    decay: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Same contract as `causal_linear_attention_naive`, one step per token.

    Without autograd the steps update one state in place (a copy of `initial_state`);
    under autograd each step makes a new state, so gradients reach every token and the
    initial state.
    """
    B, H, T, N = q.shape
    D = v.shape[-1]
    tracking = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    tracking = tracking or (initial_state is not None and initial_state.requires_grad)
    state = q.new_zeros(B, H, N, D) if initial_state is None else initial_state.clone()
    if not tracking:
        out = q.new_empty(B, H, T, D)
        for t in range(T):
            out[:, :, t] = linear_attention_step_torch(
                q[:, :, t], k[:, :, t], v[:, :, t], state, decay
            )
        return out, (state if output_final_state else None)
    factor = None if decay is None else decay.view(1, -1, 1, 1)
    pieces = []
    for t in range(T):
        pieces.append(torch.matmul(q[:, :, t, None], state).squeeze(2))
        state = state if factor is None else state * factor
        state = state + k[:, :, t, :, None] * v[:, :, t, None, :]
    return torch.stack(pieces, dim=2), (state if output_final_state else None)

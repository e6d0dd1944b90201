"""Quadratic masked form: the reference every other form is tested against."""

from __future__ import annotations

from torch import Tensor


def causal_linear_attention_naive(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Strictly causal linear attention, o_t = q_t S_0 + sum_{s<t} (q_t . k_s) v_s.

    Args:
        q, k: [B, H, T, N]
        v: [B, H or 1, T, D] (a single value head is shared by all heads)
        initial_state: [B, H, N, D], the sum of k_s^T v_s over earlier tokens
    Returns:
        o: [B, H, T, D]; final state [B, H, N, D] when output_final_state.
    """
    o = (q @ k.mT).tril(diagonal=-1) @ v
    if initial_state is not None:
        o = o + q @ initial_state
    final_state = None
    if output_final_state:
        final_state = k.mT @ v
        if initial_state is not None:
            final_state = final_state + initial_state
    return o, final_state

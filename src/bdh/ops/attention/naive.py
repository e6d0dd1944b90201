"""Quadratic masked form: the reference every other form is tested against."""

from __future__ import annotations

from torch import Tensor

from bdh.ops.attention.damping import carry, damp_reads, damp_writes, decay_matrix


def causal_linear_attention_naive(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    decay: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Strictly causal linear attention, o_t = q_t S_0 + sum_{s<t} (q_t . k_s) v_s.

    Args:
        q, k: [B, H, T, N]
        v: [B, H or 1, T, D] (a single value head is shared by all heads)
        initial_state: [B, H, N, D], the sum of k_s^T v_s over earlier tokens
        decay: [H or 1] factors U in (0, 1] of a damped state (see `damping.py`):
            o_t = U^t q_t S_0 + sum_{s<t} U^(t-1-s) (q_t . k_s) v_s
    Returns:
        o: [B, H, T, D]; final state [B, H, N, D] when output_final_state.
    """
    T = q.shape[-2]
    scores = (q @ k.mT).tril(diagonal=-1)
    if decay is not None:
        scores = scores * decay_matrix(decay, T, scores.dtype)
    o = scores @ v
    if initial_state is not None:
        o = o + damp_reads(q @ initial_state, decay)
    final_state = None
    if output_final_state:
        final_state = damp_writes(k, decay).mT @ v
        if initial_state is not None:
            final_state = final_state + carry(initial_state, decay, T, initial_state.dtype)
    return o, final_state

"""Quadratic form for BDH's shared queries and keys (q = k), with a hand-written backward.

Twin: `causal_linear_attention_naive(qk, qk, v, initial_state, output_final_state, decay)`.
Compared with autograd through the naive form it
- masks (and damps) the scores in place instead of materialising more T x T tensors,
- runs one [T, T] x [T, N] product for the query/key gradient instead of two, since
  with q = k the gradient is (dS + dS^T) qk,
- folds a value head shared by all heads into one batched product per sequence.
An initial state, the final state and damping add their terms (and gradients) to the
same pass, so carried-state training of short windows keeps this backward.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bdh.ops.attention.damping import (
    carry,
    damp_reads,
    damp_writes,
    decay_matrix,
    write_powers,
)


def _scores(qk: Tensor, decay: Tensor | None) -> Tensor:
    """Strictly lower-triangular qk qk^T, damped by U^(t-1-s) when `decay` is given: [B, H, T, T]."""
    scores = torch.matmul(qk, qk.mT).tril_(diagonal=-1)
    if decay is not None:
        scores.mul_(decay_matrix(decay, scores.shape[-1], scores.dtype))
    return scores


def _apply(scores: Tensor, v: Tensor) -> Tensor:
    """scores [B, H, T, T] @ v [B, H or 1, T, D] -> [B, H, T, D]."""
    B, H, T, _ = scores.shape
    if v.shape[1] == 1 and H > 1:
        # One value head: all heads' rows of a sequence in a single [H*T, T] x [T, D] product.
        return torch.bmm(scores.reshape(B, H * T, T), v.reshape(B, T, -1)).view(B, H, T, -1)
    return torch.matmul(scores, v)


def _forward(
    qk: Tensor,
    v: Tensor,
    initial_state: Tensor | None,
    decay: Tensor | None,
    output_final_state: bool,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """(output, final state or None, the damped scores) of the shared-qk form."""
    T = qk.shape[-2]
    scores = _scores(qk, decay)
    out = _apply(scores, v)
    if initial_state is not None:
        out = out + damp_reads(torch.matmul(qk, initial_state), decay)
    final = None
    if output_final_state:
        final = torch.matmul(damp_writes(qk, decay).mT, v)
        if initial_state is not None:
            final = final + carry(initial_state, decay, T, final.dtype)
    return out, final, scores


def _add(total: Tensor | None, term: Tensor) -> Tensor:
    return term if total is None else total + term


class _SharedQKAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qk, v, initial_state, decay, output_final_state):  # type: ignore[override]
        out, final, scores = _forward(qk, v, initial_state, decay, output_final_state)
        ctx.save_for_backward(qk, v, scores, initial_state, decay)
        ctx.set_materialize_grads(False)
        return (out, final) if output_final_state else out

    @staticmethod
    def backward(ctx, grad_out, grad_final=None):  # type: ignore[override]
        qk, v, scores, s0, decay = ctx.saved_tensors
        B, H, T, _ = scores.shape
        need_qk, need_v, need_s0 = ctx.needs_input_grad[:3]
        # Under autocast the forward ran in a lower precision than its inputs; match it.
        dtype = scores.dtype
        v_in, qk_in = v.to(dtype), qk.to(dtype)
        shared_v = v.shape[1] == 1 and H > 1
        grad_qk = grad_v = grad_s0 = None
        if grad_out is not None:
            grad_out = grad_out.to(dtype).contiguous()
            if need_qk:
                if shared_v:
                    d_scores = torch.bmm(grad_out.view(B, H * T, -1), v_in.reshape(B, T, -1).mT)
                    d_scores = d_scores.view(B, H, T, T)
                else:
                    d_scores = torch.matmul(grad_out, v_in.mT)
                d_scores.tril_(diagonal=-1)
                if decay is not None:
                    d_scores.mul_(decay_matrix(decay, T, dtype))
                grad_qk = torch.matmul(d_scores + d_scores.mT, qk_in)
            if need_v:
                if shared_v:
                    grad_v = torch.bmm(scores.view(B, H * T, T).mT, grad_out.view(B, H * T, -1))
                    grad_v = grad_v.view(v.shape)
                else:
                    grad_v = torch.matmul(scores.mT, grad_out)
            if s0 is not None and (need_qk or need_s0):
                # o += U^t qk_t S_0
                g_read = damp_reads(grad_out, decay)
                if need_qk:
                    grad_qk = _add(grad_qk, torch.matmul(g_read, s0.to(dtype).mT))
                if need_s0:
                    grad_s0 = torch.matmul(qk_in.mT, g_read)
        if grad_final is not None:
            # S_T = U^T S_0 + sum_s U^(T-1-s) qk_s^T v_s
            g_final = grad_final.to(dtype)
            weights = None if decay is None else write_powers(decay, T, dtype)
            if need_qk:
                term = torch.matmul(v_in, g_final.mT)  # B, H, T, N
                grad_qk = _add(grad_qk, term if weights is None else term * weights)
            if need_v:
                keys = qk_in if weights is None else qk_in * weights
                term = torch.matmul(keys, g_final)  # B, H, T, D
                grad_v = _add(grad_v, term.sum(1, keepdim=True) if shared_v else term)
            if s0 is not None and need_s0:
                grad_s0 = _add(grad_s0, carry(g_final, decay, T, dtype))
        return (
            None if grad_qk is None else grad_qk.to(qk.dtype),
            None if grad_v is None else grad_v.to(v.dtype),
            None if grad_s0 is None else grad_s0.to(s0.dtype),
            None,
            None,
        )


def causal_linear_attention_parallel(
    qk: Tensor,
    v: Tensor,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    decay: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """o_t = U^t qk_t S_0 + sum_{s<t} U^(t-1-s) (qk_t . qk_s) v_s: the strictly causal form
    BDH uses. Arguments, shapes and results as in `causal_linear_attention_naive` with
    q = k = qk (BDH's rotated sparse activations); no gradient flows to `decay`. Memory
    O(B H T^2): use the chunked form for long T.
    """
    tensors = (qk, v) if initial_state is None else (qk, v, initial_state)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        result = _SharedQKAttention.apply(qk, v, initial_state, decay, output_final_state)
        return result if output_final_state else (result, None)
    out, final, _ = _forward(qk, v, initial_state, decay, output_final_state)
    return out, final

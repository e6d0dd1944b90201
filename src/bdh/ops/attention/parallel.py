"""Quadratic form for BDH's shared queries and keys (q = k), with a hand-written backward.

Twin: `causal_linear_attention_naive(qk, qk, v)`. Compared with autograd through the
naive form it
- masks the scores in place instead of materialising a second T x T tensor,
- runs one [T, T] x [T, N] product for the query/key gradient instead of two, since
  with q = k the gradient is (dS + dS^T) qk,
- folds a value head shared by all heads into one batched product per sequence.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _scores(qk: Tensor) -> Tensor:
    """Strictly lower-triangular qk qk^T, [B, H, T, T]."""
    return torch.matmul(qk, qk.mT).tril_(diagonal=-1)


def _apply(scores: Tensor, v: Tensor) -> Tensor:
    """scores [B, H, T, T] @ v [B, H or 1, T, D] -> [B, H, T, D]."""
    B, H, T, _ = scores.shape
    if v.shape[1] == 1 and H > 1:
        # One value head: all heads' rows of a sequence in a single [H*T, T] x [T, D] product.
        return torch.bmm(scores.reshape(B, H * T, T), v.reshape(B, T, -1)).view(B, H, T, -1)
    return torch.matmul(scores, v)


class _SharedQKAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qk: Tensor, v: Tensor) -> Tensor:
        scores = _scores(qk)
        ctx.save_for_backward(qk, v, scores)
        return _apply(scores, v)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None]:
        qk, v, scores = ctx.saved_tensors
        B, H, T, _ = scores.shape
        # Under autocast the forward ran in a lower precision than its inputs; match it.
        dtype = scores.dtype
        grad_out, v_in, qk_in = grad_out.to(dtype).contiguous(), v.to(dtype), qk.to(dtype)
        grad_qk = grad_v = None
        if ctx.needs_input_grad[0]:
            if v.shape[1] == 1 and H > 1:
                d_scores = torch.bmm(grad_out.view(B, H * T, -1), v_in.reshape(B, T, -1).mT)
                d_scores = d_scores.view(B, H, T, T)
            else:
                d_scores = torch.matmul(grad_out, v_in.mT)
            d_scores.tril_(diagonal=-1)
            grad_qk = torch.matmul(d_scores + d_scores.mT, qk_in).to(qk.dtype)
        if ctx.needs_input_grad[1]:
            if v.shape[1] == 1 and H > 1:
                grad_v = torch.bmm(scores.view(B, H * T, T).mT, grad_out.view(B, H * T, -1))
                grad_v = grad_v.view(v.shape)
            else:
                grad_v = torch.matmul(scores.mT, grad_out)
            grad_v = grad_v.to(v.dtype)
        return grad_qk, grad_v


def shared_qk_causal_attention(qk: Tensor, v: Tensor) -> Tensor:
    """o_t = sum_{s<t} (qk_t . qk_s) v_s, the strictly causal form BDH uses (keys = queries).

    Args:
        qk: [B, H, T, N] rotated sparse activations, both queries and keys.
        v: [B, H or 1, T, D]; a single value head is shared by all heads.
    Returns:
        o: [B, H, T, D]. Memory O(B H T^2): use the chunked form for long T.
    """
    if torch.is_grad_enabled() and (qk.requires_grad or v.requires_grad):
        return _SharedQKAttention.apply(qk, v)
    return _apply(_scores(qk), v)

"""Chunked form: linear cost in T and memory bounded by the chunk size."""

from __future__ import annotations

import torch
from torch import Tensor

from bdh.ops.attention.damping import decay_matrix, read_powers, total_decay, write_powers

DEFAULT_CHUNK_SIZE = 128


def causal_linear_attention_chunked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    decay: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Same contract as `causal_linear_attention_naive`, computed chunk by chunk.

    Inside a chunk the quadratic form runs on [chunk, chunk] scores; earlier chunks
    enter only through the carried state [B, H, N, D]. Without autograd the output is
    written into one preallocated tensor and the state is updated in place (on a copy of
    `initial_state`, which is left untouched); under autograd every step is out of place.
    """
    B, H, T, N = q.shape
    D = v.shape[-1]
    tracking = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    tracking = tracking or (initial_state is not None and initial_state.requires_grad)
    if initial_state is None:
        state = q.new_zeros(B, H, N, D)
    else:
        state = initial_state if tracking else initial_state.clone()
    out = q.new_empty(B, H, T, D) if not tracking else None
    pieces = []
    for start in range(0, T, chunk_size):
        end = min(start + chunk_size, T)
        qc, kc, vc = q[:, :, start:end], k[:, :, start:end], v[:, :, start:end]
        scores = torch.matmul(qc, kc.mT).tril_(diagonal=-1)
        read = torch.matmul(qc, state)
        if decay is not None:
            L = end - start
            scores = scores.mul_(decay_matrix(decay, L, scores.dtype))
            read = read.mul_(read_powers(decay, L, read.dtype))
            kc = kc * write_powers(decay, L, kc.dtype)
            carried = total_decay(decay, L, state.dtype)
        o = torch.matmul(scores, vc)
        o = o.add_(read) if not tracking else o + read
        if tracking:
            pieces.append(o)
            state = state if decay is None else state * carried
            state = state + torch.matmul(kc.mT, vc)
        else:
            out[:, :, start:end] = o
            if decay is not None:
                state.mul_(carried)
            state.add_(torch.matmul(kc.mT, vc))
    if tracking:
        out = torch.cat(pieces, dim=2)
    return out, (state if output_final_state else None)

"""Chunked form: linear cost in T and memory bounded by the chunk size."""

from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_CHUNK_SIZE = 128


def causal_linear_attention_chunked(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[Tensor, Tensor | None]:
    """Same contract as `causal_linear_attention_naive`, computed chunk by chunk.

    Inside a chunk the quadratic form runs on [chunk, chunk] scores; earlier chunks
    enter only through the carried state [B, H, N, D]. Without autograd the output is
    written into one preallocated tensor and the state is updated in place (on a copy of
    `initial_state`, which is left untouched).
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
        o = torch.matmul(torch.matmul(qc, kc.mT).tril_(diagonal=-1), vc)
        o = o.add_(torch.matmul(qc, state)) if not tracking else o + torch.matmul(qc, state)
        if tracking:
            pieces.append(o)
            state = state + torch.matmul(kc.mT, vc)
        else:
            out[:, :, start:end] = o
            state.add_(torch.matmul(kc.mT, vc))
    if tracking:
        out = torch.cat(pieces, dim=2)
    return out, (state if output_final_state else None)

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
    enter only through the carried state [B, H, N, D].
    """
    B, H, T, N = q.shape
    state = initial_state
    if state is None:
        state = q.new_zeros(B, H, N, v.shape[-1])
    outputs = []
    for start in range(0, T, chunk_size):
        end = min(start + chunk_size, T)
        qc, kc, vc = q[:, :, start:end], k[:, :, start:end], v[:, :, start:end]
        outputs.append((qc @ kc.mT).tril(diagonal=-1) @ vc + qc @ state)
        state = state + kc.mT @ vc
    return torch.cat(outputs, dim=2), (state if output_final_state else None)

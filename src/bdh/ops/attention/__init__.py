"""Strictly causal linear attention (the diagonal excluded), in three equal forms.

- `naive`: the quadratic masked form, the reference.
- `chunked`: linear in T with bounded memory, for long sequences.
- `recurrent`: per-token updates of a [B, H, N, D] state, for decoding.

`causal_linear_attention` picks a form by sequence length; mode selection lives here only.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from bdh.ops.attention.chunked import DEFAULT_CHUNK_SIZE, causal_linear_attention_chunked
from bdh.ops.attention.naive import causal_linear_attention_naive
from bdh.ops.attention.recurrent import causal_linear_attention_recurrent, linear_attention_step

Mode = Literal["auto", "naive", "chunked", "recurrent"]

# Above this length the T x T score matrix costs more than carrying the state.
QUADRATIC_MAX_LEN = 512


def causal_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    mode: Mode = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[Tensor, Tensor | None]:
    """Dispatch to one of the equal forms; see `causal_linear_attention_naive` for shapes."""
    if mode == "auto":
        mode = "naive" if q.shape[-2] <= QUADRATIC_MAX_LEN else "chunked"
    if mode == "naive":
        return causal_linear_attention_naive(q, k, v, initial_state, output_final_state)
    if mode == "chunked":
        return causal_linear_attention_chunked(
            q, k, v, initial_state, output_final_state, chunk_size=chunk_size
        )
    if mode == "recurrent":
        return causal_linear_attention_recurrent(q, k, v, initial_state, output_final_state)
    raise ValueError(f"unknown attention mode {mode!r}")


__all__ = [
    "Mode",
    "causal_linear_attention",
    "causal_linear_attention_chunked",
    "causal_linear_attention_naive",
    "causal_linear_attention_recurrent",
    "linear_attention_step",
]

"""Strictly causal linear attention (the diagonal excluded), in three equal forms.

- `naive`: the quadratic masked form, the reference.
- `parallel`: the quadratic form for shared queries and keys (q is k, as in BDH) with a
  hand-written backward; the training path for short sequences.
- `chunked`: linear in T with bounded memory, for long sequences.
- `recurrent`: per-token updates of a [B, H, N, D] state, for decoding; with shared
  queries and keys on CPU a C++ kernel (`cpu.py`) reads and writes the state in one pass,
  `linear_attention_step_torch` being its twin.

`causal_linear_attention` picks a form by sequence length; mode selection lives here only.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from bdh.ops.attention.chunked import DEFAULT_CHUNK_SIZE, causal_linear_attention_chunked
from bdh.ops.attention.naive import causal_linear_attention_naive
from bdh.ops.attention.parallel import shared_qk_causal_attention
from bdh.ops.attention.recurrent import (
    causal_linear_attention_recurrent,
    linear_attention_step,
    linear_attention_step_torch,
)

Mode = Literal["auto", "naive", "parallel", "chunked", "recurrent"]

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
    """Dispatch to one of the equal forms; see `causal_linear_attention_naive` for shapes.

    "auto" takes a quadratic form up to QUADRATIC_MAX_LEN tokens (the hand-written
    `parallel` one when q is k and no state goes in or out) and the chunked form beyond.
    """
    stateless = initial_state is None and not output_final_state
    if mode == "auto":
        if q.shape[-2] > QUADRATIC_MAX_LEN:
            mode = "chunked"
        else:
            mode = "parallel" if (q is k and stateless) else "naive"
    if mode == "parallel":
        if q is not k or not stateless:
            raise ValueError("the parallel form needs q is k, no initial state and no final state")
        return shared_qk_causal_attention(q, v), None
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
    "linear_attention_step_torch",
    "shared_qk_causal_attention",
]

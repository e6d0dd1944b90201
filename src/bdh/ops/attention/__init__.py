"""Strictly causal linear attention (the diagonal excluded), in four equal forms.

- `naive`: the quadratic masked form, the reference.
- `parallel`: the quadratic form for shared queries and keys (BDH's q = k) with a
  hand-written backward; the training path for short sequences.
- `chunked`: linear in T with bounded memory, for long sequences.
- `recurrent`: per-token updates of a [B, H, N, D] state (BDH's decoding step through all
  layers, with its C++ kernel, is `bdh.ops.decode`).

Every form takes an initial state, returns the final one, and optionally damps the state
(rho_t = U rho_{t-1} + k_t^T v_t with fixed per-head U in (0, 1], `damping.py`), forward
and backward. Entry points: `shared_qk_attention` / `shared_qk_step` for shared queries
and keys (BDH), `causal_linear_attention` / `linear_attention_step` for distinct ones.
Mode selection (which form) lives here only.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from bdh.ops.attention.chunked import DEFAULT_CHUNK_SIZE, causal_linear_attention_chunked
from bdh.ops.attention.naive import causal_linear_attention_naive
from bdh.ops.attention.parallel import causal_linear_attention_parallel
from bdh.ops.attention.recurrent import (
    causal_linear_attention_recurrent,
    linear_attention_step_torch,
)

Mode = Literal["auto", "naive", "parallel", "chunked", "recurrent"]

# Above this length the T x T score matrix costs more than carrying the state.
QUADRATIC_MAX_LEN = 512


def _pick(mode: Mode, length: int, quadratic: str) -> str:
    if mode == "auto":
        return quadratic if length <= QUADRATIC_MAX_LEN else "chunked"
    if mode not in ("naive", "parallel", "chunked", "recurrent"):
        raise ValueError(f"unknown attention mode {mode!r}")
    return mode


def shared_qk_attention(
    qk: Tensor,
    v: Tensor,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    decay: Tensor | None = None,
    mode: Mode = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[Tensor, Tensor | None]:
    """Attention with keys equal to the queries (BDH): o_t = U^t qk_t S_0 +
    sum_{s<t} U^(t-1-s) (qk_t . qk_s) v_s; shapes as in `causal_linear_attention_naive`.

    "auto" takes the hand-written `parallel` form up to QUADRATIC_MAX_LEN tokens (with or
    without states) and the chunked form beyond.
    """
    form = _pick(mode, qk.shape[-2], "parallel")
    if form == "parallel":
        return causal_linear_attention_parallel(qk, v, initial_state, output_final_state, decay)
    return causal_linear_attention(
        qk, qk, v, initial_state, output_final_state, form, chunk_size, decay
    )


def causal_linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    mode: Mode = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    decay: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Attention with distinct queries and keys; see `causal_linear_attention_naive` for
    shapes. "auto" takes the naive form up to QUADRATIC_MAX_LEN tokens and the chunked
    form beyond. The `parallel` form needs shared queries and keys: `shared_qk_attention`.
    """
    form = _pick(mode, q.shape[-2], "naive")
    if form == "parallel":
        raise ValueError(
            "the parallel form is for shared queries and keys: use shared_qk_attention"
        )
    if form == "naive":
        return causal_linear_attention_naive(q, k, v, initial_state, output_final_state, decay)
    if form == "chunked":
        return causal_linear_attention_chunked(
            q, k, v, initial_state, output_final_state, chunk_size=chunk_size, decay=decay
        )
    return causal_linear_attention_recurrent(q, k, v, initial_state, output_final_state, decay)


def shared_qk_step(qk: Tensor, v: Tensor, state: Tensor, decay: Tensor | None = None) -> Tensor:
    """One decoding step with keys equal to the queries: o = qk S, then S = U S + qk^T v
    in place. qk [B, H, N], v [B, H or 1, D], state [B, H, N, D], decay [H or 1]; o [B, H, D].
    """
    return linear_attention_step_torch(qk, qk, v, state, decay)


def linear_attention_step(
    q: Tensor, k: Tensor, v: Tensor, state: Tensor, decay: Tensor | None = None
) -> Tensor:
    """One decoding step with distinct queries and keys, in place; see `shared_qk_step`."""
    return linear_attention_step_torch(q, k, v, state, decay)


__all__ = [
    "QUADRATIC_MAX_LEN",
    "Mode",
    "causal_linear_attention",
    "causal_linear_attention_chunked",
    "causal_linear_attention_naive",
    "causal_linear_attention_parallel",
    "causal_linear_attention_recurrent",
    "linear_attention_step",
    "linear_attention_step_torch",
    "shared_qk_attention",
    "shared_qk_step",
]

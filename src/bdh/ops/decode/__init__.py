"""BDH's decoding step, one token per sequence, from the token to its logits, on the
recurrent state.

- `naive`: `decode_token_torch`, plain PyTorch products per layer (the reference).
- `cpu`: one C++ call for the whole step (`decode_cpu.cpp`) that computes y only for
  active neurons and reads only the decoder rows and state rows they need.

`decode_token` picks the kernel where it applies (CPU, fp32/fp64, no autograd, built).
"""

from __future__ import annotations

from torch import Tensor

from bdh.ops.decode.cpu import decode_token_cpu, fused_decode_applies
from bdh.ops.decode.naive import decode_token_torch


def decode_token(
    tokens: Tensor,
    state: Tensor,
    embed: Tensor,
    encoder: Tensor,
    encoder_v: Tensor,
    decoder: Tensor,
    lm_head: Tensor,
    phasors: Tensor,
    decay: Tensor | None = None,
) -> Tensor:
    """tokens [B] through every layer of state [L, B, H, N, D] (updated in place) ->
    logits [B, V]; see `decode_token_torch`."""
    weights = (embed, encoder, encoder_v, decoder, lm_head, phasors, decay)
    if fused_decode_applies(tokens, state, embed, encoder, encoder_v, decoder, lm_head, decay):
        return decode_token_cpu(tokens, state, *weights)
    return decode_token_torch(tokens, state, *weights)


__all__ = ["decode_token", "decode_token_cpu", "decode_token_torch", "fused_decode_applies"]

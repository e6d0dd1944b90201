"""BDH's decoding step through all layers, one token per sequence, on the recurrent state.

- `naive`: `decode_layers_torch`, plain PyTorch products per layer (the reference).
- `cpu`: one C++ call for all layers (`decode_cpu.cpp`) that computes y only for active
  neurons and reads only the decoder rows and state rows they need.

`decode_layers` picks the kernel where it applies (CPU, fp32/fp64, no autograd, built).
"""

from __future__ import annotations

from torch import Tensor

from bdh.ops.decode.cpu import decode_layers_cpu, fused_decode_applies
from bdh.ops.decode.naive import decode_layers_torch


def decode_layers(
    x: Tensor,
    state: Tensor,
    encoder: Tensor,
    encoder_v: Tensor,
    decoder: Tensor,
    phasors: Tensor,
    decay: Tensor | None = None,
) -> Tensor:
    """x [B, D] (normalized embeddings) through every layer of state [L, B, H, N, D]
    (updated in place) -> the last layer's output [B, D]; see `decode_layers_torch`."""
    if fused_decode_applies(x, state, encoder, encoder_v, decoder, decay):
        return decode_layers_cpu(x, state, encoder, encoder_v, decoder, phasors, decay)
    return decode_layers_torch(x, state, encoder, encoder_v, decoder, phasors, decay)


__all__ = ["decode_layers", "decode_layers_cpu", "decode_layers_torch", "fused_decode_applies"]

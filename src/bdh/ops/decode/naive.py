"""The plain PyTorch decoding step, token to logits: the twin of the C++ kernel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bdh.ops.attention import shared_qk_step
from bdh.ops.rope import apply_rope_phasors


def _ln(x: Tensor) -> Tensor:
    return F.layer_norm(x, (x.shape[-1],))


def decode_token_torch(
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
    """BDH for one token per sequence: the embedding, `BDH.layer` through every layer of
    `state`, the readout.

    tokens: [B]; state: [L, B, H, N, D], updated in place; embed: [V, D]; encoder,
    encoder_v: [H, D, N]; decoder: [H * N, D]; lm_head: [D, V]; phasors: complex [N / 2],
    the token's RoPE phasor; decay: [H or 1] or None. Returns the logits [B, V].

    Head-major [H, B, ...] products are plain bmm over heads (a broadcast matmul would
    copy each weight matrix once per sequence), and the decoder runs as per-head products
    summed over heads (its rows are head-major), which needs no [B, H * N] copy.
    """
    x = _ln(F.embedding(tokens, embed))  # B, D
    B, D = x.shape
    H, N = encoder.shape[0], encoder.shape[2]
    for kv in state:  # B, H, N, D
        x_sparse = F.relu(torch.bmm(x.expand(H, B, D), encoder))  # H, B, N
        q = apply_rope_phasors(x_sparse, phasors).transpose(0, 1)  # B, H, N
        a = shared_qk_step(q, x.view(B, 1, D), kv, decay)  # B, H, D
        y_sparse = F.relu(torch.bmm(_ln(a).transpose(0, 1), encoder_v))  # H, B, N
        y_mlp = torch.bmm(x_sparse * y_sparse, decoder.view(H, N, D)).sum(0)  # B, D
        x = _ln(x + _ln(y_mlp))
    return x @ lm_head

"""Measured inference memory: the bytes of a model's real recurrent state / KV cache
after it has read T tokens, for several T. BDH's state is a fixed [L, B, H, N, D]
tensor; a Transformer's KV cache grows with T."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bdh.analysis.state import tensor_nbytes
from bdh.errors import BDHError


def max_context(model: nn.Module) -> int | None:
    """Longest context a model accepts (None: unbounded, as for BDH)."""
    for name in ("block_size", "max_seq_len", "n_positions"):
        value = getattr(model.config, name, None)
        if isinstance(value, int):
            return value
    return None


@torch.no_grad()
def measure_state_memory(model: nn.Module, lengths: list[int], seed: int = 0) -> list[dict[str, Any]]:
    """[{"tokens": T, "state_bytes": bytes}] after prefilling T random tokens (batch 1).

    Lengths beyond the model's context limit are skipped.
    """
    if not lengths or min(lengths) < 1:
        raise BDHError("lengths must be positive token counts")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    limit = max_context(model)
    rows = []
    for T in sorted(lengths):
        if limit is not None and T > limit:
            continue
        ids = torch.randint(model.config.vocab_size, (1, T), generator=generator).to(device)
        _, state = model.prefill(ids, model.init_state(1), all_logits=False)
        rows.append({"tokens": T, "state_bytes": tensor_nbytes(state)})
    return rows

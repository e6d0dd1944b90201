"""Validation loss and bits per byte on a fixed, deterministic slice of a corpus."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bdh.data.corpus import TokenCorpus
from bdh.tokenizers import Tokenizer


@dataclass
class EvalResult:
    loss: float  # mean cross-entropy, nats per token
    bits_per_byte: float
    tokens: int


def _byte_lengths(tokenizer: Tokenizer) -> np.ndarray:
    if tokenizer.kind == "byte":
        return np.ones(256, dtype=np.int64)
    return np.array([len(c.encode("utf-8")) for c in tokenizer.chars], dtype=np.int64)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    tokens: np.ndarray,
    tokenizer: Tokenizer,
    block_size: int,
    batch_size: int = 8,
    max_tokens: int | None = None,
) -> EvalResult:
    """Mean loss over consecutive non-overlapping windows of `tokens` (from its start)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    n_windows = (len(tokens) - 1) // block_size
    if max_tokens is not None:
        n_windows = min(n_windows, max(1, max_tokens // block_size))
    byte_len = _byte_lengths(tokenizer)
    total_loss, total_tokens, total_bytes = 0.0, 0, 0
    starts = [i * block_size for i in range(n_windows)]
    for i in range(0, len(starts), batch_size):
        x, y = TokenCorpus.windows(tokens, starts[i : i + batch_size], block_size, device)
        logits, _ = model(x)
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction="sum"
        )
        total_loss += loss.item()
        total_tokens += y.numel()
        total_bytes += int(byte_len[y.cpu().numpy()].sum())
    model.train(was_training)
    mean = total_loss / max(total_tokens, 1)
    return EvalResult(
        loss=mean, bits_per_byte=total_loss / math.log(2) / max(total_bytes, 1), tokens=total_tokens
    )

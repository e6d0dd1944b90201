"""Validation loss and bits per byte on a fixed, deterministic slice of a corpus.

`evaluate` scores independent windows with the parallel forward; `score_sequence` reads
a whole text as one sequence through the model's recurrent state, in bounded memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bdh.data.corpus import TokenCorpus
from bdh.errors import BDHError
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


# Tokens per prefill call when scoring: the logits of one chunk are all that is held.
SCORE_CHUNK = 1024


@torch.no_grad()
def score_sequence(
    model: nn.Module,
    tokens: np.ndarray,
    tokenizer: Tokenizer,
    max_tokens: int | None = None,
    chunk_size: int = SCORE_CHUNK,
) -> EvalResult:
    """Loss of `tokens` read as one sequence, each token predicted from its whole prefix.

    Chunks are prefilled onto the recurrent state of everything before them, so memory is
    the state plus one chunk's logits whatever the length (16k, 64k, 256k tokens...).
    Models whose state is bounded by a context window (the GPT baseline) refuse lengths
    beyond it.
    """
    n_targets = len(tokens) - 1 if max_tokens is None else min(len(tokens) - 1, max_tokens)
    if n_targets < 1:
        raise BDHError("scoring needs at least two tokens")
    context = getattr(model.config, "block_size", None)  # a GPT's positions end there
    if context is not None and n_targets > context:
        raise BDHError(
            f"this model sees at most {context} tokens, so it cannot score {n_targets} as one "
            "sequence; score it in windows instead (bdh eval without --whole)"
        )
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    byte_len = _byte_lengths(tokenizer)
    state = model.init_state(1)
    total_loss, total_bytes = 0.0, 0
    try:
        for start in range(0, n_targets, chunk_size):
            end = min(start + chunk_size, n_targets)
            window = torch.as_tensor(tokens[start : end + 1].astype(np.int64), device=device)
            logits, state = model.prefill(window[None, :-1], state)
            targets = window[1:]
            total_loss += torch.nn.functional.cross_entropy(
                logits[0].float(), targets, reduction="sum"
            ).item()
            total_bytes += int(byte_len[targets.cpu().numpy()].sum())
    finally:
        model.train(was_training)
    return EvalResult(
        loss=total_loss / n_targets,
        bits_per_byte=total_loss / math.log(2) / max(total_bytes, 1),
        tokens=n_targets,
    )

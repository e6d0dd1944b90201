"""Validation loss and bits per byte on a fixed, deterministic slice of a corpus.

`evaluate` scores independent windows with the parallel forward; `score_sequence` reads
a whole text as one sequence through the model's recurrent state, in bounded memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from bdh.data.corpus import TokenCorpus
from bdh.errors import BDHError
from bdh.registry import max_context
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


class _Totals:
    """Summed loss, targets and their bytes, turned into an `EvalResult`."""

    def __init__(self, tokenizer: Tokenizer):
        self.byte_len = _byte_lengths(tokenizer)
        self.loss, self.tokens, self.bytes = 0.0, 0, 0

    def add(self, logits: Tensor, targets: Tensor) -> None:
        self.loss += torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="sum"
        ).item()
        self.tokens += targets.numel()
        self.bytes += int(self.byte_len[targets.cpu().numpy()].sum())

    def result(self) -> EvalResult:
        return EvalResult(
            loss=self.loss / max(self.tokens, 1),
            bits_per_byte=self.loss / math.log(2) / max(self.bytes, 1),
            tokens=self.tokens,
        )


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
    totals = _Totals(tokenizer)
    starts = [i * block_size for i in range(n_windows)]
    for i in range(0, len(starts), batch_size):
        x, y = TokenCorpus.windows(tokens, starts[i : i + batch_size], block_size, device)
        logits, _ = model(x)
        totals.add(logits, y)
    model.train(was_training)
    return totals.result()


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
    context = max_context(model)
    if context is not None and n_targets > context:
        raise BDHError(
            f"this model sees at most {context} tokens, so it cannot score {n_targets} as one "
            "sequence; score it in windows instead (bdh eval without --whole)"
        )
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    state = model.init_state(1)
    totals = _Totals(tokenizer)
    try:
        for start in range(0, n_targets, chunk_size):
            end = min(start + chunk_size, n_targets)
            window = torch.as_tensor(tokens[start : end + 1].astype(np.int64), device=device)
            logits, state = model.prefill(window[None, :-1], state)
            totals.add(logits[0], window[1:])
    finally:
        model.train(was_training)
    return totals.result()

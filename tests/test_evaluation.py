"""Scoring a long text as one sequence through the recurrent state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bdh
from bdh.errors import BDHError
from bdh.evaluation import score_sequence


@pytest.mark.parametrize("chunk_size", [1024, 333])
def test_score_equals_the_parallel_loss_over_the_whole_sequence(chunk_size) -> None:
    torch.manual_seed(0)
    model = bdh.BDH(bdh.preset("tiny")).eval()
    tokens = np.random.default_rng(0).integers(0, 256, 2500).astype(np.uint16)
    ids = torch.as_tensor(tokens.astype(np.int64))
    with torch.no_grad():
        logits, _ = model(ids[None, :-1])  # chunked attention form beyond 512 tokens
    expected = F.cross_entropy(logits[0], ids[1:]).item()
    result = score_sequence(model, tokens, bdh.ByteTokenizer(), chunk_size=chunk_size)
    assert result.tokens == 2499
    assert result.loss == pytest.approx(expected, rel=1e-5)
    assert result.bits_per_byte == pytest.approx(expected / np.log(2), rel=1e-5)


def test_score_limits_and_refusals() -> None:
    model = bdh.BDH(bdh.preset("tiny"))
    tokens = np.arange(100, dtype=np.uint16)
    assert score_sequence(model, tokens, bdh.ByteTokenizer(), max_tokens=10).tokens == 10
    assert model.training  # the mode is restored
    with pytest.raises(BDHError, match="two tokens"):
        score_sequence(model, tokens[:1], bdh.ByteTokenizer())


def test_a_model_with_a_context_window_refuses_longer_texts() -> None:
    from bdh.registry import build_model_from_preset

    gpt = build_model_from_preset("gpt", "tiny", vocab_size=256)
    tokens = np.arange(600, dtype=np.uint16) % 256
    with pytest.raises(BDHError, match="at most 256 tokens"):
        score_sequence(gpt, tokens, bdh.ByteTokenizer())
    assert score_sequence(gpt, tokens, bdh.ByteTokenizer(), max_tokens=256).tokens == 256

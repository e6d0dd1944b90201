"""Scoring a long text as one sequence through the recurrent state."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bdh
from bdh.errors import BDHError
from bdh.evaluation import (
    PositionalLoss,
    concatenate_texts,
    loss_by_position,
    position_buckets,
    score_sequence,
    sequence_starts,
)
from bdh.model import ROPE_CACHE_MAX_ELEMENTS, ROPE_CACHE_MAX_POSITIONS
from bdh.registry import build_model_from_preset


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


# ---- loss by position --------------------------------------------------------------------


def _fp64_tiny(vocab_size: int = 256) -> torch.nn.Module:
    torch.manual_seed(0)
    return bdh.BDH(bdh.preset("tiny", vocab_size=vocab_size)).double().eval()


def _parallel_position_losses(model, rows: np.ndarray) -> np.ndarray:
    """Brute force: every position's loss from the parallel forward of whole sequences."""
    ids = torch.as_tensor(rows.astype(np.int64))
    with torch.no_grad():
        logits, _ = model(ids[:, :-1])
    return F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").numpy()


def test_bucket_edges() -> None:
    assert position_buckets(256) == [(0, 256)]
    assert position_buckets(257) == [(0, 256), (256, 257)]
    assert position_buckets(1024) == [(0, 256), (256, 1024)]
    assert position_buckets(1025) == [(0, 256), (256, 1024), (1024, 1025)]
    assert position_buckets(300_000)[-2:] == [(65536, 262144), (262144, 300_000)]
    assert position_buckets(100, edges=[10, 50, 100, 400]) == [(0, 10), (10, 50), (50, 100)]
    for bad in ([5, 5], [9, 3], [1]):
        with pytest.raises(BDHError, match="increasing"):
            position_buckets(100, edges=bad)
    with pytest.raises(BDHError, match="two tokens"):
        position_buckets(1)
    # Position p is the token at index p: 255 is in the first bucket, 256 and 1023 in the
    # second, 1024 in the third (position 0 has no context and is never scored).
    model = bdh.BDH(bdh.preset("tiny")).eval()
    tokens = np.random.default_rng(0).integers(0, 256, 1025).astype(np.uint16)
    result = loss_by_position(model, tokens, bdh.ByteTokenizer(), chunk_size=300)
    assert [(b.label, b.tokens) for b in result.buckets] == [
        ("0-256", 255),
        ("256-1k", 768),
        ("1k-1025", 1),
    ]
    curve = [(p.start, p.end) for p in result.curve]
    assert curve[:3] == [(1, 2), (2, 3), (3, 4)] and curve[-1][1] == 1025
    assert all(a[1] == b[0] for a, b in zip(curve, curve[1:]))  # they tile positions 1..1024


def test_bucket_means_equal_the_parallel_per_position_loss_fp64() -> None:
    tokenizer = bdh.CharTokenizer.from_text("ab c\né日本")  # 1-, 2- and 3-byte characters
    model = _fp64_tiny(tokenizer.vocab_size)
    tokens = np.random.default_rng(1).integers(0, tokenizer.vocab_size, 700).astype(np.uint16)
    result = loss_by_position(model, tokens, tokenizer, buckets=[64, 256], chunk_size=97)
    expected = _parallel_position_losses(model, tokens[None])[0]  # [699]: positions 1..699
    byte_len = np.array([len(c.encode()) for c in tokenizer.chars])
    assert [(b.start, b.end) for b in result.buckets] == [(0, 64), (64, 256), (256, 700)]
    for point in result.buckets + result.curve:
        losses = expected[max(point.start, 1) - 1 : point.end - 1]
        n_bytes = byte_len[tokens[max(point.start, 1) : point.end]].sum()
        assert point.tokens == len(losses)
        assert point.loss == pytest.approx(losses.mean(), rel=1e-9)
        assert point.bits_per_byte == pytest.approx(losses.sum() / np.log(2) / n_bytes, rel=1e-9)
    assert result.overall.loss == pytest.approx(expected.mean(), rel=1e-9)


def test_sequences_read_side_by_side_equal_their_one_by_one_scores() -> None:
    model = _fp64_tiny()
    tokenizer = bdh.ByteTokenizer()
    text = np.random.default_rng(2).integers(0, 256, 2000).astype(np.uint8)
    batched = loss_by_position(model, text, tokenizer, length=600, sequences=3, chunk_size=128)
    assert batched.starts == [0, 700, 1400]  # spread evenly, the last ending at the text's end
    singles = [
        loss_by_position(model, text[s : s + 600], tokenizer, chunk_size=128)
        for s in batched.starts
    ]
    for i, bucket in enumerate(batched.buckets):
        assert bucket.tokens == 3 * singles[0].buckets[i].tokens
        assert bucket.loss == pytest.approx(np.mean([r.buckets[i].loss for r in singles]), rel=1e-9)
    rows = np.stack([text[s : s + 600] for s in batched.starts])
    side_by_side, one_by_one = np.empty((3, 599)), np.empty((3, 599))
    score_sequence(model, rows, tokenizer, chunk_size=128, position_losses=side_by_side)
    for row, out in zip(rows, one_by_one):
        score_sequence(model, row, tokenizer, chunk_size=128, position_losses=out)
    np.testing.assert_allclose(side_by_side, one_by_one, rtol=1e-9, atol=0)
    np.testing.assert_allclose(
        side_by_side, _parallel_position_losses(model, rows), rtol=1e-9, atol=0
    )


def test_the_overall_loss_is_score_sequence_of_the_whole_text() -> None:
    model = bdh.BDH(bdh.preset("tiny")).eval()
    tokens = np.random.default_rng(3).integers(0, 256, 1500).astype(np.uint16)
    result = loss_by_position(model, tokens, bdh.ByteTokenizer(), chunk_size=333)
    assert result.length == 1500 and result.starts == [0] and not result.repeats
    assert result.overall == score_sequence(model, tokens, bdh.ByteTokenizer(), chunk_size=333)
    record = result.to_dict()
    assert record["buckets"][0] == {
        "label": "0-256",
        "start": 0,
        "end": 256,
        **vars(result.buckets[0]),
    }
    assert record["repeats"] is False and record["repeat_from_position"] is None
    assert record["overall"]["tokens"] == 1499
    assert PositionalLoss.from_dict(json.loads(json.dumps(record))) == result


def test_a_short_text_is_read_again_only_when_allowed() -> None:
    model = _fp64_tiny()
    tokenizer = bdh.ByteTokenizer()
    text = np.random.default_rng(4).integers(0, 256, 500).astype(np.uint8)
    with pytest.raises(BDHError, match="fewer than the length 1200"):
        loss_by_position(model, text, tokenizer, length=1200)
    result = loss_by_position(
        model, text, tokenizer, length=1200, sequences=2, repeat=True, chunk_size=256
    )
    assert (
        result.starts == [0, 250]
        and result.repeat_from == 500
        and result.to_dict()["repeats"] is True
    )
    rows = np.stack(
        [np.tile(text, 4)[s : s + 1200] for s in result.starts]
    )  # the text after itself
    expected = _parallel_position_losses(model, rows)
    assert result.buckets[-1].loss == pytest.approx(expected[:, 1023:].mean(), rel=1e-9)
    tokens, source = concatenate_texts([("a", text), ("b", text[:100])])
    assert len(tokens) == 600 and source == "a (500 tokens) + b (100 tokens)"


def test_sequence_offsets_and_refusals() -> None:
    assert sequence_starts(1000, 1000, 1) == [0]
    assert sequence_starts(1000, 10, 4) == [0, 330, 660, 990]
    assert sequence_starts(100, 1000, 3, repeat=True) == [0, 33, 66]
    with pytest.raises(BDHError, match="only 2 distinct sequences"):
        sequence_starts(1000, 999, 3)
    with pytest.raises(BDHError, match="two tokens"):
        sequence_starts(1000, 1, 1)
    with pytest.raises(BDHError, match="at least one sequence"):
        sequence_starts(1000, 10, 0)
    model, byte = bdh.BDH(bdh.preset("tiny")), bdh.ByteTokenizer()
    with pytest.raises(BDHError, match=r"\[T\] or \[K, T\]"):
        score_sequence(model, np.zeros((2, 2, 8), dtype=np.uint8), byte)
    with pytest.raises(BDHError, match=r"needs \(2, 7\)"):
        score_sequence(model, np.zeros((2, 8), dtype=np.uint8), byte, position_losses=np.empty(7))
    gpt = build_model_from_preset("gpt", "tiny", vocab_size=256)
    with pytest.raises(BDHError, match="at most 256 tokens"):
        loss_by_position(gpt, np.arange(600, dtype=np.uint16) % 256, bdh.ByteTokenizer())


def test_memory_stays_one_chunk_of_logits_at_any_length(monkeypatch) -> None:
    model = bdh.BDH(bdh.preset("tiny")).eval()
    tokens = np.random.default_rng(5).integers(0, 256, 8000).astype(np.uint8)
    calls, prefill = [], model.prefill

    def spy(idx, state=None, all_logits=True):
        logits, state = prefill(idx, state, all_logits)
        calls.append(tuple(logits.shape))
        return logits, state

    monkeypatch.setattr(model, "prefill", spy)
    # The RoPE phasor cache grows with the positions seen, up to a fixed bound; filled to it
    # first, so what is measured is what depends on the length.
    half = model.config.neurons_per_head // 2
    bound = min(ROPE_CACHE_MAX_POSITIONS, ROPE_CACHE_MAX_ELEMENTS // half)
    model.attn.phasors(0, bound)
    assert model.attn.phasors(0, 1).untyped_storage().nbytes() == bound * half * 8
    largest = {}
    for length in (1000, 4000):
        calls.clear()
        with torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
        ) as prof:
            result = loss_by_position(
                model, tokens, bdh.ByteTokenizer(), length=length, sequences=2, chunk_size=256
            )
        largest[length] = max(e.cpu_memory_usage for e in prof.events())
    assert result.overall.tokens == 2 * 3999
    assert (
        len(calls) == 16
        and all(shape[:2] == (2, 256) for shape in calls[:-1])
        and calls[-1][1] == 3999 - 15 * 256
    )
    # The largest tensor allocated does not grow with the length, and stays below the
    # logits of the sequences ([2, T, vocab] fp32: 8 MB at T = 4000).
    assert largest[4000] == largest[1000] < 2 * 3999 * 256 * 4 / 2


def test_several_results_in_one_figure(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from bdh.evaluation_plot import plot_loss_by_position

    text = np.random.default_rng(6).integers(0, 256, 400).astype(np.uint8)
    results = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = bdh.BDH(bdh.preset("tiny")).eval()
        results[f"seed {seed}"] = loss_by_position(
            model, text, bdh.ByteTokenizer(), length=600, repeat=True
        )
    out = plot_loss_by_position(results, tmp_path / "two.png", title="two models")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(BDHError, match="nothing to plot"):
        plot_loss_by_position({}, tmp_path / "none.png")

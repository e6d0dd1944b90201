"""Validation loss and bits per byte on a fixed, deterministic slice of a corpus.

`evaluate` scores independent windows with the parallel forward; `score_sequence` reads
a whole text as one sequence through the model's recurrent state, in bounded memory;
`loss_by_position` does the same for K sequences at once and reports the loss by
position bucket (0-256, 256-1k, 1k-4k, ...), to show whether a model uses far context.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

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
    if tokenizer.kind == "bpe":
        return np.array(tokenizer.byte_lengths(), dtype=np.int64)
    return np.array([len(c.encode("utf-8")) for c in tokenizer.chars], dtype=np.int64)


class _Totals:
    """Summed loss, targets and their bytes, turned into an `EvalResult`."""

    def __init__(self, tokenizer: Tokenizer):
        self.byte_len = _byte_lengths(tokenizer)
        self.loss, self.tokens, self.bytes = 0.0, 0, 0

    def add(self, logits: Tensor, targets: Tensor) -> Tensor:
        """Count logits [..., vocab] against targets [...]; returns each target's loss [...]."""
        if logits.dtype not in (torch.float32, torch.float64):
            logits = logits.float()  # half-precision logits get an fp32 softmax
        losses = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none"
        )
        self.loss += losses.sum(dtype=torch.float64).item()
        self.tokens += targets.numel()
        self.bytes += int(self.byte_len[targets.cpu().numpy()].sum())
        return losses.view(targets.shape)

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
    position_losses: np.ndarray | None = None,
) -> EvalResult:
    """Loss of `tokens` read as one sequence, each token predicted from its whole prefix.

    tokens: [T], or [K, T] for K independent sequences read side by side (a batch of K
    through the state, each from a zero state); the result is over all of them.
    Chunks are prefilled onto the recurrent state of everything before them, so memory is
    the state plus one chunk's logits whatever the length (16k, 64k, 256k tokens...).
    `position_losses`, [K, n_targets] (or [n_targets]), is filled with the loss of every
    target: entry t is the token at position t + 1 predicted from the t + 1 before it.
    Models whose state is bounded by a context window (the GPT baseline) refuse lengths
    beyond it.
    """
    rows = np.atleast_2d(np.asarray(tokens))
    if rows.ndim != 2:
        raise BDHError(f"tokens must be [T] or [K, T], got shape {rows.shape}")
    total = rows.shape[1] - 1
    n_targets = total if max_tokens is None else min(total, max_tokens)
    if n_targets < 1:
        raise BDHError("scoring needs at least two tokens")
    context = max_context(model)
    if context is not None and n_targets > context:
        raise BDHError(
            f"this model sees at most {context} tokens, so it cannot score {n_targets} as one "
            "sequence; score it in windows instead (bdh eval without --whole)"
        )
    if position_losses is not None:
        if position_losses.ndim == 1:
            position_losses = position_losses[None]  # a view: writes reach the caller's array
        if position_losses.shape != (rows.shape[0], n_targets):
            raise BDHError(
                f"position_losses is {position_losses.shape}, needs {(rows.shape[0], n_targets)}"
            )
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    state = model.init_state(rows.shape[0])
    totals = _Totals(tokenizer)
    try:
        for start in range(0, n_targets, chunk_size):
            end = min(start + chunk_size, n_targets)
            window = torch.as_tensor(rows[:, start : end + 1].astype(np.int64), device=device)
            logits, state = model.prefill(window[:, :-1], state)
            losses = totals.add(logits, window[:, 1:])
            if position_losses is not None:
                position_losses[:, start:end] = losses.cpu().numpy()
    finally:
        model.train(was_training)
    return totals.result()


# ---- loss by position ------------------------------------------------------------------

FIRST_BUCKET = 256  # bucket edges are FIRST_BUCKET * BUCKET_GROWTH**k
BUCKET_GROWTH = 4
CURVE_POINTS_PER_OCTAVE = 8  # the fine curve: 8 points per doubling of the position


def position_buckets(length: int, edges: Sequence[int] | None = None) -> list[tuple[int, int]]:
    """Half-open position ranges [start, end) covering a sequence of `length` tokens.

    `edges` are the boundaries between buckets (default 256, 1k, 4k, 16k, ...: powers of
    4 from 256); those at or past `length` are dropped and the last bucket ends at
    `length`. Position p is the token at index p, predicted from the p tokens before it,
    so position 0 is never scored and the first bucket holds 255 targets.
    """
    if length < 2:
        raise BDHError(f"a sequence needs at least two tokens, got {length}")
    if edges is None:
        edges, edge = [], FIRST_BUCKET
        while edge < length:
            edges.append(edge)
            edge *= BUCKET_GROWTH
    edges = [int(e) for e in edges]
    if any(e < 2 for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise BDHError(f"bucket edges must be increasing integers of at least 2, got {edges}")
    bounds = [0, *(e for e in edges if e < length), length]
    return list(zip(bounds, bounds[1:]))


def curve_bins(length: int, per_octave: int = CURVE_POINTS_PER_OCTAVE) -> list[tuple[int, int]]:
    """Position ranges [start, end) from position 1, geometrically wider, ending at `length`.

    Evenly spaced on a log axis: single positions at first, then ever more positions (and
    less noise) per point far into the sequence.
    """
    if per_octave < 1:
        raise BDHError(f"the curve needs at least one point per octave, got {per_octave}")
    bounds, i = [1], 1
    while bounds[-1] < length:
        bounds.append(min(max(round(2 ** (i / per_octave)), bounds[-1] + 1), length))
        i += 1
    return list(zip(bounds, bounds[1:]))


def _position_label(position: int) -> str:
    return f"{position // 1024}k" if position >= 1024 and position % 1024 == 0 else str(position)


@dataclass
class BucketLoss:
    start: int  # first position (token index in its sequence)
    end: int  # one past the last position
    loss: float  # mean cross-entropy, nats per token
    bits_per_byte: float
    tokens: int  # targets in the bucket, over all sequences

    @property
    def label(self) -> str:
        return f"{_position_label(self.start)}-{_position_label(self.end)}"


@dataclass
class PositionalLoss:
    """Loss by position of K sequences of `length` tokens, each read from a zero state."""

    source: str  # what the text is
    text_tokens: int  # tokens of the text the sequences were taken from
    length: int  # tokens per sequence
    starts: list[int]  # offset of each sequence into the text
    repeat_from: int | None  # positions from here on read the text again (None: never)
    overall: EvalResult  # over every target of every sequence, as `score_sequence`
    buckets: list[BucketLoss]
    curve: list[BucketLoss]  # the same over `curve_bins`: finer, for plotting

    @property
    def sequences(self) -> int:
        return len(self.starts)

    @property
    def repeats(self) -> bool:
        return self.repeat_from is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "text_tokens": self.text_tokens,
            "repeats": self.repeats,
            "repeat_from_position": self.repeat_from,
            "length": self.length,
            "sequences": self.sequences,
            "starts": self.starts,
            "overall": asdict(self.overall),
            "buckets": [{"label": b.label, **asdict(b)} for b in self.buckets],
            "curve": [asdict(point) for point in self.curve],
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> PositionalLoss:
        """The inverse of `to_dict` (extra keys, such as a checkpoint's path, are ignored)."""

        def points(key: str) -> list[BucketLoss]:
            fields = ("start", "end", "loss", "bits_per_byte", "tokens")
            return [BucketLoss(*(p[f] for f in fields)) for p in record[key]]

        return cls(
            source=record["source"],
            text_tokens=record["text_tokens"],
            length=record["length"],
            starts=list(record["starts"]),
            repeat_from=record["repeat_from_position"],
            overall=EvalResult(**record["overall"]),
            buckets=points("buckets"),
            curve=points("curve"),
        )


def sequence_starts(
    text_tokens: int, length: int, sequences: int, repeat: bool = False
) -> list[int]:
    """Offsets of `sequences` reads of `length` tokens, spread evenly over the text.

    A text shorter than `length` is refused unless `repeat`: then each sequence reads it
    cyclically (end followed by start) from an offset spread over one cycle.
    """
    if length < 2:
        raise BDHError(f"a sequence needs at least two tokens, got length {length}")
    if sequences < 1:
        raise BDHError(f"need at least one sequence, got {sequences}")
    if length > text_tokens:
        if not repeat:
            raise BDHError(
                f"the text has {text_tokens} tokens, fewer than the length {length}; read it "
                "again (--repeat, repeat=True) or append more text (bdh eval --append)"
            )
        if sequences > text_tokens:
            raise BDHError(f"a text of {text_tokens} tokens has no {sequences} distinct offsets")
        return [i * text_tokens // sequences for i in range(sequences)]
    room = text_tokens - length  # starts 0..room keep a sequence inside the text
    if sequences > room + 1:
        raise BDHError(
            f"a text of {text_tokens} tokens holds only {room + 1} distinct sequences of "
            f"{length}; ask for fewer sequences or a shorter length"
        )
    return [i * room // (sequences - 1) if sequences > 1 else 0 for i in range(sequences)]


def loss_by_position(
    model: nn.Module,
    tokens: np.ndarray,
    tokenizer: Tokenizer,
    length: int | None = None,
    sequences: int = 1,
    buckets: Sequence[int] | None = None,
    *,
    repeat: bool = False,
    source: str = "tokens",
    chunk_size: int = SCORE_CHUNK,
    curve_per_octave: int = CURVE_POINTS_PER_OCTAVE,
) -> PositionalLoss:
    """Loss as a function of position in `sequences` reads of `length` tokens of `tokens`.

    Each sequence starts from a zero state at an offset into the text (`sequence_starts`)
    and the K of them are read side by side through the recurrent state by
    `score_sequence`, so memory is the state, one chunk's logits and K * length floats.
    `length` defaults to the whole text. `buckets`: boundaries as in `position_buckets`.
    With `repeat`, a text shorter than `length` is read cyclically; `repeat_from` then
    says where the second reading starts (a text read twice is easier the second time).
    """
    text = np.asarray(tokens)
    n = len(text)
    length = n if length is None else length
    ranges = position_buckets(length, buckets)
    curve_ranges = curve_bins(length, curve_per_octave)
    starts = sequence_starts(n, length, sequences, repeat)
    if length <= n:
        rows = np.stack([text[s : s + length] for s in starts])
    else:
        rows = np.stack([text[(s + np.arange(length)) % n] for s in starts])
    losses = np.empty((len(starts), length - 1), dtype=np.float64)
    overall = score_sequence(model, rows, tokenizer, chunk_size=chunk_size, position_losses=losses)
    # Column j of `losses` is position j + 1; sums over sequences are all the buckets need.
    loss_sum = np.concatenate([[0.0], losses.sum(axis=0)])
    byte_len = _byte_lengths(tokenizer)
    byte_sum = np.zeros(length, dtype=np.int64)
    for row in rows:
        byte_sum[1:] += byte_len[row[1:]]

    def mean(a: int, b: int) -> tuple[float, float, int]:
        count = (b - max(a, 1)) * len(starts)  # position 0 has nothing to predict it from
        total, n_bytes = float(loss_sum[a:b].sum()), int(byte_sum[a:b].sum())
        return total / max(count, 1), total / math.log(2) / max(n_bytes, 1), count

    return PositionalLoss(
        source=source,
        text_tokens=n,
        length=length,
        starts=starts,
        repeat_from=n if length > n else None,
        overall=overall,
        buckets=[BucketLoss(a, b, *mean(a, b)) for a, b in ranges],
        curve=[BucketLoss(a, b, *mean(a, b)) for a, b in curve_ranges],
    )


def concatenate_texts(parts: Sequence[tuple[str, np.ndarray]]) -> tuple[np.ndarray, str]:
    """Join named token arrays into one text; the name lists each part and its tokens."""
    if not parts:
        raise BDHError("no text to join")
    tokens = np.concatenate([np.asarray(t) for _, t in parts])
    return tokens, " + ".join(f"{name} ({len(t)} tokens)" for name, t in parts)

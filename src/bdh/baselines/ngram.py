"""Count models (unigram, bigram, trigram): the floors a language model should beat.

An order-n model predicts token t_i from the n - 1 before it with additive smoothing,
    P(t_i | c) = (count(c, t_i) + k) / (count(c) + k V),
counted on the training split. Its loss is the mean of -log P over a token stream.
"""

from __future__ import annotations

import math

import numpy as np

from bdh.errors import DataError

# Additive smoothing of the floors; 0.1 keeps unseen trigrams likely enough.
SMOOTHING = 0.1


def _keys(tokens: np.ndarray, order: int, vocab_size: int) -> np.ndarray:
    """One integer per n-gram of `tokens` (the n-gram ending at each position from n-1)."""
    tokens = tokens.astype(np.int64)
    n = len(tokens) - order + 1
    keys = np.zeros(n, dtype=np.int64)
    for j in range(order):
        keys = keys * vocab_size + tokens[j : j + n]
    return keys


def _counts(keys: np.ndarray, table: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    values, counts = table
    where = np.searchsorted(values, keys).clip(max=len(values) - 1)
    return np.where(values[where] == keys, counts[where], 0)


def ngram_loss(
    train: np.ndarray, val: np.ndarray, order: int, vocab_size: int, smoothing: float = SMOOTHING
) -> float:
    """Mean loss (nats/token) on `val` of the order-`order` count model of `train`.

    Every token of val from position order-1 on is predicted (from the order-1 before it).
    """
    if order < 1 or smoothing <= 0:
        raise DataError(f"need order >= 1 and smoothing > 0, got {order} and {smoothing}")
    if len(train) < order or len(val) < order:
        raise DataError(f"an order-{order} model needs at least {order} tokens per split")
    full = np.unique(_keys(train, order, vocab_size), return_counts=True)
    target_keys = _keys(val, order, vocab_size)
    hits = _counts(target_keys, full)
    if order == 1:
        context = np.full(len(target_keys), len(train))
    else:
        # count(c): n-grams of train whose first n-1 tokens are c (the last n-gram's context
        # has no successor in train and is not counted)
        prefixes = np.unique(_keys(train[:-1], order - 1, vocab_size), return_counts=True)
        context = _counts(target_keys // vocab_size, prefixes)
    p = (hits + smoothing) / (context + smoothing * vocab_size)
    return float(-np.log(p).mean())


def ngram_floors(
    train: np.ndarray, val: np.ndarray, vocab_size: int, orders: tuple[int, ...] = (1, 2, 3)
) -> dict[str, float]:
    """{"unigram": ..., "bigram": ..., "trigram": ...}: the losses of `ngram_loss` on val."""
    names = {1: "unigram", 2: "bigram", 3: "trigram"}
    return {names.get(n, f"{n}-gram"): ngram_loss(train, val, n, vocab_size) for n in orders}


def uniform_loss(vocab_size: int) -> float:
    """Loss of the uniform distribution: log V."""
    return math.log(vocab_size)

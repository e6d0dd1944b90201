"""A corpus split as a `torch.utils.data.Dataset` of windows, for transformers' `Trainer`."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from bdh.errors import DataError


class CorpusWindows(Dataset):
    """Consecutive windows of `block_size` tokens of `tokens` (a split of `bdh.data.TokenCorpus`),
    each {"input_ids", "labels"} with labels = input_ids (the model shifts them)."""

    def __init__(self, tokens: np.ndarray, block_size: int) -> None:
        if block_size < 2 or len(tokens) < block_size:
            raise DataError(
                f"{len(tokens)} tokens make no window of {block_size} (block size >= 2)"
            )
        self.tokens = tokens
        self.block_size = block_size

    def __len__(self) -> int:
        return len(self.tokens) // self.block_size

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        start = i * self.block_size
        ids = torch.from_numpy(
            np.asarray(self.tokens[start : start + self.block_size], dtype=np.int64)
        )
        return {"input_ids": ids, "labels": ids.clone()}

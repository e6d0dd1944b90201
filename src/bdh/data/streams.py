"""Where each row of a training batch reads: random windows, or contiguous streams.

Both schedules are pure functions of (seed, step), so a resumed run, or a run on another
number of ranks, reads exactly the windows the uninterrupted run would have read.

- `random_window_starts`: independent windows, each from a fresh zero state (the official
  recipe).
- `StreamSchedule`: every row of the global batch reads its own contiguous stream, step
  k+1 continuing where step k ended, so the recurrent state can be carried from one step
  to the next (truncated BPTT, paper App. B.2). A stream restarts, from a zero state, after
  `reset_tokens` tokens at a new random place; with no reset length, row r reads the r-th
  of B equal stripes of the corpus to its end and then starts the stripe again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bdh.errors import ConfigError

# Generators of different steps (or stream segments) of one seed must not share a seed.
SEED_STRIDE = 1_000_003


def seeded_starts(seed: int, index: int, count: int, high: int) -> list[int]:
    """`count` starts uniform in [0, high), from a generator seeded by (seed, index)."""
    generator = torch.Generator().manual_seed(seed * SEED_STRIDE + index)
    return torch.randint(high, (count,), generator=generator).tolist()


def random_window_starts(
    seed: int, step: int, batch_size: int, n_tokens: int, block_size: int
) -> list[int]:
    """Window starts of the global batch of `step` for independent windows."""
    return seeded_starts(seed, step, batch_size, n_tokens - block_size - 1)


@dataclass(frozen=True)
class StreamSchedule:
    """Contiguous streams for carried-state training over a split of `n_tokens` tokens."""

    n_tokens: int
    batch_size: int
    block_size: int
    seed: int
    reset_tokens: int | None = None  # stream length before a restart; None: whole stripes

    def __post_init__(self) -> None:
        if self.reset_tokens is not None:
            if self.reset_tokens < self.block_size or self.reset_tokens % self.block_size:
                raise ConfigError(
                    f"the reset length must be a positive multiple of the block size "
                    f"{self.block_size}, got {self.reset_tokens}"
                )
            if self.reset_tokens + 1 >= self.n_tokens:
                raise ConfigError(
                    f"the reset length {self.reset_tokens} needs a training split longer than "
                    f"its {self.n_tokens} tokens"
                )
        elif self.stripe_tokens < self.block_size + 1:
            raise ConfigError(
                f"the training split ({self.n_tokens} tokens) is too short for "
                f"{self.batch_size} streams of at least one block of {self.block_size} tokens"
            )

    @property
    def stripe_tokens(self) -> int:
        """Tokens of one row's stripe when streams run to the stripe's end."""
        return (self.n_tokens - 1) // self.batch_size

    @property
    def steps_per_stream(self) -> int:
        """Steps between two restarts of every stream."""
        length = self.reset_tokens if self.reset_tokens is not None else self.stripe_tokens - 1
        return length // self.block_size

    def starts(self, step: int) -> list[int]:
        """Window start of every row of the global batch at `step`."""
        segment, offset = divmod(step, self.steps_per_stream)
        if self.reset_tokens is None:
            origins = [row * self.stripe_tokens for row in range(self.batch_size)]
        else:
            origins = seeded_starts(
                self.seed, segment, self.batch_size, self.n_tokens - self.reset_tokens - 1
            )
        return [origin + offset * self.block_size for origin in origins]

    def restarts(self, step: int) -> bool:
        """Whether the streams begin anew at `step` (from a zero state)."""
        return step % self.steps_per_stream == 0

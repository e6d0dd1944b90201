"""Row schedules of the training batch: random windows and carried-state streams."""

import pytest
import torch

from bdh.data.streams import StreamSchedule, random_window_starts
from bdh.errors import ConfigError


def test_random_window_starts_are_the_seeded_draw():
    generator = torch.Generator().manual_seed(7 * 1_000_003 + 3)
    expected = torch.randint(1000 - 16 - 1, (5,), generator=generator).tolist()
    assert random_window_starts(7, 3, 5, 1000, 16) == expected


@pytest.mark.parametrize("reset_tokens", [None, 64])
def test_streams_continue_step_after_step_until_a_restart(reset_tokens):
    schedule = StreamSchedule(
        n_tokens=2000, batch_size=4, block_size=16, seed=1, reset_tokens=reset_tokens
    )
    steps = schedule.steps_per_stream
    assert steps == (64 // 16 if reset_tokens else ((2000 - 1) // 4 - 1) // 16)
    for step in range(3 * steps):
        if schedule.restarts(step + 1):
            continue
        now, after = schedule.starts(step), schedule.starts(step + 1)
        assert [a - b for a, b in zip(after, now)] == [16] * 4
    assert [s for s in range(3 * steps) if schedule.restarts(s)] == [0, steps, 2 * steps]


def test_every_window_fits_its_split_and_stripes_do_not_overlap():
    schedule = StreamSchedule(n_tokens=1001, batch_size=3, block_size=10, seed=0)
    windows = [schedule.starts(step) for step in range(schedule.steps_per_stream)]
    for row in range(3):
        first, last = windows[0][row], windows[-1][row]
        assert first == row * schedule.stripe_tokens
        assert last + 10 + 1 <= (row + 1) * schedule.stripe_tokens <= 1001
    reset = StreamSchedule(n_tokens=300, batch_size=8, block_size=10, seed=3, reset_tokens=50)
    for step in range(40):
        assert all(0 <= s and s + 10 + 1 <= 300 for s in reset.starts(step))


def test_restarted_streams_start_elsewhere_and_depend_only_on_seed_and_step():
    a = StreamSchedule(n_tokens=10_000, batch_size=4, block_size=8, seed=5, reset_tokens=32)
    b = StreamSchedule(n_tokens=10_000, batch_size=4, block_size=8, seed=5, reset_tokens=32)
    assert [a.starts(s) for s in range(12)] == [b.starts(s) for s in range(12)]
    assert a.starts(0) != a.starts(4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(n_tokens=1000, batch_size=2, block_size=16, reset_tokens=20),
            "multiple of the block size",
        ),
        (
            dict(n_tokens=1000, batch_size=2, block_size=16, reset_tokens=0),
            "multiple of the block size",
        ),
        (dict(n_tokens=100, batch_size=2, block_size=16, reset_tokens=128), "longer than"),
        (dict(n_tokens=100, batch_size=8, block_size=16), "too short for 8 streams"),
    ],
)
def test_impossible_schedules_are_refused_in_one_line(kwargs, message):
    with pytest.raises(ConfigError, match=message) as error:
        StreamSchedule(seed=0, **kwargs)
    assert "\n" not in str(error.value)

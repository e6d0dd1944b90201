"""The recurrence runs many tiny ops per token; on a busy 2-core machine two intra-op
threads spin against each other, so these tests run single-threaded."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

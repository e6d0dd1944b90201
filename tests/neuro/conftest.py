"""The recurrence runs many tiny ops per token; on a busy 2-core machine two intra-op
threads spin against each other, so these tests run single-threaded."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _single_thread(single_thread):
    """Every test here runs on one torch thread."""

"""The CPU buffer cache (bdh.buffers): same results, reused pages, freed on release."""

from __future__ import annotations

import contextlib
import copy
import resource
import threading

import pytest
import torch

from bdh import buffers
from bdh.buffers import buffer_stats, cached_bytes, release_cpu_buffers, reuse_cpu_buffers
from bdh.config import preset
from bdh.experiments.bench.measure import current_rss
from bdh.model import BDH
from bdh.ops import cpp
from tests.conftest import require_cpp_kernel

BIG = 16 << 20  # floats: 64 MiB, above glibc's largest mmap threshold (32 MiB)


@pytest.fixture(autouse=True)
def kernel():
    module = buffers._kernel()
    require_cpp_kernel(module is not None, "buffer cache")
    release_cpu_buffers()
    yield module
    release_cpu_buffers()


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _touch_big_buffers(n: int) -> None:
    for _ in range(n):
        torch.empty(BIG).fill_(1.0)  # allocated, every page written, freed


def _train(steps: int, reuse: bool) -> tuple[list[float], dict[str, torch.Tensor]]:
    config = preset("tiny")  # dropout on: the random masks must match too
    torch.manual_seed(0)
    model = BDH(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    idx = torch.randint(0, config.vocab_size, (4, 32))
    targets = torch.randint(0, config.vocab_size, (4, 32))
    losses = []
    for _ in range(steps):
        with reuse_cpu_buffers(release_on_exit=False) if reuse else contextlib.nullcontext():
            _, loss = model(idx, targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses, copy.deepcopy(model.state_dict())


def test_training_with_the_cache_is_bitwise_the_same() -> None:
    plain_losses, plain_weights = _train(4, reuse=False)
    hits = buffer_stats().hits
    losses, weights = _train(4, reuse=True)
    assert buffer_stats().hits - hits > 100  # the steps did run on reused buffers
    assert losses == plain_losses
    assert weights.keys() == plain_weights.keys()
    for name, tensor in weights.items():
        assert torch.equal(tensor, plain_weights[name]), name


def test_reuse_avoids_the_page_faults_of_fresh_buffers() -> None:
    before = _faults()
    _touch_big_buffers(4)
    plain = _faults() - before
    assert plain > 4 * BIG * 4 // 4096 // 2  # glibc maps each one afresh: a fault per page
    with reuse_cpu_buffers():
        _touch_big_buffers(1)
        hits, before = buffer_stats().hits, _faults()
        _touch_big_buffers(4)
        reused = _faults() - before
        assert buffer_stats().hits - hits >= 4
    assert reused * 20 < plain


def test_release_frees_the_cache_and_its_memory() -> None:
    with reuse_cpu_buffers(release_on_exit=False) as active:
        assert active
        _touch_big_buffers(1)
    assert not buffer_stats().enabled
    assert cached_bytes() == BIG * 4
    rss = current_rss()
    assert release_cpu_buffers() == BIG * 4
    assert cached_bytes() == 0
    assert rss - current_rss() > BIG * 4 * 0.9


def test_leaving_the_context_frees_the_cache_by_default() -> None:
    with reuse_cpu_buffers():
        _touch_big_buffers(1)
        assert cached_bytes() == BIG * 4
    assert cached_bytes() == 0


def test_disabled_the_allocator_neither_counts_nor_caches() -> None:
    stats = buffer_stats()
    _touch_big_buffers(2)
    after = buffer_stats()
    assert not after.enabled and after.cached_bytes == 0
    assert (after.hits, after.misses, after.in_use) == (stats.hits, stats.misses, stats.in_use)


def test_a_buffer_freed_after_the_context_is_freed_not_cached() -> None:
    in_use = buffer_stats().in_use
    with reuse_cpu_buffers(release_on_exit=False):
        kept = torch.empty(BIG)
    assert buffer_stats().in_use == in_use + 1
    del kept
    assert buffer_stats().in_use == in_use and cached_bytes() == 0


def test_the_cap_bounds_the_cache() -> None:
    with reuse_cpu_buffers(max_cached_bytes=BIG * 4 + 100):
        first, second = torch.empty(BIG), torch.empty(BIG)
        del first, second  # only one fits under the cap
        assert cached_bytes() == BIG * 4
        assert buffer_stats().max_cached_bytes == BIG * 4 + 100


def test_contexts_nest() -> None:
    with reuse_cpu_buffers(max_cached_bytes=1 << 30):
        with reuse_cpu_buffers(max_cached_bytes=1 << 20):
            assert buffer_stats().max_cached_bytes == 1 << 20
        stats = buffer_stats()
        assert stats.enabled and stats.max_cached_bytes == 1 << 30
        _touch_big_buffers(1)
        assert cached_bytes() == BIG * 4  # the inner exit did not release
    assert not buffer_stats().enabled and cached_bytes() == 0


def test_threads_allocating_at_once_keep_the_books_straight() -> None:
    in_use = buffer_stats().in_use

    def work() -> None:
        for n in range(200):
            torch.ones(1000 + n % 7).sum()

    with reuse_cpu_buffers():
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert buffer_stats().in_use == in_use
        assert cached_bytes() > 0


def test_without_a_kernel_the_context_does_nothing(monkeypatch) -> None:
    monkeypatch.setenv(cpp.DISABLE_ENV, "1")
    monkeypatch.delitem(cpp._loaded, buffers.NAME)
    with reuse_cpu_buffers() as active:
        assert not active
        _touch_big_buffers(1)
        assert buffer_stats() == buffers.BufferStats(False, 0, 0, 0, 0, 0)
    assert release_cpu_buffers() == 0

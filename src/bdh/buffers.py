"""Reusing CPU tensor buffers across training steps (buffers_cpu.cpp).

Each step of training on CPU allocates the same activation buffers again; glibc maps every
large one fresh and unmaps it on free, so the step faults all of its pages in again.
Inside `reuse_cpu_buffers()` freed buffers are kept, by exact size, and handed out again:
the results are bitwise the same, only the memory is recycled. The cache belongs to this
package's C++ allocator (installed as torch's CPU allocator on first use, delegating to the
default one when off), so unlike glibc's process-wide `mallopt` it can be switched off
again: outside the context, allocation is the default's. A buffer allocated inside and
freed outside is freed, not cached.

Where the C++ allocator cannot be built (no compiler, or BDH_NO_CPP_KERNELS=1) the context
does nothing and yields False.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from bdh.ops.cpp import load_kernel

NAME = "bdh_buffers_cpu"


def _kernel() -> ModuleType | None:
    return load_kernel(NAME, Path(__file__).with_name("buffers_cpu.cpp"))


def default_cache_cap() -> int:
    """A quarter of the machine's memory (8 GiB where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 8 << 30


@dataclass(frozen=True)
class BufferStats:
    """The cache's state: `hits` and `misses` count allocations made while it was on."""

    enabled: bool
    max_cached_bytes: int
    cached_bytes: int
    hits: int
    misses: int
    in_use: int  # buffers handed out while on, not yet freed


def buffer_stats() -> BufferStats:
    kernel = _kernel()
    return BufferStats(*kernel.stats()) if kernel is not None else BufferStats(False, 0, 0, 0, 0, 0)


def cached_bytes() -> int:
    """Bytes of freed buffers the cache holds for reuse."""
    return buffer_stats().cached_bytes


def release_cpu_buffers() -> int:
    """Free every cached buffer (buffers in use are untouched); returns the bytes freed."""
    kernel = _kernel()
    return kernel.release() if kernel is not None else 0


@contextlib.contextmanager
def reuse_cpu_buffers(
    max_cached_bytes: int | None = None, *, release_on_exit: bool = True
) -> Iterator[bool]:
    """Cache freed CPU buffers for reuse inside the context; yields whether it is active.

    max_cached_bytes caps the cache (default `default_cache_cap()`): a buffer freed while
    the cache is full is freed. On exit the previous state comes back (contexts nest);
    leaving the outermost one frees the cache unless release_on_exit is False (keep it
    for the next context, e.g. the next step of an interleaved benchmark).
    """
    kernel = _kernel()
    if kernel is None:
        yield False
        return
    cap = default_cache_cap() if max_cached_bytes is None else max_cached_bytes
    was_enabled, previous_cap = kernel.stats()[:2]
    active = kernel.enable(cap)
    try:
        yield active
    finally:
        if was_enabled:
            kernel.enable(previous_cap)
        else:
            kernel.disable()
            if release_on_exit:
                kernel.release()

"""Timing and peak memory of a call.

CPU peak memory is the process's peak resident set size (RSS) during the call minus the
RSS just before it: tracemalloc does not see PyTorch's allocations, and RSS does. On Linux
the kernel keeps the peak (VmHWM in /proc/self/status, reset through
/proc/self/clear_refs), which is exact and costs nothing while the call runs. Elsewhere a
background thread samples the RSS every `interval` seconds and can miss shorter peaks; it
also slows what it measures (1.23x for batch-1 decoding on 2 cores, which takes the
interpreter lock between small operations: benchmarks/sampler_overhead.py), so it is only
the fallback. Before each
measurement freed heap pages are handed back to the OS (`malloc_trim`), so back-to-back
measurements in one process do not hide behind memory an earlier one left cached; for a
clean slate `bdh bench memory` measures each case in a fresh child process instead.
On CUDA the peak is `torch.cuda.max_memory_allocated` above the allocation before the call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss() -> int:
    """Resident set size of this process in bytes (0 where /proc is unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return 0


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter to the current RSS; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _peak_rss() > 0
    except OSError:
        return False


def _peak_rss() -> int:
    """Peak RSS since the last reset, in bytes (VmHWM), or 0 where unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Measurement:
    seconds: float
    peak_bytes: int  # above the memory in use just before the call
    result: Any = None


class _RSSSampler(threading.Thread):
    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = current_rss()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, current_rss())
            self._stop_event.wait(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, current_rss())
        return self.peak


def release_free_memory() -> None:
    """Return freed heap pages to the OS (glibc `malloc_trim`), so that RSS measured next
    starts from what is really in use rather than from what an earlier call left cached."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")  # slow (may run ldconfig): looked up once
    return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Context manager tracking peak memory above the memory in use on entry.

    `peak()` may be read while inside (the peak so far), and after exit (the final peak).
    A context opened inside another samples instead of resetting the kernel's counter,
    which the outer one reads.
    """

    _open_on_cpu = 0

    def __init__(self, device: torch.device | str = "cpu", interval: float = 0.001):
        self.device = torch.device(device)
        self.interval = interval
        self._sampler: _RSSSampler | None = None
        self._before = 0
        self._final: int | None = None

    def __enter__(self) -> PeakMemory:
        synchronize(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._before = torch.cuda.memory_allocated(self.device)
        else:
            release_free_memory()
            self._before = current_rss()
            if PeakMemory._open_on_cpu or not _reset_peak_rss():
                self._sampler = _RSSSampler(self.interval)
                self._sampler.start()
            PeakMemory._open_on_cpu += 1
        return self

    def peak(self) -> int:
        if self._final is not None:
            return self._final
        if self.device.type == "cuda":
            return max(torch.cuda.max_memory_allocated(self.device) - self._before, 0)
        if self._sampler is None:
            return max(_peak_rss() - self._before, 0)
        return max(max(self._sampler.peak, current_rss()) - self._before, 0)

    def __exit__(self, *exc: object) -> None:
        synchronize(self.device)
        if self._sampler is not None:
            self._sampler.stop()
        self._final = self.peak()
        if self.device.type != "cuda":
            PeakMemory._open_on_cpu -= 1


def measure(fn: Callable[[], Any], device: torch.device | str = "cpu") -> Measurement:
    """Run fn once: wall seconds and peak memory above the memory in use at the start."""
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        seconds = time.perf_counter() - start
    return Measurement(seconds, memory.peak(), result)

"""Live training for the app: `bdh train` in a child process, its metrics read as they land."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bdh.train.metrics import read_metrics
from bdh.train.state import METRICS_FILE


def training_command(
    model: str, steps: int, batch_size: int, block_size: int, run_dir: Path
) -> list[str]:
    return [
        sys.executable, "-m", "bdh", "train", "--model", model, "--preset", "tiny",
        "--steps", str(steps), "--batch-size", str(batch_size), "--block-size", str(block_size),
        "--eval-every", str(max(steps // 5, 1)), "--eval-tokens", "8192", "--log-every", "1",
        "--device", "cpu", "--no-progress", "--out", str(run_dir), "--force",
    ]  # fmt: skip


def start_run(
    model: str, steps: int, batch_size: int, block_size: int, root: Path
) -> tuple[subprocess.Popen, Path, list[str]]:
    """Start a run in a new directory under `root`; its output goes to a log beside it."""
    run_dir = root / time.strftime("%Y%m%d-%H%M%S")
    cmd = training_command(model, steps, batch_size, block_size, run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = open(run_dir.parent / f"{run_dir.name}.log", "w")  # noqa: SIM115  # the child owns it
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), run_dir, cmd


def stop_run(proc: subprocess.Popen) -> None:
    """SIGTERM: the run saves a checkpoint and exits."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def run_status(proc: subprocess.Popen | None) -> str:
    code = None if proc is None else proc.poll()
    return "running" if code is None else ("finished" if code == 0 else f"stopped (exit {code})")


def run_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records the run has written so far (none before its first line)."""
    path = run_dir / METRICS_FILE
    return read_metrics(path) if path.is_file() else []

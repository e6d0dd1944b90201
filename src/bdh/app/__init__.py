"""`bdh app`: the Streamlit visualizer of a BDH checkpoint next to a Transformer baseline.

The checkpoints reach the Streamlit script through the environment variables
BDH_APP_BDH and BDH_APP_BASELINE; without them the script trains (once) and uses the
default pair in the cache directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bdh.errors import BDHError

ENV_BDH = "BDH_APP_BDH"
ENV_BASELINE = "BDH_APP_BASELINE"
MAIN_SCRIPT = Path(__file__).with_name("main.py")
TAB_NAMES = [
    "Sparse Brain",
    "Memory Formation",
    "Monosemantic Neurons",
    "Graph Brain",
    "3D Walkthrough",
    "Memory Scaling",
    "Live Training",
]


def app_cache_dir() -> Path:
    """$BDH_CACHE_DIR/app, or ~/.cache/bdh/app."""
    return Path(os.environ.get("BDH_CACHE_DIR", Path.home() / ".cache/bdh")) / "app"


@dataclass(frozen=True)
class DefaultRun:
    """One model of the default pair: trained on tiny Shakespeare with these settings."""

    model: str
    steps: int = 300
    batch_size: int = 8
    block_size: int = 128
    seed: int = 1337
    eval_tokens: int = 65536


DEFAULT_PAIR = (DefaultRun("bdh"), DefaultRun("gpt"))


def _is_checkpoint(path: Path) -> bool:
    return all((path / f).is_file() for f in ("model.safetensors", "config.json", "tokenizer.json"))


def ensure_default_pair(
    cache_dir: Path | None = None, on_progress: Callable[[str, int, int], None] | None = None
) -> tuple[Path, Path]:
    """Paths of the default BDH and Transformer checkpoints, training them on first use.

    on_progress(model, step, steps) is called as training advances.
    """
    from bdh.train import TrainConfig, train

    root = cache_dir or app_cache_dir()
    paths = []
    for run in DEFAULT_PAIR:
        out = root / f"{run.model}-tiny-shakespeare"
        if not _is_checkpoint(out):
            cfg = TrainConfig(
                model=run.model, preset="tiny", steps=run.steps, batch_size=run.batch_size,
                block_size=run.block_size, seed=run.seed, out_dir=str(out), device="cpu",
                eval_every=run.steps, eval_tokens=run.eval_tokens, progress=False,
            )  # fmt: skip

            def report(metrics: dict, run: DefaultRun = run) -> None:
                if on_progress is not None and "step" in metrics:
                    on_progress(run.model, int(metrics["step"]), run.steps)

            # An unfinished earlier attempt (interrupted) is started over.
            train(cfg, on_metrics=report, force=True)
        paths.append(out)
    return paths[0], paths[1]


def streamlit_command(
    bdh: Path, baseline: Path, port: int, headless: bool
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that serve the app on `port`."""
    for label, path in (("--bdh", bdh), ("--baseline", baseline)):
        if not _is_checkpoint(path):
            raise BDHError(f"{label} {path} is not a checkpoint directory")
    env = {**os.environ, ENV_BDH: str(bdh.resolve()), ENV_BASELINE: str(baseline.resolve())}
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(MAIN_SCRIPT),
        "--server.port", str(port), "--server.address", "localhost",
        "--server.headless", str(headless).lower(),
        "--browser.gatherUsageStats", "false", "--global.developmentMode", "false",
    ]  # fmt: skip
    return cmd, env


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOP_TIMEOUT_S = 10.0


def _signal_group(proc: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:  # the group is gone already
        pass


def launch(bdh: Path, baseline: Path, port: int, headless: bool) -> int:
    """Serve the app with Streamlit (blocks until it exits); returns its exit code.

    Streamlit runs in its own process group (with the Live Training runs it starts).
    SIGINT, SIGTERM and SIGHUP sent to this process are passed on to that group, which
    gets STOP_TIMEOUT_S seconds to exit before it is killed; the exit code is then
    128 + the signal. An exception in here kills the group before it propagates.
    """
    cmd, env = streamlit_command(bdh, baseline, port, headless)
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        _signal_group(proc, signum)

    previous = {s: signal.signal(s, forward) for s in STOP_SIGNALS}
    try:
        deadline = None
        while True:
            try:
                code = proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            if received and deadline is None:
                deadline = time.monotonic() + STOP_TIMEOUT_S
            if deadline is not None and time.monotonic() > deadline:
                _signal_group(proc, signal.SIGKILL)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if proc.poll() is None:  # left by an exception: nothing may stay behind
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    return 128 + received[0] if received else code

"""`bdh train` under faults: kill -9 at any moment (inside a checkpoint write too), a full
disk while saving, and a second trainer on the same run directory."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bdh.cli import main
from bdh.train.state import (
    LOCK_FILE,
    PAUSE_ENV,
    list_checkpoints,
    load_training_checkpoint,
)
from tests.faults.cli import cli

pytestmark = pytest.mark.usefixtures("single_thread")

STEPS = 5
FLAGS = [
    "--set", "n_layer=1", "--set", "n_embd=32", "--set", "n_head=2",
    "--set", "mlp_internal_dim_multiplier=4", "--set", "dropout=0.1",
    "--block-size", "16", "--batch-size", "4", "--eval-tokens", "64", "--no-progress",
    "--steps", str(STEPS), "--checkpoint-every", "1", "--keep-last", "2", "--log-every", "1",
    "--eval-every", "100", "--precision", "fp32", "--device", "cpu",
]  # fmt: skip


def one_line_error(err: str, needle: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, torch.Tensor]:
    """Final weights of the same run, never interrupted."""
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("ref") / "run"
    with pytest.raises(SystemExit) as done:
        main(["train", *FLAGS, "--out", str(run)])
        raise SystemExit(0)
    assert done.value.code in (0, None)
    return load_file(str(run / "model.safetensors"))


def start(run: Path, pause_at: int | None = None) -> subprocess.Popen:
    """`bdh train` in a child; pause_at: hold that step's checkpoint save half-written."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if pause_at is not None:
        env[PAUSE_ENV] = f"60@{pause_at}"
    return subprocess.Popen(
        [sys.executable, "-m", "bdh", "train", *FLAGS, "--out", str(run)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, "training ended before the kill point"
        assert time.time() < deadline, "the kill point never came"
        time.sleep(0.02)


def half_written(run: Path, step: int) -> bool:
    """The step directory of `step` being assembled, its weights in."""
    root = run / "checkpoints"
    return root.is_dir() and any(
        p.name.startswith(f".step_{step:08d}.tmp") and (p / "model.safetensors").is_file()
        for p in root.iterdir()
    )


def check_killed_run_resumes(run: Path, reference: dict[str, torch.Tensor], capsys) -> None:
    """What a kill -9 left: complete checkpoints only, resumable to the reference weights."""
    done = list_checkpoints(run)
    if (run / "train_config.json").is_file() and done:
        model_state = load_training_checkpoint(done[-1], _tiny_model())
        assert model_state.step == int(done[-1].name[5:])
        code, err = cli(["train", "--resume", str(run)], capsys)
    else:  # killed before its first checkpoint: nothing to resume, start over
        code, err = cli(["train", *FLAGS, "--out", str(run), "--force"], capsys)
    assert code == 0, err
    got = load_file(str(run / "model.safetensors"))
    assert got.keys() == reference.keys()
    for name, tensor in reference.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=0)
    names = {p.name for p in run.iterdir()} | {p.name for p in (run / "checkpoints").iterdir()}
    assert not [n for n in names if n.startswith(".")], names  # no temporaries left


def _tiny_model():
    from bdh.config import preset
    from bdh.model import BDH

    return BDH(preset("tiny", n_layer=1, n_embd=32, n_head=2, mlp_internal_dim_multiplier=4))


def test_kill_inside_a_checkpoint_write_keeps_the_last_one_and_the_lock_refuses_a_second_trainer(
    tmp_path, reference, capsys
):
    run = tmp_path / "run"
    proc = start(run, pause_at=3)
    try:
        wait_for(lambda: half_written(run, 3), proc)
        # while it lives, a second trainer on the directory is refused, resume or force
        code, err = cli(["train", "--resume", str(run)], capsys)
        assert code != 0
        one_line_error(err, f"is in use by another bdh train (pid {proc.pid})")
        code, err = cli(["train", *FLAGS, "--out", str(run), "--force"], capsys)
        assert code != 0
        one_line_error(err, "is in use")
        assert [p.name for p in list_checkpoints(run)] == ["step_00000001", "step_00000002"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (run / LOCK_FILE).is_file()  # the file stays; the kernel dropped the flock
    assert [p.name for p in list_checkpoints(run)] == ["step_00000001", "step_00000002"]
    check_killed_run_resumes(run, reference, capsys)


def _kill_at_random(tmp_path: Path, reference, capsys, rng: random.Random, index: int) -> None:
    run = tmp_path / f"run{index}"
    pause_at = rng.randint(1, STEPS) if index % 3 == 0 else None
    proc = start(run, pause_at)
    try:
        if pause_at is not None:
            wait_for(lambda: half_written(run, pause_at), proc)
        else:
            wait_for(lambda: (run / "train_config.json").is_file(), proc)
            time.sleep(rng.uniform(0, 1.5))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    check_killed_run_resumes(run, reference, capsys)


def test_kill_at_a_random_moment_then_resume(tmp_path, reference, capsys):
    _kill_at_random(tmp_path, reference, capsys, random.Random(7), 1)


@pytest.mark.slow
def test_twenty_kills_at_random_moments(tmp_path, reference, capsys):
    rng = random.Random(2026)
    for index in range(20):
        _kill_at_random(tmp_path, reference, capsys, rng, index)


def test_disk_full_while_saving_is_one_line_and_keeps_the_last_checkpoint(
    tmp_path, reference, capsys, monkeypatch
):
    import bdh.train.state as state

    run = tmp_path / "run"
    real_save = state._save_tensors

    def fill_disk_at_step_3(path: Path, tensors):
        if path.name == state.OPTIMIZER_FILE and ".step_00000003." in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_save(path, tensors)

    monkeypatch.setattr(state, "_save_tensors", fill_disk_at_step_3)
    code, err = cli(["train", *FLAGS, "--out", str(run)], capsys)
    assert code != 0
    one_line_error(err, "No space left on device")
    assert "step_00000003" in err and "last complete checkpoint is kept" in err
    assert [p.name for p in list_checkpoints(run)] == ["step_00000001", "step_00000002"]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert load_training_checkpoint(list_checkpoints(run)[-1], _tiny_model()).step == 2
    monkeypatch.setattr(state, "_save_tensors", real_save)  # space again
    code, err = cli(["train", "--resume", str(run)], capsys)
    assert code == 0, err
    got = load_file(str(run / "model.safetensors"))
    for name, tensor in reference.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=0)


def test_a_full_disk_anywhere_else_is_one_line_too(tmp_path, capsys, monkeypatch):
    import bdh.train.metrics as metrics

    def full(self, record):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(metrics.MetricsWriter, "write", full)
    code, err = cli(["train", *FLAGS, "--out", str(tmp_path / "run")], capsys)
    assert code != 0
    one_line_error(err, "No space left on device")

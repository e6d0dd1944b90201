"""Training checkpoints inside a run directory, written atomically, nothing pickled.

    RUN_DIR/
      train_config.json        resolved TrainConfig
      metrics.jsonl            one JSON object per line
      model.safetensors, config.json, tokenizer.json   latest weights: a loadable checkpoint
      train.lock               flock held by the trainer using the directory
      checkpoints/step_00000500/
        model.safetensors, config.json, tokenizer.json  (also loadable on its own)
        optimizer.safetensors  AdamW moments and step counts
        rng.safetensors        torch CPU (and CUDA) generator states of rank 0
        learning_rule.safetensors   when a learning rule is active (pruning masks, ...)
        carried_state.safetensors   with --carry-state: every row's recurrent state
        trainer_state.json     step, data position, timers, optimizer groups, world size

A step directory is assembled under a temporary name and renamed into place, and an old
one is renamed away before it is deleted, so a crash (even kill -9) mid-save leaves only
complete checkpoints under their final names; the next trainer to lock the directory
removes the temporaries a killed one left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from bdh.checkpoint import (
    atomic_write,
    atomic_write_json,
    load_state_dict_file,
    load_weights,
    save_checkpoint,
)
from bdh.errors import CheckpointError, ConfigError, DataError
from bdh.tokenizers import Tokenizer
from bdh.train.metrics import read_metrics

CHECKPOINTS_DIR = "checkpoints"
TRAIN_CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.jsonl"
TRAINER_STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
RULE_FILE = "learning_rule.safetensors"
CARRIED_STATE_FILE = "carried_state.safetensors"
LOCK_FILE = "train.lock"
TRAINER_STATE_VERSION = 1
_STEP_DIR = re.compile(r"^step_(\d{8})$")
# Half-written files and directories of an interrupted save (atomic_write's mkstemp names,
# step directories being assembled or deleted).
_TEMPORARY = re.compile(r"^\..+\.(tmp\d*|del\d+)$")
# What a run directory may contain; --force removes exactly these (and temporaries).
RUN_ARTIFACTS = (
    CHECKPOINTS_DIR, TRAIN_CONFIG_FILE, METRICS_FILE, "model.safetensors", "config.json",
    "tokenizer.json", "tensorboard", "metrics.png",
)  # fmt: skip
# Fault tests set this to "SECONDS@STEP" to hold the save of that step half-written (the
# weights in the temporary step directory, nothing renamed yet), to kill it there.
PAUSE_ENV = "BDH_CHECKPOINT_PAUSE"


@dataclass
class TrainingSnapshot:
    """Everything besides model weights needed to continue a run exactly."""

    step: int
    tokens_seen: int
    train_time_s: float
    optimizer_tensors: dict[str, Tensor]
    optimizer_groups: list[dict[str, Any]]
    rng: dict[str, Tensor]
    rule_state: dict[str, Tensor] | None
    world_size: int
    carried_state: dict[str, Tensor] | None = None  # all rows, global order (bdh.train.carry)


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete step checkpoints of a run, oldest first."""
    root = run_dir / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


class RunLock:
    """An exclusive flock on RUN_DIR/train.lock while one trainer uses the directory.

    A second trainer on the same directory is refused in one line. The kernel drops the
    lock when its holder dies, so a killed run never blocks the next one; the file itself
    stays (deleting it would let two processes lock two different files).
    """

    def __init__(self, run_dir: Path):
        import fcntl

        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"output path '{run_dir}' exists and is not a directory")
        run_dir.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = open(run_dir / LOCK_FILE, "a+")  # noqa: SIM115 - released in release()
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "unknown"
            self.release()
            raise ConfigError(
                f"run directory '{run_dir}' is in use by another bdh train (pid {holder}); "
                "wait for it to end or stop it first"
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"{os.getpid()}\n")
        self._file.flush()

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the last descriptor drops the flock
            self._file = None


def remove_temporaries(run_dir: Path) -> None:
    """Delete what interrupted saves left behind (call only while holding the RunLock)."""
    for parent in (run_dir, run_dir / CHECKPOINTS_DIR):
        if not parent.is_dir():
            continue
        for path in parent.iterdir():
            if _TEMPORARY.match(path.name):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)


def prepare_run_dir(run_dir: Path, resume: bool, force: bool, clear: bool = True) -> None:
    """Refuse to overwrite an existing run unless resuming or forced.

    Forced: remove the run's artifacts when `clear` (rank 0), after the same checks. The
    lock file and temporaries of interrupted saves do not make a directory a run.
    """
    if resume:
        if not (run_dir / TRAIN_CONFIG_FILE).is_file():
            raise CheckpointError(f"cannot resume: '{run_dir}' is not a training run directory")
        if latest_checkpoint(run_dir) is None:
            raise CheckpointError(f"cannot resume: '{run_dir}' holds no checkpoint yet")
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"output path '{run_dir}' exists and is not a directory")
    present = [
        p.name
        for p in (run_dir.iterdir() if run_dir.is_dir() else ())
        if p.name != LOCK_FILE and not _TEMPORARY.match(p.name)
    ]
    if present:
        if not force:
            raise ConfigError(
                f"run directory '{run_dir}' already exists; use --resume to continue it "
                "or --force to start over (deletes its checkpoints and metrics)"
            )
        foreign = sorted(name for name in present if name not in RUN_ARTIFACTS)
        if foreign:
            raise ConfigError(
                f"--force will not clear '{run_dir}': it holds files that are not from a run "
                f"({', '.join(foreign[:3])})"
            )
        for name in RUN_ARTIFACTS if clear else ():
            path = run_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


def _save_tensors(path: Path, tensors: dict[str, Tensor]) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))


def capture_rng(device: torch.device) -> dict[str, Tensor]:
    rng = {"torch_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        rng["torch_cuda"] = torch.cuda.get_rng_state(device)
    return rng


def restore_rng(rng: dict[str, Tensor], device: torch.device) -> None:
    torch.set_rng_state(rng["torch_cpu"])
    if device.type == "cuda" and "torch_cuda" in rng:
        torch.cuda.set_rng_state(rng["torch_cuda"], device)


def save_training_checkpoint(
    run_dir: Path,
    model: nn.Module,
    tokenizer: Tokenizer,
    snapshot: TrainingSnapshot,
    keep_last: int,
) -> Path:
    """Write checkpoints/step_N atomically, refresh the top-level weights, keep the last K.

    A write that fails (disk full, ...) raises CheckpointError in one line and leaves the
    earlier checkpoints as they were.
    """
    final = run_dir / CHECKPOINTS_DIR / step_dir_name(snapshot.step)
    try:
        return _save_training_checkpoint(run_dir, model, tokenizer, snapshot, keep_last)
    except OSError as err:
        reason = err.strerror or str(err)
        raise CheckpointError(
            f"cannot write checkpoint {final}: {reason}; the last complete checkpoint is kept"
        ) from None


def _save_training_checkpoint(
    run_dir: Path,
    model: nn.Module,
    tokenizer: Tokenizer,
    snapshot: TrainingSnapshot,
    keep_last: int,
) -> Path:
    root = run_dir / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(snapshot.step)
    if final.exists():  # already saved at this step (e.g. periodic save, then the end of the run)
        return final
    tmp = root / f".{final.name}.tmp{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        save_checkpoint(tmp, model, tokenizer, extra={"train_step": snapshot.step})
        seconds, _, step = os.environ.get(PAUSE_ENV, "").partition("@")
        if step and int(step) == snapshot.step:
            time.sleep(float(seconds))
        _save_tensors(tmp / OPTIMIZER_FILE, snapshot.optimizer_tensors)
        _save_tensors(tmp / RNG_FILE, snapshot.rng)
        if snapshot.rule_state is not None:
            _save_tensors(tmp / RULE_FILE, snapshot.rule_state)
        if snapshot.carried_state is not None:
            _save_tensors(tmp / CARRIED_STATE_FILE, snapshot.carried_state)
        state = {
            "version": TRAINER_STATE_VERSION,
            "step": snapshot.step,
            "tokens_seen": snapshot.tokens_seen,
            "train_time_s": snapshot.train_time_s,
            "world_size": snapshot.world_size,
            # Batches are drawn by a generator seeded with (seed, step): the step is the data position.
            "data_position": {"next_step": snapshot.step},
            "optimizer_param_groups": snapshot.optimizer_groups,
            "has_learning_rule_state": snapshot.rule_state is not None,
            "has_carried_state": snapshot.carried_state is not None,
        }
        (tmp / TRAINER_STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    save_checkpoint(run_dir, model, tokenizer, extra={"train_step": snapshot.step})
    for old in list_checkpoints(run_dir)[:-keep_last]:
        doomed = root / f".{old.name}.del{os.getpid()}"  # gone from the list in one rename
        os.replace(old, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    return final


def load_training_checkpoint(path: Path, model: nn.Module) -> TrainingSnapshot:
    """Load weights from `path` into `model` and return the rest; refuse anything damaged."""
    state_file = path / TRAINER_STATE_FILE
    try:
        state = json.loads(state_file.read_text())
        step = int(state["step"])
        groups = state["optimizer_param_groups"]
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} is incomplete: {TRAINER_STATE_FILE} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint file {state_file} is corrupt: {err}") from None
    if state.get("version") != TRAINER_STATE_VERSION:
        raise CheckpointError(f"checkpoint {path} has trainer state version {state.get('version')!r}")
    load_weights(model, load_state_dict_file(path / "model.safetensors"), str(path))
    rule_state = None
    if state.get("has_learning_rule_state"):
        rule_state = load_state_dict_file(path / RULE_FILE)
    carried_state = None
    if state.get("has_carried_state"):
        carried_state = load_state_dict_file(path / CARRIED_STATE_FILE)
    rng = load_state_dict_file(path / RNG_FILE)
    if "torch_cpu" not in rng:
        raise CheckpointError(f"checkpoint file {path / RNG_FILE} is corrupt: no torch_cpu state")
    return TrainingSnapshot(
        step=step,
        tokens_seen=int(state.get("tokens_seen", 0)),
        train_time_s=float(state.get("train_time_s", 0.0)),
        optimizer_tensors=load_state_dict_file(path / OPTIMIZER_FILE),
        optimizer_groups=groups,
        rng=rng,
        rule_state=rule_state,
        world_size=int(state.get("world_size", 1)),
        carried_state=carried_state,
    )


def read_train_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / TRAIN_CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"'{run_dir}' is not a training run directory (no {TRAIN_CONFIG_FILE})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"run config {path} is corrupt: {err}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"run config {path} is corrupt: expected a JSON object")
    return data


def write_train_config(run_dir: Path, config: dict[str, Any]) -> None:
    atomic_write_json(run_dir / TRAIN_CONFIG_FILE, config)


def truncate_metrics(run_dir: Path, last_step: int) -> None:
    """Drop metric lines logged after `last_step` (they belong to steps about to be redone)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return
    records = read_metrics(path)
    if any(not isinstance(r.get("step", 0), (int, float)) for r in records):
        raise DataError(f"{path} has a record whose step is not a number; fix or remove it")
    kept = [json.dumps(r) for r in records if r.get("step", 0) <= last_step]
    text = "\n".join(kept) + ("\n" if kept else "")
    atomic_write(path, lambda tmp: tmp.write_text(text))

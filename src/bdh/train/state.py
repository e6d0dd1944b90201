"""Training checkpoints inside a run directory, written atomically, nothing pickled.

    RUN_DIR/
      train_config.json        resolved TrainConfig
      metrics.jsonl            one JSON object per line
      model.safetensors, config.json, tokenizer.json   latest weights: a loadable checkpoint
      checkpoints/step_00000500/
        model.safetensors, config.json, tokenizer.json  (also loadable on its own)
        optimizer.safetensors  AdamW moments and step counts
        rng.safetensors        torch CPU (and CUDA) generator states of rank 0
        learning_rule.safetensors   when a learning rule is active (pruning masks, ...)
        carried_state.safetensors   with --carry-state: every row's recurrent state
        trainer_state.json     step, data position, timers, optimizer groups, world size

A step directory is assembled under a temporary name and renamed into place, so a crash
mid-save leaves only complete checkpoints under their final names.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
from bdh.errors import CheckpointError, ConfigError
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
TRAINER_STATE_VERSION = 1
_STEP_DIR = re.compile(r"^step_(\d{8})$")
# What a run directory may contain; --force removes exactly these.
RUN_ARTIFACTS = (
    CHECKPOINTS_DIR, TRAIN_CONFIG_FILE, METRICS_FILE, "model.safetensors", "config.json",
    "tokenizer.json", "tensorboard", "metrics.png",
)  # fmt: skip


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


def prepare_run_dir(run_dir: Path, resume: bool, force: bool, clear: bool = True) -> None:
    """Refuse to overwrite an existing run unless resuming or forced.

    Forced: remove the run's artifacts when `clear` (rank 0), after the same checks.
    """
    if resume:
        if not (run_dir / TRAIN_CONFIG_FILE).is_file():
            raise CheckpointError(f"cannot resume: '{run_dir}' is not a training run directory")
        if latest_checkpoint(run_dir) is None:
            raise CheckpointError(f"cannot resume: '{run_dir}' holds no checkpoint yet")
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"output path '{run_dir}' exists and is not a directory")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not force:
            raise ConfigError(
                f"run directory '{run_dir}' already exists; use --resume to continue it "
                "or --force to start over (deletes its checkpoints and metrics)"
            )
        foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_ARTIFACTS)
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
    """Write checkpoints/step_N atomically, refresh the top-level weights, keep the last K."""
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
        shutil.rmtree(old, ignore_errors=True)
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
    kept = [json.dumps(r) for r in read_metrics(path) if r.get("step", 0) <= last_step]
    text = "\n".join(kept) + ("\n" if kept else "")
    atomic_write(path, lambda tmp: tmp.write_text(text))

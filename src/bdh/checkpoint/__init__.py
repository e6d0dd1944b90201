"""Checkpoints: a directory with `model.safetensors`, `config.json` and `tokenizer.json`.

Nothing is ever unpickled. Every file is written to a temporary name and renamed, so
an interrupted save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from bdh.errors import CheckpointError, TokenizerError
from bdh.registry import build_model
from bdh.tokenizers import Tokenizer, tokenizer_from_dict

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
FORMAT_VERSION = 1


def atomic_write(path: Path, write: Any) -> None:
    """Call write(tmp_path), then rename tmp_path over path (same directory, same filesystem)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def save_checkpoint(
    directory: str | os.PathLike[str],
    model: nn.Module,
    tokenizer: Tokenizer,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write model weights, config and tokenizer into `directory`."""
    directory = Path(directory)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp)))
    config = {
        "format_version": FORMAT_VERSION,
        "model_type": model.model_type,
        "config": model.config.to_dict(),
        **(extra or {}),
    }
    atomic_write_json(directory / TOKENIZER_FILE, tokenizer.to_dict())
    atomic_write_json(directory / CONFIG_FILE, config)
    return directory


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint is missing {path.name} (looked in {path.parent})")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint file {path} is corrupt: {err}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint file {path} is corrupt: expected a JSON object")
    return data


def read_checkpoint_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"no checkpoint at '{directory}'")
    return _read_json(directory / CONFIG_FILE)


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint is missing {path.name} (looked in {path.parent})")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint file {path} is corrupt or truncated: {err}") from None


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `model` strictly, naming the first mismatch in one line."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {source} does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"checkpoint {source} does not fit the model: '{name}' has shape "
                f"{tuple(tensor.shape)}, the config needs {tuple(expected[name].shape)}"
            )
    model.load_state_dict(state)


def load_checkpoint(
    directory: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, Tokenizer]:
    """Rebuild the model and tokenizer saved by `save_checkpoint`; the model is in eval mode."""
    directory = Path(directory)
    config = read_checkpoint_config(directory)
    if "model_type" not in config or not isinstance(config.get("config"), dict):
        raise CheckpointError(f"checkpoint config {directory / CONFIG_FILE} lacks model_type/config")
    try:
        tokenizer = tokenizer_from_dict(_read_json(directory / TOKENIZER_FILE))
    except TokenizerError as err:
        raise CheckpointError(f"checkpoint {directory}: {err}") from None
    model = build_model(config["model_type"], config["config"])
    if getattr(model.config, "vocab_size", tokenizer.vocab_size) != tokenizer.vocab_size:
        raise CheckpointError(
            f"checkpoint {directory}: model vocab {model.config.vocab_size} != tokenizer vocab {tokenizer.vocab_size}"
        )
    load_weights(model, load_state_dict_file(directory / WEIGHTS_FILE), str(directory))
    return model.to(device).eval(), tokenizer

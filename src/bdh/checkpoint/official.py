"""Loading weights saved by the official BDH code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from bdh.checkpoint import load_weights, save_checkpoint
from bdh.config import BDHConfig
from bdh.errors import CheckpointError
from bdh.model import BDH
from bdh.tokenizers import ByteTokenizer


def config_from_official_state_dict(
    state: dict[str, torch.Tensor], n_layer: int = 6, dropout: float = 0.1
) -> BDHConfig:
    """Infer the config from weight shapes; n_layer is not recoverable (weights are shared)."""
    try:
        n_head, n_embd, n = state["encoder"].shape
        vocab_size = state["lm_head"].shape[1]
    except (KeyError, ValueError):
        raise CheckpointError("not an official BDH state_dict: needs 'encoder' [H, D, N] and 'lm_head' [D, V]") from None
    return BDHConfig(
        n_layer=n_layer, n_embd=n_embd, n_head=n_head, dropout=dropout,
        mlp_internal_dim_multiplier=n * n_head // n_embd, vocab_size=vocab_size,
    )  # fmt: skip


def convert_official_state_dict(
    source: str | os.PathLike[str], out: str | os.PathLike[str], n_layer: int = 6, dropout: float = 0.1
) -> Path:
    source = Path(source)
    if not source.is_file():
        raise CheckpointError(f"no state_dict file at '{source}'")
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot read '{source}' as a weights-only state_dict: {first_line}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"'{source}' holds a {type(state).__name__}, not a state_dict")
    config = config_from_official_state_dict(state, n_layer=n_layer, dropout=dropout)
    model = BDH(config)
    load_weights(model, state, str(source))
    return save_checkpoint(out, model, ByteTokenizer(), extra={"converted_from": "official"})

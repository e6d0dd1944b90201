"""AdamW with decoupled weight decay on matrices only, and its state as flat tensors.

Convention (GPT-2/nanoGPT): weights used in matrix products decay; embeddings, biases,
norm gains and other 1-D parameters do not.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bdh.errors import CheckpointError


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: >= 2-D non-embedding weights (decayed) and the rest (no decay)."""
    embedding_params = {
        id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()
    }
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if p.dim() >= 2 and id(p) not in embedding_params:
            decay.append(p)
        else:
            no_decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], device: torch.device
) -> torch.optim.AdamW:
    # The fused kernel is faster on CUDA and computes the same update.
    fused = device.type == "cuda"
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, fused=fused)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    """Split `optimizer.state_dict()` into flat tensors ("state.<param>.<key>") and JSON groups."""
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    for index, slots in sd["state"].items():
        for key, value in slots.items():
            if not isinstance(value, Tensor):
                value = torch.tensor(value)
            tensors[f"state.{index}.{key}"] = value.detach().contiguous().cpu()
    return tensors, sd["param_groups"]


def load_optimizer_tensors(
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, Tensor],
    groups: list[dict[str, Any]],
    source: str,
) -> None:
    """Inverse of `optimizer_tensors`; a state that does not fit the model is refused."""
    state: dict[int, dict[str, Tensor]] = {}
    for name, value in tensors.items():
        parts = name.split(".")
        if len(parts) != 3 or parts[0] != "state" or not parts[1].isdigit():
            raise CheckpointError(f"optimizer state {source} is corrupt: unexpected entry '{name}'")
        state.setdefault(int(parts[1]), {})[parts[2]] = value
    current = optimizer.state_dict()["param_groups"]
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in current]:
        raise CheckpointError(f"optimizer state {source} does not fit the model's parameters")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for index, slots in state.items():
        if index >= len(params) or slots["exp_avg"].shape != params[index].shape:
            raise CheckpointError(f"optimizer state {source} does not fit the model's parameters")
    optimizer.load_state_dict({"state": state, "param_groups": groups})

"""The recurrent state carried from one training step to the next (truncated BPTT).

With `--carry-state` every row of the global batch reads its own contiguous stream
(`bdh.data.streams.StreamSchedule`); the state a micro-batch ends a step with, detached,
is where its rows start the next step, until the streams restart from a zero state.

A state is a dataclass of tensors with a `position` (BDHState, NeuroState); its class
declares which axis of each tensor is the batch (`batch_axes`). Checkpoints hold the
state of all B rows in global row order, so a run resumes exactly on any number of ranks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from bdh.data.streams import StreamSchedule
from bdh.errors import CheckpointError
from bdh.train.distributed import DistInfo

POSITION_KEY = "position"


def _tensors(state: Any) -> dict[str, Tensor]:
    return {name: getattr(state, name) for name in type(state).batch_axes}


class CarriedState:
    """This rank's carried states, one per micro-batch of `micro` rows."""

    def __init__(
        self,
        model: nn.Module,
        schedule: StreamSchedule,
        info: DistInfo,
        micro: int,
        device: torch.device,
    ):
        self.model, self.schedule, self.info = model, schedule, info
        self.micro, self.device = micro, device
        self.rows_per_rank = schedule.batch_size // info.world_size
        self.dtype = next(model.parameters()).dtype
        self.states: list[Any] = [None] * (self.rows_per_rank // micro)

    def begin(self, step: int, index: int) -> Any:
        """The state micro-batch `index` starts `step` from."""
        if self.schedule.restarts(step) or self.states[index] is None:
            self.states[index] = self.model.init_state(
                self.micro, device=self.device, dtype=self.dtype
            )
        return self.states[index]

    def end(self, index: int, state: Any) -> None:
        """Keep the state a micro-batch ended with, cut from its graph, in the weights' dtype
        (autocast may hand it back in a lower precision)."""
        state = state.detach()
        self.states[index] = dataclasses.replace(
            state, **{k: v.to(self.dtype) for k, v in _tensors(state).items()}
        )

    # ---- checkpoints ---------------------------------------------------------------

    def _gather(self, tensor: Tensor) -> list[Tensor]:
        if not self.info.enabled:
            return [tensor]
        parts = [torch.empty_like(tensor) for _ in range(self.info.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return parts

    def state_dict(self) -> dict[str, Tensor] | None:
        """All B rows' states in global row order (on every rank; a collective under DDP).

        None before the first step of a run.
        """
        if any(s is None for s in self.states):
            return None
        axes = type(self.states[0]).batch_axes
        out: dict[str, Tensor] = {}
        for name, axis in axes.items():
            mine = torch.cat([getattr(s, name) for s in self.states], dim=axis)
            out[name] = torch.cat(self._gather(mine), dim=axis).cpu()
        out[POSITION_KEY] = torch.tensor([self.states[0].position], dtype=torch.int64)
        return out

    def load_state_dict(self, tensors: dict[str, Tensor], source: str) -> None:
        """This rank's micro-batch states out of `state_dict()` output."""
        template = self.model.init_state(self.micro, device=self.device, dtype=self.dtype)
        axes = type(template).batch_axes
        if set(tensors) != {*axes, POSITION_KEY}:
            raise CheckpointError(
                f"carried state in {source} does not fit this model: keys {sorted(tensors)}"
            )
        position = int(tensors[POSITION_KEY][0])
        first_row = self.info.rank * self.rows_per_rank
        for index in range(len(self.states)):
            start = first_row + index * self.micro
            fields = {}
            for name, axis in axes.items():
                full = tensors[name]
                if full.shape[axis] != self.schedule.batch_size:
                    raise CheckpointError(
                        f"carried state in {source} holds {full.shape[axis]} rows, the batch has "
                        f"{self.schedule.batch_size}"
                    )
                part = full.narrow(axis, start, self.micro)
                if part.shape != getattr(template, name).shape:
                    raise CheckpointError(f"carried state '{name}' in {source} has the wrong shape")
                # A fresh allocation: read tensors can sit unaligned in the file's buffer, and the
                # products round differently there (resume would not be bitwise).
                fields[name] = part.to(self.device, self.dtype).clone()
            self.states[index] = dataclasses.replace(template, **fields, position=position)

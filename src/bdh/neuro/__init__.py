"""The neuro BDH family: `config` (BDHNeuroConfig and its presets), `model` (BDHNeuro)."""

from bdh.neuro.config import BDHNeuroConfig
from bdh.neuro.model import (
    L1_EPS,
    LN_EPS,
    BDHNeuro,
    NeuroState,
    NeuroTrace,
    energy_effective_rank,
    layernorm_row,
)

__all__ = [
    "L1_EPS",
    "LN_EPS",
    "BDHNeuro",
    "BDHNeuroConfig",
    "NeuroState",
    "NeuroTrace",
    "energy_effective_rank",
    "layernorm_row",
]

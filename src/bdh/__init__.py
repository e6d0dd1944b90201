"""bdh: the BDH (Baby Dragon Hatchling) toolkit.

    import bdh
    model = bdh.BDH(bdh.preset("small"))
    logits, loss = model(idx, targets)
    state = model.init_state(batch_size=1)
    logits, state = model.prefill(idx, state)
    logits, state = model.step(next_tokens, state)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bdh.checkpoint import load_checkpoint, save_checkpoint
    from bdh.config import PRESETS, BDHConfig, preset
    from bdh.errors import BDHError
    from bdh.generate import SamplingConfig, generate_ids, generate_text, stream_text
    from bdh.model import BDH, BDHState
    from bdh.tokenizers import ByteTokenizer, CharTokenizer

__version__ = "0.1.0"

# Public names and their modules, imported on first use: `import bdh` (and so every
# command line start) does not pay for torch until something needs it.
_EXPORTS = {
    "BDH": "bdh.model",
    "BDHState": "bdh.model",
    "PRESETS": "bdh.config",
    "BDHConfig": "bdh.config",
    "preset": "bdh.config",
    "BDHError": "bdh.errors",
    "ByteTokenizer": "bdh.tokenizers",
    "CharTokenizer": "bdh.tokenizers",
    "SamplingConfig": "bdh.generate",
    "generate_ids": "bdh.generate",
    "generate_text": "bdh.generate",
    "stream_text": "bdh.generate",
    "load_checkpoint": "bdh.checkpoint",
    "save_checkpoint": "bdh.checkpoint",
}

__all__ = [
    "BDH",
    "PRESETS",
    "BDHConfig",
    "BDHError",
    "BDHState",
    "ByteTokenizer",
    "CharTokenizer",
    "SamplingConfig",
    "generate_ids",
    "generate_text",
    "load_checkpoint",
    "preset",
    "save_checkpoint",
    "stream_text",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        try:  # a submodule, as `import bdh; bdh.checkpoint` found it when imports were eager
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})

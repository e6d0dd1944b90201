"""bdh: the BDH (Baby Dragon Hatchling) toolkit.

    import bdh
    model = bdh.BDH(bdh.preset("small"))
    logits, loss = model(idx, targets)
    state = model.init_state(batch_size=1)
    logits, state = model.prefill(idx, state)
    logits, state = model.step(next_tokens, state)
"""

from bdh.checkpoint import load_checkpoint, save_checkpoint
from bdh.config import PRESETS, BDHConfig, preset
from bdh.errors import BDHError
from bdh.generate import SamplingConfig, generate_ids, generate_text, stream_text
from bdh.model import BDH, BDHState
from bdh.tokenizers import ByteTokenizer, CharTokenizer

__version__ = "0.1.0"

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

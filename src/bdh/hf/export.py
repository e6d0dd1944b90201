"""`bdh export --format hf`: a `bdh` checkpoint as a transformers model directory."""

from __future__ import annotations

import os
from pathlib import Path

from bdh.checkpoint import load_checkpoint
from bdh.errors import CheckpointError
from bdh.hf.modeling import BDHForCausalLM
from bdh.hf.tokenization import hf_tokenizer
from bdh.model import BDH


def export_hf(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write `checkpoint`'s model and tokenizer to `out` for `from_pretrained` and `pipeline`.

    The weights file and config stay a `bdh` checkpoint's (`bdh.load_checkpoint(out)` loads
    it); the tokenizer is written in the `tokenizers` format, with tokenizer_config.json.
    """
    model, tokenizer = load_checkpoint(checkpoint)
    if not isinstance(model, BDH):
        raise CheckpointError(
            f"only BDH checkpoints export to transformers; {checkpoint} holds a {type(model).__name__}"
        )
    out = Path(out)
    BDHForCausalLM.from_bdh(model).save_pretrained(out)
    hf_tokenizer(tokenizer).save_pretrained(out)
    return out

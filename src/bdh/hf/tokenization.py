"""Our tokenizers as transformers tokenizers (`PreTrainedTokenizerFast`, `tokenizers` JSON).

Byte: a byte-level BPE with no merges whose token ids are the byte values; char: one token
per character of the vocabulary, in our order (characters outside it are dropped, where
`bdh`'s own char tokenizer refuses them); bpe: the trained model as it is. None of them
has special tokens: no end-of-text id stops generation unless the user names one.
"""

from __future__ import annotations

import json
from typing import Any

from tokenizers import Tokenizer as TokenizersTokenizer
from tokenizers import decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from bdh.errors import TokenizerError
from bdh.tokenizers import BPETokenizer, ByteTokenizer, CharTokenizer, Tokenizer, byte_to_unicode


def tokenizers_json(tokenizer: Tokenizer) -> dict[str, Any]:
    """`tokenizer` in the `tokenizers` library's JSON format (bdh.tokenizer_from_dict reads it back)."""
    if isinstance(tokenizer, BPETokenizer):
        return tokenizer.to_dict()
    if isinstance(tokenizer, ByteTokenizer):
        table = byte_to_unicode()
        built = TokenizersTokenizer(models.BPE(vocab={table[b]: b for b in range(256)}, merges=[]))
        built.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        built.decoder = decoders.ByteLevel()
    elif isinstance(tokenizer, CharTokenizer):
        built = TokenizersTokenizer(
            models.BPE(vocab={c: i for i, c in enumerate(tokenizer.chars)}, merges=[])
        )
        built.decoder = decoders.Fuse()
    else:
        raise TokenizerError(f"no transformers form for the {tokenizer.kind!r} tokenizer")
    return json.loads(built.to_str())


def hf_tokenizer(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """A transformers tokenizer encoding and decoding as `tokenizer` does; `save_pretrained`
    writes tokenizer.json (which `bdh.load_checkpoint` also reads) and tokenizer_config.json."""
    spec = tokenizers_json(tokenizer)
    return PreTrainedTokenizerFast(
        tokenizer_object=TokenizersTokenizer.from_str(json.dumps(spec)),
        clean_up_tokenization_spaces=False,
        model_max_length=2**62,  # no context limit: the state's size does not depend on length
        model_input_names=["input_ids", "attention_mask"],  # BDH has no token types
    )

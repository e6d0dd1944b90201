"""BDH in Hugging Face transformers (the optional extra `bdh[hf]`).

Importing this package registers `BDHHFConfig` and `BDHForCausalLM` with `AutoConfig` and
`AutoModelForCausalLM` (model_type "bdh"). The core package never imports transformers.
See docs/huggingface.md.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForCausalLM

from bdh.hf.cache import BDHCache
from bdh.hf.configuration import BDHHFConfig
from bdh.hf.data import CorpusWindows
from bdh.hf.export import export_hf
from bdh.hf.modeling import BDHForCausalLM
from bdh.hf.tokenization import hf_tokenizer

AutoConfig.register("bdh", BDHHFConfig, exist_ok=True)
AutoModelForCausalLM.register(BDHHFConfig, BDHForCausalLM, exist_ok=True)

__all__ = [
    "BDHCache",
    "BDHForCausalLM",
    "BDHHFConfig",
    "CorpusWindows",
    "export_hf",
    "hf_tokenizer",
]

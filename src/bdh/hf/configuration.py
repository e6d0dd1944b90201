"""`BDHHFConfig`: our `BDHConfig` as a transformers configuration (`model_type = "bdh"`).

Its `config.json` is also a `bdh` checkpoint config: the BDH fields sit under "config" beside
"model_type" and "format_version", as `bdh.save_checkpoint` writes them, so one file serves
`AutoConfig.from_pretrained` and `bdh.load_checkpoint`, and a run directory of `bdh train`
reads as a transformers config.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from transformers import PretrainedConfig

from bdh.checkpoint import FORMAT_VERSION
from bdh.config import BDHConfig

BDH_FIELDS = tuple(f.name for f in dataclasses.fields(BDHConfig))


class BDHHFConfig(PretrainedConfig):
    """The fields of `bdh.BDHConfig` (same names and defaults) plus transformers' own."""

    model_type = "bdh"
    attribute_map = {
        "hidden_size": "n_embd",
        "num_hidden_layers": "n_layer",
        "num_attention_heads": "n_head",
    }

    def __init__(
        self,
        n_layer: int = 6,
        n_embd: int = 256,
        dropout: float = 0.1,
        n_head: int = 4,
        mlp_internal_dim_multiplier: int = 128,
        vocab_size: int = 256,
        damping: float | list[float] | str | None = None,
        no_bptt: bool = False,
        use_cache: bool = True,
        config: dict[str, Any] | None = None,
        format_version: int | None = None,
        **kwargs: Any,
    ) -> None:
        values = dict(
            n_layer=n_layer, n_embd=n_embd, dropout=dropout, n_head=n_head,
            mlp_internal_dim_multiplier=mlp_internal_dim_multiplier, vocab_size=vocab_size,
            damping=damping, no_bptt=no_bptt,
        )  # fmt: skip
        if config is not None:  # a bdh checkpoint's config.json: the fields sit under "config"
            values.update(config)
        checked = BDHConfig.from_dict(values)  # validated, damping resolved, by our own class
        for name in BDH_FIELDS:
            setattr(self, name, getattr(checked, name))
        self.use_cache = use_cache
        # BDH's lm_head is its own matrix (the official model ties nothing), and no token
        # ends generation unless the user names one: byte 0 is ordinary text.
        kwargs["tie_word_embeddings"] = False
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            kwargs.setdefault(name, None)
        super().__init__(**kwargs)

    def bdh_config(self) -> BDHConfig:
        """The same configuration as a `bdh.BDHConfig`."""
        return BDHConfig.from_dict({name: getattr(self, name) for name in BDH_FIELDS})

    @classmethod
    def from_bdh_config(cls, config: BDHConfig, **kwargs: Any) -> BDHHFConfig:
        return cls(config=config.to_dict(), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        for name in BDH_FIELDS:
            data.pop(name, None)
        data["format_version"] = FORMAT_VERSION
        data["config"] = self.bdh_config().to_dict()
        return data

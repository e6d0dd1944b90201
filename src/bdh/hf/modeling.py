"""`BDHForCausalLM`: `bdh.BDH` as a transformers causal LM (`PreTrainedModel` + `GenerationMixin`).

The weights are the `BDH` module itself, held as the submodule `bdh` (parameter names
`bdh.encoder`, `bdh.lm_head`, ...: ours under one prefix, nothing tied or copied), so
logits are the ones `BDH` computes. Files are saved without the prefix, exactly as
`bdh.save_checkpoint` writes them, and transformers adds it back when loading.

Generation decodes on the recurrent state (`BDHCache`): the prompt is prefilled once and
each new token is one `BDH.step`, never a pass over the prefix. Left padding is honoured:
each row's padding columns are skipped (never written into its state), and its tokens sit
at the positions after them; since RoPE rotates queries and keys alike, BDH's outputs
depend only on relative positions, so a padded row computes what the same row unpadded
does. Other masks (holes, padding that continues a cache) are refused. Position ids are
honoured when they count each row's tokens consecutively (any start), refused otherwise.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
from torch import Tensor
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast

from bdh.errors import HFInputError
from bdh.hf.cache import BDHCache
from bdh.hf.configuration import BDHHFConfig
from bdh.model import BDH, BDHState

# The output field (and forward keyword) holding the cache: "cache" from transformers 5.24
# on, "past_key_values" before. Both keywords are accepted; the output uses the release's.
CACHE_FIELD = (
    "cache"
    if "cache" in {f.name for f in dataclasses.fields(CausalLMOutputWithPast)}
    else "past_key_values"
)


def leading_pads(
    attention_mask: Tensor | None, batch: int, length: int, right_padding: bool = False
) -> Tensor | None:
    """Padding columns each row starts with [B], or None when nothing is masked there.

    The mask must be left padding (zeros, then ones), or with `right_padding` also end in
    zeros (harmless in the parallel form: no token reads a later one). Else refused.
    """
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2 or tuple(attention_mask.shape) != (batch, length):
        raise HFInputError(
            f"attention_mask must be 2-D [batch, length] = [{batch}, {length}], got {list(attention_mask.shape)}"
        )
    real = attention_mask.bool()
    if bool(real.all()):
        return None
    pads = (~real).int().cumprod(dim=1).sum(dim=1)  # the leading zeros of each row
    trailing = (~real).flip(1).int().cumprod(dim=1).sum(dim=1) if right_padding else 0
    columns = torch.arange(length, device=real.device)
    if bool((pads == length).any()):
        raise HFInputError(
            "attention_mask masks a whole row: every sequence needs at least one token"
        )
    ends = length - trailing if right_padding else torch.full_like(pads, length)
    if not torch.equal(
        real, (columns[None, :] >= pads[:, None]) & (columns[None, :] < ends[:, None])
    ):
        raise HFInputError(
            "attention_mask must be left padding (zeros, then ones; right padding too without a "
            "cache): BDH's recurrent state reads every token in order, so masked tokens between "
            "real ones, or after them in a cache, cannot be skipped"
        )
    return pads if bool(pads.any()) else None


class BDHForCausalLM(PreTrainedModel, GenerationMixin):
    """BDH with its language-model head, for `from_pretrained`, `generate()`, `pipeline`, `Trainer`."""

    config_class = BDHHFConfig
    config: BDHHFConfig
    base_model_prefix = "bdh"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False  # refused in one line by gradient_checkpointing_enable
    _is_stateful = True  # no assisted generation: the state cannot take back tokens
    _no_split_modules: list[str] = []
    _keys_to_ignore_on_load_unexpected: list[str] = []

    def __init__(self, config: BDHHFConfig) -> None:
        super().__init__(config)
        self.bdh = BDH(config.bdh_config())
        self.post_init()

    @classmethod
    def from_bdh(cls, model: BDH, **config_kwargs: Any) -> BDHForCausalLM:
        """Wrap an existing `BDH` (its parameters are shared, not copied)."""
        hf = cls(BDHHFConfig.from_bdh_config(model.config, **config_kwargs))
        hf.bdh = model
        return hf

    def _init_weights(self, module: torch.nn.Module) -> None:
        # BDH initializes itself in the official order (a seed gives the official weights).
        return

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.bdh.embed

    def set_input_embeddings(self, value: torch.nn.Module) -> None:
        self.bdh.embed = value

    def get_output_embeddings(self) -> None:
        return None  # lm_head is a [D, vocab] matrix of its own, not an nn.Linear tied to anything

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the model makes its own cache (BDHCache), as Mamba does

    def save_pretrained(
        self, save_directory: str | os.PathLike[str], *args: Any, **kwargs: Any
    ) -> None:
        """As transformers saves, with our parameter names unprefixed (a `bdh` checkpoint's)."""
        state = kwargs.get("state_dict")  # Trainer passes one (or None) of its own
        prefix = f"{self.base_model_prefix}."
        kwargs["state_dict"] = (
            self.bdh.state_dict()
            if state is None
            else {k.removeprefix(prefix): v for k, v in state.items()}
        )
        if kwargs.get("safe_serialization") is False:
            raise HFInputError(
                "BDH checkpoints are safetensors only (safe_serialization=False refused)"
            )
        super().save_pretrained(save_directory, *args, **kwargs)

    def _reorder_cache(self, cache: BDHCache, beam_idx: Tensor) -> BDHCache:
        cache.reorder_cache(beam_idx)
        return cache

    def prepare_inputs_for_generation(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        use_cache: bool | None = True,
        logits_to_keep: int | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Only the columns the cache has not consumed: after the prompt, one token per step."""
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        consumed = cache.get_seq_length() if isinstance(cache, BDHCache) else 0
        inputs: dict[str, Any] = {
            "input_ids": input_ids[:, consumed:],
            "attention_mask": None if attention_mask is None else attention_mask[:, consumed:],
            "position_ids": None if position_ids is None else position_ids[..., consumed:],
            "use_cache": use_cache,
            CACHE_FIELD: cache,
        }
        if logits_to_keep is not None:
            inputs["logits_to_keep"] = logits_to_keep
        return inputs

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        labels: Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | Tensor = 0,
        cache: Cache | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple:
        """input_ids [B, T] -> logits [B, T, vocab]; loss with shifted labels (-100 ignored).

        With a cache (or use_cache, the default outside training) the tokens continue the
        cache's recurrent state, which comes back in the output's cache field.
        """
        if inputs_embeds is not None or input_ids is None:
            raise HFInputError("BDH reads input_ids; inputs_embeds is not supported")
        if output_attentions or output_hidden_states:
            raise HFInputError(
                "BDH returns no attention maps or per-layer hidden states (use bdh's probes)"
            )
        if input_ids.dim() != 2:
            raise HFInputError(f"input_ids must be [batch, length], got {list(input_ids.shape)}")
        cache = cache if cache is not None else past_key_values
        if cache is not None and not isinstance(cache, BDHCache):
            if isinstance(cache, Cache) and cache.get_seq_length() == 0:
                cache = None  # an empty generic cache: BDH makes its own
                use_cache = True
            else:
                raise HFInputError(f"BDH continues a BDHCache, not a {type(cache).__name__}")
        if use_cache is None:
            use_cache = cache is not None or (self.config.use_cache and not self.training)
        B, T = input_ids.shape
        continuing = cache is not None and cache.get_seq_length() > 0
        if (
            continuing
            and attention_mask is not None
            and attention_mask.shape[-1] == cache.get_seq_length() + T
        ):
            attention_mask = attention_mask[
                :, -T:
            ]  # transformers' convention: past and new columns
        pads = leading_pads(attention_mask, B, T, right_padding=not use_cache)
        if continuing and pads is not None:
            raise HFInputError(
                "attention_mask masks tokens that continue a cache: pad prompts on the left only"
            )
        all_logits = not (isinstance(logits_to_keep, int) and logits_to_keep == 1)
        if use_cache:
            if cache is None or (cache.batch_size != B and not continuing):
                cache = BDHCache(self.bdh.init_state(B))
            self._check_position_ids(position_ids, pads, cache, B, T)
            logits = self._advance(input_ids, cache, pads, all_logits)
        else:
            self._check_position_ids(position_ids, pads, None, B, T)
            logits = self._parallel(input_ids, pads)
        if isinstance(logits_to_keep, Tensor):
            logits = logits[:, logits_to_keep]
        elif logits_to_keep > 0 and logits.shape[1] > logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        loss = None
        if labels is not None:
            extra = {k: kwargs[k] for k in ("num_items_in_batch",) if k in kwargs}
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, **extra
            )
        output = CausalLMOutputWithPast(
            loss=loss, logits=logits, **{CACHE_FIELD: cache if use_cache else None}
        )
        return output if return_dict is not False else output.to_tuple()

    # ---- the two ways through the model ---------------------------------------------

    def _parallel(self, input_ids: Tensor, pads: Tensor | None) -> Tensor:
        """Logits of the parallel form (training, scoring); each padded row from its first token."""
        if pads is None:
            return self.bdh(input_ids)[0]
        logits = None
        for p in pads.unique().tolist():
            rows = (pads == p).nonzero().squeeze(1)
            part = self.bdh(input_ids[rows, p:])[0]
            if logits is None:
                logits = part.new_zeros(*input_ids.shape, part.shape[-1])
            logits[rows, p:] = part  # padding columns keep zero logits
        return logits

    def _advance(
        self, input_ids: Tensor, cache: BDHCache, pads: Tensor | None, all_logits: bool
    ) -> Tensor:
        """Feed input_ids into the cache's state; logits [B, T or 1, vocab].

        Under autograd (torch.is_grad_enabled) the state advances differentiably.
        """
        grad = torch.is_grad_enabled()
        state = cache.state
        T = input_ids.shape[1]
        if state.position == 0 and pads is not None:
            # Each group of rows with the same padding starts its state at its first token's
            # column; all rows end at column T, so decoding continues them as one batch.
            kv = state.kv
            logits = None
            for p in pads.unique().tolist():
                rows = (pads == p).nonzero().squeeze(1)
                part = BDHState(kv=kv.index_select(1, rows), position=p)
                out, part = self.bdh.prefill(input_ids[rows, p:], part, all_logits, grad)
                if logits is None:
                    shape = (
                        (input_ids.shape[0], T, out.shape[-1])
                        if all_logits
                        else (input_ids.shape[0], out.shape[-1])
                    )
                    logits = torch.zeros(shape, dtype=out.dtype, device=out.device)
                if all_logits:
                    logits[rows, p:] = out
                else:
                    logits[rows] = out
                kv = kv.index_copy(1, rows, part.kv)
            state.kv, state.position, cache.pads = kv, T, pads
        elif T == 1:
            logits, _ = self.bdh.step(input_ids[:, 0], state, differentiable=grad)
        else:
            logits, _ = self.bdh.prefill(input_ids, state, all_logits, grad)
        if logits.dim() == 2:
            logits = logits[:, None]
        # Decoding runs under inference_mode; hand transformers ordinary tensors.
        return logits.clone() if logits.is_inference() else logits

    @staticmethod
    def _check_position_ids(
        position_ids: Tensor | None, pads: Tensor | None, cache: BDHCache | None, B: int, T: int
    ) -> None:
        """Position ids must count each row's tokens one by one (from any start, as BDH's
        outputs depend only on relative positions) and continue the cache's count."""
        if position_ids is None:
            return
        if (
            position_ids.dim() != 2
            or position_ids.shape[-1] != T
            or position_ids.shape[0] not in (1, B)
        ):
            raise HFInputError(
                f"position_ids must be [batch, length] = [{B}, {T}], got {list(position_ids.shape)}"
            )
        ids = position_ids.expand(B, T)
        steps_ok = True
        if T > 1:  # a decoding step has no steps to check
            diffs = ids[:, 1:] - ids[:, :-1] == 1
            if pads is not None:
                columns = torch.arange(1, T, device=ids.device)
                diffs |= columns[None, :] <= pads.to(ids.device)[:, None]  # steps into padding
            steps_ok = bool(diffs.all())
        expected = None if cache is None else cache.next_position_ids
        start_ok = expected is None or bool((ids[:, 0] == expected).all())
        if not (steps_ok and start_ok):
            raise HFInputError(
                "position_ids must count each sequence's tokens consecutively and continue the "
                "cache (BDH's recurrent state cannot restart or skip positions)"
            )
        if cache is not None:
            cache.next_position_ids = ids[:, -1] + 1

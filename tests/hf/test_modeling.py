"""BDHForCausalLM computes what bdh.BDH and the official module compute, on the same weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import bdh
from bdh.config import BDHConfig
from bdh.errors import HFInputError
from bdh.hf import BDHForCausalLM, BDHHFConfig
from bdh.hf.modeling import CACHE_FIELD
from tests.conftest import load_reference
from tests.hf.conftest import TINY

RTOL = 1e-6


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize(
    "cfg",
    [
        TINY,
        dict(
            n_layer=4,
            n_embd=64,
            n_head=4,
            mlp_internal_dim_multiplier=16,
            dropout=0.0,
            vocab_size=97,
        ),
    ],
    ids=["tiny", "vocab97"],
)
def test_logits_equal_bdh_and_official(cfg: dict) -> None:
    official = load_reference("official_bdh")
    ref = official.BDH(official.BDHConfig(**cfg)).eval()
    ours = bdh.BDH(BDHConfig(**cfg)).eval()
    ours.load_state_dict(ref.state_dict())
    hf = BDHForCausalLM.from_bdh(ours).eval()
    idx = torch.randint(0, cfg.get("vocab_size", 256), (3, 37))
    with torch.no_grad():
        logits = hf(idx, use_cache=False).logits
        cached = hf(idx).logits  # the prefill into a cache
        assert _rel(logits, ours(idx)[0]) <= RTOL
        assert _rel(cached, ours(idx)[0]) <= RTOL
        assert _rel(logits, ref(idx)[0]) <= RTOL
    assert logits.dtype == torch.float32


def test_loss_uses_shifted_labels(pair) -> None:
    model, hf = pair
    idx = torch.randint(0, 256, (2, 20))
    labels = idx.clone()
    labels[0, :5] = -100
    out = hf(idx, labels=labels, use_cache=False)
    expected = F.cross_entropy(
        out.logits[:, :-1].reshape(-1, 256), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    assert torch.allclose(out.loss, expected, rtol=1e-6)
    # and bdh's own loss on (input, next token) pairs
    _, loss = model(idx[1:, :-1], idx[1:, 1:])
    assert torch.allclose(hf(idx[1:], labels=idx[1:], use_cache=False).loss, loss, rtol=1e-6)


def test_weights_are_the_bdh_module(pair) -> None:
    model, hf = pair
    assert hf.bdh is model
    names = dict(hf.named_parameters())
    assert sorted(names) == sorted(f"bdh.{n}" for n, _ in model.named_parameters())
    assert names["bdh.lm_head"].data_ptr() != names["bdh.embed.weight"].data_ptr()  # nothing tied
    assert not hf.config.tie_word_embeddings


def test_fresh_model_has_bdhs_seeded_initial_weights() -> None:
    torch.manual_seed(3)
    ref = bdh.BDH(BDHConfig(**TINY))
    torch.manual_seed(3)
    hf = BDHForCausalLM(BDHHFConfig(**TINY))
    for name, tensor in ref.state_dict().items():
        assert torch.equal(hf.bdh.state_dict()[name], tensor), name


def test_config_round_trips_and_validates() -> None:
    config = BDHHFConfig(**TINY, damping="alibi")
    again = BDHHFConfig.from_dict(config.to_dict())
    assert again.bdh_config() == config.bdh_config()
    assert config.to_dict()["config"]["n_layer"] == 2 and "n_layer" not in config.to_dict()
    assert config.hidden_size == 32 and config.num_hidden_layers == 2
    with pytest.raises(bdh.errors.ConfigError):
        BDHHFConfig(n_layer=0)


def test_left_padding_equals_the_unpadded_rows(pair) -> None:
    model, hf = pair
    a, b = torch.randint(0, 256, (1, 11)), torch.randint(0, 256, (1, 6))
    ids = torch.cat([a, torch.cat([torch.zeros(1, 5, dtype=torch.long), b], 1)])
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    with torch.no_grad():
        for use_cache in (False, True):
            logits = hf(ids, attention_mask=mask, use_cache=use_cache).logits
            assert _rel(logits[0], model(a)[0][0]) <= RTOL
            assert _rel(logits[1, 5:], model(b)[0][0]) <= 1e-5  # other RoPE phases: rounding only


def test_masks_and_positions_bdh_cannot_honour_are_refused(pair) -> None:
    _, hf = pair
    ids = torch.randint(0, 256, (2, 6))
    hole = torch.ones_like(ids)
    hole[0, 3] = 0
    with pytest.raises(HFInputError, match="left padding"):
        hf(ids, attention_mask=hole)
    right = torch.ones_like(ids)
    right[1, -2:] = 0
    with pytest.raises(HFInputError, match="left padding"):
        hf(ids, attention_mask=right, use_cache=True)  # pads would enter the state
    with pytest.raises(HFInputError, match="position_ids"):
        hf(ids, position_ids=torch.tensor([[0, 1, 2, 0, 1, 2]] * 2))
    with pytest.raises(HFInputError, match="inputs_embeds"):
        hf(inputs_embeds=torch.zeros(2, 6, 32))
    # Consecutive positions from any start are honoured (relative positions are what count).
    with torch.no_grad():
        base = hf(ids, use_cache=False).logits
        shifted = hf(ids, position_ids=torch.arange(7, 13).expand(2, 6), use_cache=False).logits
    assert torch.equal(base, shifted)


def test_right_padding_is_harmless_without_a_cache(pair) -> None:
    model, hf = pair
    ids = torch.randint(0, 256, (2, 9))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    mask[1, :2] = 0
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        out = hf(ids, attention_mask=mask, labels=labels, use_cache=False)
        assert _rel(out.logits[0, :6], model(ids[:1, :6])[0][0]) <= RTOL
        assert _rel(out.logits[1, 2:], model(ids[1:, 2:])[0][0]) <= RTOL
    assert torch.isfinite(out.loss)


def test_a_cache_continues_and_position_ids_must_follow_it(pair) -> None:
    model, hf = pair
    ids = torch.randint(0, 256, (2, 9))
    with torch.no_grad():
        first = hf(ids[:, :5], position_ids=torch.arange(5).expand(2, 5))
        cache = first[CACHE_FIELD]
        second = hf(
            ids[:, 5:], position_ids=torch.arange(5, 9).expand(2, 4), **{CACHE_FIELD: cache}
        )
        assert _rel(second.logits, model(ids)[0][:, 5:]) <= 1e-5
        with pytest.raises(HFInputError, match="position_ids"):
            hf(ids[:, :1], position_ids=torch.zeros(2, 1, dtype=torch.long), **{CACHE_FIELD: cache})


def test_gradient_checkpointing_is_refused(pair) -> None:
    _, hf = pair
    with pytest.raises(ValueError, match="checkpointing"):
        hf.gradient_checkpointing_enable()


def test_gradients_reach_the_bdh_weights(pair) -> None:
    model, hf = pair
    hf.train()
    idx = torch.randint(0, 256, (2, 12))
    hf(idx, labels=idx).loss.backward()
    assert model.encoder.grad is not None and model.encoder.grad.abs().sum() > 0

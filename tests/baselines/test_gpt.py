"""GPT baseline: cache consistency, block-size limit, registry and checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from bdh.baselines.gpt import GPT, GPTConfig
from bdh.config import preset
from bdh.errors import BDHError, ConfigError
from bdh.registry import build_model_from_preset, model_presets

SMALL = GPTConfig(n_layer=2, n_embd=32, n_head=4, block_size=24, vocab_size=50)


def test_step_logits_equal_full_forward():
    model = GPT(SMALL).eval()
    idx = torch.randint(0, 50, (3, 20))
    full, _ = model(idx)
    state = model.init_state(3)
    logits, state = model.prefill(idx[:, :7], state)
    torch.testing.assert_close(logits, full[:, :7], atol=1e-5, rtol=1e-5)
    for t in range(7, 20):
        step_logits, state = model.step(idx[:, t], state)
        torch.testing.assert_close(step_logits, full[:, t], atol=1e-5, rtol=1e-5)
    assert state.position == 20


def test_chunked_prefill_after_prefix_equals_forward():
    model = GPT(SMALL).eval()
    idx = torch.randint(0, 50, (2, 18))
    full, _ = model(idx)
    state = model.init_state(2)
    model.prefill(idx[:, :5], state)
    logits, _ = model.prefill(idx[:, 5:], state)
    torch.testing.assert_close(logits, full[:, 5:], atol=1e-5, rtol=1e-5)


def test_exceeding_block_size_raises():
    model = GPT(SMALL).eval()
    with pytest.raises(BDHError, match="block size"):
        model(torch.zeros(1, 25, dtype=torch.long))
    state = model.init_state(1)
    model.prefill(torch.zeros(1, 24, dtype=torch.long), state)
    with pytest.raises(BDHError, match="block size"):
        model.step(torch.zeros(1, dtype=torch.long), state)


def test_presets_match_bdh_parameter_counts():
    assert {"tiny", "small"} <= set(model_presets("gpt"))
    for name in ("tiny", "small"):
        gpt = build_model_from_preset("gpt", name).num_parameters()
        bdh = preset(name).num_parameters()
        assert abs(gpt - bdh) / bdh < 0.01, (name, gpt, bdh)


def test_tied_head_shares_embedding():
    model = GPT(SMALL)
    assert model.lm_head is None
    assert len(model.state_dict()) == len(set(t.data_ptr() for t in model.state_dict().values()))
    untied = GPT(GPTConfig(**{**SMALL.to_dict(), "tie_weights": False}))
    assert untied.num_parameters() == model.num_parameters() + 50 * 32


def test_bad_config_is_a_config_error():
    with pytest.raises(ConfigError):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ConfigError):
        GPTConfig.from_dict({"n_layers": 2})


def test_checkpoint_round_trip_and_generate(tmp_path):
    from bdh.checkpoint import load_checkpoint, save_checkpoint
    from bdh.generate import SamplingConfig, generate_ids
    from bdh.tokenizers import ByteTokenizer

    model = GPT(GPTConfig(n_layer=1, n_embd=16, n_head=2, block_size=32)).eval()
    save_checkpoint(tmp_path / "ck", model, ByteTokenizer())
    loaded, _ = load_checkpoint(tmp_path / "ck", "cpu")
    assert isinstance(loaded, GPT)
    idx = torch.randint(0, 256, (2, 6))
    torch.testing.assert_close(loaded(idx)[0], model(idx)[0])
    a = generate_ids(loaded, idx, 5, SamplingConfig(greedy=True))
    b = model.generate(idx, 5, top_k=1)[:, 6:]
    assert torch.equal(a, b)


def test_training_reduces_loss():
    torch.manual_seed(0)
    model = GPT(SMALL)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    idx = torch.randint(0, 50, (4, 17))
    first = None
    for _ in range(30):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < first - 0.5

"""Our BDH computes what the official `bdh.py` computes, on the same weights."""

from __future__ import annotations

import pytest
import torch

import bdh
from tests.conftest import load_reference

# Relative tolerance on logits/loss/gradients (fp32): max |ours - official| <= RTOL * max |official|.
RTOL = 1e-5

CONFIGS = [
    dict(n_layer=1, n_embd=32, n_head=1, mlp_internal_dim_multiplier=8, dropout=0.0),
    dict(n_layer=2, n_embd=32, n_head=2, mlp_internal_dim_multiplier=16, dropout=0.0),
    dict(n_layer=4, n_embd=64, n_head=4, mlp_internal_dim_multiplier=16, dropout=0.0, vocab_size=97),
    dict(n_layer=6, n_embd=128, n_head=4, mlp_internal_dim_multiplier=32, dropout=0.0),
]


def _pair(cfg: dict) -> tuple[torch.nn.Module, bdh.BDH]:
    official = load_reference("official_bdh")
    ref = official.BDH(official.BDHConfig(**cfg))
    ours = bdh.BDH(bdh.BDHConfig(**cfg))
    ours.load_state_dict(ref.state_dict())  # official state_dict loads with no conversion
    return ref.eval(), ours.eval()


def _assert_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    scale = ref.abs().max().clamp_min(1e-12)
    err = (ours - ref).abs().max() / scale
    assert err <= RTOL, f"relative error {err:.2e} > {RTOL:.0e}"


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"L{c['n_layer']}-D{c['n_embd']}-H{c['n_head']}")
@pytest.mark.parametrize("T", [1, 17, 256])
def test_logits_and_loss_match_official(cfg: dict, T: int) -> None:
    ref, ours = _pair(cfg)
    idx = torch.randint(0, ours.config.vocab_size, (2, T))
    targets = torch.randint(0, ours.config.vocab_size, (2, T))
    with torch.no_grad():
        ref_logits, ref_loss = ref(idx, targets)
        logits, loss = ours(idx, targets)
    _assert_close(logits, ref_logits)
    _assert_close(loss, ref_loss)


def test_gradients_match_official() -> None:
    ref, ours = _pair(CONFIGS[2])
    idx = torch.randint(0, 97, (2, 64))
    targets = torch.randint(0, 97, (2, 64))
    ref(idx, targets)[1].backward()
    ours(idx, targets)[1].backward()
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        _assert_close(p.grad, ref_params[name].grad)


def test_same_seed_gives_official_initial_weights() -> None:
    official = load_reference("official_bdh")
    cfg = CONFIGS[1]
    torch.manual_seed(123)
    ref = official.BDH(official.BDHConfig(**cfg))
    torch.manual_seed(123)
    ours = bdh.BDH(bdh.BDHConfig(**cfg))
    ref_state = ref.state_dict()
    assert set(ours.state_dict()) == set(ref_state)
    for name, tensor in ours.state_dict().items():
        assert torch.equal(tensor, ref_state[name]), name


def test_config_defaults_and_presets_match_official() -> None:
    official = load_reference("official_bdh")
    assert bdh.BDHConfig().to_dict() == official.BDHConfig().__dict__
    assert bdh.preset("official").num_parameters() == 25_296_896
    assert sum(p.numel() for p in bdh.BDH(bdh.preset("official")).parameters()) == 25_296_896
    small = bdh.preset("small")
    assert (small.n_layer, small.n_embd, small.n_head, small.mlp_internal_dim_multiplier) == (6, 128, 4, 32)


def test_dropout_is_active_only_in_training() -> None:
    model = bdh.BDH(bdh.BDHConfig(n_layer=2, n_embd=32, n_head=2, mlp_internal_dim_multiplier=8, dropout=0.5))
    idx = torch.randint(0, 256, (1, 16))
    model.eval()
    assert torch.equal(model(idx)[0], model(idx)[0])
    model.train()
    assert not torch.equal(model(idx)[0], model(idx)[0])


def test_generate_signature_returns_prompt_then_new_tokens() -> None:
    model = bdh.BDH(bdh.preset("tiny")).eval()
    idx = torch.randint(0, 256, (3, 5))
    out = model.generate(idx, max_new_tokens=7, temperature=0.8, top_k=5)
    assert out.shape == (3, 12)
    assert torch.equal(out[:, :5], idx)

"""BDH with a carried state under autograd, damping and the no-BPTT ablation (issue: long
context). Every option is off by default and the default model is unchanged."""

from __future__ import annotations

import json

import pytest
import torch

import bdh
import bdh.ops.attention as attention
from bdh.checkpoint import load_checkpoint, save_checkpoint
from bdh.errors import ConfigError
from tests.conftest import require_cpp_kernel

SMALL = dict(n_layer=2, n_embd=32, n_head=2, mlp_internal_dim_multiplier=8, dropout=0.0)


def _model(seed: int = 0, **overrides) -> bdh.BDH:
    torch.manual_seed(seed)
    return bdh.BDH(bdh.BDHConfig(**{**SMALL, **overrides})).double()


def _grads(model: bdh.BDH) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("damping", [None, "alibi:4"])
@pytest.mark.parametrize("max_len", [512, 16])  # the parallel form, then the chunked form
def test_two_carried_windows_equal_one_window_fp64(monkeypatch, damping, max_len) -> None:
    monkeypatch.setattr(attention, "QUADRATIC_MAX_LEN", max_len)
    model = _model(damping=damping)
    idx, targets = torch.randint(0, 256, (2, 48)), torch.randint(0, 256, (2, 48))
    logits, loss = model(idx, targets)
    loss.backward()
    whole = _grads(model)
    model.zero_grad()
    state = model.init_state(2)
    first_logits, first, state = model(idx[:, :20], targets[:, :20], state=state)
    second_logits, second, state = model(idx[:, 20:], targets[:, 20:], state=state)
    assert state.position == 48 and state.kv.requires_grad
    split = (first * 20 + second * 28) / 48  # token-weighted mean, as the whole window's
    split.backward()
    torch.testing.assert_close(
        torch.cat([first_logits, second_logits], 1), logits, rtol=1e-10, atol=1e-12
    )
    torch.testing.assert_close(split, loss, rtol=1e-12, atol=0)
    for ours, ref in zip(_grads(model), whole, strict=True):
        torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)


def test_a_detached_state_passes_no_gradient_back_to_the_first_window() -> None:
    model = _model()
    first_tokens = torch.randint(0, 100, (2, 16))  # disjoint vocabularies: the embedding
    second_tokens = torch.randint(100, 200, (2, 16))  # rows tell the windows' gradients apart
    for detach in (False, True):
        model.zero_grad()
        state = model.init_state(2)
        _, _, state = model(first_tokens, state=state)
        if detach:
            state = state.detach()
        _, loss, _ = model(second_tokens, second_tokens, state=state)
        loss.backward()
        reached_first = model.embed.weight.grad[:100].abs().max()
        assert (reached_first == 0) if detach else (reached_first > 0)
        assert model.embed.weight.grad[100:200].abs().max() > 0


def test_the_given_state_tensor_is_not_modified_and_gets_its_gradient() -> None:
    model = _model()
    state = model.init_state(1)
    state.kv.normal_()
    kv0 = state.kv.clone().requires_grad_()
    state.kv = kv0
    _, loss, returned = model(
        torch.randint(0, 256, (1, 12)), torch.randint(0, 256, (1, 12)), state=state
    )
    (loss + returned.kv.square().sum()).backward()
    assert (
        returned is state
        and returned.position == 12
        and state.kv is not kv0
        and kv0.grad is not None
        and kv0.grad.abs().max() > 0
    )


def test_differentiable_prefill_and_step_equal_forward_and_reach_the_state() -> None:
    model = _model(damping=0.95)
    idx = torch.randint(0, 256, (2, 14))
    full, _ = model(idx)
    state = model.init_state(2)
    kv0 = state.kv.clone().requires_grad_()
    state.kv = kv0
    logits, state = model.prefill(idx[:, :10], state, differentiable=True)
    steps = [model.step(idx[:, t], state, differentiable=True)[0] for t in range(10, 14)]
    out = torch.cat([logits, torch.stack(steps, 1)], 1)
    torch.testing.assert_close(out, full, rtol=0, atol=1e-10)
    out.square().sum().backward()
    assert kv0.grad is not None and model.encoder.grad is not None
    with torch.inference_mode():  # the default stays the in-place inference path
        fast, fast_state = model.prefill(idx[:, :10])
    assert not fast.requires_grad and not fast_state.kv.requires_grad


def test_damping_off_is_todays_model_exactly() -> None:
    """Off by default; a factor of exactly 1 multiplies by one, which changes no bit."""
    assert bdh.BDHConfig().to_dict() == bdh.BDHConfig(damping=None, no_bptt=False).to_dict()
    assert "damping" not in bdh.BDHConfig().to_dict() and "no_bptt" not in bdh.BDHConfig().to_dict()
    default, ones = _model(), _model(damping=1.0)
    assert set(default.state_dict()) == set(ones.state_dict())
    idx = torch.randint(0, 256, (2, 40))
    assert torch.equal(default(idx)[0], ones(idx)[0])
    damped = _model(damping=0.9)
    assert not torch.allclose(default(idx)[0], damped(idx)[0])


@pytest.mark.parametrize("damping", [0.8, [0.9, 0.5], "alibi"])
def test_damped_decoding_equals_parallel(damping) -> None:
    model = _model(damping=damping).eval()
    idx = torch.randint(0, 256, (2, 30))
    parallel, _ = model(idx)
    logits, state = model.prefill(idx[:, :7])
    steps = [model.step(idx[:, t], state)[0] for t in range(7, 30)]
    torch.testing.assert_close(
        torch.cat([logits, torch.stack(steps, 1)], 1), parallel, rtol=0, atol=1e-9
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_damped_decoding_through_the_cpu_kernel_equals_parallel(monkeypatch, dtype) -> None:
    import bdh.ops.decode as decode
    from bdh.ops.decode import cpu

    require_cpp_kernel(cpu._kernel() is not None, "decoding")
    calls = []
    kernel_step = decode.decode_token_cpu
    monkeypatch.setattr(decode, "decode_token_cpu", lambda *a: calls.append(1) or kernel_step(*a))
    torch.manual_seed(2)
    config = bdh.BDHConfig(
        n_layer=2,
        n_embd=128,
        n_head=4,
        mlp_internal_dim_multiplier=16,
        dropout=0.0,
        damping="alibi",
    )
    model = bdh.BDH(config).to(dtype).eval()
    idx = torch.randint(0, 256, (1, 16))
    parallel, _ = model(idx)
    _, state = model.prefill(idx[:, :4])
    steps = torch.stack([model.step(idx[:, t], state)[0] for t in range(4, 16)], 1)
    assert len(calls) == 12
    err = (steps - parallel[:, 4:]).abs().max() / parallel.abs().max()
    assert err < (1e-12 if dtype == torch.float64 else 1e-5)


def test_alibi_damping_factors() -> None:
    config = bdh.BDHConfig(n_head=4, damping="alibi")
    assert config.damping == pytest.approx([1 - 2**-4, 1 - 2**-8, 1 - 2**-12, 1 - 2**-16])
    assert bdh.BDHConfig(n_head=2, damping="alibi:8").damping_factors() == pytest.approx(
        [1 - 2**-4, 1 - 2**-8]
    )
    assert bdh.BDHConfig(n_head=8, damping=0.5).damping_factors() == [0.5] * 8


@pytest.mark.parametrize(
    "field, value",
    [("damping", 0.0), ("damping", 1.5), ("damping", -0.1), ("damping", "beta"), ("damping", "alibi:-1"),
     ("damping", [0.5, 0.5, 0.5]), ("damping", [0.5, 2.0, 0.5, 0.5]), ("damping", True), ("no_bptt", "yes")],
)  # fmt: skip
def test_bad_extension_values_are_one_line_config_errors(field, value) -> None:
    with pytest.raises(ConfigError) as err:
        bdh.BDHConfig(n_head=4, **{field: value})
    assert "\n" not in str(err.value)


def test_checkpoints_record_the_options_and_old_ones_load_unchanged(tmp_path) -> None:
    model = _model(damping="alibi", no_bptt=True).float()
    save_checkpoint(tmp_path / "new", model, bdh.ByteTokenizer())
    saved = json.loads((tmp_path / "new" / "config.json").read_text())["config"]
    assert saved["damping"] == pytest.approx(model.config.damping) and saved["no_bptt"] is True
    loaded, _ = load_checkpoint(tmp_path / "new")
    assert loaded.config == model.config
    torch.testing.assert_close(loaded.attn.decay, model.attn.decay)
    old = _model().float()
    save_checkpoint(tmp_path / "old", old, bdh.ByteTokenizer())
    config_file = tmp_path / "old" / "config.json"
    data = json.loads(config_file.read_text())
    assert "damping" not in data["config"] and "no_bptt" not in data["config"]
    loaded, _ = load_checkpoint(tmp_path / "old")
    assert loaded.config.damping is None and loaded.attn.decay is None and not loaded.config.no_bptt
    idx = torch.randint(0, 256, (1, 20))
    assert torch.equal(loaded(idx)[0], old.eval()(idx)[0])


def test_no_bptt_changes_no_value_and_stops_gradients_through_keys_and_values() -> None:
    base, ablated = _model(), _model(no_bptt=True)
    idx = torch.arange(20).view(1, 20)  # distinct tokens: an embedding row per position
    base_logits, _ = base(idx)
    ablated_logits, _ = ablated(idx)
    assert torch.equal(base_logits, ablated_logits)
    for model, logits in ((base, base_logits), (ablated, ablated_logits)):
        logits[0, -1].square().sum().backward()
        earlier = model.embed.weight.grad[:19].abs().max()
        # every path from token s < t to position t runs through some layer's keys/values
        assert (earlier == 0) if model is ablated else (earlier > 0)
        assert model.embed.weight.grad[19].abs().max() > 0


@pytest.mark.parametrize("with_state", [False, True])
def test_no_bptt_attention_equals_a_hand_detached_reference(with_state) -> None:
    model = _model(no_bptt=True, damping=0.9)
    g = torch.Generator().manual_seed(1)
    H, N, D, T = 2, model.config.neurons_per_head, 32, 12
    x_sparse = torch.rand(2, H, T, N, generator=g, dtype=torch.float64).requires_grad_()
    v = torch.randn(2, 1, T, D, generator=g, dtype=torch.float64).requires_grad_()
    s0 = (
        torch.randn(2, H, N, D, generator=g, dtype=torch.float64).requires_grad_()
        if with_state
        else None
    )
    phasors = model.attn.phasors(0, T)
    out, _ = model.attn(x_sparse, v, phasors, s0)
    out.sum().backward()
    ours = x_sparse.grad.clone()
    assert v.grad is None and (s0 is None or s0.grad is None)
    x_sparse.grad = None
    qr = bdh.ops.rope.apply_rope_phasors(x_sparse, phasors)
    ref, _ = attention.causal_linear_attention_naive(
        qr, qr.detach(), v.detach(), None if s0 is None else s0.detach(), True, model.attn.decay
    )
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    ref.sum().backward()
    torch.testing.assert_close(ours, x_sparse.grad, rtol=1e-12, atol=1e-12)


def test_an_empty_state_at_a_later_position_continues_like_a_fresh_sequence() -> None:
    model = _model().eval()
    idx = torch.randint(0, 256, (2, 30))
    with torch.no_grad():
        _, _, state = model(idx[:, :18], state=model.init_state(2))
        emptied = bdh.BDHState(kv=torch.zeros_like(state.kv), position=state.position)
        continued, _, _ = model(idx[:, 18:], state=emptied)
        fresh, _ = model(idx[:, 18:])
    torch.testing.assert_close(continued, fresh, rtol=0, atol=1e-10)  # RoPE is relative


def test_bf16_autocast_carried_damped_window_runs_and_matches_fp32() -> None:
    torch.manual_seed(0)
    model = bdh.BDH(bdh.preset("tiny", damping="alibi"))
    idx = torch.randint(0, 256, (2, 64))
    _, loss32, _ = model(
        idx[:, 32:], idx[:, 32:], state=model(idx[:, :32], state=model.init_state(2))[2]
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, _, state = model(idx[:, :32], state=model.init_state(2))
        _, loss16, _ = model(idx[:, 32:], idx[:, 32:], state=state)
    loss16.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert abs(loss16.item() - loss32.item()) < 0.05 * loss32.item()

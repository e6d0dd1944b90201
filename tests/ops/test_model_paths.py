"""The model picks its attention form by length; every choice gives the same result."""

from __future__ import annotations

import torch

import bdh
import bdh.ops.attention as attention


def _model() -> bdh.BDH:
    torch.manual_seed(0)
    config = bdh.BDHConfig(n_layer=2, n_embd=32, n_head=2, mlp_internal_dim_multiplier=8, dropout=0.0)
    return bdh.BDH(config).double()


def test_training_forward_and_gradients_equal_across_forms(monkeypatch) -> None:
    model = _model()
    idx = torch.randint(0, 256, (2, 96))
    results = []
    for max_len in (512, 32):  # parallel (quadratic) form, then the chunked form
        monkeypatch.setattr(attention, "QUADRATIC_MAX_LEN", max_len)
        model.zero_grad()
        logits, loss = model(idx, idx)
        loss.backward()
        results.append((logits.detach(), *(p.grad.clone() for p in model.parameters())))
    for chunked, parallel in zip(results[1], results[0]):
        torch.testing.assert_close(chunked, parallel, rtol=1e-10, atol=1e-12)


def test_long_prefill_state_size_does_not_depend_on_length() -> None:
    model = _model()
    sizes = []
    for length in (10, 3000):
        logits, state = model.prefill(torch.randint(0, 256, (1, length)), all_logits=False)
        assert logits.shape == (1, 256) and state.position == length
        sizes.append(state.nbytes())
    assert sizes[0] == sizes[1]


def test_bf16_autocast_training_step_runs_and_matches_fp32_loss() -> None:
    torch.manual_seed(0)
    model = bdh.BDH(bdh.preset("tiny"))
    idx = torch.randint(0, 256, (2, 64))
    _, loss32 = model(idx, idx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, loss16 = model(idx, idx)
    loss16.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert abs(loss16.item() - loss32.item()) < 0.05 * loss32.item()


def test_decoding_past_the_rope_cache_is_exact_and_does_not_grow_it(monkeypatch) -> None:
    import bdh.model

    monkeypatch.setattr(bdh.model, "ROPE_CACHE_MAX_POSITIONS", 16)
    model = _model()
    idx = torch.randint(0, 256, (1, 40))
    parallel, _ = model(idx[:, :12])  # builds a cache of at most 16 positions
    cached = model.attn._phasor_cache.shape[0]
    full, _ = model(idx)  # 40 > 16: computed, not cached
    logits, state = model.prefill(idx[:, :5])
    steps = [model.step(idx[:, t], state)[0] for t in range(5, 40)]
    torch.testing.assert_close(torch.stack(steps, dim=1), full[:, 5:], rtol=0, atol=1e-9)
    assert model.attn._phasor_cache.shape[0] == cached <= 16


def test_a_converted_model_rebuilds_its_rope_cache() -> None:
    """After .double() the cached phasors are rebuilt from the converted frequencies."""
    model = _model().float()
    idx = torch.randint(0, 256, (1, 12))
    model(idx)
    assert model.attn._phasor_cache.dtype == torch.complex64
    model.double()
    assert model.attn._phasor_cache is None
    model(idx)
    assert model.attn._phasor_cache.dtype == torch.complex128

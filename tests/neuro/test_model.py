"""BDHNeuro as a toolkit model: training, truncated BPTT, generation, checkpoints, config."""

from __future__ import annotations

import pytest
import torch

from bdh.errors import ConfigError
from bdh.neuro import BDHNeuro, BDHNeuroConfig
from bdh.registry import build_model_from_preset, model_presets

CFG = dict(n=48, d=12, vocab_size=30)


def test_prefill_and_steps_equal_one_run():
    torch.manual_seed(0)
    model = BDHNeuro(BDHNeuroConfig.reference_neuro(**CFG, k_wta=6)).eval()
    idx = torch.randint(0, 30, (2, 12))
    full, _ = model(idx)
    logits, state = model.prefill(idx[:, :5], model.init_state(2))
    torch.testing.assert_close(logits, full[:, :5])
    for t in range(5, 12):
        step, state = model.step(idx[:, t], state)
        torch.testing.assert_close(step, full[:, t], atol=1e-6, rtol=1e-5)
    assert state.position == 12


def test_training_updates_all_weights_and_lowers_loss():
    torch.manual_seed(0)
    model = BDHNeuro(BDHNeuroConfig(**CFG, x_decay=0.9, x_l1_norm=True))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    idx = torch.randint(0, 30, (4, 17))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    losses = []
    for _ in range(25):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3
    for k, v in model.named_parameters():
        assert not torch.equal(v, before[k]), f"{k} was not trained"
    assert set(model.last_metrics) == {"sparsity_x", "sparsity_y", "rho_F", "rho_eff_rank", "gain"}


def test_truncated_bptt_cuts_gradient_to_early_tokens():
    torch.manual_seed(0)
    idx = torch.randint(0, 30, (1, 8))

    def grad_of_first_embedding(bptt: int) -> torch.Tensor:
        model = BDHNeuro(BDHNeuroConfig(**CFG, bptt=bptt))
        model.token_emb.data.copy_(torch.randn_like(model.token_emb))
        emb = model.token_emb
        logits, _ = model(idx)
        logits[0, -1].sum().backward()
        return emb.grad[idx[0, 0]]

    assert grad_of_first_embedding(0).abs().sum() > 0
    # with bptt=4 the last token's logits cannot reach token 0 (unless it reappears later)
    if idx[0, 0] not in idx[0, 4:]:
        assert grad_of_first_embedding(4).abs().sum() == 0


def test_generate_and_checkpoint_round_trip(tmp_path):
    from bdh.checkpoint import load_checkpoint, save_checkpoint
    from bdh.generate import SamplingConfig, generate_ids
    from bdh.tokenizers import ByteTokenizer

    model = BDHNeuro(BDHNeuroConfig(n=32, d=8, vocab_size=256, k_wta=4, U_kernels=[0.9, 0.99]))
    save_checkpoint(tmp_path / "ck", model.eval(), ByteTokenizer())
    loaded, _ = load_checkpoint(tmp_path / "ck")
    assert loaded.config == model.config
    prompt = torch.randint(0, 256, (2, 5))
    a = generate_ids(loaded, prompt, 6, SamplingConfig(greedy=True))
    b = model.generate(prompt, 6, top_k=1)[:, 5:]
    assert torch.equal(a, b)


def test_presets_and_bad_configs():
    assert {"tiny", "small", "seed"} <= set(model_presets("neuro"))
    model = build_model_from_preset("neuro", "seed")
    assert model.config.rho_decay == pytest.approx(0.5 * 0.99 + 0.3 * 0.97 + 0.2 * 0.94)
    for bad in (dict(branch_nl="tanh"), dict(U_weights=[1.0]), dict(spike_rate=2.0), dict(n=0)):
        with pytest.raises(ConfigError):
            BDHNeuroConfig(**bad)
    with pytest.raises(ConfigError):
        BDHNeuroConfig.from_dict({"neurons": 3})


def test_compiled_cell_equals_eager():
    config = BDHNeuroConfig.from_dict({**model_presets("neuro")["seed"], "vocab_size": 30})
    torch.manual_seed(0)
    eager = BDHNeuro(config)
    compiled = BDHNeuro(config)
    compiled.load_state_dict(eager.state_dict())
    compiled.compile()
    idx = torch.randint(0, 30, (3, 9))
    results = []
    for model in (eager, compiled):
        logits, loss = model(idx[:, :-1], idx[:, 1:], generator=torch.Generator().manual_seed(5))
        loss.backward()
        results.append((logits, {k: p.grad for k, p in model.named_parameters()}))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-4)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_empty_input_is_refused():
    from bdh.errors import BDHError

    model = BDHNeuro(BDHNeuroConfig(**CFG))
    with pytest.raises(BDHError, match="at least one token"):
        model.prefill(torch.zeros(2, 0, dtype=torch.long))


def test_layernorm_row_equals_the_references_formula_and_gradient():
    from bdh.neuro import LN_EPS, layernorm_row

    z = torch.randn(5, 7, dtype=torch.double)
    z[2] = 0.3  # a constant row (the first token reads rho = 0): zero gradient, not NaN
    ours, ref = z.clone().requires_grad_(), z.clone().requires_grad_()
    out = layernorm_row(ours)
    expected = (ref - ref.mean(-1, keepdim=True)) / (ref.std(-1, keepdim=True) + LN_EPS)
    torch.testing.assert_close(out, expected)
    weights = torch.randn(5, 7, dtype=torch.double)
    (out * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(ours.grad, ref.grad)
    assert torch.isfinite(ours.grad).all()


def test_bf16_autocast_trains_with_an_fp32_state():
    torch.manual_seed(0)
    model = BDHNeuro(BDHNeuroConfig(**CFG, x_decay=0.9, x_l1_norm=True))
    idx = torch.randint(0, 30, (4, 17))
    _, loss32 = model(idx[:, :-1], idx[:, 1:])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        trace, state = model.run(idx[:, :-1])
        _, loss16 = model(idx[:, :-1], idx[:, 1:])
    assert state.rho.dtype == torch.float32
    loss16.backward()
    assert loss16.item() == pytest.approx(loss32.item(), rel=1e-2)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())

"""Merging by concatenation and width growth (bdh.merge, `bdh merge`, `bdh grow`)."""

from __future__ import annotations

import pytest
import torch

import bdh
from bdh.checkpoint import load_checkpoint, save_checkpoint
from bdh.config import BDHConfig
from bdh.errors import BDHError, ConfigError
from bdh.merge import grow_model, merge_models
from bdh.model import BDH
from bdh.ops.attention import QUADRATIC_MAX_LEN
from bdh.ops.rope import rope_frequencies
from tests.conftest import require_cpp_kernel
from tests.test_cli import assert_one_line_error, run_cli

SMALL = dict(
    n_layer=2, n_embd=16, n_head=2, mlp_internal_dim_multiplier=4, vocab_size=32, dropout=0.0
)


def model(seed: int, **overrides) -> BDH:
    torch.manual_seed(seed)
    return BDH(BDHConfig(**{**SMALL, **overrides})).double().eval()


def zero_partner(a: BDH, **overrides) -> BDH:
    """A model whose neuron tensors are zero and whose embed and lm_head are A's."""
    b = model(99, **overrides)
    with torch.no_grad():
        for t in (b.encoder, b.encoder_v, b.decoder):
            t.zero_()
        b.embed.weight.copy_(a.embed.weight)
        b.lm_head.copy_(a.lm_head)
    return b


def tokens(T: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, SMALL["vocab_size"], (2, T), generator=torch.Generator().manual_seed(seed)
    )


def recurrent_logits(m: BDH, idx: torch.Tensor, prompt: int) -> torch.Tensor:
    """Prefill the first `prompt` tokens, then step through the rest: all logits [B, T, V]."""
    logits, state = m.prefill(idx[:, :prompt])
    steps = [m.step(idx[:, t], state)[0] for t in range(prompt, idx.shape[1])]
    return torch.cat([logits, torch.stack(steps, dim=1)], dim=1)


@pytest.mark.parametrize("shared", ["average", "a"])
def test_merge_with_zero_model_keeps_logits_fp64(shared):
    a = model(0)
    merged = merge_models(a, zero_partner(a, mlp_internal_dim_multiplier=2), shared=shared)
    assert merged.config.neurons_per_head == a.config.neurons_per_head + 16
    for T in (40, QUADRATIC_MAX_LEN + 88):  # the quadratic form, then the chunked one
        idx = tokens(T)
        torch.testing.assert_close(merged(idx)[0], a(idx)[0], rtol=0, atol=1e-12)
    idx = tokens(24, seed=1)
    torch.testing.assert_close(
        recurrent_logits(merged, idx, 8), recurrent_logits(a, idx, 8), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(recurrent_logits(merged, idx, 8), a(idx)[0], rtol=0, atol=1e-12)


def test_merge_with_zero_model_keeps_logits_through_cpp_step(monkeypatch):
    from bdh.ops import decode
    from bdh.ops.decode import cpu

    require_cpp_kernel(cpu._kernel() is not None, "decoding")
    calls = []
    kernel_step = decode.decode_token_cpu
    monkeypatch.setattr(decode, "decode_token_cpu", lambda *a: calls.append(1) or kernel_step(*a))
    a = model(0)
    merged = merge_models(a, zero_partner(a))
    idx = tokens(12)
    torch.testing.assert_close(
        recurrent_logits(merged, idx, 4), recurrent_logits(a, idx, 4), rtol=0, atol=1e-12
    )
    assert len(calls) == 2 * 8  # two models, eight steps (all layers in one call)


def test_merged_neurons_keep_their_frequencies():
    a, b = model(0), model(1, mlp_internal_dim_multiplier=2)
    merged = merge_models(a, b)
    N_a, N_b = a.config.neurons_per_head, b.config.neurons_per_head
    freqs = merged.attn.freqs.view(-1)
    assert torch.equal(freqs[:N_a], rope_frequencies(N_a).double())
    assert torch.equal(freqs[N_a:], rope_frequencies(N_b).double())
    # The trap: a model built from the merged config derives other frequencies.
    assert not torch.equal(freqs, rope_frequencies(N_a + N_b).double())
    H, D = a.config.n_head, a.config.n_embd
    assert torch.equal(merged.encoder[:, :, :N_a], a.encoder)
    assert torch.equal(merged.encoder_v[:, :, N_a:], b.encoder_v)
    decoder = merged.decoder.view(H, N_a + N_b, D)
    assert torch.equal(decoder[:, :N_a], a.decoder.view(H, N_a, D))
    assert torch.equal(decoder[:, N_a:], b.decoder.view(H, N_b, D))
    assert torch.equal(merged.embed.weight, (a.embed.weight + b.embed.weight) / 2)
    assert torch.equal(merge_models(a, b, shared="a").lm_head, a.lm_head)


def test_merged_parameter_count_is_exact():
    a, b = model(0), model(1, mlp_internal_dim_multiplier=2)
    merged = merge_models(a, b)
    c = merged.config
    assert c.mlp_internal_dim_multiplier == 6
    assert c.n_neurons == a.config.n_neurons + b.config.n_neurons
    expected = 3 * c.n_neurons * c.n_embd + 2 * c.vocab_size * c.n_embd
    assert c.num_parameters() == expected
    assert sum(p.numel() for p in merged.parameters()) == expected


@pytest.mark.parametrize(
    "field, value",
    [
        ("n_embd", 32),
        ("n_head", 4),
        ("n_layer", 3),
        ("vocab_size", 33),
        ("damping", 0.9),
        ("no_bptt", True),
    ],
)
def test_mismatched_models_fail_in_one_line(field, value):
    with pytest.raises(BDHError, match=f"{field} differs") as err:
        merge_models(model(0), model(1, **{field: value}))
    assert "\n" not in str(err.value)


def test_only_bdh_models_merge():
    from bdh.registry import build_model_from_preset

    gpt = build_model_from_preset("gpt", "tiny")
    with pytest.raises(BDHError, match="only BDH models merge"):
        merge_models(model(0), gpt)


def test_merged_checkpoint_restores_frequencies_generates_and_trains(tmp_path):
    # fp32, as checkpoints load; the byte tokenizer's vocabulary
    merged = merge_models(model(0, vocab_size=256).float(), model(1, vocab_size=256).float())
    save_checkpoint(tmp_path / "m", merged, bdh.ByteTokenizer())
    loaded, _ = load_checkpoint(tmp_path / "m")
    assert torch.equal(loaded.attn.freqs, merged.attn.freqs)
    idx = torch.randint(0, 256, (2, 30), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded(idx)[0], merged(idx)[0], rtol=0, atol=0)
    # A model rebuilt from the config alone (derived frequencies) computes something else.
    rebuilt = BDH(loaded.config).eval()
    rebuilt.load_state_dict(
        {k: v for k, v in loaded.state_dict().items() if k != "attn.freqs"}, strict=False
    )
    assert not torch.allclose(rebuilt(idx)[0], loaded(idx)[0])

    out = loaded.generate(idx[:, :5], max_new_tokens=6)
    assert out.shape == (2, 11)

    loaded.train()
    optimizer = torch.optim.AdamW(loaded.parameters(), lr=1e-2)
    before = loaded.encoder.detach().clone()
    _, loss = loaded(idx[:, :-1], idx[:, 1:])
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert not torch.equal(loaded.encoder, before)
    assert torch.equal(loaded.attn.freqs, merged.attn.freqs)  # a buffer: training leaves it


def test_zero_growth_keeps_logits_fp64():
    a = model(0)
    grown = grow_model(a, 8, init="zero")
    assert grown.config.neurons_per_head == a.config.neurons_per_head + 8
    for T in (40, QUADRATIC_MAX_LEN + 88):
        idx = tokens(T)
        torch.testing.assert_close(grown(idx)[0], a(idx)[0], rtol=0, atol=1e-12)
    idx = tokens(20, seed=2)
    torch.testing.assert_close(
        recurrent_logits(grown, idx, 6), recurrent_logits(a, idx, 6), rtol=0, atol=1e-12
    )
    N = a.config.neurons_per_head
    assert torch.equal(grown.attn.freqs.view(-1)[N:], rope_frequencies(8).double())


def test_random_growth_is_seeded_and_scaled():
    a = model(0)
    g1, g2, g3 = (
        grow_model(a, 8, "random", seed=1),
        grow_model(a, 8, "random", seed=1),
        grow_model(a, 8, "random", seed=2),
    )
    N = a.config.neurons_per_head
    new = g1.encoder[:, :, N:]
    assert torch.equal(new, g2.encoder[:, :, N:]) and not torch.equal(new, g3.encoder[:, :, N:])
    assert 0.01 < new.std().item() < 0.03
    assert torch.equal(g1.encoder[:, :, :N], a.encoder)
    assert torch.equal(grow_model(a, 0).encoder, a.encoder)


@pytest.mark.parametrize(
    "neurons, needle", [(3, "cannot be expressed"), (4, "cannot be expressed"), (-2, ">= 0")]
)
def test_inexpressible_growth_fails_in_one_line(neurons, needle):
    # n_embd 16, n_head 2: widths must be multiples of 8 per head
    with pytest.raises(ConfigError, match=needle) as err:
        grow_model(model(0), neurons)
    assert "\n" not in str(err.value)


# ---- CLI -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parents(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    torch.manual_seed(0)
    save_checkpoint(root / "a", BDH(BDHConfig(**{**SMALL, "vocab_size": 256})), bdh.ByteTokenizer())
    save_checkpoint(
        root / "b",
        BDH(BDHConfig(**{**SMALL, "vocab_size": 256, "mlp_internal_dim_multiplier": 2})),
        bdh.ByteTokenizer(),
    )
    save_checkpoint(
        root / "wide",
        BDH(BDHConfig(**{**SMALL, "vocab_size": 256, "n_embd": 32})),
        bdh.ByteTokenizer(),
    )
    tok = bdh.CharTokenizer.from_text("abcdefgh \n")
    save_checkpoint(root / "char", BDH(BDHConfig(**{**SMALL, "vocab_size": tok.vocab_size})), tok)
    return root


def test_cli_merge_round_trip(parents, tmp_path, capsys):
    out = tmp_path / "merged"
    code, stdout, _ = run_cli(
        ["merge", str(parents / "a"), str(parents / "b"), "--out", str(out), "--shared", "a"],
        capsys,
    )
    assert code == 0 and str(out) in stdout
    merged, _ = load_checkpoint(out)
    a, _ = load_checkpoint(parents / "a")
    b, _ = load_checkpoint(parents / "b")
    expected = merge_models(a, b, shared="a")
    for name, tensor in expected.state_dict().items():
        assert torch.equal(merged.state_dict()[name], tensor), name
    code, stdout, _ = run_cli(["generate", str(out), "-p", "ab", "-n", "4", "--seed", "0"], capsys)
    assert code == 0 and stdout.startswith("ab")


def test_cli_grow_round_trip(parents, tmp_path, capsys):
    out = tmp_path / "grown"
    code, _, _ = run_cli(["grow", str(parents / "a"), "--neurons", "8", "--out", str(out)], capsys)
    assert code == 0
    grown, _ = load_checkpoint(out)
    a, _ = load_checkpoint(parents / "a")
    idx = torch.randint(0, 256, (1, 16), generator=torch.Generator().manual_seed(0))
    assert grown.config.neurons_per_head == a.config.neurons_per_head + 8
    torch.testing.assert_close(grown(idx)[0], a(idx)[0])


def test_cli_refuses_non_empty_out_without_force(parents, tmp_path, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    args = ["merge", str(parents / "a"), str(parents / "b"), "--out", str(out)]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, "not empty")
    code, _, _ = run_cli([*args, "--force"], capsys)
    assert code == 0 and (out / "model.safetensors").is_file() and (out / "keep.txt").is_file()
    code, _, err = run_cli(
        ["grow", str(parents / "a"), "--neurons", "8", "--out", str(out)], capsys
    )
    assert_one_line_error(code, err, "not empty")


@pytest.mark.parametrize(
    "args, needle",
    [
        (["merge", "{a}", "{wide}"], "n_embd differs"),
        (["merge", "{a}", "{char}"], "vocab_size differs"),
        (["merge", "{a}", "{missing}"], "no checkpoint"),
        (["merge", "{a}", "{corrupt}"], "corrupt"),
        (["grow", "{a}", "--neurons", "4"], "cannot be expressed"),
        (["grow", "{missing}", "--neurons", "8"], "no checkpoint"),
    ],
)
def test_cli_refusals_are_one_line(parents, tmp_path, capsys, args, needle):
    corrupt = tmp_path / "corrupt"
    save_checkpoint(corrupt, BDH(BDHConfig(**{**SMALL, "vocab_size": 256})), bdh.ByteTokenizer())
    (corrupt / "model.safetensors").write_bytes(b"not safetensors")
    paths = {
        "a": parents / "a",
        "wide": parents / "wide",
        "char": parents / "char",
        "missing": tmp_path / "nope",
        "corrupt": corrupt,
    }
    argv = [arg.format(**paths) for arg in args] + ["--out", str(tmp_path / "out")]
    code, _, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "out").exists()


def test_cli_refuses_different_tokenizers(parents, tmp_path, capsys):
    tok = bdh.CharTokenizer.from_text("".join(chr(i) for i in range(256)))
    other = tmp_path / "other"
    save_checkpoint(other, BDH(BDHConfig(**{**SMALL, "vocab_size": tok.vocab_size})), tok)
    code, _, err = run_cli(
        ["merge", str(parents / "a"), str(other), "--out", str(tmp_path / "out")], capsys
    )
    assert_one_line_error(code, err, "different tokenizers")


def test_loading_frequencies_into_a_used_model_resets_its_phasor_cache():
    a, b = model(0), model(1)
    merged = merge_models(a, b)
    used = BDH(merged.config).double().eval()
    idx = tokens(20)
    used(idx)  # fills the phasor cache from the derived frequencies
    used.load_state_dict(merged.state_dict())
    torch.testing.assert_close(used(idx)[0], merged(idx)[0], rtol=0, atol=0)


def test_zero_block_gets_no_gradient_and_random_block_does():
    a = model(0)
    N = a.config.neurons_per_head
    for init, trains in (("zero", False), ("random", True)):
        grown = grow_model(a, 8, init=init).train()
        idx = tokens(20)
        grown(idx[:, :-1], idx[:, 1:])[1].backward()
        H, D = a.config.n_head, a.config.n_embd
        block_grads = (
            grown.encoder.grad[:, :, N:],
            grown.encoder_v.grad[:, :, N:],
            grown.decoder.grad.view(H, N + 8, D)[:, N:],
        )
        assert all(bool(g.abs().max() > 0) == trains for g in block_grads), init


def test_merging_leaves_the_global_rng_alone():
    a, b = model(0), model(1)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    merge_models(a, b)
    grow_model(a, 8, "random", seed=3)
    assert torch.equal(torch.rand(3), expected)

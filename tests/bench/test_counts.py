"""The analytic FLOP and byte counts of the benchmarked paths (bench/counts.py)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bdh.config import preset
from bdh.experiments.bench import counts
from bdh.experiments.bench.reference import official_and_ours
from tests.conftest import REFERENCE_DIR, load_reference


@pytest.fixture(scope="module")
def pair():
    load_reference("official_bdh")  # skips when the reference is absent
    ref, ours = official_and_ours("tiny", REFERENCE_DIR / "official_bdh.py")
    return ref, ours


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize(("B", "T"), [(1, 7), (2, 16)])
def test_forward_and_training_flops_match_torch_counter(pair, B, T) -> None:
    ref, _ = pair
    config = preset("tiny")
    idx = torch.randint(0, config.vocab_size, (B, T))
    with torch.no_grad():
        assert _flops(lambda: ref.eval()(idx)) == counts.forward_work(config, B, T).flops

    def step() -> None:
        _, loss = ref.train()(idx, idx)
        loss.backward()

    optimizer_flops = 0  # AdamW is elementwise: no products
    expected = counts.train_step_work(config, B, T).flops
    assert _flops(step) + optimizer_flops == expected == 3 * counts.forward_work(config, B, T).flops


def test_official_generate_flops(pair) -> None:
    ref, _ = pair
    config = preset("tiny")
    prompt = torch.randint(0, config.vocab_size, (2, 5))
    assert _flops(lambda: ref.eval().generate(prompt, 4)) == counts.official_generate_work(config, 2, 5, 4).flops


@pytest.mark.parametrize("T", [40, 600])  # quadratic with a state; chunked (T > 512)
def test_prefill_flops(pair, T) -> None:
    _, ours = pair
    config = ours.config
    idx = torch.randint(0, config.vocab_size, (1, T))
    measured = _flops(lambda: ours.eval().prefill(idx, ours.init_state(1), all_logits=False))
    assert measured == counts.prefill_work(config, 1, T, chunk_tokens=1024).flops


def test_decode_step_flops(pair, monkeypatch) -> None:
    """The twin's products are counted by torch; the rank-1 write (addcmul_) is not. (The
    C++ kernel, which torch cannot see, does the same work less the inactive neurons.)"""
    import bdh.ops.decode as decode

    monkeypatch.setattr(decode, "fused_decode_applies", lambda *a: False)
    _, ours = pair
    config = ours.config
    B, L, D, H, N = 3, config.n_layer, config.n_embd, config.n_head, config.neurons_per_head
    _, state = ours.eval().prefill(torch.randint(0, config.vocab_size, (B, 5)), ours.init_state(B))
    measured = _flops(lambda: ours.step(torch.randint(0, config.vocab_size, (B,)), state))
    write = L * 2 * B * H * N * D
    assert measured + write == counts.decode_step_work(config, B).flops


def test_product_bytes_by_hand() -> None:
    # 2 products [3, 4] x [4, 5] in fp32: A 2*12, B 2*20, C 2*15 elements
    assert counts.product(2, 3, 4, 5, 4) == counts.Work(2 * 2 * 3 * 4 * 5, 4 * (24 + 40 + 30))
    # one shared right operand
    assert counts.product(2, 3, 4, 5, 2, shared_right=True).bytes == 2 * (24 + 20 + 30)


def test_decode_step_bytes_by_hand() -> None:
    config = preset("tiny")
    L, D, H, N, V = config.n_layer, config.n_embd, config.n_head, config.neurons_per_head, config.vocab_size
    B = 2
    per_layer = (
        (B * D + H * D * N + H * B * N)  # encoder
        + (2 * B * H * N * D + B * H * N + B * H * D + B * D)  # state read and write
        + (H * B * D + H * D * N + H * B * N)  # encoder_v
        + (H * B * N + H * N * D + H * B * D)  # decoder
    )
    expected = 4 * (L * per_layer + B * D + D * V + B * V)
    assert counts.decode_step_work(config, B).bytes == expected


def test_training_bytes_include_adamw_and_halve_products_in_bf16() -> None:
    config = preset("tiny")
    params = counts.parameter_count(config)
    assert params == sum(p.numel() for p in _model(config).parameters())
    fp32 = counts.train_step_work(config, 2, 16, "fp32")
    bf16 = counts.train_step_work(config, 2, 16, "bf16")
    adamw = 7 * 4 * params
    assert fp32.bytes - adamw == 2 * (bf16.bytes - adamw) == 3 * counts.forward_work(config, 2, 16).bytes
    assert fp32.flops == bf16.flops


def _model(config):
    from bdh.model import BDH

    return BDH(config)

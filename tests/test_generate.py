"""Decoding on the recurrent state: determinism, greedy exactness, batching, stop, stream."""

from __future__ import annotations

import pytest
import torch

import bdh
from bdh.errors import BDHError
from bdh.generate import (
    SamplingConfig,
    generate_ids,
    generate_text,
    sample_next,
    stream_text,
)


@pytest.fixture(scope="module")
def model() -> bdh.BDH:
    torch.manual_seed(7)
    return bdh.BDH(bdh.preset("tiny")).eval()


def test_same_seed_same_tokens(model) -> None:
    prompt = torch.randint(0, 256, (2, 9))
    sampling = SamplingConfig(temperature=1.3, top_k=50, top_p=0.95)
    runs = [
        generate_ids(model, prompt, 40, sampling, torch.Generator().manual_seed(11)) for _ in range(2)
    ]
    assert torch.equal(runs[0], runs[1])
    other = generate_ids(model, prompt, 40, sampling, torch.Generator().manual_seed(12))
    assert not torch.equal(runs[0], other)


def test_official_generate_is_deterministic_under_global_seed(model) -> None:
    prompt = torch.randint(0, 256, (1, 5))
    torch.manual_seed(3)
    a = model.generate(prompt, 30)
    torch.manual_seed(3)
    b = model.generate(prompt, 30)
    assert torch.equal(a, b)


def test_greedy_recurrent_equals_greedy_full_recompute(model) -> None:
    prompt = torch.randint(0, 256, (3, 12))
    ours = generate_ids(model, prompt, 60, SamplingConfig(greedy=True))
    idx = prompt
    with torch.no_grad():
        for _ in range(60):
            logits, _ = model(idx)
            idx = torch.cat((idx, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(ours, idx[:, 12:])


def test_ragged_batch_equals_individual_runs(model) -> None:
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11]]
    greedy = SamplingConfig(greedy=True)
    batched = generate_ids(model, prompts, 15, greedy)
    for row, prompt in zip(batched, prompts):
        alone = generate_ids(model, [prompt], 15, greedy)[0]
        assert torch.equal(row, alone)


def test_top_k_one_is_greedy_and_top_p_keeps_the_nucleus() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9]])
    assert sample_next(logits, SamplingConfig(top_k=1)).item() == 1
    # probabilities ~ [0.02, 0.47, 0.06, 0.43]: top-p 0.5 keeps tokens 1 and 3 only
    draws = {
        sample_next(logits, SamplingConfig(top_p=0.5), torch.Generator().manual_seed(s)).item()
        for s in range(200)
    }
    assert draws == {1, 3}
    assert sample_next(logits, SamplingConfig(top_p=0.01)).item() == 1


def test_stream_matches_batch_and_honours_stop(model) -> None:
    tok = bdh.ByteTokenizer()
    sampling = SamplingConfig(temperature=0.9)
    full = generate_text(model, tok, ["To be"], 80, sampling, seed=5)[0]
    streamed = "".join(stream_text(model, tok, "To be", 80, sampling, seed=5))
    assert streamed == full
    stop = full[20:23]
    first = full.find(stop)
    stopped = "".join(stream_text(model, tok, "To be", 80, sampling, seed=5, stop=stop))
    assert stopped == full[:first]
    assert generate_text(model, tok, ["To be"], 80, sampling, seed=5, stop=stop)[0] == full[:first]


def test_stream_holds_back_partial_utf8(model) -> None:
    pieces = list(stream_text(model, bdh.ByteTokenizer(), "é", 64, SamplingConfig(), seed=1))
    for piece in pieces:
        piece.encode("utf-8")  # every yielded piece is valid text


@pytest.mark.parametrize(
    "kwargs",
    [dict(temperature=0.0), dict(temperature=-1.0), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=0)],
)
def test_bad_sampling_settings_are_refused(kwargs) -> None:
    with pytest.raises(BDHError):
        SamplingConfig(**kwargs)


def test_empty_prompt_is_refused(model) -> None:
    with pytest.raises(BDHError, match="empty"):
        generate_ids(model, [[]], 5)
    with pytest.raises(BDHError, match="empty"):
        list(stream_text(model, bdh.ByteTokenizer(), "", 5))
    for all_logits in (True, False):  # the model API refuses it too
        with pytest.raises(BDHError, match="at least one token"):
            model.prefill(torch.zeros(1, 0, dtype=torch.long), all_logits=all_logits)


def test_memory_is_flat_in_generated_length(model) -> None:
    """The decoder keeps one state; its size is the same after 10 or 1000 tokens."""
    from bdh.generate import iterate_ids

    sizes = []
    original_step = model.step

    def recording_step(tokens, state):
        sizes.append(state.nbytes())
        return original_step(tokens, state)

    model.step = recording_step
    try:
        for _ in iterate_ids(model, [[1, 2, 3]], 1000):
            pass
    finally:
        del model.step
    assert len(sizes) == 999 and len(set(sizes)) == 1


def test_sampling_draws_what_torch_multinomial_draws() -> None:
    logits = torch.randn(5, 256, generator=torch.Generator().manual_seed(0))
    for seed in range(20):
        ours = sample_next(logits, SamplingConfig(), torch.Generator().manual_seed(seed))
        probs = torch.softmax(logits, dim=-1)
        ref = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed)).view(-1)
        assert torch.equal(ours, ref)

"""generate() on the recurrent state: bdh's tokens, one step per token, flat memory, beams."""

from __future__ import annotations

import torch

from bdh.generate import SamplingConfig, generate_ids
from bdh.hf.cache import BDHCache
from bdh.hf.modeling import CACHE_FIELD

PROMPTS = [[72, 105, 33], [1, 2, 3, 4, 5, 6, 7], [200, 0, 17, 99, 3, 250, 8, 8, 8, 41, 77, 12]]


def _left_padded(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    return ids, mask


def test_greedy_equals_bdh_greedy_per_prompt_and_left_padded_batch(pair) -> None:
    model, hf = pair
    n = 16
    expected = [
        generate_ids(model, [p], n, SamplingConfig(greedy=True))[0].tolist() for p in PROMPTS
    ]
    for p, want in zip(PROMPTS, expected):
        out = hf.generate(torch.tensor([p]), max_new_tokens=n, do_sample=False)
        assert out[0, len(p) :].tolist() == want
    ids, mask = _left_padded(PROMPTS)
    out = hf.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False, pad_token_id=0)
    assert out[:, ids.shape[1] :].tolist() == expected


def test_generate_prefills_once_then_steps_one_token(pair, monkeypatch) -> None:
    model, hf = pair
    fed: list[tuple[str, int]] = []
    prefill, step = model.prefill, model.step

    def counting_prefill(idx, state=None, *args, **kwargs):
        fed.append(("prefill", idx.shape[1]))
        return prefill(idx, state, *args, **kwargs)

    def counting_step(tokens, state, *args, **kwargs):
        fed.append(("step", tokens.numel() // tokens.shape[0]))
        return step(tokens, state, *args, **kwargs)

    monkeypatch.setattr(model, "prefill", counting_prefill)
    monkeypatch.setattr(model, "step", counting_step)
    hf.generate(torch.tensor([PROMPTS[2]]), max_new_tokens=20, do_sample=False)
    assert fed == [("prefill", len(PROMPTS[2]))] + [("step", 1)] * 19


def test_sampling_with_a_seed_is_reproducible_and_draws_bdhs_tokens(pair) -> None:
    model, hf = pair
    ids = torch.tensor([PROMPTS[1], PROMPTS[1]])
    runs = []
    for _ in range(2):
        torch.manual_seed(1234)
        runs.append(hf.generate(ids, max_new_tokens=24, do_sample=True, top_k=50, temperature=0.9))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0][0], runs[0][1])  # the two rows drew differently
    torch.manual_seed(1234)
    ours = generate_ids(model, ids, 24, SamplingConfig(temperature=0.9, top_k=50))
    assert torch.equal(runs[0][:, ids.shape[1] :], ours)


def _brute_force_beams(
    model, prompt: list[int], beams: int, steps: int
) -> list[tuple[float, list[int]]]:
    """Textbook beam search, every candidate scored by a full parallel forward from scratch."""
    alive: list[tuple[float, list[int]]] = [(0.0, [])]
    for _ in range(steps):
        candidates = []
        for score, tokens in alive:
            with torch.no_grad():
                logits = model(torch.tensor([prompt + tokens]))[0][0, -1]
            logp = torch.log_softmax(logits.float(), dim=-1)
            candidates += [(score + float(logp[v]), tokens + [v]) for v in range(logp.numel())]
        alive = sorted(candidates, key=lambda c: -c[0])[:beams]
    return alive


def test_beam_search_equals_brute_force(pair) -> None:
    model, hf = pair
    prompts = [PROMPTS[0], [9, 8, 7]]
    steps = 4
    out = hf.generate(
        torch.tensor(prompts), max_new_tokens=steps, num_beams=3, num_return_sequences=3,
        do_sample=False, length_penalty=0.0, return_dict_in_generate=True, output_scores=True,
    )  # fmt: skip
    for i, prompt in enumerate(prompts):
        want = _brute_force_beams(model, prompt, 3, steps)
        got = out.sequences[3 * i : 3 * i + 3, len(prompt) :].tolist()
        assert got == [tokens for _, tokens in want]
        scores = out.sequences_scores[3 * i : 3 * i + 3]
        assert torch.allclose(scores, torch.tensor([s for s, _ in want]), atol=1e-4)


def test_decode_memory_is_flat(pair) -> None:
    _, hf = pair
    sizes = []
    for n in (10, 1000):
        out = hf.generate(
            torch.tensor([PROMPTS[0]]),
            max_new_tokens=n,
            do_sample=False,
            return_dict_in_generate=True,
        )
        assert out.sequences.shape[1] == len(PROMPTS[0]) + n
        cache = getattr(out, CACHE_FIELD)
        assert isinstance(cache, BDHCache) and cache.get_seq_length() == len(PROMPTS[0]) + n - 1
        sizes.append(cache.nbytes())
    c = hf.config
    assert (
        sizes[0]
        == sizes[1]
        == c.n_layer * c.n_head * c.bdh_config().neurons_per_head * c.n_embd * 4
    )

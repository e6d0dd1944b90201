"""Decoding on the recurrent state: sampling, batched prompts, stop strings, streaming.

Works with any model exposing `init_state(batch_size)`, `prefill(idx, state)` and
`step(tokens, state)`; the memory used does not grow with the generated length
beyond what the model's state needs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bdh.errors import BDHError
from bdh.tokenizers import Tokenizer


@dataclass
class SamplingConfig:
    """How the next token is drawn from the logits. `greedy` takes the argmax."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise BDHError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise BDHError(f"top-k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise BDHError(f"top-p must be in (0, 1], got {self.top_p}")


def sample_next(
    logits: Tensor, sampling: SamplingConfig, generator: torch.Generator | None = None
) -> Tensor:
    """Draw one token per row of logits [B, vocab] -> [B]."""
    if sampling.greedy:
        return logits.argmax(dim=-1)
    logits = logits.float()
    if sampling.temperature != 1.0:
        logits = logits / sampling.temperature
    if sampling.top_k is not None:
        kth = torch.topk(logits, min(sampling.top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p is not None and sampling.top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = F.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        # drop a token when the tokens before it already reach top_p
        drop_sorted = (cumulative - F.softmax(sorted_logits, dim=-1)) >= sampling.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    # The exponential race argmax(p / E), E ~ Exp(1), is how torch.multinomial draws one
    # sample (same tokens from the same generator state), without its input checks, which
    # cost as much again per decoded token.
    race = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / race).argmax(dim=-1)


def _as_batch(prompts: Tensor | Sequence[Sequence[int]]) -> list[list[int]]:
    if isinstance(prompts, Tensor):
        return prompts.tolist()
    return [list(p) for p in prompts]


@torch.no_grad()
def iterate_ids(
    model: torch.nn.Module,
    prompts: Tensor | Sequence[Sequence[int]],
    max_new_tokens: int,
    sampling: SamplingConfig | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[Tensor]:
    """Yield the next token of every sequence [B], max_new_tokens times.

    Prompts may differ in length: the common prefix is prefilled in parallel, then the
    longer prompts feed their remaining tokens step by step while the others sample.
    """
    sampling = sampling or SamplingConfig()
    batch = _as_batch(prompts)
    if not batch or any(len(p) == 0 for p in batch):
        raise BDHError("the prompt is empty: give at least one token")
    if max_new_tokens < 0:
        raise BDHError(f"max new tokens must be >= 0, got {max_new_tokens}")
    device = next(model.parameters()).device
    common = min(len(p) for p in batch)
    longest = max(len(p) for p in batch)
    prefix = torch.tensor([p[:common] for p in batch], dtype=torch.long, device=device)
    state = model.init_state(len(batch))
    logits, state = model.prefill(prefix, state, all_logits=False)
    # Remaining prompt tokens, forced where a sequence still has them.
    forced = torch.zeros(len(batch), longest - common, dtype=torch.long, device=device)
    has_forced = torch.zeros_like(forced, dtype=torch.bool)
    for i, p in enumerate(batch):
        forced[i, : len(p) - common] = torch.tensor(p[common:], dtype=torch.long)
        has_forced[i, : len(p) - common] = True
    produced = torch.zeros(len(batch), dtype=torch.long, device=device)
    if max_new_tokens == 0:
        return
    # Ragged phase: some sequences still feed prompt tokens while the others sample.
    for position in range(forced.shape[1]):
        sampled = sample_next(logits, sampling, generator)
        is_prompt = has_forced[:, position]
        token = torch.where(is_prompt, forced[:, position], sampled)
        new = ~is_prompt
        produced += new.long()
        if bool(new.any()):
            yield torch.where(new, token, torch.full_like(token, -1))
        if bool((produced < max_new_tokens).any()):
            logits, state = model.step(token, state)
        else:
            return
    # Every sequence samples from here on: no per-token bookkeeping.
    remaining = max_new_tokens - int(produced.min())
    for i in range(remaining):
        token = sample_next(logits, sampling, generator)
        yield token
        if i + 1 < remaining:
            logits, state = model.step(token, state)


@torch.no_grad()
def generate_ids(
    model: torch.nn.Module,
    prompts: Tensor | Sequence[Sequence[int]],
    max_new_tokens: int,
    sampling: SamplingConfig | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """New tokens [B, max_new_tokens] for each prompt (prompts: [B, T] or ragged lists)."""
    batch = _as_batch(prompts)
    columns: list[list[int]] = [[] for _ in batch]
    for token in iterate_ids(model, batch, max_new_tokens, sampling, generator):
        for i, t in enumerate(token.tolist()):
            if t >= 0 and len(columns[i]) < max_new_tokens:
                columns[i].append(t)
    device = next(model.parameters()).device
    return torch.tensor(columns, dtype=torch.long, device=device).view(len(batch), max_new_tokens)


class GenerateMixin:
    """The official `generate(idx, max_new_tokens, temperature, top_k)` for any model with
    the recurrent API: it decodes on the state instead of recomputing the prefix."""

    def generate(
        self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None
    ) -> Tensor:
        """idx [B, T] followed by max_new_tokens sampled tokens."""
        sampling = SamplingConfig(temperature=temperature, top_k=top_k)
        return torch.cat((idx, generate_ids(self, idx, max_new_tokens, sampling)), dim=1)


def _seeded(seed: int | None, device: torch.device) -> torch.Generator | None:
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(seed)


@torch.no_grad()
def stream_text(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    prompt: str,
    max_new_tokens: int,
    sampling: SamplingConfig | None = None,
    seed: int | None = None,
    stop: str | None = None,
) -> Iterator[str]:
    """Yield text pieces as they are generated, ending before `stop` if it appears."""
    if not prompt:
        raise BDHError("the prompt is empty: give at least one character")
    ids = tokenizer.encode(prompt)
    device = next(model.parameters()).device
    decoder = tokenizer.stream_decoder()
    pending = ""  # text held back while it could be the start of the stop string
    for token in iterate_ids(model, [ids], max_new_tokens, sampling, _seeded(seed, device)):
        pending += decoder.decode([int(token[0])])
        if stop:
            cut = pending.find(stop)
            if cut >= 0:
                if pending[:cut]:
                    yield pending[:cut]
                return
            keep = _longest_stop_prefix_suffix(pending, stop)
            ready, pending = pending[: len(pending) - keep], pending[len(pending) - keep :]
        else:
            ready, pending = pending, ""
        if ready:
            yield ready
    pending += decoder.flush()
    if stop and stop in pending:
        pending = pending[: pending.find(stop)]
    if pending:
        yield pending


def _longest_stop_prefix_suffix(text: str, stop: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of stop."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


def generate_text(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int,
    sampling: SamplingConfig | None = None,
    seed: int | None = None,
    stop: str | None = None,
) -> list[str]:
    """Continuations of a batch of text prompts (without the prompts)."""
    if not prompts or any(not p for p in prompts):
        raise BDHError("the prompt is empty: give at least one character")
    device = next(model.parameters()).device
    ids = [tokenizer.encode(p) for p in prompts]
    new = generate_ids(model, ids, max_new_tokens, sampling, _seeded(seed, device))
    texts = [tokenizer.decode(row) for row in new.tolist()]
    if stop:
        texts = [t[: t.find(stop)] if stop in t else t for t in texts]
    return texts

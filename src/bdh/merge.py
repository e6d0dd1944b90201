"""Model merging by concatenation and width growth (paper §7.1).

Two BDH models with the same d, heads, layers and vocabulary merge into one with
N_A + N_B neurons per head: every tensor with a neuron axis (`encoder`, `encoder_v`,
`decoder`, and the RoPE frequencies `attn.freqs`) is concatenated per head, A's neurons
first; `embed` and `lm_head`, which have no neuron axis, are averaged or taken from A.

A neuron's rotary frequency depends on its index within its head, so a model built
from the wider config would give every merged neuron a different phase. The merged
model keeps each neuron's own frequency instead: `attn.freqs` is a persistent buffer,
saved in model.safetensors, and every RoPE computation reads it (the phasor cache of
`RotaryLinearAttention`), so a saved merged checkpoint loads with its frequencies.

Growth is the same operation with a fresh block of neurons (zero or random weights).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from bdh.checkpoint import load_checkpoint, save_checkpoint
from bdh.config import BDHConfig
from bdh.errors import BDHError, CheckpointError, ConfigError
from bdh.model import BDH
from bdh.ops.rope import rope_frequencies
from bdh.tokenizers import Tokenizer

Shared = Literal["average", "a"]
GrowInit = Literal["zero", "random"]
# Std of BDH's weight init (model.py): the fresh block of `grow_model` init="random".
INIT_STD = 0.02
# Config fields both parents must share (dropout and width may differ; A's dropout is kept).
SHARED_FIELDS = ("n_embd", "n_head", "n_layer", "vocab_size", "damping", "no_bptt")


def _require_bdh(model: object, name: str) -> BDH:
    if not isinstance(model, BDH):
        raise BDHError(f"only BDH models merge; {name} is {type(model).__name__}")
    return model


def check_compatible(a: BDH, b: BDH) -> None:
    """BDHError unless a and b share every field of SHARED_FIELDS (the first difference named)."""
    _require_bdh(a, "A")
    _require_bdh(b, "B")
    for field in SHARED_FIELDS:
        va, vb = getattr(a.config, field), getattr(b.config, field)
        if va != vb:
            raise BDHError(f"models do not merge: {field} differs (A: {va!r}, B: {vb!r})")


def widened_config(config: BDHConfig, extra_neurons_per_head: int) -> BDHConfig:
    """`config` with N + extra neurons per head; ConfigError if no multiplier gives that N."""
    if extra_neurons_per_head < 0:
        raise ConfigError(f"extra neurons per head must be >= 0, got {extra_neurons_per_head}")
    width = config.neurons_per_head + extra_neurons_per_head
    # N = multiplier * n_embd / n_head, so the multiplier is N * n_head / n_embd.
    multiplier, rest = divmod(width * config.n_head, config.n_embd)
    if rest or multiplier < 1:
        raise ConfigError(
            f"{width} neurons per head cannot be expressed: width * n_head ({config.n_head}) "
            f"must be a multiple of n_embd ({config.n_embd})"
        )
    data = {**config.to_dict(), "mlp_internal_dim_multiplier": multiplier}
    return BDHConfig.from_dict(data)


def _joined(a: BDH, block: dict[str, Tensor], embed: Tensor, lm_head: Tensor) -> BDH:
    """A model of A's config widened by the neuron block `block` (same keys as A's state).

    block: encoder / encoder_v [H, D, N_B], decoder [H * N_B, D], freqs [N_B].
    """
    c = a.config
    H, D, N_a = c.n_head, c.n_embd, c.neurons_per_head
    N_b = block["freqs"].numel()
    # The new model's random init is overwritten below: leave the caller's RNG as it was.
    with torch.random.fork_rng(devices=[]):
        merged = BDH(widened_config(c, N_b))
    merged = merged.to(device=a.lm_head.device, dtype=a.lm_head.dtype)
    decoder = torch.cat((a.decoder.view(H, N_a, D), block["decoder"].view(H, N_b, D)), dim=1)
    state = {
        "encoder": torch.cat((a.encoder, block["encoder"]), dim=2),
        "encoder_v": torch.cat((a.encoder_v, block["encoder_v"]), dim=2),
        # Rows are head-major: head h's rows of A, then of the block.
        "decoder": decoder.reshape(H * (N_a + N_b), D),
        # One frequency vector serves all heads; each neuron keeps its own.
        "attn.freqs": torch.cat((a.attn.freqs.view(-1), block["freqs"].view(-1))).view(1, 1, 1, -1),
        "embed.weight": embed,
        "lm_head": lm_head,
    }
    missing = set(merged.state_dict()) - set(state)
    if missing:  # a new model tensor this function does not know how to join
        raise BDHError(f"cannot merge model tensors {sorted(missing)}")
    merged.load_state_dict(state)
    return merged.train(a.training)


@torch.no_grad()
def merge_models(a: BDH, b: BDH, shared: Shared = "average") -> BDH:
    """The concatenation of a and b: N_A + N_B neurons per head, A's neurons first.

    `shared` says what becomes of `embed` and `lm_head`: "average" (their mean) or "a"
    (A's). The merged model takes A's dtype, device, dropout and training mode.
    """
    check_compatible(a, b)
    if shared not in ("average", "a"):
        raise BDHError(f"shared must be 'average' or 'a', got {shared!r}")
    like = a.lm_head

    def of_b(t: Tensor) -> Tensor:
        return t.detach().to(device=like.device, dtype=like.dtype)

    block = {
        "encoder": of_b(b.encoder),
        "encoder_v": of_b(b.encoder_v),
        "decoder": of_b(b.decoder),
        "freqs": b.attn.freqs.detach().to(device=like.device, dtype=a.attn.freqs.dtype),
    }
    if shared == "average":
        embed = (a.embed.weight + of_b(b.embed.weight)) / 2
        lm_head = (a.lm_head + of_b(b.lm_head)) / 2
    else:
        embed, lm_head = a.embed.weight, a.lm_head
    return _joined(a, block, embed, lm_head)


@torch.no_grad()
def grow_model(a: BDH, extra_neurons_per_head: int, init: GrowInit = "zero", seed: int = 0) -> BDH:
    """A with `extra_neurons_per_head` fresh neurons per head appended to every head.

    init "zero": the new block's encoder, encoder_v and decoder are zero, so the grown
    model computes exactly what A computes (its new neurons never fire until trained);
    "random": normal with std INIT_STD, as BDH initialises its weights (seeded by `seed`).
    The new neurons' RoPE frequencies are those of a fresh model of the block's width,
    `rope_frequencies(extra)`: the block is laid out like a whole head of its own, as it
    would be if it were merged from a separately trained model of that width.
    """
    _require_bdh(a, "the model")
    if init not in ("zero", "random"):
        raise BDHError(f"init must be 'zero' or 'random', got {init!r}")
    c = a.config
    widened_config(c, extra_neurons_per_head)  # refuse an inexpressible width before any work
    H, D, E = c.n_head, c.n_embd, extra_neurons_per_head
    like = a.lm_head
    generator = torch.Generator().manual_seed(seed)

    def fresh(*shape: int) -> Tensor:
        t = torch.zeros(shape, dtype=torch.float32)
        if init == "random":
            t.normal_(std=INIT_STD, generator=generator)
        return t.to(device=like.device, dtype=like.dtype)

    block = {
        "decoder": fresh(H * E, D),
        "encoder": fresh(H, D, E),
        "encoder_v": fresh(H, D, E),
        "freqs": rope_frequencies(E).to(device=like.device, dtype=a.attn.freqs.dtype),
    }
    return _joined(a, block, a.embed.weight, a.lm_head)


# ---- checkpoints -------------------------------------------------------------------------


def _check_out(out: Path, force: bool) -> None:
    """Refuse a file, or a non-empty directory unless `force` (whose checkpoint files are
    then overwritten; nothing else in it is deleted)."""
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--out {out} exists and is not a directory")
    if not force and out.is_dir() and any(out.iterdir()):
        raise CheckpointError(f"--out {out} exists and is not empty (use --force to overwrite)")


def _load_bdh(directory: str | os.PathLike[str]) -> tuple[BDH, Tokenizer]:
    model, tokenizer = load_checkpoint(directory)
    if not isinstance(model, BDH):
        raise CheckpointError(
            f"checkpoint {directory} holds a {type(model).__name__}, not a BDH model"
        )
    return model, tokenizer


def merge_checkpoints(
    a_dir: str | os.PathLike[str],
    b_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    shared: Shared = "average",
    force: bool = False,
) -> Path:
    """Merge the checkpoints a_dir and b_dir into `out` (A's tokenizer; both must share it)."""
    out = Path(out)
    _check_out(out, force)  # before loading anything
    a, tok_a = _load_bdh(a_dir)
    b, tok_b = _load_bdh(b_dir)
    check_compatible(a, b)  # names a differing field, which also explains most tokenizer mismatches
    if tok_a.to_dict() != tok_b.to_dict():
        raise CheckpointError(f"models do not merge: {a_dir} and {b_dir} have different tokenizers")
    merged = merge_models(a, b, shared)
    extra = {"merged_from": [str(a_dir), str(b_dir)], "merge_shared": shared}
    return save_checkpoint(out, merged, tok_a, extra=extra)


def grow_checkpoint(
    a_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    extra_neurons_per_head: int,
    init: GrowInit = "zero",
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Write a_dir grown by `extra_neurons_per_head` neurons per head into `out`."""
    out = Path(out)
    _check_out(out, force)  # before loading anything
    a, tokenizer = _load_bdh(a_dir)
    grown = grow_model(a, extra_neurons_per_head, init, seed)
    extra = {"grown_from": str(a_dir), "grow_neurons": extra_neurons_per_head, "grow_init": init}
    return save_checkpoint(out, grown, tokenizer, extra=extra)

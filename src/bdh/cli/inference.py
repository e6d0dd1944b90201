"""`bdh generate`, `bdh eval` and `bdh convert`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bdh.cli.group import app

checkpoint_argument = click.argument(
    "checkpoint", type=click.Path(path_type=Path)
)
device_option = click.option("--device", default="cpu", show_default=True, help="Torch device: cpu, cuda, cuda:1, ...")


@app.command()
@checkpoint_argument
@click.option("--prompt", "-p", multiple=True, default=["\n"], show_default=False, help="Prompt text; repeat for a batch (default: a newline).")
@click.option("--max-new-tokens", "-n", type=click.IntRange(min=0), default=500, show_default=True, help="Tokens to generate.")
@click.option("--temperature", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True, help="Sampling temperature (> 0).")
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="Keep the k most likely tokens.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=None, help="Nucleus sampling mass in (0, 1].")
@click.option("--greedy", is_flag=True, help="Always take the most likely token.")
@click.option("--seed", type=int, default=None, help="Seed for reproducible sampling.")
@click.option("--stop", default=None, help="Stop before this string appears.")
@device_option
def generate(
    checkpoint: Path, prompt: tuple[str, ...], max_new_tokens: int, temperature: float,
    top_k: int | None, top_p: float | None, greedy: bool, seed: int | None, stop: str | None, device: str,
) -> None:  # fmt: skip
    """Generate text from CHECKPOINT, streaming it to stdout as it is produced."""
    from bdh.checkpoint import load_checkpoint
    from bdh.device import resolve_device
    from bdh.errors import BDHError
    from bdh.generate import SamplingConfig, generate_text, stream_text

    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy)
    if any(not p for p in prompt):
        raise BDHError("the prompt is empty: give at least one character")
    model, tokenizer = load_checkpoint(checkpoint, resolve_device(device))
    for p in prompt:
        tokenizer.encode(p)  # fail on characters outside the vocabulary before any output
    if len(prompt) == 1:
        sys.stdout.write(prompt[0])
        for piece in stream_text(model, tokenizer, prompt[0], max_new_tokens, sampling, seed, stop):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return
    texts = generate_text(model, tokenizer, list(prompt), max_new_tokens, sampling, seed, stop)
    for i, (p, text) in enumerate(zip(prompt, texts)):
        sys.stdout.write(f"--- [{i}]\n{p}{text}\n")


@app.command("eval")
@checkpoint_argument
@click.option("--data", default=None, help="Corpus file, directory or name (default: bundled tiny Shakespeare).")
@click.option("--split", type=click.Choice(["val", "train"]), default="val", show_default=True)
@click.option("--block-size", type=click.IntRange(min=1), default=256, show_default=True, help="Tokens per window.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Windows per forward pass.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=None, help="Evaluate at most this many tokens.")
@click.option(
    "--whole", is_flag=True,
    help="Score the split as one sequence through the recurrent state (every token sees its "
    "whole prefix; bounded memory at any length) instead of independent windows.",
)  # fmt: skip
@device_option
def evaluate(
    checkpoint: Path, data: str | None, split: str, block_size: int, batch_size: int,
    max_tokens: int | None, whole: bool, device: str,
) -> None:  # fmt: skip
    """Loss (nats/token) and bits per byte of CHECKPOINT on a corpus split."""
    from bdh.checkpoint import load_checkpoint
    from bdh.data import load_corpus
    from bdh.device import resolve_device
    from bdh.evaluation import evaluate as run_eval
    from bdh.evaluation import score_sequence

    model, tokenizer = load_checkpoint(checkpoint, resolve_device(device))
    corpus, _ = load_corpus(data, tokenizer)
    tokens = getattr(corpus, split)
    if whole:
        result = score_sequence(model, tokens, tokenizer, max_tokens)
        how = "as one sequence"
    else:
        corpus.check_block_size(block_size)
        result = run_eval(model, tokens, tokenizer, block_size, batch_size, max_tokens)
        how = f"in windows of {block_size}"
    print(
        f"{split} loss {result.loss:.4f} | bits per byte {result.bits_per_byte:.4f} | "
        f"{result.tokens} tokens of {corpus.source} {how}"
    )


@app.command()
@click.argument("state_dict", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--n-layer", type=click.IntRange(min=1), default=6, show_default=True, help="Layers (not in the state_dict: weights are shared).")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True)
def convert(state_dict: Path, out: Path, n_layer: int, dropout: float) -> None:
    """Turn an official BDH STATE_DICT (torch.save of model.state_dict()) into a checkpoint at OUT.

    The file is read with weights_only=True: no code inside it runs.
    """
    from bdh.checkpoint.official import convert_official_state_dict

    path = convert_official_state_dict(state_dict, out, n_layer=n_layer, dropout=dropout)
    print(f"wrote {path}")

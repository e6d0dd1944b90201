"""`bdh generate`, `bdh eval` and `bdh convert`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bdh.cli.group import app

if TYPE_CHECKING:  # the commands import torch only when they run
    import numpy as np
    from torch import nn

    from bdh.tokenizers import Tokenizer

checkpoint_argument = click.argument(
    "checkpoint", type=click.Path(path_type=Path)
)
device_option = click.option("--device", default="cpu", show_default=True, help="Torch device: cpu, cuda, cuda:1, ...")


@app.command()
@checkpoint_argument
@click.option("--prompt", "-p", multiple=True, default=["\n"], show_default=False, help="Prompt text; repeat for a batch (default: a newline).")
@click.option("--max-new-tokens", "-n", type=click.IntRange(min=0), default=500, show_default=True, help="Tokens to generate.")
@click.option("--temperature", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Sampling temperature; 0 means greedy (as in transformers), like --greedy.")  # fmt: skip
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="Keep the k most likely tokens.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=None, help="Nucleus sampling mass in (0, 1].")
@click.option("--greedy", is_flag=True, help="Always take the most likely token.")
@click.option("--seed", type=int, default=None, help="Seed for reproducible sampling.")
@click.option("--stop", default=None,
              help="Stop before this string appears; \\n, \\t, \\r and \\\\ are read as escapes.")  # fmt: skip
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

    if temperature == 0:
        greedy, temperature = True, 1.0
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy)
    if stop is not None:
        stop = unescape(stop)
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


ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape(text: str) -> str:
    """Read the backslash escapes of ESCAPES in `text`; any other backslash stays as typed."""
    import re

    return re.sub(r"\\(.)", lambda m: ESCAPES.get(m.group(1), m.group(0)), text)


@app.command("eval")
@checkpoint_argument
@click.option("--data", default=None, help="Corpus file, directory or name (default: bundled tiny Shakespeare).")
@click.option("--split", type=click.Choice(["val", "train"]), default="val", show_default=True)
@click.option("--block-size", type=click.IntRange(min=1), default=None,
              help="Tokens per window (default: the run's training block size, else 256).")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Windows per forward pass.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=None, help="Evaluate at most this many tokens.")
@click.option(
    "--whole", is_flag=True,
    help="Score the split as one sequence through the recurrent state (every token sees its "
    "whole prefix; bounded memory at any length) instead of independent windows.",
)  # fmt: skip
@click.option(
    "--by-position", is_flag=True,
    help="With --whole: loss by position bucket (0-256, 256-1k, 1k-4k, ...) of --sequences "
    "reads of --length tokens, each from a zero state.",
)  # fmt: skip
@click.option("--length", type=click.IntRange(min=2), default=None, help="Tokens per sequence with --by-position (default: the whole text).")
@click.option("--sequences", type=click.IntRange(min=1), default=1, show_default=True, help="Sequences read side by side with --by-position, at offsets spread over the text.")
@click.option("--append", "append_specs", multiple=True, help="With --by-position: a corpus (file, directory or name) read whole after the split, to make a longer text; repeatable.")
@click.option("--repeat", is_flag=True, help="With --by-position: read a text shorter than --length again from its start (the output says from which position).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="With --by-position: write the buckets and a finer curve (8 points per doubling of the position) as JSON here.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None, help="With --by-position: draw the loss against position (log scale) to this PNG.")
@click.option("--force", is_flag=True, help="Overwrite the --json and --plot files if they exist.")
@device_option
def evaluate(
    checkpoint: Path, data: str | None, split: str, block_size: int | None, batch_size: int,
    max_tokens: int | None, whole: bool, by_position: bool, length: int | None, sequences: int,
    append_specs: tuple[str, ...], repeat: bool, json_path: Path | None, plot_path: Path | None,
    force: bool, device: str,
) -> None:  # fmt: skip
    """Loss (nats/token) and bits per byte of CHECKPOINT on a corpus split."""
    from bdh.checkpoint import load_checkpoint
    from bdh.data import load_corpus
    from bdh.device import resolve_device
    from bdh.errors import BDHError
    from bdh.evaluation import evaluate as run_eval
    from bdh.evaluation import score_sequence

    positional = dict(
        length=length, sequences=sequences != 1, append=append_specs, repeat=repeat,
        json=json_path, plot=plot_path, force=force,
    )  # fmt: skip
    if not by_position and any(positional.values()):
        used = ", ".join(f"--{name}" for name, value in positional.items() if value)
        raise BDHError(f"{used}: only with --by-position")
    if by_position:
        if not whole:
            raise BDHError("--by-position reads sequences through the recurrent state: add --whole")
        if max_tokens is not None:
            raise BDHError("--by-position takes --length (tokens per sequence), not --max-tokens")
        _check_outputs([json_path, plot_path], force)
        if plot_path is not None:
            from bdh.evaluation_plot import require_pyplot

            require_pyplot()  # before minutes of scoring, not after
    model, tokenizer = load_checkpoint(checkpoint, resolve_device(device))
    corpus, _ = load_corpus(data, tokenizer)
    tokens = getattr(corpus, split)
    if by_position:
        _evaluate_by_position(
            model, tokenizer, [(f"{split} split of {corpus.source}", tokens)], append_specs,
            length, sequences, repeat, json_path, plot_path, checkpoint,
        )  # fmt: skip
        return
    if whole:
        result = score_sequence(model, tokens, tokenizer, max_tokens)
        how = "as one sequence"
    else:
        if block_size is None:
            block_size, origin = _training_block_size(checkpoint)
        else:
            origin = "--block-size"
        corpus.check_block_size(block_size)
        result = run_eval(model, tokens, tokenizer, block_size, batch_size, max_tokens)
        how = f"in windows of {block_size} ({origin})"
    print(
        f"{split} loss {result.loss:.4f} | bits per byte {result.bits_per_byte:.4f} | "
        f"{result.tokens} tokens of {corpus.source} {how}"
    )


DEFAULT_EVAL_BLOCK_SIZE = 256


def _training_block_size(checkpoint: Path) -> tuple[int, str]:
    """The block size the run of `checkpoint` trained at, and where it was read; the run's
    train_config.json sits in the checkpoint directory or two levels up (RUN/checkpoints/step_N)."""
    import json

    from bdh.errors import CheckpointError
    from bdh.train.state import TRAIN_CONFIG_FILE

    for run_dir in (checkpoint, checkpoint.parent.parent):
        path = run_dir / TRAIN_CONFIG_FILE
        if not path.is_file():
            continue
        try:
            block_size = json.loads(path.read_text())["block_size"]
        except (OSError, ValueError, KeyError, TypeError):
            raise CheckpointError(f"run config {path} is corrupt: no block_size") from None
        if not isinstance(block_size, int) or block_size < 1:
            raise CheckpointError(f"run config {path} is corrupt: block_size {block_size!r}")
        return block_size, f"the training block size, from {path}"
    return DEFAULT_EVAL_BLOCK_SIZE, "the default; no train_config.json beside the checkpoint"


def _check_outputs(paths: list[Path | None], force: bool) -> None:
    from bdh.errors import BDHError

    for path in paths:
        if path is None:
            continue
        if path.exists() and not force:
            raise BDHError(f"'{path}' exists; use --force to overwrite it")
        if not path.parent.is_dir():
            raise BDHError(f"no directory '{path.parent}' to write '{path.name}' into")


def _evaluate_by_position(
    model: nn.Module, tokenizer: Tokenizer, parts: list[tuple[str, np.ndarray]],
    append_specs: tuple[str, ...], length: int | None,
    sequences: int, repeat: bool, json_path: Path | None, plot_path: Path | None, checkpoint: Path,
) -> None:  # fmt: skip
    """Score, print the bucket table, write the JSON and the plot."""
    import json

    import numpy as np

    from bdh.data import load_corpus
    from bdh.evaluation import concatenate_texts, loss_by_position

    for spec in append_specs:
        extra, _ = load_corpus(spec, tokenizer)
        parts.append((extra.source, np.concatenate([extra.train, extra.val])))
    text, source = concatenate_texts(parts)
    result = loss_by_position(
        model, text, tokenizer, length, sequences, repeat=repeat, source=source
    )
    repeats = (
        f"the text repeats from position {result.repeat_from} on (easier to predict there)"
        if result.repeats
        else "no token is read twice"
    )
    print(f"loss by position: {result.sequences} x {result.length} tokens of {source}; {repeats}")
    print(f"{'positions':>16} {'tokens':>10} {'loss':>8} {'bits/byte':>10}")
    rows = [(b.label, b.tokens, b.loss, b.bits_per_byte) for b in result.buckets]
    o = result.overall
    for label, tokens, loss, bits_per_byte in [*rows, ("all", o.tokens, o.loss, o.bits_per_byte)]:
        print(f"{label:>16} {tokens:>10} {loss:>8.4f} {bits_per_byte:>10.4f}")
    if json_path is not None:
        record = {"checkpoint": str(checkpoint), **result.to_dict()}
        json_path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {json_path}")
    if plot_path is not None:
        from bdh.evaluation_plot import plot_loss_by_position

        title = f"{checkpoint}\n{source}; {repeats}"
        plot_loss_by_position({checkpoint.name: result}, plot_path, title=title)
        print(f"wrote {plot_path}")


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

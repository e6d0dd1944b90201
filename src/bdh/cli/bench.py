"""`bdh bench train|generate|prefill|memory`: the official code and ours, side by side."""

from __future__ import annotations

import json
from pathlib import Path

import click

from bdh.cli.group import app


def _common(fn):
    """Options every benchmark takes."""
    options = [
        click.option("--reference", type=click.Path(path_type=Path), required=True,
                     help="The official bdh.py, e.g. ../shared/reference/official_bdh.py."),
        click.option("--device", default="cpu", show_default=True, help="cpu or cuda (cuda:N)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the weights and inputs."),
        click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="CPU threads for both sides (torch.set_num_threads; default: torch's choice)."),
        click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of a table."),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


def _emit(result, as_json: bool) -> None:
    from bdh.experiments.bench.runs import format_table

    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(format_table(result))


def _setup(device: str, threads: int | None) -> str:
    """Apply --threads (both sides run in this process) and check the device."""
    import torch

    from bdh.device import resolve_device

    if threads is not None:
        torch.set_num_threads(threads)
    return str(resolve_device(device))


@app.group()
def bench() -> None:
    """Benchmark ours against the official BDH code on identical weights and inputs.

    Each sub-command checks that both produce the same logits before timing them.
    """


@bench.command("train")
@click.option("--preset", default="small", show_default=True, help="Model preset.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--block-size", type=click.IntRange(min=2), default=256, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=5, show_default=True, help="Timed steps per side.")
@click.option("--warmup", type=click.IntRange(min=0), default=1, show_default=True, help="Untimed steps per side.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="bf16: both sides under torch.autocast.")  # fmt: skip
@_common
def bench_train_command(preset, batch_size, block_size, steps, warmup, precision, reference, device, seed, threads, as_json):
    """Training step (forward, backward, AdamW) tokens/s and peak memory."""
    from bdh.experiments.bench import bench_train

    result = bench_train(preset, reference=reference, batch_size=batch_size, block_size=block_size, steps=steps,
                         warmup=warmup, precision=precision, device=_setup(device, threads), seed=seed)  # fmt: skip
    _emit(result, as_json)


@bench.command("generate")
@click.option("--preset", "presets", multiple=True, default=["tiny", "small"], show_default=True,
              help="Model preset; repeat for several.")  # fmt: skip
@click.option("--new-tokens", multiple=True, type=click.IntRange(min=1), default=[128, 512, 2048],
              show_default=True, help="Tokens to generate; repeat for several.")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--prompt-len", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--max-official-tokens", type=click.IntRange(min=8), default=512, show_default=True,
              help="Run official generate() for at most this many tokens; longer runs are extrapolated.")  # fmt: skip
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Time our decoding this many times per length; the median is reported.")  # fmt: skip
@_common
def bench_generate_command(presets, new_tokens, batch_size, prompt_len, max_official_tokens, repeats, reference, device, seed, threads, as_json):
    """Generation tokens/s: official generate() (full recompute) vs our recurrent decoding."""
    from bdh.experiments.bench import bench_generate

    result = bench_generate(presets, reference=reference, new_tokens=new_tokens, batch_size=batch_size,
                            prompt_len=prompt_len, max_official_tokens=max_official_tokens,
                            device=_setup(device, threads), seed=seed, repeats=repeats)  # fmt: skip
    _emit(result, as_json)


def _length_sweep(name: str, function: str, lengths: list[int], length_help: str, doc: str):
    """A command that runs the benchmark `function` over sequence lengths (prefill, memory)."""

    @bench.command(name, help=doc)
    @click.option("--preset", default="small", show_default=True, help="Model preset.")
    @click.option("--length", "lengths", multiple=True, type=click.IntRange(min=1), default=lengths,
                  show_default=True, help=length_help)  # fmt: skip
    @click.option("--batch-size", type=click.IntRange(min=1), default=1, show_default=True)
    @click.option("--max-official-tokens", type=click.IntRange(min=1), default=4096, show_default=True,
                  help="Run the official quadratic forward only up to this length.")  # fmt: skip
    @_common
    def command(preset, lengths, batch_size, max_official_tokens, reference, device, seed, threads, as_json):
        from bdh.experiments import bench as benchmarks

        result = getattr(benchmarks, function)(
            preset, reference=reference, lengths=lengths, batch_size=batch_size,
            max_official_tokens=max_official_tokens, device=_setup(device, threads), seed=seed,
        )  # fmt: skip
        _emit(result, as_json)

    return command


bench_prefill_command = _length_sweep(
    "prefill", "bench_prefill", [16384], "Prompt length; repeat for several.",
    "Long-prompt prefill tokens/s and peak memory (ours: chunked, state of fixed size).",
)  # fmt: skip
bench_memory_command = _length_sweep(
    "memory", "bench_memory", [1024, 4096, 16384], "Sequence length; repeat for several.",
    "Peak memory against sequence length, every case in a fresh process.",
)  # fmt: skip

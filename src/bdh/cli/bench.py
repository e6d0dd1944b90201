"""`bdh bench train|generate|prefill|memory`: the official code and ours, side by side;
`bdh bench roofline`: the machine's limits the rows are measured against."""

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
        click.option("--roofline/--no-roofline", default=True, show_default=True,
                     help="Measure the machine's limits first (a few seconds) and give each row's share of them."),
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


def _limits(device: str, roofline: bool):
    from bdh.experiments.bench.roofline import measure_roofline

    return measure_roofline(device) if roofline else None


@app.group()
def bench() -> None:
    """Benchmark ours against the official BDH code on identical weights and inputs.

    Each sub-command checks that both produce the same logits before timing them, and
    states each row's achieved GFLOP/s and GB/s against the limits `bdh bench roofline`
    measures.
    """


@bench.command("roofline")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda (cuda:N).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads (torch.set_num_threads; default: torch's choice).")  # fmt: skip
@click.option("--matmul-size", type=click.IntRange(min=64), default=None,
              help="Side of the square product [default: 2048 on CPU, 8192 on CUDA].")  # fmt: skip
@click.option("--stream-mib", type=click.IntRange(min=1), default=None,
              help="Size of each streaming buffer [default: 256 MiB on CPU, 1024 on CUDA].")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bench_roofline_command(device, threads, matmul_size, stream_mib, as_json):
    """The machine's limits: peak of a large matmul (fp32, bf16) and streaming bandwidth."""
    import os

    from bdh.experiments.bench.roofline import measure_roofline

    device = _setup(device, threads)
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    roof = measure_roofline(device, matmul_size, stream_mib)
    if as_json:
        click.echo(json.dumps({**roof.to_dict(), "load_average_at_start": load}, indent=2))
        return
    click.echo(f"device {device} | {roof.threads} threads | load average at start {load}")
    click.echo(f"matmul {roof.matmul_size} x {roof.matmul_size}: fp32 {roof.fp32_gflops:,.1f} GFLOP/s, "
               f"bf16 {roof.bf16_gflops:,.1f} GFLOP/s (fastest of 5)")  # fmt: skip
    click.echo(f"streaming {roof.stream_mib} MiB buffers: copy {roof.copy_gbps:,.1f} GB/s, "
               f"add {roof.add_gbps:,.1f} GB/s (fastest of 5)")  # fmt: skip


@bench.command("train")
@click.option("--preset", default="small", show_default=True, help="Model preset.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--block-size", type=click.IntRange(min=2), default=256, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=5, show_default=True, help="Timed steps per side.")
@click.option("--warmup", type=click.IntRange(min=1), default=2, show_default=True,
              help="Untimed steps per side and recipe (first calls, kernel builds, torch.compile).")  # fmt: skip
@click.option("--precision", "precisions", multiple=True, type=click.Choice(["fp32", "bf16", "default"]),
              default=["fp32", "bf16", "default"], show_default=True,
              help="One row each, all in one run. fp32, bf16: both sides alike (bf16: under torch.autocast); "
                   "default: the official train.py's recipe on this device against `bdh train`'s.")  # fmt: skip
@_common
def bench_train_command(preset, batch_size, block_size, steps, warmup, precisions, reference, device, seed,
                        threads, as_json, roofline):  # fmt: skip
    """Training step (forward, backward, optimizer) tokens/s and peak memory."""
    from bdh.experiments.bench import bench_train

    device = _setup(device, threads)
    result = bench_train(preset, reference=reference, batch_size=batch_size, block_size=block_size, steps=steps,
                         warmup=warmup, precision=precisions, device=device, seed=seed,
                         roofline=_limits(device, roofline))  # fmt: skip
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
              help="Interleaved rounds (official once, ours once per length); the median of each side is reported.")  # fmt: skip
@_common
def bench_generate_command(presets, new_tokens, batch_size, prompt_len, max_official_tokens, repeats, reference,
                           device, seed, threads, as_json, roofline):  # fmt: skip
    """Generation tokens/s: official generate() (full recompute) vs our recurrent decoding."""
    from bdh.experiments.bench import bench_generate

    device = _setup(device, threads)
    result = bench_generate(presets, reference=reference, new_tokens=new_tokens, batch_size=batch_size,
                            prompt_len=prompt_len, max_official_tokens=max_official_tokens,
                            device=device, seed=seed, repeats=repeats, roofline=_limits(device, roofline))  # fmt: skip
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
    def command(preset, lengths, batch_size, max_official_tokens, reference, device, seed, threads, as_json, roofline):
        from bdh.experiments import bench as benchmarks

        device = _setup(device, threads)
        result = getattr(benchmarks, function)(
            preset, reference=reference, lengths=lengths, batch_size=batch_size,
            max_official_tokens=max_official_tokens, device=device, seed=seed,
            roofline=_limits(device, roofline),
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

"""`bdh experiment NAME`: the paper's experiments, each writing a report directory."""

from __future__ import annotations

import shlex
import sys

import click

from bdh.cli.group import app


@app.group()
def experiment() -> None:
    """Rerun an experiment of the paper; each writes report.md, report.json and PNGs to --out."""


@experiment.command("long-context")
@click.option("--out", "out_dir", required=True, help="Report directory (runs go in OUT/runs).")
@click.option("--force", is_flag=True, help="Replace an existing report directory.")
@click.option(
    "--smoke",
    is_flag=True,
    help="A seconds-long configuration that checks the pipeline, not the science.",
)
@click.option("--runs", default="independent,carried,carried-damped,no-bptt", show_default=True,
              help="Comma-separated runs.")  # fmt: skip
@click.option("--preset", default="tiny", show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=600, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--block-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--reset-tokens", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Carried runs: tokens per stream before it restarts (a multiple of the block size).")  # fmt: skip
@click.option(
    "--damping",
    default="alibi",
    show_default=True,
    help="Damping of the carried-damped run (U or alibi[:c]).",
)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=6e-3, show_default=True)
@click.option("--seed", type=int, default=1337, show_default=True)
@click.option("--data", default=None, help="Corpus (default: bundled tiny Shakespeare).")
@click.option(
    "--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True
)
@click.option(
    "--eval-tokens",
    type=click.IntRange(min=1),
    default=16384,
    show_default=True,
    help="Windowed validation sample of the training runs.",
)
@click.option("--eval-length", type=click.IntRange(min=2), default=65536, show_default=True,
              help="Tokens per evaluation sequence (the validation split is read again past its end).")  # fmt: skip
@click.option("--eval-sequences", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Torch threads.")
def long_context(out_dir: str, force: bool, smoke: bool, runs: str, **options: object) -> None:
    """Independent windows vs carried state vs carried + damping vs no-BPTT, read by position."""
    from bdh.experiments.long_context import SMOKE, LongContextSettings, run_long_context

    options["runs"] = [r.strip() for r in runs.split(",") if r.strip()]
    if smoke:
        options.update(SMOKE)
    settings = LongContextSettings(out_dir=out_dir, **options)  # type: ignore[arg-type]
    command = "bdh " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = run_long_context(settings, force=force, command=command)
    for name, run in report["runs"].items():
        beyond = run["beyond_window_loss"]
        click.echo(
            f"{name:>15}: loss beyond the window {'n/a' if beyond is None else f'{beyond:.3f}'}"
        )
    for verdict in report["verdicts"]:
        click.echo(
            f"{'met' if verdict['met'] else 'NOT MET'}: {verdict['target']} ({verdict['evidence']})"
        )
    click.echo(f"wrote {out_dir}/report.md")


@experiment.command("merging")
@click.option("--out", "out_dir", required=True, help="Report directory (runs go in OUT/runs).")
@click.option("--force", is_flag=True, help="Replace an existing report directory.")
@click.option("--smoke", is_flag=True,
              help="A seconds-long configuration that checks the pipeline, not the science.")  # fmt: skip
@click.option(
    "--base-data", default="shakespeare", show_default=True, help="Corpus 0, of the base model."
)
@click.option("--data-a", default="python-stdlib", show_default=True,
              help="Corpus A: a file, or python-stdlib (built into OUT/runs/corpora).")  # fmt: skip
@click.option("--data-b", default=None,
              help="Corpus B: a file, e.g. from `bdh data build fortunes` (--smoke: a few inline proverbs).")  # fmt: skip
@click.option("--preset", default="tiny", show_default=True)
@click.option("--base-steps", type=click.IntRange(min=1), default=600, show_default=True)
@click.option("--ft-steps", type=click.IntRange(min=1), default=300, show_default=True,
              help="Steps of each fine-tune (+A, +B).")  # fmt: skip
@click.option("--mix-steps", type=click.IntRange(min=0), default=150, show_default=True,
              help="Steps of the merged model's fine-tune on A and B mixed; 0 = none.")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--block-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=6e-3, show_default=True)
@click.option("--ft-lr", type=click.FloatRange(0, min_open=True), default=3e-3, show_default=True)
@click.option("--shared", type=click.Choice(["average", "a"]), default="average", show_default=True,
              help="embed and lm_head of the merge: the parents' mean, or A's.")  # fmt: skip
@click.option("--seed", type=int, default=1337, show_default=True)
@click.option(
    "--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True
)
@click.option("--eval-tokens", type=click.IntRange(min=1), default=32768, show_default=True,
              help="Bytes scored per validation split.")  # fmt: skip
@click.option("--build-max-bytes", type=click.IntRange(min=1), default=2_000_000, show_default=True,
              help="Size cap of corpora built on the fly.")  # fmt: skip
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Torch threads.")
def merging(out_dir: str, force: bool, smoke: bool, **options: object) -> None:
    """Base on corpus 0, fine-tuned on A and on B, their merge: each scored on every corpus."""
    from bdh.experiments.merging import SMOKE, MergingSettings, run_merging

    if smoke:
        options.update(SMOKE)
        options["data_b"] = options["data_b"] or "smoke-fortunes"
    settings = MergingSettings(out_dir=out_dir, **options)  # type: ignore[arg-type]
    command = "bdh " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = run_merging(settings, force=force, command=command)
    roles = [r for r in report["corpora"] if r != "A+B"]
    for name, model in report["models"].items():
        cells = "  ".join(f"{r}: {model['eval'][r]['bits_per_byte']:.3f}" for r in roles)
        click.echo(f"{name:>10}: {cells} bits/byte")
    for verdict in report["verdicts"]:
        click.echo(
            f"{'met' if verdict['met'] else 'NOT MET'}: {verdict['target']} ({verdict['evidence']})"
        )
    click.echo(f"wrote {out_dir}/report.md")

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


@experiment.command("scaling")
@click.option("--out", "out_dir", required=True, help="Report directory (runs go in OUT/runs).")
@click.option("--force", is_flag=True, help="Replace an existing report directory.")
@click.option(
    "--smoke",
    is_flag=True,
    help="A seconds-long configuration that checks the pipeline, not the science.",
)
@click.option("--grid", type=click.Choice(["cpu", "paper"]), default="cpu", show_default=True,
              help="Sizes and recipe: cpu (a CPU miniature) or paper (25M-800M, for a GPU).")  # fmt: skip
@click.option("--sizes", default=None,
              help="Comma-separated BDH neuron counts n (default: the grid's).")  # fmt: skip
@click.option("--seeds", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--seed", type=int, default=1337, show_default=True, help="The first seed.")
@click.option("--tokens", type=click.IntRange(min=1), default=None,
              help="Training tokens per run (default: the grid's).")  # fmt: skip
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=None,
              help="Peak learning rate of both families (default: the grid's).")  # fmt: skip
@click.option("--data", default=None, help="Corpus (default: bundled tiny Shakespeare).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Torch threads.")
def scaling(out_dir: str, force: bool, smoke: bool, sizes: str | None, **options: object) -> None:
    """Validation loss against parameters: BDH grown by n, GPT matched to its parameter counts."""
    from bdh.errors import ConfigError
    from bdh.experiments.scaling import SMOKE, ScalingSettings, run_scaling

    if sizes is not None:
        try:
            options["sizes"] = [int(x) for x in sizes.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--sizes must be comma-separated integers, got {sizes!r}") from None
    if smoke:
        options.update(SMOKE)
    settings = ScalingSettings(out_dir=out_dir, **options)  # type: ignore[arg-type]
    command = "bdh " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = run_scaling(settings, force=force, command=command)
    for r in report["summary"]:
        click.echo(f"{r['family']:>4} {r['params']:>12,} params: mean val loss {r['mean']:.3f}")
    click.echo(f"wrote {out_dir}/report.md")

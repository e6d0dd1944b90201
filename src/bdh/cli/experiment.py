"""`bdh experiment NAME`: the paper's experiments, each writing a report directory."""

from __future__ import annotations

import shlex
import sys

import click

from bdh.cli.group import app


@app.group()
def experiment() -> None:
    """Rerun an experiment of the paper; each writes report.md, report.json and PNGs to --out."""


def _report_options(where_runs_go: str):  # type: ignore[no-untyped-def]
    """--out, --force and --smoke, which every experiment takes."""

    def decorate(fn):  # type: ignore[no-untyped-def]
        for option in reversed([
            click.option("--out", "out_dir", required=True,
                         help=f"Report directory ({where_runs_go})."),
            click.option("--force", is_flag=True, help="Replace an existing report directory."),
            click.option("--smoke", is_flag=True,
                         help="A seconds-long configuration that checks the pipeline, not the science."),
        ]):  # fmt: skip
            fn = option(fn)
        return fn

    return decorate


@experiment.command("long-context")
@_report_options("runs go in OUT/runs")
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
@_report_options("runs go in OUT/runs")
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


def _analysis_experiment_options(fn):  # type: ignore[no-untyped-def]
    """The options every experiment reading one trained model shares (its model: a
    checkpoint, or one trained first by bdh.train)."""
    options = [
        _report_options("a trained model goes in OUT/runs/model"),
        click.option("--checkpoint", default=None, metavar="RUN_OR_CKPT",
                     help="BDH run or checkpoint directory to read (default: train one first)."),
        click.option("--preset", default="tiny", show_default=True, help="Preset of the model trained without --checkpoint."),
        click.option("--train-steps", type=click.IntRange(min=1), default=600, show_default=True,
                     help="Steps of the model trained without --checkpoint (16 x 256 tokens each)."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the probe texts and controls."),
        click.option("--threads", type=click.IntRange(min=1), default=None, help="Torch threads."),
    ]  # fmt: skip
    for option in reversed(options):
        fn = option(fn)
    return fn


def _recipe(preset: str, train_steps: int) -> object:
    from bdh.experiments.trained_model import ModelRecipe

    return ModelRecipe(preset=preset, steps=train_steps)


@experiment.command("sparsity-repetition")
@_analysis_experiment_options
@click.option(
    "--words",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Random words averaged over.",
)
@click.option(
    "--warmup",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Random letters before the word.",
)
@click.option("--word-length", type=click.IntRange(min=1), default=6, show_default=True)
@click.option("--repeats", type=click.IntRange(min=2), default=16, show_default=True)
def sparsity_repetition(
    out_dir: str, force: bool, smoke: bool, preset: str, train_steps: int, **options: object
) -> None:  # fmt: skip
    """Neuron density per layer and token over random letters, then a repeated random word (§6.4)."""
    from bdh.experiments.sparsity_repetition import (
        SMOKE,
        SparsityRepetitionSettings,
        run_sparsity_repetition,
    )

    options["recipe"] = _recipe(preset, train_steps)
    if smoke:
        options.update(SMOKE)
    settings = SparsityRepetitionSettings(out_dir=out_dir, **options)  # type: ignore[arg-type]
    command = "bdh " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = run_sparsity_repetition(settings, force=force, command=command)
    for v in report["verdicts"]:
        click.echo(
            f"{v['signal']}: warm-up {100 * v['warmup_density']:.2f}% -> late repeats "
            f"{100 * v['late_repeat_density']:.2f}%, fresh words {100 * v['fresh_word_density']:.2f}% "
            f"({'sparser' if v['below_fresh_words'] else 'not sparser'} than fresh words in every layer)"
        )
    click.echo(f"wrote {out_dir}/report.md")


@experiment.command("synapses")
@_analysis_experiment_options
@click.option("--text-tokens", type=click.IntRange(min=2), default=2048, show_default=True,
              help="Validation tokens the degree distribution is read over.")  # fmt: skip
@click.option("--k-sigma", type=click.FloatRange(min=0), default=3.0, show_default=True,
              help="Edges: entries above mean + K std of each head's sigma.")  # fmt: skip
@click.option("--candidates", type=click.IntRange(min=1), default=10, show_default=True,
              help="Synapses carried from the selection split to the held-out test.")  # fmt: skip
def synapses(
    out_dir: str, force: bool, smoke: bool, preset: str, train_steps: int, **options: object
) -> None:  # fmt: skip
    """Synapse readout sigma (§6.2-6.3): its degree distribution, and concept-selective synapses."""
    from bdh.experiments.synapses import SMOKE, SynapseSettings, run_synapses

    options["recipe"] = _recipe(preset, train_steps)
    if smoke:
        options.update(SMOKE)
    settings = SynapseSettings(out_dir=out_dir, **options)  # type: ignore[arg-type]
    command = "bdh " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = run_synapses(settings, force=force, command=command)
    for c in report["concepts"]:
        t, null = c["true_labels"]["best"]["held_out"], c["shuffled_labels"]["best"]["held_out"]
        click.echo(
            f"{c['concept']} vs {c['contrast']}: held out U = {t['U']:.0f}/{t['U_max']}, "
            f"r = {t['rank_biserial']:.2f}, p = {t['p_value']:.1e}; shuffled p = {null['p_value']:.1e}"
        )
    click.echo(f"wrote {out_dir}/report.md")


@experiment.command("merging")
@_report_options("runs go in OUT/runs")
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

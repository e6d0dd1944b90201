"""`bdh compare`: train several model families on one budget and write a report."""

from __future__ import annotations

import click

from bdh.cli.group import app


def _int_list(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None


def _float_list(ctx: click.Context, param: click.Parameter, value: str) -> list[float]:
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None


@app.command()
@click.option("--out", "out_dir", default="runs/compare", show_default=True,
              help="Report directory (runs go in OUT/runs); refused if it holds files, "
                   "unless --force or --reuse.")  # fmt: skip
@click.option("--force", is_flag=True, help="Replace an existing report directory.")
@click.option("--smoke", is_flag=True,
              help="A seconds-long configuration (in this process) that checks the pipeline, not the science.")  # fmt: skip
@click.option("--models", default="gpt-backprop,bdh-backprop,bdh-hybrid,bdh-hebbian,neuro-backprop",
              show_default=True, help="Comma-separated entries.")  # fmt: skip
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True,
              help="Training steps per model.")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--block-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=3e-3, show_default=True)
@click.option("--hebbian-lr", type=click.FloatRange(0, min_open=True), default=1e-3, show_default=True,
              help="Oja rate of the hybrid/hebbian entries.")  # fmt: skip
@click.option("--seed", type=int, default=1337, show_default=True, help="First seed.")
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Seeds per entry (SEED, SEED+1, ...); tables show mean ± 95% t-interval.",
)
@click.option(
    "--wall-budget",
    "wall_budget_s",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Also train every entry for this many seconds (a budget matched by wall time).",
)
@click.option(
    "--hybrid-lrs",
    default="",
    callback=_float_list,
    help="Oja rates of a hybrid sweep (BDH backprop + Oja), e.g. 1e-4,1e-3,1e-2.",
)
@click.option(
    "--prune-thresholds",
    default="",
    callback=_float_list,
    help="Magnitude thresholds of a pruning curve (BDH backprop, first seed).",
)
@click.option(
    "--homeostasis", is_flag=True, help="Also train BDH backprop with homeostatic scaling."
)
@click.option("--data", default=None, help="Corpus path (default: bundled tiny Shakespeare).")
@click.option("--tokenizer", type=click.Choice(["byte", "char"]), default="byte", show_default=True)
@click.option("--eval-every", type=click.IntRange(min=1), default=25, show_default=True)
@click.option("--eval-tokens", type=click.IntRange(min=1), default=16384, show_default=True)
@click.option("--contexts", default="64,256,1024,4096", show_default=True, callback=_int_list,
              help="Context lengths for the state-memory table.")  # fmt: skip
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Torch threads per training process.")  # fmt: skip
@click.option("--device", default="cpu", show_default=True)
@click.option("--reuse", is_flag=True,
              help="Keep an existing OUT and load its runs already trained with the "
                   "same config instead of retraining.")  # fmt: skip
def compare(
    out_dir: str, force: bool, smoke: bool, models: str, steps: int, batch_size: int,
    block_size: int, lr: float, hebbian_lr: float, seed: int, seeds: int, wall_budget_s: float | None, hybrid_lrs: list[float],
    prune_thresholds: list[float], homeostasis: bool, data: str | None, tokenizer: str,
    eval_every: int, eval_tokens: int, contexts: list[int], threads: int | None, device: str,
    reuse: bool,
) -> None:  # fmt: skip
    """Train each model on the same data, budgets and seeds; write report.md/.json and plots."""
    from bdh.experiments.compare import SMOKE, CompareSettings, run_compare

    options = dict(
        out_dir=out_dir, entries=[m.strip() for m in models.split(",") if m.strip()], steps=steps,
        batch_size=batch_size, block_size=block_size, lr=lr, hebbian_lr=hebbian_lr, seed=seed,
        seeds=seeds, wall_budget_s=wall_budget_s, hybrid_lrs=hybrid_lrs,
        prune_thresholds=prune_thresholds, homeostasis=homeostasis, data=data, tokenizer=tokenizer,
        eval_every=eval_every, eval_tokens=eval_tokens, device=device, threads=threads, contexts=contexts, reuse=reuse,
    )  # fmt: skip
    settings = CompareSettings(**{**options, **(SMOKE if smoke else {})})
    report = run_compare(settings, force=force)
    for row in report["groups"]:
        loss, ci = row["final_val_loss"], row["final_val_loss_ci"]
        shown = "n/a" if loss is None else f"{loss:.3f}" + ("" if ci is None else f" ± {ci:.3f}")
        click.echo(
            f"{row['name']:>24} ({row['budget']}): val loss {shown}, "
            f"{row['tokens_per_s'] or 0:,.0f} tokens/s, peak RSS {row['peak_rss_mib']:.0f} MiB"
        )
    click.echo(f"report: {out_dir}/report.md")

"""`bdh merge` and `bdh grow`: wider models by concatenating neurons (docs/merging.md)."""

from __future__ import annotations

from pathlib import Path

import click

from bdh.cli.group import app

out_option = click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory for the new checkpoint.",
)
force_option = click.option(
    "--force",
    is_flag=True,
    help="Write into an existing non-empty --out (its checkpoint files are overwritten).",
)


@app.command()
@click.argument("checkpoint_a", type=click.Path(path_type=Path))
@click.argument("checkpoint_b", type=click.Path(path_type=Path))
@out_option
@click.option(
    "--shared",
    type=click.Choice(["average", "a"]),
    default="average",
    show_default=True,
    help="embed and lm_head: the parents' mean, or A's.",
)
@force_option
def merge(checkpoint_a: Path, checkpoint_b: Path, out_dir: Path, shared: str, force: bool) -> None:
    """Merge two BDH checkpoints into one with the neurons of both (A's first, per head)."""
    from bdh.merge import merge_checkpoints

    print(f"wrote {merge_checkpoints(checkpoint_a, checkpoint_b, out_dir, shared, force)}")  # type: ignore[arg-type]


@app.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@out_option
@click.option(
    "--neurons",
    type=click.IntRange(min=0),
    required=True,
    help="Neurons to add to every head (even).",
)
@click.option(
    "--init",
    type=click.Choice(["zero", "random"]),
    default="zero",
    show_default=True,
    help="The new neurons' weights: zero (the model computes the same) or random (std 0.02).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random init.")
@force_option
def grow(checkpoint: Path, out_dir: Path, neurons: int, init: str, seed: int, force: bool) -> None:
    """Add fresh neurons to every head of a BDH checkpoint."""
    from bdh.merge import grow_checkpoint

    print(f"wrote {grow_checkpoint(checkpoint, out_dir, neurons, init, seed, force)}")  # type: ignore[arg-type]

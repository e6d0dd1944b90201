"""`bdh data build`: corpora made from local files (docs/merging.md)."""

from __future__ import annotations

from pathlib import Path

import click

from bdh.cli.group import app


@app.group()
def data() -> None:
    """Build text corpora from files on this machine (nothing is downloaded)."""


@data.command("build")
@click.argument("name", type=click.Choice(["python-stdlib", "fortunes"]))
@click.option(
    "--out", "out", type=click.Path(path_type=Path), required=True, help="The corpus file to write."
)
@click.option("--source", type=click.Path(path_type=Path), default=None,
              help="python-stdlib: a library directory [this interpreter's]; fortunes: a .deb file "
                   "or a directory of fortune files (required).")  # fmt: skip
@click.option("--max-bytes", type=click.IntRange(min=1), default=2_000_000, show_default=True,
              help="Cap on the output; whole files or entries are taken in order while they fit.")  # fmt: skip
@click.option("--force", is_flag=True, help="Overwrite an existing --out.")
def build(name: str, out: Path, source: Path | None, max_bytes: int, force: bool) -> None:
    """Write corpus NAME (python-stdlib or fortunes) to --out, deterministically."""
    from bdh.data.build import build_corpus

    built = build_corpus(name, out, source, max_bytes, force)
    click.echo(
        f"wrote {built.path}: {built.bytes:,} bytes from {built.sources:,} "
        f"{'files' if name == 'python-stdlib' else 'entries'} of {built.origin} (sha256 {built.sha256[:16]})"
    )
